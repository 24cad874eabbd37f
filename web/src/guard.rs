//! Who may call: the middleware in front of every route of both roles.
//!
//! In order, for every request:
//! 1. **`Host`** (against DNS rebinding): it must name this server by a loopback name
//!    (`127.0.0.1:P`, `localhost:P`, `[::1]:P`, P the bound port), or, when bound to a
//!    non-loopback address, by any IP literal with port P. A rebinding attack always arrives
//!    under the attacker's DNS name, so it never passes. Else 403 `forbidden_host`.
//! 2. **`OPTIONS`** gets 405: no CORS preflight is ever answered, so no other origin may send
//!    anything a preflight would have to allow.
//! 3. **The key**: every `/api/` request must carry it, as `X-API-Key: KEY`,
//!    `Authorization: Bearer KEY`, or the login cookie (see `login`). The page itself is
//!    public on a loopback address; on any other, everything but `/login` needs the key.
//!    Compared as SHA-256 digests in constant time, so neither the key's bytes nor its length
//!    leak through timing. Else 401 `unauthorized`.
//! 4. **Cross-site requests** (CSRF): any method but `GET`/`HEAD` must show it comes from this
//!    origin: `Sec-Fetch-Site` `same-origin` or `none` when the browser sends it, else an
//!    `Origin` equal to `http://<Host>`, port included (another service on 127.0.0.1:OTHER is
//!    "same-site", so `SameSite=Strict` alone lets its requests through). A request with
//!    neither header (curl) passes only with the key in a header, never with the cookie a
//!    browser adds by itself. An `/api/` read that carries only the cookie is refused too
//!    when either header says it comes from another origin: such a page can't read the
//!    answer, but its `<img src=".../events">` would hold the event streams' slots. Else 403
//!    `cross_site`.
//!
//! Every response, refusals included, gets the headers of [`secure_headers`]; none ever
//! carries an `Access-Control-*` header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::login;

/// Sent with every response: no script, style or frame from anywhere else, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The only path a non-loopback server answers without the key.
const LOGIN_PATH: &str = "/login";

/// What the guard knows about this server.
#[derive(Clone)]
pub(crate) struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    bound: SocketAddr,
    key_digest: [u8; 32],
    cookie_name: String,
    session_digest: [u8; 32],
}

impl std::fmt::Debug for Guard {
    /// Never shows the key's digests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("bound", &self.inner.bound)
            .finish_non_exhaustive()
    }
}

/// How a request proved it holds the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `X-API-Key` or `Authorization: Bearer`: a browser never adds these by itself.
    Header,
    /// The login cookie, which a browser adds to requests other pages make.
    Cookie,
}

