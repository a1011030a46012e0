//! The generated workload and its reference interpreter.
//!
//! A generated workflow is a chain of steps drawn from the whole language
//! (tasks, decisions, `http` actions to the ledger, timers for a time and
//! until a time, signals, interactions with and without a timeout, retried
//! items, caught errors, items that fail the execution until the client
//! resumes it with a fix, sync and async child workflows, sequential and
//! parallel `foreach`). Its one number, `acc`, moves through
//! the chain. The reference interpreter ([`Plan::expected`]) computes, in
//! Rust and with no engine code, what `acc` must be at each ledger record
//! and at the end, given the signal payloads and the interaction answers
//! the client actually had accepted.

use serde_json::{json, Map, Value};

/// The modulus that keeps `acc` small.
pub const M: i64 = 1_000_003;

/// A small deterministic random generator (SplitMix64), so a seed
/// reproduces a run's workload and fault schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One step of a generated workflow.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `acc = (acc * 3 + k) % M`.
    Calc(i64),
    /// An `http` action posting to the ledger (the side effect).
    Record,
    /// Even `acc`: `+k`, odd: `+2k`.
    Decide(i64),
    /// A timer.
    Timer(u64),
    /// Waits for signal `s{i}`; `acc += payload`.
    Signal(usize),
    /// Waits for an answer `{"ans{i}": n}`; `acc += n`.
    Ask(usize),
    /// Throws on its first attempt, retried: `acc += k`.
    Flaky(i64),
    /// Throws `boom`, caught by `on_error`: `acc += k + 4`.
    Caught(i64),
    /// A sync child workflow: `acc = (acc * 7 + 1) % M` (it records too).
    Child,
    /// `foreach` over `[1..n]` (parallel or not): `acc += sum((e + acc % 10)^2)`.
    Each(usize, bool),
    /// An async child workflow (it records `y` from `acc`); `acc` unchanged.
    AsyncChild,
    /// A timer until a fixed time, this many ms after the run's start
    /// (long past for the executions started later).
    Until(u64),
    /// Fails the execution (no retry, nothing catches it) until the client
    /// resumes it with variable `fix{step}` set: `acc += k`.
    Fix(i64),
    /// Waits for an answer `{"ans{i}": n}` for at most [`ASK_TIMEOUT_MS`]:
    /// `acc += n`; if it times out, its handler sets `ans{i} = -1` and
    /// `acc += 7`.
    AskLate(usize),
}

/// How long an [`Step::AskLate`] interaction waits for its answer.
pub const ASK_TIMEOUT_MS: u64 = 2000;

/// The `ans{i}` an [`Step::AskLate`] holds when it timed out.
pub const TIMED_OUT: i64 = -1;

/// A generated workflow: its definition and its steps.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Its workflow id.
    pub id: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The fixed child workflows the generated ones call.
pub fn children(ledger: &str) -> Vec<Value> {
    vec![
        json!({"id": "chaos-child", "inputs": {"x": "number"}, "outputs": {"y": "number"}, "variables": {"y": 0},
            "start": "calc", "items": {
            "calc": {"type": "task", "script": format!("y = (x * 7 + 1) % {M};"), "next": "rec"},
            "rec": record_item(ledger, "y", "e"),
            "e": {"type": "end"}}}),
        json!({"id": "chaos-elem", "inputs": {"x": "number"}, "outputs": {"y": "number"}, "variables": {"y": 0},
            "start": "sq", "items": {
            "sq": {"type": "task", "script": "y = x * x;", "next": "e"},
            "e": {"type": "end"}}}),
    ]
}

fn record_item(ledger: &str, var: &str, next: &str) -> Value {
    json!({"type": "action", "action": "http", "inputs": {
        "url": format!("'{ledger}'"),
        "method": "'POST'",
        "body": format!("({{execution: ctx.execution_id, item: ctx.item, attempt: ctx.attempt, key: ctx.idempotency_key, node: ctx.node, acc: {var}}})"),
    }, "next": next})
}

impl Plan {
    /// Draws a workflow of 3 to 8 steps.
    pub fn generate(id: String, rng: &mut Rng) -> Plan {
        let n = rng.range(3, 8) as usize;
        let mut steps = Vec::with_capacity(n + 2);
        // `acc` is a variable and the output: a task sets both, so one comes
        // first (an output no item ever set is null, and fails the end).
        steps.push(Step::Calc(rng.range(1, 50) as i64));
        let (mut signals, mut asks) = (0, 0);
        for _ in 0..n {
            let k = rng.range(1, 50) as i64;
            steps.push(match rng.range(0, 15) {
                0 | 1 => Step::Calc(k),
                2 => Step::Record,
                3 => Step::Decide(k),
                4 => Step::Timer(rng.range(20, 400)),
                5 => {
                    signals += 1;
                    Step::Signal(signals)
                }
                6 => {
                    asks += 1;
                    Step::Ask(asks)
                }
                7 => Step::Flaky(k),
                8 => Step::Caught(k),
                9 => Step::Child,
                10 | 11 => Step::Each(rng.range(1, 4) as usize, rng.chance(50)),
                12 => Step::AsyncChild,
                13 => Step::Until(rng.range(0, 8000)),
                14 => Step::Fix(k),
                _ => {
                    asks += 1;
                    Step::AskLate(asks)
                }
            });
        }
        // Every workflow leaves at least one side effect to check.
        steps.push(Step::Record);
        Plan { id, steps }
    }

