//! The page: HTML, CSS and JavaScript embedded in the binary, served with a strict
//! Content-Security-Policy.

use axum::Router;

/// The peer's page routes (`/`, its scripts and styles).
pub(crate) fn peer_routes() -> Router {
    Router::new()
}

/// The server's page routes.
pub(crate) fn server_routes() -> Router {
    Router::new()
}
