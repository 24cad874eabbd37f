//! DHT nodes on 127.0.0.1 only, in-process: join, announce, look up, lose a node.
//!
//! Every wait is for an event (a query answered, a port freed) with a generous deadline, so a
//! loaded 2-core machine slows these tests down but does not fail them.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use p2p_dht::{AnnounceEvent, Announcer, Dht, DhtConfig, DhtError};
use p2p_protocol::FileId;
use tokio::time::Instant;

/// Longest any one wait may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn file_id(n: u8) -> FileId {
    let mut bytes = [n; 32];
    // Spread the test ids over the key space.
    bytes[0] = n.wrapping_mul(37);
    FileId(bytes)
}

fn config(bootstrap: &[&Dht]) -> DhtConfig {
    DhtConfig {
        bootstrap: bootstrap
            .iter()
            .map(|node| node.local_addr().to_string())
            .collect(),
        ..DhtConfig::default()
    }
}

/// Calls `attempt` until it returns `Some`, or fails after [`DEADLINE`].
async fn until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        // Each attempt is a full DHT query; this only keeps a failing one from spinning.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A first node, then `count - 1` nodes that join through it, each knowing another node.
async fn network(count: usize) -> Vec<Dht> {
    let first = Dht::start(config(&[])).await.expect("first node");
    let mut nodes = vec![first];
    for _ in 1..count {
        let node = Dht::start(config(&[&nodes[0]])).await.expect("node");
        until("a node joins", || async {
            node.bootstrap().await.unwrap().then_some(())
        })
        .await;
        nodes.push(node);
    }
    // Each node looks itself up again, now that all exist, so routing tables are filled.
    for node in &nodes {
        node.bootstrap().await.unwrap();
    }
    nodes
}

/// Waits until `node`'s UDP port can be bound again: its socket is closed, it answers nobody.
async fn wait_gone(addr: SocketAddrV4) {
    until("a dropped node closes its socket", || async {
        std::net::UdpSocket::bind(addr).ok().map(drop)
    })
    .await;
}

