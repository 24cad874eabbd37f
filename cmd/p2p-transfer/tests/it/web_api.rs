//! The peer's and the server's REST API and event streams, in-process: every verb a script
//! uses, the answers and files it gets, the error replies it must be able to match on, and a
//! dashboard that can't slow a download. One test runs the binary: its startup download is a
//! job the API lists like any other.

use std::time::{Duration, Instant};

use futures::StreamExt;
use p2p_peer::{Peer, PeerHandle};
use p2p_protocol::manifest_file::{AnyManifestFile, IndexRef, ManifestFile};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bad_input::{FakeSeeder, Misbehaviour};
use crate::support::{loopback0, peer_config, random_file, start_peer, start_server};
use crate::web_support::{
    TEST_KEY, WebNode, anonymous_client, api_client, start_web_peer, start_web_peer_with,
    start_web_server, web_config,
};

const MIB: usize = 1024 * 1024;
/// Generous: the machine is a loaded 2-core box.
const DEADLINE: Duration = Duration::from_secs(60);

/// One server-sent event.
#[derive(Debug)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

/// A small reader of a `text/event-stream` body: `event:` and `data:` lines, a blank line
/// ends an event, `:` lines are comments (keep-alives).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    /// Opens the stream at `url` (`/api/v1/events`) with the test key.
    pub async fn open(url: &str) -> Self {
        let response = api_client().get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            body: response.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buf.drain(..end + 2).collect()).unwrap();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap();
                return Some(SseEvent { name, data });
            }
            match self.body.next().await {
                Some(bytes) => self.buf.extend_from_slice(&bytes.unwrap()),
                None => return None,
            }
        }
    }

    /// Events until one satisfies `want`, which is returned; panics after `limit`.
    pub async fn until(
        &mut self,
        limit: Duration,
        mut want: impl FnMut(&SseEvent) -> bool,
    ) -> SseEvent {
        tokio::time::timeout(limit, async {
            loop {
                let event = self.next().await.expect("the event stream ended");
                if want(&event) {
                    return event;
                }
            }
        })
        .await
        .expect("no such event before the deadline")
    }
}

