//! The accept loop: TCP → TLS handshake (with a deadline) → agency identity → tonic.
//!
//! Connections are capped by a semaphore (mini-redis style); the permit lives as long
//! as the connection. Refused handshakes never reach tonic: they are logged and counted
//! here (they are not audit entries: no RPC was made).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::identity::{agency_identity, AgencyIdentity};
use super::Registry;

/// What every request on a connection knows about its peer (a request extension).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: SocketAddr,
    pub identity: Arc<AgencyIdentity>,
}

/// An accepted, verified agency connection.
pub struct AgencyStream {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

impl Connected for AgencyStream {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgencyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgencyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts of handshakes, for operators and tests. Reasons hold no secrets: they name
/// the check that failed and the peer address.
#[derive(Debug, Default)]
pub struct TlsStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    recent_refusals: Mutex<VecDeque<String>>,
}

impl TlsStats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// The reasons of the last refused handshakes, oldest first.
    pub fn recent_refusals(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
    fn refuse(&self, peer: SocketAddr, reason: String) {
        tracing::warn!(%peer, %reason, "TLS handshake refused");
        let mut recent = self.lock();
        if recent.len() == 64 {
            recent.pop_front();
        }
        recent.push_back(reason);
        // Counted after the reason is recorded, so a reader that sees the count sees the reason.
        self.refused.fetch_add(1, Ordering::Release);
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.recent_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

pub struct ListenerSettings {
    pub acceptor: TlsAcceptor,
    pub trust_domain: String,
    pub registry: Registry,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Accepts connections until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    settings: ListenerSettings,
    stats: Arc<TlsStats>,
) -> ReceiverStream<Result<AgencyStream, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let settings = Arc::new(settings);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (tx, settings, stats) = (tx.clone(), settings.clone(), stats.clone());
            tokio::spawn(async move {
                match handshake(tcp, peer, &settings).await {
                    Ok((inner, identity)) => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, agency = %identity.agency_id, "agency connected");
                        let info = ConnInfo {
                            remote_addr: peer,
                            identity: Arc::new(identity),
                        };
                        let _ = tx
                            .send(Ok(AgencyStream {
                                inner,
                                info,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Err(reason) => stats.refuse(peer, reason),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
) -> Result<(TlsStream<TcpStream>, AgencyIdentity), String> {
    let tls = tokio::time::timeout(settings.handshake_timeout, settings.acceptor.accept(tcp))
        .await
        .map_err(|_| format!("{peer}: handshake timed out"))?
        .map_err(|e| format!("{peer}: {}", describe(&e)))?;
    // The verifier already checked the identity; read it again to attach it.
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{peer}: no client certificate"))?;
    let identity = agency_identity(cert, &settings.trust_domain, |id| {
        settings.registry.contains(id)
    })
    .map_err(|e| format!("{peer}: {e}"))?;
    Ok((tls, identity))
}

/// A handshake error in words; our identity errors travel inside rustls as `Other`,
/// which rustls would print with `Debug`.
fn describe(err: &std::io::Error) -> String {
    use rustls::{CertificateError, Error, OtherError};
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            format!("invalid peer certificate: {inner}")
        }
        _ => err.to_string(),
    }
}
