//! The adapter test kit: checks any adapter against a mock of the agency system it talks
//! to. Every built-in adapter's tests call `check_adapter`; a new adapter should too
//! (docs/adapters.md).
//!
//! The kit checks what the dispatcher relies on: a delivery reaches the agency carrying its
//! delivery id (so the agency de-duplicates retries and acts once), an agency that is down
//! or answers garbage gives `Retryable`, and one that refuses the message gives `Permanent`.

use crate::delivery::{Adapter, DeliveryError, OutboundDelivery};
use crate::pb::adapter_v1::{delivery, Delivery, DeliveryMetadata};
use crate::pb::v1::Referral;

/// How the mock agency system answers the next deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept (acting once per delivery id).
    Accept,
    /// Down or overloaded: gRPC UNAVAILABLE, HTTP 503.
    Unavailable,
    /// Refuses the message: gRPC INVALID_ARGUMENT, HTTP 422.
    Refuse,
    /// Answers something that is not a valid reply.
    Malformed,
}

/// A mock agency system, as the kit drives it.
pub trait MockAgency {
    fn set_behaviour(&self, behaviour: Behaviour);
    /// The delivery ids the system acted on, once each, in order.
    fn acted(&self) -> Vec<String>;
}

/// A referral delivery as the dispatcher would hand it over.
pub fn sample_delivery(delivery_id: &str, agency: &str, referral_id: &str) -> OutboundDelivery {
    OutboundDelivery {
        delivery_id: delivery_id.to_string(),
        agency: agency.to_string(),
        attempt: 1,
        message: Delivery {
            metadata: Some(DeliveryMetadata {
                delivery_id: delivery_id.to_string(),
                attempt: 1,
                created_at: None,
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            }),
            payload: Some(delivery::Payload::Referral(Referral {
                id: referral_id.to_string(),
                from_agency: "social-services".into(),
                to_agency: agency.to_string(),
                service_code: "kit-check".into(),
                summary: "adapter test kit".into(),
                ..Referral::default()
            })),
            visibility_deadline: None,
        },
    }
}

/// Runs the kit; panics naming the first expectation the adapter does not meet.
pub async fn check_adapter(adapter: &dyn Adapter, mock: &dyn MockAgency, agency: &str) {
    let kind = adapter.kind();
    let first = sample_delivery(
        "01KITDELIVERY0000000000001",
        agency,
        "01KITREFERRAL000000000001",
    );
    let second = sample_delivery(
        "01KITDELIVERY0000000000002",
        agency,
        "01KITREFERRAL000000000002",
    );

    mock.set_behaviour(Behaviour::Accept);
    adapter
        .deliver(&first)
        .await
        .unwrap_or_else(|e| panic!("{kind}: a delivery to a healthy agency failed: {e}"));
    adapter
        .health()
        .await
        .unwrap_or_else(|e| panic!("{kind}: health of a healthy agency failed: {e}"));

    // A retry of the same delivery (its answer was lost, say) carries the same id: the
    // agency acts once.
    let mut retry = first.clone();
    retry.attempt = 2;
    if let Some(m) = retry.message.metadata.as_mut() {
        m.attempt = 2;
    }
    adapter
        .deliver(&retry)
        .await
        .unwrap_or_else(|e| panic!("{kind}: a repeated delivery failed: {e}"));
    assert_eq!(
        mock.acted(),
        vec![first.delivery_id.clone()],
        "{kind}: the agency must act once per delivery id"
    );

    for (behaviour, want_retryable) in [
        (Behaviour::Unavailable, true),
        (Behaviour::Malformed, true),
        (Behaviour::Refuse, false),
    ] {
        mock.set_behaviour(behaviour);
        match adapter.deliver(&second).await {
            Ok(receipt) => {
                panic!("{kind}: {behaviour:?} was taken as delivered (receipt {receipt:?})")
            }
            Err(DeliveryError::Retryable(e)) => assert!(
                want_retryable,
                "{kind}: {behaviour:?} must be Permanent, was Retryable: {e}"
            ),
            Err(DeliveryError::Permanent(e)) => assert!(
                !want_retryable,
                "{kind}: {behaviour:?} must be Retryable, was Permanent: {e}"
            ),
        }
    }
    mock.set_behaviour(Behaviour::Unavailable);
    assert!(
        matches!(adapter.health().await, Err(DeliveryError::Retryable(_))),
        "{kind}: health of an agency that is down must fail as Retryable"
    );

    mock.set_behaviour(Behaviour::Accept);
    adapter
        .deliver(&second)
        .await
        .unwrap_or_else(|e| panic!("{kind}: delivery after recovery failed: {e}"));
    assert_eq!(
        mock.acted(),
        vec![first.delivery_id, second.delivery_id],
        "{kind}: nothing lost, nothing twice"
    );
}

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::pb::adapter_v1::agency_endpoint_service_server::{
    AgencyEndpointService, AgencyEndpointServiceServer,
};
use crate::pb::adapter_v1::*;
use crate::tls::pki::{CertAuthority, LeafSpec};

