//! `p2p-transfer doctor`: each failure it must name is built for real, inside a private
//! network namespace (see `netns`) where mDNS and nftables rules stay: multicast off on the
//! interface, UDP 5353 dropped, the peer's port dropped, no index running, an index of
//! another protocol version. Doctor must name each one, exit 1, and print a command that
//! works. A partial download held by a stopped process is named too; and, on loopback, the
//! index, port and folder of the config file, a port another program holds, an advertised
//! address the index can't check, and an index that answers no probes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use p2p_protocol::{IndexResponse, IndexServerConnection, Role};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::netns;
use crate::process::{Running, bin, read_line_starting, spawn_until};
use crate::support::{fresh_identity_dir, random_file};

/// Runs `doctor --json` with `extra`, as the node of `identity`, and returns its output and
/// its checks.
fn doctor(identity: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
    let out = tempfile::tempdir().unwrap();
    let output = bin()
        .env("P2P_IDENTITY_DIR", identity)
        .args(["doctor", "--json", "--discover-timeout", "2s", "--out"])
        .arg(out.path())
        .args(extra)
        .output()
        .unwrap();
    let checks = checks_of(&output);
    (output, checks)
}

/// The first check of family `check` whose summary contains `text`.
fn find<'a>(checks: &'a [Value], check: &str, text: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == check && c["summary"].as_str().unwrap().contains(text))
        .unwrap_or_else(|| panic!("no {check} check saying {text:?} in {checks:#?}"))
}

fn problems(checks: &[Value]) -> Vec<&Value> {
    checks.iter().filter(|c| c["status"] == "problem").collect()
}

/// Loads `rules` into nftables (inside the test's namespace).
fn nft(rules: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft runs (apt-get install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft refused {rules}");
}

/// Drops every packet to `what` (`udp dport 5353`) arriving on this namespace's loopback.
fn drop_input(what: &str) {
    nft(&format!(
        "table inet doctor_test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {what} drop\n  }}\n}}\n"
    ));
}

/// Mounts a sysfs of this namespace on /sys (the namespace has its own mounts): the one it
/// inherited shows the host's interfaces, and doctor reads interface flags there.
fn own_sysfs() {
    let status = Command::new("mount")
        .args(["-t", "sysfs", "sysfs", "/sys"])
        .status()
        .unwrap();
    assert!(status.success(), "mount sysfs");
}

fn ip(args: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("ip {args}")])
        .status()
        .unwrap();
    assert!(status.success(), "ip {args}");
}

/// An index server on 127.0.0.1 advertising over mDNS (on loopback); returns it and its
/// address. Only inside a namespace.
fn mdns_server() -> (Running, String) {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0"]);
    let (child, line, _) = spawn_until(cmd, "server listening on ");
    (
        child,
        line.trim_start_matches("server listening on ").to_owned(),
    )
}

fn quiet_server() -> (Running, String) {
    crate::process::start_server()
}

#[test]
fn a_healthy_network_is_all_ok() {
    if !netns::enter("doctor::a_healthy_network_is_all_ok") {
        return;
    }
    own_sysfs();
    let (_server, addr) = mdns_server();
    netns::wait_for_index_servers(1);
    let (output, checks) = doctor(&fresh_identity_dir(), &[]);
    assert!(output.status.success(), "{checks:#?}");
    assert!(problems(&checks).is_empty(), "{checks:#?}");
    let heard = find(&checks, "mdns", "1 index server answered");
    assert_eq!(heard["subject"], "on lo");
    assert!(
        heard["summary"].as_str().unwrap().contains(&addr),
        "{heard}"
    );
    find(&checks, "index", "found over mDNS");
    let reach = find(&checks, "reachability", "the index reached you");
    assert_eq!(reach["status"], "ok");
}

#[test]
fn multicast_off_on_the_interface_is_named() {
    if !netns::enter("doctor::multicast_off_on_the_interface_is_named") {
        return;
    }
    own_sysfs();
    let (_server, _) = mdns_server();
    netns::wait_for_index_servers(1);
    ip("link set lo multicast off");
    let (output, checks) = doctor(&fresh_identity_dir(), &[]);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let mdns = find(&checks, "mdns", "multicast is off on lo");
    assert_eq!(mdns["status"], "problem");
    assert!(
        mdns["command"].as_str().unwrap().contains("--server"),
        "{mdns}"
    );
    let lo = checks.iter().find(|c| c["subject"] == "lo").unwrap();
    assert!(
        lo["summary"].as_str().unwrap().contains("no multicast"),
        "{lo}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error: doctor found"), "{stderr}");
}

