//! A peer with several index servers: it registers with each, one dying changes nothing a
//! user sees, lookups merge what every index knows, and an index added later hears of
//! everything shared.

use std::time::Duration;

use p2p_peer::{IndexSpec, IndexState, Peer, PeerConfig, PeerHandle};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Generous for a loaded machine: only the failure path waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

fn config_for(indexes: &[&TestServer]) -> PeerConfig {
    PeerConfig {
        indexes: indexes.iter().map(|s| IndexSpec::at(s.addr)).collect(),
        ..peer_config(loopback0())
    }
}

async fn peer_with(indexes: &[&TestServer]) -> PeerHandle {
    Peer::start(config_for(indexes), tls()).await.unwrap()
}

/// Waits until `peer` stands with its index at position `at` as `want` says.
async fn wait_state(peer: &PeerHandle, at: usize, want: fn(&IndexState) -> bool) {
    let reached = eventually(PATIENCE, || {
        let state = peer.indexes()[at].state.clone();
        async move { want(&state) }
    })
    .await;
    assert!(reached, "index {at}: {:?}", peer.indexes()[at]);
}

#[tokio::test]
async fn a_peer_registers_with_every_index_and_one_dying_changes_nothing() {
    let (one, two) = (start_server().await, start_server().await);
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "report.bin", 3 * 1024 * 1024 + 17, 1);
    let seeder = peer_with(&[&one, &two]).await;
    let file_id = seeder.register(&path).await.unwrap();
    // Both indexes list the seeder, registered under each one's own peer id.
    let status = seeder.indexes();
    assert_eq!(status.len(), 2);
    for index in &status {
        assert_eq!(index.state, IndexState::Registered, "{index:?}");
        assert!(index.peer_id.is_some());
    }
    for server in [&one, &two] {
        let client = p2p_peer::index::IndexClient::new(server.addr, PATIENCE, tls());
        let found = client.lookup(&file_id.to_string()).await.unwrap();
        assert_eq!(found.hosts.len(), 1, "{}", server.addr);
    }

    let leecher = peer_with(&[&one, &two]).await;
    one.stop().await;
    // The seeder sees the first index go down and says why; the second still has it.
    wait_state(&seeder, 0, |s| matches!(s, IndexState::Down(_))).await;
    assert_eq!(seeder.indexes()[1].state, IndexState::Registered);

    // A download by prefix still works, through the index left.
    let out = tempfile::tempdir().unwrap();
    let prefix = &file_id.to_string()[..8];
    let report = leecher
        .download(prefix, out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    // Search, too, answers from the index left.
    let (found, _) = leecher.search("report").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].file_id, file_id);
}

#[tokio::test]
async fn hosts_known_to_different_indexes_are_merged_into_one_download() {
    // The first index knows the file only at an address where nothing answers; the second
    // knows the real seeder. Asking only the first would fail; the merged list succeeds.
    let one = start_server_on(loopback0(), p2p_central_server::ServerConfig::default()).await;
    let two = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "big.bin", 6 * 1024 * 1024, 2);
    let seeder = peer_with(&[&two]).await;
    let file_id = seeder.register(&path).await.unwrap();
    let manifest = p2p_storage::SourceFile::hash(p2p_storage::OpenSource::open(&path).unwrap())
        .unwrap()
        .manifest()
        .clone();
    let nobody = std::net::TcpListener::bind(loopback0()).unwrap();
    let dead = nobody.local_addr().unwrap();
    drop(nobody);
    let liar = p2p_peer::index::IndexClient::new(one.addr, PATIENCE, tls());
    let session = liar.register(dead).await.unwrap();
    liar.add_file(&session, manifest).await.unwrap();

    let leecher = peer_with(&[&one, &two]).await;
    let out = tempfile::tempdir().unwrap();
    let report = leecher
        .download(
            &file_id.to_string(),
            out.path(),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let hosts: Vec<_> = report
        .per_host
        .iter()
        .filter(|(_, chunks)| *chunks > 0)
        .map(|(addr, _)| *addr)
        .collect();
    assert_eq!(hosts, [seeder.local_addr()]);
}

#[tokio::test]
async fn an_index_added_later_registers_the_peer_with_everything_it_shares() {
    let (one, two) = (start_server().await, start_server().await);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "later.bin", 5000, 5);
    let peer = peer_with(&[&one]).await;
    let file_id = peer.register(&path).await.unwrap();

    assert!(peer.add_index(IndexSpec::at(two.addr)));
    assert!(
        !peer.add_index(IndexSpec::at(two.addr)),
        "one link per address"
    );
    wait_state(&peer, 1, |s| *s == IndexState::Registered).await;
    let client = p2p_peer::index::IndexClient::new(two.addr, PATIENCE, tls());
    let found = client.lookup(&file_id.to_string()).await.unwrap();
    assert_eq!(found.hosts[0].node_id, peer.node_id());
}

#[tokio::test]
async fn a_peer_starts_when_one_of_its_indexes_is_down_and_fails_only_when_all_are() {
    let up = start_server().await;
    let down = start_server().await;
    let down_addr = down.addr;
    down.stop().await;
    let config = PeerConfig {
        indexes: vec![IndexSpec::at(down_addr), IndexSpec::at(up.addr)],
        ..peer_config(loopback0())
    };
    let peer = Peer::start(config, tls()).await.unwrap();
    let status = peer.indexes();
    assert!(matches!(status[0].state, IndexState::Down(_)), "{status:?}");
    assert_eq!(status[1].state, IndexState::Registered);

    let config = PeerConfig {
        indexes: vec![IndexSpec::at(down_addr)],
        ..peer_config(loopback0())
    };
    let err = Peer::start(config, tls()).await.unwrap_err();
    assert!(err.to_string().contains(&down_addr.to_string()), "{err}");
}

#[tokio::test]
async fn an_index_that_hangs_holds_up_neither_start_nor_downloads_nor_shares_nor_shutdown() {
    // Accepts connections and never answers: a machine that froze, a black-holed route.
    let hanging = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            kept.push(stream);
        }
    });
    let real = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "wanted.bin", 2 * 1024 * 1024 + 9, 6);
    let seeder = peer_with(&[&real]).await;
    let file_id = seeder.register(&path).await.unwrap();

    // Waiting for the hanging index would take its whole timeout: far beyond these bounds.
    let config = PeerConfig {
        indexes: vec![IndexSpec::at(hanging_addr), IndexSpec::at(real.addr)],
        index_timeout: Duration::from_secs(600),
        ..peer_config(loopback0())
    };
    let leecher = within("start", Peer::start(config, tls())).await.unwrap();
    assert_eq!(leecher.indexes()[1].state, IndexState::Registered);
    let out = tempfile::tempdir().unwrap();
    let prefix = file_id.to_string()[..10].to_owned();
    let fetch = leecher.download(&prefix, out.path(), None, CancellationToken::new());
    let report = within("a download", fetch).await.unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let (other, _) = random_file(dir.path(), "mine.bin", 1000, 7);
    within("a share", leecher.register(&other)).await.unwrap();
    within("shutdown", leecher.shutdown()).await;
    held.abort();
}

/// `work`, which must not wait for the hanging index (whose timeout is far longer).
async fn within<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for the hanging index"))
}
