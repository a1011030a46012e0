//! The node's configuration: one typed [`Config`] with defaults, layered as
//! built-in defaults, then a TOML file, then `BATON_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Every load error names
//! the key (and where the value came from). Loaded once in `main` (or by an
//! embedding program) and passed down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that Baton does not know, or a value of the wrong type.
    #[error("config key `{key}` ({origin}): {message}")]
    Key {
        /// The key, as `section.key`.
        key: String,
        /// Where the value came from (the file, an environment variable, a flag).
        origin: String,
        /// What is wrong.
        message: String,
    },
}

fn key_error(key: &str, origin: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        origin: origin.to_owned(),
        message: message.into(),
    }
}

/// Baton's whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`
    pub node: NodeConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[scripts]`
    pub scripts: ScriptsConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[engine]`
    pub engine: EngineConfig,
    /// `[retention]`
    pub retention: RetentionConfig,
    /// `[actions]`
    pub actions: ActionsConfig,
    /// `[notify]`
    pub notify: NotifyConfig,
}

/// `[notify]`: who is told of cluster events.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `[[notify.webhooks]]`: receivers of cluster events.
    pub webhooks: Vec<WebhookConfig>,
}

/// `[[notify.webhooks]]`: one receiver of cluster events, sent by exactly
/// one node of the cluster per event (a delivery claimed in the database),
/// retried with backoff, recorded in `GET /api/cluster/events`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are posted (`http://` or `https://`; HTTPS verified
    /// against the system roots plus `actions.http_tls_ca`).
    pub url: String,
    /// Its name in the delivery records; default: the URL. Give every
    /// node of a cluster the same name for the same receiver.
    #[serde(default)]
    pub name: Option<String>,
    /// The events it wants: `join`/`joined`, `leave`/`left`,
    /// `promote`/`promoted`, `fence`/`fenced`, `failover`, `adopt`,
    /// `config-refused`, `poison-pill`, `database-regained`; default: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Signs each body: header `Baton-Signature: sha256=<hex HMAC-SHA256>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// One attempt's bound.
    #[serde(default = "WebhookConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before a delivery is recorded failed.
    #[serde(default = "WebhookConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry's delay, doubled each attempt (at most 60 s).
    #[serde(default = "WebhookConfig::default_backoff_ms")]
    pub backoff_ms: u64,
}

impl WebhookConfig {
    fn default_timeout_ms() -> u64 {
        5000
    }

    fn default_max_attempts() -> u32 {
        10
    }

    fn default_backoff_ms() -> u64 {
        1000
    }

    /// Its name: `name`, or the URL.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }

    /// The engine's form (checked by [`Config::load`]).
    pub fn webhook(&self) -> baton_actors::notify::Webhook {
        let events = if self.events.is_empty() {
            baton_actors::notify::EVENT_KINDS
                .iter()
                .map(|k| (*k).to_owned())
                .collect()
        } else {
            self.events
                .iter()
                .filter_map(|e| baton_actors::notify::event_kind(e))
                .map(str::to_owned)
                .collect()
        };
        baton_actors::notify::Webhook {
            name: self.name().to_owned(),
            url: self.url.clone(),
            events,
            secret: self.secret.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            max_attempts: self.max_attempts,
            backoff: std::time::Duration::from_millis(self.backoff_ms),
        }
    }
}

/// `[retention]`: how long finished executions and cluster events are kept.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `false`: nothing is ever purged.
    pub enabled: bool,
    /// Finished executions (with their item log and signals) are purged
    /// this long after they ended.
    pub finished_after_ms: u64,
    /// Cluster events are purged this long after they happened.
    pub cluster_events_after_ms: u64,
    /// At most this many executions (and events) per purge transaction.
    pub batch: u64,
    /// How often an active node looks for rows to purge.
    pub interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            finished_after_ms: 7 * 24 * 3_600_000,
            cluster_events_after_ms: 30 * 24 * 3_600_000,
            batch: 500,
            interval_ms: 60_000,
        }
    }
}

