//! `make bench`: transfer, hashing and memory figures against baselines measured in the same
//! run on the same file, so the ratios hold on a noisy machine.
//!
//! Scenarios (each the median of `RUNS` runs, with min and max):
//! * `sha256`: SHA-256 of the file on one core, in-process, as `sha2` is used by the project;
//! * `tcp_copy`: the file streamed once over one loopback TCP connection into a file (a plain
//!   tokio copy, no hashing);
//! * `http_then_hash`: nginx serving the file on loopback, `curl -o` fetching it, then
//!   `sha256sum` of the result; skipped with a note unless nginx and curl are installed
//!   (`apt-get install -y nginx-light curl`);
//! * `register`: building the manifest of the file (every chunk hashed, on every core);
//! * `download_1_seeder`, `download_3_seeders`: the release binary, end to end from the
//!   leecher's start to the verified file on disk; the leecher's and seeders' peak RSS
//!   (VmHWM) come with them;
//! * `download_1_seeder_with_dashboard`: `download_1_seeder` with the leecher's web dashboard
//!   on (`--web 127.0.0.1:0`) and an event-stream client (`GET /api/v1/events`) reading it
//!   from the moment it answers until the leecher exits: the page must not slow a transfer;
//! * `serve_3_leechers`: one seeder, three leechers at once (MB/s counts the three copies),
//!   for the seeder's peak RSS under more than one leecher;
//! * `rss_4gib` (full mode): peak RSS of leecher and seeder for a 4 GiB (sparse) file.
//!
//! `--quick` uses a 256 MiB file and skips the 4 GiB case. Results: a table on stdout and in
//! `target/bench/transfer.txt`, one JSON line per scenario in `target/bench/transfer.jsonl`.
//!
//! Folder scenarios (issue 14; table and JSON lines in `target/bench/folders.{txt,jsonl}`),
//! each tree generated from a fixed seed and every copy checked path by path after timing:
//! * `folder_5000_small`: 5,000 files of 1–40 KB in 50 folders (about 100 MB), one seeder:
//!   `*_register` times `peer -r <dir>` until its `registered <dir> <folder id>` line; the
//!   download times `peer --download <folder id>` from start to exit; the baselines
//!   `*_rsync_daemon` (`rsync -a rsync://…` against `rsync --daemon`) and `*_tar_socat`
//!   (`tar -c | socat` into `socat | tar -x`) run alternately with it, and the download is
//!   reported as a ratio of each (skipped with a note without rsync and socat:
//!   `make bench-deps`);
//! * `folder_mixed`: the same tree plus three 256 MiB files (64 MiB with `--quick`), the same
//!   sides, and `folder_mixed_sha256`: one core hashing every file of the tree; the download's
//!   MB/s is reported as a ratio of it (target ≥ 0.8);
//! * `folder_100k` (full mode; `folder_20k` with `--quick`): 100,000 files of 0–4 KB, one run
//!   a side: completion, leecher and seeder peak RSS, the index's RSS before and after the
//!   registration.
//!
//! `P2P_BENCH_ONLY=file` runs only the single-file scenarios, `P2P_BENCH_ONLY=folder` only the
//! folder ones.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

const RUNS: usize = 3;
/// Runs of each side of the dashboard comparison: its target (5 %) is below this machine's
/// run-to-run noise with three.
const DASHBOARD_RUNS: usize = 9;
const MIB: u64 = 1024 * 1024;
/// Buffer of the plain copy baseline: large, as a tuned copy would use.
const COPY_BUF: usize = 1024 * 1024;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // P2P_BENCH_ONLY=file: the single-file scenarios only; =folder: the folder ones only.
    let only = std::env::var("P2P_BENCH_ONLY").unwrap_or_default();
    assert!(
        ["", "file", "folder"].contains(&only.as_str()),
        "P2P_BENCH_ONLY must be file or folder, got {only:?}"
    );
    if only != "folder" {
        files(quick);
    }
    if only != "file" {
        folders(quick);
    }
}

/// The single-file scenarios.
fn files(quick: bool) {
    let size = if quick { 256 * MIB } else { 1024 * MIB };
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("bench.bin");
    write_random(&file, size);
    // Warm the page cache so every scenario reads from memory.
    sha256_file(&file);

    let mut results = Vec::new();
    let sha = measure("sha256", size, || {
        sha256_file(&file);
    });
    results.push(sha.clone());
    results.push(measure("tcp_copy", size, || {
        tcp_copy(&file, &work.path().join("tcp.out"))
    }));
    match Http::start(work.path()) {
        Some(http) => results.push(measure("http_then_hash", size, || {
            http.fetch_and_hash(work.path())
        })),
        None => println!(
            "note: http_then_hash skipped: needs nginx and curl (apt-get install -y nginx-light curl)"
        ),
    }
    results.push(measure("register", size, || {
        p2p_storage::build_manifest(&file).expect("hash bench file");
    }));

    for (name, peers, dashboard) in [
        ("download_1_seeder", (1, 1), true),
        ("download_3_seeders", (3, 1), false),
        ("serve_3_leechers", (1, 3), false),
    ] {
        results.extend(download(name, &file, size, peers, dashboard, work.path()));
    }
    if !quick {
        let sparse = work.path().join("sparse4g.bin");
        File::create(&sparse)
            .and_then(|f| f.set_len(4096 * MIB))
            .expect("sparse file");
        let mut rss =
            download("rss_4gib", &sparse, 4096 * MIB, (1, 1), false, work.path()).remove(0);
        rss.runs.truncate(1);
        results.push(rss);
    }
    report(&results, &sha, quick);
}

