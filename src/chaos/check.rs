//! The checker: what must hold after a chaos run, judged from Baton's
//! database, the ledger and the samples taken during the run. Each rule
//! is a pure function of that history, so the tests can feed it a made-up
//! history and see it object.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::faults::{Fault, FaultKind};
use super::ledger::Entry;
use super::workload::{child_record, Plan, Step, TIMED_OUT};

/// One execution the client drove, and what it saw.
#[derive(Clone, Debug)]
pub struct Driven {
    /// Its id.
    pub id: String,
    /// Its workflow.
    pub plan: Plan,
    /// Payloads sent per signal (`s1` is index 0).
    pub signals_sent: Vec<i64>,
    /// Every answer sent per interaction (`ans1` is index 0), accepted or not.
    pub answers_sent: Vec<Vec<i64>>,
    /// The answers a node accepted (202) per interaction; a 409 proves
    /// nothing (a retried request may find its own first try's answer).
    pub answers_accepted: Vec<Vec<i64>>,
    /// How many times the client resumed it after a `Fix` step failed it.
    pub resumes: usize,
    /// A cancel was asked for.
    pub cancel_requested: bool,
}

/// An execution as stored at the end.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its id.
    pub id: String,
    /// Its workflow.
    pub workflow: String,
    /// The execution that started it, if a child.
    pub parent: Option<String>,
    /// Its state.
    pub state: String,
    /// Its inputs, variables and outputs.
    pub inputs: Value,
    /// Its variables.
    pub variables: Value,
    /// Its outputs.
    pub outputs: Value,
    /// Its error.
    pub error: Option<String>,
}

/// A cluster event as stored (time on the run's clock).
#[derive(Clone, Debug)]
pub struct Event {
    /// `failover`, `join`, `leave`, ...
    pub kind: String,
    /// The node it is about.
    pub node: String,
    /// When.
    pub at: Instant,
    /// What it says.
    pub message: String,
}

/// An item-log record (time on the run's clock).
#[derive(Clone, Debug)]
pub struct LogRow {
    /// The execution.
    pub execution: String,
    /// The step.
    pub step: i64,
    /// `started`, `completed`, ...
    pub event: String,
    /// The node that wrote it.
    pub node: String,
    /// When.
    pub at: Instant,
}

/// Everything the checker judges.
#[derive(Clone, Debug)]
pub struct History {
    /// The node ids, by index.
    pub nodes: Vec<String>,
    /// The failover timeout.
    pub timeout: Duration,
    /// How many nodes may be active.
    pub active_nodes: u32,
    /// The most active nodes seen at once.
    pub max_active: usize,
    /// The executions the client drove.
    pub driven: Vec<Driven>,
    /// Every execution stored, by id.
    pub stored: HashMap<String, Stored>,
    /// The item log.
    pub log: Vec<LogRow>,
    /// The cluster events.
    pub events: Vec<Event>,
    /// The ledger.
    pub ledger: Vec<Entry>,
    /// The faults applied.
    pub faults: Vec<Fault>,
    /// Samples of each node's membership (every 50 ms): whether its row
    /// said it was a live member (`RUNNING` or `STANDBY`, heartbeat within
    /// the failover timeout).
    pub liveness: Vec<(Instant, String, bool)>,
}

impl History {
    /// Whether `node` was a live member at `at` (its last sample before
    /// it; `true` when there is none, so the rule it guards still applies).
    pub fn live_at(&self, node: &str, at: Instant) -> bool {
        self.liveness
            .iter()
            .rev()
            .find(|(t, n, _)| n == node && *t <= at)
            .is_none_or(|(_, _, live)| *live)
    }
}

/// Something that must not happen, with what identifies it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The rule broken.
    pub rule: &'static str,
    /// What broke it (execution ids, nodes, values).
    pub detail: String,
}

fn v(rule: &'static str, detail: String) -> Violation {
    Violation { rule, detail }
}

fn num(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_f64).map(|f| f as i64)
}

