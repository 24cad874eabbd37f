//! Sensible defaults and honest re-runs, through the real binary: quiet output unless `-v`,
//! peers on every interface at a free port, `--server` host names and the default port, the
//! server's paste-ready command, `--out` created, re-running a command that did its job.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns;
use crate::process::{Running, bin, leecher, read_line_starting, seed, spawn_until, start_server};
use crate::support::random_file;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one error line on `stderr`, its last (a new identity may be announced before it).
fn one_error(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_owned()
}

/// A tracing line's level as the default formatter writes it (after the timestamp).
fn has_level(stderr: &str, level: &str) -> bool {
    stderr.lines().any(|l| l.contains(&format!(" {level} ")))
}

#[test]
fn output_is_quiet_by_default_v_brings_logs_back_and_q_keeps_only_results() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "quiet.bin", 300_000, 5);
    let (_seeder, id) = seed(&addr, &path);

    // Default: the result on stdout, and no info logs on stderr.
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("downloaded "), "{stdout}");
    assert!(
        !has_level(&stderr, "INFO"),
        "info logs by default:\n{stderr}"
    );
    assert_eq!(std::fs::read(out.path().join("quiet.bin")).unwrap(), data);

    // -v: info logs too (the download's start names the file).
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path()).arg("-v").output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("quiet.bin")),
        "-v shows info logs:\n{stderr}"
    );
    assert!(!has_level(&stderr, "DEBUG"), "{stderr}");

    // -vv: our debug events too.
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path()).arg("-vv").output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        has_level(&stderr, "DEBUG"),
        "-vv shows debug logs:\n{stderr}"
    );

    // -q (given before the subcommand, as a global flag): nothing at all on stderr, the
    // result on stdout; RUST_LOG still overrides the logs' level.
    let out = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.arg("-q")
        .args(["peer", "--addr", "127.0.0.1:0", "--server", &addr])
        .args(["--download", &id, "--out"])
        .arg(out.path());
    let output = cmd.output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "", "-q prints nothing but errors");
    assert!(stdout.contains("downloaded "), "{stdout}");
    // A search with one index down: its warning is not an error, so -q leaves it out; the
    // other index's results are the output.
    let output = bin()
        .args([
            "-q",
            "search",
            "--server",
            &addr,
            "--server",
            "127.0.0.1:1",
            "quiet",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "", "-q prints nothing but errors");
    assert!(stdout.contains(&id), "{stdout}");
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(has_level(&text(&output.stderr), "INFO"));
    // -q and -v contradict each other.
    let output = bin().args(["-q", "-v", "id"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn two_peers_with_default_addresses_share_one_machine() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "both.bin", 5 * 1024 * 1024 + 7, 8);
    let mut ports = Vec::new();
    let mut seeders = Vec::new();
    let mut id = String::new();
    for _ in 0..2 {
        // No --addr: every interface, a port of the system's choosing.
        let mut cmd = bin();
        cmd.args(["peer", "--server", &addr, "--register"])
            .arg(&path);
        let (child, _, mut out) = spawn_until(cmd, "peer node id ");
        let lines = lines_until(&mut out, "peer listening on ");
        let listen: std::net::SocketAddr = lines
            .last()
            .unwrap()
            .trim_start_matches("peer listening on ")
            .parse()
            .unwrap();
        assert!(listen.ip().is_unspecified(), "{lines:?}");
        assert_ne!(listen.port(), 0);
        // Where others reach it: this machine's addresses (loopback only in a sandbox).
        let reach = lines
            .iter()
            .find(|l| {
                l.starts_with("peers reach this peer at ")
                    || l.starts_with("only this machine can reach this peer ")
            })
            .unwrap_or_else(|| panic!("no reach line: {lines:?}"));
        assert!(reach.contains(&format!(":{}", listen.port())), "{reach}");
        let registered = read_line_starting(&mut out, "registered ");
        id = registered.rsplit(' ').next().unwrap().to_owned();
        ports.push(listen.port());
        seeders.push((child, out));
    }
    assert_ne!(ports[0], ports[1], "each peer has its own port");

    // The index learned the second one's port: with the first gone, it serves alone.
    drop(seeders.remove(0));
    let out = tempfile::tempdir().unwrap();
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(out.path().join("both.bin")).unwrap(), data);
}

