//! The real binary, as a user runs it: stdout lines scripts read, one-line errors, exit codes.

use std::process::Command;

use crate::process::{bin, leecher, seed, start_server};
use crate::support::random_file;

#[test]
fn seed_and_download_with_the_binary() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "cli.bin", 9 * 1024 * 1024 + 1, 21);
    let (_seeder, id) = seed(&addr, &path);
    assert_eq!(id.len(), 64);

    let output = leecher(&addr, &id[..10], out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let target = out.path().join("cli.bin");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("downloaded "))
        .expect("downloaded line");
    assert!(
        line.starts_with(&format!(
            "downloaded {} {id} {} in ",
            target.display(),
            data.len()
        )),
        "{line}"
    );
    // IEC units (KiB/s, MiB/s), as everywhere.
    assert!(line.ends_with("iB/s)"), "{line}");
    assert_eq!(std::fs::read(&target).unwrap(), data);

    // Again: the very file is there now, so nothing to fetch, and success.
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().last(),
        Some(format!("already downloaded {} {id}", target.display()).as_str())
    );
    // Another file of that name: a clear one-line error, a non-zero exit, the file untouched.
    std::fs::write(&target, b"mine").unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "error: cannot download {id}: {} already exists and is not this file ({}); it was \
             left as it is: move it away, or download into another folder with --out DIR",
            target.display(),
            &id[..12]
        )
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");
}

#[test]
fn unreachable_server_is_a_one_line_error() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let output = bin()
        .args([
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            "127.0.0.1:9",
            "--download",
            "abcdef",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: cannot reach the index server at 127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_get_clap_errors() {
    let output = bin().args(["peer", "--workers", "0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--workers"));
    let output = bin()
        .args([
            "server",
            "--heartbeat-interval",
            "10s",
            "--heartbeat-timeout",
            "5s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--heartbeat-timeout must be longer"));
}

#[test]
fn sigterm_unregisters_the_peer_and_exits_cleanly() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "t.bin", 1000, 22);
    let (mut seeder, id) = seed(&addr, &path);
    let status = Command::new("kill")
        .args(["-TERM", &seeder.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = seeder.0.wait().unwrap();
    assert!(exit.success(), "peer exited with {exit}");

    // The index no longer lists the file: the peer unregistered before exiting.
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("no file matches {id}")),
        "{stderr}"
    );
}

#[test]
fn a_node_keeps_its_id_and_a_damaged_key_is_an_error_not_a_new_id() {
    let home = tempfile::tempdir().unwrap();
    let id_of = |extra: &[&str]| {
        let output = bin()
            .arg("id")
            .args(extra)
            .env("P2P_IDENTITY_DIR", home.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let peer = id_of(&[]);
    let id: p2p_protocol::NodeId = peer.parse().expect("a valid node id");
    assert_eq!(id.to_string(), peer);
    assert_eq!(id_of(&[]), peer, "the same id on every run");
    let server = id_of(&["--server"]);
    assert_ne!(server, peer, "server and peer have keys of their own");

    // The server says who it is at start.
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"])
        .env("P2P_IDENTITY_DIR", home.path());
    let (_server, line, _out) = crate::process::spawn_until(cmd, "server node id ");
    assert_eq!(line, format!("server node id {server}"));

    // A damaged key is an error, and is left as it is.
    let key = home.path().join("peer.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    let output = bin()
        .arg("id")
        .env("P2P_IDENTITY_DIR", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"-----BEGIN PRIVATE KEY-----\nnot a key\n"
    );
}
