//! mDNS: a query on each interface that can carry one, all at once, and what answered where.
//! When nothing answers anywhere, the summary names the likely causes and the command to use
//! instead (`--server`), with a real address when doctor found an index another way.

use std::time::Duration;

use p2p_discovery::{FoundServer, Interfaces};
use p2p_protocol::PROTOCOL_VERSION;

use super::interfaces::Interface;
use super::{Check, Status};

const CHECK: &str = "mdns";

/// What one interface's query heard.
#[derive(Debug)]
pub struct Heard {
    /// The interface.
    pub interface: String,
    /// The index servers that answered there (an error if the query could not run).
    pub servers: Result<Vec<FoundServer>, String>,
}

/// Queries every interface of `interfaces` that can carry mDNS (or only those named in
/// `only`), each for up to `timeout`, in parallel.
pub async fn query(interfaces: &[Interface], only: &[String], timeout: Duration) -> Vec<Heard> {
    let names: Vec<String> = interfaces
        .iter()
        .filter(|i| i.can_query())
        .filter(|i| only.is_empty() || only.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, name) in names.into_iter().enumerate() {
        tasks.spawn_blocking(move || {
            let servers = p2p_discovery::browse(timeout, &Interfaces::Named(vec![name.clone()]))
                .map_err(|e| e.to_string());
            (
                n,
                Heard {
                    interface: name,
                    servers,
                },
            )
        });
    }
    let mut heard: Vec<(usize, Heard)> = tasks.join_all().await;
    heard.sort_by_key(|(n, _)| *n);
    heard.into_iter().map(|(_, h)| h).collect()
}

/// One line per interface asked.
pub fn checks(heard: &[Heard], timeout: Duration) -> Vec<Check> {
    let anywhere = heard
        .iter()
        .any(|h| h.servers.as_ref().is_ok_and(|s| !s.is_empty()));
    heard
        .iter()
        .map(|h| match &h.servers {
            Err(err) => Check::new(
                CHECK,
                format!("on {}", h.interface),
                Status::Warning,
                format!("the query could not run: {err}"),
            ),
            Ok(servers) if servers.is_empty() => Check::new(
                CHECK,
                format!("on {}", h.interface),
                if anywhere { Status::Ok } else { Status::Warning },
                format!("no index server answered within {}s", timeout.as_secs_f32()),
            ),
            Ok(servers) => {
                let list: Vec<String> = servers.iter().map(describe).collect();
                let old = servers
                    .iter()
                    .filter(|s| s.version.is_some_and(|v| v != PROTOCOL_VERSION))
                    .count();
                let check = Check::new(
                    CHECK,
                    format!("on {}", h.interface),
                    if old > 0 { Status::Warning } else { Status::Ok },
                    format!("{} answered: {}", super::plural(servers.len(), "index server"), list.join("; ")),
                );
                if old > 0 {
                    check
                        .cause(format!("a server that speaks another protocol version than this program ({PROTOCOL_VERSION}) refuses it"))
                        .fix("install the same p2p-transfer release on both machines")
                } else {
                    check
                }
            }
        })
        .collect()
}

/// `"p2p-transfer on lab:8000 [A3R7-3D62]" at 10.0.0.2:8000 (version 4, id A3R7-...)`.
fn describe(server: &FoundServer) -> String {
    let version = server
        .version
        .map_or("version unknown".to_owned(), |v| format!("version {v}"));
    let id = server.server_id.as_deref().unwrap_or("no id");
    format!(
        "{:?} at {} ({version}, id {id})",
        server.instance,
        server.addr()
    )
}

/// The servers heard anywhere, once each (by instance name).
pub fn servers(heard: &[Heard]) -> Vec<FoundServer> {
    let mut all: Vec<FoundServer> = Vec::new();
    for h in heard {
        for server in h.servers.iter().flatten() {
            if !all.iter().any(|s| s.instance == server.instance) {
                all.push(server.clone());
            }
        }
    }
    all
}

/// The summary when nothing answered anywhere: why, and what to do instead. `unusable` names
/// the interfaces that are up but can't carry a query (multicast off); `command` is a command
/// that reaches an index found another way, if doctor found one. `given_works`: the index was
/// given with `--server` and answers, so this machine already does without mDNS (a warning,
/// not a problem: following doctor's own advice must end in a clean run).
pub fn nothing_heard(
    asked: &[Heard],
    unusable: &[String],
    command: Option<String>,
    given_works: bool,
) -> Check {
    let asked: Vec<&str> = asked.iter().map(|h| h.interface.as_str()).collect();
    let summary = if asked.is_empty() {
        format!(
            "no interface can carry an mDNS query (multicast is off on {})",
            if unusable.is_empty() {
                "every interface".to_owned()
            } else {
                unusable.join(", ")
            }
        )
    } else {
        format!(
            "no index server answered on any interface ({})",
            asked.join(", ")
        )
    };
    let cause = if asked.is_empty() {
        "multicast is off on the interfaces that are up, so mDNS can't run".to_owned()
    } else {
        "mDNS (UDP port 5353, multicast 224.0.0.251) is blocked by a firewall on this machine or \
         the index's, or filtered by the network (Wi-Fi access points often do); or the index is \
         on another subnet, runs with --no-mdns, or is not running"
            .to_owned()
    };
    let fix = match &command {
        Some(_) => "use the index's address directly, as below (no mDNS needed)".to_owned(),
        None => "ask the index's operator for its address (its `p2p-transfer server` prints \
                 `peers reach this server at ADDR`), then run `p2p-transfer doctor --server ADDR` \
                 and `p2p-transfer peer --server ADDR`"
            .to_owned(),
    };
    let status = if given_works {
        Status::Warning
    } else {
        Status::Problem
    };
    let check = Check::new(CHECK, "", status, summary).cause(cause).fix(fix);
    match command {
        Some(command) => check.command(command),
        None => check.command("p2p-transfer peer --server ADDR"),
    }
}
