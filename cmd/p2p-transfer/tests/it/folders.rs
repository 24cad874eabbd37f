//! Folders as one download job (issue 14), the jobs' side: re-running a half-finished folder
//! completes it, a conflicting file is reported and never touched, a single file already there
//! is "already downloaded", a host dying mid-job is survived, 10,000 small files download with
//! bounded memory, and the shell's `transfers` shows a folder as one row.
//!
//! Seeders are the real binary (`peer -r DIR` prints `registered DIR FOLDER_ID` after its
//! files' lines); leechers are the binary too where exit codes and printed lines are what is
//! checked, and an in-process peer where the job's events are.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Output};
use std::time::Duration;

use p2p_peer::{DownloadEvent, DownloadRequest, JobUpdate};
use p2p_protocol::CHUNK_SIZE;
use rand::{Rng, SeedableRng};

use crate::process::{Running, bin, leecher, seed, spawn_until};
use crate::support::random_file;

/// Generous: a loaded 2-core machine, debug builds.
const DEADLINE: Duration = Duration::from_secs(120);

/// A tree of `count` files under `root` (nested a few levels), sizes in `sizes` from a seeded
/// generator; returns each file's path under `root` and its bytes.
fn make_tree(
    root: &Path,
    count: usize,
    sizes: std::ops::RangeInclusive<usize>,
    seed: u64,
) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut files = BTreeMap::new();
    for i in 0..count {
        let rel = PathBuf::from(format!("d{}/e{}/f{i:05}.bin", i % 7, i % 3));
        let dir = root.join(rel.parent().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let len = rng.random_range(sizes.clone());
        let name = rel.file_name().unwrap().to_str().unwrap().to_owned();
        let (_, data) = random_file(&dir, &name, len, seed * 100_000 + i as u64);
        files.insert(rel, data);
    }
    files
}

/// A seeder process sharing the folder `dir`; returns it and the folder id it printed after
/// its files' lines.
fn seed_folder(server: &str, dir: &Path) -> (Running, String) {
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        server,
        "--register",
    ])
    .arg(dir);
    let (child, _, mut out) = spawn_until(cmd, "peer listening on ");
    let prefix = format!("registered {} ", dir.display());
    let id = folder_line(&mut out, &prefix);
    (child, id)
}

/// The id on the line `{prefix}ID` whose rest is one id (a file's line has `/name ID`).
fn folder_line(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "no {prefix:?}FOLDER_ID line"
        );
        if let Some(rest) = line.trim_end().strip_prefix(prefix)
            && !rest.contains('/')
            && !rest.contains(' ')
        {
            return rest.to_owned();
        }
    }
}

/// Every regular file under `root`, by path under it, with its bytes.
fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(root).unwrap().to_owned();
                found.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The leecher's stdout lines, and its last one (the summary).
fn lines(output: &Output) -> (Vec<String>, String) {
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    let last = lines.last().cloned().unwrap_or_default();
    (lines, last)
}

