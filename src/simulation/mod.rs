//! Simulated agency systems, for `jisr demo`, `jisr bench --sandbox` and the tests: a
//! system speaking jisr.adapter.v1.AgencyEndpointService that de-duplicates on delivery
//! ids, records what it acted on, and can be told to misbehave.
//!
//! Not a test double hidden in the product: the demo and the sandbox benchmark run these
//! in the release binary, on loopback, so nothing needs to be set up to see the closed loop.

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
    /// The `traceparent` header of each call, in arrival order.
    traceparents: Mutex<Vec<String>>,
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
            traceparents: Mutex::default(),
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
    /// The `traceparent` headers the gateway sent, one per call that carried one.
    pub fn traceparents(&self) -> Vec<String> {
        lock(&self.0.traceparents).clone()
    }
    fn note_traceparent<T>(&self, r: &Request<T>) {
        if let Some(tp) = r
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            lock(&self.0.traceparents).push(tp.to_string());
        }
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
        self.note_traceparent(&r);
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
        self.note_traceparent(&r);
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
        self.note_traceparent(&r);
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
    async fn deliver_clearance_request(
        &self,
        r: Request<DeliverClearanceRequestRequest>,
    ) -> Result<Response<DeliverClearanceRequestResponse>, Status> {
        self.note_traceparent(&r);
        let r = r.into_inner();
        let id = r.application.map(|x| x.id).unwrap_or_default();
        let receipt_id = self.record(
            delivery_id(&r.metadata),
            format!("clearance_request {id}"),
            id,
        )?;
        self.answer().await;
        Ok(Response::new(DeliverClearanceRequestResponse {
            receipt_id,
            duplicate: false,
        }))
    }
    async fn deliver_status_update(
        &self,
        r: Request<DeliverStatusUpdateRequest>,
    ) -> Result<Response<DeliverStatusUpdateResponse>, Status> {
        self.note_traceparent(&r);
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
            Some(status_update::Target::Application(u)) => {
                let mut status = short_name(u.status().as_str_name(), "APPLICATION_STATUS_");
                if !u.clearance_agency.is_empty() {
                    let clearance =
                        short_name(u.clearance_status().as_str_name(), "CLEARANCE_STATUS_");
                    status = format!("{status} {}={clearance}", u.clearance_agency);
                }
                if u.overdue {
                    status += " OVERDUE";
                }
                (u.application_id, status)
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