async fn get(url: String) -> (StatusCode, Value) {
    let response = api_client().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn post(url: String, body: Value) -> (StatusCode, Value) {
    let response = api_client().post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn delete(url: String) -> (StatusCode, Value) {
    let response = api_client().delete(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The error code of an error reply (and that it has the documented shape).
fn error_code(body: &Value) -> &str {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"].as_str().unwrap()
}

/// Waits until download `handle` on `web` reaches a final state; returns its view.
async fn wait_finished(web: &WebNode, handle: u64) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, view) = get(web.url(&format!("/api/v1/downloads/{handle}"))).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if ["done", "failed", "cancelled"].contains(&view["state"].as_str().unwrap()) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "download {handle} never ended: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_list_search_and_unshare() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "api-shared.bin", MIB + 7, 1301);
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;

    let (status, shared) = post(
        web.url("/api/v1/shares"),
        json!({ "path": path.to_str().unwrap() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{shared}");
    let file_id = shared["files"][0]["file_id"].as_str().unwrap().to_owned();
    assert_eq!(shared["files"][0]["name"], "api-shared.bin");
    assert_eq!(shared["files"][0]["size"], MIB + 7);

    let (_, files) = get(web.url("/api/v1/files")).await;
    assert_eq!(files["files"][0]["file_id"], file_id.as_str());

    let (status, found) = get(web.url("/api/v1/network/files?q=API%20shared")).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["files"][0]["file_id"], file_id.as_str());
    assert_eq!(found["files"][0]["hosts"], 1);
    let (_, all) = get(web.url("/api/v1/network/files")).await;
    assert_eq!(all["files"][0]["file_id"], file_id.as_str(), "{all}");
    let (_, none) = get(web.url("/api/v1/network/files?q=nothing-like-it")).await;
    assert_eq!(none["total"], 0);

    let (status, peers) = get(web.url("/api/v1/peers")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(peers["peers"][0]["this_peer"], true, "{peers}");
    assert_eq!(peers["peers"][0]["node_id"], peer.node_id().to_string());

    // By prefix, as on the command line.
    let (status, gone) = delete(web.url(&format!("/api/v1/shares/{}", &file_id[..12]))).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(gone["file_id"], file_id.as_str());
    let (_, files) = get(web.url("/api/v1/files")).await;
    assert_eq!(files["files"], json!([]));
    let (status, again) = delete(web.url(&format!("/api/v1/shares/{file_id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&again), "not_found");
    let (status, missing) = post(
        web.url("/api/v1/shares"),
        json!({ "path": src.path().join("no-such-file").to_str().unwrap() }),
    )
    .await;
    assert!(status.is_client_error(), "{status} {missing}");
    error_code(&missing);
    peer.shutdown().await;
}

/// "My files" shows a folder shared as a whole as one line, a folder as the network lists it
/// (`kind`, `files`), beside a file shared on its own (`kind: "file"`, `files: 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_files_show_a_shared_folder_as_one_folder_line() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let mut size = 0;
    for i in 0..3 {
        let dir = album.join(format!("disc {i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, data) = random_file(&dir, "track.flac", 1000 + i * 700, 40 + i as u64);
        size += data.len();
    }
    let (single, _) = random_file(src.path(), "notes.txt", 321, 44);
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;

    let (status, shared) = post(
        web.url("/api/v1/shares"),
        json!({ "path": album.to_str().unwrap() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{shared}");
    let lines = shared["files"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "one line for the folder: {shared}");
    let folder = &lines[0];
    assert_eq!(
        (
            &folder["kind"],
            &folder["name"],
            &folder["files"],
            &folder["size"]
        ),
        (&json!("folder"), &json!("album"), &json!(3), &json!(size)),
        "{folder}"
    );
    let (status, _) = post(
        web.url("/api/v1/shares"),
        json!({ "path": single.to_str().unwrap() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, mine) = get(web.url("/api/v1/files")).await;
    let mine = mine["files"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let keys: std::collections::BTreeSet<&str> =
        ["kind", "file_id", "name", "size", "files", "path"].into();
    for line in &mine {
        let has: std::collections::BTreeSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(has, keys, "{line}");
    }
    let listed = mine.iter().find(|f| f["kind"] == "folder").unwrap();
    assert_eq!(listed, folder);
    let file = mine.iter().find(|f| f["kind"] == "file").unwrap();
    assert_eq!(
        (&file["name"], &file["files"], &file["size"]),
        (&json!("notes.txt"), &json!(1), &json!(321))
    );

    // The network lists the same folder under the same id.
    let (_, network) = get(web.url("/api/v1/network/files")).await;
    let on_network = network["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "folder")
        .cloned()
        .unwrap_or_else(|| panic!("no folder line: {network}"));
    assert_eq!(on_network["file_id"], folder["file_id"]);
    peer.shutdown().await;
}

/// A file of `len` bytes shared by `seeders` new peers; returns its id, bytes and the peers.
async fn seeded(
    server: std::net::SocketAddr,
    dir: &std::path::Path,
    name: &str,
    len: usize,
    seeders: usize,
) -> (String, Vec<u8>, std::path::PathBuf, Vec<PeerHandle>) {
    let (path, data) = random_file(dir, name, len, len as u64);
    let mut peers = Vec::new();
    let mut id = String::new();
    for _ in 0..seeders {
        let peer = start_peer(server).await;
        id = peer.register(&path).await.unwrap().to_string();
        peers.push(peer);
    }
    (id, data, path, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_by_prefix_is_one_job_and_a_resume_completes_it_past_a_conflict() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    let mut files = Vec::new();
    for i in 0..12 {
        let dir = album.join(format!("disc {}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("track {i:02}.flac");
        let (_, data) = random_file(&dir, &name, 1000 + i * 3000, 90 + i as u64);
        files.push((format!("disc {}/{name}", i % 3), data));
    }
    let size: usize = files.iter().map(|(_, d)| d.len()).sum();
    let seeder = start_peer(server.addr).await;
    let shared = seeder.share_path(&album).await.unwrap();
    let folder_id = shared[0].file_id.to_string();
    let leecher = start_peer(server.addr).await;
    let web = start_web_peer(&leecher).await;

    // The network lists it as one folder line.
    let (_, network) = get(web.url("/api/v1/network/files")).await;
    let line = network["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "folder")
        .cloned()
        .unwrap_or_else(|| panic!("no folder line: {network}"));
    assert_eq!(line["file_id"], folder_id.as_str());
    assert_eq!(
        (&line["name"], &line["files"], &line["size"]),
        (&json!("album"), &json!(12), &json!(size))
    );

    // Something else where one file goes: the job fetches the others and fails, saying so.
    let (blocked, _) = &files[5];
    let blocked = out.path().join("album").join(blocked);
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"mine").unwrap();
    let (status, job) = post(
        web.url("/api/v1/downloads"),
        json!({ "id": &folder_id[..12], "out": out.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let handle = job["handle"].as_u64().unwrap();
    let view = wait_finished(&web, handle).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(
        view["error"],
        "1 of 12 files missing (1 conflict); run the same download again to resume"
    );
    assert_eq!(view["folder_id"], folder_id.as_str());
    assert_eq!(view["file_id"], Value::Null);
    assert_eq!(view["name"], "album");
    let counts = |v: &Value| {
        [
            "files_total",
            "files_done",
            "files_skipped",
            "conflicts",
            "files_failed",
        ]
        .map(|k| v[k].as_u64().unwrap())
    };
    assert_eq!(counts(&view), [12, 11, 0, 1, 0], "{view}");
    assert_eq!(std::fs::read(&blocked).unwrap(), b"mine");

    // Moved away, the job resumes: the 11 files there are found and kept, the last fetched.
    std::fs::remove_file(&blocked).unwrap();
    let (status, resumed) = post(
        web.url(&format!("/api/v1/downloads/{handle}/resume")),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let view = wait_finished(&web, handle).await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(counts(&view), [12, 12, 11, 0, 0], "{view}");
    assert_eq!(
        (&view["size"], &view["done"], &view["percent"]),
        (&json!(size), &json!(size), &json!(100.0))
    );
    assert_eq!(
        view["path"],
        out.path().join("album").to_str().unwrap(),
        "{view}"
    );
    for (rel, data) in &files {
        assert!(
            std::fs::read(out.path().join("album").join(rel)).unwrap() == *data,
            "{rel}"
        );
    }
    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_by_prefix_from_two_seeders_with_live_progress() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (id, data, path, seeders) =
        seeded(server.addr, src.path(), "api-get.bin", 12 * MIB + 5, 2).await;
    let leecher = start_peer(server.addr).await;
    let web = start_web_peer(&leecher).await;
    let mut events = SseReader::open(&web.url("/api/v1/events")).await;
    let first = events.next().await.unwrap();
    assert_eq!(first.name, "snapshot", "the snapshot comes first");
    assert_eq!(
        first.data["status"]["node_id"],
        leecher.node_id().to_string()
    );
    assert_eq!(first.data["downloads"], json!([]));

    let response = api_client()
        .post(web.url("/api/v1/downloads"))
        .json(&json!({ "id": &id[..10], "out": out.path() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = response.json().await.unwrap();
    let handle = started["handle"].as_u64().unwrap();
    assert_eq!(location, format!("/api/v1/downloads/{handle}"));
    assert_eq!(started["target"], &id[..10]);

    let mut progress = 0u64;
    let done = events
        .until(DEADLINE, |e| {
            if e.name != "download" || e.data["handle"] != handle {
                return false;
            }
            progress += 1;
            e.data["state"] != "running"
                && e.data["state"] != "looking_up"
                && e.data["state"] != "flushing"
        })
        .await;
    assert_eq!(done.data["state"], "done", "{}", done.data);
    assert_eq!(done.data["file_id"], id.as_str());
    assert_eq!(done.data["hosts_known"], 2, "{}", done.data);
    assert_eq!(done.data["percent"], 100.0);
    let secs = done.data["elapsed_ms"].as_u64().unwrap() as f64 / 1000.0;
    let bound = (secs * 4.0).ceil() as u64 + 2;
    assert!(
        progress <= bound,
        "{progress} download events in {secs:.2} s (at most {bound})"
    );
    let written = done.data["path"].as_str().unwrap();
    assert_eq!(std::fs::read(written).unwrap(), data);
    assert_eq!(wait_finished(&web, handle).await["state"], "done");
    let (_, list) = get(web.url("/api/v1/downloads")).await;
    assert!(
        list["downloads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["handle"] == handle),
        "{list}"
    );

    // The same file again from its .p2pm text, into another folder: one job, byte-exact.
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
    let doc = ManifestFile::new(manifest.clone(), vec![IndexRef::addr(server.addr)]).to_json();
    let again = tempfile::tempdir().unwrap();
    let (status, job) = post(
        web.url("/api/v1/downloads"),
        json!({ "manifest": doc, "out": again.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let view = wait_finished(&web, job["handle"].as_u64().unwrap()).await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(
        std::fs::read(again.path().join("api-get.bin")).unwrap(),
        data
    );

    // A manifest naming another index is refused, as a running peer can't change its index.
    let elsewhere = ManifestFile::new(
        manifest,
        vec![IndexRef::addr("127.0.0.1:9".parse().unwrap())],
    )
    .to_json();
    let (status, refused) = post(
        web.url("/api/v1/downloads"),
        json!({ "manifest": elsewhere, "out": again.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(error_code(&refused), "other_index");
    // In the words the shell uses (the peer's own check, shared by both).
    assert_eq!(
        refused["error"]["message"],
        format!(
            "the manifest names the index server at 127.0.0.1:9, but this peer uses the one at \
             {}; start a peer with --server 127.0.0.1:9 to download it",
            server.addr
        )
        .as_str()
    );
    leecher.shutdown().await;
    for seeder in seeders {
        seeder.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_back_a_download() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (id, data, _, seeders) =
        seeded(server.addr, src.path(), "api-stalled.bin", 24 * MIB, 1).await;
    let leecher = start_peer(server.addr).await;
    let web = start_web_peer(&leecher).await;

    // A raw client with a tiny receive window that asks for the stream and never reads it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stalled = socket.connect(web.addr).await.unwrap();
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nX-API-Key: {TEST_KEY}\r\n\r\n",
        web.addr
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    // And a well-behaved one, to know the streams are live.
    let mut events = SseReader::open(&web.url("/api/v1/events")).await;
    assert_eq!(events.next().await.unwrap().name, "snapshot");
    // Hundreds of KiB of events the stalled client never takes: its socket buffers fill, so
    // its stream stops being polled long before the download starts.
    let chatty = start_peer(server.addr).await;
    let text = "x".repeat(1000);
    for _ in 0..300 {
        chatty
            .send_message(leecher.local_addr(), &text)
            .await
            .unwrap();
    }

    let started = Instant::now();
    let (status, job) = post(
        web.url("/api/v1/downloads"),
        json!({ "id": id, "out": out.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let handle = job["handle"].as_u64().unwrap();
    let view = wait_finished(&web, handle).await;
    assert_eq!(view["state"], "done", "{view}");
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(
        std::fs::read(out.path().join("api-stalled.bin")).unwrap(),
        data
    );
    // The reading client saw the end too.
    events
        .until(DEADLINE, |e| {
            e.name == "download" && e.data["state"] == "done"
        })
        .await;
    drop(stalled);
    chatty.shutdown().await;
    leecher.shutdown().await;
    for seeder in seeders {
        seeder.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_resume_through_the_api() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "api-resume.bin", 8 * MIB + 1, 1307);
    // The only host at first takes requests and never answers, so the job can't end alone.
    let hung = FakeSeeder::start(server.addr, &path, Misbehaviour::Stall).await;
    let mut config = peer_config(server.addr);
    config.stall_timeout = Duration::from_secs(60);
    config.request_timeout = Duration::from_secs(60);
    let leecher = Peer::start(config, crate::support::tls()).await.unwrap();
    let web = start_web_peer(&leecher).await;
    let id = p2p_storage::build_manifest(&path)
        .unwrap()
        .manifest
        .id()
        .to_string();

    let (status, job) = post(
        web.url("/api/v1/downloads"),
        json!({ "id": id, "out": out.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let handle = job["handle"].as_u64().unwrap();
    let (status, resumed) = post(
        web.url(&format!("/api/v1/downloads/{handle}/resume")),
        json!({}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a running job can't resume: {resumed}"
    );
    assert_eq!(error_code(&resumed), "download_running");

    let (status, cancelled) = delete(web.url(&format!("/api/v1/downloads/{handle}"))).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let view = wait_finished(&web, handle).await;
    assert_eq!(view["state"], "cancelled", "{view}");
    assert!(!out.path().join("api-resume.bin").exists());

    // A real seeder appears; the same job runs again into the same folder. It is also named
    // as a direct host: on a loaded machine the test index's 800 ms heartbeat timeout can drop
    // it for a moment, and a run that met only the hung host would wait out its 60 s.
    let seeder = start_peer(server.addr).await;
    seeder.register(&path).await.unwrap();
    leecher.add_direct_host(seeder.local_addr());
    let (status, again) = post(
        web.url(&format!("/api/v1/downloads/{handle}/resume")),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["handle"], handle);
    let view = wait_finished(&web, handle).await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(
        std::fs::read(out.path().join("api-resume.bin")).unwrap(),
        data
    );
    drop(hung);
    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_other_peer_its_list_and_its_event_stream() {
    let server = start_server().await;
    let a = start_peer(server.addr).await;
    let b = start_peer(server.addr).await;
    let web_a = start_web_peer(&a).await;
    let web_b = start_web_peer(&b).await;
    let mut events_b = SseReader::open(&web_b.url("/api/v1/events")).await;
    assert_eq!(events_b.next().await.unwrap().name, "snapshot");

    let (status, sent) = post(
        web_a.url("/api/v1/messages"),
        json!({ "to": b.local_addr().to_string(), "text": "hello <b>B</b>" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["node_id"], b.node_id().to_string());

    let event = events_b.until(DEADLINE, |e| e.name == "message").await;
    assert_eq!(event.data["node_id"], a.node_id().to_string());
    assert_eq!(event.data["direction"], "in");
    assert_eq!(event.data["text"], "hello <b>B</b>");
    let (_, list) = get(web_b.url("/api/v1/messages")).await;
    let got = &list["messages"][0];
    assert_eq!(got["node_id"], a.node_id().to_string(), "{list}");
    assert_eq!(got["text"], "hello <b>B</b>");

    // By peer id (a prefix of it), as the index knows it.
    let (_, peers) = get(web_a.url("/api/v1/peers")).await;
    let b_entry = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == b.node_id().to_string())
        .unwrap_or_else(|| panic!("B is not listed: {peers}"))
        .clone();
    let (status, sent) = post(
        web_a.url("/api/v1/messages"),
        json!({ "to": b_entry["peer_id"], "text": "again" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["node_id"], b.node_id().to_string());

    // Nobody listens there.
    let (status, refused) = post(
        web_a.url("/api/v1/messages"),
        json!({ "to": "127.0.0.1:9", "text": "anyone?" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{refused}");
    assert_eq!(error_code(&refused), "peer_unreachable");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn direct_hosts_are_added_listed_and_removed() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let (status, hosts) = post(
        web.url("/api/v1/hosts"),
        json!({ "addr": "127.0.0.1:4000" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hosts}");
    assert_eq!(hosts["hosts"], json!(["127.0.0.1:4000"]));
    let (status, _) = post(
        web.url("/api/v1/hosts"),
        json!({ "addr": "127.0.0.1:4000" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "adding it again changes nothing");
    let (_, hosts) = get(web.url("/api/v1/hosts")).await;
    assert_eq!(hosts["hosts"], json!(["127.0.0.1:4000"]));
    let (_, status_view) = get(web.url("/api/v1/status")).await;
    assert_eq!(status_view["direct_hosts"], json!(["127.0.0.1:4000"]));
    let (status, hosts) = delete(web.url("/api/v1/hosts/127.0.0.1:4000")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hosts["hosts"], json!([]));
    let (status, again) = delete(web.url("/api/v1/hosts/127.0.0.1:4000")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&again), "not_found");
    let (status, bad) = post(web.url("/api/v1/hosts"), json!({ "addr": "nowhere" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&bad), "bad_request");
    peer.shutdown().await;
}

#[tokio::test]
async fn errors_have_the_documented_codes_and_shape() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let out = tempfile::tempdir().unwrap();

    for handle in ["999", "not-a-number"] {
        let (status, body) = get(web.url(&format!("/api/v1/downloads/{handle}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(error_code(&body), "not_found");
        let (status, body) = delete(web.url(&format!("/api/v1/downloads/{handle}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let id = "ab".repeat(32);
    for body in [
        json!({ "id": id, "manifest": "{}", "out": out.path() }),
        json!({ "out": out.path() }),
        json!({ "id": id }),
        json!({ "id": id, "out": out.path(), "extra": 1 }),
        json!({ "id": id, "out": out.path().join("missing") }),
    ] {
        let (status, reply) = post(web.url("/api/v1/downloads"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {reply}");
        assert_eq!(error_code(&reply), "bad_request");
    }
    let response = api_client()
        .post(web.url("/api/v1/downloads"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response.json().await.unwrap()), "bad_request");

    // A tampered manifest file: the command line's own check and words.
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "api-tampered.bin", 1000, 1309);
    let manifest = p2p_storage::build_manifest(&path).unwrap().manifest;
    let doc = ManifestFile::new(manifest, Vec::new()).to_json();
    let tampered = doc.replacen("api-tampered.bin", "api-tamperes.bin", 1);
    assert_ne!(doc, tampered);
    let cli_words = AnyManifestFile::parse(&tampered).unwrap_err().to_string();
    let (status, reply) = post(
        web.url("/api/v1/downloads"),
        json!({ "manifest": tampered, "out": out.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(error_code(&reply), "bad_request");
    assert_eq!(reply["error"]["message"], cli_words.as_str());

    // Nothing to download from: the job fails and says why.
    let (status, job) = post(
        web.url("/api/v1/downloads"),
        json!({ "id": id, "out": out.path() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let view = wait_finished(&web, job["handle"].as_u64().unwrap()).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert!(
        view["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{view}"
    );
    peer.shutdown().await;
}

#[tokio::test]
async fn event_streams_are_limited_and_end_at_shutdown() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let (mut config, root) = web_config();
    config.max_event_clients = 1;
    let web = start_web_peer_with(&peer, config, root).await;
    let mut events = SseReader::open(&web.url("/api/v1/events")).await;
    assert_eq!(events.next().await.unwrap().name, "snapshot");
    let anonymous = anonymous_client()
        .get(web.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "the stream needs the key"
    );
    let (status, busy) = get(web.url("/api/v1/events")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{busy}");
    assert_eq!(error_code(&busy), "busy");

    drop(web);
    let ended =
        tokio::time::timeout(DEADLINE, async { while events.next().await.is_some() {} }).await;
    assert!(
        ended.is_ok(),
        "the stream outlived the web server's shutdown"
    );
    peer.shutdown().await;
}

/// Sends `head` (a request's header block, with `Expect: 100-continue`) on a new connection
/// and returns it once the server answered `100 Continue`: its handler is then reading the body.
async fn request_awaiting_body(addr: std::net::SocketAddr, head: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server asks for the body");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 100 "), "{got}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_on_clients_that_stalled() {
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let (config, _root) = web_config();
    let listener = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(p2p_web::serve_peer(
        listener,
        peer.clone(),
        config,
        stop.clone(),
    ));
    let url = |path: &str| format!("http://{addr}{path}");

    // An event stream whose client never reads, with a tiny receive window, and hundreds of
    // KiB of events for it: its socket fills and the stream is no longer polled.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stalled_stream = socket.connect(addr).await.unwrap();
    let head =
        format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {TEST_KEY}\r\n\r\n");
    stalled_stream.write_all(head.as_bytes()).await.unwrap();
    let mut events = SseReader::open(&url("/api/v1/events")).await;
    // More than hyper buffers for a connection (about 400 KiB) plus the socket's buffers.
    const STALLING_MESSAGES: usize = 1500;
    let chatty = start_peer(server.addr).await;
    let text = "x".repeat(p2p_protocol::MAX_MESSAGE_LEN);
    for _ in 0..STALLING_MESSAGES {
        chatty.send_message(peer.local_addr(), &text).await.unwrap();
    }
    chatty
        .send_message(peer.local_addr(), "last")
        .await
        .unwrap();
    // The reading client fell behind too, meanwhile: it gets the last one in a message event
    // or in a fresh snapshot.
    events
        .until(DEADLINE, |e| match e.name.as_str() {
            "message" => e.data["text"] == "last",
            "snapshot" => e.data["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["text"] == "last")),
            _ => false,
        })
        .await;
    // A JSON request whose body stops halfway, and an upload form that stops before its file
    // field: both handlers are waiting for bytes that never come.
    let mut stalled_json = request_awaiting_body(
        addr,
        &format!(
            "POST /api/v1/shares HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {TEST_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\
             Expect: 100-continue\r\n\r\n"
        ),
    )
    .await;
    stalled_json.write_all(br#"{"pa"#).await.unwrap();
    let mut stalled_form = request_awaiting_body(
        addr,
        &format!(
            "POST /api/v1/uploads HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {TEST_KEY}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\
             Expect: 100-continue\r\n\r\n"
        ),
    )
    .await;
    stalled_form.write_all(b"--b\r\nContent-Dis").await.unwrap();

    let asked = Instant::now();
    stop.cancel();
    let served = tokio::time::timeout(p2p_web::SHUTDOWN_GRACE + DEADLINE / 2, serving)
        .await
        .expect("the web server waited on stalled clients past its grace");
    served.unwrap().unwrap();
    assert!(
        asked.elapsed() >= p2p_web::SHUTDOWN_GRACE,
        "no grace at all"
    );
    // Their connections are closed, and the reading client's stream ended.
    for stalled in [&mut stalled_json, &mut stalled_form] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a stalled connection stayed open");
    }
    let ended = tokio::time::timeout(DEADLINE, async { while events.next().await.is_some() {} });
    assert!(
        ended.await.is_ok(),
        "the reading client's stream outlived the server"
    );
    drop(stalled_stream);
    chatty.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stream_shows_peers_as_they_come() {
    let server = start_server().await;
    let a = start_peer(server.addr).await;
    let web = start_web_server(&server).await;
    let mut events = SseReader::open(&web.url("/api/v1/events")).await;
    let first = events.next().await.unwrap();
    assert_eq!(first.name, "snapshot");
    assert_eq!(first.data["status"]["node_id"], server.node_id.to_string());
    assert_eq!(first.data["status"]["peers"], 1);
    // Each list in the shape of its endpoint and of its own event.
    assert_eq!(
        first.data["peers"]["peers"][0]["node_id"],
        a.node_id().to_string()
    );
    assert_eq!(first.data["peers"]["total"], 1, "{}", first.data);
    assert_eq!(first.data["files"]["files"], json!([]), "{}", first.data);
    assert_eq!(first.data["files"]["total"], 0, "{}", first.data);

    let b = start_peer(server.addr).await;
    // One poll brings both (a `status` with the new count, then the `peers` list).
    let (mut count, mut listed) = (None, Vec::new());
    events
        .until(DEADLINE, |e| {
            match e.name.as_str() {
                "status" => count = e.data["peers"].as_u64(),
                "peers" => {
                    listed = e.data["peers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["node_id"].as_str().unwrap().to_owned())
                        .collect();
                }
                _ => {}
            }
            count == Some(2) && listed.contains(&b.node_id().to_string())
        })
        .await;

    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "api-server.bin", 100, 1311);
    let id = b.register(&path).await.unwrap();
    let files = events.until(DEADLINE, |e| e.name == "files").await;
    assert_eq!(files.data["files"][0]["file_id"], id.to_string());
    a.shutdown().await;
    b.shutdown().await;
}

/// `peer --download ID --web`: the command line's download is a job like the API's, in the
/// event stream and the list while it runs; a signal cancels it, its `.part` stays, and the
/// process ends with the error line and exit code it always had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_started_on_the_command_line_is_listed_while_it_runs() {
    use std::io::{BufReader, Read};
    use std::process::Stdio;

    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let uploads = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "cli-job.bin", 8 * MIB + 1, 1313);
    // The only host takes requests and never answers: the download runs until it is stopped.
    let hung = FakeSeeder::start(server.addr, &path, Misbehaviour::Stall).await;
    let id = p2p_storage::build_manifest(&path)
        .unwrap()
        .manifest
        .id()
        .to_string();
    let mut cmd = crate::process::bin();
    cmd.env("P2P_API_KEY", TEST_KEY)
        .args(["peer", "--addr", "127.0.0.1:0", "--server"])
        .arg(server.addr.to_string())
        .args(["--download", &id, "--web", "127.0.0.1:0"])
        .args(["--stall-timeout", "120s", "--request-timeout", "120s"])
        .arg("--upload-dir")
        .arg(uploads.path())
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::process::Running(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    // Read to its end on a thread, so the child never blocks on a full pipe.
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(stderr).read_to_string(&mut text).unwrap();
        text
    });
    // The stdout reader stays open to the end: a closed pipe would fail the child's prints.
    let (api, _stdout) = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout);
            let api = crate::process::read_line_starting(&mut lines, "web api: ");
            crate::process::read_line_starting(&mut lines, "peer listening on ");
            (api, lines)
        }),
    )
    .await
    .expect("the peer never said it listens")
    .unwrap();
    let base = api
        .trim_start_matches("web api: ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    // The stream shows the job running (in its snapshot, or as it changes).
    let mut events = SseReader::open(&format!("{base}/events")).await;
    let running = |d: &Value| d["target"] == id.as_str() && d["state"] == "running";
    events
        .until(DEADLINE, |e| match e.name.as_str() {
            "snapshot" => e.data["downloads"].as_array().unwrap().iter().any(running),
            "download" => running(&e.data),
            _ => false,
        })
        .await;
    let (status, list) = get(format!("{base}/downloads")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let jobs = list["downloads"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    let job = &jobs[0];
    assert_eq!(job["target"], id.as_str(), "{job}");
    assert_eq!(job["file_id"], id.as_str(), "{job}");
    assert_eq!(job["name"], "cli-job.bin", "{job}");
    assert_eq!(job["out"], out.path().display().to_string(), "{job}");
    assert_eq!(job["size"], 8 * MIB as u64 + 1, "{job}");
    assert_eq!(job["hosts_known"], 1, "{job}");
    assert_eq!(job["state"], "running", "{job}");

    // A signal cancels the job; the process says so and ends as it always did.
    let pid = child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || child.0.wait().unwrap()),
    )
    .await
    .expect("the peer did not exit after SIGTERM")
    .unwrap();
    let stderr = stderr.join().unwrap();
    // Stopped by SIGTERM before its download was done: 128 + 15 (README, "Exit codes").
    assert_eq!(exit.code(), Some(143), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().starts_with(&format!(
            "error: cannot download {id}: interrupted; the partial file"
        )),
        "{stderr}"
    );
    assert!(out.path().join("cli-job.bin.part").exists());
    assert!(out.path().join("cli-job.bin.part.chunks").exists());
    assert!(!out.path().join("cli-job.bin").exists());
    drop(hung);
}
