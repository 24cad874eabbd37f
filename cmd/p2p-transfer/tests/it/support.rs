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
    /// The index's node id.
    pub node_id: p2p_protocol::NodeId,
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
    let tls = tls();
    let node_id = tls.node_id();
    let server = Server::new(listener, config, tls);
    let addr = server.local_addr().unwrap();
    let handle = server.handle().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    TestServer {
        addr,
        handle,
        node_id,
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
        indexes: vec![p2p_peer::IndexSpec::at(server)],
        request_timeout: Duration::from_secs(10),
        // Tests that lose every host should fail fast.
        stall_timeout: Duration::from_secs(2),
        ..PeerConfig::default()
    }
}

pub async fn start_peer(server: SocketAddr) -> PeerHandle {
    Peer::start(peer_config(server), tls()).await.unwrap()
}

/// A peer on 127.0.0.1 that uses no index (it serves what it shares to whoever asks it).
pub async fn start_peer_without_index() -> PeerHandle {
    let config = PeerConfig {
        indexes: Vec::new(),
        ..peer_config(loopback0())
    };
    Peer::start(config, tls()).await.unwrap()
}

/// A new node's TLS set-up, with an identity of its own.
pub fn tls() -> p2p_transport::Tls {
    let (identity, _) =
        p2p_identity::Identity::load_or_create(&fresh_identity_dir(), p2p_identity::Role::Peer)
            .unwrap();
    p2p_transport::Tls::new(&identity).unwrap()
}

/// Sends `Chunk` and its data, as a chunk server does.
pub async fn send_chunk(
    conn: &mut p2p_protocol::PeerServerConnection<p2p_transport::Stream>,
    file_id: p2p_protocol::FileId,
    index: u32,
    data: &[u8],
) -> Result<(), p2p_protocol::ProtocolError> {
    let size = data.len() as u32;
    conn.send(&p2p_protocol::PeerResponse::Chunk {
        file_id,
        index,
        size,
    })
    .await?;
    conn.send_chunk_data(data).await?;
    conn.flush().await
}

/// Sends `GetChunk` and returns the chunk's data, or the reply that came instead.
pub async fn get_chunk(
    conn: &mut p2p_protocol::PeerClientConnection<p2p_transport::Stream>,
    file_id: p2p_protocol::FileId,
    index: u32,
) -> Result<Vec<u8>, p2p_protocol::PeerResponse> {
    let mut data = Vec::new();
    let request = p2p_protocol::PeerRequest::GetChunk { file_id, index };
    let reply = conn
        .request_chunk(
            &request,
            |len| {
                data.resize(len, 0);
                &mut data[..]
            },
            TEST_HANDSHAKE,
        )
        .await
        .unwrap();
    match reply {
        p2p_protocol::ChunkReply::Chunk { .. } => Ok(data),
        p2p_protocol::ChunkReply::Other(other) => Err(other),
    }
}

/// A handshaken connection to the chunk server at `addr`, as a new node.
pub async fn peer_connection(
    addr: SocketAddr,
) -> p2p_protocol::PeerClientConnection<p2p_transport::Stream> {
    p2p_transport::connect::<p2p_protocol::PeerConversation>(&tls(), addr, None, TEST_HANDSHAKE)
        .await
        .unwrap()
        .0
}

/// The server side of the TLS handshake on an accepted connection, for fake servers; `None`
/// if the client went away.
pub async fn accept_tls(
    tls: &p2p_transport::Tls,
    stream: TcpStream,
) -> Option<p2p_transport::Stream> {
    tls.accept(stream, TEST_HANDSHAKE)
        .await
        .ok()
        .map(|(s, _)| s)
}

/// How long a test client waits for a TLS handshake.
const TEST_HANDSHAKE: Duration = Duration::from_secs(10);

/// A TLS connection to `server` as a new node, before any message: for tests that write
/// frames by hand.
pub async fn tls_connect(server: SocketAddr) -> p2p_transport::Stream {
    tls().connect(server, None, TEST_HANDSHAKE).await.unwrap().0
}

/// A TLS connection to `server` from the loopback address `source`, as a new node.
pub async fn tls_connect_from(source: IpAddr, server: SocketAddr) -> p2p_transport::Stream {
    try_tls_connect_from(source, server)
        .await
        .expect("TLS connection")
}

/// As [`tls_connect_from`], `None` if the server did not complete the handshake.
pub async fn try_tls_connect_from(
    source: IpAddr,
    server: SocketAddr,
) -> Option<p2p_transport::Stream> {
    try_tls_connect_as(&tls(), source, server).await
}

/// A TLS connection to `server` from the loopback address `source`, as the node of `tls`;
/// `None` if the server did not complete the handshake.
pub async fn try_tls_connect_as(
    tls: &p2p_transport::Tls,
    source: IpAddr,
    server: SocketAddr,
) -> Option<p2p_transport::Stream> {
    let tcp = connect_from(source, server).await.ok()?;
    Some(tls.secure(tcp, None, TEST_HANDSHAKE).await.ok()?.0)
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
) -> p2p_protocol::IndexClientConnection<p2p_transport::Stream> {
    let stream = tls_connect_from(IpAddr::from(source), server).await;
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

/// Forwards TCP connections to `target` until it goes silent (told to, or once a budget of
/// bytes from `target` has passed); then it keeps every connection open but passes nothing
/// either way, like a network that drops packets without a reset.
pub struct SilentProxy {
    pub addr: SocketAddr,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SilentProxy {
    /// Passes everything until [`SilentProxy::go_silent`].
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_with_budget(target, u64::MAX).await
    }

    /// Goes silent by itself once `budget` bytes from `target` have passed (on all its
    /// connections together; the read that crosses the budget still passes).
    pub async fn start_with_budget(target: SocketAddr, budget: u64) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        let passed = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (flag, passed) = (flag.clone(), passed.clone());
                conns.spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // `counted`: the bytes from `target`, which the budget is of.
                    let pump = |counted: Option<Arc<AtomicU64>>| {
                        let flag = flag.clone();
                        move |mut from: tokio::net::tcp::OwnedReadHalf,
                              mut to: tokio::net::tcp::OwnedWriteHalf| async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = vec![0u8; 64 * 1024];
                            while let Ok(n) = from.read(&mut buf).await {
                                if n == 0 {
                                    return;
                                }
                                // Silent: swallow everything, close nothing.
                                if flag.load(Ordering::Relaxed) {
                                    continue;
                                }
                                if to.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                                if let Some(passed) = &counted
                                    && passed.fetch_add(n as u64, Ordering::Relaxed) + n as u64
                                        >= budget
                                {
                                    flag.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    };
                    let up = pump(None);
                    let down = pump(Some(passed));
                    tokio::join!(up(cr, sw), down(sr, cw));
                });
            }
        });
        Self { addr, silent, task }
    }

    pub fn go_silent(&self) {
        self.silent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
