//! The script pool: JavaScript through QuickJS (rquickjs) on a
//! `SyncArbiter` of script threads, one QuickJS runtime per thread.
//!
//! Script evaluation is blocking CPU work and must never run on an actix
//! arbiter or an HTTP worker. Each evaluation gets a deadline enforced by
//! QuickJS's interrupt handler and a heap limit kept by the runtime's
//! allocator (see `heap`), so
//! `while(true){}` and memory bombs fail their item with a clear error
//! while the node keeps running.
//!
//! Creating a QuickJS context costs 60 to 200 us here, more than a short
//! script, so each thread keeps one *locked-down* context (built-ins
//! deep-frozen, see `LOCKDOWN_JS`) and resets its globals after every
//! evaluation. No evaluation can leave state for the next one: a context
//! whose globals cannot be reset, or that was interrupted, is discarded.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use rquickjs::{Context, Ctx, Function, Module, Persistent, Runtime};
use serde_json::{Map, Value};
use thiserror::Error;

mod heap;
pub mod inline;

const MAX_LOG_LINES: usize = 100;
const MAX_LOG_LINE: usize = 4096;

/// A script or expression found in a definition, with its path.
#[derive(Clone, Debug)]
pub struct ScriptRef {
    /// Where it is, such as `items.double.script`.
    pub path: String,
    /// The source text.
    pub source: String,
    /// An expression (`total > 10`) rather than statements.
    pub expression: bool,
}

/// Why a script failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ScriptError {
    /// It ran past `scripts.timeout_ms`.
    #[error("script timed out after {0} ms (scripts.timeout_ms)")]
    Timeout(u64),
    /// It allocated past `scripts.memory_limit_mb`.
    #[error("script ran out of memory (limit {0} MB, scripts.memory_limit_mb)")]
    OutOfMemory(u64),
    /// It does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// It threw something that is not an `Error` object.
    #[error("{0}")]
    Exception(String),
    /// It threw an `Error` (or an object with a `message`): its `name`
    /// and `message` as JavaScript has them.
    #[error("{name}: {message}")]
    Thrown {
        /// `Error`, `TypeError`, a custom name, ...
        name: String,
        /// The message, as `e.message` reads in JavaScript.
        message: String,
    },
    /// The script engine itself failed.
    #[error("script engine error: {0}")]
    Engine(String),
}

/// What a script sees as `ctx`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScriptContext {
    /// The execution's id.
    pub execution_id: String,
    /// The item's id.
    pub item: String,
    /// The attempt number.
    pub attempt: i32,
    /// `{execution}/{item}`, stable across attempts.
    pub idempotency_key: String,
    /// The node running this attempt.
    pub node: String,
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub enum Code {
    /// Statements, for a `task`.
    Statements(String),
    /// Named expressions, each evaluated to a value.
    Expressions(Vec<(String, String)>),
}

/// Evaluates code with the given globals and reads some of them back.
#[derive(Debug, Message)]
#[rtype(result = "Result<Evaluated, ScriptError>")]
pub struct Evaluate {
    /// Globals to define, in order (later ones win).
    pub globals: Vec<(String, Value)>,
    /// The code.
    pub code: Code,
    /// Globals to read back after running.
    pub read_back: Vec<String>,
    /// The `ctx` object.
    pub context: ScriptContext,
}

/// The result of [`Evaluate`].
#[derive(Clone, Debug, Default)]
pub struct Evaluated {
    /// The read-back globals.
    pub values: Map<String, Value>,
    /// Each expression's value, by name.
    pub results: Map<String, Value>,
    /// Lines passed to `log()`.
    pub logs: Vec<String>,
}

/// Checks that scripts compile, without running them.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(String, String)>")]
pub struct Compile(pub Vec<ScriptRef>);

/// Limits for script threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Wall-clock limit per evaluation.
    pub timeout_ms: u64,
    /// Heap limit per runtime.
    pub memory_limit_mb: u64,
}

/// One script thread: a QuickJS runtime and its limits.
pub struct ScriptWorker {
    // Dropped before `rt`: a context must not outlive its runtime.
    warm: Option<Context>,
    rt: Runtime,
    limits: ScriptLimits,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
    /// Whether the heap refused an allocation during this evaluation.
    heap: heap::Watch,
    evaluations: u64,
    /// Whether timeouts and running out of memory count in [`TIMEOUTS`]
    /// and [`OUT_OF_MEMORY`]: not on the calling thread, whose failed
    /// evaluation runs again on a script thread, which counts it.
    counts: bool,
}

/// The name of the hidden global that resets a context between
/// evaluations.
const RESET_FN: &str = "__baton_reset";

/// The hidden global that makes an evaluation's `log` (see `LOCKDOWN_JS`).
const LOGGER_FN: &str = "__baton_logger";

