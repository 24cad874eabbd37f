//! [`Tls`]: TLS 1.3 for both ends of every connection, each side presenting its node's key,
//! and the handshakes that say which node is on the other end.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use p2p_identity::Identity;
use p2p_protocol::{NodeId, ProtocolError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;

use crate::certificate::{CertificateError, OwnCertificate, node_id_of};

/// A connection after the TLS handshake, whichever side opened it.
pub type Stream = tokio_rustls::TlsStream<TcpStream>;

/// The ALPN protocol name both sides must offer: a TLS client of another protocol that
/// reaches a node's port fails the handshake instead of speaking to it.
pub const ALPN: &[u8] = b"p2p-transfer";

/// Sessions a node remembers for resumption, as a client (per server it talked to) and as a
/// server (per client): a downloader that reconnects to a host, or a folder of many files,
/// skips the signatures and key exchange of a full handshake.
pub const SESSION_CACHE_ENTRIES: usize = 1024;

/// The crypto provider every TLS connection uses, chosen by `make bench` (see
/// docs/PERFORMANCE.md): its TLS 1.3 suites, in the order of preference both sides send.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // The fastest first: AES-128-GCM seals and opens about 10 % faster than AES-256-GCM
        // and 3.5 times faster than ChaCha20-Poly1305 on CPUs with AES instructions.
        provider.cipher_suites = vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        // Post-quantum hybrid first (about 50 µs more per full handshake), X25519 for
        // clients without it.
        provider.kx_groups = vec![kx_group::X25519MLKEM768, kx_group::X25519];
        Arc::new(provider)
    })
}

/// This node's TLS set-up: its certificate, and client and server configurations that require
/// the other side's certificate and accept any node's (the caller decides whom to trust, by
/// node id). Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    node_id: NodeId,
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS for the node whose key is `identity`.
    pub fn new(identity: &Identity) -> Result<Self, CertificateError> {
        let own = OwnCertificate::new(identity)?;
        let verifier = Arc::new(AnyNode);
        let versions = &[&rustls::version::TLS13];
        let mut client = rustls::ClientConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(versions)
            .expect("the provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(vec![own.cert.clone()], own.key.clone_key())
            .expect("the provider signs with Ed25519");
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE_ENTRIES);
        let mut server = rustls::ServerConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(versions)
            .expect("the provider supports TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![own.cert], own.key)
            .expect("the provider signs with Ed25519");
        server.alpn_protocols = vec![ALPN.to_vec()];
        // The server's order of suites wins (the fastest first, by `make bench`), whatever
        // order a client lists them in.
        server.ignore_client_order = true;
        server.session_storage =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        Ok(Self {
            node_id: identity.node_id(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// This node's id, as others see it in the handshake.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Opens a TCP connection to `addr` (with `TCP_NODELAY`: every message is a request or a
    /// reply someone waits for) and runs the client side of the TLS handshake, all within
    /// `timeout`. Returns the stream and the node id the other side proved it has; if
    /// `expect` is given and another node answered, fails with [`ProtocolError::WrongNode`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expect: Option<NodeId>,
        timeout: Duration,
    ) -> Result<(Stream, NodeId), ProtocolError> {
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            self.handshake(tcp).await
        };
        let (stream, node_id) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))??;
        check_expected(stream, node_id, expect)
    }

    /// The client side of the TLS handshake on `tcp`, already connected (to play a client
    /// from a chosen source address, say), within `timeout`; as [`Tls::connect`] otherwise.
    pub async fn secure(
        &self,
        tcp: TcpStream,
        expect: Option<NodeId>,
        timeout: Duration,
    ) -> Result<(Stream, NodeId), ProtocolError> {
        let (stream, node_id) = tokio::time::timeout(timeout, self.handshake(tcp))
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))??;
        check_expected(stream, node_id, expect)
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<(Stream, NodeId), ProtocolError> {
        let name = ServerName::IpAddress(tcp.peer_addr()?.ip().into());
        let stream = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(handshake_error)?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(ProtocolError::Tls(
                "the other side did not agree on ALPN \"p2p-transfer\"".into(),
            ));
        }
        let node_id = remote_node(stream.get_ref().1.peer_certificates())?;
        Ok((Stream::from(stream), node_id))
    }

    /// Runs the server side of the TLS handshake on an accepted connection within `timeout`,
    /// and returns the stream and the node id the client proved it has. A client that
    /// stalls, sends something that isn't TLS, or presents no usable certificate fails here.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<(Stream, NodeId), ProtocolError> {
        let accept = async {
            let stream = self.acceptor.accept(tcp).await.map_err(handshake_error)?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
                return Err(ProtocolError::Tls(
                    "the client did not offer ALPN \"p2p-transfer\"".into(),
                ));
            }
            let node_id = remote_node(stream.get_ref().1.peer_certificates())?;
            Ok((Stream::from(stream), node_id))
        };
        tokio::time::timeout(timeout, accept)
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }
}

