//! The index's soft state over time: silent peers are dropped, and a restarted index is whole
//! again within a heartbeat interval because peers re-register by themselves.

use std::time::Duration;

use p2p_peer::index_client::IndexClient;

use crate::support::{
    eventually, fast_server_config, random_file, start_peer, start_server, start_server_on,
};

#[tokio::test]
async fn peer_that_stops_heartbeating_is_dropped_with_its_files() {
    let server = start_server().await;
    let client = IndexClient::new(server.addr, Duration::from_secs(5));
    // Registered by hand and never heartbeating, like a crashed peer.
    let session = client
        .register("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "gone.bin", 100, 1);
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
    let id = client.add_file(&session, manifest).await.unwrap();
    assert_eq!(client.list_peers().await.unwrap().1, 1);

    // A live peer alongside it must survive the same period.
    let live = start_peer(server.addr).await;
    let timeout = fast_server_config().heartbeat_timeout;
    let gone = eventually(timeout * 4, || async {
        client.lookup(&id.to_string()).await.is_err()
    })
    .await;
    assert!(gone, "silent peer's file still listed");
    let (peers, total) = client.list_peers().await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(peers[0].peer_id, live.session().unwrap().peer_id);
    // The dropped peer's next heartbeat tells it to register again.
    let err = client.heartbeat(&session).await.unwrap_err();
    assert!(err.to_string().contains("register again"), "{err}");
    live.shutdown().await;
}

#[tokio::test]
async fn restarted_index_is_rebuilt_by_the_peers() {
    let server = start_server().await;
    let addr = server.addr;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "r.bin", 1000, 2);
    let seeder = start_peer(addr).await;
    let id = seeder.register(&path).await.unwrap();
    server.stop().await;

    // Same address, empty index.
    let server = start_server_on(addr, fast_server_config()).await;
    let client = IndexClient::new(server.addr, Duration::from_secs(5));
    assert!(client.lookup(&id.to_string()).await.is_err());
    let interval = fast_server_config().heartbeat_interval;
    let back = eventually(interval * 3, || async {
        client.lookup(&id.to_string()).await.is_ok()
    })
    .await;
    assert!(
        back,
        "seeder did not re-register its file within a few heartbeats"
    );
    let found = client.lookup(&id.to_string()).await.unwrap();
    assert_eq!(found.hosts[0].addr, seeder.local_addr());
    seeder.shutdown().await;
}

#[tokio::test]
async fn peer_on_all_interfaces_is_advertised_at_a_reachable_address() {
    let server = start_server().await;
    let mut config = crate::support::peer_config(server.addr);
    config.listen_addr = "0.0.0.0:0".parse().unwrap();
    let peer = p2p_peer::Peer::start(config).await.unwrap();
    let session = peer.session().unwrap();
    // Never the unspecified address: the one the index saw us come from, with our port.
    assert_eq!(session.addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(session.addr.port(), peer.local_addr().port());
    peer.shutdown().await;
}
