//! Runs a node's web server: the role's API and page behind the guards, until shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use p2p_central_server::ServerHandle;
use p2p_peer::PeerHandle;
use p2p_protocol::NodeId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::WebConfig;
use crate::peer_api::{self, PeerApp};
use crate::server_api::{self, ServerApp};

/// The URL that logs a browser in to the page at `addr` (it sets the session cookie).
pub fn login_url(addr: SocketAddr, api_key: &str) -> String {
    format!("http://{addr}/login?token={api_key}")
}

/// Serves a peer's API and page on `listener` until `shutdown` is cancelled.
pub async fn serve_peer(
    listener: TcpListener,
    peer: PeerHandle,
    config: WebConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let bound = listener.local_addr()?;
    crate::upload::sweep_stale_uploads(&config.upload_dir).await;
    let app = PeerApp {
        peer,
        config: Arc::new(config),
        bound,
        shutdown: shutdown.clone(),
    };
    let router = peer_api::router(app).merge(crate::assets::peer_routes());
    run(listener, router, shutdown).await
}

/// Serves the index server's API and page on `listener` until `shutdown` is cancelled.
pub async fn serve_server(
    listener: TcpListener,
    server: ServerHandle,
    node_id: NodeId,
    mdns_name: Option<String>,
    config: WebConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let bound = listener.local_addr()?;
    let app = ServerApp {
        server,
        node_id,
        mdns_name,
        config: Arc::new(config),
        bound,
        shutdown: shutdown.clone(),
    };
    let router = server_api::router(app).merge(crate::assets::server_routes());
    run(listener, router, shutdown).await
}

async fn run(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
