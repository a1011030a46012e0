//! Straight-line scripts on the calling thread (issue 14 item 6).
//!
//! Handing an evaluation to a script thread and taking its answer back is
//! two thread wake-ups, more than `n = n + 1` itself costs. A script that
//! provably cannot run long is therefore evaluated on the thread that asks
//! (the actors' thread), by a [`ScriptWorker`] of that thread's own: the
//! same code, lockdown, timeout, reset and error classification as on the
//! script threads, with a smaller heap; whatever fails there runs again on
//! a script thread, so the answer is the same wherever it ran.
//!
//! "Cannot run long" is decided from the source text alone, by a scanner
//! that says yes only when it is sure; everything else goes to the script
//! threads exactly as before. It accepts code with:
//!
//! - at most [`MAX_SOURCE`] bytes, ASCII outside string literals (comments
//!   included, so no Unicode line terminator can end a comment early), no
//!   `\` outside string literals (no escaped identifiers);
//! - no calls: `(` only opens a group, or follows `if`, `switch`,
//!   `return`, `typeof`, `void`, `delete`, `in`, `instanceof`, `case` or
//!   `throw`;
//! - no `try`/`catch`/`finally` (a `catch` could swallow running out of the
//!   small heap below and answer differently than a script thread);
//! - none of `for`, `while`, `do`, `function`, `class`, `new`, `async`,
//!   `await`, `yield`, `import`, `export`, `with`, `eval`, `Function`,
//!   `arguments`, `debugger`, `super`, `this`, `globalThis`, `var`,
//!   `__proto__`; no template literals, `=>`, `...`, `#`, HTML-like
//!   comments (`<!--`, `-->`) or BigInt literals;
//! - numbers only as well-formed literals, nothing glued to them;
//! - no object or array literal (so no destructuring either): `{` only
//!   opens a block, `[` only indexes a value;
//! - assignments (`=`, `+=`, postfix `++`, ...) only to a plain name,
//!   never to a member (`o.x = f`, `o.x++`) or through parentheses; no
//!   prefix `++`/`--`;
//! - at most [`MAX_CONVERSIONS`] operators that can convert or copy a
//!   value (`+`, `<`, `===`, `[`, `in`, `case`, assignments, ...; each
//!   expression's result counts as one), brackets nested at most
//!   [`MAX_DEPTH`] deep;
//! - `/` only where it can only be division (after a name, a number, a
//!   string, `]`, a group's `)` or a postfix `++`/`--` on the same line),
//!   so no regular expression literal can hide code from the scanner.
//!
//! The evaluation itself runs in a small heap ([`HEAP_MB`]), and only when
//! the globals carry at most [`MAX_DATA`] of JSON (charged by what
//! converting it costs) and at most [`MAX_READ_BACK`] names are read back.
//! Whatever fails here (a thrown error, or outgrowing the heap, which
//! surfaces as more than one kind of error) runs again, from the same
//! message, on a script thread with the full `scripts.memory_limit_mb`: an
//! evaluation has no effect but its answer, so running it twice is safe.
//! Code that cost this thread its context is remembered and goes to a
//! script thread from then on.
//!
//! Why that bounds the time: without loops, calls or functions every
//! statement runs at most once. The calls JavaScript makes implicitly
//! (conversions to a primitive, getters, iterators) can reach only the
//! frozen built-ins, because such code can put no function on an object
//! (no object literal, no member assignment) and cannot reach the global
//! object. What is left is at most [`MAX_CONVERSIONS`] walks over values
//! that fit in [`HEAP_MB`]. (The interrupt deadline stays armed, but QuickJS
//! consults it only every 10,000 calls or jumps, so it is not what bounds
//! this code.)

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::{Code, Evaluate, Evaluated, ScriptError, ScriptLimits, ScriptWorker};

/// The longest source evaluated on the calling thread.
pub const MAX_SOURCE: usize = 2048;

/// The most operators that may convert or copy a value (`+`, `-`, `<`,
/// `===`, `[`, `in`, `case`, `=`, ...; not `;`, `,`, `.`, `&&`, `!`, ...)
/// in code evaluated on the calling thread. Each can walk a whole value,
/// so this, [`HEAP_MB`] and [`MAX_DATA`] together bound the work.
pub const MAX_CONVERSIONS: usize = 16;

