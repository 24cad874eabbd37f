//! [`SharedFiles`]: the files this peer serves, by id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use p2p_protocol::FileId;
use p2p_storage::SourceFile;
use tracing::warn;

/// One shared file, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFileInfo {
    /// Its id.
    pub file_id: FileId,
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it is read from.
    pub path: PathBuf,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<FileId, Arc<SourceFile>>,
    /// Dropped because they changed on disk; the heartbeat task withdraws them from the index.
    withdrawn: Vec<FileId>,
}

/// The files this peer serves. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SharedFiles {
    /// std Mutex: lookups and inserts only, never held across an await.
    inner: Arc<Mutex<Inner>>,
}

impl SharedFiles {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving `file`.
    pub fn insert(&self, file_id: FileId, file: Arc<SourceFile>) {
        self.lock().files.insert(file_id, file);
    }

    /// The file with this id, if shared.
    pub fn get(&self, file_id: &FileId) -> Option<Arc<SourceFile>> {
        self.lock().files.get(file_id).cloned()
    }

    /// Stops serving a file; returns whether it was shared.
    pub fn remove(&self, file_id: &FileId) -> bool {
        self.lock().files.remove(file_id).is_some()
    }

    /// Stops serving a file that changed on disk and queues its withdrawal from the index.
    pub fn withdraw_changed(&self, file_id: &FileId) {
        let mut inner = self.lock();
        if let Some(file) = inner.files.remove(file_id) {
            warn!(file = %file_id.fmt_short(), path = %file.path().display(), "file changed on disk since it was registered; no longer sharing it");
            inner.withdrawn.push(*file_id);
        }
    }

    /// Checks every file against the disk and withdraws those that changed.
    pub fn withdraw_all_changed(&self) {
        let files: Vec<(FileId, Arc<SourceFile>)> = self
            .lock()
            .files
            .iter()
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        for (id, file) in files {
            if file.check_unchanged().is_err() {
                self.withdraw_changed(&id);
            }
        }
    }

    /// Takes the ids waiting to be withdrawn from the index.
    pub fn take_withdrawn(&self) -> Vec<FileId> {
        std::mem::take(&mut self.lock().withdrawn)
    }

    /// Every shared file, sorted by name.
    pub fn list(&self) -> Vec<SharedFileInfo> {
        let mut list: Vec<SharedFileInfo> = self
            .lock()
            .files
            .iter()
            .map(|(id, f)| SharedFileInfo {
                file_id: *id,
                name: f.manifest().name.clone(),
                size: f.manifest().size,
                path: f.path().to_owned(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_id.cmp(&b.file_id)));
        list
    }

    /// Manifests of every shared file, for re-registration.
    pub fn manifests(&self) -> Vec<p2p_protocol::FileManifest> {
        self.lock()
            .files
            .values()
            .map(|f| f.manifest().clone())
            .collect()
    }
}
