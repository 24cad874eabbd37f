//! Hashing a file into a [`FileManifest`].
//!
//! The whole-file SHA-256 is one sequential pass; the chunk hashes are independent. So one
//! thread reads each chunk once and feeds the whole-file hasher while a second thread hashes
//! the same buffer as a chunk. On two cores a file registers in about the time a single
//! SHA-256 pass takes, instead of twice that.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread;
use std::time::SystemTime;

use p2p_protocol::{CHUNK_SIZE, FileManifest, MAX_CHUNKS_PER_FILE, ManifestError, Sha256Hash};
use sha2::{Digest, Sha256};

use crate::StorageError;

/// Chunks read ahead of the chunk hasher; bounds memory at (this + 2) x 4 MiB.
const READ_AHEAD: usize = 2;

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

/// Hashes the file at `path` into a manifest named after its base name.
///
/// Fails if the file is not a regular file, its name is unsafe to hand to others, it is too
/// large for one manifest, or it changes while being read.
pub fn build_manifest(path: &Path) -> Result<HashedFile, StorageError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StorageError::NotAFile(path.to_owned()))?
        .to_owned();
    let mut file = File::open(path).map_err(StorageError::io("cannot open", path))?;
    let before = file
        .metadata()
        .map_err(StorageError::io("cannot stat", path))?;
    if !before.is_file() {
        return Err(StorageError::NotAFile(path.to_owned()));
    }
    let size = before.len();
    // Refuse what can't become a valid manifest before reading a byte.
    p2p_protocol::validate_file_name(&name)?;
    if FileManifest::chunk_count_for(size, CHUNK_SIZE) > u64::from(MAX_CHUNKS_PER_FILE) {
        return Err(StorageError::Manifest {
            path: path.to_owned(),
            source: ManifestError::TooLarge(size),
        });
    }
    let mut manifest = FileManifest {
        name,
        size,
        chunk_size: CHUNK_SIZE,
        file_hash: Sha256Hash([0; 32]),
        chunks: Vec::new(),
    };
    let (file_hash, chunks) = hash_chunks(&mut file, &manifest, path)?;
    manifest.file_hash = file_hash;
    manifest.chunks = chunks;
    debug_assert_eq!(manifest.validate(), Ok(()));

    let after = std::fs::metadata(path).map_err(StorageError::io("cannot stat", path))?;
    let modified = before
        .modified()
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
    file: &mut File,
    manifest: &FileManifest,
    path: &Path,
) -> Result<(Sha256Hash, Vec<Sha256Hash>), StorageError> {
    let (work_tx, work_rx) = sync_channel::<Arc<Vec<u8>>>(READ_AHEAD);
    let (spare_tx, spare_rx) = channel::<Arc<Vec<u8>>>();
    thread::scope(|s| {
        let chunk_hasher = s.spawn(move || hash_each(work_rx, spare_tx));
        // read_all owns work_tx, so the chunk hasher sees the end of input however it returns.
        let whole = read_all(file, manifest, path, work_tx, spare_rx);
        let chunks = chunk_hasher.join().expect("chunk hasher thread panicked");
        Ok((whole?, chunks))
    })
}

fn hash_each(
    work: Receiver<Arc<Vec<u8>>>,
    spare: std::sync::mpsc::Sender<Arc<Vec<u8>>>,
) -> Vec<Sha256Hash> {
    let mut hashes = Vec::new();
    for buf in work {
        hashes.push(Sha256Hash::of(&buf));
        // Hand the buffer back for reuse; the reader may have finished already.
        let _ = spare.send(buf);
    }
    hashes
}

fn read_all(
    file: &mut File,
    manifest: &FileManifest,
    path: &Path,
    work: SyncSender<Arc<Vec<u8>>>,
    spare: Receiver<Arc<Vec<u8>>>,
) -> Result<Sha256Hash, StorageError> {
    let mut whole = Sha256::new();
    let count = FileManifest::chunk_count_for(manifest.size, manifest.chunk_size);
    for index in 0..count {
        let start = index * u64::from(manifest.chunk_size);
        let len = (manifest.size - start).min(u64::from(manifest.chunk_size)) as usize;
        let mut buf = spare
            .try_recv()
            .ok()
            .and_then(|b| Arc::try_unwrap(b).ok())
            .unwrap_or_default();
        buf.resize(len, 0);
        file.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StorageError::FileChanged(path.to_owned())
            } else {
                StorageError::io("cannot read", path)(e)
            }
        })?;
        whole.update(&buf);
        if work.send(Arc::new(buf)).is_err() {
            break;
        }
    }
    Ok(Sha256Hash(whole.finalize().into()))
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
        assert_eq!(m.file_hash, Sha256Hash::of(&data));
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
        assert_eq!(m.file_hash, Sha256Hash::of(b""));
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
