//! [`SourceFile`]: a registered file that chunks are served from, straight from the original.
//!
//! A file to share is opened exactly once ([`OpenSource`]), and everything after that (hashing,
//! the checks, serving) goes through that one handle, never through the path again. The open
//! follows no final symlink, never blocks (a FIFO or a device can't hang it), and what it
//! opened must be a regular file; files of a shared folder are opened through a handle on the
//! folder ([`crate::tree::Tree`]) and must be the very file its walk saw. So a file swapped for
//! a link (to a private key, say) between the walk and the open is refused, not served.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use p2p_protocol::FileManifest;

use crate::StorageError;
use crate::chunker::HashedFile;

/// Flags for every open of a file to share: no final symlink, no controlling terminal, and
/// non-blocking, so that opening a FIFO returns at once instead of waiting for a writer (the
/// file type is checked right after).
pub(crate) fn source_open_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY)
        .bits() as i32
}

/// A file opened to be shared, checked to be a regular file, with what its handle said about
/// it at that moment.
#[derive(Debug)]
pub struct OpenSource {
    file: File,
    /// The base name it is shared under: the name the user gave (a symlink's own name, when
    /// the user named a symlink), or its name in the shared folder.
    name: String,
    path: PathBuf,
    meta: std::fs::Metadata,
}

impl OpenSource {
    /// Opens a file the user named: its symlinks are resolved once, then the resolved path is
    /// opened without following a link (so nothing can be swapped in after the resolution)
    /// and without blocking. A FIFO, device, socket or folder is refused with
    /// [`StorageError::NotAFile`].
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let name = base_name(path)?;
        let resolved =
            std::fs::canonicalize(path).map_err(StorageError::io("cannot open", path))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(source_open_flags())
            .open(&resolved)
            .map_err(StorageError::io("cannot open", path))?;
        Self::check(file, name, resolved)
    }

    /// Takes a freshly opened handle and refuses anything but a regular file.
    pub(crate) fn check(file: File, name: String, path: PathBuf) -> Result<Self, StorageError> {
        let meta = file
            .metadata()
            .map_err(StorageError::io("cannot stat", &path))?;
        if !meta.is_file() {
            return Err(StorageError::NotAFile(path));
        }
        Ok(Self {
            file,
            name,
            path,
            meta,
        })
    }

    /// The base name it is shared under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the file is (with symlinks resolved); for messages and for noticing that the
    /// name now leads to another file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size when opened.
    pub fn len(&self) -> u64 {
        self.meta.len()
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.meta.len() == 0
    }

    /// Modification time when opened.
    pub fn modified(&self) -> Result<SystemTime, StorageError> {
        self.meta
            .modified()
            .map_err(StorageError::io("cannot stat", &self.path))
    }

    /// The open handle.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// (device, inode) of the opened file.
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.meta.dev(), self.meta.ino())
    }
}

/// The last component of `path` as UTF-8, the name a file is shared under.
pub(crate) fn base_name(path: &Path) -> Result<String, StorageError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| StorageError::NotAFile(path.to_owned()))
}

/// A file this peer shares. Reads use positioned I/O on the one handle it was opened and
/// hashed through, so concurrent requests never share a cursor and a name swapped on disk
/// later never changes what is served.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    file: File,
    manifest: FileManifest,
    len: u64,
    modified: SystemTime,
    /// (device, inode) when opened: the path must still lead to this file.
    identity: (u64, u64),
}

impl SourceFile {
    /// Hashes `opened` through its handle and serves it from that same handle.
    pub fn hash(opened: OpenSource) -> Result<Self, StorageError> {
        let hashed = crate::chunker::hash_open(&opened)?;
        Ok(Self::with_manifest(opened, hashed))
    }

    /// Serves `opened` with a manifest known from before (a cache of earlier hashes), which
    /// must describe the file as it was opened: same size and modification time.
    pub fn cached(opened: OpenSource, hashed: HashedFile) -> Result<Self, StorageError> {
        if hashed.len != opened.len() || Some(hashed.modified) != opened.modified().ok() {
            return Err(StorageError::FileChanged(opened.path));
        }
        Ok(Self::with_manifest(opened, hashed))
    }

    fn with_manifest(opened: OpenSource, hashed: HashedFile) -> Self {
        let identity = opened.identity();
        Self {
            path: opened.path,
            file: opened.file,
            manifest: hashed.manifest,
            len: hashed.len,
            modified: hashed.modified,
            identity,
        }
    }

    /// Serves a download this process just assembled and verified against `manifest`,
    /// through the handle it was written with (never by its name, which someone could have
    /// swapped for a link since), without hashing it again. `path` is where it was named.
    pub(crate) fn assembled(
        file: File,
        path: PathBuf,
        manifest: FileManifest,
    ) -> Result<Self, StorageError> {
        let opened = OpenSource::check(file, manifest.name.clone(), path)?;
        if opened.len() != manifest.size {
            return Err(StorageError::FileChanged(opened.path));
        }
        let hashed = HashedFile {
            len: opened.len(),
            modified: opened.modified()?,
            manifest,
        };
        Ok(Self::with_manifest(opened, hashed))
    }

    /// The file's manifest.
    pub fn manifest(&self) -> &FileManifest {
        &self.manifest
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file still has the size and modification time it was hashed with (edited
    /// in place: no), and its path still leads to it (replaced, moved away, or swapped for a
    /// link: no). Such a file must not be served any more.
    pub fn check_unchanged(&self) -> Result<(), StorageError> {
        let changed = || StorageError::FileChanged(self.path.clone());
        let meta = self.file.metadata().map_err(|_| changed())?;
        if meta.len() != self.len || meta.modified().ok() != Some(self.modified) {
            return Err(changed());
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(at_path) if (at_path.dev(), at_path.ino()) == self.identity => Ok(()),
            _ => Err(changed()),
        }
    }

    /// Where chunk `index` lies in the file, after checking that the file did not change;
    /// asks the kernel to start reading that range into the page cache, so that reading it
    /// piece by piece while it is sent rarely waits for the disk.
    /// Blocking: the metadata check touches the disk.
    pub fn prepare_chunk(&self, index: u32) -> Result<ChunkRange, StorageError> {
        let len = self
            .manifest
            .chunk_len(index)
            .ok_or(StorageError::ChunkOutOfRange {
                index,
                count: self.manifest.chunks.len(),
            })?;
        self.check_unchanged()?;
        let offset = self.manifest.chunk_offset(index);
        // A hint: a failure only means the send may wait for the disk.
        let _ = rustix::fs::fadvise(
            &self.file,
            offset,
            std::num::NonZeroU64::new(len as u64),
            rustix::fs::Advice::WillNeed,
        );
        Ok(ChunkRange { offset, len })
    }
}

impl SourceFile {
    /// Fills `buf` with the file's bytes at `offset`, through the handle it was hashed with.
    /// A file that ends sooner has changed since it was hashed
    /// ([`StorageError::FileChanged`]). Blocking.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StorageError::FileChanged(self.path.clone())
            } else {
                StorageError::io("cannot read", &self.path)(e)
            }
        })
    }
}

/// Where a chunk lies in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    /// Byte offset of its first byte.
    pub offset: u64,
    /// Its length in bytes.
    pub len: usize,
}
