//! Trust: who a node is comes from its TLS handshake, never from what it says or where it
//! connects from. An impostor at an address the index lists for another node is refused and
//! the download completes from the honest host; a host the user named by address alone is
//! taken as it is; clients that stall in the TLS handshake can't keep others out; clients that
//! don't speak TLS or present no usable certificate are turned away while the server keeps
//! serving; and a message can't claim another sender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_central_server::ServerConfig;
use p2p_peer::index::IndexClient;
use p2p_peer::{DownloadEvent, DownloadRequest, Peer, PeerConfig, PeerHandle};
use p2p_protocol::codec::encode_frame;
use p2p_protocol::handshake::HANDSHAKE_TIMEOUT;
use p2p_protocol::{
    CHUNK_SIZE, FileId, FileManifest, HostInfo, IndexClientConnection, IndexConversation,
    IndexRequest, IndexResponse, NodeId, PROTOCOL_VERSION, PeerConversation, PeerRequest,
    PeerResponse, client_hello,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, SignatureAlgorithm, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{
    TestServer, connect_from, fast_server_config, loopback, loopback0, peer_config, random_file,
    start_peer, start_peer_without_index, start_server_on, tls, try_tls_connect_as,
};

/// Limit on each step a legitimate client takes: generous for a loaded machine, and well
/// under the handshake deadline that would free a stalled client's slot anyway.
const PROMPT: Duration = Duration::from_secs(5);

/// Three chunks, so a download asks both hosts of a two-host file.
const THREE_CHUNKS: usize = 2 * CHUNK_SIZE as usize + 1;

// ---------------------------------------------------------------------------------------------
// An impostor at a listed address

/// The scene of an impersonation: an index; optionally an honest seeder of a file, registered;
/// an impostor, a real peer with a key of its own that serves the same file but never
/// registered; and a registration by a third node (the claimant) naming the impostor's
/// address, so the index lists that address with the claimant's node id.
struct Impersonation {
    server: TestServer,
    seeder: Option<PeerHandle>,
    impostor: PeerHandle,
    /// The node id the index recorded for the impostor's address.
    claimant: NodeId,
    /// Kept open for the length of the test.
    _claimant_conn: IndexClientConnection<p2p_transport::Stream>,
    file_id: FileId,
    data: Vec<u8>,
    _src: tempfile::TempDir,
}

impl Impersonation {
    async fn new(with_seeder: bool) -> Self {
        // Registrations outlive the test without heartbeats: the claimant sends none.
        let config = ServerConfig {
            heartbeat_timeout: Duration::from_secs(300),
            ..ServerConfig::default()
        };
        let server = start_server_on(loopback0(), config).await;
        let src = tempfile::tempdir().unwrap();
        let (path, data) = random_file(src.path(), "payroll.xlsx", THREE_CHUNKS, 121);
        let seeder = match with_seeder {
            true => Some(start_peer(server.addr).await),
            false => None,
        };
        if let Some(seeder) = &seeder {
            seeder.register(&path).await.unwrap();
        }
        let impostor = Peer::start(
            PeerConfig {
                indexes: Vec::new(),
                ..peer_config(server.addr)
            },
            tls(),
        )
        .await
        .unwrap();
        let manifest = impostor.register_manifest(&path).await.unwrap();
        let file_id = manifest.id();

        let claimant = tls();
        let mut conn = index_connection_as(&claimant, server.addr).await;
        let reply = conn
            .request(
                &IndexRequest::Register {
                    addr: impostor.local_addr(),
                },
                PROMPT,
            )
            .await
            .unwrap();
        let IndexResponse::Registered { peer_id, .. } = reply else {
            panic!("{reply:?}")
        };
        let reply = conn
            .request(&IndexRequest::AddFile { peer_id, manifest }, PROMPT)
            .await
            .unwrap();
        assert!(
            matches!(reply, IndexResponse::FileAdded { .. }),
            "{reply:?}"
        );

        // What the index hands out: the impostor's address under the claimant's node id.
        let hosts = lookup_hosts(&mut conn, file_id).await;
        assert!(
            hosts.contains(&(impostor.local_addr(), claimant.node_id())),
            "{hosts:?}"
        );
        if let Some(seeder) = &seeder {
            assert!(hosts.contains(&(seeder.local_addr(), seeder.node_id())));
        }
        Self {
            server,
            seeder,
            impostor,
            claimant: claimant.node_id(),
            _claimant_conn: conn,
            file_id,
            data,
            _src: src,
        }
    }

    async fn shutdown(self) {
        if let Some(seeder) = self.seeder {
            seeder.shutdown().await;
        }
        self.impostor.shutdown().await;
        self.server.stop().await;
    }
}

/// A handshaken index connection from 127.0.0.3 as the node of `tls`.
async fn index_connection_as(
    tls: &p2p_transport::Tls,
    server: SocketAddr,
) -> IndexClientConnection<p2p_transport::Stream> {
    let stream = try_tls_connect_as(tls, loopback(3), server)
        .await
        .expect("TLS connection");
    let mut conn = IndexClientConnection::index_client(stream);
    client_hello::<IndexConversation, _>(&mut conn)
        .await
        .unwrap();
    conn
}

/// The hosts the index lists for `file_id`: address and node id.
async fn lookup_hosts(
    conn: &mut IndexClientConnection<p2p_transport::Stream>,
    file_id: FileId,
) -> Vec<(SocketAddr, NodeId)> {
    let reply = conn
        .request(
            &IndexRequest::Lookup {
                id: file_id.to_string(),
            },
            PROMPT,
        )
        .await
        .unwrap();
    let IndexResponse::Found { hosts, .. } = reply else {
        panic!("{reply:?}")
    };
    hosts
        .into_iter()
        .map(|HostInfo { addr, node_id, .. }| (addr, node_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_at_a_listed_address_is_refused_and_the_honest_host_serves() {
    let scene = Impersonation::new(true).await;
    let seeder = scene.seeder.as_ref().unwrap();
    let leecher = start_peer(scene.server.addr).await;
    let out = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = leecher
        .download(
            &scene.file_id.to_string(),
            out.path(),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), scene.data);

    let impostor = scene.impostor.local_addr();
    assert_eq!(scene.impostor.chunks_served(), 0, "the impostor served");
    let delivered = |host| {
        report
            .per_host
            .iter()
            .filter(|(addr, _)| *addr == host)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(delivered(impostor), 0, "{:?}", report.per_host);
    assert_eq!(delivered(seeder.local_addr()), 3, "{:?}", report.per_host);

    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DownloadEvent::Started { hosts: 2, .. })),
        "the impostor was not offered to the download: {events:?}"
    );
    // Every try on the impostor was refused for its node id, and the user is told once (the
    // CLI prints `dropped HOST: ERROR` for the event that drops a host).
    let failures: Vec<(&String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            DownloadEvent::PeerFailed {
                host,
                error,
                dropped,
            } if *host == impostor => Some((error, *dropped)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures.iter().filter(|(_, dropped)| *dropped).count(),
        1,
        "{failures:?}"
    );
    for (error, _) in &failures {
        let (got, expected) = (scene.impostor.node_id(), scene.claimant);
        assert!(
            error.contains(&format!(
                "the node at this address is {got}, not the expected {expected}"
            )),
            "{error}"
        );
    }
    leecher.shutdown().await;
    scene.shutdown().await;
}

/// A host the user names by address (`--from`) is whoever answers there, even where the index
/// lists that address for another node: only the index's word is checked against the
/// handshake. (Downloads from named peers without any index: direct.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_named_by_address_is_taken_whoever_the_index_says_is_there() {
    let scene = Impersonation::new(false).await;
    let leecher = start_peer(scene.server.addr).await;
    let out = tempfile::tempdir().unwrap();
    let request = DownloadRequest {
        id: scene.file_id.to_string(),
        hosts: vec![scene.impostor.local_addr()],
        ..DownloadRequest::default()
    };
    let report = leecher
        .fetch(request, out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), scene.data);
    assert_eq!(scene.impostor.chunks_served(), 3);
    leecher.shutdown().await;
    scene.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Clients that stall in the TLS handshake

/// A TLS record header announcing a 200-byte handshake message, and the first 10 bytes of a
/// ClientHello in it; the rest never comes.
const HALF_CLIENT_HELLO: [u8; 15] = [
    0x16, 0x03, 0x01, 0x00, 0xc8, // handshake record, 200 bytes
    0x01, 0x00, 0x00, 0xc4, // ClientHello, 196 bytes
    0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a, // legacy version, the start of `random`
];

/// `n` TCP connections to `server` from 127.0.0.`first` onwards (one per address), each of
/// which sends `bytes` and then nothing.
async fn stalled(server: SocketAddr, first: u8, n: u8, bytes: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for last in first..first + n {
        let mut stream = connect_from(loopback(last), server).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        streams.push(stream);
    }
    streams
}

/// Whether the server closes `stream` within `limit` (end of stream or a reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// Three silent connections fill a server of three slots, three that stop halfway through a
/// ClientHello come after them, then a legitimate client. A connection in its TLS handshake
/// holds an idle slot, so each newcomer closes the longest-idle one and is served at once.
/// Returns the half-hello connections still open.
async fn stalled_handshakes_make_room(
    server: SocketAddr,
    legitimate: impl Future<Output = ()>,
) -> Vec<TcpStream> {
    let mut silent = stalled(server, 11, 3, &[]).await;
    let mut halfway = stalled(server, 14, 3, &HALF_CLIENT_HELLO).await;
    tokio::time::timeout(PROMPT, legitimate)
        .await
        .expect("the legitimate client was not served promptly");
    for stream in silent.iter_mut().chain(&mut halfway[..1]) {
        assert!(
            closed_within(stream, PROMPT).await,
            "a stalled handshake was not closed to make room"
        );
    }
    halfway.split_off(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalled_in_the_tls_handshake_do_not_keep_others_out_of_the_index() {
    let config = ServerConfig {
        max_connections: 3,
        ..fast_server_config()
    };
    let server = start_server_on(loopback0(), config).await;
    let legitimate = async {
        let client = IndexClient::new(server.addr, PROMPT, tls());
        client.list_files().await.expect("the index serves");
    };
    let left = stalled_handshakes_make_room(server.addr, legitimate).await;
    // Nobody needs their slots now: the handshake deadline closes them.
    for mut stream in left {
        assert!(
            closed_within(&mut stream, HANDSHAKE_TIMEOUT + PROMPT).await,
            "a stalled handshake outlived its deadline"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalled_in_the_tls_handshake_do_not_keep_others_out_of_a_chunk_server() {
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "small.bin", 1000, 122);
    let peer = Peer::start(
        PeerConfig {
            indexes: Vec::new(),
            max_inbound: 3,
            ..peer_config(loopback0())
        },
        tls(),
    )
    .await
    .unwrap();
    let manifest = peer.register_manifest(&path).await.unwrap();
    let addr = peer.local_addr();
    let legitimate = async {
        assert_eq!(fetch_manifest(addr, manifest.id()).await, manifest);
    };
    stalled_handshakes_make_room(addr, legitimate).await;
    peer.shutdown().await;
}

/// The manifest of `file_id` from the chunk server at `addr`, on a new connection.
async fn fetch_manifest(addr: SocketAddr, file_id: FileId) -> FileManifest {
    let mut conn = crate::support::peer_connection(addr).await;
    let reply = conn
        .request(&PeerRequest::GetManifest { file_id }, PROMPT)
        .await
        .unwrap();
    match reply {
        PeerResponse::Manifest { manifest, .. } => manifest,
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients without TLS or without a node's certificate

/// What a hostile TLS client presents as its certificate.
#[derive(Clone, Copy, Debug)]
enum Presented {
    /// Nothing.
    NoCertificate,
    /// A self-signed Ed25519 certificate that expired in 2002.
    Expired,
    /// A self-signed certificate for an ECDSA P-256 key.
    Ecdsa,
}

impl Presented {
    /// The TLS alert the server sends for it (RFC 8446 §6.2, as rustls maps its errors).
    fn alert(self) -> &'static str {
        match self {
            Presented::NoCertificate => "CertificateRequired",
            Presented::Expired => "CertificateExpired",
            // The check on the key, not a failed signature (`DecryptError`).
            Presented::Ecdsa => "CertificateUnknown",
        }
    }

    /// A TLS 1.3 client configuration that offers the protocol's ALPN and accepts any server.
    fn client_config(self) -> rustls::ClientConfig {
        let provider = p2p_transport::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer));
        let certified = |params: rcgen::CertificateParams, key: &rcgen::KeyPair| {
            let cert = params.self_signed(key).unwrap().der().clone();
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let signer = provider.key_provider.load_private_key(der).unwrap();
            (cert, signer)
        };
        let name = vec![p2p_transport::certificate::CERT_NAME.to_owned()];
        let mut config = match self {
            Presented::NoCertificate => builder.with_no_client_auth(),
            Presented::Expired => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
                let mut params = rcgen::CertificateParams::new(name).unwrap();
                params.not_before = rcgen::date_time_ymd(2001, 1, 1);
                params.not_after = rcgen::date_time_ymd(2002, 1, 1);
                let (cert, signer) = certified(params, &key);
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                    CertifiedKey::new(vec![cert], signer),
                )))
            }
            Presented::Ecdsa => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let params = rcgen::CertificateParams::new(name).unwrap();
                let (cert, signer) = certified(params, &key);
                let signer: Arc<dyn SigningKey> = Arc::new(PresentedAnyway(signer));
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                    CertifiedKey::new(vec![cert], signer),
                )))
            }
        };
        config.alpn_protocols = vec![p2p_transport::ALPN.to_vec()];
        config
    }
}

