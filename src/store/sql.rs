//! One way to write a query for both connections the store has: sqlx's `Any` driver (the
//! read pool, and the writer on PostgreSQL) and the SQLite writer's own rusqlite connection,
//! which runs a whole batch on the writer's thread with cached prepared statements and no
//! hand-off per statement.
//!
//! A query is its SQL text (numbered placeholders `$1`, `$2`, …, which both accept) and its
//! parameters; a row is read by column name with [`Row::col`]. Every query is written once.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, Row as _};

use super::{Backend, StoreError};

/// A query parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(Vec<u8>),
}

macro_rules! param_from {
    ($($t:ty => |$v:ident| $e:expr;)+) => {
        $(impl From<$t> for Param {
            fn from($v: $t) -> Param {
                $e
            }
        })+
    };
}

param_from! {
    String => |v| Param::Text(v);
    &String => |v| Param::Text(v.clone());
    &str => |v| Param::Text(v.to_string());
    &&str => |v| Param::Text(v.to_string());
    Option<&str> => |v| Param::OptText(v.map(str::to_string));
    Option<String> => |v| Param::OptText(v);
    i64 => |v| Param::Int(v);
    Option<i64> => |v| Param::OptInt(v);
    Vec<u8> => |v| Param::Blob(v);
}

impl Param {
    /// Whether it is the text `s`.
    pub(crate) fn is_text(&self, s: &str) -> bool {
        matches!(self, Param::Text(t) if t == s)
    }
}

/// A query and its parameters, run with `execute` or `fetch_*` on a [`Conn`].
pub(crate) struct Query {
    sql: Cow<'static, str>,
    params: Vec<Param>,
    /// On the SQLite writer: the batch's deferred rows go in first (see
    /// [`Query::beside_deferred`]).
    after_deferred: bool,
    /// Its placeholders are `$1`, `$2`, … in order by construction (a [`Table`]'s
    /// inserts), so SQLite need not be asked (which costs a look-up per parameter that
    /// grows with their number).
    in_order: bool,
}

/// `sqlx::query`'s shape: `q(sql).bind(a).bind(b).fetch_all(conn)`.
pub(crate) fn q(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        params: Vec::new(),
        after_deferred: true,
        in_order: false,
    }
}

impl Query {
    pub(crate) fn bind(mut self, value: impl Into<Param>) -> Query {
        self.params.push(value.into());
        self
    }

    /// With parameters collected elsewhere (`SqlBuilder`).
    pub(crate) fn with_params(sql: impl Into<Cow<'static, str>>, params: Vec<Param>) -> Query {
        Query {
            sql: sql.into(),
            params,
            after_deferred: true,
            in_order: false,
        }
    }

    /// A [`Table`]'s insert of `rows` rows.
    pub(crate) fn insert(table: &'static Table, rows: usize, params: Vec<Param>) -> Query {
        Query {
            in_order: true,
            ..Query::with_params(table.insert_sql(rows, Numbered::No), params)
        }
    }

    /// Runs on the SQLite writer without first inserting the batch's deferred rows
    /// ([`WriterConn::insert`]): for a point look-up that checks them itself
    /// ([`WriterConn::deferred`]), so that looking up one key does not end the batching
    /// of every table's rows.
    pub(crate) fn beside_deferred(mut self) -> Query {
        self.after_deferred = false;
        self
    }

    pub(crate) async fn execute(self, conn: impl Conn) -> Result<u64, StoreError> {
        conn.execute(self).await
    }

    pub(crate) async fn fetch_all(self, conn: impl Conn) -> Result<Vec<DbRow>, StoreError> {
        conn.fetch_all(self).await
    }

