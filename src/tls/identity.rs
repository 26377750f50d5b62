//! Agency identity from a client certificate: the single URI SAN
//! `spiffe://<trust-domain>/agency/<agency-id>` (SPIFFE X509-SVID rules).

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::common::is_slug;

/// Who is calling, as proven by the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyIdentity {
    pub agency_id: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub cert_fingerprint: String,
    /// Certificate serial number, lowercase hex.
    pub cert_serial: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate cannot be parsed")]
    Unparseable,
    #[error("client certificate is a CA certificate, not a leaf")]
    IsCa,
    #[error("client certificate has no URI SAN; expected exactly one spiffe://{0}/agency/<id>")]
    NoUriSan(String),
    #[error("client certificate has {0} URI SANs; exactly one is allowed")]
    ManyUriSans(usize),
    #[error("URI SAN {0:?} is not spiffe://{1}/agency/<agency-id>")]
    NotAgencyId(String, String),
    #[error("agency {0:?} is not in the registry")]
    UnknownAgency(String),
}

pub fn spiffe_id(trust_domain: &str, agency_id: &str) -> String {
    format!("spiffe://{trust_domain}/agency/{agency_id}")
}

/// Reads the agency identity from a DER certificate and checks that the agency is
/// registered. Chain, validity and key usage are the TLS verifier's job.
pub fn agency_identity(
    der: &[u8],
    trust_domain: &str,
    is_registered: impl Fn(&str) -> bool,
) -> Result<AgencyIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparseable)?;
    if cert.is_ca() {
        return Err(IdentityError::IsCa);
    }
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(IdentityError::Unparseable),
    };
    let uri = match uris.as_slice() {
        [] => return Err(IdentityError::NoUriSan(trust_domain.to_string())),
        [one] => *one,
        many => return Err(IdentityError::ManyUriSans(many.len())),
    };
    let prefix = format!("spiffe://{trust_domain}/agency/");
    let agency_id = uri
        .strip_prefix(&prefix)
        .filter(|id| is_slug(id))
        .ok_or_else(|| IdentityError::NotAgencyId(uri.to_string(), trust_domain.to_string()))?;
    if !is_registered(agency_id) {
        return Err(IdentityError::UnknownAgency(agency_id.to_string()));
    }
    Ok(AgencyIdentity {
        agency_id: agency_id.to_string(),
        cert_fingerprint: hex::encode(Sha256::digest(der)),
        cert_serial: hex::encode(cert.tbs_certificate.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{CertAuthority, LeafSpec};

    fn der(spec: &LeafSpec) -> Vec<u8> {
        let ca = CertAuthority::generate("test").unwrap();
        let pem = ca.issue(spec).unwrap().cert_pem;
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
            .unwrap()
    }

    #[test]
    fn reads_the_single_spiffe_uri() {
        let id = agency_identity(
            &der(&LeafSpec::agency("example.org", "housing")),
            "example.org",
            |_| true,
        )
        .unwrap();
        assert_eq!(id.agency_id, "housing");
        assert_eq!(id.cert_fingerprint.len(), 64);
        assert!(!id.cert_serial.is_empty());
    }

    #[test]
    fn refuses_wrong_shapes() {
        let mut two = LeafSpec::agency("example.org", "housing");
        two.uris.push(spiffe_id("example.org", "police"));
        assert_eq!(
            agency_identity(&der(&two), "example.org", |_| true),
            Err(IdentityError::ManyUriSans(2))
        );
        let other_domain = LeafSpec::agency("evil.org", "housing");
        assert!(matches!(
            agency_identity(&der(&other_domain), "example.org", |_| true),
            Err(IdentityError::NotAgencyId(..))
        ));
        let mut none = LeafSpec::agency("example.org", "housing");
        none.uris.clear();
        assert!(matches!(
            agency_identity(&der(&none), "example.org", |_| true),
            Err(IdentityError::NoUriSan(_))
        ));
        assert_eq!(
            agency_identity(
                &der(&LeafSpec::agency("example.org", "ghost")),
                "example.org",
                |id| id != "ghost"
            ),
            Err(IdentityError::UnknownAgency("ghost".into()))
        );
        let mut ca = LeafSpec::agency("example.org", "housing");
        ca.is_ca = true;
        assert_eq!(
            agency_identity(&der(&ca), "example.org", |_| true),
            Err(IdentityError::IsCa)
        );
    }
}
