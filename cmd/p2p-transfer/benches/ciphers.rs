//! `cargo bench -p p2p-transfer --bench ciphers`: which rustls crypto provider and TLS 1.3
//! cipher suite p2p-transfer should use, by numbers.
//!
//! For each provider (ring, aws-lc-rs) and each TLS 1.3 suite (AES-128-GCM, AES-256-GCM,
//! ChaCha20-Poly1305), with Ed25519 certificates on both sides and mutual authentication:
//! * `in memory`: a `ServerConnection` and a `ClientConnection` in one thread, joined by a
//!   `Vec`, the server sending `size` bytes in 1 MiB application writes. `seal` is the time in
//!   `writer().write_all` + `write_tls` (what one core can encrypt), `open` the time in
//!   `read_tls` + `process_new_packets` + `reader().read` (what one core can decrypt), `both`
//!   the whole pump (one core doing both ends);
//! * `AEAD only`: the same bytes sealed, then opened, in full 16 KiB records straight through
//!   the suite's `MessageEncrypter`/`MessageDecrypter`, without rustls' buffers: the cipher's
//!   own speed. The buffered figures above add copies and allocations, and move by up to
//!   2.5x with the heap's layout from one run to the next (see the notes printed);
//! * `handshake`: the median time of one complete mutual-auth handshake in memory (both
//!   sides' CPU), full and resumed (TLS 1.3 session resumption with rustls' default in-memory
//!   session stores), per key exchange group (aws-lc-rs also has the hybrid post-quantum
//!   X25519MLKEM768, which rustls prefers when its `prefer-post-quantum` feature is on);
//! * `loopback`: `size` bytes over one 127.0.0.1 TCP connection through tokio-rustls, sender
//!   and receiver each on its own thread, against a plain TCP baseline.
//!
//! Each row is the median of `RUNS` runs, with min and max. `--quick` moves 256 MiB instead of
//! 1 GiB and does fewer handshakes. Results: a table on stdout and in `target/bench/ciphers.txt`.
//! The verifiers accept any certificate (they still check the handshake signature, as a node
//! id learned from the handshake must): this measures crypto, not trust.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageEncrypter, OutboundChunks, OutboundOpaqueMessage,
    OutboundPlainMessage,
};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, ConnectionCommon, ContentType,
    DigitallySignedStruct, DistinguishedName, HandshakeKind, NamedGroup, ProtocolVersion,
    ServerConfig, ServerConnection, SideData, SignatureScheme, SupportedCipherSuite,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const RUNS: usize = 3;
const MIB: u64 = 1024 * 1024;
/// One application write, as a transfer of 1 MiB blocks would make.
const WRITE: usize = 1024 * 1024;
/// The largest TLS record's plaintext.
const RECORD: usize = 16 * 1024;
/// Handshakes per run (the run's figure is their median).
const HANDSHAKES: usize = 1000;
const HANDSHAKES_QUICK: usize = 200;
/// Bytes pumped, untimed, before the first row.
const WARM_UP: u64 = 64 * MIB;
/// The name the client asks for; the verifier ignores it, the session cache keys on it.
const SERVER_NAME: &str = "p2p-node";

/// How to read the tables, printed under them.
const NOTES: &str = "
notes:
* in memory: rustls' buffered API copies each record three times on the way in (into its
  deframer, into a Vec of its own, out to the caller) and allocates on both sides; from one
  run (or process) to the next these figures move by up to 2.5x with the heap's layout
  (glibc malloc tunables alone flip them), so compare ciphers on the AEAD-only rows and read
  the in-memory rows as what rustls' buffering costs on top;
* handshake: full = no tickets, no session store; resumed = TLS 1.3 PSK with (EC)DHE from the
  default in-memory stores, including the 2 new tickets the server sends;
* loopback: sender, receiver and the kernel's copies share the machine's cores.
";

