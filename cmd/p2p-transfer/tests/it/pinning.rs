//! The index is pinned: `--server-id` refuses any other index, a peer remembers the index it
//! met (per address) and refuses another key there until told to accept it, and over mDNS an
//! index it has met wins over one whose name sorts first.

use std::path::Path;
use std::process::{Command, Output};

use crate::netns;
use crate::process::{Running, bin, read_line_starting, spawn_until};

/// An index server process (no mDNS, unless `mdns`) on `addr`, with its own identity. Returns
/// it, its address and its node id.
fn index_server(addr: &str, mdns: bool) -> (Running, String, String) {
    let mut cmd = bin();
    cmd.args(["server", "--addr", addr]);
    if !mdns {
        cmd.arg("--no-mdns");
    }
    let (child, line, mut out) = spawn_until(cmd, "server node id ");
    let id = line.trim_start_matches("server node id ").to_owned();
    let listening = read_line_starting(&mut out, "server listening on ");
    let addr = listening
        .trim_start_matches("server listening on ")
        .to_owned();
    if mdns {
        read_line_starting(&mut out, "advertising over mDNS as ");
    }
    (child, addr, id)
}

/// `p2p-transfer search <words> ARGS` as the node whose identity is in `identity`.
fn search(identity: &Path, args: &[&str]) -> Output {
    let mut cmd: Command = bin();
    cmd.env("P2P_IDENTITY_DIR", identity)
        .args(["search", "anything"])
        .args(args);
    cmd.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Some valid node id that no server in these tests has.
fn another_id() -> String {
    p2p_protocol::NodeId([42; 20]).to_string()
}

#[test]
fn a_wrong_server_id_is_refused_and_the_right_one_accepted() {
    let (_server, addr, id) = index_server("127.0.0.1:0", false);
    let me = crate::support::fresh_identity_dir();
    let wrong = another_id();
    let refused = search(&me, &["--server", &addr, "--server-id", &wrong]);
    assert!(!refused.status.success());
    assert_eq!(
        stderr(&refused).lines().last().unwrap(),
        format!(
            "error: cannot search for \"anything\": refused the index server at {addr}: it \
             proved node id {id}, not {wrong} (the id given with --server-id); someone else \
             may be answering at that address. If the index really has a new key, check its \
             id on its machine (`p2p-transfer id --server`) and accept it with --server-id {id}"
        )
    );
    // Typed loosely (lower case, no dashes), the right id is accepted.
    let typed = id.replace('-', "").to_lowercase();
    let accepted = search(&me, &["--server", &addr, "--server-id", &typed]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
}

#[test]
fn a_changed_index_key_is_refused_until_the_user_accepts_it() {
    let me = crate::support::fresh_identity_dir();
    let (first, addr, old_id) = index_server("127.0.0.1:0", false);
    // First meeting: trusted, and remembered.
    let met = search(&me, &["--server", &addr]);
    assert!(met.status.success(), "{}", stderr(&met));
    let known = std::fs::read_to_string(me.join("known-indexes")).unwrap();
    assert!(known.contains(&format!("{addr} {old_id}")), "{known}");
    drop(first);

    // Another index (another key) at the same address.
    let (_second, again, new_id) = index_server(&addr, false);
    assert_eq!(again, addr);
    assert_ne!(new_id, old_id);
    let refused = search(&me, &["--server", &addr]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "refused the index server at {addr}: it proved node id {new_id}, not {old_id} \
             (the id remembered in {})",
            me.join("known-indexes").display()
        )) && err.contains(&format!("accept it with --server-id {new_id}")),
        "{err}"
    );

    // Accepted deliberately: from then on the new key is the one trusted there.
    let accepted = search(&me, &["--server", &addr, "--server-id", &new_id]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    let later = search(&me, &["--server", &addr]);
    assert!(later.status.success(), "{}", stderr(&later));
    let known = std::fs::read_to_string(me.join("known-indexes")).unwrap();
    assert!(
        known.contains(&format!("{addr} {new_id}")) && !known.contains(&old_id),
        "{known}"
    );
}

/// A peer that has met the real index keeps using it when a rogue index appears whose
/// instance name sorts first; a peer that has met neither takes the first by name (which is
/// why the rogue sorts first); a peer given `--server-id` of the real one uses it too.
#[test]
fn a_rogue_index_that_sorts_first_does_not_capture_a_peer_that_met_the_real_one() {
    if !netns::enter(
        "pinning::a_rogue_index_that_sorts_first_does_not_capture_a_peer_that_met_the_real_one",
    ) {
        return;
    }
    // A fresh network namespace: both ports are free, and ":10000" sorts before ":20000".
    let (_real, real_addr, real_id) = index_server("127.0.0.1:20000", true);
    let me = crate::support::fresh_identity_dir();
    let met = search(&me, &["--auto-discover"]);
    assert!(met.status.success(), "{}", stderr(&met));

    let (_rogue, rogue_addr, rogue_id) = index_server("127.0.0.1:10000", true);
    let peer = |identity: &Path, extra: &[&str]| {
        let mut cmd = bin();
        cmd.env("P2P_IDENTITY_DIR", identity)
            .args(["peer", "--addr", "127.0.0.1:0", "--auto-discover"])
            .args(extra);
        let (child, line, _) = spawn_until(cmd, "index server node id ");
        (
            child,
            line.trim_start_matches("index server node id ").to_owned(),
        )
    };
    let (_p1, used) = peer(&me, &[]);
    assert_eq!(
        used, real_id,
        "the peer that met {real_addr} was captured by {rogue_addr}"
    );

    let stranger = crate::support::fresh_identity_dir();
    let (_p2, used) = peer(&stranger, &[]);
    assert_eq!(
        used, rogue_id,
        "the rogue does not sort first: this test proves nothing"
    );

    let pinned = crate::support::fresh_identity_dir();
    let (_p3, used) = peer(&pinned, &["--server-id", &real_id]);
    assert_eq!(used, real_id);
}

/// A manifest file records the index's node id (the one its writer met, or the one given),
/// and a download with it refuses an index at that address that shows another.
#[test]
fn a_manifest_file_pins_the_index_it_names() {
    let (_server, addr, id) = index_server("127.0.0.1:0", false);
    let src = tempfile::tempdir().unwrap();
    let (path, _) = crate::support::random_file(src.path(), "pinned.bin", 1000, 3);

    // A seeder writes it with the id its own handshake showed.
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        &addr,
        "--write-manifest",
    ])
    .arg("--register")
    .arg(&path);
    let (_seeder, _, mut out) = spawn_until(cmd, "registered ");
    read_line_starting(&mut out, "wrote ");
    let written = std::fs::read_to_string(src.path().join("pinned.bin.p2pm")).unwrap();
    assert!(written.contains(&format!("\"{addr} {id}\"")), "{written}");

    // One naming another id at that address: the download refuses the index.
    let forged = src.path().join("forged.p2pm");
    let made = bin()
        .args([
            "manifest",
            "create",
            "--server",
            &addr,
            "--server-id",
            &another_id(),
            "-o",
        ])
        .arg(&forged)
        .arg(&path)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let out = tempfile::tempdir().unwrap();
    let refused = bin()
        .args(["peer", "--addr", "127.0.0.1:0", "--download"])
        .arg(&forged)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "refused the index server at {addr}: it proved node id {id}, not {} (the id named \
             in {})",
            another_id(),
            forged.display()
        )),
        "{err}"
    );
    assert!(!out.path().join("pinned.bin").exists());
}

