//! A real authoritative DNS server for tests: `hickory-server` serving one in-memory zone,
//! written as zone-file text, on 127.0.0.1 over UDP and TCP on a port the system picks.
//! Loopback only. Shared by this crate's tests and the binary's (`#[path]` include), so both
//! ask the same kind of server an administrator runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// How long the server keeps an idle TCP connection.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// Tries at binding TCP on the port UDP got (another process may hold it).
const BIND_TRIES: usize = 20;

/// A running DNS server; stopped when dropped.
pub struct TestDns {
    addr: SocketAddr,
    server: Server<Catalog>,
}

impl TestDns {
    /// Serves the zone `origin` (e.g. `site.test`) with `records`: zone-file lines relative
    /// to the origin (`@` is the origin). The SOA and NS records are added here.
    pub async fn start(origin: &str, records: &str) -> Self {
        Self::start_on("127.0.0.1".parse().unwrap(), origin, records).await
    }

    /// As [`TestDns::start`], answering on `ip` (an address the test's own namespace has).
    pub async fn start_on(ip: std::net::IpAddr, origin: &str, records: &str) -> Self {
        let origin_name = Name::from_utf8(format!("{}.", origin.trim_end_matches('.')))
            .expect("a valid zone origin");
        let text = format!(
            "$ORIGIN {origin_name}\n$TTL 60\n\
             @ IN SOA ns.{origin_name} admin.{origin_name} 1 60 60 600 60\n\
             @ IN NS ns.{origin_name}\n\
             ns IN A 127.0.0.1\n\
             {records}\n"
        );
        let (origin_name, zone) = Parser::new(text, None, Some(origin_name))
            .parse()
            .expect("the test zone parses");
        let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            origin_name.clone(),
            zone,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .expect("the test zone loads");
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(&origin_name), vec![Arc::new(handler)]);
        let (udp, tcp) = bind_both(ip).await;
        let addr = udp.local_addr().expect("bound");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 32);
        Self { addr, server }
    }

    /// Where it answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// A UDP socket and a TCP listener on the same port of `ip`.
async fn bind_both(ip: std::net::IpAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..BIND_TRIES {
        let udp = UdpSocket::bind((ip, 0)).await.expect("bind UDP");
        let addr = udp.local_addr().expect("bound");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}
