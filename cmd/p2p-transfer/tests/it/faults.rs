//! Faults during a download: hosts that die, hang or vanish, interrupted downloads that must
//! resume, and leechers killed at random moments.

use std::process::Command;
use std::time::Duration;

use p2p_peer::{DownloadEvent, Peer, PeerError};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::bad_input::{FakeSeeder, Misbehaviour};
use crate::process::{leecher, start_server as start_server_process};
use crate::support::{SilentProxy, peer_config, random_file, start_peer, start_server};

const MIB: usize = 1024 * 1024;
/// One chunk, in bytes.
const CHUNK: usize = p2p_protocol::CHUNK_SIZE as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_resumes_and_fetches_only_the_rest() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "resume.bin", 40 * MIB + 3, 51);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap().to_string();

    // First run: one worker, cancelled after three chunks.
    let mut config = peer_config(server.addr);
    config.workers = 1;
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = leecher.download(&id, out.path(), Some(tx), cancel.clone());
    let watcher = async {
        let mut done = 0;
        while let Some(event) = rx.recv().await {
            if matches!(event, DownloadEvent::ChunkDone { .. }) {
                done += 1;
                if done == 3 {
                    cancel.cancel();
                }
            }
        }
    };
    let (first, ()) = tokio::join!(run, watcher);
    assert!(matches!(first, Err(PeerError::Cancelled)), "{first:?}");
    assert!(out.path().join("resume.bin.part").exists());
    assert!(
        out.path().join("resume.bin.part.chunks").exists(),
        "the record of verified chunks stays"
    );
    let served_before = seeder.chunks_served();

    // Second run: picks up the verified chunks and fetches only the others.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = leecher
        .download(&id, out.path(), Some(tx), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let (mut resumed, mut fetched, mut chunks) = (0, 0, 0);
    while let Some(event) = rx.recv().await {
        match event {
            DownloadEvent::Started {
                resumed: r,
                chunks: c,
                ..
            } => (resumed, chunks) = (r, c),
            DownloadEvent::ChunkDone { .. } => fetched += 1,
            _ => {}
        }
    }
    let chunk = 4 * MIB as u64;
    assert_eq!(chunks, 11);
    assert!(resumed >= 3 * chunk, "resumed only {resumed} bytes");
    assert_eq!(
        fetched,
        11 - resumed / chunk,
        "only missing chunks are fetched"
    );
    // The seeder agrees (allowing the one request in flight when the first run stopped).
    assert!(seeder.chunks_served() - served_before <= fetched + 1);
    assert!(!out.path().join("resume.bin.part").exists());
    assert!(!out.path().join("resume.bin.part.chunks").exists());
    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_that_dies_mid_download_is_replaced_by_the_others() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "dies.bin", 48 * MIB, 52);
    let doomed = start_peer(server.addr).await;
    let survivor = start_peer(server.addr).await;
    let id = doomed.register(&path).await.unwrap().to_string();
    survivor.register(&path).await.unwrap();

    let leecher = start_peer(server.addr).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = leecher.download(&id, out.path(), Some(tx), CancellationToken::new());
    let killer = async {
        while let Some(event) = rx.recv().await {
            if let DownloadEvent::ChunkDone { host, .. } = event
                && host == doomed.local_addr()
            {
                // It delivered one chunk; now it goes away, connections and all.
                doomed.shutdown().await;
                break;
            }
        }
        while rx.recv().await.is_some() {}
    };
    let (report, ()) = tokio::join!(run, killer);
    let report = report.unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(survivor.chunks_served() > 0);
    leecher.shutdown().await;
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_does_not_hold_back_the_end() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "late.bin", 24 * MIB, 53);
    let good = start_peer(server.addr).await;
    let id = good.register(&path).await.unwrap().to_string();
    // Takes requests and never answers: without the endgame its chunks would wait for the
    // request timeout (a minute here).
    let hung = FakeSeeder::start(server.addr, &path, Misbehaviour::Stall).await;

    let mut config = peer_config(server.addr);
    config.request_timeout = Duration::from_secs(60);
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        leecher.download(&id, out.path(), None, CancellationToken::new()),
    )
    .await
    .expect("the download waited for the hung host")
    .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(hung.requests() > 0, "the hung host was asked");
    leecher.shutdown().await;
    good.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_gone_fails_after_the_stall_timeout_and_resumes_later() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "gone.bin", 32 * MIB, 54);
    let only = start_peer(server.addr).await;
    let id = only.register(&path).await.unwrap().to_string();

    let mut config = peer_config(server.addr);
    config.workers = 1;
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = leecher.download(&id, out.path(), Some(tx), CancellationToken::new());
    let killer = async {
        let mut done = 0;
        while let Some(event) = rx.recv().await {
            if matches!(event, DownloadEvent::ChunkDone { .. }) {
                done += 1;
                if done == 2 {
                    only.shutdown().await;
                }
            }
        }
    };
    let (err, ()) = tokio::join!(run, killer);
    let err = err.unwrap_err().to_string();
    assert!(
        err.starts_with("download of gone.bin failed with "),
        "{err}"
    );
    assert!(
        err.contains(" of 8 chunks complete: no host could deliver for 2s"),
        "{err}"
    );
    assert!(out.path().join("gone.bin.part.chunks").exists());

    // A seeder comes back: the same download resumes and completes.
    let back = start_peer(server.addr).await;
    back.register(&path).await.unwrap();
    let report = leecher
        .download(&id, out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(
        back.chunks_served() <= 6,
        "resumed chunks were not fetched again"
    );
    leecher.shutdown().await;
    back.shutdown().await;
}