/// `[engine]`: how executions run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// The poison-pill budget: an item started this many times without
    /// completing (crashes and failovers count) fails its execution
    /// instead of running again.
    pub max_item_starts: u32,
    /// How deep `workflow` items may nest.
    pub max_depth: u32,
    /// Children a `parallel` foreach runs at once.
    pub foreach_parallelism: u32,
    /// Runs of new executions (started by a client) a node holds at once;
    /// a start beyond it waits for one to end or park. Children, woken,
    /// resumed and recovered runs are not held back by it.
    pub max_running: u32,
    /// How long a start waits for a slot under `max_running` before it is
    /// refused with 503 `overloaded` (nothing created); 0: refused at once.
    pub start_wait_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_item_starts: 10,
            max_depth: 32,
            foreach_parallelism: 8,
            max_running: 10_000,
            start_wait_ms: 5_000,
        }
    }
}

/// `[node]`: who this node is.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique and stable across restarts; default: host name and port.
    pub id: Option<String>,
    /// The URL peers and clients are told to use for this node (in the
    /// cluster view and in a standby's 503); default: `http://` and the
    /// address it listens on. Required in cluster mode when listening on
    /// an unspecified address (`0.0.0.0`, `[::]`).
    pub advertise_url: Option<String>,
}

/// `[http]`: the HTTP API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// A PEM certificate chain; with `tls_key`, the API is served over
    /// HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8280".into(),
            workers: 2,
            max_body_bytes: 1024 * 1024,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpConfig {
    /// True when the API is served over HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls() {
            "https"
        } else {
            "http"
        }
    }
}

/// `[actions]`: the built-in actions.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// PEM certificates the `http` action trusts besides the system's
    /// roots (a private CA).
    pub http_tls_ca: Option<PathBuf>,
}

/// `[database]`: the shared database.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...`, `postgres://...` or `mysql://...`.
    pub url: String,
    /// Pool size (SQLite always uses one connection per process).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://baton.db?mode=rwc".into(),
            max_connections: 16,
        }
    }
}

/// `[cluster]`: cluster settings; identical on every node of a cluster.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `false`: standalone.
    pub enabled: bool,
    /// How many nodes run workflows and answer clients.
    pub active_nodes: u32,
    /// Heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats before a node is declared dead.
    pub failover_heartbeats: u32,
    /// How long a stopping node lets running items finish before it
    /// records them interrupted and hands them off; below the failover
    /// timeout. Default: failover timeout - 2 intervals (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            active_nodes: 1,
            heartbeat_interval_ms: 1000,
            failover_heartbeats: 5,
            drain_timeout_ms: None,
        }
    }
}

impl ClusterConfig {
    /// interval x heartbeats.
    pub fn failover_timeout_ms(&self) -> u64 {
        self.heartbeat_interval_ms * u64::from(self.failover_heartbeats)
    }

    /// The drain bound: `drain_timeout_ms`, or the failover timeout less
    /// two intervals (at least one interval).
    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout_ms.unwrap_or_else(|| {
            self.failover_timeout_ms()
                .saturating_sub(2 * self.heartbeat_interval_ms)
                .max(self.heartbeat_interval_ms)
        })
    }
}

/// `[scripts]`: limits of the JavaScript engine; identical cluster-wide.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// Wall-clock limit of one evaluation.
    pub timeout_ms: u64,
    /// Heap limit of one script thread.
    pub memory_limit_mb: u64,
    /// Script threads.
    pub threads: usize,
    /// Straight-line scripts (no calls, loops or functions) run on the
    /// actors' thread instead of a script thread.
    pub inline: bool,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            timeout_ms: 5000,
            memory_limit_mb: 64,
            threads: 2,
            inline: true,
        }
    }
}

/// `[auth]`: API tokens.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens; empty: no authentication, loopback only.
    pub tokens: Vec<TokenConfig>,
}

/// One accepted API token, stored as the SHA-256 of the token.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// What the token may do.
    pub role: Role,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Operator,
    /// Read only.
    Viewer,
}

