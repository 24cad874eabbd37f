//! [`SourceFile`]: a registered file that chunks are served from, straight from the original.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
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

    /// Reads chunk `index` after checking the file did not change.
    pub fn read_chunk(&self, index: u32) -> Result<Bytes, StorageError> {
        let len = self
            .manifest
            .chunk_len(index)
            .ok_or(StorageError::ChunkOutOfRange {
                index,
                count: self.manifest.chunks.len(),
            })?;
        self.check_unchanged()?;
        // Read into uninitialised capacity: zeroing 4 MiB first would cost as much as a copy.
        let mut buf = Vec::with_capacity(len);
        let mut offset = self.manifest.chunk_offset(index);
        while buf.len() < len {
            // Appends what it reads and grows the length, within the capacity reserved above.
            let n = rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), offset)
                .map_err(|e| StorageError::io("cannot read", &self.path)(e.into()))?;
            if n == 0 {
                // Shorter than registered: it changed.
                return Err(StorageError::FileChanged(self.path.clone()));
            }
            offset += n as u64;
        }
        Ok(Bytes::from(buf))
    }
}
