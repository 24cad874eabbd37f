//! Idle connections must not starve real users: clients on several addresses that hold
//! connections after `Hello` and send nothing fill a server's slots, and registered peers,
//! new clients and downloaders are still served (the longest-idle connection makes room).
//!
//! The idle clients use distinct loopback source addresses (127.0.0.2, 127.0.0.3, ...): Linux
//! accepts any 127/8 address on loopback, so each looks like another host to the server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_central_server::{Server, ServerConfig, ServerHandle};
use p2p_peer::PeerConfig;
use p2p_protocol::handshake::Conversation;
use p2p_protocol::{
    CHUNK_SIZE, Connection, IndexClientConnection, IndexConversation, IndexRequest, IndexResponse,
    MAX_CONTROL_FRAME_LEN, PeerClientConnection, PeerConversation, PeerRequest, client_hello,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{
    eventually, fast_server_config, loopback, loopback0, peer_config, random_file, start_server,
};

/// Limit on each step a legitimate client takes; generous for a loaded machine, far below
/// what waiting in a full server's backlog would take (forever).
const PROMPT: Duration = Duration::from_secs(5);

/// Connections of conversation `C` from each of `sources`, `per_source` of them, that said
/// `Hello` (and got `Welcome`) and will say nothing more. Those the server did not welcome
/// within a few seconds are left out.
async fn hold_idle<C>(
    sources: &[IpAddr],
    per_source: usize,
    server: SocketAddr,
) -> Vec<Connection<p2p_transport::Stream, C::Response, C::Request>>
where
    C: Conversation + 'static,
    C::Request: Send + Sync,
    C::Response: Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for &source in sources {
        for _ in 0..per_source {
            tasks.spawn(async move {
                let stream = crate::support::try_tls_connect_from(source, server).await?;
                let mut conn =
                    Connection::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_FRAME_LEN);
                tokio::time::timeout(Duration::from_secs(3), client_hello::<C, _>(&mut conn))
                    .await
                    .ok()?
                    .ok()?;
                Some(conn)
            });
        }
    }
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        held.extend(joined.unwrap());
    }
    held
}

/// One request on a new connection from `source` as the node of `tls`, handshakes included,
/// within [`PROMPT`].
async fn fresh_request(
    tls: &p2p_transport::Tls,
    source: IpAddr,
    server: SocketAddr,
    request: IndexRequest,
) -> IndexResponse {
    let exchange = async {
        let stream = crate::support::try_tls_connect_as(tls, source, server)
            .await
            .expect("TLS connection");
        let mut conn = IndexClientConnection::index_client(stream);
        client_hello::<IndexConversation, _>(&mut conn)
            .await
            .unwrap();
        conn.request(&request, PROMPT).await.unwrap()
    };
    match tokio::time::timeout(PROMPT, exchange).await {
        Ok(reply) => reply,
        Err(_) => panic!("no reply to {request:?} from {source} within {PROMPT:?}"),
    }
}

