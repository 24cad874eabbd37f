//! `send PATH...` and `receive TICKET` end to end through the binary: a file and a folder
//! arrive byte for byte and the sender exits once they have, also when the receiver had them
//! already or resumed them from an earlier `send`; an interrupted receive resumes with the
//! same command; a garbled ticket or the wrong node at the ticket's address is one
//! clear line; `--keep` serves more than one receiver; with an index, `send` registers there
//! and `receive` takes an id prefix; `send`'s ticket names its index (`p2p2`), which leads a
//! receiver given nothing else to the sender when the ticket's addresses don't.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use p2p_peer::Shared;
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileId, NodeId, PeerConversation, PeerRequest, PeerResponse, Ticket,
    TicketIndex,
};

use crate::process::{
    Running, bin, read_line_starting, signal, start_send, start_server, text, wait_exit,
    wait_output,
};
use crate::support::{SilentProxy, fresh_identity_dir, random_file, start_peer_without_index, tls};

/// Generous: the machine is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(60);

/// `send --addr 127.0.0.1:0 PATHS... EXTRA...` (loopback only: the ticket then lists
/// 127.0.0.1 and nothing else), its ticket, and its stdout to read on.
fn send(paths: &[&Path], extra: &[&str]) -> (Running, Ticket, BufReader<ChildStdout>) {
    let mut cmd = bin();
    cmd.args(["send", "--addr", "127.0.0.1:0"])
        .args(paths)
        .args(extra)
        .stderr(Stdio::null());
    let (running, text, out) = start_send(cmd);
    let ticket: Ticket = text.parse().unwrap();
    // What `send` prints is the canonical form: the version its content needs, lower case.
    assert_eq!(ticket.to_string(), text);
    (running, ticket, out)
}

/// `receive TICKET --out OUT EXTRA...` as the node of `identity`, run to its end.
fn receive(ticket: &str, out: &Path, identity: &Path, extra: &[&str]) -> Output {
    let mut cmd = receive_command(ticket, out, identity, extra);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, DEADLINE)
}

/// [`receive`] with no extra flags, off the test's runtime (the proxies it goes through
/// run there).
async fn receive_off_runtime(ticket: &Ticket, out: &Path, identity: &Path) -> Output {
    let (ticket, out, identity) = (ticket.to_string(), out.to_owned(), identity.to_owned());
    tokio::task::spawn_blocking(move || receive(&ticket, &out, &identity, &[]))
        .await
        .unwrap()
}

fn receive_command(ticket: &str, out: &Path, identity: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    // Warnings and errors only, whatever the default level: the tests read the error line.
    cmd.env("RUST_LOG", "warn")
        .env("P2P_IDENTITY_DIR", identity)
        .args(["receive", ticket, "--out"])
        .arg(out)
        .args(extra);
    cmd
}