/// A provider's name and its rustls constructor.
type Provider = (&'static str, fn() -> CryptoProvider);
const PROVIDERS: [Provider; 2] = [
    ("ring", rustls::crypto::ring::default_provider),
    ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider),
];
const SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size = if quick { 256 * MIB } else { 1024 * MIB };
    let handshakes = if quick { HANDSHAKES_QUICK } else { HANDSHAKES };
    let ids = Identities::generate();
    let mut data = vec![0u8; WRITE];
    rand::rng().fill_bytes(&mut data);

    let mut out = header(quick, size, handshakes);

    // Warm up (CPU clocks, allocator) so the first row is not the odd one out.
    let (server, client) = configs(
        &PROVIDERS[0].1(),
        SUITES[0],
        NamedGroup::X25519,
        false,
        &ids,
    );
    pump(&server, &client, &data, WARM_UP);

    out += &format!(
        "\nin memory, one core: {} MiB server -> client in 1 MiB writes (MB/s of plaintext)\n\
         {:<10} {:<32} {:>20} {:>20} {:>20}\n",
        size / MIB,
        "provider",
        "suite",
        "seal",
        "open",
        "both (one core)"
    );
    for (name, provider) in PROVIDERS {
        for suite in SUITES {
            let (seal, open, both): (Vec<_>, Vec<_>, Vec<_>) = (0..RUNS)
                .map(|_| {
                    let (server, client) =
                        configs(&provider(), suite, NamedGroup::X25519, false, &ids);
                    let t = pump(&server, &client, &data, size);
                    (
                        mb_per_s(size, t.seal),
                        mb_per_s(size, t.open),
                        mb_per_s(size, t.both),
                    )
                })
                .fold(Default::default(), |mut acc, (s, o, b)| {
                    acc.0.push(s);
                    acc.1.push(o);
                    acc.2.push(b);
                    acc
                });
            let row = format!(
                "{name:<10} {:<32} {:>20} {:>20} {:>20}\n",
                format!("{suite:?}"),
                spread(seal, 0),
                spread(open, 0),
                spread(both, 0)
            );
            eprint!("{row}");
            out += &row;
        }
    }

    out += &format!(
        "\nAEAD only, one core: {} MiB in 16 KiB records through the provider's encrypter and decrypter (MB/s)\n\
         {:<10} {:<32} {:>20} {:>20}\n",
        size / MIB,
        "provider",
        "suite",
        "seal",
        "open"
    );
    for (name, provider) in PROVIDERS {
        for suite in SUITES {
            let suite = *provider()
                .cipher_suites
                .iter()
                .find(|s| s.suite() == suite)
                .expect("provider has the suite");
            let (seal, open): (Vec<_>, Vec<_>) = (0..RUNS)
                .map(|_| {
                    let (seal, open) = aead_only(suite, &data, size);
                    (mb_per_s(size, seal), mb_per_s(size, open))
                })
                .unzip();
            let row = format!(
                "{name:<10} {:<32} {:>20} {:>20}\n",
                format!("{:?}", suite.suite()),
                spread(seal, 0),
                spread(open, 0)
            );
            eprint!("{row}");
            out += &row;
        }
    }

    out += &format!(
        "\nhandshake, in memory, both sides on one core: median of {handshakes} per run (µs)\n\
         {:<10} {:<16} {:>20} {:>20}\n",
        "provider", "key exchange", "full", "resumed"
    );
    for (name, provider) in PROVIDERS {
        for kx in [NamedGroup::X25519, NamedGroup::X25519MLKEM768] {
            if !provider().kx_groups.iter().any(|g| g.name() == kx) {
                continue;
            }
            let suite = SUITES[0];
            let mut full = Vec::new();
            let mut resumed = Vec::new();
            for _ in 0..RUNS {
                let (server, client) = configs(&provider(), suite, kx, false, &ids);
                full.push(handshake_us(
                    &server,
                    &client,
                    handshakes,
                    HandshakeKind::Full,
                ));
                let (server, client) = configs(&provider(), suite, kx, true, &ids);
                resumed.push(handshake_us(
                    &server,
                    &client,
                    handshakes,
                    HandshakeKind::Resumed,
                ));
            }
            let row = format!(
                "{name:<10} {:<16} {:>20} {:>20}\n",
                format!("{kx:?}"),
                spread(full, 1),
                spread(resumed, 1)
            );
            eprint!("{row}");
            out += &row;
        }
    }

    out += &format!(
        "\nloopback: {} MiB over one 127.0.0.1 TCP connection, sender and receiver on their own threads (MB/s)\n\
         {:<10} {:<32} {:>20}\n",
        size / MIB,
        "provider",
        "suite",
        "MB/s"
    );
    let tcp: Vec<f64> = (0..RUNS)
        .map(|_| mb_per_s(size, loopback(None, &data, size)))
        .collect();
    let row = format!("{:<10} {:<32} {:>20}\n", "-", "plain TCP", spread(tcp, 0));
    eprint!("{row}");
    out += &row;
    for (name, provider) in PROVIDERS {
        for suite in SUITES {
            let runs: Vec<f64> = (0..RUNS)
                .map(|_| {
                    let cfg = configs(&provider(), suite, NamedGroup::X25519, false, &ids);
                    mb_per_s(size, loopback(Some(cfg), &data, size))
                })
                .collect();
            let row = format!(
                "{name:<10} {:<32} {:>20}\n",
                format!("{suite:?}"),
                spread(runs, 0)
            );
            eprint!("{row}");
            out += &row;
        }
    }

    out += NOTES;
    print!("{out}");
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench"));
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("ciphers.txt"), &out);
    }
}

