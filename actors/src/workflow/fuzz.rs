//! Property tests (proptest) of everything a client can send into a
//! definition: generated JSON and YAML documents, arbitrary and mutated
//! from a sound definition, must never panic the parser, and every problem
//! it reports must name a path that exists in the document (or the key
//! that is missing there); and random scripts with random JSON globals
//! must give a value or a `ScriptError`, never panic, and leave nothing
//! behind for the next evaluation.
//!
//! Case counts are kept small so that the whole file runs in seconds in a
//! debug build (`BATON_FUZZ_CASES=20000` runs a longer hunt); failures are
//! not persisted to files: a failing input is turned into a regression
//! unit test beside the code it broke.

use std::cell::RefCell;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use super::parse::{parse_definition, ParseOptions, Parsed, SourceFormat, ROOT_PATH};
use super::script::tests_support::{self, worker_with_timeout, ScriptWorker};
use super::script::{Code, Evaluate, ScriptContext, ScriptError, ScriptRef};

/// `cases` cases, or `BATON_FUZZ_CASES` for a longer hunt.
fn config(cases: u32) -> Config {
    let cases = std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A generated document: like `Raw`, but numbers keep their literal text
/// (so huge and odd numbers can be written) and keys may repeat.
#[derive(Clone, Debug)]
enum Doc {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Doc>),
    Obj(Vec<(String, Doc)>),
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Doc {
    fn json(&self, out: &mut String) {
        match self {
            Doc::Null => out.push_str("null"),
            Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Doc::Num(n) => out.push_str(n),
            Doc::Str(s) => out.push_str(&quote(s)),
            Doc::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.json(out);
                }
                out.push(']');
            }
            Doc::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(k));
                    out.push(':');
                    v.json(out);
                }
                out.push('}');
            }
        }
    }

    fn to_json_text(&self) -> String {
        let mut s = String::new();
        self.json(&mut s);
        s
    }

    /// Block-style YAML (flow style is the JSON text itself).
    fn yaml(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Doc::Arr(a) if !a.is_empty() => {
                for v in a {
                    out.push_str(&pad);
                    out.push('-');
                    v.yaml_value(indent + 2, out);
                }
            }
            Doc::Obj(o) if !o.is_empty() => {
                for (k, v) in o {
                    out.push_str(&pad);
                    out.push_str(&quote(k));
                    out.push(':');
                    v.yaml_value(indent + 2, out);
                }
            }
            other => {
                out.push_str(&pad);
                out.push_str(&other.to_json_text());
                out.push('\n');
            }
        }
    }

    fn yaml_value(&self, indent: usize, out: &mut String) {
        match self {
            Doc::Arr(a) if !a.is_empty() => {
                out.push('\n');
                self.yaml(indent, out);
            }
            Doc::Obj(o) if !o.is_empty() => {
                out.push('\n');
                self.yaml(indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&other.to_json_text());
                out.push('\n');
            }
        }
    }

    fn to_yaml_text(&self) -> String {
        let mut s = String::new();
        self.yaml(0, &mut s);
        s
    }

    /// Every node, by its path of child indexes.
    fn nodes(&self, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        out.push(at.clone());
        let children: Vec<&Doc> = match self {
            Doc::Arr(a) => a.iter().collect(),
            Doc::Obj(o) => o.iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        };
        for (i, c) in children.into_iter().enumerate() {
            at.push(i);
            c.nodes(at, out);
            at.pop();
        }
    }

    fn node(&self, at: &[usize]) -> &Doc {
        match (at.split_first(), self) {
            (Some((&i, rest)), Doc::Arr(a)) => a[i].node(rest),
            (Some((&i, rest)), Doc::Obj(o)) => o[i].1.node(rest),
            _ => self,
        }
    }

    fn node_mut(&mut self, at: &[usize]) -> &mut Doc {
        match at.split_first() {
            None => self,
            Some((&i, rest)) => match self {
                Doc::Arr(a) => a[i].node_mut(rest),
                Doc::Obj(o) => o[i].1.node_mut(rest),
                _ => self,
            },
        }
    }
}