/// Why items ran more than once, by the fault that explains it.
pub type Reruns = BTreeMap<&'static str, usize>;

/// Applies every rule; returns the violations and the explained re-runs.
pub fn check(h: &History) -> (Vec<Violation>, Reruns) {
    let mut out = Vec::new();
    outcomes(h, &mut out);
    children(h, &mut out);
    completions(h, &mut out);
    let reruns = reruns(h, &mut out);
    records(h, &mut out);
    if h.max_active > h.active_nodes as usize {
        out.push(v(
            "never more active nodes than configured",
            format!(
                "{} active at once (active_nodes = {})",
                h.max_active, h.active_nodes
            ),
        ));
    }
    failovers(h, &mut out);
    stale_writes(h, &mut out);
    out.sort();
    (out, reruns)
}

/// Every driven execution ended as the reference says: completed with the
/// reference's `acc` (or canceled, only if a cancel was asked for); none is
/// stuck; every signal payload and answer it took was one sent for that
/// very wait.
fn outcomes(h: &History, out: &mut Vec<Violation>) {
    for d in &h.driven {
        let Some(s) = h.stored.get(&d.id) else {
            out.push(v("every execution is stored", d.id.clone()));
            continue;
        };
        match s.state.as_str() {
            "completed" => {}
            "canceled" if d.cancel_requested => continue,
            "canceled" => {
                out.push(v("canceled only when asked", d.id.clone()));
                continue;
            }
            "failed" => {
                out.push(v(
                    "reaches the reference's state",
                    format!("{} failed: {}", d.id, s.error.clone().unwrap_or_default()),
                ));
                continue;
            }
            other => {
                out.push(v("none is stuck", format!("{} is still {other}", d.id)));
                continue;
            }
        }
        let mut signals = Vec::new();
        for (i, sent) in d.signals_sent.iter().enumerate() {
            let got = num(&s.variables, &format!("sig{}", i + 1)).unwrap_or(-1);
            if got != *sent {
                out.push(v(
                    "a signal is taken by the wait it was sent to",
                    format!("{} sig{}: took {got}, sent {sent}", d.id, i + 1),
                ));
            }
            signals.push(got);
        }
        let mut answers = Vec::new();
        let may_time_out: Vec<bool> = d
            .plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Ask(_) => Some(false),
                Step::AskLate(_) => Some(true),
                _ => None,
            })
            .collect();
        for (i, sent) in d.answers_sent.iter().enumerate() {
            let got = num(&s.variables, &format!("ans{}", i + 1)).unwrap_or(-2);
            let accepted = d.answers_accepted.get(i).map_or(&[][..], Vec::as_slice);
            let timed_out = got == TIMED_OUT && may_time_out.get(i) == Some(&true);
            if timed_out {
                if !accepted.is_empty() {
                    out.push(v(
                        "an accepted answer is never lost",
                        format!(
                            "{} ans{}: {accepted:?} accepted (202), yet the interaction timed out",
                            d.id,
                            i + 1
                        ),
                    ));
                }
            } else if !sent.contains(&got) {
                out.push(v(
                    "no answer consumed by an item it was not meant for",
                    format!("{} ans{}: took {got}, sent {sent:?}", d.id, i + 1),
                ));
            } else if !accepted.is_empty() && !accepted.contains(&got) {
                out.push(v(
                    "an accepted answer is never lost",
                    format!(
                        "{} ans{}: took {got}, but a node accepted {accepted:?} (202)",
                        d.id,
                        i + 1
                    ),
                ));
            }
            answers.push(got);
        }
        let (_, want) = d.plan.expected(&signals, &answers);
        let got = num(&s.outputs, "acc");
        if got != Some(want) {
            out.push(v(
                "outputs are the reference's",
                format!("{}: acc {got:?}, reference {want}", d.id),
            ));
        }
    }
}

