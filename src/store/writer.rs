//! Group commit: one writer per gateway node, on a thread of its own, runs every write and
//! every audit append, many at a time, in one database transaction and one durable commit.
//!
//! Each write job can be undone on its own (a savepoint on PostgreSQL, a replay of the
//! batch before it on SQLite: `WriterConn::undo_after`), so one failing job (a refused
//! status change, say) is rolled back without touching the others in its batch. No caller
//! hears back before the batch has committed: nothing is acknowledged before it is durable.
//!
//! The writer also owns the node's audit log: it assigns leaf indexes in commit order,
//! keeps the Merkle tree's frontier, and writes a signed checkpoint every N entries or T
//! milliseconds, in the same transaction as the entries it covers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::sql::{lite_error, q, rows_per_statement, Param, Query, Row as _, Table, WriterConn};
use super::IdempotentRecord;
use super::{Backend, StoreError};
use crate::audit::checkpoint::{Checkpoint, NoteSigner};
use crate::audit::context::AuditContext;
use crate::audit::entry::AuditEntry;
use crate::audit::merkle::{self, CompactTree, Hash};
pub use crate::audit::Receipt;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most jobs committed together.
const MAX_BATCH: usize = 512;

/// The node's audit log settings.
#[derive(Clone)]
pub struct LogSettings {
    /// The log's id: the gateway node id.
    pub log_id: String,
    /// Signs checkpoints; its name is the checkpoint origin.
    pub signer: Arc<NoteSigner>,
    /// Write a checkpoint after this many new entries...
    pub checkpoint_every: u64,
    /// ...or this long after the first entry it does not cover yet.
    pub checkpoint_interval: Duration,
}

/// The state one write job sees: the batch transaction and its own audit entry.
pub struct WriteTx {
    tx: WriterConn,
    pub(super) last_event: Option<i64>,
    /// A job enqueued or rescheduled a delivery: wake the dispatcher after commit.
    pub(super) outbox_changed: bool,
    log_id: String,
    next_leaf: u64,
    /// The time of the entry ahead of this job's (see `entry_time`).
    not_before_ms: i64,
    draft: Option<AuditEntry>,
    started: Instant,
    finalized: Option<(AuditEntry, Vec<u8>, Hash)>,
    /// The idempotency key this job last looked up and found absent (the record may then
    /// be deferred: see `record_idempotent`).
    pub(super) absent_key: Option<(String, String)>,
    /// The batch's jobs' idempotency keys, looked up before the jobs ran: each is taken
    /// by its first look-up, and dropped when a record for it is written.
    pub(super) prefetched: HashMap<(String, String), Option<IdempotentRecord>>,
}

impl WriteTx {
    pub(super) fn conn(&mut self) -> &mut WriterConn {
        &mut self.tx
    }

    /// The call's audit entry, to add what the job learns (targets, recipient).
    pub fn audit(&mut self) -> Option<&mut AuditEntry> {
        self.draft.as_mut()
    }

    /// Seals this job's audit entry (it commits with the job's changes) and returns its
    /// receipt, to put in the response.
    pub fn audit_receipt(&mut self) -> Result<Receipt, StoreError> {
        if let Some((entry, _, hash)) = &self.finalized {
            return Ok(receipt(entry, hash));
        }
        let mut entry = self
            .draft
            .take()
            .ok_or_else(|| StoreError::Corrupt("this write has no audit entry to seal".into()))?;
        entry.log_id = self.log_id.clone();
        entry.leaf_index = self.next_leaf;
        entry.time_ms = entry_time(self.not_before_ms);
        entry.duration_us = self.started.elapsed().as_micros() as u64;
        let bytes = entry.encode();
        let hash = merkle::leaf_hash(&bytes);
        let r = receipt(&entry, &hash);
        self.finalized = Some((entry, bytes, hash));
        Ok(r)
    }
}

fn receipt(entry: &AuditEntry, hash: &Hash) -> Receipt {
    Receipt {
        log_id: entry.log_id.clone(),
        leaf_index: entry.leaf_index,
        leaf_hash: *hash,
    }
}

type Completion = Box<dyn FnOnce(Result<Option<Receipt>, Arc<StoreError>>) + Send>;
type JobFn = Box<dyn for<'t> FnOnce(&'t mut WriteTx) -> BoxFuture<'t, (bool, Completion)> + Send>;

/// What the writer's channel carries.
pub(super) enum Job {
    /// A job, and the span of the call it serves (none unless traces are exported).
    Work(Box<Work>, tracing::Span),
    /// Cover every entry with a checkpoint and stop.
    Close { done: oneshot::Sender<()> },
}

/// One item of a batch.
pub(super) enum Work {
    /// A change with the call's audit entry (sealed by the job, or not at all).
    Write {
        draft: Option<AuditEntry>,
        started: Instant,
        /// The idempotency key the job looks up first, if any (see `prefetch_keys`).
        key: Option<(String, String)>,
        run: JobFn,
    },
    /// An audit entry on its own (reads, refusals, failed writes).
    Audit {
        entry: AuditEntry,
        started: Instant,
        done: oneshot::Sender<Result<Receipt, Arc<StoreError>>>,
    },
}

