//! Error types of the engine and the store. Each variant names its cause.

use thiserror::Error;

/// An error from the store (the database layer).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A fenced write touched zero rows: this node no longer owns the execution.
    #[error("ownership of execution {execution} lost (node {node}, epoch {epoch})")]
    OwnershipLost {
        /// The execution whose write was refused.
        execution: String,
        /// The node that tried to write.
        node: String,
        /// The epoch it wrote under.
        epoch: i64,
    },
    /// A row that must exist does not.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of thing was looked up.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A row with this id already exists.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A conditional write found another version than the one expected.
    #[error("version mismatch: expected {expected}, current is {current}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: i64,
        /// The version stored.
        current: i64,
    },
    /// A start named a version of its workflow as current
    /// ([`NewExecution::expect_current`](crate::store::NewExecution)), and
    /// it no longer is (replaced or deleted since it was last read):
    /// nothing was written.
    #[error("workflow {workflow} is no longer at version {version}")]
    NotCurrent {
        /// The workflow.
        workflow: String,
        /// The version the start expected.
        version: i64,
    },
    /// The operation conflicts with the stored state.
    #[error("{0}")]
    Conflict(String),
    /// A stored JSON column could not be decoded.
    #[error("corrupt stored data in {what}: {reason}")]
    Corrupt {
        /// Where the data came from.
        what: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// The commit of this write failed in a way that leaves its outcome
    /// unknown (the connection broke while committing): it may have been
    /// committed. Only after this may a retry take a unique violation of
    /// its completion record as "already written" (DESIGN.md invariant 10).
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(sea_orm::DbErr),
    /// The database runtime has shut down.
    #[error("the database runtime has shut down")]
    RuntimeGone,
    /// The database URL cannot work as given (a SQLite file in a directory
    /// that does not exist): the message says what to change.
    #[error("{0}")]
    Unusable(String),
}

impl StoreError {
    /// True when this is a lost-ownership (fencing) refusal.
    pub fn is_ownership_lost(&self) -> bool {
        matches!(self, StoreError::OwnershipLost { .. })
    }
}

/// An error from the engine (supervisor, execution actors, scripts).
#[derive(Debug, Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No workflow definition with this id.
    #[error("workflow {0} not found")]
    WorkflowNotFound(String),
    /// No execution with this id.
    #[error("execution {0} not found")]
    ExecutionNotFound(String),
    /// No cluster node with this id.
    #[error("node {0} not found")]
    NodeNotFound(String),
    /// The inputs of a start request do not fit the definition.
    #[error("invalid inputs")]
    InvalidInputs(Vec<crate::workflow::Problem>),
    /// The node is not running workflows (starting, stopping or fenced).
    #[error("node is not accepting work: {0}")]
    NotAccepting(String),
    /// The request conflicts with the execution's state.
    #[error("{0}")]
    Conflict(String),
    /// The node holds `engine.max_running` runs of new executions and no
    /// slot came free within `engine.start_wait_ms`: nothing was created.
    #[error("node is overloaded: {0}")]
    Overloaded(String),
    /// An actor mailbox is closed.
    #[error("actor unavailable: {0}")]
    Mailbox(#[from] actix::MailboxError),
}
