//! Discovery over mDNS, each test in its own network namespace (see `netns`): a transfer
//! between auto-discovering peers, two servers told apart, a server that moves, no server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns;
use crate::process::{Running, bin, read_line_starting, spawn_until};
use crate::support::random_file;

/// A server advertising over mDNS (loopback only: it listens on 127.0.0.1). Returns it, its
/// address and its instance name.
fn mdns_server(extra: &[&str]) -> (Running, String, String) {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0"]).args(extra);
    let (child, line, mut out) = spawn_until(cmd, "server listening on ");
    let addr = line.trim_start_matches("server listening on ").to_owned();
    let ad = read_line_starting(&mut out, "advertising over mDNS as ");
    let instance = ad
        .trim_start_matches("advertising over mDNS as ")
        .trim_matches('"')
        .to_owned();
    (child, addr, instance)
}

/// A seeder that finds the server by itself. Returns it, the file id, and its stdout so far.
fn discovering_seeder(path: &Path, extra: &[&str]) -> (Running, String, Vec<String>) {
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--auto-discover"])
        .args(extra)
        .arg("--register")
        .arg(path);
    let (child, first, mut out) = spawn_until(cmd, "found ");
    let mut lines = vec![first];
    let registered = read_line_starting(&mut out, "registered ");
    lines.push(registered.clone());
    let id = registered.rsplit(' ').next().unwrap().to_owned();
    (child, id, lines)
}

fn discovering_download(id: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args([
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--auto-discover",
            "--download",
            id,
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn peers_find_the_server_and_transfer() {
    if !netns::enter("mdns::peers_find_the_server_and_transfer") {
        return;
    }
    let (_server, addr, instance) = mdns_server(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "found.bin", 6 * 1024 * 1024, 31);
    let (_seeder, id, lines) = discovering_seeder(&path, &[]);
    assert_eq!(
        lines[0],
        format!("found index server {instance:?} at {addr}")
    );

    let output = discovering_download(&id, out.path(), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("found index server {instance:?} at {addr}")),
        "{stdout}"
    );
    assert_eq!(std::fs::read(out.path().join("found.bin")).unwrap(), data);
}

#[test]
fn two_servers_on_one_host_are_told_apart() {
    if !netns::enter("mdns::two_servers_on_one_host_are_told_apart") {
        return;
    }
    let (_a, addr_a, name_a) = mdns_server(&[]);
    let (_b, addr_b, name_b) = mdns_server(&[]);
    assert_ne!(name_a, name_b, "instance names must differ");
    netns::wait_for_index_servers(2);
    let (first, second) = if name_a < name_b {
        ((&name_a, &addr_a), (&name_b, &addr_b))
    } else {
        ((&name_b, &addr_b), (&name_a, &addr_a))
    };

    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "two.bin", 1000, 32);
    // Without a name: both listed.
    let (_p1, _, lines) = discovering_seeder(&path, &[]);
    assert!(lines[0].starts_with("found 2 index servers: "), "{lines:?}");
    assert!(
        lines[0].contains(name_a.as_str()) && lines[0].contains(name_b.as_str()),
        "{lines:?}"
    );
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--auto-discover"]);
    // Without a name a peer registers with both, the first by name first.
    let (_p2, using, _) = spawn_until(cmd, "registering with every one");
    assert!(
        using.starts_with(&format!(
            "registering with every one, {:?} at {} first",
            first.0, first.1
        )),
        "{using}"
    );

    // Named: the other one only.
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--auto-discover",
        "--server-name",
        second.0,
    ]);
    let (_p3, using, _) = spawn_until(cmd, "using ");
    assert!(
        using.starts_with(&format!("using {:?} at {}", second.0, second.1)),
        "{using}"
    );
}

#[test]
fn server_restarted_on_another_port_is_found_again() {
    if !netns::enter("mdns::server_restarted_on_another_port_is_found_again") {
        return;
    }
    // The same server (the same key) comes back on another port: the peer, which requires
    // the id the server proved (and claimed over mDNS), takes it back.
    let identity = crate::support::fresh_identity_dir();
    let identity = identity.to_str().unwrap();
    let timing = [
        "--heartbeat-interval",
        "300ms",
        "--heartbeat-timeout",
        "1s",
        "--identity-dir",
        identity,
    ];
    let (mut first, first_addr, _) = mdns_server(&timing);
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "moved.bin", 5 * 1024 * 1024, 33);
    let (_seeder, id, _) = discovering_seeder(&path, &[]);

    // A clean stop withdraws the advertisement; the new server gets another port.
    let pid = first.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    first.0.wait().unwrap();
    let (_second, second_addr, _) = mdns_server(&timing);
    assert_ne!(first_addr, second_addr);

    // The seeder notices the lost heartbeats, browses, and registers its file with the new
    // server by itself; a fresh leecher can then download it.
    let started = Instant::now();
    let out = tempfile::tempdir().unwrap();
    loop {
        let output = discovering_download(&id, out.path(), &["--discover-timeout", "2s"]);
        if output.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "seeder never re-registered: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "seeder re-registered {:?} after the restart",
        started.elapsed()
    );
    assert_eq!(std::fs::read(out.path().join("moved.bin")).unwrap(), data);
}

#[test]
fn no_server_is_a_clear_error_within_the_timeout() {
    if !netns::enter("mdns::no_server_is_a_clear_error_within_the_timeout") {
        return;
    }
    let started = Instant::now();
    let output = bin()
        .args([
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--auto-discover",
            "--discover-timeout",
            "1s",
            "--download",
            "abcdef",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: no p2p-transfer index server answered on the local network within 1s; "
        ),
        "{stderr}"
    );
    assert!(last.contains("--server ADDR"), "{last}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}
