//! Logging a browser in: `GET /login?token=KEY` (the URL the node prints at start) sets the
//! session cookie and sends the browser on to `/`; `POST /logout` clears it.
//!
//! The cookie is `p2p_session_<PORT>=<hex SHA-256("p2p-web-session\0" || KEY)>; HttpOnly;
//! SameSite=Strict; Path=/`.
//! * The port is in the name because cookies are not kept per port: two nodes on 127.0.0.1
//!   would otherwise overwrite each other's.
//! * It holds a digest, never the key, and a new key file logs every browser out.
//! * `HttpOnly`: no script reads it; `SameSite=Strict`: other sites' requests don't carry it
//!   (another port of 127.0.0.1 is the same site, which is why the guard also checks the
//!   origin).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::guard::Guard;

/// What the session cookie's value is a digest of, before the key.
const SESSION_CONTEXT: &[u8] = b"p2p-web-session\0";

/// The session cookie's name for the server on `port`.
pub(crate) fn cookie_name(port: u16) -> String {
    format!("p2p_session_{port}")
}

/// The session cookie's value for `api_key`.
pub(crate) fn session_value(api_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(SESSION_CONTEXT);
    hasher.update(api_key.as_bytes());
    hex::encode(hasher.finalize())
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: Option<String>,
}

/// `GET /login?token=KEY`.
async fn login(
    State(guard): State<Guard>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let token = query.token.unwrap_or_default();
    if !guard.is_key(&token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong or old login link: open the URL the node printed at start (`web dashboard: \
             ...`), which holds the current API key",
        ));
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        guard.cookie_name(),
        session_value(&token)
    );
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex digits and a port is a header"),
    );
    Ok(response)
}

/// `POST /logout`: the browser forgets its session cookie.
async fn logout(State(guard): State<Guard>) -> Response {
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        guard.cookie_name()
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie name of a port is a header"),
    );
    response
}

/// `/login` and `/logout`.
pub(crate) fn routes(guard: Guard) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/logout", post(logout))
        .with_state(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_per_port_and_never_the_key() {
        assert_eq!(cookie_name(8101), "p2p_session_8101");
        let key = "0123456789abcdef";
        let value = session_value(key);
        assert_eq!(value.len(), 64);
        assert_ne!(value, session_value("0123456789abcdeF"));
        assert!(!value.contains(key));
        // Fixed, so a browser stays logged in across restarts with the same key.
        assert_eq!(value, session_value(key));
    }
}