/// One scenario's timings and memory figures.
#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    bytes: u64,
    runs: Vec<Duration>,
    leecher_rss_kib: Option<u64>,
    seeder_rss_kib: Option<u64>,
}

impl Scenario {
    fn stats(&self) -> (f64, f64, f64) {
        let mut secs: Vec<f64> = self.runs.iter().map(Duration::as_secs_f64).collect();
        secs.sort_by(f64::total_cmp);
        (secs[secs.len() / 2], secs[0], secs[secs.len() - 1])
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.stats().0 / 1e6
    }
}

fn measure(name: &'static str, bytes: u64, mut f: impl FnMut()) -> Scenario {
    let runs = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    let s = Scenario {
        name,
        bytes,
        runs,
        leecher_rss_kib: None,
        seeder_rss_kib: None,
    };
    eprintln!("{name}: {:.0} MB/s", s.mb_per_s());
    s
}

fn write_random(path: &Path, size: u64) {
    let mut file = File::create(path).expect("create bench file");
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut rng = rand::rng();
    for _ in 0..size / buf.len() as u64 {
        rng.fill_bytes(&mut buf);
        file.write_all(&buf).expect("write bench file");
    }
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut file = File::open(path).expect("open bench file");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    loop {
        let n = file.read(&mut buf).expect("read bench file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().into()
}

/// The file over one loopback TCP connection into another file: the floor any transfer
/// tool pays for moving bytes, with no hashing.
fn tcp_copy(src: &Path, dst: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let src = src.to_owned();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let file = tokio::fs::File::open(&src).await.expect("open");
            let mut file = tokio::io::BufReader::with_capacity(COPY_BUF, file);
            tokio::io::copy_buf(&mut file, &mut sock)
                .await
                .expect("send");
        });
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let out = tokio::fs::File::create(dst).await.expect("create");
        let mut out = tokio::io::BufWriter::with_capacity(COPY_BUF, out);
        tokio::io::copy(&mut sock, &mut out).await.expect("receive");
        out.flush().await.expect("flush");
        server.await.expect("server");
    });
    let _ = std::fs::remove_file(dst);
}

/// nginx on loopback serving the bench folder.
struct Http {
    nginx: Child,
    port: u16,
}

impl Http {
    fn start(dir: &Path) -> Option<Self> {
        let found = |bin: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found("nginx") || !found("curl") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).ok()?;
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; pid {p}/nginx.pid; error_log {p}/logs/error.log; worker_processes 1;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{ access_log off; sendfile on; tcp_nopush on;\n\
                   client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
                   server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
                p = prefix.display(),
                root = dir.display()
            ),
        )
        .ok()?;
        let nginx = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        std::thread::sleep(Duration::from_millis(500));
        Some(Self { nginx, port })
    }

    fn fetch_and_hash(&self, dir: &Path) {
        let out = dir.join("http.out");
        let ok = Command::new("curl")
            .args(["-s", "-o"])
            .arg(&out)
            .arg(format!("http://127.0.0.1:{}/bench.bin", self.port))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "curl failed");
        let hashed = Command::new("sha256sum")
            .arg(&out)
            .stdout(Stdio::null())
            .status();
        if !hashed.is_ok_and(|s| s.success()) {
            sha256_file(&out);
        }
        let _ = std::fs::remove_file(out);
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.nginx.kill();
        let _ = self.nginx.wait();
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> Command {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Each node its own identity, never the user's.
    let identity = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-identities")
        .join(format!("{}-{n}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2p-transfer"));
    cmd.env("RUST_LOG", "warn")
        .env("P2P_REPORT_RSS", "1")
        .env("P2P_IDENTITY_DIR", identity);
    cmd
}

/// Starts `cmd` and returns it with the first stdout line starting with `prefix`.
fn start_until(
    mut cmd: Command,
    prefix: &str,
) -> (Proc, String, BufReader<std::process::ChildStdout>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binary");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let proc = Proc(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).expect("read stdout"),
            0,
            "exited before {prefix:?}"
        );
        if line.starts_with(prefix) {
            return (proc, line.trim_end().to_owned(), out);
        }
    }
}

/// The key the dashboard scenario's leecher uses (`P2P_API_KEY`).
const BENCH_API_KEY: &str = "bench-dashboard-key";

/// Reads a leecher's stdout until its `web api` line, then streams `GET /api/v1/events`
/// from it until the leecher exits, as a browser tab left open would. Returns the bytes of
/// events read.
fn listen_to_events(stdout: std::process::ChildStdout) -> u64 {
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return 0;
        }
        if let Some(rest) = line.trim().strip_prefix("web api: http://") {
            break rest.split('/').next().unwrap_or_default().to_owned();
        }
    };
    // Keep draining stdout so the leecher never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let Ok(mut conn) = std::net::TcpStream::connect(&addr) else {
        return 0;
    };
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {BENCH_API_KEY}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    std::io::copy(&mut conn, &mut std::io::sink()).unwrap_or(0)
}

