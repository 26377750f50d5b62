//! The TLS connector under the rest adapter's HTTP client: TCP, then rustls (ring provider,
//! TLS 1.2 or 1.3, ALPN http/1.1) verifying the agency's server certificate against the
//! configured CA, presenting the gateway's client certificate when the auth kind is mTLS.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{crypto_provider, load_certs, load_key};

/// Connects to `https://` URIs for hyper-util's client.
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    /// Trusts the CAs in `ca`; with `client` (certificate, key) files, presents that
    /// certificate when the server asks for one.
    pub fn new(ca: &Path, client: Option<(&Path, &Path)>) -> anyhow::Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca)? {
            roots.add(cert)?;
        }
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let mut config = match client {
            Some((cert, key)) => {
                builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// A TLS connection to the URI's host and port (443 by default).
    pub async fn connect(&self, uri: &Uri) -> io::Result<TlsConn> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https:// URLs are supported"));
        }
        let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| invalid("the URL's host is not a valid server name"))?;
        let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(443))).await?;
        let _ = tcp.set_nodelay(true);
        let stream = self.tls.connect(name, tcp).await?;
        Ok(TlsConn(TokioIo::new(stream)))
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsConn>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await })
    }
}

/// One TLS connection, as hyper reads and writes it.
pub struct TlsConn(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
