//! Hostile and broken input against real listeners: the process answers with a clear error
//! or drops that one connection, and keeps serving everyone else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_peer::index::IndexClient;
use p2p_protocol::codec::encode_frame;
use p2p_protocol::{
    ErrorCode, IndexClientConnection, IndexRequest, IndexResponse, PeerConversation, PeerRequest,
    PeerResponse, PeerServerConnection, server_hello,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{random_file, start_peer, start_server};

/// How a [`FakeSeeder`] misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Answers with bytes of the right length but the wrong content (a broken disk, a hostile
    /// peer).
    WrongBytes,
    /// Reads requests and never answers (a hung host).
    Stall,
}

/// A registered peer that misbehaves on every chunk request.
pub struct FakeSeeder {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSeeder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSeeder {
    pub async fn start(server: SocketAddr, file: &Path, how: Misbehaviour) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), Some(server), file, how).await
    }

    /// Listening at `bind`, registered with the index `server` if given (else it is found
    /// some other way: a DHT announcement, say).
    pub async fn start_at(
        bind: SocketAddr,
        server: Option<SocketAddr>,
        file: &Path,
        how: Misbehaviour,
    ) -> Self {
        let manifest = p2p_storage::build_manifest(file).unwrap().manifest;
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = crate::support::tls();
        let registered = match server {
            Some(server) => {
                let index = IndexClient::new(server, Duration::from_secs(5), tls.clone());
                let session = index.register(addr).await.unwrap();
                index.add_file(&session, manifest.clone()).await.unwrap();
                Some((index, session))
            }
            None => None,
        };
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let beat = async {
                let Some((index, session)) = registered else {
                    return;
                };
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = index.heartbeat(&session).await;
                }
            };
            let serve = async {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let counter = counter.clone();
                    let manifest = manifest.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let Ok((stream, _)) = tls.accept(stream, Duration::from_secs(5)).await
                        else {
                            return;
                        };
                        let mut conn = PeerServerConnection::peer_server(stream);
                        if server_hello::<PeerConversation, _>(&mut conn)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        while let Ok(Some(PeerRequest::GetChunk { file_id, index })) =
                            conn.recv().await
                        {
                            counter.fetch_add(1, Ordering::Relaxed);
                            if let Misbehaviour::Stall = how {
                                continue;
                            }
                            let len = manifest.chunk_len(index).unwrap_or(0);
                            let data = vec![0xA5; len];
                            if crate::support::send_chunk(&mut conn, file_id, index, &data)
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            };
            tokio::join!(beat, serve);
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Sends raw bytes inside TLS, then reads whatever comes back until the server closes.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = crate::support::tls_connect(addr).await;
    stream.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "server neither replied nor closed");
    reply
}

fn decode_reply(reply: &[u8]) -> IndexResponse {
    assert!(reply.len() >= 4, "no reply frame: {reply:?}");
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    p2p_protocol::codec::decode_body(&reply[4..4 + len]).unwrap()
}

/// The index still answers a well-behaved client.
async fn assert_index_alive(server: SocketAddr) {
    let client = IndexClient::new(server, Duration::from_secs(5), crate::support::tls());
    client.list_files().await.expect("index keeps serving");
}

