//! Set-up for the download module's tests: real peers on loopback, sharing real files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Peer, PeerConfig, PeerHandle};

/// A new node's TLS set-up, with an identity of its own (kept in a folder that lives as long
/// as the process: the identity is loaded once, here).
pub fn tls() -> p2p_transport::Tls {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) =
        p2p_identity::Identity::load_or_create(dir.path(), p2p_identity::Role::Peer).unwrap();
    p2p_transport::Tls::new(&identity).unwrap()
}

/// A peer with no index, serving whoever connects, with `config` applied on top.
pub async fn lone_peer(config: impl FnOnce(&mut PeerConfig)) -> PeerHandle {
    let mut c = PeerConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        server_addr: None,
        request_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(2),
        ..PeerConfig::default()
    };
    config(&mut c);
    Peer::start(c, tls()).await.unwrap()
}

/// `len` bytes from `seed` (a cheap generator: different seeds give different files).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` to `dir/name` and returns its path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, data).unwrap();
    path
}
