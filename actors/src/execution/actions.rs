//! `action` items: built-in actions (`log`, `sleep`, `http`) and those an
//! embedding program registers. Each call carries the execution, item and
//! attempt, and the stable idempotency key `{execution}/{item}`
//! (DESIGN.md invariant 7), so actions can dedupe their side effects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::run::{ItemDone, ItemFailure, Run};
use crate::actions::ActionCall;

impl Run {
    /// Calls `action` with its evaluated `inputs`; maps its result into
    /// variables and outputs by `mapping` (`""` or `"."`: the whole result).
    pub(super) async fn action(
        &self,
        action: &str,
        inputs: &BTreeMap<String, String>,
        mapping: &BTreeMap<String, String>,
        next: &str,
    ) -> Result<ItemDone, ItemFailure> {
        let (params, mut logs) = self.expressions(inputs, None).await?;
        let call = ActionCall::new(&self.fence.execution, &self.item, self.attempt, params);
        let result = if action == crate::http_action::NAME {
            crate::http_action::call(&call, self.actions.http_tls()).await
        } else {
            self.actions.call(action, call.clone()).await
        };
        logs.extend(call.take_logs());
        let result = result.map_err(|message| ItemFailure {
            message: format!("action `{action}` failed: {message}"),
            name: None,
            logs: logs.clone(),
            transient: false,
        })?;
        let pairs = mapping.iter().map(|(var, field)| {
            let v = match field.as_str() {
                "" | "." => result.clone(),
                f => result.get(f).cloned().unwrap_or(Value::Null),
            };
            (var.clone(), v)
        });
        Ok(self.advance(next, pairs, logs))
    }
}
