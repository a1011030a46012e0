//! The ledger: a recorder on loopback, outside Baton's database, that the
//! generated workflows' `http` actions post to. Each call appends
//! `(execution, item, attempt, idempotency key, node, acc)` with the time
//! it arrived, so the checker sees every time an item's side effect ran.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;

/// One side effect, as an item's `http` action reported it.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    /// The execution.
    pub execution: String,
    /// The item.
    pub item: String,
    /// The attempt number.
    pub attempt: i64,
    /// `{execution}/{item}`.
    pub key: String,
    /// The node that ran it.
    pub node: String,
    /// The workflow's `acc` variable when it ran.
    pub acc: f64,
    /// When it arrived (set by the recorder).
    #[serde(skip, default = "Instant::now")]
    pub at: Instant,
}

/// The recorder and what it has received.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// `http://127.0.0.1:PORT/record`.
    pub url: String,
    entries: Arc<Mutex<Vec<Entry>>>,
    server: actix_web::dev::ServerHandle,
}

impl Ledger {
    /// Starts the recorder on a free loopback port.
    pub fn start() -> std::io::Result<Ledger> {
        let entries: Arc<Mutex<Vec<Entry>>> = Arc::default();
        let shared = web::Data::new(entries.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(shared.clone()).route(
                "/record",
                web::post().to(
                    |data: web::Data<Arc<Mutex<Vec<Entry>>>>, body: web::Json<Entry>| async move {
                        let mut e = body.into_inner();
                        e.at = Instant::now();
                        if let Ok(mut v) = data.lock() {
                            v.push(e);
                        }
                        // Answer late: a fault is likelier to land between
                        // the side effect and its item's checkpoint.
                        actix_rt::time::sleep(std::time::Duration::from_millis(150)).await;
                        HttpResponse::Ok().json(serde_json::json!({ "ok": true }))
                    },
                ),
            )
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("recorder has no address"))?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Ledger {
            url: format!("http://{addr}/record"),
            entries,
            server: handle,
        })
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops the recorder.
    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}
