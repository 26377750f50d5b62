//! `grpc`: calls the agency's jisr.adapter.v1.AgencyEndpointService over mTLS with the
//! gateway's own client certificate.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tonic::transport::Channel;
use tonic::Code;

use super::{AdapterSpec, BuildContext};
use crate::common::BoxFuture;
use crate::config::ConfigError;
use crate::delivery::{Adapter, AgencyReceipt, DeliveryError, OutboundDelivery};
use crate::pb::adapter_v1::agency_endpoint_service_client::AgencyEndpointServiceClient;
use crate::pb::adapter_v1::{
    delivery, DeliverClearanceRequestRequest, DeliverInformationRequestRequest,
    DeliverInformationResponseRequest, DeliverReferralRequest, DeliverStatusUpdateRequest,
};
use crate::tls::client::{endpoint, AgencyCredentials};

/// `kind = "grpc"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// e.g. "https://housing.example.gov:8443"
    pub endpoint: String,
    /// The name the agency's server certificate must carry (default: the endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// CA bundle for the agency's server certificate (default: tls.ca_cert).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl AdapterSpec for GrpcConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if !self.endpoint.starts_with("https://") {
            return Err(ConfigError::invalid(
                key("endpoint"),
                &self.endpoint,
                "an https:// URL of the agency's endpoint",
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        Ok(Some(Arc::new(GrpcAdapter::new(ctx, self)?)))
    }
}

pub struct GrpcAdapter {
    client: AgencyEndpointServiceClient<Channel>,
}

impl GrpcAdapter {
    pub fn new(ctx: &BuildContext, config: &GrpcConfig) -> anyhow::Result<GrpcAdapter> {
        let url = &config.endpoint;
        let creds = AgencyCredentials::from_files(
            config.ca_cert.as_deref().unwrap_or(&ctx.ca_cert),
            &ctx.client_cert,
            &ctx.client_key,
        )?;
        let host = url
            .trim_start_matches("https://")
            .split(['/', ':'])
            .next()
            .unwrap_or("localhost")
            .to_string();
        let addr = url.trim_start_matches("https://").trim_end_matches('/');
        let channel = endpoint(addr, config.server_name.as_deref().unwrap_or(&host), &creds)
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
                Some(delivery::Payload::ClearanceRequest(application)) => client
                    .deliver_clearance_request(traced(
                        DeliverClearanceRequestRequest {
                            metadata,
                            application: Some(application.clone()),
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