    pub(crate) async fn fetch_optional(self, conn: impl Conn) -> Result<Option<DbRow>, StoreError> {
        Ok(conn.fetch_all(self).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(self, conn: impl Conn) -> Result<DbRow, StoreError> {
        self.fetch_optional(conn)
            .await?
            .ok_or_else(|| StoreError::Db(sqlx::Error::RowNotFound))
    }

    /// As sqlx runs it.
    pub(crate) fn sqlx(&self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        sqlx_query(&self.sql, self.params.iter())
    }

    /// The statement, prepared (cached per connection) and bound, as SQLite runs it.
    /// SQLite reads `$N` as a named parameter, numbered in the order the names first
    /// appear: the text is used as written (no copy per call) when that order is `$1`,
    /// `$2`, …, as the queries are written, and with `?N` placeholders otherwise.
    fn lite_statement<'c>(
        &self,
        conn: &'c rusqlite::Connection,
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        lite_statement(conn, &self.sql, self.in_order, self.params.iter())
    }

    /// Its rows, on a SQLite connection.
    fn lite(&self, conn: &rusqlite::Connection) -> Result<Vec<DbRow>, StoreError> {
        let mut stmt = self.lite_statement(conn)?;
        let names: Arc<[String]> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(lite_error)? {
            let values = (0..names.len())
                .map(|i| row.get::<_, rusqlite::types::Value>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(lite_error)?;
            out.push(DbRow::Lite(LiteRow {
                names: names.clone(),
                values,
            }));
        }
        Ok(out)
    }
}

/// What SQLite's planner does with it (`EXPLAIN QUERY PLAN`), one line per step.
#[cfg(test)]
impl Query {
    pub(crate) fn plan(&self, conn: &rusqlite::Connection) -> Vec<String> {
        let explain = Query::with_params(
            format!("EXPLAIN QUERY PLAN {}", self.sql),
            self.params.clone(),
        );
        explain
            .lite(conn)
            .expect("the query plans")
            .iter()
            .map(|r| r.col::<String>("detail").expect("a plan line"))
            .collect()
    }
}

/// How many rows it returns and how many virtual-machine steps SQLite took for them: a
/// count, not a time, of how much of an index or table a query walked.
#[cfg(test)]
impl Query {
    pub(crate) fn vm_steps(&self, conn: &rusqlite::Connection) -> (usize, i32) {
        let mut stmt = self.lite_statement(conn).expect("the query prepares");
        let mut rows = stmt.raw_query();
        let mut n = 0;
        while rows.next().expect("the query runs").is_some() {
            n += 1;
        }
        drop(rows);
        (n, stmt.get_status(rusqlite::StatementStatus::VmStep))
    }
}

/// `sql` with `params` bound, as sqlx runs it (prepared and cached per connection).
fn sqlx_query<'q>(
    sql: &'q str,
    params: impl Iterator<Item = &'q Param>,
) -> sqlx::query::Query<'q, Any, AnyArguments<'q>> {
    params.fold(sqlx::query(sql), |q, p| match p {
        Param::Text(s) => q.bind(s.as_str()),
        Param::OptText(s) => q.bind(s.as_deref()),
        Param::Int(i) => q.bind(*i),
        Param::OptInt(i) => q.bind(*i),
        Param::Blob(b) => q.bind(b.as_slice()),
    })
}

/// `sql` prepared (cached per connection) with `params` bound (see
/// [`Query::lite_statement`]).
fn lite_statement<'c, 'p>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    in_order: bool,
    params: impl Iterator<Item = &'p Param>,
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(lite_error)?;
    if !in_order && !numbered_in_order(&stmt) {
        drop(stmt);
        stmt = conn
            .prepare_cached(&sqlite_placeholders(sql))
            .map_err(lite_error)?;
    }
    for (i, p) in params.enumerate() {
        let at = i + 1;
        match p {
            Param::Text(s) => stmt.raw_bind_parameter(at, s),
            Param::OptText(s) => stmt.raw_bind_parameter(at, s),
            Param::Int(v) => stmt.raw_bind_parameter(at, v),
            Param::OptInt(v) => stmt.raw_bind_parameter(at, v),
            Param::Blob(b) => stmt.raw_bind_parameter(at, b),
        }
        .map_err(lite_error)?;
    }
    Ok(stmt)
}

/// Rows in the next statement of many rows (multi-row inserts, the batch's idempotency
/// look-ups) when `left` are left: few shapes to prepare and cache per statement. SQLite:
/// the largest power of two up to 64 (7 shapes; a statement costs no round trip there).
/// PostgreSQL: up to 8 exactly, then a multiple of 8 up to 64 (15 shapes), so up to 64 rows
/// take at most two statements, a round trip each.
pub(crate) fn rows_per_statement(left: usize, backend: Backend) -> usize {
    let n = left.clamp(1, MOST_ROWS);
    match backend {
        Backend::Sqlite => 1 << (usize::BITS - 1 - n.leading_zeros()),
        Backend::Postgres if n > 8 => n - n % 8,
        Backend::Postgres => n,
    }
}

/// `($1, $2), ($3, $4)`: the placeholders of `rows` rows of `width` values.
fn values_list(rows: usize, width: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=width {
            let sep = if c == 1 { "" } else { ", " };
            let _ = write!(out, "{sep}${}", r * width + c);
        }
        out.push(')');
    }
    out
}

/// Whether parameter `i` of `stmt` is named `$i`, for every `i`.
fn numbered_in_order(stmt: &rusqlite::Statement<'_>) -> bool {
    (1..=stmt.parameter_count()).all(|i| {
        stmt.parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            == Some(i)
    })
}

/// `$12` → `?12`, outside string literals.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A SQLite error of the writer's own connection, as the database error sqlx reports for
/// the same failure (so callers see one kind of database error, whichever connection ran
/// the statement).
pub(crate) fn lite_error(e: rusqlite::Error) -> StoreError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                sqlx::error::ErrorKind::ForeignKeyViolation
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        },
        _ => sqlx::error::ErrorKind::Other,
    };
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code.to_string()),
        _ => None,
    };
    StoreError::Db(sqlx::Error::Database(Box::new(LiteError {
        message: e.to_string(),
        kind,
        code,
    })))
}

#[derive(Debug)]
struct LiteError {
    message: String,
    kind: sqlx::error::ErrorKind,
    /// SQLite's extended result code, as sqlx's own SQLite errors give it.
    code: Option<String>,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LiteError {}

impl sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.code.as_deref().map(std::borrow::Cow::Borrowed)
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        match self.kind {
            sqlx::error::ErrorKind::UniqueViolation => sqlx::error::ErrorKind::UniqueViolation,
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                sqlx::error::ErrorKind::ForeignKeyViolation
            }
            sqlx::error::ErrorKind::NotNullViolation => sqlx::error::ErrorKind::NotNullViolation,
            sqlx::error::ErrorKind::CheckViolation => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

/// A row from either connection.
pub(crate) enum DbRow {
    Any(AnyRow),
    Lite(LiteRow),
}

pub(crate) struct LiteRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

/// A column type both connections read.
pub(crate) trait Col:
    for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql
{
}

impl<T> Col for T where T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql
{}

/// Reading a row by column name.
pub(crate) trait Row {
    fn col<T: Col>(&self, name: &str) -> Result<T, StoreError>;
}

impl Row for AnyRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, StoreError> {
        Ok(self.try_get(name)?)
    }
}