/// An index server with `config`, its handle, and the token that stops it.
async fn start_index(config: ServerConfig) -> (SocketAddr, ServerHandle, CancellationToken) {
    let server = Server::new(
        TcpListener::bind(loopback0()).await.unwrap(),
        config,
        crate::support::tls(),
    );
    let addr = server.local_addr().unwrap();
    let handle = server.handle().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    (addr, handle, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_on_many_addresses_do_not_starve_registered_peers() {
    let config = ServerConfig {
        max_connections: 16,
        max_connections_per_ip: 2,
        // Fast beats, with room for a loaded machine to be late with one.
        heartbeat_timeout: Duration::from_millis(1500),
        ..fast_server_config()
    };
    let interval = config.heartbeat_interval;
    let (addr, index, shutdown) = start_index(config).await;
    // A real peer, registered and heartbeating on its one connection.
    let peer = p2p_peer::Peer::start(peer_config(addr), crate::support::tls())
        .await
        .unwrap();
    let registered = peer.session().unwrap().peer_id;

    // Eight addresses, each at its per-address limit, holding idle connections after Hello:
    // together they ask for every slot.
    let sources: Vec<IpAddr> = (2..=9).map(loopback).collect();
    let held = hold_idle::<IndexConversation>(&sources, 2, addr).await;
    assert!(
        held.len() >= 15,
        "only {} idle connections got in",
        held.len()
    );

    // A new client still gets in and registers, and its heartbeats, each on a new connection,
    // are answered promptly for several heartbeat timeouts.
    let newcomer = loopback(10);
    let newcomer_node = crate::support::tls();
    let reply = fresh_request(
        &newcomer_node,
        newcomer,
        addr,
        IndexRequest::Register {
            addr: SocketAddr::new(newcomer, 9),
        },
    )
    .await;
    let IndexResponse::Registered { peer_id, .. } = reply else {
        panic!("Register refused: {reply:?}");
    };
    let mut ticks = tokio::time::interval(interval);
    // 12 beats at 200 ms: longer than the heartbeat timeout, so an expiry would show.
    for _ in 0..12 {
        ticks.tick().await;
        let reply = fresh_request(
            &newcomer_node,
            newcomer,
            addr,
            IndexRequest::Heartbeat { peer_id },
        )
        .await;
        assert!(matches!(reply, IndexResponse::HeartbeatAck {}), "{reply:?}");
    }

    // The peer that was registered before the flood was never expired: same id, still listed.
    assert_eq!(peer.session().unwrap().peer_id, registered);
    let (peers, _) = index.list_peers();
    let listed: Vec<_> = peers.iter().map(|p| p.peer_id).collect();
    assert!(listed.contains(&registered), "{listed:?}");
    assert!(listed.contains(&peer_id), "{listed:?}");
    drop(held);
    peer.shutdown().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_a_downloader() {
    let server = start_server().await;
    let seeder = p2p_peer::Peer::start(
        PeerConfig {
            max_inbound: 12,
            max_inbound_per_ip: 6,
            ..peer_config(server.addr)
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "wanted.bin", 2 * CHUNK_SIZE as usize + 1000, 7);
    let id = seeder.register(&path).await.unwrap();

    // Two addresses hold every one of the seeder's slots with idle connections after Hello.
    let held =
        hold_idle::<PeerConversation>(&[loopback(2), loopback(3)], 6, seeder.local_addr()).await;
    assert_eq!(
        held.len(),
        12,
        "the idle connections did not fill the seeder"
    );

    let leecher = p2p_peer::Peer::start(
        PeerConfig {
            workers: 4,
            ..peer_config(server.addr)
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        leecher.download(&id.to_string(), out.path(), None, CancellationToken::new()),
    )
    .await
    .expect("download hung")
    .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    drop(held);
    leecher.shutdown().await;
    seeder.shutdown().await;
}

/// Chunk requests a greedy client keeps queued on its connection: 12 replies of 4 MiB are more
/// than the socket buffers on both sides hold (4 MiB to send, a few to receive), so the server
/// always has a request to answer or a reply to write, and its connection is never idle.
const GREEDY_QUEUE: usize = 12;

/// Pause between the replies a greedy client reads, to spare the CPU: each reply is still
/// written in a fraction of a second, far from slow.
const GREEDY_PACE: Duration = Duration::from_millis(100);

/// A client on `source` that keeps one connection to the chunk server `seeder` busy with
/// back-to-back `GetChunk`s for chunk 0 of `file_id` ([`GREEDY_QUEUE`] queued, one more sent
/// after each reply it reads). When the connection is lost or refused, it opens another
/// after a short pause. Sends on `ready` after its first chunk, and counts every chunk in
/// `chunks`.
async fn greedy_downloads(
    source: IpAddr,
    seeder: SocketAddr,
    file_id: p2p_protocol::FileId,
    ready: tokio::sync::mpsc::Sender<()>,
    chunks: Arc<AtomicU64>,
) {
    let request = PeerRequest::GetChunk { file_id, index: 0 };
    let mut ready = Some(ready);
    loop {
        let exchanges = async {
            let stream = crate::support::try_tls_connect_from(source, seeder).await?;
            let mut conn = PeerClientConnection::peer_client(stream);
            client_hello::<PeerConversation, _>(&mut conn).await.ok()?;
            for _ in 0..GREEDY_QUEUE {
                conn.send(&request).await.ok()?;
            }
            let mut data = vec![0u8; CHUNK_SIZE as usize];
            loop {
                let p2p_protocol::ChunkReply::Chunk { .. } = conn
                    .recv_chunk(CHUNK_SIZE, |len| &mut data[..len], PROMPT)
                    .await
                    .ok()?
                else {
                    return None;
                };
                chunks.fetch_add(1, Ordering::Relaxed);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(()).await;
                }
                tokio::time::sleep(GREEDY_PACE).await;
                conn.send(&request).await.ok()?;
            }
        };
        let _: Option<()> = exchanges.await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_downloads_on_two_addresses_do_not_starve_a_third() {
    let server = start_server().await;
    let seeder = p2p_peer::Peer::start(
        PeerConfig {
            max_inbound: 12,
            max_inbound_per_ip: 6,
            ..peer_config(server.addr)
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let (other, _) = random_file(src.path(), "other.bin", CHUNK_SIZE as usize, 8);
    let other = seeder.register(&other).await.unwrap();
    let (path, data) = random_file(src.path(), "wanted.bin", 2 * CHUNK_SIZE as usize + 1000, 7);
    let id = seeder.register(&path).await.unwrap();

    // Two addresses take every one of the seeder's slots, and keep each of them answering or
    // writing, never idle and never slow.
    let chunks = Arc::new(AtomicU64::new(0));
    let (ready, mut all_ready) = tokio::sync::mpsc::channel(12);
    let mut greedy = tokio::task::JoinSet::new();
    for source in [loopback(2), loopback(3)] {
        for _ in 0..6 {
            greedy.spawn(greedy_downloads(
                source,
                seeder.local_addr(),
                other,
                ready.clone(),
                chunks.clone(),
            ));
        }
    }
    for _ in 0..12 {
        tokio::time::timeout(PROMPT, all_ready.recv())
            .await
            .expect("the greedy clients did not fill the seeder");
    }

    // A leecher on a third address (127.0.0.1) with fewer workers than its fair share (12
    // slots over three addresses) gets in and downloads the whole file.
    let leecher = p2p_peer::Peer::start(
        PeerConfig {
            workers: 3,
            ..peer_config(server.addr)
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let before = chunks.load(Ordering::Relaxed);
    let out = tempfile::tempdir().unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        leecher.download(&id.to_string(), out.path(), None, CancellationToken::new()),
    )
    .await
    .expect("download hung")
    .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    // The greedy clients are still served: the leecher did not just find them gone.
    assert!(
        eventually(PROMPT, || {
            let chunks = chunks.clone();
            async move { chunks.load(Ordering::Relaxed) > before }
        })
        .await,
        "the greedy clients were no longer served"
    );
    greedy.shutdown().await;
    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_only_says_hello_is_closed_after_the_first_request_timeout() {
    let config = ServerConfig {
        first_request_timeout: Duration::from_millis(300),
        ..fast_server_config()
    };
    let (addr, _index, shutdown) = start_index(config).await;
    // A client that asks at once is served.
    let stream = crate::support::tls_connect_from(loopback(1), addr).await;
    let mut active = IndexClientConnection::index_client(stream);
    client_hello::<IndexConversation, _>(&mut active)
        .await
        .unwrap();
    let reply = active
        .request(&IndexRequest::ListPeers {}, PROMPT)
        .await
        .unwrap();
    assert!(matches!(reply, IndexResponse::Peers { .. }), "{reply:?}");
    // One that only says Hello, opened after it.
    let stream = crate::support::tls_connect_from(loopback(1), addr).await;
    let mut silent = IndexClientConnection::index_client(stream);
    client_hello::<IndexConversation, _>(&mut silent)
        .await
        .unwrap();

    // The silent one is closed without a reply.
    let closed = silent.recv_timeout(PROMPT).await;
    assert!(
        matches!(closed, Err(p2p_protocol::ProtocolError::Closed)),
        "{closed:?}"
    );
    // The one that asked has been idle longer than that since its reply, and is still open:
    // after a first request, the (longer) idle timeout applies.
    let reply = active
        .request(&IndexRequest::ListPeers {}, PROMPT)
        .await
        .unwrap();
    assert!(matches!(reply, IndexResponse::Peers { .. }), "{reply:?}");
    shutdown.cancel();
}