    /// The definition, with its `http` actions posting to `ledger` and
    /// its `until` timers relative to `base_ms` (Unix ms).
    pub fn definition(&self, ledger: &str, base_ms: i64) -> Value {
        let mut items = Map::new();
        let mut variables = Map::new();
        variables.insert("acc".into(), json!(0));
        let name = |i: usize, part: &str| format!("i{i}{part}");
        for (i, step) in self.steps.iter().enumerate() {
            let next = if i + 1 == self.steps.len() {
                "done".to_owned()
            } else {
                name(i + 1, "")
            };
            let here = name(i, "");
            let calc = |script: String, next: &str| json!({"type": "task", "script": script, "next": next});
            match step {
                Step::Calc(k) => {
                    items.insert(here, calc(format!("acc = (acc * 3 + {k}) % {M};"), &next));
                }
                Step::Record => {
                    items.insert(here, record_item(ledger, "acc", &next));
                }
                Step::Decide(k) => {
                    let (even, odd) = (name(i, "even"), name(i, "odd"));
                    items.insert(
                        here,
                        json!({"type": "decision", "condition": "acc % 2 == 0", "then": even, "else": odd}),
                    );
                    items.insert(even, calc(format!("acc = acc + {k};"), &next));
                    items.insert(odd, calc(format!("acc = acc + {};", 2 * k), &next));
                }
                Step::Timer(ms) => {
                    items.insert(here, json!({"type": "timer", "for_ms": ms, "next": next}));
                }
                Step::Signal(s) => {
                    let var = format!("sig{s}");
                    variables.insert(var.clone(), json!(0));
                    let add = name(i, "add");
                    items.insert(
                        here,
                        json!({"type": "signal", "name": format!("s{s}"), "store": var, "next": add}),
                    );
                    items.insert(add, calc(format!("acc = (acc + {var}) % {M};"), &next));
                }
                Step::Ask(a) => {
                    let var = format!("ans{a}");
                    variables.insert(var.clone(), json!(0));
                    let add = name(i, "add");
                    items.insert(
                        here,
                        json!({"type": "interaction", "inputs": {var.clone(): "number"}, "next": add}),
                    );
                    items.insert(add, calc(format!("acc = (acc + {var}) % {M};"), &next));
                }
                Step::Flaky(k) => {
                    items.insert(
                        here,
                        json!({"type": "task", "script": format!("if (ctx.attempt < 2) throw new Error('flaky'); acc = acc + {k};"),
                               "retry": {"max_attempts": 4, "backoff_ms": 20}, "next": next}),
                    );
                }
                Step::Caught(k) => {
                    let handler = name(i, "caught");
                    items.insert(
                        here,
                        json!({"type": "task", "script": "throw new Error('boom');", "on_error": handler, "next": next}),
                    );
                    items.insert(
                        handler,
                        calc(format!("acc = acc + {k} + error.message.length;"), &next),
                    );
                }
                Step::Child => {
                    items.insert(
                        here,
                        json!({"type": "workflow", "workflow": "chaos-child", "inputs": {"x": "acc"}, "outputs": {"acc": "y"}, "next": next}),
                    );
                }
                Step::AsyncChild => {
                    items.insert(
                        here,
                        json!({"type": "workflow", "workflow": "chaos-child", "async": true, "inputs": {"x": "acc"}, "next": next}),
                    );
                }
                Step::Until(ms) => {
                    let at = base_ms + *ms as i64;
                    items.insert(
                        here,
                        json!({"type": "timer", "until": format!("new Date({at}).toISOString()"), "next": next}),
                    );
                }
                Step::Fix(k) => {
                    let var = format!("fix{i}");
                    variables.insert(var.clone(), json!(false));
                    items.insert(
                        here,
                        calc(
                            format!("if (!{var}) throw new Error('needs a fix'); acc = acc + {k};"),
                            &next,
                        ),
                    );
                }
                Step::AskLate(a) => {
                    let var = format!("ans{a}");
                    variables.insert(var.clone(), json!(0));
                    let (add, late) = (name(i, "add"), name(i, "late"));
                    items.insert(
                        here,
                        json!({"type": "interaction", "inputs": {var.clone(): "number"}, "timeout_ms": ASK_TIMEOUT_MS,
                               "on_error": late, "next": add}),
                    );
                    items.insert(add, calc(format!("acc = (acc + {var}) % {M};"), &next));
                    items.insert(
                        late,
                        calc(
                            format!("{var} = {TIMED_OUT}; acc = (acc + 7) % {M};"),
                            &next,
                        ),
                    );
                }
                Step::Each(n, parallel) => {
                    let (list, ys, add) = (format!("list{i}"), format!("ys{i}"), name(i, "sum"));
                    variables.insert(list.clone(), json!((1..=*n).collect::<Vec<_>>()));
                    variables.insert(ys.clone(), json!([]));
                    items.insert(
                        here,
                        json!({"type": "foreach", "over": list, "as": "e", "workflow": "chaos-elem",
                               "inputs": {"x": "e + acc % 10"}, "collect": {ys.clone(): "y"}, "parallel": parallel, "next": add}),
                    );
                    items.insert(
                        add,
                        calc(
                            format!("acc = (acc + {ys}.reduce((a, b) => a + b, 0)) % {M};"),
                            &next,
                        ),
                    );
                }
            }
        }
        items.insert("done".into(), json!({"type": "end"}));
        json!({"id": self.id, "outputs": {"acc": "number"}, "variables": variables,
               "start": "i0", "items": items})
    }