/// (inode, modification time in ns) of `path`: a file rewritten or replaced changes them.
fn identity(path: &Path) -> (u64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

#[test]
fn rerunning_a_half_finished_folder_completes_it_and_leaves_what_is_there() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let mut files = make_tree(&album, 28, 1000..=40_000, 1);
    // Two files of several chunks: one will be half there in a `.part`.
    for (i, name) in ["big-a.bin", "big-b.bin"].into_iter().enumerate() {
        let (_, data) = random_file(&album, name, 2 * CHUNK_SIZE as usize + 1234, 50 + i as u64);
        files.insert(PathBuf::from(name), data);
    }
    let (_seeder, folder_id) = seed_folder(&addr, &album);

    // What an interrupted run left: 10 files in place, a `.part` holding one verified chunk
    // (and its record), the other 19 missing.
    let root = out.path().join("album");
    let mut there = BTreeMap::new();
    for (rel, data) in files.iter().filter(|(r, _)| r.starts_with("d1")).take(10) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        there.insert(path.clone(), identity(&path));
    }
    assert_eq!(there.len(), 10);
    let big = &files[Path::new("big-a.bin")];
    let manifest = p2p_storage::build_manifest(&album.join("big-a.bin"))
        .unwrap()
        .manifest;
    let part =
        p2p_storage::PartFile::create_in(out.path(), &["album".to_owned()], manifest).unwrap();
    assert!(part.write_verified(0, &big[..CHUNK_SIZE as usize]).unwrap());
    part.save_record().unwrap();
    drop(part);
    assert!(root.join("big-a.bin.part").exists());

    let output = leecher(&addr, &folder_id, out.path()).output().unwrap();
    let (_, summary) = lines(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        summary.starts_with(&format!(
            "folder album {folder_id}: 20 fetched, 10 already there, 0 conflicts, 0 failed ("
        )),
        "{summary}"
    );
    assert_eq!(
        read_tree(&root),
        files,
        "the tree is whole, and nothing else is in it"
    );
    for (path, before) in &there {
        assert_eq!(identity(path), *before, "{} was rewritten", path.display());
    }

    // Once more: everything is there; nothing is fetched or touched.
    let all: BTreeMap<PathBuf, (u64, i64)> = files
        .keys()
        .map(|rel| (root.join(rel), identity(&root.join(rel))))
        .collect();
    let output = leecher(&addr, &folder_id[..12], out.path())
        .output()
        .unwrap();
    let (_, summary) = lines(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        summary.starts_with(&format!("folder album {folder_id}: 0 fetched, 30 already there, 0 conflicts, 0 failed (0 bytes in ")),
        "{summary}"
    );
    for (path, before) in &all {
        assert_eq!(identity(path), *before, "{} was rewritten", path.display());
    }
}

#[test]
fn a_different_file_in_the_way_is_reported_and_never_touched() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let files = make_tree(&album, 30, 1000..=40_000, 2);
    let (_seeder, folder_id) = seed_folder(&addr, &album);

    let root = out.path().join("album");
    let (rel, original) = files.iter().nth(7).unwrap();
    let blocked = root.join(rel);
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    let mine = b"my own notes, not the shared file".to_vec();
    std::fs::write(&blocked, &mine).unwrap();
    let before = identity(&blocked);

    let output = leecher(&addr, &folder_id, out.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let (lines, summary) = lines(&output);
    assert!(
        lines.contains(&format!(
            "conflict {}: a different file is there ({} bytes)",
            blocked.display(),
            mine.len()
        )),
        "{lines:?}"
    );
    assert!(
        summary.starts_with(&format!(
            "folder album {folder_id}: 29 fetched, 0 already there, 1 conflicts, 0 failed ("
        )),
        "{summary}"
    );
    assert_eq!(
        text(&output.stderr).lines().last().unwrap_or_default(),
        "error: 1 of 30 files missing (1 conflict); run the same command again to resume"
    );
    // Left exactly as it was; every other file is there.
    assert_eq!(std::fs::read(&blocked).unwrap(), mine);
    assert_eq!(identity(&blocked), before);
    let mut expected = files.clone();
    expected.insert(rel.clone(), mine.clone());
    assert_eq!(read_tree(&root), expected);
    assert_ne!(&mine, original);
}

