//! Whether others reach this peer: it listens where a peer would (`--addr`), asks the index to
//! connect back (`Probe`, PROTOCOL.md §7.7), and answers that connection's handshakes as a
//! chunk server would. The index connects to the address it sees this machine at, which is
//! the address it would give other peers for it (with `--advertise-addr`, at that address's
//! port, and a warning when its IP is another: the index can't be aimed elsewhere).
//!
//! A port another program holds is named as such (doctor's listen failed with "address in
//! use", or the index's connection went to another listener on that port), with the fix
//! "stop it or pick another port", not firewall advice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use p2p_protocol::{
    Connection, ErrorCode, IndexRequest, IndexResponse, PeerConversation, ProbeOutcome,
    ProtocolError, server_hello,
};
use p2p_transport::Tls;
use tokio::net::TcpListener;

use super::index::Reached;
use super::interfaces::{Interface, Kind, owning};
use super::{Check, Status, listeners};

/// How long to wait for the index's answer: its own probe timeout (3 s) and then some.
const PROBE_REPLY_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the index's connection may take for its TLS handshake and `Hello` here.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);

const CHECK: &str = "reachability";

/// Who holds the port doctor listens on.
enum Port {
    /// Doctor's listener (bound at this address).
    Ours(SocketAddr),
    /// Another program: doctor's listen failed with "address in use".
    Taken,
}

/// Asks the index in `reached` to connect back to a listener on `listen`, at the port of
/// `advertise` when given (the one other peers are told).
pub async fn check(
    mut reached: Reached,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    tls: &Tls,
    interfaces: &[Interface],
) -> Vec<Check> {
    let subject = listen.to_string();
    let (listener, holder) = match TcpListener::bind(listen).await {
        Ok(listener) => {
            let bound = listener.local_addr().unwrap_or(listen);
            (Some(listener), Port::Ours(bound))
        }
        // A peer of this node may listen there already: it answers the index itself. Anything
        // else there is found out below.
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && listen.port() != 0 => {
            (None, Port::Taken)
        }
        Err(err) => {
            return vec![
                Check::new(
                    CHECK,
                    subject,
                    Status::Problem,
                    format!("can't listen on {listen}: {err}"),
                )
                .fix("give --addr an address of this machine, and a free port (or 0)"),
            ];
        }
    };
    let listen_port = match holder {
        Port::Ours(bound) => bound.port(),
        Port::Taken => listen.port(),
    };
    let port = advertise
        .map(|a| a.port())
        .filter(|p| *p != 0)
        .unwrap_or(listen_port);
    let probe = IndexRequest::Probe { port };
    let request = reached.conn.request(&probe, PROBE_REPLY_TIMEOUT);
    let accepted = AtomicUsize::new(0);
    let reply = match listener {
        Some(listener) => tokio::select! {
            reply = request => reply,
            () = answer(listener, tls, &accepted) => unreachable!("answer never returns"),
        },
        None => request.await,
    };
    let index = reached.addr;
    let mut checks = Vec::new();
    let probed = match reply {
        Ok(IndexResponse::Probed {
            addr,
            outcome,
            message,
        }) => {
            let seen = Seen {
                listen,
                listen_port,
                port,
                index,
                holder: &holder,
                // Nothing came to doctor's listener: what the index met was someone else.
                missed: accepted.load(Ordering::Relaxed) == 0,
            };
            checks.push(seen.judge(addr, outcome, message, interfaces));
            Some(addr)
        }
        Ok(IndexResponse::Error { code, message }) => {
            let (summary, fix) = match code {
                ErrorCode::BadRequest => (
                    format!(
                        "the index at {index} can't check it: it is older than this program ({message})"
                    ),
                    "update the index server to this release to have it checked".to_owned(),
                ),
                ErrorCode::Forbidden => (
                    format!("the index at {index} won't check it: {message}"),
                    format!("check it from another machine instead (`nc -zv THIS-MACHINE {port}`)"),
                ),
                _ => (
                    format!("the index at {index} did not check it: {message}"),
                    "run doctor again in a few seconds".to_owned(),
                ),
            };
            checks.push(Check::new(CHECK, subject, Status::Warning, summary).fix(fix));
            None
        }
        Ok(other) => {
            checks.push(Check::new(
                CHECK,
                subject,
                Status::Warning,
                format!("the index at {index} answered the probe with {other:?}"),
            ));
            None
        }
        Err(ProtocolError::Closed) => {
            checks.push(Check::new(
                CHECK,
                subject,
                Status::Warning,
                format!("the index at {index} closed the connection: it is older than this program and can't check it"),
            )
            .fix("update the index server to this release to have it checked"));
            None
        }
        Err(err) => {
            checks.push(Check::new(
                CHECK,
                subject,
                Status::Warning,
                format!("the index at {index} did not answer the probe: {err}"),
            ));
            None
        }
    };
    if let (Some(advertise), Some(probed)) = (advertise, probed)
        && !same_place(advertise, probed)
    {
        checks.push(elsewhere(advertise, probed));
    }
    checks
}

