//! `make bench`: the index server under the load of many peers, measured from outside.
//!
//! The real release binary is started as `p2p-transfer server --addr 127.0.0.1:0 --no-mdns`
//! (heartbeat every 5 s, timeout 15 s). This process then plays N peers on loopback, each like a
//! real peer: its own TCP connection to the index, from its own source address in
//! 127.1.0.0/16 (the server allows 64 connections per address), `Hello`, `Register` with a
//! distinct fake chunk-server address in 127.2.0.0/16 (never connected to), 20 `AddFile` with
//! one-chunk synthetic manifests, then a `Heartbeat` every `heartbeat_interval_ms`, the first
//! one at a random point of the first interval. Registration runs [`REGISTER_CONCURRENCY`]
//! peers at a time; a peer starts heartbeating as soon as it is registered.
//!
//! Once every peer is registered the measured period starts: a separate client (own thread,
//! own runtime, own connection) sends `Lookup` for the full id of a random registered file
//! about every 10 ms and records each round trip. At the end:
//! * **false expiries**: peers whose heartbeat got `unknown_peer` (or another error), whose
//!   connection failed, or whose last heartbeat was not acknowledged; and `ListPeers.total`
//!   must equal N;
//! * **lookup latency**: p50 / p99 / max over the measured period;
//! * **server memory**: `VmRSS` of the server polled every second, `VmHWM` at the end;
//! * **registration time** for all peers.
//!
//! Full mode: 5,000 peers x 20 files for 120 s. `--quick`: 1,000 peers x 20 files for 20 s.
//! `P2P_BENCH_PEERS` and `P2P_BENCH_SECS` override either. Targets (reported, never asserted):
//! no false expiry, lookup p99 < 10 ms, server RSS < 200 MiB. The process exits non-zero only
//! when the harness itself fails. Results: a table on stdout, appended to
//! `target/bench/index_load.txt`, and one JSON line appended to `target/bench/index_load.jsonl`.
//!
//! **Two indexes** (`--indexes 2` or `P2P_BENCH_INDEXES=2`): the same load is run twice in one
//! invocation, first against one index (reported exactly as above), then against two index
//! servers at once, each simulated peer registering with and heartbeating BOTH over its own
//! connection to each (as a peer given two indexes does; the two registrations of a peer are
//! independent tasks), and a measuring client per index. Each index then gets its own report
//! (header `index i of 2`, JSON fields `indexes` and `index`), the registration time is the
//! time until every peer is registered with both, and a last table compares the two runs.
//!
//! Only 127.0.0.0/8 is used; mDNS is never started.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileId, FileManifest, IndexClientConnection, IndexConversation,
    IndexRequest, IndexResponse, PeerId, Sha256Hash, client_hello,
};
use p2p_transport::{Stream, Tls};
use rand::Rng;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Files each simulated peer shares.
const FILES_PER_PEER: usize = 20;
/// Peers registering at once.
const REGISTER_CONCURRENCY: usize = 200;
/// Peers sharing one source address (the server allows 64 connections per address).
const PEERS_PER_SOURCE_OCTET: usize = 50;
/// Most peers the source and fake address schemes can tell apart.
const MAX_PEERS: usize = 256 * PEERS_PER_SOURCE_OCTET;
/// Time for one request (or the handshake) before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the measuring client looks a file up.
const LOOKUP_EVERY: Duration = Duration::from_millis(10);
/// Longest the whole registration phase may take before the harness gives up.
const REGISTER_BUDGET: Duration = Duration::from_secs(600);
/// Heartbeat settings given to the server.
const HEARTBEAT_INTERVAL: &str = "5s";
const HEARTBEAT_TIMEOUT: &str = "15s";
/// Targets.
const TARGET_LOOKUP_P99_MS: f64 = 10.0;
const TARGET_RSS_MIB: f64 = 200.0;

fn main() {
    // `cargo bench` passes `--bench`; anything unknown is ignored.
    let quick = std::env::args().any(|a| a == "--quick");
    match run(quick) {
        Ok(()) => {}
        Err(err) => {
            eprintln!("error: index_load bench failed: {err:#}");
            std::process::exit(1);
        }
    }
}

/// What this run does.
#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    peers: usize,
    secs: u64,
    /// 1: one index. 2: a one-index run, then a two-index run, compared.
    indexes: usize,
}

