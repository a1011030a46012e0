//! From a JSON or YAML document to a [`Definition`], reporting every
//! problem at once, each with its path (`items.check.then`).
//!
//! Structure is checked here; whether scripts compile is checked by the
//! caller with the script pool, from the [`ScriptRef`]s this returns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use serde_json::Value;

use super::model::{Definition, Item, ItemKind, Retry, ValueType};
use super::raw::Raw;
use super::script::ScriptRef;

/// One thing wrong with a definition or a request, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where: a dotted path such as `items.check.then`; a key that is empty
    /// or holds `.` or `[` is written as a JSON string in brackets
    /// (`variables["a.b"]`), an array element by its index (`x[2]`), and the
    /// whole document is [`ROOT_PATH`]. Definition problems always name a
    /// path that exists in the document, or the missing key.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The path of the whole document, for a problem that is not inside it
/// (the text does not parse, or is not an object).
pub const ROOT_PATH: &str = "$";

/// Every item type the format has (the engine may run fewer:
/// `SUPPORTED_ITEM_TYPES`).
pub const ITEM_TYPES: &[&str] = &[
    "task",
    "decision",
    "action",
    "workflow",
    "foreach",
    "timer",
    "signal",
    "interaction",
    "end",
];

/// `path` extended by the object key `key` (see [`Problem::path`]).
pub fn join_path(path: &str, key: &str) -> String {
    // A key spelled like the root (`$`) is quoted, or it would read as the root.
    let plain = !key.is_empty() && key != ROOT_PATH && !key.contains(['.', '[']);
    match (path.is_empty() || path == ROOT_PATH, plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (root, false) => {
            let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
            format!("{}[{quoted}]", if root { "" } else { path })
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The text format of a definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// What the parser needs to know about the engine.
pub struct ParseOptions<'a> {
    /// True when an action of this name is registered.
    pub known_action: &'a dyn Fn(&str) -> bool,
    /// Item types this engine runs.
    pub supported_types: &'a [&'a str],
}

/// The outcome of parsing: a definition when the structure is sound, every
/// problem found, and the scripts to compile.
#[derive(Debug)]
pub struct Parsed {
    /// The definition, if its structure is sound.
    pub definition: Option<Definition>,
    /// Every structural problem.
    pub problems: Vec<Problem>,
    /// Every script and expression, with its path.
    pub scripts: Vec<ScriptRef>,
}

/// Parses and checks a definition's structure.
pub fn parse_definition(text: &[u8], format: SourceFormat, opts: &ParseOptions<'_>) -> Parsed {
    let raw: Result<Raw, Problem> = match format {
        SourceFormat::Json => {
            let mut de = serde_json::Deserializer::from_slice(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| unparsed("invalid JSON", e))
                .and_then(|raw| {
                    // Text after the document.
                    de.end()
                        .map(|()| raw)
                        .map_err(|e| Problem::new(ROOT_PATH, format!("invalid JSON: {e}")))
                })
        }
        SourceFormat::Yaml => {
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_slice(text))
                .map_err(|e| unparsed("invalid YAML", e))
        }
    };
    let mut p = Parser {
        problems: Vec::new(),
        scripts: Vec::new(),
        opts,
    };
    let definition = match raw {
        Ok(raw) => p.definition(&raw),
        Err(problem) => {
            p.problems.push(problem);
            None
        }
    };
    let definition = if p.problems.is_empty() {
        definition
    } else {
        None
    };
    Parsed {
        definition,
        problems: p.problems,
        scripts: p.scripts,
    }
}

/// A document that does not parse, at the place where parsing stopped: the
/// deepest key read so far (it exists in the text), or the whole document.
fn unparsed<E: std::fmt::Display>(what: &str, e: serde_path_to_error::Error<E>) -> Problem {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in e.path().iter() {
        match segment {
            Segment::Map { key } => path = join_path(&path, key),
            Segment::Seq { index } => path = format!("{path}[{index}]"),
            Segment::Enum { .. } | Segment::Unknown => break,
        }
    }
    if path.is_empty() {
        path = ROOT_PATH.to_owned();
    }
    Problem::new(path, format!("{what}: {}", e.inner()))
}

