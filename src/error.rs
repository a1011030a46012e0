//! `ApiError`: every error the HTTP API returns, mapped in one place to a
//! status code and the JSON error shape of API.md:
//! `{"error": {"code", "message", "details"}}`. 4xx for the caller's
//! mistakes, 5xx only for the server's own faults.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use baton_actors::workflow::Problem;
use baton_actors::{EngineError, StoreError};
use serde::Serialize;
use serde_json::json;
use thiserror::Error;

/// An error answered over HTTP.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The request is malformed; `details` lists each problem with its path.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable summary.
        message: String,
        /// Each problem, with its path.
        details: Vec<Problem>,
    },
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on this path; the methods that are, for
    /// the `Allow` header (`GET, PUT`).
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names a stale version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// `If-Match` is required.
    #[error("{0}")]
    PreconditionRequired(String),
    /// The body is over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body's content type is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This node cannot serve the request now.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable summary.
        message: String,
    },
    /// The server's own fault.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with one problem.
    pub fn bad_request(code: &'static str, path: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::BadRequest {
            code,
            message: if path.is_empty() {
                message.clone()
            } else {
                format!("{path}: {message}")
            },
            details: vec![Problem::new(path, message)],
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::PreconditionRequired(_) => "precondition_required",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, such as `invalid_definition`.
    pub code: String,
    /// Human-readable summary.
    pub message: String,
    /// Each problem, with its path.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Problem>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        if let ApiError::Internal(m) = self {
            tracing::error!(error = %m, "internal error answered with 500");
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable { .. }) {
            resp.insert_header(("Retry-After", "1"));
        }
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
        }
        resp.json(json!({ "error": { "code": self.code(), "message": self.to_string(), "details": details } }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::AlreadyExists { .. }
            | StoreError::Conflict(_)
            | StoreError::NotCurrent { .. } => ApiError::Conflict(e.to_string()),
            StoreError::VersionMismatch { .. } => ApiError::PreconditionFailed(e.to_string()),
            StoreError::OwnershipLost { .. } => ApiError::Conflict(e.to_string()),
            StoreError::Db(_) | StoreError::RuntimeGone => match unavailable_reason(&e) {
                Some(reason) => {
                    // The driver's text stays in the log; the client gets a short reason.
                    tracing::warn!(error = %e, "database unavailable; answered 503");
                    ApiError::Unavailable {
                        code: "database_unavailable",
                        message: format!("the database is unavailable ({reason}); try again later"),
                    }
                }
                None => ApiError::Internal(e.to_string()),
            },
            StoreError::CommitUnknown(_) => ApiError::Unavailable {
                code: "database_unavailable",
                message: "the database connection broke while committing; try again later".into(),
            },
            StoreError::Corrupt { .. } | StoreError::Unusable(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// Why `e` means the database cannot be reached now (a short reason that
/// names no host, URL or driver text), or `None` when it is another fault.
///
/// Connection-level failures: sea-orm's `Conn` and `ConnectionAcquire`;
/// sqlx I/O, TLS, pool time-out, closed pool and crashed-worker errors
/// inside `Exec`/`Query`; PostgreSQL SQLSTATE class 08 (connection
/// exception), 57P01..57P05 (shutdown, cannot connect now) and 53300 (too
/// many connections), 25P03 (an idle transaction ended by the server),
/// 25006 (read-only: a standby or a demoted primary),
/// 40001/40P01 (serialization failure, deadlock: rolled back, retry);
/// MySQL/MariaDB class 08 (08S01 server shutdown), 1290 (`--read-only`),
/// 4031 (disconnected by the server for inactivity),
/// 1047 (a Galera member without quorum), the
/// error numbers for a killed or lost connection, and "server has gone
/// away"/"lost connection" messages; and the database runtime gone.
pub(crate) fn unavailable_reason(e: &StoreError) -> Option<&'static str> {
    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
    match e {
        StoreError::RuntimeGone => Some("the database runtime has stopped"),
        StoreError::Db(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)) => {
            Some("timed out waiting for a database connection")
        }
        StoreError::Db(DbErr::ConnectionAcquire(_)) => Some("the connection pool is closed"),
        StoreError::Db(DbErr::Conn(RuntimeErr::SqlxError(s))) => {
            Some(sqlx_reason(s).unwrap_or("cannot connect"))
        }
        StoreError::Db(DbErr::Conn(_)) => Some("cannot connect"),
        StoreError::Db(DbErr::Exec(r) | DbErr::Query(r)) => match r {
            RuntimeErr::SqlxError(s) => sqlx_reason(s),
            RuntimeErr::Internal(text) => lost_connection_text(text),
        },
        _ => None,
    }
}

fn sqlx_reason(e: &sea_orm::SqlxError) -> Option<&'static str> {
    use sea_orm::SqlxError;
    use std::io::ErrorKind;
    match e {
        SqlxError::Io(io) => Some(match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "connection reset",
            ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => "connection closed by the server",
            ErrorKind::TimedOut => "connection timed out",
            _ => "connection error",
        }),
        SqlxError::Tls(_) => Some("TLS connection failed"),
        SqlxError::PoolTimedOut => Some("timed out waiting for a database connection"),
        SqlxError::PoolClosed => Some("the connection pool is closed"),
        SqlxError::WorkerCrashed => Some("the database connection worker stopped"),
        SqlxError::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db
                .try_downcast_ref::<sea_orm::SqlxMySqlError>()
                .is_some_and(|m| m.number() == 1047)
            {
                // ER_UNKNOWN_COM_ERROR (SQLSTATE 08S01) as Galera uses it:
                // "WSREP has not yet prepared node for application use", a
                // member cut off from the primary component (no quorum).
                Some("the database member is not in a primary Galera component (it lost quorum)")
            } else if code.starts_with("08") {
                Some("connection failure")
            } else if matches!(code, "57P01" | "57P02" | "57P03" | "57P04" | "57P05") {
                Some("the server is shutting down or not accepting connections")
            } else if code == "25P03" {
                // idle_in_transaction_session_timeout: the server ended
                // this session's transaction, rolled back, while the
                // process was paused (a cluster node's sessions have the
                // limit, so that a frozen node cannot hold cluster_lock).
                // Nothing was written; the request may simply be retried.
                // Found by `baton chaos --server postgres --seed 2027`: a
                // start answered 500 after a SIGSTOP, and the client gave up.
                Some("the server ended a transaction this node left idle (the node was paused)")
            } else if code == "53300" {
                Some("too many connections")
            } else if code == "25006" {
                // PostgreSQL's read_only_sql_transaction (a hot standby or
                // a primary demoted under a connection kept from before),
                // MySQL/MariaDB's 1792 in a read-only transaction.
                Some("the database is read-only (a standby, or a primary that was demoted)")
            } else if matches!(code, "40001" | "40P01") {
                // A serialization failure or a deadlock (MySQL/MariaDB 1213,
                // also Galera's failed certification at COMMIT): the
                // transaction was rolled back and may simply be retried.
                Some("a concurrent transaction conflicted with this one")
            } else if db
                .try_downcast_ref::<sea_orm::SqlxMySqlError>()
                .is_some_and(|m| m.number() == 1290)
            {
                // ER_OPTION_PREVENTS_STATEMENT: a server running with
                // `--read-only` (a replica).
                Some("the database is read-only (a standby, or a primary that was demoted)")
            } else if db
                .try_downcast_ref::<sea_orm::SqlxMySqlError>()
                .is_some_and(|m| {
                    matches!(
                        m.number(),
                        1040 | 1053 | 1927 | 2002 | 2003 | 2006 | 2013 | 4031
                    )
                })
            {
                Some("the server closed the connection")
            } else if matches!(code, "5" | "6" | "261" | "517") {
                // (SQLite's result codes are numbers; PostgreSQL's and
                // MySQL's five-character SQLSTATEs cannot be these. They
                // come from sqlx or from the checkpoint writer's direct
                // connection alike.)
                // SQLITE_BUSY / SQLITE_LOCKED: another process holds the
                // file's write lock (nodes sharing one SQLite file); retry.
                Some("the database is busy")
            } else {
                lost_connection_text(db.message())
            }
        }
        _ => None,
    }
}

