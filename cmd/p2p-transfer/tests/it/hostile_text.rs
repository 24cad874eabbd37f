//! Text from a hostile index or peer never reaches the terminal raw: file names and error
//! messages carrying escape sequences (set the window title, clear the screen, the one-byte
//! CSI) and bidirectional overrides are shown escaped, on stdout and stderr alike, and are
//! still shown.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use expectrl::Expect;
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileManifest, FileSummary, HostInfo, IndexConversation, IndexRequest,
    IndexResponse, IndexServerConnection, NodeId, PeerClientConnection, PeerConversation, PeerId,
    PeerRequest, PeerResponse, PeerServerConnection, Sha256Hash, client_hello, server_hello,
};
use tokio::net::TcpListener;

use crate::process::{bin, leecher};
use crate::shell::{Pty, spawn_shell};

/// An error message that, printed raw, sets the window title, clears the screen, turns the
/// text red with the one-byte CSI and reverses what follows.
const EVIL_MESSAGE: &str = "gone\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}!";
/// How [`EVIL_MESSAGE`] must look.
const EVIL_MESSAGE_SHOWN: &str = r"gone\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}!";

/// Names a hostile index lists in `Files` (the client has no reason to trust them).
const EVIL_NAMES: [(&str, &str); 4] = [
    (
        "report\x1b]0;pwned\x07.pdf",
        r"report\u{1b}]0;pwned\u{7}.pdf",
    ),
    ("clear\x1b[2J\x1b[H.txt", r"clear\u{1b}[2J\u{1b}[H.txt"),
    ("c1\u{9b}31mred\u{85}.txt", r"c1\u{9b}31mred\u{85}.txt"),
    ("café 日本 🎉.txt", "café 日本 🎉.txt"),
];

/// A valid file name (no control characters) that still reads backwards: `invoiceexe.pdf`.
const BIDI_NAME: &str = "invoice\u{202e}fdp.exe";
const BIDI_NAME_SHOWN: &str = r"invoice\u{202e}fdp.exe";

/// A server task aborted on drop.
struct Fake {
    addr: SocketAddr,
    /// Its node id.
    node: NodeId,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An index that speaks the protocol correctly, with hostile text wherever it has text:
/// `Search` lists [`EVIL_NAMES`] (or, for the query `fail`, refuses with [`EVIL_MESSAGE`]),
/// `Lookup` of `manifest` names `host`, any other `Lookup` is refused with [`EVIL_MESSAGE`].
async fn hostile_index(manifest: FileManifest, host: SocketAddr, host_node: NodeId) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = crate::support::tls();
    let node = tls.node_id();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let manifest = manifest.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Some(stream) = crate::support::accept_tls(&tls, stream).await else {
                    return;
                };
                let mut conn = IndexServerConnection::index_server(stream);
                if server_hello::<IndexConversation, _>(&mut conn)
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(request)) = conn.recv().await {
                    let reply = index_reply(request, &manifest, host, host_node);
                    if conn.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake { addr, node, task }
}

fn refused() -> IndexResponse {
    IndexResponse::Error {
        code: ErrorCode::UnknownFile,
        message: EVIL_MESSAGE.into(),
    }
}

fn index_reply(
    request: IndexRequest,
    manifest: &FileManifest,
    host: SocketAddr,
    host_node: NodeId,
) -> IndexResponse {
    match request {
        IndexRequest::Register { addr } => IndexResponse::Registered {
            peer_id: PeerId(1),
            addr,
            heartbeat_interval_ms: 5000,
            heartbeat_timeout_ms: 15000,
        },
        IndexRequest::Heartbeat { .. } => IndexResponse::HeartbeatAck {},
        IndexRequest::AddFile { manifest, .. } => IndexResponse::FileAdded {
            file_id: manifest.id(),
        },
        IndexRequest::RemoveFile { file_id, .. } => IndexResponse::FileRemoved { file_id },
        IndexRequest::Unregister { .. } => IndexResponse::Unregistered {},
        IndexRequest::Lookup { id } if manifest.id().to_string().starts_with(&id) => {
            IndexResponse::Found {
                file_id: manifest.id(),
                manifest: manifest.clone(),
                hosts: vec![HostInfo {
                    peer_id: PeerId(2),
                    addr: host,
                    node_id: host_node,
                }],
            }
        }
        IndexRequest::Search { query } if query == "fail" => refused(),
        IndexRequest::Search { .. } | IndexRequest::ListFiles {} => IndexResponse::Files {
            files: EVIL_NAMES
                .iter()
                .enumerate()
                .map(|(i, (name, _))| FileSummary {
                    file_id: p2p_protocol::FileId([i as u8; 32]),
                    name: (*name).to_owned(),
                    size: 1000,
                    hosts: 1,
                    files: None,
                    path: None,
                })
                .collect(),
            total: EVIL_NAMES.len() as u64,
        },
        IndexRequest::ListPeers {} => IndexResponse::Peers {
            peers: Vec::new(),
            total: 0,
        },
        _ => refused(),
    }
}