impl Plan {
    fn from_env(quick: bool) -> anyhow::Result<Self> {
        let (mut peers, mut secs) = if quick { (1_000, 20) } else { (5_000, 120) };
        if let Ok(v) = std::env::var("P2P_BENCH_PEERS") {
            peers = v
                .trim()
                .parse()
                .with_context(|| format!("P2P_BENCH_PEERS={v:?} is not a number"))?;
        }
        if let Ok(v) = std::env::var("P2P_BENCH_SECS") {
            secs = v
                .trim()
                .parse()
                .with_context(|| format!("P2P_BENCH_SECS={v:?} is not a number"))?;
        }
        if peers == 0 || peers > MAX_PEERS {
            bail!("P2P_BENCH_PEERS must be 1 to {MAX_PEERS}, got {peers}");
        }
        if secs == 0 || secs > 3_600 {
            bail!("P2P_BENCH_SECS must be 1 to 3600, got {secs}");
        }
        let mut indexes = 1;
        let args: Vec<String> = std::env::args().collect();
        let flag = args
            .iter()
            .position(|a| a == "--indexes")
            .map(|i| args.get(i + 1).cloned().unwrap_or_default());
        if let Some(v) = flag.or_else(|| std::env::var("P2P_BENCH_INDEXES").ok()) {
            indexes = v
                .trim()
                .parse()
                .with_context(|| format!("--indexes / P2P_BENCH_INDEXES={v:?} is not a number"))?;
        }
        if !(1..=2).contains(&indexes) {
            bail!("--indexes / P2P_BENCH_INDEXES must be 1 or 2, got {indexes}");
        }
        Ok(Self {
            quick,
            peers,
            secs,
            indexes,
        })
    }
}

fn run(quick: bool) -> anyhow::Result<()> {
    let plan = Plan::from_env(quick)?;
    eprintln!(
        "index_load: {} peers x {FILES_PER_PEER} files, measured for {} s after registration ({} mode{})",
        plan.peers,
        plan.secs,
        if plan.quick { "quick" } else { "full" },
        if plan.indexes == 2 {
            ", then again with two indexes"
        } else {
            ""
        }
    );
    let single = run_with(&plan, 1)?;
    report(&plan, &single[0], None);
    if plan.indexes == 2 {
        let dual = run_with(&plan, 2)?;
        for (i, measured) in dual.iter().enumerate() {
            report(&plan, measured, Some((i, dual.len())));
        }
        compare(&plan, &single[0], &dual);
    }
    Ok(())
}

/// One load against `count` index servers started for it; one record per index.
fn run_with(plan: &Plan, count: usize) -> anyhow::Result<Vec<Measured>> {
    let bench_cpu_before = cpu_seconds("/proc/self/stat");
    let servers = (0..count)
        .map(|_| ServerProcess::start())
        .collect::<anyhow::Result<Vec<_>>>()?;
    for server in &servers {
        eprintln!("index_load: server pid {} on {}", server.pid, server.addr);
    }
    let longest = REGISTER_BUDGET + Duration::from_secs(plan.secs + 120);
    let rss: Vec<RssPoller> = servers
        .iter()
        .map(|s| RssPoller::start(s.pid, longest))
        .collect();
    let cpu_before: Vec<_> = servers
        .iter()
        .map(|s| cpu_seconds(&format!("/proc/{}/stat", s.pid)))
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let result = runtime.block_on(load(plan, &addrs, &pids));
    // Stop the peers' tasks before the servers go away.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut all = result?;

    let bench_cpu = cpu_seconds("/proc/self/stat")
        .zip(bench_cpu_before)
        .map(|(after, before)| after - before);
    for (((measured, server), rss), before) in all.iter_mut().zip(&servers).zip(rss).zip(cpu_before)
    {
        measured.server_cpu_s = cpu_seconds(&format!("/proc/{}/stat", server.pid))
            .zip(before)
            .map(|(after, before)| after - before);
        measured.bench_cpu_s = bench_cpu;
        measured.server_hwm_kib = read_status_kib(server.pid, "VmHWM:");
        measured.server_rss_end_kib = read_status_kib(server.pid, "VmRSS:");
        let (rss_peak_polled, rss_samples) = rss.stop();
        measured.server_rss_polled_peak_kib = rss_peak_polled;
        measured.rss_samples = rss_samples;
        measured.log = server.log_summary();
    }
    drop(servers);
    Ok(all)
}

/// Everything measured in one run.
#[derive(Debug, Default)]
struct Measured {
    registered: usize,
    register_failures: Vec<String>,
    register_s: f64,
    server_rss_after_register_kib: Option<u64>,
    measured_s: f64,
    lookups: Vec<Duration>,
    lookup_errors: Vec<String>,
    heartbeats: Vec<Duration>,
    heartbeats_sent: u64,
    false_expiries: usize,
    expiry_notes: Vec<String>,
    unknown_peer_replies: u64,
    disconnects: u64,
    never_beat: usize,
    list_peers_total: Option<u64>,
    list_files_total: Option<u64>,
    server_cpu_s: Option<f64>,
    bench_cpu_s: Option<f64>,
    server_hwm_kib: Option<u64>,
    server_rss_end_kib: Option<u64>,
    server_rss_polled_peak_kib: u64,
    rss_samples: usize,
    log: LogSummary,
}