/// Whether peers told `advertise` would reach what the index probed at `probed`: the same
/// address, or an unspecified IP (which the index fills in with this source address, as for
/// `Register`) on the same port.
fn same_place(advertise: SocketAddr, probed: SocketAddr) -> bool {
    let ip = advertise.ip().to_canonical();
    advertise.port() == probed.port() && (ip.is_unspecified() || ip == probed.ip().to_canonical())
}

/// The warning that the address peers are told is not the one the index could check.
fn elsewhere(advertise: SocketAddr, probed: SocketAddr) -> Check {
    Check::new(
        CHECK,
        advertise.to_string(),
        Status::Warning,
        format!(
            "other peers are told {advertise} (--advertise-addr), but the index could only check {probed}"
        ),
    )
    .cause(format!(
        "the index connects back only to the address a request comes from ({}), never to one it is given, so that nobody can aim it at another machine",
        probed.ip()
    ))
    .fix(format!(
        "check {advertise} from another machine (`nc -zv {} {}`); if peers should use {} instead, drop --advertise-addr",
        advertise.ip(),
        advertise.port(),
        probed.ip()
    ))
}

/// What doctor knows around a `Probed` reply.
struct Seen<'a> {
    listen: SocketAddr,
    /// The port doctor listens on (or failed to).
    listen_port: u16,
    /// The port probed.
    port: u16,
    index: SocketAddr,
    holder: &'a Port,
    /// No connection came to doctor's listener.
    missed: bool,
}

