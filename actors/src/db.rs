//! The database connection, owned by a small multi-thread tokio runtime of
//! its own.
//!
//! actix runs each arbiter and each HTTP worker on a current-thread runtime;
//! a pooled connection opened inside one dies when that runtime stops
//! (DESIGN.md, runtime notes). Every query therefore runs as a task on the
//! runtime owned here, and callers on any runtime await its result. This
//! module must never hand a connection to code that runs elsewhere.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::error::StoreError;

/// How long a query waits for a connection of a PostgreSQL or MySQL pool,
/// including opening a new one.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up waits for a database server that refuses connections.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// True when connecting ran out of time: sqlx kept retrying a server that
/// refused connections (or did not answer) until the acquire deadline.
/// Other failures (a bad host name, a refused password) are final.
fn server_not_reachable_yet(e: &sea_orm::DbErr) -> bool {
    match e {
        sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(s)) => {
            matches!(**s, sea_orm::sqlx::Error::PoolTimedOut)
        }
        sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        _ => false,
    }
}

/// Limits a cluster node puts on its own database sessions, so that a node
/// frozen in the middle of a transaction (SIGSTOP, a VM paused, a process
/// starved of CPU) cannot hold up its peers past its own failover.
///
/// Every membership transaction takes the one `cluster_lock` row, and a
/// takeover also locks the victim's row and its executions. A frozen
/// holder's session sits idle in its transaction with those locks held;
/// the database server, not the frozen process, must end it. Without
/// these limits one frozen holder stopped every takeover in the cluster
/// until it resumed (a row held for 8 s from psql: takeover 8.4 s after a
/// kill instead of about 1 s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// The server ends a session whose transaction has been idle (waiting
    /// for this client's next statement) this long, rolling it back and
    /// releasing its locks: PostgreSQL's
    /// `idle_in_transaction_session_timeout`, MariaDB's
    /// `idle_transaction_timeout` (whole seconds, see
    /// [`SessionLimits::mariadb_idle_secs`]). MySQL has
    /// no such limit, and SQLite no server to end a frozen process's
    /// transaction: there the limit is not set.
    pub idle_in_transaction: Option<Duration>,
    /// How long a membership transaction waits for the `cluster_lock` row
    /// before it gives up for this scan (the next scan tries again), so
    /// that a held lock does not stall the peer scans that watch for the
    /// holder's death: PostgreSQL's `lock_timeout` on that one statement,
    /// MariaDB's `innodb_lock_wait_timeout` (whole seconds, rounded down;
    /// 0 does not wait; not on MySQL, which cannot scope it to one
    /// statement).
    pub membership_lock_wait: Option<Duration>,
}

impl SessionLimits {
    /// The limits for a cluster with this heartbeat `interval` and failover
    /// `timeout`.
    ///
    /// Idle transactions end after the timeout less two and a half
    /// intervals, at most half the timeout, at least 100 ms. A node frozen
    /// inside a promotion holds the promoted standby's row, whose
    /// heartbeat waits behind it; that standby fences itself when it has
    /// not written a heartbeat for the timeout less one interval, counted
    /// from a send up to one interval before the blocked one, so the
    /// holder must be ended within the timeout less two intervals (half an
    /// interval is left for the server to notice). MariaDB counts whole
    /// seconds: there it is rounded down, but at least 1 s, which below a
    /// 2.5 s limit (sub-second intervals) can exceed that lease.
    ///
    /// A membership transaction waits at most one interval for the lock,
    /// so peer scans stay less than `Watch::MAX_GAP` intervals apart while
    /// it is held.
    pub fn for_cluster(interval: Duration, timeout: Duration) -> SessionLimits {
        let idle = timeout
            .saturating_sub(interval * 5 / 2)
            .min(timeout / 2)
            .max(Duration::from_millis(100));
        SessionLimits {
            idle_in_transaction: Some(idle),
            membership_lock_wait: Some(interval),
        }
    }

