//! Delivery to agencies over the wire: a real mock agency system (a tonic
//! AgencyEndpointService server with its own TLS that checks the gateway's certificate),
//! and inbox agencies pulling over mTLS.

use std::net::SocketAddr;
use std::time::Duration;

use jisr::adapters::testkit::{Behaviour, MockAgency, MockEndpoint};
use jisr::adapters::AdapterConfig;
use jisr::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use jisr::pb::adapter_v1::*;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use tonic::Code;

use crate::common::*;

/// The test kit's mock agency system, with a server certificate from the test CA, requiring
/// a client certificate from the same CA (the gateway's).
pub async fn mock_agency(env: &TestEnv) -> (SocketAddr, MockEndpoint) {
    let mock = MockEndpoint::default();
    let addr = mock.clone().serve(&env.ca).await.unwrap();
    (addr, mock)
}

/// `agency` is reached through the grpc adapter at `addr`.
pub(crate) fn push_to(env: &mut TestEnv, agency: &str, addr: SocketAddr) {
    let a = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == agency)
        .unwrap();
    a.adapter = AdapterConfig::Grpc(jisr::adapters::grpc::GrpcConfig {
        endpoint: format!("https://{addr}"),
        server_name: Some("localhost".into()),
        ca_cert: None,
    });
}

async fn status_of(env: &TestEnv, gw: &Gateway, id: &str) -> ReferralStatus {
    fetched(&mut env.client(gw, "social-services").await, id)
        .await
        .status()
}

async fn wait_status(env: &TestEnv, gw: &Gateway, id: &str, want: ReferralStatus) {
    for _ in 0..200 {
        if status_of(env, gw, id).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "referral {id} never became {want:?} (is {:?})",
        status_of(env, gw, id).await
    );
}

pub(crate) async fn inbox(
    env: &TestEnv,
    gw: &Gateway,
    agency: &str,
) -> InboxServiceClient<tonic::transport::Channel> {
    InboxServiceClient::new(env.channel(gw, &env.agency_cert(agency)).await.unwrap())
}

