//! Storage with sqlx: SQLite (embedded default, WAL) or PostgreSQL, chosen by URL.
//!
//! Both backends go through sqlx's `Any` driver, so every query is written once; the
//! backends differ only in their migrations and in how writers are serialized.
//!
//! Writes are serialized so that event sequence numbers are assigned in commit order
//! (a reader that has seen event N has seen every event before N): SQLite has a single
//! writer anyway (an in-process queue plus `BEGIN IMMEDIATE`), PostgreSQL takes a
//! transaction-scoped advisory lock.

pub mod referrals;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{watch, Mutex, OwnedMutexGuard};

use crate::config::DatabaseConfig;

pub use referrals::{EventRow, ListFilter, NewEvent, ReferralRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database {0}: {1}")]
    Setup(String, String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Arbitrary constant naming the PostgreSQL advisory lock writers take.
const PG_WRITE_LOCK: i64 = 0x6a69_7372; // "jisr"

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    sqlite_writer: Arc<Mutex<()>>,
    /// The newest committed event sequence number this process knows of.
    events: Arc<watch::Sender<i64>>,
}

impl Store {
    /// Connects, creating the SQLite file and its directory when missing, and migrates.
    pub async fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = config.url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if let Some(dir) = Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Setup(dir.display().to_string(), e.to_string()))?;
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else {
            (Backend::Postgres, config.url.clone())
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durable commits (nothing acknowledged is lost), wait rather than
                        // fail when another process holds the write lock.
                        conn.execute(
                            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| StoreError::Setup(redact(&config.url), e.to_string()))?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrator(backend).run(&pool).await?;
        let latest = latest_event_seq(&pool).await?;
        Ok(Store {
            pool,
            backend,
            sqlite_writer: Arc::new(Mutex::new(())),
            events: Arc::new(watch::channel(latest).0),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction; writers are serialized (see the module docs).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let (tx, guard) = match self.backend {
            Backend::Sqlite => {
                let guard = self.sqlite_writer.clone().lock_owned().await;
                (self.pool.begin_with("BEGIN IMMEDIATE").await?, Some(guard))
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                (tx, None)
            }
        };
        Ok(WriteTx {
            tx,
            _guard: guard,
            events: self.events.clone(),
            last_event: None,
        })
    }

    /// Wakes up when events are committed by this process (other replicas are polled).
    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One write transaction. Dropping it without `commit` rolls back.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
    events: Arc<watch::Sender<i64>>,
    last_event: Option<i64>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if let Some(seq) = self.last_event {
            self.events
                .send_modify(|latest| *latest = (*latest).max(seq));
        }
        Ok(())
    }

    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// The first response recorded for an idempotency key.
#[derive(Debug)]
pub struct IdempotentRecord {
    pub method: String,
    pub request_sha256: Vec<u8>,
    pub response: Vec<u8>,
}

impl WriteTx {
    pub async fn idempotent_record(
        &mut self,
        agency: &str,
        request_id: &str,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let row: Option<AnyRow> = sqlx::query(
            "SELECT method, request_sha256, response FROM idempotency_keys WHERE agency = $1 AND request_id = $2",
        )
        .bind(agency)
        .bind(request_id)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            use sqlx::Row;
            Ok(IdempotentRecord {
                method: r.try_get("method")?,
                request_sha256: r.try_get("request_sha256")?,
                response: r.try_get("response")?,
            })
        })
        .transpose()
    }

    pub async fn record_idempotent(
        &mut self,
        agency: &str,
        request_id: &str,
        method: &str,
        request_sha256: &[u8],
        response: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (agency, request_id, method, request_sha256, response, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(agency)
        .bind(request_id)
        .bind(method)
        .bind(request_sha256.to_vec())
        .bind(response.to_vec())
        .bind(now_ms)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

async fn latest_event_seq<'e>(ex: impl Executor<'e, Database = Any>) -> Result<i64, StoreError> {
    let (seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM referral_events")
        .fetch_one(ex)
        .await?;
    Ok(seq)
}

fn migrator(backend: Backend) -> Migrator {
    let sources: &[(i64, &str, &str)] = match backend {
        Backend::Sqlite => &[(
            1,
            "referrals",
            include_str!("../../migrations/sqlite/0001_referrals.sql"),
        )],
        Backend::Postgres => &[(
            1,
            "referrals",
            include_str!("../../migrations/postgres/0001_referrals.sql"),
        )],
    };
    Migrator {
        migrations: Cow::Owned(
            sources
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(name),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
