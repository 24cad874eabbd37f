//! The binary as a Unix tool: a closed or full stderr (or a full stdout) never keeps it from
//! stopping, every
//! error is one line a person can act on, and the exit codes are the documented ones.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::process::{Running, bin, exit_within, signal, start_server, wait_exit};
use crate::support::random_file;

/// Generous: a loaded 2-core machine starts and stops a debug binary slowly.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a signalled process may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Starts `cmd` (its stderr set up by the caller) and waits, at most [`START_LIMIT`], for a
/// stdout line starting with `prefix`. A process stuck before it prints fails the test rather
/// than hanging it.
fn start_until(cmd: Command, prefix: &'static str) -> Running {
    start_until_line(cmd, prefix).0
}

/// [`start_until`], with the line.
fn start_until_line(mut cmd: Command, prefix: &'static str) -> (Running, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if line.starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    let running = Running(child);
    let line = rx
        .recv_timeout(START_LIMIT)
        .unwrap_or_else(|_| panic!("no {prefix:?} line within {START_LIMIT:?}"));
    (running, line)
}

/// A serving peer that logs a lot (so it writes to stderr all along).
fn chatty_peer(server: &str) -> Command {
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--server", server])
        .env("RUST_LOG", "debug");
    cmd
}

#[test]
fn a_peer_whose_stderr_pipe_closed_still_stops_on_sigterm() {
    let (_server, addr) = start_server();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = chatty_peer(&addr);
    cmd.stderr(writer);
    let mut peer = start_until(cmd, "peer listening on ");
    // `peer 2>&1 | grep x`, then Ctrl-C: the reader is gone.
    drop(reader);
    signal(&peer.0, "TERM");
    let status = exit_within(&mut peer.0, EXIT_LIMIT).expect("the peer ignored SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_peer_whose_stderr_nobody_reads_still_runs_and_stops_on_sigterm() {
    let (_server, addr) = start_server();
    let (reader, writer) = full_pipe();
    let mut cmd = chatty_peer(&addr);
    cmd.stderr(writer);
    // It starts and says where it listens though every log line waits for stderr.
    let mut peer = start_until(cmd, "peer listening on ");
    signal(&peer.0, "TERM");
    let status = exit_within(&mut peer.0, EXIT_LIMIT).expect("the peer ignored SIGTERM");
    assert!(status.success(), "{status}");
    drop(reader);
}

/// A pipe with no room left: filled through an open file description of our own,
/// non-blocking, so a process given the (blocking) writer finds it full from its first write.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{}", writer.as_raw_fd()))
        .unwrap();
    loop {
        match filler.write(&[b'x'; 4096]) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    (reader, writer)
}

/// `peer --json | script` where the script stopped reading (not closed): its events wait for
/// room, but the first SIGTERM ends the peer promptly all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_peer_whose_stdout_nobody_reads_still_stops_on_sigterm() {
    let server = crate::support::start_server().await;
    let (reader, writer) = full_pipe();
    let mut peer = Running(
        bin()
            .args(["peer", "--json", "--addr", "127.0.0.1:0", "--server"])
            .arg(server.addr.to_string())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Registered: it has started, and its `listening` event now waits for stdout.
    let registered = crate::support::eventually(START_LIMIT, || {
        let peers = server.handle.status().peers;
        async move { peers == 1 }
    })
    .await;
    assert!(
        registered,
        "the peer did not register within {START_LIMIT:?}"
    );
    let mut peer_stderr = peer.0.stderr.take().unwrap();
    signal(&peer.0, "TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = exit_within(&mut peer.0, EXIT_LIMIT);
        (status, peer)
    })
    .await
    .unwrap()
    .0
    .expect("the peer waited for its stdout instead of stopping");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut peer_stderr, &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    drop(reader);
}

