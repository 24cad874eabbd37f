//! Someone who can write into a shared folder or an output folder (another user, a script,
//! a synced folder) tries to make the peer serve what it was never given, hang on a FIFO, or
//! write outside `--out`. Each test keeps an attacker thread flipping a file while the peer
//! works, so the race windows the attacks need are really exercised.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2p_peer::share_dir::{ShareDir, ShareDirConfig};
use p2p_protocol::FileId;

use crate::process::bin;
use crate::support::{eventually, random_file, start_peer, start_server};

/// A thread replacing `target` again and again, atomically (rename over it), with what
/// `make` builds under a hidden temporary name, each version left in place for `hold(n)`;
/// stopped and joined on drop.
struct Flipper {
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flipper {
    fn start(
        target: PathBuf,
        make: impl Fn(&Path, u64) + Send + 'static,
        hold: impl Fn(u64) -> Duration + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, flips) = (stop.clone(), flips.clone());
            std::thread::spawn(move || {
                let tmp = target.with_file_name(".flip");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&tmp);
                    make(&tmp, n);
                    std::fs::rename(&tmp, &target).unwrap();
                    std::thread::sleep(hold(n));
                    n += 1;
                    flips.store(n, Ordering::Relaxed);
                }
            })
        };
        Self {
            stop,
            flips,
            thread: Some(thread),
        }
    }

    fn flips(&self) -> u64 {
        self.flips.load(Ordering::Relaxed)
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// The id a file named `name` holding `data` has.
fn id_of(name: &str, data: &[u8]) -> FileId {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), data).unwrap();
    p2p_storage::build_manifest(&dir.path().join(name))
        .unwrap()
        .manifest
        .id()
}

