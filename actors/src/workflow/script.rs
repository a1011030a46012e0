//! The script pool: JavaScript through QuickJS (rquickjs) on a
//! `SyncArbiter` of script threads, one QuickJS runtime per thread.
//!
//! Script evaluation is blocking CPU work and must never run on an actix
//! arbiter or an HTTP worker. Each evaluation gets a fresh context (no state
//! leaks between executions), a deadline enforced by QuickJS's interrupt
//! handler, and the runtime's memory limit, so `while(true){}` and memory
//! bombs fail their item with a clear error while the node keeps running.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use rquickjs::{Context, Ctx, Function, Module, Runtime};
use serde_json::{Map, Value};
use thiserror::Error;

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
    /// It threw.
    #[error("{0}")]
    Exception(String),
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
#[derive(Clone, Copy, Debug)]
pub struct ScriptLimits {
    /// Wall-clock limit per evaluation.
    pub timeout_ms: u64,
    /// Heap limit per runtime.
    pub memory_limit_mb: u64,
}

/// One script thread: a QuickJS runtime and its limits.
pub struct ScriptWorker {
    rt: Runtime,
    limits: ScriptLimits,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
}

impl ScriptWorker {
    fn new(limits: ScriptLimits) -> Result<ScriptWorker, ScriptError> {
        let rt = Runtime::new().map_err(|e| ScriptError::Engine(e.to_string()))?;
        rt.set_memory_limit((limits.memory_limit_mb as usize).saturating_mul(1024 * 1024));
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
        })
    }

    fn arm(&self) {
        self.interrupted.set(false);
        self.deadline.set(Some(
            Instant::now() + Duration::from_millis(self.limits.timeout_ms),
        ));
    }

    fn classify(&self, ctx: &Ctx<'_>, err: rquickjs::Error) -> ScriptError {
        if self.interrupted.get() {
            return ScriptError::Timeout(self.limits.timeout_ms);
        }
        let message = match err {
            rquickjs::Error::Exception => exception_text(ctx),
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

    fn evaluate(&mut self, msg: Evaluate) -> Result<Evaluated, ScriptError> {
        let context = Context::full(&self.rt).map_err(|e| ScriptError::Engine(e.to_string()))?;
        let logs: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
        self.arm();
        let result = context.with(|ctx| -> Result<Evaluated, ScriptError> {
            let globals = ctx.globals();
            let setup = || -> rquickjs::Result<()> {
                for (name, value) in &msg.globals {
                    globals.set(name.as_str(), ctx.json_parse(value.to_string())?)?;
                }
                let ctx_json = serde_json::to_string(&msg.context).unwrap_or_else(|_| "{}".into());
                globals.set("ctx", ctx.json_parse(ctx_json)?)?;
                let sink = logs.clone();
                let log = Function::new(ctx.clone(), move |line: rquickjs::Coerced<String>| {
                    let mut l = sink.borrow_mut();
                    if l.len() < MAX_LOG_LINES {
                        let mut s = line.0;
                        if s.len() > MAX_LOG_LINE {
                            let mut cut = MAX_LOG_LINE;
                            while !s.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            s.truncate(cut);
                        }
                        l.push(s);
                    }
                })?;
                globals.set("log", log)?;
                Ok(())
            };
            setup().map_err(|e| self.classify(&ctx, e))?;
            let mut out = Evaluated::default();
            match &msg.code {
                Code::Statements(src) => {
                    ctx.eval::<(), _>(src.as_bytes())
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
        });
        self.deadline.set(None);
        drop(context);
        self.rt.run_gc();
        let mut out = result?;
        out.logs = std::mem::take(&mut *logs.borrow_mut());
        Ok(out)
    }

    fn compile(&mut self, scripts: Vec<ScriptRef>) -> Vec<(String, String)> {
        let Ok(context) = Context::full(&self.rt) else {
            return vec![(String::new(), "script engine unavailable".into())];
        };
        self.arm();
        let problems = context.with(|ctx| {
            let mut problems = Vec::new();
            for (i, s) in scripts.into_iter().enumerate() {
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

fn exception_text(ctx: &Ctx<'_>) -> String {
    let v = ctx.catch();
    if let Some(obj) = v.as_object() {
        let name: Option<String> = obj.get("name").ok();
        let message: Option<String> = obj.get("message").ok();
        if let Some(message) = message {
            return match name {
                Some(n) if !n.is_empty() => format!("{n}: {message}"),
                _ => message,
            };
        }
    }
    match ctx.json_stringify(v.clone()) {
        Ok(Some(s)) => s.to_string().unwrap_or_else(|_| "exception".into()),
        _ => "exception".into(),
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
        self.evaluate(msg)
    }
}

impl Handler<Compile> for ScriptWorker {
    type Result = Vec<(String, String)>;

    fn handle(&mut self, msg: Compile, _: &mut SyncContext<Self>) -> Self::Result {
        self.compile(msg.0)
    }
}

/// The address of the script threads. Cheap to clone.
#[derive(Clone)]
pub struct ScriptPool {
    addr: Addr<ScriptWorker>,
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
        ScriptPool { addr }
    }

    /// Evaluates code on a script thread.
    pub async fn evaluate(&self, msg: Evaluate) -> Result<Evaluated, ScriptError> {
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
        match self.addr.send(Compile(scripts)).await {
            Ok(p) => p,
            Err(e) => vec![(String::new(), format!("script engine unavailable: {e}"))],
        }
    }
}