/// A path segment: an object key or an array index.
#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits a problem path into its segments, or `None` when it is not
/// written as `Problem::path` says.
fn segments(path: &str) -> Option<Vec<Seg>> {
    if path == ROOT_PATH {
        return Some(Vec::new());
    }
    if path.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = path;
    loop {
        if let Some(r) = rest.strip_prefix('[') {
            if r.starts_with('"') {
                let mut it = serde_json::Deserializer::from_str(r).into_iter::<String>();
                let key = it.next()?.ok()?;
                rest = r[it.byte_offset()..].strip_prefix(']')?;
                out.push(Seg::Key(key));
            } else {
                let end = r.find(']')?;
                out.push(Seg::Index(r[..end].parse().ok()?));
                rest = &r[end + 1..];
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            out.push(Seg::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
        if rest.is_empty() {
            return Some(out);
        }
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            if rest.is_empty() || rest.starts_with(['.', '[']) {
                return None;
            }
        } else if !rest.starts_with('[') {
            return None;
        }
    }
}

/// True when `segs` leads to a node of `doc` (through any of a repeated
/// key's values), or its last segment is a key missing from an object
/// that exists.
fn resolves(doc: &Doc, segs: &[Seg]) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return true;
    };
    match (doc, first) {
        (Doc::Obj(o), Seg::Key(k)) => {
            let mut found = o.iter().filter(|(key, _)| key == k).peekable();
            if found.peek().is_none() {
                return rest.is_empty();
            }
            found.any(|(_, v)| resolves(v, rest))
        }
        (Doc::Arr(a), Seg::Index(i)) => a.get(*i).is_some_and(|v| resolves(v, rest)),
        _ => false,
    }
}

fn opts_all() -> ParseOptions<'static> {
    ParseOptions {
        known_action: &|n| n == "log" || n == "sleep",
        supported_types: super::SUPPORTED_ITEM_TYPES,
    }
}

/// Checks what must hold for any parse of `doc`'s text.
fn check_parse(doc: &Doc, text: &str, format: SourceFormat) -> Result<(), TestCaseError> {
    let parsed: Parsed = parse_definition(text.as_bytes(), format, &opts_all());
    prop_assert_eq!(
        parsed.definition.is_some(),
        parsed.problems.is_empty(),
        "a definition comes back exactly when nothing is wrong: {:?}",
        parsed.problems
    );
    for p in &parsed.problems {
        let segs = segments(&p.path);
        prop_assert!(
            segs.is_some(),
            "malformed path {:?} in {:?}\n{}",
            p.path,
            p,
            text
        );
        prop_assert!(
            resolves(doc, &segs.unwrap_or_default()),
            "path {:?} is not in the document: {:?}\n{}",
            p.path,
            p,
            text
        );
        prop_assert!(!p.message.is_empty());
    }
    for s in &parsed.scripts {
        let segs = segments(&s.path).unwrap_or_default();
        prop_assert!(
            !segs.is_empty() && resolves(doc, &segs),
            "script path {:?} is not in the document\n{}",
            s.path,
            text
        );
    }
    // The canonical form of a sound definition parses to the same one.
    if let Some(def) = parsed.definition {
        let again = parse_definition(
            def.to_json_string().as_bytes(),
            SourceFormat::Json,
            &opts_all(),
        );
        prop_assert!(again.problems.is_empty(), "{:?}", again.problems);
        prop_assert_eq!(again.definition, Some(def));
    }
    Ok(())
}