impl Row for DbRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, StoreError> {
        match self {
            DbRow::Any(r) => r.col(name),
            DbRow::Lite(r) => {
                let i = r
                    .names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| StoreError::Corrupt(format!("no column {name}")))?;
                let value = rusqlite::types::ValueRef::from(&r.values[i]);
                T::column_result(value)
                    .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
            }
        }
    }
}

/// Where a query runs: the read pool, or the writer's transaction.
pub(crate) trait Conn: Send {
    fn execute(self, q: Query)
        -> impl std::future::Future<Output = Result<u64, StoreError>> + Send;
    fn fetch_all(
        self,
        q: Query,
    ) -> impl std::future::Future<Output = Result<Vec<DbRow>, StoreError>> + Send;
}

impl Conn for &AnyPool {
    async fn execute(self, q: Query) -> Result<u64, StoreError> {
        Ok(q.sqlx().execute(self).await?.rows_affected())
    }
    async fn fetch_all(self, q: Query) -> Result<Vec<DbRow>, StoreError> {
        let rows = q.sqlx().fetch_all(self).await?;
        Ok(rows.into_iter().map(DbRow::Any).collect())
    }
}

/// SQLite's read-only connections (WAL lets them read while the writer writes): point reads
/// (one row by id, one exchange's history) run on the calling thread, since an indexed
/// lookup takes microseconds, less than handing the statement to a driver thread and back;
/// lists and scans run on a blocking thread ([`ReadConn`]).
pub(crate) struct Readers {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// SQLite connections map up to this much of the database file for reading.
const MMAP: &str = "PRAGMA mmap_size = 1073741824";

/// Idle read connections kept open.
const IDLE_READERS: usize = 8;

impl Readers {
    pub(crate) fn new(file: std::path::PathBuf) -> Readers {
        Readers {
            file,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn run(&self, q: &Query) -> Result<Vec<DbRow>, StoreError> {
        let idle = || self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conn = match idle().pop() {
            Some(conn) => conn,
            None => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | rusqlite::OpenFlags::SQLITE_OPEN_URI;
                let conn =
                    rusqlite::Connection::open_with_flags(&self.file, flags).map_err(lite_error)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(lite_error)?;
                // Pages read straight from the mapped file, not copied by a read call into
                // each connection's own cache.
                conn.execute_batch(MMAP).map_err(lite_error)?;
                conn
            }
        };
        let rows = q.lite(&conn);
        let mut idle = idle();
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        rows
    }
}

/// Where a read runs: the pool (PostgreSQL), or SQLite's read connections, on the calling
/// thread for a point read or on a blocking thread for a scan (many rows).
#[derive(Clone, Copy)]
pub(crate) enum ReadConn<'a> {
    Pool(&'a AnyPool),
    Inline(&'a Arc<Readers>),
    Blocking(&'a Arc<Readers>),
}

impl Conn for ReadConn<'_> {
    async fn execute(self, q: Query) -> Result<u64, StoreError> {
        match self {
            ReadConn::Pool(pool) => pool.execute(q).await,
            ReadConn::Inline(_) | ReadConn::Blocking(_) => {
                Err(StoreError::Corrupt("a read connection cannot write".into()))
            }
        }
    }

    async fn fetch_all(self, q: Query) -> Result<Vec<DbRow>, StoreError> {
        match self {
            ReadConn::Pool(pool) => pool.fetch_all(q).await,
            ReadConn::Inline(readers) => readers.run(&q),
            ReadConn::Blocking(readers) => {
                let readers = readers.clone();
                tokio::task::spawn_blocking(move || readers.run(&q))
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("a read thread failed: {e}")))?
            }
        }
    }
}

/// A table the writer inserts rows into, many in a statement ([`WriterConn::insert`],
/// and the writer's audit entries).
pub(crate) struct Table {
    name: &'static str,
    /// Its columns, in the order of a row's parameters.
    columns: &'static str,
    /// An identity column (`INTEGER PRIMARY KEY AUTOINCREMENT` on SQLite, `GENERATED
    /// ALWAYS AS IDENTITY` on PostgreSQL) whose number the caller learns at insert time.
    /// The writer numbers deferred rows itself: it is the database's only writer (on
    /// PostgreSQL, under the writers' lock), and starts past every number handed out.
    numbered: Option<&'static str>,
    /// Deferred rows go in by rank, lowest first, so a row goes in after the rows its
    /// foreign keys point at.
    rank: u8,
    /// The text of its INSERT of 1 to 64 rows, for each [`Numbered`]: written once.
    sql: [[OnceLock<String>; MOST_ROWS]; 3],
}

/// The most rows a statement of many rows has ([`rows_per_statement`]).
pub(crate) const MOST_ROWS: usize = 64;

/// Whether an insert gives the numbered column's value, and in which dialect.
#[derive(Clone, Copy)]
pub(crate) enum Numbered {
    /// The database numbers the row (or the table has no numbered column).
    No = 0,
    /// Given, as SQLite takes it.
    Sqlite = 1,
    /// Given, with PostgreSQL's `OVERRIDING SYSTEM VALUE` for an identity column.
    Postgres = 2,
}

impl Table {
    pub(crate) const fn new(
        name: &'static str,
        columns: &'static str,
        numbered: Option<&'static str>,
        rank: u8,
    ) -> Table {
        Table {
            name,
            columns,
            numbered,
            rank,
            sql: [const { [const { OnceLock::new() }; MOST_ROWS] }; 3],
        }
    }

