//! `--json`: every stdout line a script reads is one JSON object with an `event`, parsed here
//! as a script would; and `search` across several index servers (given with `--server`, or
//! found over mDNS inside a private network namespace).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::netns;
use crate::process::{Running, bin, read_line_starting, spawn_until, start_server};
use crate::support::random_file;

/// Every stdout line of `output`, parsed; fails on any line that is not a JSON object with an
/// `event` (human text on stdout breaks scripts).
fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line:?}"));
            assert!(value["event"].is_string(), "no event in {line}");
            value
        })
        .collect()
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap();
    eprintln!(
        "--- stderr of {:?}\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `peer --json` sharing `paths` with the index at `server`: it, and its events up to the
/// last `registered` (the folder's, or the last file's).
fn json_seeder(server: &str, paths: &[&Path], extra: &[&str]) -> (Running, Vec<Value>) {
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--json",
        "--addr",
        "127.0.0.1:0",
        "--server",
        server,
    ])
    .args(extra);
    for path in paths {
        cmd.arg("--register").arg(path);
    }
    let (child, first, mut out) = spawn_until(cmd, "{");
    let mut events = vec![serde_json::from_str::<Value>(&first).unwrap()];
    // One `registered` per file, then one for each folder; then, with --write-manifest,
    // one `manifest_written` each.
    let wanted = paths.len()
        + if extra.contains(&"--write-manifest") {
            paths.len()
        } else {
            0
        };
    let mut tops = 0;
    while tops < wanted {
        let mut line = String::new();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "seeder exited");
        let event: Value = serde_json::from_str(line.trim_end()).unwrap();
        if event["event"] == "manifest_written" || event["folder_id"].is_null() {
            tops += 1;
        }
        events.push(event);
    }
    (child, events)
}

fn json_leecher(server: &str, id: &str, out: &Path) -> Output {
    run(bin()
        .args([
            "peer",
            "--json",
            "--addr",
            "127.0.0.1:0",
            "--server",
            server,
            "--download",
            id,
            "--out",
        ])
        .arg(out))
}

