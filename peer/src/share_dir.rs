//! [`ShareDir`]: a folder whose regular files are all shared, kept in step with the disk.
//!
//! Every regular file under the folder is registered, except hidden ones (any path component
//! starting with `.`) and partial downloads (`.part`, `.part.chunks`, `.tmp`) and manifest files
//! (`.p2pm`). A filesystem watcher (inotify through `notify`) triggers a rescan shortly after
//! anything changes, and a periodic rescan catches what the watcher misses (network file
//! systems, overflowed event queues). A file is hashed only when its size or modification
//! time is new: manifests are cached in a small JSON file, so a restart of a peer sharing many
//! gigabytes is instant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use p2p_protocol::FileId;
use p2p_protocol::manifest_file::ManifestFile;
use p2p_storage::SourceFile;
use p2p_storage::chunker::HashedFile;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::PeerError;
use crate::node::PeerHandle;

/// How long the watcher waits for a burst of changes to settle before rescanning.
const SETTLE: Duration = Duration::from_millis(300);

/// What to share and how to keep it up to date.
#[derive(Clone, Debug)]
pub struct ShareDirConfig {
    /// The folder.
    pub dir: PathBuf,
    /// Where manifests are cached between runs; `None` hashes everything at start.
    pub cache_file: Option<PathBuf>,
    /// Rescan this often even without watcher events.
    pub rescan_every: Duration,
}

/// Counters, for status lines and tests.
#[derive(Debug, Default)]
pub struct ShareDirStats {
    /// Files hashed.
    pub hashed: AtomicU64,
    /// Files whose manifest came from the cache.
    pub cached: AtomicU64,
}

/// A running shared folder.
#[derive(Debug, Clone)]
pub struct ShareDir {
    /// Its counters.
    pub stats: Arc<ShareDirStats>,
}

/// A file as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    size: u64,
    modified: SystemTime,
}

#[derive(Serialize, Deserialize, Default)]
struct Cache {
    /// Absolute path → entry.
    files: HashMap<String, CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    modified_secs: u64,
    modified_nanos: u32,
    /// The manifest file text (which carries its own id check).
    p2pm: String,
}

impl ShareDir {
    /// Shares every file in the folder now, prints nothing, and keeps following it until the
    /// peer shuts down. Returns the files shared at start with their ids.
    pub async fn start(
        peer: &PeerHandle,
        config: ShareDirConfig,
    ) -> Result<(Self, Vec<(PathBuf, FileId)>), PeerError> {
        let dir = std::fs::canonicalize(&config.dir).map_err(|source| {
            PeerError::Storage(p2p_storage::StorageError::Io {
                action: "cannot open shared folder",
                path: config.dir.clone(),
                source,
            })
        })?;
        let mut state = State {
            dir: dir.clone(),
            known: HashMap::new(),
            cache: load_cache(config.cache_file.as_deref()),
            cache_file: config.cache_file.clone(),
            stats: Arc::default(),
            peer: peer.clone(),
        };
        state.rescan().await;
        let shared = state
            .known
            .iter()
            .map(|(p, (_, id))| (p.clone(), *id))
            .collect();
        let stats = state.stats.clone();

        // Watcher events only wake the rescan loop; the loop decides what changed.
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = wake_tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(err) => {
                    warn!(%err, dir = %dir.display(), "cannot watch the shared folder; rescanning periodically");
                    None
                }
            },
            Err(err) => {
                warn!(%err, "no filesystem watcher; rescanning periodically");
                None
            }
        };
        let shutdown = peer.shutdown_token();
        peer.spawn(async move {
            // Keep the watcher alive as long as the loop.
            let _watcher = watcher;
            let mut ticks = tokio::time::interval(config.rescan_every);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                    Some(()) = wake_rx.recv() => tokio::time::sleep(SETTLE).await,
                }
                state.rescan().await;
            }
        });
        Ok((Self { stats }, shared))
    }
}

struct State {
    dir: PathBuf,
    /// Path → what it was when shared, and its id.
    known: HashMap<PathBuf, (Seen, FileId)>,
    cache: Cache,
    cache_file: Option<PathBuf>,
    stats: Arc<ShareDirStats>,
    peer: PeerHandle,
}

