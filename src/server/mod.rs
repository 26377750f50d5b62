//! Assembles the gateway: config → store → TLS listener → the request path's layers →
//! tonic services, and the background tasks (dispatcher, time-frame sweeps). The only
//! module that knows every component; each is built from its own part of the config.

pub mod admin;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::api::application::ApplicationApi;
use crate::api::audit::AuditApi;
use crate::api::directory::DirectoryApi;
use crate::api::document::DocumentApi;
use crate::api::inbox::InboxApi;
use crate::api::information_request::InformationRequestApi;
use crate::api::referral::ReferralApi;
use crate::delivery::dispatcher::Dispatcher;
use crate::domain::exchange::{self, Exchange};
use crate::domain::policy::{Policy, ROLE_AUDITOR};
use crate::layers::officer::OfficerVerifier;
use crate::pb;
use crate::pb::adapter_v1::inbox_service_server::InboxServiceServer;
use crate::pb::v1::application_service_server::ApplicationServiceServer;
use crate::pb::v1::audit_service_server::AuditServiceServer;
use crate::pb::v1::directory_service_server::DirectoryServiceServer;
use crate::pb::v1::document_service_server::DocumentServiceServer;
use crate::pb::v1::information_request_service_server::InformationRequestServiceServer;
use crate::pb::v1::referral_service_server::ReferralServiceServer;
use crate::store::{LogSettings, Store};
use crate::tls::listener::{self, AgencyStream, ListenerSettings, TlsStats};
use crate::tls::{self, Registry};
use config::Config;

/// The mTLS listener as the gateway runs it: our acceptor (client certificates, CRLs,
/// agency identity, connection limits) with its certificates reloaded on change and SIGHUP.
pub struct Listener {
    pub addr: SocketAddr,
    pub tls_stats: Arc<TlsStats>,
    pub incoming: ReceiverStream<Result<AgencyStream, std::io::Error>>,
    /// Changes on each TLS reload that took effect.
    pub reloads: watch::Receiver<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Binds `listen_addr` for the agencies of `registry`.
    pub async fn bind(config: &Config, registry: &Registry) -> anyhow::Result<Listener> {
        let server_tls = tls::reload::ServerTls::load(tls::TlsSource::new(
            &config.tls,
            &config.trust_domain,
            registry.clone(),
        ))
        .context("TLS configuration")?;
        let tcp = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        let addr = tcp.local_addr()?;
        let tls_stats = Arc::new(TlsStats::default());
        tls_stats.set_server_cert_not_after(server_tls.not_after);
        let incoming = listener::incoming(
            tcp,
            ListenerSettings {
                tls: server_tls.subscribe(),
                trust_domain: config.trust_domain.clone(),
                registry: registry.clone(),
                max_connections: config.limits.max_connections,
                max_connections_per_agency: config.limits.max_connections_per_agency,
                handshake_timeout: Duration::from_secs(config.tls.handshake_timeout_secs),
            },
            tls_stats.clone(),
        );
        // Reloads certificates, trust bundle and CRLs on change and on SIGHUP; it stops
        // by itself once the listener is gone.
        let reloads = server_tls.subscribe();
        server_tls.spawn_reloader(
            Duration::from_secs(config.tls.reload_interval_secs),
            tls_stats.clone(),
        );
        Ok(Listener {
            addr,
            tls_stats,
            incoming,
            reloads,
        })
    }
}

/// The HTTP/2 server settings every gateway listener uses.
pub fn transport(config: &Config) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(config.limits.max_concurrent_streams)
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The admin listener's address (/metrics, /livez, /readyz), unless `admin.enabled`
    /// is false.
    pub admin_addr: Option<SocketAddr>,
    pub tls_stats: Arc<TlsStats>,
    pub store: Store,
    pub health: Arc<admin::Health>,
    health_reporter: tonic_health::server::HealthReporter,
    drain: admin::AdminConfig,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    dispatcher: JoinHandle<()>,
    overdue: JoinHandle<()>,
    admin: Option<admin::Admin>,
    admin_stop: watch::Sender<bool>,
}