/// Keys and strings that mean something to the parser, and some that
/// are awkward: empty, dotted, bracketed, unicode, very long.
const WORDS: &[&str] = &[
    "id",
    "name",
    "inputs",
    "outputs",
    "variables",
    "start",
    "on_error",
    "items",
    "type",
    "script",
    "next",
    "condition",
    "then",
    "else",
    "action",
    "workflow",
    "async",
    "over",
    "as",
    "collect",
    "parallel",
    "for_ms",
    "until",
    "store",
    "timeout_ms",
    "fail",
    "retry",
    "max_attempts",
    "backoff_ms",
    "task",
    "decision",
    "foreach",
    "timer",
    "signal",
    "interaction",
    "end",
    "log",
    "sleep",
    "a",
    "b",
    "done",
    "report",
    "ctx",
    "n",
    "total",
    "string",
    "number",
    "any",
    "",
    ".",
    "a.b",
    "[",
    "[0]",
    "\"",
    "ü",
    "日本",
    "🦀",
    "$",
    "__proto__",
    "constructor",
    "x y",
    "\n",
    "\u{0}",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,6}",
        1 => "[a-z_.$\\[\\]\"]{0,5}",
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (-1e300f64..1e300).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "1.5",
            "1e2",
            "1e999",
            "-1e999",
            "18446744073709551616",
            "99999999999999999999999999999999",
            "4294967296",
            "1001",
            "0.0000001",
        ])
        .prop_map(str::to_owned),
    ]
}

fn arb_doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        number().prop_map(Doc::Num),
        word().prop_map(Doc::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Doc::Arr),
            prop::collection::vec((word(), inner), 0..6).prop_map(Doc::Obj),
        ]
    })
}

/// A sound definition using every item type.
fn sound() -> Doc {
    fn from(v: &Value) -> Doc {
        match v {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Num(n.to_string()),
            Value::String(s) => Doc::Str(s.clone()),
            Value::Array(a) => Doc::Arr(a.iter().map(from).collect()),
            Value::Object(o) => Doc::Obj(o.iter().map(|(k, v)| (k.clone(), from(v))).collect()),
        }
    }
    from(&json!({
        "id": "order", "name": "Order",
        "inputs": {"n": "number", "who": "string"},
        "outputs": {"total": "number"},
        "variables": {"total": 0, "items": [1, 2], "got": null},
        "start": "double", "on_error": "report",
        "items": {
            "double": {"type": "task", "script": "total = n * 2;", "next": "check",
                       "retry": {"max_attempts": 3, "backoff_ms": 10}},
            "check": {"type": "decision", "condition": "total > 10", "then": "big", "else": "say"},
            "big": {"type": "workflow", "workflow": "child", "inputs": {"x": "total"},
                    "outputs": {"total": "y"}, "async": false, "next": "each"},
            "say": {"type": "action", "action": "log", "inputs": {"message": "'hi'"},
                    "outputs": {"got": "result"}, "next": "each", "on_error": "report"},
            "each": {"type": "foreach", "over": "items", "as": "it", "workflow": "child",
                     "inputs": {"x": "it"}, "collect": {"items": "y"}, "parallel": true, "next": "wait"},
            "wait": {"type": "timer", "for_ms": 5, "next": "until"},
            "until": {"type": "timer", "until": "new Date().toISOString()", "next": "sig"},
            "sig": {"type": "signal", "name": "go", "store": "got", "timeout_ms": 100, "next": "ask"},
            "ask": {"type": "interaction", "inputs": {"ok": "boolean"}, "timeout_ms": 100, "next": "done"},
            "report": {"type": "end", "fail": "error.message"},
            "done": {"type": "end"}
        }
    }))
}

/// One change to a document: which node, what to do, and the material.
#[derive(Clone, Debug)]
struct Mutation {
    node: Index,
    entry: Index,
    kind: u8,
    key: String,
    value: Doc,
    number: String,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        any::<Index>(),
        any::<Index>(),
        0u8..7,
        word(),
        arb_doc(),
        number(),
    )
        .prop_map(|(node, entry, kind, key, value, number)| Mutation {
            node,
            entry,
            kind,
            key,
            value,
            number,
        })
}

