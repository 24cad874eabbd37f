//! The page: HTML, CSS and JavaScript embedded in the binary, served with a strict
//! Content-Security-Policy.
//!
//! The files live in `web/assets/` and are compiled in with `include_bytes!`, so the binary
//! needs nothing beside it and nothing is built with npm. The page loads no script, style or
//! font from anywhere else, runs no inline script and builds its DOM with `textContent`
//! only (names and messages come from other peers), so the policy below can forbid all of
//! that. On loopback the assets need no key; the API calls they make carry the login cookie.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

/// The guard's policy (it sets it on every response); the page's own answers carry it too, so
/// the page is never served without it.
const CSP: &str = crate::guard::CONTENT_SECURITY_POLICY;

/// The browser revalidates every time, so a new binary's page is never mixed with an old
/// cached script.
const CACHE: &str = "no-cache";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../assets/", $file)),
        }
    };
}

/// Files both pages use.
const SHARED: &[Asset] = &[
    asset!("/common.js", "common.js", JS),
    asset!("/style.css", "style.css", CSS),
    asset!("/favicon.svg", "favicon.svg", SVG),
    // Browsers ask for it whatever the page says; an SVG under that name works, and a 404
    // would show as a console error.
    asset!("/favicon.ico", "favicon.svg", SVG),
];

/// The peer's dashboard.
const PEER: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/app.js", "app.js", JS),
];

/// The index server's status page.
const SERVER: &[Asset] = &[
    asset!("/", "server.html", HTML),
    asset!("/server.js", "server.js", JS),
];

fn routes(assets: &[&'static [Asset]]) -> Router {
    assets
        .iter()
        .flat_map(|set| set.iter())
        .fold(Router::new(), |router, asset| {
            let (content_type, body) = (asset.content_type, asset.body);
            router.route(
                asset.path,
                get(move || async move {
                    (
                        [
                            (CONTENT_TYPE, content_type),
                            (CACHE_CONTROL, CACHE),
                            (CONTENT_SECURITY_POLICY, CSP),
                        ],
                        body,
                    )
                        .into_response()
                }),
            )
        })
}

/// The peer's page routes (`/`, its scripts and styles).
pub(crate) fn peer_routes() -> Router {
    routes(&[PEER, SHARED])
}

/// The server's page routes.
pub(crate) fn server_routes() -> Router {
    routes(&[SERVER, SHARED])
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String, String, Vec<u8>) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let (content_type, csp) = (header(CONTENT_TYPE), header(CONTENT_SECURITY_POLICY));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, content_type, csp, body.to_vec())
    }

    #[tokio::test]
    async fn each_role_serves_its_own_page_with_the_policy() {
        let (status, content_type, csp, body) = get_path(peer_routes(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, HTML);
        assert_eq!(csp, CSP);
        assert!(String::from_utf8(body).unwrap().contains("app.js"));

        let (status, _, _, body) = get_path(server_routes(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8(body).unwrap().contains("server.js"));

        for path in ["/style.css", "/common.js", "/favicon.ico", "/favicon.svg"] {
            for router in [peer_routes(), server_routes()] {
                let (status, content_type, _, body) = get_path(router, path).await;
                assert_eq!(status, StatusCode::OK, "{path}");
                assert!(!content_type.is_empty() && !body.is_empty(), "{path}");
            }
        }
        let (status, ..) = get_path(server_routes(), "/app.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Whether `html` has an attribute like `onclick=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_len = rest.chars().take_while(char::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    /// The policy forbids inline script and style; the pages must not rely on either.
    #[test]
    fn pages_have_no_inline_script_or_style() {
        for set in [PEER, SERVER] {
            for asset in set.iter().filter(|a| a.content_type == HTML) {
                let html = std::str::from_utf8(asset.body).unwrap();
                assert!(!html.contains("<style"), "{}", asset.path);
                assert!(!html.contains("style="), "{}", asset.path);
                assert!(
                    !has_inline_handler(html),
                    "inline handler in {}",
                    asset.path
                );
                for script in html.split("<script").skip(1) {
                    let tag = &script[..script.find('>').unwrap()];
                    assert!(tag.contains("src="), "inline script in {}", asset.path);
                }
            }
        }
        for asset in SHARED.iter().chain(PEER).chain(SERVER) {
            if asset.content_type == JS {
                let js = std::str::from_utf8(asset.body).unwrap();
                assert!(!js.contains("innerHTML"), "{}", asset.path);
                assert!(!js.contains("eval("), "{}", asset.path);
            }
        }
    }
}
