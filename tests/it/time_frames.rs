//! Time frames over the wire: due dates from the service's time frame in working days, and
//! the OVERDUE event, emitted once.

use std::time::Duration;

use jisr::pb::v1::*;
use time::{Date, OffsetDateTime, Weekday};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

/// The end (UTC) of the `days`-th working day after `start`, counted here independently of
/// the gateway's calendar code, from the sample config's weekend and holidays.
pub(crate) fn expected_due(start: OffsetDateTime, days: u32) -> OffsetDateTime {
    let calendar = &sample_config().calendar;
    let weekend: Vec<String> = calendar
        .weekend
        .iter()
        .map(|d| format!("{d:?}").to_lowercase())
        .collect();
    let holidays: Vec<String> = calendar.holidays.iter().map(|h| format!("{h:?}")).collect();
    let is_working = |d: Date| {
        let name = match d.weekday() {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        };
        let iso = format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
        !weekend.iter().any(|w| w.contains(name)) && !holidays.iter().any(|h| h.contains(&iso))
    };
    let mut day = start.date();
    let mut counted = 0;
    while counted < days {
        day = day.next_day().unwrap();
        if is_working(day) {
            counted += 1;
        }
    }
    day.with_hms_milli(23, 59, 59, 999).unwrap().assume_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_is_due_at_the_end_of_its_services_time_frame_in_working_days() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let r = social
        .submit_referral(submit("due", referral_to("housing")))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let created = r.created_at.unwrap();
    let due = r
        .due_at
        .expect("a service with a time frame gives a due date");
    let days = sample_config()
        .agency("housing")
        .unwrap()
        .services
        .iter()
        .find(|s| s.code == r.service_code)
        .and_then(|s| s.time_frame_working_days)
        .unwrap();
    let start = OffsetDateTime::from_unix_timestamp(created.seconds).unwrap();
    let want = expected_due(start, days);
    assert_eq!(
        due.seconds,
        want.unix_timestamp(),
        "due {due:?}, expected {want} ({days} working days after {start})"
    );
    assert!(!r.overdue);

    // A service the recipient does not offer is refused, naming what it does offer.
    let mut wrong = referral_to("housing");
    wrong.service_code = "fire-safety-clearance".into();
    let err = social
        .submit_referral(submit("wrong", wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let v = &err.get_details_bad_request().unwrap().field_violations[0];
    assert_eq!(v.field, "referral.service_code");
    assert!(
        v.description.contains("housing-support"),
        "{}",
        v.description
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_past_its_due_date_gets_one_overdue_event_and_is_listed_overdue() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut events = social
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let id = submitted_id(&mut social, "late", referral_to("housing")).await;
    let on_time = submitted_id(&mut social, "on-time", referral_to("housing")).await;
    // Time passes: the first referral's time frame has ended.
    sqlx::query("UPDATE referrals SET due_at = $1 WHERE id = $2")
        .bind(jisr::common::time::now_ms() - 60_000)
        .bind(&id)
        .execute(gw.store.pool())
        .await
        .unwrap();

    let mut overdue = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(1500), events.next()).await {
            Ok(Some(Ok(item))) => {
                let e = item.event.unwrap();
                if e.r#type() == ReferralEventType::Overdue {
                    overdue.push(e.referral_id);
                }
            }
            _ => {
                if !overdue.is_empty() {
                    break;
                }
            }
        }
    }
    assert_eq!(
        overdue,
        vec![id.clone()],
        "one OVERDUE event, for the late referral only"
    );

    let listed = social
        .list_referrals(ListReferralsRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    assert!(listed[0].overdue);
    let r = fetched(&mut social, &on_time).await;
    assert!(!r.overdue);

    // The sender is told through its adapter (its inbox), with the overdue flag. (The
    // recipient's copy waits behind the referral itself, which it has not acknowledged.)
    use jisr::pb::adapter_v1::inbox_service_client::InboxServiceClient;
    use jisr::pb::adapter_v1::{delivery, status_update, PullDeliveriesRequest};
    let mut social_inbox = InboxServiceClient::new(
        env.channel(&gw, &env.agency_cert("social-services"))
            .await
            .unwrap(),
    );
    let pulled = social_inbox
        .pull_deliveries(PullDeliveriesRequest {
            max_deliveries: 20,
            wait: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    let flagged: Vec<_> = pulled
        .iter()
        .filter_map(|d| match &d.payload {
            Some(delivery::Payload::StatusUpdate(u)) => match &u.target {
                Some(status_update::Target::Referral(r)) => {
                    Some((r.referral_id.clone(), r.overdue))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(flagged, vec![(id.clone(), true)]);
    gw.shutdown().await.unwrap();
}
