//! The interactive shells, driven through a real pseudo-terminal as a user would: typing,
//! Tab completion, background downloads, exit.

use std::process::Command;
use std::time::Duration;

use expectrl::process::unix::WaitStatus;
use expectrl::{ControlCode, Expect, Session};

use crate::support::random_file;

pub type Pty = expectrl::session::OsSession;

/// Starts the binary with `args` on a 120x40 pseudo-terminal, history in `history`.
pub fn spawn_shell(args: &[&str], history: &std::path::Path) -> Pty {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2p-transfer"));
    // Only errors above the prompt: a warning from a slow machine (a late heartbeat) would
    // make reedline redraw, and the transcript would not be the one the test expects.
    cmd.args(args)
        .env("RUST_LOG", "error")
        .env("P2P_HISTORY_FILE", history)
        .env("P2P_IDENTITY_DIR", crate::support::fresh_identity_dir());
    // As every other test: the config file of whoever runs the tests stays out of it.
    crate::process::no_config_file(&mut cmd);
    let mut session = Session::spawn(cmd).expect("spawn on a pty");
    session.get_process_mut().set_window_size(120, 40).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
}

/// Waits until every needle has been seen, in any order (output from background work may
/// interleave with a command's).
pub fn expect_all(session: &mut Pty, needles: &[&str]) {
    let pattern = needles
        .iter()
        .map(|n| regex_escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let mut missing: Vec<&str> = needles.to_vec();
    while !missing.is_empty() {
        let found = session
            .expect(expectrl::Regex(pattern.as_str()))
            .unwrap_or_else(|e| panic!("{e}: still missing {missing:?}"));
        let text = String::from_utf8_lossy(found.get(0).unwrap()).into_owned();
        missing.retain(|n| *n != text);
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Waits for the prompt and answers the cursor-position query reedline sends before drawing
/// it, as a terminal would; keys typed before that answer would be taken for it.
pub fn prompt(session: &mut Pty) {
    session.expect("\x1b[6n").expect("prompt's cursor query");
    session.send("\x1b[20;1R").unwrap();
}

pub fn exits_cleanly(session: &mut Pty) {
    session.expect(expectrl::Eof).expect("shell ended");
    assert!(matches!(
        session.get_process().wait().unwrap(),
        WaitStatus::Exited(_, 0)
    ));
}

#[test]
fn server_shell_answers_status_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut sh = spawn_shell(
        &["server", "--addr", "127.0.0.1:0", "--no-mdns", "-i"],
        &history,
    );

    // Tab completes "sta" to "status".
    prompt(&mut sh);
    sh.send("sta\t").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sh.send("\r").unwrap();
    sh.expect("listening on  127.0.0.1:").unwrap();
    // Who the server is, in its checkable form.
    sh.expect(expectrl::Regex(
        "node id       ([A-Z2-7]{4}-){7}[A-Z2-7]{5}",
    ))
    .unwrap();
    sh.expect("mDNS          off").unwrap();
    sh.expect("peers         0").unwrap();
    sh.expect("manifests     0.0 MiB of 256 MiB").unwrap();

    prompt(&mut sh);
    sh.send_line("list files").unwrap();
    sh.expect("no files registered").unwrap();
    prompt(&mut sh);
    sh.send_line("frobnicate").unwrap();
    sh.expect("error: unknown command 'frobnicate'; commands: status, list, help, exit")
        .unwrap();
    prompt(&mut sh);
    sh.send_line("list nonsense").unwrap();
    sh.expect("error: unrecognized subcommand 'nonsense'")
        .unwrap();
    sh.expect("Usage: list <COMMAND>").unwrap();

    // Ctrl-C clears the line and keeps the prompt; Ctrl-D leaves like exit.
    prompt(&mut sh);
    sh.send("half-typed").unwrap();
    sh.send(ControlCode::EndOfText).unwrap();
    prompt(&mut sh);
    sh.send_line("status").unwrap();
    sh.expect("uptime").unwrap();
    prompt(&mut sh);
    sh.send(ControlCode::EndOfTransmission).unwrap();
    exits_cleanly(&mut sh);

    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(
        saved.contains("status") && saved.contains("list files"),
        "{saved}"
    );
    assert!(
        !saved.contains("half-typed"),
        "a cleared line is not history: {saved}"
    );
}

#[test]
fn peer_shell_downloads_in_the_background_and_exits_unregistered() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "shared video.bin", 24 * 1024 * 1024 + 5, 41);
    let seeder = rt.block_on(crate::support::start_peer(server.addr));
    let id = rt.block_on(seeder.register(&path)).unwrap().to_string();
    let (mine, _) = random_file(src.path(), "alpha notes.txt", 100, 42);

    let history = out.path().join("history");
    let addr = server.addr.to_string();
    let out_dir = out.path().join("downloads");
    std::fs::create_dir(&out_dir).unwrap();
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "--out",
            out_dir.to_str().unwrap(),
            "-i",
        ],
        &history,
    );

    prompt(&mut sh);
    sh.send_line("search VIDEO").unwrap();
    sh.expect("shared video.bin").unwrap();
    prompt(&mut sh);
    sh.send_line(format!("download {}", &id[..8])).unwrap();
    sh.expect("in the background").unwrap();
    // The shell answers while the download runs.
    prompt(&mut sh);
    sh.send_line("status").unwrap();
    let downloaded = format!("downloaded {}", out_dir.join("shared video.bin").display());
    expect_all(&mut sh, &["(given with --server)", &downloaded]);
    prompt(&mut sh);
    sh.send_line("transfers").unwrap();
    sh.expect("100%").unwrap();
    sh.expect("done").unwrap();
    assert_eq!(
        std::fs::read(out_dir.join("shared video.bin")).unwrap(),
        data
    );

    // Tab completes a path after `register`.
    let partial = format!("register {}/alp", src.path().display());
    prompt(&mut sh);
    sh.send(format!("{partial}\t")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sh.send("\r").unwrap();
    sh.expect(format!("registered {}", mine.display())).unwrap();

    prompt(&mut sh);
    sh.send_line("list files").unwrap();
    sh.expect("alpha notes.txt").unwrap();
    prompt(&mut sh);
    sh.send_line("download").unwrap();
    sh.expect("error: the following required arguments were not provided")
        .unwrap();
    sh.expect("Usage: download <ID> [DIR]").unwrap();

    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);

    // Unregistered on exit: only the seeder is left in the index.
    let (peers, total) = rt.block_on(seeder.network_peers()).unwrap();
    assert_eq!(total, 1, "{peers:?}");
    rt.block_on(seeder.shutdown());
}