fn host(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_default_config_contacts_nobody() {
    let node = Dht::start(DhtConfig::default()).await.unwrap();
    assert!(node.local_addr().ip().is_loopback());
    assert!(node.config().bootstrap.is_empty());
    // Nobody to ask: the lookup ends at once, empty, and nothing gets into the routing table.
    assert!(!node.bootstrap().await.unwrap());
    assert_eq!(node.lookup(&file_id(1)).await.unwrap(), []);
    assert_eq!(node.bootstrap_nodes().await.unwrap(), []);
    let err = node.announce(&file_id(1), 4000).await.unwrap_err();
    assert!(matches!(err, DhtError::Announce { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_finds_exactly_the_announced_host_and_port() {
    let nodes = network(6).await;
    let id = file_id(2);
    nodes[2].announce(&id, 4242).await.expect("announce");
    let hosts = until("the announced host is found", || async {
        let hosts = nodes[5].lookup(&id).await.unwrap();
        (!hosts.is_empty()).then_some(hosts)
    })
    .await;
    // The DHT port is not what was announced: the port given was.
    assert_eq!(hosts, [host(4242)]);
    // Another id announced by no one stays unknown.
    assert_eq!(nodes[4].lookup(&file_id(3)).await.unwrap(), []);
    // The routing table is what a restart would rejoin through.
    let known = nodes[5].bootstrap_nodes().await.unwrap();
    assert!(known.contains(&nodes[0].local_addr()), "{known:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_finds_nothing_within_the_bound() {
    let nodes = network(4).await;
    let started = Instant::now();
    assert_eq!(nodes[3].lookup(&file_id(9)).await.unwrap(), []);
    let bound = nodes[3].config().lookup_timeout;
    assert!(
        started.elapsed() < bound + Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_does_not_stop_lookups_by_the_others() {
    let mut nodes = network(6).await;
    let id = file_id(4);
    nodes[3].announce(&id, 5001).await.expect("announce");
    // Kill the node everyone joined through.
    let first = nodes.remove(0);
    let addr = first.local_addr();
    drop(first);
    wait_gone(addr).await;
    let hosts = until("the host is found without the first node", || async {
        let hosts = nodes[4].lookup(&id).await.unwrap();
        (!hosts.is_empty()).then_some(hosts)
    })
    .await;
    assert_eq!(hosts, [host(5001)]);
    // And a new announcement still gets stored.
    let other = file_id(5);
    nodes[1]
        .announce(&other, 5002)
        .await
        .expect("announce without the first node");
    let hosts = until("the new host is found", || async {
        let hosts = nodes[2].lookup(&other).await.unwrap();
        (!hosts.is_empty()).then_some(hosts)
    })
    .await;
    assert_eq!(hosts, [host(5002)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announcer_keeps_ids_announced_and_forgets_removed_ones() {
    let nodes = network(5).await;
    let announcer = Announcer::with_period(
        nodes[1].clone(),
        6001,
        Duration::from_millis(300),
        Duration::from_millis(300),
    );
    let mut events = announcer.subscribe();
    let (a, b) = (file_id(6), file_id(7));
    announcer.add(a);
    announcer.add(b);
    // Both announced, and then announced again (the period is short here).
    let mut count = [0; 2];
    tokio::time::timeout(DEADLINE, async {
        while count.iter().any(|&c| c < 2) {
            match events.recv().await.unwrap() {
                AnnounceEvent::Announced { id } if id == a => count[0] += 1,
                AnnounceEvent::Announced { id } if id == b => count[1] += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("two rounds of announcements");
    assert_eq!(nodes[4].lookup(&a).await.unwrap(), [host(6001)]);
    announcer.remove(&a);
    assert_eq!(announcer.ids(), [b]);
    // After the removal only `b` is announced again.
    tokio::time::timeout(DEADLINE, async {
        let mut since = 0;
        while since < 2 {
            match events.recv().await.unwrap() {
                AnnounceEvent::Announced { id } if id == b => since += 1,
                AnnounceEvent::Announced { id } if id == a => since = 0,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("b re-announced, a no more");
    announcer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_with_a_clear_error() {
    let err = Dht::start(DhtConfig {
        bootstrap: vec!["10.1.0.7".to_owned()],
        ..DhtConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad DHT bootstrap node \"10.1.0.7\": expected HOST:PORT"
    );
    let taken = Dht::start(DhtConfig::default()).await.unwrap();
    let err = Dht::start(DhtConfig {
        listen: taken.local_addr(),
        ..DhtConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot open the DHT socket on {}", taken.local_addr())
    );
}

/// docs/PROTOCOL.md §15 is a contract: its example and figures are what this crate computes
/// and uses.
#[test]
fn the_protocol_document_says_what_the_code_does() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable");
    let section = &doc[doc.find("## 15. The DHT").expect("a DHT section")..];
    let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
    let says = |phrase: &str| {
        assert!(flat.contains(phrase), "§15 should say {phrase:?}");
    };
    // hello.txt's file id (§6.5) and the info-hash the code derives from it.
    let id: FileId = "c7e3d81f205e835cd390d0bdfb5069237ab884f1913f21bb9603a7cfffb1616c"
        .parse()
        .unwrap();
    let key: String = p2p_dht::info_hash(&id)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    says(&format!("| file id | `{id}` |"));
    says(&format!("| info-hash | `{key}` |"));
    let minutes = p2p_dht::REANNOUNCE_EVERY.as_secs() / 60;
    says(&format!("then again every {minutes} minutes"));
    let retry = p2p_dht::announcer::RETRY_AFTER.as_secs() / 60;
    says(&format!("tries again after {retry} minute"));
    let defaults = DhtConfig::default();
    says(&format!("when it has {} hosts", defaults.max_hosts));
    says(&format!(
        "{} ms after the first host arrived, or after {} seconds",
        defaults.lookup_settle.as_millis(),
        defaults.lookup_timeout.as_secs()
    ));
    says(&format!("`{}`", p2p_dht::routing_cache::FILE_NAME));
    says(&format!("`{}`", p2p_dht::routing_cache::HEADER));
    says(&format!(
        "(at most {})",
        p2p_dht::routing_cache::MAX_CACHED_NODES
    ));
    says(&format!(
        "fixed UDP port for the DHT is {}",
        p2p_dht::DEFAULT_PORT
    ));
    says(&format!(
        "at most {} hosts per info-hash and {} info-hashes",
        mainline_max_peers(),
        mainline_max_info_hashes()
    ));
}

/// mainline's per-node storage limits, as it exports them.
fn mainline_max_peers() -> String {
    grouped(mainline::MAX_PEERS)
}

fn mainline_max_info_hashes() -> String {
    grouped(mainline::MAX_INFO_HASHES)
}

/// `2000` as the document writes it: `2,000`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