    /// MariaDB's `idle_transaction_timeout`: whole seconds, rounded down
    /// but at least 1 (0 would turn it off).
    pub fn mariadb_idle_secs(&self) -> Option<u64> {
        self.idle_in_transaction.map(|d| d.as_secs().max(1))
    }
}

/// How long a SQLite statement waits for another process's lock on the
/// file before failing with "database is locked".
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

struct DbRuntime(Option<tokio::runtime::Runtime>);

impl Drop for DbRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Dropping a runtime inside an async context panics; this does not.
            rt.shutdown_background();
        }
    }
}

/// A connection pool plus the runtime its queries run on. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite only (a file): read-only connections for the engine's reads
    /// that need no transaction with writes (a start batch's rows, an
    /// awaited signal, a workflow's current version), so that they never
    /// hold the one connection this process writes through, heartbeats
    /// included. In WAL mode a reader blocks no writer. Elsewhere reads
    /// share the pool.
    read: Option<DatabaseConnection>,
    /// SQLite only (a file): read-only connections for what users ask
    /// (searches, item logs, the `/metrics` gauges), apart from `read`, so
    /// that slow searches never hold up starts and signals.
    report: Option<DatabaseConnection>,
    /// SQLite only (a file): this process's own write connection, used
    /// while holding the pool's (see `store::direct`).
    own: Option<Arc<crate::store::OwnConn>>,
    handle: tokio::runtime::Handle,
    _rt: Arc<DbRuntime>,
    calls: Arc<DbCalls>,
    limits: SessionLimits,
}

/// The database calls of one process: how many, how many began while every
/// connection of their pool was in use (so waited for one), and how long
/// each took from the call to its result, the wait included.
#[derive(Debug, Default)]
pub struct DbCalls {
    /// Calls made ([`Db::run`], [`Db::run_read`] and [`Db::run_report`]).
    pub calls: std::sync::atomic::AtomicU64,
    /// Calls that found no idle connection with the pool at its limit.
    pub queued: std::sync::atomic::AtomicU64,
    /// Call to result, wait included.
    pub time: crate::metrics::Histogram,
}

impl DbCalls {
    /// Counts a call on `conn`'s pool; returns when it began.
    pub fn began(&self, conn: &DatabaseConnection) -> std::time::Instant {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        if exhausted(conn) {
            self.queued.fetch_add(1, Relaxed);
        }
        std::time::Instant::now()
    }

    /// Records the time of a call that began at `began`.
    pub fn ended(&self, began: std::time::Instant) {
        self.time.record(began.elapsed());
    }
}

