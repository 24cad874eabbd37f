//! Whether others reach this peer: it listens where a peer would (`--addr`), asks the index to
//! connect back (`Probe`, PROTOCOL.md §7.7), and answers that connection's handshakes as a
//! chunk server would. The index connects to the address it sees this machine at, which is
//! the address it would give other peers for it.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::{
    Connection, ErrorCode, IndexRequest, IndexResponse, PeerConversation, ProbeOutcome,
    ProtocolError, server_hello,
};
use p2p_transport::Tls;
use tokio::net::TcpListener;

use super::index::Reached;
use super::interfaces::{Interface, Kind, owning};
use super::{Check, Status};

/// How long to wait for the index's answer: its own probe timeout (3 s) and then some.
const PROBE_REPLY_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the index's connection may take for its TLS handshake and `Hello` here.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);

const CHECK: &str = "reachability";

/// Asks the index in `reached` to connect back to a listener on `listen`.
pub async fn check(
    mut reached: Reached,
    listen: SocketAddr,
    tls: &Tls,
    interfaces: &[Interface],
) -> Check {
    let subject = listen.to_string();
    let (listener, port, note) = match TcpListener::bind(listen).await {
        Ok(listener) => {
            let port = listener.local_addr().map_or(listen.port(), |a| a.port());
            (Some(listener), port, "")
        }
        // A peer already listens there: it answers the index itself.
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && listen.port() != 0 => (
            None,
            listen.port(),
            " (answered by the program already listening there)",
        ),
        Err(err) => {
            return Check::new(
                CHECK,
                subject,
                Status::Problem,
                format!("can't listen on {listen}: {err}"),
            )
            .fix("give --addr an address of this machine, and a free port (or 0)");
        }
    };
    let probe = IndexRequest::Probe { port };
    let request = reached.conn.request(&probe, PROBE_REPLY_TIMEOUT);
    let reply = match listener {
        Some(listener) => tokio::select! {
            reply = request => reply,
            () = answer(listener, tls) => unreachable!("answer never returns"),
        },
        None => request.await,
    };
    let index = reached.addr;
    let open_port = |port: u16| {
        let mut fix = format!(
            "open TCP port {port} to other machines on this one (`sudo ufw allow {port}/tcp`, \
             or `sudo nft add rule inet filter input tcp dport {port} accept`)"
        );
        if listen.port() == 0 {
            fix.push_str(&format!(
                "; a peer picks a new port each run unless given one: run it with --addr \
                 0.0.0.0:{port} (or another port you open)"
            ));
        }
        fix
    };
    match reply {
        Ok(IndexResponse::Probed {
            addr,
            outcome,
            message,
        }) => {
            let seen = owning(interfaces, addr.ip());
            match outcome {
                ProbeOutcome::Reached => {
                    let mut summary = format!("{message}{note}");
                    if index.ip().is_loopback() {
                        summary.push_str(" (the index runs on this machine: this shows the port is served, not that other machines get through)");
                    }
                    match seen {
                        Some(i) if matches!(i.kind, Kind::Vpn | Kind::Container) => {
                            Check::new(CHECK, subject, Status::Warning, summary)
                                .cause(format!("the index sees this machine at {} ({}), so other peers are told that address", addr.ip(), i.name))
                                .fix(format!("if peers can't reach this one, run it with --advertise-addr LAN-IP:{port}"))
                        }
                        _ => Check::ok(CHECK, subject, summary),
                    }
                }
                ProbeOutcome::OtherNode => Check::new(CHECK, subject, Status::Warning, message)
                    .cause(format!("another p2p-transfer node answers at {addr}: another peer on port {port}, or a NAT between this machine and the index"))
                    .fix("give this peer a port of its own with --addr"),
                ProbeOutcome::Refused | ProbeOutcome::TimedOut => {
                    Check::new(CHECK, subject, Status::Problem, message)
                        .cause(format!(
                            "a firewall on this machine (or between it and the index) stops connections to TCP port {port}: other peers can't download from this one"
                        ))
                        .fix(open_port(port))
                }
                ProbeOutcome::Failed | ProbeOutcome::Unknown => {
                    Check::new(CHECK, subject, Status::Problem, message)
                        .fix(open_port(port))
                }
            }
        }
        Ok(IndexResponse::Error { code, message }) => {
            let (summary, fix) = match code {
                ErrorCode::BadRequest => (
                    format!("the index at {index} can't check it: it is older than this program ({message})"),
                    "update the index server to this release to have it checked".to_owned(),
                ),
                _ => (
                    format!("the index at {index} did not check it: {message}"),
                    "run doctor again in a few seconds".to_owned(),
                ),
            };
            Check::new(CHECK, subject, Status::Warning, summary).fix(fix)
        }
        Ok(other) => Check::new(
            CHECK,
            subject,
            Status::Warning,
            format!("the index at {index} answered the probe with {other:?}"),
        ),
        Err(ProtocolError::Closed) => Check::new(
            CHECK,
            subject,
            Status::Warning,
            format!("the index at {index} closed the connection: it is older than this program and can't check it"),
        )
        .fix("update the index server to this release to have it checked"),
        Err(err) => Check::new(
            CHECK,
            subject,
            Status::Warning,
            format!("the index at {index} did not answer the probe: {err}"),
        ),
    }
}

/// Answers connections on `listener` as a chunk server's handshakes would (TLS, `Welcome`),
/// each on a task of its own (a stray connection that says nothing can't hold up the
/// index's), until dropped.
async fn answer(listener: TcpListener, tls: &Tls) {
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        answering.spawn(async move {
            let Ok((stream, _)) = tls.accept(tcp, ANSWER_TIMEOUT).await else {
                return;
            };
            let mut conn = Connection::server::<PeerConversation>(stream);
            let _ = tokio::time::timeout(
                ANSWER_TIMEOUT,
                server_hello::<PeerConversation, _>(&mut conn),
            )
            .await;
            // The index closes once it has its `Welcome`; this side lets go of it now.
        });
        // Finished ones are let go of as it goes (the set ends with this function).
        while answering.try_join_next().is_some() {}
    }
}
