//! Durable transitions of a run: every write on the execution row goes
//! through [`Run::write`] (fenced, retried on transient failures, never
//! after a fencing refusal), and each way a run moves on is one checkpoint:
//! an item completed, an item failed (retried, caught or uncaught), the
//! execution parked, ended, failed or canceled (DESIGN.md invariants 1, 2,
//! 7 and 12).

use std::time::Duration;

use futures::future::abortable;
use serde_json::{json, Value};

use super::run::{type_of, ItemDone, ItemFailure, Next, Run};
use super::{Control, StartKind};
use crate::error::StoreError;
use crate::messages::RunOutcome;
use crate::metrics::EngineMetrics;
use crate::store::{Checkpoint, ExecutionState, LogEntry, Wait};
use crate::workflow::{Item, ItemKind};

impl Run {
    /// Claims this run (DESIGN.md invariant 10): a compare-and-set on the
    /// run token, step and attempt the row had when read. `false`: the row
    /// was stale and this run must write nothing. Transient store failures
    /// are retried like any write.
    pub(super) async fn claim(&mut self) -> Result<bool, RunOutcome> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            let claimed = self
                .store
                .claim_run(&self.fence, self.read_token, self.step, self.attempt)
                .await;
            match claimed {
                Ok(Some(token)) => {
                    self.fence.run = Some(token);
                    return Ok(true);
                }
                Ok(None) => {
                    tracing::info!(execution = %self.fence.execution, node = %self.fence.node, "stale row: another run claimed it or it moved on; not running it");
                    return Ok(false);
                }
                Err(e) => {
                    tries += 1;
                    if tries >= 8 {
                        return Err(RunOutcome::StoreFailed(e.to_string()));
                    }
                    self.backoff(&mut delay).await?;
                }
            }
        }
    }

    /// Whether `cp`, tried before with an unknown commit outcome, is what
    /// the row holds now under this run's own fence (same owner, epoch and
    /// run, at the step `cp` moves to).
    async fn landed(&self, cp: &Checkpoint) -> bool {
        // A checkpoint that moves the step landed when the row is at that
        // step; one that ends the execution where it stands, when the row
        // is in that final state.
        let ended = cp.state.filter(|_| cp.ended).map(|s| s.as_str());
        let step = match (cp.step, ended) {
            (Some(step), _) => step,
            (None, Some(_)) => self.step,
            (None, None) => return false,
        };
        match self.store.execution(&self.fence.execution).await {
            Ok(Some(row)) => {
                row.owner_node.as_deref() == Some(self.fence.node.as_str())
                    && row.owner_epoch == self.fence.epoch
                    && self.fence.run.is_none_or(|r| r == row.run_token)
                    && row.step == step
                    && ended.is_none_or(|s| row.state == s)
            }
            _ => false,
        }
    }

    /// Waits `delay` before a store write is tried again, and doubles it
    /// (up to 2 s); `Stopped` at once when the node stops this run now
    /// (it fenced itself: it writes nothing more, and a run stuck in
    /// retries through a database outage must not hold up its rejoining).
    pub(super) async fn backoff(&self, delay: &mut Duration) -> Result<(), RunOutcome> {
        let until = tokio::time::Instant::now() + *delay;
        *delay = (*delay * 2).min(Duration::from_secs(2));
        while tokio::time::Instant::now() < until {
            if self.halt.get() {
                tracing::info!(execution = %self.fence.execution, "stopped while retrying a store write; writing nothing more");
                return Err(RunOutcome::Stopped);
            }
            tokio::time::sleep_until(
                until.min(tokio::time::Instant::now() + Duration::from_millis(25)),
            )
            .await;
        }
        if self.halt.get() {
            return Err(RunOutcome::Stopped);
        }
        Ok(())
    }

    /// Writes `cp`, retrying transient store failures. A refused (fenced)
    /// write is returned at once and never retried.
    pub(super) async fn write(&self, cp: Checkpoint) -> Result<(), RunOutcome> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        let mut maybe_committed = false;
        // The row must still be at the step this run last committed
        // (`Fence::step`): one that went backwards is resumed from, not
        // written over.
        let fence = crate::store::Fence {
            step: Some(self.step),
            ..self.fence.clone()
        };
        loop {
            match self.store.checkpoint(&fence, cp.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_ownership_lost() && maybe_committed && self.landed(&cp).await => {
                    // An earlier try's commit had an unknown outcome and did
                    // commit: the row is already at this checkpoint's step.
                    return Ok(());
                }
                Err(e) if e.is_ownership_lost() => {
                    EngineMetrics::inc(&self.metrics.ownership_lost);
                    tracing::warn!(execution = %self.fence.execution, node = %self.fence.node, epoch = self.fence.epoch, "ownership lost; stopping");
                    return Err(RunOutcome::OwnershipLost);
                }
                Err(e) if unique_violation_means_done(&e, maybe_committed) => {
                    // An earlier try's commit had an unknown outcome and did
                    // commit: the completion record of this step is there.
                    return Ok(());
                }
                Err(e) => {
                    maybe_committed |= matches!(e, StoreError::CommitUnknown(_));
                    tries += 1;
                    if tries >= 8 {
                        tracing::error!(execution = %self.fence.execution, error = %e, "checkpoint failed; giving up for now");
                        return Err(RunOutcome::StoreFailed(e.to_string()));
                    }
                    tracing::warn!(execution = %self.fence.execution, error = %e, "checkpoint failed; retrying");
                    self.backoff(&mut delay).await?;
                }
            }
        }
    }

    /// A recovered or resumed run: the interrupted (or failed) item runs
    /// again with attempt + 1, within the poison-pill budget for recovery.
    pub(super) async fn start_again(&mut self) -> Result<Option<RunOutcome>, RunOutcome> {
        self.attempt += 1;
        if self.kind == StartKind::Recovered && self.attempt > self.max_item_starts as i32 {
            let message = format!(
                "item `{}` was started {} times without completing (engine.max_item_starts = {}); \
                 failing the execution instead of running it again",
                self.item,
                self.attempt - 1,
                self.max_item_starts
            );
            let outcome = self.fail(message.clone(), Vec::new()).await;
            if outcome.is_ok() {
                // A cluster event too, so an operator (and a webhook)
                // hears of the item that keeps taking nodes down.
                let event = format!("execution {}: {message}", self.fence.execution);
                if let Err(e) = self
                    .store
                    .record_event("poison-pill", &self.fence.node, &event)
                    .await
                {
                    tracing::warn!(execution = %self.fence.execution, error = %e, "cannot record the poison-pill event");
                }
            }
            return outcome.map(Some);
        }
        let msg = match self.kind {
            StartKind::Resumed => format!(
                "resumed by request on node {} (epoch {})",
                self.fence.node, self.fence.epoch
            ),
            _ => format!(
                "resumed on node {} (epoch {})",
                self.fence.node, self.fence.epoch
            ),
        };
        let logs = if self.attempt == 1 {
            // Handed off before it began: this is its first run.
            let msg = format!(
                "handed off by the node that stopped before it began; started on node {} (epoch {})",
                self.fence.node, self.fence.epoch
            );
            vec![self.log(&self.item, self.step, 1, "started", Some(msg))]
        } else {
            vec![
                self.log(&self.item, self.step, self.attempt, "resumed", Some(msg)),
                self.log(&self.item, self.step, self.attempt, "started", None),
            ]
        };
        self.write(Checkpoint {
            attempt: Some(self.attempt),
            logs,
            ..Default::default()
        })
        .await?;
        Ok(None)
    }

    /// A graceful stop between items: an item whose start is recorded but
    /// that has not begun here goes back to the next owner as the same
    /// attempt (the log says `handed-off`, not a later `resumed`). A
    /// failed hand-off leaves the row as it was: the next owner then runs
    /// the item as attempt + 1, as after a crash.
    pub(super) async fn hand_off(&self) -> RunOutcome {
        if !self.not_begun {
            return RunOutcome::Stopped;
        }
        let message = format!(
            "not begun: node {} stopped before it and handed it off",
            self.fence.node
        );
        match self
            .store
            .hand_off(&self.fence, self.step, self.attempt, message)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(execution = %self.fence.execution, "hand-off refused: the run no longer holds the row")
            }
            Err(e) => {
                tracing::warn!(execution = %self.fence.execution, error = %e, "hand-off not written; the next owner runs the item again")
            }
        }
        RunOutcome::Stopped
    }

    /// A drain reached its bound with this item still running: the item is
    /// recorded as interrupted; the next owner runs it again (attempt + 1).
    pub(super) async fn interrupted(&self) -> Result<RunOutcome, RunOutcome> {
        let message = format!(
            "interrupted: node {} is stopping and its drain bound passed; the item runs again on the next owner",
            self.fence.node
        );
        self.write(Checkpoint {
            logs: vec![self.log(&self.item, self.step, self.attempt, "log", Some(message))],
            ..Default::default()
        })
        .await?;
        Ok(RunOutcome::Stopped)
    }

    pub(super) async fn cancel(&self) -> Result<RunOutcome, RunOutcome> {
        self.write(Checkpoint {
            state: Some(ExecutionState::Canceled),
            ended: true,
            notify_parent: self.parent.clone(),
            logs: vec![self.log(
                &self.item,
                self.step,
                self.attempt,
                "log",
                Some("execution canceled".into()),
            )],
            ..Default::default()
        })
        .await?;
        EngineMetrics::inc(&self.metrics.executions_canceled);
        Ok(RunOutcome::Canceled)
    }

    /// The item log's record that the current attempt failed.
    fn failed_record(&self, message: String) -> LogEntry {
        self.log(&self.item, self.step, self.attempt, "failed", Some(message))
    }

    pub(super) async fn fail(
        &self,
        message: String,
        mut logs: Vec<LogEntry>,
    ) -> Result<RunOutcome, RunOutcome> {
        logs.push(self.failed_record(message.clone()));
        self.write(Checkpoint {
            state: Some(ExecutionState::Failed),
            error: Some(Some(message)),
            ended: true,
            logs,
            clear_wait: true,
            notify_parent: self.parent.clone(),
            ..Default::default()
        })
        .await?;
        EngineMetrics::inc(&self.metrics.executions_failed);
        Ok(RunOutcome::Finished(ExecutionState::Failed))
    }

    /// Moves to the item `to` at the next step with these variables (and
    /// outputs), recording the current item's end and `to`'s start in one
    /// transaction.
    async fn move_to(
        &mut self,
        to: String,
        variables: serde_json::Map<String, Value>,
        outputs: Option<serde_json::Map<String, Value>>,
        mut logs: Vec<LogEntry>,
        consume: Vec<i64>,
    ) -> Result<(), RunOutcome> {
        let next_step = self.step + 1;
        logs.push(self.log(&to, next_step, 1, "started", None));
        self.write(Checkpoint {
            variables: Some(Value::Object(variables.clone())),
            outputs: outputs.clone().map(Value::Object),
            current_item: Some(Some(to.clone())),
            step: Some(next_step),
            attempt: Some(1),
            item_retries: Some(0),
            logs,
            clear_wait: true,
            consume_signals: consume,
            ..Default::default()
        })
        .await?;
        self.wait_until = None;
        self.variables = variables;
        if let Some(outputs) = outputs {
            self.outputs = outputs;
        }
        self.item = to;
        self.step = next_step;
        self.attempt = 1;
        self.item_retries = 0;
        self.not_begun = true;
        Ok(())
    }

    /// Records an item's completion and the next item's start in one
    /// transaction; at an `end` item, finishes the execution. `settled`:
    /// no cancel or stop is pending, so a plain `end` next may be recorded
    /// in this same transaction.
    pub(super) async fn complete(
        &mut self,
        done: ItemDone,
        settled: bool,
    ) -> Result<Option<RunOutcome>, RunOutcome> {
        let mut logs = self.script_logs(done.logs);
        match done.next {
            Next::Item(next) if settled && self.plain_end(&next, &done.outputs) => {
                // The next item is a plain `end` (no `fail`) that will
                // accept these outputs: it is started and completed in this
                // same transaction, which also ends the execution. It does
                // nothing that could happen between its start and its
                // completion, so a crash before the commit leaves this item
                // to run again, as for any checkpoint.
                logs.push(self.log(&self.item, self.step, self.attempt, "completed", None));
                let step = self.step + 1;
                logs.push(self.log(&next, step, 1, "started", None));
                logs.push(self.log(&next, step, 1, "completed", None));
                let (this_type, this_started) = (self.item_type, self.item_started);
                self.item = next;
                self.item_started = std::time::Instant::now();
                self.item_type = "end";
                EngineMetrics::inc(&self.metrics.items_started);
                self.metrics.item_event(self.item_type, "started");
                let outcome = self
                    .finish(done.variables, done.outputs, step, 1, logs, done.consume)
                    .await?;
                EngineMetrics::inc(&self.metrics.items_completed);
                self.metrics.item_event(this_type, "completed");
                self.metrics.item_latency.record(this_started.elapsed());
                Ok(Some(outcome))
            }
            Next::Item(next) => {
                logs.push(self.log(&self.item, self.step, self.attempt, "completed", None));
                self.move_to(next, done.variables, Some(done.outputs), logs, done.consume)
                    .await?;
                self.completed_item();
                Ok(None)
            }
            Next::Park(wait) => {
                // Park: the row says what it waits for; no actor is held.
                self.write(Checkpoint {
                    wait: Some(wait),
                    logs,
                    ..Default::default()
                })
                .await?;
                Ok(Some(RunOutcome::Parked))
            }
            Next::End {
                fail: Some(message),
            } => self.fail(message, logs).await.map(Some),
            Next::End { fail: None } => {
                let problems = self.output_problems(&done.outputs);
                if !problems.is_empty() {
                    return self.fail(problems.join("; "), logs).await.map(Some);
                }
                logs.push(self.log(&self.item, self.step, self.attempt, "completed", None));
                let (step, attempt) = (self.step, self.attempt);
                self.finish(
                    done.variables,
                    done.outputs,
                    step,
                    attempt,
                    logs,
                    done.consume,
                )
                .await
                .map(Some)
            }
        }
    }

    /// Whether `next` is an `end` without `fail` that accepts `outputs`.
    fn plain_end(&self, next: &str, outputs: &serde_json::Map<String, Value>) -> bool {
        matches!(
            self.def.items.get(next).map(|i| &i.kind),
            Some(ItemKind::End { fail: None })
        ) && self.output_problems(outputs).is_empty()
    }

    /// What is wrong with `outputs` for the definition's declared types.
    fn output_problems(&self, outputs: &serde_json::Map<String, Value>) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, ty) in &self.def.outputs {
            let v = outputs.get(name).unwrap_or(&Value::Null);
            if !ty.accepts(v) {
                problems.push(format!(
                    "output `{name}` must be {}, got {}",
                    ty.name(),
                    type_of(v)
                ));
            }
        }
        problems
    }

    /// Ends the execution `completed` at its `end` item (`step`,
    /// `attempt`), whose completion record `logs` holds.
    async fn finish(
        &mut self,
        variables: serde_json::Map<String, Value>,
        outputs: serde_json::Map<String, Value>,
        step: i64,
        attempt: i32,
        logs: Vec<LogEntry>,
        consume: Vec<i64>,
    ) -> Result<RunOutcome, RunOutcome> {
        self.write(Checkpoint {
            variables: Some(Value::Object(variables)),
            outputs: Some(Value::Object(outputs)),
            current_item: Some(None),
            step: Some(step),
            attempt: Some(attempt),
            item_retries: Some(0),
            clear_wait: true,
            state: Some(ExecutionState::Completed),
            ended: true,
            notify_parent: self.parent.clone(),
            consume_signals: consume,
            logs,
            ..Default::default()
        })
        .await?;
        self.step = step;
        self.attempt = attempt;
        self.completed_item();
        EngineMetrics::inc(&self.metrics.executions_completed);
        Ok(RunOutcome::Finished(ExecutionState::Completed))
    }

    /// Retries the item, hands the error to an `on_error` item, or fails
    /// the execution.
    pub(super) async fn item_failed(
        &mut self,
        item: &Item,
        failure: ItemFailure,
        control: &Control,
    ) -> Result<Option<RunOutcome>, RunOutcome> {
        EngineMetrics::inc(&self.metrics.items_failed);
        self.metrics.item_event(item.kind.type_name(), "failed");
        let mut logs = self.script_logs(failure.logs);
        // The log and the execution's error read `Name: message`; the
        // `error` variable has both apart, as JavaScript does.
        let (message, name) = (failure.message, failure.name);
        let text = match &name {
            Some(n) => format!("{n}: {message}"),
            None => message.clone(),
        };
        if let Some(retry) = item
            .retry
            .as_ref()
            .filter(|r| self.attempt < r.max_attempts as i32)
        {
            let next_attempt = self.attempt + 1;
            let exp = (next_attempt - 2).clamp(0, 20) as u32;
            let backoff = retry.backoff_ms.saturating_mul(1u64 << exp);
            logs.push(self.failed_record(text.clone()));
            logs.push(self.log(&self.item, self.step, next_attempt, "started", None));
            // The backoff parks the execution like a timer (no actor held),
            // except on wait items, whose own deadline uses the same column.
            let parkable = !matches!(
                item.kind,
                ItemKind::Timer { .. } | ItemKind::Signal { .. } | ItemKind::Interaction { .. }
            );
            let due = match (parkable && backoff > 0, self.store.db_now_ms().await) {
                (true, Ok(now)) => {
                    Some(now.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)))
                }
                _ => None,
            };
            // A retried wait waits again: its deadline starts over.
            self.write(Checkpoint {
                attempt: Some(next_attempt),
                item_retries: Some(self.item_retries + 1),
                logs,
                clear_wait: due.is_none(),
                wait: due.map(|until| Wait {
                    state: ExecutionState::Waiting,
                    until: Some(until),
                    signal: None,
                }),
                ..Default::default()
            })
            .await?;
            self.attempt = next_attempt;
            self.item_retries += 1;
            self.wait_until = None;
            self.not_begun = true;
            if due.is_some() {
                return Ok(Some(RunOutcome::Parked));
            }
            let (sleep, handle) = abortable(tokio::time::sleep(Duration::from_millis(backoff)));
            *control.current.borrow_mut() = Some(handle);
            let _ = sleep.await;
            *control.current.borrow_mut() = None;
            return Ok(None);
        }
        let handler = item
            .on_error
            .clone()
            .or_else(|| self.def.on_error.clone().filter(|h| *h != self.item));
        if let Some(handler) = handler {
            let mut variables = self.variables.clone();
            variables.insert(
                "error".into(),
                json!({
                    "message": message,
                    "name": name.as_deref().unwrap_or("Error"),
                    "item": self.item,
                    "attempt": self.attempt,
                }),
            );
            logs.push(self.failed_record(text.clone()));
            self.move_to(handler, variables, None, logs, Vec::new())
                .await?;
            return Ok(None);
        }
        self.fail(text, logs).await.map(Some)
    }
}

