//! Certificate issuing with rcgen: CAs, agency and server certificates, CRLs: what the
//! development PKI (`cli::certs`) and tests need (expired, foreign CA, two URI SANs,
//! revoked, ...).
//!
//! Keys are ECDSA P-256. A production deployment uses its own CA; see docs/pki.md.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

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

impl Issued {
    /// The certificate's serial number, lowercase hex (as audit entries and CRLs name it).
    pub fn serial(&self) -> Result<String, PkiError> {
        serial_of_pem(&self.cert_pem)
    }
}

/// The serial number of a PEM certificate, lowercase hex of its DER integer.
pub fn serial_of_pem(cert_pem: &str) -> Result<String, PkiError> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("not a PEM certificate: {e}")))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Invalid(format!("certificate cannot be parsed: {e}")))?;
    Ok(hex::encode(cert.tbs_certificate.raw_serial()))
}

/// A certificate on a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number, hex (as [`Issued::serial`] gives it).
    pub serial: String,
    pub revoked_at: OffsetDateTime,
}

impl Revocation {
    pub fn new(serial: &str, revoked_at: OffsetDateTime) -> Revocation {
        Revocation {
            serial: serial.to_string(),
            revoked_at,
        }
    }
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

    /// The CA's private key (PKCS#8 PEM), for writing it next to its certificate.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A CRL (PEM) signed by this CA, listing `revoked`, issued at `this_update` and due to
    /// be replaced at `next_update` (a `next_update` in the past makes an expired CRL). Its
    /// CRL number is `this_update` in nanoseconds, so later CRLs have higher numbers.
    pub fn crl(
        &self,
        revoked: &[Revocation],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let serial = hex::decode(&r.serial).map_err(|_| {
                    PkiError::Invalid(format!("serial {:?} is not hexadecimal", r.serial))
                })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: r.revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let number = u64::try_from(this_update.unix_timestamp_nanos()).unwrap_or(0);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, Error, RootCertStore};

    use super::*;

    /// rustls-webpki's verdict on `leaf`, trusting `ca` and checking `crl_pem`.
    fn verdict(
        ca: &CertAuthority,
        crl_pem: &str,
        leaf: &Issued,
        refuse_expired: bool,
    ) -> Result<(), Error> {
        let provider = crate::tls::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let crls = crate::tls::crl::parse_pem(crl_pem.as_bytes()).unwrap();
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).with_crls(crls);
        if refuse_expired {
            builder = builder.enforce_revocation_expiration();
        }
        let leaf = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        builder
            .build()
            .unwrap()
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .map(|_| ())
    }

    fn agency(ca: &CertAuthority, id: &str) -> Issued {
        ca.issue(&LeafSpec::agency("jisr.gov.ae", id)).unwrap()
    }

    #[test]
    fn a_crl_from_a_reloaded_ca_revokes_exactly_the_serials_it_lists() {
        let ca = CertAuthority::generate("test CA").unwrap();
        // As `jisr certs revoke` does: the CA loaded back from its PEM files.
        let reloaded = CertAuthority::load(ca.cert_pem(), &ca.key_pem).unwrap();
        let (housing, police) = (agency(&ca, "housing"), agency(&ca, "police"));
        let now = OffsetDateTime::now_utc();
        let serial = housing.serial().unwrap();
        let crl = reloaded
            .crl(
                &[Revocation::new(&serial, now)],
                now - Duration::hours(1),
                now + Duration::days(1),
            )
            .unwrap();
        assert_eq!(
            verdict(&ca, &crl, &housing, true),
            Err(Error::InvalidCertificate(CertificateError::Revoked))
        );
        assert_eq!(verdict(&ca, &crl, &police, true), Ok(()));
        let der = &crate::tls::crl::parse_pem(crl.as_bytes()).unwrap()[0];
        let info = crate::tls::crl::info(der).unwrap();
        assert!(info.lists(&serial) && info.revoked.len() == 1, "{info:?}");
        assert!(info.issuer.contains("test CA"), "{}", info.issuer);
        assert!(!info.is_expired(now));
    }

    #[test]
    fn an_expired_crl_refuses_only_when_expiry_is_enforced() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let housing = agency(&ca, "housing");
        let now = OffsetDateTime::now_utc();
        let crl = ca
            .crl(&[], now - Duration::days(2), now - Duration::days(1))
            .unwrap();
        assert!(matches!(
            verdict(&ca, &crl, &housing, true),
            Err(Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList
                    | CertificateError::ExpiredRevocationListContext { .. }
            ))
        ));
        assert_eq!(verdict(&ca, &crl, &housing, false), Ok(()));
    }

    #[test]
    fn a_certificate_no_crl_covers_has_an_unknown_status() {
        let (ca, other) = (
            CertAuthority::generate("test CA").unwrap(),
            CertAuthority::generate("other CA").unwrap(),
        );
        let now = OffsetDateTime::now_utc();
        let crl = other
            .crl(&[], now - Duration::hours(1), now + Duration::days(1))
            .unwrap();
        assert_eq!(
            verdict(&ca, &crl, &agency(&ca, "housing"), true),
            Err(Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus
            ))
        );
    }

    #[test]
    fn a_bad_serial_or_a_next_update_before_this_update_is_refused() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let bad = [Revocation::new("not-hex", now)];
        assert!(ca.crl(&bad, now, now + Duration::days(1)).is_err());
        assert!(ca.crl(&[], now, now - Duration::days(1)).is_err());
    }
}