/// The "done means": mDNS is blocked, doctor says so, and the command it prints
/// works. This machine has met the index before (its address is in `known-indexes`).
#[test]
fn udp_5353_dropped_is_named_and_the_printed_command_works() {
    if !netns::enter("doctor::udp_5353_dropped_is_named_and_the_printed_command_works") {
        return;
    }
    own_sysfs();
    let (_server, addr) = mdns_server();
    netns::wait_for_index_servers(1);
    let identity = fresh_identity_dir();
    // Yesterday: it worked, and this machine remembered the index.
    let met = bin()
        .env("P2P_IDENTITY_DIR", &identity)
        .args(["search", "--server", &addr, "anything"])
        .output()
        .unwrap();
    assert!(met.status.success(), "{met:?}");
    drop_input("udp dport 5353");

    let (output, checks) = doctor(&identity, &[]);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let mdns = find(
        &checks,
        "mdns",
        "no index server answered on any interface (lo)",
    );
    assert_eq!(mdns["status"], "problem");
    assert!(
        mdns["cause"].as_str().unwrap().contains("UDP port 5353"),
        "{mdns}"
    );
    let command = mdns["command"].as_str().unwrap();
    assert!(
        command.starts_with(&format!("p2p-transfer peer --server {addr} --server-id ")),
        "{command}"
    );
    find(&checks, "index", "met before by this machine");

    // The printed command, as a user would paste it (with a file to share).
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "shared.bin", 1000, 7);
    let args = shlex::split(command).unwrap();
    assert_eq!(args[0], "p2p-transfer");
    let mut peer = bin();
    peer.env("P2P_IDENTITY_DIR", &identity)
        .args(&args[1..])
        .args(["--addr", "127.0.0.1:0", "--register"])
        .arg(&path);
    let (_peer, _, mut out) = spawn_until(peer, "peer listening on ");
    let registered = read_line_starting(&mut out, "registered ");
    assert!(registered.contains("shared.bin"), "{registered}");

    // Following the advice ends in a clean run: with --server, mDNS's silence is a warning.
    let (output, checks) = doctor(&identity, &["--server", &addr]);
    assert!(output.status.success(), "{checks:#?}");
    let mdns = find(&checks, "mdns", "no index server answered");
    assert_eq!(mdns["status"], "warning", "{mdns}");
}

