//! Share by upload through the web API: the bytes land in the upload folder exactly, the file
//! is shared and another peer downloads it byte for byte; refusals (existing name, too large,
//! bad name) leave nothing behind; an interrupted upload leaves no file, no temporary file and
//! nothing shared; and a file larger than the node's memory budget streams through without
//! the process growing by more than that budget.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use p2p_web::views::UploadView;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, start_peer, start_server};
use crate::web_support::{TEST_KEY, api_client, start_web_peer, start_web_peer_with, web_config};

/// 3 MiB + 1 B: not a whole number of chunks, and more than one piece of any HTTP read.
const ODD_SIZE: usize = 3 * 1024 * 1024 + 1;

/// How long the success path may take on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The names in `dir`, sorted (temporary files included: they start with `.`).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Downloads `id` through `peer` into a fresh folder and returns the file's bytes.
async fn download(peer: &p2p_peer::PeerHandle, id: &str, name: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        DEADLINE,
        peer.download(id, out.path(), None, CancellationToken::new()),
    )
    .await
    .expect("download finished in time")
    .unwrap();
    std::fs::read(out.path().join(name)).unwrap()
}

async fn created(response: reqwest::Response) -> UploadView {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_multipart_uploads_are_shared_and_download_byte_exact() {
    let server = start_server().await;
    let seeder = start_peer(server.addr).await;
    let leecher = start_peer(server.addr).await;
    let web = start_web_peer(&seeder).await;
    let client = api_client();

    // `curl -T FILE URL/uploads/`: a PUT with the name in the path.
    let put_bytes = random_bytes(ODD_SIZE, 1);
    let put = created(
        client
            .put(web.url("/api/v1/uploads/put%20me.bin"))
            .body(put_bytes.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    // `curl -F file=@FILE URL/uploads`: a multipart form with one file field.
    let form_bytes = random_bytes(ODD_SIZE, 2);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(form_bytes.clone()).file_name("form.bin"),
    );
    let posted = created(
        client
            .post(web.url("/api/v1/uploads"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A raw POST with ?name=, as the page sends it.
    let raw_bytes = random_bytes(ODD_SIZE, 3);
    let raw = created(
        client
            .post(web.url("/api/v1/uploads?name=raw.bin"))
            .body(raw_bytes.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;

    let cases = [
        (&put, "put me.bin", &put_bytes),
        (&posted, "form.bin", &form_bytes),
        (&raw, "raw.bin", &raw_bytes),
    ];
    assert_eq!(
        names_in(&web.upload_dir),
        ["form.bin", "put me.bin", "raw.bin"],
        "the files and nothing else (no temporary file left)"
    );
    let shared = seeder.files();
    for (view, name, bytes) in cases {
        assert_eq!(view.name, name);
        assert_eq!(view.size, bytes.len() as u64);
        assert_eq!(Path::new(&view.path), web.upload_dir.join(name));
        assert!(
            std::fs::read(web.upload_dir.join(name)).unwrap() == *bytes,
            "{name} is byte-exact in the upload folder"
        );
        assert!(
            shared.iter().any(|f| f.file_id.to_string() == view.file_id),
            "{name} is shared"
        );
        assert!(
            download(&leecher, &view.file_id, name).await == *bytes,
            "{name} downloads byte-exact from another peer"
        );
    }
}

/// One HTTP/1.1 request over a fresh connection, sent the way curl sends an upload: the head
/// with `Expect: 100-continue`, then the body only if the server asks for it. A refusal
/// therefore comes before any of the body is sent, so the answer can't be lost to a reset
/// from a server that closes with unread bytes. Returns the final status and JSON body.
async fn request_expecting(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{head}\r\nHost: {addr}\r\nX-API-Key: {TEST_KEY}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut status, mut rest) = read_head(&mut stream).await;
    if status == 100 {
        stream.write_all(body).await.unwrap();
        (status, rest) = read_head(&mut stream).await;
    }
    // Connection: close: the rest of the stream is the body.
    let mut json = rest;
    stream.read_to_end(&mut json).await.unwrap();
    (status, serde_json::from_slice(&json).unwrap_or_default())
}

/// Reads a response head; returns its status and whatever came after it.
async fn read_head(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            return (status, buf[end + 4..].to_vec());
        }
        let mut piece = [0u8; 4096];
        let n = stream.read(&mut piece).await.unwrap();
        assert!(n > 0, "connection closed before a response head: {buf:?}");
        buf.extend_from_slice(&piece[..n]);
    }
}

fn code(json: &serde_json::Value) -> &str {
    json["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_existing_name_is_refused_and_left_untouched() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    std::fs::write(web.upload_dir.join("keep.bin"), b"precious").unwrap();
    let body = random_bytes(ODD_SIZE, 4);
    let (status, json) = request_expecting(
        web.addr,
        &format!(
            "PUT /api/v1/uploads/keep.bin HTTP/1.1\r\nContent-Length: {}",
            body.len()
        ),
        &body,
    )
    .await;
    assert_eq!((status, code(&json)), (409, "already_exists"), "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{json}"
    );
    assert_eq!(
        std::fs::read(web.upload_dir.join("keep.bin")).unwrap(),
        b"precious"
    );
    assert_eq!(names_in(&web.upload_dir), ["keep.bin"]);
    assert!(peer.files().is_empty());
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_before_a_byte_is_written() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let (mut config, root) = web_config();
    config.max_upload_bytes = 1024 * 1024;
    let web = start_web_peer_with(&peer, config, root).await;
    let body = random_bytes(2 * 1024 * 1024, 5);

    let (status, json) = request_expecting(
        web.addr,
        &format!(
            "PUT /api/v1/uploads/big.bin HTTP/1.1\r\nContent-Length: {}",
            body.len()
        ),
        &body,
    )
    .await;
    assert_eq!((status, code(&json)), (413, "payload_too_large"), "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576 bytes"),
        "the limit is named: {json}"
    );
    // A form whose request alone is over the limit.
    let (status, json) = request_expecting(
        web.addr,
        &format!(
            "POST /api/v1/uploads HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}",
            body.len()
        ),
        &body,
    )
    .await;
    assert_eq!((status, code(&json)), (413, "payload_too_large"), "{json}");
    assert!(names_in(&web.upload_dir).is_empty(), "nothing written");
    assert!(peer.files().is_empty());
}

#[tokio::test]
async fn bad_names_and_missing_lengths_are_refused() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    for target in [
        "PUT /api/v1/uploads/..%2Fx",
        "PUT /api/v1/uploads/a%2Fb",
        "PUT /api/v1/uploads/.hidden",
        "POST /api/v1/uploads?name=..%2Fx",
        "POST /api/v1/uploads?name=",
        "POST /api/v1/uploads",
    ] {
        let (status, json) = request_expecting(
            web.addr,
            &format!("{target} HTTP/1.1\r\nContent-Length: 1"),
            b"x",
        )
        .await;
        assert_eq!(
            (status, code(&json)),
            (400, "bad_request"),
            "{target}: {json}"
        );
    }
    // Forms: a field that is not a file, and two files in one form.
    let part = |headers: &str, data: &str| {
        format!("--XyZ\r\nContent-Disposition: form-data; {headers}\r\n\r\n{data}\r\n")
    };
    for form in [
        part(r#"name="note""#, "text"),
        part(r#"name="file"; filename="one.bin""#, "one")
            + &part(r#"name="file"; filename="two.bin""#, "two"),
    ] {
        let form = form + "--XyZ--\r\n";
        let (status, json) = request_expecting(
            web.addr,
            &format!(
                "POST /api/v1/uploads HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}",
                form.len()
            ),
            form.as_bytes(),
        )
        .await;
        assert_eq!(
            (status, code(&json)),
            (400, "bad_request"),
            "{form}: {json}"
        );
    }
    // A body of unknown length (chunked): the limit and space can't be checked first.
    let (status, json) = request_expecting(
        web.addr,
        "PUT /api/v1/uploads/c.bin HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"1\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((status, code(&json)), (411, "length_required"), "{json}");
    assert!(names_in(&web.upload_dir).is_empty());
    assert!(peer.files().is_empty());
}

/// An upload the disk can't hold is refused before a byte is written. Runs in a private mount
/// namespace with the upload folder on a 4 MiB tmpfs.
#[test]
fn an_upload_the_disk_cannot_hold_is_refused_up_front() {
    if !crate::netns::enter("web_upload::an_upload_the_disk_cannot_hold_is_refused_up_front") {
        return;
    }
    let small = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(small.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs in the test's namespace"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = start_server().await;
        let peer = start_peer(server.addr).await;
        let (mut config, root) = web_config();
        config.upload_dir = small.path().to_owned();
        let web = start_web_peer_with(&peer, config, root).await;
        let body = random_bytes(8 * 1024 * 1024, 9);
        let (status, json) = request_expecting(
            web.addr,
            &format!(
                "PUT /api/v1/uploads/huge.bin HTTP/1.1\r\nContent-Length: {}",
                body.len()
            ),
            &body,
        )
        .await;
        assert_eq!((status, code(&json)), (507, "no_space"), "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("not enough disk space for"), "{message}");
        assert!(message.contains("8388608 more bytes needed"), "{message}");
        assert!(names_in(small.path()).is_empty());
        assert!(peer.files().is_empty());
    });
    let _ = std::process::Command::new("umount")
        .arg(small.path())
        .status();
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_file_and_shares_nothing() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let mut stream = TcpStream::connect(web.addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/uploads/cut.bin HTTP/1.1\r\nHost: {}\r\nX-API-Key: {TEST_KEY}\r\nContent-Length: {}\r\n\r\n",
        web.addr,
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&random_bytes(1024 * 1024, 6))
        .await
        .unwrap();
    // The upload is under way: its temporary file exists.
    let dir = web.upload_dir.clone();
    assert!(
        eventually(DEADLINE, || {
            let names = names_in(&dir);
            async move { names.iter().any(|n| n.starts_with(".cut.bin.upload-")) }
        })
        .await,
        "the upload started: {:?}",
        names_in(&dir)
    );
    // The client goes away with 9 MiB still to send.
    drop(stream);
    assert!(
        eventually(DEADLINE, || {
            let empty = names_in(&dir).is_empty();
            async move { empty }
        })
        .await,
        "no file and no temporary file left: {:?}",
        names_in(&dir)
    );
    assert!(peer.files().is_empty(), "nothing shared");
}

#[tokio::test]
async fn an_upload_under_way_at_shutdown_is_discarded_and_does_not_hold_the_shutdown() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    // The upload folder outlives the web server here, to be looked at after it stopped.
    let kept = tempfile::tempdir().unwrap();
    let (mut config, root) = web_config();
    config.upload_dir = kept.path().to_owned();
    let web = start_web_peer_with(&peer, config, root).await;
    let dir = kept.path().to_owned();
    let mut stream = TcpStream::connect(web.addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/uploads/late.bin HTTP/1.1\r\nHost: {}\r\nX-API-Key: {TEST_KEY}\r\nContent-Length: {}\r\n\r\n",
        web.addr,
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&random_bytes(1024, 8)).await.unwrap();
    assert!(
        eventually(DEADLINE, || {
            let names = names_in(&dir);
            async move { names.iter().any(|n| n.starts_with(".late.bin.upload-")) }
        })
        .await,
        "the upload started: {:?}",
        names_in(&dir)
    );
    // The node shuts down while the client, still connected, sends nothing more.
    drop(web);
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the server ends the stalled upload's connection when it shuts down")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("shutting_down"), "{answer}");
    assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
    assert!(peer.files().is_empty());
}

/// The memory the node may spend on one upload, whatever the file's size. The upload streams
/// through a bounded channel of body pieces (a few MiB at most), so a generous 64 MiB is far
/// above what it needs and far below the file.
const UPLOAD_MEMORY_BUDGET: u64 = 64 * 1024 * 1024;
/// Larger than the budget by more than twice.
const BIG_UPLOAD: u64 = 160 * 1024 * 1024;
/// Pieces the client sends (and the checker compares), from a seeded generator: the test holds
/// no copy of the file.
const PIECE: usize = 256 * 1024;
const BIG_SEED: u64 = 7;

/// Set in the process that runs the memory test alone.
const ALONE: &str = "P2P_UPLOAD_MEMORY_ALONE";

/// The deterministic content of the big upload, piece by piece.
fn big_pieces() -> impl Iterator<Item = Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(BIG_SEED);
    let mut left = BIG_UPLOAD as usize;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let mut piece = vec![0u8; left.min(PIECE)];
        rng.fill_bytes(&mut piece);
        left -= piece.len();
        Some(piece)
    })
}

/// A `kB` line of /proc/self/status, in bytes.
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Resets the process's peak resident size (`VmHWM`) to its current size. Where the kernel
/// does not allow it, the peak so far stays in (start-up only, in a process of its own), which
/// can only make the check stricter.
fn reset_peak() {
    if let Err(err) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("cannot reset VmHWM ({err}); measuring from the start-up peak");
    }
}

/// The process's peak memory is shared by every test running in it, so the measurement runs
/// in a process of its own: this test re-runs the test binary for itself alone (as `netns`
/// does) and passes if that run passed. There, nothing else allocates, the peak is reset just
/// before the upload and read just after it, and the only variable is the upload path itself:
/// holding the body in memory would add its 160 MiB; streaming adds a few MiB.
#[test]
fn a_file_larger_than_the_memory_budget_uploads_in_bounded_memory() {
    const TEST: &str = "web_upload::a_file_larger_than_the_memory_budget_uploads_in_bounded_memory";
    if std::env::var_os(ALONE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(ALONE, "1")
            .output()
            .expect("run the memory test in a process of its own");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the memory test failed in its own process\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        return;
    }
    const { assert!(BIG_UPLOAD > 2 * UPLOAD_MEMORY_BUDGET) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(big_upload_alone());
}

async fn big_upload_alone() {
    let server = start_server().await;
    let seeder = start_peer(server.addr).await;
    let leecher = start_peer(server.addr).await;
    let web = start_web_peer(&seeder).await;
    let client = api_client();

    let body = futures::stream::iter(big_pieces().map(Ok::<_, std::io::Error>));
    reset_peak();
    let before = proc_status("VmRSS:");
    let view = created(
        client
            .put(web.url("/api/v1/uploads/big.bin"))
            .header(reqwest::header::CONTENT_LENGTH, BIG_UPLOAD)
            .body(reqwest::Body::wrap_stream(body))
            .timeout(DEADLINE * 2)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let growth = proc_status("VmHWM:").saturating_sub(before);
    println!(
        "upload of {} MiB: peak memory grew by {:.1} MiB (budget {} MiB)",
        BIG_UPLOAD >> 20,
        growth as f64 / (1 << 20) as f64,
        UPLOAD_MEMORY_BUDGET >> 20
    );
    assert!(
        growth < UPLOAD_MEMORY_BUDGET,
        "the upload grew the process by {growth} bytes, over the {UPLOAD_MEMORY_BUDGET}-byte budget"
    );
    assert_eq!(view.size, BIG_UPLOAD);

    // Another peer downloads it; compared piece by piece with the generator.
    let out = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        DEADLINE * 2,
        leecher.download(&view.file_id, out.path(), None, CancellationToken::new()),
    )
    .await
    .expect("download finished in time")
    .unwrap();
    let mut file = std::fs::File::open(out.path().join("big.bin")).unwrap();
    assert_eq!(file.metadata().unwrap().len(), BIG_UPLOAD);
    let mut got = vec![0u8; PIECE];
    for (i, expected) in big_pieces().enumerate() {
        let got = &mut got[..expected.len()];
        file.read_exact(got).unwrap();
        assert!(*got == *expected, "piece {i} differs");
    }
    assert_eq!(
        file.read(&mut [0u8; 1]).unwrap(),
        0,
        "nothing after the end"
    );
    let _ = std::io::stdout().flush();
}
