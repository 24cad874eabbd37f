//! [`ApiError`]: every error the API answers, as `{"error": {"code": ..., "message": ...}}`
//! with the status code its `code` implies.
//!
//! Errors the handlers did not write (axum's own rejections: a JSON syntax error, a missing or
//! unknown field, a wrong content type, a body over the limit, a path that does not parse, an
//! unknown route or method) come out in the same shape: `json_errors` rewrites any error
//! response that is not JSON already, so a client only ever parses one kind of error.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use p2p_protocol::printable;

/// The most of a non-JSON error body kept as the message (axum's are one line).
const MAX_PLAIN_ERROR: usize = 4096;

/// An error reply. `code` is stable (scripts match on it); `message` is for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A snake_case code, documented in docs/API.md.
    pub code: &'static str,
    /// One line for a person; text that came from the network is made printable.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: printable(&message.into()).to_string(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

/// The status and code an error status from outside the handlers becomes. axum answers a JSON
/// body that parses but does not fit the request's type with 422; here that is a bad request
/// like any other.
fn code_of(status: StatusCode) -> (StatusCode, &'static str) {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        StatusCode::UNAUTHORIZED => (status, "unauthorized"),
        StatusCode::FORBIDDEN => (status, "forbidden"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::LENGTH_REQUIRED => (status, "length_required"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "payload_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported_media_type"),
        s if s.is_server_error() => (s, "internal"),
        s => (s, "bad_request"),
    }
}

/// Middleware: an error response that is not JSON already (axum's rejections, an unknown
/// route) becomes an [`ApiError`] with the same status (422 becomes 400) and its text as the
/// message.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match status {
        _ if !text.trim().is_empty() => text.trim().to_owned(),
        StatusCode::NOT_FOUND => format!("no such endpoint: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path}"),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    let (status, code) = code_of(status);
    let mut reply = ApiError::new(status, code, message).into_response();
    // Keep what the status needs (`Allow` on a 405); the body and its type are new.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            reply.headers_mut().append(name, value.clone());
        }
    }
    reply
}