/// True when `conn`'s pool has no idle connection and cannot open another.
fn exhausted(conn: &DatabaseConnection) -> bool {
    let (size, idle, max) = match conn.get_database_backend() {
        DbBackend::Postgres => {
            let p = conn.get_postgres_connection_pool();
            (p.size(), p.num_idle(), p.options().get_max_connections())
        }
        DbBackend::MySql => {
            let p = conn.get_mysql_connection_pool();
            (p.size(), p.num_idle(), p.options().get_max_connections())
        }
        DbBackend::Sqlite => {
            let p = conn.get_sqlite_connection_pool();
            (p.size(), p.num_idle(), p.options().get_max_connections())
        }
        _ => return false,
    };
    idle == 0 && size >= max
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Db {
    /// The limits on this pool's sessions.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        match self.conn.get_database_backend() {
            DbBackend::Postgres => self
                .conn
                .get_postgres_connection_pool()
                .options()
                .get_max_connections(),
            DbBackend::MySql => self
                .conn
                .get_mysql_connection_pool()
                .options()
                .get_max_connections(),
            DbBackend::Sqlite => self
                .conn
                .get_sqlite_connection_pool()
                .options()
                .get_max_connections(),
            _ => 1,
        }
    }

    /// The pool's size (open connections) and how many of them are idle.
    pub fn pool_stats(&self) -> Option<(u32, usize)> {
        match self.conn.get_database_backend() {
            DbBackend::Postgres => {
                let p = self.conn.get_postgres_connection_pool();
                Some((p.size(), p.num_idle()))
            }
            DbBackend::MySql => {
                let p = self.conn.get_mysql_connection_pool();
                Some((p.size(), p.num_idle()))
            }
            DbBackend::Sqlite => {
                let p = self.conn.get_sqlite_connection_pool();
                Some((p.size(), p.num_idle()))
            }
            _ => None,
        }
    }

    /// Connects to `url` (`sqlite://`, `postgres://` or `mysql://`).
    ///
    /// SQLite runs in WAL mode with one pooled connection per process, so
    /// writers of one process queue in the pool instead of spinning on
    /// `SQLITE_BUSY`; several processes may share the file.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        Self::connect_with(url, max_connections, SessionLimits::default()).await
    }

    /// [`Db::connect`] with `limits` on every session of the pool.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        limits: SessionLimits,
    ) -> Result<Db, StoreError> {
        if let Some(dir) = missing_sqlite_dir(url) {
            return Err(StoreError::Unusable(format!(
                "the directory {} of the SQLite file does not exist \
                 (SQLite creates the file, not its directory): create it or choose another path",
                dir.display()
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("baton-db")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(format!("db runtime: {e}"))))?;
        let handle = rt.handle().clone();
        let rt = Arc::new(DbRuntime(Some(rt)));
        let mut opts = ConnectOptions::new(url.to_owned());
        let is_sqlite = url.starts_with("sqlite:");
        opts.max_connections(if is_sqlite { 1 } else { max_connections })
            .min_connections(if is_sqlite { 1 } else { 2.min(max_connections) })
            .connect_timeout(Duration::from_secs(5))
            // sqlx has one deadline for both waiting for a pooled connection
            // and opening a new one (retrying while the server refuses). A
            // server that is down must cost an HTTP request a few seconds
            // (it answers 503 `database_unavailable`), not half a minute.
            // SQLite's one connection is a queue of this process's writers
            // and cannot lose its server: it may wait longer.
            .acquire_timeout(if is_sqlite {
                Duration::from_secs(30)
            } else {
                ACQUIRE_TIMEOUT
            })
            // A ping before each checkout doubles the round trips of short
            // transactions; a dead connection fails its query instead, and
            // the caller's retry gets a fresh one.
            .test_before_acquire(false)
            .sqlx_logging(false);
        if is_sqlite {
            opts.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
            });
        }
        // On each new connection: `TCP_NODELAY` (see `nodelay`), then the
        // session's limits, as a SET rather than a startup option, which
        // poolers such as PgBouncer refuse. (Behind PgBouncer it needs
        // session pooling: in transaction pooling the SET lands on
        // whichever server connection ran it.) sea-orm applies the hook of
        // the URL's database only.
        let server = tcp_server_of(url);
        let pg_set = limits.idle_in_transaction.map(|idle| {
            format!(
                "SET idle_in_transaction_session_timeout = {}",
                idle.as_millis()
            )
        });
        // MariaDB runs what is inside `/*M! */`; MySQL, which has no such
        // limit, reads a comment.
        let mysql_set = limits.mariadb_idle_secs().map(|secs| {
            format!("SET @baton_session = 1 /*M! , SESSION idle_transaction_timeout = {secs} */")
        });
        let (pg_server, mysql_server) = (server.clone(), server);
        opts.map_sqlx_postgres_pool_opts(move |p| {
            let (pg_server, pg_set) = (pg_server.clone(), pg_set.clone());
            p.after_connect(move |conn, _| {
                let (server, set) = (pg_server.clone(), pg_set.clone());
                Box::pin(async move {
                    use sea_orm::sqlx::{AssertSqlSafe, Executor};
                    no_delay(server).await;
                    if let Some(sql) = set {
                        conn.execute(AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
        });
        opts.map_sqlx_mysql_pool_opts(move |p| {
            let (mysql_server, mysql_set) = (mysql_server.clone(), mysql_set.clone());
            p.after_connect(move |conn, _| {
                let (server, set) = (mysql_server.clone(), mysql_set.clone());
                Box::pin(async move {
                    use sea_orm::sqlx::{AssertSqlSafe, Executor};
                    no_delay(server).await;
                    if let Some(sql) = set {
                        conn.execute(AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
        });
        // Switching a new SQLite file to WAL takes a lock that SQLite's busy
        // timeout does not wait for: nodes starting together on a fresh
        // file can see "database is locked" once; try again. A database
        // server that is still starting (refusing connections) gets up to
        // STARTUP_WAIT, as it did before the acquire timeout was shortened.
        let conn = handle
            .spawn(async move {
                let started = std::time::Instant::now();
                let mut tries = 0;
                loop {
                    match Database::connect(opts.clone()).await {
                        Err(e)
                            if is_sqlite
                                && tries < 50
                                && e.to_string().contains("database is locked") =>
                        {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(20 + 10 * tries)).await;
                        }
                        Err(e)
                            if !is_sqlite
                                && started.elapsed() < STARTUP_WAIT
                                && server_not_reachable_yet(&e) =>
                        {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        other => return other,
                    }
                }
            })
            .await
            .map_err(|_| StoreError::RuntimeGone)??;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let readers = || async {
            if !is_sqlite || in_memory {
                return Ok::<_, StoreError>(None);
            }
            let mut ro = ConnectOptions::new(url.to_owned());
            ro.max_connections(2)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(30))
                .test_before_acquire(false)
                .sqlx_logging(false)
                .map_sqlx_sqlite_opts(|o| o.read_only(true).busy_timeout(SQLITE_BUSY_TIMEOUT));
            Ok(Some(
                handle
                    .spawn(Database::connect(ro))
                    .await
                    .map_err(|_| StoreError::RuntimeGone)??,
            ))
        };
        let read = readers().await?;
        let report = readers().await?;
        let own = if is_sqlite && !in_memory {
            own_sqlite_connection(url)
        } else {
            None
        };
        Ok(Db {
            conn,
            read,
            report,
            own,
            handle,
            _rt: rt,
            calls: Arc::default(),
            limits,
        })
    }

    /// [`Db::run`] for the engine's reads that need no transaction with
    /// writes: on their own connections on SQLite (see `read`).
    pub async fn run_read<F, Fut, T>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.read_conn(), f).await
    }

    /// [`Db::run_read`] for what users ask (searches, logs, gauges): on
    /// SQLite, on readers of their own, so that however long they take
    /// the engine's reads do not wait for them.
    pub async fn run_report<F, Fut, T>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.report.as_ref().unwrap_or(&self.conn).clone(), f)
            .await
    }

    /// The connections for reads that need no transaction with writes:
    /// SQLite's readers (a file), else the pool.
    pub(crate) fn read_conn(&self) -> DatabaseConnection {
        self.read.as_ref().unwrap_or(&self.conn).clone()
    }

    /// This process's own SQLite write connection (a file), if open.
    pub(crate) fn own_sqlite(&self) -> Option<Arc<crate::store::OwnConn>> {
        self.own.clone()
    }

    /// This process's database calls so far.
    pub fn calls(&self) -> &DbCalls {
        &self.calls
    }

    /// Which SQL dialect the connection speaks.
    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Runs `f` with a connection on the database runtime and awaits it.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.conn.clone(), f).await
    }

    /// Runs `f` with `conn` on the database runtime, counted in `calls`.
    async fn run_on<F, Fut, T>(&self, conn: DatabaseConnection, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let began = self.calls.began(&conn);
        let out = self
            .handle
            .spawn(f(conn))
            .await
            .map_err(|_| StoreError::RuntimeGone)?;
        self.calls.ended(began);
        out
    }

    /// Spawns a long-running task on the database runtime with a connection
    /// and the calls' counters (it counts its own calls).
    pub fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(DatabaseConnection, Arc<DbCalls>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(f(self.conn.clone(), self.calls.clone()));
    }

    /// Closes the pools and this process's own SQLite connection.
    pub async fn close(&self) {
        if let Some(own) = &self.own {
            own.close();
        }
        let (conn, readers) = (self.conn.clone(), [self.read.clone(), self.report.clone()]);
        let _ = self
            .handle
            .spawn(async move {
                for read in readers.into_iter().flatten() {
                    let _ = read.close().await;
                }
                conn.close().await
            })
            .await;
    }
}

/// This process's own write connection to the SQLite file of `url`
/// (opened after the pool, which created the file and set it to WAL).
/// Without it the writers borrow the pool's handle, which works the same
/// with one more thread round trip per transaction.
fn own_sqlite_connection(url: &str) -> Option<Arc<crate::store::OwnConn>> {
    use std::str::FromStr;
    let options = match sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "no own SQLite write connection; writing through the pool's");
            return None;
        }
    };
    if let Some(option) = option_the_own_connection_ignores(&options) {
        tracing::info!(
            option,
            "the SQLite URL asks for {option}: writing through the pool's connection"
        );
        return None;
    }
    match crate::store::OwnConn::open(options.get_filename().to_owned()) {
        Ok(own) => Some(Arc::new(own)),
        Err(e) => {
            tracing::warn!(error = %e, "no own SQLite write connection; writing through the pool's");
            None
        }
    }
}

/// The first option of a SQLite URL that this process's own connection
/// (opened read-write on the default VFS) would not honour: a read-only
/// file must refuse writes, an immutable one is not locked, and another
/// VFS may lock the file differently from the pool's connections. Read
/// from the options as sqlx parsed them (percent-escapes decoded).
fn option_the_own_connection_ignores(
    options: &sea_orm::sqlx::sqlite::SqliteConnectOptions,
) -> Option<&'static str> {
    use sea_orm::sqlx::ConnectOptions;
    let url = options.to_url_lossy();
    url.query_pairs()
        .find_map(|(key, value)| match (&*key, &*value) {
            ("mode", "ro") => Some("mode=ro"),
            ("immutable", "true") => Some("immutable"),
            ("vfs", _) => Some("another VFS"),
            _ => None,
        })
}