#[test]
fn a_dropped_peer_port_is_named_with_the_port_to_open() {
    if !netns::enter("doctor::a_dropped_peer_port_is_named_with_the_port_to_open") {
        return;
    }
    own_sysfs();
    let (_server, addr) = quiet_server();
    let identity = fresh_identity_dir();
    let args = ["--no-mdns", "--server", &addr, "--addr", "0.0.0.0:7001"];
    // Open: reached.
    let (output, checks) = doctor(&identity, &args);
    assert!(output.status.success(), "{checks:#?}");
    assert_eq!(find(&checks, "reachability", "reached you")["status"], "ok");
    drop_input("tcp dport 7001");
    let started = Instant::now();
    let (output, checks) = doctor(&identity, &args);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let reach = find(&checks, "reachability", "no answer from 127.0.0.1:7001");
    assert_eq!(reach["status"], "problem");
    assert!(
        reach["fix"]
            .as_str()
            .unwrap()
            .contains("tcp dport 7001 accept"),
        "{reach}"
    );
    // The index gives up after its probe timeout: doctor stays quick.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn no_index_running_is_named() {
    if !netns::enter("doctor::no_index_running_is_named") {
        return;
    }
    own_sysfs();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (output, checks) = doctor(&fresh_identity_dir(), &["--server", &addr]);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let index = find(&checks, "index", "connection refused");
    assert_eq!(index["status"], "problem");
    assert!(
        index["fix"]
            .as_str()
            .unwrap()
            .contains("p2p-transfer server"),
        "{index}"
    );
    find(&checks, "reachability", "not checked");
    // Nothing given and nothing found: the default is tried, and the problem says so.
    let (output, checks) = doctor(&fresh_identity_dir(), &[]);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let none = find(&checks, "index", "no index server found");
    assert!(
        none["summary"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:8000 (the default)"),
        "{none}"
    );
}

/// An index that answers `Hello` with `reply`, then closes.
async fn fake_index(reply: IndexResponse) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = crate::support::tls();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let Some(stream) = crate::support::accept_tls(&tls, stream).await else {
                continue;
            };
            let mut conn = IndexServerConnection::index_server(stream);
            let _ = conn.recv().await;
            let _ = conn.send(&reply).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_protocol_version_is_named() {
    if !netns::enter("doctor::a_wrong_protocol_version_is_named") {
        return;
    }
    own_sysfs();
    for (reply, says) in [
        (
            IndexResponse::Welcome {
                version: 3,
                role: Role::Index,
            },
            "the index speaks protocol version 3, this program 4",
        ),
        (
            IndexResponse::Error {
                code: p2p_protocol::ErrorCode::VersionMismatch,
                message: "this index server speaks protocol version 5, you sent 4".into(),
            },
            "does not speak this program's protocol version (4)",
        ),
    ] {
        let (addr, task) = fake_index(reply).await;
        let identity = fresh_identity_dir();
        let server = addr.to_string();
        let (output, checks) = tokio::task::spawn_blocking(move || {
            doctor(&identity, &["--no-mdns", "--server", &server])
        })
        .await
        .unwrap();
        task.abort();
        assert_eq!(output.status.code(), Some(1), "{checks:#?}");
        let index = checks
            .iter()
            .find(|c| c["check"] == "index" && c["status"] == "problem")
            .unwrap_or_else(|| panic!("{checks:#?}"));
        assert!(index["cause"].as_str().unwrap().contains(says), "{index}");
        assert!(
            index["fix"]
                .as_str()
                .unwrap()
                .contains("same p2p-transfer release"),
            "{index}"
        );
    }
}

/// A download stopped with SIGSTOP holds its `.part` lock: doctor names the process and how
/// to let go of it. (`flock` plays the download: it locks the file as a download does.)
#[test]
fn a_part_file_held_by_a_stopped_process_is_named() {
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("big.iso.part");
    std::fs::write(&part, b"partial").unwrap();
    std::fs::write(out.path().join("big.iso.part.chunks"), b"record").unwrap();
    // `--no-fork`: the process that holds the lock is the one stopped.
    let holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&part)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock runs (util-linux)");
    let holder = Running(holder);
    let pid = holder.0.id();
    // Wait for the lock to be taken, then stop its holder.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains(&format!(" {pid} ")))
    {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::yield_now();
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&holder.0),
        rustix::process::Signal::STOP,
    )
    .unwrap();
    // Wait until it is stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('T')
        {
            break;
        }
        assert!(Instant::now() < deadline, "never stopped: {stat}");
        std::thread::yield_now();
    }
    let output = bin()
        .args([
            "doctor",
            "--json",
            "--no-mdns",
            "--server",
            "127.0.0.1:1",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let checks: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let held = find(
        &checks,
        "partial_file",
        &format!("locked by a stopped process {pid} "),
    );
    assert_eq!(held["status"], "problem");
    assert!(
        held["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("kill -CONT {pid}")),
        "{held}"
    );
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&holder.0),
        rustix::process::Signal::CONT,
    );
}