    /// `INSERT INTO t (columns) VALUES …` for `rows` rows (a count
    /// [`rows_per_statement`] gives), the numbered column first unless [`Numbered::No`].
    pub(crate) fn insert_sql(&'static self, rows: usize, numbered: Numbered) -> &'static str {
        let numbered = match self.numbered {
            Some(_) => numbered,
            None => Numbered::No,
        };
        self.sql[numbered as usize][rows - 1].get_or_init(|| {
            let head = match (numbered, self.numbered) {
                (Numbered::No, _) | (_, None) => self.columns.to_string(),
                (_, Some(n)) => format!("{n}, {}", self.columns),
            };
            let width = head.split(',').count();
            let overriding = match numbered {
                Numbered::Postgres => " OVERRIDING SYSTEM VALUE",
                _ => "",
            };
            format!(
                "INSERT INTO {} ({head}){overriding} VALUES {}",
                self.name,
                values_list(rows, width)
            )
        })
    }
}

/// The writer's connection for one batch.
pub(crate) enum WriterConn {
    /// PostgreSQL: a sqlx transaction, a savepoint for each job that writes.
    Any(Box<PgBatch>),
    /// The SQLite writer's own connection, inside `BEGIN IMMEDIATE`.
    Lite(Box<LiteBatch>),
}

/// The PostgreSQL writer's batch: its transaction and its deferred rows.
pub(crate) struct PgBatch {
    tx: sqlx::Transaction<'static, Any>,
    held: Held,
    /// A savepoint is open (the next one taken releases it first).
    savepoint: bool,
    /// In a job (`Some`), and whether it has its savepoint; `None` after the last job.
    job_savepoint: Option<bool>,
    /// A statement failed since the last savepoint: PostgreSQL has aborted the
    /// transaction until it is rolled back to one.
    aborted: bool,
}

/// The SQLite writer's batch: its connection, what it ran that may have changed
/// something (to replay, [`WriterConn::undo_after`]), and its deferred rows.
pub(crate) struct LiteBatch {
    pub(crate) conn: rusqlite::Connection,
    journal: Vec<Step>,
    held: Held,
}

enum Step {
    Ran(Query),
    /// The deferred rows `from..to` went in.
    Inserted(usize, usize),
}

/// A batch's deferred rows ([`WriterConn::insert`]) and the numbers it gave them.
#[derive(Default)]
struct Held {
    /// Every row deferred this batch, in order; those before `inserted` are in the
    /// database.
    rows: Vec<Deferred>,
    inserted: usize,
    /// Each numbered table the batch has inserted into: its next number.
    numbers: Vec<Numbers>,
}

struct Deferred {
    table: &'static Table,
    params: Vec<Param>,
}

#[derive(Clone, Copy)]
struct Numbers {
    table: &'static Table,
    /// The first number this batch gave (PostgreSQL's sequence is set past the last).
    first: i64,
    next: i64,
}

/// Where a batch is, to undo what came after ([`WriterConn::undo_after`]).
pub(crate) struct Mark {
    journal: usize,
    rows: usize,
    inserted: usize,
    numbers: Vec<Numbers>,
}

#[cfg(test)]
impl Mark {
    /// Statements the batch had run that may have changed something.
    pub(crate) fn statements(&self) -> usize {
        self.journal
    }
}

impl Held {
    fn mark(&self, journal: usize) -> Mark {
        Mark {
            journal,
            rows: self.rows.len(),
            inserted: self.inserted,
            numbers: self.numbers.clone(),
        }
    }

    /// Back to `mark`: the rows deferred since are dropped, and those deferred before it
    /// but inserted since (the database has undone that) are deferred again.
    fn undo(&mut self, mark: Mark) {
        self.rows.truncate(mark.rows);
        self.inserted = mark.inserted;
        self.numbers = mark.numbers;
    }

    /// The next number of `table`, if the batch has numbered its rows already.
    fn next_number(&mut self, table: &'static Table) -> Option<i64> {
        let n = self
            .numbers
            .iter_mut()
            .find(|n| n.table.name == table.name)?;
        n.next += 1;
        Some(n.next - 1)
    }

    /// The batch's first number of `table`, found in the database.
    fn first_number(&mut self, table: &'static Table, first: i64) -> i64 {
        self.numbers.push(Numbers {
            table,
            first,
            next: first + 1,
        });
        first
    }

    /// Defers a row, numbered `number` if its table is numbered.
    fn push(&mut self, table: &'static Table, mut params: Vec<Param>, number: Option<i64>) {
        if let Some(n) = number {
            params.insert(0, Param::Int(n));
        }
        self.rows.push(Deferred { table, params });
    }

