//! Standard services: health and reflection, for every service of the contract.

use std::time::Duration;

use tonic_types::StatusExt;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::common::*;

/// The services of the contract the gateway serves.
const SERVICES: [&str; 7] = [
    "jisr.v1.ReferralService",
    "jisr.v1.InformationRequestService",
    "jisr.v1.ApplicationService",
    "jisr.v1.DocumentService",
    "jisr.v1.DirectoryService",
    "jisr.v1.AuditService",
    "jisr.adapter.v1.InboxService",
];

/// The service names reflection version `$v` lists.
macro_rules! listed_services {
    ($v:ident, $channel:expr) => {{
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(concat!("reflection ", stringify!($v), " answers"))
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        // Each version lists itself; the rest is the same.
        let mut names: Vec<String> = list
            .service
            .into_iter()
            .map(|s| s.name)
            .filter(|n| !n.starts_with("grpc.reflection."))
            .collect();
        names.sort();
        names
    }};
}

async fn status_of(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_over_mtls_for_every_service() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let channel = env.channel(&gw, &env.agency_cert("digital")).await.unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in std::iter::once("").chain(SERVICES) {
        assert_eq!(
            status_of(&mut health, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }

    // Reflection, in both versions clients ask (v1alpha: Python's grpcio-reflection and
    // many GUI tools), lists every service of the contract the gateway serves.
    let v1 = listed_services!(v1, channel);
    let v1alpha = listed_services!(v1alpha, channel);
    assert_eq!(v1, v1alpha);
    for expected in SERVICES {
        assert!(v1.iter().any(|n| n == expected), "{expected} not in {v1:?}");
    }

    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_health_says_not_serving_and_readyz_503_then_calls_finish_and_watches_end() {
    let mut env = TestEnv::sqlite();
    env.config.admin.unready_delay_ms = 1_500;
    let gw = env.start().await;
    let admin = gw.admin_addr.expect("the admin listener runs");
    let channel = env.channel(&gw, &env.agency_cert("digital")).await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let mut social = env.client(&gw, "social-services").await;
    let mut events = social
        .watch_referral_events(jisr::pb::v1::WatchReferralEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let started = std::time::Instant::now();
    let draining = tokio::spawn(gw.drain());
    eventually_async("health reports NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            status_of(&mut health, "jisr.v1.ReferralService").await == ServingStatus::NotServing
        }
    })
    .await;
    // Not ready, while calls are still served (load balancers move traffic away first).
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-] not_draining"), "{body}");
    for service in std::iter::once("").chain(SERVICES) {
        assert_eq!(
            status_of(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // Still served meanwhile, and the open watch stream sees it.
    let id = submitted_id(&mut social, "during-drain", referral_to("housing")).await;
    let event = events.message().await.unwrap().expect("the submit's event");
    assert_eq!(event.event.expect("an event").referral_id, id);
    // Then the stream ends, with a status that tells the client to resume from its cursor
    // (elsewhere), and the drain is done long before admin.drain_timeout_secs (30 s).
    let end = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the watch stream ends with the drain")
        .expect_err("ended by the gateway");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert_eq!(
        end.get_details_error_info().map(|i| i.reason),
        Some("SHUTTING_DOWN".to_string())
    );
    draining.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
