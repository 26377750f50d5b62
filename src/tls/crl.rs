//! Certificate revocation lists: reading PEM CRL files and what a CRL says (issuer,
//! validity, revoked serials), for the reload log and `jisr certs revoke`.
//!
//! Enforcement itself is rustls-webpki's (`WebPkiClientVerifier::with_crls`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use time::OffsetDateTime;

/// What one CRL says.
#[derive(Debug, Clone)]
pub struct CrlInfo {
    /// The issuing CA's distinguished name, e.g. "O=Jisr development PKI, CN=Jisr development CA".
    pub issuer: String,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    /// Revoked certificates: serial (lowercase hex of the DER integer, as in audit
    /// entries) and revocation time.
    pub revoked: Vec<(String, OffsetDateTime)>,
}

impl CrlInfo {
    /// Past its nextUpdate at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_some_and(|next| next < now)
    }

    pub fn lists(&self, serial: &str) -> bool {
        self.revoked.iter().any(|(s, _)| s == serial)
    }
}

/// Every `X509 CRL` block of a PEM file; at least one.
pub fn parse_pem(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM CRL file: {e}"))?;
    if crls.is_empty() {
        return Err("no PEM CRL found (expected -----BEGIN X509 CRL-----)".into());
    }
    Ok(crls)
}

/// Reads one DER CRL.
pub fn info(der: &[u8]) -> Result<CrlInfo, String> {
    let (rest, crl) =
        x509_parser::parse_x509_crl(der).map_err(|e| format!("CRL cannot be parsed: {e}"))?;
    if !rest.is_empty() {
        return Err("CRL has trailing data".into());
    }
    let time = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|_| "CRL holds a time out of range".to_string())
    };
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| Ok((hex::encode(r.raw_serial()), time(r.revocation_date)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        this_update: time(crl.last_update())?,
        next_update: crl.next_update().map(time).transpose()?,
        revoked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_crl_is_an_error() {
        assert!(parse_pem(b"").unwrap_err().contains("no PEM CRL"));
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(cert.as_bytes()).is_err());
        let junk = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n";
        let ders = parse_pem(junk.as_bytes()).unwrap();
        assert!(info(&ders[0]).is_err());
    }
}