fn peak_rss(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak rss: "))
        .and_then(|l| l.trim_end_matches(" kB").parse().ok())
}

/// End-to-end downloads with the release binary: a server, `seeders` seeders of `file`, and
/// `leechers` leechers started together, timed from their start to the last one's exit
/// (verified file on disk), `RUNS` times. With several leechers the scenario's bytes are what
/// they fetched together. With `dashboard`, runs alternate with runs whose leechers also
/// serve their web API to an event-stream client that listens until they exit; the second
/// scenario returned is those runs (`download_1_seeder_with_dashboard`).
fn download(
    name: &'static str,
    file: &Path,
    size: u64,
    (seeders, leechers): (usize, usize),
    dashboard: bool,
    work: &Path,
) -> Vec<Scenario> {
    let mut cmd = binary();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"]);
    let (_server, line, _) = start_until(cmd, "server listening on ");
    let server = line.trim_start_matches("server listening on ").to_owned();
    let mut seeds = Vec::new();
    let mut id = String::new();
    for _ in 0..seeders {
        let mut cmd = binary();
        cmd.args([
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &server,
            "--register",
        ])
        .arg(file);
        let (proc, _, mut out) = start_until(cmd, "peer listening on ");
        let mut line = String::new();
        while !line.starts_with("registered ") {
            line.clear();
            assert_ne!(
                out.read_line(&mut line).expect("seeder stdout"),
                0,
                "seeder exited"
            );
        }
        id = line.trim_end().rsplit(' ').next().expect("id").to_owned();
        seeds.push(proc);
    }
    // With the dashboard compared, plain and dashboard runs alternate on the same seeders, so
    // drift on a noisy machine hits both alike.
    let modes: &[bool] = if dashboard { &[false, true] } else { &[false] };
    let mut runs = vec![Vec::new(); modes.len()];
    let mut leecher_rss = vec![0; modes.len()];
    let pairs = if dashboard { DASHBOARD_RUNS } else { RUNS };
    for (run, m) in (0..pairs).flat_map(|r| (0..modes.len()).map(move |m| (r, m))) {
        let dashboard = modes[m];
        let start = Instant::now();
        let started: Vec<(PathBuf, Child)> = (0..leechers)
            .map(|l| {
                let out: PathBuf = work.join(format!("{name}-{run}-{m}-{l}"));
                std::fs::create_dir_all(&out).expect("out dir");
                let mut cmd = binary();
                cmd.args([
                    "peer",
                    "--addr",
                    "127.0.0.1:0",
                    "--server",
                    &server,
                    "--download",
                    &id,
                    "--out",
                ])
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
                if dashboard {
                    cmd.args(["--web", "127.0.0.1:0"])
                        .env("P2P_API_KEY", BENCH_API_KEY)
                        .stdout(Stdio::piped());
                }
                let mut child = cmd.spawn().expect("run leecher");
                if dashboard {
                    let stdout = child.stdout.take().expect("leecher stdout");
                    std::thread::spawn(move || listen_to_events(stdout));
                }
                (out, child)
            })
            .collect();
        let outputs: Vec<_> = started
            .into_iter()
            .map(|(out, child)| (out, child.wait_with_output().expect("leecher output")))
            .collect();
        runs[m].push(start.elapsed());
        for (out, output) in outputs {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "leecher failed: {stderr}");
            leecher_rss[m] = leecher_rss[m].max(peak_rss(&stderr).unwrap_or(0));
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    // Seeders report their peak when they stop.
    let mut seeder_rss = 0;
    for mut seed in seeds {
        let _ = Command::new("kill")
            .args(["-TERM", &seed.0.id().to_string()])
            .status();
        let mut stderr = String::new();
        if let Some(mut err) = seed.0.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let _ = seed.0.wait();
        seeder_rss = seeder_rss.max(peak_rss(&stderr).unwrap_or(0));
    }
    let names = [name, "download_1_seeder_with_dashboard"];
    runs.into_iter()
        .zip(leecher_rss)
        .zip(names)
        .map(|((runs, leecher_rss), name)| {
            let s = Scenario {
                name,
                bytes: size * leechers as u64,
                runs,
                leecher_rss_kib: Some(leecher_rss),
                seeder_rss_kib: Some(seeder_rss),
            };
            eprintln!(
                "{name}: {:.0} MB/s, leecher peak {} MiB",
                s.mb_per_s(),
                leecher_rss / 1024
            );
            s
        })
        .collect()
}

fn report(results: &[Scenario], sha: &Scenario, quick: bool) {
    let mut table = format!(
        "p2p-transfer bench ({} mode, {} runs each, file {} MiB)\n{:<33} {:>9} {:>9} {:>9} {:>9} {:>8} {:>12} {:>11}\n",
        if quick { "quick" } else { "full" },
        RUNS,
        results[0].bytes / MIB,
        "scenario",
        "median s",
        "min s",
        "max s",
        "MB/s",
        "x sha256",
        "leecher MiB",
        "seeder MiB"
    );
    let mut json = String::new();
    for s in results {
        let (med, min, max) = s.stats();
        let ratio = s.mb_per_s() / sha.mb_per_s();
        let mib = |k: Option<u64>| k.map_or("-".to_owned(), |k| (k / 1024).to_string());
        table += &format!(
            "{:<33} {med:>9.3} {min:>9.3} {max:>9.3} {:>9.0} {ratio:>8.2} {:>12} {:>11}\n",
            s.name,
            s.mb_per_s(),
            mib(s.leecher_rss_kib),
            mib(s.seeder_rss_kib)
        );
        json += &format!(
            "{{\"scenario\":\"{}\",\"bytes\":{},\"runs\":{},\"median_s\":{med:.4},\"min_s\":{min:.4},\"max_s\":{max:.4},\"mb_per_s\":{:.1},\"x_sha256\":{ratio:.3},\"leecher_peak_rss_kib\":{},\"seeder_peak_rss_kib\":{}}}\n",
            s.name,
            s.bytes,
            s.runs.len(),
            s.mb_per_s(),
            s.leecher_rss_kib
                .map_or("null".to_owned(), |v| v.to_string()),
            s.seeder_rss_kib
                .map_or("null".to_owned(), |v| v.to_string()),
        );
    }
    let median = |name: &str| results.iter().find(|s| s.name == name).map(|s| s.stats().0);
    if let (Some(plain), Some(web)) = (
        median("download_1_seeder"),
        median("download_1_seeder_with_dashboard"),
    ) {
        table += &format!(
            "dashboard cost: {:+.1} % (median time with an event-stream client vs without, runs alternated; target <= 5 %)\n",
            (web / plain - 1.0) * 100.0
        );
    }
    print!("{table}{json}");
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench"));
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("transfer.txt"), &table);
        let _ = std::fs::write(dir.join("transfer.jsonl"), &json);
    }
}