#[tokio::test]
async fn wrong_version_gets_a_clear_error_then_close() {
    let server = start_server().await;
    let reply = send_raw(
        server.addr,
        &encode_frame(&IndexRequest::Hello { version: 999 }).unwrap(),
    )
    .await;
    match decode_reply(&reply) {
        IndexResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::VersionMismatch);
            assert!(
                message.contains("999")
                    && message.contains(&format!("version {}", p2p_protocol::PROTOCOL_VERSION)),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_index_alive(server.addr).await;
}

#[tokio::test]
async fn four_gib_length_prefix_is_refused_without_allocating() {
    let server = start_server().await;
    let reply = send_raw(server.addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    match decode_reply(&reply) {
        IndexResponse::Error { code, .. } => assert_eq!(code, ErrorCode::FrameTooLarge),
        other => panic!("unexpected {other:?}"),
    }
    assert_index_alive(server.addr).await;
}

#[tokio::test]
async fn a_chunk_server_takes_no_request_frame_over_64_kib() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    // Its requests are about a kilobyte at most: a client announcing more is cut off at the
    // header, before the server buffers anything for the body.
    let over = (p2p_protocol::MAX_PEER_REQUEST_FRAME_LEN as u32 + 1).to_be_bytes();
    let reply = send_raw(peer.local_addr(), &over).await;
    assert!(reply.len() >= 4, "no reply frame: {reply:?}");
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    match p2p_protocol::codec::decode_body::<PeerResponse>(&reply[4..4 + len]).unwrap() {
        PeerResponse::Error { code, .. } => assert_eq!(code, ErrorCode::FrameTooLarge),
        other => panic!("unexpected {other:?}"),
    }
    peer.shutdown().await;
}

#[tokio::test]
async fn garbage_and_truncated_frames_drop_only_that_connection() {
    let server = start_server().await;
    let reply = send_raw(server.addr, &[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]).await;
    assert!(matches!(
        decode_reply(&reply),
        IndexResponse::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // A frame cut short, then the client goes away.
    let mut stream = crate::support::tls_connect(server.addr).await;
    stream.write_all(&[0, 0, 0, 100, 0x81]).await.unwrap();
    drop(stream);
    // A request before Hello.
    let reply = send_raw(
        server.addr,
        &encode_frame(&IndexRequest::ListFiles {}).unwrap(),
    )
    .await;
    match decode_reply(&reply) {
        IndexResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("Hello"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_index_alive(server.addr).await;
}

#[tokio::test]
async fn chunk_server_refuses_unknown_files_and_out_of_range_chunks() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "s.bin", 1000, 3);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();

    let stream = crate::support::tls_connect(seeder.local_addr()).await;
    let mut conn = p2p_protocol::PeerClientConnection::peer_client(stream);
    p2p_protocol::client_hello::<PeerConversation, _>(&mut conn)
        .await
        .unwrap();
    let t = Duration::from_secs(5);
    let reply = conn
        .request(
            &PeerRequest::GetChunk {
                file_id: id,
                index: 1,
            },
            t,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            PeerResponse::Error {
                code: ErrorCode::ChunkOutOfRange,
                ..
            }
        ),
        "{reply:?}"
    );
    let other = p2p_protocol::FileId([0; 32]);
    let reply = conn
        .request(
            &PeerRequest::GetChunk {
                file_id: other,
                index: 0,
            },
            t,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            PeerResponse::Error {
                code: ErrorCode::UnknownFile,
                ..
            }
        ),
        "{reply:?}"
    );
    // The connection stays usable after those refusals.
    let reply = conn
        .request(&PeerRequest::GetManifest { file_id: id }, t)
        .await
        .unwrap();
    assert!(matches!(reply, PeerResponse::Manifest { file_id, .. } if file_id == id));
    seeder.shutdown().await;
}

/// A client that pipelines requests for small files and then sends a broken frame gets every
/// file it asked for before that, byte for byte and in order (an empty file's refusal in its
/// turn), and then its error: the chunk
/// server reads pipelined requests ahead (to fetch small files from disk together), and an
/// error met while reading ahead waits its turn.
#[tokio::test]
async fn pipelined_small_chunks_before_a_broken_frame_are_all_answered() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let seeder = start_peer(server.addr).await;
    let mut files = Vec::new();
    for (i, len) in [1000, 70_000, 0, 300_000, 5].into_iter().enumerate() {
        let (path, data) = random_file(src.path(), &format!("f{i}"), len, 40 + i as u64);
        files.push((seeder.register(&path).await.unwrap(), data));
    }

    // The Hello, five requests and a frame that is not a request, in one write.
    let mut bytes = encode_frame(&PeerRequest::Hello {
        version: p2p_protocol::PROTOCOL_VERSION,
    })
    .unwrap();
    for (id, _) in &files {
        let request = PeerRequest::GetChunk {
            file_id: *id,
            index: 0,
        };
        bytes.extend(encode_frame(&request).unwrap());
    }
    bytes.extend_from_slice(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]);
    let mut stream = crate::support::tls_connect(seeder.local_addr()).await;
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    let mut conn = p2p_protocol::PeerClientConnection::peer_client(stream);
    let t = Duration::from_secs(10);
    let welcome = conn.recv_timeout(t).await.unwrap();
    assert!(
        matches!(welcome, PeerResponse::Welcome { .. }),
        "{welcome:?}"
    );
    for (id, data) in &files {
        if data.is_empty() {
            // An empty file has no chunk 0: its refusal comes in its turn.
            let reply = conn.recv_timeout(t).await.unwrap();
            assert!(
                matches!(
                    reply,
                    PeerResponse::Error {
                        code: ErrorCode::ChunkOutOfRange,
                        ..
                    }
                ),
                "{reply:?}"
            );
            continue;
        }
        let mut buf = Vec::new();
        let reply = conn
            .recv_chunk(
                u32::try_from(data.len()).unwrap(),
                |size| {
                    buf.resize(size, 0);
                    &mut buf
                },
                t,
            )
            .await
            .unwrap();
        assert!(
            matches!(reply, p2p_protocol::ChunkReply::Chunk { file_id, index: 0 } if file_id == *id),
            "{reply:?}"
        );
        assert!(buf == *data, "the bytes of {id} differ");
    }
    match conn.recv_timeout(t).await {
        Ok(PeerResponse::Error { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("expected the broken frame's bad_request, got {other:?}"),
    }
    seeder.shutdown().await;
}

#[tokio::test]
async fn a_peer_cannot_touch_another_peers_registration() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "mine.bin", 10, 4);
    let victim = start_peer(server.addr).await;
    let id = victim.register(&path).await.unwrap();
    let victim_id = victim.session().unwrap().peer_id;

    // Another node, that knows the victim's peer id.
    let stream = crate::support::tls_connect(server.addr).await;
    let mut conn = IndexClientConnection::index_client(stream);
    p2p_protocol::client_hello::<p2p_protocol::IndexConversation, _>(&mut conn)
        .await
        .unwrap();
    let t = Duration::from_secs(5);
    for request in [
        IndexRequest::RemoveFile {
            peer_id: victim_id,
            file_id: id,
        },
        IndexRequest::Unregister { peer_id: victim_id },
    ] {
        let reply = conn.request(&request, t).await.unwrap();
        assert!(
            matches!(
                reply,
                IndexResponse::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    let found = conn
        .request(&IndexRequest::Lookup { id: id.to_string() }, t)
        .await
        .unwrap();
    assert!(
        matches!(found, IndexResponse::Found { ref hosts, .. } if hosts.len() == 1),
        "{found:?}"
    );
    victim.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let config = p2p_central_server::ServerConfig {
        max_connections_per_ip: 2,
        ..crate::support::fast_server_config()
    };
    let server = crate::support::start_server_on(crate::support::loopback0(), config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = crate::support::tls_connect(server.addr).await;
        let mut conn = IndexClientConnection::index_client(stream);
        p2p_protocol::client_hello::<p2p_protocol::IndexConversation, _>(&mut conn)
            .await
            .unwrap();
        held.push(conn);
    }
    let stream = crate::support::tls_connect(server.addr).await;
    let mut third = IndexClientConnection::index_client(stream);
    let err = p2p_protocol::client_hello::<p2p_protocol::IndexConversation, _>(&mut third)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("too many connections from your address (at most 2)"),
        "{err}"
    );
    // A slot frees when a connection closes.
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_index_alive(server.addr).await;
}

#[tokio::test]
async fn a_client_trickling_bytes_is_cut_off() {
    let config = p2p_central_server::ServerConfig {
        idle_timeout: Duration::from_millis(500),
        ..crate::support::fast_server_config()
    };
    let server = crate::support::start_server_on(crate::support::loopback0(), config).await;
    let mut stream = crate::support::tls_connect(server.addr).await;
    stream
        .write_all(
            &encode_frame(&IndexRequest::Hello {
                version: p2p_protocol::PROTOCOL_VERSION,
            })
            .unwrap(),
        )
        .await
        .unwrap();
    let mut welcome = [0u8; 512];
    let _ = stream.read(&mut welcome).await.unwrap();
    // A frame that announces 100 bytes, sent one byte every 100 ms: it never completes.
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in [0u8, 0, 0, 100]
        .into_iter()
        .chain(std::iter::repeat_n(0x80, 96))
    {
        if stream.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off only after {:?}",
        started.elapsed()
    );
    assert_index_alive(server.addr).await;
}

/// A `Lookup` id as long as a frame allows is quoted only by its start, so its refusal fits in
/// a reply and the connection stays open (PROTOCOL.md §2.2, §7.5).
#[tokio::test]
async fn a_lookup_id_of_2_mib_gets_a_short_refusal() {
    let server = start_server().await;
    let stream = crate::support::tls_connect(server.addr).await;
    let mut conn = IndexClientConnection::index_client(stream);
    p2p_protocol::client_hello::<p2p_protocol::IndexConversation, _>(&mut conn)
        .await
        .unwrap();
    // Everything but the message's own 17 bytes: the largest frame an index server takes.
    let lookup = IndexRequest::Lookup {
        id: "g".repeat(p2p_protocol::MAX_CONTROL_FRAME_LEN - 17),
    };
    assert_eq!(
        encode_frame(&lookup).unwrap().len() - 4,
        p2p_protocol::MAX_CONTROL_FRAME_LEN
    );
    let t = Duration::from_secs(30);
    match conn.request(&lookup, t).await.unwrap() {
        IndexResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert_eq!(
                message,
                format!(
                    "'{}...' is not a file id: use hexadecimal characters 0-9 and a-f",
                    "g".repeat(70)
                )
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let files = conn.request(&IndexRequest::ListFiles {}, t).await.unwrap();
    assert!(
        matches!(files, IndexResponse::Files { .. }),
        "the connection stays open: {files:?}"
    );
}

/// The refusal of a frame that can't be decoded quotes what the decoder quotes, in full: a
/// short unknown message name is named in the reply, one of nearly 2 MiB would make a reply
/// over the limit, so the index closes the connection without one (PROTOCOL.md §2.2), and
/// keeps serving everyone else.
#[tokio::test]
async fn an_undecodable_frame_too_long_to_quote_is_closed_without_a_reply() {
    let server = start_server().await;
    let hello = encode_frame(&IndexRequest::Hello {
        version: p2p_protocol::PROTOCOL_VERSION,
    })
    .unwrap();
    let welcome = encode_frame(&IndexResponse::Welcome {
        version: p2p_protocol::PROTOCOL_VERSION,
        role: p2p_protocol::Role::Index,
    })
    .unwrap();
    // `{<name>: {}}`, the name as str 32: 7 bytes besides the name.
    let unknown = |name: &[u8]| {
        let mut frame = ((name.len() + 7) as u32).to_be_bytes().to_vec();
        frame.extend([0x81, 0xdb]);
        frame.extend((name.len() as u32).to_be_bytes());
        frame.extend(name);
        frame.push(0x80);
        frame
    };
    let reply = send_raw(server.addr, &[hello.clone(), unknown(b"Hellp")].concat()).await;
    let refusal = decode_reply(&reply[welcome.len()..]);
    match refusal {
        IndexResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("unknown variant `Hellp`"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let huge = vec![b'x'; p2p_protocol::MAX_CONTROL_FRAME_LEN - 7];
    let reply = send_raw(server.addr, &[hello, unknown(&huge)].concat()).await;
    assert_eq!(reply, welcome, "only the Welcome came back");
    assert_index_alive(server.addr).await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
    /// Whatever bytes a client sends a chunk server, it drops that connection at worst and
    /// keeps serving everyone else.
    #[test]
    fn chunk_server_survives_arbitrary_frames(
        frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 1..8),
        garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let server = start_server().await;
            let src = tempfile::tempdir().unwrap();
            let (path, data) = random_file(src.path(), "p.bin", 5000, 1);
            let seeder = start_peer(server.addr).await;
            let id = seeder.register(&path).await.unwrap();
            // Valid frame headers around arbitrary bodies, then raw garbage.
            let mut stream = crate::support::tls_connect(seeder.local_addr()).await;
            let mut bytes = encode_frame(&PeerRequest::Hello {
                version: p2p_protocol::PROTOCOL_VERSION,
            }).unwrap();
            for body in &frames {
                bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
                bytes.extend_from_slice(body);
            }
            bytes.extend_from_slice(&garbage);
            let _ = stream.write_all(&bytes).await;
            drop(stream);
            // Everyone else is still served.
            let mut conn = crate::support::peer_connection(seeder.local_addr()).await;
            match crate::support::get_chunk(&mut conn, id, 0).await {
                Ok(got) => assert_eq!(&got[..], &data[..]),
                Err(other) => panic!("unexpected {other:?}"),
            }
            seeder.shutdown().await;
        });
    }
}
