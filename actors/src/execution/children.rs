//! `workflow` and `foreach` items: child executions. A child's id is
//! derived from the parent, the item's step and the element index, so a
//! re-run after a crash finds the children it started instead of starting
//! others. A parent waiting on children is parked (`waiting-signal` on
//! `__child`); every path that ends a child tells it in the child's final
//! transaction (DESIGN.md invariant 12).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::run::{type_of, ItemDone, ItemFailure, Next, Run};
use crate::error::{EngineError, StoreError};
use crate::messages::StartChild;
use crate::store::entities::execution;
use crate::store::{state, ExecutionState, Wait, CHILD_DONE};
use crate::workflow::Current;

/// A `foreach` item's fields.
pub(super) struct Foreach<'a> {
    pub(super) over: &'a str,
    pub(super) element: &'a str,
    pub(super) workflow: &'a str,
    pub(super) inputs: &'a BTreeMap<String, String>,
    pub(super) collect: &'a BTreeMap<String, String>,
    pub(super) parallel: bool,
    pub(super) next: &'a str,
}

fn store_err(e: crate::error::StoreError) -> ItemFailure {
    ItemFailure::store("", &e)
}

fn outputs_of(row: Option<&execution::Model>) -> Value {
    row.and_then(|r| r.outputs.as_deref())
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

impl Run {
    /// Runs a child workflow; waits for it unless `is_async`.
    pub(super) async fn child_workflow(
        &self,
        workflow: &str,
        inputs: &BTreeMap<String, String>,
        mapping: &BTreeMap<String, String>,
        is_async: bool,
        next: &str,
    ) -> Result<ItemDone, ItemFailure> {
        // Pokes first: one that arrives after this read stays pending
        // and wakes the parent again.
        let pokes = self
            .store
            .pending_signal_ids(&self.fence.execution, CHILD_DONE)
            .await
            .map_err(store_err)?;
        let cid = self.child_id(0);
        let child = self.store.execution(&cid).await.map_err(store_err)?;
        if child.is_none() {
            let (ins, _) = self.expressions(inputs, None).await?;
            self.create_child(cid.clone(), workflow, ins).await?;
        }
        let pick = |outputs: &Value| -> Vec<(String, Value)> {
            mapping
                .iter()
                .map(|(var, field)| {
                    let v = if field == "execution_id" {
                        Value::String(cid.clone())
                    } else {
                        outputs.get(field).cloned().unwrap_or(Value::Null)
                    };
                    (var.clone(), v)
                })
                .collect()
        };
        if is_async {
            let mut done = self.advance(next, pick(&Value::Null), Vec::new());
            done.consume = pokes;
            return Ok(done);
        }
        match child.as_ref().map(|c| c.state.as_str()) {
            Some(state::COMPLETED) => {
                let mut done = self.advance(next, pick(&outputs_of(child.as_ref())), Vec::new());
                done.consume = pokes;
                Ok(done)
            }
            Some(s @ (state::FAILED | state::CANCELED)) => Err(ItemFailure::new(format!(
                "child workflow {workflow} ({cid}) {s}: {}",
                child
                    .as_ref()
                    .and_then(|c| c.error.clone())
                    .unwrap_or_default()
            ))),
            _ => Ok(self.parked_on_children(pokes)),
        }
    }

    /// Runs a workflow per element of an array, at most `fan_out` at once
    /// when parallel, one at a time otherwise; collects outputs in order.
    pub(super) async fn foreach(&self, f: Foreach<'_>) -> Result<ItemDone, ItemFailure> {
        let list = match self
            .variables
            .get(f.over)
            .or_else(|| self.inputs.get(f.over))
        {
            Some(Value::Array(a)) => a.clone(),
            other => {
                return Err(ItemFailure::new(format!(
                    "foreach over `{}`: expected an array, found {}",
                    f.over,
                    type_of(other.unwrap_or(&Value::Null))
                )))
            }
        };
        let pokes = self
            .store
            .pending_signal_ids(&self.fence.execution, CHILD_DONE)
            .await
            .map_err(store_err)?;
        let ids: Vec<String> = (0..list.len()).map(|i| self.child_id(i)).collect();
        let rows: HashMap<String, execution::Model> = self
            .store
            .executions_by_id(ids.clone())
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            if let Some(r) = rows
                .get(id)
                .filter(|r| r.state == state::FAILED || r.state == state::CANCELED)
            {
                return Err(ItemFailure::new(format!(
                    "foreach element {i}: child workflow {} ({id}) {}: {}",
                    f.workflow,
                    r.state,
                    r.error.clone().unwrap_or_default()
                )));
            }
        }
        let completed = ids
            .iter()
            .filter(|id| rows.get(*id).is_some_and(|r| r.state == state::COMPLETED))
            .count();
        if completed == ids.len() {
            let outs: Vec<Value> = ids.iter().map(|id| outputs_of(rows.get(id))).collect();
            let pairs = f.collect.iter().map(|(var, field)| {
                let gathered = outs
                    .iter()
                    .map(|o| o.get(field).cloned().unwrap_or(Value::Null))
                    .collect();
                (var.clone(), Value::Array(gathered))
            });
            let mut done = self.advance(f.next, pairs, Vec::new());
            done.consume = pokes;
            return Ok(done);
        }
        let in_flight = ids
            .iter()
            .filter(|id| rows.get(*id).is_some_and(|r| r.state != state::COMPLETED))
            .count();
        let limit = if f.parallel {
            self.fan_out.max(1) as usize
        } else {
            1
        };
        let mut free = limit.saturating_sub(in_flight);
        for (i, id) in ids.iter().enumerate() {
            if free == 0 {
                break;
            }
            if !rows.contains_key(id) {
                let (ins, _) = self
                    .expressions(f.inputs, Some((f.element, &list[i])))
                    .await?;
                self.create_child(id.clone(), f.workflow, ins).await?;
                free -= 1;
            }
        }
        Ok(self.parked_on_children(pokes))
    }

    /// A child's id: the same for every run of the same item step, so a
    /// re-run after a crash finds the child instead of starting another;
    /// a retry after a failure (not a crash) gets new children.
    fn child_id(&self, index: usize) -> String {
        use sha2::{Digest, Sha256};
        let key = match self.item_retries {
            0 => format!("{}/{}/{index}", self.fence.execution, self.step),
            r => format!("{}/{}/{index}/r{r}", self.fence.execution, self.step),
        };
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("c{hex}")
    }

    /// How deep this execution is nested (1: no parent).
    async fn depth(&self) -> Result<u32, ItemFailure> {
        let mut depth = 1;
        let mut parent = self.parent.clone();
        while let Some(id) = parent {
            depth += 1;
            if depth > self.max_depth {
                break;
            }
            parent = self
                .store
                .execution(&id)
                .await
                .map_err(|e| ItemFailure::store(&format!("cannot read execution {id}"), &e))?
                .and_then(|r| r.parent_id);
        }
        Ok(depth)
    }

    /// Creates a child execution (nothing if it exists) and has this node
    /// run it.
    async fn create_child(
        &self,
        id: String,
        workflow: &str,
        inputs: Map<String, Value>,
    ) -> Result<(), ItemFailure> {
        let fail = |m: String| ItemFailure::new(m);
        if self.depth().await? >= self.max_depth {
            return Err(fail(format!(
                "workflows nest deeper than {} levels (engine.max_depth); not starting {workflow}",
                self.max_depth
            )));
        }
        let current = |reread: bool| async move {
            match self
                .definitions
                .current(&self.store, workflow, reread)
                .await
            {
                Err(EngineError::WorkflowNotFound(_)) => {
                    Err(fail(format!("no workflow `{workflow}`")))
                }
                other => other.map_err(|e| ItemFailure::engine(&e)),
            }
        };
        let inputs = Value::Object(inputs);
        let check = |cur: &Current| {
            let problems = crate::workflow::check_inputs(&cur.def, &inputs);
            if problems.is_empty() {
                return Ok(());
            }
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Err(fail(format!(
                "inputs of workflow {workflow}: {}",
                text.join("; ")
            )))
        };
        let mut cur = current(false).await?;
        if !cur.fresh && check(&cur).is_err() {
            // Refused by the version last read: the stored one may take them.
            cur = current(true).await?;
        }
        check(&cur)?;
        let outcome = loop {
            let created = self
                .store
                .create_execution(crate::store::NewExecution {
                    id: id.clone(),
                    workflow_id: cur.def.id.clone(),
                    workflow_version: cur.version,
                    parent_id: Some(self.fence.execution.clone()),
                    inputs: inputs.clone(),
                    variables: Value::Object(cur.def.variables.clone()),
                    start_item: cur.def.start.clone(),
                    owner_node: self.fence.node.clone(),
                    node_epoch: Some(self.node_epoch),
                    expect_current: !cur.fresh,
                })
                .await;
            match created {
                // Replaced or deleted by another node since this node read
                // it: start the child on what is stored now.
                Err(StoreError::NotCurrent { .. }) if !cur.fresh => {
                    self.definitions.forget_current(workflow);
                    cur = current(true).await?;
                    check(&cur)?;
                }
                other => break other.map_err(|e| ItemFailure::store("", &e))?,
            }
        };
        if let crate::store::StartOutcome::Created(row) = outcome {
            self.starter.do_send(StartChild { row });
        }
        Ok(())
    }

    fn parked_on_children(&self, consume: Vec<i64>) -> ItemDone {
        let mut done = self.unchanged(Next::Park(Wait {
            state: ExecutionState::WaitingSignal,
            until: None,
            signal: Some(CHILD_DONE.to_owned()),
        }));
        done.consume = consume;
        done
    }
}