// ---- Folders (issue 14): many small files, against an rsync daemon and tar over socat ----

/// Alternated runs of each side of the folder comparison (ours, rsync, tar), for the medians.
const FOLDER_RUNS: usize = 5;
const FOLDER_RUNS_QUICK: usize = 3;
/// Seed of the generated trees' sizes and bytes, so every run and machine gets the same tree.
const FOLDER_SEED: u64 = 14;
/// `folder_5000_small`: 50 folders of 100 files of 1 to 40 KB (about 100 MB).
const SMALL_FILES: usize = 5_000;
const SMALL_PER_DIR: usize = 100;
const SMALL_SIZES: std::ops::RangeInclusive<u64> = 1_000..=40_000;
/// `folder_100k`: 100,000 files of 0 to 4096 bytes in 1000 folders; 20,000 in quick mode.
const MANY_FILES: usize = 100_000;
const MANY_FILES_QUICK: usize = 20_000;
const MANY_PER_DIR: usize = 100;
const MANY_SIZES: std::ops::RangeInclusive<u64> = 0..=4096;
/// `folder_mixed`: the `folder_5000_small` tree plus this many big files of this size (a
/// quarter of it with `--quick`), against one core's SHA-256 over the same bytes.
const MIXED_BIG_FILES: usize = 3;
const MIXED_BIG_SIZE: u64 = 256 * MIB;
const TARGET_X_SHA256: f64 = 0.8;
/// Targets (reported, never asserted): download time against each baseline, registration
/// time, the leecher's peak RSS at 100,000 files.
const TARGET_X_RSYNC: f64 = 1.0;
const TARGET_X_TAR: f64 = 1.5;
const TARGET_REGISTER_S: f64 = 1.0;
const TARGET_LEECHER_RSS_KIB: u64 = 128 * 1024;
/// A registering seeder that prints nothing for this long has failed.
const REGISTER_IDLE: Duration = Duration::from_secs(30);
/// A download (ours or a baseline) that takes longer than this has failed.
const FOLDER_DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);

/// One folder figure: a download side, or a registration.
#[derive(Clone, Debug, Default)]
struct FolderRow {
    name: String,
    files: usize,
    bytes: u64,
    runs: Vec<Duration>,
    /// Median time over the baselines' (`None`: the baseline or our side did not run).
    x_rsync: Option<f64>,
    x_tar: Option<f64>,
    /// Our MB/s over one core's SHA-256 MB/s of the same tree (`folder_mixed` only).
    x_sha256: Option<f64>,
    leecher_rss_kib: Option<u64>,
    seeder_rss_kib: Option<u64>,
    index_rss_before_kib: Option<u64>,
    index_rss_after_kib: Option<u64>,
    /// Why the figures are missing, if they are.
    note: Option<String>,
}

impl FolderRow {
    fn new(name: impl Into<String>, files: usize, bytes: u64) -> Self {
        Self {
            name: name.into(),
            files,
            bytes,
            ..Self::default()
        }
    }

    /// Median, min, max seconds.
    fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut secs: Vec<f64> = self.runs.iter().map(Duration::as_secs_f64).collect();
        secs.sort_by(f64::total_cmp);
        Some((*secs.get(secs.len() / 2)?, secs[0], secs[secs.len() - 1]))
    }
}