/// Every child execution (sync, async or a `foreach` element) ended:
/// completed, or canceled with its parent; never stuck, never failed
/// (the generated children cannot fail).
fn children(h: &History, out: &mut Vec<Violation>) {
    let mut ids: Vec<&String> = h.stored.keys().collect();
    ids.sort();
    for id in ids {
        let s = &h.stored[id];
        let Some(parent) = &s.parent else { continue };
        match s.state.as_str() {
            "completed" => {}
            "canceled" if h.stored.get(parent).is_some_and(|p| p.state == "canceled") => {}
            other => out.push(v(
                "every child execution ends",
                format!(
                    "{id} ({}, child of {parent}) is {other}{}",
                    s.workflow,
                    s.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            )),
        }
    }
}

/// Exactly one `completed` record per step.
fn completions(h: &History, out: &mut Vec<Violation>) {
    let mut seen: HashMap<(&str, i64), usize> = HashMap::new();
    for l in h.log.iter().filter(|l| l.event == "completed") {
        *seen.entry((l.execution.as_str(), l.step)).or_default() += 1;
    }
    for ((e, step), n) in seen {
        if n > 1 {
            out.push(v(
                "exactly one completed record per step",
                format!("{e} step {step}: {n}"),
            ));
        }
    }
}

/// A fault on `node` overlapping `[from, to]`, if any.
fn fault_on<'a>(h: &'a History, node: &str, from: Instant, to: Instant) -> Option<&'a Fault> {
    let slack = Duration::from_millis(500);
    let i = h.nodes.iter().position(|n| n == node)?;
    h.faults
        .iter()
        .find(|f| f.strikes(i) && f.from <= to + slack && f.until + slack >= from)
}

