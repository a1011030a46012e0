//! A small HTTP client of Baton's API, behind the CLI's client verbs
//! (`baton workflow ...`, `baton execution ...`, `baton cluster ...`).
//!
//! A server that cannot be reached, or that answers with an error status,
//! is a [`ClientError`]: the CLI exits 3 on it, apart from its other
//! failures.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

/// The server could not be asked, or refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why there was no answer.
        reason: String,
    },
    /// An answer with an error status (4xx or 5xx).
    #[error("{text}")]
    Refused {
        /// The status.
        status: u16,
        /// `409: <message>`, then each detail on its line.
        text: String,
    },
}

/// A client of one node's API.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: awc::Client,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client of the node at `base` (`http://127.0.0.1:8280`, or
    /// `https://` verified against the system's roots), with an optional
    /// bearer token. Must be used inside an actix system.
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client::with_tls(base, token, baton_actors::tls::default_client_config())
    }

    /// As [`Client::new`], trusting the certificates of `ca_cert` (a PEM
    /// file) besides the system's roots for `https://` servers.
    pub fn with_ca(base: &str, token: Option<String>, ca_cert: &Path) -> anyhow::Result<Client> {
        let tls =
            baton_actors::tls::client_config("--ca-cert", Some(ca_cert)).map_err(|e| anyhow!(e))?;
        Ok(Client::with_tls(base, token, tls))
    }

    fn with_tls(
        base: &str,
        token: Option<String>,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Client {
        baton_actors::tls::install_provider();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: awc::Client::builder()
                .connector(awc::Connector::new().rustls_0_23(tls))
                .timeout(Duration::from_secs(30))
                .finish(),
            token,
        }
    }

    async fn send(
        &self,
        method: awc::http::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Value)> {
        let a = self.request(method, path, content_type, body, None).await?;
        if a.status >= 400 {
            return Err(a.refused());
        }
        Ok((a.status, a.value))
    }

    /// One request; any status is an answer (the caller decides).
    async fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .insert_header(("Content-Type", content_type));
        if let Some(t) = &self.token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        if let Some(tag) = if_match {
            req = req.insert_header(("If-Match", tag));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header("etag");
        let next_cursor = header("baton-next-cursor");
        let bytes =
            resp.body()
                .limit(64 * 1024 * 1024)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: format!("reading the answer: {e}"),
                })?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer {
            status,
            etag,
            next_cursor,
            value,
        })
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(awc::http::Method::GET, path, "application/json", None)
            .await?
            .1)
    }

    /// Imports a definition file (`.json`, `.yaml` or `.yml`).
    pub async fn import(&self, file: &Path) -> anyhow::Result<Value> {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let ct = content_type_of(file);
        Ok(self
            .send(awc::http::Method::POST, "/api/workflows", ct, Some(body))
            .await?
            .1)
    }

    /// Imports a definition file, or replaces the stored definition of the
    /// same id with it (a new version, `If-Match` its current ETag).
    pub async fn import_or_replace(&self, file: &Path) -> anyhow::Result<Value> {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let ct = content_type_of(file);
        let first = self
            .request(
                awc::http::Method::POST,
                "/api/workflows",
                ct,
                Some(body.clone()),
                None,
            )
            .await?;
        if first.status != 409 {
            if first.status >= 400 {
                return Err(first.refused());
            }
            return Ok(first.value);
        }
        let id = definition_id(&body, ct)
            .with_context(|| format!("reading the id of {}", file.display()))?;
        let path = format!("/api/workflows/{id}");
        // A concurrent replace between the read and the write answers 412:
        // read the new version and try again.
        for _ in 0..5 {
            let current = self
                .request(
                    awc::http::Method::GET,
                    &path,
                    "application/json",
                    None,
                    None,
                )
                .await?;
            if current.status >= 400 {
                return Err(current.refused());
            }
            let tag = current
                .etag
                .ok_or_else(|| anyhow!("{path} answered without an ETag"))?;
            let put = self
                .request(
                    awc::http::Method::PUT,
                    &path,
                    ct,
                    Some(body.clone()),
                    Some(&tag),
                )
                .await?;
            match put.status {
                412 => continue,
                s if s >= 400 => return Err(put.refused()),
                _ => return Ok(put.value),
            }
        }
        bail!("{path} kept changing while it was being replaced; try again")
    }

    /// Starts an execution; with `wait`, polls until it ends.
    pub async fn run(
        &self,
        workflow: &str,
        inputs: Value,
        execution_id: Option<String>,
        wait: bool,
    ) -> anyhow::Result<Value> {
        let mut body = serde_json::json!({ "inputs": inputs });
        if let Some(id) = execution_id {
            body["execution_id"] = Value::String(id);
        }
        let path = format!("/api/workflows/{workflow}/executions");
        let (_, started) = self
            .send(
                awc::http::Method::POST,
                &path,
                "application/json",
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if !wait {
            return Ok(started);
        }
        let id = started
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the answer has no execution id"))?
            .to_owned();
        self.wait_for(&id, None, |_| {}).await
    }

    /// Polls an execution every 200 ms until it ends (or `timeout`
    /// passes: then the execution as last seen), calling `progress` with
    /// each view read.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&Value),
    ) -> anyhow::Result<Value> {
        let start = std::time::Instant::now();
        loop {
            let e = self.get(&format!("/api/executions/{id}")).await?;
            progress(&e);
            if matches!(
                e.get("state").and_then(Value::as_str),
                Some("completed" | "failed" | "canceled")
            ) || timeout.is_some_and(|t| start.elapsed() >= t)
            {
                return Ok(e);
            }
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `method path` with a JSON body (or none) and returns the
    /// answer's body.
    pub async fn send_json(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self
            .send(
                method,
                path,
                "application/json",
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?
            .1)
    }

    /// GETs every page of an array route that pages by the
    /// `Baton-Next-Cursor` header (`path` has a query string already).
    pub async fn get_all_pages(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let url = match &next {
                Some(c) => format!("{path}&cursor={c}"),
                None => path.to_owned(),
            };
            let a = self
                .request(awc::http::Method::GET, &url, "application/json", None, None)
                .await?;
            if a.status >= 400 {
                return Err(a.refused());
            }
            match a.value {
                Value::Array(items) => out.extend(items),
                other => bail!("{url} answered {other}, not an array"),
            }
            match a.next_cursor {
                Some(c) => next = Some(c),
                None => return Ok(out),
            }
        }
    }
}