impl Seen<'_> {
    /// The check for a probe of `addr` that came out `outcome`.
    fn judge(
        &self,
        addr: SocketAddr,
        outcome: ProbeOutcome,
        message: String,
        interfaces: &[Interface],
    ) -> Check {
        let subject = self.listen.to_string();
        let port = self.port;
        // The port is another program's: say so, not "open the port".
        let taken = |summary: String, holders: &str| {
            Check::new(CHECK, subject.clone(), Status::Problem, summary)
                .cause(format!(
                    "another program on this machine listens on TCP port {}{holders}, so a peer can't listen there",
                    self.listen_port
                ))
                .fix(format!(
                    "stop that program (`ss -ltnp 'sport = :{p}'` names it), or give the peer another port: --addr 0.0.0.0:PORT with a free one, or --addr 0.0.0.0:0 for one the system picks",
                    p = self.listen_port
                ))
        };
        // With the listen failed, or nothing having come to doctor's listener, who answered?
        let others = match self.holder {
            Port::Taken => None,
            Port::Ours(bound) if self.missed && self.port == self.listen_port => {
                let mut found = listeners::on_port(self.port);
                if let Some(i) = found.iter().position(|a| a == bound) {
                    found.remove(i);
                }
                (!found.is_empty()).then_some(found)
            }
            Port::Ours(_) => None,
        };
        if let Some(others) = others
            && !matches!(outcome, ProbeOutcome::Reached | ProbeOutcome::OtherNode)
        {
            let at: Vec<String> = others.iter().map(ToString::to_string).collect();
            return taken(
                format!(
                    "{message}; the connection did not come to doctor's listener on {}: another program listens at {}",
                    self.listen,
                    at.join(", ")
                ),
                &format!(" at {}", at.join(", ")),
            );
        }
        match outcome {
            ProbeOutcome::Reached => {
                let mut summary = message;
                if matches!(self.holder, Port::Taken) {
                    summary.push_str(" (answered by this node's peer already listening there)");
                }
                if self.index.ip().is_loopback() {
                    summary.push_str(" (the index runs on this machine: this shows the port is served, not that other machines get through)");
                }
                match owning(interfaces, addr.ip()) {
                    Some(i) if matches!(i.kind, Kind::Vpn | Kind::Container) => {
                        Check::new(CHECK, subject, Status::Warning, summary)
                            .cause(format!("the index sees this machine at {} ({}), so other peers are told that address", addr.ip(), i.name))
                            .fix(format!("if peers can't reach this one, run it with --advertise-addr LAN-IP:{port}"))
                    }
                    _ => Check::ok(CHECK, subject, summary),
                }
            }
            ProbeOutcome::OtherNode if matches!(self.holder, Port::Taken) => taken(
                format!("port {} is taken: {message}", self.listen_port),
                " (another p2p-transfer node)",
            ),
            ProbeOutcome::OtherNode => Check::new(CHECK, subject, Status::Warning, message)
                .cause(format!("another p2p-transfer node answers at {addr}: another peer on port {port}, or a NAT between this machine and the index"))
                .fix("give this peer a port of its own with --addr"),
            _ if matches!(self.holder, Port::Taken) => taken(
                format!(
                    "port {} is taken by another program: listening on {} failed (address in use), and what answers there is no peer of this node ({message})",
                    self.listen_port, self.listen
                ),
                "",
            ),
            ProbeOutcome::Refused | ProbeOutcome::TimedOut => {
                Check::new(CHECK, subject, Status::Problem, message)
                    .cause(format!(
                        "a firewall on this machine (or between it and the index) stops connections to TCP port {port}: other peers can't download from this one"
                    ))
                    .fix(self.open_port())
            }
            ProbeOutcome::Failed | ProbeOutcome::Unknown => {
                Check::new(CHECK, subject, Status::Problem, message).fix(self.open_port())
            }
        }
    }

    /// The fix for a port the network doesn't let through.
    fn open_port(&self) -> String {
        let port = self.port;
        let mut fix = format!(
            "open TCP port {port} to other machines on this one (`sudo ufw allow {port}/tcp`, \
             or `sudo nft add rule inet filter input tcp dport {port} accept`)"
        );
        if self.listen.port() == 0 {
            fix.push_str(&format!(
                "; a peer picks a new port each run unless given one: run it with --addr \
                 0.0.0.0:{port} (or another port you open)"
            ));
        }
        fix
    }
}

