//! Folder jobs on the engine, against real peers serving the files: hundreds of small files
//! and a few multi-chunk ones in one job, hosts that die or lie, and re-runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_protocol::{CHUNK_SIZE, FileManifest, FolderHead, FolderId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::test_support::{bytes, lone_peer, oversized_chunk_host, tls, write};
use super::{
    DownloadEvent, DownloadOptions, EventSink, Fetched, FolderFile, FolderRecord, HostSpec,
    JobReport, JobSource, run,
};
use crate::{PeerConfig, PeerError, PeerHandle};

/// Generous for a loaded machine.
const T: Duration = Duration::from_secs(120);

/// A folder's files: path under its root -> bytes.
type Tree = BTreeMap<String, Vec<u8>>;

/// `small` files of 1-40 KB in 10 folders (one of them nested) and `big` files of 2.5 chunks.
fn tree(small: usize, big: usize) -> Tree {
    let mut tree = Tree::new();
    for i in 0..small {
        let len = 1 + (i * 7919) % 40_000;
        let path = match i % 10 {
            0 => format!("top{i}.txt"),
            9 => format!("d9/deep/f{i}"),
            d => format!("d{d}/f{i}"),
        };
        tree.insert(path, bytes(len, i as u64));
    }
    for i in 0..big {
        let len = 2 * CHUNK_SIZE as usize + CHUNK_SIZE as usize / 2;
        tree.insert(format!("big/b{i}.bin"), bytes(len, 1000 + i as u64));
    }
    // An empty file, and small files too big to be verified as they arrive (they are
    // verified in their batch), up to the largest small file.
    tree.insert("empty".into(), Vec::new());
    for (i, len) in [100_000, 700_000, 1024 * 1024].into_iter().enumerate() {
        tree.insert(format!("mid/m{i}"), bytes(len, 500 + i as u64));
    }
    tree
}

/// Writes `tree` under `dir` and shares every file on `peer`; returns the folder's record.
async fn share(peer: &PeerHandle, dir: &Path, tree: &Tree) -> Vec<FolderFile> {
    let mut files = Vec::new();
    for (path, data) in tree {
        let written = write(dir, path, data);
        peer.register(&written).await.unwrap();
        let manifest = p2p_storage::build_manifest(&written).unwrap().manifest;
        files.push(FolderFile {
            path: path.split('/').map(str::to_owned).collect(),
            manifest,
        });
    }
    files
}

fn head(tree: &Tree) -> FolderHead {
    FolderHead {
        name: "album".into(),
        files: tree.len() as u64,
        size: tree.values().map(|d| d.len() as u64).sum(),
        pages: Vec::new(),
    }
}

fn spec(peer: &PeerHandle) -> HostSpec {
    HostSpec {
        addr: peer.local_addr(),
        node_id: None,
    }
}

fn options(workers: usize, max_host_failures: u32) -> DownloadOptions {
    let config = PeerConfig {
        workers,
        max_host_failures,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(2),
        ..PeerConfig::default()
    };
    DownloadOptions::new(&config, tls())
}

/// Runs a folder job over `files` from `hosts` into `out`, handing each event to `watch`.
async fn fetch(
    tree: &Tree,
    files: Vec<FolderFile>,
    hosts: Vec<HostSpec>,
    out: &Path,
    watch: impl FnMut(&DownloadEvent),
) -> (Result<JobReport, PeerError>, Vec<DownloadEvent>) {
    fetch_with(tree, files, hosts, out, options(8, 3), watch).await
}

