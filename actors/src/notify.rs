//! Webhooks on cluster events (`[[notify.webhooks]]`): the
//! [`NotifierActor`] each node runs beside its supervisor.
//!
//! Every tick (500 ms) the notifier, for each webhook: creates the
//! delivery rows of the cluster events it has not seen yet (an idempotent
//! insert, so every node may find the same event), then claims due
//! deliveries one at a time and sends each: a `POST` of the event as JSON,
//! signed with HMAC-SHA256 when the webhook has a `secret`. A 2xx answer
//! marks it delivered; anything else retries with exponential backoff,
//! the claim kept by this node until `max_attempts`, then it is marked
//! failed. If this node dies, its claims lapse and another node sends
//! the delivery (so a receiver may see a delivery twice only when a node
//! died between the receiver's 2xx and its record: `Baton-Delivery` is
//! stable for deduplication).
//!
//! It runs on its own actor and its own database calls: a slow or failing
//! receiver never delays a heartbeat or an execution.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::messages::NodeState;
use crate::metrics::EngineMetrics;
use crate::status::StatusCell;
use crate::store::entities::{cluster_event, webhook_delivery};
use crate::store::{DeliveryOutcome, Store};

/// The cluster event kinds as stored (`GET /api/cluster/events`).
pub const EVENT_KINDS: [&str; 9] = [
    "join",
    "leave",
    "promote",
    "fence",
    "failover",
    "adopt",
    "config-refused",
    "poison-pill",
    "database-regained",
];

/// The stored kind a webhook's `events` entry names: a stored kind, or
/// its participle (`joined`, `left`, `promoted`, `fenced`).
pub fn event_kind(name: &str) -> Option<&'static str> {
    let alias = match name {
        "joined" => "join",
        "left" => "leave",
        "promoted" => "promote",
        "fenced" => "fence",
        other => other,
    };
    EVENT_KINDS.iter().copied().find(|k| *k == alias)
}

/// One webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Its name: the key of its deliveries (`GET /api/cluster/events`).
    pub name: String,
    /// Where events are posted.
    pub url: String,
    /// The stored kinds it wants (see [`event_kind`]).
    pub events: Vec<String>,
    /// Signs each body (`Baton-Signature: sha256=<hex HMAC-SHA256>`).
    pub secret: Option<String>,
    /// One attempt's bound.
    pub timeout: Duration,
    /// Attempts before a delivery is marked failed.
    pub max_attempts: u32,
    /// The first retry's delay; doubled each attempt, at most 60 s.
    pub backoff: Duration,
}

impl Webhook {
    /// The delay before retry number `attempts` (1 after the first failure).
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled.min(Duration::from_secs(60))
    }

    /// How long a claim lasts past an attempt's start: the attempt's
    /// bound and a margin for the database round trips.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }
}

/// The `Baton-Signature` value of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of an event's delivery (the same on every attempt, so a
/// signature can be checked against what was signed).
pub fn body_of(event: &cluster_event::Model, webhook: &str) -> Vec<u8> {
    let time = chrono::DateTime::from_timestamp_millis(event.time)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    serde_json::to_vec(&json!({
        "id": event.id,
        "kind": event.kind,
        "node_id": event.node_id,
        "time": time,
        "message": event.message,
        "webhook": webhook,
    }))
    .unwrap_or_default()
}

/// What the notifier is started with.
#[derive(Clone)]
pub struct NotifierConfig {
    /// The store.
    pub store: Store,
    /// This node's id (the claimant).
    pub node_id: String,
    /// The webhooks.
    pub webhooks: Vec<Webhook>,
    /// The TLS roots for `https://` receivers.
    pub tls: Arc<rustls::ClientConfig>,
    /// The node's counters.
    pub metrics: Arc<EngineMetrics>,
    /// How often it looks for work.
    pub every: Duration,
    /// The node's state: deliveries are sent while it runs or stands by
    /// (not while starting or fenced); the notifier stops with the node.
    pub status: Arc<StatusCell>,
}

/// Sends cluster events to the configured webhooks. See the module docs.
pub struct NotifierActor {
    cfg: NotifierConfig,
    /// Per webhook: the newest event id it has discovered.
    watermarks: Vec<Option<i64>>,
    busy: bool,
}

/// At most this many deliveries sent per webhook per tick.
const PER_TICK: usize = 16;

/// Events of the last this-many ms are looked at again each tick (an id
/// that committed after a higher one was seen is not missed).
const RECENT_MS: i64 = 30_000;

