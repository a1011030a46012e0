//! SQLite without a thread hop per statement (issue 14, item 4).
//!
//! sqlx runs each SQLite connection on a worker thread of its own: every
//! statement is sent there and its result sent back, so a group commit of
//! `BEGIN`, a bulk `UPDATE`, an `INSERT` and `COMMIT` crossed threads eight
//! times. [`Direct::transaction`] takes the pool's one write connection as
//! usual (so it still queues behind this process's other writers,
//! heartbeats included) and then runs a whole transaction on the calling
//! thread through `rusqlite`, which links the same `libsqlite3-sys` as sqlx.
//!
//! On a database file the transaction runs on a connection of this
//! process's own ([`OwnConn`]), opened beside the pool's: the pooled
//! connection is only held, as the token that keeps this process's writers
//! in one queue, so a batch costs no round trip to sqlx's worker, and the
//! own connection keeps its prepared statements from batch to batch. An
//! in-memory database exists only on the pool's connection: there sqlx's
//! worker is asked to let go of its SQLite handle (one round trip), which
//! goes back to it, in autocommit, before the pooled connection is
//! released. So does a file whose own connection could not be opened (or
//! opened again), and one whose URL asks for what the own connection would
//! not honour: read-only, immutable, another VFS.
//!
//! [`Direct`] implements [`Writes`], so the statements are the ones the
//! other databases run, built by the same code.

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx::error::{DatabaseError, ErrorKind};
use sea_orm::{ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement};

use super::writes::Writes;

/// This process's own write connection to a SQLite file, used by
/// [`Direct::transaction`] while it holds the pool's one connection (so
/// the two never write at once: no in-process lock wait). It is sound only
/// because rusqlite links the very SQLite library sqlx does: one library
/// in the process keeps one table of the file's POSIX locks, so closing
/// either connection cannot drop the other's locks.
pub(crate) struct OwnConn {
    /// `None` once closed ([`OwnConn::close`]) or when it could not be
    /// opened again: the transactions go through the pool's handle then.
    slot: Mutex<Option<Opened>>,
    path: PathBuf,
    closed: AtomicBool,
    /// Makes opening again fail (a test of what follows).
    #[cfg(test)]
    fail_reopen: AtomicBool,
}

/// An open own connection.
type Opened = Arc<Mutex<rusqlite::Connection>>;

/// Prepared statements kept per own connection: a batch's text changes
/// with its size, so one per size and shape that recurs.
const STATEMENT_CACHE: usize = 256;

impl OwnConn {
    /// Opens `path` (the file the pool already opened and set to WAL) with
    /// the pool's settings: `synchronous = NORMAL`, foreign keys on, the
    /// busy timeout.
    pub(crate) fn open(path: PathBuf) -> Result<OwnConn, DbErr> {
        // Reopened later by this path: made absolute now, so that a change
        // of the working directory cannot point it at another file.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let opened = Self::connect(&path)?;
        Ok(OwnConn {
            slot: Mutex::new(Some(opened)),
            path,
            closed: AtomicBool::new(false),
            #[cfg(test)]
            fail_reopen: AtomicBool::new(false),
        })
    }

    fn connect(path: &std::path::Path) -> Result<Opened, DbErr> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        conn.busy_timeout(crate::db::SQLITE_BUSY_TIMEOUT)
            .map_err(db_err)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Arc::new(Mutex::new(conn)))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection for the next transaction; `None` when closed or not
    /// opened again. Only the holder of the pool's connection calls it, so
    /// the returned connection has no other user.
    fn current(&self) -> Option<Opened> {
        self.slot().clone()
    }

    /// Closes a connection left in a transaction (closing rolls it back
    /// and lets go of the file's write lock, whatever happens next) and
    /// opens a fresh one; if that fails, the transactions go through the
    /// pool's handle from now on.
    fn discard(&self) {
        let mut slot = self.slot();
        if let Some(old) = slot.take() {
            close_connection(old);
        }
        self.reopen(&mut slot);
        if slot.is_some() {
            tracing::warn!(
                "the SQLite write connection was left in a transaction: closed and opened again"
            );
        } else {
            tracing::warn!("the SQLite write connection was left in a transaction: closed; writing through the pool's");
        }
    }

    fn reopen(&self, slot: &mut Option<Opened>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        #[cfg(test)]
        if self.fail_reopen.load(Ordering::Relaxed) {
            tracing::warn!("opening the SQLite write connection again failed (test)");
            return;
        }
        match Self::connect(&self.path) {
            Ok(fresh) => *slot = Some(fresh),
            Err(e) => {
                tracing::warn!(error = %e, "opening the SQLite write connection again failed; writing through the pool's");
            }
        }
    }

    /// Closes the connection for good (with the pool's, so that the last
    /// one closed checkpoints the write-ahead log into the file).
    pub(crate) fn close(&self) {
        let mut slot = self.slot();
        self.closed.store(true, Ordering::Relaxed);
        if let Some(old) = slot.take() {
            close_connection(old);
        }
    }

    /// Whether the connection is open.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.slot().is_some()
    }
}