#[test]
fn startup_flags_run_before_the_prompt() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (theirs, data) = random_file(src.path(), "theirs.bin", 5 * 1024 * 1024, 43);
    let (mine, _) = random_file(src.path(), "mine.bin", 10, 44);
    let seeder = rt.block_on(crate::support::start_peer(server.addr));
    let id = rt.block_on(seeder.register(&theirs)).unwrap().to_string();

    let addr = server.addr.to_string();
    let history = out.path().join("history");
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "-i",
            "--register",
            mine.to_str().unwrap(),
            "--download",
            &id,
            "--out",
            out.path().to_str().unwrap(),
        ],
        &history,
    );
    sh.expect(format!("registered {}", mine.display())).unwrap();
    sh.expect("downloaded ").unwrap();
    assert_eq!(std::fs::read(out.path().join("theirs.bin")).unwrap(), data);
    prompt(&mut sh);
    sh.send_line("list files").unwrap();
    sh.expect("mine.bin").unwrap();
    prompt(&mut sh);
    sh.send(ControlCode::EndOfTransmission).unwrap();
    exits_cleanly(&mut sh);
    rt.block_on(seeder.shutdown());
}

#[test]
fn exit_during_a_stalled_download_is_prompt_and_keeps_the_part_file() {
    use crate::bad_input::{FakeSeeder, Misbehaviour};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "stuck.bin", 9 * 1024 * 1024, 45);
    let id = p2p_storage::build_manifest(&path)
        .unwrap()
        .manifest
        .id()
        .to_string();
    // The only host accepts chunk requests and never answers them.
    let _hung = rt.block_on(FakeSeeder::start(server.addr, &path, Misbehaviour::Stall));

    let addr = server.addr.to_string();
    let history = out.path().join("history");
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "-o",
            out.path().to_str().unwrap(),
            "-i",
        ],
        &history,
    );
    prompt(&mut sh);
    sh.send_line(format!("download {id}")).unwrap();
    // Ask until the download has started (the lookup takes a moment).
    for attempt in 0.. {
        prompt(&mut sh);
        sh.send_line("transfers").unwrap();
        let seen = sh
            .expect(expectrl::Regex("running|looking up|failed[^\r]*"))
            .unwrap();
        let state = String::from_utf8_lossy(seen.get(0).unwrap()).into_owned();
        assert!(!state.starts_with("failed"), "{state}");
        if state == "running" {
            break;
        }
        assert!(attempt < 50, "download never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first `exit` says what leaving does to the running download; the second leaves.
    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    sh.expect(
        "1 download(s) running: 'exit' again stops them and leaves (their .part files stay; \
         the same download resumes them later)",
    )
    .unwrap();
    prompt(&mut sh);
    let started = std::time::Instant::now();
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        started.elapsed()
    );
    assert!(
        out.path().join("stuck.bin.part").exists(),
        "the partial file is kept for a resume"
    );
    assert!(!out.path().join("stuck.bin").exists());
}