impl NotifierActor {
    /// A notifier for `cfg.webhooks`.
    pub fn new(cfg: NotifierConfig) -> NotifierActor {
        let n = cfg.webhooks.len();
        NotifierActor {
            cfg,
            watermarks: vec![None; n],
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.cfg.status.get().state {
            NodeState::Running | NodeState::Standby => {}
            NodeState::Stopping => return ctx.stop(),
            NodeState::Starting | NodeState::Fenced => return,
        }
        if self.busy {
            return;
        }
        self.busy = true;
        let cfg = self.cfg.clone();
        let marks = self.watermarks.clone();
        // The webhooks side by side: a hung receiver delays only its own.
        let fut = async move {
            let rounds = cfg
                .webhooks
                .iter()
                .zip(&marks)
                .map(|(hook, mark)| round(&cfg, hook, *mark));
            let results = futures::future::join_all(rounds).await;
            results
                .into_iter()
                .zip(&cfg.webhooks)
                .zip(&marks)
                .map(|((r, hook), old)| match r {
                    Ok(mark) => Some(mark),
                    Err(e) => {
                        tracing::warn!(webhook = %hook.name, error = %e, "webhook round failed; trying again");
                        *old
                    }
                })
                .collect::<Vec<_>>()
        };
        ctx.spawn(fut.into_actor(self).map(|marks, act, _| {
            act.watermarks = marks;
            act.busy = false;
        }));
    }
}

/// One round for one webhook: discover, then claim and send what is due.
/// Returns the new watermark.
async fn round(
    cfg: &NotifierConfig,
    hook: &Webhook,
    mark: Option<i64>,
) -> Result<i64, crate::error::StoreError> {
    let mark = match mark {
        Some(m) => m,
        // First round: where deliveries left off, else from now on (a new
        // webhook is not sent the cluster's whole history).
        None => match cfg.store.webhook_watermark(&hook.name).await? {
            Some(m) => m,
            None => cfg.store.newest_event_id().await?,
        },
    };
    let mark = cfg
        .store
        .discover_deliveries(&hook.name, &hook.events, mark, RECENT_MS, 500)
        .await?;
    let lease = hook.lease().as_millis() as i64;
    for _ in 0..PER_TICK {
        let Some((delivery, event)) = cfg
            .store
            .claim_delivery(&hook.name, &cfg.node_id, lease)
            .await?
        else {
            break;
        };
        let outcome = send(cfg, hook, &delivery, &event).await;
        let m = &cfg.metrics;
        match &outcome {
            DeliveryOutcome::Delivered { .. } => EngineMetrics::inc(&m.webhooks_delivered),
            DeliveryOutcome::Retry { .. } => EngineMetrics::inc(&m.webhook_attempts_failed),
            DeliveryOutcome::Failed { .. } => {
                EngineMetrics::inc(&m.webhook_attempts_failed);
                EngineMetrics::inc(&m.webhooks_failed);
            }
        }
        match &outcome {
            DeliveryOutcome::Delivered { status } => {
                tracing::info!(webhook = %hook.name, event = event.id, kind = %event.kind, status, "webhook delivered")
            }
            DeliveryOutcome::Retry {
                error, after_ms, ..
            } => {
                tracing::warn!(webhook = %hook.name, event = event.id, kind = %event.kind, error = %error, retry_in_ms = after_ms, "webhook attempt failed")
            }
            DeliveryOutcome::Failed { error, .. } => {
                tracing::error!(webhook = %hook.name, event = event.id, kind = %event.kind, error = %error, "webhook delivery failed for good")
            }
        }
        let kept = cfg
            .store
            .finish_delivery(event.id, &hook.name, &cfg.node_id, outcome)
            .await?;
        if !kept {
            tracing::warn!(webhook = %hook.name, event = event.id, "webhook claim lapsed during the attempt; another node has the delivery");
        }
    }
    Ok(mark)
}

/// One attempt.
async fn send(
    cfg: &NotifierConfig,
    hook: &Webhook,
    delivery: &webhook_delivery::Model,
    event: &cluster_event::Model,
) -> DeliveryOutcome {
    let attempt = delivery.attempts + 1;
    let body = body_of(event, &hook.name);
    let mut req = crate::http_action::client(&cfg.tls)
        .post(&hook.url)
        .timeout(hook.timeout)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Baton-Event", event.kind.as_str()))
        .insert_header(("Baton-Delivery", event.id.to_string()))
        .insert_header(("Idempotency-Key", format!("{}/{}", hook.name, event.id)))
        .insert_header(("Baton-Attempt", attempt.to_string()))
        .insert_header(("Baton-Node", cfg.node_id.as_str()));
    if let Some(secret) = &hook.secret {
        req = req.insert_header(("Baton-Signature", signature(secret, &body)));
    }
    let (status, error) = match req.send_body(body).await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            // Read (a little of) the answer so the connection is reused.
            let _ = resp.body().limit(64 * 1024).await;
            if resp.status().is_success() {
                return DeliveryOutcome::Delivered {
                    status: i32::from(status),
                };
            }
            (
                Some(i32::from(status)),
                format!("{}: status {status}", hook.url),
            )
        }
        Err(e) => (None, format!("{}: {e}", hook.url)),
    };
    let attempts = u32::try_from(attempt).unwrap_or(u32::MAX);
    if attempts >= hook.max_attempts {
        DeliveryOutcome::Failed { status, error }
    } else {
        DeliveryOutcome::Retry {
            status,
            error,
            after_ms: hook.backoff_after(attempts).as_millis() as i64,
            lease_ms: hook.lease().as_millis() as i64,
        }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.cfg.webhooks.is_empty() {
            return;
        }
        ctx.run_interval(self.cfg.every, |act, ctx| act.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Webhook {
        Webhook {
            name: "pager".into(),
            url: "http://127.0.0.1:1/".into(),
            events: vec!["failover".into()],
            secret: Some("s3cret".into()),
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            backoff: Duration::from_millis(1000),
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let h = hook();
        let ms: Vec<u128> = (1..=9).map(|a| h.backoff_after(a).as_millis()).collect();
        assert_eq!(
            ms,
            vec![1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(h.backoff_after(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn event_names_take_the_stored_kinds_and_their_participles() {
        assert_eq!(event_kind("joined"), Some("join"));
        assert_eq!(event_kind("fenced"), Some("fence"));
        assert_eq!(event_kind("failover"), Some("failover"));
        assert_eq!(event_kind("poison-pill"), Some("poison-pill"));
        assert_eq!(event_kind("config-refused"), Some("config-refused"));
        assert_eq!(event_kind("exploded"), None);
    }
}