/// An item's side effect ran more than once only if the node that ran it
/// first died, was fenced or drained while it ran.
fn reruns(h: &History, out: &mut Vec<Violation>) -> Reruns {
    let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in &h.ledger {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut why = Reruns::new();
    for (key, mut runs) in by_key {
        runs.sort_by_key(|e| e.at);
        for pair in runs.windows(2) {
            let (first, again) = (pair[0], pair[1]);
            match fault_on(h, &first.node, first.at, again.at) {
                Some(f) => *why.entry(f.kind.name()).or_default() += 1,
                None => out.push(v(
                    "an item re-runs only after its owner died, was fenced or drained",
                    format!(
                        "{key}: attempt {} on {} then attempt {} on {}, no fault between",
                        first.attempt, first.node, again.attempt, again.node
                    ),
                )),
            }
        }
    }
    why
}

/// Each recorded side effect saw the state the reference says it had.
fn records(h: &History, out: &mut Vec<Violation>) {
    let driven: HashMap<&str, &Driven> = h.driven.iter().map(|d| (d.id.as_str(), d)).collect();
    for e in &h.ledger {
        let acc = e.acc as i64;
        if let Some(d) = driven.get(e.execution.as_str()) {
            let Some(s) = h.stored.get(&d.id).filter(|s| s.state == "completed") else {
                continue;
            };
            let signals: Vec<i64> = (0..d.signals_sent.len())
                .map(|i| num(&s.variables, &format!("sig{}", i + 1)).unwrap_or(-1))
                .collect();
            let answers: Vec<i64> = (0..d.answers_sent.len())
                .map(|i| num(&s.variables, &format!("ans{}", i + 1)).unwrap_or(-1))
                .collect();
            let (want, _) = d.plan.expected(&signals, &answers);
            if let Some((_, w)) = want.iter().find(|(item, _)| *item == e.item) {
                if *w != acc {
                    out.push(v(
                        "a side effect sees the state the reference says",
                        format!("{} {}: acc {acc}, reference {w}", e.execution, e.item),
                    ));
                }
            }
        } else if let Some(s) = h.stored.get(&e.execution) {
            if s.workflow == "chaos-child" {
                let x = num(&s.inputs, "x").unwrap_or(-1);
                if acc != child_record(x) {
                    out.push(v(
                        "a side effect sees the state the reference says",
                        format!(
                            "{} (child of x = {x}): y {acc}, reference {}",
                            e.execution,
                            child_record(x)
                        ),
                    ));
                }
            }
        }
    }
}

/// Every failover follows a fault that may cause one (a drain never does),
/// and every node down past twice the failover timeout was failed over.
fn failovers(h: &History, out: &mut Vec<Violation>) {
    for ev in h.events.iter().filter(|e| e.kind == "failover") {
        let window_from = ev.at.checked_sub(h.timeout * 4).unwrap_or(ev.at);
        let i = h.nodes.iter().position(|n| *n == ev.node);
        let cause = h.faults.iter().find(|f| {
            i.is_some_and(|i| f.strikes(i))
                && f.kind.may_fail_over()
                && f.from <= ev.at + Duration::from_millis(500)
                && f.until + h.timeout * 2 >= window_from
        });
        if cause.is_none() {
            // What came closest, to tell a slow machine from a bug.
            let nearest = h
                .faults
                .iter()
                .min_by_key(|f| {
                    if f.until < ev.at {
                        ev.at - f.until
                    } else {
                        f.from.saturating_duration_since(ev.at)
                    }
                })
                .map(|f| {
                    let when = if f.until < ev.at {
                        format!("ended {:?} before", ev.at - f.until)
                    } else {
                        format!("began {:?} after", f.from.saturating_duration_since(ev.at))
                    };
                    format!(
                        "{} on {} {when}",
                        f.kind.name(),
                        h.nodes.get(f.node).map_or("all", String::as_str)
                    )
                })
                .unwrap_or_else(|| "none".into());
            out.push(v(
                "a failover only follows a failure (a drain is not one)",
                format!(
                    "node {} failed over with no kill, pause or cut ({}); nearest fault: {nearest}",
                    ev.node, ev.message
                ),
            ));
        }
    }
    for f in faults_that_may_owe_a_failover(h) {
        let node = &h.nodes[f.node];
        let able = able_to_act(h, f);
        if able.is_empty() && !h.liveness.is_empty() {
            continue;
        }
        let recorded = h.events.iter().any(|e| {
            e.kind == "failover"
                && &e.node == node
                && e.at + Duration::from_millis(500) >= f.from
                && e.at <= f.until + h.timeout * 2
        });
        if !recorded {
            out.push(v(
                "every failover is recorded as an event",
                format!(
                    "node {node} was down ({}) {:?} with no failover event, while {} could have declared it dead",
                    f.kind.name(),
                    f.until - f.from,
                    able.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" and ")
                ),
            ));
        }
    }
}

/// The other nodes that could have declared `f`'s node dead during `f`.
fn able_to_act<'a>(h: &'a History, f: &Fault) -> Vec<&'a String> {
    let node = &h.nodes[f.node];
    // Somebody must have been able to declare it dead: another node
    // live throughout half a failover timeout (two and a half scans of
    // its detector) once the victim's heartbeat was stale (a timeout
    // into the fault) and before the fault ended. Not so when every
    // other node was down, fenced or still rejoining after an outage.
    let span = h.timeout / 2;
    h.nodes
        .iter()
        .filter(|other| *other != node)
        .filter(|other| {
            let samples: Vec<(Instant, bool)> = h
                .liveness
                .iter()
                .filter(|(_, n, _)| n == *other)
                .map(|(t, _, live)| (*t, *live))
                .collect();
            // Any start at least a timeout into the fault from which
            // every sample for `span` says live.
            samples.iter().any(|(t0, live)| {
                *live
                    && *t0 >= f.from + h.timeout
                    && *t0 + span <= f.until
                    && samples
                        .iter()
                        .filter(|(t, _)| *t >= *t0 && *t <= *t0 + span)
                        .all(|(_, l)| *l)
            })
        })
        .collect()
}

/// The faults past twice the failover timeout on a live node with no other
/// node live long enough to declare it dead (no failover owed).
pub fn failovers_not_owed(h: &History) -> usize {
    faults_that_may_owe_a_failover(h)
        .filter(|f| !h.liveness.is_empty() && able_to_act(h, f).is_empty())
        .count()
}

