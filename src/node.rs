//! The embedding facade: [`Node::builder`] starts a whole node (store,
//! migrations, script threads, actor tree, HTTP API) inside the caller's
//! actix system; [`NodeHandle::stop`] stops it gracefully. `baton serve`
//! is a thin wrapper around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::{middleware, web, App, HttpServer};
use baton_actors::admission::Admission;
use baton_actors::db::SessionLimits;
use baton_actors::failover::ClusterTiming;
use baton_actors::messages::NodeState;
use baton_actors::metrics::EngineMetrics;
use baton_actors::notify::{NotifierActor, NotifierConfig};
use baton_actors::status::StatusCell;
use baton_actors::supervisor::{RetentionPolicy, Shutdown, Starter};
use baton_actors::workflow::script::{ScriptLimits, ScriptPool};
use baton_actors::{
    ActionCall, ActionRegistry, EngineError, NodeSupervisor, Store, StoreError, SupervisorConfig,
};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::http::{self, AppState};

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database cannot be reached or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The database URL (without credentials).
        url: String,
        /// Why.
        source: StoreError,
    },
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster's nodes have other `[cluster]` or `[scripts]` settings.
    #[error("{0}")]
    Refused(String),
    /// A TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
}

/// What a cluster node should hear at start about its database's own
/// failure detection: on MariaDB Galera, a failover timeout shorter than
/// `evs.suspect_timeout` (a lost member stalls every write in the cluster
/// for up to that long, so every node fences itself and a live node may
/// be declared dead), naming both settings. `None` when nothing is wrong
/// or the database is not Galera.
pub async fn database_timeout_warning(
    store: &Store,
    failover_timeout: Duration,
) -> Result<Option<String>, baton_actors::StoreError> {
    let Some(suspect_ms) = store.galera_suspect_timeout_ms().await? else {
        return Ok(None);
    };
    let timeout_ms = failover_timeout.as_millis() as u64;
    Ok((timeout_ms <= suspect_ms).then(|| {
        format!(
            "the failover timeout (cluster.heartbeat_interval_ms x cluster.failover_heartbeats = {timeout_ms} ms) \
             is not longer than Galera's evs.suspect_timeout ({suspect_ms} ms, in wsrep_provider_options): \
             when a database member is lost, Galera stalls every write until it evicts it, so every node \
             will fence itself and live nodes may be declared dead; make the failover timeout longer than \
             evs.suspect_timeout, or lower evs.suspect_timeout"
        )
    }))
}

/// Refuses to start a standalone node on a database that a running
/// cluster uses: standalone recovery claims every unfinished execution,
/// which would pull work away from the cluster's nodes (safely, thanks to
/// the epochs, but surely not what the operator meant).
async fn refuse_standalone_on_a_cluster(store: &Store, config: &Config) -> Result<(), StartError> {
    let (nodes, now) = store.nodes().await.map_err(|source| StartError::Database {
        url: redact(&config.database.url),
        source,
    })?;
    for n in nodes {
        let gone = baton_actors::store::node_state::GONE.contains(&n.state.as_str());
        let clustered = n.fingerprint.contains("\"enabled\":true");
        let fresh = now - n.last_heartbeat <= 60_000;
        if clustered && !gone && fresh && Some(&n.id) != config.node.id.as_ref() {
            return Err(StartError::Refused(format!(
                "refusing to start standalone: node {} of a cluster is using this database (set cluster.enabled = true to join it)",
                n.id
            )));
        }
    }
    Ok(())
}

/// Refuses to start a node whose cluster-wide settings differ from a live
/// node's, naming the first key that differs.
async fn refuse_different_settings(
    store: &Store,
    config: &Config,
    t: &ClusterTiming,
) -> Result<(), StartError> {
    let (nodes, now) = store.nodes().await.map_err(|source| StartError::Database {
        url: redact(&config.database.url),
        source,
    })?;
    let ours = config.fingerprint();
    let timeout = t.timeout.as_millis() as i64;
    for n in nodes {
        let live = !baton_actors::store::node_state::GONE.contains(&n.state.as_str())
            && now - n.last_heartbeat <= timeout;
        if !live || Some(&n.id) == config.node.id.as_ref() {
            continue;
        }
        if let Some((key, here, there)) =
            baton_actors::store::fingerprint_difference(&ours, &n.fingerprint)
        {
            let message = format!(
                "refusing to join the cluster: `{key}` is {here} on this node but {there} on node {} (all nodes need the same [cluster] and [scripts] settings)",
                n.id
            );
            // Told to the cluster (and its webhooks), not only to this
            // process's log: best effort, the refusal stands either way.
            let who = config.node.id.as_deref().unwrap_or("(unnamed node)");
            if let Err(e) = store.record_event("config-refused", who, &message).await {
                tracing::warn!(error = %e, "cannot record the config-refused event");
            }
            return Err(StartError::Refused(message));
        }
    }
    Ok(())
}

