//! mTLS: our own tokio-rustls acceptor feeding tonic (`serve_with_incoming`), because
//! tonic's built-in TLS can neither check CRLs nor reload certificates.
//!
//! TLS 1.3 only, ALPN h2, the ring crypto provider installed explicitly at start. The
//! client certificate must chain to the configured CA (webpki: validity, clientAuth
//! usage, leaf not a CA) and carry exactly one URI SAN naming a registered agency.

pub mod client;
pub mod identity;
pub mod listener;
pub mod pki;

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The one crypto provider the gateway uses (ring), installed as the process default so
/// every rustls user in the process agrees.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        message: format!("no usable PEM private key: {e}"),
    })
}

/// The registered agency ids, as the verifier sees them.
#[derive(Debug, Clone)]
pub struct Registry(Arc<std::collections::HashSet<String>>);

impl Registry {
    pub fn of(config: &Config) -> Registry {
        Registry(Arc::new(
            config.agencies.iter().map(|a| a.id.clone()).collect(),
        ))
    }
    pub fn contains(&self, agency_id: &str) -> bool {
        self.0.contains(agency_id)
    }
}

/// The server side of mTLS, built from the config's CA, certificate and key.
pub fn server_config(config: &Config, registry: Registry) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&config.tls.ca_cert)? {
        roots.add(ca)?;
    }
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(AgencyCertVerifier {
        webpki,
        trust_domain: config.trust_domain.clone(),
        registry,
    });
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_certs(&config.tls.server_cert)?,
            load_key(&config.tls.server_key)?,
        )?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

/// webpki's checks, then the SPIFFE agency identity rules, so a bad certificate fails
/// the handshake itself with a TLS alert.
#[derive(Debug)]
struct AgencyCertVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    registry: Registry,
}

impl ClientCertVerifier for AgencyCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        identity::agency_identity(end_entity, &self.trust_domain, |id| {
            self.registry.contains(id)
        })
        .map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