/// Whether a write's error means "already written": a unique violation of
/// the completion record, and only after an earlier try whose commit had an
/// unknown outcome. Any other unique violation is a real conflict (another
/// run completed the step), never success (DESIGN.md invariant 10).
pub(super) fn unique_violation_means_done(err: &StoreError, maybe_committed: bool) -> bool {
    maybe_committed && matches!(err, StoreError::Db(e) if crate::store::is_unique_violation(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DbErr, RuntimeErr};

    fn unique() -> StoreError {
        // What the drivers report for a duplicate key, as sea-orm sees it.
        StoreError::Db(DbErr::Exec(RuntimeErr::Internal(
            "UNIQUE constraint failed: item_log.execution_id, item_log.completed_step".into(),
        )))
    }

    #[test]
    fn a_unique_violation_is_done_only_after_an_unknown_commit() {
        let e = unique();
        // Only meaningful if the driver's error classifies as unique.
        if !matches!(&e, StoreError::Db(d) if crate::store::is_unique_violation(d)) {
            return;
        }
        assert!(unique_violation_means_done(&e, true));
        assert!(!unique_violation_means_done(&e, false));
    }

    #[test]
    fn other_errors_are_never_done() {
        let e = StoreError::Db(DbErr::Custom("connection reset".into()));
        assert!(!unique_violation_means_done(&e, true));
        assert!(!unique_violation_means_done(&StoreError::RuntimeGone, true));
    }
}