    /// The rows not inserted yet, as multi-row statements.
    fn pending(&self, backend: Backend) -> (usize, Vec<(&'static str, Vec<&Param>)>) {
        let (from, to) = (self.inserted, self.rows.len());
        (to, insert_statements(&self.rows[from..to], backend))
    }
}

/// The statements that insert `rows`: each table's rows in order, in multi-row
/// statements ([`rows_per_statement`]), tables by rank.
fn insert_statements(rows: &[Deferred], backend: Backend) -> Vec<(&'static str, Vec<&Param>)> {
    let numbered = match backend {
        Backend::Sqlite => Numbered::Sqlite,
        Backend::Postgres => Numbered::Postgres,
    };
    let mut tables: Vec<&'static Table> = Vec::new();
    for r in rows {
        if !tables.iter().any(|t| t.name == r.table.name) {
            tables.push(r.table);
        }
    }
    tables.sort_by_key(|t| t.rank);
    let mut statements = Vec::new();
    for table in tables {
        let mine: Vec<&Deferred> = rows.iter().filter(|r| r.table.name == table.name).collect();
        let mut at = 0;
        while at < mine.len() {
            let n = rows_per_statement(mine.len() - at, backend);
            let params = mine[at..at + n].iter().flat_map(|r| r.params.iter());
            statements.push((table.insert_sql(n, numbered), params.collect()));
            at += n;
        }
    }
    statements
}

impl LiteBatch {
    /// Inserts the rows deferred since the last time.
    pub(crate) fn insert_deferred(&mut self) -> Result<(), StoreError> {
        let from = self.held.inserted;
        let (to, statements) = self.held.pending(Backend::Sqlite);
        if from == to {
            return Ok(());
        }
        run_lite(&self.conn, statements)?;
        self.held.inserted = to;
        self.journal.push(Step::Inserted(from, to));
        Ok(())
    }

    fn first_number(&mut self, table: &'static Table) -> Result<i64, StoreError> {
        // Past every number AUTOINCREMENT has handed out, deleted rows' included: it
        // keeps the largest in sqlite_sequence, on every insert.
        let next: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = $1), 0) + 1",
            )
            .and_then(|mut stmt| stmt.query_row([table.name], |r| r.get(0)))
            .map_err(lite_error)?;
        Ok(self.held.first_number(table, next))
    }
}

fn run_lite(
    conn: &rusqlite::Connection,
    statements: Vec<(&'static str, Vec<&Param>)>,
) -> Result<(), StoreError> {
    for (sql, params) in statements {
        lite_statement(conn, sql, true, params.into_iter())?
            .raw_execute()
            .map_err(lite_error)?;
    }
    Ok(())
}

impl PgBatch {
    /// Inserts the rows deferred since the last time.
    async fn insert_deferred(&mut self) -> Result<(), StoreError> {
        let (to, statements) = self.held.pending(Backend::Postgres);
        for (sql, params) in statements {
            let done = sqlx_query(sql, params.into_iter())
                .execute(&mut *self.tx)
                .await;
            self.aborted |= done.is_err();
            done?;
        }
        self.held.inserted = to;
        Ok(())
    }

    /// Runs `q` with `run`: the job's savepoint first if `q` writes (or the deferred rows
    /// it goes after are some), then the deferred rows unless `q` is beside them.
    async fn run<T>(
        &mut self,
        q: Query,
        run: impl AsyncFnOnce(Query, &mut sqlx::AnyConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        let flush = q.after_deferred && self.held.inserted < self.held.rows.len();
        if self.job_savepoint == Some(false) && (flush || !q.reads_only()) {
            let sql = if self.savepoint {
                "RELEASE SAVEPOINT job; SAVEPOINT job"
            } else {
                "SAVEPOINT job"
            };
            sqlx::Executor::execute(&mut *self.tx, sql).await?;
            (self.savepoint, self.job_savepoint) = (true, Some(true));
        }
        if flush {
            self.insert_deferred().await?;
        }
        let out = run(q, &mut *self.tx).await;
        self.aborted |= out.is_err();
        Ok(out?)
    }

    /// Taken from the table's sequence under the writers' lock, so batches number in
    /// commit order across replicas.
    async fn first_number(&mut self, table: &'static Table) -> Result<i64, StoreError> {
        let column = table.numbered.unwrap_or_default();
        let row = sqlx_query(
            "SELECT nextval(pg_get_serial_sequence($1, $2)) AS n",
            [&Param::from(table.name), &Param::from(column)].into_iter(),
        )
        .fetch_one(&mut *self.tx)
        .await;
        self.aborted |= row.is_err();
        let row = row?;
        Ok(self
            .held
            .first_number(table, sqlx::Row::try_get(&row, "n")?))
    }

    /// Inserts what is deferred, sets each numbered table's sequence past the numbers the
    /// batch gave (so the database's own numbering stays right), and commits.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        self.insert_deferred().await?;
        for n in std::mem::take(&mut self.held.numbers) {
            if n.next - 1 > n.first {
                let column = n.table.numbered.unwrap_or_default();
                sqlx_query(
                    "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                    [
                        &Param::from(n.table.name),
                        &Param::from(column),
                        &Param::Int(n.next - 1),
                    ]
                    .into_iter(),
                )
                .execute(&mut *self.tx)
                .await?;
            }
        }
        Ok(self.tx.commit().await?)
    }
}

impl WriterConn {
    /// The SQLite writer's batch on `conn` (inside `BEGIN IMMEDIATE`).
    pub(crate) fn lite(conn: rusqlite::Connection) -> WriterConn {
        WriterConn::Lite(Box::new(LiteBatch {
            conn,
            journal: Vec::new(),
            held: Held::default(),
        }))
    }