/// What a request's headers say about where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From this origin (or typed by the user).
    Same,
    /// From another origin.
    Cross,
    /// No `Sec-Fetch-Site` nor `Origin`: not a browser's request, or an old browser's.
    Unknown,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Guard {
    /// The guard of a server bound to `bound` with this key.
    pub(crate) fn new(bound: SocketAddr, api_key: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                bound,
                key_digest: digest(api_key.as_bytes()),
                cookie_name: login::cookie_name(bound.port()),
                session_digest: digest(login::session_value(api_key).as_bytes()),
            }),
        }
    }

    /// The login cookie's name on this server.
    pub(crate) fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    /// Whether `presented` is the key (constant time).
    pub(crate) fn is_key(&self, presented: &str) -> bool {
        bool::from(digest(presented.as_bytes()).ct_eq(&self.inner.key_digest))
    }

    fn is_session(&self, presented: &str) -> bool {
        bool::from(digest(presented.as_bytes()).ct_eq(&self.inner.session_digest))
    }

    /// How `headers` prove the key; `Err` when they show a wrong key, `Ok(None)` when none.
    /// A key in a header is checked first; a wrong one is an error even with a good cookie.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Auth>, ApiError> {
        let bearer = headers.get_all(header::AUTHORIZATION).iter().find_map(|v| {
            let v = v.to_str().ok()?;
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let presented = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or(""))
            .or(bearer);
        if let Some(key) = presented {
            return if self.is_key(key) {
                Ok(Some(Auth::Header))
            } else {
                Err(unauthorized("wrong API key"))
            };
        }
        let cookie = cookies(headers).find(|(name, _)| *name == self.inner.cookie_name);
        Ok(cookie.and_then(|(_, value)| self.is_session(value).then_some(Auth::Cookie)))
    }

    /// The checks of the module docs, in order; `Ok` lets the request through.
    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !check_host(host, self.inner.bound) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "this server answers only to its own address (Host {:?} refused, against DNS \
                     rebinding): open http://{}/",
                    host,
                    shown_addr(self.inner.bound)
                ),
            ));
        }
        if method == Method::OPTIONS {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "OPTIONS is not answered: this API sends no CORS headers",
            ));
        }
        let auth = self.authenticate(headers)?;
        let api = path.starts_with("/api/") || path == "/api";
        let needs_key = api || (!self.inner.bound.ip().is_loopback() && path != LOGIN_PATH);
        if needs_key && auth.is_none() {
            return Err(unauthorized(
                "this needs the API key: send `X-API-Key: KEY` or `Authorization: Bearer KEY`, \
                 or open the login URL the node printed at start",
            ));
        }
        let write = method != Method::GET && method != Method::HEAD;
        let cookie = auth == Some(Auth::Cookie);
        if write || (api && cookie) {
            let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let origin = check_origin(header("sec-fetch-site"), header("origin"), host);
            let refused = match origin {
                Origin::Same => false,
                Origin::Cross => true,
                // A browser adds the cookie to anyone's request; only a header proves intent.
                // A read without either header is an old browser's own (or a typed URL's).
                Origin::Unknown => write && cookie,
            };
            if refused {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    "refused a request from another origin (or one that does not say where it \
                     comes from and carries only the login cookie)",
                ));
            }
        }
        Ok(())
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The address to show for a server bound to `bound`: a loopback one for an unspecified
/// address (`0.0.0.0` is not an address a browser can open).
pub(crate) fn shown_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
        }
        _ => bound,
    }
}

/// Every `name=value` pair of the request's `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

/// Whether a `Host` header names a server bound to `bound`: a loopback name or IP with the
/// bound port, or, when bound to a non-loopback address, any IP literal with that port. A
/// DNS name other than `localhost` never passes (that is what DNS rebinding sends).
pub(crate) fn check_host(host: &str, bound: SocketAddr) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    if port != bound.port() {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        name.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    match ip {
        Ok(ip) => ip.is_loopback() || !bound.ip().is_loopback(),
        Err(_) => false,
    }
}