/// One message the mock agency system acted on (the first time: it de-duplicates).
#[derive(Debug, Clone)]
pub struct Arrival {
    pub delivery_id: String,
    /// "referral <id>", "status <id> <STATUS>", "information_request <id>",
    /// "information_response <id> <STATUS>" (or what a caller of `record` passed).
    pub what: String,
    /// The referral or information request the message is about.
    pub referral_id: String,
    pub at: Instant,
}

/// A mock agency system speaking jisr.adapter.v1.AgencyEndpointService: it de-duplicates
/// on the delivery id, records what it acted on and when, and can be switched to any
/// `Behaviour`, or to act and then never answer (`set_hang`: a gateway dying mid-call).
/// Used by the grpc adapter's tests, `jisr demo` and `jisr bench --sandbox`.
#[derive(Clone)]
pub struct MockEndpoint(Arc<MockState>);

struct MockState {
    behaviour: Mutex<Behaviour>,
    hang: AtomicBool,
    calls: AtomicU32,
    duplicates: AtomicU32,
    arrivals: Mutex<Vec<Arrival>>,
    seen: Mutex<HashSet<String>>,
    changed: watch::Sender<usize>,
}

impl Default for MockEndpoint {
    fn default() -> Self {
        MockEndpoint(Arc::new(MockState {
            behaviour: Mutex::new(Behaviour::Accept),
            hang: AtomicBool::new(false),
            calls: AtomicU32::new(0),
            duplicates: AtomicU32::new(0),
            arrivals: Mutex::default(),
            seen: Mutex::default(),
            changed: watch::channel(0).0,
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockEndpoint {
    /// Act on deliveries, then never answer.
    pub fn set_hang(&self, hang: bool) {
        self.0.hang.store(hang, Ordering::SeqCst);
    }
    /// Deliveries attempted, answered or not.
    pub fn calls(&self) -> u32 {
        self.0.calls.load(Ordering::SeqCst)
    }
    /// Deliveries received again with a delivery id already acted on.
    pub fn duplicates(&self) -> u32 {
        self.0.duplicates.load(Ordering::SeqCst)
    }
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.0.arrivals).clone()
    }

    /// Takes one delivery as the current behaviour says; on acceptance records it (once
    /// per delivery id) and returns the system's receipt.
    pub fn record(
        &self,
        delivery_id: &str,
        what: String,
        referral_id: String,
    ) -> Result<String, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        match *lock(&self.0.behaviour) {
            Behaviour::Unavailable => {
                return Err(Status::unavailable("agency system down for maintenance"))
            }
            Behaviour::Refuse => {
                return Err(Status::invalid_argument(
                    "our system does not accept this case type",
                ))
            }
            // What tonic's client reports for a reply it cannot decode.
            Behaviour::Malformed => {
                return Err(Status::internal(
                    "failed to decode Protobuf message: invalid wire type",
                ))
            }
            Behaviour::Accept => {}
        }
        if delivery_id.is_empty() {
            return Err(Status::invalid_argument("no delivery id"));
        }
        if lock(&self.0.seen).insert(delivery_id.to_string()) {
            let mut arrivals = lock(&self.0.arrivals);
            arrivals.push(Arrival {
                delivery_id: delivery_id.to_string(),
                what,
                referral_id,
                at: Instant::now(),
            });
            self.0.changed.send_replace(arrivals.len());
        } else {
            self.0.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        Ok(format!("agency-receipt-{delivery_id}"))
    }

    /// Waits until an arrival matches `wanted` (described by `what` in the error).
    pub async fn wait_for(
        &self,
        what: &str,
        wanted: impl Fn(&Arrival) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Arrival> {
        let mut changed = self.0.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            if let Some(a) = self.arrivals().into_iter().find(|a| wanted(a)) {
                return Ok(a);
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => anyhow::bail!("{what} did not arrive within {timeout:?}"),
            }
        }
    }

    /// Serves this mock on loopback over TLS with a server certificate from `ca`, requiring
    /// a client certificate from `ca` (the gateway's).
    pub async fn serve(self, ca: &CertAuthority) -> anyhow::Result<SocketAddr> {
        use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
        let cert = ca.issue(&LeafSpec::server(&["localhost".to_string()]))?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
            .client_ca_root(Certificate::from_pem(ca.cert_pem()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Server::builder()
            .tls_config(tls)?
            .add_service(AgencyEndpointServiceServer::new(self));
        tokio::spawn(
            server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok(addr)
    }

    async fn answer(&self) {
        if self.0.hang.load(Ordering::SeqCst) {
            // Acted on, but the answer never leaves (the gateway dies meanwhile).
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

impl MockAgency for MockEndpoint {
    fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.0.behaviour) = behaviour;
    }
    fn acted(&self) -> Vec<String> {
        self.arrivals().into_iter().map(|a| a.delivery_id).collect()
    }
}

fn short_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_string()
}

fn delivery_id(meta: &Option<DeliveryMetadata>) -> &str {
    meta.as_ref().map_or("", |m| m.delivery_id.as_str())
}

#[tonic::async_trait]
impl AgencyEndpointService for MockEndpoint {
    async fn deliver_referral(
        &self,
        r: Request<DeliverReferralRequest>,
    ) -> Result<Response<DeliverReferralResponse>, Status> {
        let r = r.into_inner();
        let id = r.referral.map(|x| x.id).unwrap_or_default();
        let receipt_id = self.record(delivery_id(&r.metadata), format!("referral {id}"), id)?;
        self.answer().await;
        Ok(Response::new(DeliverReferralResponse {
            receipt_id,
            duplicate: false,
        }))
    }
    async fn deliver_information_request(
        &self,
        r: Request<DeliverInformationRequestRequest>,
    ) -> Result<Response<DeliverInformationRequestResponse>, Status> {
        let r = r.into_inner();
        let id = r.information_request.map(|x| x.id).unwrap_or_default();
        let receipt_id = self.record(
            delivery_id(&r.metadata),
            format!("information_request {id}"),
            id,
        )?;
        self.answer().await;
        Ok(Response::new(DeliverInformationRequestResponse {
            receipt_id,
            duplicate: false,
        }))
    }
    async fn deliver_information_response(
        &self,
        r: Request<DeliverInformationResponseRequest>,
    ) -> Result<Response<DeliverInformationResponseResponse>, Status> {
        let r = r.into_inner();
        let (id, status) = r
            .information_request
            .map(|x| {
                let status = short_name(x.status().as_str_name(), "INFORMATION_REQUEST_STATUS_");
                (x.id, status)
            })
            .unwrap_or_default();
        let receipt_id = self.record(
            delivery_id(&r.metadata),
            format!("information_response {id} {status}"),
            id,
        )?;
        self.answer().await;
        Ok(Response::new(DeliverInformationResponseResponse {
            receipt_id,
            duplicate: false,
        }))
    }
    async fn deliver_status_update(
        &self,
        r: Request<DeliverStatusUpdateRequest>,
    ) -> Result<Response<DeliverStatusUpdateResponse>, Status> {
        let r = r.into_inner();
        // The behaviour decides first (a health probe sends an empty update).
        let (id, status) = match r.status_update.and_then(|u| u.target) {
            Some(status_update::Target::Referral(u)) => {
                let status = u
                    .change
                    .map(|c| short_name(c.status().as_str_name(), "REFERRAL_STATUS_"));
                (u.referral_id, status.unwrap_or_default())
            }
            Some(status_update::Target::InformationRequest(u)) => {
                let status = short_name(u.status().as_str_name(), "INFORMATION_REQUEST_STATUS_");
                let status = if u.overdue {
                    format!("{status} OVERDUE")
                } else {
                    status
                };
                (u.information_request_id, status)
            }
            None => (String::new(), String::new()),
        };
        let receipt_id = self.record(
            delivery_id(&r.metadata),
            format!("status {id} {status}"),
            id,
        )?;
        self.answer().await;
        Ok(Response::new(DeliverStatusUpdateResponse {
            receipt_id,
            duplicate: false,
        }))
    }
}
