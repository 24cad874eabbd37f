//! The web server's refusals, each shown against a live node: no key, a wrong key, a foreign
//! `Host` (DNS rebinding), a cross-site write with the login cookie, a CORS preflight, a
//! wrong login token; and the binary's `--web` start-up lines and API key file.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{bin, spawn_until};
use crate::support::{start_peer, start_server};
use crate::web_support::{
    TEST_KEY, anonymous_client, api_client, start_web_peer, start_web_server,
};

/// Sends `request` as it is over a new connection and returns the whole response.
async fn http_raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The error code of a JSON error reply.
async fn error_code(response: reqwest::Response) -> String {
    let json: Value = response.json().await.expect("a JSON error body");
    json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error reply: {json}"))
        .to_owned()
}

/// Logs in with the key and returns the `name=value` of the session cookie.
async fn login_cookie(web: &crate::web_support::WebNode) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(web.login_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_api_needs_the_key_and_refuses_a_wrong_one() {
    let server = start_server().await;
    let web = start_web_server(&server).await;
    let url = web.url("/api/v1/status");

    let response = anonymous_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "unauthorized");

    for (name, value) in [
        ("x-api-key", "wrong".to_owned()),
        ("x-api-key", TEST_KEY[..63].to_owned()),
        ("authorization", "Bearer wrong".to_owned()),
        ("authorization", format!("Basic {TEST_KEY}")),
    ] {
        let response = anonymous_client()
            .get(&url)
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{name}: {value}"
        );
        assert_eq!(error_code(response).await, "unauthorized");
    }
    // An unknown path under /api is not a way to probe without the key.
    let response = anonymous_client()
        .get(web.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The right key, either way.
    let response = api_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["role"], "server");
    assert_eq!(status["node_id"], server.node_id.to_string());
    let response = anonymous_client()
        .get(&url)
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The peer's API the same.
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let response = anonymous_client()
        .get(web.url("/api/v1/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "unauthorized");
}

#[tokio::test]
async fn a_foreign_host_is_refused_against_dns_rebinding() {
    let server = start_server().await;
    let web = start_web_server(&server).await;
    let port = web.addr.port();
    let ask = |host: String| {
        format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {TEST_KEY}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    // With the key, even: a rebinding page runs in a browser that may hold the cookie.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
    ] {
        let response = http_raw(web.addr, &ask(host.clone())).await;
        assert!(response.starts_with("HTTP/1.1 403 "), "{host}: {response}");
        assert!(
            response.contains(r#""code":"forbidden_host""#),
            "{response}"
        );
        // The page too, not only the API.
        let page = http_raw(
            web.addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(page.starts_with("HTTP/1.1 403 "), "{host}: {page}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let response = http_raw(web.addr, &ask(host.clone())).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{host}: {response}");
    }
}

#[tokio::test]
async fn a_cross_site_write_with_the_cookie_is_refused() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let cookie = login_cookie(&web).await;
    let other_port = web.addr.port().wrapping_add(1);
    let post = |headers: &[(&str, String)]| {
        let mut request = anonymous_client()
            .post(web.url("/api/v1/shares"))
            .header("cookie", &cookie)
            .json(&serde_json::json!({ "path": "/nonexistent/p2p-web-test" }));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send()
    };
    // Another service on this host (same site, another port), and a page the browser says is
    // cross-site; and a request that does not say where it comes from, with only the cookie.
    for headers in [
        vec![("origin", format!("http://127.0.0.1:{other_port}"))],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![
            ("sec-fetch-site", "same-site".to_owned()),
            ("origin", format!("http://127.0.0.1:{other_port}")),
        ],
        vec![],
    ] {
        let response = post(&headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(error_code(response).await, "cross_site", "{headers:?}");
    }
    // Nor may another page drop a file into the upload folder.
    let response = anonymous_client()
        .put(web.url("/api/v1/uploads/dropped.bin"))
        .header("cookie", &cookie)
        .header("origin", format!("http://127.0.0.1:{other_port}"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "cross_site");
    assert_eq!(std::fs::read_dir(&web.upload_dir).unwrap().count(), 0);
    // From the page itself the guard lets it through (whatever the handler then answers).
    for headers in [
        vec![("origin", format!("http://{}", web.addr))],
        vec![("sec-fetch-site", "same-origin".to_owned())],
    ] {
        let response = post(&headers).await.unwrap();
        assert_ne!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    // A script with the key in a header needs no Origin (curl sends none).
    let response = api_client()
        .post(web.url("/api/v1/shares"))
        .json(&serde_json::json!({ "path": "/nonexistent/p2p-web-test" }))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), StatusCode::FORBIDDEN);
    assert_ne!(response.status(), StatusCode::UNAUTHORIZED);
    // Logging out is a write like any other.
    let logout = |origin: String| {
        anonymous_client()
            .post(web.url("/logout"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .send()
    };
    let response = logout(format!("http://127.0.0.1:{other_port}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = logout(format!("http://{}", web.addr)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn another_page_cannot_hold_the_event_streams_with_the_cookie() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let cookie = login_cookie(&web).await;
    let other_port = web.addr.port().wrapping_add(1);
    // What `<img src=".../api/v1/events">` on a page of another port (same site: the cookie
    // goes along) or of another site sends, once for every stream slot and more.
    let mut held = Vec::new();
    for i in 0..=p2p_web::config::DEFAULT_MAX_EVENT_CLIENTS {
        let mut request = anonymous_client()
            .get(web.url("/api/v1/events"))
            .header("cookie", &cookie);
        request = match i % 3 {
            0 => request.header("sec-fetch-site", "same-site"),
            1 => request.header("sec-fetch-site", "cross-site"),
            _ => request.header("origin", format!("http://127.0.0.1:{other_port}")),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "request {i}");
        held.push(response);
    }
    assert_eq!(error_code(held.pop().unwrap()).await, "cross_site");
    // The dashboard's own stream still opens.
    let response = anonymous_client()
        .get(web.url("/api/v1/events"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(held);
    drop(response);
    peer.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_header_is_cut_off() {
    let server = start_server().await;
    let web = start_web_server(&server).await;
    let mut stream = tokio::net::TcpStream::connect(web.addr).await.unwrap();
    // A slow-loris client: half a header, then nothing. It must not hold its slot forever.
    let partial = format!("GET /api/v1/status HTTP/1.1\r\nHost: {}\r\n", web.addr);
    stream.write_all(partial.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let deadline = p2p_web::HEADER_READ_TIMEOUT + Duration::from_secs(20);
    let closed = tokio::time::timeout(deadline, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection is still open {deadline:?} after a header that never ended"
    );
    assert!(started.elapsed() >= p2p_web::HEADER_READ_TIMEOUT - Duration::from_secs(1));
}

#[tokio::test]
async fn no_cors_preflight_is_answered() {
    let server = start_server().await;
    let web = start_web_server(&server).await;
    for path in ["/api/v1/status", "/", "/api/v1/nothing"] {
        let response = api_client()
            .request(reqwest::Method::OPTIONS, web.url(path))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(
            response
                .headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{path}: {:?}",
            response.headers()
        );
        assert_eq!(error_code(response).await, "method_not_allowed");
    }
    // Nor does any other answer carry a CORS header.
    let response = api_client()
        .get(web.url("/api/v1/status"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[tokio::test]
async fn login_sets_the_cookie_only_for_the_right_token_and_the_cookie_opens_the_api() {
    let server = start_server().await;
    let web = start_web_server(&server).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for token in ["wrong", "", &TEST_KEY[1..]] {
        let response = client
            .get(web.url(&format!("/login?token={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token}");
        assert!(response.headers().get("set-cookie").is_none(), "{token}");
    }
    let response = client.get(web.url("/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("set-cookie").is_none());

    let cookie = login_cookie(&web).await;
    assert!(
        cookie.starts_with(&format!("p2p_session_{}=", web.addr.port())),
        "{cookie}"
    );
    assert!(!cookie.contains(TEST_KEY), "the cookie never holds the key");
    let response = client
        .get(web.url("/api/v1/status"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["role"], "server");
    // A made-up cookie is nothing.
    let response = client
        .get(web.url("/api/v1/status"))
        .header(
            "cookie",
            format!("p2p_session_{}={}", web.addr.port(), "0".repeat(64)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_server_lists_its_peers_by_node_id_and_their_files() {
    let server = start_server().await;
    let a = start_peer(server.addr).await;
    let b = start_peer(server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = crate::support::random_file(dir.path(), "listed.bin", 1000, 7);
    let manifest = a.register_manifest(&path).await.unwrap();
    let web = start_web_server(&server).await;
    let client = api_client();

    let peers: Value = client
        .get(web.url("/api/v1/peers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![a.node_id().to_string(), b.node_id().to_string()];
    want.sort_unstable();
    assert_eq!(ids, want, "{peers}");
    assert_eq!(peers["total"], 2);
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["this_peer"] == false && p["last_seen_ms"].is_u64())
    );

    let files: Value = client
        .get(web.url("/api/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(files["total"], 1, "{files}");
    assert_eq!(files["files"][0]["file_id"], manifest.id().to_string());
    assert_eq!(files["files"][0]["name"], "listed.bin");
    assert_eq!(files["files"][0]["hosts"], 1);

    let status: Value = client
        .get(web.url("/api/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["peers"], 2);
    assert_eq!(status["files"], 1);
    assert_eq!(status["listen_addr"], server.addr.to_string());
}

/// Starts `cmd` (a server) and returns the stdout lines up to `server listening on`, which
/// scripts stop at.
fn lines_until_listening(cmd: std::process::Command) -> (crate::process::Running, Vec<String>) {
    use std::io::BufRead;
    let (child, first, mut out) = spawn_until(cmd, "");
    let mut lines = vec![first];
    while !lines.last().unwrap().starts_with("server listening on ") {
        let mut line = String::new();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "exited: {lines:?}");
        lines.push(line.trim_end().to_owned());
    }
    (child, lines)
}

/// The line starting with `prefix`.
fn find(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} before the listening line: {lines:?}"))
        .clone()
}

/// `server --web 127.0.0.1:0` as a script sees it: the login URL and the API's URL come
/// before `server listening on`, and the API answers with the key from the key file.
#[tokio::test]
async fn the_binary_prints_the_login_url_first_and_keeps_its_key_private() {
    let identity = crate::support::fresh_identity_dir();
    let mut cmd = bin();
    cmd.env("P2P_IDENTITY_DIR", &identity)
        .env_remove("P2P_API_KEY")
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--no-mdns",
            "--web",
            "127.0.0.1:0",
        ]);
    let (_child, lines) = lines_until_listening(cmd);
    let login = find(&lines, "web dashboard: ");
    let api = find(&lines, "web api: ");
    let key_file = identity.join("api-key");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(key.len(), 64);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let login_url = login.trim_start_matches("web dashboard: ");
    assert!(
        login_url.ends_with(&format!("/login?token={key}")),
        "{login}"
    );
    assert!(api.contains(&key_file.display().to_string()), "{api}");
    let base = api
        .trim_start_matches("web api: ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let response = anonymous_client()
        .get(format!("{base}/status"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["role"], "server");
    let response = anonymous_client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(_child);

    // P2P_API_KEY replaces the file's key.
    let given = "given-key-0123456789";
    let mut cmd = bin();
    cmd.env("P2P_IDENTITY_DIR", &identity)
        .env("P2P_API_KEY", given)
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--no-mdns",
            "--web",
            "127.0.0.1:0",
        ]);
    let (_child, lines) = lines_until_listening(cmd);
    let login = find(&lines, "web dashboard: ");
    assert!(login.ends_with(&format!("token={given}")), "{login}");
    let api = find(&lines, "web api: ");
    assert!(api.ends_with("(API key from P2P_API_KEY)"), "{api}");
    let base = api
        .trim_start_matches("web api: ")
        .split(' ')
        .next()
        .unwrap();
    for (key, want) in [
        (given, StatusCode::OK),
        (key.as_str(), StatusCode::UNAUTHORIZED),
    ] {
        let response = anonymous_client()
            .get(format!("{base}/status"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want);
    }
    drop(_child);

    // A key file others can read stops the node, naming the fix.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = bin()
        .env("P2P_IDENTITY_DIR", &identity)
        .env_remove("P2P_API_KEY")
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--no-mdns",
            "--web",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"));
}

/// A web address in use is one clear line naming it, before anything else starts.
#[test]
fn a_web_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = bin()
        .env_remove("P2P_API_KEY")
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--no-mdns",
            "--web",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");
    assert!(line.contains("port 0"), "{line}");
}

/// `peer --web`: the same lines before `peer listening on`, the upload folder made private.
#[tokio::test]
async fn the_peer_binary_serves_its_api_and_makes_its_upload_folder() {
    let dir = tempfile::tempdir().unwrap();
    let uploads = dir.path().join("new").join("uploads");
    let mut cmd = bin();
    cmd.env_remove("P2P_API_KEY")
        .args(["peer", "--addr", "127.0.0.1:0", "--from", "127.0.0.1:9"])
        .args(["--web", "127.0.0.1:0", "--upload-dir"])
        .arg(&uploads);
    let (_child, first, mut out) = spawn_until(cmd, "");
    let mut lines = vec![first];
    while !lines.last().unwrap().starts_with("peer listening on ") {
        lines.push(crate::process::read_line_starting(&mut out, ""));
    }
    let api = find(&lines, "web api: ");
    find(&lines, "web dashboard: http://127.0.0.1:");
    assert!(
        lines.iter().all(|l| !l.starts_with("web warning")),
        "{lines:?}"
    );
    let mode = std::fs::metadata(&uploads).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let base = api
        .trim_start_matches("web api: ")
        .split(' ')
        .next()
        .unwrap();
    let response = anonymous_client()
        .get(format!("{base}/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// On an address others can reach, startup says so, and even the page needs the key.
#[tokio::test]
async fn a_web_address_others_can_reach_warns_and_locks_the_page() {
    let mut cmd = bin();
    cmd.env_remove("P2P_API_KEY").args([
        "server",
        "--addr",
        "127.0.0.1:0",
        "--no-mdns",
        "--web",
        "0.0.0.0:0",
    ]);
    let (_child, lines) = lines_until_listening(cmd);
    let warning = find(&lines, "web warning: ");
    assert!(
        warning.contains("API key") && warning.contains("plain HTTP"),
        "{warning}"
    );
    // The URLs name an address a browser can open.
    let login = find(&lines, "web dashboard: ");
    assert!(
        login.starts_with("web dashboard: http://127.0.0.1:"),
        "{login}"
    );
    let url = login.trim_start_matches("web dashboard: ").to_owned();
    let page = url.split("/login").next().unwrap().to_owned();
    let response = anonymous_client().get(&page).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The login link still works, and its cookie opens the page.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = cookie.split(';').next().unwrap();
    let response = client
        .get(format!("{page}/api/v1/status"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