/// The calling thread's QuickJS heap, at most (or `scripts.memory_limit_mb`
/// if lower). Code that outgrows it runs again on a script thread.
pub const HEAP_MB: u64 = 4;

/// The most JSON an evaluation's globals may carry to run on the calling
/// thread, charged by what converting it costs (see [`small_enough`]).
pub const MAX_DATA: usize = 16 * 1024;

/// The most names an evaluation may read back on the calling thread (each
/// is turned into JSON after every run).
pub const MAX_READ_BACK: usize = 64;

/// The deepest nesting of brackets on the calling thread (its QuickJS
/// stack limit is counted from where its runtime was made).
pub const MAX_DEPTH: usize = 32;

/// Whether every piece of `code` is straight-line code (see the module).
pub fn straight_line(code: &Code) -> bool {
    match code {
        Code::Statements(src) => scan(src, Prev::StatementStart).is_some(),
        // The expressions share their globals: the limits hold for all of
        // them together, and each result is turned into JSON (one more).
        Code::Expressions(exprs) => {
            let (mut length, mut conversions) = (0, 0);
            exprs.iter().all(|(_, src)| {
                length += src.len();
                conversions += 1 + scan(src, Prev::Operator).unwrap_or(usize::MAX / 2);
                length <= MAX_SOURCE && conversions <= MAX_CONVERSIONS
            })
        }
    }
}

thread_local! {
    /// This thread's QuickJS runtime, made on first use.
    static HERE: RefCell<Option<ScriptWorker>> = const { RefCell::new(None) };
    /// Code that cost this thread its context (it ran out of the small
    /// heap, or left globals the reset refuses): it goes to a script
    /// thread from then on, rather than making every item rebuild a
    /// locked-down context here.
    static OUTGREW: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

fn fingerprint(code: &Code) -> u64 {
    let mut h = DefaultHasher::new();
    match code {
        Code::Statements(src) => src.hash(&mut h),
        Code::Expressions(exprs) => exprs.hash(&mut h),
    }
    h.finish()
}

/// Whether this code cost this thread its context before.
pub fn outgrew_before(code: &Code) -> bool {
    let key = fingerprint(code);
    OUTGREW.with(|set| set.borrow().contains(&key))
}

/// Evaluates on this thread. Only for [`straight_line`] code: anything else
/// could hold the thread until `scripts.timeout_ms`.
///
/// Any error is for the caller to run again on a script thread: running out
/// of the small heap surfaces as several kinds of error, and an error is
/// the rare path. So nothing is counted here.
pub fn evaluate_here(limits: ScriptLimits, msg: &Evaluate) -> Result<Evaluated, ScriptError> {
    let limits = ScriptLimits {
        memory_limit_mb: limits.memory_limit_mb.min(HEAP_MB),
        ..limits
    };
    HERE.with(|cell| {
        // `evaluate` neither awaits nor calls back into this module, so the
        // cell is never borrowed twice.
        let mut slot = cell.borrow_mut();
        let worker = match slot.take() {
            Some(w) if w.limits == limits => w,
            _ => {
                let mut w = ScriptWorker::new(limits)?;
                w.counts = false;
                w
            }
        };
        let worker = slot.insert(worker);
        let out = worker.evaluate(msg);
        // Whatever the answer, a run that cost this thread its context
        // (including one whose globals cannot be reset, such as a declared
        // name `__proto__`) must not make every item rebuild one here.
        if worker.warm.is_none() {
            let key = fingerprint(&msg.code);
            OUTGREW.with(|set| {
                let mut set = set.borrow_mut();
                if set.len() >= 1024 {
                    set.clear();
                }
                set.insert(key);
            });
        }
        out
    })
}

/// Whether the globals an evaluation carries are small enough for the
/// calling thread ([`MAX_DATA`]); larger data would only run out of its
/// heap and go to a script thread after all.
pub fn small_enough(msg: &Evaluate) -> bool {
    let mut budget = MAX_DATA;
    msg.read_back.len() <= MAX_READ_BACK && msg.globals.iter().all(|(_, v)| fits(v, &mut budget))
}

fn fits(v: &Value, budget: &mut usize) -> bool {
    // Roughly what a value costs to hold and to turn into text: a number
    // is printed by a search for its shortest form (several `snprintf`
    // calls), a control character or quote is escaped one by one.
    let cost = match v {
        Value::String(s) => {
            64 + s.len()
                + 8 * s
                    .bytes()
                    .filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
                    .count()
        }
        Value::Number(_) => 256,
        _ => 64,
    };
    let Some(left) = budget.checked_sub(cost) else {
        return false;
    };
    *budget = left;
    match v {
        Value::Array(a) => a.iter().all(|x| fits(x, budget)),
        Value::Object(o) => o.iter().all(|(k, x)| {
            *budget = budget.saturating_sub(k.len());
            fits(x, budget)
        }),
        _ => true,
    }
}

/// What the previous token leaves the scanner expecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prev {
    /// A statement may start: the source's start, `;`, `{`, `}`.
    StatementStart,
    /// An expression may start: after an operator, `(`, `,`, `:`, ...
    Operator,
    /// A value ended: a name, number, string, `]`, a group's `)`. `plain`
    /// when it is a bare name, the one thing that may be assigned.
    Value { plain: bool },
    /// `.` or `?.`: a property name follows.
    Dot { optional: bool },
    /// A keyword an expression in parentheses may follow (`return`,
    /// `typeof`, ...); `statement` for `if` and `switch`, whose `)`
    /// lets a statement start.
    KeywordParen { statement: bool },
    /// `else`: a block may follow.
    KeywordBlock,
    /// Any other keyword that is allowed (`let`, `const`, `break`, ...).
    Keyword,
    /// The `)` of `if (...)` or `switch (...)`.
    StatementParen,
}

