//! The config file and the environment, through the binary: the file's settings reach a real
//! command; flags beat the environment, which beats the file, which beats the defaults, and
//! `config` says so; a wrong file is one line naming the key and its place; and an index
//! given by `P2P_SERVER` or the file that is down, or set aside by `--auto-discover`, breaks
//! neither `send` nor `receive TICKET`.

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use crate::netns;
use crate::process::{Running, bin, spawn_until, start_send, text, wait_exit, wait_output};
use crate::support::{fresh_identity_dir, random_file};

/// Generous: the machine is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(60);

/// A loopback address where nothing listens (a port just freed: connecting is refused).
fn dead_index() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A config file with `text` in a temp folder, and the folder (kept alive by the caller).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs `cmd` to its end within [`DEADLINE`], with its output.
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, DEADLINE)
}

/// `send --addr 127.0.0.1:0 PATH` with `cmd`'s environment, its ticket line, its stdout and
/// its stderr.
fn send(mut cmd: Command, path: &Path) -> (Running, String, BufReader<ChildStdout>) {
    cmd.args(["send", "--addr", "127.0.0.1:0"])
        .arg(path)
        .stderr(Stdio::piped());
    start_send(cmd)
}

/// `receive TICKET --out OUT` as a node of its own, with `cmd`'s environment and `extra`.
fn receive(mut cmd: Command, ticket: &str, out: &Path, extra: &[&str]) -> Output {
    cmd.env("P2P_IDENTITY_DIR", fresh_identity_dir())
        .args(["receive", ticket, "--out"])
        .arg(out)
        .args(extra);
    run(&mut cmd)
}

/// The settings `config --json ARGS` prints: (section, key) -> the whole object.
fn settings(cmd: &mut Command) -> std::collections::BTreeMap<(String, String), serde_json::Value> {
    let output = run(cmd);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut found = std::collections::BTreeMap::new();
    for line in text(&output.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value["event"] == "setting" {
            let key = (
                value["section"].as_str().unwrap().to_owned(),
                value["key"].as_str().unwrap().to_owned(),
            );
            found.insert(key, value);
        }
    }
    found
}

#[test]
fn the_files_settings_reach_a_real_command() {
    // No mDNS outside a namespace, whatever happens to the file.
    let (_dir, path) = config_file("[server]\naddr = \"127.0.0.1:0\"\nno-mdns = true\n");
    let mut cmd = bin();
    cmd.env("P2P_NO_MDNS", "1")
        .arg("--config")
        .arg(&path)
        .arg("server");
    let (_server, line, _) = spawn_until(cmd, "server listening on ");
    // The file's address, not the default 0.0.0.0:8000.
    assert!(line.starts_with("server listening on 127.0.0.1:"), "{line}");
    assert!(!line.ends_with(":8000"), "{line}");
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let (dir, path) = config_file(
        "# a comment\n[peer]\nworkers = 3\naddr = \"127.0.0.1:7000\"\nout = \"downloads\"\n",
    );
    let mut cmd = bin();
    cmd.env("P2P_CONFIG", &path)
        .env("P2P_PEER_LISTEN", "127.0.0.1:7001")
        .args(["config", "--json", "peer", "--workers", "5"]);
    let found = settings(&mut cmd);
    let get = |key: &str| &found[&("peer".to_owned(), key.to_owned())];
    assert_eq!(get("workers")["value"], "5");
    assert_eq!(get("workers")["source"], "flag");
    assert_eq!(get("workers")["from"], "--workers");
    assert_eq!(get("addr")["value"], "127.0.0.1:7001");
    assert_eq!(get("addr")["source"], "env");
    assert_eq!(get("addr")["from"], "P2P_PEER_LISTEN");
    // A relative path in the file is taken from the file's folder.
    let out = dir.path().join("downloads");
    assert_eq!(get("out")["value"], out.display().to_string());
    assert_eq!(get("out")["source"], "file");
    assert_eq!(get("out")["from"], path.display().to_string());
    assert_eq!(get("out")["line"], 5);
    assert_eq!(get("stall-timeout")["value"], "30s");
    assert_eq!(get("stall-timeout")["source"], "default");

    // The text form: TOML lines with their origin, and the file it read.
    let output = run(bin().env("P2P_CONFIG", &path).arg("config"));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(&format!("# config file: {}\n", path.display())),
        "{stdout}"
    );
    let workers = stdout
        .lines()
        .find(|l| l.starts_with("workers = 3"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        workers.ends_with(&format!("# file {}:3", path.display())),
        "{workers}"
    );
    assert!(stdout.contains("\n[server]\n"), "{stdout}");
}

