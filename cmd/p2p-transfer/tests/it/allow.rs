//! Allow-lists: an index that takes registrations only from listed nodes, a seeder that
//! serves only listed nodes, and a list that takes effect when its file changes.

use std::time::Duration;

use p2p_identity::{AllowList, Allowed};
use p2p_peer::{Peer, PeerError};
use p2p_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::process::{bin, spawn_until};
use crate::support::{
    fast_server_config, loopback0, peer_config, random_file, start_server_on, tls,
};

fn list_of(ids: &[p2p_protocol::NodeId]) -> AllowList {
    let text: String = ids
        .iter()
        .map(|id| format!("{id} a listed node\n"))
        .collect();
    AllowList::parse(&text, std::path::Path::new("allow")).unwrap()
}

#[tokio::test]
async fn an_index_with_an_allow_list_refuses_an_unknown_peer_but_answers_its_questions() {
    let (listed, stranger) = (tls(), tls());
    let config = p2p_central_server::ServerConfig {
        allow_peers: Allowed::only(list_of(&[listed.node_id()])),
        ..fast_server_config()
    };
    let server = start_server_on(loopback0(), config).await;
    let peer = Peer::start(peer_config(server.addr), listed).await.unwrap();
    assert!(peer.session().is_some());

    let refused = Peer::start(peer_config(server.addr), stranger.clone()).await;
    match refused {
        Err(PeerError::IndexRefused { code, message }) => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert_eq!(
                message.to_string(),
                format!(
                    "this index accepts registrations only from the nodes on its allow-list, \
                     and yours ({}) is not on it; ask its operator to add it",
                    stranger.node_id()
                )
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Questions stay open to anyone.
    let client =
        p2p_peer::index::IndexClient::new(server.addr, Duration::from_secs(5), stranger.clone());
    client.list_files().await.unwrap();
    // But not a Probe: the index connects out for nodes on its list only.
    let (mut conn, _) = p2p_transport::connect::<p2p_protocol::IndexConversation>(
        &stranger,
        server.addr,
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let reply = conn
        .request(
            &p2p_protocol::IndexRequest::Probe { port: 9 },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            p2p_protocol::IndexResponse::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{reply:?}"
    );
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_with_an_allow_list_serves_only_the_nodes_on_it() {
    let server = start_server_on(loopback0(), fast_server_config()).await;
    let (friend, stranger) = (tls(), tls());
    let seeder = Peer::start(
        p2p_peer::PeerConfig {
            allow_peers: Allowed::only(list_of(&[friend.node_id()])),
            ..peer_config(server.addr)
        },
        tls(),
    )
    .await
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "private.bin", 300_000, 5);
    let id = seeder.register(&path).await.unwrap();

    // The stranger first: once the friend has the file, it shares it too.
    let stranger = Peer::start(peer_config(server.addr), stranger.clone())
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = stranger
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("this peer serves only the nodes on its allow-list")
            && err.contains(&stranger.node_id().to_string()),
        "{err}"
    );
    assert!(
        !out.path().join("private.bin").exists(),
        "a refused download produced the file"
    );
    let friend = Peer::start(peer_config(server.addr), friend).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = friend
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);

    for peer in [stranger, friend, seeder] {
        peer.shutdown().await;
    }
}

/// `p2p-transfer id` for the identity in `dir` (created on the way).
fn node_id_of(dir: &std::path::Path) -> String {
    let out = bin()
        .env("P2P_IDENTITY_DIR", dir)
        .arg("id")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_index_takes_a_node_added_to_its_allow_list_file_while_it_runs() {
    let lists = tempfile::tempdir().unwrap();
    let file = lists.path().join("allowed-peers");
    std::fs::write(&file, "# nobody yet\n").unwrap();
    let mut cmd = bin();
    cmd.args([
        "server",
        "--addr",
        "127.0.0.1:0",
        "--no-mdns",
        "--allow-peers",
    ])
    .arg(&file);
    let (_server, line, _) = spawn_until(cmd, "server listening on ");
    let addr = line.trim_start_matches("server listening on ").to_owned();

    let me = crate::support::fresh_identity_dir();
    let my_id = node_id_of(&me);
    // A peer that registers, then (after its registration is through) prints its address.
    let start_peer = || {
        let mut cmd = bin();
        cmd.env("P2P_IDENTITY_DIR", &me)
            .args(["peer", "--addr", "127.0.0.1:0", "--server", &addr]);
        cmd
    };
    let refused = start_peer().output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("and yours ({my_id}) is not on it")),
        "{err}"
    );

    // Added, with an editor's replace-by-rename: the server reads it again by itself.
    let tmp = lists.path().join(".allowed-peers.swp");
    std::fs::write(&tmp, format!("{my_id} my laptop\n")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    // Each try is a peer that either registers (and prints its node id) or exits refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = crate::process::Running(
            start_peer()
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        if line.starts_with("peer node id ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never took the node added to its allow-list"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_node_taken_off_the_index_allow_list_loses_its_registration() {
    let node = tls();
    let allowed = Allowed::only(list_of(&[node.node_id()]));
    let config = p2p_central_server::ServerConfig {
        allow_peers: allowed.clone(),
        ..fast_server_config()
    };
    let server = start_server_on(loopback0(), config).await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "shared.bin", 1000, 9);
    let peer = Peer::start(peer_config(server.addr), node).await.unwrap();
    let id = peer.register(&path).await.unwrap();
    assert_eq!(server.handle.status().peers, 1);

    // The operator takes it off the list: gone at its next heartbeat, with its file.
    allowed.replace(list_of(&[]));
    let gone = crate::support::eventually(Duration::from_secs(10), || async {
        server.handle.status().peers == 0
    })
    .await;
    assert!(
        gone,
        "the node's registration outlived its place on the allow-list"
    );
    let client = p2p_peer::index::IndexClient::new(server.addr, Duration::from_secs(5), tls());
    assert!(client.lookup(&id.to_string()).await.is_err());
    peer.shutdown().await;
}
