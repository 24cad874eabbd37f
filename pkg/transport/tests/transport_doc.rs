//! `docs/PROTOCOL.md` §2.3–§2.5 describe the transport third parties must implement: the TLS
//! parameters, the certificate checks and the certificate a node presents. These tests check
//! that what the document names is what this crate uses (`p2p-protocol`'s `protocol_doc.rs`
//! checks the messages and the node-id algorithm).

use std::sync::Arc;
use std::time::Duration;

use p2p_identity::{Identity, Role};
use p2p_transport::certificate::{CERT_NAME, ED25519_SPKI_PREFIX};
use p2p_transport::tls::{SESSION_CACHE_ENTRIES, provider};
use p2p_transport::{ALPN, Tls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::SupportedKxGroup;
use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CipherSuite, DigitallySignedStruct, NamedGroup, SignatureScheme, SupportedCipherSuite,
};

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable");
    // Every run of whitespace made one space, so a phrase may wrap anywhere.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_says(phrase: &str) {
    let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        document().contains(&phrase),
        "docs/PROTOCOL.md should say {phrase:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names TLS 1.3 gives things, from rustls's (`TLS13_AES_128_GCM_SHA256` is the IANA
/// `TLS_AES_128_GCM_SHA256`).
fn iana(rustls_name: String) -> String {
    rustls_name.replacen("TLS13_", "TLS_", 1)
}

#[test]
fn the_tls_parameters_are_as_documented() {
    let alpn = std::str::from_utf8(ALPN).unwrap();
    assert_says(&format!(
        "**ALPN: `{alpn}` on both sides.** A client MUST offer the ALPN protocol `{alpn}`"
    ));
    let suites: Vec<String> = provider()
        .cipher_suites
        .iter()
        .map(|s| iana(format!("{:?}", s.suite())))
        .collect();
    let [first, second, third] = &suites[..] else {
        panic!("the document names three cipher suites, the code has {suites:?}")
    };
    assert_says(&format!(
        "A node offers and accepts `{first}`, `{second}` and `{third}`, preferring them in that \
         order as a client."
    ));
    let groups: Vec<(String, u16)> = provider()
        .kx_groups
        .iter()
        .map(|g| (format!("{:?}", g.name()), u16::from(g.name())))
        .collect();
    let [(hybrid, hybrid_code), (classic, classic_code)] = &groups[..] else {
        panic!("the document names two key exchange groups, the code has {groups:?}")
    };
    assert_says(&format!(
        "A node offers and accepts the groups `{hybrid}` ({hybrid_code:#06x}, hybrid \
         post-quantum) and `{classic}` ({classic_code:#06x}), preferring them in that order."
    ));
    assert_says(&format!(
        "keeps the sessions they name in memory (up to **{}**, `SESSION_CACHE_ENTRIES`;",
        grouped(SESSION_CACHE_ENTRIES)
    ));
}

/// A TLS 1.3 client that is not a node's [`Tls`]: it lists `suites` and `groups` in the order
/// given, presents a valid self-signed Ed25519 certificate of its own and accepts any server.
/// It makes a handshake with a node and returns the cipher suite and group they agreed on, as
/// both sides see them.
async fn negotiate(
    suites: Vec<SupportedCipherSuite>,
    groups: Vec<&'static dyn SupportedKxGroup>,
) -> (CipherSuite, NamedGroup) {
    let mut offered = (**provider()).clone();
    offered.cipher_suites = suites;
    offered.kx_groups = groups;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(offered))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![ALPN.to_vec()];

    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = Identity::load_or_create(dir.path(), Role::Server).unwrap();
    let server = Tls::new(&identity).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = Duration::from_secs(10);
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp, t).await.unwrap()
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let client = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (server, _) = tokio::time::timeout(t, accepted).await.unwrap().unwrap();
    let agreed = |conn: &rustls::CommonState| {
        (
            conn.negotiated_cipher_suite().unwrap().suite(),
            conn.negotiated_key_exchange_group().unwrap().name(),
        )
    };
    let tokio_rustls::TlsStream::Server(server) = &server else {
        panic!("a server stream")
    };
    let seen = agreed(client.get_ref().1);
    assert_eq!(seen, agreed(server.get_ref().1), "both sides agree");
    seen
}