fn mutate(doc: &mut Doc, m: &Mutation) {
    let mut all = Vec::new();
    doc.nodes(&mut Vec::new(), &mut all);
    // Each kind of change picks among the nodes it applies to, so that
    // fields and leaves are hit as often as whole subtrees.
    let fits = |at: &Vec<usize>| match (m.kind, doc.node(at)) {
        (0 | 1 | 2 | 5, node) => matches!(node, Doc::Obj(_)),
        (3, node) => matches!(node, Doc::Str(_)),
        (4, node) => matches!(node, Doc::Num(_) | Doc::Str(_)),
        _ => true,
    };
    let candidates: Vec<Vec<usize>> = all.iter().filter(|at| fits(at)).cloned().collect();
    let at = if candidates.is_empty() {
        m.node.get(&all).clone()
    } else {
        m.node.get(&candidates).clone()
    };
    let node = doc.node_mut(&at);
    match (m.kind, node) {
        // Remove a field.
        (0, Doc::Obj(o)) if !o.is_empty() => {
            o.remove(m.entry.index(o.len()));
        }
        // Add a field (perhaps a duplicate of one that exists).
        (1, Doc::Obj(o)) => o.push((m.key.clone(), m.value.clone())),
        // Repeat a field with another value.
        (2, Doc::Obj(o)) if !o.is_empty() => {
            let k = o[m.entry.index(o.len())].0.clone();
            o.push((k, m.value.clone()));
        }
        // A string where something else was (an item type, a dangling id).
        (3, node) => *node = Doc::Str(m.key.clone()),
        // A number, perhaps huge or negative.
        (4, node) => *node = Doc::Num(m.number.clone()),
        // Rename a field.
        (5, Doc::Obj(o)) if !o.is_empty() => {
            let i = m.entry.index(o.len());
            o[i].0 = m.key.clone();
        }
        // Anything at all.
        (_, node) => *node = m.value.clone(),
    }
}

thread_local! {
    static WORKER: RefCell<ScriptWorker> = RefCell::new(worker_with_timeout(200));
}

/// Random JavaScript: expressions from a small grammar over the globals
/// `g0`..`g2`, `ctx` and the built-ins, with some tokens that are not.
fn js_expr() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        prop::sample::select(vec![
            "g0",
            "g1",
            "g2",
            "ctx",
            "ctx.item",
            "ctx.attempt",
            "null",
            "undefined",
            "NaN",
            "Infinity",
            "-0",
            "1",
            "2.5",
            "1e308",
            "'s'",
            "\"\\u00e9\"",
            "'\\ud800'",
            "`t${g0}`",
            "[]",
            "{}",
            "[1,[2,{a:3}]]",
            "({a: g1})",
            "Math",
            "Math.max",
            "JSON",
            "Object",
            "Date",
            "new Date(0)",
            "new Error('e')",
            "new TypeError('t')",
            "/a+/g",
            "new Map()",
            "Symbol('s')",
            "globalThis",
            "this",
            "log",
            "(() => g0)",
            "(function () { return 1; })",
            "Promise.resolve(1)",
            "Object.prototype",
            "Array.prototype",
            "async () => 1",
            "function* () { yield 1; }",
            "__baton_reset",
            "__baton_logger",
            "Object.freeze",
            "eval",
        ])
        .prop_map(str::to_owned),
        any::<i32>().prop_map(|n| n.to_string()),
        "\\PC{0,4}".prop_map(|s| quote(&s)),
    ];
    atom.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec![
                    "+",
                    "-",
                    "*",
                    "/",
                    "%",
                    "**",
                    "==",
                    "===",
                    "<",
                    "&&",
                    "||",
                    "??",
                    ",",
                    "in",
                    "instanceof",
                    "&",
                    "<<",
                    ">>>",
                ]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (
                prop::sample::select(vec!["!", "-", "typeof ", "void ", "~", "delete "]),
                inner.clone()
            )
                .prop_map(|(op, a)| format!("({op}{a})")),
            (inner.clone(), prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "a",
                    "length",
                    "toString",
                    "constructor",
                    "__proto__",
                    "prototype",
                    "then",
                    "message",
                    "name",
                    "push",
                    "map",
                    "keys",
                ])
            )
                .prop_map(|(o, k)| format!("{o}.{k}")),
            (inner.clone(), inner.clone()).prop_map(|(o, k)| format!("{o}[{k}]")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({{k: {a}, [{b}]: 1}})")),
        ]
    })
}

