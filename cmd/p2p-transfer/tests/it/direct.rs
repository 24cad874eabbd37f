//! Peers talking directly: downloads from named peers without any index, a named peer that
//! disappears mid-way, and short text messages.

use std::time::Duration;

use p2p_peer::{DownloadEvent, DownloadRequest, Peer, PeerConfig};
use tokio_util::sync::CancellationToken;

use crate::support::{loopback0, random_file, start_peer, start_server};

const MIB: usize = 1024 * 1024;

/// A peer with no index server at all.
async fn lone_peer() -> p2p_peer::PeerHandle {
    Peer::start(
        PeerConfig {
            listen_addr: loopback0(),
            indexes: Vec::new(),
            request_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(2),
            ..PeerConfig::default()
        },
        crate::support::tls(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_from_named_peers_needs_no_index() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "direct.bin", 20 * MIB + 1, 71);
    let a = lone_peer().await;
    let b = lone_peer().await;
    let id = a.register(&path).await.unwrap();
    b.register(&path).await.unwrap();
    assert_eq!(a.server_addr(), None);

    let leecher = lone_peer().await;
    let request = DownloadRequest {
        id: id.to_string(),
        manifest: None,
        hosts: vec![a.local_addr(), b.local_addr()],
        folder: None,
        pinned_hosts: Vec::new(),
    };
    let report = leecher
        .fetch(request, out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(
        a.chunks_served() > 0 && b.chunks_served() > 0,
        "both named peers served"
    );

    // Without an index, a prefix can't be resolved: a clear error.
    let err = leecher
        .fetch(
            DownloadRequest {
                id: id.to_string()[..8].to_owned(),
                manifest: None,
                hosts: vec![a.local_addr()],
                folder: None,
                pinned_hosts: Vec::new(),
            },
            out.path(),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("full 64-character file id"),
        "{err}"
    );
    for p in [a, b, leecher] {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_peer_that_disappears_is_replaced_by_the_other() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "half.bin", 40 * MIB, 72);
    let doomed = lone_peer().await;
    let other = lone_peer().await;
    let id = doomed.register(&path).await.unwrap();
    other.register(&path).await.unwrap();
    let leecher = lone_peer().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = DownloadRequest {
        id: id.to_string(),
        manifest: None,
        hosts: vec![doomed.local_addr(), other.local_addr()],
        folder: None,
        pinned_hosts: Vec::new(),
    };
    let run = leecher.fetch(request, out.path(), Some(tx), CancellationToken::new());
    let killer = async {
        while let Some(event) = rx.recv().await {
            if let DownloadEvent::ChunkDone { host, .. } = event
                && host == doomed.local_addr()
            {
                doomed.shutdown().await;
                break;
            }
        }
        while rx.recv().await.is_some() {}
    };
    let (report, ()) = tokio::join!(run, killer);
    assert_eq!(std::fs::read(&report.unwrap().path).unwrap(), data);
    leecher.shutdown().await;
    other.shutdown().await;
}

/// Without an index there is nobody to ask for more hosts: once every named host is dropped,
/// the download fails at once, not after the stall timeout (PROTOCOL.md §8.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_index_a_download_fails_as_soon_as_every_named_host_is_dropped() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "nowhere.bin", MIB, 73);
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
    // Shares nothing, so it answers `unknown_file` and is dropped at its first answer.
    let stranger = lone_peer().await;
    let stall_timeout = Duration::from_secs(600);
    let leecher = Peer::start(
        PeerConfig {
            listen_addr: loopback0(),
            indexes: Vec::new(),
            stall_timeout,
            ..PeerConfig::default()
        },
        crate::support::tls(),
    )
    .await
    .unwrap();
    let request = DownloadRequest {
        id: manifest.id().to_string(),
        manifest: Some(manifest),
        hosts: vec![stranger.local_addr()],
        folder: None,
        pinned_hosts: Vec::new(),
    };
    let run = leecher.fetch(request, out.path(), None, CancellationToken::new());
    let err = tokio::time::timeout(stall_timeout / 10, run)
        .await
        .expect("the download waited for the stall timeout")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed with 0 of 1 chunks complete: every host given failed"),
        "{err}"
    );
    assert!(out.path().join("nowhere.bin.part").exists());
    leecher.shutdown().await;
    stranger.shutdown().await;
}

#[tokio::test]
async fn messages_reach_the_other_peer_with_their_sender() {
    let server = start_server().await;
    let alice = start_peer(server.addr).await;
    let bob = start_peer(server.addr).await;
    let mut live = bob.subscribe_messages();
    alice
        .send_message(bob.local_addr(), "lunch at noon?")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.text, "lunch at noon?");
    assert_eq!(got.from, alice.session().unwrap().addr.to_string());
    assert_eq!(bob.messages(), vec![got]);

    // Size-limited; anyone may send, but not an empty or oversized message.
    let err = alice
        .send_message(bob.local_addr(), &"x".repeat(2000))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("a message needs 1 to 1024 bytes"),
        "{err}"
    );
    assert_eq!(bob.messages().len(), 1);
    alice.shutdown().await;
    bob.shutdown().await;
}