/// The lines `log` wrote (strings only it could append), at most
/// [`MAX_LOG_LINES`], each cut to [`MAX_LOG_LINE`] bytes.
fn logged(lines: &rquickjs::Array<'_>) -> rquickjs::Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..MAX_LOG_LINES {
        let line: rquickjs::Value<'_> = lines.get(i)?;
        if line.is_undefined() {
            break;
        }
        let Some(mut s) = line.as_string().and_then(|s| s.to_string().ok()) else {
            continue;
        };
        if s.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        out.push(s);
    }
    Ok(out)
}

/// Makes a context safe to share between evaluations of different
/// executions: every built-in object reachable from the global object is
/// deep-frozen and every built-in global made read-only, so no evaluation
/// can leave state behind in them; and `__baton_reset()` deletes whatever
/// globals an evaluation added, answering `false` if one cannot be deleted
/// or the global object's prototype was replaced (the context is then
/// thrown away). Common prototype properties
/// (`constructor`, `toString`, `name`, `message`, ...) become accessors
/// that let an instance define its own, as unfrozen JavaScript allows.
const LOCKDOWN_JS: &str = r#"(function () {
  'use strict';
  const g = globalThis;
  // Error.stackTraceLimit and Error.prepareStackTrace are accessors whose
  // setters write the context itself (a function kept there runs for
  // every later Error): freeze would not stop them, so they become
  // read-only values.
  for (const k of ['stackTraceLimit', 'prepareStackTrace']) {
    const d = Reflect.getOwnPropertyDescriptor(Error, k);
    if (d && d.get) {
      Object.defineProperty(Error, k, { value: d.get.call(Error), writable: false, enumerable: d.enumerable, configurable: false });
    }
  }
  const overridable = ['constructor', 'toString', 'toLocaleString', 'valueOf', 'name', 'message',
                       'hasOwnProperty', 'isPrototypeOf', 'propertyIsEnumerable'];
  const seen = new Set([g]);
  const stack = [];
  const push = (v) => {
    if ((typeof v === 'object' || typeof v === 'function') && v !== null && !seen.has(v)) {
      seen.add(v);
      stack.push(v);
    }
  };
  const pushDescriptor = (d) => { if ('value' in d) push(d.value); else { push(d.get); push(d.set); } };
  for (const k of Reflect.ownKeys(g)) pushDescriptor(Reflect.getOwnPropertyDescriptor(g, k));
  push(Object.getPrototypeOf(function* () {}));
  push(Object.getPrototypeOf(async function () {}));
  push(Object.getPrototypeOf([][Symbol.iterator]()));
  push(Object.getPrototypeOf(''[Symbol.iterator]()));
  push(Object.getPrototypeOf(new Map()[Symbol.iterator]()));
  push(Object.getPrototypeOf(new Set()[Symbol.iterator]()));
  push(Object.getPrototypeOf(/x/[Symbol.matchAll]('')));
  // Reachable from no global: async generators (with their prototype and
  // the async iterator prototype behind it) and iterator helpers.
  push(Object.getPrototypeOf(async function* () {}));
  try { push(Object.getPrototypeOf([].values().map((x) => x))); } catch (e) {}
  try { push(Object.getPrototypeOf(Iterator.from({ next() { return { done: true }; } }))); } catch (e) {}
  const protos = [];
  while (stack.length) {
    const o = stack.pop();
    push(Object.getPrototypeOf(o));
    for (const k of Reflect.ownKeys(o)) {
      const d = Reflect.getOwnPropertyDescriptor(o, k);
      if (k === 'prototype' && 'value' in d && d.value !== null && typeof d.value === 'object') protos.push(d.value);
      pushDescriptor(d);
    }
  }
  protos.push(Object.prototype, Function.prototype);
  const made = [];
  for (const p of protos) {
    for (const k of overridable) {
      const d = Reflect.getOwnPropertyDescriptor(p, k);
      if (!d || !('value' in d) || !d.configurable) continue;
      const value = d.value;
      const get = function () { return value; };
      const set = function (v) {
        if (this === p) throw new TypeError('built-in objects are read-only');
        Object.defineProperty(this, k, { value: v, writable: true, enumerable: true, configurable: true });
      };
      made.push(get, set);
      Object.defineProperty(p, k, { get, set, enumerable: d.enumerable, configurable: false });
    }
  }
  for (const o of seen) if (o !== g) Object.freeze(o);
  // The accessors' own `prototype` objects too: anything reachable that
  // stays writable carries state from one evaluation to the next.
  for (const f of made) { Object.freeze(f); Object.freeze(f.prototype); }
  for (const k of Reflect.ownKeys(g)) {
    const d = Reflect.getOwnPropertyDescriptor(g, k);
    if ('value' in d) Object.defineProperty(g, k, { writable: false, configurable: false });
  }
  // `log` for one evaluation, appending to `lines`, an array only the
  // caller (Rust) holds. In JavaScript, not a Rust closure: QuickJS cannot
  // see what a Rust function holds, and a context holding one was not
  // freed when dropped, so a discarded context's whole heap stayed. Arrow
  // functions: no `prototype` object to carry state between evaluations.
  const logger = (lines, max) => (line) => {
    if (lines.length < max) lines[lines.length] = String(line);
  };
  Object.freeze(logger);
  Object.defineProperty(g, '__baton_logger', { value: logger, writable: false, configurable: false, enumerable: false });
  const base = new Set(Reflect.ownKeys(g));
  base.add('__baton_reset');
  const getPrototypeOf = Object.getPrototypeOf;
  const proto = getPrototypeOf(g);
  const isExtensible = Object.isExtensible;
  const reset = () => {
    // `__proto__ = o` changes what every later name lookup falls back to;
    // a global object made non-extensible refuses the next evaluation's.
    let clean = getPrototypeOf(g) === proto && isExtensible(g);
    for (const k of Reflect.ownKeys(g)) {
      if (!base.has(k) && !Reflect.deleteProperty(g, k)) clean = false;
    }
    return clean;
  };
  Object.freeze(reset);
  Object.defineProperty(g, '__baton_reset', { value: reset, writable: false, configurable: false, enumerable: false });
})();"#;

