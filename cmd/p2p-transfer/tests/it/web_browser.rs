//! The dashboard in a real browser (headless Chromium over WebDriver): what a user does and
//! sees. One test, one browser, to keep CPU and time down.

use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::Value;

use crate::browser::{self, Browser, NARROW, WIDE};
use crate::support::{random_file, start_peer, start_server};
use crate::web_support::{start_web_peer, start_web_server};

/// The seeded file: a few chunks, so the bar moves through several updates.
const SEEDED_LEN: usize = 24 << 20;
const SEEDED_NAME: &str = "holiday-video.mkv";
/// A download of it may take this long on a loaded CI machine.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(60);
/// More files on the network, so the list is a list.
const OTHER_FILES: [(&str, usize); 2] =
    [("team-photos.zip", 3 << 20), ("budget-2027.ods", 180 << 10)];
/// A shared folder: one row on the network, downloaded as one job.
const ALBUM: &str = "summer album";
const ALBUM_FILES: [(&str, usize); 3] = [
    ("track 1.flac", 300 << 10),
    ("disc 2/track 2.flac", 120 << 10),
    ("cover.jpg", 40 << 10),
];
const UPLOAD_LEN: usize = (2 << 20) + 1;
const UPLOAD_NAME: &str = "meeting-notes.txt";
/// Markup in a message must show as text, never as markup.
const MESSAGE: &str = "<b>x</b> the holiday video is up, grab it";
/// Tab presses allowed to reach a control from the top of the page.
const MAX_TABS: usize = 40;
/// The views of the peer's page.
const VIEWS: [&str; 5] = ["network", "files", "transfers", "peers", "messages"];

/// The `tr` of the file `id` in the table body `tbody`.
fn row(tbody: &str, id: &str) -> String {
    format!("#{tbody} tr[data-file-id='{id}']")
}

/// Presses Tab until the focused element has `data-testid=testid`, from wherever focus is.
async fn tab_to(browser: &Browser, testid: &str) {
    for _ in 0..MAX_TABS {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        browser.client.perform_actions(tab).await.unwrap();
        let focused = browser
            .eval("document.activeElement && document.activeElement.dataset.testid")
            .await;
        if focused == Value::String(testid.into()) {
            // And the focus shows.
            let ring = browser
                .eval("getComputedStyle(document.activeElement).boxShadow")
                .await;
            assert_ne!(
                ring,
                Value::String("none".into()),
                "{testid} shows no focus"
            );
            return;
        }
    }
    panic!("{MAX_TABS} Tab presses from the top never reached [data-testid={testid}]");
}

/// Shows `view` (by its nav link) and waits until it is the one visible.
async fn open_view(browser: &Browser, view: &str) {
    browser.click(&format!("[data-testid=nav-{view}]")).await;
    browser
        .wait_for(&format!("section#view-{view}:not([hidden])"))
        .await;
}

/// Fails when the page scrolls sideways (something wider than the window).
async fn assert_fits(browser: &Browser, what: &str) {
    let fits = browser
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    let (scroll, inner) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "{what}: the page scrolls sideways ({scroll} px wide in a {inner} px window)"
    );
}

