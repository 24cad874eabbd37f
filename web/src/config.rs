//! [`WebConfig`]: how a node's web server behaves. `Default` gives the documented values.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the server role's web server listens unless `--web ADDR` says otherwise.
pub const DEFAULT_SERVER_WEB_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8100);
/// Where the peer role's web server listens unless `--web ADDR` says otherwise.
pub const DEFAULT_PEER_WEB_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8101);
/// [`DEFAULT_SERVER_WEB_ADDR`] as text, for a flag's default (a test keeps them equal).
pub const DEFAULT_SERVER_WEB: &str = "127.0.0.1:8100";
/// [`DEFAULT_PEER_WEB_ADDR`] as text, for a flag's default (a test keeps them equal).
pub const DEFAULT_PEER_WEB: &str = "127.0.0.1:8101";

/// A node's web server.
#[derive(Clone)]
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

impl std::fmt::Debug for WebConfig {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("upload_dir", &self.upload_dir)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_json_body", &self.max_json_body)
            .field("max_manifest_body", &self.max_manifest_body)
            .field("max_event_clients", &self.max_event_clients)
            .field("found_index_by", &self.found_index_by)
            .finish_non_exhaustive()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_addresses_as_text_are_the_addresses() {
        assert_eq!(DEFAULT_SERVER_WEB.parse(), Ok(DEFAULT_SERVER_WEB_ADDR));
        assert_eq!(DEFAULT_PEER_WEB.parse(), Ok(DEFAULT_PEER_WEB_ADDR));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let config = WebConfig::new("secret-key-0123456789".into(), PathBuf::from("/u"));
        assert!(!format!("{config:?}").contains("secret-key"));
    }
}
