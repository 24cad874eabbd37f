//! The peer's routes: every verb of the peer shell, under `/api/v1`. Each handler checks its
//! input, makes one [`PeerHandle`] call and answers with a view from [`crate::views`];
//! [`PeerError`]s become [`ApiError`]s in one place, at the end of this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, extract};
use p2p_peer::{DownloadId, DownloadRequest, PeerError, PeerHandle};
use p2p_protocol::manifest_file::{AnyManifestFile, SUFFIX};
use p2p_protocol::{ErrorCode, printable};
use p2p_storage::StorageError;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WebConfig;
use crate::error::ApiError;
use crate::views::{
    DownloadBody, DownloadView, DownloadsView, HostBody, HostsView, MessageBody, MessageSentView,
    MessageView, MessagesView, NetworkFileView, NetworkFilesView, PeerStatusView, PeerView,
    PeersView, ShareBody, SharedFileView, SharedFilesView, UnsharedView,
};

/// What every peer handler sees.
#[derive(Clone, Debug)]
pub(crate) struct PeerApp {
    pub peer: PeerHandle,
    pub config: Arc<WebConfig>,
    /// Ends event streams when the node shuts down.
    pub shutdown: CancellationToken,
    /// The web server's background tasks (the network poller), waited for when it ends.
    pub tasks: TaskTracker,
}

/// The peer's API routes.
pub(crate) fn router(app: PeerApp) -> Router {
    // Every other body is held to `max_json_body` (serve.rs); a download request may carry a whole `.p2pm` (a big folder's is megabytes).
    let manifest_limit = DefaultBodyLimit::max(app.config.max_manifest_body);
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/files", get(files))
        .route("/api/v1/shares", post(share))
        .route("/api/v1/shares/{id}", delete(unshare))
        .route("/api/v1/network/files", get(network_files))
        .route("/api/v1/peers", get(peers))
        .route(
            "/api/v1/downloads",
            get(downloads).post(start_download).layer(manifest_limit),
        )
        .route(
            "/api/v1/downloads/{handle}",
            get(download).delete(cancel_download),
        )
        .route("/api/v1/downloads/{handle}/resume", post(resume_download))
        .route("/api/v1/hosts", get(hosts).post(add_host))
        .route("/api/v1/hosts/{addr}", delete(remove_host))
        .route("/api/v1/messages", get(messages).post(send_message))
        .route("/api/v1/events", crate::events::peer_route(&app))
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

async fn status(State(app): State<PeerApp>) -> Json<PeerStatusView> {
    Json(PeerStatusView::new(
        &app.peer.status(),
        app.config.found_index_by.clone(),
    ))
}

/// The files this peer shares, as `GET /files` lists them.
pub(crate) fn shared_files(peer: &PeerHandle) -> Vec<SharedFileView> {
    peer.files().iter().map(SharedFileView::from).collect()
}

async fn files(State(app): State<PeerApp>) -> Json<SharedFilesView> {
    Json(SharedFilesView {
        files: shared_files(&app.peer),
    })
}

async fn share(
    State(app): State<PeerApp>,
    Json(body): Json<ShareBody>,
) -> Result<(StatusCode, Json<SharedFilesView>), ApiError> {
    if body.path.is_empty() {
        return Err(ApiError::bad_request("give the path of a file or folder"));
    }
    let shared = app.peer.share_path(Path::new(&body.path)).await?;
    let files = shared.iter().map(SharedFileView::from).collect();
    Ok((StatusCode::CREATED, Json(SharedFilesView { files })))
}

async fn unshare(
    State(app): State<PeerApp>,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<UnsharedView>, ApiError> {
    let file_id = app.peer.unshare(&id).await?;
    Ok(Json(UnsharedView {
        file_id: file_id.to_string(),
    }))
}

/// `?q=WORDS` of `GET /network/files`.
#[derive(Debug, Deserialize)]
struct NetworkQuery {
    #[serde(default)]
    q: String,
}

async fn network_files(
    State(app): State<PeerApp>,
    query: Result<Query<NetworkQuery>, QueryRejection>,
) -> Result<Json<NetworkFilesView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let words = query.q.trim();
    let (files, total) = if words.is_empty() {
        app.peer.network_files().await?
    } else {
        app.peer.search(words).await?
    };
    Ok(Json(NetworkFilesView {
        files: files.iter().map(NetworkFileView::from).collect(),
        total,
    }))
}

/// The peers the index knows, this one marked; what `GET /peers` answers.
pub(crate) async fn network_peers(peer: &PeerHandle) -> Result<PeersView, PeerError> {
    let (peers, total) = peer.network_peers().await?;
    let me = Some(peer.node_id());
    Ok(PeersView {
        peers: peers.iter().map(|p| PeerView::new(p, me)).collect(),
        total,
    })
}

async fn peers(State(app): State<PeerApp>) -> Result<Json<PeersView>, ApiError> {
    Ok(Json(network_peers(&app.peer).await?))
}

async fn start_download(
    State(app): State<PeerApp>,
    Json(body): Json<DownloadBody>,
) -> Result<impl IntoResponse, ApiError> {
    // The peer adds its direct hosts (`--from`, `POST /hosts`) to every request itself.
    let (target, request) = match (body.id, body.manifest) {
        (Some(id), None) => {
            let id = id.trim().to_owned();
            if id.is_empty() {
                return Err(ApiError::bad_request("give a file id or a prefix of one"));
            }
            let request = DownloadRequest::by_id(&id);
            (id, request)
        }
        (None, Some(text)) => {
            // The command line's own parser and checks: version, fields, every hash.
            let doc =
                AnyManifestFile::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
            app.peer.check_manifest_index(&doc)?;
            let target = format!("{}{SUFFIX}", manifest_name(&doc));
            (target, DownloadRequest::for_manifest_file(doc, &[]))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"id\" and \"manifest\"",
            ));
        }
    };
    // The peer checks that the output folder exists, for every front end alike.
    let handle = app
        .peer
        .start_download(target, request, PathBuf::from(body.out))
        .await?;
    let view = download_view(&app.peer, handle)?;
    let location = format!("/api/v1/downloads/{handle}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    ))
}