/// Mode, crate versions (from Cargo.lock) and the CPU features the AEADs depend on.
fn header(quick: bool, size: u64, handshakes: usize) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .unwrap_or_default();
    let version = |name: &str| {
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .and_then(|i| lock[i + needle.len()..].split('"').next())
            .unwrap_or("?")
            .to_owned()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or("")
        .split_whitespace()
        .filter(|f| ["aes", "vaes", "pclmulqdq", "vpclmulqdq", "avx2", "avx512f"].contains(f))
        .collect();
    format!(
        "p2p-transfer ciphers bench ({} mode, {RUNS} runs each: median [min-max]; {} MiB, {handshakes} handshakes per run)\n\
         rustls {}, ring {}, aws-lc-rs {} (aws-lc-sys {}), tokio-rustls {}, rcgen {}; Ed25519 certificates, mutual auth, TLS 1.3 only\n\
         cpu: {model}, {} cores available; {}\n",
        if quick { "quick" } else { "full" },
        size / MIB,
        version("rustls"),
        version("ring"),
        version("aws-lc-rs"),
        version("aws-lc-sys"),
        version("tokio-rustls"),
        version("rcgen"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        flags.join(" "),
    )
}

fn mb_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

/// `median [min-max]` of the runs.
fn spread(mut runs: Vec<f64>, decimals: usize) -> String {
    runs.sort_by(f64::total_cmp);
    let (min, med, max) = (runs[0], runs[runs.len() / 2], runs[runs.len() - 1]);
    format!("{med:.decimals$} [{min:.decimals$}-{max:.decimals$}]")
}

/// The server's and the client's self-signed Ed25519 certificates.
struct Identities {
    server: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    client: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
}

impl Identities {
    fn generate() -> Self {
        let one = || {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
            let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
                .expect("certificate params")
                .self_signed(&key)
                .expect("self-signed certificate");
            (
                cert.der().clone(),
                PrivatePkcs8KeyDer::from(key.serialize_der()),
            )
        };
        Self {
            server: one(),
            client: one(),
        }
    }
}

/// Server and client configs that offer only `suite` and `kx`. Without `resume`, the server
/// sends no tickets and the client keeps no sessions, so every handshake is a full one;
/// with it, both keep rustls' default in-memory session stores.
fn configs(
    base: &CryptoProvider,
    suite: CipherSuite,
    kx: NamedGroup,
    resume: bool,
    ids: &Identities,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(CryptoProvider {
        cipher_suites: base
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.suite() == suite)
            .collect(),
        kx_groups: base
            .kx_groups
            .iter()
            .copied()
            .filter(|g| g.name() == kx)
            .collect(),
        ..base.clone()
    });
    assert!(
        !provider.cipher_suites.is_empty() && !provider.kx_groups.is_empty(),
        "provider lacks {suite:?} or {kx:?}"
    );
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let key = |k: &PrivatePkcs8KeyDer<'static>| PrivateKeyDer::Pkcs8(k.clone_key());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![ids.server.0.clone()], key(&ids.server.1))
        .expect("server certificate");
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![ids.client.0.clone()], key(&ids.client.1))
        .expect("client certificate");
    if !resume {
        server.send_tls13_tickets = 0;
        client.resumption = Resumption::disabled();
    }
    (Arc::new(server), Arc::new(client))
}

