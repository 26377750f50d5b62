//! `grpc`: calls the agency's jisr.adapter.v1.AgencyEndpointService over mTLS with the
//! gateway's own client certificate.

use std::path::Path;

use anyhow::Context;
use tonic::transport::Channel;
use tonic::Code;

use crate::config::Config;
use crate::delivery::{Adapter, AgencyReceipt, DeliveryError, OutboundDelivery};
use crate::pb::adapter_v1::agency_endpoint_service_client::AgencyEndpointServiceClient;
use crate::pb::adapter_v1::{
    delivery, DeliverInformationRequestRequest, DeliverInformationResponseRequest,
    DeliverReferralRequest, DeliverStatusUpdateRequest,
};
use crate::store::BoxFuture;
use crate::tls::client::{endpoint, AgencyCredentials};

pub struct GrpcAdapter {
    client: AgencyEndpointServiceClient<Channel>,
}

impl GrpcAdapter {
    pub fn new(
        config: &Config,
        url: &str,
        server_name: Option<&str>,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<GrpcAdapter> {
        let creds = AgencyCredentials::from_files(
            ca_cert.unwrap_or(&config.tls.ca_cert),
            &config.delivery.client_cert,
            &config.delivery.client_key,
        )?;
        let host = url
            .trim_start_matches("https://")
            .split(['/', ':'])
            .next()
            .unwrap_or("localhost")
            .to_string();
        let addr = url.trim_start_matches("https://").trim_end_matches('/');
        let channel = endpoint(addr, server_name.unwrap_or(&host), &creds)
            .with_context(|| format!("grpc adapter endpoint {url}"))?
            .connect_lazy();
        Ok(GrpcAdapter {
            client: AgencyEndpointServiceClient::new(channel),
        })
    }
}

/// gRPC codes worth retrying; any other refusal is permanent.
pub fn classify(status: &tonic::Status) -> DeliveryError {
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => DeliveryError::Retryable(text),
        _ => DeliveryError::Permanent(text),
    }
}

/// A request carrying the exchange's W3C `traceparent`.
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = traceparent.parse() {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

impl Adapter for GrpcAdapter {
    fn kind(&self) -> &'static str {
        "grpc"
    }

    fn deliver<'a>(
        &'a self,
        d: &'a OutboundDelivery,
    ) -> BoxFuture<'a, Result<AgencyReceipt, DeliveryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let metadata = d.message.metadata.clone();
            let traceparent = metadata
                .as_ref()
                .map(|m| m.traceparent.clone())
                .unwrap_or_default();
            let receipt = match &d.message.payload {
                Some(delivery::Payload::Referral(referral)) => client
                    .deliver_referral(traced(
                        DeliverReferralRequest {
                            metadata,
                            referral: Some(referral.clone()),
                        },
                        &traceparent,
                    ))
                    .await
                    .map(|r| r.into_inner().receipt_id),
                Some(delivery::Payload::StatusUpdate(update)) => client
                    .deliver_status_update(traced(
                        DeliverStatusUpdateRequest {
                            metadata,
                            status_update: Some(update.clone()),
                        },
                        &traceparent,
                    ))
                    .await
                    .map(|r| r.into_inner().receipt_id),
                Some(delivery::Payload::InformationRequest(request)) => client
                    .deliver_information_request(traced(
                        DeliverInformationRequestRequest {
                            metadata,
                            information_request: Some(request.clone()),
                        },
                        &traceparent,
                    ))
                    .await
                    .map(|r| r.into_inner().receipt_id),
                Some(delivery::Payload::InformationResponse(request)) => client
                    .deliver_information_response(traced(
                        DeliverInformationResponseRequest {
                            metadata,
                            information_request: Some(request.clone()),
                        },
                        &traceparent,
                    ))
                    .await
                    .map(|r| r.into_inner().receipt_id),
                None => {
                    return Err(DeliveryError::Permanent(
                        "the delivery carries no payload".into(),
                    ))
                }
            };
            receipt.map_err(|s| classify(&s))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            // An empty request is answered (with an error) by a live endpoint.
            match client
                .deliver_status_update(DeliverStatusUpdateRequest::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(s) => match classify(&s) {
                    DeliveryError::Retryable(e) => Err(DeliveryError::Retryable(e)),
                    DeliveryError::Permanent(_) => Ok(()),
                },
            }
        })
    }
}
