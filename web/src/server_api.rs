//! The index server's routes: status, peers and files, under `/api/v1`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use p2p_central_server::ServerHandle;
use p2p_protocol::NodeId;
use tokio_util::sync::CancellationToken;

use crate::config::WebConfig;
use crate::error::ApiError;

/// What every server handler sees.
#[allow(dead_code)] // skeleton: the handlers land next
#[derive(Clone, Debug)]
pub(crate) struct ServerApp {
    pub server: ServerHandle,
    /// The index's node id.
    pub node_id: NodeId,
    /// Its mDNS instance name, when it advertises.
    pub mdns_name: Option<String>,
    pub config: Arc<WebConfig>,
    /// The address the web server is bound to (for the `Host` and `Origin` checks).
    pub bound: SocketAddr,
    /// Ends event streams when the node shuts down.
    pub shutdown: CancellationToken,
}

async fn todo() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}

/// The server's API routes.
pub(crate) fn router(app: ServerApp) -> Router {
    Router::new()
        .route("/api/v1/status", get(todo))
        .route("/api/v1/peers", get(todo))
        .route("/api/v1/files", get(todo))
        .route("/api/v1/events", crate::events::server_route(&app))
        .with_state(app)
}
