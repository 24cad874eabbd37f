//! Share by upload: a request body (raw, or one multipart file field) streamed to disk
//! through `p2p_storage::Upload`, hashed as it arrives, shared when complete.
//!
//! The handler only moves bytes: each piece of the body goes over a bounded channel
//! ([`PIPE_DEPTH`] pieces) to one blocking writer, which writes and hashes it. Hashing and disk
//! never run on the reactor, and a slow disk fills the channel, then stops the handler reading,
//! then TCP's window: the client slows down instead of memory growing. The writer starts the
//! upload (name, size, space checks) before a byte of the body is read, so a refusal costs the
//! client nothing (and a client that sent `Expect: 100-continue`, as curl does for large
//! files, sends no body at all). If the request ends early (the client hung up, the body broke)
//! the channel closes without its end mark and the writer drops the upload, which removes its
//! temporary file: nothing half-written is ever named or shared.

use std::path::Path as FsPath;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use p2p_protocol::ManifestError;
use p2p_storage::{SourceFile, StorageError, Upload, UploadLen};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::peer_api::PeerApp;
use crate::views::UploadView;

/// Body pieces in flight between the handler and the writer. With hyper's reads of at most a
/// few hundred KiB, an upload holds a few MiB at most, whatever its size.
const PIPE_DEPTH: usize = 16;

/// Room for the boundaries and part headers around a multipart form's one file field: a
/// multipart request longer than the upload limit by more than this is refused before it is
/// read.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// What the handler hands the writer.
enum Piece {
    /// The next bytes of the file.
    Data(Bytes),
    /// The body is complete: finish the upload.
    End,
}

/// `?name=NAME` of a raw `POST /api/v1/uploads`.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// `POST /api/v1/uploads`: a multipart form with one file field, or a raw body with
/// `?name=NAME`.
pub(crate) async fn post_upload(
    State(app): State<PeerApp>,
    request: Request,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let declared = content_length(request.headers())?;
    if is_multipart(request.headers()) {
        return post_multipart(app, declared, request).await;
    }
    let Query(query) = Query::<UploadQuery>::try_from_uri(request.uri())
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(name) = query.name else {
        return Err(ApiError::bad_request(
            "name the file: a raw body needs ?name=NAME (or send a multipart form with one file field)",
        ));
    };
    let body = request.into_body().into_data_stream();
    receive(&app, name, UploadLen::Exact(declared), body).await
}

/// `PUT /api/v1/uploads/{name}`: the raw body is the file (what `curl -T FILE URL/` sends).
pub(crate) async fn put_upload(
    State(app): State<PeerApp>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let declared = content_length(&headers)?;
    receive(
        &app,
        name,
        UploadLen::Exact(declared),
        body.into_data_stream(),
    )
    .await
}

/// A multipart form: its one field must be a file; the field's file name is the file's name.
/// Its length is known only at its end, so the request's length bounds it until then.
async fn post_multipart(
    app: PeerApp,
    declared: u64,
    request: Request,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let max = app.config.max_upload_bytes;
    if declared > max.saturating_add(MULTIPART_OVERHEAD) {
        return Err(too_large(max));
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let field = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?
        .ok_or_else(|| ApiError::bad_request("the form has no file field"))?;
    let Some(name) = field.file_name().map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "the form's field is not a file (send one file field, e.g. curl -F file=@PATH)",
        ));
    };
    // The field ends where the next boundary starts: pieces are the file's bytes only. The
    // form must end right after it.
    let body = field.map(|p| p.map_err(|e| e.body_text()));
    let pipe = Pipe::start(&app, name, UploadLen::AtMost(declared))
        .await?
        .feed(body, &app.shutdown)
        .await?;
    match form.next_field().await {
        Ok(None) => {}
        Ok(Some(_)) => {
            let err = ApiError::bad_request("send one file field only (the upload was discarded)");
            return Err(pipe.abort(err).await);
        }
        Err(e) => return Err(pipe.abort(ApiError::bad_request(e.body_text())).await),
    }
    share(&app, pipe.finish().await?).await
}

/// A raw body: streams it to the writer, then shares the file.
async fn receive<E: std::fmt::Display>(
    app: &PeerApp,
    name: String,
    len: UploadLen,
    body: impl Stream<Item = Result<Bytes, E>>,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let body = body.map(|p| p.map_err(|e| e.to_string()));
    let source = Pipe::start(app, name, len)
        .await?
        .feed(body, &app.shutdown)
        .await?
        .finish()
        .await?;
    share(app, source).await
}

/// The writer's result: the finished file, or `None` if the body ended without its end mark
/// (the upload was dropped and its temporary file removed).
type Writer = tokio::task::JoinHandle<Result<Option<SourceFile>, StorageError>>;

/// The handler's end of an upload: the channel to the blocking writer, and the writer.
struct Pipe {
    tx: mpsc::Sender<Piece>,
    writer: Writer,
}

