//! `p2p-transfer receive TICKET [--out DIR]`: fetch what a ticket from `send` names, straight
//! from the sender (whose node id the ticket pins), verified chunk by chunk, resumable, then
//! exit. With an index (`--server`, `--auto-discover`) it also takes a file or folder id or a
//! unique prefix, and asks the index for more hosts.
//!
//! A ticket that names the sender's index servers (version 2) adds them to the indexes used
//! (each must prove the node id the ticket names): when no address of the ticket answers as
//! the sender (another subnet, an address that changed), each item is fetched by id through
//! them, from the sender at the address it registered there or from other hosts.
//!
//! Each item goes through the same download job, progress bar and result lines as
//! `peer --download`; once it is in place, `receive` tells the sender so (a `Received`
//! request), which is how `send` knows to exit.

use std::net::SocketAddr;

use anyhow::Context;
use p2p_peer::{DownloadRequest, IndexSpec, IndexState, Peer, PeerConfig, PeerHandle};
use p2p_protocol::ticket::looks_like_ticket;
use p2p_protocol::{NodeId, Ticket, TicketItem};
use p2p_transport::Tls;
use tokio_util::sync::CancellationToken;

use crate::cli::{IdentityArgs, ReceiveArgs};
use crate::run::optional_index;
use crate::run::search::one_index;
use crate::trust::IndexTrust;

/// Where the receiving peer's chunk server listens: it shares nothing, so only this machine
/// can reach it, on a free port.
const RECEIVE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The folder, under the identity folder, of the identity `receive` uses for a ticket made by
/// this same identity (send and receive on one machine): a node never downloads from itself.
const SECOND_IDENTITY: &str = "receiver";

/// What `receive TICKET` does when the index given can't be reached.
const WITHOUT_INDEX: &str = "receiving from the ticket's sender alone";

/// What `receive TICKET` does when none of the ticket's index servers can be reached.
const WITHOUT_TICKET_INDEXES: &str =
    "leaving out the index servers the ticket names; receiving from its sender alone";

/// What the argument names.
enum Wanted {
    Ticket(Ticket),
    /// An id or a prefix, looked up at the index.
    Id(String),
}

/// Runs `receive`.
pub async fn run(args: &ReceiveArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let use_index = !args.index.servers.is_empty()
        || args.index.auto_discover
        || args.index.dns_sd.domain.is_some();
    let wanted = if looks_like_ticket(&args.ticket) {
        Wanted::Ticket(args.ticket.parse().context("cannot read the ticket")?)
    } else if use_index {
        Wanted::Id(args.ticket.trim().to_owned())
    } else {
        anyhow::bail!(
            "\"{}\" is not a ticket (a ticket starts with \"p2p1\" or \"p2p2\"): copy the whole \
             line `send` printed, or give --server, --auto-discover or --dns-sd-domain to receive \
             by id",
            p2p_protocol::printable(&args.ticket)
        );
    };
    let sender = match &wanted {
        Wanted::Ticket(ticket) => Some(ticket.node_id),
        Wanted::Id(_) => None,
    };
    let tls = tls(&args.identity, sender)?;
    let mut trust = IndexTrust::load(&args.identity, args.index.server_id)?;
    // A ticket needs no index (it only adds hosts): one that can't be reached is a warning.
    // An id is looked up there: then it must answer.
    let found = match &wanted {
        Wanted::Ticket(_) => {
            optional_index::find(&args.index, &trust, &tls, WITHOUT_INDEX, &shutdown).await
        }
        Wanted::Id(_) => one_index(&args.index, &trust, &tls, &shutdown).await?,
    };
    let given: Vec<IndexSpec> = found
        .map(|(addr, claimed)| IndexSpec::at(addr).expecting(trust.expect_for(addr, claimed)))
        .into_iter()
        .collect();
    let named = match &wanted {
        Wanted::Ticket(ticket) => ticket_indexes(ticket, &given),
        Wanted::Id(_) => Vec::new(),
    };
    crate::run::peer::create_out_dir(&args.out)
        .await
        .with_context(|| format!("cannot receive {}", p2p_protocol::printable(&args.ticket)))?;
    let config = PeerConfig {
        listen_addr: RECEIVE_LISTEN,
        indexes: given.clone(),
        workers: usize::from(args.workers),
        // It exits once done: announcing what it fetched would only be withdrawn at once.
        share_downloads: false,
        ..PeerConfig::default()
    };
    let peer = match &wanted {
        // Only the ticket's indexes: none answering is a warning, whatever the cause.
        Wanted::Ticket(_) if given.is_empty() && !named.is_empty() => {
            let config = PeerConfig {
                indexes: named,
                ..config
            };
            optional_index::start_named(config, tls, WITHOUT_TICKET_INDEXES).await?
        }
        Wanted::Ticket(_) => {
            let peer = optional_index::start(config, tls, &trust, WITHOUT_INDEX).await?;
            // Beside the user's own: registered in the background, asked as soon as added.
            for spec in named {
                peer.add_index(spec);
            }
            peer
        }
        Wanted::Id(_) => Peer::start(config, tls)
            .await
            .map_err(|e| trust.explain(e))?,
    };
    // Remembered: the index the user gave, never one a ticket named.
    if let Some(given) = given.first()
        && let Some(seen) = proved_id(&peer, given.addr)
    {
        trust.remember(given.addr, seen)?;
    }
    let result = fetch(&peer, &wanted, args, &shutdown).await;
    peer.shutdown().await;
    result
}

