//! [`p2p_discovery::unicast::lookup`] against a real DNS server on loopback (hickory-server,
//! in this process), serving the records an administrator would publish.

#[path = "support/dns_server.rs"]
mod dns_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_server::TestDns;
use p2p_discovery::DiscoveryError;
use p2p_discovery::unicast::lookup;

/// The protocol version the tests speak.
const OURS: u32 = 1;

/// Generous: a loaded 2-core machine answers loopback DNS in milliseconds, but may stall.
const TIMEOUT: Duration = Duration::from_secs(10);

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// What a test compares of a found server: instance, addresses, version, id.
type Seen<'a> = (&'a str, Vec<SocketAddr>, Option<u32>, Option<&'a str>);

#[tokio::test]
async fn instances_come_back_in_srv_order_with_their_addresses_ids_and_versions() {
    let dns = TestDns::start(
        "site.test",
        r#"
_p2p-transfer._tcp PTR backup._p2p-transfer._tcp
_p2p-transfer._tcp PTR main._p2p-transfer._tcp
_p2p-transfer._tcp PTR spare._p2p-transfer._tcp
main._p2p-transfer._tcp SRV 10 10 8000 index1
main._p2p-transfer._tcp TXT "version=1" "id=MAIN-ID"
spare._p2p-transfer._tcp SRV 10 50 8002 index3
spare._p2p-transfer._tcp TXT "version=1" "id=SPARE-ID"
backup._p2p-transfer._tcp SRV 20 0 8001 index2
backup._p2p-transfer._tcp TXT "version=1" "id=BACKUP-ID"
index1 A 127.0.0.11
index1 AAAA ::1
index2 A 127.0.0.12
index3 A 127.0.0.13
"#,
    )
    .await;
    let found = lookup("site.test", Some(dns.addr()), TIMEOUT, OURS)
        .await
        .unwrap();
    let seen: Vec<Seen<'_>> = found
        .iter()
        .map(|s| {
            (
                s.instance.as_str(),
                s.addrs.clone(),
                s.version,
                s.server_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            // Priority 10: the higher weight first.
            (
                "spare",
                vec![addr("127.0.0.13:8002")],
                Some(1),
                Some("SPARE-ID")
            ),
            (
                "main",
                vec![addr("127.0.0.11:8000"), addr("[::1]:8000")],
                Some(1),
                Some("MAIN-ID")
            ),
            // Priority 20: only when the others fail.
            (
                "backup",
                vec![addr("127.0.0.12:8001")],
                Some(1),
                Some("BACKUP-ID")
            ),
        ]
    );
    // A trailing dot means the same domain.
    let again = lookup("site.test.", Some(dns.addr()), TIMEOUT, OURS)
        .await
        .unwrap();
    assert_eq!(again, found);
}

#[tokio::test]
async fn an_instance_without_an_id_is_usable_and_one_of_another_version_is_skipped() {
    let dns = TestDns::start(
        "site.test",
        r#"
_p2p-transfer._tcp PTR noid._p2p-transfer._tcp
_p2p-transfer._tcp PTR notxt._p2p-transfer._tcp
_p2p-transfer._tcp PTR future._p2p-transfer._tcp
noid._p2p-transfer._tcp SRV 0 0 8000 index
noid._p2p-transfer._tcp TXT "version=1"
notxt._p2p-transfer._tcp SRV 1 0 8001 index
future._p2p-transfer._tcp SRV 0 0 9000 index
future._p2p-transfer._tcp TXT "version=99" "id=FUTURE"
index A 127.0.0.1
"#,
    )
    .await;
    let found = lookup("site.test", Some(dns.addr()), TIMEOUT, OURS)
        .await
        .unwrap();
    let seen: Vec<(&str, SocketAddr, Option<u32>, Option<&str>)> = found
        .iter()
        .map(|s| {
            (
                s.instance.as_str(),
                s.addr(),
                s.version,
                s.server_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("noid", addr("127.0.0.1:8000"), Some(1), None),
            ("notxt", addr("127.0.0.1:8001"), None, None),
        ]
    );
}

#[tokio::test]
async fn instances_that_all_cannot_be_used_say_why() {
    let dns = TestDns::start(
        "site.test",
        r#"
_p2p-transfer._tcp PTR future._p2p-transfer._tcp
_p2p-transfer._tcp PTR nohost._p2p-transfer._tcp
future._p2p-transfer._tcp SRV 0 0 9000 index
future._p2p-transfer._tcp TXT "version=99"
nohost._p2p-transfer._tcp SRV 0 0 9000 missing
index A 127.0.0.1
"#,
    )
    .await;
    let err = lookup("site.test", Some(dns.addr()), TIMEOUT, OURS)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DiscoveryError::NoneUsable { .. }), "{text}");
    assert!(
        text.starts_with("no usable p2p-transfer index published at _p2p-transfer._tcp.site.test")
            && text.contains("future: protocol version 99, this program speaks 1")
            && text.contains("nohost: its target missing.site.test. has no A or AAAA record"),
        "{text}"
    );
}

#[tokio::test]
async fn a_domain_with_nothing_published_names_what_was_asked() {
    let dns = TestDns::start("site.test", "www A 127.0.0.1").await;
    // The zone exists but has no such record (NODATA), and a name under it doesn't exist at
    // all (NXDOMAIN): both are "nothing published".
    for domain in ["site.test", "nowhere.site.test"] {
        let err = lookup(domain, Some(dns.addr()), TIMEOUT, OURS)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no p2p-transfer index published at _p2p-transfer._tcp.{domain}")
        );
    }
}

#[tokio::test]
async fn a_silent_nameserver_is_a_bounded_timeout_naming_it() {
    // Bound, never read: queries go nowhere and no "port unreachable" comes back.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap();
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = lookup("site.test", Some(at), timeout, OURS)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, DiscoveryError::DnsTimeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "no answer from the DNS server {at} about _p2p-transfer._tcp.site.test within 0.5s"
        )
    );
}

#[tokio::test]
async fn a_bad_domain_is_refused_before_asking() {
    let err = lookup("", Some(addr("127.0.0.1:9")), TIMEOUT, OURS)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"\" is not a DNS domain name: it is empty"
    );
}
