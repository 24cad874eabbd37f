//! [`ShareDir`]: a folder shared as a whole, kept in step with the disk.
//!
//! Every regular file under the folder is in it, except those [`p2p_storage::tree::left_out`]
//! names (hidden files, partial downloads, manifest files); together they are one folder with
//! one folder id (`SharedFolder`, served without a descriptor per file). The folder is
//! walked and its files opened only through a handle on it ([`Tree`]): a link or FIFO planted
//! in it is skipped, a file swapped for one between the walk and the open is refused. A
//! filesystem watcher (inotify through `notify`) triggers a rescan shortly after anything
//! changes, and a periodic rescan catches what the watcher misses (network file systems,
//! overflowed event queues). A file is hashed only when its size or modification time is new
//! (many at once): manifests are cached in a small JSON file, so a restart of a peer sharing
//! many gigabytes is instant. When a rescan finds anything changed, the folder's record is
//! rebuilt: the new folder id is served and announced (`AddFolder`, `AddFolderFiles`), then
//! the old one withdrawn (`RemoveFolder`), and whoever started it is told
//! ([`ShareDirConfig::changes`]: a [`FolderChange`] with the files new at their paths). A
//! subfolder or file that can't be read is named in a warning (once, and again only if the
//! reason changes) and left out; the rest is shared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use p2p_protocol::manifest_file::ManifestFile;
use p2p_protocol::{FileId, FileManifest, FolderHead, FolderId};
use p2p_storage::{Tree, TreeFile};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::PeerError;
use crate::node::PeerHandle;
use crate::shared_folders::SharedFolder;
use crate::sharing::Shared;

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
    /// Told of each new record of the folder once it is shared (not of the first: that is
    /// what [`ShareDir::start`] returns), for a front end to show; `None`: nobody is.
    pub changes: Option<mpsc::UnboundedSender<FolderChange>>,
}

/// A shared folder's new record: files in it were added, changed or removed on disk, and the
/// folder is now shared under `folder_id` in place of `replaces` (withdrawn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderChange {
    /// The folder as it was given.
    pub path: PathBuf,
    /// Its id now.
    pub folder_id: FolderId,
    /// Its head now (name, totals).
    pub head: FolderHead,
    /// The id it had before.
    pub replaces: FolderId,
    /// Its files that are new or changed, in record order (a file removed has no line: the
    /// new record is without it).
    pub files: Vec<ChangedFile>,
}

/// A file of a [`FolderChange`] that is new, or new at its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedFile {
    /// Its path in the folder (parts joined by `/`).
    pub path: String,
    /// Its manifest.
    pub manifest: FileManifest,
    /// The id of the file at that path before (it changed); `None` for a new path.
    pub replaces: Option<FileId>,
}

