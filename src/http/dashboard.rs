//! `GET /`: the dashboard, one HTML page embedded in the binary (no
//! front-end build step). It reads the same API a client does, from the
//! browser, with the token typed into it: the cluster's nodes and events
//! (served by every node, a standby included), executions and their item
//! graph and log, and buttons for cancel, resume, signal and answer. The
//! page itself holds no data, so it is served without a token.

use actix_web::{get, http::header, HttpResponse};

const PAGE: &str = include_str!("dashboard.html");

/// The dashboard page.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, content_type = "text/html", description = "The dashboard (HTML); it calls the API with the token typed into it")))]
#[get("/")]
pub(crate) async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(PAGE)
}
