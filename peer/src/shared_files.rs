//! [`SharedFiles`]: the files and folders this peer serves, by id.
//!
//! A file shared on its own ([`SourceFile`]) stays open: it was opened once, hashed and served
//! through that one handle. A folder (`SharedFolder`) keeps no file open; its files are
//! opened when a request comes and kept in a small cache (`OpenFiles`), so sharing 100,000
//! files takes a few hundred descriptors, not 100,000.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use p2p_protocol::{FileId, FileManifest, FolderId};
use p2p_storage::{SourceFile, StorageError};
use rustix::io::Errno;
use tracing::warn;

use crate::shared_folders::{OpenFiles, SharedFolder};

/// One shared file or folder, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFileInfo {
    /// Its id (for a folder, the folder id's bytes).
    pub file_id: FileId,
    /// Base name.
    pub name: String,
    /// Size in bytes (a folder: of all its files).
    pub size: u64,
    /// Where it is read from (a folder: the path it was shared by).
    pub path: PathBuf,
    /// `Some(n)` for a folder of `n` files.
    pub files: Option<u64>,
}

/// Why a request for a file can't be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserved {
    /// This peer shares no file with that id.
    Unknown,
    /// It did, but the file changed on disk since it was hashed.
    Changed,
    /// It is shared, but opening it failed for a reason that says nothing about the file
    /// (too many open files, an I/O error): it stays shared, ask again later.
    Failed,
}

/// A shared file as [`SharedFiles::find`] found it.
#[derive(Debug)]
pub enum Found {
    /// Open: ready to serve.
    Open(Arc<SourceFile>),
    /// A folder's file not open right now.
    Closed(ClosedFile),
}

/// A folder's file to open before serving it.
#[derive(Debug)]
pub struct ClosedFile {
    files: SharedFiles,
    file_id: FileId,
    folder: Arc<SharedFolder>,
    ix: u32,
}

impl Found {
    /// The file's manifest.
    pub fn manifest(&self) -> &FileManifest {
        match self {
            Found::Open(file) => file.manifest(),
            Found::Closed(closed) => closed.folder.manifest(closed.ix),
        }
    }

    /// The file, ready to serve. A folder's file is opened beneath the folder and checked to
    /// be the file that was hashed (same inode, size and modification time), then kept among
    /// the open ones; one that changed is no longer served. Blocking when closed: call it off
    /// the reactor (in the same blocking call that reads the chunk).
    pub fn open_blocking(self) -> Result<Arc<SourceFile>, Unserved> {
        let closed = match self {
            Found::Open(file) => return Ok(file),
            Found::Closed(closed) => closed,
        };
        let ClosedFile {
            files,
            file_id,
            folder,
            ix,
        } = closed;
        match folder.open(ix) {
            Ok(file) => {
                let file = Arc::new(file);
                files.lock().open.insert(file_id, file.clone());
                Ok(file)
            }
            Err(err) if means_changed(&err) => {
                warn!(%err, file = %file_id.fmt_short(), folder = %folder.root().display(), path = %folder.path(ix), "a file of a shared folder changed on disk since it was registered; no longer serving it");
                folder.mark_changed(ix);
                Err(Unserved::Changed)
            }
            Err(err) => {
                warn!(%err, file = %file_id.fmt_short(), folder = %folder.root().display(), path = %folder.path(ix), "cannot open a file of a shared folder; it stays shared");
                Err(Unserved::Failed)
            }
        }
    }
}

/// Whether a failed open of a folder's file means the file is no longer the one that was
/// hashed: changed, replaced, deleted or moved away, not a regular file any more, or no
/// longer readable by this peer (as for a file shared on its own, PROTOCOL.md §8.1). Any
/// other error (too many open files, out of memory, an I/O error) is this peer's own trouble
/// and says nothing about the file, which stays shared.
fn means_changed(err: &StorageError) -> bool {
    match err {
        StorageError::FileChanged(_) | StorageError::Replaced(_) | StorageError::NotAFile(_) => {
            true
        }
        // ELOOP: the file was replaced by a symbolic link (opens don't follow links).
        StorageError::Io { cause, .. } => {
            matches!(
                cause.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::PermissionDenied
            ) || Errno::from_io_error(cause) == Some(Errno::LOOP)
        }
        _ => false,
    }
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<FileId, Arc<SourceFile>>,
    folders: HashMap<FolderId, Arc<SharedFolder>>,
    /// Files of folders opened for requests.
    open: OpenFiles,
    /// Dropped because they changed on disk; the heartbeat task withdraws them from the index.
    withdrawn: Vec<FileId>,
    /// Folders shared until their files changed (now shared under a new id), the latest
    /// [`REPLACED_KEPT`]: asked for, they are `file_unavailable`, not unknown.
    replaced: VecDeque<FolderId>,
}

