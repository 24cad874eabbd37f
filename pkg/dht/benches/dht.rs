//! `make bench`: a private Mainline DHT of 100+ nodes in this process, on 127.0.0.1 only.
//!
//! Every node is a real `p2p_dht::Dht` (its own UDP socket and mainline thread) with the
//! peer's default settings, except `lookup_settle = 0`: a lookup returns as soon as a first
//! host arrives, so its latency is the time to the first host (the peer's default then waits up
//! to 500 ms more for further hosts). Node 0 starts alone; each next node bootstraps from up to
//! three random earlier ones; then every node looks itself up twice (the join).
//!
//! Three phases follow, each: `announcers` distinct nodes announce a fresh file id each
//! (port = a distinct number per id; nothing listens there), then a share of the live nodes is
//! killed (dropped; each one's socket closed before going on), still present in every routing
//! table (mainline pings its table every 5 min and drops a node after 15 min of silence), then
//! `announcers` other nodes announce an id each (the announce latency reported: with the dead
//! nodes in the way), then `lookups` lookups each ask a random live node (not the announcer)
//! for a random id of the phase (announced before or after the kill). A lookup succeeds when it returns the announcer's `127.0.0.1:port`; any other host
//! counts as wrong. Phase 1 kills nobody, phase 2 kills 1 % of the nodes, phase 3 10 % (of
//! the nodes at the start, so 1 % + 10 % are dead by the end). Announcers are never killed.
//!
//! Full mode: 200 nodes, 50 announcements and 300 lookups per phase. `--quick`: 100 nodes, 20
//! and 100. `P2P_BENCH_DHT_NODES` overrides the node count. Results: a table on stdout,
//! appended to `target/bench/dht.txt`, and one JSON line per phase appended to
//! `target/bench/dht.jsonl`. Reported, never asserted; exits non-zero only when the harness
//! itself fails.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use p2p_dht::{Dht, DhtConfig};
use p2p_protocol::FileId;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Nodes each new node bootstraps from.
const BOOTSTRAP_FANOUT: usize = 3;
/// Joins, announcements or lookups running at once.
const CONCURRENCY: usize = 8;
/// Longest wait for a killed node's socket to close.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Lowest port announced (nothing listens on any of them).
const FIRST_PORT: u16 = 20_000;

fn main() {
    // `cargo bench` passes `--bench`; anything unknown is ignored.
    let quick = std::env::args().any(|a| a == "--quick");
    if let Err(err) = run(quick) {
        eprintln!("error: dht bench failed: {err:#}");
        std::process::exit(1);
    }
}

/// What this run does.
#[derive(Clone, Copy, Debug)]
struct Plan {
    quick: bool,
    nodes: usize,
    announcers: usize,
    lookups: usize,
}

impl Plan {
    fn from_env(quick: bool) -> anyhow::Result<Self> {
        let (mut nodes, announcers, lookups) = if quick {
            (100, 20, 100)
        } else {
            (200, 50, 300)
        };
        if let Ok(v) = std::env::var("P2P_BENCH_DHT_NODES") {
            nodes = v
                .trim()
                .parse()
                .with_context(|| format!("P2P_BENCH_DHT_NODES={v:?} is not a number"))?;
        }
        if !(20..=2_000).contains(&nodes) {
            bail!("P2P_BENCH_DHT_NODES must be 20 to 2000, got {nodes}");
        }
        Ok(Self {
            quick,
            nodes,
            announcers: announcers.min(nodes / 4),
            lookups,
        })
    }
}

/// One phase: its name and the share of the starting nodes it kills.
const PHASES: [(&str, f64); 3] = [
    ("none killed", 0.0),
    ("1% killed", 0.01),
    ("10% killed", 0.10),
];

