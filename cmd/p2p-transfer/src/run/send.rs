//! `p2p-transfer send PATH...`: share files or folders with no index needed, print a ticket
//! and the command that fetches it, serve until one receiver has all of it (or, with `--keep`,
//! until Ctrl-C), then exit.
//!
//! When `send` is registered with an index, the ticket names it too (version 2, `p2p2...`), so
//! a receiver that can't reach this machine directly (another subnet) finds it through there.
//!
//! stdout gets one line, `p2p-transfer receive <ticket>`, then `delivered <path> to <node>`
//! per item as it arrives whole (with `--json`, a `ticket` event, then `delivered` events);
//! everything else goes to stderr. Ctrl-C before everything has arrived is an error (without
//! `--keep`, whose normal end it is).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use p2p_peer::{Delivery, IndexSpec, IndexState, IndexStatus, PeerConfig, PeerHandle, Shared};
use p2p_protocol::ticket::{MAX_TICKET_ADDRS, MAX_TICKET_INDEXES};
use p2p_protocol::{NodeId, Ticket, TicketIndex, TicketItem, printable};
use tokio_util::sync::CancellationToken;

use crate::cli::SendArgs;
use crate::json::{self, Event};
use crate::run::optional_index;
use crate::trust::IndexTrust;

/// How long `send` waits, once everything has been sent to a receiver, for that receiver to
/// hang up (it does once it has checked the last chunk) before it exits all the same: exiting
/// while the receiver still reads could cut off the last bytes in flight.
const DELIVERY_LINGER: Duration = Duration::from_secs(30);

/// What `send` does when the index given can't be reached.
const WITHOUT_INDEX: &str = "sending without it (the ticket works alone)";

/// Runs `send`.
pub async fn run(args: &SendArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (identity, tls) = crate::run::id::load_tls(&args.identity, p2p_identity::Role::Peer)?;
    let mut trust = IndexTrust::load(&args.identity, args.index.server_id)?;
    // The ticket is enough: an index that can't be reached is a warning.
    let (server_addr, claimed) =
        match optional_index::find(&args.index, &trust, &tls, WITHOUT_INDEX, &shutdown).await {
            Some((addr, claimed)) => (Some(addr), claimed),
            None => (None, None),
        };
    let config = PeerConfig {
        listen_addr: args.addr,
        indexes: server_addr
            .map(|addr| IndexSpec::at(addr).expecting(trust.expect_for(addr, claimed)))
            .into_iter()
            .collect(),
        // Nothing is downloaded; nothing to share back.
        share_downloads: false,
        ..PeerConfig::default()
    };
    let peer = optional_index::start(config, tls, &trust, WITHOUT_INDEX).await?;
    if let (Some(addr), Some(seen)) = (peer.server_addr(), peer.index_node_id())
        && let Some(news) = trust.remember(addr, seen)?
    {
        eprintln!("{news}");
    }
    let result = serve(&peer, args, identity.node_id(), &shutdown).await;
    peer.shutdown().await;
    result
}

/// Shares the paths, prints the ticket, and waits for the deliveries.
async fn serve(
    peer: &PeerHandle,
    args: &SendArgs,
    node_id: NodeId,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Hashing waits on the disk (a huge file, a hung network file system): a signal stops it.
    let shared = tokio::select! {
        shared = peer.share_paths(&args.paths) => shared.context("cannot send")?,
        () = shutdown.cancelled() => anyhow::bail!("interrupted before every path was read"),
    };
    // Before the ticket is out, so no chunk sent goes uncounted.
    let mut deliveries = peer.watch_deliveries(&shared);
    let addrs = ticket_addrs(peer.local_addr(), &args.advertise_addrs)?;
    let items = shared.iter().map(ticket_item).collect();
    let indexes = ticket_indexes(&peer.indexes(), &addrs);
    let ticket = Ticket::new(node_id, items, addrs)
        .and_then(|t| t.with_indexes(indexes))
        .context("cannot make a ticket")?;
    for item in &shared {
        note!("sending {}", describe(item));
    }
    if let Some(server) = peer.server_addr() {
        let ids: Vec<String> = shared.iter().map(|s| ticket_item(s).id_text()).collect();
        let named = if ticket.indexes.is_empty() {
            ""
        } else {
            "; the ticket names it, so a receiver that can't reach this machine finds it there"
        };
        note!(
            "also registered with the index at {server} (ids {}): others there can fetch it \
             too{named}",
            ids.join(", ")
        );
    }
    let listed: Vec<String> = ticket.addrs.iter().map(ToString::to_string).collect();
    note!(
        "listening on {} as node {node_id}; on the other machine run:",
        listed.join(", ")
    );
    let command = format!("p2p-transfer receive {ticket}");
    if args.json {
        json::emit(&Event::Ticket {
            ticket: ticket.to_string(),
            command,
            items: shared.iter().map(json::Item::of).collect(),
        });
    } else {
        println!("{command}");
    }
    let mut pending: HashSet<usize> = (0..shared.len()).collect();
    let mut receivers: HashSet<NodeId> = HashSet::new();
    loop {
        let delivery = tokio::select! {
            delivery = deliveries.recv() => delivery,
            () = shutdown.cancelled() => {
                // With --keep, Ctrl-C is how it ends; without, it stopped short of its job.
                if args.keep || pending.is_empty() {
                    return Ok(());
                }
                anyhow::bail!(
                    "interrupted before everything was received ({} of {} delivered)",
                    shared.len() - pending.len(),
                    shared.len()
                );
            }
        };
        let Some(Delivery { item, client, .. }) = delivery else {
            anyhow::bail!("the peer stopped serving");
        };
        let path = match &shared[item] {
            Shared::File { path, .. } | Shared::Folder { path, .. } => path,
        };
        if args.json {
            json::emit(&Event::Delivered {
                path: json::path(path),
                id: ticket_item(&shared[item]).id_text(),
                node_id: client.to_string(),
            });
        } else {
            println!(
                "delivered {} to {client}",
                printable(&path.display().to_string())
            );
        }
        pending.remove(&item);
        receivers.insert(client);
        if pending.is_empty() && !args.keep {
            break;
        }
    }
    // Exiting now could cut off what the receivers still read: wait for them to hang up.
    let gone = all_gone(peer, &receivers);
    tokio::select! {
        () = gone => {}
        () = tokio::time::sleep(DELIVERY_LINGER) => {
            eprintln!("the receiver did not hang up within {DELIVERY_LINGER:?}; stopping anyway");
        }
        () = shutdown.cancelled() => {}
    }
    Ok(())
}

