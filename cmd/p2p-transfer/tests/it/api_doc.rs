//! docs/API.md is what scripts are written from, so its examples must work: every `sh` block
//! that starts with `curl` runs through `bash -c` against live nodes (an index server, a peer
//! sharing a file, the peer under test, each with its web server), with the variables the
//! doc's preface defines, and must exit 0 and print JSON with exactly the top-level keys of
//! the `json` block after it. An event stream's example is read up to its first event.
//!
//! Needs `curl`; without it the test is skipped with a printed reason, unless
//! `P2P_REQUIRE_BROWSER=1` (which CI sets), where a missing curl fails it.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{eventually, random_file, start_peer, start_server};
use crate::web_support::{TEST_KEY, api_client, start_web_peer, start_web_server};

/// How long one example may take (a loaded 2-core machine).
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(30);

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md");
    std::fs::read_to_string(path).expect("docs/API.md is readable")
}

/// One example: the command, and the top-level keys its answer must have.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    keys: BTreeSet<String>,
}

fn keys_of(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The fenced blocks of `doc` as (line, language, body), in order.
fn blocks(doc: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (n, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((n + 1, lang.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => found.extend(open.take()),
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/API.md has an unclosed code block");
    found
}

/// Every `sh` block that starts with `curl`, with the keys of the `json` block after it.
fn examples(doc: &str) -> Vec<Example> {
    let blocks = blocks(doc);
    let mut examples = Vec::new();
    for (i, (line, lang, body)) in blocks.iter().enumerate() {
        if lang != "sh" || !body.trim_start().starts_with("curl") {
            continue;
        }
        let (json_line, next_lang, answer) = blocks
            .get(i + 1)
            .unwrap_or_else(|| panic!("docs/API.md:{line}: no json block after the example"));
        assert_eq!(
            next_lang, "json",
            "docs/API.md:{line}: the block after an example must be its json answer"
        );
        let answer: Value = serde_json::from_str(answer)
            .unwrap_or_else(|e| panic!("docs/API.md:{json_line}: not JSON: {e}"));
        examples.push(Example {
            line: *line,
            command: body.trim().to_owned(),
            keys: keys_of(&answer),
        });
    }
    examples
}

fn curl_present() -> Result<(), String> {
    match Command::new("curl").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("curl --version exited with {}", out.status)),
        Err(err) => Err(format!("curl can't run: {err}")),
    }
}

/// Runs `command` through bash with `vars`; returns what it printed. An event stream is read
/// up to its first event's data, then stopped.
fn run(example: &Example, vars: &[(&str, String)]) -> String {
    let stream = example.command.contains("/events");
    // `exec`: bash becomes curl, so stopping the child stops curl.
    let script = if stream {
        format!("exec {}", example.command)
    } else {
        example.command.clone()
    };
    let mut command = Command::new("bash");
    command.arg("-c").arg(&script).stdout(Stdio::piped());
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    command.env("NO_PROXY", "*");
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("bash runs");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    if stream {
        let mut line = String::new();
        let data = loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "docs/API.md:{}: the stream ended before an event",
                example.line
            );
            if let Some(data) = line.strip_prefix("data:") {
                break data.trim().to_owned();
            }
        };
        child.kill().ok();
        child.wait().ok();
        return data;
    }
    let deadline = Instant::now() + EXAMPLE_DEADLINE;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "docs/API.md:{}: `{}` exited with {status}; it printed {out}",
                example.line,
                example.command
            );
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "docs/API.md:{}: too slow",
            example.line
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_the_api_doc_works() {
    let examples = examples(&document());
    assert!(
        examples.len() >= 20,
        "only {} examples found",
        examples.len()
    );
    if let Err(reason) = curl_present() {
        if std::env::var("P2P_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("P2P_REQUIRE_BROWSER=1 but {reason}");
        }
        eprintln!("skipping every_curl_example_in_the_api_doc_works: {reason}");
        return;
    }

    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    // Another peer shares a file the doc downloads.
    let (shared, _) = random_file(src.path(), "report.pdf", 1024 * 1024 + 7, 1401);
    let seeder = start_peer(server.addr).await;
    let file_id = seeder.register(&shared).await.unwrap().to_string();
    // The peer under test, with a file of its own to share.
    let mine = tempfile::tempdir().unwrap();
    let (file, _) = random_file(mine.path(), "notes.txt", 5000, 1402);
    let my_file_id = p2p_storage::build_manifest(&file)
        .unwrap()
        .manifest
        .id()
        .to_string();
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let server_web = start_web_server(&server).await;
    // A finished job for the examples that take a handle.
    let job: Value = api_client()
        .post(web.url("/api/v1/downloads"))
        .json(&json!({ "id": file_id, "out": first.path() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let handle = job["handle"].as_u64().unwrap_or_else(|| panic!("{job}"));
    let url = web.url(&format!("/api/v1/downloads/{handle}"));
    let finished = eventually(EXAMPLE_DEADLINE, || async {
        let view: Value = api_client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["state"] == "done"
    })
    .await;
    assert!(finished, "the first download did not finish");

    let vars = vec![
        ("P2P", web.base.clone()),
        ("SERVER", server_web.base.clone()),
        ("KEY", TEST_KEY.to_owned()),
        ("FILE", file.display().to_string()),
        ("MY_FILE_ID", my_file_id),
        ("FILE_ID", file_id),
        ("OUT", out.path().display().to_string()),
        ("HANDLE", handle.to_string()),
        ("PEER", seeder.local_addr().to_string()),
    ];
    for example in examples {
        let vars = vars.clone();
        let printed = tokio::task::spawn_blocking(move || {
            let printed = run(&example, &vars);
            (example, printed)
        });
        let (example, printed) = tokio::time::timeout(EXAMPLE_DEADLINE * 2, printed)
            .await
            .expect("an example hung")
            .unwrap();
        let answer: Value = serde_json::from_str(&printed).unwrap_or_else(|e| {
            panic!(
                "docs/API.md:{}: `{}` printed no JSON ({e}): {printed}",
                example.line, example.command
            )
        });
        assert_eq!(
            keys_of(&answer),
            example.keys,
            "docs/API.md:{}: `{}` answered {answer}",
            example.line,
            example.command
        );
    }
    peer.shutdown().await;
    seeder.shutdown().await;
}

/// The doc's "Logging a browser in": the login URL sets the cookie it names and sends the
/// browser on to the page; a wrong token sets nothing.
#[tokio::test]
async fn the_login_url_does_what_the_doc_says() {
    let doc = document().split_whitespace().collect::<Vec<_>>().join(" ");
    for phrase in [
        "`GET /login?token=KEY` sets the cookie `p2p_session_PORT=",
        "HttpOnly; SameSite=Strict; Path=/` and redirects to `/` (`303`)",
        "A wrong token answers `401` and sets nothing.",
    ] {
        assert!(doc.contains(phrase), "docs/API.md should say {phrase:?}");
    }
    let server = start_server().await;
    let peer = start_peer(server.addr).await;
    let web = start_web_peer(&peer).await;
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(web.login_url()).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let name = format!("p2p_session_{}=", web.addr.port());
    assert!(cookie.starts_with(&name), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TEST_KEY),
        "the cookie holds a digest, never the key"
    );
    let wrong = browser
        .get(web.url("/login?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    peer.shutdown().await;
}
