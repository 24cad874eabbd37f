//! `--dns-sd-domain`: index servers published in DNS (unicast DNS-SD), found through a real
//! DNS server on loopback (hickory-server, in the test process) that the binary is pointed
//! at with `--dns-sd-server`.

#[path = "../../../../pkg/discovery/tests/support/dns_server.rs"]
pub(crate) mod dns_server;

use std::io::BufReader;
use std::process::{Command, Stdio};
use std::time::Duration;

use dns_server::TestDns;
use p2p_protocol::PROTOCOL_VERSION;

use crate::process::{Running, bin, read_line_starting, seed, text, wait_output};
use crate::support::random_file;

/// Generous: a loaded machine may be slow to start the processes.
const LIMIT: Duration = Duration::from_secs(60);

/// An index server on loopback without mDNS: it, its address and its node id.
fn start_index() -> (Running, String, String) {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0", "--no-mdns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let running = Running(child);
    let id = read_line_starting(&mut out, "server node id ");
    let addr = read_line_starting(&mut out, "server listening on ");
    (
        running,
        addr.trim_start_matches("server listening on ").to_owned(),
        id.trim_start_matches("server node id ").to_owned(),
    )
}

/// The DNS server runs on its own runtime's threads while the test waits for processes.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn search(dns: &TestDns, domain: &str, word: &str) -> Command {
    let mut cmd = bin();
    cmd.args(["search", word, "--dns-sd-domain", domain, "--dns-sd-server"])
        .arg(dns.addr().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `site.test` publishing two indexes: `down` (priority 0, first in the order) where nothing
/// listens, and `lab` (priority 10) at `addr` with `id`.
fn site_zone(addr: &str, id: &str) -> (String, u16) {
    let port = addr.rsplit(':').next().unwrap();
    // A port nothing listens on: the published index that is down.
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let zone = format!(
        r#"
_p2p-transfer._tcp PTR lab._p2p-transfer._tcp
_p2p-transfer._tcp PTR down._p2p-transfer._tcp
lab._p2p-transfer._tcp SRV 10 0 {port} index
lab._p2p-transfer._tcp TXT "version={PROTOCOL_VERSION}" "id={id}"
down._p2p-transfer._tcp SRV 0 0 {down_port} index
down._p2p-transfer._tcp TXT "version={PROTOCOL_VERSION}"
index A 127.0.0.1
"#
    );
    (zone, down_port)
}

#[test]
fn search_asks_every_index_published_in_dns() {
    let (_server, addr, server_id) = start_index();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "routed-report.pdf", 1000, 91);
    let (_seeder, file_id) = seed(&addr, &path);
    let (zone, down_port) = site_zone(&addr, &server_id);
    let rt = runtime();
    let dns = rt.block_on(TestDns::start("site.test", &zone));
    let output = wait_output(search(&dns, "site.test", "routed").spawn().unwrap(), LIMIT);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("index \"lab\" at {addr}: 1 of 1 matches")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&file_id) && l.ends_with("routed-report.pdf")),
        "{stdout}"
    );
    // The index published first (priority 0) was asked too, and its silence reported.
    assert!(
        stderr.contains(&format!(
            "warning: index server \"down\" at 127.0.0.1:{down_port} did not answer"
        )),
        "{stderr}"
    );
    // With an index given too, a domain with nothing published is a warning, not the end.
    let mut cmd = search(&dns, "nowhere.site.test", "routed");
    cmd.args(["--server", &addr]);
    let output = wait_output(cmd.spawn().unwrap(), LIMIT);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("routed-report.pdf"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: index server _p2p-transfer._tcp.nowhere.site.test did not answer, so its \
             files are not listed: no p2p-transfer index published at \
             _p2p-transfer._tcp.nowhere.site.test"
        ),
        "{stderr}"
    );
}

#[test]
fn receive_by_id_uses_the_first_published_index_that_answers() {
    let (_server, addr, server_id) = start_index();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "across-routers.bin", 300_000, 92);
    let (_seeder, file_id) = seed(&addr, &path);
    let (zone, _) = site_zone(&addr, &server_id);
    let rt = runtime();
    let dns = rt.block_on(TestDns::start("site.test", &zone));
    let child = bin()
        .args([
            "receive",
            &file_id,
            "--dns-sd-domain",
            "site.test",
            "--dns-sd-server",
        ])
        .arg(dns.addr().to_string())
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, LIMIT);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // `down` comes first but does not answer: `lab` is used.
    assert!(
        stderr.contains(&format!(
            "using index server found in DNS as \"lab\" (_p2p-transfer._tcp.site.test) at {addr}"
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.path().join("across-routers.bin")).unwrap(),
        data
    );
}

#[test]
fn doctor_reports_what_dns_publishes_and_checks_each_index() {
    let (_server, addr, server_id) = start_index();
    let (zone, down_port) = site_zone(&addr, &server_id);
    let rt = runtime();
    let dns = rt.block_on(TestDns::start("site.test", &zone));
    let out = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["doctor", "--json", "--no-mdns", "--addr", "127.0.0.1:0"])
        .args(["--dns-sd-domain", "site.test", "--dns-sd-server"])
        .arg(dns.addr().to_string())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let checks: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |family: &str| -> Vec<&serde_json::Value> {
        checks.iter().filter(|c| c["check"] == family).collect()
    };
    let published = of("dns_sd");
    assert_eq!(published.len(), 1, "{checks:#?}");
    assert_eq!(published[0]["status"], "ok");
    assert_eq!(published[0]["subject"], "_p2p-transfer._tcp.site.test");
    assert_eq!(
        published[0]["summary"],
        format!(
            "2 index servers published: \"down\" at 127.0.0.1:{down_port} (no id); \"lab\" at \
             {addr} (id {server_id})"
        )
    );
    let indexes = of("index");
    let subjects: Vec<(&str, &str)> = indexes
        .iter()
        .map(|c| {
            (
                c["subject"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    let down = format!("127.0.0.1:{down_port}");
    assert_eq!(
        subjects,
        vec![(down.as_str(), "problem"), (addr.as_str(), "ok")],
        "{checks:#?}"
    );
    assert!(
        indexes[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("found in DNS as \"lab\" (_p2p-transfer._tcp.site.test): index server"),
        "{checks:#?}"
    );
}

#[test]
fn a_domain_with_nothing_published_is_a_one_line_error() {
    let rt = runtime();
    let dns = rt.block_on(TestDns::start("site.test", "www A 127.0.0.1"));
    let output = wait_output(
        search(&dns, "empty.site.test", "anything").spawn().unwrap(),
        LIMIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some("error: no p2p-transfer index published at _p2p-transfer._tcp.empty.site.test"),
        "{stderr}"
    );
}

#[test]
fn dns_sd_server_alone_is_a_usage_error() {
    let output = bin()
        .args(["search", "x", "--dns-sd-server", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--dns-sd-server needs --dns-sd-domain"),
        "{stderr}"
    );
}