/// The folder scenarios, into `target/bench/folders.txt` and `folders.jsonl`.
fn folders(quick: bool) {
    let runs = if quick {
        FOLDER_RUNS_QUICK
    } else {
        FOLDER_RUNS
    };
    let baselines = found("rsync") && found("socat");
    if !baselines {
        println!("note: folder baselines skipped: needs rsync and socat (make bench-deps)");
    }
    let work = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();

    let src = work.path().join("small").join("album");
    let bytes = generate_tree(&src, SMALL_FILES, SMALL_PER_DIR, SMALL_SIZES);
    rows.extend(folder_scenario(
        "folder_5000_small",
        &src,
        SMALL_FILES,
        bytes,
        runs,
        runs,
        baselines,
        work.path(),
    ));
    let _ = std::fs::remove_dir_all(work.path().join("small"));

    // The same shape of tree with big files in it: a folder job must not lose the big-file
    // speed to its small files (issue 14: at least 0.8 x one core's SHA-256).
    let src = work.path().join("mixed").join("mixed");
    let mut bytes = generate_tree(&src, SMALL_FILES, SMALL_PER_DIR, SMALL_SIZES);
    let big = if quick {
        MIXED_BIG_SIZE / 4
    } else {
        MIXED_BIG_SIZE
    };
    for i in 0..MIXED_BIG_FILES {
        write_random(&src.join(format!("big{i}.bin")), big);
        bytes += big;
    }
    let files = SMALL_FILES + MIXED_BIG_FILES;
    // One core hashing every file of the tree, from the page cache (the first pass warms it).
    hash_tree(&src);
    let mut sha = FolderRow::new("folder_mixed_sha256", files, bytes);
    for _ in 0..runs {
        let started = Instant::now();
        hash_tree(&src);
        sha.runs.push(started.elapsed());
    }
    let mut mixed = folder_scenario(
        "folder_mixed",
        &src,
        files,
        bytes,
        1,
        runs,
        baselines,
        work.path(),
    );
    if let (Some((sha_s, _, _)), Some((ours_s, _, _))) = (sha.stats(), mixed[1].stats()) {
        mixed[1].x_sha256 = Some(sha_s / ours_s);
    }
    rows.extend(mixed);
    rows.push(sha);
    let _ = std::fs::remove_dir_all(work.path().join("mixed"));

    let many = if quick { MANY_FILES_QUICK } else { MANY_FILES };
    let name = if quick { "folder_20k" } else { "folder_100k" };
    let src = work.path().join("many").join("library");
    let bytes = generate_tree(&src, many, MANY_PER_DIR, MANY_SIZES);
    rows.extend(folder_scenario(
        name,
        &src,
        many,
        bytes,
        1,
        1,
        baselines,
        work.path(),
    ));
    let _ = std::fs::remove_dir_all(work.path().join("many"));
    folder_report(&rows, quick, runs);
}

fn found(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `files` files with sizes drawn from `sizes`, `per_dir` to a folder, under `root`;
/// returns their total size.
fn generate_tree(
    root: &Path,
    files: usize,
    per_dir: usize,
    sizes: std::ops::RangeInclusive<u64>,
) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(FOLDER_SEED);
    let mut total = 0;
    let mut buf = vec![0u8; *sizes.end() as usize];
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&dir).expect("create tree folder");
        }
        let len = rng.random_range(sizes.clone()) as usize;
        rng.fill_bytes(&mut buf[..len]);
        std::fs::write(dir.join(format!("f{:05}.bin", i % per_dir)), &buf[..len])
            .expect("write tree file");
        total += len as u64;
    }
    total
}

/// SHA-256 of every regular file under `root`, by path relative to it (anything else, such
/// as a leftover `.part` or a symlink, shows up as a difference too).
fn hash_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, [u8; 32]> {
    let mut hashes = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_owned();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => {
                    let data = std::fs::read(&path).unwrap_or_default();
                    hashes.insert(rel, Sha256::digest(&data).into());
                }
                _ => {
                    hashes.insert(rel, [0xFF; 32]);
                }
            }
        }
    }
    hashes
}

/// `None` if the tree at `got` is `expected` path for path and byte for byte, or else what
/// differs.
fn tree_differs(
    expected: &std::collections::BTreeMap<PathBuf, [u8; 32]>,
    got: &Path,
) -> Option<String> {
    let got = hash_tree(got);
    if &got == expected {
        return None;
    }
    let missing = expected.keys().filter(|p| !got.contains_key(*p)).count();
    let extra = got.keys().filter(|p| !expected.contains_key(*p)).count();
    let first = expected
        .iter()
        .find(|(p, h)| got.get(*p) != Some(h))
        .map(|(p, _)| p)
        .or_else(|| got.keys().find(|p| !expected.contains_key(*p)))
        .map_or(String::new(), |p| format!(", first {}", p.display()));
    Some(format!(
        "tree differs: {missing} missing, {extra} extra, {} changed{first}",
        expected
            .iter()
            .filter(|(p, h)| got.get(*p).is_some_and(|g| g != *h))
            .count()
    ))
}