/// The leecher process is killed with SIGKILL at random moments (seeded, so a failure can be
/// replayed); each restart resumes, and the final file is byte-exact.
#[test]
fn leecher_killed_at_random_moments_always_ends_byte_exact() {
    let seed: u64 = std::env::var("P2P_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_server, addr) = start_server_process();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "killed.bin", 128 * MIB, 55);
    let (_seeder, id) = crate::process::seed(&addr, &path);

    let target = out.path().join("killed.bin");
    let leecher = || {
        let mut cmd = leecher(&addr, &id, out.path());
        cmd.args(["--workers", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // Kill it eight times at random moments, each run picking up where the last one died.
    let mut kills = 0;
    for attempt in 0..8 {
        let mut child = leecher().spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(10..250)));
        if child.try_wait().unwrap().is_some() {
            break; // finished before the blow
        }
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whatever moment it died at: no final file unless it is complete and verified.
        if target.exists() {
            assert_eq!(
                std::fs::read(&target).unwrap(),
                data,
                "attempt {attempt}, seed {seed}"
            );
        }
    }
    assert!(
        kills > 0,
        "the download was never interrupted; shorten the delays"
    );
    if !target.exists() {
        let output = leecher().output().unwrap();
        assert!(
            output.status.success(),
            "final run failed (seed {seed}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), data, "seed {seed}");
    assert!(!out.path().join("killed.bin.part").exists());
}

#[test]
fn sigterm_during_a_download_saves_the_state_for_the_next_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start_server());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "term.bin", 16 * MIB, 56);
    let id = p2p_storage::build_manifest(&path)
        .unwrap()
        .manifest
        .id()
        .to_string();
    // Only a hung host at first: the download can't finish.
    let hung = rt.block_on(FakeSeeder::start(server.addr, &path, Misbehaviour::Stall));
    let addr = server.addr.to_string();
    let child = leecher(&addr, &id, out.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = out.path().join("term.bin.part");
    for _ in 0..100 {
        if part.exists() && hung.requests() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    // Stopped by SIGTERM before its work was done: 128 + 15 (README, "Exit codes").
    assert_eq!(output.status.code(), Some(143));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with(&format!("error: cannot download {id}: interrupted; the partial file {} was kept, and the same command run again resumes it", part.display())),
        "{stderr}"
    );
    assert!(part.exists());
    assert!(
        out.path().join("term.bin.part.chunks").exists(),
        "state saved on SIGTERM"
    );
    drop(hung);

    // With a working seeder the next run completes.
    let seeder = rt.block_on(start_peer(server.addr));
    rt.block_on(seeder.register(&path)).unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(out.path().join("term.bin")).unwrap(), data);
    rt.block_on(seeder.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_is_noticed_by_read_deadlines() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "cut.bin", 40 * MIB, 57);
    // One seeder is reached only through a link that will silently drop everything.
    let mut behind = peer_config(server.addr);
    let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct_addr = direct.local_addr().unwrap();
    drop(direct);
    behind.listen_addr = direct_addr;
    let proxy = SilentProxy::start(direct_addr).await;
    behind.advertise_addr = Some(proxy.addr);
    let cut_off = Peer::start(behind, crate::support::tls()).await.unwrap();
    let id = cut_off.register(&path).await.unwrap().to_string();
    let mut config = peer_config(server.addr);
    config.request_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    config.stall_timeout = Duration::from_secs(10);
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = leecher.download(&id, out.path(), Some(tx), CancellationToken::new());
    // The only host goes silent after its first chunk; another host appears meanwhile. The
    // silent host's requests must end by read deadline, not hang, and the download move on.
    let other = start_peer(server.addr).await;
    let watch = async {
        let mut timed_out = false;
        let mut cut = false;
        while let Some(event) = rx.recv().await {
            match event {
                DownloadEvent::ChunkDone { host, .. } if host == proxy.addr && !cut => {
                    proxy.go_silent();
                    cut = true;
                    other.register(&path).await.unwrap();
                }
                DownloadEvent::PeerFailed { host, error, .. } if host == proxy.addr => {
                    timed_out |= error.contains("no reply within 2s");
                }
                _ => {}
            }
        }
        timed_out
    };
    let (report, timed_out) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(run, watch) })
            .await
            .expect("the download hung on the silent host");
    let report = report.unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(
        timed_out,
        "the silent host's requests ended by read deadline"
    );
    assert!(other.chunks_served() > 0);
    leecher.shutdown().await;
    other.shutdown().await;
    cut_off.shutdown().await;
}

