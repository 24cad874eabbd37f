//! [`Index`]: who is registered and which files they host. Pure state, no I/O and no clock of
//! its own: every method that cares about time takes `now`, so expiry is unit-tested with
//! synthetic instants and uses only monotonic time.
//!
//! # Budgets
//! Every manifest is stored once per file id, compactly ([`StoredManifest`]), and its cost in
//! bytes is accounted: the whole index, the peers of each source address and each peer have a
//! budget ([`IndexLimits`]), and an `AddFile` that would pass one is refused with
//! `limit_exceeded` before anything is stored.
//!
//! # Work per call
//! No call does work proportional to the whole index except [`Index::expire`] (once per reaper
//! period, proportional to the peers) and a search, which [`Index::search_step`] cuts into
//! slices so the caller can let go of its lock between them. Listings read only the entries
//! they return, from maps kept in the order they are listed in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_protocol::{
    ErrorCode, FileId, FileManifest, FileSummary, IdPrefix, MAX_HOSTS_PER_LOOKUP, MAX_LIST_ENTRIES,
    ManifestError, NodeId, PeerId, PeerSummary,
};

use crate::config::{MIB, ServerConfig};
use crate::hosts::{self, Candidate};
use crate::rate::RateLimit;
use crate::stored::{HOST_OVERHEAD, StoredManifest};

/// Most candidates an `ambiguous_prefix` error names.
const AMBIGUOUS_SHOWN: usize = 5;
/// Most matches an `ambiguous_prefix` error counts (it then says "1000+").
const AMBIGUOUS_COUNTED: usize = 999;

/// Why an index operation was refused. Each maps to an [`ErrorCode`] on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// Not registered (never, expired, or the server restarted).
    #[error("peer {0} is not registered; register again")]
    UnknownPeer(PeerId),
    /// Registered, but by another node than the one asking.
    #[error("peer {0} was registered by another node; only that node may change it")]
    Forbidden(PeerId),
    /// The manifest is inconsistent.
    #[error("invalid manifest: {0}")]
    InvalidManifest(ManifestError),
    /// A cap from [`crate::ServerConfig`] was reached.
    #[error("{0}")]
    LimitExceeded(String),
    /// No file matches.
    #[error("no file matches {0}")]
    UnknownFile(String),
    /// Several files match the prefix.
    #[error("{prefix} matches {count} files: {shown}; type more characters")]
    AmbiguousPrefix {
        /// The prefix typed.
        prefix: String,
        /// How many matched, e.g. `2`, or `1000+` past the count limit.
        count: String,
        /// Some of the matching ids, comma-separated.
        shown: String,
    },
}

/// The cause is in the text only (not also `source()`), so it is printed once.
impl From<ManifestError> for IndexError {
    fn from(err: ManifestError) -> Self {
        IndexError::InvalidManifest(err)
    }
}

impl IndexError {
    /// The code sent in the `Error` reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            IndexError::UnknownPeer(_) => ErrorCode::UnknownPeer,
            IndexError::Forbidden(_) => ErrorCode::Forbidden,
            IndexError::InvalidManifest(_) => ErrorCode::InvalidManifest,
            IndexError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            IndexError::UnknownFile(_) => ErrorCode::UnknownFile,
            IndexError::AmbiguousPrefix { .. } => ErrorCode::AmbiguousPrefix,
        }
    }
}

/// A registered peer.
#[derive(Debug)]
struct PeerEntry {
    /// The node that registered it (from its TLS handshake): the only one that may change it.
    node: NodeId,
    addr: SocketAddr,
    /// Where the registration came from, for the per-address caps and for choosing hosts.
    source: IpAddr,
    files: BTreeSet<FileId>,
    last_seen: Instant,
    /// When it registered: long-lived hosts are preferred in `Found`.
    registered: Instant,
    /// Bytes charged to it: the full cost of every file it hosts, plus the host link.
    charged: usize,
}

/// A file and who hosts it.
#[derive(Debug)]
struct FileEntry {
    manifest: Arc<StoredManifest>,
    hosts: BTreeSet<PeerId>,
}

/// What the peers of one source address hold.
#[derive(Debug, Default)]
struct SourceUsage {
    peers: usize,
    bytes: usize,
}

/// Files in listing order: by name, then id.
type NameKey = (Arc<str>, FileId);

/// A lookup's answer.
#[derive(Clone, Debug)]
pub struct Found {
    /// Full id.
    pub file_id: FileId,
    /// The registered manifest.
    pub manifest: Arc<StoredManifest>,
    /// Some of its hosts, chosen as [`crate::hosts`] describes.
    pub hosts: Vec<p2p_protocol::HostInfo>,
}

