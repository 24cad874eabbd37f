//! A simulated site ([`crate::topology`]): two subnets joined by a router, an index on each
//! side, seeders in A and downloaders in B, every node a real `p2p-transfer` process with an
//! address of its own. mDNS reaches only its own subnet, so B finds A's files through the
//! indexes it is given, remembers, or is handed.

use std::path::Path;
use std::time::Duration;

use crate::process::*;
use crate::support::random_file;
use crate::topology::{self, Subnet};

/// The index port on both subnets.
const INDEX_PORT: u16 = 8000;
/// What a one-shot download may take on a loaded machine (the success path is seconds).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

fn index_addr(subnet: Subnet) -> String {
    format!("{}:{INDEX_PORT}", subnet.host(2))
}

/// An index server on host 2 of `subnet`, advertised over mDNS there; and its node id.
fn index(subnet: Subnet) -> (Running, String) {
    let mut cmd = bin();
    cmd.args([
        "server",
        "--addr",
        &index_addr(subnet),
        "--heartbeat-interval",
        "500ms",
        "--heartbeat-timeout",
        "2s",
    ]);
    let mut child = topology::inside(subnet, cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let running = Running(child);
    let id = read_line_starting(&mut out, "server node id ");
    read_line_starting(&mut out, "server listening on ");
    (running, id.trim_start_matches("server node id ").to_owned())
}

/// `site.test` publishing A's index (`id`) in DNS, as a site's administrator would.
fn site_zone(id: &str) -> String {
    let version = p2p_protocol::PROTOCOL_VERSION;
    format!(
        r#"
_p2p-transfer._tcp PTR main._p2p-transfer._tcp
main._p2p-transfer._tcp SRV 0 0 {INDEX_PORT} index-a
main._p2p-transfer._tcp TXT "version={version}" "id={id}"
index-a A {}
"#,
        Subnet::A.host(2)
    )
}

/// A seeder on host `n` of subnet A sharing `path` with the indexes in `servers`, with
/// `extra` flags; returns it and the file id it printed.
fn seeder(n: u8, path: &Path, servers: &[String], extra: &[&str]) -> (Running, String) {
    let mut cmd = bin();
    cmd.args(["peer", "--no-known-indexes"])
        .args(extra)
        .arg("--addr")
        .arg(format!("{}:0", Subnet::A.host(n)));
    for server in servers {
        cmd.args(["--server", server]);
    }
    cmd.arg("--register").arg(path);
    let (child, _, mut out) = spawn_until(topology::inside(Subnet::A, cmd), "peer listening on ");
    let line = read_line_starting(&mut out, "registered ");
    let id = line.rsplit(' ').next().unwrap().to_owned();
    (child, id)
}

/// A one-shot download on host `n` of subnet B: `peer --addr 10.2.0.N:0 ARGS --download ID
/// --out OUT`, run to its end.
fn download(n: u8, identity: &Path, args: &[&str], id: &str, out: &Path) -> std::process::Output {
    let mut cmd = bin();
    cmd.env("P2P_IDENTITY_DIR", identity)
        .args(["peer", "--addr"])
        .arg(format!("{}:0", Subnet::B.host(n)))
        .args(args)
        .args(["--download", id, "--out"])
        .arg(out);
    let child = topology::inside(Subnet::B, cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, DOWNLOAD_LIMIT)
}

fn assert_fetched(output: &std::process::Output, out: &Path, name: &str, data: &[u8]) {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(std::fs::read(out.join(name)).unwrap(), data, "{name}");
}

/// `search ARGS` run in subnet B.
fn search(identity: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.env("P2P_IDENTITY_DIR", identity)
        .arg("search")
        .args(args);
    topology::inside(Subnet::B, cmd).output().unwrap()
}

#[test]
fn a_routed_site_with_an_index_per_subnet_shares_across_the_router() {
    if !crate::netns::enter("site::a_routed_site_with_an_index_per_subnet_shares_across_the_router")
    {
        return;
    }
    topology::build();
    let ((mut index_a, id_a), _index_b) = (index(Subnet::A), index(Subnet::B));
    let both = [index_addr(Subnet::A), index_addr(Subnet::B)];
    let files = tempfile::tempdir().unwrap();
    let (shared, shared_data) = random_file(files.path(), "shared.bin", 5 * 1024 * 1024 + 3, 71);
    let (only_a, only_a_data) = random_file(files.path(), "only-a.bin", 300_000, 72);
    // Six seeders in A know both indexes; a seventh only A's.
    let mut seeders = Vec::new();
    let mut shared_id = String::new();
    for n in 10..16 {
        let (child, id) = seeder(n, &shared, &both, &[]);
        shared_id = id;
        seeders.push(child);
    }
    let (_a_only_seeder, only_a_id) = seeder(16, &only_a, &both[..1], &[]);

    // Both indexes serve the same files: a search in B through each finds the shared file.
    for server in &both {
        let me = crate::support::fresh_identity_dir();
        let found = search(&me, &["--server", server, "shared"]);
        assert!(found.status.success(), "{}", text(&found.stderr));
        assert!(
            text(&found.stdout).contains(&shared_id[..12]),
            "{}",
            text(&found.stdout)
        );
    }

    // Remembered: a node in B that once used A's index finds a file only A's index knows,
    // while it looks for its index over mDNS, which only reaches B's.
    let remembering = crate::support::fresh_identity_dir();
    let met = search(&remembering, &["--server", &both[0], "only"]);
    assert!(met.status.success(), "{}", text(&met.stderr));
    let out = tempfile::tempdir().unwrap();
    let fetched = download(
        3,
        &remembering,
        &["--auto-discover"],
        &only_a_id,
        out.path(),
    );
    assert_fetched(&fetched, out.path(), "only-a.bin", &only_a_data);
    // Without what it remembers, B's index alone doesn't know that file.
    let out = tempfile::tempdir().unwrap();
    let alone = download(
        3,
        &remembering,
        &["--auto-discover", "--no-known-indexes"],
        &only_a_id,
        out.path(),
    );
    assert!(!alone.status.success(), "{}", text(&alone.stdout));
    assert!(
        text(&alone.stderr).contains("no file"),
        "{}",
        text(&alone.stderr)
    );

    // Unicast DNS-SD: the site's DNS (on the router, B's side) publishes A's index; a node in
    // B that never met it finds the file only A's index knows.
    let rt = crate::dns_sd::runtime();
    let dns = rt.block_on(crate::dns_sd::dns_server::TestDns::start_on(
        Subnet::B.router().into(),
        "site.test",
        &site_zone(&id_a),
    ));
    let me = crate::support::fresh_identity_dir();
    let out = tempfile::tempdir().unwrap();
    let dns_server = dns.addr().to_string();
    let args = [
        "--dns-sd-domain",
        "site.test",
        "--dns-sd-server",
        &dns_server,
    ];
    let fetched = download(4, &me, &args, &only_a_id, out.path());
    assert_fetched(&fetched, out.path(), "only-a.bin", &only_a_data);

    // A ticket hand-over across the router: the sender in A names its index (version 2), and
    // the receiver in B, given nothing but the ticket, gets the file.
    let mut send = bin();
    send.args(["send", "--addr"])
        .arg(format!("{}:0", Subnet::A.host(17)))
        .args(["--server", &both[0]])
        .arg(&only_a);
    let (_sender, ticket, _sent) = start_send(topology::inside(Subnet::A, send));
    assert!(ticket.starts_with("p2p2"), "{ticket}");
    let parsed: p2p_protocol::Ticket = ticket.parse().unwrap();
    let named: Vec<String> = parsed.indexes.iter().map(|i| i.addr.to_string()).collect();
    assert_eq!(named, [both[0].clone()]);
    let out = tempfile::tempdir().unwrap();
    let mut receive = bin();
    receive.args(["receive", &ticket, "--out"]).arg(out.path());
    let child = topology::inside(Subnet::B, receive)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let received = wait_output(child, DOWNLOAD_LIMIT);
    assert_fetched(&received, out.path(), "only-a.bin", &only_a_data);

    // Five downloaders in B, each through B's index only, by prefix: all from A's seeders.
    for n in 20..25 {
        let me = crate::support::fresh_identity_dir();
        let out = tempfile::tempdir().unwrap();
        let fetched = download(
            n,
            &me,
            &["--server", &both[1]],
            &shared_id[..10],
            out.path(),
        );
        assert_fetched(&fetched, out.path(), "shared.bin", &shared_data);
    }

    // Killing A's index changes nothing for a peer that uses both.
    index_a.0.kill().unwrap();
    index_a.0.wait().unwrap();
    let me = crate::support::fresh_identity_dir();
    let out = tempfile::tempdir().unwrap();
    let fetched = download(
        5,
        &me,
        &["--server", &both[0], "--server", &both[1]],
        &shared_id[..10],
        out.path(),
    );
    assert_fetched(&fetched, out.path(), "shared.bin", &shared_data);
    drop(seeders);
}

/// With `--dht`, seeders in A announce what they share; with both indexes gone, a node in B
/// downloads by full id through the DHT alone. A DHT node that lies (it announces a host that
/// sends wrong bytes for the file) is asked, fails verification, and changes no byte.
#[test]
fn with_both_indexes_gone_a_download_by_full_id_goes_through_the_dht() {
    if !crate::netns::enter(
        "site::with_both_indexes_gone_a_download_by_full_id_goes_through_the_dht",
    ) {
        return;
    }
    topology::build();
    let ((mut index_a, _), (mut index_b, _)) = (index(Subnet::A), index(Subnet::B));
    let both = [index_addr(Subnet::A), index_addr(Subnet::B)];
    let files = tempfile::tempdir().unwrap();
    // Ten chunks, so that the one real seeder and the liar are both asked.
    let (path, data) = random_file(files.path(), "dht.bin", 40 * 1024 * 1024 + 5, 81);
    let (filler, _) = random_file(files.path(), "filler.bin", 1000, 82);
    // Six peers in A in the DHT (each on its own address, port 8010), joining through the
    // peers their indexes list; the last one shares the file.
    let mut seeders = Vec::new();
    for n in 10..15 {
        seeders.push(seeder(n, &filler, &both, &["--dht"]).0);
    }
    let (seeding, file_id) = seeder(15, &path, &both, &["--dht"]);
    seeders.push(seeding);
    let id: p2p_protocol::FileId = file_id.parse().unwrap();

    // The liar: a host on the router's A side that sends wrong bytes, announced in the DHT
    // by a node of its own.
    let rt = crate::dns_sd::runtime();
    let router_a = Subnet::A.router();
    let liar = rt.block_on(crate::bad_input::FakeSeeder::start_at(
        (router_a, 0).into(),
        None,
        &path,
        crate::bad_input::Misbehaviour::WrongBytes,
    ));
    let liar_dht = rt
        .block_on(p2p_dht::Dht::start(p2p_dht::DhtConfig {
            listen: std::net::SocketAddrV4::new(router_a, p2p_dht::DEFAULT_PORT),
            bootstrap: vec![format!("{}:{}", Subnet::A.host(15), p2p_dht::DEFAULT_PORT)],
            ..p2p_dht::DhtConfig::default()
        }))
        .unwrap();
    // Wait (for the event, not a time) until the seeder's announcement is findable, then add
    // the lie.
    let found = rt.block_on(crate::support::eventually(DOWNLOAD_LIMIT, || {
        let dht = liar_dht.clone();
        async move {
            let hosts = dht.lookup(&id).await.unwrap_or_default();
            hosts.iter().any(|h| h.ip() == Subnet::A.host(15))
        }
    }));
    assert!(found, "the seeder's announcement never became findable");
    rt.block_on(liar_dht.announce(&id, liar.addr.port()))
        .unwrap();

    // Both indexes gone.
    for index in [&mut index_a, &mut index_b] {
        index.0.kill().unwrap();
        index.0.wait().unwrap();
    }
    let me = crate::support::fresh_identity_dir();
    let out = tempfile::tempdir().unwrap();
    let bootstrap = format!("{}:{}", Subnet::A.host(12), p2p_dht::DEFAULT_PORT);
    let args = ["--server", &both[1], "--dht", "--dht-bootstrap", &bootstrap];
    let fetched = download(6, &me, &args, &file_id, out.path());
    assert_fetched(&fetched, out.path(), "dht.bin", &data);
    assert!(
        liar.requests() > 0,
        "the lying host was never asked: the test proves nothing"
    );
    drop(seeders);
}