/// Receives `ticket` into `out` as the node of `identity` through a link that passes two
/// chunks' worth of bytes, then nothing: with one chunk in flight at a time, one chunk at
/// least is verified and the file is never whole. Ctrl-C once a chunk is recorded: it exits
/// 130, keeping what it verified. (The ticket is rewritten to go through the link: its format
/// is public, any client can make one.)
async fn receive_interrupted(ticket: &Ticket, out: &Path, identity: &Path) {
    let proxy = SilentProxy::start_with_budget(ticket.addrs[0], 2 * u64::from(CHUNK_SIZE)).await;
    let through_proxy = Ticket {
        addrs: vec![proxy.addr],
        ..ticket.clone()
    };
    let mut first = receive_command(
        &through_proxy.to_string(),
        out,
        identity,
        &["--workers", "1"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while !records_a_chunk(out) {
        assert!(first.try_wait().unwrap().is_none(), "ended before Ctrl-C");
        assert!(Instant::now() < deadline, "no chunk verified in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&first, "INT");
    let status = wait_exit(&mut first, DEADLINE);
    assert_eq!(
        status.code(),
        Some(130),
        "an interrupted receive exits 130: {status:?}"
    );
}

/// Every file under `dir`, by path relative to it.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(at) = dirs.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The rest of the sender's stdout once it has exited on its own, and how it exited.
fn sender_end(mut sender: Running, mut out: BufReader<ChildStdout>) -> (ExitStatus, Vec<String>) {
    let status = wait_exit(&mut sender.0, DEADLINE);
    let mut lines = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        lines.push(line.trim_end().to_owned());
        line.clear();
    }
    (status, lines)
}

/// Waits, off the test's runtime, for the sender to exit by itself: successfully, having
/// said `delivered`.
async fn sender_delivered(sender: Running, sent: BufReader<ChildStdout>) {
    let (status, lines) = tokio::task::spawn_blocking(move || sender_end(sender, sent))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("delivered ")),
        "{lines:?}"
    );
}

#[test]
fn a_file_and_a_folder_arrive_whole_and_the_sender_exits() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "report.bin", CHUNK_SIZE as usize + 999, 1);
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    random_file(&album, "a.jpg", 70_000, 2);
    random_file(&album.join("sub"), "b.jpg", 3, 3);
    std::fs::write(album.join("sub").join("empty"), b"").unwrap();

    let (sender, ticket, sent) = send(&[&file, &album], &[]);
    assert_eq!(ticket.items.len(), 2);
    // No index: no index in the ticket, which stays version 1.
    assert!(ticket.indexes.is_empty());
    assert!(ticket.to_string().starts_with("p2p1"), "{ticket}");
    assert_eq!(
        ticket
            .addrs
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    let received = receive(
        &ticket.to_string(),
        &out.path().join("new/inbox"),
        &fresh_identity_dir(),
        &[],
    );
    assert!(received.status.success(), "{}", text(&received.stderr));
    let inbox = out.path().join("new/inbox");
    assert_eq!(std::fs::read(inbox.join("report.bin")).unwrap(), data);
    assert_eq!(read_tree(&inbox.join("album")), read_tree(&album));
    let stdout = text(&received.stdout);
    assert!(stdout.contains("downloaded "), "{stdout}");
    assert!(stdout.contains("folder album "), "{stdout}");

    // Both delivered: the sender says so on stdout and exits by itself, successfully.
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success(), "{status:?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("delivered ")).count(),
        2,
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_receive_resumes_with_the_same_command() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 4 * CHUNK_SIZE as usize + 77;
    let (file, data) = random_file(src.path(), "movie.bin", size, 7);
    let (sender, ticket, sent) = send(&[&file], &[]);
    let receiver = fresh_identity_dir();

    // The first run is interrupted once a chunk is verified.
    receive_interrupted(&ticket, out.path(), &receiver).await;
    assert!(!out.path().join("movie.bin").exists());

    // The same command, the same machine: it fetches the rest only. This link passes a chunk
    // less than the file (and room for the handshake and the manifest): fetching everything
    // again would stall on it.
    let proxy = SilentProxy::start_with_budget(
        ticket.addrs[0],
        (size - CHUNK_SIZE as usize) as u64 + 512 * 1024,
    )
    .await;
    let again = Ticket {
        addrs: vec![proxy.addr],
        ..ticket.clone()
    };
    let received = receive_off_runtime(&again, out.path(), &receiver).await;
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert_eq!(std::fs::read(out.path().join("movie.bin")).unwrap(), data);

    // The sender counts what it sent to this receiver over both runs: delivered, it exits.
    sender_delivered(sender, sent).await;
}

