//! [`ShareDir`]: a folder whose regular files are all shared, kept in step with the disk.
//!
//! Every regular file under the folder is registered, except those [`p2p_storage::tree::left_out`]
//! names (hidden files, partial downloads, manifest files). The folder is walked and its files
//! opened only through a handle on it ([`Tree`]): a link or FIFO planted in it is skipped, a
//! file swapped for one between the walk and the open is refused, and each file is hashed and
//! served through the one handle it was opened with. A filesystem watcher (inotify through `notify`) triggers a rescan shortly after
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
use p2p_storage::chunker::HashedFile;
use p2p_storage::{SourceFile, Tree, TreeFile};
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
        let dir = config.dir.clone();
        let tree = tokio::task::spawn_blocking(move || Tree::open(&dir))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))??;
        let tree = Arc::new(tree);
        let dir = tree.root().to_owned();
        let mut state = State {
            tree,
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
                // A rescan waits on the disk (a hung network file system, say): shutdown must
                // not wait with it.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = state.rescan() => {}
                }
            }
        });
        Ok((Self { stats }, shared))
    }
}

struct State {
    tree: Arc<Tree>,
    /// Path → the file as the walk saw it when it was shared, and its id.
    known: HashMap<PathBuf, (TreeFile, FileId)>,
    cache: Cache,
    cache_file: Option<PathBuf>,
    stats: Arc<ShareDirStats>,
    peer: PeerHandle,
}

impl State {
    async fn rescan(&mut self) {
        let tree = self.tree.clone();
        let (current, complete) = match tokio::task::spawn_blocking(move || tree.walk()).await {
            Ok(walk) => (
                walk.files
                    .into_iter()
                    .map(|f| (self.tree.path_of(&f), f))
                    .collect::<HashMap<_, _>>(),
                walk.complete,
            ),
            Err(err) => {
                warn!(%err, "cannot scan the shared folder");
                return;
            }
        };
        let mut changed = false;
        // Removals first, so a renamed file (gone here, new there, same id) ends up shared.
        // A folder that could not be listed this time hides its files: they are not gone.
        if !complete {
            warn!(dir = %self.tree.root().display(), "part of the shared folder could not be listed; keeping what is shared");
        }
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|p| complete && !current.contains_key(*p))
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
            self.save_cache().await;
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
    /// The file is opened once, beneath the folder, and must be the one the walk saw.
    async fn share(&mut self, path: &Path, seen: &TreeFile) -> Result<FileId, PeerError> {
        let key = path.to_string_lossy().into_owned();
        let cached = self.cache.files.get(&key).and_then(|e| {
            let modified =
                SystemTime::UNIX_EPOCH + Duration::new(e.modified_secs, e.modified_nanos);
            (e.size == seen.size && modified == seen.modified)
                .then(|| ManifestFile::parse(&e.p2pm).ok())
                .flatten()
        });
        let tree = self.tree.clone();
        let file = seen.clone();
        let source = tokio::task::spawn_blocking(move || {
            let opened = tree.open_file(&file)?;
            match cached {
                Some(doc) => SourceFile::cached(
                    opened,
                    HashedFile {
                        manifest: doc.manifest,
                        len: file.size,
                        modified: file.modified,
                    },
                )
                .map(|source| (source, true)),
                None => SourceFile::hash(opened).map(|source| (source, false)),
            }
        })
        .await
        .map_err(|e| PeerError::Internal(e.to_string()))?;
        let (source, from_cache) = source?;
        let counter = if from_cache {
            &self.stats.cached
        } else {
            &self.stats.hashed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let hashed = HashedFile {
            manifest: source.manifest().clone(),
            len: seen.size,
            modified: seen.modified,
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
        self.peer.share_source(source).await
    }

    /// Saves the cache off the runtime's threads, through a fresh temporary file (random name,
    /// created exclusively) renamed over the old cache.
    async fn save_cache(&self) {
        let Some(file) = self.cache_file.clone() else {
            return;
        };
        let bytes = match serde_json::to_vec(&self.cache) {
            Ok(bytes) => bytes,
            Err(err) => return warn!(%err, "cannot encode the manifest cache"),
        };
        let saved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let parent = file.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
            tmp.write_all(&bytes)?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "cannot save the manifest cache"),
            Err(err) => warn!(%err, "cannot save the manifest cache"),
        }
    }
}

fn load_cache(file: Option<&Path>) -> Cache {
    file.and_then(|f| std::fs::read(f).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