/// Closes an own connection, saying so if SQLite refused (dropping a
/// connection would ignore it). A transaction still running on it (a
/// [`OwnConn::close`] while a writer holds it) keeps it until that ends.
fn close_connection(conn: Opened) {
    let Ok(conn) = Arc::try_unwrap(conn) else {
        return;
    };
    let conn = conn.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the SQLite write connection failed");
    }
}

impl std::fmt::Debug for OwnConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnConn").field("path", &self.path).finish()
    }
}

/// One SQLite connection used on the calling thread for one transaction:
/// this process's own ([`OwnConn`]) or the pool's, borrowed from sqlx's
/// worker thread.
pub(crate) struct Direct<'a> {
    conn: &'a Mutex<rusqlite::Connection>,
    /// Whether prepared statements outlive the transaction (own
    /// connection only: a borrowed handle's go with it).
    cached: bool,
}

impl Direct<'_> {
    /// Runs `f` in a transaction (`BEGIN IMMEDIATE`, as
    /// [`super::begin`]: it holds the write lock from the start) on this
    /// process's own connection `own` (a file; see [`OwnConn`]), or else on
    /// the one write connection of `pool` (SQLite), on this thread, while
    /// holding `pool`'s connection either way. `f` commits; a transaction it
    /// leaves open (an error, a panic) is rolled back here.
    pub(crate) async fn transaction<T>(
        pool: &DatabaseConnection,
        own: Option<&OwnConn>,
        f: impl FnOnce(&Direct<'_>) -> T,
    ) -> Result<T, DbErr> {
        let pool = pool.get_sqlite_connection_pool();
        let mut pooled = pool.acquire().await.map_err(acquire_err)?;
        if let Some((own, conn)) = own.and_then(|o| Some((o, o.current()?))) {
            let direct = Direct {
                conn: &conn,
                cached: true,
            };
            // A panic in `f` still leaves the connection in autocommit or
            // closed before the pool's connection is let go.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                direct.run_transaction(f)
            }));
            drop(direct);
            let clean = conn
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_autocommit();
            drop(conn);
            if !clean {
                own.discard();
            }
            drop(pooled);
            return match ran {
                Ok((out, _)) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            };
        }
        let mut locked = pooled
            .lock_handle()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        let raw = locked.as_raw_handle();
        // SAFETY: `raw` is an open `sqlite3` handle, and while `locked`
        // lives sqlx's worker thread makes no call on it or on its
        // statements (`LockedSqliteHandle::as_raw_handle`). The
        // `rusqlite::Connection` made from it does not own it (it will not
        // close it) and is dropped, with every statement it prepared,
        // before `locked` is.
        #[allow(unsafe_code)]
        let conn = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }.map_err(db_err)?;
        let conn = Mutex::new(conn);
        let direct = Direct {
            conn: &conn,
            cached: false,
        };
        let (out, clean) = direct.run_transaction(f);
        drop(direct);
        drop(conn);
        drop(locked);
        if !clean {
            // Even the rollback failed: never hand sqlx a connection in a
            // transaction; close it, and the pool opens another.
            tracing::warn!("a SQLite connection left in a transaction is closed");
            pooled.close_on_drop();
        }
        out
    }

    /// `BEGIN IMMEDIATE`, `f`, and a rollback of whatever `f` left open;
    /// whether the connection is back in autocommit.
    fn run_transaction<T>(&self, f: impl FnOnce(&Direct<'_>) -> T) -> (Result<T, DbErr>, bool) {
        // Only another process holding the file's write lock (nodes that
        // share one file) makes `BEGIN IMMEDIATE` wait, up to the busy
        // timeout: try without waiting first, and wait only off the
        // runtime's thread (`block_in_place` costs about a sixth of a
        // one-checkpoint batch, so not every time).
        let out = match self.begin_without_waiting() {
            Ok(true) => Ok(f(self)),
            Ok(false) => tokio::task::block_in_place(|| {
                self.begin()?;
                Ok::<_, DbErr>(f(self))
            }),
            Err(e) => Err(e),
        };
        self.rollback();
        let clean = self.conn().is_autocommit();
        (out, clean)
    }

    /// Runs `fut`, which uses only [`Direct`] statements, on this thread.
    /// They complete when first polled; a future that waits for anything
    /// else is a bug, answered as an error (which rolls back and frees the
    /// connection) rather than a thread blocked for good.
    pub(super) fn now<T, E: From<DbErr>>(fut: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        use futures::FutureExt;
        fut.now_or_never().unwrap_or_else(|| {
            Err(DbErr::Custom("a statement on the direct SQLite connection waited".into()).into())
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        // Only `Direct::transaction`'s closure uses it, on one thread: a poisoned
        // lock means that closure panicked, and the connection is still
        // sound (SQLite keeps no state in Rust's hands).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `BEGIN IMMEDIATE`, waiting up to the busy timeout for the lock.
    fn begin(&self) -> Result<(), DbErr> {
        self.conn().execute_batch("BEGIN IMMEDIATE").map_err(db_err)
    }

    /// `BEGIN IMMEDIATE` if the write lock is free now: `false` if another
    /// process holds it.
    fn begin_without_waiting(&self) -> Result<bool, DbErr> {
        let conn = self.conn();
        conn.busy_timeout(Duration::ZERO).map_err(db_err)?;
        let r = conn.execute_batch("BEGIN IMMEDIATE");
        conn.busy_timeout(crate::db::SQLITE_BUSY_TIMEOUT)
            .map_err(db_err)?;
        match r {
            Ok(()) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                Ok(false)
            }
            Err(e) => Err(db_err(e)),
        }
    }

    /// `COMMIT`. When it fails and SQLite kept the transaction open (a
    /// busy lock), nothing was written and it is rolled back here; when
    /// SQLite ended it (an I/O error can come after the commit record was
    /// written), its outcome is unknown.
    pub(super) fn commit(&self) -> Result<(), CommitFailed> {
        let conn = self.conn();
        match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) if !conn.is_autocommit() => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(CommitFailed::NotWritten(db_err(e)))
            }
            Err(e) => Err(CommitFailed::Unknown(db_err(e))),
        }
    }

    /// `ROLLBACK`, if a transaction is open.
    pub(super) fn rollback(&self) {
        let conn = self.conn();
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }

    /// Runs `stmt`, stepping through any rows it returns; the first column
    /// of each row as text (see [`Writes::ids`]), and how many rows it
    /// changed.
    fn run(&self, stmt: &Statement) -> Result<(Vec<String>, u64), DbErr> {
        let conn = self.conn();
        let params: Vec<rusqlite::types::Value> = match &stmt.values {
            Some(v) => v.0.iter().map(to_sqlite).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let out = if self.cached {
            let mut prepared = conn.prepare_cached(&stmt.sql).map_err(db_err)?;
            first_column(&mut prepared, params)?
        } else {
            let mut prepared = conn.prepare(&stmt.sql).map_err(db_err)?;
            first_column(&mut prepared, params)?
        };
        // The rows the statement (an INSERT, UPDATE or DELETE: all
        // `Writes` runs) changed.
        let changed = conn.changes();
        Ok((out, changed))
    }

    /// Whether a transaction is open.
    #[cfg(test)]
    fn in_transaction(&self) -> bool {
        !self.conn().is_autocommit()
    }
}