async fn assert_no_console_errors(browser: &Browser, page: &str) {
    let severe = browser.probe_console().await;
    assert!(
        severe.is_empty(),
        "{page} logged errors in the browser console: {severe:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser::find("web_browser::dashboard_in_a_real_browser")
    else {
        return;
    };
    let shots = browser::screenshot_dir();

    // An index, peer A seeding three files and a folder, peer B; a web server for each.
    let server = start_server().await;
    let a = start_peer(server.addr).await;
    let b = start_peer(server.addr).await;
    let files = tempfile::tempdir().unwrap();
    let (seeded, data) = random_file(files.path(), SEEDED_NAME, SEEDED_LEN, 13);
    let file_id = a.register(&seeded).await.unwrap().to_string();
    let mut others = Vec::new();
    for (i, (name, len)) in OTHER_FILES.into_iter().enumerate() {
        let (path, data) = random_file(files.path(), name, len, 20 + i as u64);
        others.push((a.register(&path).await.unwrap().to_string(), name, data));
    }
    let album = files.path().join(ALBUM);
    let mut album_data = Vec::new();
    for (i, (rel, len)) in ALBUM_FILES.into_iter().enumerate() {
        let path = album.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (_, data) = random_file(path.parent().unwrap(), &name, len, 30 + i as u64);
        album_data.push((rel, data));
    }
    let shared = a.share_path(&album).await.unwrap();
    let folder_id = shared[0].file_id.to_string();
    let web_a = start_web_peer(&a).await;
    let web_b = start_web_peer(&b).await;
    let web_server = start_web_server(&server).await;
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap();

    let browser = Browser::start(&chromium, &chromedriver).await;

    // B's page, logged in by the URL its node prints.
    browser.goto(&web_b.login_url()).await;
    browser.wait_for("[data-testid=nav-network]").await;
    // The address bar (and the back/forward list) shows the page, not the key.
    assert_eq!(
        browser.eval("location.href").await,
        Value::String(web_b.url("/"))
    );
    browser
        .wait_for("#live-dot:is([data-mode=live], [data-mode=polling])")
        .await;

    // Network: every file is listed; choose the folder.
    let file_row = row("network-rows", &file_id);
    browser.wait_for(&file_row).await;
    for (id, ..) in &others {
        browser.wait_for(&row("network-rows", id)).await;
    }
    // The folder is one row: its name, its file count, its total size.
    let folder_row = format!("{}[data-kind=folder]", row("network-rows", &folder_id));
    let detail = browser
        .wait_for(&format!("{folder_row} [data-testid=network-detail]"))
        .await;
    assert_eq!(detail.text().await.unwrap(), "Folder · 3 files");
    // 300 + 120 + 40 KiB.
    browser
        .wait_until(
            "the folder row shows the folder's name and size",
            &format!(
                "(r => r.querySelector('.name').textContent === '{ALBUM}/' \
                 && r.cells[1].textContent === '460 KiB')(document.querySelector(\"{folder_row}\"))"
            ),
            browser::ELEMENT_WAIT,
        )
        .await;
    browser.fill("[data-testid=out-dir]", out_path).await;
    browser.screenshot(&shots, "network").await;
    // A search leaves only what matches; download it.
    browser.fill("[data-testid=search-input]", "holiday").await;
    browser
        .wait_until(
            "the search leaves one row",
            "document.querySelectorAll('#network-rows tr').length === 1",
            browser::ELEMENT_WAIT,
        )
        .await;
    browser
        .click(&format!("{file_row} [data-testid=download-btn]"))
        .await;
    // And one more from the whole list.
    browser.fill("[data-testid=search-input]", "").await;
    let (other_id, other_name, other_data) = &others[0];
    browser
        .click(&format!(
            "{} [data-testid=download-btn]",
            row("network-rows", other_id)
        ))
        .await;

    // And the folder, as one job. Its `POST` answer is held back until the event stream has
    // shown the job done, as a loaded machine can order them: the page must keep the newer
    // view (the job done), not go back to the answer's "looking up".
    browser
        .eval(&format!(
            "(() => {{
                const fetch0 = window.fetch;
                window.fetch = async (url, init) => {{
                    const answer = await fetch0(url, init);
                    if (!(init && init.method === 'POST' && String(url).endsWith('/downloads')
                          && String(init.body).includes('{folder_id}'))) return answer;
                    const text = await answer.text();
                    await new Promise((resolve) => {{
                        const done = () => document.querySelector(
                            \"#transfer-rows tr[data-file-id='{folder_id}'][data-state=done]\");
                        if (done()) return resolve();
                        const seen = new MutationObserver(() => {{
                            if (done()) {{ seen.disconnect(); resolve(); }}
                        }});
                        seen.observe(document.body, {{ subtree: true, childList: true, attributes: true }});
                    }});
                    return new Response(text, {{ status: answer.status, headers: answer.headers }});
                }};
                return true;
            }})()"
        ))
        .await;
    browser
        .click(&format!("{folder_row} [data-testid=download-btn]"))
        .await;

    // Transfers: each bar reaches its end, the rows say done, the files are whole.
    open_view(&browser, "transfers").await;
    browser.wait_for("#transfer-rows tr[data-handle]").await;
    let done = browser
        .wait_for_within(
            &format!("#transfer-rows tr[data-file-id='{file_id}'][data-state=done]"),
            DOWNLOAD_WAIT,
        )
        .await;
    browser
        .wait_for_within(
            &format!("#transfer-rows tr[data-file-id='{other_id}'][data-state=done]"),
            DOWNLOAD_WAIT,
        )
        .await;
    let bar = done
        .find(fantoccini::Locator::Css("progress"))
        .await
        .unwrap();
    // `value` and `max` are reflected attributes of <progress>.
    let (value, max) = (
        bar.attr("value").await.unwrap(),
        bar.attr("max").await.unwrap(),
    );
    assert_eq!(value, max, "a finished download's bar is full");
    assert_eq!(max.as_deref(), Some(&*SEEDED_LEN.to_string()));
    let pct = done.find(fantoccini::Locator::Css(".pct")).await.unwrap();
    assert_eq!(pct.text().await.unwrap(), "100 %");
    assert!(
        std::fs::read(out.path().join(SEEDED_NAME)).unwrap() == data,
        "the downloaded file differs from the seeded one"
    );
    assert!(std::fs::read(out.path().join(other_name)).unwrap() == *other_data);
    // The folder: one row, every file counted, every file whole under out/ALBUM.
    let folder_done = browser
        .wait_for_within(
            &format!(
                "#transfer-rows tr[data-file-id='{folder_id}'][data-kind=folder][data-state=done]"
            ),
            DOWNLOAD_WAIT,
        )
        .await;
    let note = folder_done
        .find(fantoccini::Locator::Css(".muted"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(note.starts_with("3 / 3 files · Saved as "), "{note}");
    // The held answer has now reached the page: the row stays done.
    browser
        .wait_until(
            "the page took the folder's POST answer",
            "(document.getElementById('status').textContent || '').startsWith('Downloading folder')",
            browser::ELEMENT_WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval(&format!(
                "!!document.querySelector(\"#transfer-rows tr[data-file-id='{folder_id}'][data-kind=folder][data-state=done]\")"
            ))
            .await,
        Value::Bool(true),
        "the folder's row went back from done once its POST answer came"
    );
    for (rel, data) in &album_data {
        assert!(
            std::fs::read(out.path().join(ALBUM).join(rel)).unwrap() == *data,
            "{rel} differs from the shared one"
        );
    }
    browser.screenshot(&shots, "transfers").await;

    // My files: the fetched folder is shared on as one folder row, as Network shows one.
    open_view(&browser, "files").await;
    let mine = browser
        .wait_for(&format!(
            "#files-rows tr[data-file-id='{folder_id}'][data-kind=folder] [data-testid=files-detail]"
        ))
        .await;
    assert_eq!(mine.text().await.unwrap(), "Folder · 3 files");
    // Upload from the browser; it is shared when complete.
    let (upload, upload_data) = random_file(files.path(), UPLOAD_NAME, UPLOAD_LEN, 14);
    browser
        .wait_for("[data-testid=upload-input]")
        .await
        .send_keys(upload.to_str().unwrap())
        .await
        .unwrap();
    browser
        .wait_for(&format!(
            "[data-testid=upload][data-name='{UPLOAD_NAME}'][data-state=done]"
        ))
        .await;
    browser
        .wait_until(
            "the uploaded file is listed as shared",
            &format!(
                "[...document.querySelectorAll('#files-rows tr .name')]\
                 .some(e => e.textContent === '{UPLOAD_NAME}')"
            ),
            browser::ELEMENT_WAIT,
        )
        .await;
    assert!(std::fs::read(web_b.upload_dir.join(UPLOAD_NAME)).unwrap() == upload_data);
    browser.screenshot(&shots, "files").await;

    // Peers: both, by node id.
    open_view(&browser, "peers").await;
    for node in [a.node_id(), b.node_id()] {
        browser
            .wait_for(&format!("#peer-rows tr[data-node-id='{node}']"))
            .await;
    }
    browser.screenshot(&shots, "peers").await;

    // Messages: B watches; A sends from its own page in another window.
    open_view(&browser, "messages").await;
    let b_window = browser.client.window().await.unwrap();
    let a_window = browser.client.new_window(false).await.unwrap().handle;
    browser
        .client
        .switch_to_window(a_window.clone())
        .await
        .unwrap();
    browser.goto(&web_a.login_url()).await;
    open_view(&browser, "messages").await;
    browser
        .fill("[data-testid=msg-to]", &b.local_addr().to_string())
        .await;
    browser.fill("[data-testid=msg-text]", MESSAGE).await;
    browser.click("[data-testid=msg-send]").await;
    browser.wait_for("#messages li[data-direction=out]").await;
    assert_no_console_errors(&browser, "A's page").await;

    browser
        .client
        .switch_to_window(b_window.clone())
        .await
        .unwrap();
    let received = browser
        .wait_for(&format!(
            "#messages li[data-direction=in][data-node-id='{}']",
            a.node_id()
        ))
        .await;
    let text = received
        .find(fantoccini::Locator::Css(".text"))
        .await
        .unwrap();
    assert_eq!(
        text.text().await.unwrap(),
        MESSAGE,
        "shown as sent, literally"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#messages b').length")
            .await,
        Value::from(0),
        "markup in a message became markup on the page"
    );
    // B answers with the Reply button, which fills in A's address.
    received
        .find(fantoccini::Locator::Css("[data-testid=reply-btn]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .fill("[data-testid=msg-text]", "Got it, downloading now. Thanks!")
        .await;
    browser.click("[data-testid=msg-send]").await;
    browser.wait_for("#messages li[data-direction=out]").await;
    browser.screenshot(&shots, "messages").await;

    // The server's page, in A's window: both peers by node id.
    browser.client.switch_to_window(a_window).await.unwrap();
    browser.goto(&web_server.login_url()).await;
    for node in [a.node_id(), b.node_id()] {
        browser
            .wait_for(&format!("#peer-rows tr[data-node-id='{node}']"))
            .await;
    }
    browser.wait_for(&row("file-rows", &file_id)).await;
    browser.screenshot(&shots, "server").await;
    browser.resize(NARROW).await;
    assert_fits(&browser, "the server page at 390 px").await;
    browser.screenshot(&shots, "server-narrow").await;
    assert_no_console_errors(&browser, "the server's page").await;
    browser.client.close_window().await.unwrap();
    browser.client.switch_to_window(b_window).await.unwrap();

    // Narrow: every view fits a phone's width.
    browser.resize(NARROW).await;
    for view in VIEWS {
        open_view(&browser, view).await;
        assert_fits(&browser, &format!("{view} at 390 px")).await;
        browser.screenshot(&shots, &format!("{view}-narrow")).await;
    }

    // Keyboard: from the top of a fresh page, Tab reaches the nav and a Download button.
    browser.resize(WIDE).await;
    browser.goto(&format!("{}/#network", web_b.base)).await;
    browser.wait_for(&file_row).await;
    tab_to(&browser, "nav-network").await;
    tab_to(&browser, "download-btn").await;

    assert_no_console_errors(&browser, "B's page").await;
    browser.close().await;
}