/// What an open bracket was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Group,
    StatementParen,
    Block,
    Index,
}

/// Words that make code not straight-line, even as a name.
const DENIED: &[&str] = &[
    "for",
    "while",
    "do",
    "function",
    "class",
    "new",
    "async",
    "await",
    "yield",
    "import",
    "export",
    "with",
    "eval",
    "Function",
    "arguments",
    "debugger",
    "super",
    "this",
    "globalThis",
    "var",
    "__proto__",
    // `catch` could swallow running out of the small heap, giving another
    // answer than a script thread's larger one.
    "try",
    "catch",
    "finally",
    "enum",
    "extends",
    "static",
    "implements",
    "interface",
    "package",
    "private",
    "protected",
    "public",
];

/// Punctuators, longest first (maximal munch).
const PUNCTUATORS: &[&str] = &[
    ">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??=", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "??", "?.", "++", "--", "+=", "-=", "*=", "%=", "&=", "|=", "^=", "**",
    "<<", ">>", "{", "}", "(", ")", "[", "]", ";", ",", "<", ">", "+", "-", "*", "%", "&", "|",
    "^", "!", "~", "?", ":", "=", ".",
];

fn is_assignment(p: &str) -> bool {
    p.ends_with('=') && !matches!(p, "==" | "===" | "!=" | "!==" | "<=" | ">=")
}

