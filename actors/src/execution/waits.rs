//! `timer`, `signal` and `interaction` items: waits that hold nothing
//! (DESIGN.md invariant 8). A waiting item parks the execution in the
//! database (`waiting` or `waiting-signal`, with its deadline and the
//! awaited signal) and the run ends; the owner's wake scan, or an arriving
//! signal, starts a new run that evaluates the item again.

use serde_json::Value;

use super::run::{ItemDone, ItemFailure, Next, Run};
use super::StartKind;
use crate::store::{ExecutionState, Wait, ANSWER, INTERACTION};
use crate::workflow::script::Code;

impl Run {
    /// Waits `for_ms`, or until the time `until` evaluates to.
    pub(super) async fn timer(
        &self,
        for_ms: Option<u64>,
        until: Option<&str>,
        next: &str,
    ) -> Result<ItemDone, ItemFailure> {
        if self.wait_until.is_some() && self.kind == StartKind::Woken {
            // Woken from this timer's own park: the wake scan found it due
            // on the database clock (a timer parks `waiting`, which only
            // the due-time arm of the scan wakes; a retry's backoff never
            // parks a wait item), so it has passed.
            return Ok(self.unchanged(Next::Item(next.to_owned())));
        }
        let now = self.db_now().await?;
        let due = match (self.wait_until, for_ms, until) {
            (Some(due), _, _) => due,
            (None, Some(ms), _) => now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)),
            (None, None, Some(expr)) => {
                let code = Code::Expressions(vec![("t".into(), expr.to_owned())]);
                let (_, results, _) = self.eval(code, false, None).await?;
                let text = results
                    .get("t")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                chrono::DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| {
                        ItemFailure::new(format!(
                            "timer: `until` gave `{text}`, not an ISO 8601 time: {e}"
                        ))
                    })?
                    .timestamp_millis()
            }
            (None, None, None) => return Err(ItemFailure::new("timer needs `for_ms` or `until`")),
        };
        let next = if due <= now {
            Next::Item(next.to_owned())
        } else {
            Next::Park(Wait {
                state: ExecutionState::Waiting,
                until: Some(due),
                signal: None,
            })
        };
        Ok(self.unchanged(next))
    }

    /// Waits for the signal `name`; its payload goes to the variable
    /// (or output) `store`.
    pub(super) async fn signal(
        &self,
        name: &str,
        store: Option<&str>,
        timeout_ms: Option<u64>,
        next: &str,
    ) -> Result<ItemDone, ItemFailure> {
        self.await_signal(name, name, timeout_ms, next, |payload| {
            store
                .map(|var| (var.to_owned(), payload))
                .into_iter()
                .collect()
        })
        .await
    }

    /// Waits for the answer to this interaction; each answered field goes
    /// to the variable (or output) of its name.
    pub(super) async fn interaction(
        &self,
        timeout_ms: Option<u64>,
        next: &str,
    ) -> Result<ItemDone, ItemFailure> {
        // Parked on the interaction; an answer is taken (once, for this
        // step) by `Store::answer_interaction`, which stores it as ANSWER.
        self.await_signal(
            INTERACTION,
            ANSWER,
            timeout_ms,
            next,
            |payload| match payload {
                Value::Object(answer) => answer.into_iter().collect(),
                _ => Vec::new(),
            },
        )
        .await
    }

    /// A signal or interaction item: completes with the oldest pending
    /// signal `take` (consumed in the completion transaction), fails when
    /// its timeout has passed, and parks on `name` otherwise.
    async fn await_signal(
        &self,
        name: &str,
        take: &str,
        timeout_ms: Option<u64>,
        next: &str,
        pairs: impl FnOnce(Value) -> Vec<(String, Value)>,
    ) -> Result<ItemDone, ItemFailure> {
        // The oldest of the signals the wake read for this item (only
        // for a signal or interaction item, of the name it takes, and
        // only its first time: `take`), still unconsumed, since nothing
        // but this item consumes signals of that name and this run holds
        // the token; else the store's.
        let woken_with = self.woken_with.borrow_mut().take();
        let known = woken_with.and_then(|s| s.into_iter().find(|s| s.name == take));
        let pending = match known {
            Some(sig) => Some(sig),
            None => self
                .store
                .pending_signal(&self.fence.execution, take)
                .await
                .map_err(|e| ItemFailure::store("cannot read signals", &e))?,
        };
        if let Some(sig) = pending {
            let payload: Value = serde_json::from_str(&sig.payload).unwrap_or(Value::Null);
            let mut done = self.advance(next, pairs(payload), Vec::new());
            done.consume = vec![sig.id];
            return Ok(done);
        }
        // The database clock only when there is a deadline to judge.
        let (until, now) = match (self.wait_until, timeout_ms) {
            (None, None) => (None, None),
            (wait_until, timeout_ms) => {
                let now = self.db_now().await?;
                let until = wait_until.or_else(|| {
                    timeout_ms.map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)))
                });
                (until, Some(now))
            }
        };
        if let (Some(due), Some(now)) = (until, now) {
            if due <= now {
                let what = if name == INTERACTION {
                    "interaction".to_owned()
                } else {
                    format!("signal `{name}`")
                };
                return Err(ItemFailure::new(format!(
                    "{what} timed out after {} ms",
                    timeout_ms.unwrap_or_default()
                )));
            }
        }
        Ok(self.unchanged(Next::Park(Wait {
            state: ExecutionState::WaitingSignal,
            until,
            signal: Some(name.to_owned()),
        })))
    }
}