/// The server's order of cipher suites wins (§2.3), so a client that prefers AES-256-GCM still
/// gets AES-128-GCM, and one that prefers ChaCha20-Poly1305 gets AES-256-GCM if it offers
/// that; for key exchange, the client's order wins.
#[tokio::test]
async fn a_server_chooses_the_suite_and_the_client_the_group() {
    assert_says(
        "A server chooses by its own order, the same one, not the client's: it takes the first \
         of the three, in that order, that the client offers. So every client that offers \
         `TLS_AES_128_GCM_SHA256` gets it, whatever order it lists its suites in; a client gets \
         AES-256-GCM only if it does not offer AES-128-GCM, and ChaCha20-Poly1305 only if it \
         offers neither.",
    );
    assert_says(
        "Here a server follows the client's order: it takes the first group of the client's \
         `supported_groups` that it accepts",
    );
    let (aes128, aes256, chacha) = (
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    );
    let (hybrid, classic) = (kx_group::X25519MLKEM768, kx_group::X25519);
    // A client that lists AES-128-GCM last, and X25519 before the hybrid group.
    assert_eq!(
        negotiate(vec![aes256, chacha, aes128], vec![classic, hybrid]).await,
        (aes128.suite(), classic.name())
    );
    // Without AES-128-GCM, still the server's order: AES-256-GCM before ChaCha20-Poly1305.
    assert_eq!(
        negotiate(vec![chacha, aes256], vec![hybrid, classic]).await,
        (aes256.suite(), hybrid.name())
    );
    assert_eq!(
        negotiate(vec![chacha], vec![classic]).await,
        (chacha.suite(), classic.name())
    );
}

/// Accepts any server: these clients only look at what the handshake agreed.
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
        vec![SignatureScheme::ED25519]
    }
}

#[test]
fn the_certificate_rules_are_as_documented() {
    assert_says(&format!(
        "its `SubjectPublicKeyInfo` is exactly 44 bytes, the 12 bytes `{}`",
        hex(&ED25519_SPKI_PREFIX)
    ));
}

/// The certificate a node presents is the one §2.4 describes: the node id as its common name,
/// `p2p-transfer` as its one DNS name, valid from 1975 to 4096, carrying the node's key.
#[tokio::test]
async fn the_certificate_a_node_presents_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        let (identity, _) = Identity::load_or_create(&dir.path().join(name), Role::Peer).unwrap();
        (Tls::new(&identity).unwrap(), identity)
    };
    let (server, server_identity) = node("server");
    let (client, _) = node("client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = Duration::from_secs(10);
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp, t).await.map(|_| ())
    });
    let (stream, node_id) = client.connect(addr, None, t).await.unwrap();
    accepted.await.unwrap().unwrap();
    let tokio_rustls::TlsStream::Client(stream) = &stream else {
        panic!("a client stream")
    };
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    assert_eq!(certs.len(), 1, "one certificate, no chain");
    let der: &[u8] = certs[0].as_ref();
    let contains = |part: &[u8]| der.windows(part.len()).any(|w| w == part);

    assert_eq!(node_id, server_identity.node_id());
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend(&server_identity.public_key_der()[ED25519_SPKI_PREFIX.len()..]);
    assert_eq!(spki, server_identity.public_key_der());
    assert!(contains(&spki), "the certificate carries the node's key");
    let text = node_id.to_string();
    assert!(contains(text.as_bytes()), "the node id is the common name");
    assert!(contains(CERT_NAME.as_bytes()), "{CERT_NAME} is its name");
    // UTCTime for 1975, GeneralizedTime for 4096 (RFC 5280 §4.1.2.5).
    assert!(contains(b"750101000000Z"), "valid from 1975-01-01");
    assert!(contains(b"40960101000000Z"), "valid until 4096-01-01");
    assert_says(&format!(
        "subject `CN=<the node id as text>` (§2.5, so that tools that show certificates show the \
         node id), one subject alternative name, the DNS name `{CERT_NAME}` (`CERT_NAME`;"
    ));
    assert_says("valid from 1975-01-01 00:00:00 UTC to 4096-01-01 00:00:00 UTC");
}

/// `n` as the document writes numbers: `1,024`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}