fn quick_share(dir: &Path) -> ShareDirConfig {
    ShareDirConfig {
        dir: dir.to_owned(),
        cache_file: None,
        // Rescans back to back, so that many land inside the attacker's window.
        rescan_every: Duration::from_millis(50),
        changes: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_link_to_a_secret_is_never_served() {
    let server = start_server().await;
    let folder = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    let secret = b"-----BEGIN OPENSSH PRIVATE KEY----- not for sharing".to_vec();
    std::fs::write(private.path().join("id_ed25519"), &secret).unwrap();
    let stolen = id_of("doc.txt", &secret);
    random_file(folder.path(), "doc.txt", 3000, 91);
    // Other files the walk lists after the document: the time it takes is the attacker's
    // window between the listing and the open.
    for i in 0..300 {
        std::fs::write(folder.path().join(format!("z{i:03}")), i.to_string()).unwrap();
    }

    let peer = start_peer(server.addr).await;
    let (share, _) = ShareDir::start(&peer, quick_share(folder.path()))
        .await
        .unwrap();
    let link_to = private.path().join("id_ed25519");
    // A fresh regular file for a moment (a rescan lists it), then the link, left in place long
    // enough for the peer to open, hash and check what it opened.
    let flipper = Flipper::start(
        folder.path().join("doc.txt"),
        move |tmp, n| {
            if n % 2 == 0 {
                std::fs::write(tmp, format!("document version {n}")).unwrap();
            } else {
                std::os::unix::fs::symlink(&link_to, tmp).unwrap();
            }
        },
        |n| Duration::from_millis(if n % 2 == 0 { 1 } else { 3 }),
    );

    // The attack ran for a while; the secret was never among the files the peer serves.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert!(
            peer.every_file().iter().all(|f| f.file_id != stolen),
            "the peer shares the file behind the link"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        flipper.flips() > 100 && share.stats.hashed.load(Ordering::Relaxed) >= 2,
        "the race was not exercised: {} hashes, {} flips",
        share.stats.hashed.load(Ordering::Relaxed),
        flipper.flips()
    );
    drop(flipper);
    assert!(peer.every_file().iter().all(|f| f.file_id != stolen));
    let (found, _) = peer.search("doc").await.unwrap();
    assert!(found.iter().all(|f| f.file_id != stolen), "on the index");
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_swapped_in_neither_hangs_sharing_nor_shutdown() {
    let server = start_server().await;
    let folder = tempfile::tempdir().unwrap();
    random_file(folder.path(), "doc.txt", 3000, 92);
    let peer = start_peer(server.addr).await;
    let (share, _) = ShareDir::start(&peer, quick_share(folder.path()))
        .await
        .unwrap();
    let flipper = Flipper::start(
        folder.path().join("doc.txt"),
        |tmp, n| {
            if n % 2 == 0 {
                std::fs::write(tmp, format!("document version {n}")).unwrap();
            } else {
                make_fifo(tmp);
            }
        },
        |n| Duration::from_millis(if n % 2 == 0 { 1 } else { 5 }),
    );
    let hashed_some = eventually(Duration::from_secs(30), || async {
        share.stats.hashed.load(Ordering::Relaxed) >= 10
    })
    .await;
    assert!(hashed_some, "rescans stopped: {} flips", flipper.flips());

    // New files are still picked up while the FIFO keeps coming back.
    random_file(folder.path(), "later.bin", 2000, 93);
    let picked_up = eventually(Duration::from_secs(10), || async {
        peer.every_file().iter().any(|f| f.name == "later.bin")
    })
    .await;
    assert!(picked_up, "a file added later was not shared");

    // And shutdown does not wait on the folder.
    tokio::time::timeout(Duration::from_secs(10), peer.shutdown())
        .await
        .expect("shutdown hung");
    drop(flipper);
}

#[test]
fn a_fifo_or_device_given_by_name_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    make_fifo(&fifo);
    for target in [fifo.as_path(), Path::new("/dev/zero")] {
        let started = Instant::now();
        let output = bin()
            .args(["manifest", "create"])
            .arg(target)
            .arg("-o")
            .arg(dir.path().join("out.p2pm"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("is not a regular file"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        // Opening the FIFO used to wait for a writer forever.
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn a_folder_registered_whole_leaves_links_and_fifos_out() {
    let (_server, addr) = crate::process::start_server();
    let folder = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    std::fs::write(private.path().join("secret"), b"not for sharing").unwrap();
    random_file(folder.path(), "a.bin", 1000, 94);
    std::os::unix::fs::symlink(private.path().join("secret"), folder.path().join("b.bin")).unwrap();
    std::os::unix::fs::symlink(private.path(), folder.path().join("c")).unwrap();
    make_fifo(&folder.path().join("d.bin"));
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--server", &addr, "-r"])
        .arg(folder.path());
    let (_peer, line, _out) = crate::process::spawn_until(cmd, "registered ");
    assert!(line.contains("a.bin"), "{line}");
    let output = bin()
        .args(["search", "bin", "--server", &addr])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("a.bin"), "{stdout}");
    assert!(
        !stdout.contains("b.bin") && !stdout.contains("d.bin"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_swapped_for_a_link_as_it_lands_is_not_what_gets_served() {
    use p2p_protocol::{ErrorCode, PeerResponse};

    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    // A secret the same size as the download: a size check alone can't tell them apart.
    let (path, data) = random_file(src.path(), "f.bin", 4096, 95);
    let (secret_path, secret) = random_file(private.path(), "id_ed25519", 4096, 96);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();
    let leecher = start_peer(server.addr).await;

    // Someone who can write into the output folder swaps the download for a link to the
    // secret the moment it gets its name. (Whether the swap lands before or after the peer
    // starts serving depends on scheduling; `store.rs` checks the mechanism deterministically.
    // Either way the secret must never be what is served.)
    let landed = out.path().join("f.bin");
    let swapper = {
        let landed = landed.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if std::fs::symlink_metadata(&landed).is_ok_and(|m| m.is_file()) {
                    let tmp = landed.with_file_name(".swap");
                    std::os::unix::fs::symlink(&secret_path, &tmp).unwrap();
                    std::fs::rename(&tmp, &landed).unwrap();
                    return true;
                }
                std::hint::spin_loop();
            }
            false
        })
    };
    let report = leecher
        .download(&id.to_string(), out.path(), None, Default::default())
        .await
        .unwrap();
    assert!(swapper.join().unwrap(), "the download never landed");
    assert_eq!(report.bytes, data.len() as u64);

    let mut conn = crate::support::peer_connection(leecher.local_addr()).await;
    match crate::support::get_chunk(&mut conn, id, 0).await {
        Ok(served) => {
            assert!(served != secret.as_slice(), "the secret was served");
            assert_eq!(served, data.as_slice());
        }
        // Its name now leads elsewhere: the peer stops serving it.
        Err(PeerResponse::Error { code, .. }) => assert_eq!(code, ErrorCode::FileUnavailable),
        Err(other) => panic!("unexpected {other:?}"),
    }
    leecher.shutdown().await;
    seeder.shutdown().await;
}