/// Tells a call's audit context its write settled; if the job is dropped unrun (the
/// writer stopped), it settled without recording.
struct Settle(Option<Arc<AuditContext>>);

impl Settle {
    fn finish(mut self, recorded: bool) {
        if let Some(ctx) = self.0.take() {
            ctx.end_write(recorded);
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            ctx.end_write(false);
        }
    }
}

/// Sends jobs to the writer and waits for their commit.
#[derive(Clone)]
pub(super) struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    pub(super) status: Arc<WriterStatus>,
}

/// What the writer last did, for readiness and the audit-log metrics (read without
/// asking the writer).
#[derive(Default)]
pub struct WriterStatus {
    alive: AtomicBool,
    failing: AtomicBool,
    log_size: AtomicU64,
    checkpointed: AtomicU64,
    checkpoint_ms: AtomicI64,
    uncovered_since_ms: AtomicI64,
}

impl WriterStatus {
    /// The writer is running (it stops only at shutdown, or if it panicked).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
    /// Its last batch failed to commit (the database is gone, the disk is full…).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
    /// Entries in the node's log, and how many of them a signed checkpoint covers.
    pub fn log_size(&self) -> (u64, u64) {
        (
            self.log_size.load(Ordering::Acquire),
            self.checkpointed.load(Ordering::Acquire),
        )
    }
    /// When the last checkpoint was signed (Unix ms; 0: never).
    pub fn checkpoint_ms(&self) -> i64 {
        self.checkpoint_ms.load(Ordering::Acquire)
    }
    /// When the oldest entry no checkpoint covers was committed (Unix ms), if any.
    pub fn uncovered_since_ms(&self) -> Option<i64> {
        Some(self.uncovered_since_ms.load(Ordering::Acquire)).filter(|t| *t > 0)
    }

    fn note(&self, log: &LogState, ok: bool) {
        self.failing.store(!ok, Ordering::Release);
        let size = log.tree.size();
        if self.checkpointed.swap(log.checkpointed, Ordering::AcqRel) != log.checkpointed {
            self.checkpoint_ms
                .store(crate::common::time::now_ms(), Ordering::Release);
        }
        self.log_size.store(size, Ordering::Release);
        let since = match log.uncovered_since {
            Some(t) => crate::common::time::now_ms() - t.elapsed().as_millis() as i64,
            None => 0,
        };
        self.uncovered_since_ms.store(since, Ordering::Release);
    }
}