    /// The signals this workflow waits for, in order (`s1`, `s2`, ...).
    pub fn signals(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Signal(i) => Some(format!("s{i}")),
                _ => None,
            })
            .collect()
    }

    /// The interactions it waits for, by the input each wants (`ans1`, ...).
    pub fn asks(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Ask(i) | Step::AskLate(i) => Some(format!("ans{i}")),
                _ => None,
            })
            .collect()
    }

    /// The reference interpreter: `acc` at each `Record` step of this
    /// workflow (by item id) and at the end, given the payloads of its
    /// signals and the answers accepted, in order. Child workflows'
    /// records are checked by [`child_record`].
    pub fn expected(&self, signals: &[i64], answers: &[i64]) -> (Vec<(String, i64)>, i64) {
        let mut acc: i64 = 0;
        let mut records = Vec::new();
        let (mut si, mut ai) = (0, 0);
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Calc(k) => acc = (acc * 3 + k) % M,
                Step::Record => records.push((format!("i{i}"), acc)),
                Step::Decide(k) => acc += if acc % 2 == 0 { *k } else { 2 * k },
                Step::Timer(_) => {}
                Step::Signal(_) => {
                    acc = (acc + signals.get(si).copied().unwrap_or(0)) % M;
                    si += 1;
                }
                Step::Ask(_) => {
                    acc = (acc + answers.get(ai).copied().unwrap_or(0)) % M;
                    ai += 1;
                }
                Step::AskLate(_) => {
                    acc = match answers.get(ai).copied().unwrap_or(0) {
                        TIMED_OUT => (acc + 7) % M,
                        n => (acc + n) % M,
                    };
                    ai += 1;
                }
                Step::AsyncChild | Step::Until(_) => {}
                Step::Fix(k) => acc += k,
                Step::Flaky(k) => acc += k,
                Step::Caught(k) => acc += k + 4,
                Step::Child => acc = (acc * 7 + 1) % M,
                Step::Each(n, _) => {
                    let base = acc % 10;
                    let sum: i64 = (1..=*n as i64).map(|e| (e + base) * (e + base)).sum();
                    acc = (acc + sum) % M;
                }
            }
        }
        (records, acc)
    }
}

/// What a `chaos-child` run records: `y` from its input `x`.
pub fn child_record(x: i64) -> i64 {
    (x * 7 + 1) % M
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_follows_each_step() {
        let plan = Plan {
            id: "t".into(),
            steps: vec![
                Step::Calc(5),
                Step::Record,
                Step::Decide(3),
                Step::Signal(1),
                Step::Ask(1),
                Step::Flaky(2),
                Step::Caught(1),
                Step::Child,
                Step::Each(2, true),
                Step::Record,
                Step::AsyncChild,
                Step::Until(5),
                Step::Fix(3),
                Step::AskLate(2),
                Step::AskLate(3),
            ],
        };
        let (records, end) = plan.expected(&[10], &[100, TIMED_OUT, 20]);
        // 5; odd +6 = 11; +10 = 21; +100 = 121; +2 = 123; +1+4 = 128;
        // *7+1 = 897; base 7: (8^2 + 9^2) = 145 -> 1042; async child and
        // until: 1042; fix +3 = 1045; timed out +7 = 1052; answered +20.
        assert_eq!(records, vec![("i1".into(), 5), ("i9".into(), 1042)]);
        assert_eq!(end, 1072);
        assert_eq!(plan.asks(), vec!["ans1", "ans2", "ans3"]);
    }

    #[test]
    fn a_seed_reproduces_its_workload() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let pa = Plan::generate("x".into(), &mut a);
        let pb = Plan::generate("x".into(), &mut b);
        assert_eq!(pa.steps, pb.steps);
        assert_eq!(pa.definition("http://l", 0), pb.definition("http://l", 0));
    }
}
