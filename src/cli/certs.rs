//! The development PKI of a configuration: `jisr certs init` (a CA, the gateway's server
//! and client certificates, one client certificate per agency, the audit signing key),
//! `jisr certs revoke` and the CRL they keep. Development only: production uses its own CA
//! (docs/pki.md).

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use crate::server::config::Config;
use crate::tls::pki::{serial_of_pem, CertAuthority, LeafSpec, PkiError, Revocation};

/// What `init_dev_pki` wrote.
#[derive(Debug)]
pub struct DevPkiReport {
    pub dir: PathBuf,
    pub agencies: usize,
    /// The published key that verifies audit checkpoints.
    pub audit_verifier_key: String,
}

/// True when the CA, server certificate or key the config names is missing.
fn dev_pki_missing(config: &Config) -> bool {
    [
        &config.tls.ca_cert,
        &config.tls.server_cert,
        &config.tls.server_key,
    ]
    .iter()
    .any(|p| !p.exists())
}

/// Creates the development PKI if it is missing and brings its CRL up to date
/// (`ensure_dev_crl`), once even when several gateways start together on one checkout:
/// they take turns holding a lock file in the PKI directory, and each looks again once it
/// holds it, so a replica never reads a key another is still writing. Returns what was
/// created, if anything, and what was done to the CRL.
pub fn ensure_dev_pki(config: &Config) -> Result<(Option<DevPkiReport>, Option<String>), PkiError> {
    let dir = &config.tls.dev_pki_dir;
    let io = |source| PkiError::Io {
        path: dir.join(".lock"),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(io)?;
    lock.lock().map_err(io)?;
    let created = if dev_pki_missing(config) {
        Some(init_dev_pki(config, true)?)
    } else {
        None
    };
    // Before the TLS configuration loads: a development PKI from before CRLs has none.
    let crl = ensure_dev_crl(config)?;
    drop(lock);
    Ok((created, crl))
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
    write_secret(&dev_ca_key_path(config), ca.key_pem())?;
    let now = OffsetDateTime::now_utc();
    write(
        &dev_crl_path(config),
        &ca.crl(&[], now - Duration::minutes(5), now + DEV_CRL_VALIDITY)?,
    )?;
    let server = ca.issue(&LeafSpec::server(&config.tls.server_names))?;
    write(&config.tls.server_cert, &server.cert_pem)?;
    write_secret(&config.tls.server_key, &server.key_pem)?;
    for agency in &config.agencies {
        let issued = ca.issue(&LeafSpec::agency(&config.trust_domain, &agency.id))?;
        let (cert, key) = config.tls.dev_agency_cert_paths(&agency.id);
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
    let audit_verifier_key =
        crate::audit::create_signing_key(&config.audit_origin(), &config.audit.signing_key)
            .map_err(|e| PkiError::Invalid(e.to_string()))?;
    Ok(DevPkiReport {
        dir: config.tls.dev_pki_dir.clone(),
        agencies: config.agencies.len(),
        audit_verifier_key,
    })
}

/// How long a development CRL stays current (`jisr serve` re-signs an expired one).
const DEV_CRL_VALIDITY: Duration = Duration::days(365);

/// The development CRL, `<dev_pki_dir>/crl.pem` (the sample config lists it in `tls.crls`).
pub fn dev_crl_path(config: &Config) -> PathBuf {
    config.tls.dev_pki_dir.join("crl.pem")
}

/// The development CA's private key, beside its certificate.
pub fn dev_ca_key_path(config: &Config) -> PathBuf {
    config.tls.ca_cert.with_extension("key")
}

fn load_dev_ca(config: &Config) -> Result<CertAuthority, PkiError> {
    let key_path = dev_ca_key_path(config);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let cert = read(&config.tls.ca_cert)?;
    let key = read(&key_path).map_err(|e| {
        PkiError::Invalid(format!(
            "{e}: the development CA key is needed (this works only for the development PKI;              with your own CA, revoke with it, e.g. `openssl ca -revoke`, see docs/pki.md)"
        ))
    })?;
    CertAuthority::load(&cert, &key)
}

/// The certificates a CRL file lists (none when the file does not exist).
fn revoked_in(path: &Path) -> Result<Option<Vec<Revocation>>, PkiError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PkiError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let invalid = |m: String| PkiError::Invalid(format!("{}: {m}", path.display()));
    let mut revoked = Vec::new();
    for der in crate::tls::crl::parse_pem(&bytes).map_err(invalid)? {
        let info = crate::tls::crl::info(&der).map_err(invalid)?;
        revoked.extend(
            info.revoked
                .into_iter()
                .map(|(serial, at)| Revocation::new(&serial, at)),
        );
    }
    Ok(Some(revoked))
}

/// Creates the development CRL when `tls.crls` lists it and it is missing (a development
/// PKI made before CRLs existed), and re-signs it, same entries, when past its nextUpdate.
/// Returns what it did, if anything.
fn ensure_dev_crl(config: &Config) -> Result<Option<String>, PkiError> {
    let path = dev_crl_path(config);
    if !config.tls.crls.contains(&path) || !dev_ca_key_path(config).exists() {
        return Ok(None);
    }
    let now = OffsetDateTime::now_utc();
    let (revoked, what) = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (Vec::new(), "created an empty development CRL")
        }
        Err(source) => return Err(PkiError::Io { path, source }),
        Ok(bytes) => {
            let infos: Result<Vec<_>, _> = crate::tls::crl::parse_pem(&bytes)
                .and_then(|ders| ders.iter().map(|d| crate::tls::crl::info(d)).collect());
            // An unreadable CRL is left alone: loading the TLS configuration reports it,
            // naming the file.
            let Ok(infos) = infos else { return Ok(None) };
            if !infos.iter().any(|i| i.is_expired(now)) {
                return Ok(None);
            }
            let revoked = infos
                .into_iter()
                .flat_map(|i| i.revoked)
                .map(|(serial, at)| Revocation::new(&serial, at))
                .collect();
            (revoked, "re-signed the expired development CRL")
        }
    };
    let ca = load_dev_ca(config)?;
    write_replacing(
        &path,
        &ca.crl(&revoked, now - Duration::minutes(5), now + DEV_CRL_VALIDITY)?,
    )?;
    Ok(Some(format!("{what} {}", path.display())))
}