#[test]
fn peer_events_are_one_json_object_a_line() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "movie.bin", 5 * 1024 * 1024 + 3, 71);
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("2024")).unwrap();
    let (_, a) = random_file(&album, "a.jpg", 1000, 72);
    random_file(&album.join("2024"), "b.jpg", 2000, 73);
    let (_seeder, seeded) = json_seeder(&addr, &[&file, &album], &["--write-manifest"]);

    // It says where it listens, and which index it uses, before anything else.
    let listening = &seeded[0];
    assert_eq!(listening["event"], "listening");
    let port = listening["address"].as_str().unwrap();
    assert!(port.starts_with("127.0.0.1:"), "{listening}");
    assert_eq!(listening["index"], addr.as_str());
    assert!(listening["index_node_id"].is_string(), "{listening}");
    assert!(listening["node_id"].is_string(), "{listening}");

    // One `registered` per file (those of the folder name it), then the folder's.
    let registered = of(&seeded, "registered");
    assert_eq!(registered.len(), 4, "{seeded:?}");
    let movie = registered[0];
    assert_eq!(movie["kind"], "file");
    assert_eq!(movie["path"], file.to_str().unwrap());
    assert_eq!(movie["size"], data.len() as u64);
    assert_eq!(movie["files"], 1);
    assert!(movie["folder_id"].is_null());
    let movie_id = movie["id"].as_str().unwrap().to_owned();
    assert_eq!(movie_id.len(), 64);
    let folder = registered[3];
    assert_eq!(folder["kind"], "folder");
    assert_eq!(folder["path"], album.to_str().unwrap());
    assert_eq!(folder["files"], 2);
    assert_eq!(folder["size"], 3000);
    let folder_id = folder["id"].as_str().unwrap().to_owned();
    for inside in &registered[1..3] {
        assert_eq!(inside["folder_id"], folder_id.as_str(), "{inside}");
    }
    let written = of(&seeded, "manifest_written");
    assert_eq!(written.len(), 2, "{seeded:?}");
    assert_eq!(written[0]["id"], movie_id.as_str());
    assert!(Path::new(written[0]["path"].as_str().unwrap()).is_file());
    assert_eq!(written[1]["kind"], "folder");

    // A download: events only on stdout, ending with `downloaded`; the bytes are the file's.
    let out = tempfile::tempdir().unwrap();
    let output = json_leecher(&addr, &movie_id[..12], out.path());
    assert!(output.status.success());
    let got = events(&output);
    assert_eq!(got[0]["event"], "listening");
    let done = got.last().unwrap();
    assert_eq!(done["event"], "downloaded", "{got:?}");
    let target = out.path().join("movie.bin");
    assert_eq!(done["path"], target.to_str().unwrap());
    assert_eq!(done["id"], movie_id.as_str());
    assert_eq!(done["kind"], "file");
    assert_eq!(done["size"], data.len() as u64);
    assert_eq!(done["bytes_fetched"], data.len() as u64);
    assert_eq!(
        (&done["fetched"], &done["already_there"]),
        (&1.into(), &0.into())
    );
    assert_eq!(done["complete"], true);
    assert!(done["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(std::fs::read(&target).unwrap(), data);
    // Progress: raw numbers, the documented fields, at most one a second.
    let progress = of(&got, "progress");
    for p in &progress {
        assert_eq!(p["id"], movie_id.as_str(), "{p}");
        assert_eq!(p["name"], "movie.bin");
        assert_eq!(p["size"], data.len() as u64);
        assert_eq!(p["files"], 1);
        assert!(p["done"].is_u64() && p["files_done"].is_u64(), "{p}");
        assert!(p["bytes_per_second"].is_u64(), "{p}");
        assert!(
            p["eta_seconds"].is_null() || p["eta_seconds"].is_f64(),
            "{p}"
        );
    }
    let seconds = done["seconds"].as_f64().unwrap();
    assert!(
        progress.len() as f64 <= 1.0 + seconds.ceil(),
        "{} progress lines in {seconds} s",
        progress.len()
    );

    // Again: nothing to fetch, still `downloaded`, and success.
    let output = json_leecher(&addr, &movie_id, out.path());
    assert!(output.status.success());
    let got = events(&output);
    let done = got.last().unwrap();
    assert_eq!(done["event"], "downloaded");
    assert_eq!(
        (&done["fetched"], &done["already_there"]),
        (&0.into(), &1.into())
    );
    assert_eq!(done["bytes_fetched"], 0);

    // A folder with one file in the way: the conflict, an incomplete `downloaded`, `failed`,
    // exit 1.
    std::fs::create_dir_all(out.path().join("album")).unwrap();
    std::fs::write(out.path().join("album").join("a.jpg"), b"mine").unwrap();
    let output = json_leecher(&addr, &folder_id, out.path());
    assert_eq!(output.status.code(), Some(1));
    let got = events(&output);
    let kinds: Vec<&str> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let tail: Vec<&str> = kinds.iter().copied().filter(|k| *k != "progress").collect();
    assert_eq!(
        tail,
        ["listening", "conflict", "downloaded", "failed"],
        "{got:?}"
    );
    let conflict = of(&got, "conflict")[0];
    assert_eq!(
        conflict["path"],
        out.path().join("album").join("a.jpg").to_str().unwrap()
    );
    assert!(conflict["reason"].is_string());
    let done = of(&got, "downloaded")[0];
    assert_eq!(done["kind"], "folder");
    assert_eq!(done["id"], folder_id.as_str());
    assert_eq!(
        (
            &done["files"],
            &done["fetched"],
            &done["conflicts"],
            &done["complete"]
        ),
        (&2.into(), &1.into(), &1.into(), &false.into())
    );
    let failed = got.last().unwrap();
    assert_eq!(failed["id"], folder_id.as_str());
    assert_eq!(failed["name"], "album");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("1 of 2 files missing"),
        "{failed}"
    );
    assert_ne!(
        std::fs::read(out.path().join("album").join("a.jpg")).unwrap(),
        a,
        "the file in the way is left as it is"
    );

    // An id nobody has: `failed` names what was asked for; the one-line error is on stderr.
    let output = json_leecher(&addr, "abcdef12", out.path());
    assert_eq!(output.status.code(), Some(1));
    let got = events(&output);
    let failed = got.last().unwrap();
    assert_eq!(failed["event"], "failed");
    assert_eq!(failed["id"], "abcdef12");
    assert!(failed["name"].is_null());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().last().unwrap().starts_with("error: "),
        "{stderr}"
    );
}

/// Generous: the machine is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running `peer --json`: its events as they come, read on a thread so that each can be
/// waited for with a deadline.
struct LiveEvents {
    _peer: Running,
    events: mpsc::Receiver<Value>,
    /// Every event so far, for failure messages.
    seen: Vec<Value>,
}