/// A process whose stdout lines arrive on a channel and whose stderr is kept (last lines), so
/// neither pipe fills; killed on drop.
struct Watched {
    proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The stderr reader, joined once the process exited so its last line (`peak rss`) is in.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start binary");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the process never blocks.
                    continue;
                }
            }
        });
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tail = kept.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                // The last lines only: `peak rss` is the very last.
                if tail.len() >= 64 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        Self {
            proc: Proc(child),
            lines,
            stderr: kept,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// After the exit: every stderr line is in.
    fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// The last line on stderr that is not the `peak rss` report, for a note.
    fn last_error(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter()
            .rev()
            .find(|l| !l.starts_with("peak rss: ") && !l.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "(nothing on stderr)".into())
    }

    fn peak_rss(&self) -> Option<u64> {
        let tail = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        peak_rss(&tail)
    }

    /// Waits for the first stdout line `matches` accepts, with at most `idle` between lines.
    fn wait_line(
        &mut self,
        idle: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        loop {
            match self.lines.recv_timeout(idle) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("nothing printed for {}s", idle.as_secs()));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.proc.0.wait();
                    self.join_stderr();
                    return Err(format!("exited: {}", self.last_error()));
                }
            }
        }
    }

    /// Waits for the exit (killing it after `limit`); whether it succeeded.
    fn wait_exit(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.proc.0.try_wait() {
                Ok(Some(status)) => {
                    self.join_stderr();
                    return if status.success() {
                        Ok(())
                    } else {
                        Err(self.last_error())
                    };
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = self.proc.0.kill();
                    return Err(format!("still running after {}s", limit.as_secs()));
                }
            }
        }
    }

    /// SIGTERM, then the exit (its `peak rss` line comes with it).
    fn stop(mut self) -> Option<u64> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.wait_exit(Duration::from_secs(30));
        self.peak_rss()
    }
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()
}

/// An index server of our own, on loopback.
fn start_index() -> (Watched, String) {
    let mut cmd = binary();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"]);
    let mut server = Watched::spawn(cmd);
    let line = server
        .wait_line(Duration::from_secs(30), |l| {
            l.starts_with("server listening on ")
        })
        .expect("index server starts");
    let addr = line.trim_start_matches("server listening on ").to_owned();
    (server, addr)
}

/// A seeder sharing `dir` with `index`, timed from its start to its `registered <dir>
/// <folder id>` line. Returns it (still serving), the time and the folder id.
fn register_folder(index: &str, dir: &Path) -> Result<(Watched, Duration, String), String> {
    let mut cmd = binary();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--server", index, "-r"])
        .arg(dir);
    let start = Instant::now();
    let mut seeder = Watched::spawn(cmd);
    let shown = dir.display().to_string();
    let canonical = dir
        .canonicalize()
        .map_or(shown.clone(), |p| p.display().to_string());
    let line = seeder.wait_line(REGISTER_IDLE, |l| {
        l.strip_prefix("registered ")
            .and_then(|rest| rest.rsplit_once(' '))
            .is_some_and(|(path, _)| {
                let path = path.trim_end_matches('/');
                path == shown || path == canonical
            })
    });
    let took = start.elapsed();
    let line = line.map_err(|e| {
        format!("folder registration failed: no \"registered {shown} <folder id>\" line ({e})")
    })?;
    let id = line.rsplit(' ').next().unwrap_or_default().to_owned();
    Ok((seeder, took, id))
}

/// `peer --download <folder id> --out <dst>` from its start to its exit, then the tree checked
/// against `expected`. Returns the time and the leecher's peak RSS.
fn download_folder(
    index: &str,
    id: &str,
    dst: &Path,
    folder: &str,
    expected: &std::collections::BTreeMap<PathBuf, [u8; 32]>,
) -> Result<(Duration, Option<u64>), String> {
    let mut cmd = binary();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        index,
        "--download",
        id,
        "--out",
    ])
    .arg(dst);
    let start = Instant::now();
    let mut leecher = Watched::spawn(cmd);
    let exited = leecher.wait_exit(FOLDER_DOWNLOAD_LIMIT);
    let took = start.elapsed();
    exited.map_err(|e| format!("folder download failed: {e}"))?;
    if let Some(diff) = tree_differs(expected, &dst.join(folder)) {
        return Err(format!("folder download incomplete: {diff}"));
    }
    Ok((took, leecher.peak_rss()))
}

/// A free loopback port (bound and released: another process could take it meanwhile, which
/// only fails that run).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Whether something listens on 127.0.0.1:`port`, read from `/proc/net/tcp` (connecting
/// would take the one connection a `socat TCP-LISTEN` accepts).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&want.as_str()) && cols.get(3) == Some(&"0A")
        })
    })
}

