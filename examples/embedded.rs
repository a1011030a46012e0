//! Baton embedded in another Rust program, with an action of its own.
//!
//! ```text
//! cargo run --example embedded
//! ```
//!
//! The program registers `charge_card`, imports a workflow that calls it,
//! runs one execution to completion and stops. The action receives the
//! item's idempotency key (`{execution}/{item}`), stable across retries and
//! failovers, to make the charge safe to repeat.

use baton::{Config, Node};
use serde_json::json;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("baton-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    config.http.listen = "127.0.0.1:0".into();

    let node = Node::builder()
        .config(config)
        .action("charge_card", |call| async move {
            let amount = call
                .input("amount")
                .and_then(|v| v.as_f64())
                .ok_or("amount missing")?;
            call.log(format!(
                "charging {amount} (key {}, attempt {})",
                call.idempotency_key, call.attempt
            ));
            Ok(json!({ "receipt": format!("R-{}", call.idempotency_key) }))
        })
        .start()
        .await?;

    let http = awc::Client::default();
    let def = json!({
        "id": "checkout", "inputs": {"amount": "number"}, "outputs": {"receipt": "string"},
        "variables": {"receipt": ""}, "start": "charge",
        "items": {
            "charge": {"type": "action", "action": "charge_card", "inputs": {"amount": "amount"},
                       "outputs": {"receipt": "receipt"}, "retry": {"max_attempts": 3, "backoff_ms": 100}, "next": "done"},
            "done": {"type": "end"}
        }
    });
    let r = http
        .post(format!("{}/api/workflows", node.url()))
        .send_json(&def)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("import: {}", r.status());
    // Start it in process and await its result (no HTTP round trips).
    let execution = node
        .start_execution("checkout", json!({"amount": 12.5}), None)
        .await?;
    match execution.result().await {
        Ok(outputs) => println!("execution {}: completed {outputs}", execution.id()),
        Err(e) => println!("execution {}: {e}", execution.id()),
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
