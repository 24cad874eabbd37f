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