fn wait_for(what: &str, limit: Duration, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An rsync daemon serving `src` read-only as module `b` on loopback.
struct RsyncDaemon {
    _proc: Proc,
    port: u16,
}

impl RsyncDaemon {
    fn start(src: &Path, scratch: &Path) -> Self {
        std::fs::create_dir_all(scratch).expect("rsync scratch");
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let conf = scratch.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {uid}\ngid = {gid}\npid file = {s}/rsyncd.pid\n\
                 lock file = {s}/rsyncd.lock\nlog file = {s}/rsyncd.log\n\
                 [b]\npath = {src}\nread only = yes\n",
                s = scratch.display(),
                src = src.display()
            ),
        )
        .expect("rsyncd.conf");
        let port = free_port();
        let proc = Proc(
            Command::new("rsync")
                .arg("--daemon")
                .arg("--no-detach")
                .arg(format!("--config={}", conf.display()))
                .arg("--address=127.0.0.1")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start rsync daemon"),
        );
        wait_for("rsync daemon", Duration::from_secs(10), || listening(port));
        Self { _proc: proc, port }
    }

    /// `rsync -a rsync://127.0.0.1:P/b/ dst/`, timed.
    fn fetch(&self, dst: &Path) -> Result<Duration, String> {
        let start = Instant::now();
        let out = Command::new("rsync")
            .arg("-a")
            .arg(format!("rsync://127.0.0.1:{}/b/", self.port))
            .arg(format!("{}/", dst.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("rsync: {e}"))?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "rsync failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    }
}

/// `tar -cf - -C src . | socat` into `socat ... SYSTEM:'tar -xf - -C dst'`, timed from the
/// sender's start (the receiver listening already, as a daemon would) until both exit.
fn tar_socat(src: &Path, dst: &Path) -> Result<Duration, String> {
    let port = free_port();
    let mut receiver = Proc(
        Command::new("socat")
            .arg("-u")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg(format!("SYSTEM:tar -xf - -C '{}'", dst.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?,
    );
    wait_for("socat receiver", Duration::from_secs(10), || {
        listening(port)
    });
    let start = Instant::now();
    let sent = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -cf - -C '{}' . | socat -u STDIN TCP:127.0.0.1:{port}",
            src.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("tar | socat: {e}"))?;
    let received = receiver.0.wait().map_err(|e| format!("socat: {e}"))?;
    let took = start.elapsed();
    if !sent.status.success() || !received.success() {
        return Err(format!(
            "tar | socat failed: {}",
            String::from_utf8_lossy(&sent.stderr).trim()
        ));
    }
    Ok(took)
}

/// One folder scenario: registration (`register_runs` times, each on a fresh index), then
/// `runs` alternated downloads of ours, rsync's and tar's, each into a fresh folder, each
/// verified path by path. Our side failing gives a note, never a panic.
#[allow(clippy::too_many_arguments)]
fn folder_scenario(
    name: &str,
    src: &Path,
    files: usize,
    bytes: u64,
    register_runs: usize,
    runs: usize,
    baselines: bool,
    work: &Path,
) -> Vec<FolderRow> {
    // Reads every file once: the expected hashes, and a warm page cache for every side.
    let expected = hash_tree(src);
    assert_eq!(expected.len(), files, "generated tree");
    let folder = src
        .file_name()
        .expect("tree root has a name")
        .to_string_lossy()
        .into_owned();
    let mut register = FolderRow::new(format!("{name}_register"), files, bytes);
    let mut ours = FolderRow::new(name, files, bytes);
    let mut rsync = FolderRow::new(format!("{name}_rsync_daemon"), files, bytes);
    let mut tar = FolderRow::new(format!("{name}_tar_socat"), files, bytes);

    // The last registration's index and seeder serve the downloads.
    let mut serving: Option<(Watched, String, Watched, String)> = None;
    for _ in 0..register_runs {
        if let Some((index, _, seeder, _)) = serving.take() {
            seeder.stop();
            index.stop();
        }
        let (index, addr) = start_index();
        let before = proc_kib(index.pid(), "VmRSS");
        match register_folder(&addr, src) {
            Ok((seeder, took, id)) => {
                register.runs.push(took);
                register.index_rss_before_kib = before;
                register.index_rss_after_kib = proc_kib(index.pid(), "VmRSS");
                serving = Some((index, addr, seeder, id));
            }
            Err(note) => {
                println!("note: {name}: {note}");
                register.note = Some(note.clone());
                ours.note = Some(note);
                index.stop();
                break;
            }
        }
    }

    let rsyncd = baselines.then(|| RsyncDaemon::start(src, &work.join("rsyncd")));
    let fresh = |side: &str, run: usize| {
        let dst = work.join(format!("{name}-{side}-{run}"));
        std::fs::create_dir_all(&dst).expect("destination");
        dst
    };
    for run in 0..runs {
        if let Some((_, addr, _, id)) = &serving
            && ours.note.is_none()
        {
            let dst = fresh("ours", run);
            match download_folder(addr, id, &dst, &folder, &expected) {
                Ok((took, rss)) => {
                    ours.runs.push(took);
                    ours.leecher_rss_kib = ours.leecher_rss_kib.max(rss);
                }
                Err(note) => {
                    println!("note: {name}: {note}");
                    ours.note = Some(note);
                }
            }
            let _ = std::fs::remove_dir_all(&dst);
        }
        if let Some(rsyncd) = &rsyncd {
            let dst = fresh("rsync", run);
            let outcome = rsyncd
                .fetch(&dst)
                .and_then(|took| match tree_differs(&expected, &dst) {
                    None => Ok(took),
                    Some(diff) => Err(format!("rsync: {diff}")),
                });
            match outcome {
                Ok(took) => rsync.runs.push(took),
                Err(note) => rsync.note = Some(note),
            }
            let _ = std::fs::remove_dir_all(&dst);
            let dst = fresh("tar", run);
            let outcome =
                tar_socat(src, &dst).and_then(|took| match tree_differs(&expected, &dst) {
                    None => Ok(took),
                    Some(diff) => Err(format!("tar | socat: {diff}")),
                });
            match outcome {
                Ok(took) => tar.runs.push(took),
                Err(note) => tar.note = Some(note),
            }
            let _ = std::fs::remove_dir_all(&dst);
        }
        eprintln!(
            "{name}: run {}/{runs} done ({} ours, {} rsync, {} tar)",
            run + 1,
            ours.runs.len(),
            rsync.runs.len(),
            tar.runs.len()
        );
    }
    if !baselines {
        rsync.note = Some("skipped: needs rsync and socat (make bench-deps)".into());
        tar.note = rsync.note.clone();
    }
    if let Some((index, _, seeder, _)) = serving {
        ours.seeder_rss_kib = proc_kib(seeder.pid(), "VmHWM");
        register.seeder_rss_kib = ours.seeder_rss_kib;
        ours.index_rss_before_kib = register.index_rss_before_kib;
        ours.index_rss_after_kib = register.index_rss_after_kib;
        seeder.stop();
        index.stop();
    }
    let median = |row: &FolderRow| row.stats().map(|(m, _, _)| m);
    if let Some(ours_s) = median(&ours) {
        ours.x_rsync = median(&rsync).map(|r| ours_s / r);
        ours.x_tar = median(&tar).map(|t| ours_s / t);
    }
    vec![register, ours, rsync, tar]
}

fn folder_report(rows: &[FolderRow], quick: bool, runs: usize) {
    let mut table = format!(
        "p2p-transfer folder bench ({} mode, up to {runs} alternated runs a side)\n\
         {:<30} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>10}\n",
        if quick { "quick" } else { "full" },
        "scenario",
        "files",
        "MB",
        "median s",
        "min s",
        "max s",
        "MB/s",
        "x rsync",
        "x tar",
        "leech MiB",
        "seed MiB",
        "index +MiB",
    );
    let mut json = String::new();
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("null".to_owned(), |v| format!("{v:.digits$}"));
    let kib = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
    let mib = |v: Option<u64>| v.map_or("-".to_owned(), |v| (v / 1024).to_string());
    for row in rows {
        let stats = row.stats();
        let (med, min, max) =
            stats.map_or((None, None, None), |(a, b, c)| (Some(a), Some(b), Some(c)));
        let mb_s = med.map(|m| row.bytes as f64 / m / 1e6);
        let growth = row
            .index_rss_after_kib
            .zip(row.index_rss_before_kib)
            .map(|(a, b)| a.saturating_sub(b));
        let cell = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        table += &format!(
            "{:<30} {:>7} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>10}\n",
            row.name,
            row.files,
            row.bytes as f64 / 1e6,
            cell(med, 3),
            cell(min, 3),
            cell(max, 3),
            cell(mb_s, 0),
            cell(row.x_rsync, 2),
            cell(row.x_tar, 2),
            mib(row.leecher_rss_kib),
            mib(row.seeder_rss_kib),
            mib(growth),
        );
        if let Some(note) = &row.note {
            table += &format!("    note: {note}\n");
        }
        if let Some(x) = row.x_sha256 {
            table += &format!("    {x:.2} x one core's SHA-256 of the same tree\n");
        }
        let targets = if row.name == "folder_mixed" {
            format!(
                ",\"x_sha256\":{},\"target_x_sha256\":{TARGET_X_SHA256}",
                opt(row.x_sha256, 3)
            )
        } else if row.name.ends_with("_register") {
            format!(",\"target_s\":{TARGET_REGISTER_S}")
        } else if row.name.ends_with("_rsync_daemon")
            || row.name.ends_with("_tar_socat")
            || row.name.ends_with("_sha256")
        {
            String::new()
        } else {
            format!(
                ",\"target_x_rsync\":{TARGET_X_RSYNC},\"target_x_tar_socat\":{TARGET_X_TAR},\"target_leecher_peak_rss_kib\":{TARGET_LEECHER_RSS_KIB}"
            )
        };
        json += &format!(
            "{{\"scenario\":\"{}\",\"files\":{},\"bytes\":{},\"runs\":{},\"median_s\":{},\"min_s\":{},\"max_s\":{},\"mb_per_s\":{},\"x_rsync\":{},\"x_tar_socat\":{},\"leecher_peak_rss_kib\":{},\"seeder_peak_rss_kib\":{},\"index_rss_before_kib\":{},\"index_rss_after_kib\":{}{targets},\"note\":{}}}\n",
            row.name,
            row.files,
            row.bytes,
            row.runs.len(),
            opt(med, 4),
            opt(min, 4),
            opt(max, 4),
            opt(mb_s, 1),
            opt(row.x_rsync, 3),
            opt(row.x_tar, 3),
            kib(row.leecher_rss_kib),
            kib(row.seeder_rss_kib),
            kib(row.index_rss_before_kib),
            kib(row.index_rss_after_kib),
            row.note.as_deref().map_or("null".to_owned(), json_string),
        );
    }
    table += &format!(
        "targets: download <= {TARGET_X_RSYNC} x rsync daemon and <= {TARGET_X_TAR} x tar|socat; registration <= {TARGET_REGISTER_S} s; folder_mixed >= {TARGET_X_SHA256} x one core's SHA-256; leecher peak RSS < {} MiB at 100,000 files\n",
        TARGET_LEECHER_RSS_KIB / 1024
    );
    print!("{table}{json}");
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench"));
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("folders.txt"), &table);
        let _ = std::fs::write(dir.join("folders.jsonl"), &json);
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if u32::from(c) < 0x20 => out += &format!("\\u{:04x}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
