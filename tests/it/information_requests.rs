//! InformationRequestService over the wire: one agency asks another for information about a
//! person, the asked agency answers or declines, only the two of them see it, its events reach
//! both watches and both adapters, and an unanswered request becomes OVERDUE, then EXPIRED.

use std::collections::HashMap;
use std::time::Duration;

use jisr::audit::entry::{AuditEntry, Decision};
use jisr::pb::adapter_v1::{delivery, status_update, Delivery};
use jisr::pb::v1::information_request_service_client::InformationRequestServiceClient;
use jisr::pb::v1::respond_to_information_request_request::Response as Reply;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use time::OffsetDateTime;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::audit::entries;
use crate::common::*;
use crate::delivery::{ack, inbox, mock_agency, pull, push_to};
use crate::time_frames::expected_due;

type Client = InformationRequestServiceClient<Channel>;
type Events = Streaming<WatchReferralEventsResponse>;

/// What the police answer to the two questions of `information_request_to`.
const ANSWERS: [(&str, &str); 2] = [
    ("household-income", "AED 12,000 a month"),
    ("salary-certificate", "Issued 2026-01-10 by the employer"),
];

// ---- Calls -----------------------------------------------------------------------------------

async fn ask(
    client: &mut Client,
    request_id: &str,
    information_request: InformationRequest,
) -> Result<RequestInformationResponse, Status> {
    client
        .request_information(RequestInformationRequest {
            request_id: request_id.to_string(),
            information_request: Some(information_request),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Sends a request that must be accepted; returns it as stored.
async fn asked(
    client: &mut Client,
    request_id: &str,
    information_request: InformationRequest,
) -> InformationRequest {
    ask(client, request_id, information_request)
        .await
        .expect("request information")
        .information_request
        .expect("information request in the answer")
}

fn answering(
    id: &str,
    request_id: &str,
    answers: &[(&str, &str)],
) -> RespondToInformationRequestRequest {
    RespondToInformationRequestRequest {
        information_request_id: id.to_string(),
        request_id: request_id.to_string(),
        response: Some(Reply::Answers(InformationRequestAnswers {
            answers: answers
                .iter()
                .map(|(code, value)| Answer {
                    question_code: code.to_string(),
                    value: value.to_string(),
                    documents: Vec::new(),
                })
                .collect(),
        })),
    }
}

fn declining(
    id: &str,
    request_id: &str,
    reason: DeclineReason,
    note: &str,
) -> RespondToInformationRequestRequest {
    RespondToInformationRequestRequest {
        information_request_id: id.to_string(),
        request_id: request_id.to_string(),
        response: Some(Reply::Decline(InformationRequestDecline {
            reason: reason as i32,
            note: note.to_string(),
        })),
    }
}

async fn respond(
    client: &mut Client,
    request: RespondToInformationRequestRequest,
) -> Result<RespondToInformationRequestResponse, Status> {
    client
        .respond_to_information_request(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Answers both questions with `ANSWERS`, which must be accepted; returns the request after.
async fn answered(client: &mut Client, id: &str, request_id: &str) -> InformationRequest {
    respond(client, answering(id, request_id, &ANSWERS))
        .await
        .expect("answer")
        .information_request
        .expect("information request in the answer")
}

/// `ANSWERS` as the request carries them once answered.
fn expected_answers() -> Vec<Answer> {
    match answering("", "", &ANSWERS).response {
        Some(Reply::Answers(a)) => a.answers,
        _ => unreachable!(),
    }
}

async fn get(client: &mut Client, id: &str) -> Result<InformationRequest, Status> {
    client
        .get_information_request(GetInformationRequestRequest {
            information_request_id: id.to_string(),
        })
        .await
        .map(|r| {
            r.into_inner()
                .information_request
                .expect("request in the answer")
        })
}

/// The ids listed (first page), newest first.
async fn listed(client: &mut Client, request: ListInformationRequestsRequest) -> Vec<String> {
    client
        .list_information_requests(request)
        .await
        .expect("list")
        .into_inner()
        .information_requests
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn direction(d: InformationRequestDirection) -> ListInformationRequestsRequest {
    ListInformationRequestsRequest {
        direction: d as i32,
        ..Default::default()
    }
}

// ---- Errors ----------------------------------------------------------------------------------

/// Asserts INVALID_ARGUMENT naming every field in `expected` (among any others).
fn assert_invalid(err: &Status, expected: &[&str]) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let fields: Vec<String> = err
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in expected {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
}

/// Asserts `code` with ErrorInfo `reason`; returns the ErrorInfo metadata.
fn assert_refused(err: &Status, code: Code, reason: &str) -> HashMap<String, String> {
    assert_eq!(err.code(), code, "{err:?}");
    let info = err.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, reason, "{err:?}");
    info.metadata
}

// ---- Time ------------------------------------------------------------------------------------

/// The time `ms` milliseconds from now (negative: ago), to the millisecond.
fn in_ms(ms: i64) -> prost_types::Timestamp {
    let at = jisr::common::time::now_ms() + ms;
    prost_types::Timestamp {
        seconds: at.div_euclid(1000),
        nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
    }
}

// ---- Events ----------------------------------------------------------------------------------

/// `agency`'s watch, from now on.
async fn watch(env: &TestEnv, gw: &Gateway, agency: &str, cursor: &str) -> Events {
    env.client(gw, agency)
        .await
        .watch_referral_events(WatchReferralEventsRequest {
            cursor: cursor.to_string(),
            only_new: cursor.is_empty(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next event, if one comes within `window`.
async fn next_within(events: &mut Events, window: Duration) -> Option<ReferralEvent> {
    match tokio::time::timeout(window, events.next()).await {
        Ok(Some(item)) => Some(item.expect("event, not error").event.expect("event set")),
        Ok(None) => panic!("the watch ended"),
        Err(_) => None,
    }
}

/// The next `n` events of information request `id` (others are skipped), each within 5 s.
async fn events_of(events: &mut Events, id: &str, n: usize) -> Vec<ReferralEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        let e = next_within(events, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("event {} of {id} within 5 s; had {got:?}", got.len() + 1));
        if e.information_request_id == id {
            got.push(e);
        }
    }
    got
}

/// Every event that arrives within `window`.
async fn events_within(events: &mut Events, window: Duration) -> Vec<ReferralEvent> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Some(e) = next_within(events, deadline - tokio::time::Instant::now()).await {
        got.push(e);
    }
    got
}

/// (type, information request status, referral id) of each event.
fn summary(events: &[ReferralEvent]) -> Vec<(ReferralEventType, InformationRequestStatus, &str)> {
    events
        .iter()
        .map(|e| {
            (
                e.r#type(),
                e.information_request_status(),
                e.referral_id.as_str(),
            )
        })
        .collect()
}

// ---- Deliveries and audit --------------------------------------------------------------------

/// Pulls (and acknowledges) `agency`'s inbox until `wanted` picks a delivery out, within ~5 s.
async fn pulled<T>(
    env: &TestEnv,
    gw: &Gateway,
    agency: &str,
    what: &str,
    wanted: impl Fn(&Delivery) -> Option<T>,
) -> T {
    let mut client = inbox(env, gw, agency).await;
    for _ in 0..10 {
        for d in pull(&mut client, 500).await {
            ack(&mut client, &d).await;
            if let Some(found) = wanted(&d) {
                return found;
            }
        }
    }
    panic!("{agency}'s inbox never offered {what}");
}

/// The latest audit entry of `agency` calling `method` of InformationRequestService.
async fn audit_entry(gw: &Gateway, agency: &str, method: &str) -> AuditEntry {
    let method = format!("/jisr.v1.InformationRequestService/{method}");
    for _ in 0..100 {
        let found = entries(gw.store.pool())
            .await
            .into_iter()
            .rev()
            .find(|e| e.caller_agency == agency && e.method == method);
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit entry of {agency} calling {method}");
}

fn unknown_id() -> String {
    ulid::Ulid::new().to_string()
}

// ---- The closed loop -------------------------------------------------------------------------

/// Social services asks the police (with a spoofed sender, ignored), the police finds it
/// among what it received, reads it and answers; social services reads the answers.
/// Returns the request's id.
async fn closed_loop(env: &TestEnv, gw: &Gateway) -> String {
    let mut social = information_client(env, gw, "social-services").await;
    let mut police = information_client(env, gw, "police").await;

    let mut spoofed = information_request_to("police");
    spoofed.from_agency = "police".into();
    spoofed.status = InformationRequestStatus::Answered as i32;
    let spoofed_id = unknown_id();
    spoofed.id = spoofed_id.clone();
    let sent = ask(&mut social, "ask-1", spoofed)
        .await
        .expect("request information");
    let receipt = sent.audit_receipt.expect("a write answers with a receipt");
    assert!(!receipt.leaf_hash.is_empty());
    let sent = sent
        .information_request
        .expect("information request in the answer");
    assert!(ulid::Ulid::from_string(&sent.id).is_ok(), "{}", sent.id);
    assert_ne!(sent.id, spoofed_id, "the gateway assigns the id");
    assert_eq!(
        sent.from_agency, "social-services",
        "taken from the certificate"
    );
    assert_eq!(sent.to_agency, "police");
    assert_eq!(sent.request_id, "ask-1");
    assert_eq!(sent.status(), InformationRequestStatus::Open);
    assert!(sent.due_at.is_some() && sent.created_at.is_some());
    assert_eq!(sent.questions, information_request_to("police").questions);
    assert!(sent.answers.is_empty() && !sent.overdue);
    let id = sent.id.clone();

    use InformationRequestDirection::{Received, Sent};
    assert_eq!(
        listed(&mut police, direction(Received)).await,
        vec![id.clone()]
    );
    assert!(listed(&mut police, direction(Sent)).await.is_empty());
    assert_eq!(listed(&mut social, direction(Sent)).await, vec![id.clone()]);
    assert!(listed(&mut social, direction(Received)).await.is_empty());
    assert_eq!(
        get(&mut police, &id).await.unwrap(),
        sent,
        "the asked agency reads what was sent"
    );

    let response = respond(&mut police, answering(&id, "answer-1", &ANSWERS))
        .await
        .expect("answer");
    assert!(response.audit_receipt.is_some());
    let answered = response.information_request.unwrap();
    assert_eq!(answered.status(), InformationRequestStatus::Answered);
    assert_eq!(answered.answers, expected_answers());
    let read = get(&mut social, &id).await.unwrap();
    assert_eq!(read.status(), InformationRequestStatus::Answered);
    assert_eq!(read.answers, expected_answers());
    assert_eq!(read.from_agency, "social-services");
    let answered_only = ListInformationRequestsRequest {
        statuses: vec![InformationRequestStatus::Answered as i32],
        ..Default::default()
    };
    assert_eq!(listed(&mut social, answered_only).await, vec![id.clone()]);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asked_agency_answers_or_declines_and_the_requester_reads_the_response() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    closed_loop(&env, &gw).await;

    // Declining: OTHER needs a note; a reason with a note is recorded as given.
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;
    let id = asked(&mut social, "ask-2", information_request_to("police"))
        .await
        .id;
    let err = respond(
        &mut police,
        declining(&id, "decline-other", DeclineReason::Other, " "),
    )
    .await
    .unwrap_err();
    assert_invalid(&err, &["decline.note"]);
    let declined = respond(
        &mut police,
        declining(
            &id,
            "decline",
            DeclineReason::NotHeld,
            "We hold no income records.",
        ),
    )
    .await
    .expect("decline")
    .information_request
    .unwrap();
    assert_eq!(declined.status(), InformationRequestStatus::Declined);
    let read = get(&mut social, &id).await.unwrap();
    assert_eq!(read.status(), InformationRequestStatus::Declined);
    assert_eq!(read.decline_reason(), DeclineReason::NotHeld);
    assert_eq!(read.decline_note, "We hold no income records.");
    assert!(read.answers.is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_belong_to_a_referral_the_requester_is_party_to_and_no_other() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social_referrals = env.client(&gw, "social-services").await;
    let mut housing_referrals = env.client(&gw, "housing").await;
    let sent_referral =
        submitted_id(&mut social_referrals, "ref-sent", referral_to("housing")).await;
    let received_referral = submitted_id(
        &mut housing_referrals,
        "ref-received",
        referral_to("social-services"),
    )
    .await;
    let others_referral =
        submitted_id(&mut housing_referrals, "ref-others", referral_to("charity")).await;

    let mut social = information_client(&env, &gw, "social-services").await;
    let mut ids = Vec::new();
    for (request_id, referral_id) in [
        ("on-sent", &sent_referral),
        ("on-received", &received_referral),
    ] {
        let mut ir = information_request_to("police");
        ir.referral_id = referral_id.clone();
        let r = asked(&mut social, request_id, ir).await;
        assert_eq!(&r.referral_id, referral_id);
        ids.push(r.id);
    }
    let alone = asked(&mut social, "alone", information_request_to("police")).await;
    assert_eq!(alone.referral_id, "");
    let of = |referral_id: &str| ListInformationRequestsRequest {
        referral_id: referral_id.to_string(),
        ..Default::default()
    };
    assert_eq!(
        listed(&mut social, of(&sent_referral)).await,
        vec![ids[0].clone()]
    );
    assert_eq!(
        listed(&mut social, of(&received_referral)).await,
        vec![ids[1].clone()]
    );
    assert_eq!(listed(&mut social, of("")).await.len(), 3);

    // A referral between two other agencies, or none at all, is refused.
    for (request_id, referral_id) in [("on-others", others_referral), ("on-none", unknown_id())] {
        let mut ir = information_request_to("police");
        ir.referral_id = referral_id;
        let err = ask(&mut social, request_id, ir).await.unwrap_err();
        assert_invalid(&err, &["information_request.referral_id"]);
    }
    assert_eq!(listed(&mut social, of("")).await.len(), 3, "nothing stored");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_two_agencies_see_a_request_and_only_the_asked_one_responds() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut charity = information_client(&env, &gw, "charity").await;
    let id = asked(&mut social, "ask", information_request_to("police"))
        .await
        .id;

    let err = get(&mut charity, &id).await.unwrap_err();
    let meta = assert_refused(&err, Code::PermissionDenied, "NOT_A_PARTY");
    assert_eq!(meta.get("id"), Some(&id));
    let err = respond(&mut charity, answering(&id, "charity-answers", &ANSWERS))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "NOT_A_PARTY");
    assert!(
        listed(&mut charity, ListInformationRequestsRequest::default())
            .await
            .is_empty()
    );

    // The requester cannot answer its own request.
    let err = respond(&mut social, answering(&id, "self-answer", &ANSWERS))
        .await
        .unwrap_err();
    let meta = assert_refused(&err, Code::PermissionDenied, "NOT_THE_ASKED_AGENCY");
    assert_eq!(meta.get("asked_agency").map(String::as_str), Some("police"));

    let missing = unknown_id();
    let err = get(&mut social, &missing).await.unwrap_err();
    assert_refused(&err, Code::NotFound, "NOT_FOUND");
    let mut police = information_client(&env, &gw, "police").await;
    let err = respond(&mut police, answering(&missing, "missing", &ANSWERS))
        .await
        .unwrap_err();
    assert_refused(&err, Code::NotFound, "NOT_FOUND");
    assert_eq!(
        get(&mut police, &id).await.unwrap().status(),
        InformationRequestStatus::Open,
        "the refused responses changed nothing"
    );

    // Each refusal is in the audit log as a denial, with the rule that denied it.
    for (agency, method, rule) in [
        (
            "charity",
            "GetInformationRequest",
            "information_request.party",
        ),
        (
            "charity",
            "RespondToInformationRequest",
            "information_request.party",
        ),
        (
            "social-services",
            "RespondToInformationRequest",
            "information_request.asked-agency",
        ),
    ] {
        let entry = audit_entry(&gw, agency, method).await;
        assert_eq!(
            (entry.decision, entry.rule.as_str(), entry.grpc_code),
            (Decision::Deny, rule, Code::PermissionDenied as i32),
            "{agency} {method}"
        );
        assert!(entry.target_ids.contains(&id), "{:?}", entry.target_ids);
    }
    let listing = audit_entry(&gw, "charity", "ListInformationRequests").await;
    assert_eq!(listing.decision, Decision::Allow);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_once_and_only_with_answers_to_its_own_questions() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;

    let mut twice = information_request_to("police");
    twice.questions[1].code = twice.questions[0].code.clone();
    let err = ask(&mut social, "duplicate-codes", twice)
        .await
        .unwrap_err();
    assert_invalid(&err, &["information_request.questions[1].code"]);

    let id = asked(&mut social, "ask", information_request_to("police"))
        .await
        .id;
    let err = respond(
        &mut police,
        answering(&id, "wrong-code", &[("pension", "None"), ANSWERS[0]]),
    )
    .await
    .unwrap_err();
    assert_invalid(&err, &["answers.answers[0].question_code"]);
    assert_eq!(
        get(&mut police, &id).await.unwrap().status(),
        InformationRequestStatus::Open
    );

    answered(&mut police, &id, "answer").await;
    for second in [
        answering(&id, "answer-again", &ANSWERS),
        declining(&id, "decline-after", DeclineReason::Duplicate, ""),
    ] {
        let err = respond(&mut police, second).await.unwrap_err();
        let meta = assert_refused(&err, Code::FailedPrecondition, "NOT_OPEN");
        assert_eq!(
            meta.get("current_status").map(String::as_str),
            Some("ANSWERED")
        );
    }
    let read = get(&mut social, &id).await.unwrap();
    assert_eq!(read.status(), InformationRequestStatus::Answered);
    assert_eq!(read.answers, expected_answers(), "the first answer stands");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_the_same_request_id_return_the_first_result() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;

    let first = ask(&mut social, "same", information_request_to("police"))
        .await
        .unwrap();
    let again = ask(&mut social, "same", information_request_to("police"))
        .await
        .unwrap();
    assert_eq!(again, first, "the identical response, receipt included");
    let id = first.information_request.unwrap().id;
    assert_eq!(
        listed(&mut social, ListInformationRequestsRequest::default()).await,
        vec![id.clone()],
        "no second request"
    );
    let mut changed = information_request_to("police");
    changed.questions[0].text = "Something else?".into();
    let err = ask(&mut social, "same", changed).await.unwrap_err();
    let meta = assert_refused(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    assert_eq!(meta.get("request_id").map(String::as_str), Some("same"));

    let answer = respond(&mut police, answering(&id, "reply", &ANSWERS))
        .await
        .unwrap();
    let replayed = respond(&mut police, answering(&id, "reply", &ANSWERS))
        .await
        .unwrap();
    assert_eq!(replayed, answer, "the first answer, not NOT_OPEN");
    let err = respond(
        &mut police,
        declining(&id, "reply", DeclineReason::NotHeld, ""),
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_every_bad_field() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;

    let mut bad = information_request_to("nowhere");
    let subject = bad.subject.as_mut().unwrap();
    subject.identifier.as_mut().unwrap().value = "784-1990-1234567-1".into(); // wrong check digit
    subject.full_name = String::new();
    subject.full_name_ar = String::new();
    bad.questions = vec![
        Question {
            code: String::new(),
            text: "What is the income?".into(),
            document_requested: false,
        },
        Question {
            code: "income".into(),
            text: " ".into(),
            document_requested: false,
        },
        Question {
            code: "not a code!".into(),
            text: "Anything else?".into(),
            document_requested: false,
        },
    ];
    bad.due_at = Some(in_ms(-60_000));
    let err = ask(&mut social, "bad id with spaces", bad)
        .await
        .unwrap_err();
    assert_invalid(
        &err,
        &[
            "request_id",
            "information_request.to_agency",
            "information_request.subject.identifier.value",
            "information_request.subject.full_name",
            "information_request.questions[0].code",
            "information_request.questions[1].text",
            "information_request.questions[2].code",
            "information_request.due_at",
        ],
    );

    let with = |change: &dyn Fn(&mut InformationRequest)| {
        let mut r = information_request_to("police");
        change(&mut r);
        Some(r)
    };
    let question = |i: usize| Question {
        code: format!("q{i}"),
        text: "Which?".into(),
        document_requested: false,
    };
    let cases = [
        (
            with(&|r| r.to_agency = "social-services".into()),
            "information_request.to_agency",
        ),
        (
            with(&|r| r.questions.clear()),
            "information_request.questions",
        ),
        (
            with(&|r| r.questions = (0..51).map(question).collect()),
            "information_request.questions",
        ),
        (
            with(&|r| r.due_at = Some(in_ms(400 * 86_400_000))),
            "information_request.due_at",
        ),
        (
            with(&|r| r.referral_id = "not-a-referral".into()),
            "information_request.referral_id",
        ),
        (with(&|r| r.subject = None), "information_request.subject"),
        (None, "information_request"),
    ];
    for (i, (information_request, field)) in cases.into_iter().enumerate() {
        let err = social
            .request_information(RequestInformationRequest {
                request_id: format!("case-{i}"),
                information_request,
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &[field]);
    }
    let fifty = with(&|r| r.questions = (0..50).map(question).collect()).unwrap();
    asked(&mut social, "fifty", fifty).await;
    assert_eq!(
        listed(&mut social, ListInformationRequestsRequest::default())
            .await
            .len(),
        1,
        "only the valid request was stored"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_parties_watch_requests_and_responses_and_nobody_else_does() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social_events = watch(&env, &gw, "social-services", "").await;
    let mut police_events = watch(&env, &gw, "police", "").await;
    let mut charity_events = watch(&env, &gw, "charity", "").await;

    let mut referrals = env.client(&gw, "social-services").await;
    let referral_id = submitted_id(&mut referrals, "case", referral_to("police")).await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;
    let mut linked = information_request_to("police");
    linked.referral_id = referral_id.clone();
    let id = asked(&mut social, "linked", linked).await.id;
    answered(&mut police, &id, "answer").await;
    let alone = asked(&mut social, "alone", information_request_to("police"))
        .await
        .id;
    respond(
        &mut police,
        declining(&alone, "decline", DeclineReason::NotHeld, ""),
    )
    .await
    .unwrap();

    use InformationRequestStatus::{Answered, Declined, Open};
    use ReferralEventType::{InformationRequested, InformationResponded};
    let mut requested_cursor = String::new();
    for (agency, events) in [
        ("social-services", &mut social_events),
        ("police", &mut police_events),
    ] {
        let of_linked = events_of(events, &id, 2).await;
        assert_eq!(
            summary(&of_linked),
            vec![
                (InformationRequested, Open, referral_id.as_str()),
                (InformationResponded, Answered, referral_id.as_str()),
            ],
            "{agency}"
        );
        let of_alone = events_of(events, &alone, 2).await;
        assert_eq!(
            summary(&of_alone),
            vec![
                (InformationRequested, Open, ""),
                (InformationResponded, Declined, "")
            ],
            "{agency}"
        );
        for e in of_linked.iter().chain(&of_alone) {
            assert_eq!(
                (e.from_agency.as_str(), e.to_agency.as_str()),
                ("social-services", "police")
            );
            assert_eq!(
                e.status(),
                ReferralStatus::Unspecified,
                "not a referral status"
            );
            assert!(e.occurred_at.is_some());
        }
        requested_cursor = of_linked[0].cursor.clone();
    }

    // Resuming after the request's event, the response's is next.
    let mut resumed = watch(&env, &gw, "police", &requested_cursor).await;
    let next = next_within(&mut resumed, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (next.r#type(), next.information_request_id.as_str()),
        (InformationResponded, id.as_str())
    );

    // The third agency saw none of it: its watch is quiet, and the next event it gets is
    // its own referral's.
    assert_eq!(
        next_within(&mut charity_events, Duration::from_secs(1)).await,
        None,
        "charity saw an event it is not party to"
    );
    let mut housing = env.client(&gw, "housing").await;
    let own = submitted_id(&mut housing, "to-charity", referral_to("charity")).await;
    let next = next_within(&mut charity_events, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (
            next.r#type(),
            next.referral_id.as_str(),
            next.information_request_id.as_str()
        ),
        (ReferralEventType::Submitted, own.as_str(), "")
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses_reach_grpc_agencies_through_their_adapters() {
    let mut env = TestEnv::sqlite();
    let (police_addr, police_system) = mock_agency(&env).await;
    let (social_addr, social_system) = mock_agency(&env).await;
    push_to(&mut env, "police", police_addr);
    push_to(&mut env, "social-services", social_addr);
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;

    let id = asked(&mut social, "ask", information_request_to("police"))
        .await
        .id;
    let wait = Duration::from_secs(5);
    let request = format!("information_request {id}");
    police_system
        .wait_for(&request, |a| a.what == request, wait)
        .await
        .unwrap();
    answered(&mut police, &id, "answer").await;
    let response = format!("information_response {id} ANSWERED");
    social_system
        .wait_for(&response, |a| a.what == response, wait)
        .await
        .unwrap();
    assert!(
        social_system
            .arrivals()
            .iter()
            .all(|a| !a.what.starts_with("information_request ")),
        "the requester is not sent its own request"
    );
    assert!(
        police_system
            .arrivals()
            .iter()
            .all(|a| !a.what.starts_with("information_response ")),
        "the asked agency is not sent its own response"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_agencies_pull_requests_and_responses() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;
    let id = asked(&mut social, "ask", information_request_to("police"))
        .await
        .id;

    let request = pulled(
        &env,
        &gw,
        "police",
        "the information request",
        |d| match &d.payload {
            Some(delivery::Payload::InformationRequest(r)) if r.id == id => Some(r.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(request.from_agency, "social-services");
    assert_eq!(request.status(), InformationRequestStatus::Open);
    assert_eq!(
        request.questions,
        information_request_to("police").questions
    );

    answered(&mut police, &id, "answer").await;
    let response = pulled(&env, &gw, "social-services", "the response", |d| {
        match &d.payload {
            Some(delivery::Payload::InformationResponse(r)) if r.id == id => Some(r.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(response.status(), InformationRequestStatus::Answered);
    assert_eq!(response.answers, expected_answers());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_due_after_the_default_working_days_unless_a_due_date_is_given() {
    let mut env = TestEnv::sqlite();
    // Not the built-in default, so the configured value is what counts.
    env.config
        .information_requests
        .default_time_frame_working_days = 3;
    let gw = env.start().await;
    let mut social = information_client(&env, &gw, "social-services").await;

    let r = asked(&mut social, "default", information_request_to("police")).await;
    let created = r.created_at.unwrap();
    let start = OffsetDateTime::from_unix_timestamp(created.seconds).unwrap();
    let want = expected_due(start, 3);
    let due = r.due_at.unwrap();
    assert_eq!(
        due.seconds,
        want.unix_timestamp(),
        "due {due:?}, expected {want} (3 working days after {start})"
    );

    let given = in_ms(3 * 86_400_000 + 250);
    let mut ir = information_request_to("police");
    ir.due_at = Some(given);
    let r = asked(&mut social, "given", ir).await;
    assert_eq!(r.due_at, Some(given), "a given due date is kept");
    assert_eq!(get(&mut social, &r.id).await.unwrap().due_at, Some(given));
    assert!(!r.overdue);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_is_overdue_once_then_expires_and_takes_no_response() {
    let mut env = TestEnv::sqlite();
    env.config.information_requests.expire_after_secs = 0;
    let gw = env.start().await;
    let mut events = watch(&env, &gw, "social-services", "").await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;
    let mut ir = information_request_to("police");
    ir.due_at = Some(in_ms(1500));
    let id = asked(&mut social, "soon", ir).await.id;

    use InformationRequestStatus::{Expired, Open};
    use ReferralEventType::{InformationExpired, InformationRequested, Overdue};
    let got = events_of(&mut events, &id, 3).await;
    assert_eq!(
        summary(&got),
        vec![
            (InformationRequested, Open, ""),
            (Overdue, Open, ""),
            (InformationExpired, Expired, ""),
        ]
    );
    // Several sweeps later, nothing more.
    let later = events_within(&mut events, Duration::from_secs(1)).await;
    assert!(later.is_empty(), "{later:?}");

    let r = get(&mut social, &id).await.unwrap();
    assert_eq!(r.status(), Expired);
    assert!(!r.overdue, "an expired request is closed, not overdue");
    let err = respond(&mut police, answering(&id, "too-late", &ANSWERS))
        .await
        .unwrap_err();
    let meta = assert_refused(&err, Code::FailedPrecondition, "NOT_OPEN");
    assert_eq!(
        meta.get("current_status").map(String::as_str),
        Some("EXPIRED")
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_request_in_its_grace_period_is_flagged_once_and_can_still_be_answered() {
    let mut env = TestEnv::sqlite();
    env.config.information_requests.expire_after_secs = 3600;
    let (addr, police_system) = mock_agency(&env).await;
    push_to(&mut env, "police", addr);
    let gw = env.start().await;
    let mut events = watch(&env, &gw, "social-services", "").await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let mut police = information_client(&env, &gw, "police").await;
    let mut ir = information_request_to("police");
    ir.due_at = Some(in_ms(1500));
    let id = asked(&mut social, "late", ir).await.id;
    let on_time = asked(&mut social, "on-time", information_request_to("police"))
        .await
        .id;

    use InformationRequestStatus::Open;
    use ReferralEventType::{InformationRequested, Overdue};
    let got = events_of(&mut events, &id, 2).await;
    assert_eq!(
        summary(&got),
        vec![(InformationRequested, Open, ""), (Overdue, Open, "")]
    );
    let later = events_within(&mut events, Duration::from_secs(1)).await;
    assert!(
        later.is_empty(),
        "one OVERDUE event and no expiry yet: {later:?}"
    );

    let r = get(&mut social, &id).await.unwrap();
    assert_eq!(r.status(), Open);
    assert!(r.overdue);
    assert!(!get(&mut social, &on_time).await.unwrap().overdue);
    let overdue_only = || ListInformationRequestsRequest {
        overdue_only: true,
        ..Default::default()
    };
    assert_eq!(listed(&mut social, overdue_only()).await, vec![id.clone()]);
    assert_eq!(listed(&mut police, overdue_only()).await, vec![id.clone()]);

    // Both parties are told, each through its adapter.
    let flagged = format!("status {id} OPEN OVERDUE");
    police_system
        .wait_for(&flagged, |a| a.what == flagged, Duration::from_secs(5))
        .await
        .unwrap();
    let told = pulled(
        &env,
        &gw,
        "social-services",
        "the overdue flag",
        |d| match &d.payload {
            Some(delivery::Payload::StatusUpdate(u)) => match &u.target {
                Some(status_update::Target::InformationRequest(u))
                    if u.information_request_id == id =>
                {
                    Some((u.status(), u.overdue))
                }
                _ => None,
            },
            _ => None,
        },
    )
    .await;
    assert_eq!(told, (Open, true));

    let r = answered(&mut police, &id, "late-answer").await;
    assert_eq!(r.status(), InformationRequestStatus::Answered);
    assert!(!r.overdue);
    let response = pulled(
        &env,
        &gw,
        "social-services",
        "the late answer",
        |d| match &d.payload {
            Some(delivery::Payload::InformationResponse(r)) if r.id == id => Some(r.status()),
            _ => None,
        },
    )
    .await;
    assert_eq!(response, InformationRequestStatus::Answered);
    assert!(listed(&mut social, overdue_only()).await.is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_loop_works_on_postgresql() {
    let Some(pg) = postgres_database().await else {
        return;
    };
    let env = TestEnv::with_database(Some(pg.url.clone()));
    let gw = env.start().await;
    let id = closed_loop(&env, &gw).await;
    let mut social = information_client(&env, &gw, "social-services").await;
    let retried = ask(&mut social, "ask-1", information_request_to("police"))
        .await
        .unwrap()
        .information_request
        .unwrap();
    assert_eq!(retried.id, id, "idempotent on PostgreSQL too");
    gw.shutdown().await.unwrap();
    pg.drop_database().await;
}
