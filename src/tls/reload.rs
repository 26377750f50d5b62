//! Reloading the server's TLS without a restart: the server certificate and key, the
//! trust bundle (`tls.ca_cert`) and the CRLs.
//!
//! Every `tls.reload_interval_secs` the files are read and fingerprinted (SHA-256 of their
//! contents, so a change within one mtime tick is seen); when any differs, or on SIGHUP,
//! a new `ServerConfig` is built from exactly the bytes read and published on a watch
//! channel. The listener takes the current one for each accepted connection; established
//! connections keep the one they were accepted with. A reload that fails keeps the previous
//! configuration and logs the error, naming the file: the gateway never serves without
//! client authentication.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listener::TlsStats;
use super::{build_server_config, TlsError, TlsSource};

/// One file as read: its path and its bytes, or why it could not be read.
#[derive(Debug)]
pub struct FileRead {
    pub path: PathBuf,
    bytes: Result<Vec<u8>, String>,
}

impl FileRead {
    fn read(path: &Path) -> FileRead {
        FileRead {
            path: path.to_owned(),
            bytes: std::fs::read(path).map_err(|e| e.to_string()),
        }
    }

    pub fn bytes(&self) -> Result<&[u8], TlsError> {
        self.bytes
            .as_deref()
            .map_err(|message| self.error(message.clone()))
    }

    pub fn error(&self, message: String) -> TlsError {
        TlsError::File {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn digest(&self) -> Option<[u8; 32]> {
        self.bytes.as_ref().ok().map(|b| Sha256::digest(b).into())
    }
}

/// Every file of a [`TlsSource`], read in one pass.
#[derive(Debug)]
pub struct TlsFiles {
    pub ca_cert: FileRead,
    pub server_cert: FileRead,
    pub server_key: FileRead,
    pub crls: Vec<FileRead>,
}

impl TlsFiles {
    pub fn read(source: &TlsSource) -> TlsFiles {
        TlsFiles {
            ca_cert: FileRead::read(&source.ca_cert),
            server_cert: FileRead::read(&source.server_cert),
            server_key: FileRead::read(&source.server_key),
            crls: source.crls.iter().map(|p| FileRead::read(p)).collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &FileRead> {
        [&self.ca_cert, &self.server_cert, &self.server_key]
            .into_iter()
            .chain(&self.crls)
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.all().map(|f| (f.path.clone(), f.digest())).collect())
    }
}

/// Each file's path and the SHA-256 of its contents (None: unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint(Vec<(PathBuf, Option<[u8; 32]>)>);

impl Fingerprint {
    /// The files whose contents differ from `before`.
    fn changed_since(&self, before: &Fingerprint) -> Vec<String> {
        self.0
            .iter()
            .filter(|entry| !before.0.contains(entry))
            .map(|(path, _)| path.display().to_string())
            .collect()
    }
}

/// The server's TLS configuration as loaded at start, ready to be watched.
pub struct ServerTls {
    source: TlsSource,
    current: watch::Sender<Arc<ServerConfig>>,
    seen: Fingerprint,
    /// When the server certificate in force expires (Unix seconds).
    pub not_after: Option<i64>,
}

/// The end of the server certificate's validity (Unix seconds), if it parses.
fn server_cert_not_after(files: &TlsFiles) -> Option<i64> {
    let pem = files.server_cert.bytes().ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl ServerTls {
    /// Reads and builds the configuration; an error here stops the start.
    pub fn load(source: TlsSource) -> Result<ServerTls, TlsError> {
        let files = TlsFiles::read(&source);
        let config = build_server_config(&source, &files)?;
        if source.crls.is_empty() {
            tracing::warn!(
                "no CRLs configured (tls.crls): revoked agency certificates are not refused"
            );
        }
        Ok(ServerTls {
            not_after: server_cert_not_after(&files),
            seen: files.fingerprint(),
            current: watch::Sender::new(config),
            source,
        })
    }

    /// The configuration in force, for the listener: it takes the latest for every
    /// connection it accepts.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.current.subscribe()
    }

    /// Spawns the reloader: it checks the files every `interval` (never when zero) and on
    /// SIGHUP, and stops when no listener is left. Reloads and failed reloads are counted
    /// on `stats`.
    pub fn spawn_reloader(self, interval: Duration, stats: Arc<TlsStats>) -> JoinHandle<()> {
        // Registered now, not in the task, so a SIGHUP right after start is not fatal.
        let hangups = Hangups::register();
        tokio::spawn(self.reload_loop(interval, hangups, stats))
    }

    async fn reload_loop(mut self, interval: Duration, mut hangups: Hangups, stats: Arc<TlsStats>) {
        let mut ticks = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let forced = tokio::select! {
                _ = async {
                    match ticks.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => false,
                () = hangups.recv() => {
                    tracing::info!("SIGHUP: reloading the TLS certificates, trust bundle and CRLs");
                    true
                }
                () = self.current.closed() => return,
            };
            self.check(forced, &stats).await;
        }
    }

    /// Reads the files; when they changed (or `forced`), builds and publishes a new
    /// configuration, or keeps the old one and says why.
    async fn check(&mut self, forced: bool, stats: &TlsStats) {
        let source = self.source.clone();
        let seen = self.seen.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let files = TlsFiles::read(&source);
            let fingerprint = files.fingerprint();
            if !forced && fingerprint == seen {
                return None;
            }
            let built = build_server_config(&source, &files)
                .map(|config| (config, server_cert_not_after(&files)));
            Some((fingerprint, built))
        })
        .await;
        let (fingerprint, built) = match outcome {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "TLS reload task failed; keeping the previous configuration");
                return;
            }
        };
        let changed = fingerprint.changed_since(&self.seen);
        // A broken state is reported once, not on every tick; it is retried when a file
        // changes again or on SIGHUP.
        self.seen = fingerprint;
        match built {
            Ok((config, not_after)) => {
                self.current.send_replace(config);
                stats.set_server_cert_not_after(not_after);
                stats.reloaded();
                tracing::info!(
                    changed = ?changed,
                    "TLS reloaded: new connections use the new server certificate, trust bundle and CRLs; open connections keep theirs"
                );
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    changed = ?changed,
                    "TLS reload failed: keeping the previous server certificate, trust bundle and CRLs"
                );
                stats.reload_failed(e.to_string());
            }
        }
    }
}