/// Accepts any certificate, but checks that the peer signed the handshake with its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl AnyCertificate {
    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not offered".into())
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Moves everything `from` has to send into `to`; false if there was nothing.
fn flight<A: SideData, B: SideData>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    wire: &mut Vec<u8>,
) -> bool {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write_tls");
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("handshake");
    }
    !wire.is_empty()
}

/// A connected pair, handshake done and every post-handshake message (tickets) delivered.
fn connect(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, wire: &mut Vec<u8>) -> Pair {
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let mut c = ClientConnection::new(client.clone(), name).expect("client connection");
    let mut s = ServerConnection::new(server.clone()).expect("server connection");
    while flight(&mut c, &mut s, wire) | flight(&mut s, &mut c, wire) {}
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "handshake stalled"
    );
    Pair {
        server: s,
        client: c,
    }
}

struct Pair {
    server: ServerConnection,
    client: ClientConnection,
}

/// The median of `n` handshakes of `kind`, in µs. For resumption, one full handshake first
/// gives the client its tickets; each resumed one brings new tickets, so the stores stay fed.
fn handshake_us(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    n: usize,
    kind: HandshakeKind,
) -> f64 {
    let mut wire = Vec::with_capacity(64 * 1024);
    if kind == HandshakeKind::Resumed {
        connect(server, client, &mut wire);
    }
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            let pair = connect(server, client, &mut wire);
            let t = start.elapsed();
            assert_eq!(pair.client.handshake_kind(), Some(kind));
            assert_eq!(pair.server.handshake_kind(), Some(kind));
            t.as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

struct PumpTimes {
    seal: Duration,
    open: Duration,
    both: Duration,
}

/// `size` bytes from server to client in `WRITE`-byte application writes, all in this thread.
fn pump(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    data: &[u8],
    size: u64,
) -> PumpTimes {
    let mut wire = Vec::with_capacity(WRITE + WRITE / 8);
    let Pair {
        server: mut s,
        client: mut c,
    } = connect(server, client, &mut wire);
    // One 1 MiB write is sealed whole, not cut at rustls' default 64 KiB send buffer.
    s.set_buffer_limit(None);
    let mut plain = vec![0u8; WRITE];
    let (mut seal, mut open, mut received) = (Duration::ZERO, Duration::ZERO, 0u64);
    let start = Instant::now();
    for _ in 0..size / data.len() as u64 {
        let t0 = Instant::now();
        s.writer().write_all(data).expect("application write");
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).expect("write_tls");
        }
        let t1 = Instant::now();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            c.read_tls(&mut rest).expect("read_tls");
            c.process_new_packets().expect("decrypt");
            loop {
                match c.reader().read(&mut plain) {
                    Ok(0) => panic!("closed early"),
                    Ok(n) => received += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        seal += t1 - t0;
        open += t1.elapsed();
    }
    let both = start.elapsed();
    assert_eq!(received, size, "bytes lost");
    PumpTimes { seal, open, both }
}

/// `size` bytes sealed, then opened, in full records straight through `suite`'s AEAD: rustls'
/// record encrypter (which allocates each record, as rustls does) and its in-place decrypter
/// (each record first copied into one scratch buffer, as `read_tls` copies into its own).
fn aead_only(suite: SupportedCipherSuite, data: &[u8], size: u64) -> (Duration, Duration) {
    let tls13 = suite.tls13().expect("TLS 1.3 suite");
    // Any key will do; rustls' own derivation gives it the length this AEAD wants (from
    // `rustls::internal`, outside semver: a rustls upgrade may move it).
    let secret = tls13.hkdf_provider.extract_from_secret(None, &[7; 32]);
    let key = || rustls::internal::derive_traffic_key(&*secret, tls13.aead_alg);
    let iv = || rustls::internal::derive_traffic_iv(&*secret);
    let blocks = size / data.len() as u64;

    let start = Instant::now();
    let mut encrypter = tls13.aead_alg.encrypter(key(), iv());
    seal(&mut *encrypter, data, blocks, |record| {
        std::hint::black_box(record);
    });
    let sealed_in = start.elapsed();

    // One block's records, sealed with sequence numbers 0.., opened again and again (a fresh
    // encrypter: aws-lc-rs refuses to seal under a sequence number twice).
    let mut sealed = Vec::new();
    let mut encrypter = tls13.aead_alg.encrypter(key(), iv());
    seal(&mut *encrypter, data, 1, |record| {
        sealed.push(record.payload.as_ref().to_vec())
    });
    let mut decrypter = tls13.aead_alg.decrypter(key(), iv());
    let mut scratch = vec![0u8; RECORD + 256];
    let start = Instant::now();
    for _ in 0..blocks {
        for (seq, record) in sealed.iter().enumerate() {
            let wire = &mut scratch[..record.len()];
            wire.copy_from_slice(record);
            let msg = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                wire,
            );
            let plain = decrypter.decrypt(msg, seq as u64).expect("open");
            assert_eq!(plain.payload.len(), RECORD.min(data.len()));
        }
    }
    (sealed_in, start.elapsed())
}

