//! [`Index`]: who is registered and which files they host. Pure state, no I/O and no clock of
//! its own: every method that cares about time takes `now`, so expiry is unit-tested with
//! synthetic instants and uses only monotonic time.
//!
//! # Budgets
//! Every manifest is stored once per file id, compactly ([`StoredManifest`]), and every folder
//! once per folder id ([`crate::folders`]), and their cost in bytes is accounted: the whole
//! index, the peers of each source address and each peer have a budget ([`IndexLimits`]), and
//! an `AddFile`, `AddFiles`, `AddFolder` or `AddFolderFiles` that would pass one is refused
//! with `limit_exceeded` before anything is stored.
//!
//! # Work per call
//! No call does work proportional to the whole index except [`Index::expire`] (once per reaper
//! period, proportional to the peers) and a search, which [`Index::search_step`] cuts into
//! slices so the caller can let go of its lock between them. Listings read only the entries
//! they return, from maps kept in the order they are listed in. A lookup is a range in each of
//! the three id maps (files, folders, files inside folders). Removing a peer costs what it
//! stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_protocol::folder::FolderError;
use p2p_protocol::{
    ErrorCode, FileId, FileManifest, FileSummary, FolderHead, FolderId, HostInfo, IdPrefix,
    MAX_HOSTS_PER_LOOKUP, MAX_LIST_ENTRIES, ManifestError, NodeId, PeerId, PeerSummary,
};

use crate::config::{MIB, ServerConfig};
use crate::folders::{CheckedPages, FileKey, Folders};
use crate::hosts::{self, Candidate};
use crate::rate::RateLimit;
use crate::stored::{HOST_OVERHEAD, StoredHead, StoredManifest};