    /// The PostgreSQL writer's batch in `tx`.
    pub(crate) fn pg(tx: sqlx::Transaction<'static, Any>) -> WriterConn {
        WriterConn::Any(Box::new(PgBatch {
            tx,
            held: Held::default(),
            savepoint: false,
            job_savepoint: None,
            aborted: false,
        }))
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            WriterConn::Any(_) => Backend::Postgres,
            WriterConn::Lite(_) => Backend::Sqlite,
        }
    }

    fn held(&self) -> &Held {
        match self {
            WriterConn::Any(b) => &b.held,
            WriterConn::Lite(b) => &b.held,
        }
    }

    /// Inserts a row of `table` (its parameters in the order of `table.columns`) and
    /// returns its number if the table is numbered. The row is deferred: the batch's rows
    /// of each table go in together, in multi-row statements, before the next statement
    /// that is not [`Query::beside_deferred`], and at commit at the latest. Only rows
    /// whose insert cannot fail go this way (fresh ids, keys checked first): a deferred
    /// row's failure fails its whole batch.
    pub(crate) async fn insert(
        &mut self,
        table: &'static Table,
        params: Vec<Param>,
    ) -> Result<Option<i64>, StoreError> {
        let number = match (table.numbered, &mut *self) {
            (None, _) => None,
            (Some(_), WriterConn::Any(b)) => Some(match b.held.next_number(table) {
                Some(n) => n,
                None => b.first_number(table).await?,
            }),
            (Some(_), WriterConn::Lite(b)) => Some(match b.held.next_number(table) {
                Some(n) => n,
                None => b.first_number(table)?,
            }),
        };
        match self {
            WriterConn::Any(b) => b.held.push(table, params, number),
            WriterConn::Lite(b) => b.held.push(table, params, number),
        }
        Ok(number)
    }

    /// The parameters of the rows of `table` deferred and not inserted yet.
    pub(crate) fn deferred<'a>(
        &'a self,
        table: &'static Table,
    ) -> impl Iterator<Item = &'a [Param]> + 'a {
        let held = self.held();
        let skip = usize::from(table.numbered.is_some());
        held.rows[held.inserted..]
            .iter()
            .filter(move |r| r.table.name == table.name)
            .map(move |r| &r.params[skip..])
    }

    /// After the batch's last job: inserts every deferred row now. What runs after needs
    /// no savepoint.
    pub(crate) async fn finish_jobs(&mut self) -> Result<(), StoreError> {
        match self {
            WriterConn::Any(b) => {
                b.job_savepoint = None;
                b.insert_deferred().await
            }
            WriterConn::Lite(b) => b.insert_deferred(),
        }
    }

    /// Begins a job, so that what it does can be undone with [`WriterConn::undo_after`].
    /// On PostgreSQL its savepoint is taken before its first statement that writes (the
    /// one before it released in the same round trip): a job that only reads and holds
    /// rows back, as a SubmitReferral does, needs none. On SQLite the mark is all.
    pub(crate) fn begin_job(&mut self) -> Mark {
        match self {
            WriterConn::Any(b) => {
                b.job_savepoint = Some(false);
                b.held.mark(0)
            }
            WriterConn::Lite(b) => b.held.mark(b.journal.len()),
        }
    }

    /// Whether something since `mark` may have changed something (SQLite).
    #[cfg(test)]
    pub(crate) fn changed_since(&self, mark: &Mark) -> bool {
        match self {
            WriterConn::Any(_) => true,
            WriterConn::Lite(b) => b.journal.len() > mark.journal || b.held.rows.len() > mark.rows,
        }
    }

    /// Undoes what the batch did after `mark` (the failing job's changes); rows deferred
    /// since, and not inserted yet, are dropped.
    ///
    /// PostgreSQL rolls back to the job's savepoint, if it took one; earlier jobs' deferred
    /// rows that the job's statements had inserted are deferred again. A job that took
    /// none wrote nothing but held-back rows, so dropping them is all, unless one of its
    /// reads failed at the database: that fails the batch. SQLite has no savepoint, which
    /// costs a copy of every page a job touches: if statements ran since `mark`, the
    /// transaction is rolled back and begun again, and what ran before `mark` runs again,
    /// in order. The writer is the database's only writer, so the same statements meet the
    /// same state and give the same rows (sequence numbers included: AUTOINCREMENT's
    /// counters roll back too, and so do the writer's own), and what the jobs before were
    /// told stays true. That is needed only when a job fails after it has written.
    pub(crate) async fn undo_after(&mut self, mark: Mark) -> Result<(), StoreError> {
        match self {
            WriterConn::Any(b) => {
                if b.job_savepoint == Some(true) {
                    sqlx::Executor::execute(&mut *b.tx, "ROLLBACK TO SAVEPOINT job").await?;
                    b.aborted = false;
                } else if b.aborted {
                    // Only a read failed, and the job took no savepoint: a fault of the
                    // database's (a lost connection, say), and its whole batch's.
                    return Err(StoreError::Commit(
                        "a statement failed and the transaction cannot go on".into(),
                    ));
                }
                b.held.undo(mark);
            }
            WriterConn::Lite(b) => {
                if b.journal.len() > mark.journal {
                    b.conn
                        .execute_batch("ROLLBACK; BEGIN IMMEDIATE")
                        .map_err(lite_error)?;
                    b.journal.truncate(mark.journal);
                    for step in &b.journal {
                        match step {
                            Step::Ran(q) => {
                                let mut stmt = q.lite_statement(&b.conn)?;
                                let mut rows = stmt.raw_query();
                                while rows.next().map_err(lite_error)?.is_some() {}
                            }
                            Step::Inserted(from, to) => run_lite(
                                &b.conn,
                                insert_statements(&b.held.rows[*from..*to], Backend::Sqlite),
                            )?,
                        }
                    }
                }
                b.held.undo(mark);
            }
        }
        Ok(())
    }
}

