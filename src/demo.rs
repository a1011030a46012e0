//! The example workflows of `examples/workflows/`, built into the binary
//! for `baton serve --demo`.

use crate::error::ApiError;
use crate::node::NodeHandle;

/// Every file of `examples/workflows/`, by name (a test checks this list
/// against the directory).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "approval.yaml",
        include_str!("../examples/workflows/approval.yaml"),
    ),
    (
        "fan-out.json",
        include_str!("../examples/workflows/fan-out.json"),
    ),
    (
        "greet.yaml",
        include_str!("../examples/workflows/greet.yaml"),
    ),
    (
        "order.json",
        include_str!("../examples/workflows/order.json"),
    ),
    (
        "restock.json",
        include_str!("../examples/workflows/restock.json"),
    ),
    (
        "retry-and-catch.json",
        include_str!("../examples/workflows/retry-and-catch.json"),
    ),
    (
        "slow-steps.yaml",
        include_str!("../examples/workflows/slow-steps.yaml"),
    ),
    (
        "square.json",
        include_str!("../examples/workflows/square.json"),
    ),
];

/// Imports every example not stored yet, in process (so that a node with
/// `[auth]` tokens or HTTPS imports them as well); one line per file saying
/// what happened (a definition already stored is kept as it is).
pub async fn import_examples(node: &NodeHandle) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, text) in EXAMPLES {
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        let line = match node.import_definition(text.as_bytes(), yaml).await {
            Ok(_) => format!("imported examples/workflows/{name}"),
            Err(ApiError::Conflict(_)) => {
                format!("kept the stored definition of examples/workflows/{name}")
            }
            Err(e) => format!("could not import examples/workflows/{name}: {e}"),
        };
        lines.push(line);
    }
    lines
}