/// The gateway's services, as the health service reports them.
const SERVICES: [&str; 7] = [
    "jisr.v1.ReferralService",
    "jisr.v1.InformationRequestService",
    "jisr.v1.ApplicationService",
    "jisr.v1.DocumentService",
    "jisr.v1.AuditService",
    "jisr.v1.DirectoryService",
    "jisr.adapter.v1.InboxService",
];

/// The node's audit log settings, its signing key loaded and its verifier key published
/// (security teams verify every node's log with the published keys: this node's is among
/// them). The gateway and the operator commands of the CLI append to the same log.
pub fn log_settings(config: &Config) -> anyhow::Result<LogSettings> {
    let signer = crate::audit::load_signer(&config.audit, &config.audit_origin())
        .context("audit signing key")?;
    crate::audit::publish_verifier_key(&signer, &config.audit.signing_key)
        .context("publishing the audit verifier key")?;
    Ok(LogSettings {
        log_id: config.node_id.clone(),
        signer: Arc::new(signer),
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: Duration::from_millis(config.audit.checkpoint_interval_ms),
    })
}

/// The method of the entry a TLS reload appends to the node's log.
pub const TLS_RELOAD: &str = "jisr.operator/ReloadTls";

/// Appends an entry to the node's log for each TLS reload that took effect (a changed
/// file or SIGHUP: new certificates, trust bundle or CRLs decide who may connect).
fn record_tls_reloads(store: Store, mut reloads: watch::Receiver<Arc<rustls::ServerConfig>>) {
    reloads.mark_unchanged();
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let entry = crate::audit::operator_entry(
                TLS_RELOAD,
                "jisr gateway (a changed TLS file or SIGHUP)",
                &[],
                "TLS reloaded: new server certificate, trust bundle or CRLs in use",
            );
            if let Err(e) = store.append_audit(entry, std::time::Instant::now()).await {
                tracing::error!(error = %e, "recording a TLS reload in the audit log failed");
            }
        }
    });
}

