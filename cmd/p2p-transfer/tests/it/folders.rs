//! Folders as things on the network: shared under one folder id, listed beside files,
//! fetched by id into `<out>/<folder name>/...` whichever way the sharer spelled the path, and
//! a forged folder record refused with nothing written outside the output folder. And folders
//! as one download job: re-runs complete them, conflicts are reported and left alone, a host
//! dying mid-job is survived, memory stays bounded over 10,000 files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Output};
use std::time::Duration;

use p2p_peer::{DownloadEvent, DownloadRequest, JobUpdate, Peer, PeerConfig, PeerHandle};
use p2p_protocol::folder::{self, FolderItem, FolderRef};
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileManifest, FolderHead, FolderId, PeerConversation, PeerRequest,
    PeerResponse, PeerServerConnection, Sha256Hash, server_hello,
};
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;

use crate::process::{Running, bin, leecher, seed, spawn_until};
use crate::support::{SilentProxy, loopback0, random_file};

/// A peer with no index server: folders fetched from named hosts only.
async fn lone_peer() -> PeerHandle {
    Peer::start(
        PeerConfig {
            listen_addr: loopback0(),
            indexes: Vec::new(),
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(5),
            ..PeerConfig::default()
        },
        crate::support::tls(),
    )
    .await
    .unwrap()
}

/// `root/album` with `n` small files in nested folders (and `extra` on top); returns the
/// folder and each file's path under it with its bytes.
fn album(root: &Path, n: usize) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let album = root.join("album");
    let mut files = Vec::new();
    for i in 0..n {
        let rel = format!("disc {}/track {i:02}.flac", i % 3);
        let dir = album.join(Path::new(&rel).parent().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let name = Path::new(&rel).file_name().unwrap().to_str().unwrap();
        let (_, data) = random_file(&dir, name, 1000 + i * 37, 700 + i as u64);
        files.push((rel, data));
    }
    (album, files)
}

/// Every regular file under `dir`, relative, sorted.
fn tree_of(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    found.sort();
    found
}

/// Checks that `out/album` holds exactly `files`, byte for byte, and nothing else is in `out`.
fn assert_album(out: &Path, files: &[(String, Vec<u8>)]) {
    let mut expected: Vec<PathBuf> = files
        .iter()
        .map(|(rel, _)| Path::new("album").join(rel))
        .collect();
    expected.sort();
    assert_eq!(tree_of(out), expected, "never album/album, nothing else");
    for (rel, data) in files {
        assert_eq!(
            &std::fs::read(out.join("album").join(rel)).unwrap(),
            data,
            "{rel}"
        );
    }
}

/// `peer --from HOST... --download ID --out OUT` with no index.
fn direct_leecher(hosts: &[SocketAddr], id: &str, out: &Path) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0"]);
    for host in hosts {
        cmd.arg("--from").arg(host.to_string());
    }
    cmd.args(["--download", id, "--out"]).arg(out);
    cmd.output().unwrap()
}

/// How a [`FakeFolderHost`] lies.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Forgery {
    /// `GetManifest` answers with this manifest, whatever file id is asked for.
    Manifest(Box<FileManifest>),
    /// Serves the honest head and pages (a host that lies elsewhere, or not at all).
    None,
    /// `GetFolder` answers a head whose id is not the folder's.
    Head,
    /// Page 0 has one size changed: it does not hash to the head's page hash.
    Page,
    /// Page 0 has one path replaced by one that leaves the folder.
    Traversal,
}

/// A chunk server that knows one folder's record, serves it with `forgery`, and has no
/// file: every other request is `unknown_file`.
struct FakeFolderHost {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFolderHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeFolderHost {
    async fn start(head: FolderHead, pages: Vec<Vec<FolderItem>>, forgery: Forgery) -> Self {
        Self::start_busy(head, pages, forgery, 0).await
    }

