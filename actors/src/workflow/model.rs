//! The typed workflow definition. Built only by `parse_definition`, which
//! guarantees every invariant the engine relies on (targets exist, the
//! start item exists, scripts compile). Serializes to the canonical JSON
//! form that the API returns and the store keeps.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A declared type of an input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// Anything.
    Any,
}

impl ValueType {
    /// Parses a type name.
    pub fn from_name(s: &str) -> Option<ValueType> {
        Some(match s {
            "string" => ValueType::String,
            "number" => ValueType::Number,
            "boolean" => ValueType::Boolean,
            "object" => ValueType::Object,
            "array" => ValueType::Array,
            "any" => ValueType::Any,
            _ => return None,
        })
    }

    /// The type's name.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::Object => "object",
            ValueType::Array => "array",
            ValueType::Any => "any",
        }
    }

    /// True when `v` is of this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ValueType::String => v.is_string(),
            ValueType::Number => v.is_number(),
            ValueType::Boolean => v.is_boolean(),
            ValueType::Object => v.is_object(),
            ValueType::Array => v.is_array(),
            ValueType::Any => true,
        }
    }
}

/// Retry policy of an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub backoff_ms: u64,
}

/// What an item does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ItemKind {
    /// Runs a script.
    Task {
        /// JavaScript statements.
        script: String,
        /// The item after it.
        next: String,
    },
    /// Chooses the next item.
    Decision {
        /// A JavaScript expression.
        condition: String,
        /// Next item when truthy.
        then: String,
        /// Next item when falsy.
        #[serde(rename = "else")]
        otherwise: String,
    },
    /// Calls a named action.
    Action {
        /// The action's name.
        action: String,
        /// Parameter name to expression.
        inputs: BTreeMap<String, String>,
        /// Variable name to result field.
        outputs: BTreeMap<String, String>,
        /// The item after it.
        next: String,
    },
    /// Runs another workflow.
    Workflow {
        /// The child workflow's id.
        workflow: String,
        /// Child input to parent expression.
        inputs: BTreeMap<String, String>,
        /// Parent variable to child output.
        outputs: BTreeMap<String, String>,
        /// Do not wait for the child.
        #[serde(rename = "async")]
        is_async: bool,
        /// The item after it.
        next: String,
    },
    /// Runs a workflow per element of an array.
    Foreach {
        /// The array variable.
        over: String,
        /// The element's name in `inputs` expressions.
        #[serde(rename = "as")]
        element: String,
        /// The workflow to run.
        workflow: String,
        /// Child input to expression.
        inputs: BTreeMap<String, String>,
        /// Array variable to child output.
        collect: BTreeMap<String, String>,
        /// Run the elements concurrently.
        parallel: bool,
        /// The item after it.
        next: String,
    },
    /// Waits for a time.
    Timer {
        /// Wait this long.
        #[serde(skip_serializing_if = "Option::is_none")]
        for_ms: Option<u64>,
        /// Or until this expression's ISO time.
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        /// The item after it.
        next: String,
    },
    /// Waits for a named signal.
    Signal {
        /// The signal's name.
        name: String,
        /// Variable receiving the payload.
        #[serde(skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        /// Give up after this long.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// The item after it.
        next: String,
    },
    /// Waits for a user's answer.
    Interaction {
        /// What the answer must contain.
        inputs: BTreeMap<String, ValueType>,
        /// Give up after this long.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// The item after it.
        next: String,
    },
    /// Ends the execution.
    End {
        /// Expression for a failure message; absent: completed.
        #[serde(skip_serializing_if = "Option::is_none")]
        fail: Option<String>,
    },
}

impl ItemKind {
    /// Every type's name, in the order of [`ItemKind::type_name`]'s match.
    pub const TYPE_NAMES: [&'static str; 9] = [
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

    /// The type's name as written in definitions.
    pub fn type_name(&self) -> &'static str {
        match self {
            ItemKind::Task { .. } => "task",
            ItemKind::Decision { .. } => "decision",
            ItemKind::Action { .. } => "action",
            ItemKind::Workflow { .. } => "workflow",
            ItemKind::Foreach { .. } => "foreach",
            ItemKind::Timer { .. } => "timer",
            ItemKind::Signal { .. } => "signal",
            ItemKind::Interaction { .. } => "interaction",
            ItemKind::End { .. } => "end",
        }
    }

    /// The items this one can go to (not counting `on_error`), with the
    /// field naming each.
    pub fn targets(&self) -> Vec<(&'static str, &str)> {
        match self {
            ItemKind::Decision {
                then, otherwise, ..
            } => vec![("then", then), ("else", otherwise)],
            ItemKind::End { .. } => vec![],
            ItemKind::Task { next, .. }
            | ItemKind::Action { next, .. }
            | ItemKind::Workflow { next, .. }
            | ItemKind::Foreach { next, .. }
            | ItemKind::Timer { next, .. }
            | ItemKind::Signal { next, .. }
            | ItemKind::Interaction { next, .. } => vec![("next", next)],
        }
    }
}

/// One item of a definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    /// What it does.
    #[serde(flatten)]
    pub kind: ItemKind,
    /// Where to go on an error, with the error in variable `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// How to retry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// A validated workflow definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Definition {
    /// Its id.
    pub id: String,
    /// Its display name (the id when not given).
    pub name: String,
    /// Declared inputs.
    pub inputs: BTreeMap<String, ValueType>,
    /// Declared outputs.
    pub outputs: BTreeMap<String, ValueType>,
    /// Variables and their initial values.
    pub variables: serde_json::Map<String, Value>,
    /// The first item.
    pub start: String,
    /// The workflow-level error handler item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// The items by id.
    pub items: BTreeMap<String, Item>,
}

impl Definition {
    /// The canonical JSON text of the definition.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}
