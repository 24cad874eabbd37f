//! The peer's download registry as every front end uses it: jobs started in the background,
//! listed, cancelled and resumed by handle; messages by address or peer id; the change feed.

use std::time::Duration;

use p2p_peer::{DownloadId, DownloadInfo, DownloadState, PeerChange, PeerError, PeerHandle};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::bad_input::{FakeSeeder, Misbehaviour};
use crate::support::{random_file, start_peer, start_server};

const MIB: usize = 1024 * 1024;
/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits on `changes` until job `id` satisfies `want`; returns it. Panics at the deadline.
async fn wait_for(
    peer: &PeerHandle,
    changes: &mut Receiver<PeerChange>,
    id: DownloadId,
    what: &str,
    want: impl Fn(&DownloadInfo) -> bool,
) -> DownloadInfo {
    let waiting = async {
        loop {
            let info = peer.download_info(id).expect("the job is listed");
            if want(&info) {
                return info;
            }
            match changes.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the change feed closed"),
            }
        }
    };
    match tokio::time::timeout(DEADLINE, waiting).await {
        Ok(info) => info,
        Err(_) => panic!("job {id} never became {what}: {:?}", peer.download_info(id)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_by_prefix_runs_in_the_background_to_done() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "job.bin", 36 * MIB + 7, 81);
    let a = start_peer(server.addr).await;
    let b = start_peer(server.addr).await;
    let file_id = a.register(&path).await.unwrap();
    b.register(&path).await.unwrap();
    let leecher = start_peer(server.addr).await;
    let mut changes = leecher.subscribe_changes();
    let mut watch = leecher.subscribe_changes();

    let prefix = file_id.to_string()[..10].to_owned();
    let id = leecher
        .start_download(
            prefix.clone(),
            p2p_peer::DownloadRequest::by_id(&prefix),
            out.path().to_owned(),
        )
        .await
        .unwrap();
    // The handle comes back at once; the job is listed while it runs.
    assert_eq!(leecher.downloads().len(), 1);
    let info = wait_for(&leecher, &mut changes, id, "done", |d| {
        d.state.is_finished()
    })
    .await;
    assert_eq!(info.state, DownloadState::Done, "{info:?}");
    let expected = out.path().join("job.bin");
    assert_eq!(info.path.as_deref(), Some(expected.as_path()));
    assert_eq!(std::fs::read(&expected).unwrap(), data);
    assert_eq!(info.target, prefix);
    assert_eq!(info.name.as_deref(), Some("job.bin"));
    assert_eq!(info.file_id, Some(file_id));
    assert_eq!(
        (info.size, info.done),
        (data.len() as u64, data.len() as u64)
    );
    assert_eq!((info.files_total, info.files_done), (1, 1));
    assert_eq!(info.hosts_known, 2);
    assert!(info.hosts_delivering >= 1, "{info:?}");
    assert_eq!(leecher.status().downloads_active, 0);

    // The feed told of the job's changes, never of every chunk (10 chunks here), and of the
    // downloaded file being shared.
    let (mut job_changes, mut shared) = (0, false);
    while let Ok(change) = watch.try_recv() {
        match change {
            PeerChange::Download(d) if d == id => job_changes += 1,
            PeerChange::FileShared(f) => shared |= f == file_id,
            _ => {}
        }
    }
    assert!(
        (2..10).contains(&job_changes),
        "{job_changes} changes for a 10-chunk job"
    );
    // Shared before the job ends, so the feed already carries it.
    assert!(shared, "no FileShared for the downloaded file");
    assert!(leecher.files().iter().any(|f| f.file_id == file_id));

    leecher.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_keeps_its_part_file_and_resumes_to_done() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "slow.bin", 12 * MIB + 1, 82);
    let file_id = p2p_storage::build_manifest(&path).unwrap().manifest.id();
    // The only host takes chunk requests and never answers: the job runs and gets nowhere.
    let _hung = FakeSeeder::start(server.addr, &path, Misbehaviour::Stall).await;
    let leecher = start_peer(server.addr).await;
    let mut changes = leecher.subscribe_changes();
    let id = leecher
        .start_download(
            file_id.to_string(),
            p2p_peer::DownloadRequest::by_id(&file_id.to_string()),
            out.path().to_owned(),
        )
        .await
        .unwrap();
    wait_for(&leecher, &mut changes, id, "running", |d| {
        d.state == DownloadState::Running
    })
    .await;
    assert_eq!(leecher.status().downloads_active, 1);

    let cancelled = leecher.cancel_download(id).unwrap();
    assert_eq!(cancelled.state, DownloadState::Cancelled);
    assert!(
        out.path().join("slow.bin.part").exists(),
        "the part file stays"
    );
    assert!(!out.path().join("slow.bin").exists());
    // Cancelling again changes nothing.
    assert_eq!(
        leecher.cancel_download(id).unwrap().state,
        DownloadState::Cancelled
    );
    assert_eq!(leecher.status().downloads_active, 0);

    // A real seeder appears; the same job runs again into the same folder.
    let seeder = start_peer(server.addr).await;
    seeder.register(&path).await.unwrap();
    let resumed = leecher.resume_download(id).unwrap();
    assert!(!resumed.state.is_finished(), "{resumed:?}");
    let again = leecher.resume_download(id).unwrap_err();
    assert!(
        matches!(again, PeerError::DownloadRunning(d) if d == id),
        "{again}"
    );
    assert_eq!(
        again.to_string(),
        format!("download {id} is still running; cancel it first")
    );
    let info = wait_for(&leecher, &mut changes, id, "done", |d| {
        d.state.is_finished()
    })
    .await;
    assert_eq!(info.state, DownloadState::Done, "{info:?}");
    assert_eq!(std::fs::read(out.path().join("slow.bin")).unwrap(), data);
    assert!(!out.path().join("slow.bin.part").exists());
    assert_eq!(info.done, data.len() as u64);
    // Still one job: the resume ran the same handle.
    assert_eq!(leecher.downloads().len(), 1);

    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_handles_and_missing_folders_are_clear_errors() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let nobody = DownloadId(4242);
    assert!(peer.download_info(nobody).is_none());
    let err = peer.cancel_download(nobody).unwrap_err();
    assert!(
        matches!(err, PeerError::UnknownDownload(d) if d == nobody),
        "{err}"
    );
    assert_eq!(err.to_string(), "no download 4242 on this peer");
    let err = peer.resume_download(nobody).unwrap_err();
    assert!(matches!(err, PeerError::UnknownDownload(_)), "{err}");

    let gone = tempfile::tempdir().unwrap().path().join("nope");
    let err = peer
        .start_download(
            "abc".into(),
            p2p_peer::DownloadRequest::by_id("abcdef12"),
            gone.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the output folder {} does not exist or is not a folder",
            gone.display()
        )
    );
    assert!(peer.downloads().is_empty(), "a refused job is not listed");
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_by_address_or_peer_id_and_both_sides_are_kept() {
    let server = start_server().await;
    let a = start_peer(server.addr).await;
    let b = start_peer(server.addr).await;
    let mut a_changes = a.subscribe_changes();
    let mut b_changes = b.subscribe_changes();

    let to = b.local_addr().to_string();
    let (addr, node) = a.send_message_to(&to, "by address").await.unwrap();
    assert_eq!((addr, node), (b.local_addr(), b.node_id()));
    let b_id = b.session().unwrap().peer_id.to_string();
    let (addr, node) = a.send_message_to(&b_id[..12], "by peer id").await.unwrap();
    assert_eq!((addr, node), (b.local_addr(), b.node_id()));

    // B received both from A's node.
    let got = b.messages();
    let texts: Vec<String> = got.iter().map(|m| m.text.to_string()).collect();
    assert_eq!(texts, ["by address", "by peer id"]);
    assert!(got.iter().all(|m| !m.sent && m.node == a.node_id()));
    // A kept both as sent, to B's node.
    let sent = a.messages();
    let texts: Vec<String> = sent.iter().map(|m| m.text.to_string()).collect();
    assert_eq!(texts, ["by address", "by peer id"]);
    assert!(
        sent.iter()
            .all(|m| m.sent && m.node == b.node_id() && m.remote == b.local_addr())
    );
    // Both feeds announced them.
    for changes in [&mut a_changes, &mut b_changes] {
        let mut seen = 0;
        while seen < 2 {
            match tokio::time::timeout(DEADLINE, changes.recv()).await {
                Ok(Ok(PeerChange::Message(_))) => seen += 1,
                Ok(Ok(_)) => {}
                other => panic!("no message change: {other:?}"),
            }
        }
    }

    let err = a.send_message_to("ffffffffffff", "lost").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no peer \"ffffffffffff\" is registered; give its host:port"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_id_prefix_matching_several_peers_is_this_peers_refusal() {
    use p2p_peer::index::IndexClient;

    let server = start_server().await;
    let a = start_peer(server.addr).await;
    // Register stand-ins (each its own node: a node has one registration) until two peer
    // ids share their first hex digit: 17 peers at most.
    let mut firsts = vec![a.session().unwrap().peer_id.to_string()[..1].to_owned()];
    let mut stand_ins = Vec::new();
    let prefix = loop {
        let port = 10 + firsts.len() as u16;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let client = IndexClient::new(server.addr, DEADLINE, crate::support::tls());
        let id = client.register(addr).await.unwrap().peer_id.to_string();
        stand_ins.push(client);
        let first = id[..1].to_owned();
        if firsts.contains(&first) {
            break first;
        }
        firsts.push(first);
    };
    let err = a.send_message_to(&prefix, "to whom?").await.unwrap_err();
    // This peer's own decision, not the index's refusal.
    assert!(
        matches!(
            err,
            PeerError::AmbiguousPrefix {
                count: 2,
                what: "peers",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{prefix} matches 2 peers; type more characters")
    );
    assert!(a.messages().is_empty());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_shared_by_path_and_fetched_as_one_job() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("disc 2")).unwrap();
    let (_, one) = random_file(&album, "one.bin", 5 * MIB + 1, 83);
    let (_, two) = random_file(&album.join("disc 2"), "two.bin", 3 * MIB, 84);
    let seeder = start_peer(server.addr).await;
    let mut seeder_changes = seeder.subscribe_changes();

    let shared = seeder.share_path(&album).await.unwrap();
    assert_eq!(shared.len(), 1, "the folder is one share: {shared:?}");
    let folder = &shared[0];
    assert_eq!(
        (folder.path.as_path(), folder.name.as_str(), folder.files),
        (album.as_path(), "album", Some(2)),
        "the folder, under the path given, with its file count"
    );
    assert_eq!(folder.size, (one.len() + two.len()) as u64);
    let mut announced = 0;
    while let Ok(change) = seeder_changes.try_recv() {
        announced +=
            usize::from(matches!(change, PeerChange::FileShared(id) if id == folder.file_id));
    }
    assert_eq!(announced, 1, "announced once, as a folder");

    // One job for the folder, as its manifest file gives it.
    let entries = [("one.bin", &album), ("disc 2/two.bin", &album)]
        .into_iter()
        .map(|(rel, root)| {
            let manifest = p2p_storage::build_manifest(&root.join(rel))
                .unwrap()
                .manifest;
            (rel.split('/').map(str::to_owned).collect(), manifest)
        })
        .collect();
    let doc = p2p_protocol::manifest_file::FolderManifestFile::new("album".into(), entries, vec![])
        .unwrap();
    let request = p2p_peer::DownloadRequest::for_manifest_file(
        p2p_protocol::manifest_file::AnyManifestFile::Folder(doc),
        &[],
    );
    let leecher = start_peer(server.addr).await;
    let mut changes = leecher.subscribe_changes();
    let id = leecher
        .start_download("album.p2pm".into(), request, out.path().to_owned())
        .await
        .unwrap();
    let info = leecher.download_info(id).unwrap();
    assert_eq!(info.name.as_deref(), Some("album"));
    let info = wait_for(&leecher, &mut changes, id, "done", |d| {
        d.state.is_finished()
    })
    .await;
    assert_eq!(info.state, DownloadState::Done, "{info:?}");
    assert_eq!(info.path, Some(out.path().join("album")));
    assert_eq!(
        std::fs::read(out.path().join("album/one.bin")).unwrap(),
        one
    );
    assert_eq!(
        std::fs::read(out.path().join("album/disc 2/two.bin")).unwrap(),
        two
    );

    // Unsharing is announced too.
    let gone = seeder.unshare(&folder.file_id.to_string()).await.unwrap();
    assert_eq!(gone, folder.file_id);
    let unshared = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(PeerChange::FileUnshared(f)) = seeder_changes.recv().await {
                return f;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(unshared, gone);
    assert!(seeder.files().is_empty());
    leecher.shutdown().await;
    seeder.shutdown().await;
}
