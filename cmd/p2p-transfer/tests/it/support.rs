//! Shared set-up: an in-process index server and peers on loopback, random files.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_central_server::{Server, ServerConfig};
use p2p_peer::{Peer, PeerConfig, PeerHandle};
use rand::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running in-process index server; cancelled on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// For status (counts, stored bytes).
    pub handle: p2p_central_server::ServerHandle,
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
    let handle = server.handle().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    TestServer {
        addr,
        handle,
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

/// The loopback address `127.0.0.last`. Linux accepts any of 127.0.0.0/8 on loopback, so each
/// looks like another host to a server.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `server` from the loopback address `source` (port chosen by the
/// system), to play a client on another machine.
pub async fn connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A handshaken connection to the index server from the loopback address `source`.
pub async fn index_connection_from(
    source: [u8; 4],
    server: SocketAddr,
) -> p2p_protocol::IndexClientConnection<TcpStream> {
    let stream = connect_from(IpAddr::from(source), server).await.unwrap();
    let mut conn = p2p_protocol::IndexClientConnection::index_client(stream);
    p2p_protocol::client_hello::<p2p_protocol::IndexConversation, _>(&mut conn)
        .await
        .unwrap();
    conn
}

/// A folder of its own for one node's identity: several nodes run on this machine, and none
/// may touch the identity of the user running the tests.
pub fn fresh_identity_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("identities")
        .join(format!("{}-{n}", std::process::id()))
}
