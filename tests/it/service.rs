//! Standard services: health and reflection, for every service of the contract.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_over_mtls_for_every_service() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let channel = env.channel(&gw, &env.agency_cert("digital")).await.unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "jisr.v1.ReferralService",
        "jisr.v1.InformationRequestService",
        "jisr.v1.DocumentService",
        "jisr.v1.DirectoryService",
        "jisr.v1.AuditService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    // Reflection lists every service of the contract the gateway serves.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "jisr.v1.ReferralService",
        "jisr.v1.InformationRequestService",
        "jisr.v1.DocumentService",
        "jisr.v1.DirectoryService",
        "jisr.v1.AuditService",
        "jisr.adapter.v1.InboxService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    gw.shutdown().await.unwrap();
}
