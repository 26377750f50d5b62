//! Limits over the wire: per-agency rate and calls in progress, message size, call
//! deadlines, streams per connection, and one agency flooding the gateway without slowing
//! the others. A refusal is RESOURCE_EXHAUSTED (with a retry hint where waiting helps) and
//! is audited with the limit that refused it.

use std::time::{Duration, Instant};

use jisr::audit::entry::Decision;
use jisr::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use jisr::pb::adapter_v1::PullDeliveriesRequest;
use jisr::pb::v1::referral_service_client::ReferralServiceClient;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::audit::entries;
use crate::common::*;

async fn list(client: &mut ReferralServiceClient<Channel>) -> Result<(), tonic::Status> {
    client
        .list_referrals(ListReferralsRequest::default())
        .await
        .map(drop)
}

/// Waits until the audit log holds an entry for `agency` refused by `rule`.
async fn refusal_audited(gw: &Gateway, agency: &str, rule: &str, code: Code) {
    let pool = gw.store.pool().clone();
    for _ in 0..100 {
        if entries(&pool).await.iter().any(|e| {
            e.caller_agency == agency
                && e.decision == Decision::Deny
                && e.rule == rule
                && e.grpc_code == code as i32
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no DENY entry by {rule} for {agency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_over_its_rate_is_refused_with_a_retry_hint_and_others_are_not() {
    let mut env = TestEnv::sqlite();
    env.config.limits.requests_per_second = 2.0;
    env.config.limits.burst = 3;
    let gw = env.start().await;
    let mut police = env.client(&gw, "police").await;
    let mut social = env.client(&gw, "social-services").await;
    for _ in 0..3 {
        list(&mut police).await.expect("within the burst");
    }
    let err = list(&mut police).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.get_details_error_info().unwrap().reason, "RATE_LIMITED");
    let wait = err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry hint");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    list(&mut social)
        .await
        .expect("another agency is not limited");
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    list(&mut police).await.expect("after the hinted wait");
    refusal_audited(&gw, "police", "limits.rate", Code::ResourceExhausted).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_progress_are_capped_per_agency() {
    let mut env = TestEnv::sqlite();
    env.config.limits.max_in_flight_per_agency = 1;
    let gw = env.start().await;
    // A long poll holds housing's one slot for a while.
    let channel = env.channel(&gw, &env.agency_cert("housing")).await.unwrap();
    let mut inbox = InboxServiceClient::new(channel);
    let poll = tokio::spawn(async move {
        inbox
            .pull_deliveries(PullDeliveriesRequest {
                max_deliveries: 1,
                wait: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut housing = env.client(&gw, "housing").await;
    let err = list(&mut housing).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "TOO_MANY_CALLS_IN_PROGRESS"
    );
    assert!(err.get_details_retry_info().is_some(), "a retry hint");
    list(&mut env.client(&gw, "police").await)
        .await
        .expect("another agency has its own slots");
    poll.await.unwrap().expect("the long poll ends normally");
    list(&mut housing).await.expect("the slot is free again");
    refusal_audited(&gw, "housing", "limits.in-flight", Code::ResourceExhausted).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_resource_exhausted_naming_the_limit() {
    let mut env = TestEnv::sqlite();
    env.config.limits.max_message_bytes = 2048;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut big = referral_to("housing");
    big.summary = "x".repeat(3000);
    let err = social
        .submit_referral(submit("big", big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
    assert_eq!(info.metadata["max_bytes"], "2048");
    social
        .submit_referral(submit("small", referral_to("housing")))
        .await
        .expect("a message under the limit");
    refusal_audited(
        &gw,
        "social-services",
        "limits.message-size",
        Code::ResourceExhausted,
    )
    .await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_is_ended_audited_once_and_stores_nothing() {
    let mut env = TestEnv::sqlite();
    env.config.limits.call_timeout_ms = 300;
    let gw = env.start().await;
    let mut documents = document_client(&env, &gw, "social-services").await;
    // An upload that stalls after its metadata.
    let messages = upload_messages("text/plain", "slow", b"slow bytes", 4);
    let (first, rest) = messages.split_at(1);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let stream = async_stream(first, rest, Duration::from_secs(2));
    let started = Instant::now();
    let err = documents.upload_document(stream).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "ended at the deadline"
    );
    let pool = gw.store.pool().clone();
    let uploads = |entries: Vec<jisr::audit::entry::AuditEntry>| -> Vec<_> {
        entries
            .into_iter()
            .filter(|e| e.method.ends_with("UploadDocument"))
            .collect()
    };
    for _ in 0..100 {
        if !uploads(entries(&pool).await).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a second entry to appear, were there one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uploads = uploads(entries(&pool).await);
    assert_eq!(uploads.len(), 1, "exactly one entry: {uploads:?}");
    assert_eq!(uploads[0].grpc_code, Code::DeadlineExceeded as i32);
    let staging = env.config.documents.dir.join("staging");
    assert_eq!(
        std::fs::read_dir(staging).unwrap().count(),
        0,
        "nothing staged is left"
    );
    gw.shutdown().await.unwrap();
}

/// The first messages at once, the rest after `pause`.
fn async_stream(
    first: Vec<UploadDocumentRequest>,
    rest: Vec<UploadDocumentRequest>,
    pause: Duration,
) -> impl tokio_stream::Stream<Item = UploadDocumentRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for m in first {
            let _ = tx.send(m).await;
        }
        tokio::time::sleep(pause).await;
        for m in rest {
            let _ = tx.send(m).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_capped() {
    let mut env = TestEnv::sqlite();
    env.config.limits.max_concurrent_streams = 2;
    let gw = env.start().await;
    let channel = env.channel(&gw, &env.agency_cert("police")).await.unwrap();
    let mut client = ReferralServiceClient::new(channel);
    let mut watches = Vec::new();
    for _ in 0..2 {
        watches.push(
            client
                .watch_referral_events(WatchReferralEventsRequest::default())
                .await
                .unwrap(),
        );
    }
    // A third call on the same connection waits for a free stream.
    let mut third = Request::new(ListReferralsRequest::default());
    third.set_timeout(Duration::from_millis(500));
    let err = client.list_referrals(third).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // Another connection is not affected; a closed stream frees its place.
    list(&mut env.client(&gw, "police").await).await.unwrap();
    drop(watches.pop());
    let mut fourth = Request::new(ListReferralsRequest::default());
    fourth.set_timeout(Duration::from_secs(5));
    client
        .list_referrals(fourth)
        .await
        .expect("a stream was freed");
    gw.shutdown().await.unwrap();
}

/// Latencies of `n` calls 20 ms apart (within the agency's rate), sorted.
async fn latencies(
    client: &mut ReferralServiceClient<Channel>,
    id: &str,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .get_referral(GetReferralRequest {
                referral_id: id.to_string(),
            })
            .await
            .expect("the quiet agency is always served");
        out.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agency_flooding_the_gateway_does_not_slow_the_others() {
    let mut env = TestEnv::sqlite();
    env.config.limits.requests_per_second = 100.0;
    env.config.limits.burst = 100;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "quiet", referral_to("housing")).await;
    let before = latencies(&mut social, &id, 40).await;

    // Police floods from 8 connections until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let mut police = env.client(&gw, "police").await;
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match list(&mut police).await {
                    Ok(()) => ok += 1,
                    Err(e) if e.code() == Code::ResourceExhausted => refused += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            (ok, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = latencies(&mut social, &id, 40).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for f in flood {
        let (o, r) = f.await.unwrap();
        ok += o;
        refused += r;
    }
    let p50 = |v: &[Duration]| v[v.len() / 2];
    let p90 = |v: &[Duration]| v[v.len() * 9 / 10];
    eprintln!(
        "quiet agency GetReferral: before p50 {:?} p90 {:?}; during the flood p50 {:?} p90 {:?}; \
         flood: {ok} served, {refused} refused",
        p50(&before),
        p90(&before),
        p50(&during),
        p90(&during)
    );
    assert!(
        refused > ok,
        "the flood was mostly refused: {ok} served, {refused} refused"
    );
    // The flooder is cut down to its rate; the quiet agency keeps its latency (within a
    // generous factor: the two cores here also run the flood's clients).
    assert!(
        p50(&during) <= p50(&before) * 4 + Duration::from_millis(15),
        "p50 {:?} during the flood vs {:?} before",
        p50(&during),
        p50(&before)
    );
    assert!(
        p90(&during) <= p90(&before) * 4 + Duration::from_millis(40),
        "p90 {:?} during the flood vs {:?} before",
        p90(&during),
        p90(&before)
    );
    gw.shutdown().await.unwrap();
}