    /// As [`FakeFolderHost::start`], answering `busy` to the first `busy` `GetFolderPages`.
    async fn start_busy(
        head: FolderHead,
        pages: Vec<Vec<FolderItem>>,
        forgery: Forgery,
        busy: usize,
    ) -> Self {
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(busy));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = crate::support::tls();
        let folder_id = head.id();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (tls, head, pages) = (tls.clone(), head.clone(), pages.clone());
                let (forgery, busy) = (forgery.clone(), busy.clone());
                tokio::spawn(async move {
                    let Some(stream) = crate::support::accept_tls(&tls, stream).await else {
                        return;
                    };
                    let mut conn = PeerServerConnection::peer_server(stream);
                    if server_hello::<PeerConversation, _>(&mut conn)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while let Ok(Some(request)) = conn.recv().await {
                        let is_pages = matches!(request, PeerRequest::GetFolderPages { .. });
                        let reply = if is_pages && take_one(&busy) {
                            PeerResponse::Error {
                                code: ErrorCode::Busy,
                                message: "busy, try again later".into(),
                            }
                        } else {
                            answer(request, folder_id, &head, &pages, &forgery)
                        };
                        if conn.send(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// Takes one from `count` unless it is 0; whether it did.
fn take_one(count: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn answer(
    request: PeerRequest,
    folder_id: FolderId,
    head: &FolderHead,
    pages: &[Vec<FolderItem>],
    forgery: &Forgery,
) -> PeerResponse {
    let unknown = PeerResponse::Error {
        code: ErrorCode::UnknownFile,
        message: "no such file here".into(),
    };
    match request {
        PeerRequest::GetFolder { folder_id: asked } if asked == folder_id => {
            let mut head = head.clone();
            if *forgery == Forgery::Head {
                head.name = "not-the-album".into();
            }
            PeerResponse::Folder {
                folder_id: asked,
                head,
            }
        }
        PeerRequest::GetFolderPages {
            folder_id: asked,
            first,
            ..
        } if asked == folder_id && (first as usize) < pages.len() => {
            let mut page = pages[first as usize].clone();
            match (forgery, first) {
                (Forgery::Page, 0) => page[1].size += 1,
                (Forgery::Traversal, 0) => page[1].path = "../escaped.flac".into(),
                _ => {}
            }
            PeerResponse::FolderPages {
                folder_id: asked,
                first,
                pages: vec![page],
            }
        }
        // Asked for the folder's id as a file: no such file (so the asker tries a folder).
        PeerRequest::GetManifest { file_id } if file_id.0 != folder_id.0 => match forgery {
            Forgery::Manifest(manifest) => PeerResponse::Manifest {
                file_id,
                manifest: (**manifest).clone(),
            },
            _ => unknown,
        },
        _ => unknown,
    }
}

/// A folder record whose every page and id agree, holding paths the rules forbid (made by
/// hand: `folder::build` refuses them).
fn forged_record(paths: &[&str]) -> (FolderHead, Vec<Vec<FolderItem>>) {
    let items: Vec<FolderItem> = paths
        .iter()
        .map(|path| {
            let data = path.as_bytes();
            FolderItem {
                path: (*path).to_owned(),
                size: data.len() as u64,
                file_id: None,
                chunks: Some(vec![Sha256Hash::of(data)]),
            }
        })
        .collect();
    let refs: Vec<FolderRef> = items
        .iter()
        .map(|item| FolderRef {
            path: item.path.clone(),
            file_id: FileManifest {
                name: item.path.rsplit('/').next().unwrap().to_owned(),
                size: item.size,
                chunk_size: CHUNK_SIZE,
                chunks: item.chunks.clone().unwrap(),
            }
            .id(),
            size: item.size,
        })
        .collect();
    let head = FolderHead {
        name: "album".into(),
        files: items.len() as u64,
        size: items.iter().map(|i| i.size).sum(),
        pages: vec![folder::page_hash(&refs)],
    };
    (head, vec![items])
}

/// The record a peer sharing `album` serves, as a downloader would read it.
async fn record_of(album: &Path) -> (FolderHead, Vec<Vec<FolderItem>>) {
    let album = album.to_owned();
    tokio::task::spawn_blocking(move || {
        let tree = p2p_storage::Tree::open(&album).unwrap();
        let files = tree
            .hash_files(tree.walk().files)
            .into_iter()
            .map(|r| {
                let (file, manifest) = r.unwrap();
                (file.rel.to_str().unwrap().to_owned(), manifest)
            })
            .collect();
        folder::build("album", files).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_fetched_by_id_from_named_hosts_under_its_own_name() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (album, mut files) = album(src.path(), 30);
    // One file too big to travel inline in a page: its manifest comes by GetManifest.
    let big_len = (p2p_protocol::folder::INLINE_CHUNKS * CHUNK_SIZE as usize) + 1;
    let (_, big) = random_file(&album, "booklet.pdf", big_len, 7);
    files.push(("booklet.pdf".into(), big));
    let seeder = lone_peer().await;
    let shared = seeder.share_path(&album).await.unwrap();
    let folder_id = shared[0].file_id.to_string();
    assert_eq!(shared[0].files, Some(31));

    let output = direct_leecher(&[seeder.local_addr()], &folder_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_album(out.path(), &files);

    // A host whose pages are true but whose manifest of the big file is not: refused, and
    // the honest host after it completes the folder.
    let (head, pages) = record_of(&album).await;
    let mut forged = p2p_storage::build_manifest(&album.join("booklet.pdf"))
        .unwrap()
        .manifest;
    forged.chunks[3] = Sha256Hash::of(b"not these bytes");
    let liar = FakeFolderHost::start(head, pages, Forgery::Manifest(Box::new(forged))).await;
    let alone = tempfile::tempdir().unwrap();
    let output = direct_leecher(&[liar.addr], &folder_id, alone.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sent a manifest for booklet.pdf that does not match the folder's record"),
        "{stderr}"
    );
    assert_eq!(tree_of(alone.path()), Vec::<PathBuf>::new());
    let out = tempfile::tempdir().unwrap();
    let output = direct_leecher(&[liar.addr, seeder.local_addr()], &folder_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_album(out.path(), &files);
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_host_that_is_busy_at_first_is_asked_again() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 12);
    // The files are served by a peer that shares them one by one, not as the folder: the
    // folder's record comes from the fake host alone, which is busy at first.
    let seeder = lone_peer().await;
    for (rel, _) in &files {
        seeder.share_path(&album.join(rel)).await.unwrap();
    }
    let (head, pages) = record_of(&album).await;
    let folder_id = head.id().to_string();
    let host = FakeFolderHost::start_busy(head, pages, Forgery::None, 2).await;

    let output = direct_leecher(&[host.addr, seeder.local_addr()], &folder_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_album(out.path(), &files);
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_head_or_page_is_refused_and_an_honest_host_completes_the_folder() {
    let src = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 12);
    let honest = lone_peer().await;
    honest.share_path(&album).await.unwrap();
    let (head, pages) = record_of(&album).await;
    let folder_id = head.id().to_string();

    for forgery in [Forgery::Head, Forgery::Page, Forgery::Traversal] {
        let out = tempfile::tempdir().unwrap();
        let inner = out.path().join("out");
        std::fs::create_dir(&inner).unwrap();
        let liar = FakeFolderHost::start(head.clone(), pages.clone(), forgery.clone()).await;

        // The liar alone: refused, with the reason, and nothing written.
        let output = direct_leecher(&[liar.addr], &folder_id, &inner);
        assert_eq!(output.status.code(), Some(1), "{forgery:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = match forgery {
            Forgery::Head => "does not match folder id",
            Forgery::Page => "folder page 0 does not match the folder's record",
            Forgery::Traversal => "path ../escaped.flac refused",
            Forgery::None | Forgery::Manifest(_) => unreachable!(),
        };
        assert!(
            stderr.contains(why) && stderr.contains(&liar.addr.to_string()),
            "{forgery:?}: {stderr}"
        );
        assert_eq!(tree_of(out.path()), Vec::<PathBuf>::new(), "{forgery:?}");

        // The liar first, then an honest host: the folder completes from the honest one.
        let output = direct_leecher(&[liar.addr, honest.local_addr()], &folder_id, &inner);
        assert!(
            output.status.success(),
            "{forgery:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_album(&inner, &files);
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            1,
            "nothing beside the output folder"
        );
    }
    honest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_path_leaving_the_folder_or_twice_the_same_path_is_refused() {
    for (paths, why) in [
        (
            &["a.txt", "../../escaped.txt"][..],
            "relative directory reference",
        ),
        (
            &["a.txt", "b/../../escaped.txt"][..],
            "relative directory reference",
        ),
        (&["a.txt", "a.txt"][..], "path a.txt appears twice"),
        (
            &["a.txt", "a.txt/b.txt"][..],
            "is a file and also the folder of",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let inner = out.path().join("deep/out");
        std::fs::create_dir_all(&inner).unwrap();
        // Its id is the one asked for: every page hashes to it. Only the rules refuse it.
        let (head, pages) = forged_record(paths);
        let liar = FakeFolderHost::start(head.clone(), pages, Forgery::None).await;
        let output = direct_leecher(&[liar.addr], &head.id().to_string(), &inner);
        assert_eq!(output.status.code(), Some(1), "{paths:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"));
        assert!(
            error.contains("cannot get the file list of folder album") && error.contains(why),
            "{paths:?}: {error}"
        );
        assert_eq!(tree_of(out.path()), Vec::<PathBuf>::new(), "{paths:?}");
    }
}

/// Starts `peer --register SPELLING --write-manifest` in `cwd` against the index at `server`;
/// returns it with the lines it printed up to `wrote `.
fn seed_folder(server: &str, cwd: &Path, spelling: &str) -> (crate::process::Running, Vec<String>) {
    let mut cmd = bin();
    cmd.current_dir(cwd).args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        server,
        "--write-manifest",
        "--register",
        spelling,
    ]);
    let (child, _, mut stdout) = crate::process::spawn_until(cmd, "peer listening on ");
    let mut lines = Vec::new();
    loop {
        let line = crate::process::read_line_starting(&mut stdout, "");
        let done = line.starts_with("wrote ");
        lines.push(line);
        if done {
            return (child, lines);
        }
    }
}

#[test]
fn every_spelling_of_a_folder_registers_and_downloads_as_the_folder_itself() {
    let src = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 10);
    std::os::unix::fs::symlink(src.path(), src.path().join("parent-link")).unwrap();
    let abs = album.to_str().unwrap().to_owned();
    // (where the sharer stands, what it types, the manifest file it must get)
    let spellings = [
        (
            src.path().to_owned(),
            "album".to_owned(),
            src.path().join("album.p2pm"),
        ),
        (
            src.path().to_owned(),
            "album/".to_owned(),
            src.path().join("album.p2pm"),
        ),
        (
            src.path().to_owned(),
            "./album".to_owned(),
            src.path().join("album.p2pm"),
        ),
        (
            src.path().to_owned(),
            abs.clone(),
            src.path().join("album.p2pm"),
        ),
        (album.clone(), ".".to_owned(), album.join("album.p2pm")),
        (
            src.path().to_owned(),
            "parent-link/album".to_owned(),
            src.path().join("album.p2pm"),
        ),
    ];
    let mut ids = Vec::new();
    for (cwd, spelling, p2pm) in spellings {
        let (_server, addr) = crate::process::start_server();
        let (seeder, lines) = seed_folder(&addr, &cwd, &spelling);
        // A line per file under the path as typed, then the folder's own line.
        let registered: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("registered "))
            .collect();
        assert_eq!(registered.len(), files.len() + 1, "{spelling}: {lines:?}");
        let folder_line = registered.last().unwrap();
        let folder_id = folder_line.rsplit(' ').next().unwrap().to_owned();
        assert_eq!(
            **folder_line,
            format!("registered {spelling} {folder_id}"),
            "{spelling}"
        );
        assert!(
            registered[0].starts_with(&format!(
                "registered {}",
                Path::new(&spelling).join("disc 0").display()
            )),
            "{spelling}: {}",
            registered[0]
        );
        let wrote = lines.last().unwrap();
        assert!(p2pm.exists(), "{spelling}: {wrote}");
        ids.push(folder_id.clone());

        // By id and by its manifest file: <out>/album/..., never album/album.
        for what in [folder_id.clone(), p2pm.to_str().unwrap().to_owned()] {
            let out = tempfile::tempdir().unwrap();
            let output = crate::process::leecher(&addr, &what, out.path())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{spelling} by {what}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_album(out.path(), &files);
        }
        drop(seeder);
        std::fs::remove_file(&p2pm).unwrap();
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one folder, one id, whatever the spelling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_lists_show_a_folder_with_its_files_and_a_file_in_it_by_its_path() {
    let server = crate::support::start_server().await;
    let src = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 30);
    let (loose, _) = random_file(src.path(), "track 99.flac", 4000, 99);
    let seeder = crate::support::start_peer(server.addr).await;
    let shared = seeder.share_paths(&[album, loose]).await.unwrap();
    let folder_id = match &shared[0] {
        p2p_peer::Shared::Folder { folder_id, .. } => *folder_id,
        other => panic!("{other:?}"),
    };
    let size: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();

    let search = |words: &str| {
        let output = bin()
            .args(["search", words, "--server", &server.addr.to_string()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    // The folder by its name: its file count and total size.
    let table = search("album");
    let row = table
        .lines()
        .find(|l| l.starts_with(&folder_id.to_string()))
        .unwrap_or_else(|| panic!("no folder line:\n{table}"));
    let cells: Vec<&str> = row.split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        cells[1..].iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            indicatif::HumanBytes(size).to_string().as_str(),
            "1",
            "30",
            "album/"
        ],
        "{table}"
    );
    assert!(table.starts_with("ID"), "{table}");
    // A file inside it by its name, shown by its path; the loose one beside it.
    let table = search("track 07");
    let (_, data) = &files[7];
    let inner = table
        .lines()
        .find(|l| l.ends_with("  album/disc 1/track 07.flac"))
        .unwrap_or_else(|| panic!("no line for the file in the folder:\n{table}"));
    assert!(
        inner.contains(&indicatif::HumanBytes(data.len() as u64).to_string()),
        "{inner}"
    );
    let table = search("track 99");
    assert!(
        table.lines().any(|l| l.ends_with("  track 99.flac")),
        "{table}"
    );
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folder_gets_a_new_id_when_a_file_is_added_and_the_old_one_leaves_the_index() {
    use p2p_peer::share_dir::{ShareDir, ShareDirConfig};
    let server = crate::support::start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (album, _) = album(dir.path(), 5);
    let peer = crate::support::start_peer(server.addr).await;
    let config = ShareDirConfig {
        dir: album.clone(),
        cache_file: None,
        rescan_every: Duration::from_secs(60),
        changes: None,
    };
    let (share, shared) = ShareDir::start(&peer, config).await.unwrap();
    let p2p_peer::Shared::Folder { folder_id: old, .. } = shared else {
        panic!("{shared:?}")
    };
    let listed = |peer: PeerHandle| async move {
        let (files, _) = peer.network_files().await.unwrap();
        files
            .into_iter()
            .filter(|f| f.files.is_some())
            .map(|f| FolderId(f.file_id.0))
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(peer.clone()).await, [old]);

    random_file(&album.join("disc 1"), "bonus.flac", 3000, 5);
    let moved = crate::support::eventually(Duration::from_secs(20), || async {
        let now = listed(peer.clone()).await;
        now.len() == 1 && now[0] != old && Some(now[0]) == share.folder_id()
    })
    .await;
    assert!(
        moved,
        "the index lists {:?}; the folder was {old:?}, is {:?}: {:?}",
        listed(peer.clone()).await,
        share.folder_id(),
        peer.files()
    );
    let new = share.folder_id().unwrap();
    assert_eq!(
        peer.files()
            .into_iter()
            .map(|f| (f.file_id.0, f.files))
            .collect::<Vec<_>>(),
        [(new.0, Some(6))]
    );
    let found = peer.search("bonus").await.unwrap().0;
    assert_eq!(found.len(), 1, "the new file is found by name: {found:?}");
    // The peer itself: the new id is served, the old one changed.
    let mut conn = crate::support::peer_connection(peer.local_addr()).await;
    let timeout = Duration::from_secs(10);
    let reply = conn
        .request(&PeerRequest::GetFolder { folder_id: new }, timeout)
        .await
        .unwrap();
    assert!(
        matches!(&reply, PeerResponse::Folder { head, .. } if head.files == 6),
        "{reply:?}"
    );
    let reply = conn
        .request(&PeerRequest::GetFolder { folder_id: old }, timeout)
        .await
        .unwrap();
    assert!(
        matches!(
            &reply,
            PeerResponse::Error {
                code: ErrorCode::FileUnavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    peer.shutdown().await;
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_seeder_serving_a_2000_file_folder_keeps_few_files_open() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    for i in 0..2000 {
        let dir = album.join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        &addr,
        "--register",
    ])
    .arg(&album);
    let (seeder, _, stdout) = crate::process::spawn_until(cmd, "peer listening on ");
    // Read on a thread, so a seeder that never prints the folder's line fails the test at a
    // deadline instead of holding it.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let prefix = format!("registered {} ", album.display());
    let folder_line = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the folder's own line, within a minute");
        if line.starts_with(&prefix) {
            break line;
        }
    };
    let folder_id = folder_line.rsplit(' ').next().unwrap().to_owned();
    let pid = seeder.0.id();
    let registered = open_fds(pid);
    assert!(
        registered < 100,
        "{registered} descriptors open after registering"
    );

    // Its output goes to a file: a pipe nobody reads while it runs would fill and stall it.
    let log = tempfile::tempfile().unwrap();
    let mut leecher = crate::process::leecher(&addr, &folder_id, out.path())
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut most = registered;
    let status = loop {
        most = most.max(open_fds(pid));
        if let Some(status) = leecher.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{}", {
        use std::io::{Read, Seek};
        let mut log = log;
        let mut text = String::new();
        log.rewind().unwrap();
        log.read_to_string(&mut text).unwrap();
        text
    });
    assert_eq!(tree_of(&out.path().join("album")).len(), 2000);
    most = most.max(open_fds(pid));
    assert!(
        most < 300,
        "the seeder had {most} descriptors open while serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_index_gets_the_folders_and_files_back_from_their_peer() {
    use crate::support::{eventually, fast_server_config, start_server, start_server_on};
    use p2p_peer::index::{IndexClient, Located};
    let server = start_server().await;
    let addr = server.addr;
    let src = tempfile::tempdir().unwrap();
    let (album, _) = album(src.path(), 12);
    let loose: Vec<PathBuf> = (0..3)
        .map(|i| {
            random_file(
                src.path(),
                &format!("loose {i}.bin"),
                500 + i,
                40 + i as u64,
            )
            .0
        })
        .collect();
    let seeder = crate::support::start_peer(addr).await;
    let mut paths = vec![album];
    paths.extend(loose);
    let shared = seeder.share_paths(&paths).await.unwrap();
    let (folder_id, inner) = match &shared[0] {
        p2p_peer::Shared::Folder {
            folder_id, files, ..
        } => (*folder_id, files[5].1.id()),
        other => panic!("{other:?}"),
    };
    let loose_ids: Vec<String> = shared[1..]
        .iter()
        .map(|s| match s {
            p2p_peer::Shared::File { manifest, .. } => manifest.id().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    server.stop().await;

    // Same address, empty index: the peer registers again with everything it shares.
    let server = start_server_on(addr, fast_server_config()).await;
    let client = IndexClient::new(server.addr, Duration::from_secs(5), crate::support::tls());
    let back = eventually(Duration::from_secs(20), || async {
        let folder = client.locate(&folder_id.to_string()).await;
        let file = client.locate(&inner.to_string()).await;
        let mut loose_back = true;
        for id in &loose_ids {
            loose_back &= client.lookup(id).await.is_ok();
        }
        matches!(folder, Ok(Located::Folder { .. }))
            && matches!(file, Ok(Located::InFolder { folder_id: f, .. }) if f == folder_id)
            && loose_back
    })
    .await;
    assert!(
        back,
        "the folder, a file in it and the loose files are back"
    );
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_host_answers_its_record_and_its_files_by_id_as_the_protocol_says() {
    let src = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 20);
    let seeder = lone_peer().await;
    let shared = seeder
        .share_paths(std::slice::from_ref(&album))
        .await
        .unwrap();
    let p2p_peer::Shared::Folder {
        folder_id,
        head,
        files: listed,
        ..
    } = &shared[0]
    else {
        panic!("{shared:?}")
    };
    let mut conn = crate::support::peer_connection(seeder.local_addr()).await;
    let timeout = Duration::from_secs(10);
    let mut ask = async |request: PeerRequest| conn.request(&request, timeout).await.unwrap();
    let code = |reply: PeerResponse| match reply {
        PeerResponse::Error { code, .. } => Some(code),
        _ => None,
    };

    let reply = ask(PeerRequest::GetFolder {
        folder_id: *folder_id,
    })
    .await;
    assert_eq!(
        reply,
        PeerResponse::Folder {
            folder_id: *folder_id,
            head: head.clone()
        }
    );
    let pages = |first, count| PeerRequest::GetFolderPages {
        folder_id: *folder_id,
        first,
        count,
    };
    let (expected_head, expected_pages) = record_of(&album).await;
    assert_eq!(&expected_head, head);
    assert_eq!(
        ask(pages(0, 4)).await,
        PeerResponse::FolderPages {
            folder_id: *folder_id,
            first: 0,
            pages: expected_pages
        },
        "every page there is (one), no more"
    );
    assert_eq!(
        ask(pages(1, 1)).await,
        PeerResponse::FolderPages {
            folder_id: *folder_id,
            first: 1,
            pages: vec![]
        },
        "past the end: none"
    );
    assert_eq!(code(ask(pages(0, 0)).await), Some(ErrorCode::BadRequest));
    let unknown = FolderId([7; 32]);
    assert_eq!(
        code(ask(PeerRequest::GetFolder { folder_id: unknown }).await),
        Some(ErrorCode::UnknownFile)
    );

    // Its files by their ids, as any shared file: manifest, chunk, an index past the end.
    let (path, manifest) = &listed[3];
    let data = &files.iter().find(|(rel, _)| rel == path).unwrap().1;
    let file_id = manifest.id();
    assert_eq!(
        ask(PeerRequest::GetManifest { file_id }).await,
        PeerResponse::Manifest {
            file_id,
            manifest: manifest.clone()
        }
    );
    assert_eq!(
        code(ask(PeerRequest::GetChunk { file_id, index: 1 }).await),
        Some(ErrorCode::ChunkOutOfRange)
    );
    let got = crate::support::get_chunk(&mut conn, file_id, 0)
        .await
        .unwrap();
    assert_eq!(&got, data);
    // Changed on disk: no longer served, the folder's other files still are.
    std::fs::write(album.join(path), b"edited").unwrap();
    let reply = crate::support::get_chunk(&mut conn, file_id, 0).await;
    assert!(
        matches!(
            reply,
            Err(PeerResponse::Error {
                code: ErrorCode::FileUnavailable,
                ..
            })
        ),
        "{reply:?}"
    );
    let (other, _) = &listed[4];
    let other_data = &files.iter().find(|(rel, _)| rel == other).unwrap().1;
    let got = crate::support::get_chunk(&mut conn, listed[4].1.id(), 0)
        .await
        .unwrap();
    assert_eq!(&got, other_data);
    seeder.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Jobs (engineer E): re-running a half-finished folder completes it, a conflicting file is
// reported and never touched, a single file already there is "already downloaded", a host
// dying mid-job is survived, 10,000 small files download with bounded memory, and the
// shell's `transfers` shows a folder as one row. Seeders are the real binary (`peer -r DIR`
// prints `registered DIR FOLDER_ID` after its files' lines); leechers are the binary where
// exit codes and printed lines are checked, an in-process peer where the job's events are.

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
fn seed_shared_folder(server: &str, dir: &Path) -> (Running, String) {
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

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The bytes a folder job's summary line says it fetched.
fn bytes_fetched(summary: &str) -> u64 {
    let (_, after) = summary.rsplit_once(" failed (").expect("a summary line");
    after.split(' ').next().unwrap().parse().unwrap()
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
    let (_seeder, folder_id) = seed_shared_folder(&addr, &album);

    // What an interrupted run left: 10 files in place, a `.part` holding one verified chunk
    // (and its record), the other 19 missing.
    let root = out.path().join("album");
    let mut there = BTreeMap::new();
    for (rel, data) in files
        .iter()
        .filter(|(r, _)| r.components().count() > 1)
        .take(10)
    {
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
    // Where a folder job keeps it: in the staging folder of its name beside the folder, not
    // in it.
    let output = p2p_storage::OutputDir::open(out.path(), "album").unwrap();
    let part =
        p2p_storage::PartFile::create_staged(&output, &["album".to_owned()], manifest).unwrap();
    assert!(part.write_verified(0, &big[..CHUNK_SIZE as usize]).unwrap());
    part.save_record().unwrap();
    let part_path = part.part_path().to_owned();
    drop(part);
    assert!(
        part_path.starts_with(output.staging_path()),
        "{part_path:?}"
    );
    assert!(part_path.exists());
    assert!(!root.join("big-a.bin.part").exists());
    // What the run has to fetch: every file not in place, but the chunk already verified.
    let to_fetch: usize = files
        .iter()
        .filter(|(rel, _)| !there.contains_key(&root.join(rel)))
        .map(|(_, data)| data.len())
        .sum::<usize>()
        - CHUNK_SIZE as usize;

    let output = leecher(&addr, &folder_id, out.path()).output().unwrap();
    let (_, summary) = lines(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        summary.starts_with(&format!(
            "folder album {folder_id}: 20 fetched, 10 already there, 0 conflicts, 0 failed ({to_fetch} bytes in "
        )),
        "{summary}"
    );
    assert_eq!(
        read_tree(&root),
        files,
        "the tree is whole, and nothing else is in it"
    );
    assert_eq!(
        entries(out.path()),
        ["album"],
        "the staging folder is gone with the job"
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

/// A folder whose own files include `x.part` and `x.part.chunks` beside `x` (the second
/// crafted as a downloader's record of `x` with every chunk done): all three arrive as they
/// are, nothing else appears. A folder job never names a temporary file inside the folder, so
/// no file of the folder is taken for one, rewritten or removed (review item 6 of #14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_holding_x_and_files_named_like_its_part_file_and_record_arrives_whole() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    std::fs::create_dir(&album).unwrap();
    let (_, x) = random_file(&album, "x", 2 * CHUNK_SIZE as usize + 1234, 61);
    let x_id = p2p_storage::build_manifest(&album.join("x"))
        .unwrap()
        .manifest
        .id();
    let mut record = b"p2p-part-v1\0".to_vec();
    record.extend_from_slice(&x_id.0);
    record.extend_from_slice(&3u32.to_be_bytes());
    record.push(0b111);
    std::fs::write(album.join("x.part.chunks"), &record).unwrap();
    let (_, part) = random_file(&album, "x.part", 5000, 62);
    let files: BTreeMap<PathBuf, Vec<u8>> = [("x", x), ("x.part", part), ("x.part.chunks", record)]
        .into_iter()
        .map(|(name, data)| (PathBuf::from(name), data))
        .collect();
    // Served one by one (a folder shared from disk leaves `.part` names out); the folder's
    // record comes from a host that has it.
    let seeder = lone_peer().await;
    let mut listed = Vec::new();
    for name in files.keys() {
        let path = album.join(name);
        seeder.share_path(&path).await.unwrap();
        let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
        listed.push((name.to_str().unwrap().to_owned(), manifest));
    }
    let (head, pages) = folder::build("album", listed).unwrap();
    let folder_id = head.id().to_string();
    let host = FakeFolderHost::start(head, pages, Forgery::None).await;

    let output = direct_leecher(&[host.addr, seeder.local_addr()], &folder_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, summary) = lines(&output);
    assert!(
        summary.starts_with(&format!(
            "folder album {folder_id}: 3 fetched, 0 already there, 0 conflicts, 0 failed ("
        )),
        "{summary}"
    );
    assert_eq!(read_tree(&out.path().join("album")), files);
    assert_eq!(entries(out.path()), ["album"]);
    seeder.shutdown().await;
}

/// A folder download killed (`kill -9`) midway leaves no temporary name anywhere in the
/// folder's tree: every file there is a whole file of the folder (big files' partial state
/// is in the staging folder beside it; small files have no name until whole). The same
/// command again completes it byte for byte with no conflict, resuming the big files from
/// the staging folder (review item 5 of #14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_download_killed_midway_leaves_no_temporary_name_and_the_rerun_resumes() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (album, files) = half_big_album(src.path());
    let seeder = lone_peer().await;
    let folder_id = seeder.share_path(&album).await.unwrap()[0]
        .file_id
        .to_string();
    let (there, to_fetch) =
        kill_after_a_recorded_chunk(&seeder, &folder_id, &files, out.path()).await;

    let output = direct_leecher(&[seeder.local_addr()], &folder_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, summary) = lines(&output);
    assert!(
        summary.starts_with(&format!(
            "folder album {folder_id}: {} fetched, {} already there, 0 conflicts, 0 failed (",
            files.len() - there.len(),
            there.len()
        )),
        "{summary}"
    );
    assert!(
        bytes_fetched(&summary) + u64::from(CHUNK_SIZE) <= to_fetch,
        "the verified chunks were fetched again: {summary} ({to_fetch} bytes were missing)"
    );
    assert_eq!(read_tree(&out.path().join("album")), files);
    assert_eq!(entries(out.path()), ["album"], "the staging folder is gone");
    seeder.shutdown().await;
}

/// A folder that changed between a killed run and the next (a `--share-dir` host's folder
/// gets a new id whenever one of its files changes): the run under the new id resumes the
/// big files the killed one left half done, since they are the same files at the same
/// paths, and fetches the new file; at the end the staging folder is gone, with the part
/// file an even older version left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_under_a_new_folder_id_resumes_the_same_big_files() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (album, mut files) = half_big_album(src.path());
    let seeder = lone_peer().await;
    let old_id = seeder.share_path(&album).await.unwrap()[0]
        .file_id
        .to_string();
    let (there, to_fetch) = kill_after_a_recorded_chunk(&seeder, &old_id, &files, out.path()).await;

    // What a run for an older version of the folder left: a part file of another big-b.bin.
    let older = tempfile::tempdir().unwrap();
    let (older_b, _) = random_file(older.path(), "big-b.bin", 2 * CHUNK_SIZE as usize, 5);
    let older_b = p2p_storage::build_manifest(&older_b).unwrap().manifest;
    let output = p2p_storage::OutputDir::open(out.path(), "album").unwrap();
    let stale = p2p_storage::PartFile::create_staged(&output, &["album".to_owned()], older_b)
        .unwrap()
        .part_path()
        .to_owned();
    assert!(stale.exists());

    // The folder changes: one more file, so another folder id.
    let (_, added) = random_file(&album, "added.txt", 5000, 77);
    files.insert(PathBuf::from("added.txt"), added);
    let new_id = seeder.share_path(&album).await.unwrap()[0]
        .file_id
        .to_string();
    assert_ne!(new_id, old_id);

    let output = direct_leecher(&[seeder.local_addr()], &new_id, out.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, summary) = lines(&output);
    assert!(
        summary.starts_with(&format!(
            "folder album {new_id}: {} fetched, {} already there, 0 conflicts, 0 failed (",
            files.len() - there.len(),
            there.len()
        )),
        "{summary}"
    );
    assert!(
        bytes_fetched(&summary) + u64::from(CHUNK_SIZE) <= to_fetch + 5000,
        "the verified chunks were fetched again: {summary} ({} bytes were missing)",
        to_fetch + 5000
    );
    assert_eq!(read_tree(&out.path().join("album")), files);
    assert_eq!(
        entries(out.path()),
        ["album"],
        "the staging folder is gone, the older version's part file with it"
    );
    seeder.shutdown().await;
}

/// `root/album` with 40 small files and two big files of a bit more than three chunks;
/// returns it and its files.
fn half_big_album(root: &Path) -> (PathBuf, BTreeMap<PathBuf, Vec<u8>>) {
    let album = root.join("album");
    let mut files = make_tree(&album, 40, 1000..=40_000, 9);
    for (i, name) in ["big-a.bin", "big-b.bin"].into_iter().enumerate() {
        let (_, data) = random_file(&album, name, 3 * CHUNK_SIZE as usize + 77, 90 + i as u64);
        files.insert(PathBuf::from(name), data);
    }
    (album, files)
}

/// Downloads the folder `folder_id` of `seeder` (its `files`) into `out` and kills the
/// download (`kill -9`) once a record of verified chunks lists one; checks that every file
/// in the folder's tree then is a whole file of the folder. Returns what is there, and the
/// bytes that are not.
async fn kill_after_a_recorded_chunk(
    seeder: &PeerHandle,
    folder_id: &str,
    files: &BTreeMap<PathBuf, Vec<u8>>,
    out: &Path,
) -> (BTreeMap<PathBuf, Vec<u8>>, u64) {
    // The run reaches the seeder through a link that passes two chunks' worth of bytes,
    // then nothing: the record and the small files (1.6 MB at most) arrive, at least one
    // chunk of a big file, never a whole big file. It stalls there until killed.
    let proxy =
        SilentProxy::start_with_budget(seeder.local_addr(), 2 * u64::from(CHUNK_SIZE)).await;
    let mut first = bin();
    first
        .args(["peer", "--addr", "127.0.0.1:0", "--workers", "1", "--from"])
        .arg(proxy.addr.to_string())
        .args(["--download", folder_id, "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = Running(first.spawn().unwrap());
    // Killed once a record of verified chunks lists one (wherever it is kept).
    let deadline = std::time::Instant::now() + DEADLINE;
    while !records_a_chunk(out) {
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first run ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk recorded in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let there = read_tree(&out.join("album"));
    for (rel, data) in &there {
        assert!(
            files.get(rel) == Some(data),
            "{} is not a whole file of the folder",
            rel.display()
        );
    }
    let to_fetch: u64 = files
        .iter()
        .filter(|(rel, _)| !there.contains_key(*rel))
        .map(|(_, data)| data.len() as u64)
        .sum();
    (there, to_fetch)
}

/// Whether a record of verified chunks (a file whose name ends in `.part.chunks`) anywhere
/// under `dir` lists one: its bits after the 48-byte header are not all zero.
fn records_a_chunk(dir: &Path) -> bool {
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(".part.chunks")
                && std::fs::read(&path)
                    .is_ok_and(|r| r.len() > 48 && r[48..].iter().any(|b| *b != 0))
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_different_file_in_the_way_is_reported_and_never_touched() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let files = make_tree(&album, 30, 1000..=40_000, 2);
    let (_seeder, folder_id) = seed_shared_folder(&addr, &album);

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
            "error: cannot download {id}: {} already exists and is not this file ({}); it was \
             left as it is: move it away, or download into another folder with --out DIR",
            target.display(),
            &id[..12]
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
        move || {
            (
                seed_shared_folder(&addr, &album),
                seed_shared_folder(&addr, &album),
            )
        }
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

/// Peak resident memory a 10,000-file leecher may reach: measured at 30–32 MiB (debug build,
/// three runs), twice that for a loaded machine and allocator noise. A job that held a chunk
/// buffer (or a task with one) per file for its whole length would go far over it.
const MAX_LEECHER_RSS_KB: u64 = 64 * 1024;

#[test]
fn ten_thousand_small_files_download_with_bounded_memory() {
    let (_server, addr) = crate::process::start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let many = src.path().join("many");
    let files = make_tree(&many, 10_000, 0..=2048, 5);
    let (_seeder, folder_id) = seed_shared_folder(&addr, &many);

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
    let (_seeder, folder_id) = seed_shared_folder(&addr, &album);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_folder_is_shared_as_the_same_folder_and_served_onwards() {
    let src = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let (album, files) = album(src.path(), 25);
    let seeder = lone_peer().await;
    let shared = seeder.share_path(&album).await.unwrap();
    let folder_id = shared[0].file_id;

    let leecher = lone_peer().await;
    let request = p2p_peer::DownloadRequest {
        id: folder_id.to_string(),
        hosts: vec![seeder.local_addr()],
        ..p2p_peer::DownloadRequest::default()
    };
    let report = leecher
        .fetch(
            request,
            first.path(),
            None,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.path, first.path().join("album"));
    assert_album(first.path(), &files);
    // The leecher shares what it fetched as that very folder, without a descriptor per file.
    let listed = leecher.files();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].file_id, listed[0].files, listed[0].path.clone()),
        (folder_id, Some(25), first.path().join("album"))
    );
    assert_eq!(leecher.open_folder_files(), 0);
    seeder.shutdown().await;

    // Someone else gets it from the leecher alone.
    let output = direct_leecher(
        &[leecher.local_addr()],
        &folder_id.to_string(),
        second.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_album(second.path(), &files);
    leecher.shutdown().await;
}
