//! [`SourceFile`]: a registered file that chunks are served from, straight from the original.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use p2p_protocol::FileManifest;

use crate::StorageError;
use crate::chunker::HashedFile;

/// A file this peer shares. Reads use positioned I/O on one open handle, so concurrent
/// requests never share a cursor.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    file: File,
    manifest: FileManifest,
    len: u64,
    modified: SystemTime,
}

impl SourceFile {
    /// Opens `path`, which `hashed` describes.
    pub fn open(path: &Path, hashed: HashedFile) -> Result<Self, StorageError> {
        let file = File::open(path).map_err(StorageError::io("cannot open", path))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            manifest: hashed.manifest,
            len: hashed.len,
            modified: hashed.modified,
        })
    }

    /// Opens a file this process just assembled and verified against `manifest` (a finished
    /// download), without hashing it again.
    pub fn open_verified(path: &Path, manifest: FileManifest) -> Result<Self, StorageError> {
        let file = File::open(path).map_err(StorageError::io("cannot open", path))?;
        let meta = file
            .metadata()
            .map_err(StorageError::io("cannot stat", path))?;
        if meta.len() != manifest.size {
            return Err(StorageError::FileChanged(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            manifest,
            len: meta.len(),
            modified: meta
                .modified()
                .map_err(StorageError::io("cannot stat", path))?,
        })
    }

    /// The file's manifest.
    pub fn manifest(&self) -> &FileManifest {
        &self.manifest
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the path still has the size and modification time it was hashed
    /// with. A file edited in place or replaced fails this and must not be served.
    pub fn check_unchanged(&self) -> Result<(), StorageError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Deleted, moved away, or its folder replaced: it can't be vouched for any more.
            Err(_) => return Err(StorageError::FileChanged(self.path.clone())),
        };
        if meta.len() != self.len || meta.modified().ok() != Some(self.modified) {
            return Err(StorageError::FileChanged(self.path.clone()));
        }
        Ok(())
    }

    /// Where chunk `index` lies in the file, after checking that the file did not change;
    /// asks the kernel to start reading that range into the page cache, so that sending it
    /// (with `sendfile`, straight from the page cache to the socket) rarely waits for the disk.
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

/// The open file, for sending ranges of it (`sendfile`).
impl std::os::fd::AsFd for SourceFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
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