async fn fetch_with(
    tree: &Tree,
    files: Vec<FolderFile>,
    hosts: Vec<HostSpec>,
    out: &Path,
    options: DownloadOptions,
    mut watch: impl FnMut(&DownloadEvent),
) -> (Result<JobReport, PeerError>, Vec<DownloadEvent>) {
    let head = head(tree);
    let source = JobSource::Folder {
        folder_id: FolderId([7; 32]),
        record: FolderRecord::from_files(&head, files),
        head,
        hosts,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = run(
        source,
        out,
        options,
        EventSink::new(Some(tx)),
        None,
        CancellationToken::new(),
    );
    let watcher = async {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            watch(&event);
            events.push(event);
        }
        events
    };
    let (result, events) = tokio::time::timeout(T, async { tokio::join!(job, watcher) })
        .await
        .expect("the job ended in time");
    (result, events)
}

/// Every file of `tree` is under `root`, byte for byte, and nothing else is (no part file).
fn assert_tree(root: &Path, tree: &Tree) {
    let mut found = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(rel);
            } else {
                let data = std::fs::read(root.join(&rel)).unwrap();
                found.insert(rel.to_str().unwrap().to_owned(), data);
            }
        }
    }
    assert_eq!(found.len(), tree.len(), "files under {}", root.display());
    for (path, data) in tree {
        assert!(
            found.get(path) == Some(data),
            "{path} differs or is missing"
        );
    }
}

/// 500 small files and two of three chunks from two hosts, one of which goes away after
/// serving a hundred chunks: every file arrives byte for byte, each reported once, the job
/// once, and the report hands the whole folder over for sharing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_many_files_survives_a_host_dying_midway() {
    let tree = tree(500, 2);
    let (dir_a, dir_b, out) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = lone_peer(|_| {}).await;
    let b = lone_peer(|_| {}).await;
    let files = share(&a, dir_a.path(), &tree).await;
    share(&b, dir_b.path(), &tree).await;
    let hosts = vec![spec(&a), spec(&b)];
    let a_addr = a.local_addr();
    let (kill, killed) = tokio::sync::oneshot::channel();
    let mut kill = Some(kill);
    let mut from_a = 0;
    let killer = async {
        if killed.await.is_ok() {
            a.shutdown().await;
        }
    };
    let job = fetch(&tree, files, hosts, out.path(), |event| {
        if let DownloadEvent::ChunkDone { host, .. } = event
            && *host == a_addr
        {
            from_a += 1;
            if from_a == 100
                && let Some(kill) = kill.take()
            {
                let _ = kill.send(());
            }
        }
    });
    let ((result, events), ()) = tokio::join!(job, killer);
    let report = result.unwrap();
    let root = out.path().join("album");
    assert_tree(&root, &tree);
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.fetched, tree.len() as u64);
    assert_eq!(report.files, tree.len() as u64);
    assert_eq!(report.already_there, 0);
    assert_eq!(report.bytes_fetched, report.size);
    assert_eq!(report.path, root);
    let done = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                DownloadEvent::FileDone {
                    already_there: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(done, tree.len(), "one FileDone per file");
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DownloadEvent::Finished { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![root.clone()], "one Finished, for the folder");
    assert!(
        matches!(events[0], DownloadEvent::JobStarted { files, .. } if files == tree.len() as u64)
    );
    assert!(from_a >= 100, "host a served before it went");
    assert!(b.chunks_served() > 0);
    match report.shared {
        Some(Fetched::Folder { root: r, files, .. }) => {
            assert_eq!(r, root);
            let paths: Vec<&String> = files.iter().map(|(p, _)| p).collect();
            let mut expected: Vec<&String> = tree.keys().collect();
            let mut paths = paths;
            paths.sort();
            expected.sort();
            assert_eq!(paths, expected);
        }
        other => panic!("the folder is handed over for sharing, got {other:?}"),
    }
    b.shutdown().await;
}

