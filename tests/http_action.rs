//! The built-in `http` action against a real server of the test's own:
//! JSON in and out, the item's idempotency key sent as a header, a non-2xx
//! answer as an error (caught by `on_error`) unless allowed.

use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::util::*;

async fn echo(req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    HttpResponse::Ok().json(json!({
        "key": header("idempotency-key"),
        "attempt": header("baton-attempt"),
        "got": body.into_inner(),
    }))
}

async fn fail() -> HttpResponse {
    HttpResponse::InternalServerError().json(json!({"error": "boom"}))
}

#[actix_rt::test]
async fn http_action_calls_out_with_the_idempotency_key() {
    let server = HttpServer::new(|| {
        App::new()
            .route("/echo", web::post().to(echo))
            .route("/fail", web::get().to(fail))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "call", "inputs": {"base": "string"}, "outputs": {"key": "string", "status": "number"},
            "variables": {"key": "", "status": 0, "resp": null, "err": null},
            "start": "post", "items": {
            "post": {"type": "action", "action": "http",
                     "inputs": {"method": "'POST'", "url": "base + '/echo'", "body": "({n: 7})"},
                     "outputs": {"resp": "body", "status": "status"}, "next": "extract"},
            "extract": {"type": "task", "script": "key = resp.key;", "next": "bad"},
            "bad": {"type": "action", "action": "http", "inputs": {"url": "base + '/fail'"}, "next": "e", "on_error": "caught"},
            "caught": {"type": "task", "script": "err = error.message;", "next": "lenient"},
            "lenient": {"type": "action", "action": "http", "inputs": {"url": "base + '/fail'", "allow_error_status": "true"},
                        "outputs": {"status": "status"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "call", json!({"base": base})).await;
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(
        e["outputs"]["key"],
        format!("{id}/post"),
        "the item's idempotency key was sent"
    );
    assert_eq!(e["variables"]["resp"]["got"], json!({"n": 7}));
    assert_eq!(e["variables"]["resp"]["attempt"], "1");
    assert!(
        e["variables"]["err"]
            .as_str()
            .unwrap_or("")
            .contains("answered 500"),
        "{e}"
    );
    assert_eq!(
        e["outputs"]["status"], 500,
        "allowed error status comes back as an output"
    );

    let r = http
        .post("/api/workflows", &json!({"id": "tls", "start": "a", "items": {
            "a": {"type": "action", "action": "http", "inputs": {"url": "'ftp://127.0.0.1:1/'"}, "next": "e"}, "e": {"type": "end"}}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = start(&http, "tls", json!({})).await;
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("only http:// and https:// URLs"),
        "a clear error: {e}"
    );
    node.stop().await;
    handle.stop(true).await;
}