/// Checks a start request's inputs against the declared ones: every
/// declared input present with its type, nothing undeclared.
pub fn check_inputs(def: &Definition, inputs: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(map) = inputs.as_object() else {
        return vec![Problem::new(
            "inputs",
            format!("must be an object, not {}", json_type(inputs)),
        )];
    };
    for (name, ty) in &def.inputs {
        match map.get(name) {
            None => problems.push(Problem::new(
                join_path("inputs", name),
                format!("missing (declared as {})", ty.name()),
            )),
            Some(v) if !ty.accepts(v) => problems.push(Problem::new(
                join_path("inputs", name),
                format!("expected {}, got {}", ty.name(), json_type(v)),
            )),
            Some(_) => {}
        }
    }
    for name in map.keys() {
        if !def.inputs.contains_key(name) {
            problems.push(Problem::new(
                join_path("inputs", name),
                format!("not an input of workflow {}", def.id),
            ));
        }
    }
    problems
}

/// The JSON type of a value, as problems and errors name it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a declared input, output or variable may not take this name:
/// one of [`RESERVED_NAMES`], or any starting `__baton_` (the script
/// helpers' prefix).
fn reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name) || name.starts_with("__baton_")
}

/// Names a declared input, output or variable may not take: what scripts
/// already see (`ctx`, `log`) and JavaScript's own globals, which are
/// read-only in Baton's script contexts.
const RESERVED_NAMES: &[&str] = &[
    "ctx",
    "log",
    "inputs",
    "outputs",
    "variables",
    "globalThis",
    "undefined",
    "NaN",
    "Infinity",
    "eval",
    "Object",
    "Function",
    "Array",
    "Number",
    "Boolean",
    "String",
    "Symbol",
    "Date",
    "RegExp",
    "Promise",
    "Map",
    "Set",
    "WeakMap",
    "WeakSet",
    "JSON",
    "Math",
    "Reflect",
    "Proxy",
    "BigInt",
    "Error",
    "AggregateError",
    "EvalError",
    "RangeError",
    "ReferenceError",
    "SyntaxError",
    "TypeError",
    "URIError",
    "parseInt",
    "parseFloat",
    "isNaN",
    "isFinite",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "unescape",
];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

struct Parser<'a> {
    problems: Vec<Problem>,
    scripts: Vec<ScriptRef>,
    opts: &'a ParseOptions<'a>,
}

/// Field access on an object node, remembering which keys were read so
/// that unknown keys can be reported.
struct Fields<'r> {
    path: String,
    entries: &'r [(String, Raw)],
    used: BTreeSet<&'static str>,
}

impl<'r> Fields<'r> {
    fn get(&mut self, key: &'static str) -> Option<&'r Raw> {
        self.used.insert(key);
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    fn at(&self, key: &str) -> String {
        join_path(&self.path, key)
    }
}

impl Parser<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let mut path = path.into();
        if path.is_empty() {
            path = ROOT_PATH.to_owned();
        }
        self.problems.push(Problem::new(path, message));
    }