/// Caps the index enforces.
#[derive(Clone, Copy, Debug)]
pub struct IndexLimits {
    /// Registered peers at once.
    pub max_peers: usize,
    /// Files per peer.
    pub max_files_per_peer: usize,
    /// Registrations made from one source address at once.
    pub max_peers_per_ip: usize,
    /// Bytes of manifests stored in all.
    pub max_bytes: usize,
    /// Bytes of manifests charged to the peers of one source address.
    pub max_bytes_per_ip: usize,
    /// Bytes of manifests charged to one peer.
    pub max_bytes_per_peer: usize,
    /// Registrations one source address may make per second (burst: `max_peers_per_ip`).
    pub register_rate_per_ip: u32,
}

impl From<&ServerConfig> for IndexLimits {
    fn from(config: &ServerConfig) -> Self {
        Self {
            max_peers: config.max_peers,
            max_files_per_peer: config.max_files_per_peer,
            max_peers_per_ip: config.max_peers_per_ip,
            max_bytes: config.max_index_bytes,
            max_bytes_per_ip: config.max_index_bytes_per_ip,
            max_bytes_per_peer: config.max_index_bytes_per_peer,
            register_rate_per_ip: config.register_rate_per_ip,
        }
    }
}

impl Default for IndexLimits {
    /// The limits of [`ServerConfig::default`].
    fn default() -> Self {
        Self::from(&ServerConfig::default())
    }
}

/// A search in progress: [`Index::search_step`] advances it a slice at a time.
#[derive(Debug)]
pub struct Search {
    words: Vec<String>,
    /// The last name looked at; the next slice starts after it.
    after: Option<NameKey>,
    files: Vec<FileSummary>,
    total: u64,
}

impl Search {
    /// A search for files whose name contains every word of `query`, ignoring case.
    pub fn new(query: &str) -> Self {
        Self {
            words: query.split_whitespace().map(str::to_lowercase).collect(),
            after: None,
            files: Vec::new(),
            total: 0,
        }
    }

    /// The first [`MAX_LIST_ENTRIES`] matches in listing order, and how many matched.
    pub fn finish(self) -> (Vec<FileSummary>, u64) {
        (self.files, self.total)
    }
}

/// The whole soft state of the server; peers rebuild it after a restart.
#[derive(Debug)]
pub struct Index {
    /// By id, which is the order `ListPeers` uses.
    peers: BTreeMap<PeerId, PeerEntry>,
    /// Each node's one registration.
    by_node: HashMap<NodeId, PeerId>,
    by_source: HashMap<IpAddr, SourceUsage>,
    files: BTreeMap<FileId, FileEntry>,
    /// Every file in listing order, sharing the stored manifests.
    names: BTreeMap<NameKey, Arc<StoredManifest>>,
    /// Bytes accounted for everything in `files` (each manifest once) and every host link.
    stored_bytes: usize,
    registrations: RateLimit,
    limits: IndexLimits,
}

impl Index {
    /// An empty index.
    pub fn new(limits: IndexLimits) -> Self {
        Self {
            peers: BTreeMap::new(),
            by_node: HashMap::new(),
            by_source: HashMap::new(),
            files: BTreeMap::new(),
            names: BTreeMap::new(),
            stored_bytes: 0,
            registrations: RateLimit::new(
                limits.max_peers_per_ip.try_into().unwrap_or(u32::MAX),
                limits.register_rate_per_ip,
            ),
            limits,
        }
    }

    /// Registers node `node`'s peer, reachable at `addr`; returns its id. A node holds one
    /// registration: its previous one, if any, ends first (with its files), as when the peer
    /// restarted before its old registration expired.
    pub fn register(
        &mut self,
        addr: SocketAddr,
        source: IpAddr,
        node: NodeId,
        now: Instant,
    ) -> Result<PeerId, IndexError> {
        let source = source.to_canonical();
        if let Some(&old) = self.by_node.get(&node) {
            self.remove_peer(old);
        }
        if self.peers.len() >= self.limits.max_peers {
            return Err(IndexError::LimitExceeded(format!(
                "the index already holds its maximum of {} peers",
                self.limits.max_peers
            )));
        }
        let held = self.by_source.get(&source).map_or(0, |u| u.peers);
        if held >= self.limits.max_peers_per_ip {
            return Err(IndexError::LimitExceeded(format!(
                "your address already holds the maximum of {} registrations",
                self.limits.max_peers_per_ip
            )));
        }
        if !self.registrations.try_take(source, now) {
            return Err(IndexError::LimitExceeded(format!(
                "your address registers too often (at most {} a second after the first {}); \
                 try again in a few seconds",
                self.limits.register_rate_per_ip, self.limits.max_peers_per_ip
            )));
        }
        self.by_source.entry(source).or_default().peers += 1;
        let peer_id = loop {
            let id = PeerId(rand::random());
            if !self.peers.contains_key(&id) {
                break id;
            }
        };
        self.by_node.insert(node, peer_id);
        self.peers.insert(
            peer_id,
            PeerEntry {
                node,
                addr,
                source,
                files: BTreeSet::new(),
                last_seen: now,
                registered: now,
                charged: 0,
            },
        );
        Ok(peer_id)
    }

