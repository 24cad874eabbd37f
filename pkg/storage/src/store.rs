//! [`PartFile`]: a download being assembled in `<out>/<name>.part`.
//!
//! Invariants:
//! * nothing is written to the part file until its chunk hash matched the manifest;
//! * the final name appears only after the whole-file hash matched, through a hard link that
//!   fails if the name exists (so an existing file is never replaced, not even in a race);
//! * names come from [`crate::path::output_path`], so nothing lands outside the output folder.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use p2p_protocol::{FileManifest, Sha256Hash};
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::path::{output_path, part_path};

/// Checks `data` against chunk `index` of `manifest`.
pub fn verify_chunk(manifest: &FileManifest, index: u32, data: &[u8]) -> Result<(), StorageError> {
    let expected_len = manifest
        .chunk_len(index)
        .ok_or(StorageError::ChunkOutOfRange {
            index,
            count: manifest.chunks.len(),
        })?;
    if data.len() != expected_len {
        return Err(StorageError::ChunkLength {
            index,
            expected: expected_len,
            got: data.len(),
        });
    }
    let expected = manifest.chunks[index as usize];
    let got = Sha256Hash::of(data);
    if got != expected {
        return Err(StorageError::HashMismatch {
            index,
            expected,
            got,
        });
    }
    Ok(())
}

/// A download in progress.
#[derive(Debug)]
pub struct PartFile {
    file: File,
    manifest: FileManifest,
    part_path: PathBuf,
    final_path: PathBuf,
}

impl PartFile {
    /// Prepares `<out_dir>/<name>.part` for `manifest`, after checking that the manifest is
    /// valid and that `<out_dir>/<name>` does not exist yet.
    pub fn create(out_dir: &Path, manifest: FileManifest) -> Result<Self, StorageError> {
        let final_path = output_path(out_dir, &manifest.name)?;
        manifest
            .validate()
            .map_err(|source| StorageError::Manifest {
                path: final_path.clone(),
                source,
            })?;
        if final_path.symlink_metadata().is_ok() {
            return Err(StorageError::AlreadyExists(final_path));
        }
        let part_path = part_path(&final_path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(StorageError::io("cannot create", &part_path))?;
        file.set_len(manifest.size)
            .map_err(StorageError::io("cannot size", &part_path))?;
        Ok(Self {
            file,
            manifest,
            part_path,
            final_path,
        })
    }

    /// The manifest being downloaded.
    pub fn manifest(&self) -> &FileManifest {
        &self.manifest
    }

    /// Where the finished file will be.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// The partial file.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// Verifies chunk `index` and, only if it matches, writes it at its offset.
    pub fn write_verified(&self, index: u32, data: &[u8]) -> Result<(), StorageError> {
        verify_chunk(&self.manifest, index, data)?;
        self.file
            .write_all_at(data, self.manifest.chunk_offset(index))
            .map_err(StorageError::io("cannot write to", &self.part_path))
    }

    /// Flushes the part file, checks the whole-file hash and moves it to its final name.
    /// On a hash mismatch the part file is removed (its content can never become valid).
    pub fn finish(self) -> Result<PathBuf, StorageError> {
        let part = &self.part_path;
        self.file
            .sync_all()
            .map_err(StorageError::io("cannot flush", part))?;
        let got = hash_file(&self.file, part)?;
        if got != self.manifest.file_hash {
            let _ = std::fs::remove_file(part);
            return Err(StorageError::FileHashMismatch {
                path: part.clone(),
                expected: self.manifest.file_hash,
                got,
            });
        }
        match std::fs::hard_link(part, &self.final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists(self.final_path));
            }
            // A file system without hard links: check, then rename (a narrow race we accept
            // only there).
            Err(_) if self.final_path.symlink_metadata().is_err() => {
                std::fs::rename(part, &self.final_path)
                    .map_err(StorageError::io("cannot rename", part))?;
                return Ok(self.final_path);
            }
            Err(e) => return Err(StorageError::io("cannot link", part)(e)),
        }
        std::fs::remove_file(part).map_err(StorageError::io("cannot remove", part))?;
        Ok(self.final_path)
    }
}

fn hash_file(file: &File, path: &Path) -> Result<Sha256Hash, StorageError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(StorageError::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(Sha256Hash(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use p2p_protocol::CHUNK_SIZE;

    use super::*;
    use crate::build_manifest;

    fn source(dir: &Path, name: &str, data: &[u8]) -> FileManifest {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(data).unwrap();
        build_manifest(&path).unwrap().manifest
    }

    #[test]
    fn verified_chunks_assemble_into_the_file() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let m = source(src.path(), "f.bin", &data);
        let part = PartFile::create(out.path(), m).unwrap();
        // Out of order, with a corrupt attempt first that must not reach the disk.
        let mut bad = data[CHUNK_SIZE as usize..].to_vec();
        bad[0] ^= 1;
        assert!(matches!(
            part.write_verified(1, &bad),
            Err(StorageError::HashMismatch { index: 1, .. })
        ));
        part.write_verified(1, &data[CHUNK_SIZE as usize..])
            .unwrap();
        part.write_verified(0, &data[..CHUNK_SIZE as usize])
            .unwrap();
        let path = part.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(!part_path(&path).exists());
    }

    #[test]
    fn existing_target_is_never_touched() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "f.bin", b"new content");
        std::fs::write(out.path().join("f.bin"), b"precious").unwrap();
        assert!(matches!(
            PartFile::create(out.path(), m.clone()),
            Err(StorageError::AlreadyExists(_))
        ));

        // Created between start and finish: still not replaced.
        std::fs::remove_file(out.path().join("f.bin")).unwrap();
        let part = PartFile::create(out.path(), m).unwrap();
        part.write_verified(0, b"new content").unwrap();
        std::fs::write(out.path().join("f.bin"), b"precious").unwrap();
        assert!(matches!(part.finish(), Err(StorageError::AlreadyExists(_))));
        assert_eq!(
            std::fs::read(out.path().join("f.bin")).unwrap(),
            b"precious"
        );
    }

    #[test]
    fn manifest_lying_about_the_whole_file_leaves_nothing() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut m = source(src.path(), "f.bin", b"abc");
        m.file_hash = Sha256Hash([9; 32]);
        let part = PartFile::create(out.path(), m).unwrap();
        part.write_verified(0, b"abc").unwrap();
        assert!(matches!(
            part.finish(),
            Err(StorageError::FileHashMismatch { .. })
        ));
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn unsafe_names_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let m = FileManifest {
            name: "../escape".into(),
            size: 0,
            chunk_size: CHUNK_SIZE,
            file_hash: Sha256Hash::of(b""),
            chunks: vec![],
        };
        assert!(matches!(
            PartFile::create(out.path(), m),
            Err(StorageError::UnsafeName(_))
        ));
    }
}
