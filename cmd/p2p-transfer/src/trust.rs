//! Which index server this node trusts: the one pinned with `--server-id`, or else the one it
//! met before at that address (`known-indexes` in the identity folder, trust on first use, as
//! SSH does), or else whichever answers, which it then remembers.
//!
//! The id comes from the TLS handshake, never from a message or the mDNS TXT record (which
//! only helps choose among several servers: a pinned or remembered id wins over name order).

use std::net::SocketAddr;

use anyhow::Context;
use p2p_discovery::FoundServer;
use p2p_identity::KnownIndexes;
use p2p_peer::PeerError;
use p2p_protocol::{NodeId, ProtocolError};

use crate::cli::IdentityArgs;

/// The index servers this node trusts, and the one pinned for this run.
#[derive(Debug)]
pub struct IndexTrust {
    known: KnownIndexes,
    pinned: Option<NodeId>,
    /// Where the pinned id came from, for messages: "given with --server-id", say.
    pinned_by: String,
}

/// Which mDNS answers a node prefers: the pinned id only, or else any id it has met.
#[derive(Clone, Debug, Default)]
pub struct Preference {
    pinned: Option<NodeId>,
    known: Vec<NodeId>,
}

impl IndexTrust {
    /// The list kept with the identity of `identity`, and `pinned` (`--server-id`).
    pub fn load(identity: &IdentityArgs, pinned: Option<NodeId>) -> anyhow::Result<Self> {
        let known = KnownIndexes::load(&crate::run::id::dir(identity)?)?;
        Ok(Self {
            known,
            pinned,
            pinned_by: "given with --server-id".to_owned(),
        })
    }

    /// Pins `id`, which `source` (a manifest file) names for the index at `addr`, unless
    /// `--server-id` pinned one already (the user's word wins). A file can't re-key an index
    /// this node already knows at that address: that is an error, accepted only with
    /// `--server-id`.
    pub fn pin_from(
        &mut self,
        id: NodeId,
        addr: SocketAddr,
        source: &std::path::Path,
    ) -> anyhow::Result<()> {
        if self.pinned.is_some() {
            return Ok(());
        }
        self.check_named(id, addr, source)?;
        self.pinned = Some(id);
        self.pinned_by = format!("named in {}", source.display());
        Ok(())
    }

    /// Checks that `source` (a manifest file) naming the index at `addr` as `id` does not
    /// re-key an index this node knows at that address.
    pub fn check_named(
        &self,
        id: NodeId,
        addr: SocketAddr,
        source: &std::path::Path,
    ) -> anyhow::Result<()> {
        if let Some(known) = self.known.get(addr)
            && known != id
        {
            anyhow::bail!(
                "{} names the index server at {addr} as {id}, but this peer knows it as {known}                  (remembered in {}); if the index really has a new key, check its id on its                  machine (`p2p-transfer id --server`) and accept it with --server-id {id}",
                source.display(),
                self.known.path().display()
            );
        }
        Ok(())
    }

    /// Every index this node remembers, with the id each proved.
    pub fn remembered(&self) -> Vec<(SocketAddr, NodeId)> {
        self.known.entries().collect()
    }

    /// The id remembered for the index at `addr`.
    pub fn remembered_id(&self, addr: SocketAddr) -> Option<NodeId> {
        self.known.get(addr)
    }

    /// The node id the index at `addr` must show: the pinned one, else the one remembered for
    /// that address, else the one it `claimed` in mDNS (a claim the handshake must then
    /// prove, so a rogue can't borrow a known index's id to be chosen).
    pub fn expect_for(&self, addr: SocketAddr, claimed: Option<NodeId>) -> Option<NodeId> {
        self.pinned.or_else(|| self.known.get(addr)).or(claimed)
    }

    /// Which mDNS answers this node prefers.
    pub fn preference(&self) -> Preference {
        Preference {
            pinned: self.pinned,
            known: self.known.ids().collect(),
        }
    }

    /// Remembers that the index at `addr` proved `seen`, if that is news: the first meeting
    /// (trust on first use), or a new id accepted with `--server-id`. Returns what to tell
    /// the user.
    pub fn remember(&mut self, addr: SocketAddr, seen: NodeId) -> anyhow::Result<Option<String>> {
        let before = self.known.get(addr);
        if before == Some(seen) {
            return Ok(None);
        }
        self.known
            .remember(addr, seen)
            .context("cannot remember the index server")?;
        Ok(Some(match before {
            None => format!(
                "remembered index server {addr} as {seen} (in {})",
                self.known.path().display()
            ),
            Some(old) => format!(
                "index server {addr} is now remembered as {seen} (was {old}), as --server-id says"
            ),
        }))
    }

    /// `err`, with what to do about it when the index showed another node id than expected.
    pub fn explain(&self, err: PeerError) -> anyhow::Error {
        let PeerError::IndexUnreachable {
            addr,
            cause: ProtocolError::WrongNode { expected, got },
        } = &err
        else {
            return err.into();
        };
        let why = if self.pinned == Some(*expected) {
            format!("the id {}", self.pinned_by)
        } else if self.known.get(*addr) == Some(*expected) {
            format!("the id remembered in {}", self.known.path().display())
        } else {
            "the id it claimed over mDNS".to_owned()
        };
        anyhow::anyhow!(
            "refused the index server at {addr}: it proved node id {got}, not {expected} ({why}); \
             someone else may be answering at that address. If the index really has a new key, \
             check its id on its machine (`p2p-transfer id --server`) and accept it with \
             --server-id {got}"
        )
    }
}

impl Preference {
    /// Whether an mDNS answer claims an id this node trusts.
    pub fn prefers(&self, found: &FoundServer) -> bool {
        let Some(claimed) = found
            .server_id
            .as_deref()
            .and_then(|id| id.parse::<NodeId>().ok())
        else {
            return false;
        };
        match self.pinned {
            Some(pinned) => pinned == claimed,
            None => self.known.contains(&claimed),
        }
    }

    /// With `--server-id`, the chosen mDNS answer must claim that id; otherwise any will do.
    pub fn check_choice(&self, chosen: &FoundServer, others: &[FoundServer]) -> anyhow::Result<()> {
        match self.pinned {
            Some(pinned) if !self.prefers(chosen) => {
                let answered: Vec<String> = std::iter::once(chosen)
                    .chain(others)
                    .map(|s| {
                        format!(
                            "{:?} (id {})",
                            s.instance,
                            s.server_id.as_deref().unwrap_or("none")
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "no index server with id {pinned} answered over mDNS (answered: {}); \
                     check the id, or give its address with --server",
                    answered.join(", ")
                )
            }
            _ => Ok(()),
        }
    }
}