fn locked_down_context(rt: &Runtime) -> Result<Context, ScriptError> {
    let context = new_context(rt).map_err(|e| ScriptError::Engine(e.to_string()))?;
    context.with(|ctx| {
        ctx.eval::<(), _>(LOCKDOWN_JS).map_err(|e| match e {
            rquickjs::Error::Exception => {
                ScriptError::Engine(format!("lockdown failed: {}", exception_text(&ctx)))
            }
            other => ScriptError::Engine(format!("lockdown failed: {other}")),
        })
    })?;
    Ok(context)
}

/// A fresh context with what scripts use (base objects, eval, JSON, Date,
/// RegExp, Map/Set, Promise), without the rest of
/// `Context::full` (typed arrays, Proxy, BigInt, WeakRef), whose
/// set-up would otherwise dominate the cost of a short script.
fn new_context(rt: &Runtime) -> rquickjs::Result<Context> {
    use rquickjs::context::intrinsic;
    Context::builder()
        .with::<intrinsic::Eval>()
        .with::<intrinsic::Json>()
        .with::<intrinsic::Date>()
        .with::<intrinsic::RegExpCompiler>()
        .with::<intrinsic::RegExp>()
        .with::<intrinsic::MapSet>()
        // Without Promise, merely calling an `async` function leaks objects
        // and QuickJS aborts the process when the runtime is freed.
        .with::<intrinsic::Promise>()
        .build(rt)
}

impl ScriptWorker {
    fn new(limits: ScriptLimits) -> Result<ScriptWorker, ScriptError> {
        let (allocator, heap) =
            heap::Heap::new((limits.memory_limit_mb as usize).saturating_mul(1024 * 1024));
        let rt =
            Runtime::new_with_alloc(allocator).map_err(|e| ScriptError::Engine(e.to_string()))?;
        rt.set_max_stack_size(512 * 1024);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        let (d, i) = (deadline.clone(), interrupted.clone());
        rt.set_interrupt_handler(Some(Box::new(move || match d.get() {
            Some(at) if Instant::now() >= at => {
                i.set(true);
                true
            }
            _ => false,
        })));
        Ok(ScriptWorker {
            rt,
            limits,
            deadline,
            interrupted,
            heap,
            evaluations: 0,
            counts: true,
            warm: None,
        })
    }

    fn arm(&self) {
        self.interrupted.set(false);
        self.heap.reset();
        self.deadline.set(Some(
            Instant::now() + Duration::from_millis(self.limits.timeout_ms),
        ));
    }

    fn classify(&self, ctx: &Ctx<'_>, err: rquickjs::Error) -> ScriptError {
        let e = self.classify_inner(ctx, err);
        self.tally(&e);
        e
    }

    /// Counts a timeout or an out-of-memory in the metrics, unless this
    /// worker's failures are run again (and counted) on a script thread.
    fn tally(&self, e: &ScriptError) {
        if self.counts {
            count(e);
        }
    }

    fn classify_inner(&self, ctx: &Ctx<'_>, err: rquickjs::Error) -> ScriptError {
        if self.interrupted.get() {
            return ScriptError::Timeout(self.limits.timeout_ms);
        }
        // Whatever it threw (`null` when even the error could not be
        // made): the heap said no.
        if self.heap.refused() {
            return ScriptError::OutOfMemory(self.limits.memory_limit_mb);
        }
        let message = match err {
            rquickjs::Error::Exception => match thrown(ctx) {
                Thrown::Error { name, message } if !name.starts_with("SyntaxError") => {
                    if message.contains("out of memory") {
                        return ScriptError::OutOfMemory(self.limits.memory_limit_mb);
                    }
                    return ScriptError::Thrown { name, message };
                }
                Thrown::Error { name, message } => format!("{name}: {message}"),
                Thrown::Other(text) => text,
            },
            other => other.to_string(),
        };
        if message.contains("out of memory") {
            ScriptError::OutOfMemory(self.limits.memory_limit_mb)
        } else if message.starts_with("SyntaxError") {
            ScriptError::Syntax(message)
        } else {
            ScriptError::Exception(message)
        }
    }

