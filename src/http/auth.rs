//! Bearer-token authentication. With no `[auth] tokens` configured the API
//! is open, and `Config::load` refuses any non-loopback listen address.
//! Tokens are stored as SHA-256 digests; `viewer` tokens may only read.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{get, web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::config::Role;
use crate::error::ApiError;

/// Paths that answer without a token (load balancers and supervisors).
pub(crate) const OPEN: [&str; 3] = ["/api/healthstatus", "/health/liveness", "/"];

/// The authentication middleware.
pub(crate) async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return next.call(req).await;
    };
    let tokens = &state.config.auth.tokens;
    if tokens.is_empty() || OPEN.contains(&req.path()) {
        return next.call(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return Err(ApiError::Unauthorized(
            "this API needs `Authorization: Bearer <token>`".into(),
        )
        .into());
    };
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    let role = tokens
        .iter()
        .find(|t| t.sha256.eq_ignore_ascii_case(&digest))
        .map(|t| t.role);
    match role {
        None => Err(ApiError::Unauthorized("unknown token".into()).into()),
        Some(Role::Viewer) if req.method() != Method::GET && req.method() != Method::HEAD => {
            Err(ApiError::Forbidden("a viewer token may only read".into()).into())
        }
        Some(role) => {
            req.extensions_mut().insert(role);
            next.call(req).await
        }
    }
}

/// What `/api/auth/whoami` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WhoAmI {
    /// `operator` (may change things) or `viewer` (may only read).
    role: String,
    /// False when the node has no `[auth] tokens` (open, loopback only):
    /// every caller is an operator.
    authenticated: bool,
}

/// The role of the presented token, so that a client (the dashboard)
/// offers only what the token may do. Served by standbys too.
#[utoipa::path(get, path = "/api/auth/whoami", tag = "health",
    responses((status = 200, body = WhoAmI), (status = 401, description = "no token or an unknown one")))]
#[get("/api/auth/whoami")]
pub(crate) async fn whoami(req: HttpRequest) -> HttpResponse {
    let role = req.extensions().get::<Role>().copied();
    HttpResponse::Ok().json(WhoAmI {
        role: match role {
            Some(Role::Viewer) => "viewer",
            _ => "operator",
        }
        .to_owned(),
        authenticated: role.is_some(),
    })
}