impl LiveEvents {
    /// Starts `cmd` (a `peer --json ...`).
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line:?}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Self {
            _peer: Running(child),
            events,
            seen: Vec::new(),
        }
    }

    /// The next event, within [`DEADLINE`].
    fn next(&mut self) -> Value {
        let event = self
            .events
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no event within {DEADLINE:?}; so far: {:?}", self.seen));
        self.seen.push(event.clone());
        event
    }

    /// The next event `wanted` accepts, and the ones before it.
    fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let event = self.next();
            if wanted(&event) {
                return (event, before);
            }
            before.push(event);
        }
    }
}

fn is_folder_line(event: &Value) -> bool {
    event["event"] == "registered" && event["kind"] == "folder"
}

/// `peer --json --share-dir D`: what is added to D later is `registered` too (the new file,
/// then the folder's new id with the id it replaces); a file removed gives the folder's new
/// line alone.
#[test]
fn share_dir_changes_are_registered_events() {
    let (_server, addr) = start_server();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (first, _) = random_file(dir.path(), "first.bin", 3000, 81);
    let mut cmd = bin();
    cmd.env("P2P_MANIFEST_CACHE", cache.path().join("cache.json"))
        .args(["peer", "--json", "--addr", "127.0.0.1:0", "--server", &addr])
        .arg("--share-dir")
        .arg(dir.path());
    let mut peer = LiveEvents::start(cmd);
    let (folder, _) = peer.until(is_folder_line);
    assert_eq!(folder["files"], 1, "{folder}");
    assert!(folder["replaces"].is_null(), "{folder}");
    let old_id = folder["id"].as_str().unwrap().to_owned();

    // A file dropped in.
    let (added, _) = random_file(dir.path(), "added.bin", 5000, 82);
    let added_id = p2p_storage::build_manifest(&added)
        .unwrap()
        .manifest
        .id()
        .to_string();
    let (folder, before) = peer.until(is_folder_line);
    let files: Vec<&Value> = before
        .iter()
        .filter(|e| e["event"] == "registered")
        .collect();
    assert_eq!(files.len(), 1, "only the new file: {before:?}");
    let file = files[0];
    assert_eq!(file["kind"], "file");
    assert_eq!(file["path"], added.to_str().unwrap());
    assert_eq!(file["id"], added_id.as_str());
    assert_eq!(file["size"], 5000);
    assert!(file["replaces"].is_null(), "{file}");
    assert_eq!(file["folder_id"], folder["id"], "{file}");
    assert_eq!(folder["path"], dir.path().to_str().unwrap());
    assert_eq!(folder["replaces"], old_id.as_str());
    assert_eq!(
        (&folder["files"], &folder["size"]),
        (&2.into(), &8000.into())
    );
    let old_id = folder["id"].as_str().unwrap().to_owned();

    // A file taken out: the folder's new line alone.
    std::fs::remove_file(&first).unwrap();
    let (folder, before) = peer.until(is_folder_line);
    assert!(
        before.iter().all(|e| e["event"] != "registered"),
        "{before:?}"
    );
    assert_eq!(folder["replaces"], old_id.as_str());
    assert_eq!(folder["files"], 1, "{folder}");
}

/// `peer --json --web`: a download started through the web API has the same events as one
/// given with `--download`: `downloaded` when it is done (the bytes the file's), `failed` for
/// one that can't be done.
#[test]
fn web_api_downloads_have_json_events() {
    use crate::web_support::{TEST_KEY, api_client};

    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let uploads = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "via-web.bin", 5 * 1024 * 1024 + 3, 83);
    let (_seeder, id) = crate::process::seed(&addr, &file);
    let mut cmd = bin();
    cmd.env("P2P_API_KEY", TEST_KEY)
        .args(["peer", "--json", "--addr", "127.0.0.1:0", "--server", &addr])
        .args(["--web", "127.0.0.1:0", "--upload-dir"])
        .arg(uploads.path());
    let mut peer = LiveEvents::start(cmd);
    let (web, _) = peer.until(|e| e["event"] == "web");
    let api = web["api"].as_str().unwrap().to_owned();
    peer.until(|e| e["event"] == "listening");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = |id: &str| {
        let body = serde_json::json!({"id": id, "out": out.path()});
        let response = runtime
            .block_on(
                api_client()
                    .post(format!("{api}/downloads"))
                    .json(&body)
                    .send(),
            )
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    };
    start(&id[..12]);
    let (done, before) = peer.until(|e| e["event"] == "downloaded");
    let target = out.path().join("via-web.bin");
    assert_eq!(done["path"], target.to_str().unwrap(), "{done}");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["kind"], "file");
    assert_eq!(done["size"], data.len() as u64);
    assert_eq!(done["complete"], true);
    assert_eq!(std::fs::read(&target).unwrap(), data);
    for p in before.iter().filter(|e| e["event"] == "progress") {
        assert_eq!(p["id"], id.as_str(), "{p}");
    }

    // An id nobody has: `failed`, naming what was asked for.
    start("abcdef12");
    let (failed, _) = peer.until(|e| e["event"] == "failed");
    assert_eq!(failed["id"], "abcdef12", "{failed}");
    assert!(failed["error"].is_string(), "{failed}");
}

