//! Baton: a clustered, durable workflow runtime.
//!
//! This crate is the node: configuration, the HTTP API, the command line,
//! and the embedding facade [`Node`]. The actor tree, the store and the
//! workflow engine live in `baton-actors`.
//!
//! # Embedding
//!
//! ```no_run
//! use baton::{Config, Node};
//! use serde_json::json;
//!
//! #[actix_web::main]
//! async fn main() -> anyhow::Result<()> {
//!     let mut config = Config::default();
//!     config.database.url = "sqlite://my-app.db?mode=rwc".into();
//!     config.http.listen = "127.0.0.1:0".into();
//!     let node = Node::builder()
//!         .config(config)
//!         .action("charge_card", |call| async move {
//!             let amount = call.input("amount").and_then(|v| v.as_f64()).ok_or("amount missing")?;
//!             // Use call.idempotency_key to make the charge safe to repeat.
//!             Ok(json!({ "charged": amount, "key": call.idempotency_key }))
//!         })
//!         .start()
//!         .await?;
//!     println!("Baton listening on {}", node.url());
//!     node.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//! - [`config`]: the typed, layered configuration
//! - [`error`]: `ApiError`, the one mapping from errors to HTTP answers
//! - `http`: the HTTP API, one file per resource
//! - [`node`]: [`Node::builder`], [`NodeHandle`]
//! - [`client`]: the HTTP client behind the CLI's client verbs
//! - [`bench`]: `baton bench`
//! - [`chaos`]: `baton chaos`, the randomized fault-and-workload checker
//! - [`process`]: a `baton serve` child process (benchmarks and tests)

pub mod bench;
pub mod chaos;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
mod http;
pub mod node;
pub mod process;

pub use baton_actors::ActionCall;
pub use config::Config;
pub use node::{ExecutionError, ExecutionHandle, Node, NodeBuilder, NodeHandle, StartError};

/// The OpenAPI document of the HTTP API, as JSON.
pub fn openapi_json() -> serde_json::Value {
    use utoipa::OpenApi;
    serde_json::to_value(http::ApiDoc::openapi()).unwrap_or_default()
}