#[test]
fn a_wrong_file_is_one_line_naming_the_key_and_its_place() {
    let (_dir, path) = config_file("[peer]\nworkers = 3\nwokers = 4\n");
    let output = run(bin().arg("--config").arg(&path).args(["id"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "error: {}:3:1: unknown key \"wokers\" in [peer] (known: addr, allow-peers, \
             advertise-addr, from, share-dir, mdns-interface, no-known-indexes, dht, dht-listen, dht-bootstrap, out, workers, stall-timeout, \
             request-timeout, web, upload-dir, max-upload-mib)\n",
            path.display()
        )
    );
    // A value the flag would refuse, with the flag's reason.
    let (_dir, path) = config_file("[receive]\nworkers = 999\n");
    let output = run(bin().env("P2P_CONFIG", &path).args(["receive", "p2p1x"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}:2:11: workers in [receive]: invalid value \"999\"",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_missing_config_named_is_an_error_a_missing_default_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let output = run(bin().env("P2P_CONFIG", &missing).arg("id"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot read the config file {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    // The default place, empty: nothing to read, nothing wrong.
    let output = run(bin()
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["config", "--json"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let first: serde_json::Value =
        serde_json::from_str(text(&output.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "config_file");
    assert_eq!(
        first["path"],
        dir.path()
            .join("p2p-transfer/config.toml")
            .display()
            .to_string()
    );
    assert_eq!(first["found"], false);
    assert_eq!(first["explicit"], false);
}

#[test]
fn auto_discover_as_a_flag_sets_the_environments_server_aside() {
    // Before: clap refused the pair (an environment value counts as given).
    for command in ["peer", "search", "send", "receive"] {
        let mut cmd = bin();
        cmd.env("P2P_SERVER", "127.0.0.1:9")
            .args(["config", "--json", command, "--auto-discover"]);
        let found = settings(&mut cmd);
        let server = &found[&("index".to_owned(), "server".to_owned())];
        assert_eq!(server["source"], "env", "{command}");
        assert_eq!(server["set_aside"], "--auto-discover is given", "{command}");
        let auto = &found[&("index".to_owned(), "auto-discover".to_owned())];
        assert_eq!(auto["value"], true, "{command}");
        assert_eq!(auto["source"], "flag", "{command}");
    }
    // Both as flags is still a mistake on the command line.
    let output = run(bin().args([
        "receive",
        "p2p1x",
        "--auto-discover",
        "--server",
        "127.0.0.1:9",
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("'--auto-discover' cannot be used with '--server"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn receive_ticket_with_the_environments_index_down_warns_and_fetches_from_the_sender() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "notes.bin", 100_000, 16);
    let (_sender, ticket, _) = send(bin(), &file);
    let dead = dead_index().to_string();
    let mut cmd = bin();
    cmd.env("P2P_SERVER", &dead);
    let output = receive(cmd, &ticket, out.path(), &[]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out.path().join("notes.bin")).unwrap(), data);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains(&dead), "{warning}");
    assert!(
        warning.ends_with("; receiving from the ticket's sender alone"),
        "{warning}"
    );

    // By id, the index is where the id is looked up: its being down is the error.
    let output = receive(bin(), "abcdef", out.path(), &["--server", &dead]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .contains("cannot reach the index server"),
        "{stderr}"
    );
}

#[test]
fn send_with_the_files_index_down_warns_and_sends_without_it() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "photo.bin", 70_000, 17);
    let dead = dead_index();
    let (_dir, path) = config_file(&format!("[index]\nserver = \"{dead}\"\n"));
    let mut cmd = bin();
    cmd.env("P2P_CONFIG", &path);
    let (sender, ticket, _) = send(cmd, &file);
    // The receiver reads the same file: its index is down too.
    let mut cmd = bin();
    cmd.env("P2P_CONFIG", &path);
    let output = receive(cmd, &ticket, out.path(), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(out.path().join("photo.bin")).unwrap(), data);
    // The sender said why it sends without the index, and exits once delivered.
    let mut sender = sender;
    let status = wait_exit(&mut sender.0, DEADLINE);
    let mut stderr = String::new();
    sender
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains(&dead.to_string()), "{warning}");
    assert!(
        warning.ends_with("; sending without it (the ticket works alone)"),
        "{warning}"
    );
}

#[test]
fn receive_ticket_auto_discover_beats_p2p_server_and_finding_none_is_a_warning() {
    if !netns::enter(
        "config::receive_ticket_auto_discover_beats_p2p_server_and_finding_none_is_a_warning",
    ) {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "song.bin", 50_000, 18);
    let (_sender, ticket, _) = send(bin(), &file);
    let mut cmd = bin();
    // An index that would answer nothing: --auto-discover must win over it.
    cmd.env("P2P_SERVER", dead_index().to_string());
    let output = receive(
        cmd,
        &ticket,
        out.path(),
        &["--auto-discover", "--discover-timeout", "1s"],
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out.path().join("song.bin")).unwrap(), data);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("no p2p-transfer index server answered on the local network"),
        "{warning}"
    );
}

#[test]
fn config_doctor_shows_the_index_port_and_folder_from_the_file() {
    let (_dir, path) = config_file(
        "[index]\nserver = \"10.1.2.3\"\n[peer]\naddr = \"0.0.0.0:7001\"\nout = \"/srv/dl\"\n\
         advertise-addr = \"192.168.1.20:7001\"\nworkers = 3\n",
    );
    let mut cmd = bin();
    cmd.env("P2P_CONFIG", &path)
        .args(["config", "--json", "doctor"]);
    let found = settings(&mut cmd);
    let get = |section: &str, key: &str| {
        found
            .get(&(section.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("no [{section}] {key}: {found:#?}"))
    };
    for (section, key, value, line) in [
        ("index", "server", "10.1.2.3", 2),
        ("peer", "addr", "0.0.0.0:7001", 4),
        ("peer", "out", "/srv/dl", 5),
        ("peer", "advertise-addr", "192.168.1.20:7001", 6),
    ] {
        let setting = get(section, key);
        assert_eq!(setting["value"], value, "{setting}");
        assert_eq!(setting["source"], "file", "{setting}");
        assert_eq!(setting["from"], path.display().to_string(), "{setting}");
        assert_eq!(setting["line"], line, "{setting}");
    }
    // The peer's other settings are not doctor's.
    assert!(!found.contains_key(&("peer".to_owned(), "workers".to_owned())));
}

#[test]
fn send_and_receive_refuse_a_list_of_servers_from_the_file() {
    let (_dir, path) = config_file("[index]\nserver = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n");
    let src = tempfile::tempdir().unwrap();
    let (file, _) = random_file(src.path(), "a.bin", 10, 19);
    for (command, args) in [
        ("send", vec![file.display().to_string()]),
        ("receive", vec!["p2p1x".to_owned()]),
    ] {
        let output = run(bin().env("P2P_CONFIG", &path).arg(command).args(&args));
        assert_eq!(output.status.code(), Some(2), "{command}");
        assert_eq!(
            text(&output.stderr),
            format!(
                "error: {}:2:10: server in [index]: `p2p-transfer {command}` uses one index \
                 server, not a list (only `search` and `peer` use several)\n",
                path.display()
            )
        );
    }
}

#[test]
fn a_broken_file_does_not_stop_completions_or_man() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("p2p-transfer/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[peer\nworkers = 3\n").unwrap();
    let output = run(bin()
        .env("XDG_CONFIG_HOME", home.path())
        .args(["completions", "bash"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("p2p-transfer"));
    let pages = home.path().join("man");
    let output = run(bin()
        .env("XDG_CONFIG_HOME", home.path())
        .arg("man")
        .arg(&pages));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(pages.join("p2p-transfer-peer.1").is_file());
    // A command that reads it still says what is wrong with it.
    let output = run(bin().env("XDG_CONFIG_HOME", home.path()).arg("id"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).starts_with(&format!("error: {}:1:", config.display())),
        "{}",
        text(&output.stderr)
    );
}