#[test]
fn messages_show_above_the_prompt_and_msg_sends_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let friend = rt.block_on(crate::support::start_peer(server.addr));
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let mut sh = spawn_shell(
        &["peer", "--addr", "127.0.0.1:0", "--server", &addr, "-i"],
        &dir.path().join("history"),
    );
    prompt(&mut sh);
    sh.send_line("status").unwrap();
    let listening = sh
        .expect(expectrl::Regex("listening on  127.0.0.1:[0-9]+"))
        .unwrap();
    let me: std::net::SocketAddr = String::from_utf8_lossy(listening.get(0).unwrap())
        .trim_start_matches("listening on  ")
        .parse()
        .unwrap();

    // Incoming: printed above the prompt, with the sender.
    rt.block_on(friend.send_message(me, "build is green"))
        .unwrap();
    // Who sent it: the node id its connection proved, then the name it gave itself.
    sh.expect(format!(
        "message from {} (calls itself \"{}\"",
        friend.node_id(),
        friend.local_addr()
    ))
    .unwrap();
    sh.expect(": build is green").unwrap();
    prompt(&mut sh);
    sh.send_line("messages").unwrap();
    sh.expect("build is green").unwrap();

    // Outgoing, by address.
    prompt(&mut sh);
    sh.send_line(format!("msg {} thanks, merging now", friend.local_addr()))
        .unwrap();
    sh.expect(format!(
        "sent to {} ({})",
        friend.local_addr(),
        friend.node_id()
    ))
    .unwrap();
    let got = friend.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "thanks, merging now");
    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
    rt.block_on(friend.shutdown());
}

#[test]
fn connect_adds_a_host_the_index_does_not_know() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "off-index.bin", 3 * 1024 * 1024, 47);
    // A peer without any index: only a direct connection finds it.
    let lone = rt
        .block_on(p2p_peer::Peer::start(
            p2p_peer::PeerConfig {
                listen_addr: crate::support::loopback0(),
                indexes: Vec::new(),
                ..p2p_peer::PeerConfig::default()
            },
            crate::support::tls(),
        ))
        .unwrap();
    let id = rt.block_on(lone.register(&path)).unwrap().to_string();

    let addr = server.addr.to_string();
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "-o",
            out.path().to_str().unwrap(),
            "-i",
        ],
        &out.path().join("history"),
    );
    prompt(&mut sh);
    sh.send_line(format!("connect {}", lone.local_addr()))
        .unwrap();
    sh.expect(format!("downloads will also ask {}", lone.local_addr()))
        .unwrap();
    prompt(&mut sh);
    sh.send_line(format!("download {id}")).unwrap();
    sh.expect(format!(
        "downloaded {}",
        out.path().join("off-index.bin").display()
    ))
    .unwrap();
    assert_eq!(
        std::fs::read(out.path().join("off-index.bin")).unwrap(),
        data
    );
    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
    rt.block_on(lone.shutdown());
}

#[test]
fn a_manifest_file_for_another_index_is_refused_as_the_api_refuses_it() {
    use p2p_protocol::manifest_file::{IndexRef, ManifestFile};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "elsewhere.bin", 1000, 48);
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
    let other = dir.path().join("other.p2pm");
    let elsewhere = IndexRef::addr("127.0.0.1:9".parse().unwrap());
    std::fs::write(
        &other,
        ManifestFile::new(manifest.clone(), vec![elsewhere]).to_json(),
    )
    .unwrap();
    let ours = dir.path().join("ours.p2pm");
    std::fs::write(
        &ours,
        ManifestFile::new(manifest, vec![IndexRef::addr(server.addr)]).to_json(),
    )
    .unwrap();

    let addr = server.addr.to_string();
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "-o",
            dir.path().to_str().unwrap(),
            "-i",
        ],
        &dir.path().join("history"),
    );
    prompt(&mut sh);
    sh.send_line(format!("download {}", other.display()))
        .unwrap();
    sh.expect(format!(
        "error: the manifest names the index server at 127.0.0.1:9, but this peer uses the one \
         at {addr}; start a peer with --server 127.0.0.1:9 to download it"
    ))
    .unwrap();
    // No job was started for it.
    prompt(&mut sh);
    sh.send_line("transfers").unwrap();
    sh.expect("no downloads in this session").unwrap();
    // One naming this peer's index is taken.
    prompt(&mut sh);
    sh.send_line(format!("download {}", ours.display()))
        .unwrap();
    sh.expect("in the background").unwrap();
    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
}
