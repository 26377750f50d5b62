//! The admin listener: plain HTTP for operators' tools, on 127.0.0.1:9464 by default and
//! never on the mTLS port.
//!
//! - `/metrics`: every metric of `telemetry::metrics`, in Prometheus text format; the
//!   gauges of stored state (outbox depth, overdue exchanges, the audit log) are read just
//!   before each scrape.
//! - `/livez`: 200 while the process can do its work (the writer runs).
//! - `/readyz`: 200 when the gateway should get traffic: the database answers, the writer
//!   can write (after a failed batch, a probe write must succeed), no audit entry has waited
//!   too long for a signed checkpoint, the server certificate in force is valid, and the
//!   gateway is not draining. 503 otherwise, with each check on its own line.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::time::now_ms;
use crate::config::{at_least_one, socket_addr, ConfigError};
use crate::store::Store;
use crate::telemetry::metrics::{metrics, AgencyLabels, OutboxLabels};
use crate::tls::listener::TlsStats;

/// `[admin]`: the admin listener, and how the gateway drains on SIGTERM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve /metrics, /livez and /readyz (plain HTTP: keep it on loopback or a private
    /// network).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_listen_addr", deserialize_with = "socket_addr")]
    pub listen_addr: SocketAddr,
    /// On SIGTERM, /readyz answers 503 (and health NOT_SERVING) this long before the
    /// gateway stops taking new calls, so load balancers move traffic away first.
    #[serde(default = "default_unready_delay_ms")]
    pub unready_delay_ms: u64,
    /// Then in-flight calls get this long to finish, and watch streams end; what is still
    /// running after it is cut off.
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
    /// /readyz fails once an audit entry has waited this long for a signed checkpoint.
    #[serde(default = "default_checkpoint_stale_secs")]
    pub checkpoint_stale_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_unready_delay_ms() -> u64 {
    2_000
}
fn default_drain_timeout_secs() -> u64 {
    30
}
fn default_checkpoint_stale_secs() -> u64 {
    300
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen_addr: default_listen_addr(),
            unready_delay_ms: default_unready_delay_ms(),
            drain_timeout_secs: default_drain_timeout_secs(),
            checkpoint_stale_secs: default_checkpoint_stale_secs(),
        }
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("admin.drain_timeout_secs", self.drain_timeout_secs),
            ("admin.checkpoint_stale_secs", self.checkpoint_stale_secs),
        ])
    }
}