/// The database server's host and TCP port in a PostgreSQL or MySQL URL;
/// `None` for SQLite and for a Unix socket.
pub(crate) fn tcp_server_of(url: &str) -> Option<(String, u16)> {
    use sea_orm::sqlx::mysql::MySqlConnectOptions;
    use sea_orm::sqlx::postgres::PgConnectOptions;
    use std::str::FromStr;
    if url.starts_with("postgres") {
        let o = PgConnectOptions::from_str(url).ok()?;
        o.get_socket()
            .is_none()
            .then(|| (o.get_host().to_owned(), o.get_port()))
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        let o = MySqlConnectOptions::from_str(url).ok()?;
        o.get_socket()
            .is_none()
            .then(|| (o.get_host().to_owned(), o.get_port()))
    } else {
        None
    }
}

/// Turns `TCP_NODELAY` on for this process's connections to `server`'s
/// port (a new one among them), off the runtime's threads: it reads
/// `/proc`.
async fn no_delay(server: Option<(String, u16)>) {
    let Some((host, port)) = server else {
        return;
    };
    if host.starts_with('/') {
        return; // a Unix socket: no Nagle
    }
    if !crate::nodelay::SUPPORTED {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!("TCP_NODELAY cannot be set on the database connections on this platform: a large statement may wait 40 ms for a delayed acknowledgement");
        });
        return;
    }
    let changed = tokio::task::spawn_blocking(move || crate::nodelay::set_on_sockets_to(port))
        .await
        .unwrap_or(0);
    tracing::trace!(changed, "TCP_NODELAY on the database connections");
}