#[test]
fn a_receiver_that_has_everything_already_releases_the_sender() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "report.bin", 300_000, 11);
    let album = src.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    random_file(&album, "a.jpg", 70_000, 12);
    std::fs::write(album.join("empty"), b"").unwrap();
    // The receiver has both already, identical: it fetches no chunk at all.
    std::fs::write(out.path().join("report.bin"), &data).unwrap();
    std::fs::create_dir_all(out.path().join("album")).unwrap();
    for (rel, bytes) in read_tree(&album) {
        std::fs::write(out.path().join("album").join(rel), bytes).unwrap();
    }

    let (sender, ticket, sent) = send(&[&file, &album], &[]);
    let received = receive(&ticket.to_string(), out.path(), &fresh_identity_dir(), &[]);
    assert!(received.status.success(), "{}", text(&received.stderr));
    let stdout = text(&received.stdout);
    assert!(stdout.contains("already downloaded "), "{stdout}");
    assert!(stdout.contains("0 fetched, 2 already there"), "{stdout}");

    // The receiver said it has both: the sender reports them delivered and exits.
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success(), "{status:?}");
    let delivered: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("delivered "))
        .collect();
    assert_eq!(delivered.len(), 2, "{lines:?}");
    assert!(
        delivered.iter().any(|l| l.contains("report.bin")),
        "{lines:?}"
    );
    assert!(delivered.iter().any(|l| l.contains("album")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_resumed_from_an_earlier_send_releases_the_new_sender() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 3 * CHUNK_SIZE as usize + 99;
    let (file, data) = random_file(src.path(), "movie.bin", size, 13);
    let receiver = fresh_identity_dir();

    // The first `send` gets a chunk or two through before the link goes silent; the receiver
    // is interrupted, and that `send` stopped.
    let (first_sender, ticket, _) = send(&[&file], &[]);
    receive_interrupted(&ticket, out.path(), &receiver).await;
    drop(first_sender);

    // A new `send` of the same file: the receiver resumes and fetches only the rest from it,
    // so this sender never sends every chunk, yet it learns the file arrived and exits.
    let (sender, ticket, sent) = send(&[&file], &[]);
    let received = receive_off_runtime(&ticket, out.path(), &receiver).await;
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert!(
        text(&received.stdout).contains("resumed"),
        "{}",
        text(&received.stdout)
    );
    assert_eq!(std::fs::read(out.path().join("movie.bin")).unwrap(), data);
    sender_delivered(sender, sent).await;
}

/// `Received` on the wire, as any client sends it: an id the peer does not share is
/// `unknown_file` and the connection stays open; a shared one is acknowledged and counts as
/// delivered to the node whose handshake the connection showed, though no chunk was sent.
#[tokio::test]
async fn received_confirms_a_delivery_and_an_unknown_id_is_refused() {
    let prompt = Duration::from_secs(10);
    let src = tempfile::tempdir().unwrap();
    let (file, _) = random_file(src.path(), "a.bin", 5000, 14);
    let sender = start_peer_without_index().await;
    let shared = sender.share_paths(&[file]).await.unwrap();
    let mut deliveries = sender.watch_deliveries(&shared);
    let Shared::File { manifest, .. } = &shared[0] else {
        panic!("a file")
    };
    let receiver = tls();
    let (mut conn, _) = p2p_transport::connect::<PeerConversation>(
        &receiver,
        sender.local_addr(),
        Some(sender.node_id()),
        prompt,
    )
    .await
    .unwrap();

    let unknown = PeerRequest::Received {
        id: FileId([7; 32]),
    };
    match conn.request(&unknown, prompt).await.unwrap() {
        PeerResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::UnknownFile, "{message}");
            assert!(message.contains("shares no file or folder"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let known = PeerRequest::Received { id: manifest.id() };
    let reply = conn.request(&known, prompt).await.unwrap();
    assert_eq!(reply, PeerResponse::ReceivedAck {});
    let delivery = tokio::time::timeout(prompt, deliveries.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((delivery.item, delivery.client), (0, receiver.node_id()));
    sender.shutdown().await;
}

/// Whether a record of verified chunks (`*.part.chunks`, anywhere under `dir`) lists one:
/// its bits after the 48-byte header are not all zero.
pub fn records_a_chunk(dir: &Path) -> bool {
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(".part.chunks")
                && std::fs::read(&path)
                    .is_ok_and(|r| r.len() > 48 && r[48..].iter().any(|b| *b != 0))
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_garbled_or_foreign_ticket_is_one_clear_line() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, _) = random_file(src.path(), "notes.txt", 1000, 4);
    let (mut sender, ticket, _sent) = send(&[&file], &[]);
    let good = ticket.to_string();
    let me = fresh_identity_dir();
    let one_line = |output: &Output, wanted: &str| {
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(wanted),
            "{stderr}"
        );
        assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    };

    // One character changed in the middle, as a bad copy would.
    let mut garbled = good.clone().into_bytes();
    let at = garbled.len() / 2;
    garbled[at] = if garbled[at] == b'a' { b'b' } else { b'a' };
    let garbled = String::from_utf8(garbled).unwrap();
    one_line(
        &receive(&garbled, out.path(), &me, &[]),
        "cannot read the ticket: the ticket is damaged (its checksum does not match): copy it again in full",
    );
    // Cut short.
    one_line(
        &receive(&good[..good.len() - 10], out.path(), &me, &[]),
        "copy it again in full",
    );
    // Not a ticket at all, and no index to look an id up at.
    one_line(
        &receive("hello", out.path(), &me, &[]),
        "\"hello\" is not a ticket (a ticket starts with \"p2p1\" or \"p2p2\")",
    );
    // A ticket of a later format.
    one_line(
        &receive(&format!("p2p3{}", &good[4..]), out.path(), &me, &[]),
        "format version 3",
    );
    // A version 1 payload labelled version 2: the index servers are missing.
    one_line(
        &receive(&format!("p2p2{}", &good[4..]), out.path(), &me, &[]),
        "cannot read the ticket: the ticket is cut short: copy it again in full",
    );
    // Right address, wrong node: someone else answers there. Refused before anything is asked.
    let forged = Ticket {
        node_id: NodeId([9; 20]),
        ..ticket.clone()
    };
    one_line(
        &receive(&forged.to_string(), out.path(), &me, &[]),
        "not the expected",
    );
    assert!(read_tree(out.path()).is_empty(), "nothing written");
    // Nothing was delivered: the sender still serves, and Ctrl-C now is no success.
    assert!(sender.0.try_wait().unwrap().is_none());
    signal(&sender.0, "INT");
    assert_eq!(wait_exit(&mut sender.0, DEADLINE).code(), Some(130));
}

#[test]
fn keep_serves_every_receiver_until_stopped() {
    let src = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "song.ogg", 200_000, 5);
    let (mut sender, ticket, mut sent) = send(&[&file], &["--keep"]);
    for n in 0..2 {
        let out = tempfile::tempdir().unwrap();
        let received = receive(&ticket.to_string(), out.path(), &fresh_identity_dir(), &[]);
        assert!(received.status.success(), "{}", text(&received.stderr));
        assert_eq!(std::fs::read(out.path().join("song.ogg")).unwrap(), data);
        let line = read_line_starting(&mut sent, "delivered ");
        assert!(line.contains("song.ogg"), "{line} ({n})");
    }
    assert!(
        sender.0.try_wait().unwrap().is_none(),
        "--keep keeps serving"
    );
    signal(&sender.0, "INT");
    assert!(wait_exit(&mut sender.0, DEADLINE).success());
}

#[test]
fn with_an_index_send_registers_and_receive_takes_an_id_prefix() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "paper.pdf", 300_000, 6);
    let (sender, ticket, sent) = send(&[&file], &["--server", &addr]);
    let id = ticket.items[0].id_text();
    let received = receive(
        &id[..10],
        out.path(),
        &fresh_identity_dir(),
        &["--server", &addr],
    );
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert_eq!(std::fs::read(out.path().join("paper.pdf")).unwrap(), data);
    assert!(
        text(&received.stdout).contains(&id),
        "{}",
        text(&received.stdout)
    );
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success());
    assert!(
        lines.iter().any(|l| l.starts_with("delivered ")),
        "{lines:?}"
    );
}

