//! A shared folder: everything in it is shared, changes are followed while the peer runs, and
//! a restart re-hashes nothing that did not change.

use std::sync::atomic::Ordering;
use std::time::Duration;

use p2p_peer::share_dir::{ShareDir, ShareDirConfig};

use crate::support::{eventually, random_file, start_peer, start_server};

fn names(files: &[p2p_peer::SharedFileInfo]) -> Vec<String> {
    let mut names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    names.sort();
    names
}

/// How many files a share holds.
fn count(shared: &p2p_peer::Shared) -> usize {
    match shared {
        p2p_peer::Shared::Folder { files, .. } => files.len(),
        p2p_peer::Shared::File { .. } => 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folder_follows_the_disk_and_caches_manifests() {
    let server = start_server().await;
    let folder = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir(folder.path().join("sub")).unwrap();
    random_file(folder.path(), "a.bin", 5000, 81);
    random_file(&folder.path().join("sub"), "b.bin", 6000, 82);
    random_file(folder.path(), ".hidden", 10, 83);
    random_file(folder.path(), "c.bin.part", 10, 84);
    let config = ShareDirConfig {
        dir: folder.path().to_owned(),
        cache_file: Some(state.path().join("cache.json")),
        // Long enough that only the watcher can explain a quick update.
        rescan_every: Duration::from_secs(60),
        changes: None,
    };

    let peer = start_peer(server.addr).await;
    let (share, shared) = ShareDir::start(&peer, config.clone()).await.unwrap();
    assert_eq!(count(&shared), 2);
    assert_eq!(names(&peer.every_file()), ["a.bin", "b.bin"]);
    assert_eq!(peer.files().len(), 1, "shared as one folder");
    assert_eq!(share.stats.hashed.load(Ordering::Relaxed), 2);
    let (_, on_network) = peer.search("bin").await.unwrap();
    assert_eq!(on_network, 2, "both announced to the index");

    // Added, changed and removed files are picked up while the peer runs.
    random_file(folder.path(), "new.bin", 7000, 85);
    std::fs::write(folder.path().join("a.bin"), b"rewritten").unwrap();
    std::fs::remove_file(folder.path().join("sub/b.bin")).unwrap();
    let followed = eventually(Duration::from_secs(10), || async {
        names(&peer.every_file()) == ["a.bin", "new.bin"]
            && peer
                .every_file()
                .iter()
                .any(|f| f.name == "a.bin" && f.size == 9)
    })
    .await;
    assert!(
        followed,
        "folder changes not followed: {:?}",
        peer.every_file()
    );
    // The index hears of the change after the peer's own view has it: wait for that too.
    let withdrawn = eventually(Duration::from_secs(10), || async {
        let (found, _) = peer.search("b.bin").await.unwrap();
        found.iter().all(|f| f.name != "b.bin")
    })
    .await;
    assert!(withdrawn, "removed file withdrawn from the index");
    peer.shutdown().await;

    // A restart hashes nothing: every manifest comes from the cache.
    let again = start_peer(server.addr).await;
    let (share, shared) = ShareDir::start(&again, config).await.unwrap();
    assert_eq!(count(&shared), 2);
    assert_eq!(share.stats.hashed.load(Ordering::Relaxed), 0);
    assert_eq!(share.stats.cached.load(Ordering::Relaxed), 2);
    // A rename keeps the file shared; of two identical files, removing one keeps the other.
    std::fs::rename(
        folder.path().join("new.bin"),
        folder.path().join("renamed.bin"),
    )
    .unwrap();
    std::fs::create_dir(folder.path().join("copy")).unwrap();
    std::fs::copy(
        folder.path().join("a.bin"),
        folder.path().join("copy/a.bin"),
    )
    .unwrap();
    let settled = eventually(Duration::from_secs(10), || async {
        names(&again.every_file()) == ["a.bin", "a.bin", "renamed.bin"]
    })
    .await;
    assert!(settled, "rename not followed: {:?}", again.every_file());
    std::fs::remove_file(folder.path().join("a.bin")).unwrap();
    let settled = eventually(Duration::from_secs(10), || async {
        names(&again.every_file()) == ["a.bin", "renamed.bin"]
    })
    .await;
    assert!(
        settled,
        "the identical copy is still shared: {:?}",
        again.every_file()
    );
    let copy = again
        .every_file()
        .into_iter()
        .find(|f| f.name == "a.bin")
        .unwrap();
    assert!(copy.path.ends_with("copy/a.bin"), "{}", copy.path.display());
    again.shutdown().await;
}