/// What one phase measured.
#[derive(Debug, Default)]
struct PhaseResult {
    name: &'static str,
    killed: usize,
    alive: usize,
    /// Announcements made after this phase's kill.
    announce_ms: Vec<f64>,
    announce_failures: usize,
    /// Announcements made before it.
    before_kill_ms: Vec<f64>,
    before_kill_failures: usize,
    lookup_ms: Vec<f64>,
    found: usize,
    wrong_hosts: usize,
    lookup_errors: usize,
    found_ms: Vec<f64>,
}

fn run(quick: bool) -> anyhow::Result<()> {
    let plan = Plan::from_env(quick)?;
    eprintln!(
        "dht: {} nodes, {} announcements and {} lookups per phase ({} mode)",
        plan.nodes,
        plan.announcers,
        plan.lookups,
        if plan.quick { "quick" } else { "full" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let started = Instant::now();
    let (join_s, rss_kib, phases) = runtime.block_on(bench(&plan))?;
    let cpu_s = cpu_seconds("/proc/self/stat");
    runtime.shutdown_timeout(Duration::from_secs(5));
    report(
        &plan,
        join_s,
        rss_kib,
        cpu_s,
        started.elapsed().as_secs_f64(),
        &phases,
    );
    Ok(())
}

async fn bench(plan: &Plan) -> anyhow::Result<(f64, Option<u64>, Vec<PhaseResult>)> {
    // Start every node, each bootstrapping from a few earlier ones.
    let join_start = Instant::now();
    let mut nodes: Vec<Option<Dht>> = Vec::with_capacity(plan.nodes);
    let mut addrs = Vec::with_capacity(plan.nodes);
    for i in 0..plan.nodes {
        let bootstrap = {
            let mut rng = rand::rng();
            addrs
                .choose_multiple(&mut rng, BOOTSTRAP_FANOUT.min(i))
                .map(|a: &SocketAddr| a.to_string())
                .collect()
        };
        let node = Dht::start(DhtConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            bootstrap,
            lookup_settle: Duration::ZERO,
            ..DhtConfig::default()
        })
        .await
        .with_context(|| format!("node {i} did not start"))?;
        addrs.push(SocketAddr::V4(node.local_addr()));
        nodes.push(Some(node));
    }
    for round in 0..2 {
        let joined = for_each(
            nodes.iter().flatten().cloned().collect(),
            |node| async move { node.bootstrap().await.unwrap_or(false) },
        )
        .await;
        let alone = joined.iter().filter(|ok| !**ok).count();
        eprintln!(
            "dht: join round {} done after {:.1} s ({alone} nodes found nobody)",
            round + 1,
            join_start.elapsed().as_secs_f64()
        );
    }
    let join_s = join_start.elapsed().as_secs_f64();
    let rss_kib = read_status_kib("VmRSS:");

    let mut results = Vec::new();
    let mut next_port = FIRST_PORT;
    for (p, (name, share)) in PHASES.into_iter().enumerate() {
        let mut result = PhaseResult {
            name,
            ..PhaseResult::default()
        };
        // Announcers: distinct live nodes, one fresh id each; half announce before the kill,
        // half after it (with the dead still in every routing table).
        let live: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].is_some()).collect();
        let chosen: Vec<usize> = {
            let mut rng = rand::rng();
            live.choose_multiple(&mut rng, 2 * plan.announcers)
                .copied()
                .collect()
        };
        let mut announced = Vec::new();
        for &i in &chosen {
            let mut bytes = [0u8; 32];
            rand::rng().fill(&mut bytes[..]);
            announced.push((i, FileId(bytes), next_port));
            next_port += 1;
        }
        let (before, after) = announced.split_at(announced.len() / 2);
        for (ok, ms) in announce_all(&nodes, before).await {
            result.before_kill_ms.push(ms);
            result.before_kill_failures += usize::from(!ok);
        }

        // Kill a share of the starting node count, never an announcer of this phase.
        let to_kill = (plan.nodes as f64 * share).round() as usize;
        let victims: Vec<usize> = {
            let mut rng = rand::rng();
            let mut candidates: Vec<usize> = live
                .iter()
                .copied()
                .filter(|i| !chosen.contains(i))
                .collect();
            candidates.shuffle(&mut rng);
            candidates.truncate(to_kill);
            candidates
        };
        for &v in &victims {
            nodes[v] = None;
        }
        for &v in &victims {
            wait_closed(addrs[v]).await?;
        }
        for (ok, ms) in announce_all(&nodes, after).await {
            result.announce_ms.push(ms);
            result.announce_failures += usize::from(!ok);
        }
        result.killed = victims.len();
        let live: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].is_some()).collect();
        result.alive = live.len();

        // Lookups from random live nodes other than the announcer.
        let jobs: Vec<_> = {
            let mut rng = rand::rng();
            (0..plan.lookups)
                .map(|_| {
                    let (announcer, id, port) = *announced.choose(&mut rng).expect("announced");
                    let asker = loop {
                        let i = *live.choose(&mut rng).expect("live nodes");
                        if i != announcer {
                            break i;
                        }
                    };
                    (nodes[asker].clone().expect("live"), id, port)
                })
                .collect()
        };
        let outcomes = for_each(jobs, |(node, id, port)| async move {
            let t = Instant::now();
            let hosts = node.lookup(&id).await;
            (hosts, port, t.elapsed().as_secs_f64() * 1e3)
        })
        .await;
        for (hosts, port, ms) in outcomes {
            result.lookup_ms.push(ms);
            match hosts {
                Ok(hosts) => {
                    let want = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    if hosts.contains(&want) {
                        result.found += 1;
                        result.found_ms.push(ms);
                    }
                    result.wrong_hosts += hosts.iter().filter(|h| **h != want).count();
                }
                Err(_) => result.lookup_errors += 1,
            }
        }
        eprintln!(
            "dht: phase {} ({name}): {}/{} announced, {}/{} found, {} alive",
            p + 1,
            result.announce_ms.len() - result.announce_failures,
            result.announce_ms.len(),
            result.found,
            result.lookup_ms.len(),
            result.alive
        );
        results.push(result);
    }
    Ok((join_s, rss_kib, results))
}

