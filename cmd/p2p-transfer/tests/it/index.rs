//! The index's soft state over time: silent peers are dropped, and a restarted index is whole
//! again within a heartbeat interval because peers re-register by themselves.

use std::time::Duration;

use p2p_peer::index::IndexClient;

use crate::support::{
    eventually, fast_server_config, random_file, start_peer, start_server, start_server_on,
};

#[tokio::test]
async fn peer_that_stops_heartbeating_is_dropped_with_its_files() {
    let server = start_server().await;
    let client = IndexClient::new(server.addr, Duration::from_secs(5), crate::support::tls());
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
    let client = IndexClient::new(server.addr, Duration::from_secs(5), crate::support::tls());
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
    let peer = p2p_peer::Peer::start(config, crate::support::tls())
        .await
        .unwrap();
    let session = peer.session().unwrap();
    // Never the unspecified address: the one the index saw us come from, with our port.
    assert_eq!(session.addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(session.addr.port(), peer.local_addr().port());
    peer.shutdown().await;
}

/// Clients on one address (a new node each time) that register over and over, keeping only the peer ids that sort
/// before the real seeder's and adding the file under each with a dead port, must not push the
/// seeder out of `Found`: the download still completes. It plants more hosts than a `Found`
/// lists, so the index has to choose (ordered by peer id, the seeder would never be offered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_from_one_address_cannot_hide_the_seeder() {
    use p2p_protocol::{IndexRequest, IndexResponse, MAX_HOSTS_PER_LOOKUP};

    /// Hosts the attacker plants, all with ids below the seeder's: more than `Found` lists.
    const PLANTED: usize = MAX_HOSTS_PER_LOOKUP + 44;
    let config = p2p_central_server::ServerConfig {
        // An operator who lets a big NAT register many peers; the attacker is behind it.
        max_peers_per_ip: 400,
        // Never in the way of the attacker's churn: the test is about the choice of hosts.
        register_rate_per_ip: 1_000_000,
        heartbeat_interval: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs(60),
        ..fast_server_config()
    };
    let server = crate::support::start_server_on(crate::support::loopback0(), config).await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "wanted.bin", 300_000, 7);
    // A seeder whose id is in the upper half, so that half of the ids the attacker draws sort
    // before it and it plants its hosts in a bounded number of tries.
    let mut seeder = None;
    for _ in 0..64 {
        let peer = start_peer(server.addr).await;
        if peer.session().unwrap().peer_id.0 >= 1 << 63 {
            seeder = Some(peer);
            break;
        }
        peer.shutdown().await;
    }
    let seeder = seeder.expect("64 peer ids in a row in the lower half");
    let id = seeder.register(&path).await.unwrap();
    let seeder_id = seeder.session().unwrap().peer_id;
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;

    // The attacker, from another loopback address, as many nodes (a node holds one
    // registration): each registers, and keeps it if its id sorts before the seeder's.
    let t = Duration::from_secs(5);
    let dead: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut kept = Vec::new();
    for _ in 0..20 * PLANTED {
        if kept.len() == PLANTED {
            break;
        }
        let mut attacker = crate::support::index_connection_from([127, 0, 0, 2], server.addr).await;
        match attacker
            .request(&IndexRequest::Register { addr: dead }, t)
            .await
            .unwrap()
        {
            IndexResponse::Registered { peer_id, .. } if peer_id < seeder_id => {
                let reply = attacker
                    .request(
                        &IndexRequest::AddFile {
                            peer_id,
                            manifest: manifest.clone(),
                        },
                        t,
                    )
                    .await
                    .unwrap();
                assert!(
                    matches!(reply, IndexResponse::FileAdded { .. }),
                    "{reply:?}"
                );
                kept.push(peer_id);
            }
            IndexResponse::Registered { peer_id, .. } => {
                let reply = attacker
                    .request(&IndexRequest::Unregister { peer_id }, t)
                    .await
                    .unwrap();
                assert!(matches!(reply, IndexResponse::Unregistered {}), "{reply:?}");
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(
        kept.len(),
        PLANTED,
        "the attacker could not plant its hosts"
    );

    let client = IndexClient::new(server.addr, t, crate::support::tls());
    let found = client.lookup(&id.to_string()).await.unwrap();
    assert_eq!(
        found.hosts.len(),
        MAX_HOSTS_PER_LOOKUP,
        "the index did not choose"
    );
    assert!(
        found.hosts.iter().any(|h| h.peer_id == seeder_id),
        "the seeder is missing from Found ({} hosts, {} planted by the attacker)",
        found.hosts.len(),
        kept.len()
    );
    let leecher = start_peer(server.addr).await;
    let report = leecher
        .download(
            &id.to_string(),
            out.path(),
            None,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    leecher.shutdown().await;
    seeder.shutdown().await;
}

/// One address whose several nodes register a peer each and add the largest manifests it can gets
/// `limit_exceeded` once its peers hold its share, the index stays within its budget, and a
/// peer on another address can still share a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_index_with_manifests() {
    use p2p_protocol::{
        CHUNK_SIZE, ErrorCode, FileManifest, IndexRequest, IndexResponse, MAX_CHUNKS_PER_FILE,
        Sha256Hash,
    };

    const MIB: usize = 1024 * 1024;
    let config = p2p_central_server::ServerConfig {
        max_index_bytes: 12 * MIB,
        max_index_bytes_per_ip: 6 * MIB,
        max_index_bytes_per_peer: 4 * MIB,
        heartbeat_timeout: Duration::from_secs(60),
        ..fast_server_config()
    };
    let server = crate::support::start_server_on(crate::support::loopback0(), config.clone()).await;
    let t = Duration::from_secs(10);
    let mut added = 0;
    let mut refusals = Vec::new();
    // Four nodes on the one address (a node holds one registration).
    let mut nodes = Vec::new();
    for p in 0..4u8 {
        nodes.push(crate::support::index_connection_from([127, 0, 0, 2], server.addr).await);
        let hostile = nodes.last_mut().unwrap();
        let IndexResponse::Registered { peer_id, .. } = hostile
            .request(
                &IndexRequest::Register {
                    addr: "127.0.0.2:1".parse().unwrap(),
                },
                t,
            )
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        for f in 0..4u8 {
            // The largest manifest allowed: 32,768 chunk hashes, about 1.1 MB on the wire.
            let manifest = FileManifest {
                name: format!("big-{p}-{f}.bin"),
                size: u64::from(MAX_CHUNKS_PER_FILE) * u64::from(CHUNK_SIZE),
                chunk_size: CHUNK_SIZE,
                chunks: vec![Sha256Hash([p * 16 + f; 32]); MAX_CHUNKS_PER_FILE as usize],
            };
            let request = IndexRequest::AddFile { peer_id, manifest };
            match hostile.request(&request, t).await.unwrap() {
                IndexResponse::FileAdded { .. } => added += 1,
                IndexResponse::Error {
                    code: ErrorCode::LimitExceeded,
                    message,
                } => refusals.push(message),
                other => panic!("unexpected reply {other:?}"),
            }
            let status = server.handle.status();
            assert!(
                status.stored_bytes <= config.max_index_bytes_per_ip,
                "the index stores {} bytes for one address",
                status.stored_bytes
            );
        }
    }
    assert_eq!(added, 5, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .any(|m| m.contains("your address may store at most 6 MiB of manifests")),
        "{refusals:?}"
    );

    // A peer on another address shares a file as usual.
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "legit.bin", 100_000, 3);
    let peer = start_peer(server.addr).await;
    let id = peer.register(&path).await.unwrap();
    let client = IndexClient::new(server.addr, t, crate::support::tls());
    assert_eq!(client.lookup(&id.to_string()).await.unwrap().file_id, id);
    assert!(server.handle.status().stored_bytes <= config.max_index_bytes);
    peer.shutdown().await;
}

/// The index client's folder and batch calls against a real index: a folder's file list
/// larger than one frame goes in several `AddFolderFiles` requests, the folder, a prefix of
/// its id and a file inside it are found, a search finds that file by name with its path,
/// and a batch of files larger than one `AddFiles` goes in several.
#[tokio::test]
async fn folders_and_batches_go_through_the_index_client() {
    use p2p_peer::index::Located;
    use p2p_protocol::{CHUNK_SIZE, FileManifest, Sha256Hash};

    let config = p2p_central_server::ServerConfig {
        // Registered by hand and never heartbeating: it must outlive the test.
        heartbeat_timeout: Duration::from_secs(120),
        ..fast_server_config()
    };
    let server = start_server_on(crate::support::loopback0(), config).await;
    let client = IndexClient::new(server.addr, Duration::from_secs(10), crate::support::tls());
    let session = client
        .register("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    let manifest = |name: String, seed: usize| FileManifest {
        name,
        size: 10,
        chunk_size: CHUNK_SIZE,
        chunks: vec![Sha256Hash::of(&seed.to_be_bytes())],
    };
    // 30,000 files with long paths: about 4 MB of pages, three frames' worth.
    const FILES: usize = 30_000;
    let files = (0..FILES)
        .map(|i| {
            let name = format!("picture-{i:05}.jpg");
            let path = format!("{}/{}/{name}", "a-long-folder-name".repeat(3), i / 500);
            (path, manifest(name, i))
        })
        .collect();
    let (head, pages) = p2p_protocol::folder::build("album", files).unwrap();
    let refs: Vec<_> = pages
        .iter()
        .map(|p| p2p_protocol::folder::refs(p).unwrap())
        .collect();
    let folder_id = client.add_folder(&session, head.clone()).await.unwrap();
    assert_eq!(folder_id, head.id());
    let known = client
        .add_folder_files(&session, folder_id, 0, &refs)
        .await
        .unwrap();
    assert_eq!(known, FILES as u64);
    // Sent again from page 5: harmless.
    let again = client
        .add_folder_files(&session, folder_id, 5, &refs[5..7])
        .await
        .unwrap();
    assert_eq!(again, FILES as u64);

    for typed in [
        folder_id.to_string(),
        folder_id.to_string()[..10].to_owned(),
    ] {
        match client.locate(&typed).await.unwrap() {
            Located::Folder {
                folder_id: found,
                head: got,
                hosts,
            } => {
                assert_eq!((found, &got, hosts.len()), (folder_id, &head, 1));
            }
            other => panic!("{other:?}"),
        }
    }
    let inside = &refs[20][3];
    match client.locate(&inside.file_id.to_string()).await.unwrap() {
        Located::InFolder {
            file_id,
            folder_id: found,
            path,
            size,
            hosts,
        } => {
            assert_eq!(
                (file_id, found, &path, size, hosts.len()),
                (inside.file_id, folder_id, &inside.path, 10, 1)
            );
        }
        other => panic!("{other:?}"),
    }
    // Not a file on its own: `lookup` says so.
    let err = client
        .lookup(&inside.file_id.to_string())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is a folder or a file inside one"),
        "{err}"
    );
    let name = inside.path.rsplit('/').next().unwrap();
    let (found, total) = client.search(&name.to_uppercase()).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        found[0].path.as_deref(),
        Some(&*format!("album/{}", inside.path))
    );
    let (listed, _) = client.list_files().await.unwrap();
    assert_eq!(listed[0].files, Some(FILES as u64));

    // 2,500 top-level files: three `AddFiles` of at most 1,000.
    let manifests: Vec<_> = (0..2500)
        .map(|i| manifest(format!("top-{i}.bin"), FILES + i))
        .collect();
    let ids = client.add_files(&session, manifests.clone()).await.unwrap();
    assert_eq!(ids.len(), 2500);
    assert!(ids.iter().zip(&manifests).all(|(id, m)| *id == m.id()));
    let found = client.lookup(&ids[2499].to_string()).await.unwrap();
    assert_eq!(found.manifest, manifests[2499]);

    client.remove_folder(&session, folder_id).await.unwrap();
    assert!(client.locate(&folder_id.to_string()).await.is_err());
    assert!(client.locate(&inside.file_id.to_string()).await.is_err());
    client.unregister(&session).await.unwrap();
    assert_eq!(server.handle.status().stored_bytes, 0);
}