impl FolderChange {
    /// From what each path held before (`previous`) to `folder`, shared under `path`.
    fn between(
        path: &Path,
        previous: HashMap<String, FileId>,
        folder: &SharedFolder,
        replaces: FolderId,
    ) -> Self {
        let files = folder
            .files()
            .filter(|(at, manifest)| previous.get(*at) != Some(&manifest.id()))
            .map(|(at, manifest)| ChangedFile {
                path: at.to_owned(),
                manifest: manifest.clone(),
                replaces: previous.get(at).copied(),
            })
            .collect();
        Self {
            path: path.to_owned(),
            folder_id: folder.id(),
            head: folder.head().clone(),
            replaces,
            files,
        }
    }
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
    current: Arc<Mutex<Option<FolderId>>>,
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
    /// Shares the folder now (as a whole: one folder id), prints nothing, and keeps following
    /// it until the peer shuts down. Returns what was shared at start.
    pub async fn start(
        peer: &PeerHandle,
        config: ShareDirConfig,
    ) -> Result<(Self, Shared), PeerError> {
        let dir = config.dir.clone();
        let tree = tokio::task::spawn_blocking(move || Tree::open(&dir))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))??;
        // The folder must have a name it can go by before anything is hashed.
        p2p_storage::path::folder_name(&tree)?;
        let tree = Arc::new(tree);
        let root = tree.root().to_owned();
        let mut state = State {
            tree,
            shown: config.dir.clone(),
            folder: None,
            cache: load_cache(config.cache_file.as_deref()),
            cache_file: config.cache_file.clone(),
            stats: Arc::default(),
            changes: config.changes.clone(),
            unreadable: HashMap::new(),
            current: Arc::default(),
            peer: peer.clone(),
        };
        state.rescan().await?;
        let folder = state
            .folder
            .clone()
            .expect("a successful first scan shares the folder");
        let shared = Shared::folder(config.dir.clone(), &folder);
        let share = Self {
            stats: state.stats.clone(),
            current: state.current.clone(),
        };

        // Watcher events only wake the rescan loop; the loop decides what changed.
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = wake_tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => match w.watch(&root, notify::RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(err) => {
                    warn!(%err, dir = %root.display(), "cannot watch the shared folder; rescanning periodically");
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
                    scanned = state.rescan() => if let Err(err) = scanned {
                        warn!(%err, "cannot rescan the shared folder");
                    },
                }
            }
        });
        Ok((share, shared))
    }

    /// The folder's id now (it changes with the folder's files).
    pub fn folder_id(&self) -> Option<FolderId> {
        *self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct State {
    tree: Arc<Tree>,
    /// The path the user gave.
    shown: PathBuf,
    /// What is shared now.
    folder: Option<Arc<SharedFolder>>,
    cache: Cache,
    cache_file: Option<PathBuf>,
    stats: Arc<ShareDirStats>,
    /// Told of each new record ([`ShareDirConfig::changes`]).
    changes: Option<mpsc::UnboundedSender<FolderChange>>,
    /// What the last scan could not read (a subfolder, a file), by path in the folder, and
    /// why: warned about once.
    unreadable: HashMap<PathBuf, String>,
    /// The id of `folder`, for [`ShareDir::folder_id`]. std Mutex: a copy in, a copy out.
    current: Arc<Mutex<Option<FolderId>>>,
    peer: PeerHandle,
}

impl State {
    /// Lists the folder, hashes what is new or changed (parallel, off the reactor), and if
    /// anything differs from what is shared, shares the new record and withdraws the old one.
    async fn rescan(&mut self) -> Result<(), PeerError> {
        let tree = self.tree.clone();
        let walk = tokio::task::spawn_blocking(move || tree.walk())
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))?;
        let previous: HashMap<&Path, (&TreeFile, &FileManifest)> = self
            .folder
            .iter()
            .flat_map(|f| f.tree_files())
            .map(|(file, manifest)| (file.rel.as_path(), (file, manifest)))
            .collect();
        let mut files: Vec<(TreeFile, FileManifest)> = Vec::with_capacity(walk.files.len());
        let mut to_hash = Vec::new();
        let mut from_cache = 0;
        // What can't be read is named (once, until the reason changes), and left out.
        let mut unreadable: HashMap<PathBuf, String> = walk
            .unlisted
            .iter()
            .map(|(rel, why)| {
                let shown = self.shown.join(rel);
                (
                    rel.clone(),
                    format!("cannot list {} ({why})", shown.display()),
                )
            })
            .collect();
        // A folder that could not be listed this time hides its files: they are not gone.
        if !walk.complete {
            let listed: std::collections::HashSet<&Path> =
                walk.files.iter().map(|f| f.rel.as_path()).collect();
            for (rel, (file, manifest)) in &previous {
                if !listed.contains(rel) {
                    files.push(((*file).clone(), (*manifest).clone()));
                }
            }
        }
        // Files kept as they were shared: when that is all of them, nothing changed.
        let mut kept = files.len();
        for seen in &walk.files {
            if let Some((file, manifest)) = previous.get(seen.rel.as_path())
                && *file == seen
            {
                kept += 1;
                files.push((seen.clone(), (*manifest).clone()));
            } else if let Some(manifest) = self.cached(seen) {
                from_cache += 1;
                files.push((seen.clone(), manifest));
            } else {
                to_hash.push(seen.clone());
            }
        }
        let unchanged = self.folder.is_some()
            && to_hash.is_empty()
            && kept == files.len()
            && kept == previous.len();
        let previous = previous.len();
        if unchanged {
            self.report(unreadable);
            return Ok(());
        }
        self.stats.cached.fetch_add(from_cache, Ordering::Relaxed);
        if !to_hash.is_empty() {
            let tree = self.tree.clone();
            let rels: Vec<PathBuf> = to_hash.iter().map(|f| f.rel.clone()).collect();
            let hashed = tokio::task::spawn_blocking(move || tree.hash_files(to_hash))
                .await
                .map_err(|e| PeerError::Internal(e.to_string()))?;
            for (result, rel) in hashed.into_iter().zip(rels) {
                match result {
                    Ok((file, manifest)) => {
                        self.stats.hashed.fetch_add(1, Ordering::Relaxed);
                        self.remember(&file, &manifest);
                        files.push((file, manifest));
                    }
                    Err(err) => {
                        unreadable.insert(rel, err.to_string());
                    }
                }
            }
        }
        self.report(unreadable);
        // Only files that still can't be read were new: nothing changed.
        if self.folder.is_some() && kept == files.len() && kept == previous {
            return Ok(());
        }
        let tree = self.tree.clone();
        let shown = self.shown.clone();
        let folder = tokio::task::spawn_blocking(move || SharedFolder::new(tree, shown, files))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))??;
        let folder = Arc::new(folder);
        let old = self.folder.as_ref().map(|f| f.id());
        // What each path held, for the change's news (only when somebody listens).
        let previous_files: HashMap<String, FileId> = match (&self.changes, &self.folder) {
            (Some(_), Some(before)) => before
                .files()
                .map(|(path, manifest)| (path.to_owned(), manifest.id()))
                .collect(),
            _ => HashMap::new(),
        };
        if old == Some(folder.id()) {
            // Touched, not changed (a file rewritten with the same bytes): same record.
            self.folder = Some(folder.clone());
            self.peer.serve_folder(folder);
            self.save_cache().await;
            return Ok(());
        }
        info!(folder = %folder.id().fmt_short(), files = folder.head().files, "sharing the shared folder's new record");
        self.folder = Some(folder.clone());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(folder.id());
        // Forget the manifests of files that left the folder.
        let present: std::collections::HashSet<String> = folder
            .tree_files()
            .map(|(f, _)| self.tree.path_of(f).to_string_lossy().into_owned())
            .collect();
        let root = self.tree.root();
        self.cache
            .files
            .retain(|path, _| !Path::new(path).starts_with(root) || present.contains(path));
        let replaced = self.peer.replace_folder(old, folder.clone()).await;
        // Served under its new id now, whatever the index said (a warning, below).
        if let (Some(changes), Some(replaces)) = (&self.changes, old) {
            let _ = changes.send(FolderChange::between(
                &self.shown,
                previous_files,
                &folder,
                replaces,
            ));
        }
        self.save_cache().await;
        replaced
    }

    /// Warns about each thing in the folder that can't be read (`what` says which and why),
    /// unless the last scan said the same of it: a rescan every few seconds would repeat it.
    fn report(&mut self, what: HashMap<PathBuf, String>) {
        for (rel, why) in &what {
            if self.unreadable.get(rel) != Some(why) {
                warn!(
                    "{why}; sharing the rest of {} without it",
                    self.shown.display()
                );
            }
        }
        self.unreadable = what;
    }

    /// The manifest the cache has for `seen`, if it has one for this size and time.
    fn cached(&self, seen: &TreeFile) -> Option<FileManifest> {
        let key = self.tree.path_of(seen).to_string_lossy().into_owned();
        let entry = self.cache.files.get(&key)?;
        let modified =
            SystemTime::UNIX_EPOCH + Duration::new(entry.modified_secs, entry.modified_nanos);
        if entry.size != seen.size || modified != seen.modified {
            return None;
        }
        let doc = ManifestFile::parse(&entry.p2pm).ok()?;
        let name = seen.rel.file_name()?.to_str()?;
        (doc.manifest.size == seen.size && doc.manifest.name == name).then_some(doc.manifest)
    }

    /// Keeps `manifest` for `file` in the cache.
    fn remember(&mut self, file: &TreeFile, manifest: &FileManifest) {
        let since_epoch = file
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.cache.files.insert(
            self.tree.path_of(file).to_string_lossy().into_owned(),
            CacheEntry {
                size: file.size,
                modified_secs: since_epoch.as_secs(),
                modified_nanos: since_epoch.subsec_nanos(),
                p2pm: ManifestFile::new(manifest.clone(), Vec::new()).to_json(),
            },
        );
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
