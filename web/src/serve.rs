//! Runs a node's web server: the role's API and page behind the guards, until shutdown.
//!
//! Every route of both roles sits behind the same layers, outermost first:
//! 1. [`crate::guard`]: `Host`, key, origin; the security headers on every response.
//! 2. [`crate::error::json_errors`]: any error that is not JSON yet becomes one.
//! 3. The general request body limit, [`WebConfig::max_json_body`]. A route that takes more
//!    sets its own `DefaultBodyLimit` layer, which overrides this one (the upload routes turn
//!    it off and count bytes themselves).
//!
//! Shutdown: when the token is cancelled, the listener closes, each connection finishes the
//! request in flight and takes no other (event streams end by themselves), and whatever is
//! still open after [`SHUTDOWN_GRACE`] (a client that stopped reading a stream, a body that
//! stopped arriving) is dropped. So the node's own shutdown never waits on a client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use p2p_central_server::ServerHandle;
use p2p_peer::PeerHandle;
use p2p_protocol::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::config::WebConfig;
use crate::guard::{self, Guard, shown_addr};
use crate::peer_api::{self, PeerApp};
use crate::server_api::{self, ServerApp};
use crate::{error, login};

/// How long shutdown waits for the requests in flight before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A client must send a request's whole header within this long (a connection that trickles
/// bytes to hold a slot is closed).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; a newcomer beyond them is closed at once. The page holds a
/// few (an event stream and a request or two), so this is for scripts, not browsers.
pub const MAX_CONNECTIONS: usize = 256;
/// How long the accept loop waits after the listener failed for another reason than one
/// connection (out of file descriptors, say) before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The URL that logs a browser in to the page of a server bound to `addr` (it sets the
/// session cookie). An unspecified address is shown as loopback.
pub fn login_url(addr: SocketAddr, api_key: &str) -> String {
    format!("http://{}/login?token={api_key}", shown_addr(addr))
}

/// The API's base URL on a server bound to `addr`.
pub fn api_url(addr: SocketAddr) -> String {
    format!("http://{}/api/v1", shown_addr(addr))
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
    let config = Arc::new(config);
    let tasks = TaskTracker::new();
    let app = PeerApp {
        peer,
        config: config.clone(),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    };
    let router = peer_api::router(app).merge(crate::assets::peer_routes());
    let served = run(listener, protect(router, &config, bound), shutdown).await;
    // They watch the same token, so they end promptly.
    tasks.close();
    tasks.wait().await;
    served
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
    let config = Arc::new(config);
    let app = ServerApp {
        server,
        node_id,
        mdns_name,
        config: config.clone(),
        shutdown: shutdown.clone(),
    };
    let router = server_api::router(app).merge(crate::assets::server_routes());
    run(listener, protect(router, &config, bound), shutdown).await
}

/// `router` and the login routes behind the layers of the module docs.
fn protect(router: Router, config: &WebConfig, bound: SocketAddr) -> Router {
    let guard = Guard::new(bound, &config.api_key);
    router
        .merge(login::routes(guard.clone()))
        .layer(DefaultBodyLimit::max(config.max_json_body))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(guard, guard::guard))
}

