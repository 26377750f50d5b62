//! One way to write a query for both connections the store has: sqlx's `Any` driver (the
//! read pool, and the writer on PostgreSQL) and the SQLite writer's own rusqlite connection,
//! which runs a whole batch on the writer's thread with cached prepared statements and no
//! hand-off per statement.
//!
//! A query is its SQL text (numbered placeholders `$1`, `$2`, …, which both accept) and its
//! parameters; a row is read by column name with [`Row::col`]. Every query is written once.

use std::sync::Arc;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, Row as _};

use super::StoreError;

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

/// A query and its parameters, run with `execute` or `fetch_*` on a [`Conn`].
pub(crate) struct Query {
    sql: String,
    params: Vec<Param>,
}

/// `sqlx::query`'s shape: `q(sql).bind(a).bind(b).fetch_all(conn)`.
pub(crate) fn q(sql: impl Into<String>) -> Query {
    Query {
        sql: sql.into(),
        params: Vec::new(),
    }
}

impl Query {
    pub(crate) fn bind(mut self, value: impl Into<Param>) -> Query {
        self.params.push(value.into());
        self
    }

    /// With parameters collected elsewhere (`SqlBuilder`).
    pub(crate) fn with_params(sql: impl Into<String>, params: Vec<Param>) -> Query {
        Query {
            sql: sql.into(),
            params,
        }
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
        self.params
            .iter()
            .fold(sqlx::query(&self.sql), |q, p| match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::OptText(s) => q.bind(s.as_deref()),
                Param::Int(i) => q.bind(*i),
                Param::OptInt(i) => q.bind(*i),
                Param::Blob(b) => q.bind(b.as_slice()),
            })
    }

    /// The statement, prepared (cached per connection) and bound, as SQLite runs it.
    /// SQLite reads `$N` as a named parameter, numbered in the order the names first
    /// appear: the text is used as written (no copy per call) when that order is `$1`,
    /// `$2`, …, as the queries are written, and with `?N` placeholders otherwise.
    fn lite_statement<'c>(
        &self,
        conn: &'c rusqlite::Connection,
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        let mut stmt = conn.prepare_cached(&self.sql).map_err(lite_error)?;
        if !numbered_in_order(&stmt) {
            drop(stmt);
            stmt = conn
                .prepare_cached(&sqlite_placeholders(&self.sql))
                .map_err(lite_error)?;
        }
        for (i, p) in self.params.iter().enumerate() {
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
        let explain = Query {
            sql: format!("EXPLAIN QUERY PLAN {}", self.sql),
            params: self.params.clone(),
        };
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

/// The writer's connection for one batch.
pub(crate) enum WriterConn {
    /// A sqlx transaction (PostgreSQL).
    Any(sqlx::Transaction<'static, Any>),
    /// The SQLite writer's own connection, inside `BEGIN IMMEDIATE`, with every
    /// statement of the batch that may have changed something, in order (see
    /// [`WriterConn::undo_after`]).
    Lite(Box<rusqlite::Connection>, Vec<Query>),
}

impl WriterConn {
    /// Where the batch is: how many changing statements it has run (SQLite), for
    /// [`WriterConn::undo_after`].
    pub(crate) fn mark(&self) -> usize {
        match self {
            WriterConn::Any(_) => 0,
            WriterConn::Lite(_, journal) => journal.len(),
        }
    }

    /// Whether a statement ran since `mark` that may have changed something.
    pub(crate) fn changed_since(&self, mark: usize) -> bool {
        self.mark() > mark
    }

    /// Undoes what the batch did after `mark` (SQLite): the transaction is rolled back and
    /// begun again, and its statements before `mark` run again, in order. The writer is the
    /// database's only writer, so the same statements meet the same state and give the same
    /// rows (sequence numbers included: AUTOINCREMENT's counters roll back too), and what
    /// the jobs before were told stays true. This replaces a savepoint per job, which costs
    /// a copy of every page a job touches, and is needed only when a job fails after it
    /// has written.
    pub(crate) fn undo_after(&mut self, mark: usize) -> Result<(), StoreError> {
        match self {
            WriterConn::Any(_) => Err(StoreError::Corrupt(
                "undo_after is for the SQLite writer".into(),
            )),
            WriterConn::Lite(conn, journal) => {
                conn.execute_batch("ROLLBACK; BEGIN IMMEDIATE")
                    .map_err(lite_error)?;
                journal.truncate(mark);
                for q in journal.iter() {
                    let mut stmt = q.lite_statement(conn)?;
                    let mut rows = stmt.raw_query();
                    while rows.next().map_err(lite_error)?.is_some() {}
                }
                Ok(())
            }
        }
    }
}

impl WriterConn {
    /// Statements without parameters, sent together: on PostgreSQL one round trip (the
    /// simple query protocol). For transaction control only: SQLite's replay journal does
    /// not record them.
    pub(crate) async fn simple(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            WriterConn::Any(tx) => {
                // A bare string is sent with the simple query protocol.
                sqlx::Executor::execute(&mut **tx, sql).await?;
                Ok(())
            }
            WriterConn::Lite(conn, _) => conn.execute_batch(sql).map_err(lite_error),
        }
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

impl Conn for &mut WriterConn {
    async fn execute(self, q: Query) -> Result<u64, StoreError> {
        match self {
            WriterConn::Any(tx) => Ok(q.sqlx().execute(&mut **tx).await?.rows_affected()),
            WriterConn::Lite(conn, journal) => {
                let changed = q.lite_statement(conn)?.raw_execute().map_err(lite_error)? as u64;
                if !q.reads_only() {
                    journal.push(q);
                }
                Ok(changed)
            }
        }
    }

    async fn fetch_all(self, q: Query) -> Result<Vec<DbRow>, StoreError> {
        match self {
            WriterConn::Any(tx) => {
                let rows = q.sqlx().fetch_all(&mut **tx).await?;
                Ok(rows.into_iter().map(DbRow::Any).collect())
            }
            WriterConn::Lite(conn, journal) => {
                let rows = q.lite(conn)?;
                if !q.reads_only() {
                    journal.push(q);
                }
                Ok(rows)
            }
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
        let mut w = WriterConn::Lite(Box::new(conn), Vec::new());
        let insert = |v: &str| q("INSERT INTO t (v) VALUES ($1) RETURNING seq").bind(v);
        let seq = |rows: Vec<DbRow>| rows[0].col::<i64>("seq").unwrap();
        let a = seq(insert("a").fetch_all(&mut w).await.unwrap());
        q("UPDATE t SET v = 'a2' WHERE v = $1")
            .bind("a")
            .execute(&mut w)
            .await
            .unwrap();
        q("SELECT v FROM t").fetch_all(&mut w).await.unwrap();
        let mark = w.mark();
        assert!(!w.changed_since(mark), "a read changes nothing");
        let b = seq(insert("b").fetch_all(&mut w).await.unwrap());
        assert!(w.changed_since(mark));
        w.undo_after(mark).unwrap();
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
