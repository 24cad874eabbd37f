//! Running the real binary: children killed on drop, waiting for the stdout lines scripts read.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2p-transfer"));
    cmd.env_remove("RUST_LOG")
        .env("P2P_IDENTITY_DIR", crate::support::fresh_identity_dir());
    no_config_file(&mut cmd);
    cmd
}

/// Keeps the config file of whoever runs the tests out of them: the default place is a
/// folder that doesn't exist, and `P2P_CONFIG` is unset.
pub fn no_config_file(cmd: &mut Command) {
    cmd.env("XDG_CONFIG_HOME", "/nonexistent/p2p-transfer-tests")
        .env_remove("P2P_CONFIG");
}

/// A child process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (polling) until `child` exits, at most `limit`: its status, or `None`.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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

/// Waits for `child` to exit on its own within `limit`; kills it and fails the test if it
/// doesn't.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    exit_within(child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("still running after {limit:?}")
    })
}

/// [`wait_exit`], then what `child` wrote on the stdout and stderr it was given as pipes.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let status = wait_exit(&mut child, limit);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Sends `signal` (`"INT"`, `"TERM"`) to `child`, as `kill -SIGNAL PID`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the line `send` prints for the other side starts with.
pub const RECEIVE: &str = "p2p-transfer receive ";

/// Starts `cmd` (a `send ...`, its stderr as the caller set it): it, the ticket it printed,
/// and its stdout to read on.
pub fn start_send(mut cmd: Command) -> (Running, String, BufReader<ChildStdout>) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let running = Running(child);
    let line = read_line_starting(&mut out, RECEIVE);
    (running, line.trim_start_matches(RECEIVE).to_owned(), out)
}

/// Starts `cmd` and returns it with the first stdout line that starts with `prefix`.
pub fn spawn_until(mut cmd: Command, prefix: &str) -> (Running, String, BufReader<ChildStdout>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let running = Running(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "exited before printing {prefix:?}"
        );
        if line.starts_with(prefix) {
            return (running, line.trim_end().to_owned(), out);
        }
    }
}

pub fn start_server() -> (Running, String) {
    let mut cmd = bin();
    // Outside a private network namespace a server must never run mDNS.
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"]);
    let (child, line, _) = spawn_until(cmd, "server listening on ");
    let addr = line.trim_start_matches("server listening on ").to_owned();
    (child, addr)
}

pub fn read_line_starting(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "no {prefix:?} line");
        if line.starts_with(prefix) {
            return line.trim_end().to_owned();
        }
    }
}

/// `peer --addr 127.0.0.1:0 --server SERVER --download ID --out OUT`: a one-shot leecher.
pub fn leecher(server: &str, id: &str, out: &std::path::Path) -> Command {
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        server,
        "--download",
        id,
        "--out",
    ])
    .arg(out);
    cmd
}

/// A seeder process sharing `path`; returns it and the file id it printed.
pub fn seed(server: &str, path: &std::path::Path) -> (Running, String) {
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        server,
        "--register",
    ])
    .arg(path);
    let (child, _, mut out) = spawn_until(cmd, "peer listening on ");
    let line = read_line_starting(&mut out, "registered ");
    let id = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(line, format!("registered {} {id}", path.display()));
    (child, id)
}