/// The faults after which a failover is owed if somebody could act: long
/// enough (twice the failover timeout), of a kind that fails a node over
/// (a stalled node may finish its stall still owning its work; a database
/// restart stops every node at once, with nobody left to declare anybody
/// dead), on a node that was a live member when it struck (one fenced by
/// an earlier outage and not yet rejoined has nothing to fail over: its
/// executions are adopted instead).
fn faults_that_may_owe_a_failover(h: &History) -> impl Iterator<Item = &Fault> {
    h.faults
        .iter()
        .filter(|f| {
            f.kind.may_fail_over() && !matches!(f.kind, FaultKind::Stall | FaultKind::DbRestart)
        })
        .filter(|f| f.until.saturating_duration_since(f.from) >= h.timeout * 2)
        .filter(|f| h.live_at(&h.nodes[f.node], f.from))
}

/// No write is accepted from a node after its epoch was superseded: no
/// item-log record by a node between its failover and its next join.
fn stale_writes(h: &History, out: &mut Vec<Violation>) {
    let slack = Duration::from_millis(100);
    for ev in h.events.iter().filter(|e| e.kind == "failover") {
        let rejoined = h
            .events
            .iter()
            .filter(|j| j.kind == "join" && j.node == ev.node && j.at > ev.at)
            .map(|j| j.at)
            .min();
        let stale = h.log.iter().filter(|l| {
            l.node == ev.node && l.at > ev.at + slack && rejoined.is_none_or(|j| l.at < j)
        });
        for l in stale {
            out.push(v(
                "no write accepted from a superseded owner",
                format!(
                    "{} step {} ({}) by {} after its failover",
                    l.execution, l.step, l.event, l.node
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::workload::Step;
    use serde_json::json;

    fn history() -> History {
        let t0 = Instant::now();
        let plan = Plan {
            id: "w".into(),
            steps: vec![Step::Calc(2), Step::Record],
        };
        History {
            nodes: vec!["a".into(), "b".into()],
            timeout: Duration::from_secs(1),
            active_nodes: 1,
            max_active: 1,
            driven: vec![Driven {
                id: "x".into(),
                plan,
                signals_sent: vec![],
                answers_sent: vec![],
                answers_accepted: vec![],
                resumes: 0,
                cancel_requested: false,
            }],
            stored: HashMap::from([(
                "x".to_owned(),
                Stored {
                    id: "x".into(),
                    workflow: "w".into(),
                    parent: None,
                    state: "completed".into(),
                    inputs: json!({}),
                    variables: json!({"acc": 2}),
                    outputs: json!({"acc": 2}),
                    error: None,
                },
            )]),
            log: vec![],
            events: vec![],
            ledger: vec![Entry {
                execution: "x".into(),
                item: "i1".into(),
                attempt: 1,
                key: "x/i1".into(),
                node: "a".into(),
                acc: 2.0,
                at: t0,
            }],
            faults: vec![],
            liveness: vec![],
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let (violations, _) = check(&history());
        assert_eq!(violations, vec![]);
    }

    #[test]
    fn each_rule_objects_to_what_it_forbids() {
        let mut h = history();
        h.stored.get_mut("x").expect("x").outputs = json!({"acc": 3});
        h.max_active = 2;
        let again = Entry {
            attempt: 2,
            at: Instant::now() + Duration::from_secs(1),
            ..h.ledger[0].clone()
        };
        h.ledger.push(again);
        let at = Instant::now();
        h.events.push(Event {
            kind: "failover".into(),
            node: "b".into(),
            at,
            message: String::new(),
        });
        h.log.push(LogRow {
            execution: "x".into(),
            step: 1,
            event: "completed".into(),
            node: "b".into(),
            at: at + Duration::from_secs(1),
        });
        h.log.push(LogRow {
            execution: "x".into(),
            step: 1,
            event: "completed".into(),
            node: "a".into(),
            at,
        });
        let (violations, _) = check(&h);
        let rules: Vec<&str> = violations.iter().map(|v| v.rule).collect();
        for rule in [
            "outputs are the reference's",
            "never more active nodes than configured",
            "an item re-runs only after its owner died, was fenced or drained",
            "a failover only follows a failure (a drain is not one)",
            "no write accepted from a superseded owner",
            "exactly one completed record per step",
        ] {
            assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
        }
    }

    #[test]
    fn a_rerun_after_a_kill_is_explained() {
        let mut h = history();
        let first = h.ledger[0].at;
        h.ledger.push(Entry {
            attempt: 2,
            node: "b".into(),
            at: first + Duration::from_secs(2),
            ..h.ledger[0].clone()
        });
        h.faults.push(Fault {
            kind: FaultKind::Kill,
            node: 0,
            from: first + Duration::from_millis(10),
            until: first + Duration::from_secs(3),
        });
        h.events.push(Event {
            kind: "failover".into(),
            node: "a".into(),
            at: first + Duration::from_millis(1200),
            message: String::new(),
        });
        let (violations, why) = check(&h);
        assert_eq!(violations, vec![]);
        assert_eq!(why.get("kill -9"), Some(&1));
    }

    #[test]
    fn a_foreign_answer_is_caught() {
        let mut h = history();
        h.driven[0].plan.steps = vec![Step::Ask(1), Step::Record];
        h.driven[0].answers_sent = vec![vec![1001, 1002]];
        let s = h.stored.get_mut("x").expect("x");
        s.variables = json!({"acc": 7, "ans1": 7});
        s.outputs = json!({"acc": 7});
        h.ledger.clear();
        let (violations, _) = check(&h);
        assert!(violations
            .iter()
            .any(|v| v.rule == "no answer consumed by an item it was not meant for"));
    }

    #[test]
    fn an_accepted_answer_lost_to_a_timeout_is_caught() {
        let mut h = history();
        h.driven[0].plan.steps = vec![Step::Calc(2), Step::AskLate(1), Step::Record];
        h.driven[0].answers_sent = vec![vec![1001]];
        h.ledger.clear();
        let s = h.stored.get_mut("x").expect("x");
        s.variables = json!({"acc": 9, "ans1": TIMED_OUT});
        s.outputs = json!({"acc": 9});
        // Timed out with no answer accepted: the reference's +7.
        h.driven[0].answers_accepted = vec![vec![]];
        assert_eq!(check(&h).0, vec![]);
        // Timed out although a node said 202 to 1001.
        h.driven[0].answers_accepted = vec![vec![1001]];
        let (violations, _) = check(&h);
        assert!(
            violations
                .iter()
                .any(|v| v.rule == "an accepted answer is never lost"),
            "{violations:?}"
        );
        // Took 1002 (sent, say by a double click) while 1001 was the one accepted.
        h.driven[0].answers_sent = vec![vec![1001, 1002]];
        let s = h.stored.get_mut("x").expect("x");
        s.variables = json!({"acc": 1004, "ans1": 1002});
        s.outputs = json!({"acc": 1004});
        let (violations, _) = check(&h);
        assert_eq!(
            violations.iter().map(|v| v.rule).collect::<Vec<_>>(),
            vec!["an accepted answer is never lost"]
        );
    }

    #[test]
    fn a_stuck_or_failed_child_is_caught_and_one_canceled_with_its_parent_is_not() {
        let mut h = history();
        let child = |state: &str, parent: &str| Stored {
            id: String::new(),
            workflow: "chaos-child".into(),
            parent: Some(parent.into()),
            state: state.into(),
            inputs: json!({"x": 1}),
            variables: json!({}),
            outputs: json!({}),
            error: None,
        };
        h.stored.insert("c1".into(), child("waiting-timer", "x"));
        h.stored.insert("c2".into(), child("failed", "x"));
        h.stored.insert("c3".into(), child("canceled", "x"));
        let (violations, _) = check(&h);
        let details: Vec<&str> = violations
            .iter()
            .filter(|v| v.rule == "every child execution ends")
            .map(|v| v.detail.as_str())
            .collect();
        assert_eq!(details.len(), 3, "{details:?}");
        h.stored.get_mut("x").expect("x").state = "canceled".into();
        h.driven[0].cancel_requested = true;
        let (violations, _) = check(&h);
        let details: Vec<&str> = violations
            .iter()
            .filter(|v| v.rule == "every child execution ends")
            .map(|v| v.detail.as_str())
            .collect();
        assert_eq!(
            details.len(),
            2,
            "the canceled child of a canceled parent is fine: {details:?}"
        );
    }

    #[test]
    fn a_database_restart_explains_any_nodes_failover_and_rerun() {
        let mut h = history();
        let first = h.ledger[0].at;
        h.ledger.push(Entry {
            attempt: 2,
            node: "b".into(),
            at: first + Duration::from_secs(2),
            ..h.ledger[0].clone()
        });
        h.events.push(Event {
            kind: "failover".into(),
            node: "a".into(),
            at: first + Duration::from_millis(1200),
            message: String::new(),
        });
        // Without a fault, both are violations.
        assert_eq!(check(&h).0.len(), 2);
        h.faults.push(Fault {
            kind: FaultKind::DbRestart,
            node: 1,
            from: first + Duration::from_millis(10),
            until: first + Duration::from_secs(3),
        });
        let (violations, why) = check(&h);
        assert_eq!(violations, vec![]);
        assert_eq!(why.get("database restart"), Some(&1));
    }

    #[test]
    fn a_node_that_was_not_a_live_member_need_not_be_failed_over() {
        let mut h = history();
        let t0 = Instant::now();
        h.faults.push(Fault {
            kind: FaultKind::Kill,
            node: 0,
            from: t0 + Duration::from_secs(1),
            until: t0 + Duration::from_secs(4),
        });
        let rule = "every failover is recorded as an event";
        let rules = |h: &History| check(h).0.into_iter().map(|v| v.rule).collect::<Vec<_>>();
        // A live member killed for 3 s with no failover while b could
        // have acted: a violation.
        h.liveness.push((t0, "a".into(), true));
        for ms in (0..5000).step_by(50) {
            h.liveness
                .push((t0 + Duration::from_millis(ms), "b".into(), true));
        }
        assert!(rules(&h).contains(&rule));
        // Fenced (by an earlier outage) when killed: its work is adopted.
        h.liveness
            .push((t0 + Duration::from_millis(500), "a".into(), false));
        assert!(!rules(&h).contains(&rule), "{:?}", rules(&h));
    }

    #[test]
    fn a_node_nobody_could_declare_dead_need_not_be_failed_over() {
        let mut h = history();
        h.nodes.push("c".into());
        let t0 = Instant::now();
        h.faults.push(Fault {
            kind: FaultKind::Pause,
            node: 0,
            from: t0,
            until: t0 + Duration::from_millis(2500),
        });
        let rule = "every failover is recorded as an event";
        let rules = |h: &History| check(h).0.into_iter().map(|v| v.rule).collect::<Vec<_>>();
        // a live; b and c fenced throughout (an earlier outage): nobody
        // could act, so no failover is owed.
        for ms in (0..3000).step_by(50) {
            let t = t0 + Duration::from_millis(ms);
            h.liveness.push((t, "a".into(), ms == 0));
            h.liveness.push((t, "b".into(), false));
            h.liveness.push((t, "c".into(), false));
        }
        assert!(!rules(&h).contains(&rule), "{:?}", rules(&h));
        // b live from 1.2 s on: it should have acted.
        for (t, n, live) in h.liveness.iter_mut() {
            if n == "b" && *t >= t0 + Duration::from_millis(1200) {
                *live = true;
            }
        }
        let (violations, _) = check(&h);
        let v = violations.iter().find(|v| v.rule == rule).expect("owed");
        assert!(v.detail.contains("while b could"), "{}", v.detail);
    }
}