fn manifest_name(doc: &AnyManifestFile) -> &str {
    match doc {
        AnyManifestFile::File(f) => &f.manifest.name,
        AnyManifestFile::Folder(f) => &f.name,
    }
}

/// The view of download `handle`.
fn download_view(peer: &PeerHandle, handle: DownloadId) -> Result<DownloadView, ApiError> {
    peer.download_info(handle)
        .map(|info| DownloadView::from(&info))
        .ok_or_else(|| PeerError::UnknownDownload(handle).into())
}

/// A handle from the path; one that is not a number names no download.
fn parse_handle(text: &str) -> Result<DownloadId, ApiError> {
    text.parse()
        .map(DownloadId)
        .map_err(|_| ApiError::not_found(format!("no download {} on this peer", printable(text))))
}

async fn downloads(State(app): State<PeerApp>) -> Json<DownloadsView> {
    Json(DownloadsView {
        downloads: app
            .peer
            .downloads()
            .iter()
            .map(DownloadView::from)
            .collect(),
    })
}

async fn download(
    State(app): State<PeerApp>,
    extract::Path(handle): extract::Path<String>,
) -> Result<Json<DownloadView>, ApiError> {
    Ok(Json(download_view(&app.peer, parse_handle(&handle)?)?))
}

async fn cancel_download(
    State(app): State<PeerApp>,
    extract::Path(handle): extract::Path<String>,
) -> Result<Json<DownloadView>, ApiError> {
    let info = app.peer.cancel_download(parse_handle(&handle)?)?;
    Ok(Json(DownloadView::from(&info)))
}

async fn resume_download(
    State(app): State<PeerApp>,
    extract::Path(handle): extract::Path<String>,
) -> Result<Json<DownloadView>, ApiError> {
    let info = app.peer.resume_download(parse_handle(&handle)?)?;
    Ok(Json(DownloadView::from(&info)))
}

fn hosts_view(peer: &PeerHandle) -> HostsView {
    HostsView {
        hosts: peer.direct_hosts().iter().map(|a| a.to_string()).collect(),
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{} is not a host:port address (an IP address and a port)",
            printable(text)
        ))
    })
}

async fn hosts(State(app): State<PeerApp>) -> Json<HostsView> {
    Json(hosts_view(&app.peer))
}

async fn add_host(
    State(app): State<PeerApp>,
    Json(body): Json<HostBody>,
) -> Result<(StatusCode, Json<HostsView>), ApiError> {
    let added = app.peer.add_direct_host(parse_addr(&body.addr)?);
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(hosts_view(&app.peer))))
}

