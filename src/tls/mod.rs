//! mTLS: our own tokio-rustls acceptor feeding tonic (`serve_with_incoming`), because
//! tonic's built-in TLS can neither check CRLs nor reload certificates.
//!
//! TLS 1.3 only, ALPN h2, the ring crypto provider installed explicitly at start. The
//! client certificate must chain to the configured CA (webpki: validity, clientAuth
//! usage, leaf not a CA, not revoked by a configured CRL) and carry exactly one URI SAN
//! naming a registered agency. Certificates, trust bundle and CRLs are reloaded without a
//! restart (`reload`).

pub mod client;
pub mod config;
pub mod crl;
pub mod https;
pub mod identity;
pub mod listener;
pub mod pki;
pub mod reload;

use std::path::{Path, PathBuf};
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

use x509_parser::prelude::{FromDer, X509Certificate};

pub use config::{ExpiredCrl, TlsConfig};

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
    pub fn new<'a>(agency_ids: impl IntoIterator<Item = &'a str>) -> Registry {
        Registry(Arc::new(
            agency_ids.into_iter().map(str::to_string).collect(),
        ))
    }
    pub fn contains(&self, agency_id: &str) -> bool {
        self.0.contains(agency_id)
    }
}

/// What the server's TLS is made of: the files (re-read on every reload) and the rules.
#[derive(Debug, Clone)]
pub struct TlsSource {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub crls: Vec<PathBuf>,
    pub expired_crl: ExpiredCrl,
    pub trust_domain: String,
    pub registry: Registry,
}

impl TlsSource {
    pub fn new(tls: &TlsConfig, trust_domain: &str, registry: Registry) -> TlsSource {
        TlsSource {
            ca_cert: tls.ca_cert.clone(),
            server_cert: tls.server_cert.clone(),
            server_key: tls.server_key.clone(),
            crls: tls.crls.clone(),
            expired_crl: tls.expired_crl,
            trust_domain: trust_domain.to_string(),
            registry,
        }
    }
}

/// The server side of mTLS, built from files already read (`reload::TlsFiles`), so what is
/// served is exactly what the reloader fingerprinted. Every error names the file at fault.
pub(crate) fn build_server_config(
    source: &TlsSource,
    files: &reload::TlsFiles,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    for ca in certs_in(&files.ca_cert)? {
        roots.add(ca).map_err(|e| {
            files
                .ca_cert
                .error(format!("not a usable CA certificate: {e}"))
        })?;
    }
    let roots = Arc::new(roots);
    let now = time::OffsetDateTime::now_utc();
    let mut crls = Vec::new();
    for file in &files.crls {
        let ders = crl::parse_pem(file.bytes()?).map_err(|m| file.error(m))?;
        for der in &ders {
            let info = crl::info(der).map_err(|m| file.error(m))?;
            let next_update = info.next_update.map_or_else(
                || "none".to_string(),
                |t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|_| t.to_string())
                },
            );
            if info.is_expired(now) {
                tracing::warn!(
                    file = %file.path.display(),
                    issuer = %info.issuer,
                    %next_update,
                    policy = ?source.expired_crl,
                    "CRL is past its nextUpdate: with tls.expired_crl = \"refuse\" every client certificate it covers is refused until a fresh CRL is loaded"
                );
            } else {
                tracing::info!(
                    file = %file.path.display(),
                    issuer = %info.issuer,
                    %next_update,
                    revoked = info.revoked.len(),
                    "CRL loaded"
                );
            }
        }
        // rustls-webpki's own parse, one file at a time, so a CRL it cannot use is named.
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(ders.iter().cloned())
            .build()
            .map_err(|e| file.error(format!("unusable CRL: {e}")))?;
        crls.extend(ders);
    }
    let mut webpki =
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).with_crls(crls);
    if source.expired_crl == ExpiredCrl::Refuse {
        webpki = webpki.enforce_revocation_expiration();
    }
    let verifier = Arc::new(AgencyCertVerifier {
        webpki: webpki.build()?,
        trust_domain: source.trust_domain.clone(),
        registry: source.registry.clone(),
    });
    let chain = certs_in(&files.server_cert)?;
    let key = PrivateKeyDer::from_pem_slice(files.server_key.bytes()?).map_err(|e| {
        files
            .server_key
            .error(format!("no usable PEM private key: {e}"))
    })?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::File {
            path: format!(
                "{} with {}",
                files.server_cert.path.display(),
                files.server_key.path.display()
            ),
            message: format!("server certificate and key do not go together: {e}"),
        })?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed session skips client certificate verification, so
    // a certificate revoked (or expired) since the first handshake could come back on it.
    // Every connection makes a full handshake against the CRLs in force.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    Ok(Arc::new(server))
}

fn certs_in(file: &reload::FileRead) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(file.bytes()?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file.error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file.error("no PEM certificate found".into()));
    }
    Ok(certs)
}

tokio::task_local! {
    /// Set around one handshake by the listener: what the verifier saw of a certificate it
    /// refused (agency, serial), so the refusal names them while the client still gets the
    /// standard alert (certificate_revoked, unknown_ca, ...).
    pub(crate) static REFUSAL_NOTE: std::cell::RefCell<Option<String>>;
}

/// webpki's checks, then the SPIFFE agency identity rules, so a bad certificate fails
/// the handshake itself with a TLS alert.
#[derive(Debug)]
struct AgencyCertVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    registry: Registry,
}

impl AgencyCertVerifier {
    /// Which certificate this is, in words: its agency (when it names one) and serial.
    fn note(&self, der: &[u8]) -> String {
        if let Ok(id) = identity::agency_identity(der, &self.trust_domain, |_| true) {
            return format!(
                "agency {:?}, certificate serial {}",
                id.agency_id, id.cert_serial
            );
        }
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => format!(
                "certificate serial {}, subject {}",
                hex::encode(cert.tbs_certificate.raw_serial()),
                cert.subject()
            ),
            Err(_) => "an unparseable certificate".into(),
        }
    }
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
        if let Err(e) = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            let _ = REFUSAL_NOTE.try_with(|note| *note.borrow_mut() = Some(self.note(end_entity)));
            return Err(e);
        }
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