impl Pipe {
    /// Starts the upload on a blocking thread; returns once it has started (its checks
    /// passed) or failed.
    async fn start(app: &PeerApp, name: String, len: UploadLen) -> Result<Self, ApiError> {
        let dir = app.config.upload_dir.clone();
        let max = app.config.max_upload_bytes;
        let (tx, mut rx) = mpsc::channel(PIPE_DEPTH);
        let (started_tx, started) = oneshot::channel();
        let writer = tokio::task::spawn_blocking(move || {
            let mut upload = Upload::begin(&dir, &name, len, max)?;
            let _ = started_tx.send(());
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Data(bytes) => upload.write(&bytes)?,
                    Piece::End => return upload.finish().map(Some),
                }
            }
            // The handler is gone (the client hung up): dropping the upload removes its file.
            Ok(None)
        });
        if started.await.is_err() {
            // Dropped unsent: `begin` failed.
            return Err(writer_failed(writer).await);
        }
        Ok(Self { tx, writer })
    }

    /// Sends every piece of `body` to the writer. A broken body, a writer that stopped (with
    /// an error) or the node shutting down ends the upload: see [`Pipe::abort`].
    async fn feed(
        self,
        body: impl Stream<Item = Result<Bytes, String>>,
        shutdown: &CancellationToken,
    ) -> Result<Self, ApiError> {
        let mut body = std::pin::pin!(body);
        loop {
            let piece = tokio::select! {
                piece = body.next() => piece,
                () = shutdown.cancelled() => return Err(self.abort(shutting_down()).await),
            };
            let bytes = match piece {
                None => return Ok(self),
                Some(Ok(bytes)) if bytes.is_empty() => continue,
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => {
                    let err = ApiError::bad_request(format!("the request body broke off: {e}"));
                    return Err(self.abort(err).await);
                }
            };
            let sent = tokio::select! {
                sent = self.tx.send(Piece::Data(bytes)) => sent,
                () = shutdown.cancelled() => return Err(self.abort(shutting_down()).await),
            };
            if sent.is_err() {
                return Err(writer_failed(self.writer).await);
            }
        }
    }

    /// Ends the upload without naming it: the channel closes without its end mark, the
    /// writer drops the upload (which removes its temporary file) and is waited for, so the
    /// reply goes out only once nothing is left. Returns `err`.
    async fn abort(self, err: ApiError) -> ApiError {
        drop(self.tx);
        let _ = self.writer.await;
        err
    }

    /// Tells the writer the body is complete and waits for the named, hashed file.
    async fn finish(self) -> Result<SourceFile, ApiError> {
        if self.tx.send(Piece::End).await.is_err() {
            return Err(writer_failed(self.writer).await);
        }
        drop(self.tx);
        match self.writer.await {
            Ok(Ok(Some(source))) => Ok(source),
            Ok(Ok(None)) => Err(ApiError::internal("the upload stopped")),
            Ok(Err(e)) => Err(upload_error(e)),
            Err(e) => Err(ApiError::internal(format!("the upload writer failed: {e}"))),
        }
    }
}

/// The error of a writer that stopped early.
async fn writer_failed(writer: Writer) -> ApiError {
    match writer.await {
        Ok(Err(e)) => upload_error(e),
        Ok(Ok(_)) => ApiError::internal("the upload stopped"),
        Err(e) => ApiError::internal(format!("the upload writer failed: {e}")),
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the node is shutting down; the upload was discarded",
    )
}

/// Serves the finished file and answers 201 with what was written. The file is in this peer's
/// list as soon as `share_source` returns, whatever the index says; an index that can't be
/// told right now hears of it when the peer registers again, as for a file shared by path.
async fn share(
    app: &PeerApp,
    source: SourceFile,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let manifest = source.manifest();
    let view = UploadView {
        file_id: manifest.id().to_string(),
        name: manifest.name.clone(),
        size: manifest.size,
        path: source.path().display().to_string(),
    };
    match app.peer.share_source(source).await {
        Ok(id) => info!(file = %id.fmt_short(), size = view.size, "upload shared"),
        Err(err) => warn!(%err, file = %view.file_id, "upload shared here, not announced yet"),
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// The request's `Content-Length`: an upload's size must be known before it is written
/// (the limit and the free space are checked first), so a body without one (chunked) gets
/// 411.
fn content_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "an upload needs a Content-Length header: send a file (curl -T FILE), not a stream of unknown length (curl -T - sends one; --data-binary @- does not)",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

fn too_large(max: u64) -> ApiError {
    upload_error(StorageError::TooLarge { max })
}

/// The reply for a storage error of an upload.
fn upload_error(err: StorageError) -> ApiError {
    let (status, code) = match &err {
        StorageError::UnsafeName(_)
        | StorageError::HiddenName(_)
        | StorageError::WrongLength { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        StorageError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
        StorageError::TooLarge { .. }
        | StorageError::Manifest {
            cause: ManifestError::TooLarge(_),
            ..
        } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        StorageError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    if code == "internal" {
        warn!(%err, "upload failed");
    }
    ApiError::new(status, code, err.to_string())
}

/// Removes the temporary files of uploads a crash left in `dir` (see
/// [`p2p_storage::upload::sweep_stale`]). Run once when the web server starts.
pub(crate) async fn sweep_stale_uploads(dir: &FsPath) {
    let dir = dir.to_owned();
    let swept = tokio::task::spawn_blocking(move || {
        p2p_storage::upload::sweep_stale(&dir, SystemTime::now())
    })
    .await
    .unwrap_or(0);
    if swept > 0 {
        info!(
            files = swept,
            "removed unfinished uploads left by an earlier run"
        );
    }
}