impl Gateway {
    /// Binds the listener and starts serving in the background.
    pub async fn start(config: &Config) -> anyhow::Result<Gateway> {
        let registry = Registry::new(config.agency_ids());
        let directory =
            DirectoryApi::new(&config.directory()).context("directory configuration")?;
        let store = Store::connect(&config.database, log_settings(config)?)
            .await
            .context("opening the database")?;
        let Listener {
            addr,
            tls_stats,
            incoming,
            reloads,
        } = Listener::bind(config, &registry).await?;
        record_tls_reloads(store.clone(), reloads);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for service in SERVICES {
            health_reporter
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let policy = Policy::of(&config.policy());
        let officers = Arc::new(
            OfficerVerifier::new(&config.officers, &config.tls.ca_cert)
                .context("officer token verification")?,
        );
        if let Err(e) = officers.prefetch().await {
            // The keys are fetched again when a token needs them.
            tracing::warn!(error = %e, "officer keys could not be fetched at start");
        }
        let exchange = Exchange::new(
            store.clone(),
            policy.clone(),
            directory.directory().clone(),
            exchange::Settings {
                information_request_days: config
                    .information_requests
                    .default_time_frame_working_days,
                information_request_grace: Duration::from_secs(
                    config.information_requests.expire_after_secs,
                ),
                joint_services: config.joint_services.clone().into(),
            },
        );
        let referrals = ReferralApi::new(
            exchange.clone(),
            store.clone(),
            registry.clone(),
            shutdown_rx.clone(),
        );
        let information_requests =
            InformationRequestApi::new(exchange.clone(), store.clone(), registry);
        let applications = ApplicationApi::new(exchange.clone(), store.clone());
        let documents = DocumentApi::new(store.clone(), &config.documents)
            .with_context(|| format!("document directory {}", config.documents.dir.display()))?;
        let overdue = crate::delivery::sweeper::spawn(
            exchange,
            Duration::from_millis(config.delivery.poll_interval_ms.max(200)),
            shutdown_rx.clone(),
        );

        let limits = &config.limits;
        let max_message = limits.max_message_bytes;
        let router = transport(config)
            // The request path (layers::stack): audit → deadline → limits → officer → authorize.
            .layer(crate::layers::stack(
                store.clone(),
                limits,
                config.agency_ids(),
                officers,
                policy.clone(),
            ))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                ReferralServiceServer::new(referrals).max_decoding_message_size(max_message),
            )
            .add_service(
                InformationRequestServiceServer::new(information_requests)
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                ApplicationServiceServer::new(applications).max_decoding_message_size(max_message),
            )
            .add_service(
                DocumentServiceServer::new(documents)
                    .max_decoding_message_size(DocumentApi::max_message_bytes(&config.documents)),
            )
            .add_service(
                AuditServiceServer::new(AuditApi::new(
                    store.reads(),
                    &config.node_id,
                    config
                        .agencies
                        .iter()
                        .filter(|a| config.has_role(&a.id, ROLE_AUDITOR))
                        .map(|a| a.id.clone()),
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                InboxServiceServer::new(InboxApi::new(
                    store.clone(),
                    config
                        .agencies
                        .iter()
                        .filter(|a| a.adapter.is_inbox())
                        .map(|a| a.id.clone()),
                    Duration::from_millis(config.delivery.visibility_timeout_ms),
                    Duration::from_millis(limits.call_timeout_ms),
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                DirectoryServiceServer::new(directory).max_decoding_message_size(max_message),
            );
        let dispatcher = Dispatcher::new(
            store.clone(),
            config.build_adapters()?,
            config.delivery.clone(),
        )
        .spawn(shutdown_rx.clone());
        let mut stop = shutdown_rx;
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        tracing::info!(%addr, node = %config.node_id, "gateway listening (mTLS, TLS 1.3, h2)");
        let health = Arc::new(admin::Health::new(
            store.clone(),
            tls_stats.clone(),
            &config.admin,
        ));
        crate::telemetry::metrics::metrics().ready.set(1);
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin = match config.admin.enabled {
            true => Some(admin::Admin::start(&config.admin, health.clone(), admin_stop_rx).await?),
            false => None,
        };
        Ok(Gateway {
            addr,
            admin_addr: admin.as_ref().map(|a| a.addr),
            tls_stats,
            store,
            health,
            health_reporter,
            drain: config.admin.clone(),
            shutdown,
            task,
            dispatcher,
            overdue,
            admin,
            admin_stop,
        })
    }

    /// Shuts down as on SIGTERM: not ready first (/readyz 503, health NOT_SERVING) for
    /// `admin.unready_delay_ms`, so load balancers move traffic away, then [`shutdown`].
    ///
    /// [`shutdown`]: Gateway::shutdown
    pub async fn drain(self) -> anyhow::Result<()> {
        self.unready().await;
        tokio::time::sleep(Duration::from_millis(self.drain.unready_delay_ms)).await;
        self.shutdown().await
    }

    async fn unready(&self) {
        self.health.start_draining();
        for service in SERVICES.into_iter().chain([""]) {
            self.health_reporter
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
    }

    /// Stops accepting, lets in-flight calls finish and ends watch streams (within
    /// `admin.drain_timeout_secs`; what runs longer is cut off), closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.unready().await;
        let _ = self.shutdown.send(true);
        let limit = Duration::from_secs(self.drain.drain_timeout_secs);
        let mut task = self.task;
        let result = match tokio::time::timeout(limit, &mut task).await {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::warn!(
                    "calls still in flight after admin.drain_timeout_secs = {}: cut off",
                    limit.as_secs()
                );
                task.abort();
                None
            }
        };
        let _ = self.dispatcher.await;
        let _ = self.overdue.await;
        self.store.close().await;
        let _ = self.admin_stop.send(true);
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        if let Some(result) = result {
            result??;
        }
        Ok(())
    }
}