/// An address on this machine where nothing listens: one the system just gave and took back.
fn nothing_listens() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn the_senders_index_in_the_ticket_leads_the_receiver_to_it() {
    let (_server, server) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "thesis.pdf", CHUNK_SIZE as usize + 4321, 21);
    let (sender, ticket, sent) = send(&[&file], &["--server", &server]);
    // Registered with the index: the ticket names it, with the id it proved (version 2).
    assert!(ticket.to_string().starts_with("p2p2"), "{ticket}");
    let named: Vec<String> = ticket.indexes.iter().map(|i| i.addr.to_string()).collect();
    assert_eq!(named, [server.as_str()]);
    // The receiver can't use the ticket's address (another subnet, say): nothing listens at
    // the one it lists now. Only the index knows where the sender is.
    let elsewhere = Ticket {
        addrs: vec![nothing_listens()],
        ..ticket.clone()
    };
    let me = fresh_identity_dir();
    let without_index = Ticket {
        indexes: vec![],
        ..elsewhere.clone()
    };
    let lost = receive(&without_index.to_string(), out.path(), &me, &[]);
    assert_eq!(lost.status.code(), Some(1), "{}", text(&lost.stderr));
    assert!(
        text(&lost.stderr).contains("cannot reach the sender"),
        "{}",
        text(&lost.stderr)
    );

    // Given only the ticket (no --server): it asks the ticket's index, and gets the file.
    let received = receive(&elsewhere.to_string(), out.path(), &me, &[]);
    let stderr = text(&received.stderr);
    assert!(received.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out.path().join("thesis.pdf")).unwrap(), data);
    assert!(
        stderr.contains(&format!(
            "looking for it through the index servers {server}"
        )),
        "{stderr}"
    );
    assert!(
        text(&received.stdout).contains("downloaded "),
        "{}",
        text(&received.stdout)
    );
    // The sender learns it arrived, and exits by itself.
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success(), "{status:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("delivered ")),
        "{lines:?}"
    );
}