impl Query {
    /// A query that reads only (and so need not be replayed).
    fn reads_only(&self) -> bool {
        self.sql
            .trim_start()
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case("select"))
    }
}

impl LiteBatch {
    /// Runs `q` with `run` (after the deferred rows, unless it is beside them), and
    /// journals it if it may have changed something.
    fn run<T>(
        &mut self,
        q: Query,
        run: impl FnOnce(&Query, &rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if q.after_deferred {
            self.insert_deferred()?;
        }
        let out = run(&q, &self.conn)?;
        if !q.reads_only() {
            self.journal.push(Step::Ran(q));
        }
        Ok(out)
    }
}

impl Conn for &mut WriterConn {
    async fn execute(self, q: Query) -> Result<u64, StoreError> {
        match self {
            WriterConn::Any(b) => {
                b.run(q, async |q, tx| {
                    Ok(q.sqlx().execute(tx).await?.rows_affected())
                })
                .await
            }
            WriterConn::Lite(b) => b.run(q, |q, conn| {
                Ok(q.lite_statement(conn)?.raw_execute().map_err(lite_error)? as u64)
            }),
        }
    }

    async fn fetch_all(self, q: Query) -> Result<Vec<DbRow>, StoreError> {
        match self {
            WriterConn::Any(b) => {
                b.run(q, async |q, tx| {
                    let rows = q.sqlx().fetch_all(tx).await?;
                    Ok(rows.into_iter().map(DbRow::Any).collect())
                })
                .await
            }
            WriterConn::Lite(b) => b.run(q, Query::lite),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered_ones_outside_literals() {
        assert_eq!(
            sqlite_placeholders("SELECT a FROM t WHERE x = $1 AND y IN ($2, $10) AND z = '$3'"),
            "SELECT a FROM t WHERE x = ?1 AND y IN (?2, ?10) AND z = '$3'"
        );
    }

    #[test]
    fn numbered_parameters_bind_by_number_in_any_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let in_order = q("SELECT $1 AS a, $2 AS b, $1 AS c").bind("x").bind("y");
        let out_of_order = q("SELECT $2 AS b, $1 AS a, '$3' AS d").bind("x").bind("y");
        let first = in_order.lite(&conn).unwrap();
        let second = out_of_order.lite(&conn).unwrap();
        let col = |rows: &[DbRow], name: &str| rows[0].col::<String>(name).unwrap();
        assert_eq!(
            (col(&first, "a"), col(&first, "b"), col(&first, "c")),
            ("x".into(), "y".into(), "x".into())
        );
        assert_eq!(
            (col(&second, "a"), col(&second, "b"), col(&second, "d")),
            ("x".into(), "y".into(), "$3".into())
        );
    }

    #[tokio::test]
    async fn undo_after_keeps_what_came_before_with_its_sequence_numbers() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL); \
             INSERT INTO t (v) VALUES ('committed'); BEGIN IMMEDIATE",
        )
        .unwrap();
        let mut w = WriterConn::lite(conn);
        let insert = |v: &str| q("INSERT INTO t (v) VALUES ($1) RETURNING seq").bind(v);
        let seq = |rows: Vec<DbRow>| rows[0].col::<i64>("seq").unwrap();
        let a = seq(insert("a").fetch_all(&mut w).await.unwrap());
        q("UPDATE t SET v = 'a2' WHERE v = $1")
            .bind("a")
            .execute(&mut w)
            .await
            .unwrap();
        q("SELECT v FROM t").fetch_all(&mut w).await.unwrap();
        let mark = w.begin_job();
        assert!(!w.changed_since(&mark), "a read changes nothing");
        let b = seq(insert("b").fetch_all(&mut w).await.unwrap());
        assert!(w.changed_since(&mark));
        w.undo_after(mark).await.unwrap();
        // b is gone, a and its update stay, and the next row gets b's number again.
        let c = seq(insert("c").fetch_all(&mut w).await.unwrap());
        assert_eq!((a, b, c), (2, 3, 3));
        let rows = q("SELECT seq, v FROM t ORDER BY seq")
            .fetch_all(&mut w)
            .await
            .unwrap();
        let got: Vec<(i64, String)> = rows
            .iter()
            .map(|r| (r.col("seq").unwrap(), r.col("v").unwrap()))
            .collect();
        let want = [(1, "committed"), (2, "a2"), (3, "c")];
        assert_eq!(got, want.map(|(s, v)| (s, v.to_string())));
    }
}

#[cfg(test)]
mod deferred_tests {
    use super::*;

    static PARENTS: Table = Table::new("parents", "id", None, 0);
    static CHILDREN: Table = Table::new("children", "parent, v", Some("seq"), 1);

