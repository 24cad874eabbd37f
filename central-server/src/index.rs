//! [`Index`]: who is registered and which files they host. Pure state, no I/O and no clock of
//! its own: every method that cares about time takes `now`, so expiry is unit-tested with
//! synthetic instants and uses only monotonic time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_protocol::{
    ErrorCode, FileId, FileManifest, FileSummary, HostInfo, IdPrefix, MAX_HOSTS_PER_LOOKUP,
    MAX_LIST_ENTRIES, ManifestError, PeerId, PeerSummary, Token,
};

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
    /// Registered, but the token is someone else's.
    #[error("token does not match peer {0}")]
    Forbidden(PeerId),
    /// The manifest is inconsistent.
    #[error("invalid manifest: {0}")]
    InvalidManifest(#[from] ManifestError),
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
    token: Token,
    addr: SocketAddr,
    /// Where the registration came from, for the per-address cap.
    source: IpAddr,
    files: BTreeSet<FileId>,
    last_seen: Instant,
}

/// A file and who hosts it.
#[derive(Debug)]
struct FileEntry {
    manifest: Arc<FileManifest>,
    hosts: BTreeSet<PeerId>,
}

/// A lookup's answer.
#[derive(Clone, Debug)]
pub struct Found {
    /// Full id.
    pub file_id: FileId,
    /// The registered manifest.
    pub manifest: Arc<FileManifest>,
    /// Its hosts, by peer id.
    pub hosts: Vec<HostInfo>,
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
}

/// The whole soft state of the server; peers rebuild it after a restart.
#[derive(Debug)]
pub struct Index {
    peers: HashMap<PeerId, PeerEntry>,
    /// Registrations per source address.
    by_source: HashMap<IpAddr, usize>,
    files: BTreeMap<FileId, FileEntry>,
    limits: IndexLimits,
}

impl Index {
    /// An empty index.
    pub fn new(limits: IndexLimits) -> Self {
        Self {
            peers: HashMap::new(),
            by_source: HashMap::new(),
            files: BTreeMap::new(),
            limits,
        }
    }

    /// Registers a peer reachable at `addr`; returns its id and secret.
    pub fn register(
        &mut self,
        addr: SocketAddr,
        source: IpAddr,
        now: Instant,
    ) -> Result<(PeerId, Token), IndexError> {
        if self.peers.len() >= self.limits.max_peers {
            return Err(IndexError::LimitExceeded(format!(
                "the index already holds its maximum of {} peers",
                self.limits.max_peers
            )));
        }
        let from_source = self.by_source.entry(source).or_default();
        if *from_source >= self.limits.max_peers_per_ip {
            return Err(IndexError::LimitExceeded(format!(
                "your address already holds the maximum of {} registrations",
                self.limits.max_peers_per_ip
            )));
        }
        *from_source += 1;
        let peer_id = loop {
            let id = PeerId(rand::random());
            if !self.peers.contains_key(&id) {
                break id;
            }
        };
        let token = Token(rand::random());
        self.peers.insert(
            peer_id,
            PeerEntry {
                token,
                addr,
                source,
                files: BTreeSet::new(),
                last_seen: now,
            },
        );
        Ok((peer_id, token))
    }

    fn authenticate(
        &mut self,
        peer_id: PeerId,
        token: &Token,
    ) -> Result<&mut PeerEntry, IndexError> {
        let entry = self
            .peers
            .get_mut(&peer_id)
            .ok_or(IndexError::UnknownPeer(peer_id))?;
        if !constant_time_eq(&entry.token.0, &token.0) {
            return Err(IndexError::Forbidden(peer_id));
        }
        Ok(entry)
    }

    /// Records a heartbeat.
    pub fn heartbeat(
        &mut self,
        peer_id: PeerId,
        token: &Token,
        now: Instant,
    ) -> Result<(), IndexError> {
        self.authenticate(peer_id, token)?.last_seen = now;
        Ok(())
    }

    /// Adds a hosted file after validating its manifest. Idempotent.
    pub fn add_file(
        &mut self,
        peer_id: PeerId,
        token: &Token,
        manifest: FileManifest,
        now: Instant,
    ) -> Result<FileId, IndexError> {
        let max_files = self.limits.max_files_per_peer;
        let peer = self.authenticate(peer_id, token)?;
        peer.last_seen = now;
        manifest.validate()?;
        let file_id = manifest.id();
        if !peer.files.contains(&file_id) && peer.files.len() >= max_files {
            return Err(IndexError::LimitExceeded(format!(
                "a peer may host at most {max_files} files"
            )));
        }
        peer.files.insert(file_id);
        self.files
            .entry(file_id)
            .or_insert_with(|| FileEntry {
                manifest: Arc::new(manifest),
                hosts: BTreeSet::new(),
            })
            .hosts
            .insert(peer_id);
        Ok(file_id)
    }