/// The connection, unless `expect` names another node than the one that answered.
fn check_expected(
    stream: Stream,
    node_id: NodeId,
    expect: Option<NodeId>,
) -> Result<(Stream, NodeId), ProtocolError> {
    match expect {
        Some(expected) if expected != node_id => Err(ProtocolError::WrongNode {
            expected,
            got: node_id,
        }),
        _ => Ok((stream, node_id)),
    }
}

/// The node id of the certificate the other side presented (already checked by [`AnyNode`]
/// during the handshake, or remembered with the session it resumed).
fn remote_node(certs: Option<&[CertificateDer<'static>]>) -> Result<NodeId, ProtocolError> {
    let cert = certs
        .and_then(|certs| certs.first())
        .ok_or_else(|| ProtocolError::Tls("the other side presented no certificate".into()))?;
    node_id_of(cert, UnixTime::now()).map_err(|e| ProtocolError::Tls(e.to_string()))
}

/// A failed handshake as one line: tokio-rustls reports rustls's errors inside `io::Error`.
fn handshake_error(err: std::io::Error) -> ProtocolError {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ProtocolError::Tls(tls.to_string()),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProtocolError::Tls("the other side closed the connection during the handshake".into())
        }
        None => ProtocolError::Io(err),
    }
}

/// Accepts any node's certificate that [`node_id_of`] accepts, both as a client (the server's)
/// and as a server (the client's, which is required), and checks handshake signatures with
/// Ed25519 only.
#[derive(Debug)]
struct AnyNode;

impl AnyNode {
    fn verify_signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for AnyNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        node_id_of(end_entity, now).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is never negotiated".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for AnyNode {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of(end_entity, now).map(|_| ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is never negotiated".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn node(dir: &tempfile::TempDir, name: &str) -> Tls {
        let (identity, _) =
            Identity::load_or_create(&dir.path().join(name), p2p_identity::Role::Peer).unwrap();
        Tls::new(&identity).unwrap()
    }

    /// A server that accepts one connection with `tls`, echoes one line back and reports the
    /// client's node id (or the error).
    async fn serve_once(
        tls: Tls,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Result<NodeId, ProtocolError>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut stream, client) = tls.accept(tcp, Duration::from_secs(2)).await?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            stream.write_all(&byte).await?;
            stream.flush().await?;
            Ok(client)
        });
        (addr, task)
    }

    #[tokio::test]
    async fn both_sides_learn_each_others_node_id_from_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = (node(&dir, "a"), node(&dir, "b"));
        let (addr, accepted) = serve_once(server.clone()).await;
        let (mut stream, server_id) = client.connect(addr, None, T).await.unwrap();
        stream.write_all(b"x").await.unwrap();
        stream.flush().await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        assert_eq!(server_id, server.node_id());
        assert_eq!(accepted.await.unwrap().unwrap(), client.node_id());
    }

    #[tokio::test]
    async fn a_resumed_session_still_shows_both_node_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = (node(&dir, "a"), node(&dir, "b"));
        for round in 0..3 {
            let (addr, accepted) = serve_once(server.clone()).await;
            let (mut stream, server_id) = client.connect(addr, None, T).await.unwrap();
            let tokio_rustls::TlsStream::Client(tls) = &stream else {
                panic!("a client stream")
            };
            let expected = if round == 0 {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected));
            stream.write_all(b"x").await.unwrap();
            stream.flush().await.unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            assert_eq!(server_id, server.node_id());
            assert_eq!(accepted.await.unwrap().unwrap(), client.node_id());
        }
    }

    #[tokio::test]
    async fn a_node_other_than_the_expected_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (client, server, expected) = (node(&dir, "a"), node(&dir, "b"), node(&dir, "c"));
        let (addr, _accepted) = serve_once(server.clone()).await;
        let err = client
            .connect(addr, Some(expected.node_id()), T)
            .await
            .unwrap_err();
        match err {
            ProtocolError::WrongNode { expected: e, got } => {
                assert_eq!(e, expected.node_id());
                assert_eq!(got, server.node_id());
            }
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn a_plaintext_client_is_refused_with_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, accepted) = serve_once(node(&dir, "b")).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // A version 2 `Hello` frame, as a client from before TLS would send it.
        tcp.write_all(b"\x00\x00\x00\x0f\x81\xa5Hello\x81\xa7version\x02")
            .await
            .unwrap();
        let err = accepted.await.unwrap().unwrap_err();
        assert!(matches!(err, ProtocolError::Tls(_)), "{err}");
        // And the client sees the connection end rather than hang.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(T, tcp.read_to_end(&mut rest))
            .await
            .expect("the server closed the connection");
    }

    #[tokio::test]
    async fn a_client_that_stalls_mid_handshake_is_dropped_by_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, accepted) = serve_once(node(&dir, "b")).await;
        let _tcp = TcpStream::connect(addr).await.unwrap();
        // Says nothing: the server gives up after its 2 s deadline.
        let err = tokio::time::timeout(T, accepted)
            .await
            .expect("the handshake deadline fired")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, accepted) = serve_once(node(&dir, "b")).await;
        let mut config = rustls::ClientConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyNode))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        // TLS 1.3 clients finish before the server has checked them; the server then refuses.
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        let err = accepted.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    }
}