/// `name:port` (`[v6]:port`), the port 80 when absent, as HTTP says.
fn split_host(host: &str) -> Option<(&str, u16)> {
    const HTTP_PORT: u16 = 80;
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let (name, rest) = host.split_at(end);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        None => HTTP_PORT,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

/// Where a request comes from, by `Sec-Fetch-Site` when the browser sends it,
/// else by `Origin` compared with `http://<host>` (the port is part of the origin).
pub(crate) fn check_origin(
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    host: &str,
) -> Origin {
    if let Some(site) = sec_fetch_site {
        return if site == "same-origin" || site == "none" {
            Origin::Same
        } else {
            Origin::Cross
        };
    }
    match origin {
        Some(origin) => {
            let same = origin
                .strip_prefix("http://")
                .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
            if same { Origin::Same } else { Origin::Cross }
        }
        None => Origin::Unknown,
    }
}

/// The middleware: refuses what the checks refuse, and adds [`secure_headers`] to every
/// response.
pub(crate) async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = match guard.check(request.method(), &path, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    secure_headers(&path, response)
}

/// The headers every response carries: the page's [`CONTENT_SECURITY_POLICY`], no MIME
/// sniffing, no `Referer` (the login URL holds the key), no framing, and no caching of the
/// API's answers or of the login.
pub(crate) fn secure_headers(path: &str, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let mut set = |name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    if path.starts_with("/api/") || path.starts_with(LOGIN_PATH) {
        set(header::CACHE_CONTROL, "no-store");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_must_name_this_server() {
        let bound = addr("127.0.0.1:8101");
        for ok in [
            "127.0.0.1:8101",
            "localhost:8101",
            "LocalHost:8101",
            "[::1]:8101",
            "127.0.0.2:8101",
        ] {
            assert!(check_host(ok, bound), "{ok}");
        }
        for bad in [
            "evil.example:8101",
            "127.0.0.1.nip.io:8101",
            "127.0.0.1:8100",
            "127.0.0.1",
            "localhost",
            "192.168.1.5:8101",
            "[::1]",
            "[::1]x:8101",
            "[::1]:",
            "::1:8101",
            "127.0.0.1:+8101",
            "127.0.0.1:8101:1",
            ":8101",
            "",
            "localhost.:8101",
        ] {
            assert!(!check_host(bad, bound), "{bad}");
        }
        // Port 80 is what a Host without a port means.
        assert!(check_host("localhost", addr("127.0.0.1:80")));
        // On a LAN address, any IP literal with the port (what a browser sends when opened by
        // address), never a DNS name.
        let lan = addr("192.168.1.5:8100");
        assert!(check_host("192.168.1.5:8100", lan));
        assert!(check_host("10.0.0.1:8100", lan));
        assert!(check_host("127.0.0.1:8100", lan));
        assert!(!check_host("nas.local:8100", lan));
        assert!(!check_host("192.168.1.5:8101", lan));
        let any = addr("0.0.0.0:8100");
        assert!(check_host("192.168.1.5:8100", any));
        assert!(!check_host("evil.example:8100", any));
    }

    #[test]
    fn origin_must_be_this_one_port_included() {
        let host = "127.0.0.1:8101";
        assert_eq!(check_origin(Some("same-origin"), None, host), Origin::Same);
        assert_eq!(check_origin(Some("none"), None, host), Origin::Same);
        for site in ["same-site", "cross-site", ""] {
            // Sec-Fetch-Site wins over an Origin that would pass.
            assert_eq!(
                check_origin(Some(site), Some("http://127.0.0.1:8101"), host),
                Origin::Cross,
                "{site}"
            );
        }
        assert_eq!(
            check_origin(None, Some("http://127.0.0.1:8101"), host),
            Origin::Same
        );
        for other in [
            "http://127.0.0.1:8100",
            "http://127.0.0.1",
            "https://127.0.0.1:8101",
            "http://localhost:8101",
            "http://evil.example",
            "null",
            "",
        ] {
            assert_eq!(
                check_origin(None, Some(other), host),
                Origin::Cross,
                "{other}"
            );
        }
        assert_eq!(check_origin(None, None, host), Origin::Unknown);
        assert_eq!(check_origin(None, Some("http://"), ""), Origin::Cross);
    }

    #[test]
    fn the_key_by_header_or_cookie() {
        let guard = Guard::new(addr("127.0.0.1:8101"), "k".repeat(32).as_str());
        let with = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            guard.authenticate(&headers)
        };
        let key = "k".repeat(32);
        let cookie = format!(
            "other=1; {}={}",
            guard.cookie_name(),
            login::session_value(&key)
        );
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&[("x-api-key", &key)]), Ok(Some(Auth::Header)));
        let bearer = format!("Bearer {key}");
        assert_eq!(with(&[("authorization", &bearer)]), Ok(Some(Auth::Header)));
        assert_eq!(with(&[("cookie", &cookie)]), Ok(Some(Auth::Cookie)));
        assert!(with(&[("x-api-key", "wrong")]).is_err());
        assert!(with(&[("x-api-key", &key[1..])]).is_err());
        assert!(with(&[("authorization", "Bearer wrong"), ("cookie", &cookie)]).is_err());
        // The key itself is not a session cookie, nor is another port's cookie.
        assert_eq!(
            with(&[("cookie", &format!("{}={key}", guard.cookie_name()))]),
            Ok(None)
        );
        let elsewhere = format!("p2p_session_8100={}", login::session_value(&key));
        assert_eq!(with(&[("cookie", &elsewhere)]), Ok(None));
    }

    #[test]
    fn an_unspecified_address_is_shown_as_loopback() {
        assert_eq!(shown_addr(addr("0.0.0.0:5")), addr("127.0.0.1:5"));
        assert_eq!(shown_addr(addr("[::]:5")), addr("[::1]:5"));
        assert_eq!(shown_addr(addr("10.1.2.3:5")), addr("10.1.2.3:5"));
    }
}