/// Accepts connections until `shutdown`, then gives those still open [`SHUTDOWN_GRACE`] to
/// finish their request before dropping them (see the module docs).
async fn run(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reaps a connection that ended, so the set holds only open ones.
            Some(_) = connections.join_next() => continue,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((_, remote)) if connections.len() >= MAX_CONNECTIONS => {
                debug!(%remote, "{MAX_CONNECTIONS} web connections open; closing a newcomer");
            }
            Ok((stream, remote)) => {
                connections.spawn(
                    serve_connection(stream, router.clone(), shutdown.clone())
                        .instrument(debug_span!("web", %remote)),
                );
            }
            // One connection that failed before it was accepted: nothing to do.
            Err(err) if is_connection_error(&err) => debug!(%err, "a web connection failed"),
            Err(err) => {
                warn!(%err, "the web server cannot accept connections; trying again shortly");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "web requests still open {SHUTDOWN_GRACE:?} after shutdown began; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection until the client closes it, or until `shutdown`, after
/// which the request in flight is finished and no other is read.
async fn serve_connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let service = TowerToHyperService::new(router);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = served {
        debug!(%err, "a web connection ended with an error");
    }
}

/// Whether an `accept` error concerns one connection only (the loop goes on at once).
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const BOUND: &str = "127.0.0.1:8101";

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body1 {
        path: String,
    }

    /// The layers over a few stand-in routes: a JSON route with the general limit, one that
    /// raises it, a typed path, and a page.
    fn app() -> Router {
        let config = WebConfig::new(KEY.into(), "/nowhere".into());
        let router = Router::new()
            .route(
                "/api/v1/shares",
                post(|axum::Json(_): axum::Json<Body1>| async { "ok" }),
            )
            .route(
                "/api/v1/big",
                post(|axum::Json(_): axum::Json<Body1>| async { "ok" })
                    .layer(DefaultBodyLimit::max(config.max_manifest_body)),
            )
            .route(
                "/api/v1/downloads/{handle}",
                get(|axum::extract::Path(_): axum::extract::Path<u64>| async { "ok" }),
            )
            .route("/", get(|| async { "page" }));
        protect(router, &config, BOUND.parse().unwrap())
    }

    fn request(method: &str, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, BOUND)
    }

    async fn send(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = app().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    fn code(json: &Value) -> &str {
        json["error"]["code"].as_str().unwrap_or("<not an error>")
    }

    fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
        request("POST", path)
            .header("x-api-key", KEY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_as_json_and_a_route_may_raise_it() {
        let big = format!(r#"{{"path":"{}"}}"#, "a".repeat(1 << 20));
        let (status, _, json) = send(json_post("/api/v1/shares", big.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(code(&json), "payload_too_large", "{json}");
        let (status, _, _) = send(json_post("/api/v1/big", big)).await;
        assert_eq!(status, StatusCode::OK, "the route's own limit wins");
        let (status, _, _) = send(json_post("/api/v1/shares", r#"{"path":"x"}"#)).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn axum_rejections_come_out_as_api_errors() {
        for (req, status, code_wanted) in [
            (
                json_post("/api/v1/shares", "{not json"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json_post("/api/v1/shares", "{}"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json_post("/api/v1/shares", r#"{"path":"x","extra":1}"#),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request("POST", "/api/v1/shares")
                    .header("x-api-key", KEY)
                    .body(Body::from(r#"{"path":"x"}"#))
                    .unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                request("GET", "/api/v1/downloads/notanumber")
                    .header("x-api-key", KEY)
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request("GET", "/api/v1/nothing")
                    .header("x-api-key", KEY)
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                request("DELETE", "/api/v1/shares")
                    .header("x-api-key", KEY)
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
        ] {
            let what = format!("{} {}", req.method(), req.uri());
            let (got, headers, json) = send(req).await;
            assert_eq!(got, status, "{what}: {json}");
            assert_eq!(code(&json), code_wanted, "{what}: {json}");
            assert!(
                !json["error"]["message"].as_str().unwrap().is_empty(),
                "{what}"
            );
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
        }
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers_and_no_cors() {
        for req in [
            request("GET", "/").body(Body::empty()).unwrap(),
            request("GET", "/api/v1/shares")
                .body(Body::empty())
                .unwrap(),
            request("OPTIONS", "/api/v1/shares")
                .header("origin", "http://evil.example")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap(),
            Request::builder()
                .uri("/")
                .header(header::HOST, "evil.example:8101")
                .body(Body::empty())
                .unwrap(),
        ] {
            let what = format!("{} {}", req.method(), req.uri());
            let (status, headers, _) = send(req).await;
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                crate::CONTENT_SECURITY_POLICY,
                "{what}"
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert!(
                headers
                    .keys()
                    .all(|k| !k.as_str().starts_with("access-control-")),
                "{what}: {headers:?}"
            );
            if what.starts_with("OPTIONS") {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
            }
            if what.contains("/api/") {
                assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{what}");
            }
        }
    }

    #[tokio::test]
    async fn login_sets_the_cookie_only_for_the_key_and_the_cookie_then_works() {
        let (status, headers, json) = send(
            request("GET", "/login?token=wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(code(&json), "unauthorized");
        assert!(headers.get(header::SET_COOKIE).is_none());

        let response = app()
            .oneshot(
                request("GET", &format!("/login?token={KEY}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], "/");
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("p2p_session_8101="), "{cookie}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        assert!(!cookie.contains(KEY));
        let pair = cookie.split(';').next().unwrap().to_owned();

        // The cookie alone is enough for a read, and for a write from this origin.
        let read = |extra: &[(&str, &str)]| {
            let mut req = request("GET", "/api/v1/downloads/1").header(header::COOKIE, &pair);
            for (name, value) in extra {
                req = req.header(*name, *value);
            }
            req.body(Body::empty()).unwrap()
        };
        for extra in [
            &[][..],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("origin", "http://127.0.0.1:8101")],
        ] {
            let (status, _, _) = send(read(extra)).await;
            assert_eq!(status, StatusCode::OK, "{extra:?}");
        }
        // But not a read another page makes with it (another port of this host is same-site).
        for extra in [
            &[("sec-fetch-site", "same-site")][..],
            &[("sec-fetch-site", "cross-site")],
            &[("origin", "http://127.0.0.1:9999")],
        ] {
            let (status, _, json) = send(read(extra)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{extra:?}");
            assert_eq!(code(&json), "cross_site", "{extra:?}");
        }
        // The page itself may be linked from anywhere, and a script's key works from anywhere.
        let (status, _, _) = send(
            request("GET", "/")
                .header(header::COOKIE, &pair)
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(
            request("GET", "/api/v1/downloads/1")
                .header("x-api-key", KEY)
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let write = |extra: Option<(&str, &str)>| {
            let mut req = request("POST", "/api/v1/shares")
                .header(header::COOKIE, &pair)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some((name, value)) = extra {
                req = req.header(name, value);
            }
            req.body(Body::from(r#"{"path":"x"}"#)).unwrap()
        };
        let (status, _, _) = send(write(Some(("sec-fetch-site", "same-origin")))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(write(Some(("origin", "http://127.0.0.1:8101")))).await;
        assert_eq!(status, StatusCode::OK);
        // Not from another port of the same host, nor with no word of where it comes from.
        for extra in [
            Some(("origin", "http://127.0.0.1:9999")),
            Some(("sec-fetch-site", "same-site")),
            None,
        ] {
            let (status, _, json) = send(write(extra)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{extra:?}");
            assert_eq!(code(&json), "cross_site", "{extra:?}");
        }
        // Logging out clears it.
        let (status, headers, _) = send(
            request("POST", "/logout")
                .header(header::COOKIE, &pair)
                .header("sec-fetch-site", "same-origin")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(
            headers[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[tokio::test]
    async fn off_loopback_everything_but_login_needs_the_key() {
        let config = WebConfig::new(KEY.into(), "/nowhere".into());
        let bound: SocketAddr = "192.168.1.5:8100".parse().unwrap();
        let app = protect(
            Router::new().route("/", get(|| async { "page" })),
            &config,
            bound,
        );
        let get = |path: &str, key: Option<&str>| {
            let mut req = Request::builder()
                .uri(path)
                .header(header::HOST, "192.168.1.5:8100");
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        assert_eq!(
            get("/", None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(get("/", Some(KEY)).await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            get("/login?token=x", None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "the login page answers (a wrong token here)"
        );
        assert_eq!(
            get(&format!("/login?token={KEY}"), None)
                .await
                .unwrap()
                .status(),
            StatusCode::SEE_OTHER
        );
    }

    #[test]
    fn urls_show_an_address_a_browser_can_open() {
        let any: SocketAddr = "0.0.0.0:8100".parse().unwrap();
        assert_eq!(login_url(any, "k"), "http://127.0.0.1:8100/login?token=k");
        assert_eq!(api_url(any), "http://127.0.0.1:8100/api/v1");
    }
}