#[test]
fn a_single_file_already_there_is_already_downloaded_and_another_one_is_an_error() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "report.pdf", CHUNK_SIZE as usize + 99, 3);
    let (_seeder, id) = seed(&addr, &path);
    let target = out.path().join("report.pdf");

    // The very file: nothing fetched, nothing touched, success.
    std::fs::write(&target, &data).unwrap();
    let before = identity(&target);
    let output = leecher(&addr, &id[..10], out.path()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let (_, last) = lines(&output);
    assert_eq!(
        last,
        format!("already downloaded {} {id}", target.display())
    );
    assert_eq!(identity(&target), before);

    // Another file of the same name: an error naming it and what to do; it stays.
    let mine = vec![7u8; 5000];
    std::fs::write(&target, &mine).unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).lines().last().unwrap_or_default(),
        format!(
            "error: cannot download {id}: {} already exists and is not this file; it was left \
             as it is: move it away, or download into another folder",
            target.display()
        )
    );
    assert_eq!(std::fs::read(&target).unwrap(), mine);
    assert!(!out.path().join("report.pdf.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_dying_mid_job_leaves_the_job_to_the_other() {
    let server = crate::support::start_server().await;
    let addr = server.addr.to_string();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    // Enough bytes that the job is far from done when its first file is.
    let files = make_tree(&album, 200, 64_000..=320_000, 4);
    let ((mut first, folder_id), (_second, other_id)) = tokio::task::spawn_blocking({
        let (addr, album) = (addr.clone(), album.clone());
        move || (seed_folder(&addr, &album), seed_folder(&addr, &album))
    })
    .await
    .unwrap();
    assert_eq!(folder_id, other_id, "one folder, two hosts");

    let leecher = crate::support::start_peer(server.addr).await;
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    leecher
        .start_download_observed(
            folder_id.clone(),
            DownloadRequest::by_id(&folder_id),
            out.path().to_owned(),
            tx,
        )
        .await
        .unwrap();
    let (mut killed, mut dropped) = (false, false);
    let report = tokio::time::timeout(DEADLINE, async {
        loop {
            match updates.recv().await.expect("the job ends with Ended") {
                JobUpdate::Event(DownloadEvent::FileDone { .. }) if !killed => {
                    first.0.kill().unwrap();
                    killed = true;
                }
                JobUpdate::Event(DownloadEvent::PeerFailed { dropped: true, .. }) => {
                    dropped = true;
                }
                JobUpdate::Event(_) => {}
                JobUpdate::Ended(result) => return result,
            }
        }
    })
    .await
    .expect("the job ends")
    .expect("the job runs to its end");
    assert!(killed);
    assert!(report.complete(), "{report:?}");
    assert_eq!((report.files, report.fetched), (200, 200));
    assert!(dropped, "the dead host was dropped");
    assert_eq!(read_tree(&out.path().join("album")), files);
    leecher.shutdown().await;
}

/// Peak resident memory a 10,000-file leecher may reach (measured: see the test).
const MAX_LEECHER_RSS_KB: u64 = 96 * 1024;

#[test]
fn ten_thousand_small_files_download_with_bounded_memory() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let many = src.path().join("many");
    let files = make_tree(&many, 10_000, 0..=2048, 5);
    let (_seeder, folder_id) = seed_folder(&addr, &many);

    let output = leecher(&addr, &folder_id, out.path())
        .env("P2P_REPORT_RSS", "1")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (_, summary) = lines(&output);
    assert!(
        summary.starts_with(&format!(
            "folder many {folder_id}: 10000 fetched, 0 already there, 0 conflicts, 0 failed ("
        )),
        "{summary}"
    );
    assert_eq!(read_tree(&out.path().join("many")), files);
    let peak: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak rss: "))
        .and_then(|l| l.strip_suffix(" kB"))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no peak rss line: {stderr}"));
    eprintln!("10,000-file leecher: peak rss {peak} kB");
    assert!(
        peak < MAX_LEECHER_RSS_KB,
        "peak rss {peak} kB, more than {MAX_LEECHER_RSS_KB} kB"
    );
}

#[test]
fn the_shells_transfers_show_a_folder_as_one_row() {
    use expectrl::Expect;

    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let files = make_tree(&album, 30, 100..=20_000, 6);
    let (_seeder, folder_id) = seed_folder(&addr, &album);

    let mut sh = crate::shell::spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "--out",
            out.path().to_str().unwrap(),
            "-i",
        ],
        &out.path().join("history"),
    );
    crate::shell::prompt(&mut sh);
    sh.send_line(format!("download {}", &folder_id[..12]))
        .unwrap();
    sh.expect(format!(
        "downloaded {} {folder_id} (30 files)",
        out.path().join("album").display()
    ))
    .unwrap();
    crate::shell::prompt(&mut sh);
    sh.send_line("transfers").unwrap();
    // Everything up to the next prompt's cursor query: the header, then the rows.
    let table = sh
        .expect(expectrl::Regex("(?s)STATE +NAME\r\n(.*?)\x1b\\[6n"))
        .unwrap();
    let rows = text(table.get(1).unwrap());
    let rows: Vec<&str> = rows.lines().filter(|l| l.contains('%')).collect();
    assert_eq!(rows.len(), 1, "one row for the folder: {rows:?}");
    assert!(
        rows[0].contains(" 100% ")
            && rows[0].contains(" 30/30 ")
            && rows[0].contains(" done ")
            && rows[0].trim_end().ends_with("album"),
        "{rows:?}"
    );
    sh.send("\x1b[20;1R").unwrap();
    sh.send_line("exit").unwrap();
    crate::shell::exits_cleanly(&mut sh);
    assert_eq!(read_tree(&out.path().join("album")), files);
}
