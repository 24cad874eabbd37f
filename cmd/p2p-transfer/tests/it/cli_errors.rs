//! The binary as a Unix tool: a closed or full stderr never keeps it from stopping, every
//! error is one line a person can act on, and the exit codes are the documented ones.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::process::{Running, bin, start_server};
use crate::support::random_file;

/// Generous: a loaded 2-core machine starts and stops a debug binary slowly.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a signalled process may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Waits (polling) until `child` exits, at most `limit`; its status, or `None`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `cmd` (its stderr set up by the caller) and waits, at most [`START_LIMIT`], for a
/// stdout line starting with `prefix`. A process stuck before it prints fails the test rather
/// than hanging it.
fn start_until(mut cmd: Command, prefix: &'static str) -> Running {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if line.starts_with(prefix) {
                let _ = tx.send(());
            }
        }
    });
    let running = Running(child);
    assert!(
        rx.recv_timeout(START_LIMIT).is_ok(),
        "no {prefix:?} line within {START_LIMIT:?}"
    );
    running
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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
    sigterm(&peer.0);
    let status = exit_within(&mut peer.0, EXIT_LIMIT).expect("the peer ignored SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_peer_whose_stderr_nobody_reads_still_runs_and_stops_on_sigterm() {
    let (_server, addr) = start_server();
    let (reader, writer) = std::io::pipe().unwrap();
    // Fill the pipe through an open file description of our own, non-blocking, so the
    // peer's (blocking) one is full from its first write.
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
    let mut cmd = chatty_peer(&addr);
    cmd.stderr(writer);
    // It starts and says where it listens though every log line waits for stderr.
    let mut peer = start_until(cmd, "peer listening on ");
    sigterm(&peer.0);
    let status = exit_within(&mut peer.0, EXIT_LIMIT).expect("the peer ignored SIGTERM");
    assert!(status.success(), "{status}");
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
            .args(["peer", "--addr", "127.0.0.1:0", "--download", manifest, "--out"])
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
    assert_eq!(std::fs::read(out.path().join("folder/inner/b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(out.path().join("f.bin")).unwrap(), f);
}