/// Downloads every item, one job each, in the ticket's order.
async fn fetch(
    peer: &PeerHandle,
    wanted: &Wanted,
    args: &ReceiveArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let ticket = match wanted {
        Wanted::Id(id) => {
            let request = DownloadRequest::by_id(id);
            return crate::run::peer::download(peer, id, request, &args.out, args.json, shutdown)
                .await;
        }
        Wanted::Ticket(ticket) => ticket,
    };
    let reach = peer.reach_node(&ticket.addrs, ticket.node_id);
    let sender = tokio::select! {
        reached = reach => match reached {
            // The indexes know where the sender registered, and who else has the items.
            Err(err) if !peer.indexes().is_empty() => {
                note!(
                    "warning: cannot reach the sender {} at the ticket's {} ({}); looking for \
                     it through the index servers {}",
                    ticket.node_id.fmt_short(),
                    match ticket.addrs.len() {
                        1 => "address",
                        _ => "addresses",
                    },
                    crate::errors::one_line(&err.into()),
                    index_list(peer)
                );
                return fetch_through_indexes(peer, ticket, args, shutdown).await;
            }
            reached => reached.with_context(|| unreachable(ticket)),
        },
        () = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    let sender = match sender {
        Ok(sender) => sender,
        Err(err) => {
            if args.json {
                // Scripts learn of each item's end from its own event.
                for item in &ticket.items {
                    crate::json::emit(&crate::json::Event::Failed {
                        id: item.id_text(),
                        name: None,
                        error: crate::errors::one_line(&err),
                    });
                }
            }
            return Err(err);
        }
    };
    for item in &ticket.items {
        let id = item.id_text();
        let request = DownloadRequest {
            id: id.clone(),
            pinned_hosts: vec![(sender, ticket.node_id)],
            ..DownloadRequest::default()
        };
        let shown = shown(item, args.json);
        crate::run::peer::download(peer, &shown, request, &args.out, args.json, shutdown).await?;
        tokio::select! {
            () = confirm(peer, sender, ticket.node_id, item) => {}
            () = shutdown.cancelled() => {}
        }
    }
    Ok(())
}

/// Fetches every item by its id through the peer's index servers, with no host pinned: the
/// sender's address the ticket gave did not answer. The sender hears of each item at the
/// address the indexes list for its node id, if they list one.
async fn fetch_through_indexes(
    peer: &PeerHandle,
    ticket: &Ticket,
    args: &ReceiveArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut sender: Option<Option<SocketAddr>> = None;
    for item in &ticket.items {
        let id = item.id_text();
        let shown = shown(item, args.json);
        let request = DownloadRequest::by_id(&id);
        crate::run::peer::download(peer, &shown, request, &args.out, args.json, shutdown).await?;
        // Asked once, after the first item: the sender is registered by then if at all.
        if sender.is_none() {
            sender = Some(registered_at(peer, ticket.node_id).await);
        }
        if let Some(Some(addr)) = sender {
            tokio::select! {
                () = confirm(peer, addr, ticket.node_id, item) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
    Ok(())
}

/// The address the indexes list for `node`, if any.
async fn registered_at(peer: &PeerHandle, node: NodeId) -> Option<SocketAddr> {
    match peer.network_peers().await {
        Ok((peers, _)) => peers.iter().find(|p| p.node_id == node).map(|p| p.addr),
        Err(err) => {
            tracing::debug!(%err, "cannot ask the indexes where the sender is");
            None
        }
    }
}

/// How an item is named in progress lines and errors: a `failed` event names it by its id
/// alone, even before the job resolves it.
fn shown(item: &TicketItem, json: bool) -> String {
    let id = item.id_text();
    match item {
        _ if json => id,
        TicketItem::File(_) => format!("file {id}"),
        TicketItem::Folder(_) => format!("folder {id}"),
    }
}

/// The index servers the ticket names that are not among `given` (the user's), each pinned to
/// the node id the ticket names for it.
fn ticket_indexes(ticket: &Ticket, given: &[IndexSpec]) -> Vec<IndexSpec> {
    if !ticket.indexes.is_empty() {
        let listed: Vec<String> = ticket
            .indexes
            .iter()
            .map(|i| format!("{} ({})", i.addr, i.node_id.fmt_short()))
            .collect();
        tracing::info!(indexes = %listed.join(", "), "the ticket names index servers");
    }
    ticket
        .indexes
        .iter()
        .filter(|i| !given.iter().any(|g| g.addr == i.addr))
        .map(|i| IndexSpec::at(i.addr).expecting(Some(i.node_id)))
        .collect()
}

/// `127.0.0.1:8000, 10.0.0.2:8000`: the indexes this peer uses.
fn index_list(peer: &PeerHandle) -> String {
    let addrs: Vec<String> = peer.indexes().iter().map(|i| i.addr.to_string()).collect();
    addrs.join(", ")
}

/// The node id the index at `addr` proved, if this peer is registered there.
fn proved_id(peer: &PeerHandle, addr: SocketAddr) -> Option<NodeId> {
    peer.indexes()
        .into_iter()
        .find(|i| i.addr == addr && i.state == IndexState::Registered)
        .and_then(|i| i.node_id)
}

/// Tells the sender this item is here whole, so that it stops waiting for it however it
/// arrived (it may have sent none of it: already on disk, resumed, or fetched from other
/// hosts). A failure changes nothing here: the item is in place, and a sender built before
/// `Received` still counts the chunks it sent.
async fn confirm(peer: &PeerHandle, sender: SocketAddr, node: NodeId, item: &TicketItem) {
    let id = match item {
        TicketItem::File(id) => *id,
        TicketItem::Folder(id) => p2p_protocol::FileId(id.0),
    };
    if let Err(err) = peer.confirm_received(sender, node, id).await {
        tracing::debug!(%err, "could not confirm receipt to the sender");
    }
}

/// What failed when no address of the ticket answers as its sender (the cause names the
/// address that failed most tellingly).
fn unreachable(ticket: &Ticket) -> String {
    let tried = match ticket.addrs.len() {
        1 => String::new(),
        n => format!(" at any of its {n} addresses"),
    };
    format!(
        "cannot reach the sender {}{tried} (is `send` still running, and this machine on its \
         network?)",
        ticket.node_id.fmt_short(),
    )
}

/// This machine's peer identity, or, when that is the sender's own (send and receive on one
/// machine with one identity folder), a second one kept beside it.
fn tls(identity: &IdentityArgs, sender: Option<NodeId>) -> anyhow::Result<Tls> {
    let tls = crate::run::id::client_tls(identity)?;
    if sender != Some(tls.node_id()) {
        return Ok(tls);
    }
    let second = IdentityArgs {
        identity_dir: Some(crate::run::id::dir(identity)?.join(SECOND_IDENTITY)),
    };
    crate::run::id::client_tls(&second)
}