/// A chunk server that answers every request with `Error { file_unavailable, EVIL_MESSAGE }`.
async fn hostile_peer() -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = crate::support::tls();
    let node = tls.node_id();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Some(stream) = crate::support::accept_tls(&tls, stream).await else {
                    return;
                };
                let mut conn = PeerServerConnection::peer_server(stream);
                if server_hello::<PeerConversation, _>(&mut conn)
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(_)) = conn.recv().await {
                    let reply = PeerResponse::Error {
                        code: ErrorCode::FileUnavailable,
                        message: EVIL_MESSAGE.into(),
                    };
                    if conn.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake { addr, node, task }
}

/// A valid one-chunk manifest whose name reads backwards.
fn bidi_manifest() -> FileManifest {
    FileManifest {
        name: BIDI_NAME.into(),
        size: 1000,
        chunk_size: CHUNK_SIZE,
        chunks: vec![Sha256Hash([9; 32])],
    }
}

/// Runs the binary off the reactor (the fakes live on it), with a deadline.
async fn run(mut cmd: std::process::Command) -> Output {
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the binary finished in time")
        .unwrap()
}

/// The stream as text, after checking that it holds no character that could steer a
/// terminal: no control character but the line break, no bidirectional control.
fn inert(what: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).expect("output is UTF-8");
    for c in text.chars() {
        let steers = (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        assert!(!steers, "{what} holds a raw {c:?}: {text:?}");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_shows_hostile_file_names_escaped() {
    let index = hostile_index(
        bidi_manifest(),
        "127.0.0.1:9".parse().unwrap(),
        NodeId([9; 20]),
    )
    .await;
    let mut cmd = bin();
    cmd.args(["search", "anything", "--server", &index.addr.to_string()]);
    let output = run(cmd).await;
    let stdout = inert("stdout", &output.stdout);
    inert("stderr", &output.stderr);
    assert!(output.status.success(), "{output:?}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), EVIL_NAMES.len(), "{stdout}");
    for (row, (_, shown)) in rows.iter().zip(EVIL_NAMES) {
        assert!(row.ends_with(&format!("  {shown}")), "{row:?} in {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_index_error_is_shown_escaped() {
    let index = hostile_index(
        bidi_manifest(),
        "127.0.0.1:9".parse().unwrap(),
        NodeId([9; 20]),
    )
    .await;
    let mut cmd = bin();
    cmd.args(["search", "fail", "--server", &index.addr.to_string()]);
    let output = run(cmd).await;
    inert("stdout", &output.stdout);
    let stderr = inert("stderr", &output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.trim_end(),
        format!("error: cannot search for \"fail\": index server: {EVIL_MESSAGE_SHOWN}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_error_and_name_are_shown_escaped() {
    let peer = hostile_peer().await;
    let manifest = bidi_manifest();
    let id = manifest.id().to_string();
    let index = hostile_index(manifest, peer.addr, peer.node).await;
    let out = tempfile::tempdir().unwrap();
    let mut cmd = leecher(&index.addr.to_string(), &id, out.path());
    // -v: the info log lines (the start's) are checked too.
    cmd.args(["--stall-timeout", "1s", "-v"]);
    let output = run(cmd).await;
    inert("stdout", &output.stdout);
    let stderr = inert("stderr", &output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let error = stderr.lines().last().unwrap();
    assert!(
        error.starts_with(&format!(
            "error: cannot download {id}: download of {BIDI_NAME_SHOWN} failed with 0 of 1 chunks complete: "
        )),
        "{stderr}"
    );
    assert!(
        error.contains(&format!(
            "{}: {EVIL_MESSAGE_SHOWN} (file_unavailable)",
            peer.addr
        )),
        "{stderr}"
    );
    // The progress line and the log line about the dropped host show the message too.
    assert!(
        stderr.contains(&format!(
            "dropped {}: {EVIL_MESSAGE_SHOWN} (file_unavailable)",
            peer.addr
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("dropping host") && l.contains(EVIL_MESSAGE_SHOWN)),
        "{stderr}"
    );
    // The log line of the start shows the name.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("download started") && l.contains(BIDI_NAME_SHOWN)),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_index_refusing_a_download_is_shown_escaped() {
    let index = hostile_index(
        bidi_manifest(),
        "127.0.0.1:9".parse().unwrap(),
        NodeId([9; 20]),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let cmd = leecher(&index.addr.to_string(), "abcdef123456", out.path());
    let output = run(cmd).await;
    inert("stdout", &output.stdout);
    let stderr = inert("stderr", &output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!("error: cannot download abcdef123456: index server: {EVIL_MESSAGE_SHOWN}")
    );
}

/// Waits for `needle` on the shell's terminal, keeping everything it printed up to there.
fn expect_kept(sh: &mut Pty, needle: &str, kept: &mut Vec<u8>) {
    let found = sh.expect(needle).unwrap_or_else(|e| {
        panic!(
            "{e}: no {needle:?} after {:?}",
            String::from_utf8_lossy(kept)
        )
    });
    kept.extend_from_slice(found.before());
    kept.extend_from_slice(found.get(0).unwrap());
}

/// Waits for the prompt (answering reedline's cursor query), keeping what came before it.
fn prompt_kept(sh: &mut Pty, kept: &mut Vec<u8>) {
    expect_kept(sh, "\x1b[6n", kept);
    sh.send("\x1b[20;1R").unwrap();
}

#[test]
fn the_peer_shell_shows_hostile_text_escaped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peer = rt.block_on(hostile_peer());
    let manifest = bidi_manifest();
    let id = manifest.id().to_string();
    let index = rt.block_on(hostile_index(manifest, peer.addr, peer.node));
    let dir = tempfile::tempdir().unwrap();
    let (server, out) = (index.addr.to_string(), dir.path().display().to_string());
    let mut sh = spawn_shell(
        &[
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &server,
            "--stall-timeout",
            "1s",
            "--out",
            &out,
            "-i",
        ],
        &dir.path().join("history"),
    );
    let mut kept = Vec::new();

    prompt_kept(&mut sh, &mut kept);
    sh.send_line("search anything").unwrap();
    for (_, shown) in EVIL_NAMES {
        expect_kept(&mut sh, shown, &mut kept);
    }
    prompt_kept(&mut sh, &mut kept);
    sh.send_line("search fail").unwrap();
    expect_kept(
        &mut sh,
        &format!("error: index server: {EVIL_MESSAGE_SHOWN}"),
        &mut kept,
    );

    // A background download that fails: its line above the prompt, then `transfers`.
    prompt_kept(&mut sh, &mut kept);
    sh.send_line(format!("download {id}")).unwrap();
    expect_kept(
        &mut sh,
        &format!("error: download {id} failed: download of {BIDI_NAME_SHOWN} failed"),
        &mut kept,
    );
    expect_kept(&mut sh, EVIL_MESSAGE_SHOWN, &mut kept);
    prompt_kept(&mut sh, &mut kept);
    sh.send_line("transfers").unwrap();
    // The row: failed, the name escaped, then the start of the reason (escaped too).
    expect_kept(
        &mut sh,
        &format!("failed     {BIDI_NAME_SHOWN}: download of "),
        &mut kept,
    );
    expect_kept(&mut sh, BIDI_NAME_SHOWN, &mut kept);

    // A message whose sender and text are hostile, above the prompt and in `messages`.
    prompt_kept(&mut sh, &mut kept);
    sh.send_line("status").unwrap();
    expect_kept(&mut sh, "listening on  ", &mut kept);
    let port = sh.expect(expectrl::Regex("127.0.0.1:[0-9]+")).unwrap();
    let me: SocketAddr = String::from_utf8_lossy(port.get(0).unwrap())
        .parse()
        .unwrap();
    let sender = crate::support::tls();
    rt.block_on(async {
        let (stream, _) = sender
            .connect(me, None, Duration::from_secs(10))
            .await
            .unwrap();
        let mut conn = PeerClientConnection::peer_client(stream);
        client_hello::<PeerConversation, _>(&mut conn)
            .await
            .unwrap();
        let message = PeerRequest::Message {
            from: "evil\x1b]0;pwned\x07".into(),
            text: EVIL_MESSAGE.into(),
        };
        let reply = conn
            .request(&message, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply, PeerResponse::MessageReceived {});
    });
    // Who sent it first (the node id nobody can fake), then the name it gave itself.
    expect_kept(
        &mut sh,
        &format!(
            r#"message from {} (calls itself "evil\u{{1b}}]0;pwned\u{{7}}", from "#,
            sender.node_id()
        ),
        &mut kept,
    );
    expect_kept(&mut sh, EVIL_MESSAGE_SHOWN, &mut kept);
    prompt_kept(&mut sh, &mut kept);
    sh.send_line("messages").unwrap();
    expect_kept(&mut sh, EVIL_MESSAGE_SHOWN, &mut kept);
    prompt_kept(&mut sh, &mut kept);
    sh.send_line("exit").unwrap();
    sh.expect(expectrl::Eof).expect("shell ended");

    // The shell draws its prompt with escape sequences of its own; none of the hostile ones
    // got through.
    let raw = ["\x1b]0;pwned", "\x07", "\u{9b}", "\u{85}", "\u{202e}"];
    for needle in raw {
        assert!(
            !kept.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the terminal got a raw {needle:?}: {:?}",
            String::from_utf8_lossy(&kept)
        );
    }
}