/// `cd work && p2p-transfer manifest create ../some/folder`: the manifest file it writes (beside
/// the folder) is one the tool itself then downloads with, for a folder and for a file.
#[test]
fn manifest_create_of_a_path_through_dotdot_writes_a_manifest_the_tool_accepts() {
    let (_server, addr) = start_server();
    let top = tempfile::tempdir().unwrap();
    let folder = top.path().join("some").join("folder");
    std::fs::create_dir_all(folder.join("inner")).unwrap();
    let (_, a) = random_file(&folder, "a.bin", 70_000, 1);
    let (_, b) = random_file(&folder.join("inner"), "b.bin", 1_000, 2);
    let (_, f) = random_file(&top.path().join("some"), "f.bin", 5_000, 3);
    let work = top.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let create = |what: &str| {
        let output = bin()
            .current_dir(&work)
            .args(["manifest", "create", what, "--server", &addr])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        create("../some/folder"),
        "wrote ../some/folder.p2pm (2 files)\n"
    );
    assert!(create("../some/f.bin").starts_with("wrote ../some/f.bin.p2pm "));

    // Someone shares the folder and the file; another downloads each from its manifest file.
    let file = top.path().join("some").join("f.bin");
    let mut seeder = bin();
    seeder
        .args(["peer", "--addr", "127.0.0.1:0", "--server", &addr, "-r"])
        .arg(&folder)
        .arg("-r")
        .arg(&file);
    // The folder's files, the folder, then the file.
    let (_seeder, _, mut lines) =
        crate::process::spawn_until(seeder, &format!("registered {} ", folder.display()));
    crate::process::read_line_starting(&mut lines, &format!("registered {} ", file.display()));
    let out = tempfile::tempdir().unwrap();
    for manifest in ["../some/folder.p2pm", "../some/f.bin.p2pm"] {
        let output = bin()
            .current_dir(&work)
            .args([
                "peer",
                "--addr",
                "127.0.0.1:0",
                "--download",
                manifest,
                "--out",
            ])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{manifest}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(std::fs::read(out.path().join("folder/a.bin")).unwrap(), a);
    assert_eq!(
        std::fs::read(out.path().join("folder/inner/b.bin")).unwrap(),
        b
    );
    assert_eq!(std::fs::read(out.path().join("f.bin")).unwrap(), f);
}

/// The one `error: ` line of a failed run: the last line of stderr, the only error line, no
/// OS error number, exit code 1.
fn error_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    assert!(!errors[0].contains("os error"), "{stderr}");
    errors[0].to_owned()
}

/// A loopback address nothing listens on (bound, then closed).
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn no_index_at_the_address_says_so_once_and_what_to_try() {
    let addr = closed_port();
    let output = bin()
        .args(["search", "--server", &addr, "holiday"])
        .output()
        .unwrap();
    let line = error_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: cannot search for \"holiday\": cannot reach the index server at {addr}: \
             connection I/O failed: Connection refused; is the index server running there \
             (`p2p-transfer server`)?"
        )),
        "{line}"
    );
    assert!(line.contains("--auto-discover"), "{line}");
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
}

#[test]
fn an_address_in_use_says_pick_another_or_port_0() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let server = bin()
        .args(["server", "--no-mdns", "--addr", &addr])
        .output()
        .unwrap();
    let peer = bin()
        .args(["peer", "--server", "127.0.0.1:9", "--addr", &addr])
        .output()
        .unwrap();
    for output in [server, peer] {
        let line = error_line(&output);
        assert!(
            line.starts_with(&format!(
                "error: cannot listen on {addr}: Address already in use; another program"
            )),
            "{line}"
        );
        assert!(line.contains("port 0"), "{line}");
    }
}