/// A download that can't fit refuses to start, before fetching anything, with a clear error.
/// Runs in a private mount namespace on a 12 MiB tmpfs. (A disk filling up mid-way gives the
/// same error: see the storage crate's unit test of the write error.)
#[test]
fn full_disk_is_a_clear_error() {
    if !crate::netns::enter("faults::full_disk_is_a_clear_error") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start_server());
    let src = tempfile::tempdir().unwrap();
    let small = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(small.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs in the test's namespace"
    );
    let (big, _) = random_file(src.path(), "big.bin", 20 * MIB, 58);
    let seeder = rt.block_on(start_peer(server.addr));
    let id = rt.block_on(seeder.register(&big)).unwrap().to_string();
    let leecher = rt.block_on(start_peer(server.addr));

    let err = rt
        .block_on(leecher.download(&id, small.path(), None, CancellationToken::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not enough disk space for"), "{err}");
    assert!(err.contains("20971520 more bytes needed"), "{err}");
    assert_eq!(
        seeder.chunks_served(),
        0,
        "refused before fetching anything"
    );

    assert!(
        small.path().join("big.bin.part").exists(),
        "nothing is lost either"
    );
    rt.block_on(leecher.shutdown());
    rt.block_on(seeder.shutdown());
    let _ = Command::new("umount").arg(small.path()).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_keep_going_while_the_index_restarts() {
    let server = start_server().await;
    let addr = server.addr;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "steady.bin", 32 * MIB, 60);
    let seeder = start_peer(addr).await;
    let id = seeder.register(&path).await.unwrap().to_string();
    let mut config = peer_config(addr);
    config.workers = 1;
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = leecher.download(&id, out.path(), Some(tx), CancellationToken::new());
    let restart = async {
        let mut server = Some(server);
        let mut restarted = None;
        while let Some(event) = rx.recv().await {
            if matches!(event, DownloadEvent::ChunkDone { .. })
                && let Some(s) = server.take()
            {
                // The index goes away mid-download and comes back empty.
                s.stop().await;
                restarted = Some(
                    crate::support::start_server_on(addr, crate::support::fast_server_config())
                        .await,
                );
            }
        }
        restarted
    };
    let (report, restarted) = tokio::join!(run, restart);
    assert_eq!(std::fs::read(&report.unwrap().path).unwrap(), data);
    assert!(
        restarted.is_some(),
        "the index was restarted during the download"
    );
    leecher.shutdown().await;
    seeder.shutdown().await;
}

/// Bytes in `text`, as p2p-transfer prints them: `12 B`, `1.50 KiB`, `3.00 MiB`...
fn bytes_of(text: &str) -> f64 {
    let (number, unit) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit of {text:?}"),
    };
    number.parse::<f64>().unwrap() * scale
}