    /// The registration `peer_id`, if `node` made it.
    fn authenticate(
        peers: &mut BTreeMap<PeerId, PeerEntry>,
        peer_id: PeerId,
        node: NodeId,
    ) -> Result<&mut PeerEntry, IndexError> {
        let entry = peers
            .get_mut(&peer_id)
            .ok_or(IndexError::UnknownPeer(peer_id))?;
        if entry.node != node {
            return Err(IndexError::Forbidden(peer_id));
        }
        Ok(entry)
    }

    /// Records a heartbeat that arrived at `now`. A heartbeat applied after a later one
    /// (requests from several connections) never moves the time back.
    pub fn heartbeat(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        now: Instant,
    ) -> Result<(), IndexError> {
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        Ok(())
    }

    /// Adds a hosted file after validating its manifest and checking the budgets. Idempotent.
    pub fn add_file(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        manifest: FileManifest,
        now: Instant,
    ) -> Result<FileId, IndexError> {
        let limits = self.limits;
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        manifest.validate()?;
        let file_id = manifest.id();
        if peer.files.contains(&file_id) {
            return Ok(file_id);
        }
        if peer.files.len() >= limits.max_files_per_peer {
            return Err(IndexError::LimitExceeded(format!(
                "a peer may host at most {} files",
                limits.max_files_per_peer
            )));
        }
        // Each host is charged the whole manifest; the index stores it once.
        let stored = self.files.get(&file_id).map(|f| f.manifest.cost());
        let charge = stored.unwrap_or_else(|| StoredManifest::cost_of(&manifest)) + HOST_OVERHEAD;
        let growth = if stored.is_some() {
            HOST_OVERHEAD
        } else {
            charge
        };
        let used = |what: &str, max: usize, used: usize| {
            IndexError::LimitExceeded(format!(
                "{what} may store at most {} of manifests at the index \
                 (it stores {}, this file needs {})",
                bytes(max),
                bytes(used),
                bytes(charge)
            ))
        };
        if peer.charged + charge > limits.max_bytes_per_peer {
            return Err(used("a peer", limits.max_bytes_per_peer, peer.charged));
        }
        let source = self.by_source.entry(peer.source).or_default();
        if source.bytes + charge > limits.max_bytes_per_ip {
            return Err(used("your address", limits.max_bytes_per_ip, source.bytes));
        }
        if self.stored_bytes + growth > limits.max_bytes {
            return Err(IndexError::LimitExceeded(format!(
                "the index is full: it stores at most {} of manifests (this file needs {}); \
                 try again later",
                bytes(limits.max_bytes),
                bytes(growth)
            )));
        }
        peer.files.insert(file_id);
        peer.charged += charge;
        source.bytes += charge;
        self.stored_bytes += growth;
        let file = self.files.entry(file_id).or_insert_with(|| {
            let manifest = Arc::new(StoredManifest::new(manifest));
            self.names
                .insert((manifest.name().clone(), file_id), manifest.clone());
            FileEntry {
                manifest,
                hosts: BTreeSet::new(),
            }
        });
        file.hosts.insert(peer_id);
        Ok(file_id)
    }

    /// Stops listing `peer_id` as a host of `file_id`. Harmless if it was not one.
    pub fn remove_file(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        file_id: &FileId,
    ) -> Result<(), IndexError> {
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        if peer.files.remove(file_id) {
            let charge = self
                .files
                .get(file_id)
                .map_or(0, |f| f.manifest.cost() + HOST_OVERHEAD);
            peer.charged -= charge;
            if let Some(source) = self.by_source.get_mut(&peer.source) {
                source.bytes -= charge;
            }
            self.drop_host(file_id, peer_id);
        }
        Ok(())
    }

