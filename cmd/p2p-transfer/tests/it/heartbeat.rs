//! A peer's heartbeats reach the index on time whatever its user is asking the index: a
//! search the index takes its time over does not hold a heartbeat back on the peer's side,
//! where the index's own protection of heartbeats can't see it. And both of the peer's index
//! connections come back by themselves when the index closed them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_peer::index::IndexClient;
use p2p_peer::{Peer, PeerConfig};
use p2p_protocol::{
    FileId, FileSummary, IndexConversation, IndexRequest, IndexResponse, IndexServerConnection,
    PeerId, server_hello,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::support::peer_config;

/// The pace the fake index asks for (the least the reference peer uses).
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// The fake index's expiry: 30 intervals, so a loaded machine has room, and still short
/// enough for the test to watch a whole timeout go by.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Generous bound on things that take milliseconds when all is well.
const DEADLINE: Duration = Duration::from_secs(20);

/// What the fake index saw, when its frame had arrived.
#[derive(Debug)]
enum Seen {
    Heartbeat(Instant),
    Search(Instant),
}

/// How the fake index treats its clients.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers registration requests at once, holds a `Search` until released.
    HoldSearches,
    /// Answers every request at once, then closes the connection.
    OneReplyPerConnection,
}

/// An index written against the protocol types; its task is aborted on drop.
struct FakeIndex {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Lets one held `Search` be answered.
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIndex {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let tls = crate::support::tls();
        let task = tokio::spawn({
            let release = release.clone();
            async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (tls, tx, release) = (tls.clone(), tx.clone(), release.clone());
                    tokio::spawn(async move {
                        if let Some(stream) = crate::support::accept_tls(&tls, stream).await {
                            serve(stream, behaviour, tx, release).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            seen,
            release,
            task,
        }
    }

    /// The next thing the index saw, or `None` if nothing came by `deadline`.
    async fn next_seen(&mut self, deadline: Instant) -> Option<Seen> {
        tokio::time::timeout_at(deadline, self.seen.recv())
            .await
            .ok()
            .map(|seen| seen.expect("the fake index runs"))
    }
}

async fn serve(
    stream: p2p_transport::Stream,
    behaviour: Behaviour,
    seen: mpsc::UnboundedSender<Seen>,
    release: Arc<Notify>,
) {
    let mut conn = IndexServerConnection::index_server(stream);
    if server_hello::<IndexConversation, _>(&mut conn)
        .await
        .is_err()
    {
        return;
    }
    while let Ok(Some(request)) = conn.recv().await {
        let now = Instant::now();
        match &request {
            IndexRequest::Heartbeat { .. } => {
                let _ = seen.send(Seen::Heartbeat(now));
            }
            IndexRequest::Search { .. } => {
                let _ = seen.send(Seen::Search(now));
                if let Behaviour::HoldSearches = behaviour {
                    release.notified().await;
                }
            }
            _ => {}
        }
        if conn.send(&reply(request)).await.is_err() {
            return;
        }
        if let Behaviour::OneReplyPerConnection = behaviour {
            return;
        }
    }
}

fn reply(request: IndexRequest) -> IndexResponse {
    match request {
        IndexRequest::Register { addr } => IndexResponse::Registered {
            peer_id: PeerId(1),
            addr,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
            heartbeat_timeout_ms: HEARTBEAT_TIMEOUT.as_millis() as u64,
        },
        IndexRequest::Heartbeat { .. } => IndexResponse::HeartbeatAck {},
        IndexRequest::Unregister { .. } => IndexResponse::Unregistered {},
        IndexRequest::Search { .. } => IndexResponse::Files {
            files: vec![FileSummary {
                file_id: FileId([3; 32]),
                name: "found.txt".into(),
                size: 1000,
                hosts: 1,
                files: None,
                path: None,
            }],
            total: 1,
        },
        other => panic!("the test peer sent {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_reach_the_index_on_time_while_a_search_waits_for_its_reply() {
    let mut index = FakeIndex::start(Behaviour::HoldSearches).await;
    let peer = Peer::start(
        PeerConfig {
            // The search is held far longer than the expiry, and never times out in this test.
            index_timeout: Duration::from_secs(600),
            ..peer_config(index.addr)
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let search = tokio::spawn({
        let peer = peer.clone();
        async move { peer.search("found").await }
    });

    // The search has reached the index, which sits on it.
    let deadline = Instant::now() + DEADLINE;
    let search_arrived = loop {
        match index.next_seen(deadline).await {
            Some(Seen::Search(at)) => break at,
            Some(Seen::Heartbeat(_)) => {}
            None => panic!("the search did not reach the index within {DEADLINE:?}"),
        }
    };
    // For a whole expiry period after that, the index never goes an expiry period without
    // a heartbeat, so it would not drop this peer.
    let mut last_heard = search_arrived;
    let mut beats = 0;
    while last_heard - search_arrived < HEARTBEAT_TIMEOUT {
        match index.next_seen(last_heard + HEARTBEAT_TIMEOUT).await {
            Some(Seen::Heartbeat(at)) => {
                last_heard = at;
                beats += 1;
            }
            Some(other) => panic!("the index saw {other:?}"),
            None => panic!(
                "no heartbeat reached the index for {HEARTBEAT_TIMEOUT:?} while the user's \
                 search waited ({beats} after the search arrived): a live peer would be dropped"
            ),
        }
    }
    assert!(!search.is_finished(), "the search was still unanswered");

    // Once the index answers, the user gets the result.
    index.release.notify_one();
    let (files, total) = tokio::time::timeout(DEADLINE, search)
        .await
        .expect("the search is answered once the index replies")
        .unwrap()
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(files[0].name, "found.txt");
    peer.shutdown().await;
}

#[tokio::test]
async fn both_index_connections_reconnect_after_the_index_closed_them() {
    let index = FakeIndex::start(Behaviour::OneReplyPerConnection).await;
    let client = IndexClient::new(index.addr, Duration::from_secs(10), crate::support::tls());
    // Each lane's second request finds its connection closed, and sends it again on a new one.
    let session = client
        .register("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        client.heartbeat(&session).await.unwrap();
        let (_, total) = client.search("found").await.unwrap();
        assert_eq!(total, 1);
    }
}