/// After an interrupted run, the next run's `downloaded` line counts what it fetched itself
/// and what the first run left: `(F fetched at X MiB/s, R resumed)`, F + R the file's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_download_reports_only_this_runs_bytes_and_speed() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 4 * CHUNK + 77;
    let (path, data) = random_file(src.path(), "film.bin", size, 57);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap().to_string();
    let identity = crate::support::fresh_identity_dir();
    let run = |from: std::net::SocketAddr| {
        let mut cmd = crate::process::bin();
        cmd.env("P2P_IDENTITY_DIR", &identity)
            .args(["peer", "--addr", "127.0.0.1:0", "--workers", "1"])
            .args(["--from", &from.to_string(), "--download", &id, "--out"])
            .arg(out.path());
        cmd
    };

    // The first run reaches the seeder through a link that passes two chunks' worth of bytes,
    // then nothing: a chunk at least is verified, the file is never whole. Then Ctrl-C.
    let proxy = SilentProxy::start_with_budget(seeder.local_addr(), 2 * CHUNK as u64).await;
    let mut first = run(proxy.addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !crate::send_receive::records_a_chunk(out.path()) {
        assert!(first.try_wait().unwrap().is_none(), "ended before Ctrl-C");
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk verified in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "an interrupted download is no success");

    // The same command, straight to the seeder: it completes, and says what it did itself.
    let mut again = run(seeder.local_addr());
    let output = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(out.path().join("film.bin")).unwrap(), data);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("downloaded "))
        .unwrap_or_else(|| panic!("no downloaded line: {stdout}"));
    // `downloaded PATH ID SIZE in T s (F fetched at X MiB/s, R resumed)`
    let summary = line
        .rsplit_once(" (")
        .and_then(|(_, s)| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    let (fetched, rest) = summary
        .split_once(" fetched at ")
        .unwrap_or_else(|| panic!("no fetched part: {line}"));
    let (speed, resumed) = rest
        .split_once(", ")
        .unwrap_or_else(|| panic!("no resumed part: {line}"));
    let resumed = resumed
        .strip_suffix(" resumed")
        .unwrap_or_else(|| panic!("{line}"));
    let (fetched, resumed) = (bytes_of(fetched), bytes_of(resumed));
    // Two decimals of the unit: within a hundredth of a MiB of the exact size.
    assert!(
        (fetched + resumed - size as f64).abs() <= 0.01 * MIB as f64,
        "fetched + resumed is not the size {size}: {line}"
    );
    assert!(resumed >= CHUNK as f64, "nothing resumed: {line}");
    assert!(fetched < size as f64, "fetched everything again: {line}");
    let speed = speed
        .strip_suffix("/s")
        .unwrap_or_else(|| panic!("no speed: {line}"));
    assert!(bytes_of(speed) > 0.0, "{line}");
    seeder.shutdown().await;
}