/// Reads a child's stdout lines up to (and with) the one starting with `last`.
fn lines_until(out: &mut impl BufRead, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "no {last:?} line: {lines:?}"
        );
        let line = line.trim_end().to_owned();
        let done = line.starts_with(last);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

#[test]
fn the_server_prints_a_peer_command_that_works_as_pasted() {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"]);
    let (_server, first, mut out) = spawn_until(cmd, "server node id ");
    let node_id = first.trim_start_matches("server node id ").to_owned();
    let lines = lines_until(&mut out, "server listening on ");
    let addr = lines
        .last()
        .unwrap()
        .trim_start_matches("server listening on ")
        .to_owned();
    assert!(
        lines.contains(&format!(
            "only this machine can reach this server (it listens on {addr}; --addr 0.0.0.0:{} \
             opens it to the network)",
            addr.rsplit(':').next().unwrap()
        )),
        "{lines:?}"
    );
    let command = lines
        .iter()
        .find_map(|l| l.strip_prefix("on this machine, run: "))
        .unwrap_or_else(|| panic!("no command: {lines:?}"));
    assert_eq!(
        command,
        format!("p2p-transfer peer --server {addr} --server-id {node_id} -i")
    );
    // As pasted, with the shell's -i swapped for something to share.
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "pasted.bin", 1000, 3);
    let mut words: Vec<String> = command.split(' ').skip(1).map(str::to_owned).collect();
    assert_eq!(words.pop().as_deref(), Some("-i"));
    let mut peer = bin();
    peer.args(&words).arg("--register").arg(&path);
    let (_peer, line, _) = spawn_until(peer, "registered ");
    assert!(line.starts_with(&format!("registered {}", path.display())));
}

#[test]
fn server_takes_a_host_name_and_search_lines_up_its_table() {
    let (_server, addr) = start_server();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let by_name = format!("localhost:{port}");
    let src = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "named host.bin", 70_000, 4);
    // A seeder and a search given the host's name.
    let (_seeder, id) = seed(&by_name, &path);
    let output = bin()
        .args(["search", "--server", &by_name, "named"])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    // Full ids, each column under its header.
    let (header, row) = (lines[0], lines[1]);
    assert!(row.starts_with(&format!("{id}  ")), "{row}");
    assert_eq!(
        header.find("SIZE").unwrap() + 4,
        row.find(" KiB").unwrap() + 4,
        "{stdout}"
    );
    assert_eq!(header.find("NAME"), row.find("named host.bin"), "{stdout}");

    // A download by name into a folder that does not exist yet (created, parents too).
    let out = tempfile::tempdir().unwrap();
    let deep = out.path().join("new/deeper");
    let output = leecher(&by_name, &id, &deep).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(deep.join("named host.bin")).unwrap(), data);
    // --out naming a file: a one-line error, nothing created.
    let file = out.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let output = leecher(&by_name, &id, &file).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(
        one_error(&stderr),
        format!(
            "error: cannot download {id}: --out {} is a file, not a folder; give --out a folder \
             to download into (a missing one is created)",
            file.display()
        )
    );
}

#[test]
fn an_unknown_host_name_is_a_clear_error() {
    // In a private namespace: the lookup must not reach a real DNS server.
    if !netns::enter("cli_defaults::an_unknown_host_name_is_a_clear_error") {
        return;
    }
    let output = bin()
        .args(["search", "--server", "no-such-host.invalid", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: cannot find the host \"no-such-host.invalid\" of --server \
             no-such-host.invalid:8000: "
        ),
        "{stderr}"
    );
    // A malformed value is refused by the flag parser, with what is wrong.
    let output = bin()
        .args(["search", "--server", "host:port", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("\"port\" is not a port"),
        "{}",
        text(&output.stderr)
    );
}

/// `peer --register PATH --write-manifest` until it has written (or failed); its stdout
/// lines, and whether it still runs.
fn write_manifest(addr: &str, path: &Path) -> (Option<Running>, String, String) {
    let mut cmd = bin();
    cmd.args(["peer", "--addr", "127.0.0.1:0", "--server", addr])
        .args(["--write-manifest", "--register"])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = Running(cmd.spawn().unwrap());
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut stdout = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            // Exited: an error.
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            assert_eq!(child.0.wait().unwrap().code(), Some(1), "{stderr}");
            return (None, stdout, stderr);
        }
        stdout.push_str(&line);
        if line.starts_with("wrote ") || line.starts_with("already written ") {
            return (Some(child), stdout, String::new());
        }
    }
}