/// One readiness check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What /livez and /readyz (and the health service) answer from.
pub struct Health {
    store: Store,
    tls: Arc<TlsStats>,
    draining: AtomicBool,
    checkpoint_stale: Duration,
}

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    pub fn new(store: Store, tls: Arc<TlsStats>, config: &AdminConfig) -> Health {
        Health {
            store,
            tls,
            draining: AtomicBool::new(false),
            checkpoint_stale: Duration::from_secs(config.checkpoint_stale_secs),
        }
    }

    /// The gateway is shutting down: not ready from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        metrics().ready.set(0);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn live(&self) -> bool {
        self.store.writer_status().alive()
    }

    /// Every readiness check, in order.
    pub async fn checks(&self) -> Vec<Check> {
        let check = |name, result: Result<(), String>| Check {
            name,
            ok: result.is_ok(),
            detail: result.err().unwrap_or_else(|| "ok".into()),
        };
        let database = match tokio::time::timeout(CHECK_TIMEOUT, self.store.reads().ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        let status = self.store.writer_status();
        let writer = if !status.alive() {
            Err("the writer has stopped".to_string())
        } else if status.failing() {
            // Nothing else would tell us the database takes writes again while no caller
            // writes (a load balancer sends none to a node that is not ready).
            match tokio::time::timeout(CHECK_TIMEOUT, self.store.probe_write()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("its last batch failed, and a probe write too: {e}")),
                Err(_) => Err(format!(
                    "its last batch failed, and a probe write got no answer within {CHECK_TIMEOUT:?}"
                )),
            }
        } else {
            Ok(())
        };
        let checkpoint = match status.uncovered_since_ms() {
            Some(since) if now_ms() - since > self.checkpoint_stale.as_millis() as i64 => Err(
                format!(
                    "audit entries have waited {} s for a signed checkpoint (admin.checkpoint_stale_secs = {})",
                    (now_ms() - since) / 1000,
                    self.checkpoint_stale.as_secs()
                ),
            ),
            _ => Ok(()),
        };
        let tls = match self.tls.server_cert_not_after() {
            Some(t) if t * 1000 <= now_ms() => {
                Err("the server certificate in force has expired".to_string())
            }
            Some(_) => Ok(()),
            None => Err("no server certificate is loaded".to_string()),
        };
        let draining = if self.is_draining() {
            Err("shutting down".to_string())
        } else {
            Ok(())
        };
        vec![
            check("database", database),
            check("writer", writer),
            check("audit_checkpoint", checkpoint),
            check("tls", tls),
            check("not_draining", draining),
        ]
    }

    /// Sets the gauges of stored state just before a scrape.
    async fn refresh_metrics(&self) {
        let m = metrics();
        let status = self.store.writer_status();
        let (size, covered) = status.log_size();
        m.audit_entries.set(size as i64);
        m.audit_unsigned_entries
            .set(size.saturating_sub(covered) as i64);
        if status.checkpoint_ms() > 0 {
            m.audit_checkpoint_age
                .set((now_ms() - status.checkpoint_ms()) as f64 / 1000.0);
        }
        let reads = self.store.reads();
        match tokio::time::timeout(CHECK_TIMEOUT, reads.outbox_depth()).await {
            Ok(Ok(depths)) => {
                m.outbox_rows.clear();
                for d in depths {
                    for (state, n) in [
                        ("pending", d.pending),
                        ("leased", d.leased),
                        ("dead", d.dead),
                    ] {
                        m.outbox_rows
                            .get_or_create(&OutboxLabels {
                                agency: Cow::Owned(d.agency.clone()),
                                state: Cow::Borrowed(state),
                            })
                            .set(n);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the outbox depth for /metrics failed")
            }
            Err(_) => tracing::warn!("reading the outbox depth for /metrics took too long"),
        }
        match tokio::time::timeout(CHECK_TIMEOUT, reads.overdue_by_agency()).await {
            Ok(Ok(overdue)) => {
                m.overdue.clear();
                for (agency, n) in overdue {
                    m.overdue
                        .get_or_create(&AgencyLabels {
                            agency: Cow::Owned(agency),
                        })
                        .set(n);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "counting overdue exchanges for /metrics failed")
            }
            Err(_) => tracing::warn!("counting overdue exchanges for /metrics took too long"),
        }
    }
}

type Response = http::Response<Full<Bytes>>;

fn text(status: http::StatusCode, body: String) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn answer(health: &Health, request: http::Request<hyper::body::Incoming>) -> Response {
    use http::StatusCode;
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            health.refresh_metrics().await;
            let ready = health.checks().await.iter().all(|c| c.ok);
            metrics().ready.set(ready as i64);
            let mut response = text(StatusCode::OK, metrics().encode());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/livez" => {
            if health.live() {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the writer has stopped\n".into(),
                )
            }
        }
        "/readyz" => {
            let checks = health.checks().await;
            let ready = checks.iter().all(|c| c.ok);
            metrics().ready.set(ready as i64);
            let body: String = checks
                .iter()
                .map(|c| {
                    format!(
                        "[{}] {}: {}\n",
                        if c.ok { "+" } else { "-" },
                        c.name,
                        c.detail
                    )
                })
                .collect();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /metrics, /livez and /readyz\n".into(),
        ),
    }
}

/// The running admin listener.
pub struct Admin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `config.listen_addr` and serves until `stop` turns true.
    pub async fn start(
        config: &AdminConfig,
        health: Arc<Health>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Admin> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding the admin listener on {}", config.listen_addr))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                };
                let health = health.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let health = health.clone();
                        async move { Ok::<_, Infallible>(answer(&health, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        tracing::info!(%addr, "admin listener (/metrics, /livez, /readyz) on plain HTTP");
        Ok(Admin { addr, task })
    }

    pub async fn stop(self) {
        let _ = self.task.await;
    }
}
