//! Which index servers `p2p-transfer peer` registers with: every one given (`--server`,
//! repeatable), or every one that answers over mDNS (`--auto-discover`), or those a manifest
//! file names; and every one published in DNS (`--dns-sd-domain`); then every index this node
//! remembers (`known-indexes`, beside its key), so a peer finds the indexes it used before
//! even where mDNS can't reach them.
//!
//! Each index must prove a node id when one is known: pinned (`--server-id`, one server
//! only), named by the manifest file, remembered for its address, or claimed over mDNS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use p2p_peer::IndexSpec;
use p2p_protocol::manifest_file::AnyManifestFile;
use tokio_util::sync::CancellationToken;

use crate::cli::PeerArgs;
use crate::discovery::{Finder, ServerOrigin};
use crate::trust::IndexTrust;

/// The indexes a peer starts with, and how the first was found (for `status`).
pub struct Chosen {
    /// In order: the given (or found, or named) ones first, then the remembered ones.
    pub specs: Vec<IndexSpec>,
    /// How the first index was found; updated when mDNS finds it again.
    pub origin: Arc<Mutex<ServerOrigin>>,
    /// Indexes used but not remembered: the mDNS answers besides the chosen one (anyone may
    /// answer mDNS; remembering them would make a passing rogue a permanent index).
    pub passing: Vec<SocketAddr>,
}

/// The index servers for `args`, starting from `defaults` (what the flags alone give: the
/// default server, or none with `--from`).
pub async fn choose(
    args: &PeerArgs,
    defaults: Vec<IndexSpec>,
    manifest_file: Option<&AnyManifestFile>,
    trust: &mut IndexTrust,
    tls: &p2p_transport::Tls,
    shutdown: &CancellationToken,
) -> anyhow::Result<Chosen> {
    if args.server_id.is_some() && args.servers.len() > 1 {
        anyhow::bail!("--server-id names the id of one index server; give one --server with it");
    }
    let mut origin = Arc::new(Mutex::new(ServerOrigin::Flag));
    let mut specs: Vec<IndexSpec> = Vec::new();
    let mut passing = Vec::new();
    if !args.servers.is_empty() {
        for server in &args.servers {
            let addr = server.resolve_interruptible(shutdown).await?;
            specs.push(IndexSpec::at(addr).expecting(trust.expect_for(addr, None)));
        }
    } else if args.auto_discover {
        let mut finder = Finder::new(args, trust.preference(), tls.clone());
        if args.json {
            finder = finder.announcing_on_stderr();
        }
        // With a pinned id or a name, only the one chosen.
        let all = args.server_id.is_none() && args.server_name.is_none();
        let (chosen, others) = finder.find_every(true, all).await?;
        origin = finder.origin.clone();
        let claimed =
            |s: &p2p_discovery::FoundServer| s.server_id.as_deref().and_then(|id| id.parse().ok());
        let addr = chosen.addr();
        specs.push(IndexSpec {
            addr,
            node_id: trust.expect_for(addr, claimed(&chosen)),
            // Only the chosen one is followed when it moves: the others are plain links.
            rediscover: Some(Arc::new(finder)),
        });
        if all {
            for other in &others {
                let addr = other.addr();
                let id = trust.remembered_id(addr).or(claimed(other));
                specs.push(IndexSpec::at(addr).expecting(id));
                passing.push(addr);
            }
        }
    } else if let Some(doc) = manifest_file
        && !doc.servers().is_empty()
    {
        for (at, listed) in doc.servers().iter().enumerate() {
            // The first one is pinned as before (a `--server-id` wins); the others must prove
            // the id the file names, or the one remembered.
            let id = match (listed.node_id, &args.download) {
                (Some(id), Some(path)) if at == 0 => {
                    trust.pin_from(id, listed.addr, path.as_ref())?;
                    trust.expect_for(listed.addr, None)
                }
                (Some(id), Some(path)) => {
                    trust.check_named(id, listed.addr, path.as_ref())?;
                    Some(id)
                }
                (None, _) if at == 0 => trust.expect_for(listed.addr, None),
                (named, _) => named.or_else(|| trust.remembered_id(listed.addr)),
            };
            specs.push(IndexSpec::at(listed.addr).expecting(id));
        }
    } else {
        specs = defaults
            .into_iter()
            .map(|spec| {
                let id = trust.expect_for(spec.addr, None);
                spec.expecting(id)
            })
            .collect();
    }
    // Those published in DNS come on top of any other source.
    match crate::dns_sd::find(&args.dns_sd).await {
        Ok(found) => {
            for candidate in found {
                let addr = candidate.addr;
                if !specs.iter().any(|s| s.addr == addr) {
                    // Not `--server-id`'s: that names the one `--server`.
                    let id = trust.remembered_id(addr).or(candidate.claimed);
                    specs.push(IndexSpec::at(addr).expecting(id));
                }
            }
        }
        Err(err) if specs.is_empty() => return Err(err),
        Err(err) => note!("warning: {}", crate::errors::one_line(&err)),
    }
    // A peer that uses an index at all also tries every one it remembers.
    if !specs.is_empty() && !args.no_known_indexes {
        for (addr, id) in trust.remembered() {
            if !specs.iter().any(|s| s.addr == addr) {
                specs.push(IndexSpec::at(addr).expecting(Some(id)));
            }
        }
    }
    Ok(Chosen {
        specs,
        origin,
        passing,
    })
}

/// The address of the first index, if any (what the JSON `listening` event and the web
/// status name as "the" index).
pub fn first(specs: &[IndexSpec]) -> Option<SocketAddr> {
    specs.first().map(|s| s.addr)
}