    /// Stops listing `peer_id` as a host of `file_id`. Harmless if it was not one.
    pub fn remove_file(
        &mut self,
        peer_id: PeerId,
        token: &Token,
        file_id: &FileId,
    ) -> Result<(), IndexError> {
        self.authenticate(peer_id, token)?.files.remove(file_id);
        self.drop_host(file_id, peer_id);
        Ok(())
    }

    /// Removes a peer and its files.
    pub fn unregister(&mut self, peer_id: PeerId, token: &Token) -> Result<(), IndexError> {
        self.authenticate(peer_id, token)?;
        self.remove_peer(peer_id);
        Ok(())
    }

    fn remove_peer(&mut self, peer_id: PeerId) -> Option<PeerEntry> {
        let entry = self.peers.remove(&peer_id)?;
        if let Some(count) = self.by_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.by_source.remove(&entry.source);
            }
        }
        for file_id in &entry.files {
            self.drop_host(file_id, peer_id);
        }
        Some(entry)
    }

    fn drop_host(&mut self, file_id: &FileId, peer_id: PeerId) {
        if let Some(file) = self.files.get_mut(file_id) {
            file.hosts.remove(&peer_id);
            if file.hosts.is_empty() {
                self.files.remove(file_id);
            }
        }
    }

    /// Drops every peer whose last heartbeat is older than `timeout`; returns who was dropped.
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

    /// Finds the one file whose id starts with `prefix`.
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
        let hosts = entry
            .hosts
            .iter()
            .take(MAX_HOSTS_PER_LOOKUP)
            .filter_map(|id| {
                self.peers.get(id).map(|p| HostInfo {
                    peer_id: *id,
                    addr: p.addr,
                })
            })
            .collect();
        Ok(Found {
            file_id: *file_id,
            manifest: entry.manifest.clone(),
            hosts,
        })
    }

    /// Up to [`MAX_LIST_ENTRIES`] files sorted by name then id, and the total count.
    pub fn list_files(&self) -> (Vec<FileSummary>, u64) {
        self.files_matching(&[])
    }

    /// Files whose name contains every word (compared in lower case), like
    /// [`Index::list_files`].
    pub fn search(&self, query: &str) -> (Vec<FileSummary>, u64) {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        self.files_matching(&words)
    }

    fn files_matching(&self, words: &[String]) -> (Vec<FileSummary>, u64) {
        let mut files: Vec<FileSummary> = self
            .files
            .iter()
            .filter(|(_, f)| {
                words.is_empty() || {
                    let name = f.manifest.name.to_lowercase();
                    words.iter().all(|w| name.contains(w.as_str()))
                }
            })
            .map(|(id, f)| FileSummary {
                file_id: *id,
                name: f.manifest.name.clone(),
                size: f.manifest.size,
                hosts: f.hosts.len() as u32,
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_id.cmp(&b.file_id)));
        let total = files.len() as u64;
        files.truncate(MAX_LIST_ENTRIES);
        (files, total)
    }

    /// Up to [`MAX_LIST_ENTRIES`] peers sorted by id, and the total count.
    pub fn list_peers(&self, now: Instant) -> (Vec<PeerSummary>, u64) {
        let mut peers: Vec<PeerSummary> = self
            .peers
            .iter()
            .map(|(id, p)| PeerSummary {
                peer_id: *id,
                addr: p.addr,
                files: p.files.len() as u32,
                last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
            })
            .collect();
        peers.sort_by_key(|p| p.peer_id);
        let total = peers.len() as u64;
        peers.truncate(MAX_LIST_ENTRIES);
        (peers, total)
    }

    /// Registered peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Distinct files.
    pub fn file_count(&self) -> usize {
        self.files.len()
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

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use p2p_protocol::{CHUNK_SIZE, Sha256Hash};

    use super::*;

    const LIMITS: IndexLimits = IndexLimits {
        max_peers: 3,
        max_files_per_peer: 2,
        max_peers_per_ip: 64,
    };

    fn manifest(name: &str) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: 1,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(name.as_bytes())],
        }
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
        let (a, ta) = index.register(addr(1), LOCAL, t0).unwrap();
        let (b, _) = index.register(addr(2), LOCAL, t0).unwrap();
        let id = index.add_file(a, &ta, manifest("f"), t0).unwrap();
        index
            .heartbeat(a, &ta, t0 + Duration::from_secs(10))
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
    fn only_the_token_holder_changes_a_registration() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        let (b, tb) = index.register(addr(2), LOCAL, now).unwrap();
        let id = index.add_file(a, &ta, manifest("f"), now).unwrap();
        assert_eq!(
            index.remove_file(a, &tb, &id),
            Err(IndexError::Forbidden(a))
        );
        assert_eq!(index.unregister(a, &tb), Err(IndexError::Forbidden(a)));
        assert_eq!(index.heartbeat(a, &tb, now), Err(IndexError::Forbidden(a)));
        assert_eq!(index.file_count(), 1);
        index.unregister(b, &tb).unwrap();
        assert_eq!(
            index.heartbeat(b, &tb, now),
            Err(IndexError::UnknownPeer(b))
        );
    }

    #[test]
    fn shared_files_list_every_host_and_survive_one_leaving() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        let (b, tb) = index.register(addr(2), LOCAL, now).unwrap();
        let id = index.add_file(a, &ta, manifest("f"), now).unwrap();
        assert_eq!(index.add_file(b, &tb, manifest("f"), now).unwrap(), id);
        // Adding again is harmless.
        index.add_file(b, &tb, manifest("f"), now).unwrap();
        let found = index.lookup(&id.to_string()[..8].parse().unwrap()).unwrap();
        assert_eq!(found.hosts.len(), 2);
        index.remove_file(a, &ta, &id).unwrap();
        let found = index.lookup(&id.to_string().parse().unwrap()).unwrap();
        assert_eq!(
            found.hosts,
            vec![HostInfo {
                peer_id: b,
                addr: addr(2)
            }]
        );
        let (files, total) = index.list_files();
        assert_eq!((files[0].hosts, total), (1, 1));
    }

    #[test]
    fn unique_prefix_resolves_and_unknown_is_reported() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        let id = index.add_file(a, &ta, manifest("f"), now).unwrap();
        let prefix: IdPrefix = id.to_string()[..6].parse().unwrap();
        let found = index.lookup(&prefix).unwrap();
        assert_eq!((found.file_id, found.manifest.name.as_str()), (id, "f"));
        index.remove_file(a, &ta, &id).unwrap();
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
        });
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        // Register files until two ids share a 6-character prefix (birthday bound: a few
        // thousand). Deterministic names, so the test is reproducible.
        let mut seen: HashMap<String, FileId> = HashMap::new();
        for i in 0.. {
            let id = index
                .add_file(a, &ta, manifest(&format!("n{i}")), now)
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
        });
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        for name in ["Holiday Photos 2024.zip", "holiday-video.mp4", "report.pdf"] {
            index.add_file(a, &ta, manifest(name), now).unwrap();
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
        });
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        index.register(addr(2), LOCAL, now).unwrap();
        let err = index.register(addr(3), LOCAL, now).unwrap_err();
        assert!(
            err.to_string().contains("maximum of 2 registrations"),
            "{err}"
        );
        index.register(addr(4), other, now).unwrap();
        // A slot frees when a registration ends.
        index.unregister(a, &ta).unwrap();
        index.register(addr(5), LOCAL, now).unwrap();
    }

    #[test]
    fn caps_are_enforced() {
        let now = Instant::now();
        let mut index = Index::new(LIMITS);
        let (a, ta) = index.register(addr(1), LOCAL, now).unwrap();
        index.register(addr(2), LOCAL, now).unwrap();
        index.register(addr(3), LOCAL, now).unwrap();
        assert!(matches!(
            index.register(addr(4), LOCAL, now),
            Err(IndexError::LimitExceeded(_))
        ));
        index.add_file(a, &ta, manifest("1"), now).unwrap();
        index.add_file(a, &ta, manifest("2"), now).unwrap();
        assert!(matches!(
            index.add_file(a, &ta, manifest("3"), now),
            Err(IndexError::LimitExceeded(_))
        ));
        let mut bad = manifest("4");
        bad.size = 10 * u64::from(CHUNK_SIZE);
        assert!(matches!(
            index.add_file(a, &ta, bad, now),
            Err(IndexError::InvalidManifest(_))
        ));
    }
}