/// SIGHUP, where there is such a thing.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn register() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still reloaded when they change");
                    None
                }
            };
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// The next SIGHUP (never, without one).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use time::OffsetDateTime;

    use super::*;
    use crate::tls::pki::{CertAuthority, LeafSpec};
    use crate::tls::ExpiredCrl;
    use crate::tls::Registry;

    fn crl(ca: &CertAuthority) -> String {
        let now = OffsetDateTime::now_utc();
        ca.crl(
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        )
        .unwrap()
    }

    fn files(dir: &Path) -> (CertAuthority, TlsSource) {
        let ca = CertAuthority::generate("test CA").unwrap();
        let server = ca.issue(&LeafSpec::server(&["localhost".into()])).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.join("crl.pem"), crl(&ca)).unwrap();
        let source = TlsSource {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            crls: vec![dir.join("crl.pem")],
            expired_crl: ExpiredCrl::Refuse,
            trust_domain: "jisr.gov.ae".into(),
            registry: Registry(Arc::new(HashSet::new())),
        };
        (ca, source)
    }

    #[tokio::test]
    async fn a_change_reloads_and_a_broken_file_keeps_the_configuration_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, source) = files(dir.path());
        let mut tls = ServerTls::load(source).unwrap();
        let current = tls.subscribe();
        let stats = TlsStats::default();
        let first = current.borrow().clone();

        tls.check(false, &stats).await;
        assert_eq!(stats.reloads(), 0, "nothing changed");
        tls.check(true, &stats).await;
        assert_eq!(
            stats.reloads(),
            1,
            "SIGHUP reloads even when nothing changed"
        );
        assert!(!Arc::ptr_eq(&first, &current.borrow()));

        let crl_path = dir.path().join("crl.pem");
        std::fs::write(&crl_path, "not a CRL").unwrap();
        let before = current.borrow().clone();
        tls.check(false, &stats).await;
        assert_eq!((stats.reloads(), stats.reload_failures()), (1, 1));
        let error = stats.last_reload_error().unwrap();
        assert!(error.contains(&crl_path.display().to_string()), "{error}");
        assert!(Arc::ptr_eq(&before, &current.borrow()), "the old one stays");
        tls.check(false, &stats).await;
        assert_eq!(
            stats.reload_failures(),
            1,
            "a broken state is reported once"
        );

        std::fs::write(&crl_path, crl(&ca)).unwrap();
        tls.check(false, &stats).await;
        assert_eq!((stats.reloads(), stats.reload_failures()), (2, 1));

        // A key that does not match the certificate names both files.
        let other = ca.issue(&LeafSpec::server(&["localhost".into()])).unwrap();
        std::fs::write(dir.path().join("server.key"), &other.key_pem).unwrap();
        tls.check(false, &stats).await;
        let error = stats.last_reload_error().unwrap();
        assert!(
            error.contains("server.key") && error.contains("server.pem"),
            "{error}"
        );
        assert_eq!(stats.reloads(), 2);
    }

    #[test]
    fn the_fingerprint_names_the_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_, source) = files(dir.path());
        let before = TlsFiles::read(&source).fingerprint();
        std::fs::write(dir.path().join("ca.pem"), "changed").unwrap();
        let after = TlsFiles::read(&source).fingerprint();
        let changed = after.changed_since(&before);
        assert_eq!(changed, [dir.path().join("ca.pem").display().to_string()]);
    }
}
