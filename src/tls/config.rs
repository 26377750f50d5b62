//! `[tls]`: the gateway's certificate, the trust bundle of agency CAs, CRLs, reloading,
//! and the development PKI's location.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CAs that issue agency certificates.
    pub ca_cert: PathBuf,
    /// PEM certificate chain the gateway presents.
    pub server_cert: PathBuf,
    /// PEM private key of the server certificate (PKCS#8).
    pub server_key: PathBuf,
    /// When true and the files above are missing, `jisr serve` creates a development PKI.
    #[serde(default)]
    pub dev_pki: bool,
    /// Directory of the development PKI (`jisr certs init`).
    #[serde(default = "default_dev_pki_dir")]
    pub dev_pki_dir: PathBuf,
    /// DNS names and IP addresses the development server certificate is issued for.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Seconds a client has to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// PEM CRL files (`-----BEGIN X509 CRL-----`, one or more per file) checked on every
    /// handshake. When any is listed, a client certificate whose issuer no CRL covers is
    /// refused (revocation status unknown). Empty: revocation is not checked.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// A CRL past its nextUpdate: `refuse` every client it covers, or `accept` it as valid.
    #[serde(default)]
    pub expired_crl: ExpiredCrl,
    /// Seconds between checks of the certificate, key, trust bundle and CRL files; a changed
    /// file reloads them all. 0: reload only on SIGHUP.
    #[serde(default = "default_reload_interval")]
    pub reload_interval_secs: u64,
}

/// What a CRL past its nextUpdate means (`tls.expired_crl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredCrl {
    /// Every client certificate the CRL covers is refused until a fresh CRL is loaded.
    #[default]
    Refuse,
    /// The CRL is used as if it were still current.
    Accept,
}

impl TlsConfig {
    /// Rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, crl) in self.crls.iter().enumerate() {
            if crl.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("tls.crls[{i}]"),
                    "",
                    "the path of a PEM CRL file",
                ));
            }
        }
        crate::config::at_least_one(&[("tls.handshake_timeout_secs", self.handshake_timeout_secs)])
    }

    /// Where `jisr certs init` puts an agency's client certificate and key.
    pub fn dev_agency_cert_paths(&self, agency: &str) -> (PathBuf, PathBuf) {
        let dir = self.dev_pki_dir.join("agencies");
        (
            dir.join(format!("{agency}.pem")),
            dir.join(format!("{agency}.key")),
        )
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'.
pub fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' || c == '_'
        })
}

fn default_dev_pki_dir() -> PathBuf {
    PathBuf::from("certs/dev")
}
fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_reload_interval() -> u64 {
    5
}
