//! Storage with sqlx: SQLite (embedded default, WAL) or PostgreSQL, chosen by URL.
//!
//! Both backends go through sqlx's `Any` driver, so every query is written once; the
//! backends differ only in their migrations and in how writers are serialized.
//!
//! Every write goes through one writer task (`writer`: group commit), so event sequence
//! numbers and audit leaf indexes are assigned in commit order (a reader that has seen
//! event N has seen every event before N). Across PostgreSQL replicas, batches are
//! serialized by a transaction-scoped advisory lock.

pub mod applications;
pub mod audit;
pub mod blobs;
pub mod documents;
mod exchange;
pub mod information_requests;
pub mod operations;
pub mod outbox;
pub mod referrals;
mod sql;
pub mod writer;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

use sql::{q, Conn, DbRow, Param, Query, Row, Table};
use tokio::sync::watch;

use crate::audit::context::AuditContext;
use crate::audit::entry::AuditEntry;
use serde::Deserialize;

use crate::config::ConfigError;

pub use crate::domain::records::IdempotentRecord;
pub use referrals::{EventRow, ListFilter, NewEvent, ReferralRow};
pub use writer::{BoxFuture, LogSettings, Receipt, WriteTx, WriterStatus};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created when missing) or `postgres://user@host/db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                url,
                "a URL starting with sqlite: or postgres://",
            ));
        }
        crate::config::at_least_one(&[(
            "database.max_connections",
            u64::from(self.max_connections),
        )])
    }
}

fn default_max_connections() -> u32 {
    8
}

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

    #[error("the write was not committed: {0}")]
    Commit(String),
    /// Not committed, for a cause worth retrying soon (see `is_transient`).
    #[error("the write was not committed (storage unavailable): {0}")]
    Unavailable(String),
    #[error("the gateway's writer has stopped")]
    WriterGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Arbitrary constant naming the PostgreSQL advisory lock writers take.
const PG_WRITE_LOCK: i64 = 0x6a69_7372; // "jisr"

/// A PostgreSQL transaction holding the writers' lock until it ends.
async fn begin_locked(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: writer::WriterHandle,
    log_id: String,
    /// The newest committed event sequence number this process knows of.
    events: Arc<watch::Sender<i64>>,
    /// Counts commits that enqueued or rescheduled a delivery.
    outbox: Arc<watch::Sender<u64>>,
    /// SQLite: read-only connections of its own.
    readers: Option<Arc<sql::Readers>>,
}

/// The database for reading only: the pool, and on SQLite read connections of its own
/// (the audit CLI, AuditService).
#[derive(Clone)]
pub struct Reads {
    pool: AnyPool,
    readers: Option<Arc<sql::Readers>>,
}

impl Reads {
    /// Where a query of many rows runs: on SQLite a read connection on a blocking thread
    /// (no per-row hand-off to a driver thread), else the pool.
    pub(crate) fn scan(&self) -> sql::ReadConn<'_> {
        read_conn(&self.pool, &self.readers, sql::ReadConn::Blocking)
    }

    /// Where a point read runs: on SQLite, a read connection on the calling thread.
    pub(crate) fn point(&self) -> sql::ReadConn<'_> {
        read_conn(&self.pool, &self.readers, sql::ReadConn::Inline)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn read_conn<'a>(
    pool: &'a AnyPool,
    readers: &'a Option<Arc<sql::Readers>>,
    lite: fn(&'a Arc<sql::Readers>) -> sql::ReadConn<'a>,
) -> sql::ReadConn<'a> {
    match readers {
        Some(readers) => lite(readers),
        None => sql::ReadConn::Pool(pool),
    }
}

impl Store {
    /// Connects, creating the SQLite file and its directory when missing, migrates, and
    /// starts the writer of this node's audit log.
    pub async fn connect(config: &DatabaseConfig, log: LogSettings) -> Result<Store, StoreError> {
        let (pool, backend) = connect_pool(config).await?;
        let events = Arc::new(watch::channel(latest_event_seq(&pool).await?).0);
        let log_id = log.log_id.clone();
        let outbox = Arc::new(watch::channel(0u64).0);
        let sqlite_file = (backend == Backend::Sqlite).then(|| sqlite_path(&config.url));
        let readers = sqlite_file.clone().map(sql::Readers::new).map(Arc::new);
        let writer = writer::start(
            pool.clone(),
            backend,
            sqlite_file,
            (backend == Backend::Postgres).then(|| config.url.clone()),
            log,
            events.clone(),
            outbox.clone(),
        )
        .await?;
        Ok(Store {
            pool,
            backend,
            writer,
            log_id,
            events,
            outbox,
            readers,
        })
    }

    /// Opens the database for reading only (the audit CLI): migrations run, no writer.
    pub async fn open_pool(config: &DatabaseConfig) -> Result<(AnyPool, Backend), StoreError> {
        connect_pool(config).await
    }

    /// Opens the database for reading only, with SQLite's own read connections.
    pub async fn open_reads(config: &DatabaseConfig) -> Result<Reads, StoreError> {
        let (pool, backend) = connect_pool(config).await?;
        let readers = (backend == Backend::Sqlite)
            .then(|| Arc::new(sql::Readers::new(sqlite_path(&config.url))));
        Ok(Reads { pool, readers })
    }

    /// This store's connections for reading only.
    pub fn reads(&self) -> Reads {
        Reads {
            pool: self.pool.clone(),
            readers: self.readers.clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction on the pool that no writer's batch runs beside, for a change made
    /// behind the exchange service's back (a test moving a deadline, say): a batch sees all
    /// of it or none, so a read-modify-write in it loses no batch's update. SQLite takes the
    /// database's write lock (`BEGIN IMMEDIATE`); PostgreSQL the writers' advisory lock.
    pub async fn begin_exclusive(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => begin_locked(&self.pool).await,
        }
    }

    /// Where lists and scans run: on SQLite, a read connection on a blocking thread.
    pub(crate) fn scans(&self) -> sql::ReadConn<'_> {
        read_conn(&self.pool, &self.readers, sql::ReadConn::Blocking)
    }

    /// Where point reads (one row by id) run: on SQLite, on the calling thread.
    pub(crate) fn point_reads(&self) -> sql::ReadConn<'_> {
        read_conn(&self.pool, &self.readers, sql::ReadConn::Inline)
    }

    /// Runs `job` in the writer's next batch, with the entry of the call `audit` (if any)
    /// as its draft; returns once the batch has committed (durably), with the entry's
    /// receipt if the job sealed it (`WriteTx::audit_receipt`). The call's context is told
    /// at commit, so the call counts as recorded even if its handler is gone by then.
    pub async fn write<T, E, F>(
        &self,
        audit: Option<&Arc<AuditContext>>,
        job: F,
    ) -> Result<(T, Option<Receipt>), E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        self.writer.write(audit.cloned(), None, job).await
    }

    /// Appends an audit entry on its own; returns once it is durable.
    pub async fn append_audit(
        &self,
        entry: AuditEntry,
        started: std::time::Instant,
    ) -> Result<Receipt, StoreError> {
        self.writer.append(entry, started).await
    }

    /// What the writer last did: alive, failing, the log's size and checkpoints.
    pub fn writer_status(&self) -> &WriterStatus {
        &self.writer.status
    }

    /// This node's audit log id.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// Changes when a commit enqueued or rescheduled a delivery (the dispatcher and
    /// long-polling inboxes wait on it).
    pub fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// Wakes up when events are committed by this process (other replicas are polled).
    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    /// Covers the audit log with a final checkpoint, stops the writer, closes the pool.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// The file of a `sqlite:` URL (without its query string).
fn sqlite_path(url: &str) -> std::path::PathBuf {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let path = rest.trim_start_matches("//");
    path.split('?').next().unwrap_or_default().into()
}

/// The pool, with the SQLite file created when missing, WAL on, and migrations applied.
async fn connect_pool(config: &DatabaseConfig) -> Result<(AnyPool, Backend), StoreError> {
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
        q("PRAGMA journal_mode = WAL").execute(&pool).await?;
    }
    migrator(backend).run(&pool).await?;
    Ok((pool, backend))
}

/// An idempotent write's first answer: inserted with the rest of its batch's when the
/// job has just found its key absent (in the batch's deferred rows too).
static IDEMPOTENCY_KEYS: Table = Table::new(
    "idempotency_keys",
    "agency, request_id, method, request_sha256, response, created_at",
    None,
    1,
);

/// The text of [`prefetch_keys`]'s statement for 1 to 64 keys, written once.
static PREFETCH_SQL: [std::sync::OnceLock<String>; sql::MOST_ROWS] =
    [const { std::sync::OnceLock::new() }; sql::MOST_ROWS];

/// The idempotency records of `keys` (absent ones as `None`), looked up together before a
/// batch's jobs run: on PostgreSQL a round trip for up to 64 keys instead of one a job.
/// The writer holds the database's write lock (SQLite) or the writers' lock (PostgreSQL),
/// so nothing else records a key before the batch commits; the batch's own records are
/// seen through `WriteTx::record_idempotent`, which drops the key from what was found.
pub(super) async fn prefetch_keys(
    conn: &mut sql::WriterConn,
    keys: &[&(String, String)],
) -> Result<HashMap<(String, String), Option<IdempotentRecord>>, StoreError> {
    let mut found: HashMap<(String, String), Option<IdempotentRecord>> =
        keys.iter().map(|k| ((*k).clone(), None)).collect();
    let mut at = 0;
    while at < keys.len() {
        let n = sql::rows_per_statement(keys.len() - at, conn.backend());
        for r in prefetch_query(&keys[at..at + n])
            .fetch_all(&mut *conn)
            .await?
        {
            let key = (r.col("agency")?, r.col("request_id")?);
            found.insert(key, Some(idempotent_record(&r)?));
        }
        at += n;
    }
    Ok(found)
}

/// The look-up of `keys` (1 to 64 of them).
fn prefetch_query(keys: &[&(String, String)]) -> Query {
    // Point look-ups on the key, one per key, so that every plan walks the key's index
    // whatever the planner knows of the table (a row-value IN list is a sequential scan
    // on a PostgreSQL table without statistics).
    let text = PREFETCH_SQL[keys.len() - 1].get_or_init(|| {
        let lookups: Vec<String> = (0..keys.len())
            .map(|i| {
                format!(
                    "SELECT agency, request_id, method, request_sha256, response \
                     FROM idempotency_keys WHERE agency = ${} AND request_id = ${}",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect();
        lookups.join(" UNION ALL ")
    });
    let params = keys
        .iter()
        .flat_map(|(agency, request_id)| [Param::from(agency), Param::from(request_id)])
        .collect();
    Query::with_params(text.as_str(), params).beside_deferred()
}

fn idempotent_record(r: &DbRow) -> Result<IdempotentRecord, StoreError> {
    Ok(IdempotentRecord {
        method: r.col("method")?,
        request_sha256: r.col("request_sha256")?,
        response: r.col("response")?,
    })
}

impl WriteTx {
    pub async fn idempotent_record(
        &mut self,
        agency: &str,
        request_id: &str,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        // Only a key deferred in this batch needs the batch's rows in first; one the
        // writer looked up before the batch ran (and none of its jobs recorded since) is
        // answered from that.
        let deferred = self
            .conn()
            .deferred(&IDEMPOTENCY_KEYS)
            .any(|row| row[0].is_text(agency) && row[1].is_text(request_id));
        let key = (agency.to_string(), request_id.to_string());
        let record = match self.prefetched.remove(&key) {
            Some(found) if !deferred => found,
            _ => {
                let lookup = q(
                    "SELECT method, request_sha256, response FROM idempotency_keys WHERE agency = $1 AND request_id = $2",
                )
                .bind(agency)
                .bind(request_id);
                let lookup = if deferred {
                    lookup
                } else {
                    lookup.beside_deferred()
                };
                let row = lookup.fetch_optional(self.conn()).await?;
                row.map(|r| idempotent_record(&r)).transpose()?
            }
        };
        if record.is_none() {
            self.absent_key = Some(key);
        }
        Ok(record)
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
        let row = vec![
            Param::from(agency),
            Param::from(request_id),
            Param::from(method),
            Param::from(request_sha256.to_vec()),
            Param::from(response.to_vec()),
            Param::from(now_ms),
        ];
        // Deferred only right after this job found the key absent, so the insert cannot
        // fail later; otherwise now, so that a duplicate fails this job alone.
        let checked = self.absent_key.take();
        if !self.prefetched.is_empty() {
            self.prefetched
                .remove(&(agency.to_string(), request_id.to_string()));
        }
        if checked.is_some_and(|(a, r)| a == agency && r == request_id) {
            self.conn().insert(&IDEMPOTENCY_KEYS, row).await?;
        } else {
            Query::insert(&IDEMPOTENCY_KEYS, 1, row)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }
}

async fn latest_event_seq(ex: impl Conn) -> Result<i64, StoreError> {
    q("SELECT COALESCE(MAX(seq), 0) AS seq FROM referral_events")
        .fetch_one(ex)
        .await?
        .col("seq")
}

fn migrator(backend: Backend) -> Migrator {
    let sources: &[(i64, &str, &str)] = match backend {
        Backend::Sqlite => &[
            (
                1,
                "referrals",
                include_str!("../../migrations/sqlite/0001_referrals.sql"),
            ),
            (
                2,
                "audit",
                include_str!("../../migrations/sqlite/0002_audit.sql"),
            ),
            (
                3,
                "outbox",
                include_str!("../../migrations/sqlite/0003_outbox.sql"),
            ),
            (
                4,
                "overdue",
                include_str!("../../migrations/sqlite/0004_overdue.sql"),
            ),
            (
                5,
                "information_requests_documents",
                include_str!("../../migrations/sqlite/0005_information_requests_documents.sql"),
            ),
            (
                6,
                "partial_event_index",
                include_str!("../../migrations/sqlite/0006_partial_event_index.sql"),
            ),
            (
                7,
                "audit_targets",
                include_str!("../../migrations/sqlite/0007_audit_targets.sql"),
            ),
            (
                8,
                "checkpoint_frontier",
                include_str!("../../migrations/sqlite/0008_checkpoint_frontier.sql"),
            ),
            (
                9,
                "overdue_index_live_only",
                include_str!("../../migrations/sqlite/0009_overdue_index_live_only.sql"),
            ),
            (
                10,
                "audit_nodes",
                include_str!("../../migrations/sqlite/0010_audit_nodes.sql"),
            ),
            (
                11,
                "operations",
                include_str!("../../migrations/sqlite/0011_operations.sql"),
            ),
            (
                12,
                "applications",
                include_str!("../../migrations/sqlite/0012_applications.sql"),
            ),
        ],
        Backend::Postgres => &[
            (
                1,
                "referrals",
                include_str!("../../migrations/postgres/0001_referrals.sql"),
            ),
            (
                2,
                "audit",
                include_str!("../../migrations/postgres/0002_audit.sql"),
            ),
            (
                3,
                "outbox",
                include_str!("../../migrations/postgres/0003_outbox.sql"),
            ),
            (
                4,
                "overdue",
                include_str!("../../migrations/postgres/0004_overdue.sql"),
            ),
            (
                5,
                "information_requests_documents",
                include_str!("../../migrations/postgres/0005_information_requests_documents.sql"),
            ),
            (
                6,
                "partial_event_index",
                include_str!("../../migrations/postgres/0006_partial_event_index.sql"),
            ),
            (
                7,
                "audit_targets",
                include_str!("../../migrations/postgres/0007_audit_targets.sql"),
            ),
            (
                8,
                "checkpoint_frontier",
                include_str!("../../migrations/postgres/0008_checkpoint_frontier.sql"),
            ),
            (
                9,
                "overdue_index_live_only",
                include_str!("../../migrations/postgres/0009_overdue_index_live_only.sql"),
            ),
            (
                10,
                "audit_nodes",
                include_str!("../../migrations/postgres/0010_audit_nodes.sql"),
            ),
            (
                11,
                "operations",
                include_str!("../../migrations/postgres/0011_operations.sql"),
            ),
            (
                12,
                "applications",
                include_str!("../../migrations/postgres/0012_applications.sql"),
            ),
        ],
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

pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// Numbered placeholders ($1, $2, ...) for queries built at run time; both SQLite and
/// PostgreSQL accept them.
#[derive(Default)]
pub(crate) struct SqlBuilder {
    args: Vec<Arg>,
}

impl SqlBuilder {
    pub(crate) fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// `select` (`SELECT … FROM table`) over the rows `agency` is party to, as sender
    /// (`sent`), recipient (`received`) or either, with `filters` (` AND …`) and `order`
    /// (` ORDER BY … LIMIT …`). Either means two index walks (by sender, by recipient)
    /// merged, each stopping at the limit, instead of one `OR` that reads and sorts every
    /// match: the first page costs the same at a thousand rows and at a million.
    pub(crate) fn party_rows(
        &mut self,
        select: &str,
        agency: &str,
        (sent, received): (bool, bool),
        filters: &str,
        order: &str,
    ) -> String {
        let a = self.bind(Arg::Text(agency.to_string()));
        match (sent, received) {
            (true, false) => format!("{select} WHERE from_agency = {a}{filters}{order}"),
            (false, true) => format!("{select} WHERE to_agency = {a}{filters}{order}"),
            _ => format!(
                "SELECT * FROM ({select} WHERE from_agency = {a}{filters}{order}) AS sent \
                 UNION ALL SELECT * FROM ({select} WHERE to_agency = {a} AND from_agency <> {a}{filters}{order}) AS received{order}"
            ),
        }
    }

    /// ` AND column IN (...)`, or nothing when `values` is empty.
    pub(crate) fn and_in(&mut self, column: &str, values: &[String]) -> String {
        if values.is_empty() {
            return String::new();
        }
        let list: Vec<_> = values
            .iter()
            .map(|v| self.bind(Arg::Text(v.clone())))
            .collect();
        format!(" AND {column} IN ({})", list.join(", "))
    }

    /// A page, newest first, of `select`'s rows `agency` is party to (see `party_rows`)
    /// that match `filters`: keyset pagination by id, below `before_id` if given.
    pub(crate) fn newest_page(
        mut self,
        select: &str,
        agency: &str,
        sides: (bool, bool),
        mut filters: String,
        (before_id, limit): (Option<&String>, i64),
    ) -> sql::Query {
        if let Some(before) = before_id {
            filters += &format!(" AND id < {}", self.bind(Arg::Text(before.clone())));
        }
        let order = format!(" ORDER BY id DESC LIMIT {}", self.bind(Arg::Int(limit)));
        let sql = self.party_rows(select, agency, sides, &filters, &order);
        self.query(&sql)
    }

    pub(crate) fn query(self, sql: &str) -> sql::Query {
        sql::Query::with_params(
            sql.to_string(),
            self.args
                .into_iter()
                .map(|a| match a {
                    Arg::Text(s) => sql::Param::Text(s),
                    Arg::Int(i) => sql::Param::Int(i),
                })
                .collect(),
        )
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

impl StoreError {
    /// Whether the failure is worth retrying soon: the database is overloaded,
    /// unreachable, restarting or out of disk, or the batch failed for such a cause. Bad
    /// data, constraint violations and corruption are not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => transient_db_error(e),
            StoreError::Unavailable(_) | StoreError::WriterGone => true,
            _ => false,
        }
    }

    /// What a caller of a failed batch hears: its cause, and whether retrying may help.
    pub(crate) fn commit_failed(cause: &StoreError) -> StoreError {
        if cause.is_transient() {
            StoreError::Unavailable(cause.to_string())
        } else {
            StoreError::Commit(cause.to_string())
        }
    }
}

/// sqlx's errors worth retrying: the pool or the connection is gone or busy, or the
/// database says it is shutting down, starting, out of resources, or lost the connection
/// (PostgreSQL SQLSTATE classes 08, 53, 57P0x; SQLite BUSY, LOCKED, IOERR, FULL, CANTOPEN).
fn transient_db_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => match d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => transient_sqlstate(pg.code()),
            // SQLite's extended code; its low byte is the primary one.
            None => d
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14)),
        },
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs worth retrying: connection exceptions, insufficient resources
/// (disk full, too many connections), operator intervention (shutdown, starting up), and a
/// deadlock.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0") || code == "40P01"
}

impl From<StoreError> for crate::common::ApiError {
    /// The caller hears only that storage failed (UNAVAILABLE with a retry hint when that
    /// is transient); the cause is logged where the error is mapped.
    fn from(e: StoreError) -> Self {
        crate::common::ApiError::Storage {
            transient: e.is_transient(),
            cause: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_failures_worth_retrying_are_transient_and_bad_data_is_not() {
        use super::StoreError;
        use rusqlite::ffi;
        let lite = |code| {
            super::sql::lite_error(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
        };
        assert!(lite(ffi::SQLITE_FULL).is_transient(), "disk full");
        assert!(lite(ffi::SQLITE_IOERR_WRITE).is_transient(), "write error");
        assert!(lite(ffi::SQLITE_BUSY).is_transient());
        assert!(!lite(ffi::SQLITE_CONSTRAINT_UNIQUE).is_transient());
        assert!(StoreError::Db(sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::Db(sqlx::Error::Io(io)).is_transient());
        for pg in ["08006", "57P01", "57P03", "53100", "40P01"] {
            assert!(super::transient_sqlstate(pg), "{pg}");
        }
        for pg in ["23505", "22001", "42P01"] {
            assert!(!super::transient_sqlstate(pg), "{pg}");
        }
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        // A batch that failed for a transient cause tells its callers so.
        let failed = StoreError::commit_failed(&lite(ffi::SQLITE_FULL));
        assert!(failed.is_transient(), "{failed}");
        let status = tonic::Status::from(crate::common::ApiError::from(failed));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        use tonic_types::StatusExt;
        assert!(status.get_details_retry_info().is_some(), "a retry hint");
        let refused = StoreError::commit_failed(&lite(ffi::SQLITE_CONSTRAINT_UNIQUE));
        let status = tonic::Status::from(crate::common::ApiError::from(refused));
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    /// The audit_targets migration indexes entries written before it existed.
    #[test]
    fn the_audit_targets_migration_indexes_existing_entries() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let migrator = super::migrator(super::Backend::Sqlite);
        let (before, after): (Vec<_>, Vec<_>) = migrator
            .iter()
            .partition(|m| m.description != "audit_targets");
        for m in before.iter().filter(|m| m.version < 7) {
            conn.execute_batch(&m.sql).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO audit_entries VALUES \
             ('n', 0, 5, 'a', 'm', 'allow', ' A B ', x'00', x'00'), \
             ('n', 1, 6, 'a', 'm', 'allow', '', x'00', x'00'), \
             ('n', 2, 7, 'a', 'm', 'allow', ' C ', x'00', x'00'), \
             ('o', 0, 8, 'a', 'm', 'allow', ' A ', x'00', x'00')",
        )
        .unwrap();
        conn.execute_batch(&after[0].sql).unwrap();
        let mut stmt = conn
            .prepare("SELECT log_id, target_id, leaf_index FROM audit_targets ORDER BY 1, 2, 3")
            .unwrap();
        let rows: Vec<(String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |l: &str, t: &str, i| (l.to_string(), t.to_string(), i);
        assert_eq!(
            rows,
            vec![
                row("n", "A", 0),
                row("n", "B", 0),
                row("n", "C", 2),
                row("o", "A", 0)
            ]
        );
    }

    /// The hot list, watch and audit queries walk an index to their first page on SQLite:
    /// no full scan of a table, and a sort only of what the index walks bounded (the two
    /// directions' pages, a page of history). `cargo test hot_queries -- --nocapture`
    /// prints the plans docs/storage.md shows.
    /// The overdue sweep walks only referrals that can still become overdue: two thousand
    /// referrals completed before their (now past) due dates cost it nothing.
    #[test]
    fn the_overdue_sweep_does_not_walk_final_referrals() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for m in super::migrator(super::Backend::Sqlite).iter() {
            conn.execute_batch(&m.sql).unwrap();
        }
        let insert = |id: String, status: &str| {
            conn.execute(
                "INSERT INTO referrals (id, from_agency, to_agency, request_id, service_code, \
                 category, priority, status, due_at, created_at, updated_at, body) \
                 VALUES (?1, 'a', 'b', ?1, 's', 'c', 'p', ?2, 100, 1, 1, x'00')",
                rusqlite::params![id, status],
            )
            .unwrap();
        };
        for i in 0..2000 {
            insert(format!("done-{i:04}"), "REFERRAL_STATUS_COMPLETED");
        }
        insert("live".into(), "REFERRAL_STATUS_ACCEPTED");
        let (rows, steps) = super::referrals::overdue_query(1_000, 100).vm_steps(&conn);
        assert_eq!(rows, 1);
        assert!(
            steps < 200,
            "{steps} VM steps: the sweep walked the completed referrals"
        );
    }

    #[test]
    fn hot_queries_walk_indexes() {
        use super::applications::{list_query as app_list, ApplicationFilter};
        use super::audit::{entries_query, AuditFilter};
        use super::information_requests::{list_query as ir_list, InformationRequestFilter};
        use super::referrals::{events_after_query, history_query, list_query, ListFilter};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for m in super::migrator(super::Backend::Sqlite).iter() {
            conn.execute_batch(&m.sql).unwrap();
        }
        let referrals = |sent, received| ListFilter {
            agency: "housing".into(),
            sent,
            received,
            statuses: vec![],
            category: None,
            priority: None,
            overdue_at: None,
            before_id: Some("01J0000000000000000000000".into()),
            limit: 101,
        };
        let requests = InformationRequestFilter {
            agency: "housing".into(),
            sent: false,
            received: false,
            statuses: vec!["OPEN".into()],
            referral_id: None,
            overdue_at: None,
            before_id: None,
            limit: 101,
        };
        let audit = |since: bool, target: Option<&str>| {
            let f = AuditFilter {
                log_id: "jisr-1".into(),
                agency: Some("police".into()),
                target_id: target.map(str::to_string),
                limit: 100,
                ..AuditFilter::default()
            };
            entries_query(&f, 10, since.then_some(20))
        };
        let applications = |led, clearing| ApplicationFilter {
            agency: "housing".into(),
            led,
            clearing,
            statuses: vec![],
            service_code: None,
            before_id: Some("01J0000000000000000000000".into()),
            limit: 51,
        };
        let ids = ["01A".to_string(), "01B".to_string()];
        let key = ("housing".to_string(), "r-1".to_string());
        for (name, query, sorted) in [
            (
                "ListApplications, both",
                app_list(&applications(false, false)),
                true,
            ),
            (
                "ListApplications, led",
                app_list(&applications(true, false)),
                false,
            ),
            (
                "ListApplications, clearing",
                app_list(&applications(false, true)),
                false,
            ),
            (
                "the clearance deadline sweep",
                super::applications::due_query(1_000, 100),
                false,
            ),
            (
                "ListReferrals, both directions",
                list_query(&referrals(false, false)),
                true,
            ),
            (
                "ListReferrals, received",
                list_query(&referrals(false, true)),
                false,
            ),
            (
                "ListReferrals, sent",
                list_query(&referrals(true, false)),
                false,
            ),
            ("ListInformationRequests, both", ir_list(&requests), true),
            (
                "WatchReferralEvents after a cursor",
                events_after_query("housing", 42, 256),
                true,
            ),
            ("a page's histories", history_query(&ids), true),
            (
                "QueryAuditEvents, by agency, in a time range",
                audit(true, None),
                false,
            ),
            (
                "QueryAuditEvents, by target",
                audit(false, Some("01A")),
                false,
            ),
            (
                "a batch's idempotency look-ups",
                super::prefetch_query(&[&key, &key]),
                false,
            ),
            (
                "the stale-delivery sweep",
                super::outbox::stale_query(1_000, 2_000, 100),
                false,
            ),
            (
                "the referral overdue sweep",
                super::referrals::overdue_query(1_000, 100),
                false,
            ),
            (
                "the information-request overdue and expiry sweeps",
                super::information_requests::open_due_query(1_000, "AND overdue_notified = 0", 100),
                false,
            ),
        ] {
            let plan = query.plan(&conn);
            println!("{name}:\n    {}", plan.join("\n    "));
            let scans: Vec<_> = plan
                .iter()
                .filter(|l| {
                    // Scans of a merged branch's own (limited) rows are fine.
                    l.starts_with("SCAN ")
                        && !["sent", "received", "led", "clearing"]
                            .iter()
                            .any(|branch| **l == format!("SCAN {branch}"))
                })
                .collect();
            assert!(scans.is_empty(), "{name} scans a table: {plan:?}");
            // The sweeps walk partial indexes that hold only what they may still act on.
            if name.contains("sweep") {
                assert!(
                    plan.iter()
                        .any(|l| l.contains("USING INDEX referrals_awaiting_overdue")
                            || l.contains("USING INDEX information_requests_open_by_due")
                            || l.contains("USING INDEX outbox_undelivered_by_age")
                            || l.contains("USING INDEX clearances_awaiting_deadline")),
                    "{name} does not walk its partial index: {plan:?}"
                );
            }
            if !sorted {
                assert!(
                    !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                    "{name} sorts: {plan:?}"
                );
            }
        }
    }
}
