//! A standalone node on SQLite with the example workflows imported.
//!
//! ```text
//! cargo run --release --example standalone
//! ```
//!
//! Listens on 127.0.0.1:8280 (override with `BATON_HTTP__LISTEN`), stores
//! everything in `./baton.db` (override with `BATON_DATABASE__URL`), imports
//! every file of `examples/workflows/` that is not there yet, and runs until
//! Ctrl-C.

use baton::{Config, Node};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn")
        .init();
    let config = Config::load(None, std::env::vars(), &[])?;
    let node = Node::builder().config(config).start().await?;
    for line in baton::demo::import_examples(&node).await {
        println!("{line}");
    }
    println!(
        "\nBaton node {} is running on {}",
        node.node_id(),
        node.url()
    );
    println!("try: curl -s -XPOST {}/api/workflows/order/executions -d '{{\"inputs\":{{\"n\":7,\"who\":\"ann\"}}}}'", node.url());
    println!("Ctrl-C stops it gracefully.");
    actix_rt::signal::ctrl_c().await?;
    node.stop().await;
    Ok(())
}
