//! One way to write a query for both connections the store has: sqlx's `Any` driver (the
//! read pool, and the writer on PostgreSQL) and the SQLite writer's own rusqlite connection,
//! which runs a whole batch on the writer's thread with cached prepared statements and no
//! hand-off per statement.
//!
//! A query is its SQL text (numbered placeholders `$1`, `$2`, …, which both accept) and its
//! parameters; a row is read by column name with [`Row::col`]. Every query is written once.

use sqlx::any::{AnyArguments, AnyRow};
use std::sync::Arc;

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

    /// The statement, prepared (cached per connection) and bound, as SQLite runs it:
    /// `$N` placeholders as SQLite's `?N`.
    fn lite_statement<'c>(
        &self,
        conn: &'c rusqlite::Connection,
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        let sql = sqlite_placeholders(&self.sql);
        let mut stmt = conn.prepare_cached(&sql).map_err(lite_error)?;
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
    StoreError::Db(sqlx::Error::Database(Box::new(LiteError {
        message: e.to_string(),
        kind,
    })))
}

#[derive(Debug)]
struct LiteError {
    message: String,
    kind: sqlx::error::ErrorKind,
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

/// SQLite connections for point reads (one row by id, one exchange's history), run on the
/// calling thread: an indexed lookup in WAL mode takes microseconds, less than handing the
/// statement to a driver thread and back. Lists and scans stay on the pool.
pub(crate) struct Readers {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

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
    /// The SQLite writer's own connection, inside `BEGIN IMMEDIATE`.
    Lite(Box<rusqlite::Connection>),
}

impl Conn for &mut WriterConn {
    async fn execute(self, q: Query) -> Result<u64, StoreError> {
        match self {
            WriterConn::Any(tx) => Ok(q.sqlx().execute(&mut **tx).await?.rows_affected()),
            WriterConn::Lite(conn) => {
                Ok(q.lite_statement(conn)?.raw_execute().map_err(lite_error)? as u64)
            }
        }
    }

    async fn fetch_all(self, q: Query) -> Result<Vec<DbRow>, StoreError> {
        match self {
            WriterConn::Any(tx) => {
                let rows = q.sqlx().fetch_all(&mut **tx).await?;
                Ok(rows.into_iter().map(DbRow::Any).collect())
            }
            WriterConn::Lite(conn) => q.lite(conn),
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
}