/// Marks the writer stopped when its loop ends, however it ends.
struct Alive(Arc<WriterStatus>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

/// The span of the call enqueuing a job, when traces are exported.
fn call_span() -> tracing::Span {
    if crate::telemetry::traces::enabled() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}

impl WriterHandle {
    pub(super) async fn write<T, E, F>(
        &self,
        audit: Option<Arc<AuditContext>>,
        key: Option<(String, String)>,
        job: F,
    ) -> Result<(T, Option<Receipt>), E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let draft = audit.as_ref().map(|ctx| {
            ctx.begin_write();
            ctx.entry(0)
        });
        let settle = Settle(audit);
        let run: JobFn = Box::new(move |wtx: &mut WriteTx| {
            Box::pin(async move {
                let result = job(wtx).await;
                let ok = result.is_ok();
                let complete: Completion = Box::new(move |commit| {
                    let outcome = match (commit, result) {
                        (Ok(receipt), Ok(value)) => Ok((value, receipt)),
                        (_, Err(e)) => Err(e),
                        (Err(e), Ok(_)) => Err(E::from(StoreError::commit_failed(&e))),
                    };
                    // The call's entry is durable (sealed in this commit) or was not written;
                    // either way the call's context knows before anyone is answered.
                    settle.finish(matches!(outcome, Ok((_, Some(_)))));
                    let _ = tx.send(outcome);
                });
                (ok, complete)
            })
        });
        self.jobs
            .send(Job::Work(
                Box::new(Work::Write {
                    draft,
                    started: Instant::now(),
                    key,
                    run,
                }),
                call_span(),
            ))
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        rx.await.map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// Writes a final checkpoint and stops the writer (gateway shutdown).
    pub(super) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.jobs.send(Job::Close { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub(super) async fn append(
        &self,
        entry: AuditEntry,
        started: Instant,
    ) -> Result<Receipt, StoreError> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Job::Work(
                Box::new(Work::Audit {
                    entry,
                    started,
                    done,
                }),
                call_span(),
            ))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(|e| StoreError::commit_failed(&e))
    }
}

/// The writer's view of the log between batches.
struct LogState {
    settings: LogSettings,
    tree: CompactTree,
    checkpointed: u64,
    /// When the oldest entry not covered by a checkpoint was committed.
    uncovered_since: Option<Instant>,
    /// The time of the last committed entry: no entry gets an earlier one.
    last_time_ms: i64,
}

/// An entry's time: now, but never before the entry ahead of it (`not_before`), so
/// entry times never decrease along the log and a time bound is a leaf position.
fn entry_time(not_before: i64) -> i64 {
    crate::common::time::now_ms().max(not_before)
}

/// A checkpoint is due after `checkpoint_every` new entries, or once the oldest entry
/// not yet covered has waited `checkpoint_interval`.
fn checkpoint_due(
    settings: &LogSettings,
    size: u64,
    checkpointed: u64,
    uncovered_since: Option<Instant>,
    now: Instant,
) -> bool {
    size > checkpointed
        && (size - checkpointed >= settings.checkpoint_every
            || uncovered_since
                .is_some_and(|t| now.duration_since(t) >= settings.checkpoint_interval))
}

/// The log's tree and the size its newest checkpoint covers. The tree starts from the
/// frontier stored with the newest checkpoint that has one (checked against that
/// checkpoint's signed root), so only the entries after it are read; a log whose
/// checkpoints predate stored frontiers is read from its first leaf, once.
/// The log's tree, how many entries its checkpoints cover, and when the last was signed.
async fn load_tree(pool: &AnyPool, log_id: &str) -> Result<(CompactTree, u64, i64), StoreError> {
    let (checkpointed, checkpoint_ms): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(MAX(tree_size), 0), COALESCE(MAX(time_ms), 0) FROM audit_checkpoints \
         WHERE log_id = $1",
    )
    .bind(log_id)
    .fetch_one(pool)
    .await?;
    let newest = sqlx::query(
        "SELECT tree_size, root_hash, frontier FROM audit_checkpoints \
         WHERE log_id = $1 AND frontier IS NOT NULL ORDER BY tree_size DESC LIMIT 1",
    )
    .bind(log_id)
    .fetch_optional(pool)
    .await?;
    let mut tree = CompactTree::new();
    if let Some(row) = newest {
        let size: i64 = row.try_get("tree_size")?;
        let root: Vec<u8> = row.try_get("root_hash")?;
        let frontier: Vec<u8> = row.try_get("frontier")?;
        tree = CompactTree::from_frontier(size as u64, &frontier)
            .filter(|t| t.root().as_slice() == root.as_slice())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "audit log {log_id}: the frontier stored with checkpoint {size} does not \
                     give its root; run `jisr audit verify`"
                ))
            })?;
    }
    let rows = sqlx::query(
        "SELECT leaf_index, leaf_hash FROM audit_entries WHERE log_id = $1 AND leaf_index >= $2 \
         ORDER BY leaf_index",
    )
    .bind(log_id)
    .bind(tree.size() as i64)
    .fetch_all(pool)
    .await?;
    for row in &rows {
        append_leaf(
            &mut tree,
            log_id,
            row.try_get("leaf_index")?,
            row.try_get("leaf_hash")?,
        )?;
    }
    Ok((tree, checkpointed as u64, checkpoint_ms))
}

/// Appends the stored leaf `index` to `tree`, which must be `index` leaves long.
fn append_leaf(
    tree: &mut CompactTree,
    log_id: &str,
    index: i64,
    hash: Vec<u8>,
) -> Result<(), StoreError> {
    let hash: Hash = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("audit leaf {index} hash is not 32 bytes")))?;
    if index as u64 != tree.size() {
        return Err(StoreError::Corrupt(format!(
            "audit log {log_id} has no entry {} (next stored is {index}); run `jisr audit verify`",
            tree.size()
        )));
    }
    tree.append(hash);
    Ok(())
}