    /// Removes a peer and its files.
    pub fn unregister(&mut self, peer_id: PeerId, node: NodeId) -> Result<(), IndexError> {
        Self::authenticate(&mut self.peers, peer_id, node)?;
        self.remove_peer(peer_id);
        Ok(())
    }

    fn remove_peer(&mut self, peer_id: PeerId) -> Option<PeerEntry> {
        let entry = self.peers.remove(&peer_id)?;
        self.by_node.remove(&entry.node);
        if let Some(source) = self.by_source.get_mut(&entry.source) {
            source.peers -= 1;
            source.bytes -= entry.charged;
            if source.peers == 0 {
                self.by_source.remove(&entry.source);
            }
        }
        for file_id in &entry.files {
            self.drop_host(file_id, peer_id);
        }
        Some(entry)
    }

    fn drop_host(&mut self, file_id: &FileId, peer_id: PeerId) {
        let Some(file) = self.files.get_mut(file_id) else {
            return;
        };
        if !file.hosts.remove(&peer_id) {
            return;
        }
        self.stored_bytes -= HOST_OVERHEAD;
        if file.hosts.is_empty() {
            let cost = file.manifest.cost();
            let name = file.manifest.name().clone();
            self.files.remove(file_id);
            self.names.remove(&(name, *file_id));
            self.stored_bytes -= cost;
        }
    }

    /// Drops every peer whose last heartbeat is older than `timeout` at `now`; returns who was
    /// dropped. The caller passes as `now` the time up to which it has applied every request
    /// it received (see `backlog.rs`), so a heartbeat that arrived but was not yet applied
    /// can't get its peer dropped.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(PeerId, SocketAddr)> {
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.remove_peer(id).map(|p| (id, p.addr)))
            .collect()
    }

    /// Finds the one file whose id starts with `prefix`, with up to
    /// [`MAX_HOSTS_PER_LOOKUP`] of its hosts.
    pub fn lookup(&self, prefix: &IdPrefix) -> Result<Found, IndexError> {
        let (low, high) = prefix_bounds(prefix);
        let mut matches = self.files.range(low..=high);
        let Some((file_id, entry)) = matches.next() else {
            return Err(IndexError::UnknownFile(prefix.to_string()));
        };
        let others: Vec<FileId> = matches.take(AMBIGUOUS_COUNTED).map(|(id, _)| *id).collect();
        if !others.is_empty() {
            let mut ids = vec![file_id.fmt_short()];
            ids.extend(
                others
                    .iter()
                    .take(AMBIGUOUS_SHOWN - 1)
                    .map(FileId::fmt_short),
            );
            if others.len() >= AMBIGUOUS_SHOWN {
                ids.push("...".to_owned());
            }
            let more = if others.len() == AMBIGUOUS_COUNTED {
                "+"
            } else {
                ""
            };
            return Err(IndexError::AmbiguousPrefix {
                prefix: prefix.to_string(),
                count: format!("{}{more}", others.len() + 1),
                shown: ids.join(", "),
            });
        }
        let candidates = entry
            .hosts
            .iter()
            .filter_map(|id| {
                self.peers.get(id).map(|p| Candidate {
                    peer_id: *id,
                    node_id: p.node,
                    addr: p.addr,
                    source: p.source,
                    registered: p.registered,
                })
            })
            .collect();
        Ok(Found {
            file_id: *file_id,
            manifest: entry.manifest.clone(),
            hosts: hosts::choose(candidates, MAX_HOSTS_PER_LOOKUP, &mut rand::rng()),
        })
    }

    /// Up to [`MAX_LIST_ENTRIES`] files sorted by name then id, and the total count.
    pub fn list_files(&self) -> (Vec<FileSummary>, u64) {
        let files = self
            .names
            .iter()
            .take(MAX_LIST_ENTRIES)
            .map(|(key, manifest)| self.summary(key, manifest))
            .collect();
        (files, self.files.len() as u64)
    }

    fn summary(&self, (_, file_id): &NameKey, manifest: &StoredManifest) -> FileSummary {
        FileSummary {
            file_id: *file_id,
            name: manifest.name().to_string(),
            size: manifest.size(),
            hosts: self.files.get(file_id).map_or(0, |f| f.hosts.len() as u32),
            files: None,
            path: None,
        }
    }

    /// Files whose name contains every word (compared in lower case), like
    /// [`Index::list_files`], in one go. The server uses [`Index::search_step`] instead.
    pub fn search(&self, query: &str) -> (Vec<FileSummary>, u64) {
        let mut search = Search::new(query);
        while !self.search_step(&mut search, usize::MAX) {}
        search.finish()
    }

    /// Looks at up to `budget` more file names for `search`; true once it has looked at them
    /// all. Between steps the index may change: files added or removed meanwhile may or may
    /// not be counted, and nothing is counted twice (names are visited in order).
    pub fn search_step(&self, search: &mut Search, budget: usize) -> bool {
        let after = match &search.after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut last: Option<&NameKey> = None;
        for (seen, (key, manifest)) in self.names.range((after, Bound::Unbounded)).enumerate() {
            if seen == budget {
                search.after = last.cloned();
                return false;
            }
            let name = manifest.lower_name();
            if search.words.iter().all(|w| name.contains(w.as_str())) {
                search.total += 1;
                if search.files.len() < MAX_LIST_ENTRIES {
                    search.files.push(self.summary(key, manifest));
                }
            }
            last = Some(key);
        }
        true
    }

    /// Up to [`MAX_LIST_ENTRIES`] peers sorted by id, and the total count.
    pub fn list_peers(&self, now: Instant) -> (Vec<PeerSummary>, u64) {
        let peers = self
            .peers
            .iter()
            .take(MAX_LIST_ENTRIES)
            .map(|(id, p)| PeerSummary {
                peer_id: *id,
                node_id: p.node,
                addr: p.addr,
                files: p.files.len() as u32,
                last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
            })
            .collect();
        (peers, self.peers.len() as u64)
    }

    /// Registered peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Distinct files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes of manifests stored, as the budgets count them.
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    /// Bytes charged to the peers of `source`.
    pub fn stored_bytes_from(&self, source: IpAddr) -> usize {
        self.by_source
            .get(&source.to_canonical())
            .map_or(0, |u| u.bytes)
    }

    /// The limits this index enforces.
    pub fn limits(&self) -> &IndexLimits {
        &self.limits
    }

    /// Forgets rate-limit state that no longer limits anyone (the reaper calls this).
    pub fn prune(&mut self, now: Instant) {
        self.registrations.prune(now);
    }

    /// Recomputes every account from scratch and checks it against the running totals.
    #[cfg(test)]
    pub(crate) fn check_accounts(&self) {
        let stored: usize = self
            .files
            .values()
            .map(|f| f.manifest.cost() + f.hosts.len() * HOST_OVERHEAD)
            .sum();
        assert_eq!(stored, self.stored_bytes, "stored bytes");
        assert_eq!(self.names.len(), self.files.len(), "name index");
        let mut by_source: HashMap<IpAddr, usize> = HashMap::new();
        for peer in self.peers.values() {
            let charged: usize = peer
                .files
                .iter()
                .map(|id| self.files[id].manifest.cost() + HOST_OVERHEAD)
                .sum();
            assert_eq!(charged, peer.charged, "a peer's charge");
            *by_source.entry(peer.source).or_default() += charged;
        }
        for (ip, bytes) in by_source {
            assert_eq!(bytes, self.by_source[&ip].bytes, "{ip}'s charge");
        }
    }
}