    /// A batch on a database with a parent table and a numbered child table whose
    /// foreign key points at it; child number 7 was used once and deleted.
    fn batch() -> WriterConn {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; \
             CREATE TABLE parents (id TEXT PRIMARY KEY); \
             CREATE TABLE children (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
               parent TEXT NOT NULL REFERENCES parents (id), v TEXT NOT NULL); \
             INSERT INTO parents (id) VALUES ('old'); \
             INSERT INTO children (seq, parent, v) VALUES (7, 'old', 'deleted'); \
             DELETE FROM children; BEGIN IMMEDIATE",
        )
        .unwrap();
        WriterConn::lite(conn)
    }

    async fn child(w: &mut WriterConn, parent: &str, v: &str) -> i64 {
        let row = vec![Param::from(parent), Param::from(v)];
        w.insert(&CHILDREN, row).await.unwrap().unwrap()
    }

    async fn parent(w: &mut WriterConn, id: &str) {
        let row = vec![Param::from(id)];
        assert_eq!(w.insert(&PARENTS, row).await.unwrap(), None);
    }

    async fn children(w: &mut WriterConn) -> Vec<(i64, String, String)> {
        q("SELECT seq, parent, v FROM children ORDER BY seq")
            .fetch_all(w)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let col = |c| r.col::<String>(c).unwrap();
                (r.col("seq").unwrap(), col("parent"), col("v"))
            })
            .collect()
    }

    fn row(seq: i64, parent: &str, v: &str) -> (i64, String, String) {
        (seq, parent.to_string(), v.to_string())
    }

    #[tokio::test]
    async fn deferred_rows_go_in_parents_first_numbered_past_every_used_number() {
        let mut w = batch();
        // A child of an existing parent, then a new parent and its child: the second
        // child's parent is inserted before it although the first child came first.
        assert_eq!(child(&mut w, "old", "a").await, 8);
        parent(&mut w, "new").await;
        assert_eq!(child(&mut w, "new", "b").await, 9);
        assert_eq!(w.deferred(&CHILDREN).count(), 2);
        assert!(
            w.deferred(&CHILDREN).all(|r| r.len() == 2),
            "numbers left out"
        );
        // A statement that is not beside them sees them.
        let got = children(&mut w).await;
        assert_eq!(got, [row(8, "old", "a"), row(9, "new", "b")]);
        assert_eq!(w.deferred(&CHILDREN).count(), 0);
        assert_eq!(child(&mut w, "new", "c").await, 10);
    }

    #[tokio::test]
    async fn a_query_beside_the_deferred_rows_does_not_insert_them() {
        let mut w = batch();
        child(&mut w, "old", "a").await;
        let count = || q("SELECT COUNT(*) AS n FROM children");
        let rows = count().beside_deferred().fetch_all(&mut w).await.unwrap();
        assert_eq!(rows[0].col::<i64>("n").unwrap(), 0);
        assert_eq!(w.deferred(&CHILDREN).count(), 1);
        w.finish_jobs().await.unwrap();
        let rows = count().beside_deferred().fetch_all(&mut w).await.unwrap();
        assert_eq!(rows[0].col::<i64>("n").unwrap(), 1);
    }

    #[tokio::test]
    async fn undoing_a_job_drops_its_rows_and_keeps_the_earlier_jobs_rows() {
        let mut w = batch();
        // Job 1 succeeds with deferred rows only.
        child(&mut w, "old", "job 1").await;
        // Job 2 defers a row and fails before anything ran: only its row goes.
        let mark = w.begin_job();
        child(&mut w, "old", "job 2").await;
        assert!(w.changed_since(&mark));
        w.undo_after(mark).await.unwrap();
        // Job 3 defers a row, runs a statement (which inserts job 1's row and its own),
        // and fails: the transaction is replayed without it, and job 1's row is back
        // among the deferred ones.
        let mark = w.begin_job();
        assert_eq!(
            child(&mut w, "old", "job 3").await,
            9,
            "job 2's number again"
        );
        q("UPDATE parents SET id = id")
            .execute(&mut w)
            .await
            .unwrap();
        assert_eq!(w.deferred(&CHILDREN).count(), 0);
        w.undo_after(mark).await.unwrap();
        assert_eq!(w.deferred(&CHILDREN).count(), 1);
        // Job 4 gets job 3's number.
        assert_eq!(child(&mut w, "old", "job 4").await, 9);
        let got = children(&mut w).await;
        assert_eq!(got, [row(8, "old", "job 1"), row(9, "old", "job 4")]);
    }

    #[test]
    fn statements_of_many_rows_come_in_few_shapes_up_to_64_rows() {
        let sizes = |backend| -> Vec<usize> {
            [0, 1, 2, 3, 5, 8, 9, 30, 63, 64, 65, 1000]
                .into_iter()
                .map(|n| rows_per_statement(n, backend))
                .collect()
        };
        assert_eq!(
            sizes(Backend::Sqlite),
            [1, 1, 2, 2, 4, 8, 8, 16, 32, 64, 64, 64]
        );
        assert_eq!(
            sizes(Backend::Postgres),
            [1, 1, 2, 3, 5, 8, 8, 24, 56, 64, 64, 64]
        );
        assert_eq!(
            CHILDREN.insert_sql(2, Numbered::Sqlite),
            "INSERT INTO children (seq, parent, v) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(
            CHILDREN.insert_sql(1, Numbered::No),
            "INSERT INTO children (parent, v) VALUES ($1, $2)"
        );
        assert_eq!(
            CHILDREN.insert_sql(1, Numbered::Postgres),
            "INSERT INTO children (seq, parent, v) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)"
        );
        assert_eq!(
            PARENTS.insert_sql(1, Numbered::Postgres),
            "INSERT INTO parents (id) VALUES ($1)",
            "a table without a numbered column"
        );
    }
}
