//! Connecting to a gateway as an agency (the CLI client, the load generator, tests).

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// PEM material an agency connects with.
#[derive(Debug, Clone)]
pub struct AgencyCredentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl AgencyCredentials {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<AgencyCredentials> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        Ok(AgencyCredentials {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

/// An endpoint for `https://<addr>` verifying the server as `server_name`.
pub fn endpoint(
    addr: &str,
    server_name: &str,
    creds: &AgencyCredentials,
) -> anyhow::Result<Endpoint> {
    super::crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca_pem))
        .identity(Identity::from_pem(&creds.cert_pem, &creds.key_pem))
        .domain_name(server_name);
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(10)))
}

/// Connects now (failing fast on a refused handshake).
pub async fn connect(
    addr: &str,
    server_name: &str,
    creds: &AgencyCredentials,
) -> anyhow::Result<Channel> {
    Ok(endpoint(addr, server_name, creds)?.connect().await?)
}