    fn evaluate(&mut self, msg: &Evaluate) -> Result<Evaluated, ScriptError> {
        let context = match self.warm.take() {
            Some(c) => c,
            None => locked_down_context(&self.rt)?,
        };
        self.arm();
        // The evaluation's log lines: held here, out of the scripts' reach,
        // and let go before the context is.
        let kept_lines: RefCell<Option<Persistent<rquickjs::Array<'static>>>> = RefCell::new(None);
        let broken = Cell::new(false);
        let result = context.with(|ctx| -> Result<Evaluated, ScriptError> {
            let globals = ctx.globals();
            let setup = || -> rquickjs::Result<()> {
                for (name, value) in &msg.globals {
                    globals.set(name.as_str(), ctx.json_parse(value.to_string())?)?;
                }
                let ctx_json = serde_json::to_string(&msg.context).unwrap_or_else(|_| "{}".into());
                globals.set("ctx", ctx.json_parse(ctx_json)?)?;
                let logger: Function<'_> = globals.get(LOGGER_FN)?;
                let lines = rquickjs::Array::new(ctx.clone())?;
                let log: rquickjs::Value<'_> = logger.call((lines.clone(), MAX_LOG_LINES))?;
                globals.set("log", log)?;
                *kept_lines.borrow_mut() = Some(Persistent::save(&ctx, lines));
                Ok(())
            };
            // A setup that fails (the global object made read-only, say)
            // would fail again: the context is not kept.
            setup().map_err(|e| {
                broken.set(true);
                self.classify(&ctx, e)
            })?;
            let mut out = Evaluated::default();
            match &msg.code {
                Code::Statements(src) => {
                    // A block: top-level `let`, `const`, `class` and
                    // functions stay local to the evaluation. (Validation
                    // compiled `src` alone, so it cannot close the block.)
                    ctx.eval::<(), _>(format!("{{\n{src}\n}}"))
                        .map_err(|e| self.classify(&ctx, e))?;
                }
                Code::Expressions(exprs) => {
                    for (name, src) in exprs {
                        let v: rquickjs::Value<'_> = ctx
                            .eval(format!("({src}\n)"))
                            .map_err(|e| self.classify(&ctx, e))?;
                        out.results.insert(
                            name.clone(),
                            to_json(&ctx, v).map_err(|e| self.classify(&ctx, e))?,
                        );
                    }
                }
            }
            Ok(out)
        });
        // Settle promise reactions (microtasks) the code queued, under the
        // same deadline, so that none is left in the runtime; then read
        // back the globals they may have set.
        let result = result.and_then(|out| {
            let mut jobs = 0u32;
            while self.rt.is_job_pending() {
                jobs += 1;
                let failed = self.rt.execute_pending_job().is_err();
                if self.interrupted.get() {
                    let e = ScriptError::Timeout(self.limits.timeout_ms);
                    self.tally(&e);
                    return Err(e);
                }
                if failed || jobs > 100_000 {
                    // Drop the context: its queue is not known to be empty.
                    return Err(ScriptError::Engine(
                        "promise reactions did not settle".into(),
                    ));
                }
            }
            Ok(out)
        });
        let result = result.and_then(|mut out| {
            context.with(|ctx| {
                let globals = ctx.globals();
                if let Some(lines) = kept_lines.borrow_mut().take() {
                    let lines = lines.restore(&ctx).map_err(|e| self.classify(&ctx, e))?;
                    out.logs = logged(&lines).map_err(|e| self.classify(&ctx, e))?;
                }
                for name in &msg.read_back {
                    let v: rquickjs::Value<'_> = globals
                        .get(name.as_str())
                        .map_err(|e| self.classify(&ctx, e))?;
                    out.values.insert(
                        name.clone(),
                        to_json(&ctx, v).map_err(|e| self.classify(&ctx, e))?,
                    );
                }
                Ok(out)
            })
        });
        // Keep the context for the next evaluation only if it is back to
        // its pristine state: the run ended normally or by a thrown
        // exception, and every global it added could be deleted. A
        // timeout, out-of-memory or an undeletable global (`var` at the top
        // level) costs a fresh context instead.
        if let Some(lines) = kept_lines.borrow_mut().take() {
            context.with(|_| drop(lines));
        }
        let mut reusable = !broken.get()
            && matches!(
                result,
                Ok(_)
                    | Err(ScriptError::Exception(_)
                        | ScriptError::Thrown { .. }
                        | ScriptError::Syntax(_))
            )
            && !self.interrupted.get()
            && context.with(|ctx| {
                ctx.globals()
                    .get::<_, Function<'_>>(RESET_FN)
                    .and_then(|f| f.call::<_, bool>(()))
                    .unwrap_or(false)
            });
        if self.rt.is_job_pending() {
            // Promise reactions queued after the queue was settled (by a
            // getter the read-back ran): run out under an expired
            // deadline, so that none is left for the next evaluation, and
            // the context is not kept.
            reusable = false;
            self.deadline.set(Some(Instant::now()));
            let mut jobs = 0u32;
            while self.rt.is_job_pending() && jobs < 100_000 {
                let _ = self.rt.execute_pending_job();
                jobs += 1;
            }
        }
        self.deadline.set(None);
        self.evaluations += 1;
        if reusable {
            self.warm = Some(context);
        } else {
            drop(context);
            self.rt.run_gc();
        }
        // Reference counting frees almost everything at once; a full
        // collection (cycles) every 64 evaluations keeps the heap flat.
        if self.evaluations.is_multiple_of(64) {
            self.rt.run_gc();
        }
        result
    }

