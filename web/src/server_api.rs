//! The index server's routes: status, peers and files, under `/api/v1`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use p2p_central_server::ServerHandle;
use p2p_protocol::NodeId;
use tokio_util::sync::CancellationToken;

use crate::config::WebConfig;
use crate::views::{NetworkFileView, NetworkFilesView, PeerView, PeersView, ServerStatusView};

/// What every server handler sees.
#[derive(Clone, Debug)]
pub(crate) struct ServerApp {
    pub server: ServerHandle,
    /// The index's node id.
    pub node_id: NodeId,
    /// Its mDNS instance name, when it advertises.
    pub mdns_name: Option<String>,
    pub config: Arc<WebConfig>,
    /// Ends event streams when the node shuts down.
    pub shutdown: CancellationToken,
}

impl ServerApp {
    /// What `GET /api/v1/status` answers.
    pub(crate) fn status(&self) -> ServerStatusView {
        let status = self.server.status();
        ServerStatusView {
            role: "server".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            node_id: self.node_id.to_string(),
            listen_addr: status.local_addr.to_string(),
            mdns_name: self
                .mdns_name
                .as_deref()
                .map(|n| p2p_protocol::printable(n).to_string()),
            uptime_ms: u64::try_from(status.uptime.as_millis()).unwrap_or(u64::MAX),
            peers: status.peers,
            files: status.files,
            stored_bytes: status.stored_bytes,
            max_stored_bytes: status.max_stored_bytes,
        }
    }

    /// What `GET /api/v1/peers` answers.
    pub(crate) fn peers(&self) -> PeersView {
        let (peers, total) = self.server.list_peers();
        PeersView {
            peers: peers.iter().map(|p| PeerView::new(p, None)).collect(),
            total,
        }
    }

    /// What `GET /api/v1/files` answers.
    pub(crate) fn files(&self) -> NetworkFilesView {
        let (files, total) = self.server.list_files();
        NetworkFilesView {
            files: files.iter().map(NetworkFileView::from).collect(),
            total,
        }
    }
}

/// `GET /api/v1/status`: counts, uptime, the index's node id and mDNS name.
async fn status(State(app): State<ServerApp>) -> Json<ServerStatusView> {
    Json(app.status())
}

/// `GET /api/v1/peers`: registered peers with their node ids and heartbeat ages.
async fn peers(State(app): State<ServerApp>) -> Json<PeersView> {
    Json(app.peers())
}

/// `GET /api/v1/files`: the files the index knows.
async fn files(State(app): State<ServerApp>) -> Json<NetworkFilesView> {
    Json(app.files())
}

/// The server's API routes.
pub(crate) fn router(app: ServerApp) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/files", get(files))
        .route("/api/v1/events", crate::events::server_route(&app))
        .with_state(app)
}