/// Seals `blocks` copies of `data` as application-data records with sequence numbers 0..
fn seal(
    encrypter: &mut dyn MessageEncrypter,
    data: &[u8],
    blocks: u64,
    mut each: impl FnMut(OutboundOpaqueMessage),
) {
    let mut seq = 0;
    for _ in 0..blocks {
        for record in data.chunks(RECORD) {
            let plain = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(record),
            };
            each(encrypter.encrypt(plain, seq).expect("seal"));
            seq += 1;
        }
    }
}

/// `size` bytes over one loopback TCP connection, through TLS if `tls` is given; timed at the
/// receiver from connect to the last byte (handshake included).
fn loopback(
    tls: Option<(Arc<ServerConfig>, Arc<ClientConfig>)>,
    data: &[u8],
    size: u64,
) -> Duration {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let server_tls = tls.as_ref().map(|(s, _)| s.clone());
    let data = data.to_vec();
    let sender = std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let (sock, _) = listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            match server_tls {
                Some(cfg) => {
                    let tls = tokio_rustls::TlsAcceptor::from(cfg)
                        .accept(sock)
                        .await
                        .expect("server handshake");
                    send(tls, &data, size).await;
                }
                None => send(sock, &data, size).await,
            }
        })
    });
    let took = runtime().block_on(async move {
        let start = Instant::now();
        let sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let received = match tls {
            Some((_, cfg)) => {
                let name = ServerName::try_from(SERVER_NAME).expect("server name");
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, sock)
                    .await
                    .expect("client handshake");
                receive(tls).await
            }
            None => receive(sock).await,
        };
        assert_eq!(received, size, "bytes lost");
        start.elapsed()
    });
    sender.join().expect("sender");
    took
}

async fn send(mut stream: impl AsyncWrite + Unpin, data: &[u8], size: u64) {
    for _ in 0..size / data.len() as u64 {
        stream.write_all(data).await.expect("send");
    }
    stream.shutdown().await.expect("close");
}

async fn receive(mut stream: impl AsyncRead + Unpin) -> u64 {
    let mut buf = vec![0u8; WRITE];
    let mut received = 0;
    loop {
        match stream.read(&mut buf).await.expect("receive") {
            0 => return received,
            n => received += n as u64,
        }
    }
}