/// Why a [`Direct::commit`] failed.
#[derive(Debug)]
pub(super) enum CommitFailed {
    /// Nothing was written (the transaction was rolled back).
    NotWritten(DbErr),
    /// It may or may not have been written.
    Unknown(DbErr),
}

/// Steps `prepared` with `params`; the first column of each row, as text.
fn first_column(
    prepared: &mut rusqlite::Statement<'_>,
    params: Vec<rusqlite::types::Value>,
) -> Result<Vec<String>, DbErr> {
    let mut rows = prepared
        .query(rusqlite::params_from_iter(params))
        .map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        out.push(row.get::<_, String>(0).map_err(db_err)?);
    }
    Ok(out)
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        // Never hand the connection back inside a transaction: sqlx would
        // not know, and its next user would write into it.
        self.rollback();
    }
}

impl Writes for Direct<'_> {
    fn backend(&self) -> DbBackend {
        DbBackend::Sqlite
    }

    async fn exec(&self, stmt: Statement) -> Result<u64, DbErr> {
        Ok(self.run(&stmt)?.1)
    }

    async fn ids(&self, stmt: Statement) -> Result<Vec<String>, DbErr> {
        Ok(self.run(&stmt)?.0)
    }

    async fn exec_unprepared(&self, sql: &str) -> Result<(), DbErr> {
        self.conn().execute_batch(sql).map_err(db_err)
    }
}