/// A host whose copies of some small files were altered (same size, same time) sends bytes
/// that fail their hash; those files come from the other host, and nothing wrong lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_with_bad_bytes_are_fetched_from_the_other_host() {
    let tree = tree(60, 0);
    let (dir_a, dir_b, out) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = lone_peer(|_| {}).await;
    let b = lone_peer(|_| {}).await;
    let files = share(&a, dir_a.path(), &tree).await;
    share(&b, dir_b.path(), &tree).await;
    // Flip a byte in every third file on a, and in the files verified in their batch on b
    // (where they are asked first), keeping sizes and modification times.
    for (i, (path, data)) in tree.iter().enumerate() {
        let on = match (path.starts_with("mid/"), i % 3) {
            (true, _) => dir_b.path().join(path),
            (false, 0) if !data.is_empty() => dir_a.path().join(path),
            _ => continue,
        };
        let modified = std::fs::metadata(&on).unwrap().modified().unwrap();
        let mut bad = data.clone();
        bad[0] ^= 0xff;
        std::fs::write(&on, &bad).unwrap();
        let file = std::fs::File::options().write(true).open(&on).unwrap();
        file.set_modified(modified).unwrap();
    }
    // Patient hosts: they keep being asked, so each kind of file meets its bad bytes.
    let hosts = vec![spec(&a), spec(&b)];
    let (result, events) =
        fetch_with(&tree, files, hosts, out.path(), options(8, 1000), |_| {}).await;
    let report = result.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_tree(&out.path().join("album"), &tree);
    let bad_from = |host: std::net::SocketAddr| {
        events.iter().any(|e| {
            matches!(e, DownloadEvent::PeerFailed { host: h, error, .. }
                if *h == host && error.contains("sent bad data"))
        })
    };
    assert!(
        bad_from(a.local_addr()) && bad_from(b.local_addr()),
        "{events:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A second run over a complete folder fetches nothing; a file changed locally is a conflict
/// and left as it is; a file removed locally is fetched again; the others are already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_skips_identical_files_reports_conflicts_and_fills_gaps() {
    let tree = tree(40, 1);
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seeder = lone_peer(|_| {}).await;
    let files = share(&seeder, dir.path(), &tree).await;
    let hosts = vec![spec(&seeder)];
    let (first, _) = fetch(&tree, files.clone(), hosts.clone(), out.path(), |_| {}).await;
    assert!(first.unwrap().complete());
    let root = out.path().join("album");
    std::fs::write(root.join("d1/f1"), b"my own edit").unwrap();
    std::fs::remove_file(root.join("d2/f2")).unwrap();
    let served = seeder.chunks_served();

    let (second, events) = fetch(&tree, files, hosts, out.path(), |_| {}).await;
    let report = second.unwrap();
    assert_eq!(report.fetched, 1, "{report:?}");
    assert_eq!(report.already_there, tree.len() as u64 - 2);
    assert_eq!(report.conflicts_total, 1);
    assert_eq!(report.conflicts[0].path, root.join("d1/f1"));
    assert!(!report.complete());
    assert!(
        report.shared.is_none(),
        "an incomplete folder is not shared as one"
    );
    assert_eq!(std::fs::read(root.join("d1/f1")).unwrap(), b"my own edit");
    assert_eq!(std::fs::read(root.join("d2/f2")).unwrap(), tree["d2/f2"]);
    assert_eq!(
        seeder.chunks_served() - served,
        1,
        "only the missing file was fetched"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DownloadEvent::FileConflict { .. }))
    );
    seeder.shutdown().await;
}

