//! The example workflows of `examples/workflows/`, built into the binary
//! for `baton serve --demo`.

use crate::client::Client;

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

/// Imports every example not stored yet; one line per file saying what
/// happened (a definition already stored is kept as it is).
pub async fn import_examples(client: &Client) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, text) in EXAMPLES {
        let line = match client.import_new(name, text.as_bytes()).await {
            Ok(Some(def)) => format!("imported {} from examples/workflows/{name}", def["id"]),
            Ok(None) => format!("kept the stored definition of examples/workflows/{name}"),
            Err(e) => format!("could not import examples/workflows/{name}: {e}"),
        };
        lines.push(line);
    }
    lines
}