/// The text form: one line per check, the cause and fix indented under a problem, a count at
/// the end.
#[test]
fn the_text_report_has_one_line_per_check_and_a_count() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let output = bin()
        .args(["doctor", "--no-mdns", "--server"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let index = lines
        .iter()
        .position(|l| {
            l.starts_with(&format!(
                "problem  index 127.0.0.1:{port}: given with --server: connection refused"
            ))
        })
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(lines[index + 1].starts_with("         cause: "), "{stdout}");
    assert!(lines[index + 2].starts_with("         fix: "), "{stdout}");
    assert!(
        lines.last().unwrap().starts_with("doctor: 1 problem, "),
        "{stdout}"
    );
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The checks `doctor --json` printed, one JSON object a line.
fn checks_of(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs `doctor --json --no-mdns` with `cmd`'s environment and `extra`, within a deadline.
fn doctor_with(mut cmd: Command, extra: &[&str]) -> (Output, Vec<Value>) {
    let output = cmd
        .args(["doctor", "--json", "--no-mdns"])
        .args(extra)
        .output()
        .unwrap();
    let checks = checks_of(&output);
    (output, checks)
}

/// The one check of family `check`.
fn only<'a>(checks: &'a [Value], check: &str) -> &'a Value {
    let found: Vec<&Value> = checks.iter().filter(|c| c["check"] == check).collect();
    assert_eq!(found.len(), 1, "{check}: {checks:#?}");
    found[0]
}

/// Doctor checks what the config file sets up for the peer: the index of `[index]`, the port
/// and folder of `[peer]`, not its own defaults.
#[test]
fn doctor_checks_the_index_port_and_folder_of_the_config_file() {
    let (_server, addr) = quiet_server();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[index]\nserver = \"{addr}\"\n[peer]\naddr = \"127.0.0.1:{port}\"\nout = \"downloads\"\n"
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.env("P2P_CONFIG", &config);
    let (output, checks) = doctor_with(cmd, &[]);
    assert!(output.status.success(), "{checks:#?}");
    let index = only(&checks, "index");
    assert_eq!(index["subject"], addr.as_str());
    assert_eq!(index["status"], "ok", "{index}");
    assert!(
        index["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("given in {}:2: ", config.display())),
        "{index}"
    );
    let reach = only(&checks, "reachability");
    assert_eq!(reach["subject"], format!("127.0.0.1:{port}"));
    assert!(
        reach["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("reached you at 127.0.0.1:{port}")),
        "{reach}"
    );
    // The file's folder, relative to the file.
    let folder = only(&checks, "output_folder");
    assert_eq!(
        folder["subject"],
        dir.path().join("downloads").display().to_string()
    );
}

/// A port another program holds is named as taken, with "stop it or pick another port", not
/// "open the port".
#[test]
fn a_port_held_by_another_program_is_named_as_taken() {
    let (_server, addr) = quiet_server();
    // It accepts connections (the kernel completes them) and never says a word.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let (output, checks) = doctor_with(bin(), &["--server", &addr, "--addr", &listen]);
    assert_eq!(output.status.code(), Some(1), "{checks:#?}");
    let reach = only(&checks, "reachability");
    assert_eq!(reach["status"], "problem");
    assert!(
        reach["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("port {port} is taken by another program")),
        "{reach}"
    );
    let fix = reach["fix"].as_str().unwrap();
    assert!(
        fix.contains("stop that program") && fix.contains("--addr 0.0.0.0:0"),
        "{fix}"
    );
    assert!(
        !fix.contains("open TCP port") && !fix.contains("ufw"),
        "{fix}"
    );
    drop(holder);
}

/// With `--advertise-addr`, the index probes its port, and says when it could only check
/// another address than the one peers are told.
#[test]
fn an_advertised_address_the_index_cannot_check_is_a_warning() {
    let (_server, addr) = quiet_server();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let advertised = format!("127.0.0.2:{port}");
    let (output, checks) = doctor_with(
        bin(),
        &[
            "--server",
            &addr,
            "--addr",
            &listen,
            "--advertise-addr",
            &advertised,
        ],
    );
    assert!(output.status.success(), "{checks:#?}");
    let reached = find(&checks, "reachability", "reached you");
    assert_eq!(reached["status"], "ok");
    let elsewhere = find(&checks, "reachability", "other peers are told");
    assert_eq!(elsewhere["status"], "warning");
    assert_eq!(elsewhere["subject"], advertised.as_str());
    assert!(
        elsewhere["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("could only check 127.0.0.1:{port}")),
        "{elsewhere}"
    );
    assert!(
        elsewhere["cause"]
            .as_str()
            .unwrap()
            .contains("connects back only to the address a request comes from"),
        "{elsewhere}"
    );
}

/// An index run with `--no-probe` refuses the check: a warning saying so, not a problem.
#[test]
fn an_index_with_probes_off_is_a_warning() {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns", "--no-probe"]);
    let (_server, line, _) = spawn_until(cmd, "server listening on ");
    let addr = line.trim_start_matches("server listening on ").to_owned();
    let (output, checks) = doctor_with(bin(), &["--server", &addr, "--addr", "127.0.0.1:0"]);
    assert!(output.status.success(), "{checks:#?}");
    let reach = only(&checks, "reachability");
    assert_eq!(reach["status"], "warning");
    assert!(
        reach["summary"]
            .as_str()
            .unwrap()
            .contains("won't check it: this index server does not check reachability"),
        "{reach}"
    );
    assert!(
        reach["fix"]
            .as_str()
            .unwrap()
            .contains("from another machine"),
        "{reach}"
    );
}