#[test]
fn out_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"mine").unwrap();
    let id = "ab".repeat(32);
    let output = bin()
        .args(["peer", "--addr", "127.0.0.1:0", "--from", &closed_port()])
        .args(["--download", &id, "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        error_line(&output),
        format!(
            "error: cannot download {id}: --out {} is a file, not a folder; give --out a folder \
             to download into (a missing one is created)",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

/// Runs `cmd` as an unprivileged user when the tests run as root (root reads everything), with
/// an identity folder that user may write. Returns the folder, to keep alive.
fn unprivileged(cmd: &mut Command) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let identity = tempfile::tempdir().unwrap();
    std::fs::set_permissions(identity.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    cmd.env("P2P_IDENTITY_DIR", identity.path());
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    identity
}

/// A folder anyone may enter and write (the unprivileged user writes manifests there).
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn permission_denied_names_the_path_and_what_to_check() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = open_dir();
    let (file, _) = random_file(dir.path(), "secret.bin", 1000, 4);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = bin();
    cmd.args(["manifest", "create"]).arg(&file);
    let _identity = unprivileged(&mut cmd);
    let line = error_line(&cmd.output().unwrap());
    assert!(
        line.starts_with(&format!(
            "error: cannot describe {0}: cannot open {0}: Permission denied; this user may not \
             use that path: check its owner and mode",
            file.display()
        )),
        "{line}"
    );
}

#[test]
fn an_unreadable_subfolder_is_named_and_the_rest_is_shared() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_server, addr) = start_server();
    let dir = open_dir();
    let album = dir.path().join("album");
    let private = album.join("private");
    std::fs::create_dir_all(&private).unwrap();
    for d in [&album, &private] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    random_file(&album, "a.bin", 1000, 5);
    random_file(&private, "hidden.bin", 1000, 6);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o000)).unwrap();

    // manifest create: a warning naming it, the rest described, success.
    let mut cmd = bin();
    cmd.args(["manifest", "create"]).arg(&album);
    let _identity = unprivileged(&mut cmd);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("wrote {}.p2pm (1 files)\n", album.display())
    );
    assert!(
        stderr.contains(&format!(
            "warning: cannot list {} (Permission denied",
            private.display()
        )),
        "{stderr}"
    );

    // peer --register: the same, and the folder is shared.
    let log = dir.path().join("peer.log");
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--server", &addr, "-r"])
        .arg(&album)
        .stderr(std::fs::File::create(&log).unwrap());
    let _identity = unprivileged(&mut cmd);
    let _peer = start_until(cmd, "registered ");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!(
            "cannot list {} (Permission denied",
            private.display()
        )),
        "{logged}"
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The first line of the log file `log` that `wanted` accepts, waited for (stderr lines are
/// written by a thread of their own, maybe after a stdout line that follows them).
fn logged_line(log: &std::path::Path, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let logged = std::fs::read_to_string(log).unwrap();
        if let Some(line) = logged.lines().find(|l| wanted(l)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "not logged: {logged}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unreadable_file_is_named_and_the_rest_is_sent() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = open_dir();
    // As the warnings name them (links resolved).
    let base = dir.path().canonicalize().unwrap();
    let album = base.join("album");
    std::fs::create_dir(&album).unwrap();
    std::fs::set_permissions(&album, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, a) = random_file(&album, "a.bin", 1000, 7);
    let (_, b) = random_file(&album, "b.bin", 5 * 1024 * 1024 + 9, 8);
    let (secret, _) = random_file(&album, "secret.bin", 1000, 9);
    // And among the paths given: one file readable, one not.
    let (loose, c) = random_file(&base, "loose.bin", 2000, 10);
    let (private, _) = random_file(&base, "private.bin", 2000, 11);
    for file in [&secret, &private] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o000)).unwrap();
    }

    // manifest create: a warning naming the file, the rest described, success.
    let mut cmd = bin();
    cmd.args(["manifest", "create", "--json"]).arg(&album);
    let _identity = unprivileged(&mut cmd);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let written: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(written["files"], 2, "{written}");
    assert!(
        stderr.contains(&format!(
            "warning: cannot open {}: Permission denied",
            secret.display()
        )),
        "{stderr}"
    );

    // send: the warnings name both, the ticket lists the rest.
    let log = dir.path().join("send.log");
    let mut cmd = bin();
    cmd.args(["send", "--addr", "127.0.0.1:0"])
        .args([&album, &loose, &private])
        .stderr(std::fs::File::create(&log).unwrap());
    let _identity = unprivileged(&mut cmd);
    let (mut sender, line) = start_until_line(cmd, "p2p-transfer receive ");
    let ticket: p2p_protocol::Ticket = line
        .trim_start_matches("p2p-transfer receive ")
        .parse()
        .unwrap();
    assert_eq!(ticket.items.len(), 2, "{line}");
    for (path, rest) in [(&secret, "the rest of"), (&private, "the other paths")] {
        let named = format!("cannot open {}: Permission denied", path.display());
        let warning = logged_line(&log, |l| l.contains(&named));
        assert!(warning.contains(&format!("; sharing {rest}")), "{warning}");
    }

    // A receiver gets the rest, byte for byte, and the sender is done.
    let out = tempfile::tempdir().unwrap();
    let mut receiver = bin()
        .args(["receive", &ticket.to_string(), "--out"])
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_exit(&mut receiver, START_LIMIT).success());
    assert_eq!(std::fs::read(out.path().join("album/a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(out.path().join("album/b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(out.path().join("loose.bin")).unwrap(), c);
    assert!(!out.path().join("album/secret.bin").exists());
    assert!(!out.path().join("private.bin").exists());
    assert!(wait_exit(&mut sender.0, START_LIMIT).success());
}

#[test]
fn a_malformed_reply_is_called_that_not_unreachable() {
    // Answers every connection with bytes that are not this protocol.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in fake.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot what you expect\r\n");
        }
    });
    let output = bin()
        .args(["search", "--server", &addr, "holiday"])
        .output()
        .unwrap();
    let line = error_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: cannot search for \"holiday\": the index server at {addr} sent a reply this \
             program cannot read ("
        )),
        "{line}"
    );
    assert!(
        line.ends_with("is that address a p2p-transfer index server of this version?"),
        "{line}"
    );
    assert!(!line.contains("cannot reach"), "{line}");
}

#[test]
fn a_one_shot_command_stopped_by_a_signal_exits_130() {
    // An index that takes the connection and never answers: the search waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let accepted = std::thread::spawn(move || silent.accept().map(|(conn, _)| conn));
    let mut search = bin()
        .args(["search", "--server", &addr, "holiday"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connected: it is waiting for the handshake's answer.
    let _conn = accepted.join().unwrap().unwrap();
    signal(&search, "INT");
    let status = exit_within(&mut search, EXIT_LIMIT).expect("the search ignored Ctrl-C");
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut search.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        stderr.lines().last(),
        Some("error: interrupted"),
        "{stderr}"
    );
}