/// Returns once every one of `clients` has closed its connections.
async fn all_gone(peer: &PeerHandle, clients: &HashSet<NodeId>) {
    for client in clients {
        peer.client_gone(*client).await;
    }
}

/// What a ticket says of a shared path.
fn ticket_item(shared: &Shared) -> TicketItem {
    match shared {
        Shared::File { manifest, .. } => TicketItem::File(manifest.id()),
        Shared::Folder { folder_id, .. } => TicketItem::Folder(*folder_id),
    }
}

/// `notes.txt (1.2 MiB)` or `photos/ (120 files, 340.0 MiB)`.
fn describe(shared: &Shared) -> String {
    match shared {
        Shared::File { path, manifest } => format!(
            "{} ({})",
            printable(&path.display().to_string()),
            crate::units::size(manifest.size)
        ),
        Shared::Folder { path, head, .. } => format!(
            "{}/ ({} files, {})",
            printable(&path.display().to_string()),
            head.files,
            crate::units::size(head.size)
        ),
    }
}

/// The index servers the ticket names: those this peer is registered with, each with the node
/// id its handshake proved, at most [`MAX_TICKET_INDEXES`]. An index reached over loopback is
/// left out unless the ticket's own addresses are loopback too (a receiver elsewhere would
/// reach its own machine there), and so is a link-local IPv6 one (a ticket carries no scope).
fn ticket_indexes(indexes: &[IndexStatus], addrs: &[SocketAddr]) -> Vec<TicketIndex> {
    let local_only = addrs.iter().all(|a| a.ip().is_loopback());
    let mut named: Vec<TicketIndex> = Vec::new();
    for status in indexes {
        let (IndexState::Registered, Some(node_id)) = (&status.state, status.node_id) else {
            continue;
        };
        let addr = status.addr;
        let link_local =
            matches!(addr.ip(), std::net::IpAddr::V6(ip) if ip.is_unicast_link_local());
        if (addr.ip().is_loopback() && !local_only)
            || link_local
            || named.iter().any(|n| n.addr == addr)
        {
            continue;
        }
        named.push(TicketIndex { node_id, addr });
    }
    named.truncate(MAX_TICKET_INDEXES);
    named
}

/// The addresses the ticket lists: those given with `--advertise-addr`; else the listen
/// address if it names one IP; else this machine's addresses on the listen port: IPv4 first,
/// then IPv6 (link-local ones need a scope a ticket can't carry, so they are left out), and
/// loopback only when there is nothing else (the receiver is then on this machine).
fn ticket_addrs(listen: SocketAddr, given: &[SocketAddr]) -> anyhow::Result<Vec<SocketAddr>> {
    if !given.is_empty() {
        anyhow::ensure!(
            given.len() <= MAX_TICKET_ADDRS,
            "a ticket lists at most {MAX_TICKET_ADDRS} addresses; give fewer --advertise-addr"
        );
        return Ok(given.to_vec());
    }
    // Where others reach this listener, the most likely first (the same list `peer` prints).
    let mut addrs = crate::reach::reach(listen).addrs;
    addrs.truncate(MAX_TICKET_ADDRS);
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(addr: &str, node: u8, state: IndexState) -> IndexStatus {
        IndexStatus {
            addr: addr.parse().unwrap(),
            node_id: Some(NodeId([node; 20])),
            state,
            peer_id: None,
            advertised_addr: None,
            last_answer: None,
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_ticket_names_registered_indexes_a_receiver_can_reach() {
        let lan = addrs(&["192.168.1.20:40123"]);
        let indexes = [
            status("192.168.1.10:8000", 1, IndexState::Registered),
            status("192.168.1.11:8000", 2, IndexState::Down("refused".into())),
            status("192.168.1.12:8000", 3, IndexState::Connecting),
            status("127.0.0.1:8000", 4, IndexState::Registered),
            status("[fe80::1]:8000", 5, IndexState::Registered),
            IndexStatus {
                node_id: None,
                ..status("192.168.1.13:8000", 6, IndexState::Registered)
            },
        ];
        let named = ticket_indexes(&indexes, &lan);
        assert_eq!(
            named,
            [TicketIndex {
                node_id: NodeId([1; 20]),
                addr: "192.168.1.10:8000".parse().unwrap()
            }]
        );
        // A ticket for this machine alone may name a loopback index.
        let local = ticket_indexes(&indexes, &addrs(&["127.0.0.1:40123"]));
        assert_eq!(local.len(), 2, "{local:?}");
        // Never more than a ticket holds.
        let many: Vec<IndexStatus> = (1..=9)
            .map(|n| status(&format!("10.0.0.{n}:8000"), n, IndexState::Registered))
            .collect();
        assert_eq!(ticket_indexes(&many, &lan).len(), MAX_TICKET_INDEXES);
        assert!(ticket_indexes(&[], &lan).is_empty());
    }
}
