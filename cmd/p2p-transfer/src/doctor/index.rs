//! The index server: TCP reachability, the TLS and `Hello` handshakes, the protocol version,
//! and the round-trip time, each failure named for what it is.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_protocol::{
    Connection, ErrorCode, IndexConversation, NodeId, PROTOCOL_VERSION, ProtocolError, Role,
    client_hello,
};
use p2p_transport::{ClientConnection, Tls};
use tokio::net::TcpStream;

use super::{Check, Status};

/// How long the TCP connection, then the TLS handshake and `Welcome`, may each take.
pub const INDEX_TIMEOUT: Duration = Duration::from_secs(3);

const CHECK: &str = "index";

/// An index server that answered, with its connection (for the probe).
pub struct Reached {
    /// Where.
    pub addr: SocketAddr,
    /// The node id it proved.
    pub node_id: NodeId,
    /// The open connection, after `Welcome`.
    pub conn: ClientConnection<IndexConversation>,
}

/// Checks the index at `addr` (`what` says where the address came from, for the line);
/// with `expect`, another node id there is a problem.
pub async fn check(
    tls: &Tls,
    addr: SocketAddr,
    what: &str,
    expect: Option<NodeId>,
) -> (Check, Option<Reached>) {
    let subject = addr.to_string();
    let problem = |summary: String| Check::new(CHECK, subject.clone(), Status::Problem, summary);
    let port = addr.port();
    let started = Instant::now();
    let tcp = match tokio::time::timeout(INDEX_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => {
            return (
                problem(format!(
                    "{what}: no answer within {}s",
                    INDEX_TIMEOUT.as_secs()
                ))
                .cause(format!(
                    "the host is down or elsewhere, or a firewall drops TCP port {port}"
                ))
                .fix(format!(
                    "check the address; on the index's machine, open TCP port {port} \
                         (`sudo ufw allow {port}/tcp`, or an nftables/iptables accept rule)"
                )),
                None,
            );
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (
                problem(format!("{what}: connection refused"))
                    .cause("no index server runs there (or a firewall rejects the port)")
                    .fix(format!(
                        "start one there with `p2p-transfer server` (it listens on port 8000), \
                         or check the address and port ({port})"
                    )),
                None,
            );
        }
        Ok(Err(err)) => {
            return (
                problem(format!("{what}: can't connect: {err}"))
                    .cause("this machine has no route to that address")
                    .fix("check the address and this machine's network connection"),
                None,
            );
        }
        Ok(Ok(tcp)) => tcp,
    };
    // The TCP handshake is one round trip.
    let rtt = started.elapsed();
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let (stream, node_id) = tls.secure(tcp, expect, INDEX_TIMEOUT).await?;
        let mut conn = Connection::client::<IndexConversation>(stream);
        tokio::time::timeout(
            INDEX_TIMEOUT,
            client_hello::<IndexConversation, _>(&mut conn),
        )
        .await
        .map_err(|_| ProtocolError::Timeout(INDEX_TIMEOUT))??;
        Ok::<_, ProtocolError>((conn, node_id))
    };
    let handshakes_started = Instant::now();
    match handshake.await {
        Ok((conn, node_id)) => {
            let check = Check::ok(
                CHECK,
                subject,
                format!(
                    "{what}: index server, protocol version {PROTOCOL_VERSION}, node id \
                     {node_id}, round trip {}, handshakes {}",
                    millis(rtt),
                    millis(handshakes_started.elapsed())
                ),
            );
            (
                check,
                Some(Reached {
                    addr,
                    node_id,
                    conn,
                }),
            )
        }
        Err(err) => (failed(problem(format!("{what}: {err}")), &err, addr), None),
    }
}

/// A failed handshake's cause and fix.
fn failed(check: Check, err: &ProtocolError, addr: SocketAddr) -> Check {
    let ours = PROTOCOL_VERSION;
    match err {
        ProtocolError::VersionMismatch { theirs, .. } => check
            .cause(format!(
                "the index speaks protocol version {theirs}, this program {ours}: one of them is \
                 older"
            ))
            .fix("install the same p2p-transfer release on both machines"),
        ProtocolError::Remote {
            code: ErrorCode::VersionMismatch,
            ..
        } => check
            .cause(format!(
                "the index does not speak this program's protocol version ({ours}): one of them \
                 is older"
            ))
            .fix("install the same p2p-transfer release on both machines"),
        ProtocolError::Remote {
            code: ErrorCode::LimitExceeded | ErrorCode::Busy,
            ..
        } => check
            .cause("the index is full, or this address holds too many connections to it")
            .fix("try again in a moment; if it lasts, ask the index's operator"),
        ProtocolError::WrongRole { got: Role::Peer, .. } => check
            .cause("that is a peer's chunk server, not an index server")
            .fix("give the index server's address (its `server` prints it at start)"),
        ProtocolError::WrongNode { got, expected } => check
            .cause(format!(
                "another index answers at {addr} than the one this machine knows ({expected})"
            ))
            .fix(format!(
                "if that index's key changed on purpose, accept it with --server-id {got}; \
                 otherwise someone else runs an index at that address"
            )),
        ProtocolError::Tls(_) => check
            .cause("something answers there, but not a p2p-transfer node of this version")
            .fix("check the address and port; an index built before version 3 speaks no TLS"),
        ProtocolError::Timeout(_) => check
            .cause("the connection opened, but the handshakes did not finish: an overloaded index, or something else listens there")
            .fix("check that the address is a p2p-transfer index server"),
        _ => check.fix("check the address; run the index with -v to see why it closed"),
    }
}

/// `0.4 ms`, `12 ms`.
pub fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
