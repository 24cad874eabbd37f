//! `--dns-sd-domain`: index servers published in DNS (unicast DNS-SD), found through a real
//! DNS server on loopback (hickory-server, in the test process) that the binary is pointed
//! at with `--dns-sd-server`.

#[path = "../../../../pkg/discovery/tests/support/dns_server.rs"]
mod dns_server;

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
fn runtime() -> tokio::runtime::Runtime {
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

#[test]
fn search_asks_every_index_published_in_dns() {
    let (_server, addr, server_id) = start_index();
    let port = addr.rsplit(':').next().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "routed-report.pdf", 1000, 91);
    let (_seeder, file_id) = seed(&addr, &path);
    // A port nothing listens on: the published index that is down.
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rt = runtime();
    let dns = rt.block_on(TestDns::start(
        "site.test",
        &format!(
            r#"
_p2p-transfer._tcp PTR lab._p2p-transfer._tcp
_p2p-transfer._tcp PTR down._p2p-transfer._tcp
lab._p2p-transfer._tcp SRV 10 0 {port} index
lab._p2p-transfer._tcp TXT "version={PROTOCOL_VERSION}" "id={server_id}"
down._p2p-transfer._tcp SRV 0 0 {down_port} index
down._p2p-transfer._tcp TXT "version={PROTOCOL_VERSION}"
index A 127.0.0.1
"#
        ),
    ));
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