    fn compile(&mut self, scripts: Vec<ScriptRef>) -> Vec<(String, String)> {
        let Ok(context) = new_context(&self.rt) else {
            return unchecked(&scripts, "the script engine is unavailable");
        };
        self.arm();
        let problems = context.with(|ctx| {
            let mut problems = Vec::new();
            for (i, s) in scripts.into_iter().enumerate() {
                // A refusal while compiling one script says nothing of
                // the next.
                self.heap.reset();
                // Compile-only (JS_EVAL_FLAG_COMPILE_ONLY): parsed, never run.
                // `new Function(body)` would not do: QuickJS builds it by
                // pasting the body into source text, and a body such as
                // `}); while(true){} (function(){` runs at validation.
                let source = if s.expression {
                    format!("export default (\n{}\n);", s.source)
                } else {
                    s.source.clone()
                };
                if let Err(e) = Module::declare(ctx.clone(), format!("check{i}"), source) {
                    let what = if s.expression { "expression" } else { "script" };
                    let err = self.classify(&ctx, e);
                    problems.push((s.path, format!("{what} does not compile: {err}")));
                }
            }
            problems
        });
        self.deadline.set(None);
        problems
    }
}

/// The problem for scripts that could not be checked at all, named at the
/// first script's path (every problem names a path).
fn unchecked(scripts: &[ScriptRef], why: &str) -> Vec<(String, String)> {
    scripts
        .first()
        .map(|s| (s.path.clone(), format!("cannot check this script: {why}")))
        .into_iter()
        .collect()
}

/// What a script threw.
enum Thrown {
    /// An `Error` (or any object with a string `message`).
    Error { name: String, message: String },
    /// Anything else: a string as it is, other values as JSON text.
    Other(String),
}

fn thrown(ctx: &Ctx<'_>) -> Thrown {
    let v = ctx.catch();
    if let Some(obj) = v.as_object() {
        let name: Option<String> = obj.get("name").ok();
        let message: Option<String> = obj.get("message").ok();
        if let Some(message) = message {
            return Thrown::Error {
                name: name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "Error".into()),
                message,
            };
        }
    }
    // A thrown string is the message itself (`throw 'no stock'`), not its
    // JSON text.
    if let Some(text) = v.as_string().and_then(|s| s.to_string().ok()) {
        return Thrown::Other(text);
    }
    Thrown::Other(match ctx.json_stringify(v.clone()) {
        Ok(Some(s)) => s.to_string().unwrap_or_else(|_| "exception".into()),
        _ => "exception".into(),
    })
}

fn exception_text(ctx: &Ctx<'_>) -> String {
    match thrown(ctx) {
        Thrown::Error { name, message } => format!("{name}: {message}"),
        Thrown::Other(text) => text,
    }
}

fn to_json<'js>(ctx: &Ctx<'js>, v: rquickjs::Value<'js>) -> rquickjs::Result<Value> {
    if v.is_undefined() || v.is_function() {
        return Ok(Value::Null);
    }
    match ctx.json_stringify(v)? {
        Some(s) => Ok(serde_json::from_str(&s.to_string()?).unwrap_or(Value::Null)),
        None => Ok(Value::Null),
    }
}

impl Actor for ScriptWorker {
    type Context = SyncContext<Self>;
}

impl Handler<Evaluate> for ScriptWorker {
    type Result = Result<Evaluated, ScriptError>;

    fn handle(&mut self, msg: Evaluate, _: &mut SyncContext<Self>) -> Self::Result {
        self.evaluate(&msg)
    }
}

impl Handler<Compile> for ScriptWorker {
    type Result = Vec<(String, String)>;

    fn handle(&mut self, msg: Compile, _: &mut SyncContext<Self>) -> Self::Result {
        self.compile(msg.0)
    }
}

