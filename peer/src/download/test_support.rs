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
        indexes: Vec::new(),
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

/// A host that answers every `GetChunk` with a `Chunk` announcing a whole chunk
/// ([`p2p_protocol::CHUNK_SIZE`]) whatever was asked, and never sends its data; the
/// connection stays open until the client closes it. Returns its address.
pub async fn oversized_chunk_host() -> std::net::SocketAddr {
    use p2p_protocol::{PeerConversation, PeerRequest, PeerResponse, PeerServerConnection};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tls();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok((stream, _)) = tls.accept(tcp, Duration::from_secs(5)).await else {
                    return;
                };
                let mut conn = PeerServerConnection::peer_server(stream);
                if p2p_protocol::server_hello::<PeerConversation, _>(&mut conn)
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(PeerRequest::GetChunk { file_id, index })) = conn.recv().await {
                    let lie = PeerResponse::Chunk {
                        file_id,
                        index,
                        size: p2p_protocol::CHUNK_SIZE,
                    };
                    if conn.send(&lie).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