/// The number of converting operators in `src` when it is straight-line.
fn scan(src: &str, start: Prev) -> Option<usize> {
    if src.len() > MAX_SOURCE {
        return None;
    }
    let b = src.as_bytes();
    let mut i = 0;
    let mut prev = start;
    let mut stack: Vec<Open> = Vec::new();
    // A line break since the previous token (it makes `a\n++b` two
    // statements: `++` after a line break is never postfix).
    let mut line_break = false;
    let mut conversions = 0usize;
    while i < b.len() {
        if conversions > MAX_CONVERSIONS || stack.len() > MAX_DEPTH {
            return None;
        }
        let c = b[i];
        let after_line_break = line_break;
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'/') {
            // Any token but a comment (handled below) ends the run of space.
            line_break = false;
        }
        match c {
            b' ' | b'\t' => i += 1,
            b'\n' | b'\r' => {
                line_break = true;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                // A line comment ends at \n or \r (non-ASCII refused below).
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    if !b[i].is_ascii() {
                        return None;
                    }
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/")?;
                let body = &src[i + 2..i + 2 + end];
                if !body.is_ascii() {
                    return None;
                }
                line_break |= body.contains(['\n', '\r']);
                i += 2 + end + 2;
            }
            b'/' => {
                line_break = false;
                // Division only where a value ended; anywhere else it would
                // start a regular expression literal.
                let Prev::Value { plain } = prev else {
                    return None;
                };
                if b.get(i + 1) == Some(&b'=') {
                    if !plain {
                        return None;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
                conversions += 1;
                prev = Prev::Operator;
            }
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n' | b'\r') => return None,
                        Some(b'\\') => {
                            // An escape, or a line continuation (\ CR LF).
                            i += if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                                3
                            } else {
                                2
                            };
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                if let Prev::Dot { .. } = prev {
                    return None;
                }
                prev = Prev::Value { plain: false };
            }
            b'0'..=b'9' => {
                let end = number(b, i)?;
                i = end;
                prev = Prev::Value { plain: false };
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = number(b, i)?;
                i = end;
                prev = Prev::Value { plain: false };
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                let word = &src[s..i];
                let next = name(word, prev)?;
                if !matches!(prev, Prev::Dot { .. }) && matches!(word, "in" | "instanceof" | "case")
                {
                    conversions += 1;
                }
                prev = next;
            }
            _ => {
                // HTML-like comments: `<!--` starts a comment where a
                // script is run, but not in the module the definition was
                // checked as; refuse both forms.
                if src[i..].starts_with("<!--") || src[i..].starts_with("-->") {
                    return None;
                }
                let Some(p) = PUNCTUATORS.iter().find(|p| src[i..].starts_with(**p)) else {
                    // `\`, a backtick, `#`, `@`, non-ASCII: not sure.
                    return None;
                };
                // `a?.5:1` is `?` then `.5`.
                let p = if *p == "?." && b.get(i + 2).is_some_and(u8::is_ascii_digit) {
                    "?"
                } else {
                    *p
                };
                i += p.len();
                // `a <line break> ++b`: a prefix `++` of a new statement.
                let before = if matches!(p, "++" | "--") && after_line_break {
                    Prev::StatementStart
                } else {
                    prev
                };
                let next = punctuator(p, before, &mut stack)?;
                if !matches!(
                    p,
                    ";" | ","
                        | "("
                        | ")"
                        | "{"
                        | "}"
                        | "]"
                        | ":"
                        | "?"
                        | "."
                        | "?."
                        | "&&"
                        | "||"
                        | "??"
                        | "!"
                ) {
                    conversions += 1;
                }
                prev = next;
            }
        }
    }
    (stack.is_empty() && conversions <= MAX_CONVERSIONS).then_some(conversions)
}

/// The end of the numeric literal at `i`, or `None` when it is not one
/// this scanner is sure of: decimal with at most one `.` and an exponent,
/// or `0x`/`0o`/`0b` digits, with `_` separators; no BigInt (`n`), and
/// nothing glued after it (`1..e-this` is `(1).e - this`).
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: &mut usize, ok: fn(u8) -> bool| {
        while *i < b.len() && (ok(b[*i]) || b[*i] == b'_') {
            *i += 1;
        }
    };
    let radix = b.get(i) == Some(&b'0')
        && b.get(i + 1)
            .is_some_and(|c| matches!(c.to_ascii_lowercase(), b'x' | b'o' | b'b'));
    if radix {
        i += 2;
        digits(&mut i, |c| c.is_ascii_hexdigit());
    } else {
        digits(&mut i, |c| c.is_ascii_digit());
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i, |c| c.is_ascii_digit());
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let from = i;
            digits(&mut i, |c| c.is_ascii_digit());
            if i == from {
                return None;
            }
        }
    }
    // A letter, digit, `$`, `.` or `\\` right after: `1n`, `1..x`, `1.e`.
    let glued = b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.' | b'\\'));
    (!glued).then_some(i)
}

