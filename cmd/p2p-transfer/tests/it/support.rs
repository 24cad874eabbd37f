//! Shared set-up: an in-process index server and peers on loopback, random files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_central_server::{Server, ServerConfig};
use p2p_peer::index_client::{IndexClient, Session};
use p2p_peer::{DownloadEvent, DownloadReport, Peer, PeerConfig, PeerError, PeerHandle};
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_util::sync::CancellationToken;

/// A running in-process index server; cancelled on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestServer {
    /// Stops the server and waits until it has closed every connection.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub fn fast_server_config() -> ServerConfig {
    ServerConfig {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_millis(800),
        ..ServerConfig::default()
    }
}

/// Starts an index server on `addr` (use port 0 for any).
pub async fn start_server_on(addr: SocketAddr, config: ServerConfig) -> TestServer {
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::new(listener, config);
    let addr = server.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        task: Some(task),
    }
}

pub async fn start_server() -> TestServer {
    start_server_on(loopback0(), fast_server_config()).await
}

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn peer_config(server: SocketAddr) -> PeerConfig {
    PeerConfig {
        listen_addr: loopback0(),
        server_addr: Some(server),
        request_timeout: Duration::from_secs(10),
        // Tests that lose every host should fail fast.
        stall_timeout: Duration::from_secs(2),
        ..PeerConfig::default()
    }
}

pub async fn start_peer(server: SocketAddr) -> PeerHandle {
    Peer::start(peer_config(server)).await.unwrap()
}

/// A peer of `server` whose [`peer_config`] `adjust` changes first.
pub async fn start_peer_with(
    server: SocketAddr,
    adjust: impl FnOnce(&mut PeerConfig),
) -> PeerHandle {
    let mut config = peer_config(server);
    adjust(&mut config);
    Peer::start(config).await.unwrap()
}

/// An index server and one peer sharing a random file, with a folder to download into. The
/// seeder reads the file from `src`: when destructuring, keep it alive with `src: _src`.
pub struct Seeded {
    pub server: TestServer,
    pub src: TempDir,
    pub out: TempDir,
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub seeder: PeerHandle,
    /// The file's full id.
    pub id: String,
}

/// Starts an index server and a seeder sharing `len` random bytes (from `seed`) as `name`.
pub async fn seeded(name: &str, len: usize, seed: u64) -> Seeded {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), name, len, seed);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap().to_string();
    Seeded {
        server,
        src,
        out,
        path,
        data,
        seeder,
        id,
    }
}

/// `peer.download(id, out)` without events or cancellation.
pub async fn download(
    peer: &PeerHandle,
    id: &str,
    out: &Path,
) -> Result<DownloadReport, PeerError> {
    peer.download(id, out, None, CancellationToken::new()).await
}

/// Starts `peer.download(id, out)` with its events going to the returned receiver: await the
/// future alongside whatever reads them.
pub fn download_watched<'a>(
    peer: &'a PeerHandle,
    id: &'a str,
    out: &'a Path,
    cancel: CancellationToken,
) -> (
    impl std::future::Future<Output = Result<DownloadReport, PeerError>> + 'a,
    UnboundedReceiver<DownloadEvent>,
) {
    let (tx, rx) = unbounded_channel();
    (peer.download(id, out, Some(tx), cancel), rx)
}

/// Reads download events until `host` has delivered a chunk, shuts it down (connections and
/// all), then reads the rest.
pub async fn shut_down_after_its_first_chunk(
    events: &mut UnboundedReceiver<DownloadEvent>,
    host: &PeerHandle,
) {
    while let Some(event) = events.recv().await {
        if let DownloadEvent::ChunkDone { host: from, .. } = event
            && from == host.local_addr()
        {
            host.shutdown().await;
            break;
        }
    }
    while events.recv().await.is_some() {}
}

/// A peer registered with `server` by hand at an address nobody listens on, which never
/// heartbeats: its client and session.
pub async fn registered_by_hand(server: SocketAddr) -> (IndexClient, Session) {
    let client = IndexClient::new(server, Duration::from_secs(5));
    let session = client
        .register("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    (client, session)
}

/// Writes `len` bytes from a seeded generator to `dir/name`.
pub fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