/// With every host gone and none to ask for more, a folder job fails as a whole, and a file
/// none of the hosts has fails alone while the rest arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_no_host_has_fails_alone_and_no_host_at_all_fails_the_job() {
    let tree = tree(20, 0);
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seeder = lone_peer(|_| {}).await;
    let mut files = share(&seeder, dir.path(), &tree).await;
    // A file the seeder never shared.
    let data = bytes(5000, 77);
    files.push(FolderFile {
        path: vec!["zz-unknown".into()],
        manifest: FileManifest {
            name: "zz-unknown".into(),
            size: data.len() as u64,
            chunk_size: CHUNK_SIZE,
            chunks: vec![p2p_protocol::Sha256Hash::of(&data)],
        },
    });
    let mut with_unknown = tree.clone();
    with_unknown.insert("zz-unknown".into(), data);
    let (result, events) = fetch(
        &with_unknown,
        files.clone(),
        vec![spec(&seeder)],
        out.path(),
        |_| {},
    )
    .await;
    let report = result.unwrap();
    assert_eq!(report.fetched, tree.len() as u64);
    assert_eq!(report.failed_total, 1, "{report:?}");
    assert_eq!(report.failed[0].path, out.path().join("album/zz-unknown"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DownloadEvent::FileFailed { .. }))
    );

    let out2 = tempfile::tempdir().unwrap();
    seeder.shutdown().await;
    let (result, _) = fetch(
        &with_unknown,
        files,
        vec![spec(&seeder)],
        out2.path(),
        |_| {},
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("download of album failed"), "{err}");
}

/// A host that announces a whole 4 MiB chunk for every small file asked is refused on its
/// first lie, before a buffer is taken or a byte of its data read (it never sends any, so
/// waiting for it would show as a timeout): its own fault, and the folder arrives from an
/// honest host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_announcing_bigger_chunks_than_asked_is_dropped_before_its_data() {
    let tree = tree(40, 0);
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let honest = lone_peer(|_| {}).await;
    let files = share(&honest, dir.path(), &tree).await;
    let liar = oversized_chunk_host().await;
    let hosts = vec![
        HostSpec {
            addr: liar,
            node_id: None,
        },
        spec(&honest),
    ];
    let (result, events) = fetch(&tree, files, hosts, out.path(), |_| {}).await;
    let report = result.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_tree(&out.path().join("album"), &tree);
    let refused = events.iter().any(|e| {
        matches!(e, DownloadEvent::PeerFailed { host, error, dropped: true }
            if *host == liar && error.contains("sent bad data") && error.contains("another size"))
    });
    assert!(refused, "{events:?}");
    honest.shutdown().await;
}

/// Files whose names are legal (253 bytes) but would be too long with a `.part` suffix, a
/// small one and a big one, arrive like any other: a folder's files are never given a
/// temporary name beside their own. And the job leaves nothing in the output folder but the
/// folder (its staging folder is gone once every file is in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_too_long_for_a_part_suffix_arrive_like_any_other() {
    let mut tree = tree(30, 0);
    tree.insert(format!("d1/{}", "n".repeat(253)), bytes(5000, 77));
    tree.insert(
        format!("d2/{}", "m".repeat(253)),
        bytes(CHUNK_SIZE as usize + 10, 78),
    );
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seeder = lone_peer(|_| {}).await;
    let files = share(&seeder, dir.path(), &tree).await;
    let (result, _) = fetch(&tree, files, vec![spec(&seeder)], out.path(), |_| {}).await;
    let report = result.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_tree(&out.path().join("album"), &tree);
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["album"]);
    seeder.shutdown().await;
}

/// A folder named like a staging folder is refused before anything is fetched or written:
/// its files would land among a download's temporary files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_named_like_a_staging_folder_is_refused() {
    let tree = tree(3, 0);
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seeder = lone_peer(|_| {}).await;
    let files = share(&seeder, dir.path(), &tree).await;
    let mut head = head(&tree);
    head.name = ".p2p-staging-0707070707070707".into();
    let source = JobSource::Folder {
        folder_id: FolderId([7; 32]),
        record: FolderRecord::from_files(&head, files),
        head,
        hosts: vec![spec(&seeder)],
    };
    let result = run(
        source,
        out.path(),
        options(8, 3),
        EventSink::new(None),
        None,
        CancellationToken::new(),
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert_eq!(
        err,
        "the folder name .p2p-staging-0707070707070707 is reserved: names starting with \
         .p2p-staging- hold a download's temporary files"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    assert_eq!(seeder.chunks_served(), 0);
    seeder.shutdown().await;
}