/// The load: register every peer with every index in `servers`, keep them heartbeating,
/// measure lookups at each, check each one's end state. One record per index.
async fn load(plan: &Plan, servers: &[SocketAddr], pids: &[u32]) -> anyhow::Result<Vec<Measured>> {
    let mut all: Vec<Measured> = servers.iter().map(|_| Measured::default()).collect();
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let (registered_tx, mut registered_rx) = tokio::sync::mpsc::unbounded_channel();
    let hard_deadline =
        tokio::time::Instant::now() + REGISTER_BUDGET + Duration::from_secs(plan.secs + 60);
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.peers * servers.len());
    for k in 0..plan.peers {
        // A peer's registration with each index is its own task and connection.
        for (index, &server) in servers.iter().enumerate() {
            let first_beat_at: f64 = rng.random();
            let registered_tx = registered_tx.clone();
            let report = move |result| {
                let _ = registered_tx.send((index, k, result));
            };
            tasks.push((
                index,
                tokio::spawn(simulated_peer(
                    k,
                    server,
                    gate.clone(),
                    first_beat_at,
                    report,
                    stop.clone(),
                    hard_deadline,
                )),
            ));
        }
    }
    drop(registered_tx);

    // Wait until every peer has registered (or failed to).
    let mut file_ids = Vec::with_capacity(plan.peers * FILES_PER_PEER);
    let register_deadline = tokio::time::Instant::now() + REGISTER_BUDGET;
    let mut last_progress = Instant::now();
    let registered = |all: &[Measured]| all.iter().map(|m| m.registered).sum::<usize>();
    for _ in 0..plan.peers * servers.len() {
        let got = tokio::time::timeout_at(register_deadline, registered_rx.recv()).await;
        match got {
            Ok(Some((index, _, Ok(ids)))) => {
                all[index].registered += 1;
                // Every index gets the same files; look up those of the first one's peers.
                if index == 0 {
                    file_ids.extend(ids);
                }
            }
            Ok(Some((index, k, Err(err)))) => all[index]
                .register_failures
                .push(format!("peer {k}: {err:#}")),
            Ok(None) => bail!("a simulated peer ended before reporting its registration"),
            Err(_) => {
                stop.cancel();
                bail!(
                    "registration not finished after {REGISTER_BUDGET:?} ({} of {} registrations)",
                    registered(&all),
                    plan.peers * servers.len()
                );
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "index_load: {} of {} registrations after {:.1} s",
                registered(&all),
                plan.peers * servers.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let register_s = started.elapsed().as_secs_f64();
    for (measured, &pid) in all.iter_mut().zip(pids) {
        measured.register_s = register_s;
        measured.server_rss_after_register_kib = read_status_kib(pid, "VmRSS:");
        eprintln!(
            "index_load: {} peers registered in {:.2} s ({} failed); measuring lookups for {} s",
            measured.registered,
            measured.register_s,
            measured.register_failures.len(),
            plan.secs
        );
    }
    if file_ids.is_empty() {
        stop.cancel();
        bail!(
            "no peer could register; first failure: {}",
            all[0]
                .register_failures
                .first()
                .map_or("none", String::as_str)
        );
    }

    // The measured period: lookups from their own thread and runtime (one per index), so their
    // timing does not wait behind thousands of peer tasks.
    let ids = Arc::new(file_ids);
    let run_for = Duration::from_secs(plan.secs);
    let measure_start = Instant::now();
    let mut lookup_threads = Vec::with_capacity(servers.len());
    for &server in servers {
        let ids = ids.clone();
        lookup_threads.push(
            std::thread::Builder::new()
                .name("lookups".into())
                .spawn(move || lookup_client(server, &ids, run_for))
                .context("cannot start the lookup thread")?,
        );
    }
    for (measured, lookup_thread) in all.iter_mut().zip(lookup_threads) {
        let lookup_result = tokio::task::spawn_blocking(move || lookup_thread.join())
            .await
            .context("lookup thread join task failed")?;
        measured.measured_s = measure_start.elapsed().as_secs_f64();
        let lookups = match lookup_result {
            Ok(result) => result?,
            Err(_) => {
                stop.cancel();
                bail!("the lookup thread panicked");
            }
        };
        measured.lookups = lookups.rtts;
        measured.lookup_errors = lookups.errors;
    }

    // Stop heartbeating (a heartbeat in flight completes), then collect every peer's record.
    stop.cancel();
    for (index, task) in tasks {
        let measured = &mut all[index];
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT * 2, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(err)) => bail!("a simulated peer panicked: {err}"),
            Err(_) => bail!(
                "a simulated peer did not stop within {:?}",
                REQUEST_TIMEOUT * 2
            ),
        };
        if !outcome.registered {
            continue;
        }
        measured.heartbeats_sent += outcome.beats;
        measured.unknown_peer_replies += outcome.unknown_peer;
        measured.disconnects += outcome.disconnects;
        measured.heartbeats.extend(outcome.rtts);
        if outcome.beats == 0 {
            measured.never_beat += 1;
        }
        let falsely_expired = outcome.unknown_peer > 0
            || outcome.disconnects > 0
            || outcome.other_errors > 0
            || (outcome.beats > 0 && !outcome.last_acked);
        if falsely_expired {
            measured.false_expiries += 1;
            if measured.expiry_notes.len() < 10 {
                measured.expiry_notes.push(format!(
                    "peer {}: {} beats, {} acks, {} unknown_peer, {} other errors, {} disconnects{}",
                    outcome.k,
                    outcome.beats,
                    outcome.acks,
                    outcome.unknown_peer,
                    outcome.other_errors,
                    outcome.disconnects,
                    outcome
                        .note
                        .as_deref()
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                ));
            }
        }
    }

    // Each index's own view, right after the last heartbeats (well inside the 15 s timeout).
    for (measured, &server) in all.iter_mut().zip(servers) {
        let mut conn = connect(server, None, &node_tls())
            .await
            .context("cannot connect for ListPeers")?;
        match conn
            .request(&IndexRequest::ListPeers {}, REQUEST_TIMEOUT)
            .await
            .context("ListPeers failed")?
        {
            IndexResponse::Peers { total, .. } => measured.list_peers_total = Some(total),
            other => bail!("ListPeers answered {other:?}"),
        }
        match conn
            .request(&IndexRequest::ListFiles {}, REQUEST_TIMEOUT)
            .await
            .context("ListFiles failed")?
        {
            IndexResponse::Files { total, .. } => measured.list_files_total = Some(total),
            other => bail!("ListFiles answered {other:?}"),
        }
    }
    Ok(all)
}

