//! Faults from outside the gateway, each asserting that nothing acknowledged is lost: the
//! database going away under load (here), agencies down, slow or answering nonsense
//! (tests/it/delivery.rs, rest.rs), a gateway killed mid-batch (delivery.rs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

/// PostgreSQL ends every connection of the gateway three times under load, as a restart
/// does to its clients. No call hangs; each is answered OK or UNAVAILABLE with a retry
/// hint (never INTERNAL); every acknowledged referral is there afterwards; a retry with
/// the same request_id is answered, once; and the gateway serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_its_connections_under_load_gives_quick_unavailable_and_recovers() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let mut env = TestEnv::with_database(Some(db.url.clone()));
    // One agency's load: its rate limit out of the way (docs/benchmarks.md).
    env.config.limits.requests_per_second = 1_000_000.0;
    env.config.limits.burst = 1_000_000;
    let gw = env.start().await;
    let started = Instant::now();
    let mut load = Vec::new();
    for w in 0..8 {
        let mut social = env.client(&gw, "social-services").await;
        load.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(3) {
                let request_id = format!("fault-{w}-{n}");
                n += 1;
                let call = social.submit_referral(submit(&request_id, referral_to("housing")));
                let answer = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .unwrap_or_else(|_| panic!("{request_id}: no answer in 10 s"));
                outcomes.push((request_id, answer.map(|r| r.into_inner())));
            }
            outcomes
        }));
    }
    let mut dropped = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        dropped += db.drop_connections().await;
    }
    assert!(dropped > 0, "connections were ended");
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.extend(task.await.unwrap());
    }

    let mut acknowledged = HashMap::new();
    let mut unavailable: Vec<String> = Vec::new();
    for (request_id, outcome) in outcomes {
        match outcome {
            Ok(answer) => {
                acknowledged.insert(request_id, answer.referral.unwrap().id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{request_id}: {status:?}");
                assert!(
                    status.get_details_retry_info().is_some(),
                    "{request_id}: UNAVAILABLE says when to retry: {status:?}"
                );
                unavailable.push(request_id);
            }
        }
    }
    assert!(!acknowledged.is_empty());
    assert!(
        !unavailable.is_empty(),
        "ending the connections under load failed some calls ({} acknowledged)",
        acknowledged.len()
    );

    // Served again without a restart: the refused calls, retried with their request ids,
    // are answered (from the idempotency record where the cut-off commit had landed).
    let mut social = env.client(&gw, "social-services").await;
    for request_id in &unavailable {
        let id = submitted_id(&mut social, request_id, referral_to("housing")).await;
        acknowledged.insert(request_id.clone(), id);
    }
    // Nothing acknowledged is lost, and each request id made one referral.
    for (request_id, id) in &acknowledged {
        let r = fetched(&mut social, id).await;
        assert_eq!(&r.request_id, request_id);
    }
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM referrals")
        .fetch_one(gw.store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored as usize,
        acknowledged.len(),
        "one referral per request id"
    );
    gw.shutdown().await.unwrap();
    db.drop_database().await;
}
