//! The accept loop: TCP → TLS handshake (with a deadline) → agency identity → per-agency
//! connection limit → tonic.
//!
//! Connections are capped by a semaphore (mini-redis style) and per agency by a count;
//! the permit and the count's slot live as long as the connection. Each connection is
//! accepted with the TLS configuration in force when it arrives (see `reload`); open
//! connections keep theirs. Refused handshakes never reach tonic: they are logged and
//! counted here (they are not audit entries: no RPC was made).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::identity::{agency_identity, AgencyIdentity};
use super::{Registry, REFUSAL_NOTE};

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
    _agency_slot: AgencySlot,
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

/// Counts of handshakes, open connections per agency and TLS reloads, for operators and
/// tests. Reasons hold no secrets: they name the check that failed and the peer address.
#[derive(Debug, Default)]
pub struct TlsStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    recent_refusals: Mutex<VecDeque<String>>,
    open: Mutex<HashMap<String, usize>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
    /// When the server certificate in force expires (Unix seconds; 0: unknown).
    server_cert_not_after: std::sync::atomic::AtomicI64,
}

impl TlsStats {
    /// When the server certificate in force expires (Unix seconds), if known.
    pub fn server_cert_not_after(&self) -> Option<i64> {
        Some(self.server_cert_not_after.load(Ordering::Acquire)).filter(|t| *t != 0)
    }
    pub fn set_server_cert_not_after(&self, not_after: Option<i64>) {
        self.server_cert_not_after
            .store(not_after.unwrap_or(0), Ordering::Release);
    }
    /// Successful reloads of the TLS files since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }
    /// Reloads that failed (and kept the previous configuration).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Acquire)
    }
    /// Why the last failed reload failed (it names the file).
    pub fn last_reload_error(&self) -> Option<String> {
        lock(&self.last_reload_error).clone()
    }
    /// Connections `agency` holds open now.
    pub fn open_connections(&self, agency: &str) -> usize {
        lock(&self.open).get(agency).copied().unwrap_or(0)
    }
    pub(crate) fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Release);
    }
    pub(crate) fn reload_failed(&self, error: String) {
        *lock(&self.last_reload_error) = Some(error);
        self.reload_failures.fetch_add(1, Ordering::Release);
    }
    /// Takes a slot for one more connection of `agency`, unless it holds `limit` already.
    fn admit(self: &Arc<Self>, agency: &str, limit: usize) -> Option<AgencySlot> {
        let mut open = lock(&self.open);
        let count = open.entry(agency.to_string()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AgencySlot {
            stats: self.clone(),
            agency: agency.to_string(),
        })
    }
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
    /// A refused handshake: `kind` is its class (the `reason` label of
    /// `jisr_tls_handshakes_refused_total`), `reason` the words for the log.
    fn refuse(&self, peer: SocketAddr, (kind, reason): (&'static str, String)) {
        tracing::warn!(%peer, %reason, "TLS handshake refused");
        crate::telemetry::metrics::metrics()
            .tls_refused
            .get_or_create(&crate::telemetry::metrics::ReasonLabels {
                reason: kind.into(),
            })
            .inc();
        let mut recent = self.lock();
        if recent.len() == 64 {
            recent.pop_front();
        }
        recent.push_back(reason);
        // Counted after the reason is recorded, so a reader that sees the count sees the reason.
        self.refused.fetch_add(1, Ordering::Release);
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        lock(&self.recent_refusals)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open connection of an agency; the count drops when the connection is dropped.
#[derive(Debug)]
struct AgencySlot {
    stats: Arc<TlsStats>,
    agency: String,
}

impl Drop for AgencySlot {
    fn drop(&mut self) {
        let mut open = lock(&self.stats.open);
        if let Some(count) = open.get_mut(&self.agency) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.agency);
            }
        }
    }
}

pub struct ListenerSettings {
    /// The TLS configuration in force (replaced by reloads).
    pub tls: watch::Receiver<Arc<ServerConfig>>,
    pub trust_domain: String,
    pub registry: Registry,
    pub max_connections: usize,
    pub max_connections_per_agency: usize,
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
                let (inner, identity) = match handshake(tcp, peer, &settings).await {
                    Ok(verified) => verified,
                    Err(reason) => return stats.refuse(peer, reason),
                };
                let agency = identity.agency_id.clone();
                let Some(slot) = stats.admit(&agency, settings.max_connections_per_agency) else {
                    // Dropping the stream closes the connection.
                    return stats.refuse(
                        peer,
                        ("too_many_connections", format!(
                            "{peer}: too many connections for agency {agency:?} (limits.max_connections_per_agency = {})",
                            settings.max_connections_per_agency
                        )),
                    );
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %agency, "agency connected");
                let info = ConnInfo {
                    remote_addr: peer,
                    identity: Arc::new(identity),
                };
                let _ = tx
                    .send(Ok(AgencyStream {
                        inner,
                        info,
                        _permit: permit,
                        _agency_slot: slot,
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
) -> Result<(TlsStream<TcpStream>, AgencyIdentity), (&'static str, String)> {
    // The configuration in force now; a reload later does not touch this connection.
    let acceptor = TlsAcceptor::from(settings.tls.borrow().clone());
    let (accepted, note) = REFUSAL_NOTE
        .scope(RefCell::new(None), async {
            let accepted =
                tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await;
            (accepted, REFUSAL_NOTE.with(|n| n.borrow_mut().take()))
        })
        .await;
    let tls = accepted
        .map_err(|_| ("timeout", format!("{peer}: handshake timed out")))?
        .map_err(|e| {
            let (kind, words) = describe(&e);
            match note {
                Some(note) => (kind, format!("{peer}: {words} ({note})")),
                None => (kind, format!("{peer}: {words}")),
            }
        })?;
    // The verifier already checked the identity; read it again to attach it.
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| {
            (
                "no_client_certificate",
                format!("{peer}: no client certificate"),
            )
        })?;
    let identity = agency_identity(cert, &settings.trust_domain, |id| {
        settings.registry.contains(id)
    })
    .map_err(|e| ("unknown_identity", format!("{peer}: {e}")))?;
    Ok((tls, identity))
}

/// A handshake error's class and words; our identity errors travel inside rustls as
/// `Other`, which rustls would print with `Debug`.
fn describe(err: &std::io::Error) -> (&'static str, String) {
    use rustls::{CertificateError, Error, OtherError};
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            ("invalid_certificate", format!("invalid peer certificate: {inner}"))
        }
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => {
            ("revoked", "client certificate is revoked (listed in a CRL of tls.crls)".into())
        }
        Some(Error::InvalidCertificate(CertificateError::UnknownRevocationStatus)) => {
            ("revocation_unknown", "client certificate's revocation status is unknown: tls.crls holds no CRL from its issuer, or from the issuer of an intermediate CA in its chain".into())
        }
        Some(Error::InvalidCertificate(
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. },
        )) => ("crl_expired", "the CRL covering the client certificate is past its nextUpdate (tls.expired_crl = \"refuse\")".into()),
        Some(Error::InvalidCertificate(_)) => ("invalid_certificate", err.to_string()),
        Some(Error::NoCertificatesPresented) => ("no_client_certificate", err.to_string()),
        _ => ("tls_error", err.to_string()),
    }
}
