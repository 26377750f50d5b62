//! A throwaway world on loopback for `jisr demo` and `jisr bench --deliveries`: a
//! development PKI, an SQLite database and a gateway in a temporary directory, and a
//! simulated agency system behind the grpc adapter. Removed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tonic::transport::Channel;

use crate::adapters::AdapterConfig;
use crate::server::config::Config;
use crate::server::Gateway;
use crate::simulation::MockEndpoint;
use crate::tls::client::AgencyCredentials;
use crate::tls::pki::{CertAuthority, LeafSpec};

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
        mapping: crate::adapters::rest::RestMappings,
    ) -> anyhow::Result<(Sandbox, MockEndpoint)> {
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
            ("JISR_ADMIN__LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("JISR_TLS__CA_CERT", s(file("ca.pem"))),
            ("JISR_TLS__SERVER_CERT", s(file("server.pem"))),
            ("JISR_TLS__SERVER_KEY", s(file("server.key"))),
            ("JISR_TLS__DEV_PKI", "false".into()),
            (
                "JISR_DATABASE__URL",
                format!("sqlite://{}", s(file("jisr.db"))),
            ),
            ("JISR_AUDIT__SIGNING_KEY", s(file("audit-signing.key"))),
            ("JISR_DOCUMENTS__DIR", s(file("documents"))),
            ("JISR_DELIVERY__CLIENT_CERT", s(file("gateway-client.pem"))),
            ("JISR_DELIVERY__CLIENT_KEY", s(file("gateway-client.key"))),
            ("JISR_DELIVERY__POLL_INTERVAL_MS", "100".into()),
        ];
        // Delivery settings, limits and the database may still be set from the environment
        // (benchmarks); the gateway's client certificate is the sandbox's own.
        let tuning = std::env::vars().filter(|(k, _)| {
            ["JISR_DELIVERY__", "JISR_LIMITS__", "JISR_DATABASE__"]
                .iter()
                .any(|prefix| k.starts_with(prefix))
                && !k.starts_with("JISR_DELIVERY__CLIENT_")
        });
        let mut config = Config::parse(
            Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .chain(tuning),
        )?;
        crate::audit::create_signing_key(&config.audit_origin(), &config.audit.signing_key)?;
        let now = time::OffsetDateTime::now_utc();
        write(
            "crl.pem",
            &ca.crl(
                &[],
                now - time::Duration::hours(1),
                now + time::Duration::days(1),
            )?,
        )?;
        config.tls.crls = vec![file("crl.pem")];
        let mut gateway_cert = LeafSpec::agency(&config.trust_domain, "unused");
        gateway_cert.uris = vec![format!("spiffe://{}/gateway/sandbox", config.trust_domain)];
        let issued = ca.issue(&gateway_cert)?;
        write("gateway-client.pem", &issued.cert_pem)?;
        write("gateway-client.key", &issued.key_pem)?;

        let sim = MockEndpoint::default();
        let addr = sim.clone().serve(&ca).await?;
        for agency in config
            .agencies
            .iter_mut()
            .filter(|a| grpc_agencies.contains(&a.id.as_str()))
        {
            agency.adapter = AdapterConfig::Grpc(crate::adapters::grpc::GrpcConfig {
                endpoint: format!("https://{addr}"),
                server_name: Some("localhost".into()),
                ca_cert: None,
            });
        }
        let rest_addr = serve_rest_sim(&ca, sim.clone()).await?;
        for agency in config
            .agencies
            .iter_mut()
            .filter(|a| rest_agencies.contains(&a.id.as_str()))
        {
            agency.adapter = AdapterConfig::Rest(Box::new(crate::adapters::rest::RestConfig {
                url: format!("https://localhost:{}/api/jisr", rest_addr.port()),
                ca_cert: None,
                timeout_ms: None,
                auth: crate::adapters::rest::RestAuth::Mtls,
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
        crate::tls::client::connect(&self.addr(), "localhost", &self.credentials(agency)?).await
    }

    /// A new client certificate for `agency` from the sandbox CA.
    pub fn credentials(&self, agency: &str) -> anyhow::Result<AgencyCredentials> {
        let issued = self
            .ca
            .issue(&LeafSpec::agency(&self.config.trust_domain, agency))?;
        Ok(AgencyCredentials {
            ca_pem: self.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        })
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

/// Serves a simulated HTTPS/JSON agency system (the rest adapter's peer): requires the
/// gateway's client certificate, de-duplicates on `X-Jisr-Delivery-Id`, records the JSON it
/// was sent (`what` = "rest <body>") and answers `{"receipt_id": ...}`.
async fn serve_rest_sim(ca: &CertAuthority, sim: MockEndpoint) -> anyhow::Result<SocketAddr> {
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
                            let (status, reply) =
                                match sim.record(&id, format!("rest {text}"), referral_id) {
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