async fn remove_host(
    State(app): State<PeerApp>,
    extract::Path(addr): extract::Path<String>,
) -> Result<Json<HostsView>, ApiError> {
    let addr = parse_addr(&addr)?;
    if !app.peer.remove_direct_host(addr) {
        return Err(ApiError::not_found(format!(
            "{addr} is not a direct host of this peer"
        )));
    }
    Ok(Json(hosts_view(&app.peer)))
}

async fn messages(State(app): State<PeerApp>) -> Json<MessagesView> {
    Json(MessagesView {
        messages: app.peer.messages().iter().map(MessageView::from).collect(),
    })
}

async fn send_message(
    State(app): State<PeerApp>,
    Json(body): Json<MessageBody>,
) -> Result<(StatusCode, Json<MessageSentView>), ApiError> {
    if body.to.trim().is_empty() {
        return Err(ApiError::bad_request(
            "give the peer to send to (\"to\": host:port or a peer id)",
        ));
    }
    let (_, node) = app.peer.send_message_to(body.to.trim(), &body.text).await?;
    Ok((
        StatusCode::CREATED,
        Json(MessageSentView {
            node_id: node.to_string(),
        }),
    ))
}

/// Every peer error as the API answers it: the status and code say what kind of failure it
/// was (docs/API.md lists them), the message is the error's own line.
impl From<PeerError> for ApiError {
    fn from(err: PeerError) -> Self {
        let (status, code) = peer_status(&err);
        ApiError::new(status, code, err.to_string())
    }
}

/// The status and code of a peer error.
fn peer_status(err: &PeerError) -> (StatusCode, &'static str) {
    match err {
        PeerError::NoIndex => (StatusCode::SERVICE_UNAVAILABLE, "no_index"),
        PeerError::IndexUnreachable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "index_unavailable")
        }
        PeerError::IndexRefused { code, .. } => match code {
            ErrorCode::UnknownFile => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::AmbiguousPrefix => (StatusCode::CONFLICT, "ambiguous_prefix"),
            ErrorCode::BadRequest | ErrorCode::InvalidManifest => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ErrorCode::LimitExceeded => (StatusCode::CONFLICT, "limit_exceeded"),
            _ => (StatusCode::BAD_GATEWAY, "index_refused"),
        },
        PeerError::Storage(err) => storage_status(err),
        // A folder that failed to share answers as the file inside it that failed.
        PeerError::Share { cause, .. } => peer_status(cause),
        PeerError::BadId(_)
        | PeerError::NotAFile(_)
        | PeerError::NoOutputFolder(_)
        | PeerError::NothingToDownload
        | PeerError::IncompleteFolder(_)
        | PeerError::Folder(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        PeerError::NotSharedPrefix(_)
        | PeerError::NotShared(_)
        | PeerError::UnknownDownload(_)
        | PeerError::UnknownRecipient(_) => (StatusCode::NOT_FOUND, "not_found"),
        PeerError::NoHosts { .. } => (StatusCode::NOT_FOUND, "no_hosts"),
        PeerError::DownloadRunning(_) => (StatusCode::CONFLICT, "download_running"),
        PeerError::AmbiguousPrefix { .. } => (StatusCode::CONFLICT, "ambiguous_prefix"),
        PeerError::OtherIndex(_) => (StatusCode::CONFLICT, "other_index"),
        PeerError::PeerUnreachable { .. } | PeerError::NoManifest { .. } => {
            (StatusCode::BAD_GATEWAY, "peer_unreachable")
        }
        PeerError::ManifestMismatch(_)
        | PeerError::FolderMismatch(_)
        | PeerError::DownloadFailed { .. }
        | PeerError::NoFolderRecord { .. }
        | PeerError::FilesMissing(_) => (StatusCode::BAD_GATEWAY, "download_failed"),
        PeerError::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        PeerError::Listen { .. } | PeerError::Dht(_) | PeerError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// The status and code of a disk error.
fn storage_status(err: &StorageError) -> (StatusCode, &'static str) {
    match err {
        StorageError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        StorageError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::PermissionDenied => {
            (StatusCode::FORBIDDEN, "permission_denied")
        }
        StorageError::AlreadyExists(_) | StorageError::NotOurs(_) => {
            (StatusCode::CONFLICT, "already_exists")
        }
        StorageError::Busy(_) => (StatusCode::CONFLICT, "already_running"),
        StorageError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        StorageError::NotAFile(_) | StorageError::UnsafeName(_) | StorageError::Manifest { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}