fn name(word: &str, prev: Prev) -> Option<Prev> {
    if let Prev::Dot { .. } = prev {
        // A property name; any word may be one, but not `__proto__`.
        return (word != "__proto__").then_some(Prev::Value { plain: false });
    }
    if DENIED.contains(&word) {
        return None;
    }
    // A word right after a value is `in`/`instanceof` or starts a new
    // statement (automatic semicolon insertion); either way it is read
    // the same as anywhere else.
    Some(match word {
        "if" | "switch" => Prev::KeywordParen { statement: true },
        "return" | "typeof" | "void" | "delete" | "in" | "instanceof" | "case" | "throw" => {
            Prev::KeywordParen { statement: false }
        }
        "else" => Prev::KeywordBlock,
        "let" | "const" | "break" | "continue" | "default" => Prev::Keyword,
        "true" | "false" | "null" => Prev::Value { plain: false },
        _ => Prev::Value { plain: true },
    })
}

fn punctuator(p: &str, prev: Prev, stack: &mut Vec<Open>) -> Option<Prev> {
    if matches!(p, "=>" | "...") {
        return None;
    }
    if let Prev::Dot { .. } = prev {
        // After `.` only a name; after `?.` a name or `[`.
        if !(p == "[" && prev == (Prev::Dot { optional: true })) {
            return None;
        }
    }
    if is_assignment(p) {
        return matches!(prev, Prev::Value { plain: true }).then_some(Prev::Operator);
    }
    let value = matches!(prev, Prev::Value { .. });
    Some(match p {
        "(" => {
            let open = match prev {
                Prev::StatementStart | Prev::Operator | Prev::StatementParen => Open::Group,
                Prev::KeywordParen { statement: true } => Open::StatementParen,
                Prev::KeywordParen { statement: false } => Open::Group,
                // After a value: a call. After `let`, `get`, ...: maybe one.
                _ => return None,
            };
            stack.push(open);
            Prev::Operator
        }
        ")" => match stack.pop()? {
            Open::Group => Prev::Value { plain: false },
            Open::StatementParen => Prev::StatementParen,
            Open::Block | Open::Index => return None,
        },
        "[" => {
            // Indexing a value; anywhere else an array literal.
            if !value && prev != (Prev::Dot { optional: true }) {
                return None;
            }
            stack.push(Open::Index);
            Prev::Operator
        }
        "]" => match stack.pop()? {
            Open::Index => Prev::Value { plain: false },
            _ => return None,
        },
        "{" => {
            // A block; anywhere else an object literal.
            if !matches!(
                prev,
                Prev::StatementStart | Prev::StatementParen | Prev::KeywordBlock
            ) {
                return None;
            }
            stack.push(Open::Block);
            Prev::StatementStart
        }
        "}" => match stack.pop()? {
            Open::Block => Prev::StatementStart,
            _ => return None,
        },
        ";" => Prev::StatementStart,
        "." => {
            if !value {
                return None;
            }
            Prev::Dot { optional: false }
        }
        "?." => {
            if !value {
                return None;
            }
            Prev::Dot { optional: true }
        }
        // Only postfix on a plain name: `o.x++` writes a member (an
        // array's `length` through `d[4294967294]++`), and a prefix form
        // would need a look ahead to know what it writes.
        "++" | "--" => {
            if prev != (Prev::Value { plain: true }) {
                return None;
            }
            Prev::Value { plain: false }
        }
        _ => Prev::Operator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(src: &str) -> bool {
        straight_line(&Code::Statements(src.to_owned()))
    }

    fn expression(src: &str) -> bool {
        straight_line(&Code::Expressions(vec![("e".into(), src.to_owned())]))
    }

    #[test]
    fn everyday_straight_line_code_is_accepted() {
        for src in [
            "n = n + 1;",
            "a = 1\nb = a\nif (b) c = 2",
            "total = price * qty + 14; greeting = 'hello ' + who;",
            "if (n > 2) { big = true; } else { big = false }",
            "let t = order.total / 2; x = t >= 10 ? 'a' : \"b\";",
            "switch (kind) { case 'a': n = 1; break; default: n = 2 }",
            "x = items[0].price * 1.5e+3 + 0x1F - .5; y = (!x && (a || b)) ?? c;",
            "n++; m--; k += 2; s = typeof v === 'string'; d = 'a' in o;",
            "n++\nm = n++ / 2; k = 1_000.5e-3 + 0b1010 + 0o17 + 0xFF_FF + 1E3;",
            "// a comment\nx = 1; /* another */ y = x % 3;",
            "x = a?.b?.[0]; y = (a + b) / 2; z = a[i] / 3;",
            "throw 'no stock for ' + sku;",
            "const s = 'it\\'s \\u00e9 (not a call)'; r = s;",
            "r = 'caf\u{e9}';",
        ] {
            assert!(statements(src), "should run here: {src}");
        }
        for src in ["total > 10", "order.total >= 100 && !rush", "-n", "(a)"] {
            assert!(expression(src), "should run here: {src}");
        }
    }

    #[test]
    fn anything_that_could_run_long_goes_to_the_script_threads() {
        for src in [
            // Loops, functions, calls.
            "while (true) {}",
            "for (;;) {}",
            "do {} while (1)",
            "x = f()",
            "x = o.f ()",
            "x = a?.()",
            "x = (f)(1)",
            "x = s.repeat(1e9)",
            "x = [1,2][0](1)",
            "x = 'a'(1)",
            "let (x)",
            "x = () => 1",
            "x = a => a",
            "function f() {}",
            "class A {}",
            "x = new Date",
            "x = `t${a}`",
            "eval",
            "x = import('m')",
            // Objects, arrays, destructuring, member assignment.
            "x = {valueOf: a.indexOf, length: 1e15}; y = x * 1",
            "x = [a.join]",
            "[a] = b",
            "let {a} = b",
            "o.valueOf = a.indexOf",
            "o['valueOf'] = 1",
            "(o.x) = 1",
            "o.x ||= f",
            "valueOf = a.indexOf; length = 1e15; y = globalThis * 1",
            "y = this * 1",
            "__proto__ = o",
            "x = o.__proto__",
            "var x = 1",
            "x = [...a]",
            // Regular expressions and things that could hide code.
            "x = /re/",
            "if (x) /'/; while(1){} //'",
            "} /'/; while(1){} //'",
            "// comment\rwhile(1){}",
            "// comment\u{2028}while(1){}",
            "/* open comment",
            "x = 'unterminated",
            "x = 'line\nbreak'",
            "\\u0077hile (1) {}",
            // Found by review: a line break makes `++` prefix, so `/` starts
            // a regular expression that hid the rest from the scanner.
            "a\n++/'/.x; Array.prototype.indexOf.call({length: 9e15}) //'",
            "a\r--/'/.x; while(1){} //'",
            "a/*\n*/++/'/.x; while(1){} //'",
            // An HTML-like comment hides the rest of the line when run.
            "x = a <!-- b /*\nArray.prototype.indexOf.call({length: 9e15})\n//*/",
            "x = a --> b",
            // A number that swallowed what follows it.
            "length = 9e15; valueOf = Array.prototype.indexOf; x = 1..e-this",
            "x = 1..e-new Date",
            "x = 1..__proto__",
            "x = 1.e",
            // BigInt arithmetic runs as long as it likes inside C.
            "a = 7n ** 20000000n",
            // Found by the third review: a member written by ++ (an array's
            // length set to 2**32 - 1, then joined), a prefix ++, and a
            // catch that swallowed running out of the small heap.
            "d[4294967294]++; x = d + ''",
            "o.x++",
            "(a.b)--",
            "++n",
            "--o.x",
            "a = b\n++c",
            "try { s = s + s } catch (e) { r = -1 }",
            "x = #p",
            "x = 1; } { y = 2",
            ")",
        ] {
            assert!(!statements(src), "should go to the script threads: {src:?}");
        }
        assert!(!expression("{a: 1}"));
        assert!(!expression("a), (b"));
        assert!(!statements(&"x = 1;".repeat(MAX_SOURCE / 6 + 1)));
        // Found by review: each conversion can walk a whole string, so
        // many of them on a large one ran for seconds.
        let walks = format!("let x = 0{}", "-s".repeat(MAX_CONVERSIONS + 1));
        assert!(!statements(&walks));
        assert!(statements(&format!(
            "let x = 0{}",
            "-s".repeat(MAX_CONVERSIONS - 1)
        )));
        assert!(!statements(&"s = s + s;".repeat(MAX_CONVERSIONS + 1)));
        assert!(!statements(&"v = s;".repeat(MAX_CONVERSIONS + 1)));
        // Found by the fourth review: nesting deeper here than a script
        // thread's stack allows.
        assert!(!expression(&format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        )));
        assert!(expression(&format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        )));
        // Each expression's result is read back: one more each.
        let many: Vec<(String, String)> = (0..=MAX_CONVERSIONS)
            .map(|i| (format!("e{i}"), "v".to_owned()))
            .collect();
        assert!(!straight_line(&Code::Expressions(many)));
        // Expressions share one budget.
        let half = format!("0{}", "-s".repeat(MAX_CONVERSIONS / 2 + 1));
        assert!(!straight_line(&Code::Expressions(vec![
            ("a".into(), half.clone()),
            ("b".into(), half),
        ])));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod evaluation_tests {
    use serde_json::{json, Value};

    use super::super::tests_support::worker;
    use super::super::{ScriptContext, ScriptPool};
    use super::*;

    fn msg(code: Code, globals: &[(&str, Value)]) -> Evaluate {
        Evaluate {
            globals: globals
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            code,
            read_back: globals.iter().map(|(k, _)| (*k).to_owned()).collect(),
            context: ScriptContext::default(),
        }
    }

    const LIMITS: ScriptLimits = ScriptLimits {
        timeout_ms: 2000,
        memory_limit_mb: 32,
    };

    /// The calling thread's evaluation answers exactly as a script
    /// thread's: values, results, logs and errors.
    #[test]
    fn the_calling_thread_answers_as_a_script_thread_does() {
        let globals = [
            ("n", json!(1)),
            ("o", json!({"a": {"b": [1, 2, 3]}, "s": "x"})),
            ("r", json!(null)),
        ];
        let cases = [
            Code::Statements("n = n + 1; r = o.a.b[1] * n;".into()),
            Code::Statements("r = o.s + o.a + o.a.b + typeof missing;".into()),
            Code::Statements("if (n > 0) { r = 'pos' } else { r = 'neg' } n = -n".into()),
            Code::Statements("r = o.nope.deeper;".into()),
            Code::Statements("throw 'no stock for ' + o.s;".into()),
            Code::Statements("throw o.a;".into()),
            Code::Statements("let leak = 1; added = 2; r = 1 / 0;".into()),
            Code::Statements("r = typeof added + typeof leak;".into()),
            Code::Statements("undefined = 1; NaN = 2; r = undefined + ' ' + NaN;".into()),
            Code::Statements("r = n++ + n; delete o.a; r = r + JSON.stringify;".into()),
            Code::Expressions(vec![
                ("a".into(), "n > 0 && o.s === 'x'".into()),
                ("b".into(), "o.a.b.length".into()),
                ("c".into(), "o?.a?.[\"b\"]".into()),
            ]),
        ];
        let mut pool_side = worker();
        for code in cases {
            assert!(straight_line(&code), "not straight-line: {code:?}");
            let here = evaluate_here(LIMITS, &msg(code.clone(), &globals));
            let there = pool_side.evaluate(&msg(code.clone(), &globals));
            match (&here, &there) {
                (Ok(h), Ok(t)) => assert_eq!(
                    (&h.values, &h.results, &h.logs),
                    (&t.values, &t.results, &t.logs),
                    "{code:?}"
                ),
                (Err(h), Err(t)) => assert_eq!(h, t, "{code:?}"),
                _ => panic!("{code:?}: here {here:?}, on a script thread {there:?}"),
            }
        }
    }

    /// What outgrows the calling thread's small heap, or brings more data
    /// than it takes, runs on a script thread with the full limit: the
    /// same answer, counted there, and no out-of-memory counted.
    #[actix_rt::test]
    async fn what_outgrows_the_small_heap_runs_on_a_script_thread() {
        use std::sync::atomic::Ordering::Relaxed;

        use super::super::{INLINE, OUT_OF_MEMORY, POOLED};
        let pool = ScriptPool::start(1, LIMITS);
        let counts = || {
            (
                INLINE.load(Relaxed),
                POOLED.load(Relaxed),
                OUT_OF_MEMORY.load(Relaxed),
            )
        };
        // 15,000 bytes doubled 8 times: 3.84 MB beside the 1.92 MB it
        // was made from, past HEAP_MB, within 32.
        let grow = format!("s = d + d; {} x = (s + s).length;", "s = s + s; ".repeat(6));
        let code = Code::Statements(grow.clone());
        assert!(straight_line(&code));
        let d = json!("y".repeat(15_000));
        let before = counts();
        let out = pool
            .evaluate(msg(code, &[("x", json!(0)), ("s", json!(null)), ("d", d)]))
            .await
            .unwrap();
        assert_eq!(out.values["x"], json!(3_840_000));
        let after = counts();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1, after.2 - before.2),
            (0, 1, 0)
        );
        // It cost this thread its context, so the same code goes to a
        // script thread from now on without trying here first.
        assert!(outgrew_before(&Code::Statements(grow)));
        // Data past MAX_DATA does not even try.
        let big = json!("y".repeat(MAX_DATA + 1));
        let before = counts();
        let out = pool
            .evaluate(msg(
                Code::Statements("x = d.length".into()),
                &[("x", json!(0)), ("d", big)],
            ))
            .await
            .unwrap();
        assert_eq!(out.values["x"], json!(MAX_DATA + 1));
        let after = counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1));
        // And small work stays here.
        let before = counts();
        pool.evaluate(msg(Code::Statements("x = 1".into()), &[("x", json!(0))]))
            .await
            .unwrap();
        assert_eq!(counts().0 - before.0, 1);
    }

    /// Found by the fourth review: a few thousand numbers cost a second to
    /// turn into text 32 times, escaped characters likewise.
    #[test]
    fn data_is_charged_by_what_converting_it_costs() {
        let m = |d: Value, read_back: usize| Evaluate {
            globals: vec![("d".into(), d)],
            code: Code::Statements("x = 1".into()),
            read_back: (0..read_back).map(|i| format!("v{i}")).collect(),
            context: ScriptContext::default(),
        };
        assert!(small_enough(&m(json!("y".repeat(10_000)), 1)));
        assert!(!small_enough(&m(
            json!(vec![1.797_693_134_862_315_7e308; 100]),
            1
        )));
        assert!(!small_enough(&m(json!("\u{1}".repeat(2_000)), 1)));
        assert!(!small_enough(&m(json!(1), MAX_READ_BACK + 1)));
        assert!(small_enough(&m(json!(1), MAX_READ_BACK)));
    }

    /// A loop is never run on the calling thread, even with
    /// `scripts.inline` on: the actors' thread keeps serving other
    /// executions (here, a straight-line script) while it runs.
    #[actix_rt::test]
    async fn a_loop_goes_to_a_script_thread_and_does_not_hold_the_caller() {
        let pool = ScriptPool::start(
            1,
            ScriptLimits {
                timeout_ms: 1500,
                memory_limit_mb: 32,
            },
        );
        let looping = {
            let pool = pool.clone();
            actix_rt::spawn(async move {
                pool.evaluate(msg(Code::Statements("while (true) {}".into()), &[]))
                    .await
            })
        };
        // Let the loop start first, on this thread if it were inline.
        actix_rt::task::yield_now().await;
        let out = pool
            .evaluate(msg(
                Code::Statements("n = n + 1".into()),
                &[("n", json!(1))],
            ))
            .await
            .unwrap();
        assert_eq!(out.values["n"], json!(2));
        assert!(
            !looping.is_finished(),
            "the loop ended before a one-line script did: it held this thread"
        );
        assert_eq!(
            looping.await.unwrap().unwrap_err(),
            ScriptError::Timeout(1500)
        );
    }
}