/// Accepts any server certificate and signature: these clients only want to be refused.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        p2p_transport::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An ECDSA P-256 key that signs with ECDSA where the server accepts that, and otherwise
/// claims its signature is Ed25519 (the only scheme a node accepts). Either way its
/// certificate is presented, so it is the server's check of the key in it that must refuse it.
#[derive(Debug)]
struct PresentedAnyway(Arc<dyn SigningKey>);

impl SigningKey for PresentedAnyway {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let ecdsa = SignatureScheme::ECDSA_NISTP256_SHA256;
        let signer = self.0.choose_scheme(&[ecdsa])?;
        if offered.contains(&ecdsa) {
            Some(signer)
        } else {
            Some(Box::new(ClaimsEd25519(signer)))
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
}

#[derive(Debug)]
struct ClaimsEd25519(Box<dyn rustls::sign::Signer>);

impl rustls::sign::Signer for ClaimsEd25519 {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// A TLS client presenting `presented` that says `hello` once its side of the handshake is
/// done (in TLS 1.3 that is before the server has checked its certificate). Returns how the
/// connection failed, as the client sees it; panics if the server answered, or neither
/// answered nor closed within [`PROMPT`].
async fn hostile_tls_hello(addr: SocketAddr, presented: Presented, hello: &[u8]) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(presented.client_config()));
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        stream.write_all(hello).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        // Any byte back is an answer: the server took the client.
        let mut reply = [0u8; 64];
        match stream.read(&mut reply).await {
            Ok(0) => Err("closed".to_owned()),
            Ok(n) => Ok(reply[..n].to_vec()),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(PROMPT, attempt).await {
        Err(_) => panic!("{presented:?}: the server neither answered nor closed"),
        Ok(Ok(reply)) => panic!(
            "{presented:?}: the server answered {:?}",
            String::from_utf8_lossy(&reply)
        ),
        Ok(Err(failure)) => failure,
    }
}

/// A client from before TLS: a version 2 `Hello` frame in the clear. The server answers with
/// a TLS alert at most (never a frame of the protocol), and closes.
async fn plaintext_hello(addr: SocketAddr) {
    const TLS_ALERT: u8 = 0x15;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"\x00\x00\x00\x0f\x81\xa5Hello\x81\xa7version\x02")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(PROMPT, tcp.read(&mut first)).await;
    match read.expect("the server neither answered nor closed") {
        Ok(0) | Err(_) => {}
        Ok(_) => {
            assert_eq!(first[0], TLS_ALERT, "a plaintext client was answered");
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(PROMPT, tcp.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "the server did not close after its alert");
        }
    }
}

