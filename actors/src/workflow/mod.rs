//! Workflow definitions: the model, its parser and validator, and the
//! script engine that runs the JavaScript inside them.
//!
//! # Layout
//! - `raw`: a JSON/YAML tree that keeps duplicate keys, so they can be reported
//! - `model`: the typed definition (items, types, retries)
//! - `parse`: from the raw tree to the model, collecting every problem with its path
//! - `cache`: the one definition cache every loader of a stored version uses
//! - `script`: the QuickJS script pool (a `SyncArbiter`, one runtime per thread)

mod cache;
#[cfg(test)]
mod fuzz;
mod model;
mod parse;
mod raw;
pub mod script;

pub use cache::{Current, DefinitionCache, SUPPORTED_ITEM_TYPES};
pub use model::{Definition, Item, ItemKind, Retry, ValueType};
pub use parse::{
    check_inputs, join_path, json_type, parse_definition, ParseOptions, Parsed, Problem,
    SourceFormat, ITEM_TYPES, ROOT_PATH,
};
pub use raw::Raw;