const SECTIONS: [&str; 10] = [
    "node",
    "http",
    "database",
    "cluster",
    "scripts",
    "auth",
    "engine",
    "retention",
    "actions",
    "notify",
];

impl Config {
    /// Loads the configuration: `file` (if any), then the `BATON_*`
    /// variables among `env`, then `overrides` (`section.key`, TOML or
    /// plain text value, from flags), then checks every value.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        // Where each key (and each section) came from, for the errors.
        let mut origins: Vec<(String, String)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            let at = |section: &str, key: Option<&str>| match line_of(&text, section, key) {
                Some(n) => format!("file {} line {n}", path.display()),
                None => format!("file {}", path.display()),
            };
            for (section, v) in &table {
                origins.push((section.clone(), at(section, None)));
                if let Some(t) = v.as_table() {
                    for k in t.keys() {
                        origins.push((format!("{section}.{k}"), at(section, Some(k))));
                    }
                }
            }
        }
        // Values read as numbers or booleans from text, kept as text in
        // case their field is a string.
        let mut as_text: Vec<(String, String)> = Vec::new();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("BATON_") && k.contains("__"))
            .collect();
        env.sort();
        for (name, value) in env {
            let rest = &name["BATON_".len()..];
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let dotted = format!("{}.{}", section.to_lowercase(), key.to_lowercase());
            if set(
                &mut table,
                &dotted,
                &value,
                &format!("environment variable {name}"),
            )? {
                as_text.push((dotted.clone(), value.clone()));
            }
            origins.push((dotted, format!("environment variable {name}")));
        }
        for (key, value) in overrides {
            if set(&mut table, key, value, "command-line flag")? {
                as_text.push((key.clone(), value.clone()));
            }
            origins.push((key.clone(), "command-line flag".into()));
        }
        // The origin of a key, or of the nearest enclosing key that has one
        // (`auth.tokens[0].sha256` came with `auth.tokens`).
        let origin_of = |key: &str| {
            let encloses = |k: &str| {
                key == k
                    || key
                        .strip_prefix(k)
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            };
            // The longest key; among equals the last set (flags over
            // variables over the file): `max_by_key` keeps the last.
            origins
                .iter()
                .filter(|(k, _)| encloses(k))
                .max_by_key(|(k, _)| k.len())
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| "configuration".into())
        };
        let config: Config = loop {
            match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
                Ok(c) => break c,
                Err(e) => {
                    let path = e.path().to_string();
                    let (key, message) = explain(&path, &e.into_inner().to_string());
                    // A string field given `1` by a variable or flag: the text.
                    if message.contains("expected a string") {
                        if let Some(i) = as_text.iter().position(|(k, _)| *k == key) {
                            let (k, raw) = as_text.remove(i);
                            if let Some((section, field)) = k.split_once('.') {
                                if let Some(t) =
                                    table.get_mut(section).and_then(toml::Value::as_table_mut)
                                {
                                    t.insert(field.to_owned(), toml::Value::String(raw));
                                    continue;
                                }
                            }
                        }
                    }
                    return Err(key_error(&key, &origin_of(&key), message));
                }
            }
        };
        config.check(&origin_of)?;
        Ok(config)
    }

    fn check(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| key_error(key, &origin_of(key), msg);
        // An empty listen address: a worker with no HTTP API (embedded).
        let listen: Option<SocketAddr> = if self.http.listen.is_empty() {
            if self.node.id.is_none() {
                return Err(err(
                    "node.id",
                    "must be set when http.listen is empty (the default id uses the HTTP port)"
                        .into(),
                ));
            }
            None
        } else {
            Some(self.http.listen.parse().map_err(|_| {
                err(
                    "http.listen",
                    format!(
                        "`{}` is not an address such as 127.0.0.1:8280 (or empty for no HTTP API)",
                        self.http.listen
                    ),
                )
            })?)
        };
        if let Some(listen) =
            listen.filter(|l| !l.ip().is_loopback() && self.auth.tokens.is_empty())
        {
            return Err(err(
                "http.listen",
                format!("{listen} is not a loopback address; listening beyond this host needs [auth] tokens"),
            ));
        }
        if let Some(url) = &self.node.advertise_url {
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .map(|rest| rest.split('/').next().unwrap_or(""))
                .unwrap_or("");
            if host.is_empty() || host.starts_with(':') {
                return Err(err(
                    "node.advertise_url",
                    format!("`{url}` is not a URL such as http://baton-a.internal:8280"),
                ));
            }
            if host.starts_with("0.0.0.0") || host.starts_with("[::]") {
                return Err(err(
                    "node.advertise_url",
                    format!("`{url}` is not an address anyone can reach"),
                ));
            }
        } else if let Some(listen) =
            listen.filter(|l| self.cluster.enabled && l.ip().is_unspecified())
        {
            return Err(err(
                "http.listen",
                format!(
                    "{listen} listens on every interface, which is no address for peers and clients; \
                     set node.advertise_url to the URL they should use"
                ),
            ));
        }
        if self.http.workers == 0 || self.http.workers > 64 {
            return Err(err("http.workers", "must be between 1 and 64".into()));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(err("http.max_body_bytes", "must be at least 1024".into()));
        }
        let url = &self.database.url;
        if !["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(err(
                "database.url",
                format!("`{url}` must start with sqlite:, postgres: or mysql:"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(err("database.max_connections", "must be at least 1".into()));
        }
        if let Some(id) = &self.node.id {
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(err(
                    "node.id",
                    "must be 1 to 128 letters, digits, `_`, `.` or `-`".into(),
                ));
            }
        }
        let c = &self.cluster;
        if c.active_nodes == 0 {
            return Err(err("cluster.active_nodes", "must be at least 1".into()));
        }
        if !(10..=3_600_000).contains(&c.heartbeat_interval_ms) {
            return Err(err(
                "cluster.heartbeat_interval_ms",
                "must be between 10 and 3600000".into(),
            ));
        }
        // A node fences itself when no heartbeat committed for (timeout -
        // one interval); at 2 that is one interval, and a heartbeat a little
        // late on timer jitter fences a healthy node.
        if !(3..=1000).contains(&c.failover_heartbeats) {
            return Err(err(
                "cluster.failover_heartbeats",
                format!(
                    "must be at least 3 (and at most 1000), not {}: at 2 a node fences itself on timer jitter",
                    c.failover_heartbeats
                ),
            ));
        }
        if let Some(d) = c.drain_timeout_ms {
            if c.enabled && d >= c.failover_timeout_ms() {
                return Err(err(
                    "cluster.drain_timeout_ms",
                    format!(
                        "must be below the failover timeout ({} ms = heartbeat_interval_ms x failover_heartbeats)",
                        c.failover_timeout_ms()
                    ),
                ));
            }
        }
        if self.scripts.timeout_ms == 0 {
            return Err(err("scripts.timeout_ms", "must be at least 1".into()));
        }
        if !(1..=4096).contains(&self.scripts.memory_limit_mb) {
            return Err(err(
                "scripts.memory_limit_mb",
                "must be between 1 and 4096".into(),
            ));
        }
        if !(1..=1000).contains(&self.engine.max_depth) {
            return Err(err("engine.max_depth", "must be between 1 and 1000".into()));
        }
        if !(1..=10_000).contains(&self.engine.foreach_parallelism) {
            return Err(err(
                "engine.foreach_parallelism",
                "must be between 1 and 10000".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.engine.max_running) {
            return Err(err(
                "engine.max_running",
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.engine.start_wait_ms > 600_000 {
            return Err(err(
                "engine.start_wait_ms",
                "must be at most 600000 (ten minutes)".into(),
            ));
        }
        if !(1..=1000).contains(&self.engine.max_item_starts) {
            return Err(err(
                "engine.max_item_starts",
                "must be between 1 and 1000".into(),
            ));
        }
        if !(1..=64).contains(&self.scripts.threads) {
            return Err(err("scripts.threads", "must be between 1 and 64".into()));
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(err("http.tls_key", "must be set with http.tls_cert".into()))
            }
            (None, Some(_)) => {
                return Err(err("http.tls_cert", "must be set with http.tls_key".into()))
            }
            (Some(cert), Some(key)) => {
                if let Err(e) = baton_actors::tls::server_config(cert, key) {
                    let key = if e.starts_with("http.tls_cert") {
                        "http.tls_cert"
                    } else {
                        "http.tls_key"
                    };
                    let message = e.strip_prefix(&format!("{key}: ")).unwrap_or(&e);
                    return Err(err(key, message.to_owned()));
                }
            }
        }
        if let Some(ca) = &self.actions.http_tls_ca {
            baton_actors::tls::client_config("actions.http_tls_ca", Some(ca)).map_err(|e| {
                let message = e.strip_prefix("actions.http_tls_ca: ").unwrap_or(&e);
                err("actions.http_tls_ca", message.to_owned())
            })?;
        }
        // Each id of a batch is a bind parameter, twice in one statement:
        // PostgreSQL and MySQL take at most 65535.
        if !(1..=10_000).contains(&self.retention.batch) {
            return Err(err("retention.batch", "must be between 1 and 10000".into()));
        }
        if !(10..=86_400_000).contains(&self.retention.interval_ms) {
            return Err(err(
                "retention.interval_ms",
                "must be between 10 and 86400000 (one day)".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.notify.webhooks.iter().enumerate() {
            let key = |k: &str| format!("notify.webhooks[{i}].{k}");
            let uri: Result<actix_web::http::Uri, _> = w.url.parse();
            let scheme_ok = uri
                .as_ref()
                .ok()
                .and_then(|u| u.scheme_str())
                .is_some_and(|s| s == "http" || s == "https");
            if !scheme_ok || uri.as_ref().ok().and_then(|u| u.host()).is_none() {
                return Err(err(
                    &key("url"),
                    format!("`{}` is not an http:// or https:// URL", w.url),
                ));
            }
            let name = w.name();
            if name.is_empty() || name.len() > 128 {
                return Err(err(
                    &key(if w.name.is_some() { "name" } else { "url" }),
                    "a webhook's name is 1 to 128 characters (give a `name` to a longer URL)"
                        .into(),
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(err(
                    &key("name"),
                    format!("`{name}` names another webhook too; names must be unique"),
                ));
            }
            for (j, e) in w.events.iter().enumerate() {
                if baton_actors::notify::event_kind(e).is_none() {
                    return Err(err(
                        &format!("notify.webhooks[{i}].events[{j}]"),
                        format!(
                            "`{e}` is not an event; one of {}, or joined, left, promoted, fenced",
                            baton_actors::notify::EVENT_KINDS.join(", ")
                        ),
                    ));
                }
            }
            if w.secret.as_deref() == Some("") {
                return Err(err(
                    &key("secret"),
                    "must not be empty (omit it to send unsigned)".into(),
                ));
            }
            if !(1..=600_000).contains(&w.timeout_ms) {
                return Err(err(
                    &key("timeout_ms"),
                    "must be between 1 and 600000".into(),
                ));
            }
            if !(1..=100).contains(&w.max_attempts) {
                return Err(err(
                    &key("max_attempts"),
                    "must be between 1 and 100".into(),
                ));
            }
            if !(1..=3_600_000).contains(&w.backoff_ms) {
                return Err(err(
                    &key("backoff_ms"),
                    "must be between 1 and 3600000".into(),
                ));
            }
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    &format!("auth.tokens[{i}].sha256"),
                    "must be 64 hex digits (the SHA-256 of the token)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The listen address (checked by [`Config::load`]).
    /// The address to listen on; `None` when `http.listen` is empty (no
    /// HTTP API).
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.http.listen.is_empty() {
            return Ok(None);
        }
        self.http.listen.parse().map(Some).map_err(|_| {
            key_error(
                "http.listen",
                "configuration",
                format!("`{}` is not an address", self.http.listen),
            )
        })
    }

    /// This node's id: `[node] id`, or the host name and HTTP port.
    pub fn node_id(&self, port: u16) -> String {
        if let Some(id) = &self.node.id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{host}-{port}")
    }

    /// The settings every node of a cluster must share, as JSON, so that a
    /// differing key can be named.
    pub fn fingerprint(&self) -> String {
        // The drain bound is each node's own: not part of the fingerprint.
        let cluster = serde_json::json!({
            "enabled": self.cluster.enabled,
            "active_nodes": self.cluster.active_nodes,
            "heartbeat_interval_ms": self.cluster.heartbeat_interval_ms,
            "failover_heartbeats": self.cluster.failover_heartbeats,
        });
        serde_json::json!({ "cluster": cluster, "scripts": {
            "timeout_ms": self.scripts.timeout_ms,
            "memory_limit_mb": self.scripts.memory_limit_mb,
        } })
        .to_string()
    }
}

/// The key at fault and the reason, from a deserializer's path and
/// message. The message's own location lines (`in \`cluster\``) are
/// dropped: the key says where.
fn explain(path: &str, raw: &str) -> (String, String) {
    let message = raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("in `"))
        .collect::<Vec<_>>()
        .join(" ");
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next());
    let Some(field) = unknown else {
        let key = if path == "." {
            String::new()
        } else {
            path.to_owned()
        };
        return (key, message);
    };
    let key = if path == "." || path == field {
        field.to_owned()
    } else if path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    };
    if !key.contains('.') {
        return (
            key,
            format!(
                "unknown section `{field}` (expected one of {})",
                SECTIONS.join(", ")
            ),
        );
    }
    (key, message)
}

/// The 1-based line of `[section]` (no key) or of `key = ...` inside it.
fn line_of(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_owned();
            if key.is_none() && current == section {
                return Some(i + 1);
            }
            continue;
        }
        if let Some(k) = key {
            let name = t.split('=').next().unwrap_or("").trim().trim_matches('"');
            if current == section && t.contains('=') && name == k {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Sets `section.key` in `table` to `raw`, read as a TOML value when it is
/// one (`1000`, `true`, `[...]`) and as text otherwise.
///
/// Returns whether the text was read as a non-string value (`1`, `true`):
/// if the key turns out to be a string field, the caller puts the text
/// back (`BATON_NODE__ID=1` is the string "1").
fn set(
    table: &mut toml::Table,
    dotted: &str,
    raw: &str,
    origin: &str,
) -> Result<bool, ConfigError> {
    let Some((section, key)) = dotted.split_once('.') else {
        return Err(key_error(dotted, origin, "expected section.key"));
    };
    if !SECTIONS.contains(&section) {
        return Err(key_error(
            dotted,
            origin,
            format!(
                "unknown section `{section}` (expected one of {})",
                SECTIONS.join(", ")
            ),
        ));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let coerced = !value.is_str();
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry.as_table_mut() {
        Some(t) => {
            t.insert(key.to_owned(), value);
            Ok(coerced)
        }
        None => Err(key_error(section, origin, "must be a table")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_api_document() {
        let c = Config::load(None, Vec::new(), &[]).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8280");
        assert_eq!(c.database.url, "sqlite://baton.db?mode=rwc");
        assert!(!c.cluster.enabled);
        assert_eq!(c.cluster.failover_timeout_ms(), 5000);
        assert_eq!(c.scripts.timeout_ms, 5000);
        assert_eq!(c.scripts.memory_limit_mb, 64);
    }

    fn file_error(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("baton-cfg-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let e = Config::load(Some(&path), Vec::new(), &[])
            .unwrap_err()
            .to_string();
        e.replace(&path.display().to_string(), name)
    }

    #[test]
    fn a_bad_webhook_is_refused_naming_its_key() {
        let ok = "[[notify.webhooks]]\nurl = \"https://pager.internal/hook\"\nevents = [\"failover\", \"fenced\"]\nsecret = \"x\"\n";
        let dir = std::env::temp_dir().join(format!("baton-cfg-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.toml");
        std::fs::write(&path, ok).unwrap();
        let c = Config::load(Some(&path), Vec::new(), &[]).unwrap();
        let w = c.notify.webhooks[0].webhook();
        assert_eq!(w.name, "https://pager.internal/hook");
        assert_eq!(w.events, vec!["failover", "fence"]);
        assert_eq!((w.max_attempts, w.timeout.as_millis()), (10, 5000));
        for (text, key, why) in [
            (
                "[[notify.webhooks]]\nurl = \"ftp://x/\"\n",
                "notify.webhooks[0].url",
                "not an http:// or https:// URL",
            ),
            (
                "[[notify.webhooks]]\nurl = \"http://a/\"\nevents = [\"failover\", \"exploded\"]\n",
                "notify.webhooks[0].events[1]",
                "`exploded` is not an event",
            ),
            (
                "[[notify.webhooks]]\nurl = \"http://a/\"\n[[notify.webhooks]]\nurl = \"http://a/\"\n",
                "notify.webhooks[1].name",
                "names another webhook too",
            ),
            (
                "[[notify.webhooks]]\nurl = \"http://a/\"\nmax_attempts = 0\n",
                "notify.webhooks[0].max_attempts",
                "between 1 and 100",
            ),
            (
                "[[notify.webhooks]]\nurl = \"http://a/\"\nsecret = \"\"\n",
                "notify.webhooks[0].secret",
                "must not be empty",
            ),
            (
                "[[notify.webhooks]]\nurl = \"http://a/\"\nretries = 3\n",
                "notify.webhooks",
                "unknown field `retries`",
            ),
        ] {
            let e = file_error("hook.toml", text);
            assert!(e.contains(&format!("`{key}")), "{key}: {e}");
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn every_config_error_names_key_source_and_reason() {
        // An unknown key from the environment: the variable and the keys it could be.
        let e = Config::load(None, env(&[("BATON_CLUSTER__HEARTBEAT_MS", "5")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cluster.heartbeat_ms`"), "{e}");
        assert!(
            e.contains("environment variable BATON_CLUSTER__HEARTBEAT_MS"),
            "{e}"
        );
        assert!(e.contains("unknown field `heartbeat_ms`"), "{e}");
        assert!(e.contains("heartbeat_interval_ms"), "{e}");
        // A value of the wrong type: the file, its line, the type wanted.
        let e = file_error(
            "t.toml",
            "[cluster]\nenabled = true\nheartbeat_interval_ms = \"fast\"\n",
        );
        assert!(e.contains("`cluster.heartbeat_interval_ms`"), "{e}");
        assert!(e.contains("file t.toml line 3"), "{e}");
        assert!(e.contains("invalid type: string \"fast\""), "{e}");
        assert!(!e.contains("in `"), "{e}");
        // A misspelled section: named once, with the file and line.
        let e = file_error("s.toml", "# comment\n[clustr]\nenabled = true\n");
        assert!(
            e.contains("config key `clustr` (file s.toml line 2)"),
            "{e}"
        );
        assert!(e.contains("unknown section `clustr`"), "{e}");
        assert!(e.contains("cluster"), "{e}");
        // An unknown key in a known section.
        let e = file_error("k.toml", "[cluster]\nenabled = true\nfoo = 1\n");
        assert!(e.contains("`cluster.foo` (file k.toml line 3)"), "{e}");
        assert!(e.contains("unknown field `foo`, expected one of"), "{e}");
        // A bad value caught by validation, from a flag.
        let e = Config::load(
            None,
            Vec::new(),
            &[("http.listen".into(), "\"nowhere\"".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`http.listen` (command-line flag)"), "{e}");
    }

    #[test]
    fn advertise_url_is_checked_and_needed_for_a_wildcard_listen_in_a_cluster() {
        let token = format!("[{{sha256 = \"{}\", role = \"operator\"}}]", "0".repeat(64));
        let load = |pairs: &[(&str, &str)]| {
            let mut e = env(pairs);
            e.push(("BATON_AUTH__TOKENS".into(), token.clone()));
            Config::load(None, e, &[])
        };
        let e = load(&[
            ("BATON_HTTP__LISTEN", "0.0.0.0:8280"),
            ("BATON_CLUSTER__ENABLED", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http.listen") && e.contains("node.advertise_url"),
            "{e}"
        );
        let c = load(&[
            ("BATON_HTTP__LISTEN", "0.0.0.0:8280"),
            ("BATON_CLUSTER__ENABLED", "true"),
            ("BATON_NODE__ADVERTISE_URL", "http://baton-a.internal:8280"),
        ])
        .unwrap();
        assert_eq!(
            c.node.advertise_url.as_deref(),
            Some("http://baton-a.internal:8280")
        );
        for bad in ["baton-a:8280", "http://", "http://0.0.0.0:8280"] {
            let e = load(&[("BATON_NODE__ADVERTISE_URL", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("node.advertise_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn environment_values_are_typed_by_their_field() {
        let c = Config::load(
            None,
            env(&[
                ("BATON_NODE__ID", "1"),
                ("BATON_DATABASE__URL", "sqlite://x.db"),
                ("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "250"),
                ("BATON_CLUSTER__ENABLED", "true"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.node.id.as_deref(),
            Some("1"),
            "a string field keeps the text"
        );
        assert_eq!(c.cluster.heartbeat_interval_ms, 250);
        assert!(c.cluster.enabled);
        // A number field given text is still an error naming the variable.
        let e = Config::load(None, env(&[("BATON_CLUSTER__ACTIVE_NODES", "two")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("BATON_CLUSTER__ACTIVE_NODES"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = std::env::temp_dir().join(format!("baton-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "[cluster]\nheartbeat_interval_ms = 200\n[http]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
                ("BATON_HTTP__LISTEN", "127.0.0.1:2"),
                ("BATON_TEST_POSTGRES_URL", "x"),
            ]),
            &[("http.listen".into(), "127.0.0.1:3".into())],
        )
        .unwrap();
        assert_eq!(c.cluster.heartbeat_interval_ms, 300);
        assert_eq!(c.http.listen, "127.0.0.1:3");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::load(None, env(&[("BATON_CLUSTER__HEARTBEAT_MS", "3")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.heartbeat_ms"), "{e}");
        assert!(e.contains("BATON_CLUSTER__HEARTBEAT_MS"), "{e}");
        let e = Config::load(
            None,
            env(&[("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "soon")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.heartbeat_interval_ms"), "{e}");
        let e = Config::load(None, env(&[("BATON_NOPE__X", "1")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.x") && e.contains("unknown section"), "{e}");
        let e = Config::load(None, env(&[("BATON_SCRIPTS__MEMORY_LIMIT_MB", "0")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scripts.memory_limit_mb"), "{e}");
        let e = Config::load(None, env(&[("BATON_HTTP__LISTEN", "0.0.0.0:8280")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen") && e.contains("auth"), "{e}");
    }

    #[test]
    fn failover_heartbeats_below_three_is_refused_naming_the_key() {
        for n in ["0", "1", "2"] {
            let e = Config::load(None, env(&[("BATON_CLUSTER__FAILOVER_HEARTBEATS", n)]), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster.failover_heartbeats"), "{n}: {e}");
            assert!(e.contains("at least 3"), "{n}: {e}");
        }
        let c = Config::load(
            None,
            env(&[("BATON_CLUSTER__FAILOVER_HEARTBEATS", "3")]),
            &[],
        )
        .unwrap();
        assert_eq!(c.cluster.failover_heartbeats, 3);
    }

    #[test]
    fn unknown_key_in_a_file_names_key_and_file() {
        let dir = std::env::temp_dir().join(format!("baton-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.toml");
        std::fs::write(&file, "[cluster]\nactive_node = 2\n").unwrap();
        let e = Config::load(Some(&file), Vec::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.active_node"), "{e}");
        assert!(e.contains("b.toml"), "{e}");
    }
}
