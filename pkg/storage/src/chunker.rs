//! Hashing a file into a [`FileManifest`].
//!
//! A manifest is the list of its chunks' SHA-256 hashes and nothing else that needs the data,
//! so the chunks are hashed independently: every core takes the next chunk, reads it with a
//! positioned read into a buffer of its own and hashes it. Registration runs at the speed of
//! all cores' SHA-256 together, not one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::SystemTime;

use p2p_protocol::{CHUNK_SIZE, FileManifest, MAX_CHUNKS_PER_FILE, ManifestError, Sha256Hash};

use crate::StorageError;
use crate::source::OpenSource;

/// At most this many threads hash one file (each holds one 4 MiB buffer).
const MAX_HASHERS: usize = 8;

/// A manifest plus the on-disk facts that tell later whether the file changed.
#[derive(Clone, Debug)]
pub struct HashedFile {
    /// The manifest (its name is the file's base name).
    pub manifest: FileManifest,
    /// Size when hashed.
    pub len: u64,
    /// Modification time when hashed.
    pub modified: SystemTime,
}

/// Hashes the file at `path` into a manifest named after its base name, on every core. The
/// file is opened once, as [`OpenSource::open`] does (so a FIFO or device is refused at once,
/// never waited on), and hashed through that handle.
///
/// Fails if the file is not a regular file, its name is unsafe to hand to others, it is too
/// large for one manifest, or it changes while being read.
pub fn build_manifest(path: &Path) -> Result<HashedFile, StorageError> {
    hash_open(&OpenSource::open(path)?)
}

/// Hashes an opened file through its handle, on every core; fails if it changes meanwhile.
pub(crate) fn hash_open(opened: &OpenSource) -> Result<HashedFile, StorageError> {
    let path = opened.path();
    let name = opened.name().to_owned();
    let size = opened.len();
    let modified = opened.modified()?;
    // Refuse what can't become a valid manifest before reading a byte.
    p2p_protocol::validate_file_name(&name)?;
    if FileManifest::chunk_count_for(size, CHUNK_SIZE) > u64::from(MAX_CHUNKS_PER_FILE) {
        return Err(StorageError::Manifest {
            path: path.to_owned(),
            cause: ManifestError::TooLarge(size),
        });
    }
    let mut manifest = FileManifest {
        name,
        size,
        chunk_size: CHUNK_SIZE,
        chunks: Vec::new(),
    };
    manifest.chunks = hash_chunks(opened.file(), &manifest, path)?;
    debug_assert_eq!(manifest.validate(), Ok(()));

    // Through the handle: the file itself must not have changed while it was read.
    let after = opened
        .file()
        .metadata()
        .map_err(StorageError::io("cannot stat", path))?;
    if after.len() != size || after.modified().ok() != Some(modified) {
        return Err(StorageError::FileChanged(path.to_owned()));
    }
    Ok(HashedFile {
        manifest,
        len: size,
        modified,
    })
}

fn hash_chunks(
    file: &File,
    manifest: &FileManifest,
    path: &Path,
) -> Result<Vec<Sha256Hash>, StorageError> {
    let count = FileManifest::chunk_count_for(manifest.size, manifest.chunk_size) as u32;
    let all: Vec<u32> = (0..count).collect();
    hash_chunks_at(file, manifest, &all).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StorageError::FileChanged(path.to_owned())
        } else {
            StorageError::io("cannot read", path)(e)
        }
    })
}

/// SHA-256 of the chunks `indices` of `file`, laid out as `manifest` says (its `chunks` may
/// still be empty), in the order given. Runs on up to one thread per core: threads take the
/// next index from a shared counter, so a slow read on one never holds the others back, and
/// each reads with positioned reads into a buffer of its own. The first error stops them all.
pub(crate) fn hash_chunks_at(
    file: &File,
    manifest: &FileManifest,
    indices: &[u32],
) -> std::io::Result<Vec<Sha256Hash>> {
    let threads = thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_HASHERS)
        .min(indices.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let hash_some = || -> std::io::Result<Vec<(usize, Sha256Hash)>> {
        let mut buf = Vec::new();
        let mut hashed = Vec::new();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = indices.get(at) else {
                return Ok(hashed);
            };
            let start = u64::from(index) * u64::from(manifest.chunk_size);
            let len = manifest
                .size
                .saturating_sub(start)
                .min(u64::from(manifest.chunk_size));
            buf.resize(len as usize, 0);
            if let Err(e) = file.read_exact_at(&mut buf, start) {
                // Stop the other threads too.
                next.store(indices.len(), Ordering::Relaxed);
                return Err(e);
            }
            hashed.push((at, Sha256Hash::of(&buf)));
        }
    };
    let parts = thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(hash_some)).collect();
        let mut parts = vec![hash_some()];
        parts.extend(
            helpers
                .into_iter()
                .map(|h| h.join().expect("hashing thread panicked")),
        );
        parts
    });
    let mut hashes = vec![Sha256Hash([0; 32]); indices.len()];
    for part in parts {
        for (at, hash) in part? {
            hashes[at] = hash;
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rand::RngCore;

    use super::*;

    fn write_random(dir: &Path, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let mut data = vec![0u8; len];
        rand::rng().fill_bytes(&mut data);
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(&data).unwrap();
        (path, data)
    }

    #[test]
    fn manifest_matches_independent_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let len = 2 * CHUNK_SIZE as usize + 12345;
        let (path, data) = write_random(dir.path(), "x.bin", len);
        let hashed = build_manifest(&path).unwrap();
        let m = hashed.manifest;
        assert_eq!(m.name, "x.bin");
        assert_eq!(m.size, len as u64);
        let expected: Vec<_> = data
            .chunks(CHUNK_SIZE as usize)
            .map(Sha256Hash::of)
            .collect();
        assert_eq!(m.chunks, expected);
        m.validate().unwrap();
    }

    #[test]
    fn empty_and_exact_chunk_files() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_random(dir.path(), "empty", 0);
        let m = build_manifest(&path).unwrap().manifest;
        assert!(m.chunks.is_empty());
        let (path, data) = write_random(dir.path(), "one", CHUNK_SIZE as usize);
        let m = build_manifest(&path).unwrap().manifest;
        assert_eq!(m.chunks, vec![Sha256Hash::of(&data)]);
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            build_manifest(dir.path()),
            Err(StorageError::NotAFile(_))
        ));
        assert!(matches!(
            build_manifest(&dir.path().join("missing")),
            Err(StorageError::Io { .. })
        ));
    }
}