#[test]
fn id_and_manifest_create_print_one_object() {
    let identity = crate::support::fresh_identity_dir();
    let output = run(bin()
        .env("P2P_IDENTITY_DIR", &identity)
        .args(["id", "--json"]));
    assert!(output.status.success());
    let got = events(&output);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["event"], "node_id");
    assert_eq!(got[0]["role"], "peer");
    let plain = run(bin().env("P2P_IDENTITY_DIR", &identity).arg("id"));
    assert_eq!(
        got[0]["node_id"].as_str().unwrap(),
        String::from_utf8_lossy(&plain.stdout).trim()
    );

    let src = tempfile::tempdir().unwrap();
    let (file, data) = random_file(src.path(), "doc.bin", 4321, 74);
    let output = run(bin().args(["manifest", "create", "--json"]).arg(&file));
    assert!(output.status.success());
    let got = events(&output);
    assert_eq!(got.len(), 1);
    let written = &got[0];
    assert_eq!(written["event"], "manifest_written");
    assert_eq!(written["kind"], "file");
    assert_eq!(written["size"], data.len() as u64);
    assert_eq!(written["files"], 1);
    assert_eq!(written["id"].as_str().unwrap().len(), 64);
    let path = written["path"].as_str().unwrap();
    assert!(
        std::fs::read_to_string(path)
            .unwrap()
            .contains(written["id"].as_str().unwrap())
    );
}