/// Entry point of the embedding API.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// A builder with the default configuration and the built-in actions.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            config: Config::default(),
            actions: ActionRegistry::with_builtins(),
        }
    }
}

/// Configures and starts a node.
#[derive(Debug)]
pub struct NodeBuilder {
    config: Config,
    actions: ActionRegistry,
}

impl NodeBuilder {
    /// Uses this configuration.
    pub fn config(mut self, config: Config) -> NodeBuilder {
        self.config = config;
        self
    }

    /// Registers an action that `action` items can call by `name`. It may
    /// run more than once for one item (at-least-once): use
    /// [`ActionCall::idempotency_key`] to make its side effects safe.
    pub fn action<F, Fut>(mut self, name: &str, f: F) -> NodeBuilder
    where
        F: Fn(ActionCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        self.actions.register(name, f);
        self
    }

    /// Starts the node inside the current actix system: connects to the
    /// database, applies migrations under a database lock, starts the
    /// script threads, the supervisor (which resumes this node's unfinished
    /// executions) and the HTTP server. Returns once the HTTP server
    /// listens; `/api/healthstatus` turns 200 when recovery is done.
    pub async fn start(mut self) -> Result<NodeHandle, StartError> {
        baton_actors::tls::install_provider();
        let config = self.config;
        let listen = config.listen_addr()?;
        // TLS first: a bad certificate stops the node before it joins.
        let server_tls = match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => {
                Some(baton_actors::tls::server_config(cert, key).map_err(StartError::Tls)?)
            }
            (None, None) => None,
            _ => {
                return Err(StartError::Tls(
                    "http.tls_cert and http.tls_key must be set together".into(),
                ))
            }
        };
        if let Some(ca) = &config.actions.http_tls_ca {
            self.actions.set_http_tls(
                baton_actors::tls::client_config("actions.http_tls_ca", Some(ca))
                    .map_err(StartError::Tls)?,
            );
        }
        let scheme = config.http.scheme();
        let url_shown = redact(&config.database.url);
        let db_err = |source| StartError::Database {
            url: url_shown.clone(),
            source,
        };
        let cluster = config.cluster.enabled.then(|| ClusterTiming {
            interval: Duration::from_millis(config.cluster.heartbeat_interval_ms),
            timeout: Duration::from_millis(config.cluster.failover_timeout_ms()),
            active_nodes: config.cluster.active_nodes,
        });
        let limits = cluster
            .map(|t| SessionLimits::for_cluster(t.interval, t.timeout))
            .unwrap_or_default();
        let store = Store::connect_with(
            &config.database.url,
            config.database.max_connections,
            limits,
        )
        .await
        .map_err(db_err)?;
        store.migrate().await.map_err(db_err)?;
        match &cluster {
            Some(t) => refuse_different_settings(&store, &config, t).await?,
            None => refuse_standalone_on_a_cluster(&store, &config).await?,
        }
        if let Some(t) = &cluster {
            match database_timeout_warning(&store, t.timeout).await {
                Ok(Some(warning)) => tracing::warn!("{warning}"),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the database's own timeouts"),
            }
        }

