//! Three nodes sharing one database, with a takeover shown.
//!
//! ```text
//! cargo run --example cluster                          # one SQLite file
//! cargo run --example cluster -- postgres://postgres@127.0.0.1:5432/mydb
//! ```
//!
//! Starts three cluster nodes in this process (200 ms heartbeats, failover
//! after 5 missed, one active node), runs workflows whose items take a
//! while, then cuts the active node off as if it had lost the database:
//! it fences itself, a standby takes its executions over after the
//! failover timeout and finishes them. Prints the cluster table and the
//! cluster events on the way.

use std::time::{Duration, Instant};

use baton::client::{cluster_table, Client};
use baton::{Config, Node, NodeHandle};
use baton_actors::messages::NodeState;
use baton_actors::supervisor::FenceNow;
use serde_json::json;

async fn node(db: &str, id: &str) -> anyhow::Result<NodeHandle> {
    let mut config = Config::default();
    config.database.url = db.to_owned();
    config.http.listen = "127.0.0.1:0".into();
    config.node.id = Some(id.to_owned());
    config.cluster.enabled = true;
    config.cluster.heartbeat_interval_ms = 200;
    config.cluster.failover_heartbeats = 5;
    Ok(Node::builder().config(config).start().await?)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("baton-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("cluster.db").display()));

    let mut nodes = Vec::new();
    for id in ["alpha", "beta", "gamma"] {
        nodes.push(node(&db, id).await?);
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    let active = nodes
        .iter()
        .position(|n| n.state() == NodeState::Running)
        .unwrap_or(0);
    let client = Client::new(&nodes[active].url(), None);
    print!("{}", cluster_table(&client.get("/api/cluster").await?));

    let def = dir.join("slow.yaml");
    std::fs::write(&def, include_str!("workflows/slow-steps.yaml"))?;
    let _ = client.import(&def).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let e = client
            .run("slow-steps", json!({"ms": 400}), None, false)
            .await?;
        ids.push(e["id"].as_str().unwrap_or_default().to_owned());
    }
    actix_rt::time::sleep(Duration::from_millis(600)).await;

    println!(
        "\n{} loses the database (fenced) with 10 executions mid-run",
        nodes[active].node_id()
    );
    let cut = Instant::now();
    nodes[active]
        .supervisor()
        .send(FenceNow {
            reason: "the example cut it off".into(),
        })
        .await?;
    let next = loop {
        if let Some(i) = nodes.iter().position(|n| n.state() == NodeState::Running) {
            break i;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "{} is active {:?} later",
        nodes[next].node_id(),
        cut.elapsed()
    );
    let client = Client::new(&nodes[next].url(), None);
    for id in &ids {
        loop {
            let e = client.get(&format!("/api/executions/{id}")).await?;
            if e["state"] != "running" {
                println!("{id}: {} on {}", e["state"], e["owner_node"]);
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    print!("\n{}", cluster_table(&client.get("/api/cluster").await?));
    for e in client
        .get("/api/cluster/events")
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .take(6)
    {
        println!(
            "{} {:<9} {}",
            e["time"].as_str().unwrap_or(""),
            e["kind"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
    for n in nodes {
        n.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
