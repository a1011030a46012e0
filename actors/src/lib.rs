//! Baton's node actor tree and everything it needs to run workflows
//! durably: the store, the workflow model and the script engine.
//!
//! Nothing in this crate knows about HTTP; the `baton` crate wraps it.
//!
//! # Layout
//! - [`db`]: the database connection, kept on its own multi-thread tokio runtime
//! - [`store`]: sea-orm entities and every query, with the fenced writes on executions
//! - [`workflow`]: definition model, validation, and the QuickJS script pool
//! - [`actions`]: built-in actions (`log`, `sleep`) and the registry of embedder actions
//! - [`http_action`]: the built-in `http` action
//! - [`messages`]: messages shared by several actors
//! - [`metrics`]: engine counters and the item latency histogram
//! - [`notify`]: `NotifierActor`, webhooks on cluster events
//! - [`supervisor`]: `NodeSupervisor`, the root of a node's actor tree
//! - [`status`]: `StatusCell`, the node's state as every reader sees it
//! - [`execution`]: `ExecutionActor`, one per running execution
//! - [`heartbeat`]: `HeartbeatActor`, this node's heartbeat and self-fencing
//! - [`failover`]: `FailoverDetectorActor`, takeover of dead peers
//! - [`admission`]: `engine.max_running`, the slots every run holds
//! - [`error`]: the error types of this crate

pub mod actions;
pub mod admission;
pub mod db;
pub mod error;
pub mod execution;
pub mod failover;
pub mod heartbeat;
pub mod http_action;
pub mod messages;
pub mod metrics;
mod nodelay;
pub mod notify;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod workflow;

pub use actions::{ActionCall, ActionRegistry};
pub use db::Db;
pub use error::{EngineError, StoreError};
pub use store::Store;
pub use supervisor::{NodeSupervisor, SupervisorConfig};