/// One simulated peer's record.
#[derive(Debug, Default)]
struct PeerOutcome {
    k: usize,
    registered: bool,
    beats: u64,
    acks: u64,
    unknown_peer: u64,
    other_errors: u64,
    disconnects: u64,
    last_acked: bool,
    rtts: Vec<Duration>,
    note: Option<String>,
}

/// A registered peer's credentials and its still-open connection.
struct Registration {
    conn: IndexClientConnection<Stream>,
    peer_id: PeerId,
    interval: Duration,
}

/// Peer `k` at one index: register (while holding a slot of `gate`), report the file ids to
/// `registered`, then heartbeat
/// until `stop`, the first beat at `first_beat_at` (0..1) of the first interval.
async fn simulated_peer(
    k: usize,
    server: SocketAddr,
    gate: Arc<Semaphore>,
    first_beat_at: f64,
    registered: impl FnOnce(anyhow::Result<Vec<FileId>>) + Send,
    stop: CancellationToken,
    hard_deadline: tokio::time::Instant,
) -> PeerOutcome {
    let tls = node_tls();
    let mut out = PeerOutcome {
        k,
        ..PeerOutcome::default()
    };
    let registration = {
        let Ok(_slot) = gate.acquire().await else {
            registered(Err(anyhow::anyhow!("registration gate closed")));
            return out;
        };
        register(k, server, &tls).await
    };
    let Registration {
        mut conn,
        peer_id,
        interval,
    } = match registration {
        Ok((registration, ids)) => {
            registered(Ok(ids));
            registration
        }
        Err(err) => {
            registered(Err(err));
            return out;
        }
    };
    out.registered = true;

    // Bounded twice: by count and by the harness's hard deadline.
    let total = hard_deadline.saturating_duration_since(tokio::time::Instant::now());
    let max_beats = total.as_millis() / interval.as_millis().max(1) + 2;
    let mut next = tokio::time::Instant::now() + interval.mul_f64(first_beat_at);
    for _ in 0..max_beats {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        if tokio::time::Instant::now() >= hard_deadline {
            break;
        }
        out.beats += 1;
        let sent = Instant::now();
        match conn
            .request(&IndexRequest::Heartbeat { peer_id }, REQUEST_TIMEOUT)
            .await
        {
            Ok(IndexResponse::HeartbeatAck {}) => {
                out.acks += 1;
                out.last_acked = true;
                out.rtts.push(sent.elapsed());
            }
            Ok(IndexResponse::Error {
                code: ErrorCode::UnknownPeer,
                message,
            }) => {
                // The index dropped a live peer. A real peer would register again; the bench
                // only counts it.
                out.unknown_peer += 1;
                out.last_acked = false;
                out.note = Some(format!("unknown_peer: {message}"));
                break;
            }
            Ok(other) => {
                out.other_errors += 1;
                out.last_acked = false;
                out.note = Some(format!("Heartbeat answered {other:?}"));
            }
            Err(err) => {
                // Like a real peer: reconnect and keep heartbeating.
                out.disconnects += 1;
                out.last_acked = false;
                out.note = Some(format!("heartbeat failed: {err}"));
                match connect(server, Some(source_ip(k)), &tls).await {
                    Ok(fresh) => conn = fresh,
                    Err(err) => {
                        out.note = Some(format!("heartbeat failed, reconnect failed: {err:#}"));
                        break;
                    }
                }
            }
        }
        next += interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
    out
}

/// Connects as peer `k`, registers, adds its files; returns the registration and the file ids.
async fn register(
    k: usize,
    server: SocketAddr,
    tls: &Tls,
) -> anyhow::Result<(Registration, Vec<FileId>)> {
    let mut conn = connect(server, Some(source_ip(k)), tls).await?;
    let reply = conn
        .request(
            &IndexRequest::Register { addr: fake_addr(k) },
            REQUEST_TIMEOUT,
        )
        .await
        .context("Register failed")?;
    let IndexResponse::Registered {
        peer_id,
        heartbeat_interval_ms,
        ..
    } = reply
    else {
        bail!("Register answered {reply:?}");
    };
    let mut ids = Vec::with_capacity(FILES_PER_PEER);
    for j in 0..FILES_PER_PEER {
        let manifest = synthetic_manifest(k, j);
        let expected = manifest.id();
        let reply = conn
            .request(
                &IndexRequest::AddFile { peer_id, manifest },
                REQUEST_TIMEOUT,
            )
            .await
            .with_context(|| format!("AddFile {j} failed"))?;
        match reply {
            IndexResponse::FileAdded { file_id } if file_id == expected => ids.push(file_id),
            other => bail!("AddFile {j} answered {other:?}, expected FileAdded {expected}"),
        }
    }
    let registration = Registration {
        conn,
        peer_id,
        interval: Duration::from_millis(heartbeat_interval_ms.max(100)),
    };
    Ok((registration, ids))
}

/// A valid one-chunk manifest, distinct for every (peer, file).
fn synthetic_manifest(k: usize, j: usize) -> FileManifest {
    let n = (k * FILES_PER_PEER + j) as u64;
    let hash = Sha256Hash::of(format!("index_load synthetic file {n}").as_bytes());
    let manifest = FileManifest {
        name: format!("load-peer{k:05}-file{j:02}.bin"),
        size: 1 + n % u64::from(CHUNK_SIZE),
        chunk_size: CHUNK_SIZE,
        chunks: vec![hash],
    };
    if let Err(err) = manifest.validate() {
        panic!("synthetic manifest {k}/{j} is invalid: {err}");
    }
    manifest
}

/// Peer `k`'s source address: 50 peers per address at most, here one address per peer.
fn source_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        1,
        (k / PEERS_PER_SOURCE_OCTET) as u8,
        (k % PEERS_PER_SOURCE_OCTET + 1) as u8,
    )
}