/// Script evaluations stopped at `scripts.timeout_ms`, in this process.
pub static TIMEOUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Script evaluations that ran out of `scripts.memory_limit_mb`, in this process.
pub static OUT_OF_MEMORY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count(e: &ScriptError) {
    use std::sync::atomic::Ordering::Relaxed;
    match e {
        ScriptError::Timeout(_) => {
            TIMEOUTS.fetch_add(1, Relaxed);
        }
        ScriptError::OutOfMemory(_) => {
            OUT_OF_MEMORY.fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

/// Evaluations of straight-line code on the calling thread, in this process.
pub static INLINE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Evaluations handed to a script thread, in this process.
pub static POOLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The address of the script threads. Cheap to clone.
#[derive(Clone)]
pub struct ScriptPool {
    addr: Addr<ScriptWorker>,
    limits: ScriptLimits,
    inline: bool,
}

impl std::fmt::Debug for ScriptPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptPool")
    }
}

impl ScriptPool {
    /// Starts `threads` script threads. Must run inside an actix system.
    pub fn start(threads: usize, limits: ScriptLimits) -> ScriptPool {
        let addr = SyncArbiter::start(threads.max(1), move || {
            // Runtime::new fails only when QuickJS cannot allocate its
            // runtime at all; there is no useful way to run on.
            #[allow(clippy::expect_used)]
            ScriptWorker::new(limits).expect("cannot create a QuickJS runtime")
        });
        ScriptPool {
            addr,
            limits,
            inline: true,
        }
    }

    /// Whether straight-line code runs on the calling thread
    /// (`scripts.inline`, on by default; see [`inline`]).
    #[must_use]
    pub fn with_inline(mut self, on: bool) -> ScriptPool {
        self.inline = on;
        self
    }

    /// Evaluates code: straight-line code on this thread (see [`inline`]),
    /// anything else on a script thread.
    pub async fn evaluate(&self, msg: Evaluate) -> Result<Evaluated, ScriptError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.inline
            && inline::straight_line(&msg.code)
            && inline::small_enough(&msg)
            && !inline::outgrew_before(&msg.code)
        {
            // The calling thread's runtime has a small heap (see `inline`),
            // and running out of it shows as more than one kind of error:
            // whatever failed runs again, from the same message, on a
            // script thread with the full limit, whose answer is the one.
            if let Ok(done) = inline::evaluate_here(self.limits, &msg) {
                INLINE.fetch_add(1, Relaxed);
                return Ok(done);
            }
        }
        POOLED.fetch_add(1, Relaxed);
        self.addr
            .send(msg)
            .await
            .map_err(|e| ScriptError::Engine(e.to_string()))?
    }

    /// Returns `(path, message)` for every script that does not compile.
    pub async fn compile(&self, scripts: Vec<ScriptRef>) -> Vec<(String, String)> {
        if scripts.is_empty() {
            return Vec::new();
        }
        let first = unchecked(&scripts, "the script engine is unavailable");
        match self.addr.send(Compile(scripts)).await {
            Ok(p) => p,
            Err(_) => first,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests_support {
    pub(crate) use super::ScriptWorker;
    use super::*;
    pub(super) fn worker() -> ScriptWorker {
        worker_with_timeout(2000)
    }
    pub(crate) fn worker_with_timeout(timeout_ms: u64) -> ScriptWorker {
        ScriptWorker::new(ScriptLimits {
            timeout_ms,
            memory_limit_mb: 32,
        })
        .unwrap()
    }
    pub(crate) fn evaluate(w: &mut ScriptWorker, msg: Evaluate) -> Result<Evaluated, ScriptError> {
        w.evaluate(&msg)
    }
    pub(crate) fn compile(w: &mut ScriptWorker, scripts: Vec<ScriptRef>) -> Vec<(String, String)> {
        w.compile(scripts)
    }
    pub(super) fn run(
        w: &mut ScriptWorker,
        src: &str,
        globals: Vec<(&str, Value)>,
    ) -> Result<Evaluated, ScriptError> {
        let read_back = globals.iter().map(|(k, _)| k.to_string()).collect();
        w.evaluate(&Evaluate {
            globals: globals
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            code: Code::Statements(src.to_owned()),
            read_back,
            context: ScriptContext::default(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::tests_support::{run, worker};

    #[test]
    fn assignments_to_declared_globals_come_back() {
        let mut w = worker();
        let out = run(
            &mut w,
            "x = x + 1; let t = 5; y = [x, t];",
            vec![("x", json!(1)), ("y", json!(null))],
        )
        .unwrap();
        assert_eq!(out.values["x"], json!(2));
        assert_eq!(out.values["y"], json!([2, 5]));
    }

    #[test]
    fn no_evaluation_leaves_state_for_the_next() {
        let mut w = worker();
        // Built-ins cannot be changed.
        let e = run(
            &mut w,
            "Array.prototype.push = function () { return 0; };",
            vec![],
        )
        .unwrap_err();
        assert!(e.to_string().contains("TypeError"), "{e}");
        let e = run(&mut w, "Math.max.leak = 1;", vec![]).unwrap_err();
        assert!(e.to_string().contains("TypeError"), "{e}");
        let e = run(&mut w, "JSON = null;", vec![]).unwrap_err();
        assert!(e.to_string().contains("TypeError"), "{e}");
        // Globals added by one evaluation are gone in the next, whether
        // deletable (reset) or not (`var`: the context is replaced).
        run(
            &mut w,
            "globalThis.leak = 1; let local = 2; var hoisted = 3; function f() {}",
            vec![],
        )
        .unwrap();
        let out = run(
            &mut w,
            "seen = [typeof leak, typeof local, typeof hoisted, typeof f, [1].push(2)];",
            vec![("seen", json!(null))],
        )
        .unwrap();
        assert_eq!(
            out.values["seen"],
            json!(["undefined", "undefined", "undefined", "undefined", 2])
        );
        // Nor in prototypes no global names (async generators, iterator
        // helpers).
        let protos = "const ag = Object.getPrototypeOf(async function* () {}); \
            const ps = [ag, ag.prototype, Object.getPrototypeOf(ag.prototype), \
              Object.getPrototypeOf([].values().map((x) => x)), \
              Object.getPrototypeOf(Iterator.from({ next() { return { done: true }; } }))];";
        run(
            &mut w,
            &format!("{protos} for (const p of ps) {{ try {{ p.leak = 1; }} catch (e) {{}} }}"),
            vec![],
        )
        .unwrap();
        let out = run(
            &mut w,
            &format!("{protos} seen = ps.map((p) => typeof p.leak + Object.isFrozen(p));"),
            vec![("seen", json!(null))],
        )
        .unwrap();
        assert_eq!(out.values["seen"], json!(vec!["undefinedtrue"; 5]));
        // Nor in the context's own settings behind Error's accessors.
        let fresh = run(
            &mut w,
            "seen = [Error.stackTraceLimit, typeof Error.prepareStackTrace];",
            vec![("seen", json!(null))],
        )
        .unwrap();
        run(
            &mut w,
            "try { Error.stackTraceLimit = 0; } catch (e) {} \
             try { Error.prepareStackTrace = function () { globalThis.hooked = 1; return 'x'; }; } catch (e) {}",
            vec![],
        )
        .unwrap();
        let out = run(
            &mut w,
            "const s = new Error('m').stack; seen = [Error.stackTraceLimit, typeof Error.prepareStackTrace]; h = typeof globalThis.hooked;",
            vec![("seen", json!(null)), ("h", json!(null))],
        )
        .unwrap();
        assert_eq!(out.values["seen"], fresh.values["seen"]);
        assert_eq!(out.values["h"], json!("undefined"));
        // Nor through the global object's prototype, which every name
        // lookup falls back to.
        run(&mut w, "__proto__ = {leaked: 7};", vec![]).unwrap();
        run(
            &mut w,
            "Object.setPrototypeOf(globalThis, {also: 8});",
            vec![],
        )
        .unwrap();
        let out = run(
            &mut w,
            "seen = [typeof leaked, typeof also];",
            vec![("seen", json!(null))],
        )
        .unwrap();
        assert_eq!(out.values["seen"], json!(["undefined", "undefined"]));
        // Declaring the same `let` again is not a redeclaration.
        run(&mut w, "let local = 9;", vec![]).unwrap();
    }

    #[test]
    fn a_thrown_string_is_the_message_and_other_values_their_json() {
        let mut w = worker();
        let e = run(&mut w, "throw 'a plain string';", vec![]).unwrap_err();
        assert_eq!(e.to_string(), "a plain string");
        let e = run(&mut w, "throw {code: 7};", vec![]).unwrap_err();
        assert_eq!(e.to_string(), r#"{"code":7}"#);
        let e = run(&mut w, "throw new TypeError('bad');", vec![]).unwrap_err();
        assert!(
            matches!(e, ScriptError::Thrown { ref name, ref message } if name == "TypeError" && message == "bad"),
            "{e:?}"
        );
    }

    #[test]
    fn instances_may_still_override_prototype_properties() {
        let mut w = worker();
        let out = run(
            &mut w,
            "const e = new Error('m'); e.name = 'Custom'; e.message = 'changed'; const o = {}; o.toString = () => 'o'; r = [e.name, e.message, String(o), String(new Error('z'))];",
            vec![("r", json!(null))],
        )
        .unwrap();
        assert_eq!(
            out.values["r"],
            json!(["Custom", "changed", "o", "Error: z"])
        );
    }

    #[test]
    fn promise_reactions_run_before_read_back_and_leave_nothing_queued() {
        let mut w = worker();
        let out = run(
            &mut w,
            "const f = async function () { return 2; }; f().then(v => { x = v; }); Promise.resolve(3).then(v => { y = v; });",
            vec![("x", json!(0)), ("y", json!(0))],
        )
        .unwrap();
        assert_eq!(
            (out.values["x"].clone(), out.values["y"].clone()),
            (json!(2), json!(3))
        );
        assert!(!w.rt.is_job_pending());
        drop(w); // QuickJS aborts here if anything leaked.
    }

    /// A heap filled by small allocations leaves no room for the error
    /// QuickJS makes of the failure, and it throws `null` instead: still
    /// out of memory, not an exception named "null".
    #[test]
    fn a_heap_filled_to_the_last_bytes_is_out_of_memory_not_null() {
        for src in [
            "var h = null; while (true) { h = {n: h}; }",
            "var h = null; while (true) { h = [h]; }",
            "var a = []; while (true) { a.push(new Array(100000).fill(7)); }",
            "var s = 'x'; while (true) { s = s + s; }",
            "function f() { var h = null; while (true) { h = {n: h}; } } f();",
        ] {
            eprintln!("DEBUG {src}");
            let mut w = ScriptWorker::new(ScriptLimits {
                timeout_ms: 10_000,
                memory_limit_mb: 4,
            })
            .unwrap();
            // Not in the process's counters, which other tests read.
            w.counts = false;
            assert_eq!(
                run(&mut w, src, vec![]).unwrap_err(),
                ScriptError::OutOfMemory(4),
                "{src}"
            );
            // The runtime is usable afterwards (the next context fits),
            // and `throw null` from a script with room left is the
            // exception it always was.
            let out = run(&mut w, "x = 1;", vec![("x", json!(0))]).unwrap();
            assert_eq!(out.values["x"], json!(1));
            assert_eq!(
                run(&mut w, "throw null;", vec![]).unwrap_err(),
                ScriptError::Exception("null".into())
            );
        }
    }

    #[test]
    fn log_keeps_a_hundred_lines_each_cut_at_a_character_boundary() {
        let mut w = worker();
        let out = run(
            &mut w,
            "log(1); log({a: 1}); log('\\u00e9'.repeat(3000)); for (var i = 0; i < 200; i++) log('n' + i);",
            vec![],
        )
        .unwrap();
        assert_eq!(out.logs.len(), 100);
        assert_eq!(
            (out.logs[0].as_str(), out.logs[1].as_str()),
            ("1", "[object Object]")
        );
        // 3,000 two-byte characters: cut to 4,096 bytes, 2,048 whole ones.
        assert_eq!(out.logs[2], "\u{e9}".repeat(2048));
        assert_eq!(out.logs[99], "n96");
        // The next evaluation starts with no lines, out of its reach.
        let out = run(&mut w, "log(typeof __baton_lines);", vec![]).unwrap();
        assert_eq!(out.logs, ["undefined"]);
        let out = run(&mut w, "x = 1;", vec![("x", json!(0))]).unwrap();
        assert!(out.logs.is_empty());
    }

    /// What the lockdown adds (the logger, the reset, the accessors) keeps
    /// nothing a script could write for the next evaluation to read, and
    /// a script that breaks its context does not break the next one.
    #[test]
    fn the_helpers_carry_nothing_between_evaluations() {
        let mut w = worker();
        let d = "const d = Object.getOwnPropertyDescriptor(Object.prototype, 'toString');";
        let write = format!("{d} try {{ d.get.prototype.x = 'left'; }} catch (e) {{}}");
        run(&mut w, &write, vec![]).unwrap();
        assert!(
            w.warm.is_some(),
            "the context is kept for the next evaluation"
        );
        let read = format!(
            "{d} seen = [typeof __baton_lines, typeof __baton_logger.prototype, String(d.get.prototype.x)];"
        );
        let out = run(&mut w, &read, vec![("seen", json!(null))]).unwrap();
        assert_eq!(
            out.values["seen"],
            json!(["undefined", "undefined", "undefined"])
        );
        // The global object made non-extensible: the next evaluation runs.
        run(&mut w, "Object.preventExtensions(globalThis);", vec![]).unwrap();
        let out = run(&mut w, "x = 1;", vec![("x", json!(0))]).unwrap();
        assert_eq!(out.values["x"], json!(1));
        // A getter the read-back runs queues a reaction: it never runs in
        // the next evaluation.
        run(
            &mut w,
            "Object.defineProperty(globalThis, 'v', { get() { Promise.resolve().then(() => { globalThis.leak = 'from before'; }); return 1; }, configurable: true });",
            vec![("v", json!(0))],
        )
        .unwrap();
        let out = run(&mut w, "x = 2;", vec![("x", json!(0)), ("leak", json!(0))]).unwrap();
        assert_eq!(out.values["leak"], json!(0));
    }

    /// A context discarded after its evaluation (a top-level `var` cannot
    /// be reset) gives back everything it held at once, `log` included.
    #[test]
    fn a_discarded_context_gives_its_whole_heap_back() {
        let mut w = worker();
        let used = |w: &ScriptWorker| w.rt.memory_usage().malloc_size;
        run(&mut w, "log('warm');", vec![]).unwrap();
        let before = used(&w);
        let out = run(
            &mut w,
            "var h = null; for (var i = 0; i < 20000; i++) { h = {n: h}; } log('built', 20000);",
            vec![],
        )
        .unwrap();
        assert_eq!(out.logs, ["built"]);
        assert!(w.warm.is_none(), "a top-level var costs the context");
        let after = used(&w);
        assert!(
            after < before + 256 * 1024,
            "{} bytes still held after the context was dropped",
            after - before
        );
    }

    #[test]
    fn a_timed_out_context_is_replaced_and_the_next_evaluation_runs() {
        let mut w = ScriptWorker::new(ScriptLimits {
            timeout_ms: 100,
            memory_limit_mb: 32,
        })
        .unwrap();
        assert_eq!(
            run(&mut w, "while (true) {}", vec![]).unwrap_err(),
            ScriptError::Timeout(100)
        );
        let out = run(&mut w, "x = 1;", vec![("x", json!(0))]).unwrap();
        assert_eq!(out.values["x"], json!(1));
    }
}