/// One answer: status, `ETag`, `Baton-Next-Cursor`, body.
struct Answer {
    status: u16,
    etag: Option<String>,
    next_cursor: Option<String>,
    value: Value,
}

impl Answer {
    fn refused(&self) -> anyhow::Error {
        ClientError::Refused {
            status: self.status,
            text: self.error_text(),
        }
        .into()
    }

    /// `409: workflow order already exists`, then each detail on its line.
    fn error_text(&self) -> String {
        let value = &self.value;
        let msg = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        let mut text = format!("{}: {msg}", self.status);
        if let Some(details) = value.pointer("/error/details").and_then(Value::as_array) {
            for d in details {
                let path = d.get("path").and_then(Value::as_str).unwrap_or_default();
                let m = d.get("message").and_then(Value::as_str).unwrap_or_default();
                text.push_str(&format!("\n  {path}: {m}"));
            }
        }
        text
    }
}

fn content_type_of(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => "application/yaml",
        _ => "application/json",
    }
}

/// The `id` of a definition document.
fn definition_id(body: &[u8], content_type: &str) -> anyhow::Result<String> {
    let doc: Value = if content_type == "application/yaml" {
        serde_yaml_ng::from_slice(body)?
    } else {
        serde_json::from_slice(body)?
    };
    doc.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the definition has no string `id`"))
}

/// Formats `GET /api/cluster` as a table.
pub fn cluster_table(v: &Value) -> String {
    let mut out = String::new();
    let mode = v.get("mode").and_then(Value::as_str).unwrap_or("?");
    let s = v.get("settings").cloned().unwrap_or_default();
    out.push_str(&format!(
        "mode: {mode}   active_nodes: {}   heartbeat: {} ms x {} = failover timeout {} ms\n",
        s["active_nodes"],
        s["heartbeat_interval_ms"],
        s["failover_heartbeats"],
        s["failover_timeout_ms"]
    ));
    out.push_str(&format!(
        "{:<28} {:<8} {:<9} {:>6} {:>10} {:>10}  {}\n",
        "NODE", "ROLE", "STATE", "EPOCH", "HB AGE ms", "EXECUTIONS", "ADDRESS"
    ));
    for n in v
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |k: &str| match n.get(k) {
            Some(Value::String(s)) => s.clone(),
            // A standalone node writes no heartbeat: no age to show.
            Some(Value::Null) => "-".to_owned(),
            None => String::new(),
            Some(other) => other.to_string(),
        };
        out.push_str(&format!(
            "{:<28} {:<8} {:<9} {:>6} {:>10} {:>10}  {}\n",
            text("id"),
            text("role"),
            text("state"),
            text("epoch"),
            text("heartbeat_age_ms"),
            text("executions"),
            text("address")
        ));
    }
    out
}