impl State {
    async fn rescan(&mut self) {
        let dir = self.dir.clone();
        let current = match tokio::task::spawn_blocking(move || walk(&dir)).await {
            Ok(files) => files,
            Err(err) => {
                warn!(%err, "cannot scan the shared folder");
                return;
            }
        };
        let mut changed = false;
        // Removals first, so a renamed file (gone here, new there, same id) ends up shared.
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|p| !current.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            changed = true;
            if let Some((_, id)) = self.known.remove(&path) {
                info!(path = %path.display(), "file left the shared folder; no longer sharing it");
                self.release(id).await;
            }
            self.cache
                .files
                .remove(&path.to_string_lossy().into_owned());
        }
        for (path, seen) in &current {
            if self.known.get(path).is_some_and(|(s, _)| s == seen) {
                continue;
            }
            changed = true;
            if let Some((_, old)) = self.known.remove(path) {
                self.release(old).await;
            }
            match self.share(path, seen).await {
                Ok(id) => {
                    info!(path = %path.display(), file = %id.fmt_short(), "sharing file from the shared folder");
                    self.known.insert(path.clone(), (seen.clone(), id));
                }
                Err(err) => warn!(%err, path = %path.display(), "cannot share file"),
            }
        }
        if changed {
            self.save_cache();
        }
    }

    /// A path with this id left: stop sharing the id, unless another path in the folder has
    /// the same content and name, which is then served instead.
    async fn release(&mut self, id: FileId) {
        let other = self
            .known
            .iter()
            .find(|(_, (_, i))| *i == id)
            .map(|(p, (seen, _))| (p.clone(), seen.clone()));
        match other {
            Some((path, seen)) => {
                if let Err(err) = self.share(&path, &seen).await {
                    warn!(%err, path = %path.display(), "cannot share file");
                }
            }
            None => {
                if let Err(err) = self.peer.unshare(&id.to_string()).await {
                    debug!(%err, "was not shared");
                }
            }
        }
    }

    /// Shares one file, hashing it only if the cache has no manifest for this size and time.
    async fn share(&mut self, path: &Path, seen: &Seen) -> Result<FileId, PeerError> {
        let key = path.to_string_lossy().into_owned();
        let cached = self.cache.files.get(&key).and_then(|e| {
            let modified =
                SystemTime::UNIX_EPOCH + Duration::new(e.modified_secs, e.modified_nanos);
            (e.size == seen.size && modified == seen.modified)
                .then(|| ManifestFile::parse(&e.p2pm).ok())
                .flatten()
        });
        let hashed = match cached {
            Some(doc) => {
                self.stats.cached.fetch_add(1, Ordering::Relaxed);
                HashedFile {
                    manifest: doc.manifest,
                    len: seen.size,
                    modified: seen.modified,
                }
            }
            None => {
                let owned = path.to_owned();
                let hashed =
                    tokio::task::spawn_blocking(move || p2p_storage::build_manifest(&owned))
                        .await
                        .map_err(|e| PeerError::Internal(e.to_string()))??;
                self.stats.hashed.fetch_add(1, Ordering::Relaxed);
                hashed
            }
        };
        let since_epoch = hashed
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.cache.files.insert(
            key,
            CacheEntry {
                size: hashed.len,
                modified_secs: since_epoch.as_secs(),
                modified_nanos: since_epoch.subsec_nanos(),
                p2pm: ManifestFile::new(hashed.manifest.clone(), Vec::new()).to_json(),
            },
        );
        let owned = path.to_owned();
        let source = tokio::task::spawn_blocking(move || SourceFile::open(&owned, hashed))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))??;
        self.peer.share_source(source).await
    }

    fn save_cache(&self) {
        let Some(file) = &self.cache_file else { return };
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = file.with_extension("tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&self.cache).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(err) = result {
            warn!(%err, cache = %file.display(), "cannot save the manifest cache");
        }
    }
}

fn load_cache(file: Option<&Path>) -> Cache {
    file.and_then(|f| std::fs::read(f).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Whether a file in the shared folder is left out.
fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || [
            ".part",
            ".chunks",
            ".tmp",
            p2p_protocol::manifest_file::SUFFIX,
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Every file a shared folder would share, sorted (for folder manifests and `--register DIR`).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir).into_keys().collect();
    files.sort();
    files
}

/// Regular files under `dir` (not following symlinks), with size and modification time.
fn walk(dir: &Path) -> HashMap<PathBuf, Seen> {
    let mut out = HashMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if skipped(&name.to_string_lossy()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file()
                && let Ok(modified) = meta.modified()
            {
                out.insert(
                    entry.path(),
                    Seen {
                        size: meta.len(),
                        modified,
                    },
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_partial_files_are_left_out() {
        for name in [
            ".hidden",
            "movie.mkv.part",
            "movie.mkv.part.chunks",
            "x.tmp",
            "a.p2pm",
        ] {
            assert!(skipped(name), "{name}");
        }
        for name in ["movie.mkv", "partial.txt", "notes.chunk"] {
            assert!(!skipped(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/.git")).unwrap();
        for f in ["a", "sub/b", "sub/.git/c", ".d", "e.part"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let mut found: Vec<String> = walk(dir.path())
            .keys()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        found.sort();
        assert_eq!(found, ["a", "sub/b"]);
    }
}
