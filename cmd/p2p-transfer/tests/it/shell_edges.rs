//! The peer shell's rough edges, through a real pseudo-terminal: a failed lookup is the
//! `download` command's own error, failed transfers read as failed, `connect` checks that a
//! p2p-transfer peer answers (and shows its node id) and `hosts`/`disconnect` manage what it added, Tab completes ids, and `exit` with
//! downloads running says what it will do first (in `shell.rs`, with a stalled download);
//! `download ID DIR` makes a missing DIR as `--out` does.

use expectrl::Expect;

use crate::shell::{exits_cleanly, expect_all, prompt, spawn_shell};
use crate::support::random_file;

#[test]
fn download_lookup_failures_transfers_connect_hosts_and_id_completion() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let seeder = rt.block_on(crate::support::start_peer(server.addr));
    let dir = tempfile::tempdir().unwrap();
    let (mine, _) = random_file(dir.path(), "mine.bin", 1000, 51);
    let addr = server.addr.to_string();
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "-i",
            "-r",
            mine.to_str().unwrap(),
        ],
        &dir.path().join("history"),
    );

    // A prefix nobody shares: the command's own error, and no "downloading" line first.
    prompt(&mut sh);
    sh.send_line("download abcdef99").unwrap();
    let found = sh
        .expect(expectrl::Regex(
            "error: cannot download abcdef99: [^\r\n]*|in the background",
        ))
        .unwrap();
    let said = String::from_utf8_lossy(found.get(0).unwrap()).into_owned();
    assert!(
        said.starts_with("error: cannot download abcdef99: "),
        "{said}"
    );

    // `transfers`: the row says failed, with what was asked for and why; no percent.
    prompt(&mut sh);
    sh.send_line("transfers").unwrap();
    let row = sh
        .expect(expectrl::Regex(
            "abcdef99 +- +- +[^\r\n]* failed +abcdef99: [^\r\n]+",
        ))
        .unwrap();
    let row = String::from_utf8_lossy(row.get(0).unwrap()).into_owned();
    assert!(!row.contains('%'), "{row}");

    // `connect` checks the address first.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    prompt(&mut sh);
    sh.send_line(format!("connect {nobody}")).unwrap();
    sh.expect(format!(
        "error: cannot connect to {nobody} as a p2p-transfer peer: connection I/O failed: \
         Connection refused; nothing listens at that address"
    ))
    .unwrap();
    // Something that takes TCP connections but is no p2p-transfer peer (it hangs up at once):
    // refused, and not added.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_a_peer = other.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in other.incoming() {
            drop(stream);
        }
    });
    prompt(&mut sh);
    sh.send_line(format!("connect {not_a_peer}")).unwrap();
    sh.expect(format!(
        "error: cannot connect to {not_a_peer} as a p2p-transfer peer: "
    ))
    .unwrap();
    let host = seeder.local_addr();
    prompt(&mut sh);
    sh.send_line(format!("connect {host}")).unwrap();
    sh.expect(format!(
        "downloads will also ask {host} (node {})",
        seeder.node_id()
    ))
    .unwrap();
    prompt(&mut sh);
    sh.send_line("hosts").unwrap();
    sh.expect(format!("{host}")).unwrap();
    prompt(&mut sh);
    sh.send_line(format!("disconnect {host}")).unwrap();
    sh.expect(format!("downloads no longer ask {host}"))
        .unwrap();
    prompt(&mut sh);
    sh.send_line("hosts").unwrap();
    sh.expect("no connected hosts").unwrap();

    // Tab completes this peer's shared file's id after `unregister`.
    let id = p2p_storage::build_manifest(&mine)
        .unwrap()
        .manifest
        .id()
        .to_string();
    prompt(&mut sh);
    sh.send(format!("unregister {}\t", &id[..5])).unwrap();
    // The line is redrawn with the whole id once Tab has completed it.
    sh.expect(&id[id.len() - 12..]).unwrap();
    sh.send("\r").unwrap();
    expect_all(&mut sh, &[&format!("unregistered {id}")]);

    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
    rt.block_on(seeder.shutdown());
}

#[test]
fn download_into_a_missing_folder_creates_it_and_a_file_there_is_one_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::start_server());
    let seeder = rt.block_on(crate::support::start_peer(server.addr));
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "song.ogg", 70_000, 52);
    let id = rt.block_on(seeder.register(&path)).unwrap().to_string();
    let addr = server.addr.to_string();
    let mut sh = spawn_shell(
        &["peer", "--addr", "127.0.0.1:0", "--server", &addr, "-i"],
        &dir.path().join("history"),
    );

    // A folder that isn't there, nor its parent: made, as `--out` makes its folder.
    let inbox = dir.path().join("new").join("inbox");
    prompt(&mut sh);
    sh.send_line(format!("download {id} {}", inbox.display()))
        .unwrap();
    expect_all(
        &mut sh,
        &[
            "in the background",
            &format!("downloaded {}", inbox.join("song.ogg").display()),
        ],
    );
    assert_eq!(std::fs::read(inbox.join("song.ogg")).unwrap(), data);

    // A file where the folder should be: the same one line as `peer --out FILE`.
    prompt(&mut sh);
    sh.send_line(format!("download {id} {}", path.display()))
        .unwrap();
    sh.expect(format!(
        "error: cannot download {id}: --out {} is a file, not a folder",
        path.display()
    ))
    .unwrap();

    prompt(&mut sh);
    sh.send_line("exit").unwrap();
    exits_cleanly(&mut sh);
    rt.block_on(seeder.shutdown());
}
