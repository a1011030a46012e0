//! Actions: named async functions that `action` items call. The built-ins
//! are `log`, `sleep` and `http` (see `http_action`); an embedding program
//! registers its own.
//!
//! An action may run more than once for one item (at-least-once, DESIGN.md
//! invariant 7): each call carries the item's stable idempotency key and
//! its attempt number so that side effects can be deduplicated.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

/// What an action is called with.
#[derive(Clone, Debug)]
pub struct ActionCall {
    /// The execution's id.
    pub execution_id: String,
    /// The item's id.
    pub item: String,
    /// The attempt number (1 for the first run of this item).
    pub attempt: i32,
    /// `{execution}/{item}`: the same for every attempt of the item.
    pub idempotency_key: String,
    /// The evaluated `inputs` of the item.
    pub inputs: Map<String, Value>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl ActionCall {
    /// Creates a call (the engine does this; tests may too).
    pub fn new(
        execution_id: &str,
        item: &str,
        attempt: i32,
        inputs: Map<String, Value>,
    ) -> ActionCall {
        ActionCall {
            execution_id: execution_id.to_owned(),
            item: item.to_owned(),
            attempt,
            idempotency_key: format!("{execution_id}/{item}"),
            inputs,
            logs: Arc::default(),
        }
    }

    /// Adds a line to the execution's item log.
    pub fn log(&self, line: impl Into<String>) {
        if let Ok(mut l) = self.logs.lock() {
            if l.len() < 100 {
                l.push(line.into());
            }
        }
    }

    /// The lines logged so far.
    pub fn take_logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// An input by name.
    pub fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
}

/// What an action returns: its result (an object whose fields the item's
/// `outputs` pick), or an error message that fails the item.
pub type ActionResult = Result<Value, String>;

type ActionFn = Arc<dyn Fn(ActionCall) -> BoxFuture<'static, ActionResult> + Send + Sync>;

/// The actions a node knows, by name. Cheap to clone.
#[derive(Clone)]
pub struct ActionRegistry {
    actions: BTreeMap<String, ActionFn>,
    /// The `http` action's TLS: the system's roots, plus a private CA
    /// when configured (`actions.http_tls_ca`).
    http_tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actions.keys()).finish()
    }
}

impl Default for ActionRegistry {
    fn default() -> Self {
        ActionRegistry::with_builtins()
    }
}

/// The longest a `sleep` action may sleep: one day.
pub const MAX_SLEEP_MS: u64 = 86_400_000;

impl ActionRegistry {
    /// A registry holding the built-in actions `log` and `sleep`.
    pub fn with_builtins() -> ActionRegistry {
        let mut r = ActionRegistry {
            actions: BTreeMap::new(),
            http_tls: crate::tls::default_client_config(),
        };
        r.register("log", |call: ActionCall| async move {
            let message = match call.input("message") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => Value::Object(call.inputs.clone()).to_string(),
            };
            // The node's log gets at most LOG_LINE_MAX bytes of it (the
            // item log and the action's output keep it whole).
            tracing::info!(execution = %call.execution_id, item = %call.item, "{}", capped(&message, LOG_LINE_MAX));
            call.log(message.clone());
            Ok(json!({ "message": message }))
        });
        // Runs in the execution actor (see `http_action`); registered so
        // that definitions naming it validate.
        r.register(crate::http_action::NAME, |_call: ActionCall| async move {
            Err("the http action runs in the execution actor, not through the registry".to_owned())
        });
        r.register("sleep", |call: ActionCall| async move {
            let ms = call
                .input("ms")
                .and_then(Value::as_f64)
                .ok_or_else(|| "sleep needs input `ms`, a number of milliseconds".to_owned())?;
            if !(0.0..=MAX_SLEEP_MS as f64).contains(&ms) {
                return Err(format!(
                    "sleep: `ms` must be between 0 and {MAX_SLEEP_MS}, got {ms}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            Ok(json!({ "slept_ms": ms as u64 }))
        });
        r
    }

    /// The TLS configuration of the `http` action.
    pub fn http_tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.http_tls
    }

    /// Sets the TLS configuration of the `http` action (see
    /// [`crate::tls::client_config`]).
    pub fn set_http_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        self.http_tls = config;
    }

    /// Registers (or replaces) an action.
    pub fn register<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn(ActionCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ActionResult> + Send + 'static,
    {
        let f: ActionFn = Arc::new(move |call| Box::pin(f(call)));
        self.actions.insert(name.to_owned(), f);
    }

    /// True when an action of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    /// The registered names.
    pub fn names(&self) -> Vec<String> {
        self.actions.keys().cloned().collect()
    }

    /// Calls an action.
    pub async fn call(&self, name: &str, call: ActionCall) -> ActionResult {
        match self.actions.get(name) {
            Some(f) => f(call).await,
            None => Err(format!(
                "no action named `{name}` is registered on this node"
            )),
        }
    }
}

/// Most bytes of a `log` action's message written to the node's log.
pub const LOG_LINE_MAX: usize = 8 * 1024;

/// `text`, cut to at most `max` bytes (at a character boundary) with a
/// note of how much was left out.
pub fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... [cut: {} of {} bytes shown]",
        &text[..end],
        end,
        text.len()
    ))
}

#[cfg(test)]
mod capped_tests {
    use super::capped;

    #[test]
    fn long_log_lines_are_cut_and_say_so() {
        assert_eq!(capped("short", 10), "short");
        let long = "é".repeat(10); // 20 bytes
        let c = capped(&long, 7);
        assert!(c.starts_with("ééé..."), "{c}");
        assert!(c.ends_with("[cut: 6 of 20 bytes shown]"), "{c}");
    }
}