/// Each kind of client a node must not talk to is refused by the server at `addr`, which
/// answers `alive` after each.
async fn refuses_strangers(addr: SocketAddr, hello: &[u8], alive: impl AsyncFn()) {
    plaintext_hello(addr).await;
    alive().await;
    for presented in [
        Presented::NoCertificate,
        Presented::Expired,
        Presented::Ecdsa,
    ] {
        let failure = hostile_tls_hello(addr, presented, hello).await;
        // The alert says why, when it arrives before the connection is reset.
        assert!(
            failure.contains(presented.alert()) || !failure.contains("alert"),
            "{presented:?}: {failure}"
        );
        alive().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_refuses_clients_without_tls_or_a_nodes_certificate_and_keeps_serving() {
    let server = start_server_on(loopback0(), fast_server_config()).await;
    let hello = encode_frame(&IndexRequest::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    let alive = async || {
        let client = IndexClient::new(server.addr, PROMPT, tls());
        client.list_files().await.expect("the index keeps serving");
    };
    refuses_strangers(server.addr, &hello, alive).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_server_refuses_clients_without_tls_or_a_nodes_certificate_and_keeps_serving() {
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "small.bin", 1000, 123);
    let peer = start_peer_without_index().await;
    let manifest = peer.register_manifest(&path).await.unwrap();
    let hello = encode_frame(&PeerRequest::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    let addr = peer.local_addr();
    let alive = async || assert_eq!(fetch_manifest(addr, manifest.id()).await, manifest);
    refuses_strangers(addr, &hello, alive).await;
    peer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Messages

#[tokio::test]
async fn a_message_shows_the_node_that_sent_it_whatever_sender_it_claims() {
    let (recipient, bob) = (
        start_peer_without_index().await,
        start_peer_without_index().await,
    );
    let mallory = tls();
    let (mut conn, _) =
        p2p_transport::connect::<PeerConversation>(&mallory, recipient.local_addr(), None, PROMPT)
            .await
            .unwrap();
    let claimed = bob.local_addr().to_string();
    let request = PeerRequest::Message {
        from: claimed.clone(),
        text: "it's bob: please send me the payroll".into(),
    };
    let reply = conn.request(&request, PROMPT).await.unwrap();
    assert!(
        matches!(reply, PeerResponse::MessageReceived {}),
        "{reply:?}"
    );

    let inbox = recipient.messages();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].node, mallory.node_id());
    assert_ne!(inbox[0].node, bob.node_id());
    // The claim is kept as the sender's words.
    assert_eq!(inbox[0].from, claimed);
    recipient.shutdown().await;
    bob.shutdown().await;
}
