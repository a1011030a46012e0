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

use std::time::Duration;

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
    let mut r = http
        .post(format!("{}/api/workflows", node.url()))
        .send_json(&def)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("import: {}", r.status());
    let started: serde_json::Value = http
        .post(format!("{}/api/workflows/checkout/executions", node.url()))
        .send_json(&json!({"inputs": {"amount": 12.5}}))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .json()
        .await?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    loop {
        r = http
            .get(format!("{}/api/executions/{id}", node.url()))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let e: serde_json::Value = r.json().await?;
        if e["state"] != "running" {
            println!("execution {id}: {} {}", e["state"], e["outputs"]);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