/// What [`revoke_dev_agency`] did.
#[derive(Debug)]
pub struct RevokeReport {
    pub serial: String,
    pub crl: PathBuf,
    /// The certificate was on the CRL already (nothing was written).
    pub already_revoked: bool,
    /// Certificates the CRL lists now.
    pub listed: usize,
}

/// `jisr certs revoke`: puts the agency's development certificate on the development CRL,
/// re-signed by the development CA.
pub fn revoke_dev_agency(config: &Config, agency: &str) -> Result<RevokeReport, PkiError> {
    let (cert_path, _) = config.tls.dev_agency_cert_paths(agency);
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(|source| PkiError::Io {
        path: cert_path.clone(),
        source,
    })?;
    let serial = serial_of_pem(&cert_pem)
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", cert_path.display())))?;
    let ca = load_dev_ca(config)?;
    let crl = dev_crl_path(config);
    let mut revoked = revoked_in(&crl)?.unwrap_or_default();
    if revoked.iter().any(|r| r.serial == serial) {
        return Ok(RevokeReport {
            serial,
            crl,
            already_revoked: true,
            listed: revoked.len(),
        });
    }
    let now = OffsetDateTime::now_utc();
    revoked.push(Revocation::new(&serial, now));
    write_replacing(
        &crl,
        &ca.crl(&revoked, now - Duration::minutes(5), now + DEV_CRL_VALIDITY)?,
    )?;
    Ok(RevokeReport {
        serial,
        crl,
        already_revoked: false,
        listed: revoked.len(),
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

/// Writes a sibling file and renames it over `path`, so a running gateway never reads
/// half a file.
fn write_replacing(path: &Path, contents: &str) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    write(&tmp, contents)?;
    std::fs::rename(&tmp, path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
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