/// Peer `k`'s advertised chunk-server address; nothing listens there and nothing connects.
fn fake_addr(k: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 2, (k / 250) as u8, (k % 250 + 1) as u8);
    SocketAddr::from((ip, 7000))
}

/// A new node's TLS set-up: each simulated peer is a node of its own (a node holds one
/// registration), with a key kept in memory only.
fn node_tls() -> Tls {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (identity, _) =
        p2p_identity::Identity::load_or_create(dir.path(), p2p_identity::Role::Peer)
            .expect("a new identity");
    Tls::new(&identity).expect("a certificate")
}

/// A handshaken index connection, from `from` (any loopback address) or the default source.
async fn connect(
    server: SocketAddr,
    from: Option<Ipv4Addr>,
    tls: &Tls,
) -> anyhow::Result<IndexClientConnection<Stream>> {
    let socket = TcpSocket::new_v4().context("cannot create a socket")?;
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("cannot bind to {ip}"))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out after {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {server}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (stream, _) = tls
        .secure(stream, None, CONNECT_TIMEOUT)
        .await
        .context("TLS handshake failed")?;
    let mut conn = IndexClientConnection::index_client(stream);
    client_hello::<IndexConversation, _>(&mut conn)
        .await
        .context("handshake failed")?;
    Ok(conn)
}

/// Round trips of the measuring client.
struct LookupStats {
    rtts: Vec<Duration>,
    errors: Vec<String>,
}

/// Looks a random file of `ids` up every [`LOOKUP_EVERY`] for `run_for`, on its own runtime.
fn lookup_client(
    server: SocketAddr,
    ids: &[FileId],
    run_for: Duration,
) -> anyhow::Result<LookupStats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the lookup runtime")?;
    let tls = node_tls();
    runtime.block_on(async {
        let mut conn = connect(server, None, &tls)
            .await
            .context("lookup client cannot connect")?;
        let mut rng = rand::rng();
        let mut stats = LookupStats {
            rtts: Vec::with_capacity((run_for.as_millis() / LOOKUP_EVERY.as_millis()) as usize),
            errors: Vec::new(),
        };
        let mut tick = tokio::time::interval(LOOKUP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let max_lookups = run_for.as_millis() / LOOKUP_EVERY.as_millis() + 1;
        for _ in 0..max_lookups {
            tick.tick().await;
            if start.elapsed() >= run_for {
                break;
            }
            let id = ids[rng.random_range(0..ids.len())];
            let request = IndexRequest::Lookup { id: id.to_string() };
            let sent = Instant::now();
            let reply = conn.request(&request, REQUEST_TIMEOUT).await;
            let rtt = sent.elapsed();
            match reply {
                Ok(IndexResponse::Found { file_id, .. }) if file_id == id => stats.rtts.push(rtt),
                Ok(other) => stats.errors.push(format!("Lookup {id} answered {other:?}")),
                Err(err) => {
                    stats.errors.push(format!("Lookup {id} failed: {err}"));
                    conn = connect(server, None, &tls)
                        .await
                        .context("lookup client cannot reconnect")?;
                }
            }
        }
        Ok(stats)
    })
}

