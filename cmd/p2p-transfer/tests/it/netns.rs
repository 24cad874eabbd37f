//! Runs a test inside a private network namespace whose only interface is loopback with
//! multicast on, so mDNS never leaves the machine.
//!
//! The test binary re-runs itself, for just that test, under `unshare --net` (plus
//! `--map-root-user` when not root), with `P2P_IN_NETNS=1` set. Where namespaces are not
//! available the test is skipped with a printed reason, unless `P2P_REQUIRE_NETNS=1` (set by
//! `.ci/run`), where it fails.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const INSIDE: &str = "P2P_IN_NETNS";
/// A namespaced test that has not ended by then is killed with every process it started, and
/// fails with what it printed: a hang must fail with its output, not hold CI until its limit.
const NAMESPACED_TEST_DEADLINE: Duration = Duration::from_secs(240);
const SETUP: &str = "ip link set lo up && ip link set lo multicast on";

fn unshare() -> Command {
    let mut cmd = Command::new("unshare");
    // A private mount namespace too, so a test may mount a small tmpfs (a full disk).
    cmd.args(["--net", "--mount"]);
    // SAFETY-free check for root: the effective uid is in /proc/self/status.
    if !is_root() {
        cmd.arg("--map-root-user");
    }
    cmd
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Why namespaces can't be used here, if they can't.
fn unavailable() -> &'static Option<String> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = unshare().args(["--", "sh", "-c", SETUP]).output();
        match out {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(err) => Some(format!("cannot run unshare: {err}")),
        }
    })
}

/// Returns true when the caller is inside the namespace and should run its body. Otherwise
/// runs `test` (its full path in this binary, e.g. `mdns::no_server`) in a new namespace,
/// fails if it failed there, and returns false.
pub fn enter(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if let Some(reason) = unavailable() {
        if std::env::var("P2P_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("P2P_REQUIRE_NETNS=1 but network namespaces are unavailable: {reason}");
        }
        eprintln!("skipping {test}: network namespaces are unavailable here ({reason})");
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = unshare()
        .args(["--", "sh", "-c", &format!("{SETUP} && exec \"$0\" \"$@\"")])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung test can be killed with the nodes it started.
        .process_group(0)
        .spawn()
        .expect("run the test in a network namespace");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let group = rustix::process::Pid::from_child(&child);
    let (done, ended) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done.send(());
        status
    });
    let timed_out = ended.recv_timeout(NAMESPACED_TEST_DEADLINE).is_err();
    if timed_out {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let status = waiter.join().expect("waiter").expect("wait for the test");
    let out = std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        !timed_out,
        "{test} did not end within {NAMESPACED_TEST_DEADLINE:?} in its network namespace and was killed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed inside its network namespace\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    false
}

/// Waits until `search --auto-discover` in this namespace hears at least `count` index servers
/// answer over mDNS (their advertisements are probed and announced a moment after they
/// start), so a command started next sees all of them in its own browse. A separate process,
/// as the commands under test are: an advertisement made by the test process itself is not
/// seen by a browse from that same process. Panics after a minute.
pub fn wait_for_index_servers(count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let identity = crate::support::fresh_identity_dir();
    loop {
        let output = crate::process::bin()
            .env("P2P_IDENTITY_DIR", &identity)
            .args([
                "search",
                "--auto-discover",
                "--json",
                "nothing-is-named-this",
            ])
            .output()
            .expect("search runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let heard = stdout
            .lines()
            .filter(|l| l.contains(r#""event":"index""#))
            .count();
        if heard >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {heard} of {count} index servers answered over mDNS within a minute: {stdout}"
        );
    }
}