/// MySQL's wording for a connection that went away (MariaDB's too).
fn lost_connection_text(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    (t.contains("server has gone away") || t.contains("lost connection to"))
        .then_some("the server closed the connection")
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::WorkflowNotFound(id) => {
                ApiError::NotFound(format!("workflow {id} not found"))
            }
            EngineError::NodeNotFound(id) => ApiError::NotFound(format!("node {id} not found")),
            EngineError::ExecutionNotFound(id) => {
                ApiError::NotFound(format!("execution {id} not found"))
            }
            EngineError::InvalidInputs(details) => ApiError::BadRequest {
                code: "invalid_inputs",
                message: details
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
                details,
            },
            EngineError::NotAccepting(m) => ApiError::Unavailable {
                code: "not_running",
                message: m,
            },
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Overloaded(m) => ApiError::Unavailable {
                code: "overloaded",
                message: m,
            },
            EngineError::Mailbox(m) => ApiError::Unavailable {
                code: "not_running",
                message: format!("the node is shutting down: {m}"),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};
    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, SqlxError};

    use super::*;

    /// A database error as a server sends it: a SQLSTATE and a message.
    #[derive(Debug)]
    struct ServerError {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} (SQLSTATE {})", self.message, self.code)
        }
    }

    impl std::error::Error for ServerError {}

    impl DatabaseError for ServerError {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
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
            ErrorKind::Other
        }
    }

    fn server(code: &'static str, message: &'static str) -> SqlxError {
        SqlxError::Database(Box::new(ServerError { code, message }))
    }

    fn io(kind: std::io::ErrorKind) -> SqlxError {
        SqlxError::Io(std::io::Error::new(
            kind,
            "postgres://baton:hunter2@db.internal:5432/baton",
        ))
    }

    fn exec(e: SqlxError) -> StoreError {
        StoreError::Db(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))))
    }

    fn query(e: SqlxError) -> StoreError {
        StoreError::Db(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))))
    }

    fn answer(e: StoreError) -> (StatusCode, &'static str, String) {
        let a = ApiError::from(e);
        (a.status_code(), a.code(), a.to_string())
    }

    #[test]
    fn a_database_outage_is_503_database_unavailable_without_the_driver_text() {
        let outages = [
            StoreError::Db(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(io(
                std::io::ErrorKind::ConnectionRefused,
            ))))),
            StoreError::Db(DbErr::Conn(RuntimeErr::Internal(
                "postgres://baton:hunter2@db.internal refused".into(),
            ))),
            StoreError::Db(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            StoreError::Db(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            exec(io(std::io::ErrorKind::UnexpectedEof)),
            query(io(std::io::ErrorKind::ConnectionReset)),
            query(io(std::io::ErrorKind::BrokenPipe)),
            exec(SqlxError::PoolTimedOut),
            query(SqlxError::PoolClosed),
            query(SqlxError::WorkerCrashed),
            // PostgreSQL: connection exceptions and shutdowns.
            query(server("08006", "connection failure")),
            query(server("08001", "could not connect")),
            exec(server(
                "57P01",
                "terminating connection due to administrator command",
            )),
            query(server("57P02", "crash shutdown")),
            query(server("57P03", "the database system is starting up")),
            // The session's idle transaction ended by the server while this
            // process was paused (baton chaos, seed 2027).
            exec(server(
                "25P03",
                "terminating connection due to idle-in-transaction timeout",
            )),
            // A demoted primary or a hot standby; a lost race.
            exec(server(
                "25006",
                "cannot execute INSERT in a read-only transaction",
            )),
            exec(server("40001", "could not serialize access")),
            exec(server("40P01", "deadlock detected")),
            // MySQL / MariaDB.
            query(server("08S01", "Server shutdown in progress")),
            query(server("HY000", "MySQL server has gone away")),
            query(server(
                "HY000",
                "Lost connection to MySQL server during query",
            )),
            StoreError::Db(DbErr::Query(RuntimeErr::Internal(
                "MySQL server has gone away".into(),
            ))),
            StoreError::RuntimeGone,
        ];
        for e in outages {
            let shown = format!("{e:?}");
            let (status, code, message) = answer(e);
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{shown}");
            assert_eq!(code, "database_unavailable", "{shown}");
            assert!(message.contains("database"), "{shown}: {message}");
            for leak in ["hunter2", "db.internal", "://", "SQLSTATE", "gone away"] {
                assert!(!message.contains(leak), "{shown}: {message}");
            }
        }
    }

    #[test]
    fn other_database_errors_stay_500() {
        let faults = [
            query(server("42P01", "relation \"executions\" does not exist")),
            exec(server(
                "23505",
                "duplicate key value violates unique constraint",
            )),
            query(server("22P02", "invalid input syntax")),
            query(SqlxError::RowNotFound),
            query(SqlxError::Protocol("unexpected message".into())),
            StoreError::Db(DbErr::Custom("bad".into())),
            StoreError::Db(DbErr::Json("bad".into())),
            StoreError::Db(DbErr::Query(RuntimeErr::Internal("syntax error".into()))),
            StoreError::Corrupt {
                what: "x".into(),
                reason: "y".into(),
            },
        ];
        for e in faults {
            let shown = format!("{e:?}");
            let (status, code, _) = answer(e);
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{shown}");
            assert_eq!(code, "internal", "{shown}");
        }
    }

    #[test]
    fn an_unavailable_answer_carries_retry_after() {
        let resp = ApiError::from(StoreError::RuntimeGone).error_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key("retry-after"));
    }
}
