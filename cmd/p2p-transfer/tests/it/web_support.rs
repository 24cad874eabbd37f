//! Shared set-up for the web tests: a node's web server in-process on 127.0.0.1:0, with a
//! known API key, and an HTTP client that never uses a proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

use p2p_peer::PeerHandle;
use p2p_web::WebConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{TestServer, loopback0};

/// The API key every test web server uses.
pub const TEST_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A running web server; stopped on drop.
pub struct WebNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its upload folder.
    pub upload_dir: PathBuf,
    _upload_root: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for WebNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl WebNode {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL that logs a browser in.
    pub fn login_url(&self) -> String {
        p2p_web::login_url(self.addr, TEST_KEY)
    }
}

/// The config tests use: the test key, an upload folder in a fresh temporary directory.
pub fn web_config() -> (WebConfig, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let config = WebConfig::new(TEST_KEY.to_owned(), root.path().join("uploads"));
    std::fs::create_dir_all(&config.upload_dir).unwrap();
    (config, root)
}

/// Serves `peer`'s API and page with `config`.
pub async fn start_web_peer_with(
    peer: &PeerHandle,
    config: WebConfig,
    root: tempfile::TempDir,
) -> WebNode {
    let peer = peer.clone();
    serve(config, root, |listener, config, shutdown| {
        p2p_web::serve_peer(listener, peer, config, shutdown)
    })
    .await
}

/// Binds 127.0.0.1:0 and spawns `serve` on it with `config`.
async fn serve<F, Fut>(config: WebConfig, root: tempfile::TempDir, serve: F) -> WebNode
where
    F: FnOnce(TcpListener, WebConfig, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(loopback0()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let upload_dir = config.upload_dir.clone();
    tokio::spawn(serve(listener, config, shutdown.clone()));
    WebNode {
        addr,
        base: format!("http://{addr}"),
        upload_dir,
        _upload_root: root,
        shutdown,
    }
}

/// Serves `peer`'s API and page with the test config.
pub async fn start_web_peer(peer: &PeerHandle) -> WebNode {
    let (config, root) = web_config();
    start_web_peer_with(peer, config, root).await
}

/// Serves the index server's API and page with the test config.
pub async fn start_web_server(server: &TestServer) -> WebNode {
    let (config, root) = web_config();
    let (handle, node_id) = (server.handle.clone(), server.node_id);
    serve(config, root, move |listener, config, shutdown| {
        p2p_web::serve_server(listener, handle, node_id, None, config, shutdown)
    })
    .await
}

/// An HTTP client that sends the test key and never uses a proxy.
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", TEST_KEY.parse().unwrap());
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// An HTTP client with no key at all.
pub fn anonymous_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