#[test]
fn an_index_in_the_ticket_that_does_not_answer_is_a_warning() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "memo.txt", 20_000, 22);
    let (sender, ticket, sent) = send(&[&file], &[]);
    // Any client may write a version 2 ticket: this one names an index nobody runs.
    let gone = ticket
        .clone()
        .with_indexes(vec![TicketIndex {
            node_id: NodeId([5; 20]),
            addr: nothing_listens(),
        }])
        .unwrap();
    let received = receive(&gone.to_string(), out.path(), &fresh_identity_dir(), &[]);
    let stderr = text(&received.stderr);
    assert!(received.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out.path().join("memo.txt")).unwrap(), data);
    assert!(
        stderr.contains(
            "leaving out the index servers the ticket names; receiving from its sender alone"
        ),
        "{stderr}"
    );
    sender_delivered_blocking(sender, sent);
}

/// [`sender_delivered`] on this thread.
fn sender_delivered_blocking(sender: Running, sent: BufReader<ChildStdout>) {
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success(), "{status:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("delivered ")),
        "{lines:?}"
    );
}

/// Every line of `stdout`, parsed: each must be a JSON object with an `event` (human text on
/// stdout breaks scripts).
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line:?}"));
            assert!(value["event"].is_string(), "no event in {line}");
            value
        })
        .collect()
}

#[test]
fn with_json_send_and_receive_print_one_event_a_line() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = CHUNK_SIZE as usize + 5;
    let (file, data) = random_file(src.path(), "clip.bin", size, 8);
    let mut sender = bin()
        .args(["send", "--json", "--addr", "127.0.0.1:0"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sent = BufReader::new(sender.stdout.take().unwrap());
    let sender = Running(sender);

    // The first line is the ticket: what to paste, the whole command, and what it names.
    let mut first = String::new();
    sent.read_line(&mut first).unwrap();
    let ticket_event = &json_lines(&first)[0];
    assert_eq!(ticket_event["event"], "ticket", "{first}");
    let ticket_text = ticket_event["ticket"].as_str().unwrap().to_owned();
    let ticket: Ticket = ticket_text.parse().unwrap();
    assert_eq!(
        ticket_event["command"],
        format!("p2p-transfer receive {ticket_text}")
    );
    let id = ticket.items[0].id_text();
    assert_eq!(
        ticket_event["items"],
        serde_json::json!([{"kind": "file", "id": id, "name": "clip.bin", "size": size, "files": 1}])
    );

    // The receiver prints events only, ending with `downloaded`.
    let received = receive(&ticket_text, out.path(), &fresh_identity_dir(), &["--json"]);
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert_eq!(std::fs::read(out.path().join("clip.bin")).unwrap(), data);
    let events = json_lines(&text(&received.stdout));
    let last = events.last().expect("some events");
    assert_eq!(last["event"], "downloaded", "{events:?}");
    assert_eq!(last["kind"], "file");
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["size"], size);
    assert_eq!(last["bytes_fetched"], size);
    assert_eq!(last["complete"], true);
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["event"] == "progress"),
        "{events:?}"
    );

    // The sender's last line: delivered, naming the file, its id and the receiver.
    let (status, lines) = sender_end(sender, sent);
    assert!(status.success(), "{status:?}");
    let delivered = json_lines(&lines.join("\n"));
    assert_eq!(delivered.len(), 1, "{lines:?}");
    assert_eq!(delivered[0]["event"], "delivered");
    assert_eq!(delivered[0]["path"], file.to_str().unwrap());
    assert_eq!(delivered[0]["id"], id.as_str());
    assert!(
        delivered[0]["node_id"]
            .as_str()
            .is_some_and(|n| n.parse::<NodeId>().is_ok()),
        "{lines:?}"
    );

    // A ticket whose sender is someone else: one `failed` event for its item, exit 1.
    let (mut other, other_ticket, _out) = send(&[&file], &[]);
    let forged = Ticket {
        node_id: NodeId([9; 20]),
        ..other_ticket.clone()
    };
    let refused = receive(
        &forged.to_string(),
        out.path(),
        &fresh_identity_dir(),
        &["--json"],
    );
    assert_eq!(refused.status.code(), Some(1));
    let events = json_lines(&text(&refused.stdout));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "failed");
    assert_eq!(events[0]["id"], other_ticket.items[0].id_text().as_str());
    assert!(
        events[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not the expected")),
        "{events:?}"
    );
    let _ = other.0.kill();
}
