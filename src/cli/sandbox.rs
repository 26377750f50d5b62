//! A throwaway world on loopback for `jisr demo` and `jisr bench --deliveries`: a
//! development PKI, an SQLite database and a gateway in a temporary directory, and a
//! simulated agency system behind the grpc adapter. Removed when dropped.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Channel, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::{AdapterConfig, Config};
use crate::pb::adapter_v1::agency_endpoint_service_server::{
    AgencyEndpointService, AgencyEndpointServiceServer,
};
use crate::pb::adapter_v1::*;
use crate::server::Gateway;
use crate::tls::client::AgencyCredentials;
use crate::tls::pki::{CertAuthority, LeafSpec};

/// One message an agency system received (first time only: it de-duplicates).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// "referral <id>" or "status <id> <STATUS>".
    pub what: String,
    pub referral_id: String,
    pub at: Instant,
}

/// A simulated agency system: an AgencyEndpointService that records what it receives.
#[derive(Clone, Default)]
pub struct SimAgency {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    seen: Arc<Mutex<HashSet<String>>>,
    changed: Arc<watch::Sender<usize>>,
}

impl SimAgency {
    fn record(
        &self,
        meta: Option<DeliveryMetadata>,
        what: String,
        referral_id: String,
    ) -> Result<String, Status> {
        let id = meta
            .map(|m| m.delivery_id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Status::invalid_argument("no delivery id"))?;
        if self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
        {
            let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            arrivals.push(Arrival {
                what,
                referral_id,
                at: Instant::now(),
            });
            self.changed.send_replace(arrivals.len());
        }
        Ok(format!("sim-{id}"))
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until an arrival matches `wanted` (described by `what` in the error).
    pub async fn wait_for(
        &self,
        what: &str,
        wanted: impl Fn(&Arrival) -> bool,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Arrival> {
        let mut changed = self.changed.subscribe();
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
}

#[tonic::async_trait]
impl AgencyEndpointService for SimAgency {
    async fn deliver_referral(
        &self,
        r: Request<DeliverReferralRequest>,
    ) -> Result<Response<DeliverReferralResponse>, Status> {
        let r = r.into_inner();
        let id = r.referral.map(|x| x.id).unwrap_or_default();
        let receipt_id = self.record(r.metadata, format!("referral {id}"), id)?;
        Ok(Response::new(DeliverReferralResponse {
            receipt_id,
            duplicate: false,
        }))
    }
    async fn deliver_information_request(
        &self,
        _: Request<DeliverInformationRequestRequest>,
    ) -> Result<Response<DeliverInformationRequestResponse>, Status> {
        Err(Status::unimplemented("information requests are issue #6"))
    }
    async fn deliver_information_response(
        &self,
        _: Request<DeliverInformationResponseRequest>,
    ) -> Result<Response<DeliverInformationResponseResponse>, Status> {
        Err(Status::unimplemented("information requests are issue #6"))
    }
    async fn deliver_status_update(
        &self,
        r: Request<DeliverStatusUpdateRequest>,
    ) -> Result<Response<DeliverStatusUpdateResponse>, Status> {
        let r = r.into_inner();
        let (id, status) = match r.status_update.and_then(|u| u.target) {
            Some(status_update::Target::Referral(u)) => {
                let status = u.change.map(|c| {
                    c.status()
                        .as_str_name()
                        .trim_start_matches("REFERRAL_STATUS_")
                        .to_string()
                });
                (u.referral_id, status.unwrap_or_default())
            }
            _ => return Err(Status::invalid_argument("not a referral status update")),
        };
        let receipt_id = self.record(r.metadata, format!("status {id} {status}"), id)?;
        Ok(Response::new(DeliverStatusUpdateResponse {
            receipt_id,
            duplicate: false,
        }))
    }
}

pub struct Sandbox {
    pub dir: PathBuf,
    pub ca: CertAuthority,
    pub config: Config,
    pub gateway: Option<Gateway>,
}

impl Sandbox {
    /// A sandbox whose agencies in `grpc_agencies` are reached through the grpc adapter at
    /// the returned simulated system, those in `rest_agencies` through the rest adapter
    /// (mTLS, with the `mapping` given) at a simulated HTTPS system, and all others pull
    /// from their inbox.
    pub async fn start(
        grpc_agencies: &[&str],
        rest_agencies: &[&str],
        mapping: crate::config::RestMappings,
    ) -> anyhow::Result<(Sandbox, SimAgency)> {
        crate::tls::crypto_provider();
        let dir = std::env::temp_dir().join(format!("jisr-sandbox-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir)?;
        let ca = CertAuthority::generate("Jisr sandbox CA")?;
        let file = |name: &str| dir.join(name);
        let write = |name: &str, text: &str| {
            std::fs::write(file(name), text).with_context(|| name.to_string())
        };
        write("ca.pem", ca.cert_pem())?;
        let server = ca.issue(&LeafSpec::server(&["localhost".to_string()]))?;
        write("server.pem", &server.cert_pem)?;
        write("server.key", &server.key_pem)?;
        let s = |p: PathBuf| p.display().to_string();
        let vars = [
            ("JISR_LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("JISR_TLS__CA_CERT", s(file("ca.pem"))),
            ("JISR_TLS__SERVER_CERT", s(file("server.pem"))),
            ("JISR_TLS__SERVER_KEY", s(file("server.key"))),
            ("JISR_TLS__DEV_PKI", "false".into()),
            (
                "JISR_DATABASE__URL",
                format!("sqlite://{}", s(file("jisr.db"))),
            ),
            ("JISR_AUDIT__SIGNING_KEY", s(file("audit-signing.key"))),
            ("JISR_DELIVERY__CLIENT_CERT", s(file("gateway-client.pem"))),
            ("JISR_DELIVERY__CLIENT_KEY", s(file("gateway-client.key"))),
            ("JISR_DELIVERY__POLL_INTERVAL_MS", "100".into()),
        ];
        // Delivery settings may still be tuned from the environment (benchmarks).
        let tuning = std::env::vars().filter(|(k, _)| k.starts_with("JISR_DELIVERY__"));
        let mut config = Config::parse(
            Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .chain(tuning),
        )?;
        crate::audit::create_signing_key(&config, &config.audit.signing_key)?;
        let mut gateway_cert = LeafSpec::agency(&config.trust_domain, "unused");
        gateway_cert.uris = vec![format!("spiffe://{}/gateway/sandbox", config.trust_domain)];
        let issued = ca.issue(&gateway_cert)?;
        write("gateway-client.pem", &issued.cert_pem)?;
        write("gateway-client.key", &issued.key_pem)?;

        let sim = SimAgency::default();
        let addr = serve_sim(&ca, sim.clone()).await?;
        for agency in config
            .agencies
            .iter_mut()
            .filter(|a| grpc_agencies.contains(&a.id.as_str()))
        {
            agency.adapter = AdapterConfig::Grpc {
                endpoint: format!("https://{addr}"),
                server_name: Some("localhost".into()),
                ca_cert: None,
            };
        }
        let rest_addr = serve_rest_sim(&ca, sim.clone()).await?;
        for agency in config
            .agencies
            .iter_mut()
            .filter(|a| rest_agencies.contains(&a.id.as_str()))
        {
            agency.adapter = AdapterConfig::Rest(Box::new(crate::config::RestConfig {
                url: format!("https://localhost:{}/api/jisr", rest_addr.port()),
                ca_cert: None,
                timeout_ms: None,
                auth: crate::config::RestAuth::Mtls,
                mapping: mapping.clone(),
            }));
        }
        let gateway = Gateway::start(&config).await?;
        Ok((
            Sandbox {
                dir,
                ca,
                config,
                gateway: Some(gateway),
            },
            sim,
        ))
    }

    pub fn addr(&self) -> String {
        self.gateway
            .as_ref()
            .map(|g| g.addr.to_string())
            .unwrap_or_default()
    }

    /// A channel to the gateway as `agency`, with a certificate from the sandbox CA.
    pub async fn channel(&self, agency: &str) -> anyhow::Result<Channel> {
        let issued = self
            .ca
            .issue(&LeafSpec::agency(&self.config.trust_domain, agency))?;
        let creds = AgencyCredentials {
            ca_pem: self.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        crate::tls::client::connect(&self.addr(), "localhost", &creds).await
    }

    /// Stops the gateway (its files stay until the sandbox is dropped).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await?;
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves a simulated agency system with a sandbox server certificate, requiring the
/// gateway's client certificate.
async fn serve_sim(ca: &CertAuthority, sim: SimAgency) -> anyhow::Result<SocketAddr> {
    let cert = ca.issue(&LeafSpec::server(&["localhost".to_string()]))?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .tls_config(tls)?
        .add_service(AgencyEndpointServiceServer::new(sim));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    Ok(addr)
}

/// Serves a simulated HTTPS/JSON agency system (the rest adapter's peer): requires the
/// gateway's client certificate, de-duplicates on `X-Jisr-Delivery-Id`, records the JSON it
/// was sent (`what` = "rest <body>") and answers `{"receipt_id": ...}`.
async fn serve_rest_sim(ca: &CertAuthority, sim: SimAgency) -> anyhow::Result<SocketAddr> {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = crate::tls::crypto_provider();
    let cert = ca.issue(&LeafSpec::server(&["localhost".to_string()]))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, sim) = (acceptor.clone(), sim.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sim = sim.clone();
                        async move {
                            let id = req
                                .headers()
                                .get("x-jisr-delivery-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let text = String::from_utf8_lossy(&body).to_string();
                            let referral_id = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| {
                                    v.pointer("/case/jisr_id")
                                        .or(v.get("referral_id"))
                                        .and_then(|x| x.as_str())
                                        .map(str::to_string)
                                })
                                .unwrap_or_default();
                            let meta = Some(DeliveryMetadata {
                                delivery_id: id,
                                ..DeliveryMetadata::default()
                            });
                            let (status, reply) =
                                match sim.record(meta, format!("rest {text}"), referral_id) {
                                    Ok(receipt) => {
                                        (200, format!("{{\"receipt_id\":\"{receipt}\"}}"))
                                    }
                                    Err(e) => (422, format!("{{\"error\":\"{}\"}}", e.message())),
                                };
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(reply)))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
