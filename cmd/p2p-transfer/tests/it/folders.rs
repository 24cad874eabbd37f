//! Folders as things on the network: shared under one folder id, listed beside files,
//! fetched by id into `<out>/<folder name>/...` whichever way the sharer spelled the path, and
//! a forged folder record refused with nothing written outside the output folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_peer::{Peer, PeerConfig, PeerHandle};
use p2p_protocol::folder::{self, FolderItem, FolderRef};
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileManifest, FolderHead, FolderId, PeerConversation, PeerRequest,
    PeerResponse, PeerServerConnection, Sha256Hash, server_hello,
};
use tokio::net::TcpListener;

use crate::process::bin;
use crate::support::{loopback0, random_file};

/// A peer with no index server: folders fetched from named hosts only.
async fn lone_peer() -> PeerHandle {
    Peer::start(
        PeerConfig {
            listen_addr: loopback0(),
            server_addr: None,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forgery {
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = crate::support::tls();
        let folder_id = head.id();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (tls, head, pages) = (tls.clone(), head.clone(), pages.clone());
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
                        let reply = answer(request, folder_id, &head, &pages, forgery);
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

fn answer(
    request: PeerRequest,
    folder_id: FolderId,
    head: &FolderHead,
    pages: &[Vec<FolderItem>],
    forgery: Forgery,
) -> PeerResponse {
    let unknown = PeerResponse::Error {
        code: ErrorCode::UnknownFile,
        message: "no such file here".into(),
    };
    match request {
        PeerRequest::GetFolder { folder_id: asked } if asked == folder_id => {
            let mut head = head.clone();
            if forgery == Forgery::Head {
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
        let liar = FakeFolderHost::start(head.clone(), pages.clone(), forgery).await;

        // The liar alone: refused, with the reason, and nothing written.
        let output = direct_leecher(&[liar.addr], &folder_id, &inner);
        assert_eq!(output.status.code(), Some(1), "{forgery:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = match forgery {
            Forgery::Head => "does not match folder id",
            Forgery::Page => "folder page 0 does not match the folder's record",
            Forgery::Traversal => "path ../escaped.flac refused",
            Forgery::None => unreachable!(),
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
