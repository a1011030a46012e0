//! `task`, `decision` and `end` items: the items that only run JavaScript.

use serde_json::Value;

use super::run::{ItemDone, ItemFailure, Next, Run};
use crate::workflow::script::Code;

impl Run {
    /// Runs a script; assignments to declared variables and outputs are kept.
    pub(super) async fn task(&self, script: &str, next: &str) -> Result<ItemDone, ItemFailure> {
        let (values, _, logs) = self
            .eval(Code::Statements(script.to_owned()), true, None)
            .await?;
        let (mut variables, mut outputs) = (self.variables.clone(), self.outputs.clone());
        for (k, v) in values {
            if let Some(slot) = variables.get_mut(&k) {
                *slot = v.clone();
            }
            if let Some(slot) = outputs.get_mut(&k) {
                *slot = v;
            }
        }
        Ok(ItemDone {
            consume: Vec::new(),
            next: Next::Item(next.to_owned()),
            variables,
            outputs,
            logs,
        })
    }

    /// Goes to `then` when the condition is truthy, else to `otherwise`.
    pub(super) async fn decision(
        &self,
        condition: &str,
        then: &str,
        otherwise: &str,
    ) -> Result<ItemDone, ItemFailure> {
        let expr = vec![("c".to_owned(), format!("!!({condition}\n)"))];
        let (_, results, logs) = self.eval(Code::Expressions(expr), false, None).await?;
        let truthy = results.get("c").and_then(Value::as_bool).unwrap_or(false);
        let mut done = self.unchanged(Next::Item(if truthy { then } else { otherwise }.to_owned()));
        done.logs = logs;
        Ok(done)
    }

    /// Ends the execution, failed with the message of `fail` when given.
    pub(super) async fn end(&self, fail: Option<&str>) -> Result<ItemDone, ItemFailure> {
        let (fail, logs) = match fail {
            Some(expr) => {
                let code = Code::Expressions(vec![("m".into(), expr.to_owned())]);
                let (_, results, logs) = self.eval(code, false, None).await?;
                let message = match results.get("m") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => "workflow failed".to_owned(),
                    Some(other) => other.to_string(),
                };
                (Some(message), logs)
            }
            None => (None, Vec::new()),
        };
        let mut done = self.unchanged(Next::End { fail });
        done.logs = logs;
        Ok(done)
    }
}
