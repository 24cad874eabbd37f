//! A headless Chromium driven over WebDriver, for the page tests: chromedriver as a child of
//! the test on a free loopback port, one fantoccini session with a fresh profile, and helpers
//! that wait on DOM state (never on time).
//!
//! Where Chromium or chromedriver is missing the test is skipped with a printed reason,
//! unless `P2P_REQUIRE_BROWSER=1` (set by `.ci/run`), where it fails. `CHROMIUM` and
//! `CHROMEDRIVER` override the paths.
//!
//! Chromium is told to make no connection of its own (no background networking, component
//! updates, sync or DNS), and the tests only ever load 127.0.0.1 URLs.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long chromedriver may take to say it is listening.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long a page element may take to appear (generous: CI has 2 loaded cores).
pub const ELEMENT_WAIT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// The window size of the wide views.
pub const WIDE: (u32, u32) = (1280, 800);
/// A phone's window (an iPhone 12-14 in CSS pixels).
pub const NARROW: (u32, u32) = (390, 844);

const REQUIRE: &str = "P2P_REQUIRE_BROWSER";

/// Chromium's and chromedriver's paths, or `None` (after printing why) when the test must
/// be skipped. Panics under `P2P_REQUIRE_BROWSER=1` instead of skipping.
pub fn find(test: &str) -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let chromium = path("CHROMIUM", "/usr/bin/chromium");
    let driver = path("CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let reason = format!(
        "{} not found (install chromium and chromium-driver, or set CHROMIUM / CHROMEDRIVER)",
        missing.join(" and ")
    );
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{REQUIRE}=1 but {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    None
}

/// chromedriver, killed (by its own handle) on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(path: &Path) -> Driver {
        // A free port: bind, note it, let it go. chromedriver takes it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let driver = Driver { child, port };
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads every line to the end, so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("was started successfully")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        ready_rx.recv_timeout(DRIVER_START).unwrap_or_else(|_| {
            panic!("chromedriver did not say it started within {DRIVER_START:?}")
        });
        driver
    }
}

/// A browser session; the browser, chromedriver and the profile go away on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// Its id, to end it from `Drop` (a failed test) so no Chromium outlives the test.
    session: Option<String>,
    driver: Driver,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked did not call `close`: end the session with a plain blocking
        // request, so chromedriver closes Chromium before it is killed.
        if let Some(session) = self.session.take() {
            end_session(self.driver.port, &session);
        }
    }
}

/// `DELETE /session/{id}` on chromedriver, blocking, bounded in time; errors are ignored
/// (this only tidies up).
fn end_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(DRIVER_START));
    let _ = conn.set_write_timeout(Some(DRIVER_START));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let _ = conn.read_to_end(&mut Vec::new());
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, at the wide size.
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let driver = Driver::start(chromedriver);
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-proxy-server",
            "--disable-quic",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            &format!("--window-size={},{}", WIDE.0, WIDE.1),
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless Chromium");
        let session = client.session_id().await.unwrap();
        Browser {
            client,
            session,
            driver,
            _profile: profile,
        }
    }

    /// Ends the session (closes Chromium) before chromedriver is killed.
    pub async fn close(mut self) {
        if self.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }

    /// Goes to `url`, which must be on loopback.
    pub async fn goto(&self, url: &str) {
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "the browser only loads loopback URLs, not {url}"
        );
        self.client.goto(url).await.unwrap();
    }

    /// Waits for the element `css` names.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for_within(css, ELEMENT_WAIT).await
    }

    /// Waits up to `limit` for the element `css` names.
    pub async fn wait_for_within(
        &self,
        css: &str,
        limit: Duration,
    ) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(limit)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(el) => el,
            Err(err) => {
                let status = self.status_line().await;
                // What the page shows instead (a row's state and reason, say): for the reader
                // of a failure that doesn't happen again.
                let shown = self
                    .client
                    .execute(
                        "return (document.querySelector('main') || document.body).innerText.slice(0, 3000);",
                        vec![],
                    )
                    .await
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .unwrap_or_default();
                panic!(
                    "no `{css}` on the page within {limit:?}: {err} (status line: {status:?})\n\
                     the page shows:\n{shown}"
                )
            }
        }
    }

    /// Waits until the script `expr` (a JavaScript expression) is truthy.
    pub async fn wait_until(&self, what: &str, expr: &str, limit: Duration) {
        let script = format!("return !!({expr});");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.client.execute(&script, vec![]).await.unwrap() == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let status = self.status_line().await;
                panic!("{what}: not within {limit:?} (status line: {status:?})");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of a JavaScript expression.
    pub async fn eval(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap()
    }

    /// The page's status line (errors the API answered show there).
    pub async fn status_line(&self) -> String {
        self.client
            .execute(
                "const s = document.getElementById('status'); return s ? s.textContent : '';",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Clicks the element `css` names (waiting for it).
    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// Replaces the text of the input `css` names.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Resizes the window.
    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.client.set_window_size(width, height).await.unwrap();
        self.wait_until(
            "the window takes its new size",
            &format!("window.innerWidth <= {width}"),
            ELEMENT_WAIT,
        )
        .await;
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The browser's console and network errors since the last call (chromedriver's
    /// `se/log`, which it still answers in W3C mode).
    pub async fn severe_log_entries(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/se/log",
            self.driver.port
        );
        let answer: Value = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("chromedriver answers se/log")
            .json()
            .await
            .unwrap();
        answer["value"]
            .as_array()
            .unwrap_or_else(|| panic!("se/log answered {answer}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Browser {
    /// Logs an error from the page and waits until the browser log shows it, so a check for
    /// "no errors" is known to be able to see one. Returns every other error logged so far.
    pub async fn probe_console(&self) -> Vec<String> {
        const PROBE: &str = "p2p-console-probe";
        self.client
            .execute(&format!("console.error('{PROBE}');"), vec![])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + ELEMENT_WAIT;
        let mut others = Vec::new();
        loop {
            let mut seen = false;
            for entry in self.severe_log_entries().await {
                if entry.contains(PROBE) {
                    seen = true;
                } else {
                    others.push(entry);
                }
            }
            if seen {
                return others;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser log never showed a console.error: errors would go unseen"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is under the target dir")
        .join("screenshots")
}