/// A rogue that advertises the real index's id (ids are public) from its own address, with a
/// name that sorts first, is chosen for the id it claims, fails to prove it, and is passed
/// over: the peer registers with the real index. A peer that names the rogue is refused.
#[test]
fn a_rogue_that_claims_the_real_index_id_over_mdns_is_passed_over() {
    if !netns::enter("pinning::a_rogue_that_claims_the_real_index_id_over_mdns_is_passed_over") {
        return;
    }
    let (_real, _, real_id) = index_server("127.0.0.1:20000", true);
    let me = crate::support::fresh_identity_dir();
    let met = search(&me, &["--auto-discover"]);
    assert!(met.status.success(), "{}", stderr(&met));

    // The rogue: an index of its own (another key), advertised by hand with the real id.
    let (_rogue, rogue_addr, rogue_id) = index_server("127.0.0.1:10000", false);
    let _ad = p2p_discovery::Advertisement::start(&p2p_discovery::AdvertiseConfig {
        port: 10000,
        ip: Some("127.0.0.1".parse().unwrap()),
        server_id: real_id.clone(),
        protocol_version: p2p_protocol::PROTOCOL_VERSION,
        interfaces: p2p_discovery::Interfaces::LoopbackOnly,
    })
    .unwrap();
    netns::wait_for_index_servers(2);
    let peer = |identity: &Path, extra: &[&str]| {
        let mut cmd = bin();
        cmd.env("P2P_IDENTITY_DIR", identity)
            .args(["peer", "--addr", "127.0.0.1:0", "--auto-discover"])
            .args(extra);
        cmd
    };
    // Both answers claim the real id and the rogue's name sorts first: it is tried, fails to
    // prove the id, and the real index is used. Also for a peer that never met either.
    for identity in [me.clone(), crate::support::fresh_identity_dir()] {
        let (_p, used, _) = spawn_until(peer(&identity, &[]), "index server node id ");
        assert_eq!(
            used.trim_start_matches("index server node id "),
            real_id,
            "captured by the rogue at {rogue_addr}"
        );
    }
    // Named by hand, the rogue is refused, never used.
    let refused = peer(
        &me,
        &["--server-name", ":10000", "--download", "abcdef123456"],
    )
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "claims node id {real_id} over mDNS, but: the node at this address is {rogue_id}"
        )),
        "{err}"
    );
}