/// The server binary, killed when dropped (also on panic).
struct ServerProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<LogSummary>>,
}

/// What the server wrote on stderr.
#[derive(Clone, Debug, Default)]
struct LogSummary {
    lines: u64,
    warn: u64,
    error: u64,
    dropped_peers: u64,
    refused: u64,
    connection_dropped: u64,
    samples: Vec<String>,
    last: VecDeque<String>,
}

impl ServerProcess {
    fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2p-transfer"))
            .args([
                "server",
                "--addr",
                "127.0.0.1:0",
                "--no-mdns",
                "--heartbeat-interval",
                HEARTBEAT_INTERVAL,
                "--heartbeat-timeout",
                HEARTBEAT_TIMEOUT,
            ])
            // The server's default log level (info), whatever the caller's environment says.
            .env_remove("RUST_LOG")
            .env("P2P_NO_MDNS", "1")
            // An identity of its own, never the user's.
            .env(
                "P2P_IDENTITY_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join("bench-identities")
                    .join(format!("index-{}", std::process::id())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the p2p-transfer server")?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Guard first, so an early return below still kills it.
        let mut guard = Self {
            child,
            pid,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log: Arc::default(),
        };
        let log = guard.log.clone();
        std::thread::spawn(move || drain_stderr(stderr, &log));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            // The address line (the node id line comes before it).
            let mut first = String::new();
            while out.read_line(&mut first).is_ok_and(|n| n > 0)
                && !first.starts_with("server listening on ")
            {
                first.clear();
            }
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .context("the server printed nothing within 15 s")?;
        let addr = line
            .trim()
            .strip_prefix("server listening on ")
            .with_context(|| {
                format!(
                    "unexpected first server line {line:?}; stderr: {:?}",
                    guard.log_summary().last
                )
            })?;
        guard.addr = addr
            .parse()
            .with_context(|| format!("bad server address {addr:?}"))?;
        if !guard.addr.ip().is_loopback() {
            bail!("the server listens on {}, not on loopback", guard.addr);
        }
        Ok(guard)
    }

    fn log_summary(&self) -> LogSummary {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the server's log lines by kind; keeps the first warnings and the last few lines.
fn drain_stderr(stderr: impl Read, log: &Mutex<LogSummary>) {
    let reader = BufReader::new(stderr);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.lines += 1;
        let warn = line.contains(" WARN ");
        let error = line.contains(" ERROR ");
        log.warn += u64::from(warn);
        log.error += u64::from(error);
        log.dropped_peers += u64::from(line.contains("dropped peer"));
        log.refused += u64::from(line.contains("request refused"));
        log.connection_dropped += u64::from(line.contains("connection dropped"));
        if (warn || error || line.contains("dropped peer")) && log.samples.len() < 5 {
            log.samples.push(line.clone());
        }
        if log.last.len() == 5 {
            log.last.pop_front();
        }
        log.last.push_back(line);
    }
}

/// Samples the server's VmRSS every second on its own thread.
struct RssPoller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl RssPoller {
    fn start(pid: u32, longest: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            let start = Instant::now();
            for _ in 0..=longest.as_secs() {
                if flag.load(Ordering::Relaxed) || start.elapsed() > longest {
                    break;
                }
                if let Some(kib) = read_status_kib(pid, "VmRSS:") {
                    peak = peak.max(kib);
                    samples += 1;
                }
                // Sleep in short steps so stop() returns promptly.
                for _ in 0..10 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (peak, samples)
        });
        Self { stop, thread }
    }

    /// Highest VmRSS seen (KiB) and how many samples were taken.
    fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU seconds from a `/proc/.../stat` file (clock ticks of 1/100 s).
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Nearest-rank percentile in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1e3)
}