/// A bound value as SQLite stores it (as sqlx binds it: booleans and
/// integers as integers, JSON as text).
fn to_sqlite(v: &sea_orm::Value) -> Result<rusqlite::types::Value, DbErr> {
    use rusqlite::types::Value as S;
    use sea_orm::Value as V;
    Ok(match v {
        V::Bool(b) => b.map_or(S::Null, |b| S::Integer(b.into())),
        V::TinyInt(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::SmallInt(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::Int(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::BigInt(n) => n.map_or(S::Null, S::Integer),
        V::TinyUnsigned(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::SmallUnsigned(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::Unsigned(n) => n.map_or(S::Null, |n| S::Integer(n.into())),
        V::BigUnsigned(None) => S::Null,
        V::BigUnsigned(Some(n)) => S::Integer(i64::try_from(*n).map_err(|_| {
            DbErr::Custom(format!(
                "sqlite: the value {n} does not fit a 64-bit integer"
            ))
        })?),
        V::Float(n) => n.map_or(S::Null, |n| S::Real(n.into())),
        V::Double(n) => n.map_or(S::Null, S::Real),
        V::String(s) => s.clone().map_or(S::Null, S::Text),
        V::Char(c) => c.map_or(S::Null, |c| S::Text(c.to_string())),
        V::Bytes(b) => b.clone().map_or(S::Null, S::Blob),
        V::Json(j) => j.as_ref().map_or(S::Null, |j| S::Text(j.to_string())),
        other => {
            return Err(DbErr::Custom(format!(
                "sqlite: cannot bind a value of this type directly: {other:?}"
            )))
        }
    })
}

fn acquire_err(e: sea_orm::sqlx::Error) -> DbErr {
    match e {
        sea_orm::sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sea_orm::sqlx::Error::PoolClosed => {
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)
        }
        e => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
    }
}

/// A rusqlite error as sea-orm reports one of sqlx's: a database error
/// with SQLite's extended result code as its code, so the rest of Baton
/// (unique violations, "nothing was written", busy) reads it the same.
fn db_err(e: rusqlite::Error) -> DbErr {
    let err = match e {
        rusqlite::Error::SqliteFailure(f, msg) => DirectError {
            code: f.extended_code,
            message: msg.unwrap_or_else(|| f.to_string()),
        },
        // rusqlite's own errors (a value it cannot convert, a statement
        // that does not parse into one): the statement did not run, and
        // the transaction it was in is rolled back, so "the database
        // refused it, nothing written" is true of them too.
        other => DirectError {
            code: rusqlite::ffi::SQLITE_MISUSE,
            message: other.to_string(),
        },
    };
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(
        sea_orm::sqlx::Error::Database(Box::new(err)),
    )))
}

/// An error SQLite returned on a [`Direct`] connection.
#[derive(Debug)]
pub(crate) struct DirectError {
    /// SQLite's extended result code.
    pub(crate) code: i32,
    message: String,
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for DirectError {}

impl DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
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

    fn kind(&self) -> ErrorKind {
        match self.code {
            // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
            2067 | 1555 => ErrorKind::UniqueViolation,
            // SQLITE_CONSTRAINT_FOREIGNKEY
            787 => ErrorKind::ForeignKeyViolation,
            // SQLITE_CONSTRAINT_NOTNULL
            1299 => ErrorKind::NotNullViolation,
            // SQLITE_CONSTRAINT_CHECK
            275 => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use sea_orm::{ConnectionTrait, Statement};

    use super::{Direct, Writes};
    use crate::db::Db;

    /// A SQLite file in a scratch directory, with the table `t` of `ddl`.
    async fn scratch(ddl: &'static str) -> (tempfile_dir::Dir, Db) {
        let dir = tempfile_dir::Dir::new();
        let db = Db::connect(&format!("sqlite://{}/d.db?mode=rwc", dir.0.display()), 1)
            .await
            .expect("connect");
        db.run(move |c| async move {
            c.execute_unprepared(ddl).await?;
            Ok(())
        })
        .await
        .expect("table");
        (dir, db)
    }

    /// A scratch directory removed on drop (no dev-dependency for it).
    mod tempfile_dir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Dir {
                let p = std::env::temp_dir().join(format!("baton-direct-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values)
    }

    #[test]
    fn a_direct_transaction_shares_the_pools_connection_and_hands_it_back_in_autocommit() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        // On the pool's borrowed handle, then on this process's own
        // connection.
        for use_own in [false, true] {
            rt.block_on(one_of_each(use_own));
        }
    }

    async fn one_of_each(use_own: bool) {
        {
            let (_dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)").await;
            let own = db.own_sqlite().filter(|_| use_own);
            assert_eq!(own.is_some(), use_own, "a file has its own connection");
            db.run(|c| async move {
                let own = own.as_deref();
                // Committed rows, their ids returned, read back through sqlx.
                let returned = Direct::transaction(&c, own, |d| {
                    let ids = block_on(d.ids(stmt(
                        "INSERT INTO t (id, n) VALUES (?, ?), (?, ?) RETURNING id",
                        vec!["a".into(), 1i64.into(), "b".into(), 2i32.into()],
                    )))?;
                    let changed = block_on(d.exec(stmt(
                        "UPDATE t SET n = n + ? WHERE id IN (?, ?, ?)",
                        vec![10i16.into(), "a".into(), "b".into(), "zz".into()],
                    )))?;
                    d.commit().expect("commit");
                    Ok::<_, sea_orm::DbErr>((ids, changed))
                })
                .await??;
                assert_eq!(returned, (vec!["a".to_owned(), "b".to_owned()], 2));
                // A unique violation reads as one, and wrote nothing.
                let dup = Direct::transaction(&c, own, |d| {
                    let e = block_on(d.exec(stmt(
                        "INSERT INTO t (id, n) VALUES (?, ?)",
                        vec!["a".into(), 3i64.into()],
                    )))
                    .expect_err("a duplicate id");
                    assert!(d.in_transaction());
                    Ok::<_, sea_orm::DbErr>(e)
                    // no commit: dropping `d` rolls back
                })
                .await??;
                assert!(crate::store::is_unique_violation(&dup), "{dup}");
                assert!(crate::store::wrote_nothing(&dup), "{dup}");
                // A transaction left open is rolled back, and sqlx's own
                // transactions work after it.
                Direct::transaction(&c, own, |d| {
                    block_on(d.exec(stmt("INSERT INTO t (id, n) VALUES ('c', 3)", vec![])))
                        .expect("insert");
                })
                .await?;
                let txn = crate::store::begin(&c).await?;
                txn.execute_unprepared("INSERT INTO t (id, n) VALUES ('d', 4)")
                    .await?;
                txn.commit().await?;
                let rows = c
                    .query_all_raw(stmt("SELECT id, n FROM t ORDER BY id", vec![]))
                    .await?;
                let got: Vec<(String, i64)> = rows
                    .iter()
                    .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "n")?)))
                    .collect::<Result<_, sea_orm::DbErr>>()?;
                assert_eq!(
                    got,
                    [("a".into(), 11), ("b".into(), 12), ("d".into(), 4)],
                    "a and b updated; c rolled back; d by sqlx"
                );
                Ok(())
            })
            .await
            .expect("direct");
        }
    }

    #[test]
    fn a_direct_future_that_waits_is_an_error_not_a_blocked_thread() {
        let waited = Direct::now(async {
            futures::future::pending::<()>().await;
            Ok::<_, sea_orm::DbErr>(())
        })
        .expect_err("it waited");
        assert!(waited.to_string().contains("waited"), "{waited}");
        assert_eq!(
            Direct::now(async { Ok::<_, sea_orm::DbErr>(7) }).ok(),
            Some(7)
        );
    }

    #[test]
    fn a_direct_transaction_waits_for_another_process_holding_the_write_lock() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        for use_own in [false, true] {
            rt.block_on(waits_for_another_process(use_own));
        }
    }

    async fn waits_for_another_process(use_own: bool) {
        {
            let (dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY)").await;
            let own = db.own_sqlite().filter(|_| use_own);
            // Another process's connection holds the write lock a while.
            let file = dir.0.join("d.db");
            let (held, release) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(file).expect("open");
                conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (id) VALUES ('other')")
                    .expect("lock");
                held.send(()).expect("send");
                std::thread::sleep(std::time::Duration::from_millis(300));
                conn.execute_batch("COMMIT").expect("commit");
            });
            let _ = tokio::task::spawn_blocking(move || release.recv()).await;
            let written = db
                .run(|c| async move {
                    Ok(Direct::transaction(&c, own.as_deref(), |d| {
                        block_on(d.exec(stmt("INSERT INTO t (id) VALUES ('mine')", vec![])))?;
                        d.commit().map_err(|e| match e {
                            super::CommitFailed::NotWritten(e)
                            | super::CommitFailed::Unknown(e) => e,
                        })
                    })
                    .await?)
                })
                .await
                .expect("run");
            written.expect("it waited for the lock instead of failing");
            other.join().expect("other");
            let n = db
                .run(|c| async move {
                    Ok(c.query_one_raw(stmt("SELECT COUNT(*) AS n FROM t", vec![]))
                        .await?
                        .expect("row")
                        .try_get::<i64>("", "n")?)
                })
                .await
                .expect("count");
            assert_eq!(n, 2);
        }
    }

    #[test]
    fn the_own_connection_keeps_its_statements_across_a_schema_change_and_a_failed_transaction() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (_dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)").await;
            let own = db.own_sqlite().expect("a file has its own connection");

            // One row written on the own connection, through the runtime.
            let write = |id: &'static str| {
                let own = own.clone();
                db.run(move |c| async move {
                    Ok(Direct::transaction(&c, Some(&own), |d| {
                        let ids = block_on(d.ids(stmt(
                            "INSERT INTO t (id, n) VALUES (?, ?) RETURNING id",
                            vec![id.into(), 1i64.into()],
                        )))?;
                        d.commit().map_err(|e| match e {
                            super::CommitFailed::NotWritten(e)
                            | super::CommitFailed::Unknown(e) => e,
                        })?;
                        Ok::<_, sea_orm::DbErr>(ids)
                    })
                    .await?)
                })
            };
            assert_eq!(write("a").await.expect("run").expect("a"), ["a"]);
            // The pool changes the table under the cached statement: SQLite
            // prepares it again.
            db.run(|c| async move {
                c.execute_unprepared("ALTER TABLE t ADD COLUMN m INTEGER DEFAULT 7")
                    .await?;
                Ok(())
            })
            .await
            .expect("alter");
            assert_eq!(write("b").await.expect("run").expect("b"), ["b"]);
            // A duplicate fails, rolls back, and the next one works.
            let dup = write("b").await.expect("run").expect_err("a duplicate");
            assert!(crate::store::is_unique_violation(&dup), "{dup}");
            assert_eq!(write("c").await.expect("run").expect("c"), ["c"]);
            let got = db
                .run(|c| async move {
                    let rows = c
                        .query_all_raw(stmt("SELECT id, m FROM t ORDER BY id", vec![]))
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "m")?)))
                        .collect::<Result<Vec<(String, i64)>, sea_orm::DbErr>>()?)
                })
                .await
                .expect("read");
            assert_eq!(got, [("a".into(), 7), ("b".into(), 7), ("c".into(), 7)]);
        });
    }

    /// Writes `id` into `t` through `own` (or the pool's handle).
    async fn write_one(
        db: &Db,
        own: Option<std::sync::Arc<super::OwnConn>>,
        id: &'static str,
    ) -> Result<(), sea_orm::DbErr> {
        db.run(move |c| async move {
            Ok(Direct::transaction(&c, own.as_deref(), |d| {
                block_on(d.exec(stmt("INSERT INTO t (id) VALUES (?)", vec![id.into()])))?;
                d.commit().map_err(|e| match e {
                    super::CommitFailed::NotWritten(e) | super::CommitFailed::Unknown(e) => e,
                })
            })
            .await?)
        })
        .await
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
    }

    #[test]
    fn a_read_only_immutable_or_other_vfs_url_writes_through_the_pool_and_read_only_refuses() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY)").await;
            write_one(&db, db.own_sqlite(), "a").await.expect("rw");
            db.close().await;
            let file = dir.0.join("d.db");
            // Read-only, spelled plainly or percent-encoded as sqlx reads it.
            for query in ["mode=ro", "mode=r%6F", "m%6Fde=ro"] {
                let ro = Db::connect(&format!("sqlite://{}?{query}", file.display()), 1)
                    .await
                    .expect("connect read-only");
                assert!(ro.own_sqlite().is_none(), "{query} has no own connection");
                let refused = write_one(&ro, ro.own_sqlite(), "b")
                    .await
                    .expect_err("a read-only URL refuses writes");
                assert!(
                    refused.to_string().contains("readonly"),
                    "{query}: {refused}"
                );
                ro.close().await;
            }
            for query in ["vfs=unix", "immutable=1", "immutable=true"] {
                let other = Db::connect(&format!("sqlite://{}?{query}", file.display()), 1)
                    .await
                    .expect("connect");
                assert!(
                    other.own_sqlite().is_none(),
                    "{query} has no own connection"
                );
                other.close().await;
            }
            let rw = Db::connect(&format!("sqlite://{}?mode=rwc", file.display()), 1)
                .await
                .expect("connect");
            assert!(rw.own_sqlite().is_some());
            rw.close().await;
        });
    }

    #[test]
    fn an_own_connection_left_in_a_transaction_is_closed_even_when_it_cannot_be_opened_again() {
        use std::sync::atomic::Ordering;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY)").await;
            let own = db.own_sqlite().expect("own");
            // The own connection is left holding the write lock, and
            // opening another fails.
            {
                let conn = own.current().expect("open");
                let conn = conn.lock().expect("lock");
                conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (id) VALUES ('lost')")
                    .expect("lock");
            }
            own.fail_reopen.store(true, Ordering::Relaxed);
            own.discard();
            // The lock is free: another process writes at once, and so does
            // this one, through the pool's handle.
            let other = rusqlite::Connection::open(dir.0.join("d.db")).expect("open");
            other
                .busy_timeout(std::time::Duration::ZERO)
                .expect("timeout");
            other
                .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (id) VALUES ('other'); COMMIT")
                .expect("the write lock was let go");
            assert!(!own.is_open());
            write_one(&db, Some(own.clone()), "mine")
                .await
                .expect("through the pool's");
            // Opening again works when it can.
            own.fail_reopen.store(false, Ordering::Relaxed);
            {
                let conn = own.current();
                assert!(conn.is_none(), "not reopened on its own");
            }
            let (dir2, db2) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY)").await;
            let own2 = db2.own_sqlite().expect("own");
            own2.discard();
            assert!(own2.is_open(), "opened again");
            write_one(&db2, Some(own2), "x")
                .await
                .expect("on the fresh one");
            let ids: Vec<String> = other
                .prepare("SELECT id FROM t ORDER BY id")
                .expect("prepare")
                .query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert_eq!(ids, ["mine", "other"], "the open transaction's row is gone");
            drop((dir2, db2));
        });
    }

    #[test]
    fn closing_the_db_closes_the_own_connection_and_the_last_close_empties_the_log() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (dir, db) = scratch("CREATE TABLE t (id TEXT PRIMARY KEY)").await;
            let own = db.own_sqlite().expect("own");
            write_one(&db, Some(own.clone()), "a").await.expect("write");
            assert!(dir.0.join("d.db-wal").exists(), "WAL mode");
            db.close().await;
            assert!(!own.is_open());
            assert!(
                !dir.0.join("d.db-wal").exists(),
                "the last connection closed checkpoints and removes the log"
            );
            let conn = rusqlite::Connection::open(dir.0.join("d.db")).expect("open");
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .expect("count");
            assert_eq!(n, 1);
        });
    }

    #[test]
    fn an_in_memory_database_has_no_own_connection() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let db = Db::connect("sqlite::memory:", 1).await.expect("connect");
            assert!(
                db.own_sqlite().is_none(),
                "another connection would see another database"
            );
        });
    }
}
