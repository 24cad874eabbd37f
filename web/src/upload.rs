//! Share by upload: a request body (raw, or one multipart file field) streamed to disk
//! through `p2p_storage::Upload`, hashed as it arrives, shared when complete.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::peer_api::PeerApp;

/// `POST /api/v1/uploads`: a multipart form with one file field, or a raw body with
/// `?name=NAME`.
pub(crate) async fn post_upload(State(app): State<PeerApp>) -> ApiError {
    let _ = app;
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}

/// `PUT /api/v1/uploads/{name}`: the raw body is the file (what `curl -T FILE URL/` sends).
pub(crate) async fn put_upload(State(app): State<PeerApp>, Path(name): Path<String>) -> ApiError {
    let _ = (app, name);
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
