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

/// The largest upload accepted unless `--max-upload-mib` says otherwise, in MiB (64 GiB).
pub const DEFAULT_MAX_UPLOAD_MIB: u32 = 64 << 10;
/// The largest JSON request body, in bytes (64 KiB): every JSON body the API takes is a few
/// fields.
pub const DEFAULT_MAX_JSON_BODY: usize = 64 << 10;
/// The largest `.p2pm` manifest file in a download request, in bytes (32 MiB: a big folder's
/// manifest is megabytes).
pub const DEFAULT_MAX_MANIFEST_BODY: usize = 32 << 20;
/// Event streams open at once on one node: a few browser tabs and scripts.
pub const DEFAULT_MAX_EVENT_CLIENTS: usize = 16;

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// A node's web server.
#[derive(Clone)]
pub struct WebConfig {
    /// The API key every request must carry (header or login cookie).
    pub api_key: String,
    /// Where uploads are written before they are shared.
    pub upload_dir: PathBuf,
    /// The largest upload accepted, in bytes ([`DEFAULT_MAX_UPLOAD_MIB`] MiB by default).
    pub max_upload_bytes: u64,
    /// The largest JSON request body, in bytes ([`DEFAULT_MAX_JSON_BODY`]).
    pub max_json_body: usize,
    /// The largest `.p2pm` manifest file accepted in a download request, in bytes
    /// ([`DEFAULT_MAX_MANIFEST_BODY`]).
    pub max_manifest_body: usize,
    /// Event streams open at once; more get `503 busy` ([`DEFAULT_MAX_EVENT_CLIENTS`]).
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
            max_upload_bytes: u64::from(DEFAULT_MAX_UPLOAD_MIB) * MIB,
            max_json_body: DEFAULT_MAX_JSON_BODY,
            max_manifest_body: DEFAULT_MAX_MANIFEST_BODY,
            max_event_clients: DEFAULT_MAX_EVENT_CLIENTS,
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
