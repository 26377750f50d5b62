//! Certificate issuing with rcgen: the development PKI (`jisr certs init`) and the
//! certificates tests need (expired, foreign CA, two URI SANs, ...).
//!
//! Keys are ECDSA P-256. A production deployment uses its own CA; see docs/pki.md.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate says. Start from [`LeafSpec::agency`] or [`LeafSpec::server`]
/// and change fields to make unusual certificates.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth: bool,
    pub server_auth: bool,
    pub is_ca: bool,
}

impl LeafSpec {
    /// An agency client certificate: one URI SAN spiffe://<trust_domain>/agency/<id>,
    /// clientAuth, valid for a year.
    pub fn agency(trust_domain: &str, agency_id: &str) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: agency_id.to_string(),
            uris: vec![super::identity::spiffe_id(trust_domain, agency_id)],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
            client_auth: true,
            server_auth: false,
            is_ca: false,
        }
    }

    /// The gateway's server certificate for these DNS names / IP addresses.
    pub fn server(names: &[String]) -> LeafSpec {
        let (ips, dns): (Vec<_>, Vec<_>) = names
            .iter()
            .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
        LeafSpec {
            common_name: names.first().cloned().unwrap_or_else(|| "jisr".into()),
            uris: Vec::new(),
            dns_names: dns.into_iter().cloned().collect(),
            ip_addresses: ips.iter().filter_map(|s| s.parse().ok()).collect(),
            client_auth: false,
            server_auth: true,
            ..LeafSpec::agency("unused", "unused")
        }
    }
}

/// A certificate authority that can issue leaves.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl CertAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<CertAuthority, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<CertAuthority, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(CertAuthority {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Jisr development PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// What `init_dev_pki` wrote.
#[derive(Debug)]
pub struct DevPkiReport {
    pub dir: PathBuf,
    pub agencies: usize,
    /// The published key that verifies audit checkpoints.
    pub audit_verifier_key: String,
}

/// True when the CA, server certificate or key the config names is missing.
pub fn dev_pki_missing(config: &Config) -> bool {
    [
        &config.tls.ca_cert,
        &config.tls.server_cert,
        &config.tls.server_key,
    ]
    .iter()
    .any(|p| !p.exists())
}

/// Creates the development PKI: a CA, the server certificate, one client certificate per
/// configured agency, and the Ed25519 key that signs audit checkpoints. Refuses to
/// overwrite an existing CA unless `force`.
pub fn init_dev_pki(config: &Config, force: bool) -> Result<DevPkiReport, PkiError> {
    if config.tls.ca_cert.exists() && !force {
        return Err(PkiError::Invalid(format!(
            "{} already exists; pass --force to replace the whole development PKI",
            config.tls.ca_cert.display()
        )));
    }
    let ca = CertAuthority::generate("Jisr development CA")?;
    write(&config.tls.ca_cert, ca.cert_pem())?;
    write_secret(&config.tls.ca_cert.with_extension("key"), &ca.key_pem)?;
    let server = ca.issue(&LeafSpec::server(&config.tls.server_names))?;
    write(&config.tls.server_cert, &server.cert_pem)?;
    write_secret(&config.tls.server_key, &server.key_pem)?;
    for agency in &config.agencies {
        let issued = ca.issue(&LeafSpec::agency(&config.trust_domain, &agency.id))?;
        let (cert, key) = config.dev_agency_cert_paths(&agency.id);
        write(&cert, &issued.cert_pem)?;
        write_secret(&key, &issued.key_pem)?;
    }
    // The gateway's own identity when it calls agencies (the grpc and rest adapters).
    let mut gateway = LeafSpec::agency(&config.trust_domain, "unused");
    gateway.common_name = format!("jisr gateway {}", config.node_id);
    gateway.uris = vec![format!(
        "spiffe://{}/gateway/{}",
        config.trust_domain, config.node_id
    )];
    let issued = ca.issue(&gateway)?;
    write(&config.delivery.client_cert, &issued.cert_pem)?;
    write_secret(&config.delivery.client_key, &issued.key_pem)?;
    let audit_verifier_key = crate::audit::create_signing_key(config, &config.audit.signing_key)
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
    Ok(DevPkiReport {
        dir: config.tls.dev_pki_dir.clone(),
        agencies: config.agencies.len(),
        audit_verifier_key,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

/// Private keys are readable by the owner only.
fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| PkiError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
    }
    Ok(())
}
