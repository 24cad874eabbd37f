//! [`WebConfig`]: how a node's web server behaves. `Default` gives the documented values.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the server role's web server listens unless `--web ADDR` says otherwise.
pub const DEFAULT_SERVER_WEB_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8100);
/// Where the peer role's web server listens unless `--web ADDR` says otherwise.
pub const DEFAULT_PEER_WEB_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8101);

/// A node's web server.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The API key every request must carry (header or login cookie).
    pub api_key: String,
    /// Where uploads are written before they are shared.
    pub upload_dir: PathBuf,
    /// The largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// The largest JSON request body, in bytes.
    pub max_json_body: usize,
    /// The largest `.p2pm` manifest file accepted in a download request, in bytes.
    pub max_manifest_body: usize,
    /// Event streams open at once; more get `503 busy`.
    pub max_event_clients: usize,
    /// How the node found its index (shown by `status`), e.g. `"--server"` or `"mDNS"`.
    pub found_index_by: Option<String>,
}

impl WebConfig {
    /// The defaults, with this key and upload folder.
    pub fn new(api_key: String, upload_dir: PathBuf) -> Self {
        Self {
            api_key,
            upload_dir,
            max_upload_bytes: 64 << 30,
            max_json_body: 64 << 10,
            max_manifest_body: 32 << 20,
            max_event_clients: 16,
            found_index_by: None,
        }
    }
}