/// Two index servers, each with its own seeder and file; a third address where nothing
/// answers.
#[test]
fn search_asks_every_server_and_merges() {
    let (_a, addr_a) = start_server();
    let (_b, addr_b) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (only_a, _) = random_file(src.path(), "report-alpha.txt", 100, 75);
    let (only_b, _) = random_file(src.path(), "report-beta.txt", 200, 76);
    let (both, _) = random_file(src.path(), "report-both.txt", 300, 77);
    let (_sa, seeded_a) = json_seeder(&addr_a, &[&only_a, &both], &[]);
    let (_sb, seeded_b) = json_seeder(&addr_b, &[&only_b, &both], &[]);
    let id = |events: &[Value], i: usize| of(events, "registered")[i]["id"].clone();
    let (id_a, id_b, id_both) = (id(&seeded_a, 0), id(&seeded_b, 0), id(&seeded_a, 1));

    let output = run(bin().args([
        "search", "report", "--json", "--server", &addr_a, "--server", &addr_b,
    ]));
    assert!(output.status.success());
    let got = events(&output);
    let indexes = of(&got, "index");
    assert_eq!(indexes.len(), 2, "{got:?}");
    for (index, addr) in indexes.iter().zip([&addr_a, &addr_b]) {
        assert_eq!(index["address"], addr.as_str());
        assert!(index["error"].is_null(), "{index}");
        assert_eq!((&index["matches"], &index["total"]), (&2.into(), &2.into()));
        assert!(index["node_id"].is_string());
    }
    let matches = of(&got, "match");
    let by_id = |id: &Value| {
        matches
            .iter()
            .find(|m| &m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {got:?}"))
    };
    assert_eq!(by_id(&id_a)["indexes"], serde_json::json!([addr_a]));
    assert_eq!(by_id(&id_b)["indexes"], serde_json::json!([addr_b]));
    assert_eq!(
        by_id(&id_both)["indexes"],
        serde_json::json!([addr_a, addr_b])
    );
    assert_eq!(by_id(&id_both)["name"], "report-both.txt");
    assert_eq!(by_id(&id_both)["size"], 300);
    assert_eq!(by_id(&id_both)["kind"], "file");
    assert_eq!(matches.len(), 3, "one line per file: {matches:?}");

    // One that does not answer is reported; the others' files are still listed (exit 0).
    let output = run(bin().args([
        "search",
        "alpha",
        "--json",
        "--server",
        "127.0.0.1:9",
        "--server",
        &addr_a,
    ]));
    assert!(output.status.success());
    let got = events(&output);
    let dead = of(&got, "index")[0];
    assert_eq!(dead["address"], "127.0.0.1:9");
    assert!(dead["error"].is_string(), "{dead}");
    assert_eq!(of(&got, "match").len(), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("index server 127.0.0.1:9 did not answer"),
        "{stderr}"
    );

    // For people: which index answered what, and a column naming the indexes of each line.
    let output = run(bin().args(["search", "report", "--server", &addr_a, "--server", &addr_b]));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("index {addr_a}: 2 of 2 matches")),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("report-both.txt"))
        .unwrap();
    assert!(line.contains(&format!("{addr_a},{addr_b}")), "{stdout}");
    assert!(
        line.starts_with(id_both.as_str().unwrap()),
        "full ids: {stdout}"
    );

    // One node id can't pin several indexes.
    let output = run(bin().args([
        "search",
        "report",
        "--server",
        &addr_a,
        "--server",
        &addr_b,
        "--server-id",
        indexes[0]["node_id"].as_str().unwrap(),
    ]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("give one --server with it"), "{stderr}");

    // Nobody answers: an error, exit 1.
    let output = run(bin().args([
        "search",
        "x",
        "--server",
        "127.0.0.1:9",
        "--server",
        "127.0.0.1:7",
    ]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no index server answered") && stderr.contains("127.0.0.1:7"),
        "{stderr}"
    );
}

/// A server advertising over mDNS (inside the namespace only); its address and instance.
fn mdns_server() -> (Running, String, String) {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0"]);
    let (child, line, mut out) = spawn_until(cmd, "server listening on ");
    let addr = line.trim_start_matches("server listening on ").to_owned();
    let ad = read_line_starting(&mut out, "advertising over mDNS as ");
    let instance = ad
        .trim_start_matches("advertising over mDNS as ")
        .trim_matches('"')
        .to_owned();
    (child, addr, instance)
}

#[test]
fn auto_discover_search_asks_every_index_that_answers() {
    if !netns::enter("cli_json::auto_discover_search_asks_every_index_that_answers") {
        return;
    }
    let (_a, addr_a, name_a) = mdns_server();
    let (_b, addr_b, name_b) = mdns_server();
    let src = tempfile::tempdir().unwrap();
    let (on_a, _) = random_file(src.path(), "notes-a.txt", 100, 78);
    let (on_b, _) = random_file(src.path(), "notes-b.txt", 200, 79);
    let (_sa, seeded_a) = json_seeder(&addr_a, &[&on_a], &[]);
    let (_sb, seeded_b) = json_seeder(&addr_b, &[&on_b], &[]);
    let id_a = of(&seeded_a, "registered")[0]["id"].clone();
    let id_b = of(&seeded_b, "registered")[0]["id"].clone();

    // Both indexes are asked, named, and each match says which one has it.
    let output = run(bin().args(["search", "notes", "--json", "--auto-discover"]));
    assert!(output.status.success());
    let got = events(&output);
    let mut indexes: Vec<(String, String)> = of(&got, "index")
        .iter()
        .map(|i| {
            assert!(i["error"].is_null(), "{i}");
            assert_eq!(i["matches"], 1, "{i}");
            (
                i["name"].as_str().unwrap().to_owned(),
                i["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    indexes.sort();
    let mut expected = vec![
        (name_a.clone(), addr_a.clone()),
        (name_b.clone(), addr_b.clone()),
    ];
    expected.sort();
    assert_eq!(indexes, expected);
    let matches = of(&got, "match");
    assert_eq!(matches.len(), 2, "{got:?}");
    for (id, addr) in [(&id_a, &addr_a), (&id_b, &addr_b)] {
        let m = matches.iter().find(|m| &m["id"] == id).unwrap();
        assert_eq!(m["indexes"], serde_json::json!([addr]));
    }

    // People see which indexes answered, and the files of both.
    let output = run(bin().args(["search", "notes", "--auto-discover"]));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (name, addr) in [(&name_a, &addr_a), (&name_b, &addr_b)] {
        assert!(
            stdout.contains(&format!("index {name:?} at {addr}: 1 of 1 matches")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("notes-a.txt") && stdout.contains("notes-b.txt"),
        "{stdout}"
    );

    // --server-name asks that one only.
    let output = run(bin().args([
        "search",
        "notes",
        "--json",
        "--auto-discover",
        "--server-name",
        &name_b,
    ]));
    assert!(output.status.success());
    let got = events(&output);
    let indexes = of(&got, "index");
    assert_eq!(indexes.len(), 1, "{got:?}");
    assert_eq!(indexes[0]["address"], addr_b.as_str());
    let matches = of(&got, "match");
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0]["id"], id_b);
}