        let scripts = ScriptPool::start(
            config.scripts.threads,
            ScriptLimits {
                timeout_ms: config.scripts.timeout_ms,
                memory_limit_mb: config.scripts.memory_limit_mb,
            },
        )
        .with_inline(config.scripts.inline);
        // No listen address: a worker with no HTTP API.
        let listener = match listen {
            None => None,
            Some(listen) => {
                let l = std::net::TcpListener::bind(listen).map_err(|source| StartError::Bind {
                    addr: listen.to_string(),
                    source,
                })?;
                let addr = l.local_addr().map_err(|source| StartError::Bind {
                    addr: listen.to_string(),
                    source,
                })?;
                Some((l, addr))
            }
        };
        let addr = listener.as_ref().map(|(_, a)| *a);
        let node_id = config.node_id(addr.map_or(0, |a| a.port()));
        let status = Arc::new(StatusCell::default());
        let definitions = baton_actors::workflow::DefinitionCache::default();
        let metrics = Arc::new(EngineMetrics::default());
        let admission = Admission::new(
            config.engine.max_running,
            Duration::from_millis(config.engine.start_wait_ms),
            metrics.clone(),
        );
        let supervisor = NodeSupervisor::new(SupervisorConfig {
            node_id: node_id.clone(),
            address: config
                .node
                .advertise_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned())
                .or_else(|| addr.map(|a| format!("{scheme}://{a}")))
                .unwrap_or_default(),
            store: store.clone(),
            scripts: scripts.clone(),
            actions: self.actions.clone(),
            fingerprint: config.fingerprint(),
            definitions: definitions.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            cluster,
            max_item_starts: config.engine.max_item_starts,
            max_depth: config.engine.max_depth,
            fan_out: config.engine.foreach_parallelism,
            admission: admission.clone(),
            retention: config.retention.enabled.then(|| RetentionPolicy {
                finished_after: Duration::from_millis(config.retention.finished_after_ms),
                events_after: Duration::from_millis(config.retention.cluster_events_after_ms),
                batch: config.retention.batch,
                every: Duration::from_millis(config.retention.interval_ms),
            }),
        })
        .start();
        if !config.notify.webhooks.is_empty() {
            NotifierActor::new(NotifierConfig {
                store: store.clone(),
                node_id: node_id.clone(),
                webhooks: config.notify.webhooks.iter().map(|w| w.webhook()).collect(),
                tls: self.actions.http_tls().clone(),
                metrics: metrics.clone(),
                every: Duration::from_millis(500),
                status: status.clone(),
            })
            .start();
        }

        // A cluster node drains within its bound (below the failover
        // timeout); a standalone node gives running items 5 s.
        let drain = if config.cluster.enabled {
            Duration::from_millis(config.cluster.drain_timeout_ms())
        } else {
            Duration::from_secs(5)
        };
        let config = Arc::new(config);
        let starter = Starter {
            supervisor: supervisor.clone(),
            admission,
            store: store.clone(),
            definitions: definitions.clone(),
        };
        let state = web::Data::new(AppState {
            node_id: node_id.clone(),
            supervisor: supervisor.clone(),
            store: store.clone(),
            scripts: scripts.clone(),
            actions: self.actions.clone(),
            status: status.clone(),
            definitions,
            config: config.clone(),
            metrics: metrics.clone(),
            owned_cache: Default::default(),
            starter: starter.clone(),
        });
        let (server_handle, server_task) = match listener {
            None => (None, None),
            Some((listener, addr)) => {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .wrap(middleware::from_fn(http::standby_gate))
                        .wrap(middleware::from_fn(http::auth_check))
                        .wrap(middleware::from_fn(http::access_log))
                        .configure(http::routes)
                        .default_service(web::to(http::not_found))
                })
                .workers(config.http.workers)
                .disable_signals()
                .shutdown_timeout(5);
                // With a certificate: HTTPS only on this listener.
                let server = match server_tls {
                    Some(tls) => server.listen_rustls_0_23(listener, tls),
                    None => server.listen(listener),
                }
                .map_err(|source| StartError::Bind {
                    addr: addr.to_string(),
                    source,
                })?
                .run();
                (Some(server.handle()), Some(actix_rt::spawn(server)))
            }
        };

        // Wait (briefly) for recovery or for joining the cluster.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while status.get().state == NodeState::Starting && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        match addr {
            Some(addr) => tracing::info!(node = %node_id, %addr, "node started"),
            None => tracing::info!(node = %node_id, "node started (no HTTP API)"),
        }
        Ok(NodeHandle {
            addr,
            scheme,
            node_id,
            supervisor,
            starter,
            store,
            status,
            metrics,
            server: server_handle,
            server_task,
            scripts,
            actions: self.actions,
            drain,
        })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A running node.
pub struct NodeHandle {
    addr: Option<SocketAddr>,
    scheme: &'static str,
    node_id: String,
    supervisor: Addr<NodeSupervisor>,
    starter: Starter,
    store: Store,
    status: Arc<StatusCell>,
    metrics: Arc<EngineMetrics>,
    server: Option<actix_web::dev::ServerHandle>,
    server_task: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
    scripts: ScriptPool,
    actions: ActionRegistry,
    drain: Duration,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node_id", &self.node_id)
            .field("addr", &self.addr)
            .finish()
    }
}