/// `n` bytes for a message: "1.5 MiB", "12 KiB", "300 bytes".
fn bytes(n: usize) -> String {
    let unit = |n: usize, size: usize, name: &str| {
        let value = n as f64 / size as f64;
        if value.fract() == 0.0 {
            format!("{value:.0} {name}")
        } else {
            format!("{value:.1} {name}")
        }
    };
    if n >= MIB {
        unit(n, MIB, "MiB")
    } else if n >= 1024 {
        unit(n, 1024, "KiB")
    } else {
        format!("{n} bytes")
    }
}

/// The smallest and largest ids that start with `prefix`.
fn prefix_bounds(prefix: &IdPrefix) -> (FileId, FileId) {
    let pad = |c: char| {
        let mut s = prefix.as_str().to_owned();
        s.extend(std::iter::repeat_n(c, 64 - s.len()));
        s.parse::<FileId>().expect("IdPrefix holds only hex digits")
    };
    (pad('0'), pad('f'))
}

#[cfg(test)]
mod tests {
    use p2p_protocol::{CHUNK_SIZE, Sha256Hash};

    use super::*;

    const LIMITS: IndexLimits = IndexLimits {
        max_peers: 3,
        max_files_per_peer: 2,
        max_peers_per_ip: 64,
        max_bytes: 256 * MIB,
        max_bytes_per_ip: 64 * MIB,
        max_bytes_per_peer: 32 * MIB,
        register_rate_per_ip: 1,
    };

