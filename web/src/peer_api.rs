//! The peer's routes: every verb of the peer shell, under `/api/v1`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use p2p_peer::PeerHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebConfig;
use crate::error::ApiError;

/// What every peer handler sees.
#[allow(dead_code)] // skeleton: the handlers land next
#[derive(Clone, Debug)]
pub(crate) struct PeerApp {
    pub peer: PeerHandle,
    pub config: Arc<WebConfig>,
    /// The address the web server is bound to (for the `Host` and `Origin` checks).
    pub bound: SocketAddr,
    /// Ends event streams when the node shuts down.
    pub shutdown: CancellationToken,
}

async fn todo() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}

/// The peer's API routes.
pub(crate) fn router(app: PeerApp) -> Router {
    Router::new()
        .route("/api/v1/status", get(todo))
        .route("/api/v1/files", get(todo))
        .route("/api/v1/shares", post(todo))
        .route("/api/v1/shares/{id}", delete(todo))
        .route("/api/v1/network/files", get(todo))
        .route("/api/v1/peers", get(todo))
        .route("/api/v1/downloads", get(todo).post(todo))
        .route("/api/v1/downloads/{handle}", get(todo).delete(todo))
        .route("/api/v1/downloads/{handle}/resume", post(todo))
        .route("/api/v1/hosts", get(todo).post(todo))
        .route("/api/v1/hosts/{addr}", delete(todo))
        .route("/api/v1/messages", get(todo).post(todo))
        .route("/api/v1/events", get(todo))
        .route(
            "/api/v1/uploads",
            post(crate::upload::post_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/uploads/{name}",
            put(crate::upload::put_upload).layer(DefaultBodyLimit::disable()),
        )
        .with_state(app)
}