#[test]
fn re_running_a_command_that_did_its_job_succeeds() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "again.bin", 50_000, 6);
    let p2pm = src.path().join("again.bin.p2pm");

    let (seeder, stdout, _) = write_manifest(&addr, &path);
    assert!(seeder.is_some());
    assert!(
        stdout.ends_with(&format!("wrote {}\n", p2pm.display())),
        "{stdout}"
    );
    let written = std::fs::read(&p2pm).unwrap();
    drop(seeder);
    // The same command again: the same manifest is there, which is success.
    let (seeder, stdout, _) = write_manifest(&addr, &path);
    assert!(seeder.is_some());
    assert!(
        stdout.ends_with(&format!("already written {}\n", p2pm.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&p2pm).unwrap(), written);
    drop(seeder);
    // The file changed: its manifest there is another file's, which is left as it is.
    std::fs::write(&path, b"another version").unwrap();
    let (seeder, _, stderr) = write_manifest(&addr, &path);
    assert!(seeder.is_none());
    assert!(
        one_error(&stderr).starts_with(&format!(
            "error: cannot write the manifest of {}: {} already exists and describes another \
             file (id ",
            path.display(),
            p2pm.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("move it away and run the same command again"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&p2pm).unwrap(), written);

    // `manifest create` twice: the second finds its work done.
    let other = src.path().join("other.p2pm");
    for verb in ["wrote", "already written"] {
        let output = bin()
            .args(["manifest", "create"])
            .arg(&path)
            .arg("-o")
            .arg(&other)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            text(&output.stdout).starts_with(&format!("{verb} {} ", other.display())),
            "{}",
            text(&output.stdout)
        );
    }
}

/// A name resolver that never answers: `peer --server NAME` stops at SIGTERM while it waits,
/// and `search` gives the lookup 10 s, then reports it: a warning when another index answers,
/// else the one error line.
#[test]
fn a_name_lookup_that_hangs_is_interruptible_and_bounded() {
    // In a private namespace (network and mounts): its resolver is this test's silent socket.
    if !netns::enter("cli_defaults::a_name_lookup_that_hangs_is_interruptible_and_bounded") {
        return;
    }
    let dns = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let mounted = Command::new("mount")
        .args(["--bind"])
        .arg(conf.path())
        .arg("/etc/resolv.conf")
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a resolv.conf in the namespace"
    );
    let (_server, addr) = start_server();

    // `peer` looks the name up at start; SIGTERM once the query has reached the resolver.
    let mut peer = Running(
        bin()
            .args(["peer", "--addr", "127.0.0.1:0", "--server", "hung.example"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    dns.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    dns.recv(&mut [0; 512])
        .expect("the lookup reaches the resolver");
    let started = Instant::now();
    crate::process::signal(&peer.0, "TERM");
    let status = crate::process::wait_exit(&mut peer.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut stderr = String::new();
    peer.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        one_error(&stderr)
            .starts_with("error: interrupted while looking up --server hung.example:8000"),
        "{stderr}"
    );

    // `search`: with another index, a warning and that index's answer; alone, the error.
    let both = bin()
        .args(["search", "--server", "hung.example", "--server", &addr, "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let alone = bin()
        .args(["search", "--server", "hung.example", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (both, alone) = (
        both.wait_with_output().unwrap(),
        alone.wait_with_output().unwrap(),
    );
    let timed_out = "the name resolver did not answer within 10s";
    assert!(both.status.success(), "{}", text(&both.stderr));
    assert!(
        text(&both.stdout).contains(&format!("index {addr}: 0 of 0 matches")),
        "{}",
        text(&both.stdout)
    );
    let warning = text(&both.stderr);
    assert!(
        warning.contains(
            "warning: index server hung.example:8000 did not answer, so its files are not \
             listed: cannot find the host \"hung.example\""
        ) && warning.contains(timed_out),
        "{warning}"
    );
    assert_eq!(alone.status.code(), Some(1));
    let error = one_error(&text(&alone.stderr));
    assert!(
        error.starts_with(
            "error: cannot find the host \"hung.example\" of --server hung.example:8000: "
        ) && error.contains(timed_out),
        "{error}"
    );
}