impl NodeHandle {
    /// The address the HTTP API listens on; `None` for a node started
    /// with an empty `http.listen` (no HTTP API).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The HTTP API's base URL, such as `http://127.0.0.1:8280`
    /// (`https://` with `http.tls_cert`); empty for a node without an HTTP
    /// API.
    pub fn url(&self) -> String {
        self.addr
            .map(|a| format!("{}://{a}", self.scheme))
            .unwrap_or_default()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Starts executions as the HTTP API does (admission included).
    pub fn starter(&self) -> &Starter {
        &self.starter
    }

    /// The supervisor actor, for driving the node with messages.
    pub fn supervisor(&self) -> &Addr<NodeSupervisor> {
        &self.supervisor
    }

    /// The store the node uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's state.
    pub fn state(&self) -> NodeState {
        self.status.get().state
    }

    /// The node's engine counters.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Stops gracefully: health turns 503 (`STOPPING`), new work is
    /// refused, each execution stops after its current item (checkpointed;
    /// items still running past the drain bound, `cluster.drain_timeout_ms`
    /// or 5 s standalone, are recorded interrupted and run again on the
    /// next owner), the HTTP server finishes in-flight requests, and the
    /// node leaves. A cluster node heartbeats until it has handed off.
    pub async fn stop(self) {
        let drain = self.drain;
        self.stop_with_grace(drain).await;
    }

    /// [`NodeHandle::stop`] with a chosen grace period for running items.
    pub async fn stop_with_grace(self, grace: Duration) {
        let _ = self.supervisor.send(Shutdown { grace }).await;
        if let Some(server) = self.server {
            server.stop(true).await;
        }
        if let Some(task) = self.server_task {
            let _ = task.await;
        }
        self.store.db().close().await;
    }

    /// Waits until the HTTP server stops (at once for a node without one).
    pub async fn wait(&mut self) {
        if let Some(task) = &mut self.server_task {
            let _ = task.await;
        }
    }

    /// Imports a definition in process (JSON, or YAML with `yaml`), with
    /// the checks of `POST /api/workflows`: every problem at once, each
    /// with its path; an id already stored is an error (`PUT` replaces).
    /// Returns the stored version.
    pub async fn import_definition(
        &self,
        body: &[u8],
        yaml: bool,
    ) -> Result<i64, crate::error::ApiError> {
        let format = if yaml {
            baton_actors::workflow::SourceFormat::Yaml
        } else {
            baton_actors::workflow::SourceFormat::Json
        };
        let def = http::workflows::validate_definition(&self.actions, &self.scripts, body, format)
            .await?;
        Ok(self
            .store
            .insert_workflow(&def.id, &def.name, def.to_json_string())
            .await?)
    }

    /// Starts an execution of `workflow`'s current version in process, as
    /// `POST /api/workflows/{id}/executions` does (the same checks: the
    /// node must be running, the inputs must fit; a repeated
    /// `execution_id` starts nothing new; with `engine.max_running` runs in
    /// memory it waits up to `engine.start_wait_ms` for one to end or park,
    /// then is refused with [`EngineError::Overloaded`]). The handle's
    /// [`ExecutionHandle::result`] waits for its end.
    pub async fn start_execution(
        &self,
        workflow: &str,
        inputs: serde_json::Value,
        execution_id: Option<String>,
    ) -> Result<ExecutionHandle, EngineError> {
        let (row, _created) = self
            .starter
            .start(workflow.to_owned(), inputs, execution_id)
            .await?;
        Ok(ExecutionHandle {
            id: row.id,
            store: self.store.clone(),
        })
    }
}

/// An execution started in process ([`NodeHandle::start_execution`]).
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    id: String,
    store: Store,
}

/// How an execution ended other than `completed`, or why its end could
/// not be read.
#[derive(Debug, Error)]
pub enum ExecutionError {
    /// It ended `failed`, with this error.
    #[error("execution failed: {0}")]
    Failed(String),
    /// It was canceled.
    #[error("execution canceled")]
    Canceled,
    /// Its row is gone (deleted).
    #[error("execution {0} not found")]
    NotFound(String),
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] baton_actors::StoreError),
}

impl ExecutionHandle {
    /// The execution's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until the execution ends, on whichever node runs it (after a
    /// failover too), and gives its outputs, or how it ended otherwise.
    pub async fn result(&self) -> Result<serde_json::Value, ExecutionError> {
        use baton_actors::store::state;
        let mut pause = Duration::from_millis(10);
        loop {
            let row = self
                .store
                .execution(&self.id)
                .await?
                .ok_or_else(|| ExecutionError::NotFound(self.id.clone()))?;
            match row.state.as_str() {
                state::COMPLETED => {
                    let outputs = row
                        .outputs
                        .as_deref()
                        .and_then(|t| serde_json::from_str(t).ok())
                        .unwrap_or(serde_json::Value::Object(Default::default()));
                    return Ok(outputs);
                }
                state::FAILED => return Err(ExecutionError::Failed(row.error.unwrap_or_default())),
                state::CANCELED => return Err(ExecutionError::Canceled),
                _ => {}
            }
            actix_rt::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}