/// Most candidates an `ambiguous_prefix` error names.
const AMBIGUOUS_SHOWN: usize = 5;
/// Most matches an `ambiguous_prefix` error counts exactly; with more it says "1000+".
const AMBIGUOUS_COUNTED: usize = 999;
/// What "1000+" says.
const AMBIGUOUS_COUNTED_SHOWN: usize = AMBIGUOUS_COUNTED + 1;

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
    /// One manifest of an `AddFiles` batch is inconsistent (`at` counts from 0).
    #[error("invalid manifest {at} of the batch: {error}")]
    InvalidInBatch {
        /// Its place in the batch.
        at: usize,
        /// What is wrong with it.
        error: ManifestError,
    },
    /// A folder head or page breaks a rule of the folder record.
    #[error("invalid folder: {0}")]
    InvalidFolder(FolderError),
    /// `AddFolderFiles` for a folder this peer has not added.
    #[error("folder {0} is not one this peer added; send AddFolder first")]
    NotFolderHost(FolderId),
    /// A cap from [`crate::ServerConfig`] was reached.
    #[error("{0}")]
    LimitExceeded(String),
    /// No file or folder matches.
    #[error("no file matches {0}")]
    UnknownFile(String),
    /// Several files (or folders) match the prefix.
    #[error("{prefix} matches {count} {what}: {shown}; type more characters")]
    AmbiguousPrefix {
        /// The prefix typed.
        prefix: String,
        /// How many matched, e.g. `2`, or `1000+` past the count limit.
        count: String,
        /// "files", or "files and folders" when a folder is among them.
        what: &'static str,
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

/// The cause is in the text only, as for [`ManifestError`].
impl From<FolderError> for IndexError {
    fn from(err: FolderError) -> Self {
        IndexError::InvalidFolder(err)
    }
}

impl IndexError {
    /// The code sent in the `Error` reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            IndexError::UnknownPeer(_) => ErrorCode::UnknownPeer,
            IndexError::Forbidden(_) => ErrorCode::Forbidden,
            IndexError::InvalidManifest(_)
            | IndexError::InvalidInBatch { .. }
            | IndexError::InvalidFolder(_) => ErrorCode::InvalidManifest,
            IndexError::NotFolderHost(_) => ErrorCode::UnknownFile,
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
    /// The folders it hosts.
    folders: BTreeSet<FolderId>,
    /// Files in those folders, as their heads declare (for `max_folder_files_per_peer`).
    folder_files: u64,
    last_seen: Instant,
    /// When it registered: long-lived hosts are preferred in `Found`.
    registered: Instant,
    /// Bytes charged to it: the full cost of every file it hosts, plus the host link, and of
    /// every folder it hosts (head, host link, and each page it sent).
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

/// Files and folders in listing order: by name, then id (a folder's id bytes in place of a
/// file id; the two kinds of id are hashes over different domains, so they never meet).
type NameKey = (Arc<str>, FileId);

/// One line of `ListFiles`: a file (its manifest) or a folder (its head).
#[derive(Clone, Debug)]
enum Listed {
    File(Arc<StoredManifest>),
    Folder(Arc<StoredHead>),
}

impl Listed {
    fn lower_name(&self) -> &str {
        match self {
            Listed::File(m) => m.lower_name(),
            Listed::Folder(h) => h.lower_name(),
        }
    }
}

/// A lookup's answer for a top-level file.
#[derive(Clone, Debug)]
pub struct Found {
    /// Full id.
    pub file_id: FileId,
    /// The registered manifest.
    pub manifest: Arc<StoredManifest>,
    /// Some of its hosts, chosen as [`crate::hosts`] describes.
    pub hosts: Vec<HostInfo>,
}

/// What a lookup found: a file, a folder, or a file known from a folder.
#[derive(Clone, Debug)]
pub enum Located {
    /// A top-level file.
    File(Found),
    /// A folder.
    Folder {
        /// Full id.
        folder_id: FolderId,
        /// Its head.
        head: Arc<StoredHead>,
        /// Some of its hosts.
        hosts: Vec<HostInfo>,
    },
    /// A file known only inside a folder.
    InFolder {
        /// Full id.
        file_id: FileId,
        /// A folder it is in.
        folder_id: FolderId,
        /// Its path under that folder's root.
        path: String,
        /// Its size.
        size: u64,
        /// Some of the folder's hosts.
        hosts: Vec<HostInfo>,
    },
}

/// Caps the index enforces.
#[derive(Clone, Copy, Debug)]
pub struct IndexLimits {
    /// Registered peers at once.
    pub max_peers: usize,
    /// Files per peer (files inside folders not counted).
    pub max_files_per_peer: usize,
    /// Folders per peer.
    pub max_folders_per_peer: usize,
    /// Files inside the folders of one peer, as their heads declare.
    pub max_folder_files_per_peer: u64,
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
            max_folders_per_peer: config.max_folders_per_peer,
            max_folder_files_per_peer: config.max_folder_files_per_peer,
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

/// A search in progress: [`Index::search_step`] advances it a slice at a time, first through
/// the listing (files and folders by name), then through the files inside folders.
#[derive(Debug)]
pub struct Search {
    words: Vec<String>,
    /// Where the walk is; the next slice starts after it.
    at: SearchAt,
    /// Matches from the listing, in listing order, the first [`MAX_LIST_ENTRIES`].
    files: Vec<FileSummary>,
    /// Matches inside folders, in no order; cut to the first [`MAX_LIST_ENTRIES`] in listing
    /// order now and then.
    in_folders: Vec<FileSummary>,
    total: u64,
    /// Room for a name in lower case, reused.
    scratch: String,
}

/// The last entry a search looked at.
#[derive(Clone, Debug)]
enum SearchAt {
    /// In the listing, after this key (from the start if `None`).
    Listing(Option<NameKey>),
    /// Among the files inside folders, after this entry (from the start if `None`).
    Folders(Option<FileKey>),
}

impl Search {
    /// A search for files whose name contains every word of `query`, ignoring case.
    pub fn new(query: &str) -> Self {
        Self {
            words: query.split_whitespace().map(str::to_lowercase).collect(),
            at: SearchAt::Listing(None),
            files: Vec::new(),
            in_folders: Vec::new(),
            total: 0,
            scratch: String::new(),
        }
    }

    /// Whether `name` (as registered) contains every word, ignoring case: lower-cased into
    /// the scratch string without allocating when it is ASCII.
    fn matches_name(&mut self, name: &str) -> bool {
        if name.is_ascii() {
            self.scratch.clear();
            self.scratch.push_str(name);
            self.scratch.make_ascii_lowercase();
        } else {
            self.scratch = name.to_lowercase();
        }
        self.words.iter().all(|w| self.scratch.contains(w.as_str()))
    }

    /// Keeps a match from inside a folder.
    fn keep_in_folder(&mut self, summary: FileSummary) {
        self.in_folders.push(summary);
        if self.in_folders.len() >= 2 * MAX_LIST_ENTRIES {
            sort_listing(&mut self.in_folders);
            self.in_folders.truncate(MAX_LIST_ENTRIES);
        }
    }

    /// The first [`MAX_LIST_ENTRIES`] matches in listing order (name, then id, then path),
    /// and how many matched.
    pub fn finish(self) -> (Vec<FileSummary>, u64) {
        let mut files = self.files;
        files.extend(self.in_folders);
        sort_listing(&mut files);
        files.truncate(MAX_LIST_ENTRIES);
        (files, self.total)
    }
}

/// Sorts listing lines by name (bytewise), then id, then path (none first).
fn sort_listing(files: &mut [FileSummary]) {
    files.sort_by(|a, b| {
        (a.name.as_str(), a.file_id, &a.path).cmp(&(b.name.as_str(), b.file_id, &b.path))
    });
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
    /// Folders, and the files inside them.
    folders: Folders,
    /// Every top-level file and every folder in listing order, sharing the stored manifests
    /// and heads.
    names: BTreeMap<NameKey, Listed>,
    /// Bytes accounted for everything in `files` (each manifest once) and every host link,
    /// and for everything in `folders`.
    stored_bytes: usize,
    registrations: RateLimit,
    limits: IndexLimits,
}

/// What a request would add to the accounts, checked against every budget before anything is
/// stored.
#[derive(Clone, Copy, Debug)]
struct Cost {
    /// Bytes charged to the peer (and its source address).
    charge: usize,
    /// Bytes the index would store.
    growth: usize,
    /// What needs them, for the message: "this file", "this folder", ...
    what: &'static str,
}

impl Index {
    /// An empty index.
    pub fn new(limits: IndexLimits) -> Self {
        Self {
            peers: BTreeMap::new(),
            by_node: HashMap::new(),
            by_source: HashMap::new(),
            files: BTreeMap::new(),
            folders: Folders::default(),
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
                folders: BTreeSet::new(),
                folder_files: 0,
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

    /// Checks `cost` against the budgets of `peer_id` (which exists), of its source address and
    /// of the whole index, in that order.
    fn check_budgets(&self, peer_id: PeerId, cost: Cost) -> Result<(), IndexError> {
        let limits = &self.limits;
        let peer = &self.peers[&peer_id];
        let used = |who: &str, max: usize, used: usize| {
            IndexError::LimitExceeded(format!(
                "{who} may store at most {} of manifests at the index \
                 (it stores {}, {} {})",
                bytes(max),
                bytes(used),
                cost.what,
                bytes(cost.charge)
            ))
        };
        if peer.charged + cost.charge > limits.max_bytes_per_peer {
            return Err(used("a peer", limits.max_bytes_per_peer, peer.charged));
        }
        let source = self.by_source.get(&peer.source).map_or(0, |s| s.bytes);
        if source + cost.charge > limits.max_bytes_per_ip {
            return Err(used("your address", limits.max_bytes_per_ip, source));
        }
        if self.stored_bytes + cost.growth > limits.max_bytes {
            return Err(IndexError::LimitExceeded(format!(
                "the index is full: it stores at most {} of manifests ({} {}); \
                 try again later",
                bytes(limits.max_bytes),
                cost.what,
                bytes(cost.growth)
            )));
        }
        Ok(())
    }

    /// Books `cost` (checked) to `peer_id` and the index.
    fn book(&mut self, peer_id: PeerId, cost: Cost) {
        let peer = self
            .peers
            .get_mut(&peer_id)
            .expect("booked for a peer just authenticated");
        peer.charged += cost.charge;
        self.by_source.entry(peer.source).or_default().bytes += cost.charge;
        self.stored_bytes += cost.growth;
    }

    /// Gives back `charge` from `peer`'s accounts (the peer entry may already be gone).
    fn refund(by_source: &mut HashMap<IpAddr, SourceUsage>, peer: &mut PeerEntry, charge: usize) {
        peer.charged -= charge;
        if let Some(source) = by_source.get_mut(&peer.source) {
            source.bytes -= charge;
        }
    }

    /// Adds a hosted file after validating its manifest and checking the budgets. Idempotent.
    pub fn add_file(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        manifest: FileManifest,
        now: Instant,
    ) -> Result<FileId, IndexError> {
        self.add_files(peer_id, node, vec![manifest], now)
            .map_err(|err| match err {
                IndexError::InvalidInBatch { error, .. } => IndexError::InvalidManifest(error),
                other => other,
            })
            .map(|ids| ids[0])
    }

    /// Adds several hosted files at once: all of them, or none if one manifest is invalid or
    /// the batch passes a cap or budget (each checked for the whole batch first). Files the
    /// peer already hosts, and copies within the batch, cost nothing again. Returns the ids
    /// in the order given.
    pub fn add_files(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        manifests: Vec<FileManifest>,
        now: Instant,
    ) -> Result<Vec<FileId>, IndexError> {
        let limits = self.limits;
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        let mut ids = Vec::with_capacity(manifests.len());
        for (at, manifest) in manifests.iter().enumerate() {
            manifest
                .validate()
                .map_err(|error| IndexError::InvalidInBatch { at, error })?;
            ids.push(manifest.id());
        }
        // The files new to this peer, each once.
        let mut new: BTreeMap<FileId, usize> = BTreeMap::new();
        for (at, id) in ids.iter().enumerate() {
            if !peer.files.contains(id) {
                new.entry(*id).or_insert(at);
            }
        }
        if new.is_empty() {
            return Ok(ids);
        }
        if peer.files.len() + new.len() > limits.max_files_per_peer {
            return Err(IndexError::LimitExceeded(format!(
                "a peer may host at most {} files",
                limits.max_files_per_peer
            )));
        }
        // Each host is charged the whole manifest; the index stores it once.
        let mut cost = Cost {
            charge: 0,
            growth: 0,
            what: if new.len() == 1 {
                "this file needs"
            } else {
                "these files need"
            },
        };
        for (id, at) in &new {
            let stored = self.files.get(id).map(|f| f.manifest.cost());
            let manifest_cost = stored.unwrap_or_else(|| StoredManifest::cost_of(&manifests[*at]));
            cost.charge += manifest_cost + HOST_OVERHEAD;
            cost.growth += HOST_OVERHEAD + if stored.is_some() { 0 } else { manifest_cost };
        }
        self.check_budgets(peer_id, cost)?;
        self.book(peer_id, cost);
        let peer = self.peers.get_mut(&peer_id).expect("authenticated above");
        peer.files.extend(new.keys());
        let mut manifests: Vec<Option<FileManifest>> = manifests.into_iter().map(Some).collect();
        for (id, at) in new {
            let file = self.files.entry(id).or_insert_with(|| {
                let manifest = manifests[at].take().expect("each new id is taken once");
                let manifest = Arc::new(StoredManifest::new(manifest));
                self.names.insert(
                    (manifest.name().clone(), id),
                    Listed::File(manifest.clone()),
                );
                FileEntry {
                    manifest,
                    hosts: BTreeSet::new(),
                }
            });
            file.hosts.insert(peer_id);
        }
        Ok(ids)
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
            Self::refund(&mut self.by_source, peer, charge);
            self.drop_host(file_id, peer_id);
        }
        Ok(())
    }

    /// Adds a hosted folder by its head: validates it, computes its id (so nobody can attach
    /// another name, count or size to someone's id), and checks the caps and budgets.
    /// Idempotent. Its files follow with [`Index::add_folder_files`].
    pub fn add_folder(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        head: FolderHead,
        now: Instant,
    ) -> Result<FolderId, IndexError> {
        let limits = self.limits;
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        head.validate()?;
        let folder_id = head.id();
        if peer.folders.contains(&folder_id) {
            return Ok(folder_id);
        }
        if peer.folders.len() >= limits.max_folders_per_peer {
            return Err(IndexError::LimitExceeded(format!(
                "a peer may host at most {} folders",
                limits.max_folders_per_peer
            )));
        }
        if peer.folder_files + head.files > limits.max_folder_files_per_peer {
            return Err(IndexError::LimitExceeded(format!(
                "a peer may host at most {} files in folders (it hosts {}, this folder has {})",
                limits.max_folder_files_per_peer, peer.folder_files, head.files
            )));
        }
        let (charge, growth) = self.folders.host_plan(&folder_id, &head);
        let cost = Cost {
            charge,
            growth,
            what: "this folder needs",
        };
        self.check_budgets(peer_id, cost)?;
        self.book(peer_id, cost);
        let peer = self.peers.get_mut(&peer_id).expect("authenticated above");
        peer.folders.insert(folder_id);
        peer.folder_files += head.files;
        let (stored, new) = self.folders.add_host(folder_id, head, peer_id);
        if new {
            let key = (stored.name().clone(), FileId(folder_id.0));
            self.names.insert(key, Listed::Folder(stored));
        }
        Ok(folder_id)
    }

    /// The first step of `AddFolderFiles`: checks that `peer_id` is `node`'s and hosts folder
    /// `id`, refreshes its last-seen time, and returns the folder's head, against which the
    /// caller checks the pages ([`crate::folders::check_pages`], outside the lock) before
    /// [`Index::add_folder_files`].
    pub fn folder_for_pages(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        id: &FolderId,
        now: Instant,
    ) -> Result<Arc<StoredHead>, IndexError> {
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        if !peer.folders.contains(id) {
            return Err(IndexError::NotFolderHost(*id));
        }
        let folder = self.folders.get(id).expect("a peer's folders are stored");
        Ok(folder.head().clone())
    }

    /// Adds pages of a folder's file list that passed [`crate::folders::check_pages`], for a
    /// folder `peer_id` hosts: all of them, or none if they pass a budget. A page this peer
    /// sent before costs nothing again. Returns how many of the folder's files the index
    /// knows now.
    pub fn add_folder_files(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        pages: CheckedPages,
        now: Instant,
    ) -> Result<u64, IndexError> {
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        peer.last_seen = peer.last_seen.max(now);
        let folder_id = pages.folder_id();
        let plan = self
            .folders
            .page_plan(&pages, &peer_id)
            .ok_or(IndexError::NotFolderHost(folder_id))?;
        let cost = Cost {
            charge: plan.charge,
            growth: plan.growth,
            what: "these pages need",
        };
        self.check_budgets(peer_id, cost)?;
        self.book(peer_id, cost);
        Ok(self.folders.store_pages(pages, &peer_id))
    }

    /// Stops listing `peer_id` as a host of folder `id` (and its files). Harmless if it was
    /// not one.
    pub fn remove_folder(
        &mut self,
        peer_id: PeerId,
        node: NodeId,
        id: &FolderId,
    ) -> Result<(), IndexError> {
        let peer = Self::authenticate(&mut self.peers, peer_id, node)?;
        if peer.folders.remove(id) {
            self.drop_folder_host(id, peer_id);
        }
        Ok(())
    }

    /// Takes `peer_id` off folder `id`'s hosts, refunds it (if still registered) and frees
    /// what no host pays for any more.
    fn drop_folder_host(&mut self, id: &FolderId, peer_id: PeerId) {
        let name = self.folders.get(id).map(|f| f.head().name().clone());
        let Some(released) = self.folders.remove_host(id, &peer_id) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            Self::refund(&mut self.by_source, peer, released.charge);
            peer.folder_files -= released.files;
        }
        self.stored_bytes -= released.freed;
        if self.folders.get(id).is_none()
            && let Some(name) = name
        {
            self.names.remove(&(name, FileId(id.0)));
        }
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
        for folder_id in &entry.folders {
            self.drop_folder_host(folder_id, peer_id);
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

    /// Up to [`MAX_HOSTS_PER_LOOKUP`] of `hosts`, chosen as [`crate::hosts`] describes.
    fn choose_hosts(&self, hosts: impl Iterator<Item = PeerId>) -> Vec<HostInfo> {
        let candidates = hosts
            .filter_map(|id| {
                self.peers.get(&id).map(|p| Candidate {
                    peer_id: id,
                    node_id: p.node,
                    addr: p.addr,
                    source: p.source,
                    registered: p.registered,
                })
            })
            .collect();
        hosts::choose(candidates, MAX_HOSTS_PER_LOOKUP, &mut rand::rng())
    }

    /// Finds the one top-level file whose id starts with `prefix` (a folder or a file known
    /// only inside one counts as a match too, but is not a file: `unknown_file`).
    pub fn lookup(&self, prefix: &IdPrefix) -> Result<Found, IndexError> {
        match self.locate(prefix)? {
            Located::File(found) => Ok(found),
            _ => Err(IndexError::UnknownFile(prefix.to_string())),
        }
    }

    /// Finds the one file, folder or file inside a folder whose id starts with `prefix`, with
    /// up to [`MAX_HOSTS_PER_LOOKUP`] hosts. Ids are counted once whatever their kind and
    /// however many places hold them: a file both top-level and inside folders is the
    /// top-level file, and a file in several folders (or several times in one) is found in
    /// the first of them by folder slot and place.
    pub fn locate(&self, prefix: &IdPrefix) -> Result<Located, IndexError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Kind {
            File,
            Folder,
            InFolder(FileKey),
        }
        let (low, high) = prefix_bounds(prefix);
        // Distinct ids by kind, each source walked up to just past the count limit.
        let enough = AMBIGUOUS_COUNTED + 1;
        let mut ids: BTreeMap<[u8; 32], Kind> = BTreeMap::new();
        for id in self.files.range(low..=high).map(|(id, _)| id).take(enough) {
            ids.insert(id.0, Kind::File);
        }
        let (folder_low, folder_high) = (FolderId(low.0), FolderId(high.0));
        for id in self.folders.ids_in(folder_low, folder_high).take(enough) {
            ids.insert(id.0, Kind::Folder);
        }
        let mut after = None;
        for _ in 0..enough {
            let Some(key) = self.folders.next_file_id(low, high, after) else {
                break;
            };
            ids.entry(key.0.0).or_insert(Kind::InFolder(key));
            after = Some(key.0);
        }
        let mut matches = ids.iter();
        let Some((first, kind)) = matches.next() else {
            return Err(IndexError::UnknownFile(prefix.to_string()));
        };
        if ids.len() > 1 {
            let count = if ids.len() > AMBIGUOUS_COUNTED {
                format!("{AMBIGUOUS_COUNTED_SHOWN}+")
            } else {
                ids.len().to_string()
            };
            let mut shown: Vec<String> = ids
                .keys()
                .take(AMBIGUOUS_SHOWN)
                .map(|id| FileId(*id).fmt_short())
                .collect();
            if ids.len() > AMBIGUOUS_SHOWN {
                shown.push("...".to_owned());
            }
            let folders = ids.values().any(|k| *k == Kind::Folder);
            return Err(IndexError::AmbiguousPrefix {
                prefix: prefix.to_string(),
                count,
                what: if folders {
                    "files and folders"
                } else {
                    "files"
                },
                shown: shown.join(", "),
            });
        }
        Ok(match *kind {
            Kind::File => {
                let file_id = FileId(*first);
                let entry = &self.files[&file_id];
                Located::File(Found {
                    file_id,
                    manifest: entry.manifest.clone(),
                    hosts: self.choose_hosts(entry.hosts.iter().copied()),
                })
            }
            Kind::Folder => {
                let folder_id = FolderId(*first);
                let folder = self.folders.get(&folder_id).expect("listed above");
                Located::Folder {
                    folder_id,
                    head: folder.head().clone(),
                    hosts: self.choose_hosts(folder.hosts()),
                }
            }
            Kind::InFolder(key) => {
                let (folder, path, size) = self.folders.file_at(key).expect("listed above");
                Located::InFolder {
                    file_id: key.0,
                    folder_id: folder.id(),
                    path: path.to_owned(),
                    size,
                    hosts: self.choose_hosts(folder.hosts()),
                }
            }
        })
    }

    /// Up to [`MAX_LIST_ENTRIES`] top-level files and folders sorted by name then id, and
    /// the total count.
    pub fn list_files(&self) -> (Vec<FileSummary>, u64) {
        let files = self
            .names
            .iter()
            .take(MAX_LIST_ENTRIES)
            .map(|(key, listed)| self.summary(key, listed))
            .collect();
        (files, self.names.len() as u64)
    }

    fn summary(&self, (_, id): &NameKey, listed: &Listed) -> FileSummary {
        match listed {
            Listed::File(manifest) => FileSummary {
                file_id: *id,
                name: manifest.name().to_string(),
                size: manifest.size(),
                hosts: self.files.get(id).map_or(0, |f| f.hosts.len() as u32),
                files: None,
                path: None,
            },
            Listed::Folder(head) => FileSummary {
                file_id: *id,
                name: head.name().to_string(),
                size: head.size(),
                hosts: self
                    .folders
                    .get(&FolderId(id.0))
                    .map_or(0, |f| f.host_count() as u32),
                files: Some(head.files()),
                path: None,
            },
        }
    }

    /// Top-level files, folders and files inside folders whose name contains every word
    /// (compared in lower case), like [`Index::list_files`], in one go. The server uses
    /// [`Index::search_step`] instead.
    pub fn search(&self, query: &str) -> (Vec<FileSummary>, u64) {
        let mut search = Search::new(query);
        while !self.search_step(&mut search, usize::MAX) {}
        search.finish()
    }

    /// Looks at up to `budget` more names for `search`; true once it has looked at them all.
    /// Between steps the index may change: files added or removed meanwhile may or may not be
    /// counted, and nothing is counted twice (entries are visited in the order of their maps).
    pub fn search_step(&self, search: &mut Search, budget: usize) -> bool {
        let mut seen = 0;
        if let SearchAt::Listing(after) = &search.at {
            let after = match after {
                Some(key) => Bound::Excluded(key.clone()),
                None => Bound::Unbounded,
            };
            let mut last: Option<&NameKey> = None;
            for (key, listed) in self.names.range((after, Bound::Unbounded)) {
                if seen == budget {
                    search.at = SearchAt::Listing(last.cloned());
                    return false;
                }
                seen += 1;
                let name = listed.lower_name();
                if search.words.iter().all(|w| name.contains(w.as_str())) {
                    search.total += 1;
                    if search.files.len() < MAX_LIST_ENTRIES {
                        search.files.push(self.summary(key, listed));
                    }
                }
                last = Some(key);
            }
            search.at = SearchAt::Folders(None);
        }
        let SearchAt::Folders(after) = search.at else {
            unreachable!("the listing is done");
        };
        let mut last = after;
        for (key, folder, path, size) in self.folders.files_after(after) {
            if seen == budget {
                search.at = SearchAt::Folders(last);
                return false;
            }
            seen += 1;
            last = Some(key);
            let name = path.rsplit('/').next().unwrap_or(path);
            if search.matches_name(name) {
                search.total += 1;
                let head = folder.head();
                search.keep_in_folder(FileSummary {
                    file_id: key.0,
                    name: name.to_owned(),
                    size,
                    hosts: folder.host_count() as u32,
                    files: None,
                    path: Some(format!("{}/{path}", head.name())),
                });
            }
        }
        search.at = SearchAt::Folders(last);
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
                files: (p.files.len() as u64 + p.folder_files)
                    .try_into()
                    .unwrap_or(u32::MAX),
                last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
            })
            .collect();
        (peers, self.peers.len() as u64)
    }

    /// Registered peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Distinct top-level files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Folders.
    pub fn folder_count(&self) -> usize {
        self.folders.len()
    }

    /// Files inside folders (each place counted).
    pub fn folder_file_count(&self) -> usize {
        self.folders.file_count()
    }

    /// Lines of `ListFiles`: top-level files and folders.
    pub fn listed_count(&self) -> usize {
        self.names.len()
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

    /// Bytes charged to `peer_id`.
    pub fn charged_to(&self, peer_id: PeerId) -> usize {
        self.peers.get(&peer_id).map_or(0, |p| p.charged)
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
        let files: usize = self
            .files
            .values()
            .map(|f| f.manifest.cost() + f.hosts.len() * HOST_OVERHEAD)
            .sum();
        let folders: usize = self.folders.iter().map(Folders::stored_cost).sum();
        assert_eq!(files + folders, self.stored_bytes, "stored bytes");
        assert_eq!(
            self.names.len(),
            self.files.len() + self.folders.len(),
            "name index"
        );
        let mut by_source: HashMap<IpAddr, usize> = HashMap::new();
        for (peer_id, peer) in &self.peers {
            let charged: usize = peer
                .files
                .iter()
                .map(|id| self.files[id].manifest.cost() + HOST_OVERHEAD)
                .chain(
                    peer.folders
                        .iter()
                        .map(|id| self.folders.charge_of(id, peer_id)),
                )
                .sum();
            assert_eq!(charged, peer.charged, "a peer's charge");
            let declared: u64 = peer
                .folders
                .iter()
                .map(|id| self.folders.get(id).unwrap().head().files())
                .sum();
            assert_eq!(declared, peer.folder_files, "a peer's folder files");
            *by_source.entry(peer.source).or_default() += charged;
        }
        for (ip, bytes) in by_source {
            assert_eq!(bytes, self.by_source[&ip].bytes, "{ip}'s charge");
        }
        for folder in self.folders.iter() {
            for host in folder.hosts() {
                assert!(
                    self.peers[&host].folders.contains(&folder.id()),
                    "host link"
                );
            }
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
        max_folders_per_peer: 2,
        max_folder_files_per_peer: 1 << 20,
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
            max_folders_per_peer: 64,
            max_folder_files_per_peer: 1 << 20,
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

    /// A folder `name` of `n` one-chunk files `d{i / 100}/f{i}.txt`, and its pages as the
    /// index gets them.
    fn folder_of(name: &str, n: usize) -> (FolderHead, Vec<Vec<p2p_protocol::FolderRef>>) {
        let files = (0..n)
            .map(|i| {
                let file = format!("f{i:06}.txt");
                let manifest = FileManifest {
                    name: file.clone(),
                    size: 100,
                    chunk_size: CHUNK_SIZE,
                    chunks: vec![Sha256Hash::of(format!("{name}/{i}").as_bytes())],
                };
                (format!("d{:03}/{file}", i / 100), manifest)
            })
            .collect();
        let (head, pages) = p2p_protocol::folder::build(name, files).unwrap();
        let refs = pages
            .iter()
            .map(|p| p2p_protocol::folder::refs(p).unwrap())
            .collect();
        (head, refs)
    }

    /// `AddFolderFiles` as the server runs it: the pages checked, then stored.
    fn add_pages(
        index: &mut Index,
        peer: PeerId,
        node: NodeId,
        id: FolderId,
        first: u32,
        pages: &[Vec<p2p_protocol::FolderRef>],
    ) -> Result<u64, IndexError> {
        let head = index.folder_for_pages(peer, node, &id, Instant::now())?;
        let checked = crate::folders::check_pages(id, &head, first, pages.to_vec())?;
        index.add_folder_files(peer, node, checked, Instant::now())
    }

    fn roomy() -> IndexLimits {
        IndexLimits {
            max_peers: 10,
            max_files_per_peer: 10_000,
            max_folders_per_peer: 10_000,
            ..LIMITS
        }
    }

    #[test]
    fn the_index_computes_a_folders_id_from_its_head() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let (head, _) = folder_of("photos", 3);
        assert_eq!(index.add_folder(a, ta, head.clone(), now), Ok(head.id()));
        // The same files under another name are another folder.
        let mut renamed = head.clone();
        renamed.name = "holiday".into();
        let other = index.add_folder(a, ta, renamed, now).unwrap();
        assert_ne!(other, head.id());
        // A head that breaks the rules is refused, and nothing is stored for it.
        let before = index.stored_bytes();
        let mut bad = head.clone();
        bad.pages.push(Sha256Hash([0; 32]));
        let err = index.add_folder(a, ta, bad, now).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidManifest);
        assert!(
            err.to_string()
                .contains("has 1 pages, but its head lists 2"),
            "{err}"
        );
        assert_eq!(index.stored_bytes(), before);
        // Adding again changes nothing.
        assert_eq!(index.add_folder(a, ta, head.clone(), now), Ok(head.id()));
        assert_eq!(index.stored_bytes(), before);
        index.check_accounts();
    }

    #[test]
    fn a_page_that_does_not_match_the_head_stores_nothing() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let (head, pages) = folder_of("photos", 1500);
        let id = index.add_folder(a, ta, head, now).unwrap();
        let before = index.stored_bytes();
        let mut forged = pages.clone();
        forged[1][7].file_id = FileId([7; 32]);
        // Page 0 is fine, page 1 is not: neither is stored.
        let err = add_pages(&mut index, a, ta, id, 0, &forged).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidManifest);
        assert_eq!(
            err.to_string(),
            "invalid folder: folder page 1 does not match the folder's record"
        );
        assert_eq!(index.stored_bytes(), before);
        assert_eq!(index.folder_file_count(), 0);
        let prefix: IdPrefix = pages[0][0].file_id.to_string().parse().unwrap();
        assert_eq!(
            index.locate(&prefix).unwrap_err().code(),
            ErrorCode::UnknownFile
        );
        // Past the end, or for a folder this peer did not add.
        let err = add_pages(&mut index, a, ta, id, 2, &pages[..1]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidManifest);
        let tb = fresh_node();
        let b = index.register(addr(2), LOCAL, tb, now).unwrap();
        let err = add_pages(&mut index, b, tb, id, 0, &pages).unwrap_err();
        assert_eq!(err, IndexError::NotFolderHost(id));
        assert_eq!(err.code(), ErrorCode::UnknownFile);
        index.check_accounts();
    }

    #[test]
    fn a_repeated_page_is_harmless() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let (head, pages) = folder_of("photos", 2100);
        let id = index.add_folder(a, ta, head, now).unwrap();
        assert_eq!(add_pages(&mut index, a, ta, id, 0, &pages[..2]), Ok(2048));
        let (stored, charged) = (index.stored_bytes(), index.charged_to(a));
        // Page 1 again (a retry after a lost reply), then the rest.
        assert_eq!(add_pages(&mut index, a, ta, id, 1, &pages[1..2]), Ok(2048));
        assert_eq!(
            (index.stored_bytes(), index.charged_to(a)),
            (stored, charged)
        );
        assert_eq!(add_pages(&mut index, a, ta, id, 1, &pages[1..]), Ok(2100));
        assert_eq!(index.folder_file_count(), 2100);
        index.check_accounts();
    }

    #[test]
    fn lookup_finds_folders_and_files_inside_them() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let (head, pages) = folder_of("photos", 5);
        let id = index.add_folder(a, ta, head.clone(), now).unwrap();
        add_pages(&mut index, a, ta, id, 0, &pages).unwrap();
        let host = vec![p2p_protocol::HostInfo {
            peer_id: a,
            addr: addr(1),
            node_id: ta,
        }];
        for typed in [id.to_string(), id.to_string()[..12].to_owned()] {
            match index.locate(&typed.parse().unwrap()).unwrap() {
                Located::Folder {
                    folder_id,
                    head: found,
                    hosts,
                } => {
                    assert_eq!(
                        (folder_id, found.to_head(), &hosts),
                        (id, head.clone(), &host)
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let inside = &pages[0][3];
        match index
            .locate(&inside.file_id.to_string()[..10].parse().unwrap())
            .unwrap()
        {
            Located::InFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            } => {
                assert_eq!(
                    (file_id, folder_id, path.as_str(), size, &hosts),
                    (inside.file_id, id, "d000/f000003.txt", 100, &host)
                );
            }
            other => panic!("{other:?}"),
        }
        // A file inside a folder is not a top-level file.
        assert!(
            index
                .lookup(&inside.file_id.to_string().parse().unwrap())
                .is_err()
        );
        // The same file shared on its own too is the top-level file.
        let manifest = FileManifest {
            name: "f000003.txt".into(),
            size: 100,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(b"photos/3")],
        };
        assert_eq!(index.add_file(a, ta, manifest, now), Ok(inside.file_id));
        let found = index
            .locate(&inside.file_id.to_string().parse().unwrap())
            .unwrap();
        assert!(matches!(found, Located::File(_)), "{found:?}");
        // Gone with its folder.
        index.remove_folder(a, ta, &id).unwrap();
        assert_eq!(
            index
                .locate(&id.to_string().parse().unwrap())
                .unwrap_err()
                .code(),
            ErrorCode::UnknownFile
        );
        assert_eq!(index.folder_file_count(), 0);
        index.check_accounts();
    }

    #[test]
    fn ambiguity_counts_files_and_folders_alike() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_bytes_per_peer: 256 * MIB,
            max_bytes_per_ip: 256 * MIB,
            ..roomy()
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let mut index_limits = *index.limits();
        index_limits.max_files_per_peer = 100_000;
        index_limits.max_folders_per_peer = 100_000;
        index.limits = index_limits;
        // Files and one-file folders until a file's id and a folder's (or an in-folder
        // file's) share a 6-character prefix. Deterministic names: reproducible.
        let mut files: HashMap<String, FileId> = HashMap::new();
        let mut folders: HashMap<String, String> = HashMap::new();
        for i in 0.. {
            let file = index
                .add_file(a, ta, manifest(&format!("t{i}")), now)
                .unwrap();
            let (head, pages) = folder_of(&format!("d{i}"), 1);
            let folder = index.add_folder(a, ta, head, now).unwrap();
            add_pages(&mut index, a, ta, folder, 0, &pages).unwrap();
            let inside = pages[0][0].file_id;
            files.insert(file.to_string()[..6].to_owned(), file);
            for other in [folder.to_string(), inside.to_string()] {
                folders.insert(other[..6].to_owned(), other);
            }
            let hit = files.keys().find(|p| folders.contains_key(*p)).cloned();
            if let Some(prefix) = hit {
                let err = index.locate(&prefix.parse().unwrap()).unwrap_err();
                assert_eq!(err.code(), ErrorCode::AmbiguousPrefix);
                let msg = err.to_string();
                assert!(msg.contains(" matches 2 files"), "{msg}");
                assert!(msg.contains(&files[&prefix].fmt_short()), "{msg}");
                assert!(msg.contains(&folders[&prefix][..12]), "{msg}");
                index.check_accounts();
                return;
            }
        }
    }

    #[test]
    fn search_finds_files_inside_folders_by_name_with_their_path() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        index.add_file(a, ta, manifest("F000123.txt"), now).unwrap();
        let (head, pages) = folder_of("Album", 2000);
        let id = index.add_folder(a, ta, head, now).unwrap();
        add_pages(&mut index, a, ta, id, 0, &pages).unwrap();
        let (files, total) = index.search("f000123");
        assert_eq!(total, 2);
        assert_eq!(files[0].name, "F000123.txt");
        assert_eq!(files[0].path, None);
        assert_eq!(files[1].name, "f000123.txt");
        assert_eq!(files[1].path.as_deref(), Some("Album/d001/f000123.txt"));
        assert_eq!(files[1].file_id, pages[0][123].file_id);
        assert_eq!(
            (files[1].size, files[1].hosts, files[1].files),
            (100, 1, None)
        );
        // The folder itself, by its name; listed beside files, without its content.
        let (found, _) = index.search("album");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].files, Some(2000));
        assert_eq!(found[0].file_id, FileId(id.0));
        let (listed, total) = index.list_files();
        assert_eq!(total, 2);
        assert_eq!(
            listed
                .iter()
                .map(|f| (f.name.as_str(), f.files))
                .collect::<Vec<_>>(),
            [("Album", Some(2000)), ("F000123.txt", None)]
        );
        // Many matches: the first 1000 in listing order, all counted; in slices the same.
        let (all, total) = index.search("txt");
        assert_eq!((all.len(), total), (MAX_LIST_ENTRIES, 2001));
        assert_eq!(all[0].name, "F000123.txt");
        assert_eq!(all[1].path.as_deref(), Some("Album/d000/f000000.txt"));
        let mut search = Search::new("TXT");
        while !index.search_step(&mut search, 7) {}
        assert_eq!(search.finish(), (all, total));
    }

    #[test]
    fn a_second_host_costs_only_its_link_and_unregistering_frees_everything() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let tb = fresh_node();
        let b = index
            .register(addr(2), "10.0.0.2".parse().unwrap(), tb, now)
            .unwrap();
        let (head, pages) = folder_of("photos", 3000);
        let id = index.add_folder(a, ta, head.clone(), now).unwrap();
        add_pages(&mut index, a, ta, id, 0, &pages).unwrap();
        let stored = index.stored_bytes();
        assert_eq!(index.charged_to(a), stored);
        // The second host: HOST_OVERHEAD and a bit per page, nothing per file.
        index.add_folder(b, tb, head, now).unwrap();
        let link = crate::folders::folder_host_cost(pages.len());
        assert_eq!(link, HOST_OVERHEAD + 8);
        assert_eq!(index.stored_bytes(), stored + link);
        // Its pages cost it, but store nothing more.
        add_pages(&mut index, b, tb, id, 0, &pages).unwrap();
        assert_eq!(index.stored_bytes(), stored + link);
        // ...and it is charged what the first host is: the whole folder.
        assert_eq!(index.charged_to(b), stored);
        index.check_accounts();
        index.unregister(a, ta).unwrap();
        assert_eq!(index.stored_bytes(), stored);
        assert_eq!(index.folder_file_count(), 3000);
        index.check_accounts();
        let dropped = index.expire(now + Duration::from_secs(60), Duration::from_secs(1));
        assert_eq!(dropped.len(), 1);
        assert_eq!(index.stored_bytes(), 0);
        assert_eq!(index.folder_count(), 0);
        assert_eq!(index.folder_file_count(), 0);
        assert_eq!(index.list_files().1, 0);
        assert_eq!(index.stored_bytes_from(LOCAL), 0);
    }

    #[test]
    fn a_host_that_sent_no_pages_keeps_none_alive() {
        let now = Instant::now();
        let mut index = Index::new(roomy());
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let tb = fresh_node();
        let b = index.register(addr(2), LOCAL, tb, now).unwrap();
        let (head, pages) = folder_of("photos", 3000);
        let id = index.add_folder(a, ta, head.clone(), now).unwrap();
        add_pages(&mut index, a, ta, id, 0, &pages).unwrap();
        // `b` adds the head only, paying for the head only.
        index.add_folder(b, tb, head.clone(), now).unwrap();
        index.unregister(a, ta).unwrap();
        // The folder stays (b hosts it), its files go (nobody left paid for them).
        assert_eq!(index.folder_count(), 1);
        assert_eq!(index.folder_file_count(), 0);
        assert_eq!(
            index.stored_bytes(),
            StoredHead::cost_of(&head) + crate::folders::folder_host_cost(3)
        );
        assert_eq!(index.charged_to(b), index.stored_bytes());
        index.check_accounts();
    }

    #[test]
    fn folder_caps_give_limit_exceeded() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_folders_per_peer: 2,
            max_folder_files_per_peer: 25,
            max_bytes_per_peer: 12_000,
            ..roomy()
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        index.add_folder(a, ta, folder_of("a", 10).0, now).unwrap();
        let err = index
            .add_folder(a, ta, folder_of("b", 16).0, now)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a peer may host at most 25 files in folders (it hosts 10, this folder has 16)"
        );
        let (head, pages) = folder_of("b", 15);
        let b = index.add_folder(a, ta, head, now).unwrap();
        let err = index
            .add_folder(a, ta, folder_of("c", 0).0, now)
            .unwrap_err();
        assert_eq!(err.to_string(), "a peer may host at most 2 folders");
        // Bytes: 15 files fit in 12,000, a page of 1024 would not.
        add_pages(&mut index, a, ta, b, 0, &pages).unwrap();
        index.remove_folder(a, ta, &b).unwrap();
        index.limits.max_folder_files_per_peer = 10_000;
        let (head, pages) = folder_of("big", 1024);
        let big = index.add_folder(a, ta, head, now).unwrap();
        let before = index.stored_bytes();
        let err = add_pages(&mut index, a, ta, big, 0, &pages).unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert!(
            err.to_string()
                .starts_with("a peer may store at most 11.7 KiB of manifests"),
            "{err}"
        );
        assert!(err.to_string().contains("these pages need"), "{err}");
        assert_eq!(index.stored_bytes(), before);
        assert_eq!(index.folder_file_count(), 0);
        index.check_accounts();
    }

    #[test]
    fn add_files_is_all_or_nothing() {
        let now = Instant::now();
        let mut index = Index::new(IndexLimits {
            max_files_per_peer: 3,
            ..roomy()
        });
        let ta = fresh_node();
        let a = index.register(addr(1), LOCAL, ta, now).unwrap();
        let mut bad = manifest("bad");
        bad.chunks.clear();
        let err = index
            .add_files(a, ta, vec![manifest("x"), bad], now)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidManifest);
        assert!(
            err.to_string()
                .starts_with("invalid manifest 1 of the batch: "),
            "{err}"
        );
        assert_eq!((index.file_count(), index.stored_bytes()), (0, 0));
        let over = ["1", "2", "3", "4"].map(manifest).to_vec();
        assert_eq!(
            index.add_files(a, ta, over, now).unwrap_err().code(),
            ErrorCode::LimitExceeded
        );
        assert_eq!(index.file_count(), 0);
        // Copies in a batch, and files already hosted, count once.
        let ids = index
            .add_files(a, ta, ["1", "2", "1"].map(manifest).to_vec(), now)
            .unwrap();
        assert_eq!(ids[0], ids[2]);
        assert_eq!(index.file_count(), 2);
        let ids = index
            .add_files(a, ta, ["2", "3", "1"].map(manifest).to_vec(), now)
            .unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(index.file_count(), 3);
        index.check_accounts();
    }
}