/// How many replaced folder ids are remembered.
const REPLACED_KEPT: usize = 64;

impl Inner {
    /// The folder holding `file_id`, and where in it.
    fn in_folder(&self, file_id: &FileId) -> Option<(Arc<SharedFolder>, u32)> {
        self.folders
            .values()
            .find_map(|f| f.find(file_id).map(|ix| (f.clone(), ix)))
    }
}

/// The files this peer serves. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SharedFiles {
    /// std Mutex: lookups and inserts only, never held across an await or a disk call.
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

    /// Starts serving a folder (again, if it was: the same id is the same record).
    pub(crate) fn insert_folder(&self, folder: Arc<SharedFolder>) {
        let mut inner = self.lock();
        let id = folder.id();
        inner.replaced.retain(|r| *r != id);
        if let Some(old) = inner.folders.insert(id, folder) {
            inner.open.remove_folder(&old);
        }
    }

    /// Stops serving a folder; returns it if it was shared.
    pub(crate) fn remove_folder(&self, folder_id: &FolderId) -> Option<Arc<SharedFolder>> {
        let mut inner = self.lock();
        let folder = inner.folders.remove(folder_id)?;
        inner.open.remove_folder(&folder);
        Some(folder)
    }

    /// Stops serving a folder whose files changed (it is shared under a new id now): asked
    /// for, it is [`Unserved::Changed`] from now on.
    pub(crate) fn retire_folder(&self, folder_id: &FolderId) -> Option<Arc<SharedFolder>> {
        let mut inner = self.lock();
        let folder = inner.folders.remove(folder_id)?;
        inner.open.remove_folder(&folder);
        if inner.replaced.len() == REPLACED_KEPT {
            inner.replaced.pop_front();
        }
        inner.replaced.push_back(*folder_id);
        Some(folder)
    }

    /// The shared folder with this id; one that was replaced because its files changed is
    /// [`Unserved::Changed`].
    pub(crate) fn folder(&self, folder_id: &FolderId) -> Result<Arc<SharedFolder>, Unserved> {
        let inner = self.lock();
        match inner.folders.get(folder_id) {
            Some(folder) => Ok(folder.clone()),
            None if inner.replaced.contains(folder_id) => Err(Unserved::Changed),
            None => Err(Unserved::Unknown),
        }
    }

    /// Every shared folder.
    pub(crate) fn folders(&self) -> Vec<Arc<SharedFolder>> {
        self.lock().folders.values().cloned().collect()
    }

    /// The file with this id, shared on its own or in a folder, without touching the disk:
    /// open already, or to be opened ([`Found::open_blocking`]).
    pub fn find(&self, file_id: &FileId) -> Result<Found, Unserved> {
        let mut inner = self.lock();
        if let Some(file) = inner.files.get(file_id) {
            return Ok(Found::Open(file.clone()));
        }
        if let Some(file) = inner.open.get(file_id) {
            return Ok(Found::Open(file));
        }
        let (folder, ix) = inner.in_folder(file_id).ok_or(Unserved::Unknown)?;
        if folder.is_changed(ix) {
            return Err(Unserved::Changed);
        }
        Ok(Found::Closed(ClosedFile {
            files: self.clone(),
            file_id: *file_id,
            folder,
            ix,
        }))
    }

    /// The manifest of the file with this id, shared on its own or in a folder. A file shared
    /// on its own is checked against the disk first (blocking) and withdrawn if it changed;
    /// a folder's file answers from memory unless it was seen changed.
    pub fn manifest(&self, file_id: &FileId) -> Result<FileManifest, Unserved> {
        let (folder, ix) = {
            let inner = self.lock();
            match inner.files.get(file_id) {
                Some(file) => {
                    let file = file.clone();
                    drop(inner);
                    if file.check_unchanged().is_err() {
                        self.withdraw_changed(file_id);
                        return Err(Unserved::Changed);
                    }
                    return Ok(file.manifest().clone());
                }
                None => inner.in_folder(file_id).ok_or(Unserved::Unknown)?,
            }
        };
        if folder.is_changed(ix) {
            return Err(Unserved::Changed);
        }
        Ok(folder.manifest(ix).clone())
    }

    /// Stops serving a file shared on its own; returns whether it was.
    pub fn remove(&self, file_id: &FileId) -> bool {
        self.lock().files.remove(file_id).is_some()
    }

    /// Stops serving a file that changed on disk: one shared on its own is dropped and its
    /// withdrawal from the index queued; a folder's file is no longer served (the folder's
    /// record stays as it is).
    pub fn withdraw_changed(&self, file_id: &FileId) {
        let mut inner = self.lock();
        if let Some(file) = inner.files.remove(file_id) {
            warn!(file = %file_id.fmt_short(), path = %file.path().display(), "file changed on disk since it was registered; no longer sharing it");
            inner.withdrawn.push(*file_id);
            return;
        }
        inner.open.remove(file_id);
        if let Some((folder, ix)) = inner.in_folder(file_id) {
            folder.mark_changed(ix);
        }
    }

    /// Checks every file shared on its own against the disk and withdraws those that
    /// changed. (A folder's files are checked when they are opened.)
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

    /// Every file shared on its own and every folder (one line each), sorted by name.
    pub fn list(&self) -> Vec<SharedFileInfo> {
        let inner = self.lock();
        let files = inner.files.iter().map(|(id, f)| SharedFileInfo {
            file_id: *id,
            name: f.manifest().name.clone(),
            size: f.manifest().size,
            path: f.path().to_owned(),
            files: None,
        });
        let folders = inner.folders.values().map(|f| SharedFileInfo {
            file_id: FileId(f.id().0),
            name: f.head().name.clone(),
            size: f.head().size,
            path: f.shown().to_owned(),
            files: Some(f.head().files),
        });
        let mut list: Vec<SharedFileInfo> = files.chain(folders).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_id.cmp(&b.file_id)));
        list
    }

    /// How many files are shared, on their own and in folders.
    pub fn count(&self) -> u64 {
        let inner = self.lock();
        inner.files.len() as u64 + inner.folders.values().map(|f| f.head().files).sum::<u64>()
    }

    /// Manifests of every file shared on its own, for re-registration.
    pub fn manifests(&self) -> Vec<FileManifest> {
        self.lock()
            .files
            .values()
            .map(|f| f.manifest().clone())
            .collect()
    }

    /// Every file shared, those of folders included (path: the folder's as shared, then the
    /// file's in it), sorted by path.
    pub fn every_file(&self) -> Vec<SharedFileInfo> {
        let inner = self.lock();
        let files = inner.files.iter().map(|(id, f)| SharedFileInfo {
            file_id: *id,
            name: f.manifest().name.clone(),
            size: f.manifest().size,
            path: f.path().to_owned(),
            files: None,
        });
        let in_folders = inner.folders.values().flat_map(|folder| {
            folder.files().map(|(path, m)| SharedFileInfo {
                file_id: m.id(),
                name: m.name.clone(),
                size: m.size,
                path: folder.shown().join(path),
                files: None,
            })
        });
        let mut list: Vec<SharedFileInfo> = files.chain(in_folders).collect();
        list.sort_by(|a, b| a.path.cmp(&b.path));
        list
    }

    /// How many files of folders are open right now.
    pub fn open_folder_files(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_folders::OPEN_HANDLES;
    use crate::shared_folders::tests::shared;

    #[test]
    fn a_folders_files_are_found_by_id_and_at_most_256_stay_open() {
        let (dir, folder) = shared(OPEN_HANDLES + 50);
        let files = SharedFiles::default();
        let folder = Arc::new(folder);
        files.insert_folder(folder.clone());
        assert_eq!(files.count(), (OPEN_HANDLES + 50) as u64);
        let listed = files.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].files, Some((OPEN_HANDLES + 50) as u64));
        assert_eq!(listed[0].file_id.0, folder.id().0);

        for (path, manifest) in folder.files() {
            let id = manifest.id();
            assert!(matches!(files.find(&id), Ok(Found::Closed(_))), "{path}");
            let opened = files.find(&id).unwrap().open_blocking().unwrap();
            assert_eq!(opened.manifest(), manifest);
            assert!(matches!(files.find(&id), Ok(Found::Open(_))), "kept open");
            assert_eq!(files.manifest(&id), Ok(manifest.clone()));
            assert!(files.open_folder_files() <= OPEN_HANDLES);
        }
        assert_eq!(files.open_folder_files(), OPEN_HANDLES);

        // A file that changed on disk is no longer served, whether open or not.
        let (path, manifest) = folder.files().next().unwrap();
        let id = manifest.id();
        std::fs::write(dir.path().join("album").join(path), b"changed").unwrap();
        files.withdraw_changed(&id);
        assert!(matches!(files.find(&id), Err(Unserved::Changed)));
        assert_eq!(files.manifest(&id), Err(Unserved::Changed));
        let (path, manifest) = folder.files().nth(1).unwrap();
        std::fs::write(dir.path().join("album").join(path), b"changed too").unwrap();
        let found = files.find(&manifest.id()).unwrap();
        assert!(matches!(found, Found::Closed(_)), "evicted long ago");
        assert!(matches!(found.open_blocking(), Err(Unserved::Changed)));
        assert!(
            files.take_withdrawn().is_empty(),
            "the folder stays on the index"
        );

        assert!(files.remove_folder(&folder.id()).is_some());
        assert_eq!(files.open_folder_files(), 0);
        assert!(matches!(files.find(&id), Err(Unserved::Unknown)));
    }

    #[test]
    fn a_file_that_fails_to_open_for_the_peers_own_reasons_stays_shared() {
        let (dir, folder) = shared(3);
        let files = SharedFiles::default();
        let folder = Arc::new(folder);
        files.insert_folder(folder.clone());
        let (_, manifest) = folder.files().next().unwrap();
        let id = manifest.id();
        let emfile = || StorageError::Io {
            action: "cannot open",
            path: "album/d0/f0".into(),
            cause: std::io::Error::from_raw_os_error(Errno::MFILE.raw_os_error()),
        };
        let eio = StorageError::Io {
            action: "cannot open",
            path: "album/d0/f0".into(),
            cause: std::io::Error::from_raw_os_error(Errno::IO.raw_os_error()),
        };
        *folder.failing_opens.lock().unwrap() = vec![eio, emfile(), emfile()];
        for _ in 0..3 {
            let found = files.find(&id).unwrap();
            assert!(matches!(found.open_blocking(), Err(Unserved::Failed)));
            assert_eq!(files.manifest(&id), Ok(manifest.clone()), "still shared");
        }
        // Once the peer can open files again, the file is served as before.
        let opened = files.find(&id).unwrap().open_blocking().unwrap();
        assert_eq!(opened.manifest(), manifest);

        // An open that finds the file gone (deleted, moved) withdraws it.
        let (path, gone) = folder.files().nth(1).unwrap();
        std::fs::remove_file(dir.path().join("album").join(path)).unwrap();
        let found = files.find(&gone.id()).unwrap();
        assert!(matches!(found.open_blocking(), Err(Unserved::Changed)));
        assert!(matches!(files.find(&gone.id()), Err(Unserved::Changed)));
    }

    #[test]
    fn only_errors_about_the_file_mean_it_changed() {
        let io = |errno: Errno| StorageError::Io {
            action: "cannot open",
            path: "x".into(),
            cause: std::io::Error::from_raw_os_error(errno.raw_os_error()),
        };
        for errno in [Errno::NOENT, Errno::NOTDIR, Errno::LOOP, Errno::ACCESS] {
            assert!(means_changed(&io(errno)), "{errno:?}");
        }
        for errno in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::IO,
            Errno::INTR,
        ] {
            assert!(!means_changed(&io(errno)), "{errno:?}");
        }
        assert!(means_changed(&StorageError::FileChanged("x".into())));
        assert!(means_changed(&StorageError::Replaced("x".into())));
        assert!(means_changed(&StorageError::NotAFile("x".into())));
    }
}