pub(crate) async fn pull(
    client: &mut InboxServiceClient<tonic::transport::Channel>,
    wait_ms: i32,
) -> Vec<Delivery> {
    client
        .pull_deliveries(PullDeliveriesRequest {
            max_deliveries: 10,
            wait: Some(prost_types::Duration {
                seconds: i64::from(wait_ms / 1000),
                nanos: (wait_ms % 1000) * 1_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

fn status_in(d: &Delivery) -> Option<(String, ReferralStatus)> {
    match &d.payload {
        Some(delivery::Payload::StatusUpdate(StatusUpdate {
            target: Some(status_update::Target::Referral(u)),
        })) => Some((u.referral_id.clone(), u.change.as_ref()?.status())),
        _ => None,
    }
}

pub(crate) async fn ack(
    client: &mut InboxServiceClient<tonic::transport::Channel>,
    d: &Delivery,
) -> AckDeliveryResponse {
    client
        .ack_delivery(AckDeliveryRequest {
            delivery_id: d.metadata.as_ref().unwrap().delivery_id.clone(),
            outcome: AckOutcome::Accepted as i32,
            receipt_id: "ours-1".into(),
            error_message: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_closes_between_a_grpc_agency_and_an_inbox_agency() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut watch = social
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let id = submitted_id(&mut social, "loop", referral_to("housing")).await;
    wait_status(&env, &gw, &id, ReferralStatus::Delivered).await;
    let acted = housing_system.arrivals();
    assert_eq!(acted.len(), 1);
    assert_eq!(acted[0].what, format!("referral {id}"));

    // The sender (an inbox agency) is told it was delivered, through its inbox...
    let mut social_inbox = inbox(&env, &gw, "social-services").await;
    let got = pull(&mut social_inbox, 2000).await;
    assert_eq!(
        got.iter().filter_map(status_in).collect::<Vec<_>>(),
        vec![(id.clone(), ReferralStatus::Delivered)]
    );
    let receipt = ack(&mut social_inbox, &got[0])
        .await
        .audit_receipt
        .expect("an ack is audited with a receipt");
    assert!(!receipt.leaf_hash.is_empty());
    // ...and on its watch.
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let e = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_stream::StreamExt::next(&mut watch),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .event
        .unwrap();
        statuses.push((e.status(), e.change.unwrap().actor_agency));
    }
    assert_eq!(statuses[1], (ReferralStatus::Delivered, "jisr".to_string()));

    // The recipient acts; each change reaches the sender's inbox, in order.
    let mut housing = env.client(&gw, "housing").await;
    housing
        .update_referral_status(update(&id, "a", ReferralStatus::Accepted))
        .await
        .unwrap();
    housing
        .update_referral_status(update(&id, "p", ReferralStatus::InProgress))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..20 {
        for d in pull(&mut social_inbox, 500).await {
            seen.extend(status_in(&d));
            ack(&mut social_inbox, &d).await;
        }
        if seen.len() >= 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            (id.clone(), ReferralStatus::Accepted),
            (id.clone(), ReferralStatus::InProgress)
        ]
    );

    // The sender withdraws: the recipient's system hears it through its adapter.
    let mut w = update(&id, "w", ReferralStatus::Withdrawn);
    w.reason_code = StatusReason::NoLongerNeeded as i32;
    social.update_referral_status(w).await.unwrap();
    eventually("the withdrawal reaches the recipient's system", || {
        housing_system
            .arrivals()
            .iter()
            .any(|a| a.what.contains("status") && a.what.contains("WITHDRAWN"))
    })
    .await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_down_for_a_while_loses_nothing_and_gets_everything_in_order() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    env.config.delivery.breaker_failures = 3;
    env.config.delivery.breaker_cooldown_ms = 100;
    housing_system.set_behaviour(Behaviour::Unavailable);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submitted_id(&mut social, &format!("d{i}"), referral_to("housing")).await);
    }
    // The sender withdraws one while the agency is down: it must arrive after its referral.
    let mut w = update(&ids[2], "w", ReferralStatus::Withdrawn);
    w.reason_code = StatusReason::SentInError as i32;
    social.update_referral_status(w).await.unwrap();
    eventually("attempts were made while down", || {
        housing_system.calls() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(housing_system.arrivals().is_empty());
    assert_eq!(
        status_of(&env, &gw, &ids[0]).await,
        ReferralStatus::Submitted,
        "not delivered while down"
    );

    housing_system.set_behaviour(Behaviour::Accept);
    eventually("everything arrives after recovery", || {
        housing_system.arrivals().len() == 6
    })
    .await;
    let acted: Vec<String> = housing_system
        .arrivals()
        .iter()
        .map(|a| a.what.clone())
        .collect();
    for id in &ids {
        assert!(
            acted.contains(&format!("referral {id}")),
            "{id} missing from {acted:?}"
        );
    }
    let referral_at = acted
        .iter()
        .position(|w| w == &format!("referral {}", ids[2]))
        .unwrap();
    let withdrawal_at = acted
        .iter()
        .position(|w| w.starts_with(&format!("status {}", ids[2])))
        .unwrap();
    assert!(
        referral_at < withdrawal_at,
        "a referral's deliveries arrive in order: {acted:?}"
    );
    for id in [&ids[0], &ids[1], &ids[3], &ids[4]] {
        wait_status(&env, &gw, id, ReferralStatus::Delivered).await;
    }
    gw.shutdown().await.unwrap();
}

/// An outage far longer than the backoff cap and the breaker's cooldown: while the agency
/// is down, its half-open breaker lets exactly one attempt through per cooldown (not a
/// batch); nothing is failed by its attempt count (one delivery is probed many more times
/// than the old limit of 10); everything arrives once the agency is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_fails_nothing_and_the_open_breaker_sends_one_probe_per_cooldown() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    env.config.delivery.per_agency_concurrency = 8;
    env.config.delivery.breaker_failures = 3;
    env.config.delivery.breaker_cooldown_ms = 100;
    env.config.delivery.initial_backoff_ms = 5;
    env.config.delivery.max_backoff_ms = 20;
    env.config.delivery.poll_interval_ms = 20;
    housing_system.set_behaviour(Behaviour::Unavailable);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(submitted_id(&mut social, &format!("long{i}"), referral_to("housing")).await);
    }
    eventually("the breaker has opened", || housing_system.calls() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two seconds of outage: twenty cooldowns, so at most about twenty probes. Before, each
    // cooldown let a full lease window through (here up to 32 attempts).
    let before = housing_system.calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = housing_system.calls() - before;
    assert!(
        (5..=24).contains(&probes),
        "{probes} attempts in 2 s with a 100 ms cooldown: one probe per cooldown"
    );
    assert!(housing_system.arrivals().is_empty());
    for id in &ids {
        assert_eq!(
            status_of(&env, &gw, id).await,
            ReferralStatus::Submitted,
            "{id}: not failed during the outage"
        );
    }

    housing_system.set_behaviour(Behaviour::Accept);
    eventually("everything arrives after the outage", || {
        housing_system.arrivals().len() == ids.len()
    })
    .await;
    for id in &ids {
        wait_status(&env, &gw, id, ReferralStatus::Delivered).await;
    }
    // The probes went to the oldest delivery: it was attempted more often than the old
    // limit of 10 attempts, and delivered.
    let (most,): (i64,) = sqlx::query_as("SELECT MAX(attempts) FROM outbox")
        .fetch_one(gw.store.pool())
        .await
        .unwrap();
    assert!(most > 10, "the most attempted delivery had {most} attempts");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_undeliverable_referral_fails_and_the_sender_is_told() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    env.config.delivery.max_attempts = Some(3);
    env.config.delivery.breaker_failures = 100;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut social_inbox = inbox(&env, &gw, "social-services").await;

    // A permanent refusal (INVALID_ARGUMENT) is not retried.
    housing_system.set_behaviour(Behaviour::Refuse);
    let refused = submitted_id(&mut social, "refused", referral_to("housing")).await;
    wait_status(&env, &gw, &refused, ReferralStatus::Failed).await;
    assert_eq!(
        housing_system.calls(),
        1,
        "a permanent error is not retried"
    );
    let r = fetched(&mut social, &refused).await;
    let last = r.status_history.last().unwrap();
    assert_eq!(last.actor_agency, "jisr");
    assert!(
        last.note.contains("does not accept this case type"),
        "{}",
        last.note
    );

    // Retryable errors, until the attempts run out.
    housing_system.set_behaviour(Behaviour::Accept);
    housing_system.set_behaviour(Behaviour::Unavailable);
    let calls_before = housing_system.calls();
    let unreachable = submitted_id(&mut social, "down", referral_to("housing")).await;
    wait_status(&env, &gw, &unreachable, ReferralStatus::Failed).await;
    assert_eq!(
        housing_system.calls() - calls_before,
        3,
        "max_attempts attempts"
    );

    let mut told = Vec::new();
    for _ in 0..10 {
        told.extend(
            pull(&mut social_inbox, 500)
                .await
                .iter()
                .filter_map(status_in),
        );
        if told.len() >= 2 {
            break;
        }
    }
    assert!(
        told.contains(&(refused.clone(), ReferralStatus::Failed)),
        "{told:?}"
    );
    assert!(
        told.contains(&(unreachable.clone(), ReferralStatus::Failed)),
        "{told:?}"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_inbox_delivery_is_offered_again_and_acks_are_idempotent_and_private() {
    let mut env = TestEnv::sqlite();
    env.config.delivery.visibility_timeout_ms = 300;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "inbox", referral_to("housing")).await;

    let mut housing = inbox(&env, &gw, "housing").await;
    let first = pull(&mut housing, 2000).await;
    assert_eq!(first.len(), 1);
    let meta = first[0].metadata.clone().unwrap();
    assert_eq!(meta.attempt, 1);
    assert!(matches!(&first[0].payload, Some(delivery::Payload::Referral(r)) if r.id == id));
    assert!(
        pull(&mut housing, 0).await.is_empty(),
        "invisible while leased"
    );

    // Not acknowledged in time: offered again, same delivery id, next attempt.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = pull(&mut housing, 2000).await;
    assert_eq!(again.len(), 1);
    let meta2 = again[0].metadata.clone().unwrap();
    assert_eq!(
        (meta2.delivery_id.as_str(), meta2.attempt),
        (meta.delivery_id.as_str(), 2)
    );

    // Someone else's delivery is not found; acks are idempotent; then it is DELIVERED.
    let mut police = inbox(&env, &gw, "police").await;
    let err = police
        .ack_delivery(AckDeliveryRequest {
            delivery_id: meta.delivery_id.clone(),
            outcome: AckOutcome::Accepted as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    ack(&mut housing, &again[0]).await;
    ack(&mut housing, &again[0]).await;
    wait_status(&env, &gw, &id, ReferralStatus::Delivered).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        pull(&mut housing, 0).await.is_empty(),
        "an acknowledged delivery is not offered again"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_adapter_passes_the_adapter_test_kit() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    let adapters = env.config.build_adapters().unwrap();
    let adapter = adapters.get("housing").expect("housing has a push adapter");
    assert_eq!(adapter.kind(), "grpc");
    jisr::adapters::testkit::check_adapter(adapter.as_ref(), &housing_system, "housing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_delivery_and_restarted_delivers_everything_acted_on_once() {
    let env = TestEnv::sqlite();
    let (agency_addr, housing_system) = mock_agency(&env).await;
    housing_system.set_hang(true);
    let port = free_port();
    let mut gateway = spawn_gateway(&env, port, agency_addr);
    let mut social = connect_when_up(&env, port, "social-services").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submitted_id(&mut social, &format!("crash-{i}"), referral_to("housing")).await);
    }
    eventually(
        "the agency acted on every delivery (answers still pending)",
        || housing_system.arrivals().len() == 3,
    )
    .await;
    // Killed mid-delivery: the agency acted, the gateway never heard back.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    housing_system.set_hang(false);

    let mut gateway = spawn_gateway(&env, port, agency_addr);
    let mut social = connect_when_up(&env, port, "social-services").await;
    for id in &ids {
        let mut status = ReferralStatus::Unspecified;
        for _ in 0..200 {
            status = fetched(&mut social, id).await.status();
            if status == ReferralStatus::Delivered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, ReferralStatus::Delivered, "{id} after the restart");
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    // Every delivery id was received again after the restart (at least once), and acted on once.
    let acted: Vec<String> = housing_system
        .arrivals()
        .iter()
        .map(|a| a.what.clone())
        .collect();
    assert_eq!(acted.len(), 3, "{acted:?}");
    for id in &ids {
        assert_eq!(
            acted
                .iter()
                .filter(|w| **w == format!("referral {id}"))
                .count(),
            1,
            "{id} acted on once"
        );
    }
    assert_eq!(
        housing_system.duplicates(),
        3,
        "each redelivery carried the same delivery id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_cli_lists_dead_deliveries_and_retries_them() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    housing_system.set_behaviour(Behaviour::Refuse);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "dead", referral_to("housing")).await;
    wait_status(&env, &gw, &id, ReferralStatus::Failed).await;
    // The CLI of this node: its database, its node id and audit signing key.
    let jisr = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jisr"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("JISR_DATABASE__URL", &env.config.database.url)
            .env("JISR_NODE_ID", &env.config.node_id)
            .env("JISR_AUDIT__SIGNING_KEY", &env.config.audit.signing_key)
            .env("USER", "ops-alice")
            .args(args)
            .output()
            .unwrap()
    };
    let out = jisr(&["outbox", "list", "--state", "dead"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && listed.contains(&id) && listed.contains("does not accept"),
        "{listed}"
    );

    // The agency fixed its side; the operator retries every dead delivery.
    housing_system.set_behaviour(Behaviour::Accept);
    let out = jisr(&[
        "outbox",
        "retry",
        "--all-dead",
        "--reason",
        "housing fixed its mapping, ticket 4411",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 1 deliveries requeued"),
        "{:?}",
        out
    );
    eventually("the retried delivery reaches the agency", || {
        housing_system
            .arrivals()
            .iter()
            .any(|a| a.what == format!("referral {id}"))
    })
    .await;
    let out = jisr(&["outbox", "list", "--state", "dead"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 shown)"));

    // Replay: the agency lost it; the same delivery goes again, same delivery id.
    let out = jisr(&["outbox", "list", "--state", "delivered"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let delivery_id = listed
        .lines()
        .find(|l| l.contains(&id) && l.contains("referral"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("delivered referral delivery not listed:\n{listed}"))
        .to_string();
    let duplicates = housing_system.duplicates();
    let out = jisr(&[
        "outbox",
        "replay",
        &delivery_id,
        "--reason",
        "housing lost it in a restore",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 1 deliveries will be sent again"),
        "{out:?}"
    );
    eventually(
        "the replayed delivery arrives again with its delivery id",
        || housing_system.duplicates() == duplicates + 1,
    )
    .await;

    // Both actions are in the node's audit log, written by the CLI while the gateway ran:
    // who, what, which deliveries, why. The gateway's log goes on and verifies whole.
    submitted_id(&mut social, "after-the-operator", referral_to("housing")).await;
    gw.shutdown().await.unwrap();
    let db = jisr::store::Store::open_reads(&env.config.database)
        .await
        .unwrap();
    let entries = crate::audit::entries(db.pool()).await;
    let operator: Vec<_> = entries
        .iter()
        .filter(|e| e.method.starts_with("jisr.operator/"))
        .collect();
    assert_eq!(operator.len(), 2, "{operator:#?}");
    let (retry, replay) = (operator[0], operator[1]);
    assert_eq!(retry.method, "jisr.operator/OutboxRetry");
    assert_eq!(retry.reason, "housing fixed its mapping, ticket 4411");
    assert!(
        retry.officer_subject.starts_with("os:ops-alice@"),
        "{retry:?}"
    );
    assert_eq!(retry.target_ids.len(), 1);
    assert_eq!(replay.method, "jisr.operator/OutboxReplay");
    assert_eq!(replay.target_ids, vec![delivery_id.clone()]);
    assert_eq!(replay.reason, "housing lost it in a restore");
    let out = jisr(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_nobody_pulls_is_dead_lettered_after_max_age_and_the_sender_is_told() {
    let mut env = TestEnv::sqlite();
    env.config.delivery.max_age_secs = 1;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "old", referral_to("housing")).await; // housing pulls, but never does
    wait_status(&env, &gw, &id, ReferralStatus::Failed).await;
    let r = fetched(&mut social, &id).await;
    assert!(r
        .status_history
        .last()
        .unwrap()
        .note
        .contains("not delivered within 1 s"));
    let mut social_inbox = inbox(&env, &gw, "social-services").await;
    let told: Vec<_> = pull(&mut social_inbox, 2000)
        .await
        .iter()
        .filter_map(status_in)
        .collect();
    assert_eq!(told, vec![(id, ReferralStatus::Failed)]);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_breaker_stops_attempts_until_its_cooldown_ends() {
    let mut env = TestEnv::sqlite();
    let (addr, housing_system) = mock_agency(&env).await;
    push_to(&mut env, "housing", addr);
    env.config.delivery.breaker_failures = 2;
    env.config.delivery.breaker_cooldown_ms = 1500;
    housing_system.set_behaviour(Behaviour::Unavailable);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "breaker", referral_to("housing")).await;
    eventually("two failures open the breaker", || {
        housing_system.calls() >= 2
    })
    .await;
    // Retries would come every 20-200 ms; with the breaker open, none come.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        housing_system.calls(),
        2,
        "no attempt while the breaker is open"
    );
    housing_system.set_behaviour(Behaviour::Accept);
    // After the cooldown one attempt goes through, succeeds, and closes it.
    wait_status(&env, &gw, &id, ReferralStatus::Delivered).await;
    assert_eq!(housing_system.calls(), 3);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_batch_leaves_every_write_whole_or_absent() {
    let env = TestEnv::sqlite();
    let (agency_addr, _housing_system) = mock_agency(&env).await;
    let port = free_port();
    let mut gateway = spawn_gateway(&env, port, agency_addr);
    let social = connect_when_up(&env, port, "social-services").await;
    // Writes in flight when the process dies: some committed, some not, none half-applied.
    let mut writers = Vec::new();
    for w in 0..16 {
        let mut client = social.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..1000 {
                let request = SubmitReferralRequest {
                    request_id: format!("kill-{w}-{i}"),
                    referral: Some(referral_to("housing")),
                };
                match client.submit_referral(request).await {
                    Ok(r) => acknowledged.push(r.into_inner().referral.unwrap().id),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before the kill"
    );

    let pool = jisr::store::Store::open_pool(&env.config.database)
        .await
        .unwrap()
        .0;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            n
        }
    };
    let referrals = count("SELECT COUNT(*) FROM referrals").await;
    assert!(
        referrals as usize >= acknowledged.len(),
        "nothing acknowledged is lost"
    );
    // Every stored referral came with all its rows: its SUBMITTED event, its outbox row,
    // its idempotency record and a sealed audit entry naming it.
    for (what, sql) in [
        ("SUBMITTED event", "SELECT COUNT(*) FROM referrals r WHERE NOT EXISTS (SELECT 1 FROM referral_events e WHERE e.referral_id = r.id AND e.event_type = 'REFERRAL_EVENT_TYPE_SUBMITTED')"),
        ("outbox row", "SELECT COUNT(*) FROM referrals r WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.subject_id = r.id)"),
        ("idempotency record", "SELECT COUNT(*) FROM referrals r WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.request_id = r.request_id)"),
        ("audit entry", "SELECT COUNT(*) FROM referrals r WHERE NOT EXISTS (SELECT 1 FROM audit_entries a WHERE a.targets LIKE '% ' || r.id || ' %')"),
    ] {
        assert_eq!(count(sql).await, 0, "a referral without its {what}");
    }
    for (what, sql) in [
        ("events", "SELECT COUNT(*) FROM referral_events e WHERE e.referral_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM referrals r WHERE r.id = e.referral_id)"),
        ("outbox rows", "SELECT COUNT(*) FROM outbox o WHERE o.kind = 'referral' AND NOT EXISTS (SELECT 1 FROM referrals r WHERE r.id = o.subject_id)"),
    ] {
        assert_eq!(count(sql).await, 0, "{what} of a referral that is not there");
    }
    pool.close().await;
    // And the restarted gateway serves the acknowledged ones.
    let mut gateway = spawn_gateway(&env, port, agency_addr);
    let mut social = connect_when_up(&env, port, "social-services").await;
    for id in acknowledged.iter().take(20) {
        assert_eq!(&fetched(&mut social, id).await.id, id);
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
}

/// A replica killed -9 mid-delivery on a shared PostgreSQL: another replica (another node)
/// takes its leases over once they end and delivers everything, acted on once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_has_its_leases_taken_over_by_another() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let mut env = TestEnv::with_database(Some(db.url.clone()));
    let (agency_addr, housing_system) = mock_agency(&env).await;
    housing_system.set_hang(true);
    let port = free_port();
    let mut replica_a = spawn_gateway(&env, port, agency_addr);
    let mut social = connect_when_up(&env, port, "social-services").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            submitted_id(
                &mut social,
                &format!("takeover-{i}"),
                referral_to("housing"),
            )
            .await,
        );
    }
    eventually(
        "the agency acted on every delivery (answers pending)",
        || housing_system.arrivals().len() == 3,
    )
    .await;
    replica_a.kill().unwrap();
    replica_a.wait().unwrap();
    housing_system.set_hang(false);

    push_to(&mut env, "housing", agency_addr);
    env.config.node_id = "replica-b".into();
    let replica_b = env.start().await;
    for id in &ids {
        let mut status = ReferralStatus::Unspecified;
        for _ in 0..200 {
            status = status_of(&env, &replica_b, id).await;
            if status == ReferralStatus::Delivered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, ReferralStatus::Delivered, "{id}, through replica b");
    }
    assert_eq!(housing_system.arrivals().len(), 3, "acted on once each");
    assert!(
        housing_system.duplicates() >= 3,
        "replica b sent each again under its delivery id"
    );
    replica_b.shutdown().await.unwrap();
    db.drop_database().await;
}