fn js_statement() -> impl Strategy<Value = String> {
    let target = prop::sample::select(vec![
        "g0",
        "g1",
        "g2",
        "ctx",
        "ctx.item",
        "g0.a",
        "g1[0]",
        "Math.x",
        "Object.prototype.x",
        "globalThis.leak",
        "log",
        "JSON",
    ]);
    prop_oneof![
        (target, js_expr()).prop_map(|(t, e)| format!("{t} = {e};")),
        js_expr().prop_map(|e| format!("let v = {e}; g2 = v;")),
        js_expr().prop_map(|e| format!("log({e});")),
        js_expr().prop_map(|e| format!("throw {e};")),
        (js_expr(), js_expr())
            .prop_map(|(c, e)| format!("if ({c}) {{ g0 = {e}; }} else {{ g1 = 1; }}")),
        js_expr().prop_map(|e| format!("for (let i = 0; i < 3; i++) {{ g1 = {e}; }}")),
        js_expr().prop_map(|e| format!("try {{ g0 = {e}; }} catch (e) {{ g1 = e.message; }}")),
        js_expr().prop_map(|e| format!("{e}.then(x => {{ g2 = x; }});")),
        js_expr()
            .prop_map(|e| format!("var hoisted = {e}; function f() {{ return {e}; }} g0 = f();")),
        // Token soup: mostly syntax errors.
        prop::collection::vec(
            prop::sample::select(vec![
                "{", "}", "(", ")", "[", "]", ";", "=", "=>", "g0", "1", "'", "\"", "`", "${",
                "function", "class", "return", "yield", "await", "async", "new", "var", "let",
                "const", "import", "export", "default", "*", "/", "//", "/*", "\n", "\\", "#", "@",
                "?.", "...", "in", "of", "for", "with", "debugger",
            ]),
            0..12
        )
        .prop_map(|t| t.join(" ")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn evaluate(code: Code, globals: &[Value]) -> Result<super::script::Evaluated, ScriptError> {
    let names = ["g0", "g1", "g2"];
    WORKER.with(|w| {
        tests_support::evaluate(
            &mut w.borrow_mut(),
            Evaluate {
                globals: names
                    .iter()
                    .zip(globals)
                    .map(|(n, v)| ((*n).to_owned(), v.clone()))
                    .collect(),
                code,
                read_back: names.iter().map(|n| (*n).to_owned()).collect(),
                context: ScriptContext {
                    execution_id: "e".into(),
                    item: "i".into(),
                    attempt: 1,
                    idempotency_key: "e/i".into(),
                    node: "n".into(),
                },
            },
        )
    })
}

/// After any evaluation, a plain one sees only its own globals and
/// pristine built-ins.
fn check_no_leftovers() -> Result<(), TestCaseError> {
    let out = evaluate(
        Code::Statements(
            "g0 = [typeof leak, typeof hoisted, typeof v, [1].push(2), Math.max(1, 2), JSON.stringify({a: 1}), Object.keys(g1).length, g2];"
                .into(),
        ),
        &[Value::Null, json!({}), json!("x")],
    );
    let out = out.map_err(|e| TestCaseError::fail(format!("plain evaluation failed: {e}")))?;
    prop_assert_eq!(
        &out.values["g0"],
        &json!([
            "undefined",
            "undefined",
            "undefined",
            2,
            2,
            "{\"a\":1}",
            0,
            "x"
        ])
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn arbitrary_documents_never_panic_and_every_problem_has_a_path(doc in arb_doc()) {
        check_parse(&doc, &doc.to_json_text(), SourceFormat::Json)?;
        check_parse(&doc, &doc.to_yaml_text(), SourceFormat::Yaml)?;
    }

    #[test]
    fn mutated_definitions_never_panic_and_every_problem_has_a_path(
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut doc = sound();
        for m in &mutations {
            mutate(&mut doc, m);
        }
        check_parse(&doc, &doc.to_json_text(), SourceFormat::Json)?;
        check_parse(&doc, &doc.to_yaml_text(), SourceFormat::Yaml)?;
        check_parse(&doc, &doc.to_json_text(), SourceFormat::Yaml)?;
    }

    #[test]
    fn arbitrary_text_never_panics_and_names_a_path(
        text in prop_oneof![
            "\\PC{0,40}",
            "[-:{}\\[\\],&*!?|>'\"#%@` \n.a-z0-9]{0,40}",
        ],
        yaml in any::<bool>(),
    ) {
        let format = if yaml { SourceFormat::Yaml } else { SourceFormat::Json };
        let parsed = parse_definition(text.as_bytes(), format, &opts_all());
        for p in &parsed.problems {
            prop_assert!(segments(&p.path).is_some(), "malformed path {:?}", p);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_statements_give_a_value_or_a_script_error(
        statements in prop::collection::vec(js_statement(), 1..4),
        globals in prop::collection::vec(json_value(), 3),
    ) {
        let code = statements.join("\n");
        if let Ok(out) = evaluate(Code::Statements(code), &globals) {
            for n in ["g0", "g1", "g2"] {
                prop_assert!(out.values.contains_key(n));
            }
        }
        check_no_leftovers()?;
    }

    #[test]
    fn random_expressions_give_a_value_or_a_script_error(
        exprs in prop::collection::vec(js_expr(), 1..4),
        globals in prop::collection::vec(json_value(), 3),
    ) {
        let named: Vec<(String, String)> =
            exprs.iter().enumerate().map(|(i, e)| (format!("e{i}"), e.clone())).collect();
        if let Ok(out) = evaluate(Code::Expressions(named.clone()), &globals) {
            for (n, _) in &named {
                prop_assert!(out.results.contains_key(n));
            }
        }
        check_no_leftovers()?;
    }

    #[test]
    fn random_scripts_compile_or_name_their_path(
        source in prop_oneof![js_expr(), js_statement()],
        expression in any::<bool>(),
    ) {
        let problems = WORKER.with(|w| {
            tests_support::compile(&mut w.borrow_mut(), vec![ScriptRef {
                path: "items.a.script".into(),
                source: source.clone(),
                expression,
            }])
        });
        for (path, message) in &problems {
            prop_assert_eq!(path.as_str(), "items.a.script");
            prop_assert!(!message.is_empty());
        }
        check_no_leftovers()?;
    }
}

#[test]
fn problem_paths_are_read_back_as_written() {
    assert_eq!(segments("$"), Some(vec![]));
    assert_eq!(
        segments("items.a[\"b.c\"][2].x"),
        Some(vec![
            Seg::Key("items".into()),
            Seg::Key("a".into()),
            Seg::Key("b.c".into()),
            Seg::Index(2),
            Seg::Key("x".into()),
        ])
    );
    for bad in ["", "a.", ".a", "a..b", "a[", "a[\"x\"", "a[x]"] {
        assert_eq!(segments(bad), None, "{bad}");
    }
    assert_eq!(
        super::parse::join_path("items", "a.b"),
        "items[\"a.b\"]".to_owned()
    );
    assert_eq!(super::parse::join_path("", ""), "[\"\"]".to_owned());
}
