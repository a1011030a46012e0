//! The built-in `http` action. It runs inside the execution actor (on the
//! node's actix arbiter, where the `awc` client lives), not through the
//! action registry, whose actions must be `Send`.
//!
//! Inputs: `url` (required), `method` (default `GET`), `headers` (object of
//! strings), `body` (a string is sent as text, anything else as JSON),
//! `timeout_ms` (default 30000), `allow_error_status` (default false).
//! Result: `{"status", "headers", "body"}`, the body parsed as JSON when it
//! is JSON and text otherwise. A status outside 2xx is an error unless
//! `allow_error_status` is true. Every request carries the item's stable
//! `Idempotency-Key` (`{execution}/{item}`) and `Baton-Attempt`, so the
//! receiver can deduplicate an at-least-once retry.
//!
//! `https://` URLs are verified against the system's trust roots plus the
//! node's `actions.http_tls_ca`. Each arbiter thread keeps one pooled
//! client per TLS configuration, shared by every call made on it, so
//! connections (and TLS sessions) are reused across items and executions.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::actions::ActionCall;

/// The action's name.
pub const NAME: &str = "http";

const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How long an idle pooled connection may be reused. Servers close idle
/// connections on their own timers (actix-web, Node and Apache after 5 s);
/// a request sent on a connection the server is closing that moment fails
/// before the server reads it ("connector has been disconnected"), which
/// costs a webhook an attempt and an `http` item a retry. Below the
/// common 5 s, reuse keeps its benefit for bursts without that race.
const IDLE_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

thread_local! {
    /// This thread's clients, by TLS configuration.
    static CLIENTS: RefCell<Vec<(Arc<rustls::ClientConfig>, awc::Client)>> =
        const { RefCell::new(Vec::new()) };
}

/// This thread's pooled client for `tls`.
pub(crate) fn client(tls: &Arc<rustls::ClientConfig>) -> awc::Client {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((_, c)) = clients.iter().find(|(t, _)| Arc::ptr_eq(t, tls)) {
            return c.clone();
        }
        let c = awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .rustls_0_23(tls.clone())
                    .conn_keep_alive(IDLE_REUSE),
            )
            .disable_timeout()
            .finish();
        clients.push((tls.clone(), c.clone()));
        c
    })
}

/// Performs the request described by `call.inputs`, verifying `https://`
/// servers with `tls`.
pub async fn call(call: &ActionCall, tls: &Arc<rustls::ClientConfig>) -> Result<Value, String> {
    let input = |k: &str| call.inputs.get(k);
    let url = input("url")
        .and_then(Value::as_str)
        .ok_or("http needs input `url`, a string")?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "http: `{url}`: only http:// and https:// URLs are supported"
        ));
    }
    let method = input("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = awc::http::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("http: `{method}` is not an HTTP method"))?;
    let timeout = match input("timeout_ms") {
        None | Some(Value::Null) => 30_000,
        Some(v) => v
            .as_u64()
            .filter(|ms| (1..=600_000).contains(ms))
            .ok_or("http: `timeout_ms` must be a number of milliseconds from 1 to 600000")?,
    };
    let allow_error_status = input("allow_error_status")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut req = client(tls)
        .request(method, url)
        .timeout(Duration::from_millis(timeout))
        .insert_header(("Idempotency-Key", call.idempotency_key.as_str()))
        .insert_header(("Baton-Attempt", call.attempt.to_string()));
    match input("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("http: header `{k}` must be a string"))?;
                req = req.insert_header((k.as_str(), v));
            }
        }
        Some(_) => return Err("http: `headers` must be an object of strings".into()),
    }
    let sent = match input("body") {
        None | Some(Value::Null) => req.send().await,
        Some(Value::String(text)) => req.send_body(text.clone()).await,
        Some(other) => req.send_json(other).await,
    };
    let mut resp = sent.map_err(|e| format!("http: {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers: Map<String, Value> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), Value::String(v.to_owned())))
        })
        .collect();
    let bytes = resp
        .body()
        .limit(MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("http: {url}: reading the response: {e}"))?;
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if !(200..300).contains(&status) && !allow_error_status {
        return Err(format!(
            "http: {url} answered {status}: {}",
            truncate(&body.to_string(), 500)
        ));
    }
    Ok(json!({ "status": status, "headers": headers, "body": body }))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut])
}