/// Announces each `(node, id, port)`; whether it was stored and how long it took (ms).
async fn announce_all(
    nodes: &[Option<Dht>],
    announced: &[(usize, FileId, u16)],
) -> Vec<(bool, f64)> {
    let jobs = announced
        .iter()
        .map(|(i, id, port)| (nodes[*i].clone().expect("a live announcer"), *id, *port))
        .collect();
    for_each(jobs, |(node, id, port)| async move {
        let t = Instant::now();
        let ok = node.announce(&id, port).await.is_ok();
        (ok, t.elapsed().as_secs_f64() * 1e3)
    })
    .await
}

/// Runs `call` on every item, [`CONCURRENCY`] at a time; results in no particular order.
async fn for_each<I, T, F, Fut>(items: Vec<I>, call: F) -> Vec<T>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    for item in items {
        let permit = gate.clone().acquire_owned().await.expect("gate open");
        let fut = call(item);
        set.spawn(async move {
            let out = fut.await;
            drop(permit);
            out
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        out.push(done.expect("a bench task panicked"));
    }
    out
}

/// Waits until a dropped node's UDP port can be bound again (its socket is closed).
async fn wait_closed(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + KILL_WAIT;
    while std::net::UdpSocket::bind(addr).is_err() {
        if Instant::now() > deadline {
            bail!("killed node {addr} still holds its socket after {KILL_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A `kB` field of this process's `/proc/self/status`.
fn read_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
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
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Nearest-rank percentile of unsorted milliseconds.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn json_num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("null".to_owned(), |v| format!("{v:.1}"))
}

fn report(
    plan: &Plan,
    join_s: f64,
    rss_kib: Option<u64>,
    cpu_s: Option<f64>,
    total_s: f64,
    phases: &[PhaseResult],
) {
    let mode = if plan.quick { "quick" } else { "full" };
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let mut t = format!(
        "p2p-transfer DHT ({mode} mode, unix time {when}): {} nodes on 127.0.0.1, joined in {join_s:.1} s, RSS {} MiB, CPU {} s, {total_s:.1} s in all\n",
        plan.nodes,
        rss_kib.map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0)),
        cpu_s.map_or("-".to_owned(), |s| format!("{s:.1}")),
    );
    t += &format!(
        "{:<12} {:>6} {:>6} {:>10} {:>22} {:>12} {:>22} {:>6}\n",
        "phase",
        "killed",
        "alive",
        "announced",
        "announce p50/p99/max",
        "found",
        "lookup p50/p99/max",
        "wrong"
    );
    let mut json = String::new();
    for r in phases {
        let announced = r.announce_ms.len() - r.announce_failures;
        let (a50, a99, amax) = (
            percentile(&r.announce_ms, 50.0),
            percentile(&r.announce_ms, 99.0),
            percentile(&r.announce_ms, 100.0),
        );
        let (l50, l99, lmax) = (
            percentile(&r.lookup_ms, 50.0),
            percentile(&r.lookup_ms, 99.0),
            percentile(&r.lookup_ms, 100.0),
        );
        let success = 100.0 * r.found as f64 / r.lookup_ms.len().max(1) as f64;
        t += &format!(
            "{:<12} {:>6} {:>6} {:>10} {:>22} {:>12} {:>22} {:>6}\n",
            r.name,
            r.killed,
            r.alive,
            format!("{announced}/{}", r.announce_ms.len()),
            format!("{} / {} / {} ms", ms(a50), ms(a99), ms(amax)),
            format!("{}/{} {success:.1}%", r.found, r.lookup_ms.len()),
            format!("{} / {} / {} ms", ms(l50), ms(l99), ms(lmax)),
            r.wrong_hosts,
        );
        json += &format!(
            "{{\"scenario\":\"dht\",\"mode\":\"{mode}\",\"unix_time\":{when},\"nodes\":{},\"phase\":\"{}\",\"killed\":{},\"alive\":{},\"join_s\":{join_s:.2},\"announces\":{},\"announce_failures\":{},\"announce_p50_ms\":{},\"announce_p99_ms\":{},\"announce_max_ms\":{},\"announces_before_kill\":{},\"announce_before_kill_failures\":{},\"announce_before_kill_p50_ms\":{},\"announce_before_kill_p99_ms\":{},\"lookups\":{},\"found\":{},\"success_pct\":{success:.2},\"lookup_errors\":{},\"wrong_hosts\":{},\"lookup_p50_ms\":{},\"lookup_p99_ms\":{},\"lookup_max_ms\":{},\"found_p50_ms\":{},\"found_p99_ms\":{},\"rss_mib\":{},\"cpu_s\":{}}}\n",
            plan.nodes,
            r.name,
            r.killed,
            r.alive,
            r.announce_ms.len(),
            r.announce_failures,
            json_num(a50),
            json_num(a99),
            json_num(amax),
            r.before_kill_ms.len(),
            r.before_kill_failures,
            json_num(percentile(&r.before_kill_ms, 50.0)),
            json_num(percentile(&r.before_kill_ms, 99.0)),
            r.lookup_ms.len(),
            r.found,
            r.lookup_errors,
            r.wrong_hosts,
            json_num(l50),
            json_num(l99),
            json_num(lmax),
            json_num(percentile(&r.found_ms, 50.0)),
            json_num(percentile(&r.found_ms, 99.0)),
            json_num(rss_kib.map(|k| k as f64 / 1024.0)),
            json_num(cpu_s),
        );
    }
    t += "announced: after the phase's kill (as many again before it, in the JSON); latency: announce = until the put round ends; lookup = until the first host (lookup_settle 0), or the query's end when nothing is found\n";
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
    for (name, text) in [("dht.txt", t.as_str()), ("dht.jsonl", json.as_str())] {
        if let Err(err) = append(name, text) {
            eprintln!("warning: cannot write target/bench/{name}: {err}");
        }
    }
}