/// Loads the log's frontier and starts the writer task.
pub(super) async fn start(
    pool: AnyPool,
    backend: Backend,
    sqlite_file: Option<std::path::PathBuf>,
    pg_url: Option<String>,
    settings: LogSettings,
    events: Arc<watch::Sender<i64>>,
    outbox: Arc<watch::Sender<u64>>,
) -> Result<WriterHandle, StoreError> {
    let (tree, checkpointed, checkpoint_ms) = load_tree(&pool, &settings.log_id).await?;
    // The last entry's time (entry times never decrease along the log).
    let last_time_ms: i64 = sqlx::query_scalar(
        "SELECT time_ms FROM audit_entries WHERE log_id = $1 ORDER BY leaf_index DESC LIMIT 1",
    )
    .bind(&settings.log_id)
    .fetch_optional(&pool)
    .await?
    .unwrap_or(0);
    let state = LogState {
        uncovered_since: (tree.size() > checkpointed).then(Instant::now),
        settings,
        tree,
        checkpointed,
        last_time_ms,
    };
    let (jobs, rx) = mpsc::channel(4096);
    let status = Arc::new(WriterStatus::default());
    status.note(&state, true);
    status.checkpoint_ms.store(checkpoint_ms, Ordering::Release);
    status.alive.store(true, Ordering::Release);
    let alive = Alive(status.clone());
    // The writer runs on a thread of its own on both backends.
    let (pool, lite, wal, runtime) = match sqlite_file {
        // SQLite: it owns its connection, so a batch's statements run back to back there
        // (no hand-off to a driver thread).
        Some(file) => {
            let conn = open_sqlite(&file)?;
            // Checkpoints (copying the WAL into the database file) run on a thread of their
            // own, not in the writer's commits.
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(lite_error)?;
            (pool, Some(conn), Some(checkpointer(&file)?), None)
        }
        // PostgreSQL: with its own runtime and its own connection (opened there, so the
        // runtime that waits on its socket is the writer's), each of a batch's round trips
        // resumes it at once, not when a worker busy with calls gets to it. Its statement
        // cache holds every shape of the statements of many rows (`rows_per_statement`).
        None => {
            let url = pg_url
                .ok_or_else(|| StoreError::Setup("the writer".into(), "no database URL".into()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Setup("the writer runtime".into(), e.to_string()))?;
            let sep = if url.contains('?') { '&' } else { '?' };
            let own = {
                let _inside = runtime.enter();
                sqlx::any::AnyPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy(&format!("{url}{sep}statement-cache-capacity=512"))?
            };
            (own, None, None, Some(runtime))
        }
    };
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("jisr-writer".into())
        .spawn(move || {
            let checkpointer = wal.clone();
            let writer = Writer {
                pool,
                lite,
                wal,
                wal_seen: (Instant::now(), 0),
                backend,
                log: state,
                events,
                outbox,
                alive,
            };
            match &runtime {
                Some(own) => own.block_on(run(writer, rx)),
                None => handle.block_on(run(writer, rx)),
            }
            if let Some(wal) = checkpointer {
                wal.stopped.store(true, Ordering::Release);
            }
        })
        .map_err(|e| StoreError::Setup("the writer thread".into(), e.to_string()))?;
    Ok(WriterHandle { jobs, status })
}

/// How often the checkpointer copies committed WAL frames into the database file while the
/// WAL is small (at 200 MB/s of commits, 100 ms is 20 MB before it sees the WAL is large).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A WAL past this many frames is started over: the writer copies the last frames the
/// checkpointer has not, so its next commit writes the WAL from the beginning again. Under
/// steady load the checkpointer alone never catches up with the writer, and a WAL that is
/// never started over grows without bound (1.8 GB in a 12 s benchmark), each append
/// extending the file (the kernel zeroes every new block).
const RESTART_FRAMES: i64 = 4096;
/// The same bound in bytes of the WAL file (4 KiB pages and their frame headers): about
/// 16 MiB.
const RESTART_BYTES: u64 = RESTART_FRAMES as u64 * (4096 + 24);

/// The WAL, shared by the checkpointer and the writer.
struct Wal {
    /// The `-wal` file: the writer watches it grow.
    file: std::path::PathBuf,
    stopped: std::sync::atomic::AtomicBool,
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` (it never waits for the writer or a reader) and
/// returns the WAL's size in frames and how many of them are now in the database file;
/// `None` when another connection was checkpointing.
fn passive_checkpoint(conn: &rusqlite::Connection) -> Result<Option<(i64, i64)>, StoreError> {
    let (busy, frames, copied) = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(lite_error)?;
    Ok((busy == 0 && frames >= 0).then_some((frames, copied)))
}

/// Starts the thread that checkpoints the WAL of `file`, every `CHECKPOINT_EVERY` while
/// it is small and back to back while it is large, until the writer stops.
fn checkpointer(file: &std::path::Path) -> Result<Arc<Wal>, StoreError> {
    let conn = open_sqlite(file)?;
    let mut name = file.as_os_str().to_owned();
    name.push("-wal");
    let wal = Arc::new(Wal {
        file: name.into(),
        stopped: Default::default(),
    });
    let shared = wal.clone();
    std::thread::Builder::new()
        .name("jisr-checkpointer".into())
        .spawn(move || {
            let mut pause = CHECKPOINT_EVERY;
            while !shared.stopped.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(pause);
                pause = match passive_checkpoint(&conn) {
                    Ok(Some((frames, _))) if frames >= RESTART_FRAMES => Duration::from_millis(10),
                    Ok(_) => CHECKPOINT_EVERY,
                    Err(e) => {
                        tracing::warn!(error = %e, "a WAL checkpoint failed; the next one retries");
                        CHECKPOINT_EVERY
                    }
                };
            }
        })
        .map_err(|e| StoreError::Setup("the checkpointer thread".into(), e.to_string()))?;
    Ok(wal)
}

/// The SQLite writer's connection: durable commits, WAL, waits rather than fails when
/// another process holds the write lock.
fn open_sqlite(file: &std::path::Path) -> Result<rusqlite::Connection, StoreError> {
    // One thread uses the connection at a time (rusqlite's Connection is not Sync), so
    // SQLite's own mutexes on it are not needed.
    let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(file, flags).map_err(lite_error)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
         PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(lite_error)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// What the writer task owns.
struct Writer {
    pool: AnyPool,
    /// SQLite: the writer's own connection (back here between batches).
    lite: Option<rusqlite::Connection>,
    /// SQLite: the WAL.
    wal: Option<Arc<Wal>>,
    /// When the writer last tried to start the WAL over, and the WAL file's length when it
    /// last looked.
    wal_seen: (Instant, u64),
    backend: Backend,
    log: LogState,
    events: Arc<watch::Sender<i64>>,
    outbox: Arc<watch::Sender<u64>>,
    /// What it last did (and, dropped with it, that it stopped).
    alive: Alive,
}

impl Writer {
    /// Commits a batch of calls' jobs, in a `store.batch` span (a child of the first
    /// call's span, linked from the others' when traces are exported), and records its
    /// size and commit time.
    async fn commit_traced(
        &mut self,
        batch: Vec<Work>,
        spans: &[tracing::Span],
    ) -> Result<(), Arc<StoreError>> {
        let size = batch.len();
        let span = match spans.split_first() {
            Some((first, rest)) if !first.is_disabled() => {
                let span = tracing::info_span!(
                    target: crate::telemetry::traces::TARGET,
                    parent: first,
                    "store.batch",
                    jisr.batch.size = size,
                    jisr.batch.commit_ms = tracing::field::Empty,
                );
                for other in rest {
                    span.follows_from(other);
                }
                span
            }
            _ => tracing::Span::none(),
        };
        let started = Instant::now();
        let result = self.commit(batch).instrument(span.clone()).await;
        let took = started.elapsed();
        span.record("jisr.batch.commit_ms", took.as_secs_f64() * 1000.0);
        let m = crate::telemetry::metrics::metrics();
        m.writer_batch_size.observe(size as f64);
        m.writer_commit.observe(took.as_secs_f64());
        result
    }

    /// Commits `batch` (empty: only the checkpoint, if one is due).
    async fn commit(&mut self, batch: Vec<Work>) -> Result<(), Arc<StoreError>> {
        let result = commit_batch(
            &self.pool,
            &mut self.lite,
            self.backend,
            &mut self.log,
            batch,
            &self.events,
            &self.outbox,
        )
        .await;
        // The status first (the log's size on /metrics, readiness), so that a caller who
        // has its answer finds it there.
        self.alive.0.note(&self.log, result.is_ok());
        let result = match result {
            Ok(answers) => {
                for (complete, receipt) in answers {
                    complete(Ok(receipt));
                }
                Ok(())
            }
            Err(e) => {
                crate::telemetry::metrics::metrics().writer_failures.inc();
                Err(e)
            }
        };
        self.start_wal_over();
        result
    }

    /// Once the WAL file grows past `RESTART_BYTES`, copies what the checkpointer has not
    /// yet copied (a few milliseconds of commits: it runs back to back by then), so the next
    /// commit writes the WAL from its beginning again (and the file stops growing). Busy
    /// (the checkpointer is copying) or a reader still on the old frames means next time.
    fn start_wal_over(&mut self) {
        let (Some(conn), Some(wal)) = (&self.lite, &self.wal) else {
            return;
        };
        let len = std::fs::metadata(&wal.file).map_or(0, |m| m.len());
        let (tried, seen) = self.wal_seen;
        self.wal_seen.1 = len;
        // Each try costs two fsyncs: not after every batch while readers hold it back.
        if len <= seen || len < RESTART_BYTES || tried.elapsed() < Duration::from_millis(10) {
            return;
        }
        self.wal_seen.0 = Instant::now();
        if let Err(e) = passive_checkpoint(conn) {
            tracing::warn!(error = %e, "a WAL checkpoint failed; the next one retries");
        }
    }
}

async fn run(mut w: Writer, mut jobs: mpsc::Receiver<Job>) {
    loop {
        let first = match w.log.uncovered_since {
            Some(since) => {
                let deadline =
                    tokio::time::Instant::from_std(since + w.log.settings.checkpoint_interval);
                tokio::select! {
                    job = jobs.recv() => job,
                    _ = tokio::time::sleep_until(deadline) => {
                        if let Err(e) = w.commit(Vec::new()).await {
                            tracing::error!(error = %e, "writing an audit checkpoint failed");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        continue;
                    }
                }
            }
            None => jobs.recv().await,
        };
        let Some(first) = first else {
            // Every handle is gone: cover what is left with a checkpoint and stop.
            if w.log.tree.size() > w.log.checkpointed {
                let _ = w.commit(Vec::new()).await;
            }
            return;
        };
        // Take what is queued, up to a batch; a close request ends the batch and the writer.
        let (mut batch, mut spans, mut close) = (Vec::new(), Vec::new(), None);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Work(work, span) => {
                    batch.push(*work);
                    spans.push(span);
                }
                Job::Close { done } => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = w.commit_traced(batch, &spans).await {
                tracing::error!(error = %e, "a write batch failed; its callers were told");
            }
        }
        if let Some(done) = close {
            if w.log.tree.size() > w.log.checkpointed {
                w.log.uncovered_since = Some(Instant::now() - w.log.settings.checkpoint_interval);
                if let Err(e) = w.commit(Vec::new()).await {
                    tracing::error!(error = %e, "the final audit checkpoint failed");
                }
            }
            let _ = done.send(());
            return;
        }
    }
}

async fn begin(
    pool: &AnyPool,
    lite: &mut Option<rusqlite::Connection>,
    backend: Backend,
) -> Result<WriterConn, StoreError> {
    if let Some(conn) = lite.take() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            *lite = Some(conn);
            return Err(lite_error(e));
        }
        return Ok(WriterConn::lite(conn));
    }
    Ok(WriterConn::pg(match backend {
        // The SQLite writer always has its own connection back between batches.
        Backend::Sqlite => {
            return Err(StoreError::Setup(
                "the SQLite writer".into(),
                "its connection was lost".into(),
            ))
        }
        // Replicas sharing the database serialize their batches, so event sequence
        // numbers follow commit order across the whole deployment.
        Backend::Postgres => super::begin_locked(pool).await?,
    }))
}

/// Commits (or, on `Err`, rolls back) the batch; the SQLite connection goes back to
/// the writer either way.
async fn finish(
    tx: WriterConn,
    lite: &mut Option<rusqlite::Connection>,
    outcome: Result<(), StoreError>,
) -> Result<(), StoreError> {
    match tx {
        WriterConn::Any(b) => match outcome {
            Ok(()) => b.commit().await,
            // Dropping the transaction rolls it back.
            Err(e) => Err(e),
        },
        WriterConn::Lite(mut b) => {
            let result = match outcome {
                Ok(()) => b
                    .insert_deferred()
                    .and_then(|()| b.conn.execute_batch("COMMIT").map_err(lite_error)),
                Err(e) => Err(e),
            };
            if result.is_err() && !b.conn.is_autocommit() {
                let _ = b.conn.execute_batch("ROLLBACK");
            }
            *lite = Some(b.conn);
            result
        }
    }
}

/// A committed job's caller, and the receipt of its audit entry.
type Answer = (Completion, Option<Receipt>);

/// Runs a batch in one transaction and commits it. Committed, it returns its callers'
/// answers, to give once the writer's status says so; failed, it has told them.
async fn commit_batch(
    pool: &AnyPool,
    lite: &mut Option<rusqlite::Connection>,
    backend: Backend,
    log: &mut LogState,
    batch: Vec<Work>,
    events: &watch::Sender<i64>,
    outbox: &watch::Sender<u64>,
) -> Result<Vec<Answer>, Arc<StoreError>> {
    let mut completions: Vec<(Completion, Option<usize>)> = Vec::with_capacity(batch.len());
    let mut appended: Vec<(AuditEntry, Vec<u8>, Hash)> = Vec::new();
    let mut w = match begin(pool, lite, backend).await {
        Ok(tx) => WriteTx {
            tx,
            last_event: None,
            outbox_changed: false,
            log_id: log.settings.log_id.clone(),
            next_leaf: log.tree.size(),
            not_before_ms: log.last_time_ms,
            draft: None,
            started: Instant::now(),
            finalized: None,
            absent_key: None,
            prefetched: HashMap::new(),
        },
        Err(e) => {
            let e = Arc::new(e);
            fail_all(batch, &e);
            return Err(e);
        }
    };
    // Entries another process appended to this log since our last batch (an operator's
    // `jisr outbox retry`, say): committed, so taken into the tree whatever this batch does.
    // Then the idempotency keys the jobs will look up, all at once.
    let keys: Vec<&(String, String)> = batch
        .iter()
        .filter_map(|job| match job {
            Work::Write { key, .. } => key.as_ref(),
            Work::Audit { .. } => None,
        })
        .collect();
    let prepared = match catch_up(w.conn(), log).await {
        Ok(()) => super::prefetch_keys(w.conn(), &keys).await,
        Err(e) => Err(e),
    };
    match prepared {
        Ok(found) => w.prefetched = found,
        Err(e) => {
            let e = Arc::new(e);
            let _ = finish(w.tx, lite, Err(StoreError::Commit(e.to_string()))).await;
            fail_all(batch, &e);
            return Err(e);
        }
    }
    let outcome: Result<(), StoreError> = async {
        for job in batch {
            w.next_leaf = log.tree.size() + appended.len() as u64;
            w.not_before_ms = appended.last().map_or(log.last_time_ms, |a| a.0.time_ms);
            match job {
                Work::Write {
                    draft,
                    started,
                    run,
                    ..
                } => {
                    w.draft = draft;
                    w.started = started;
                    w.finalized = None;
                    w.absent_key = None;
                    let mark = w.tx.begin_job();
                    let (events_before, outbox_before) = (w.last_event, w.outbox_changed);
                    let (ok, complete) = run(&mut w).await;
                    // Recorded first, so a failure below reaches this caller as an error.
                    let at = if ok {
                        w.finalized.take().map(|f| {
                            appended.push(f);
                            appended.len() - 1
                        })
                    } else {
                        None
                    };
                    completions.push((complete, at));
                    if !ok {
                        w.last_event = events_before;
                        w.outbox_changed = outbox_before;
                    }
                    // A job that succeeded keeps its savepoint, if any, until the next job
                    // begins (COMMIT releases the last).
                    if !ok {
                        w.tx.undo_after(mark).await?;
                    }
                }
                Work::Audit {
                    mut entry,
                    started,
                    done,
                } => {
                    entry.log_id = log.settings.log_id.clone();
                    entry.leaf_index = w.next_leaf;
                    entry.time_ms = entry_time(w.not_before_ms);
                    entry.duration_us = started.elapsed().as_micros() as u64;
                    let bytes = entry.encode();
                    let hash = merkle::leaf_hash(&bytes);
                    appended.push((entry, bytes, hash));
                    let at = appended.len() - 1;
                    let complete: Completion = Box::new(move |r| {
                        let _ = done.send(r.and_then(|receipt| {
                            receipt.ok_or_else(|| Arc::new(StoreError::WriterGone))
                        }));
                    });
                    completions.push((complete, Some(at)));
                }
            }
        }
        w.tx.finish_jobs().await?;
        insert_entries(w.conn(), &appended).await?;
        Ok(())
    }
    .await;

    // The tree after this batch, and the subtrees of 256 leaves or more its entries
    // complete (for proofs); a checkpoint, when due, commits with the entries.
    let mut tree = log.tree.clone();
    let mut nodes = Vec::new();
    for (_, _, hash) in &appended {
        tree.append_with(*hash, |level, index, hash| {
            if level >= crate::store::audit::NODE_LEVEL {
                nodes.push(vec![
                    Param::from(&log.settings.log_id),
                    Param::Int(i64::from(level)),
                    Param::Int(index as i64),
                    Param::Blob(hash.to_vec()),
                ]);
            }
        });
    }
    let now = Instant::now();
    let uncovered_since = log
        .uncovered_since
        .or((!appended.is_empty()).then_some(now));
    let due = checkpoint_due(
        &log.settings,
        tree.size(),
        log.checkpointed,
        uncovered_since,
        now,
    );
    let outcome = match outcome {
        Ok(()) => insert_rows(w.conn(), &AUDIT_NODES, nodes).await,
        failed => failed,
    };
    let outcome = match outcome {
        Ok(()) if due => insert_checkpoint(w.conn(), &log.settings, &tree).await,
        other => other,
    };
    let (last_event, outbox_changed) = (w.last_event, w.outbox_changed);
    let result = finish(w.tx, lite, outcome).await;
    match result {
        Ok(()) => {
            log.tree = tree;
            if let Some((last, _, _)) = appended.last() {
                log.last_time_ms = last.time_ms;
            }
            if due {
                log.checkpointed = log.tree.size();
                log.uncovered_since = None;
            } else {
                log.uncovered_since = uncovered_since;
            }
            if let Some(seq) = last_event {
                events.send_modify(|latest| *latest = (*latest).max(seq));
            }
            if outbox_changed {
                outbox.send_modify(|n| *n += 1);
            }
            Ok(completions
                .into_iter()
                .map(|(complete, at)| {
                    let r = at.map(|i| receipt(&appended[i].0, &appended[i].2));
                    (complete, r)
                })
                .collect())
        }
        Err(e) => {
            let e = Arc::new(e);
            for (complete, _) in completions {
                complete(Err(e.clone()));
            }
            Err(e)
        }
    }
}

/// Takes into the log's tree the entries past it that another writer of the same log
/// committed (the CLI, for an operator's action, while the gateway runs): one indexed
/// look-up per batch, inside the batch's transaction, which holds the database's write
/// lock (SQLite) or the writers' advisory lock (PostgreSQL), so nobody appends meanwhile.
async fn catch_up(conn: &mut WriterConn, log: &mut LogState) -> Result<(), StoreError> {
    let rows = q("SELECT leaf_index, leaf_hash, time_ms FROM audit_entries \
         WHERE log_id = $1 AND leaf_index >= $2 ORDER BY leaf_index")
    .bind(&log.settings.log_id)
    .bind(log.tree.size() as i64)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    for row in &rows {
        append_leaf(
            &mut log.tree,
            &log.settings.log_id,
            row.col("leaf_index")?,
            row.col("leaf_hash")?,
        )?;
        log.last_time_ms = log.last_time_ms.max(row.col("time_ms")?);
    }
    let checkpointed: i64 =
        q("SELECT COALESCE(MAX(tree_size), 0) AS size FROM audit_checkpoints WHERE log_id = $1")
            .bind(&log.settings.log_id)
            .fetch_one(&mut *conn)
            .await?
            .col("size")?;
    log.checkpointed = checkpointed as u64;
    if log.tree.size() > log.checkpointed {
        log.uncovered_since.get_or_insert_with(Instant::now);
    }
    Ok(())
}

fn fail_all(batch: Vec<Work>, e: &Arc<StoreError>) {
    for work in batch {
        match work {
            Work::Audit { done, .. } => {
                let _ = done.send(Err(e.clone()));
            }
            // Dropping the job drops its result sender: the caller sees WriterGone.
            Work::Write { .. } => {}
        }
    }
}

/// The batch's audit entries and their target ids, a few multi-row statements in all.
async fn insert_entries(
    conn: &mut WriterConn,
    appended: &[(AuditEntry, Vec<u8>, Hash)],
) -> Result<(), StoreError> {
    let mut entries = Vec::with_capacity(appended.len());
    let mut targets = Vec::new();
    for (entry, bytes, hash) in appended {
        let leaf = entry.leaf_index as i64;
        entries.push(vec![
            Param::from(&entry.log_id),
            Param::Int(leaf),
            Param::Int(entry.time_ms),
            Param::from(&entry.caller_agency),
            Param::from(&entry.method),
            Param::from(entry.decision.as_str()),
            Param::Text(crate::audit::entry::targets_column(&entry.target_ids)),
            Param::Blob(bytes.clone()),
            Param::Blob(hash.to_vec()),
        ]);
        for id in entry.distinct_targets() {
            targets.push(vec![
                Param::from(&entry.log_id),
                Param::from(id),
                Param::Int(leaf),
            ]);
        }
    }
    insert_rows(conn, &AUDIT_ENTRIES, entries).await?;
    insert_rows(conn, &AUDIT_TARGETS, targets).await
}

static AUDIT_ENTRIES: Table = Table::new(
    "audit_entries",
    "log_id, leaf_index, time_ms, caller_agency, method, decision, targets, entry, leaf_hash",
    None,
    0,
);
static AUDIT_TARGETS: Table = Table::new("audit_targets", "log_id, target_id, leaf_index", None, 0);
static AUDIT_NODES: Table = Table::new("audit_nodes", "log_id, level, idx, hash", None, 0);

/// Inserts `rows` of `table` now, in statements of many rows ([`rows_per_statement`]): a
/// batch's rows cost a few statements, and each statement shape is prepared once.
async fn insert_rows(
    conn: &mut WriterConn,
    table: &'static Table,
    rows: Vec<Vec<Param>>,
) -> Result<(), StoreError> {
    let mut left = rows.len();
    let mut rows = rows.into_iter();
    while left > 0 {
        let n = rows_per_statement(left, conn.backend());
        let params: Vec<Param> = rows.by_ref().take(n).flatten().collect();
        Query::insert(table, n, params).execute(&mut *conn).await?;
        left -= n;
    }
    Ok(())
}

async fn insert_checkpoint(
    conn: &mut WriterConn,
    settings: &LogSettings,
    tree: &CompactTree,
) -> Result<(), StoreError> {
    let checkpoint = Checkpoint {
        origin: settings.signer.name().to_string(),
        tree_size: tree.size(),
        root_hash: tree.root(),
    };
    let note = settings.signer.sign(&checkpoint);
    q("INSERT INTO audit_checkpoints (log_id, tree_size, root_hash, time_ms, note, frontier) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&settings.log_id)
        .bind(checkpoint.tree_size as i64)
        .bind(checkpoint.root_hash.to_vec())
        .bind(crate::common::time::now_ms())
        .bind(note)
        .bind(tree.frontier_bytes())
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{entry_time, insert_rows, Param, Table, WriterConn};
    use crate::store::sql::{q, Row};

    #[tokio::test]
    async fn rows_are_inserted_in_statements_of_powers_of_two_all_of_them_in_order() {
        static T: Table = Table::new("t", "a, b", None, 0);
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL)")
            .unwrap();
        let mut w = WriterConn::lite(conn);
        // 75 = 64 + 8 + 2 + 1.
        let rows: Vec<Vec<Param>> = (0..75)
            .map(|i| vec![Param::Int(i), Param::Text(format!("r{i}"))])
            .collect();
        insert_rows(&mut w, &T, rows).await.unwrap();
        assert_eq!(w.begin_job().statements(), 4, "four statements");
        insert_rows(&mut w, &T, Vec::new()).await.unwrap();
        let got = q("SELECT a, b FROM t ORDER BY rowid")
            .fetch_all(&mut w)
            .await
            .unwrap();
        assert_eq!(got.len(), 75);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.col::<i64>("a").unwrap(), i as i64);
            assert_eq!(r.col::<String>("b").unwrap(), format!("r{i}"));
        }
    }

    #[test]
    fn an_entry_is_never_dated_before_the_one_ahead_of_it() {
        let now = crate::common::time::now_ms();
        // The clock went back: the entry takes the previous entry's time.
        assert_eq!(entry_time(now + 60_000), now + 60_000);
        let t = entry_time(0);
        assert!(t >= now && t < now + 60_000, "{t}");
    }
}