    fn object<'r>(&mut self, path: &str, raw: &'r Raw) -> Option<Fields<'r>> {
        match raw {
            Raw::Object(entries) => {
                let mut seen = BTreeSet::new();
                for (k, _) in entries {
                    if !seen.insert(k.as_str()) {
                        self.problem(join_path(path, k), "duplicate key");
                    }
                }
                Some(Fields {
                    path: path.to_owned(),
                    entries,
                    used: BTreeSet::new(),
                })
            }
            other => {
                self.problem(
                    path,
                    format!("must be an object, not {}", other.type_name()),
                );
                None
            }
        }
    }

    fn finish(&mut self, f: &Fields<'_>) {
        for (k, _) in f.entries {
            if !f.used.contains(k.as_str()) {
                self.problem(f.at(k), "unknown field");
            }
        }
    }

    fn string(&mut self, f: &mut Fields<'_>, key: &'static str, required: bool) -> Option<String> {
        match f.get(key) {
            Some(Raw::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    f.at(key),
                    format!("must be a string, not {}", other.type_name()),
                );
                None
            }
            None => {
                if required {
                    self.problem(f.at(key), "missing");
                }
                None
            }
        }
    }

    fn uint(&mut self, f: &mut Fields<'_>, key: &'static str) -> Option<u64> {
        match f.get(key) {
            Some(Raw::Number(n)) => match n.as_u64() {
                Some(v) => Some(v),
                None => {
                    self.problem(f.at(key), "must be a non-negative integer");
                    None
                }
            },
            Some(other) => {
                self.problem(
                    f.at(key),
                    format!("must be a number, not {}", other.type_name()),
                );
                None
            }
            None => None,
        }
    }

    fn boolean(&mut self, f: &mut Fields<'_>, key: &'static str) -> bool {
        match f.get(key) {
            Some(Raw::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    f.at(key),
                    format!("must be true or false, not {}", other.type_name()),
                );
                false
            }
            None => false,
        }
    }

    fn string_map(&mut self, f: &mut Fields<'_>, key: &'static str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(raw) = f.get(key) else { return out };
        let path = f.at(key);
        let Some(m) = self.object(&path, raw) else {
            return out;
        };
        for (k, v) in m.entries {
            match v {
                Raw::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                other => self.problem(
                    m.at(k),
                    format!("must be a string, not {}", other.type_name()),
                ),
            }
        }
        out
    }

    fn types(&mut self, f: &mut Fields<'_>, key: &'static str) -> BTreeMap<String, ValueType> {
        let mut out = BTreeMap::new();
        let Some(raw) = f.get(key) else { return out };
        let path = f.at(key);
        let Some(m) = self.object(&path, raw) else {
            return out;
        };
        for (k, v) in m.entries {
            if !is_identifier(k) {
                self.problem(
                    m.at(k),
                    "must be a JavaScript identifier (letters, digits, _ and $)",
                );
            } else if reserved(k) {
                self.problem(m.at(k), format!("`{k}` is reserved"));
            }
            match v {
                Raw::String(s) => match ValueType::from_name(s) {
                    Some(t) => {
                        out.insert(k.clone(), t);
                    }
                    None => self.problem(
                        m.at(k),
                        format!("unknown type `{s}` (expected string, number, boolean, object, array or any)"),
                    ),
                },
                other => self.problem(m.at(k), format!("must be a type name, not {}", other.type_name())),
            }
        }
        out
    }

    fn script(&mut self, path: String, source: &str, expression: bool) {
        self.scripts.push(ScriptRef {
            path,
            source: source.to_owned(),
            expression,
        });
    }

    fn definition(&mut self, raw: &Raw) -> Option<Definition> {
        let mut f = self.object("", raw)?;
        let id = self.string(&mut f, "id", true);
        if let Some(id) = &id {
            if !is_valid_id(id) {
                self.problem(
                    "id",
                    "must be 1 to 128 characters of letters, digits, `_`, `.` and `-`",
                );
            }
        }
        let name = self.string(&mut f, "name", false);
        let inputs = self.types(&mut f, "inputs");
        let outputs = self.types(&mut f, "outputs");
        let mut variables = serde_json::Map::new();
        if let Some(raw) = f.get("variables") {
            if let Some(m) = self.object("variables", raw) {
                for (k, v) in m.entries {
                    if !is_identifier(k) {
                        self.problem(
                            m.at(k),
                            "must be a JavaScript identifier (letters, digits, _ and $)",
                        );
                    } else if reserved(k) {
                        self.problem(m.at(k), format!("`{k}` is reserved"));
                    } else if inputs.contains_key(k) {
                        self.problem(m.at(k), "is also an input; inputs are read-only");
                    }
                    variables.insert(k.clone(), v.to_json());
                }
            }
        }
        let start = self.string(&mut f, "start", true);
        let on_error = self.string(&mut f, "on_error", false);
        let mut items = BTreeMap::new();
        // Every item id, including those whose own fields are broken, so
        // that references to them are not reported as dangling.
        let mut ids = BTreeSet::new();
        let mut broken_targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match f.get("items") {
            None => self.problem("items", "missing"),
            Some(raw) => {
                if let Some(m) = self.object("items", raw) {
                    if m.entries.is_empty() {
                        self.problem("items", "must have at least one item");
                    }
                    for (k, v) in m.entries {
                        ids.insert(k.clone());
                        let path = m.at(k);
                        if !is_valid_id(k) {
                            self.problem(path.clone(), "item ids are 1 to 128 characters of letters, digits, `_`, `.` and `-`");
                        }
                        match self.item(&path, v) {
                            Some(item) => {
                                items.insert(k.clone(), item);
                            }
                            // A broken item's targets are unknown: any id
                            // one of its fields names counts as reached, so
                            // reachability can still be checked.
                            None => {
                                if let Raw::Object(fields) = v {
                                    let named = fields.iter().filter_map(|(_, v)| match v {
                                        Raw::String(t) => Some(t.clone()),
                                        _ => None,
                                    });
                                    broken_targets.insert(k.clone(), named.collect::<Vec<_>>());
                                }
                            }
                        }
                    }
                }
            }
        }
        self.finish(&f);

        // Targets must exist; every item must be reachable from the start.
        let exists = |t: &str| ids.contains(t);
        if let Some(s) = &start {
            if !items.is_empty() && !exists(s) {
                self.problem("start", format!("no item `{s}`"));
            }
        }
        if let Some(e) = &on_error {
            if !exists(e) {
                self.problem("on_error", format!("no item `{e}`"));
            }
        }
        let mut dangling = Vec::new();
        for (id, item) in &items {
            for (field, target) in item.kind.targets() {
                if !exists(target) {
                    dangling.push(Problem::new(
                        join_path(&join_path("items", id), field),
                        format!("no item `{target}`"),
                    ));
                }
            }
            if let Some(t) = &item.on_error {
                if !exists(t) {
                    dangling.push(Problem::new(
                        join_path(&join_path("items", id), "on_error"),
                        format!("no item `{t}`"),
                    ));
                }
            }
        }
        self.problems.extend(dangling);
        // Reachability, with a broken item reaching whatever it names.
        if let Some(s) = start.as_deref().filter(|s| exists(s)) {
            let mut seen = BTreeSet::from([s.to_owned()]);
            let mut queue = VecDeque::from([s.to_owned()]);
            if let Some(e) = on_error.as_deref().filter(|e| exists(e)) {
                if seen.insert(e.to_owned()) {
                    queue.push_back(e.to_owned());
                }
            }
            while let Some(id) = queue.pop_front() {
                let next: Vec<&str> = match items.get(&id) {
                    Some(item) => {
                        let mut next: Vec<&str> =
                            item.kind.targets().into_iter().map(|(_, t)| t).collect();
                        next.extend(item.on_error.as_deref());
                        next
                    }
                    None => broken_targets
                        .get(&id)
                        .map(|t| t.iter().map(String::as_str).collect())
                        .unwrap_or_default(),
                };
                for t in next {
                    if exists(t) && seen.insert(t.to_owned()) {
                        queue.push_back(t.to_owned());
                    }
                }
            }
            for id in items.keys() {
                if !seen.contains(id) {
                    self.problem(join_path("items", id), "unreachable from the start item");
                }
            }
        }
        if !items
            .values()
            .any(|i| matches!(i.kind, ItemKind::End { .. }))
            && !items.is_empty()
        {
            self.problem("items", "needs at least one `end` item");
        }
        let id = id?;
        Some(Definition {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            inputs,
            outputs,
            variables,
            start: start?,
            on_error,
            items,
        })
    }

    fn item(&mut self, path: &str, raw: &Raw) -> Option<Item> {
        let mut f = self.object(path, raw)?;
        let ty = self.string(&mut f, "type", true);
        let on_error = self.string(&mut f, "on_error", false);
        let retry = match f.get("retry") {
            None => None,
            Some(raw) => {
                let rpath = f.at("retry");
                self.object(&rpath, raw).and_then(|mut r| {
                    let max = self.uint(&mut r, "max_attempts");
                    let backoff = self.uint(&mut r, "backoff_ms").unwrap_or(0);
                    self.finish(&r);
                    match max {
                        Some(m) if (1..=1000).contains(&m) => Some(Retry {
                            max_attempts: m as u32,
                            backoff_ms: backoff,
                        }),
                        Some(_) => {
                            self.problem(
                                join_path(&rpath, "max_attempts"),
                                "must be between 1 and 1000",
                            );
                            None
                        }
                        None => {
                            self.problem(join_path(&rpath, "max_attempts"), "missing");
                            None
                        }
                    }
                })
            }
        };
        let ty = ty?;
        let at = |k: &str| join_path(path, k);
        if !ITEM_TYPES.contains(&ty.as_str()) {
            self.problem(
                at("type"),
                format!(
                    "unknown item type `{ty}` (expected one of {})",
                    ITEM_TYPES.join(", ")
                ),
            );
            return None;
        }
        // The kind's own fields; a missing one ends only `kind`, so the
        // unknown fields of the item are still reported (`nxt` beside a
        // missing `next`).
        let kind = self.kind(path, &ty, &mut f);
        if let Some(k) = &kind {
            if !self.opts.supported_types.contains(&k.type_name()) {
                self.problem(
                    at("type"),
                    format!(
                        "item type `{}` is not supported by this version of Baton yet",
                        k.type_name()
                    ),
                );
            }
        }
        self.finish(&f);
        Some(Item {
            kind: kind?,
            on_error,
            retry,
        })
    }

    fn kind(&mut self, path: &str, ty: &str, f: &mut Fields<'_>) -> Option<ItemKind> {
        let at = |k: &str| join_path(path, k);
        match ty {
            "task" => {
                let script = self.string(f, "script", true);
                let next = self.string(f, "next", true);
                if let Some(s) = &script {
                    self.script(at("script"), s, false);
                }
                Some(ItemKind::Task {
                    script: script?,
                    next: next?,
                })
            }
            "decision" => {
                let condition = self.string(f, "condition", true);
                let then = self.string(f, "then", true);
                let otherwise = self.string(f, "else", true);
                if let Some(c) = &condition {
                    self.script(at("condition"), c, true);
                }
                Some(ItemKind::Decision {
                    condition: condition?,
                    then: then?,
                    otherwise: otherwise?,
                })
            }
            "action" => {
                let action = self.string(f, "action", true);
                let inputs = self.string_map(f, "inputs");
                let outputs = self.string_map(f, "outputs");
                let next = self.string(f, "next", true);
                if let Some(a) = &action {
                    if !(self.opts.known_action)(a) {
                        self.problem(at("action"), format!("no action named `{a}` is registered"));
                    }
                }
                for (k, e) in &inputs {
                    self.script(join_path(&at("inputs"), k), e, true);
                }
                self.check_variables(&at("outputs"), outputs.keys());
                Some(ItemKind::Action {
                    action: action?,
                    inputs,
                    outputs,
                    next: next?,
                })
            }
            "workflow" => {
                let workflow = self.string(f, "workflow", true);
                let inputs = self.string_map(f, "inputs");
                let outputs = self.string_map(f, "outputs");
                let is_async = self.boolean(f, "async");
                let next = self.string(f, "next", true);
                for (k, e) in &inputs {
                    self.script(join_path(&at("inputs"), k), e, true);
                }
                self.check_variables(&at("outputs"), outputs.keys());
                Some(ItemKind::Workflow {
                    workflow: workflow?,
                    inputs,
                    outputs,
                    is_async,
                    next: next?,
                })
            }
            "foreach" => {
                let over = self.string(f, "over", true);
                let element = self.string(f, "as", true);
                let workflow = self.string(f, "workflow", true);
                let inputs = self.string_map(f, "inputs");
                let collect = self.string_map(f, "collect");
                let parallel = self.boolean(f, "parallel");
                let next = self.string(f, "next", true);
                for (k, e) in &inputs {
                    self.script(join_path(&at("inputs"), k), e, true);
                }
                self.check_variables(&at("collect"), collect.keys());
                Some(ItemKind::Foreach {
                    over: over?,
                    element: element?,
                    workflow: workflow?,
                    inputs,
                    collect,
                    parallel,
                    next: next?,
                })
            }
            "timer" => {
                let for_ms = self.uint(f, "for_ms");
                let until = self.string(f, "until", false);
                let next = self.string(f, "next", true);
                match (&for_ms, &until) {
                    (Some(_), Some(_)) => self.problem(path, "give `for_ms` or `until`, not both"),
                    (None, None) => self.problem(path, "needs `for_ms` or `until`"),
                    (None, Some(u)) => self.script(at("until"), u, true),
                    _ => {}
                }
                Some(ItemKind::Timer {
                    for_ms,
                    until,
                    next: next?,
                })
            }
            "signal" => {
                let name = self.string(f, "name", true);
                let store = self.string(f, "store", false);
                let timeout_ms = self.uint(f, "timeout_ms");
                let next = self.string(f, "next", true);
                if store.as_deref().is_some_and(|s| !is_identifier(s)) {
                    self.problem(
                        at("store"),
                        "must name a variable (a JavaScript identifier)",
                    );
                }
                Some(ItemKind::Signal {
                    name: name?,
                    store,
                    timeout_ms,
                    next: next?,
                })
            }
            "interaction" => {
                let inputs = self.types(f, "inputs");
                let timeout_ms = self.uint(f, "timeout_ms");
                let next = self.string(f, "next", true);
                Some(ItemKind::Interaction {
                    inputs,
                    timeout_ms,
                    next: next?,
                })
            }
            "end" => {
                let fail = self.string(f, "fail", false);
                if let Some(e) = &fail {
                    self.script(at("fail"), e, true);
                }
                if f.get("on_error").is_some() {
                    self.problem(at("on_error"), "an `end` item cannot have `on_error`");
                }
                Some(ItemKind::End { fail })
            }
            _ => None,
        }
    }

    fn check_variables<'s>(&mut self, path: &str, names: impl Iterator<Item = &'s String>) {
        for n in names {
            if !is_identifier(n) {
                self.problem(
                    join_path(path, n),
                    "must name a variable (a JavaScript identifier)",
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        let opts = ParseOptions {
            known_action: &|n| n == "log",
            supported_types: &["task", "decision", "action", "end"],
        };
        parse_definition(text.as_bytes(), SourceFormat::Json, &opts)
    }

    fn paths(p: &Parsed) -> Vec<String> {
        p.problems.iter().map(|p| p.path.clone()).collect()
    }

    #[test]
    fn a_sound_definition_parses_and_lists_its_scripts() {
        let p = parse(
            r#"{"id":"w","inputs":{"n":"number"},"start":"a","items":{
            "a":{"type":"task","script":"x = n;","next":"b"},
            "b":{"type":"decision","condition":"n > 1","then":"c","else":"c"},
            "c":{"type":"action","action":"log","inputs":{"message":"'hi'"},"next":"d"},
            "d":{"type":"end"}}}"#,
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let d = p.definition.unwrap();
        assert_eq!(d.name, "w");
        let scripts: Vec<&str> = p.scripts.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "items.a.script",
                "items.b.condition",
                "items.c.inputs.message"
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = parse(
            r#"{"id":"w","start":"nowhere","extra":1,"items":{
            "a":{"type":"task","next":"b"},
            "b":{"type":"decision","condition":"1","then":"a"},
            "c":{"type":"end","on_error":"a"},
            "d":{"type":"task","script":"x = 1;","next":"zz"}}}"#,
        );
        let got = paths(&p);
        assert_eq!(
            got.iter().filter(|p| *p == "items.c.on_error").count(),
            1,
            "{got:?}"
        );
        for want in [
            "start",
            "extra",
            "items.a.script",
            "items.d.next",
            "items.b.else",
            "items.c.on_error",
        ] {
            assert!(
                got.contains(&want.to_owned()),
                "{want} missing from {got:?}"
            );
        }
        assert!(p.definition.is_none());
    }

    /// Every problem at once (issue 11 item 9): an unknown field beside the
    /// missing one it was meant to be, a dangling `next` and an unreachable
    /// item are all reported, each with its path, even though other items
    /// are broken.
    #[test]
    fn one_of_each_problem_is_reported_together() {
        let p = parse(
            r#"{"id":"w","start":"a","items":{
            "a":{"type":"task","script":"1;","nxt":"done"},
            "b":{"type":"task","script":"1;","next":"nowhere"},
            "c":{"type":"decision","condition":"true","then":"e"},
            "lost":{"type":"end"},
            "e":{"type":"end"}}}"#,
        );
        let got = paths(&p);
        for want in [
            "items.a.nxt",
            "items.a.next",
            "items.b.next",
            "items.c.else",
            "items.lost",
        ] {
            assert!(
                got.contains(&want.to_owned()),
                "{want} missing from {got:?}"
            );
        }
        let lost = p.problems.iter().find(|x| x.path == "items.lost").unwrap();
        assert!(lost.message.contains("unreachable"), "{lost:?}");
        let dangling = p
            .problems
            .iter()
            .find(|x| x.path == "items.b.next")
            .unwrap();
        assert!(
            dangling.message.contains("no item `nowhere`"),
            "{dangling:?}"
        );
    }

    /// Found by the fuzzer in CI: a key named `$` read as the root, so the
    /// problem inside it named a path the document does not have.
    #[test]
    fn a_key_named_like_the_root_is_quoted_in_paths() {
        assert_eq!(join_path(ROOT_PATH, "$"), "[\"$\"]");
        assert_eq!(join_path(&join_path(ROOT_PATH, "$"), "id"), "[\"$\"].id");
        let p = parse(r#"{"$":{"id":{"id":1e999}}}"#);
        assert!(
            p.problems.iter().all(|x| x.path != "id.id"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn duplicate_keys_unreachable_items_and_reserved_names() {
        let p = parse(
            r#"{"id":"w","variables":{"ctx":1,"n":2,"__baton_logger":3,"__baton_next":4},"inputs":{"n":"number"},"start":"a","items":{
            "a":{"type":"end"},"a":{"type":"end"},"lost":{"type":"end"}}}"#,
        );
        let got = paths(&p);
        for want in [
            "variables.ctx",
            "variables.n",
            "variables.__baton_logger",
            "variables.__baton_next",
            "items.a",
            "items.lost",
        ] {
            assert!(
                got.contains(&want.to_owned()),
                "{want} missing from {got:?}"
            );
        }
    }

    #[test]
    fn start_inputs_are_checked_against_declared_types() {
        let p = parse(
            r#"{"id":"w","inputs":{"n":"number","tags":"array"},"start":"e","items":{"e":{"type":"end"}}}"#,
        );
        let d = p.definition.unwrap();
        assert!(check_inputs(&d, &serde_json::json!({"n": 1, "tags": []})).is_empty());
        let problems = check_inputs(&d, &serde_json::json!({"n": "1", "x": 0}));
        let got: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(got, ["inputs.n", "inputs.tags", "inputs.x"]);
    }

    // Found by `fuzz::mutated_definitions_never_panic_and_every_problem_has_a_path`:
    // the problem named `items.s.store.<the store's value>`, which is not
    // in the document.
    #[test]
    fn a_signal_store_that_is_not_a_variable_is_reported_at_store() {
        let p = parse(
            r#"{"id":"w","start":"s","items":{
            "s":{"type":"signal","name":"go","store":"a.b","next":"e"},"e":{"type":"end"}}}"#,
        );
        let bad: Vec<&Problem> = p
            .problems
            .iter()
            .filter(|p| p.message.contains("must name a variable"))
            .collect();
        assert_eq!(bad.len(), 1, "{:?}", p.problems);
        assert_eq!(bad[0].path, "items.s.store");
    }

    // Found by `fuzz::mutated_definitions_never_panic_and_every_problem_has_a_path`:
    // without serde_json's `float_roundtrip`, a number read back from the
    // canonical form (what the store keeps) could differ in its last digit.
    #[test]
    fn numbers_keep_their_exact_value_through_the_canonical_form() {
        for n in [
            "-1.5738605634979003e299",
            "-1.5738605634979005e299",
            "1.7976931348623157e308",
            "5e-324",
            "0.30000000000000004",
        ] {
            let text = format!(
                r#"{{"id":"w","variables":{{"x":{n}}},"start":"e","items":{{"e":{{"type":"end"}}}}}}"#
            );
            let d = parse(&text).definition.unwrap();
            let again = parse(&d.to_json_string()).definition.unwrap();
            assert_eq!(again.variables["x"], d.variables["x"], "{n}");
            let exact: f64 = n.parse().unwrap();
            assert_eq!(d.variables["x"].as_f64(), Some(exact), "{n}");
        }
    }

    // Pathless problems (the property in `fuzz` requires a path that is in
    // the document): text that does not parse and a root that is not an
    // object had the path "", and keys that are empty or dotted gave paths
    // naming another place (`items.a.b` for the item `a.b`).
    #[test]
    fn every_problem_names_a_place_in_the_document() {
        let at = |text: &str| paths(&parse(text));
        assert_eq!(at(""), ["$"]);
        assert_eq!(at("[1, 2]"), ["$"]);
        assert_eq!(at(r#"{"id": "w"} trailing"#), ["$"]);
        assert_eq!(
            at(r#"{"id": "w", "items": {"a": {"type": "end",}}}"#),
            ["items.a"]
        );
        assert_eq!(
            at(r#"{"variables": {"x": [1, 1e999]}}"#),
            ["variables.x[1]"]
        );
        let got = at(
            r#"{"": 1, "id": "w", "start": "a.b", "items": {"a.b": {"type": "end"}, "": {"type": "end"}}}"#,
        );
        for want in [r#"[""]"#, r#"items[""]"#] {
            assert!(
                got.contains(&want.to_owned()),
                "{want} missing from {got:?}"
            );
        }
        assert!(!got.iter().any(|p| p.starts_with("items.a")), "{got:?}");
        let yaml = |text: &str| {
            let opts = ParseOptions {
                known_action: &|_| true,
                supported_types: &["end"],
            };
            paths(&parse_definition(
                text.as_bytes(),
                SourceFormat::Yaml,
                &opts,
            ))
        };
        assert_eq!(yaml("id: [unclosed"), ["id"]);
        assert_eq!(yaml("variables:\n  x: .nan\n"), ["variables.x"]);
        assert_eq!(yaml("items: !custom {a: 1}\n"), ["items"]);
    }

    #[test]
    fn yaml_parses_like_json() {
        let opts = ParseOptions {
            known_action: &|_| true,
            supported_types: &["task", "end"],
        };
        let y = "id: w\nstart: a\nitems:\n  a: {type: task, script: 'x = 1;', next: e}\n  e: {type: end}\n";
        let p = parse_definition(y.as_bytes(), SourceFormat::Yaml, &opts);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }
}
