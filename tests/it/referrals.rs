//! ReferralService over the wire: two agencies, a third that must see nothing.

use std::time::Duration;

use jisr::pb::v1::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_between_two_agencies_keeps_full_history() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;
    let mut recipient = env.client(&gw, "housing").await;

    let submitted = sender
        .submit_referral(submit("req-1", referral_to("housing")))
        .await
        .expect("submit")
        .into_inner()
        .referral
        .expect("referral");
    assert_eq!(submitted.from_agency, "social-services");
    assert_eq!(submitted.status(), ReferralStatus::Submitted);
    assert_eq!(submitted.trace_id.len(), 32);
    let id = submitted.id.clone();

    // The recipient finds it among what it received.
    let received = recipient
        .list_referrals(ListReferralsRequest {
            direction: ReferralDirection::Received as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(received.referrals.len(), 1);
    assert_eq!(received.referrals[0].id, id);
    assert_eq!(
        received.referrals[0].subject,
        referral_to("housing").subject,
        "payload arrives intact"
    );

    let steps = [
        (ReferralStatus::Accepted, None),
        (ReferralStatus::InProgress, None),
        (
            ReferralStatus::OnHold,
            Some(StatusReason::AwaitingInformation),
        ),
        (ReferralStatus::InProgress, None),
    ];
    for (i, (status, reason)) in steps.iter().enumerate() {
        let mut req = update(&id, &format!("step-{i}"), *status);
        req.reason_code = reason.map_or(0, |r| r as i32);
        let r = recipient
            .update_referral_status(req)
            .await
            .expect("step")
            .into_inner();
        assert_eq!(r.referral.unwrap().status(), *status);
    }
    let mut done = update(&id, "done", ReferralStatus::Completed);
    done.outcome = ReferralOutcome::Resolved as i32;
    done.note = "Family placed in temporary housing.".into();
    recipient
        .update_referral_status(done)
        .await
        .expect("complete");

    // The sender sees the whole loop.
    let seen = fetched(&mut sender, &id).await;
    assert_eq!(seen.status(), ReferralStatus::Completed);
    assert_eq!(seen.outcome(), ReferralOutcome::Resolved);
    let history: Vec<_> = seen
        .status_history
        .iter()
        .map(|c| (c.status(), c.actor_agency.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            (ReferralStatus::Submitted, "social-services"),
            (ReferralStatus::Accepted, "housing"),
            (ReferralStatus::InProgress, "housing"),
            (ReferralStatus::OnHold, "housing"),
            (ReferralStatus::InProgress, "housing"),
            (ReferralStatus::Completed, "housing"),
        ]
    );
    assert_eq!(
        seen.status_history[3].reason_code(),
        StatusReason::AwaitingInformation
    );
    assert_eq!(
        seen.status_history[5].note,
        "Family placed in temporary housing."
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_submit_returns_the_same_referral_and_a_changed_body_is_already_exists() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;

    let first = sender
        .submit_referral(submit("same-key", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    let again = sender
        .submit_referral(submit("same-key", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a retry returns the first response");

    let mut changed = referral_to("housing");
    changed.summary = "A different case".into();
    let err = sender
        .submit_referral(submit("same-key", changed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "REQUEST_ID_REUSED"
    );

    // The key is per agency: another agency may use the same one.
    let mut other = env.client(&gw, "police").await;
    let theirs = other
        .submit_referral(submit("same-key", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        theirs.referral.unwrap().id,
        first.referral.as_ref().unwrap().id
    );

    let mine = sender
        .list_referrals(ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.referrals.len(), 1, "no duplicate was created");

    // Updates are idempotent too.
    let mut recipient = env.client(&gw, "housing").await;
    let id = first.referral.unwrap().id;
    let a = recipient
        .update_referral_status(update(&id, "u1", ReferralStatus::Accepted))
        .await
        .unwrap()
        .into_inner();
    let b = recipient
        .update_referral_status(update(&id, "u1", ReferralStatus::Accepted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a, b);
    assert_eq!(
        b.referral.unwrap().status_history.len(),
        2,
        "the retry did not add a second change"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_agency_can_neither_read_nor_update_nor_list_nor_watch() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;
    let mut third = env.client(&gw, "police").await;
    let id = submitted_id(&mut sender, "r", referral_to("housing")).await;

    let err = third
        .get_referral(GetReferralRequest {
            referral_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.get_details_error_info().unwrap().reason, "NOT_A_PARTY");

    for status in [ReferralStatus::Accepted, ReferralStatus::Withdrawn] {
        let mut req = update(&id, &format!("x-{status:?}"), status);
        req.reason_code = StatusReason::SentInError as i32;
        let err = third.update_referral_status(req).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{status:?}");
    }
    let listed = third
        .list_referrals(ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.referrals.is_empty());

    let mut events = third
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(got.is_err(), "the third agency received an event: {got:?}");

    // The referral is untouched.
    let r = sender
        .get_referral(GetReferralRequest { referral_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.referral.unwrap().status_history.len(), 1);

    let err = third
        .get_referral(GetReferralRequest {
            referral_id: ulid::Ulid::new().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_transitions_are_failed_precondition_naming_the_current_status() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;
    let mut recipient = env.client(&gw, "housing").await;
    let id = submitted_id(&mut sender, "r", referral_to("housing")).await;
    recipient
        .update_referral_status(update(&id, "a", ReferralStatus::Accepted))
        .await
        .unwrap();

    // Skipping IN_PROGRESS.
    let mut complete = update(&id, "c", ReferralStatus::Completed);
    complete.outcome = ReferralOutcome::Resolved as i32;
    let err = recipient
        .update_referral_status(complete)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("ACCEPTED"), "{}", err.message());
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "TRANSITION_NOT_ALLOWED");
    assert_eq!(
        info.metadata.get("current_status").map(String::as_str),
        Some("ACCEPTED")
    );

    // Only the recipient accepts; only the gateway delivers.
    let err = sender
        .update_referral_status(update(&id, "s1", ReferralStatus::InProgress))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "STATUS_NOT_SETTABLE_BY_CALLER"
    );
    let err = recipient
        .update_referral_status(update(&id, "d", ReferralStatus::Delivered))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // The sender withdraws; after that nothing moves.
    let mut withdraw = update(&id, "w", ReferralStatus::Withdrawn);
    withdraw.reason_code = StatusReason::NoLongerNeeded as i32;
    sender.update_referral_status(withdraw).await.unwrap();
    let err = recipient
        .update_referral_status(update(&id, "p", ReferralStatus::InProgress))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("WITHDRAWN"), "{}", err.message());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_sender_and_output_only_fields_are_ignored() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;
    let mut spoof = referral_to("housing");
    spoof.from_agency = "police".into();
    spoof.id = "01AAAAAAAAAAAAAAAAAAAAAAAA".into();
    spoof.status = ReferralStatus::Completed as i32;
    spoof.status_history = vec![StatusChange {
        status: ReferralStatus::Accepted as i32,
        actor_agency: "housing".into(),
        ..Default::default()
    }];
    let r = sender
        .submit_referral(submit("spoof", spoof))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(
        r.from_agency, "social-services",
        "the sender comes from the certificate"
    );
    assert_ne!(r.id, "01AAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(r.status(), ReferralStatus::Submitted);
    assert_eq!(r.status_history.len(), 1);

    // The agency it claimed to be cannot see it.
    let mut police = env.client(&gw, "police").await;
    let err = police
        .get_referral(GetReferralRequest {
            referral_id: r.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A retry that differs only in output-only fields is the same request.
    let mut spoof2 = referral_to("housing");
    spoof2.from_agency = "charity".into();
    let again = sender
        .submit_referral(submit("spoof", spoof2))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(again.id, r.id);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_names_every_bad_field() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut sender = env.client(&gw, "social-services").await;

    let mut bad = referral_to("nowhere");
    bad.service_code = String::new();
    bad.category = 0;
    bad.priority = 99;
    bad.summary = " ".into();
    let subject = bad.subject.as_mut().unwrap();
    subject.identifier.as_mut().unwrap().value = "784-1990-1234567-1".into(); // wrong check digit
    subject.date_of_birth = "1990-02-30".into();
    subject.contact.as_mut().unwrap().phone = "0501234567".into();
    bad.attachments = vec![DocumentReference {
        document_id: "not-a-document".into(),
        title: "Tenancy notice".into(),
    }];
    bad.consent.as_mut().unwrap().expires_at = Some(prost_types::Timestamp {
        seconds: 1_000_000,
        nanos: 0,
    });
    let err = sender
        .submit_referral(submit("bad id with spaces", bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for expected in [
        "request_id",
        "referral.to_agency",
        "referral.service_code",
        "referral.category",
        "referral.priority",
        "referral.subject.identifier.value",
        "referral.subject.date_of_birth",
        "referral.subject.contact.phone",
        "referral.summary",
        "referral.attachments[0].document_id",
        "referral.consent.expires_at",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing from {fields:?}"
        );
    }

    let err = sender
        .submit_referral(SubmitReferralRequest {
            request_id: "x".into(),
            referral: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Self-referral.
    let err = sender
        .submit_referral(submit("self", referral_to("social-services")))
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "referral.to_agency"
    );

    // Status updates: reason codes and outcomes.
    let id = submitted_id(&mut sender, "ok", referral_to("housing")).await;
    let mut recipient = env.client(&gw, "housing").await;
    let cases = [
        (update(&id, "rej", ReferralStatus::Rejected), "reason_code"),
        (update(&id, "cmp", ReferralStatus::Completed), "outcome"),
        (
            update("not-an-id", "n", ReferralStatus::Accepted),
            "referral_id",
        ),
        (update(&id, "uns", ReferralStatus::Unspecified), "status"),
    ];
    for (req, field) in cases {
        let err = recipient.update_referral_status(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let fields: Vec<_> = err
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert!(
            fields.contains(&field.to_string()),
            "{field} not in {fields:?}"
        );
    }
    let mut other = update(&id, "oth", ReferralStatus::Rejected);
    other.reason_code = StatusReason::Other as i32;
    let err = recipient.update_referral_status(other).await.unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "note"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages_with_stable_tokens() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut housing = env.client(&gw, "housing").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = referral_to("housing");
        if i % 2 == 0 {
            r.category = ReferralCategory::FinancialHardship as i32;
            r.priority = ReferralPriority::Routine as i32;
        }
        ids.push(submitted_id(&mut social, &format!("s{i}"), r).await);
    }
    // One the other way round.
    housing
        .submit_referral(submit("h0", referral_to("social-services")))
        .await
        .unwrap();
    housing
        .update_referral_status(update(&ids[0], "acc", ReferralStatus::Accepted))
        .await
        .unwrap();

    let list = |req: ListReferralsRequest| {
        let mut c = social.clone();
        async move { c.list_referrals(req).await.map(|r| r.into_inner()) }
    };
    let all = list(ListReferralsRequest::default()).await.unwrap();
    assert_eq!(all.referrals.len(), 6);
    let sent = list(ListReferralsRequest {
        direction: ReferralDirection::Sent as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(sent.referrals.len(), 5);
    let received = list(ListReferralsRequest {
        direction: ReferralDirection::Received as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(received.referrals.len(), 1);
    assert_eq!(received.referrals[0].from_agency, "housing");
    let hardship = list(ListReferralsRequest {
        category: ReferralCategory::FinancialHardship as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(hardship.referrals.len(), 3);
    let routine_sent = list(ListReferralsRequest {
        direction: ReferralDirection::Sent as i32,
        priority: ReferralPriority::Routine as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(routine_sent.referrals.len(), 3);
    let accepted = list(ListReferralsRequest {
        statuses: vec![ReferralStatus::Accepted as i32],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        accepted
            .referrals
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        vec![ids[0].as_str()]
    );
    let overdue = list(ListReferralsRequest {
        overdue_only: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        overdue.referrals.is_empty(),
        "no referral has a due date yet"
    );

    // Pages of two: every sent referral exactly once, newest first.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(ListReferralsRequest {
            direction: ReferralDirection::Sent as i32,
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        pages += 1;
        paged.extend(page.referrals.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        // A token only works with the filters it was issued for.
        let err = list(ListReferralsRequest {
            page_size: 2,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(paged, newest_first);

    let err = list(ListReferralsRequest {
        page_size: 501,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    gw.shutdown().await.unwrap();
}

async fn next_event(stream: &mut tonic::Streaming<WatchReferralEventsResponse>) -> ReferralEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
        .expect("event, not error")
        .event
        .expect("event set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_cursor_across_a_restart_with_no_gap_and_no_duplicate() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut housing = env.client(&gw, "housing").await;

    let mut stream = housing
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let a = submitted_id(&mut social, "a", referral_to("housing")).await;
    let first = next_event(&mut stream).await;
    assert_eq!(
        (first.referral_id.as_str(), first.r#type()),
        (a.as_str(), ReferralEventType::Submitted)
    );
    // Live: an event committed while the stream waits arrives.
    housing
        .update_referral_status(update(&a, "acc", ReferralStatus::Accepted))
        .await
        .unwrap();
    let second = next_event(&mut stream).await;
    assert_eq!(second.status(), ReferralStatus::Accepted);
    assert_eq!(second.change.as_ref().unwrap().actor_agency, "housing");
    drop(stream);
    let cursor = second.cursor.clone();

    // More happens while the watcher is away, then the gateway restarts.
    let b = submitted_id(&mut social, "b", referral_to("housing")).await;
    housing
        .update_referral_status(update(&a, "prog", ReferralStatus::InProgress))
        .await
        .unwrap();
    social
        .submit_referral(submit("c", referral_to("police")))
        .await
        .unwrap(); // not housing's
    gw.shutdown().await.unwrap();

    let gw = env.start().await;
    let mut housing = env.client(&gw, "housing").await;
    let mut stream = housing
        .watch_referral_events(WatchReferralEventsRequest {
            cursor,
            only_new: false,
        })
        .await
        .unwrap()
        .into_inner();
    let third = next_event(&mut stream).await;
    let fourth = next_event(&mut stream).await;
    assert_eq!(
        (third.referral_id.as_str(), third.r#type()),
        (b.as_str(), ReferralEventType::Submitted)
    );
    assert_eq!(
        (fourth.referral_id.as_str(), fourth.status()),
        (a.as_str(), ReferralStatus::InProgress)
    );
    let nothing_more = tokio::time::timeout(Duration::from_millis(400), stream.next()).await;
    assert!(
        nothing_more.is_err(),
        "unexpected extra event: {nothing_more:?}"
    );
    let cursors: Vec<i64> = [&first, &second, &third, &fourth]
        .iter()
        .map(|e| e.cursor.parse().unwrap())
        .collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors increase: {cursors:?}"
    );

    // only_new starts after the newest event; a bad cursor is refused.
    let mut fresh = housing
        .watch_referral_events(WatchReferralEventsRequest {
            cursor: String::new(),
            only_new: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut social = env.client(&gw, "social-services").await;
    let d = submitted_id(&mut social, "d", referral_to("housing")).await;
    assert_eq!(next_event(&mut fresh).await.referral_id, d);
    let err = housing
        .watch_referral_events(WatchReferralEventsRequest {
            cursor: "abc".into(),
            only_new: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    drop(fresh);
    drop(stream);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_on_postgresql() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let env = TestEnv::with_database(Some(db.url.clone()));
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut housing = env.client(&gw, "housing").await;
    let mut stream = social
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = social
        .submit_referral(submit("pg", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    let retry = social
        .submit_referral(submit("pg", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    let id = first.referral.unwrap().id;
    housing
        .update_referral_status(update(&id, "a", ReferralStatus::Accepted))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut stream).await.status(),
        ReferralStatus::Submitted
    );
    assert_eq!(
        next_event(&mut stream).await.status(),
        ReferralStatus::Accepted
    );
    let err = housing
        .update_referral_status({
            let mut r = update(&id, "c", ReferralStatus::Completed);
            r.outcome = ReferralOutcome::Resolved as i32;
            r
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    drop(stream);
    // The audit trail on PostgreSQL: an auditor proves the receipt, and after shutdown (final
    // checkpoint) the whole log verifies.
    let receipt = first.audit_receipt.clone().unwrap();
    let mut auditor = jisr::pb::v1::audit_service_client::AuditServiceClient::new(
        env.channel(&gw, &env.agency_cert("digital")).await.unwrap(),
    );
    let proof = loop {
        match auditor
            .get_inclusion_proof(GetInclusionProofRequest {
                log_id: String::new(),
                leaf_index: receipt.leaf_index,
                tree_size: 0,
            })
            .await
        {
            Ok(p) => break p.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(proof.leaf_hash, receipt.leaf_hash);
    gw.shutdown().await.unwrap();
    let reads = jisr::store::Store::open_reads(&env.config.database)
        .await
        .unwrap();
    let key = std::fs::read_to_string(jisr::audit::verifier_key_path(
        &env.config.audit.signing_key,
    ))
    .unwrap();
    let reports = jisr::audit::verify::verify(
        &reads,
        &jisr::audit::verify::VerifyOptions {
            log_id: None,
            verifier_key: key.trim().to_string(),
            trusted_note: None,
            grace_ms: 0,
            progress: false,
        },
    )
    .await
    .expect("the PostgreSQL audit log verifies");
    // submit, its retry, two updates, at least one proof call (watch and retries vary).
    assert!(reports[0].entries >= 5, "{reports:?}");
    reads.close().await;
    db.drop_database().await;
}