    fn manifest(name: &str) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: 1,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(name.as_bytes())],
        }
    }

    /// A node id no other test node has.
    fn fresh_node() -> NodeId {
        NodeId(rand::random())
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn peers_expire_only_after_the_timeout_without_heartbeats() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(15);
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, t0).unwrap();
        let b = index.register(addr(2), LOCAL, fresh_node(), t0).unwrap();
        let id = index.add_file(a, ta, manifest("f"), t0).unwrap();
        index
            .heartbeat(a, ta, t0 + Duration::from_secs(10))
            .unwrap();

        assert!(index.expire(t0 + timeout, timeout).is_empty());
        let dropped = index.expire(t0 + Duration::from_secs(16), timeout);
        assert_eq!(dropped, vec![(b, addr(2))]);
        assert_eq!(index.peer_count(), 1);

        let dropped = index.expire(t0 + Duration::from_secs(26), timeout);
        assert_eq!(dropped, vec![(a, addr(1))]);
        // Its file went with it.
        assert_eq!(index.file_count(), 0);
        assert!(index.lookup(&id.to_string().parse().unwrap()).is_err());
    }

    #[test]
    fn only_the_node_that_registered_changes_a_registration() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let tb = fresh_node();
        let b = index.register(addr(2), LOCAL, tb, now).unwrap();
        let id = index.add_file(a, ta, manifest("f"), now).unwrap();
        assert_eq!(index.remove_file(a, tb, &id), Err(IndexError::Forbidden(a)));
        assert_eq!(index.unregister(a, tb), Err(IndexError::Forbidden(a)));
        assert_eq!(index.heartbeat(a, tb, now), Err(IndexError::Forbidden(a)));
        assert_eq!(index.file_count(), 1);
        index.unregister(b, tb).unwrap();
        assert_eq!(index.heartbeat(b, tb, now), Err(IndexError::UnknownPeer(b)));
    }

    #[test]
    fn shared_files_list_every_host_and_survive_one_leaving() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let tb = fresh_node();
        let b = index.register(addr(2), LOCAL, tb, now).unwrap();
        let id = index.add_file(a, ta, manifest("f"), now).unwrap();
        assert_eq!(index.add_file(b, tb, manifest("f"), now).unwrap(), id);
        // Adding again is harmless.
        index.add_file(b, tb, manifest("f"), now).unwrap();
        let found = index.lookup(&id.to_string()[..8].parse().unwrap()).unwrap();
        assert_eq!(found.hosts.len(), 2);
        index.remove_file(a, ta, &id).unwrap();
        let found = index.lookup(&id.to_string().parse().unwrap()).unwrap();
        assert_eq!(
            found.hosts,
            vec![p2p_protocol::HostInfo {
                peer_id: b,
                addr: addr(2),
                node_id: tb,
            }]
        );
        let (files, total) = index.list_files();
        assert_eq!((files[0].hosts, total), (1, 1));
    }

    #[test]
    fn unique_prefix_resolves_and_unknown_is_reported() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let id = index.add_file(a, ta, manifest("f"), now).unwrap();
        let prefix: IdPrefix = id.to_string()[..6].parse().unwrap();
        let found = index.lookup(&prefix).unwrap();
        assert_eq!(
            (found.file_id, &*found.manifest.name().to_string()),
            (id, "f")
        );
        index.remove_file(a, ta, &id).unwrap();
        let err = index.lookup(&prefix).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownFile);
        assert!(err.to_string().contains(prefix.as_str()));
    }

    #[test]
    fn ambiguous_prefix_lists_candidates() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_peers: 10,
            max_files_per_peer: 100_000,
            max_peers_per_ip: 64,
            ..LIMITS
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        // Register files until two ids share a 6-character prefix (birthday bound: a few
        // thousand). Deterministic names, so the test is reproducible.
        let mut seen: HashMap<String, FileId> = HashMap::new();
        for i in 0.. {
            let id = index
                .add_file(a, ta, manifest(&format!("n{i}")), now)
                .unwrap();
            if let Some(other) = seen.insert(id.to_string()[..6].to_owned(), id) {
                let prefix: IdPrefix = id.to_string()[..6].parse().unwrap();
                let err = index.lookup(&prefix).unwrap_err();
                assert_eq!(err.code(), ErrorCode::AmbiguousPrefix);
                let msg = err.to_string();
                assert!(
                    msg.contains(&other.fmt_short()) && msg.contains(&id.fmt_short()),
                    "{msg}"
                );
                // One more character tells them apart unless they share 7.
                return;
            }
        }
    }

    #[test]
    fn search_needs_every_word_ignoring_case() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_peers: 3,
            max_files_per_peer: 10,
            max_peers_per_ip: 64,
            ..LIMITS
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        for name in ["Holiday Photos 2024.zip", "holiday-video.mp4", "report.pdf"] {
            index.add_file(a, ta, manifest(name), now).unwrap();
        }
        let names =
            |q: &str| -> Vec<String> { index.search(q).0.into_iter().map(|f| f.name).collect() };
        assert_eq!(
            names("HOLIDAY"),
            ["Holiday Photos 2024.zip", "holiday-video.mp4"]
        );
        assert_eq!(names("holiday zip"), ["Holiday Photos 2024.zip"]);
        assert!(names("holiday pdf").is_empty());
        assert_eq!(index.search("o").1, 3);
    }

    #[test]
    fn one_address_cannot_fill_the_index() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_peers: 100,
            max_files_per_peer: 1,
            max_peers_per_ip: 2,
            ..LIMITS
        });
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        index.register(addr(2), LOCAL, fresh_node(), now).unwrap();
        let err = index
            .register(addr(3), LOCAL, fresh_node(), now)
            .unwrap_err();
        assert!(
            err.to_string().contains("maximum of 2 registrations"),
            "{err}"
        );
        index.register(addr(4), other, fresh_node(), now).unwrap();
        // A slot frees when a registration ends, but registering again at once is too often:
        // the burst was the 2 registrations, and one more comes back each second.
        index.unregister(a, ta).unwrap();
        let err = index
            .register(addr(5), LOCAL, fresh_node(), now)
            .unwrap_err();
        assert!(err.to_string().contains("registers too often"), "{err}");
        index
            .register(addr(5), LOCAL, fresh_node(), now + Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn caps_are_enforced() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        index.register(addr(2), LOCAL, fresh_node(), now).unwrap();
        index.register(addr(3), LOCAL, fresh_node(), now).unwrap();
        assert!(matches!(
            index.register(addr(4), LOCAL, fresh_node(), now),
            Err(IndexError::LimitExceeded(_))
        ));
        index.add_file(a, ta, manifest("1"), now).unwrap();
        index.add_file(a, ta, manifest("2"), now).unwrap();
        assert!(matches!(
            index.add_file(a, ta, manifest("3"), now),
            Err(IndexError::LimitExceeded(_))
        ));
        let mut bad = manifest("4");
        bad.size = 10 * u64::from(CHUNK_SIZE);
        assert!(matches!(
            index.add_file(a, ta, bad, now),
            Err(IndexError::InvalidManifest(_))
        ));
    }

    fn large_manifest(name: &str) -> FileManifest {
        // The largest a manifest may be: 32,768 chunk hashes, about 1 MiB.
        let chunks = p2p_protocol::MAX_CHUNKS_PER_FILE as usize;
        FileManifest {
            name: name.into(),
            size: chunks as u64 * u64::from(CHUNK_SIZE),
            chunk_size: CHUNK_SIZE,
            chunks: (0..chunks as u32)
                .map(|i| Sha256Hash::of(&[name.as_bytes(), &i.to_be_bytes()].concat()))
                .collect(),
        }
    }

    #[test]
    fn one_hostile_address_stays_within_its_byte_budget() {
        let now = Instant::now();
        let limits = IndexLimits {
            max_peers: 100,
            max_files_per_peer: 10_000,
            max_peers_per_ip: 64,
            max_bytes: 8 * MIB,
            max_bytes_per_ip: 5 * MIB,
            max_bytes_per_peer: 3 * MIB,
            register_rate_per_ip: 1,
        };
        let mut index = Index::new(limits);
        let hostile: IpAddr = "10.0.0.66".parse().unwrap();
        let mut refusals = Vec::new();
        for p in 0..4 {
            let node = fresh_node();
            let id = index.register(addr(p), hostile, node, now).unwrap();
            for f in 0..4 {
                match index.add_file(id, node, large_manifest(&format!("{p}-{f}")), now) {
                    Ok(_) => {}
                    Err(err) => refusals.push(err),
                }
                assert!(index.stored_bytes() <= limits.max_bytes);
                assert!(index.stored_bytes_from(hostile) <= limits.max_bytes_per_ip);
            }
        }
        // 2 per peer, and 4 (not 8) from the address: about 1 MiB each.
        assert_eq!(index.file_count(), 4);
        assert_eq!(refusals.len(), 12);
        let message = |what: &str| {
            refusals
                .iter()
                .any(|e| e.code() == ErrorCode::LimitExceeded && e.to_string().contains(what))
        };
        assert!(
            message("a peer may store at most 3 MiB of manifests at the index"),
            "{refusals:?}"
        );
        assert!(
            message("your address may store at most 5 MiB of manifests at the index"),
            "{refusals:?}"
        );
        // Someone else still gets in...
        let node = fresh_node();
        let legit = index.register(addr(9), LOCAL, node, now).unwrap();
        index
            .add_file(legit, node, large_manifest("legit"), now)
            .unwrap();
        index.check_accounts();
        // ...until the whole index is full.
        let node = fresh_node();
        let other = index
            .register(addr(10), "10.0.0.7".parse().unwrap(), node, now)
            .unwrap();
        index
            .add_file(other, node, large_manifest("o1"), now)
            .unwrap();
        index
            .add_file(other, node, large_manifest("o2"), now)
            .unwrap();
        let node = fresh_node();
        let late = index
            .register(addr(11), "10.0.0.8".parse().unwrap(), node, now)
            .unwrap();
        let err = index
            .add_file(late, node, large_manifest("late"), now)
            .unwrap_err();
        assert!(err.to_string().starts_with("the index is full"), "{err}");
        assert!(index.stored_bytes() <= limits.max_bytes);
        index.check_accounts();
        // Everything is given back when the peers go.
        let dropped = index.expire(now + Duration::from_secs(60), Duration::from_secs(1));
        assert_eq!(dropped.len(), 7);
        assert_eq!(
            (index.stored_bytes(), index.stored_bytes_from(hostile)),
            (0, 0)
        );
    }

    #[test]
    fn a_file_is_stored_once_whoever_hosts_it() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let tb = fresh_node();
        let b = index
            .register(addr(2), "10.0.0.2".parse().unwrap(), tb, now)
            .unwrap();
        let manifest = large_manifest("shared.bin");
        let cost = StoredManifest::cost_of(&manifest);
        let id = index.add_file(a, ta, manifest.clone(), now).unwrap();
        index.add_file(b, tb, manifest.clone(), now).unwrap();
        assert_eq!(index.stored_bytes(), cost + 2 * HOST_OVERHEAD);
        // The packed hashes are the bulk of it: 32 bytes each, nothing per hash on top.
        assert!(cost < manifest.chunks.len() * 32 + 1024, "{cost}");
        // ...while each host is charged the whole manifest.
        assert_eq!(index.stored_bytes_from(LOCAL), cost + HOST_OVERHEAD);
        index.check_accounts();
        index.remove_file(a, ta, &id).unwrap();
        assert_eq!(index.stored_bytes(), cost + HOST_OVERHEAD);
        assert_eq!(index.stored_bytes_from(LOCAL), 0);
        let found = index.lookup(&id.to_string().parse().unwrap()).unwrap();
        assert_eq!(found.manifest.to_manifest(), manifest);
        index.unregister(b, tb).unwrap();
        assert_eq!(index.stored_bytes(), 0);
        index.check_accounts();
    }

    #[test]
    fn a_search_in_slices_finds_what_one_pass_finds() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_files_per_peer: 5_000,
            ..LIMITS
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        for i in 0..3_000 {
            let name = format!("{} {i}.bin", if i % 3 == 0 { "Alpha" } else { "beta" });
            index.add_file(a, ta, manifest(&name), now).unwrap();
        }
        for query in ["alpha", "BETA 1", "bin", "nothing"] {
            let whole = index.search(query);
            let mut search = Search::new(query);
            let mut steps = 1;
            while !index.search_step(&mut search, 7) {
                steps += 1;
            }
            let (files, total) = search.finish();
            assert_eq!((files.len(), total), (whole.0.len(), whole.1), "{query}");
            assert!(
                files
                    .iter()
                    .zip(&whole.0)
                    .all(|(a, b)| a.file_id == b.file_id)
            );
            assert!(steps >= 3_000 / 7, "{steps} steps");
        }
        // Listing takes the first names in order, and counts them all.
        let (files, total) = index.list_files();
        assert_eq!((files.len(), total), (1000, 3000));
        assert!(files.windows(2).all(|w| w[0].name <= w[1].name));
    }

    #[test]
    fn a_heartbeat_applied_late_never_moves_last_seen_back() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(15);
        let mut index = Index::new(LIMITS);
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, t0).unwrap();
        index
            .heartbeat(a, ta, t0 + Duration::from_secs(10))
            .unwrap();
        // An older one, applied after it.
        index.heartbeat(a, ta, t0 + Duration::from_secs(5)).unwrap();
        assert!(
            index
                .expire(t0 + Duration::from_secs(24), timeout)
                .is_empty()
        );
    }
}