/// The directory a SQLite URL's file would live in, when it does not exist
/// (`sqlite:///var/lib/baton/x.db` without `/var/lib/baton`).
pub fn missing_sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || rest.contains("mode=memory") {
        return None;
    }
    let dir = std::path::Path::new(path).parent()?;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return None;
    }
    Some(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{missing_sqlite_dir, SessionLimits};
    use std::time::Duration;

    #[test]
    fn user_reads_holding_every_report_connection_do_not_hold_up_the_engines_reads() {
        use sea_orm::TransactionTrait;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("baton-db-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let db = super::Db::connect(&format!("sqlite://{}/d.db?mode=rwc", dir.display()), 1)
                .await
                .expect("connect");
            // Two slow searches: each holds a report connection until told.
            let (mut release, mut held) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let (got_tx, got_rx) = tokio::sync::oneshot::channel::<()>();
                release.push(tx);
                held.push(got_rx);
                let db = db.clone();
                tokio::spawn(async move {
                    db.run_report(move |c| async move {
                        let txn = c.begin().await?;
                        let _ = got_tx.send(());
                        let _ = rx.await;
                        txn.commit().await?;
                        Ok(())
                    })
                    .await
                });
            }
            for h in held {
                h.await.expect("a report connection held");
            }
            // The engine's reads go on.
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                db.run_read(|c| async move {
                    use sea_orm::ConnectionTrait;
                    c.execute_unprepared("SELECT 1").await?;
                    Ok(())
                }),
            )
            .await;
            assert!(
                matches!(read, Ok(Ok(()))),
                "an engine read waited for the users' reads: {read:?}"
            );
            for r in release {
                let _ = r.send(());
            }
            db.close().await;
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn a_sqlite_file_in_a_missing_directory_is_named() {
        let d = missing_sqlite_dir("sqlite:///nonexistent-baton-dir/sub/c.db?mode=rwc");
        assert_eq!(
            d.as_deref(),
            Some(std::path::Path::new("/nonexistent-baton-dir/sub"))
        );
        assert_eq!(missing_sqlite_dir("sqlite://baton.db?mode=rwc"), None);
        assert_eq!(missing_sqlite_dir("sqlite::memory:"), None);
        assert_eq!(missing_sqlite_dir("sqlite:///tmp/x.db"), None);
        assert_eq!(missing_sqlite_dir("postgres://h/db"), None);
    }

    #[test]
    fn a_frozen_holder_is_ended_inside_the_lease_of_a_standby_it_blocks() {
        let ms = Duration::from_millis;
        for (interval, beats) in [(200, 5), (1000, 5), (1000, 3), (1000, 4), (50, 20), (10, 3)] {
            let (i, t) = (ms(interval), ms(interval * beats));
            let l = SessionLimits::for_cluster(i, t);
            let idle = l.idle_in_transaction.expect("a limit");
            assert!(
                idle <= t / 2 || idle == ms(100),
                "{interval}x{beats}: {idle:?}"
            );
            assert!(
                idle + i * 2 <= t || idle == ms(100),
                "{interval}x{beats}: {idle:?} leaves a blocked standby no lease"
            );
            assert_eq!(l.membership_lock_wait, Some(i));
        }
        let l = SessionLimits::for_cluster(ms(200), ms(1000));
        assert_eq!(l.idle_in_transaction, Some(ms(500)));
        assert_eq!(l.mariadb_idle_secs(), Some(1));
        let l = SessionLimits::for_cluster(ms(1000), ms(5000));
        assert_eq!(l.idle_in_transaction, Some(ms(2500)));
        assert_eq!(l.mariadb_idle_secs(), Some(2));
        assert_eq!(SessionLimits::default().mariadb_idle_secs(), None);
    }
}
