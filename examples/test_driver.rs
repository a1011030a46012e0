//! Driving a node's actor tree with messages, as a test would.
//!
//! ```text
//! cargo run --example test_driver
//! ```
//!
//! Starts two cluster nodes in this process on one SQLite file (100 ms
//! heartbeats, failover after 5 missed), then, with messages only: forces
//! a heartbeat, fences the active node, forces a peer scan on the standby
//! (which takes over), and makes the fenced node rejoin. Every message used
//! here is public: `Beat` (HeartbeatActor), `ScanPeers`
//! (FailoverDetectorActor), `FenceNow`, `Rejoin`, `QueryState` and
//! `GetChildren` (NodeSupervisor).

use std::time::Duration;

use baton::{Config, Node, NodeHandle};
use baton_actors::failover::ScanPeers;
use baton_actors::heartbeat::Beat;
use baton_actors::messages::NodeState;
use baton_actors::supervisor::{FenceNow, GetChildren, QueryState, Rejoin};

async fn node(db: &str, id: &str) -> anyhow::Result<NodeHandle> {
    let mut config = Config::default();
    config.database.url = db.to_owned();
    config.http.listen = "127.0.0.1:0".into();
    config.node.id = Some(id.to_owned());
    config.cluster.enabled = true;
    config.cluster.heartbeat_interval_ms = 100;
    config.cluster.failover_heartbeats = 5;
    Ok(Node::builder().config(config).start().await?)
}

async fn state(n: &NodeHandle) -> anyhow::Result<NodeState> {
    Ok(n.supervisor().send(QueryState).await?.state)
}

async fn wait_for(n: &NodeHandle, want: NodeState) -> anyhow::Result<()> {
    for _ in 0..200 {
        if state(n).await? == want {
            return Ok(());
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{} never became {}", n.node_id(), want.as_str())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("baton-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}?mode=rwc", dir.join("cluster.db").display());

    let a = node(&db, "driver-a").await?;
    wait_for(&a, NodeState::Running).await?;
    let b = node(&db, "driver-b").await?;
    wait_for(&b, NodeState::Standby).await?;
    println!(
        "a: {}, b: {}",
        state(&a).await?.as_str(),
        state(&b).await?.as_str()
    );

    let b_children = b.supervisor().send(GetChildren).await?;
    let (Some(b_heartbeat), Some(b_detector)) = (b_children.heartbeat, b_children.detector) else {
        anyhow::bail!("cluster nodes have a heartbeat actor and a detector");
    };
    println!("b heartbeat committed: {:?}", b_heartbeat.send(Beat).await?);

    a.supervisor()
        .send(FenceNow {
            reason: "the test driver said so".into(),
        })
        .await?;
    println!("a after FenceNow: {}", state(&a).await?.as_str());

    // a fenced itself and writes no more heartbeats. Past the failover
    // timeout (5 x 100 ms) a scan on b declares it dead and b takes over;
    // b's own detector ticks too, so whichever scan comes first wins.
    for _ in 0..100 {
        let report = b_detector.send(ScanPeers).await?;
        if !matches!(&report, Ok(r) if r.taken_over.is_empty()) {
            println!("b scan: {report:?}");
        }
        if state(&b).await? == NodeState::Running {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&b, NodeState::Running).await?;
    println!("b: {}", state(&b).await?.as_str());

    // a rejoins as a standby by itself once the database answers; Rejoin
    // makes a fenced node do it at once, and is refused otherwise.
    match a.supervisor().send(Rejoin).await? {
        Ok(()) => println!("a: rejoin requested"),
        Err(e) => println!("a: {e}"),
    }
    wait_for(&a, NodeState::Standby).await?;
    println!("a: {}", state(&a).await?.as_str());

    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