/// Answers connections on `listener` as a chunk server's handshakes would (TLS, `Welcome`),
/// each on a task of its own (a stray connection that says nothing can't hold up the
/// index's), until dropped; counts the connections in `accepted`.
async fn answer(listener: TcpListener, tls: &Tls, accepted: &AtomicUsize) {
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(listen: SocketAddr, holder: &Port, missed: bool) -> Seen<'_> {
        Seen {
            listen,
            listen_port: listen.port(),
            port: listen.port(),
            index: "127.0.0.1:8000".parse().unwrap(),
            holder,
            missed,
        }
    }

    #[test]
    fn a_port_another_program_holds_is_named_not_a_firewall() {
        let listen: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let probed: SocketAddr = "10.0.0.5:7001".parse().unwrap();
        // doctor's listen failed: whatever then answers is someone else.
        let check = seen(listen, &Port::Taken, true).judge(
            probed,
            ProbeOutcome::TimedOut,
            "no answer".into(),
            &[],
        );
        assert_eq!(check.status, Status::Problem);
        assert!(
            check
                .summary
                .starts_with("port 7001 is taken by another program: listening on 0.0.0.0:7001 failed (address in use)"),
            "{check:?}"
        );
        let fix = check.fix.unwrap();
        assert!(
            fix.contains("ss -ltnp 'sport = :7001'") && fix.contains("--addr 0.0.0.0:0"),
            "{fix}"
        );
        assert!(!fix.contains("open TCP port"), "{fix}");
        // This node's own peer there: fine.
        let check = seen(listen, &Port::Taken, true).judge(
            probed,
            ProbeOutcome::Reached,
            "the index reached you".into(),
            &[],
        );
        assert_eq!(check.status, Status::Ok);
        assert!(check.summary.contains("this node's peer"), "{check:?}");
        // Another node: taken too.
        let check = seen(listen, &Port::Taken, true).judge(
            probed,
            ProbeOutcome::OtherNode,
            "node X answered".into(),
            &[],
        );
        assert_eq!(check.status, Status::Problem);
        assert!(check.summary.starts_with("port 7001 is taken"), "{check:?}");
        // Listening worked, and nothing else holds the port: the network is to blame.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = free.local_addr().unwrap();
        let check = seen(ours, &Port::Ours(ours), true).judge(
            ours,
            ProbeOutcome::TimedOut,
            "no answer".into(),
            &[],
        );
        assert!(
            check.fix.unwrap().starts_with("open TCP port"),
            "{:?}",
            check.cause
        );
    }

    #[test]
    fn a_connection_that_went_to_another_listener_on_the_port_is_named() {
        // doctor on 127.0.0.1:P, another program on 127.0.0.2:P; the index's connection
        // never came to doctor.
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = ours.local_addr().map(|a| (ours, a)).unwrap();
        let port = ours.1.port();
        let Ok(other) = std::net::TcpListener::bind(("127.0.0.2", port)) else {
            return; // the port is 127.0.0.2's already: nothing to learn here
        };
        let holder = Port::Ours(ours.1);
        let probed = other.local_addr().unwrap();
        let check = seen(ours.1, &holder, true).judge(
            probed,
            ProbeOutcome::Failed,
            "TLS handshake failed".into(),
            &[],
        );
        assert_eq!(check.status, Status::Problem);
        assert!(
            check
                .summary
                .contains(&format!("another program listens at {probed}")),
            "{check:?}"
        );
        assert!(
            !check.fix.as_deref().unwrap().contains("open TCP port"),
            "{check:?}"
        );
        // Had the connection come to doctor, it was not someone else's.
        let check = seen(ours.1, &holder, false).judge(
            probed,
            ProbeOutcome::Failed,
            "TLS handshake failed".into(),
            &[],
        );
        assert!(check.fix.unwrap().starts_with("open TCP port"));
    }

    #[test]
    fn an_advertised_address_the_index_could_not_check_is_a_warning() {
        let probed: SocketAddr = "192.168.1.20:7001".parse().unwrap();
        for same in [
            "192.168.1.20:7001",
            "0.0.0.0:7001",
            "[::ffff:192.168.1.20]:7001",
        ] {
            assert!(same_place(same.parse().unwrap(), probed), "{same}");
        }
        for other in ["203.0.113.7:7001", "192.168.1.20:7002"] {
            assert!(!same_place(other.parse().unwrap(), probed), "{other}");
        }
        let check = elsewhere("203.0.113.7:7001".parse().unwrap(), probed);
        assert_eq!(check.status, Status::Warning);
        assert_eq!(check.subject, "203.0.113.7:7001");
        assert!(
            check
                .cause
                .as_deref()
                .unwrap()
                .contains("connects back only to the address a request comes from (192.168.1.20)"),
            "{check:?}"
        );
        assert!(
            check
                .fix
                .as_deref()
                .unwrap()
                .contains("nc -zv 203.0.113.7 7001"),
            "{check:?}"
        );
    }
}