fn json_num(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("null".to_owned(), |v| format!("{v:.decimals$}"))
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Prints and appends one index's figures; `index` is `(i, n)` for index `i` of a run with `n`.
fn report(plan: &Plan, m: &Measured, index: Option<(usize, usize)>) {
    let mut lookups = m.lookups.clone();
    lookups.sort();
    let mut beats = m.heartbeats.clone();
    beats.sort();
    let (l50, l99, lmax) = (
        percentile_ms(&lookups, 50.0),
        percentile_ms(&lookups, 99.0),
        percentile_ms(&lookups, 100.0),
    );
    let (h50, h99, hmax) = (
        percentile_ms(&beats, 50.0),
        percentile_ms(&beats, 99.0),
        percentile_ms(&beats, 100.0),
    );
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let rss_peak_kib = m
        .server_hwm_kib
        .unwrap_or(0)
        .max(m.server_rss_polled_peak_kib);
    let rss_peak = (rss_peak_kib > 0).then_some(rss_peak_kib as f64 / 1024.0);
    let expected_files = (m.registered * FILES_PER_PEER) as u64;
    let no_false_expiry = m.false_expiries == 0
        && m.register_failures.is_empty()
        && m.list_peers_total == Some(plan.peers as u64);
    let lookup_ok = l99.is_some_and(|v| v < TARGET_LOOKUP_P99_MS) && m.lookup_errors.is_empty();
    let rss_ok = rss_peak.is_some_and(|v| v < TARGET_RSS_MIB);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1} {unit}"));
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let mut t = String::new();
    let which = index.map_or(String::new(), |(i, n)| format!(", index {} of {n}", i + 1));
    t += &format!(
        "p2p-transfer index load ({} mode, unix time {when}{which}): {} peers x {FILES_PER_PEER} files, heartbeat {HEARTBEAT_INTERVAL}/{HEARTBEAT_TIMEOUT}, measured {:.1} s\n",
        if plan.quick { "quick" } else { "full" },
        plan.peers,
        m.measured_s
    );
    t += &format!("{:<35} {:<52} {}\n", "metric", "value", "target");
    let mut row = |name: &str, value: String, target: String| {
        t += &format!("{name:<35} {value:<52} {target}\n");
    };
    row(
        "registration (all peers)",
        format!(
            "{:.2} s ({:.0} peers/s, {} failed)",
            m.register_s,
            m.registered as f64 / m.register_s.max(1e-9),
            m.register_failures.len()
        ),
        String::new(),
    );
    row(
        "lookups (every ~10 ms)",
        format!("{} ok, {} errors", m.lookups.len(), m.lookup_errors.len()),
        String::new(),
    );
    row(
        "lookup p50 / p99 / max",
        format!("{} / {} / {} ms", ms(l50), ms(l99), ms(lmax)),
        format!("p99 < {TARGET_LOOKUP_P99_MS} ms: {}", met(lookup_ok)),
    );
    row(
        "heartbeats (all peers)",
        format!(
            "{} sent, p50 / p99 / max {} / {} / {} ms",
            m.heartbeats_sent,
            ms(h50),
            ms(h99),
            ms(hmax)
        ),
        String::new(),
    );
    row(
        "false expiries",
        format!(
            "{} ({} unknown_peer, {} disconnects, {} never beat)",
            m.false_expiries, m.unknown_peer_replies, m.disconnects, m.never_beat
        ),
        format!("none: {}", met(no_false_expiry)),
    );
    row(
        "ListPeers total / ListFiles total",
        format!(
            "{} / {} (want {} / {})",
            m.list_peers_total.map_or("-".to_owned(), |v| v.to_string()),
            m.list_files_total.map_or("-".to_owned(), |v| v.to_string()),
            plan.peers,
            expected_files
        ),
        String::new(),
    );
    row(
        "server RSS peak (VmHWM / polled)",
        format!(
            "{} / {}",
            opt(mib(m.server_hwm_kib), "MiB"),
            opt(mib(Some(m.server_rss_polled_peak_kib)), "MiB")
        ),
        format!("< {TARGET_RSS_MIB} MiB: {}", met(rss_ok)),
    );
    row(
        "server RSS after register / at end",
        format!(
            "{} / {}",
            opt(mib(m.server_rss_after_register_kib), "MiB"),
            opt(mib(m.server_rss_end_kib), "MiB")
        ),
        String::new(),
    );
    row(
        "CPU seconds server / bench",
        format!("{} / {}", opt(m.server_cpu_s, "s"), opt(m.bench_cpu_s, "s")),
        String::new(),
    );
    row(
        "server log lines (warn / error)",
        format!(
            "{} ({} / {}), {} peers dropped",
            m.log.lines, m.log.warn, m.log.error, m.log.dropped_peers
        ),
        String::new(),
    );
    for note in m
        .register_failures
        .iter()
        .take(5)
        .chain(m.lookup_errors.iter().take(5))
        .chain(m.expiry_notes.iter())
        .chain(m.log.samples.iter())
    {
        t += &format!("  note: {note}\n");
    }

    let json = format!(
        "{{\"scenario\":\"index_load\",{}\"mode\":{},\"unix_time\":{when},\"peers\":{},\"files_per_peer\":{FILES_PER_PEER},\"heartbeat_interval_s\":5,\"heartbeat_timeout_s\":15,\"duration_s\":{},\"measured_s\":{:.2},\"register_s\":{:.3},\"register_failures\":{},\"lookups\":{},\"lookup_errors\":{},\"lookup_p50_ms\":{},\"lookup_p99_ms\":{},\"lookup_max_ms\":{},\"heartbeats\":{},\"heartbeat_p50_ms\":{},\"heartbeat_p99_ms\":{},\"heartbeat_max_ms\":{},\"false_expiries\":{},\"unknown_peer_replies\":{},\"disconnects\":{},\"list_peers_total\":{},\"list_files_total\":{},\"server_rss_peak_mib\":{},\"server_rss_after_register_mib\":{},\"server_rss_end_mib\":{},\"rss_samples\":{},\"server_cpu_s\":{},\"bench_cpu_s\":{},\"server_log_lines\":{},\"server_log_warn\":{},\"server_dropped_peers\":{},\"target_no_false_expiry\":{no_false_expiry},\"target_lookup_p99\":{lookup_ok},\"target_rss\":{rss_ok},\"first_note\":{}}}\n",
        index.map_or(String::new(), |(i, n)| format!(
            "\"indexes\":{n},\"index\":{},",
            i + 1
        )),
        json_str(if plan.quick { "quick" } else { "full" }),
        plan.peers,
        plan.secs,
        m.measured_s,
        m.register_s,
        m.register_failures.len(),
        m.lookups.len(),
        m.lookup_errors.len(),
        json_num(l50, 3),
        json_num(l99, 3),
        json_num(lmax, 3),
        m.heartbeats_sent,
        json_num(h50, 3),
        json_num(h99, 3),
        json_num(hmax, 3),
        m.false_expiries,
        m.unknown_peer_replies,
        m.disconnects,
        m.list_peers_total
            .map_or("null".to_owned(), |v| v.to_string()),
        m.list_files_total
            .map_or("null".to_owned(), |v| v.to_string()),
        json_num(rss_peak, 1),
        json_num(mib(m.server_rss_after_register_kib), 1),
        json_num(mib(m.server_rss_end_kib), 1),
        m.rss_samples,
        json_num(m.server_cpu_s, 2),
        json_num(m.bench_cpu_s, 2),
        m.log.lines,
        m.log.warn,
        m.log.dropped_peers,
        m.register_failures
            .first()
            .or(m.lookup_errors.first())
            .or(m.expiry_notes.first())
            .map_or("null".to_owned(), |n| json_str(n)),
    );
    print!("{t}{json}");
    let _ = std::io::stdout().flush();
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench"));
    let append = |name: &str, text: &str| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))?
            .write_all(text.as_bytes())
    };
    for (name, text) in [
        ("index_load.txt", t.as_str()),
        ("index_load.jsonl", json.as_str()),
    ] {
        if let Err(err) = append(name, text) {
            eprintln!("warning: cannot write target/bench/{name}: {err}");
        }
    }
}

/// The two-index run against the one-index run of the same invocation, side by side.
fn compare(plan: &Plan, single: &Measured, dual: &[Measured]) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let lookup = |m: &Measured| {
        let mut sorted = m.lookups.clone();
        sorted.sort();
        format!(
            "{} / {} ms",
            ms(percentile_ms(&sorted, 50.0)),
            ms(percentile_ms(&sorted, 99.0))
        )
    };
    let rss = |m: &Measured| {
        let kib = m
            .server_hwm_kib
            .unwrap_or(0)
            .max(m.server_rss_polled_peak_kib);
        format!("{:.1} MiB", kib as f64 / 1024.0)
    };
    let cpu = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
    let expiries = |m: &Measured| {
        format!(
            "{} (ListPeers {})",
            m.false_expiries + m.register_failures.len(),
            m.list_peers_total.map_or("-".to_owned(), |v| v.to_string())
        )
    };
    let mut t = format!(
        "p2p-transfer index load, one index against two ({} mode): {} peers x {FILES_PER_PEER} files, each peer on every index\n",
        if plan.quick { "quick" } else { "full" },
        plan.peers
    );
    t += &format!("{:<30} {:<24}", "metric", "1 index");
    for i in 0..dual.len() {
        t += &format!(" {:<24}", format!("2 indexes: index {}", i + 1));
    }
    t += "\n";
    let mut row = |name: &str, f: &dyn Fn(&Measured) -> String| {
        t += &format!("{name:<30} {:<24}", f(single));
        for m in dual {
            t += &format!(" {:<24}", f(m));
        }
        t += "\n";
    };
    row("registration (all peers)", &|m| {
        format!("{:.2} s", m.register_s)
    });
    row("lookup p50 / p99", &lookup);
    row("false expiries", &expiries);
    row("heartbeats sent", &|m| m.heartbeats_sent.to_string());
    row("server RSS peak", &rss);
    row("server CPU", &|m| cpu(m.server_cpu_s));
    row("bench CPU (all peers)", &|m| cpu(m.bench_cpu_s));
    print!("{t}");
    let _ = std::io::stdout().flush();
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/bench/index_load.txt"
    ));
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(t.as_bytes()));
    if let Err(err) = appended {
        eprintln!("warning: cannot write target/bench/index_load.txt: {err}");
    }
}
