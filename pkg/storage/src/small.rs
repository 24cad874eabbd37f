//! Whole small files of a download, written in batches: the files of a folder that fit in one
//! chunk of at most [`SMALL_FILE`] bytes, verified in memory before anything is written.
//!
//! A [`PartFile`](crate::PartFile) costs a record file, an `O_DIRECT` handle, a free-space
//! check and an `fsync` per file, which is nothing next to a 4 MiB chunk and most of the work
//! for a 20 KB file. A batch instead:
//! 1. checks the free space once for the whole batch;
//! 2. writes each file as `<name>.part` (created exclusively, locked, no link followed),
//!    through a handle on its folder opened once per folder in the batch;
//! 3. flushes every file of the batch to disk at once (see `store.rs`'s invariants for why
//!    by parallel `fdatasync`s and not `syncfs`);
//! 4. gives each its name with the same no-overwrite hard link as a [`PartFile`](crate::PartFile).
//!
//! So the invariants of `store.rs` hold for small files too: only verified bytes are written,
//! a name appears only for a whole file that is on disk, never over an existing file and never
//! outside the output folder. A `<name>.part` a crash left behind has no record beside it; it
//! is taken over only if it is a plain file of ours, not linked elsewhere, and already holds
//! exactly the file (checked by hash), or if it carries our record (a big-file download of the
//! same name); anything else is not ours and is left alone.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};
use p2p_protocol::{FileManifest, validate_file_name};

use crate::StorageError;
use crate::path::PART_SUFFIX;
use crate::store::{
    RECORD_MAGIC, RECORD_SUFFIX, check_space, link_into_place, lock, open_subdir, read_nofollow,
    verify_chunk, write_error,
};

/// The largest file written as a small file (it must also be a single chunk).
pub const SMALL_FILE: u64 = 1024 * 1024;

/// Files flushed together at most: one batch.
pub const SMALL_BATCH: usize = 128;

/// Whether `manifest` is a file for [`write_batch`]: empty, or one chunk of at most
/// [`SMALL_FILE`] bytes.
pub fn is_small(manifest: &FileManifest) -> bool {
    manifest.chunks.len() <= 1 && manifest.size <= SMALL_FILE
}

/// One file of a batch.
#[derive(Clone, Copy, Debug)]
pub struct SmallFile<'a> {
    /// Its folder under the output folder, one name per level.
    pub subdir: &'a [String],
    /// Its manifest ([`is_small`]).
    pub manifest: &'a FileManifest,
    /// Its bytes as received (verified here before a byte is written, unless `verified`).
    pub data: &'a [u8],
    /// The caller checked `data` against `manifest` with
    /// [`verify_chunk`] already: not hashed again.
    pub verified: bool,
    /// Keep a handle to serve the finished file from ([`SmallDone::source`]).
    pub share: bool,
}

/// A small file in place.
#[derive(Debug)]
pub struct SmallDone {
    /// Where it is.
    pub path: PathBuf,
    /// The handle it was written with, when asked for ([`SmallFile::share`]).
    pub source: Option<crate::SourceFile>,
}

/// The output folder small files are written under, opened once for a whole download.
#[derive(Debug)]
pub struct OutputDir {
    dir: Dir,
    path: PathBuf,
}

impl OutputDir {
    /// Opens the folder at `path` (a link the user chose as output folder is followed, as
    /// everywhere else; nothing below it is).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(StorageError::io("cannot open output folder", path))?;
        Ok(Self {
            dir,
            path: path.to_owned(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the folder `subdir` (one safe name per level) under it, the way a batch does:
    /// each level through the handle of the one above, never leading outside. Returns its
    /// path.
    pub fn make_folder(&self, subdir: &[String]) -> Result<PathBuf, StorageError> {
        open_subdir(&self.dir, &self.path, subdir).map(|(_, path)| path)
    }
}

/// A file of the batch written and not yet named.
struct Written {
    dir: Arc<Dir>,
    file: File,
    part_name: String,
    part_path: PathBuf,
    final_path: PathBuf,
    /// A record of ours was beside the part file: removed once the file is named.
    record: bool,
}

/// Writes `files` under `out`, flushes them to disk and names them. Returns one result per
/// file, in order: a file that fails does not stop the others. Blocking.
pub fn write_batch(
    out: &OutputDir,
    files: &[SmallFile<'_>],
) -> Vec<Result<SmallDone, StorageError>> {
    let (root, root_path) = (&out.dir, out.path.as_path());
    let needed = files.iter().map(|f| f.manifest.size).sum();
    if let Err(StorageError::NoSpace {
        path,
        needed,
        available,
    }) = check_space(root, root_path, needed)
    {
        let refused = || StorageError::NoSpace {
            path: path.clone(),
            needed,
            available,
        };
        return files.iter().map(|_| Err(refused())).collect();
    }
    // Files come in path order, so the folder of the one before is usually the right one.
    let mut folder: Option<(&[String], Arc<Dir>, PathBuf)> = None;
    let mut written: Vec<Result<Written, StorageError>> = Vec::with_capacity(files.len());
    for file in files {
        let opened = match &folder {
            Some((subdir, dir, path)) if *subdir == file.subdir => Ok((dir.clone(), path.clone())),
            _ => open_subdir(root, root_path, file.subdir).map(|(dir, path)| {
                let dir = Arc::new(dir);
                folder = Some((file.subdir, dir.clone(), path.clone()));
                (dir, path)
            }),
        };
        written.push(opened.and_then(|(dir, path)| write_one(dir, &path, file)));
    }
    let synced = sync_all(&written);
    written
        .into_iter()
        .zip(synced)
        .zip(files)
        .map(|((written, synced), file)| {
            let written = written?;
            synced.map_err(|e| {
                let _ = written.dir.remove_file(&written.part_name);
                write_error(e, &written.part_path)
            })?;
            name(written, file)
        })
        .collect()
}

/// Verifies one file and writes it as `<name>.part` in `dir` (at `path`).
fn write_one(dir: Arc<Dir>, path: &Path, small: &SmallFile<'_>) -> Result<Written, StorageError> {
    let manifest = small.manifest;
    validate_file_name(&manifest.name)?;
    let final_path = path.join(&manifest.name);
    manifest
        .validate()
        .map_err(|cause| StorageError::Manifest {
            path: final_path.clone(),
            cause,
        })?;
    if !is_small(manifest) {
        // Only its first chunk could be here: the caller should have used a PartFile.
        return Err(StorageError::Incomplete {
            path: final_path,
            missing: manifest.chunks.len().saturating_sub(1),
        });
    }
    if manifest.chunks.is_empty() {
        if !small.data.is_empty() {
            return Err(StorageError::ChunkOutOfRange { index: 0, count: 0 });
        }
    } else if !small.verified {
        verify_chunk(manifest, 0, small.data)?;
    }
    if dir.symlink_metadata(&manifest.name).is_ok() {
        return Err(StorageError::AlreadyExists(final_path));
    }
    let part_name = format!("{}{PART_SUFFIX}", manifest.name);
    let part_path = path.join(&part_name);
    let (file, record) = match create_part(&dir, &part_name) {
        Ok(mut file) => {
            lock(&file, &part_path)?;
            file.write_all(small.data).map_err(|e| {
                let _ = dir.remove_file(&part_name);
                write_error(e, &part_path)
            })?;
            (file, false)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            take_over(&dir, &part_name, &part_path, small)?
        }
        Err(e) => return Err(StorageError::io("cannot create", &part_path)(e)),
    };
    Ok(Written {
        dir,
        file,
        part_name,
        part_path,
        final_path,
        record,
    })
}

/// Creates `name` in `dir` exclusively (which never follows a link), for reading and writing.
fn create_part(dir: &Dir, name: &str) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    Ok(dir.open_with(name, &options)?.into_std())
}

/// A `<name>.part` is there already. It is used only if it is a plain file of ours with no
/// other link, not held by another download, and either has our record beside it (then it is
/// rewritten) or already holds exactly this file (a crash came between writing and naming it).
/// Returns it and whether it has a record.
fn take_over(
    dir: &Dir,
    part_name: &str,
    part_path: &Path,
    small: &SmallFile<'_>,
) -> Result<(File, bool), StorageError> {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    use cap_std::fs::OpenOptionsExt;
    use std::os::unix::fs::MetadataExt;
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .follow(FollowSymlinks::No)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    let file = match dir.open_with(part_name, &options) {
        Ok(file) => file.into_std(),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(StorageError::NotAFile(part_path.to_owned()));
        }
        Err(e) => return Err(StorageError::io("cannot open", part_path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(StorageError::io("cannot stat", part_path))?;
    if !meta.is_file() {
        return Err(StorageError::NotAFile(part_path.to_owned()));
    }
    lock(&file, part_path)?;
    if meta.nlink() != 1 || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(StorageError::PartLinked(part_path.to_owned()));
    }
    let record_name = format!("{part_name}{RECORD_SUFFIX}");
    let recorded = read_nofollow(dir, &record_name, RECORD_MAGIC.len())
        .is_ok_and(|r| r.starts_with(RECORD_MAGIC));
    if recorded {
        file.set_len(0)
            .and_then(|()| file.write_all_at(small.data, 0))
            .map_err(|e| write_error(e, part_path))?;
        return Ok((file, true));
    }
    let size = small.manifest.size;
    if meta.len() == size {
        let mut there = vec![0u8; size as usize];
        file.read_exact_at(&mut there, 0)
            .map_err(StorageError::io("cannot read", part_path))?;
        if there == small.data {
            return Ok((file, false));
        }
    }
    Err(StorageError::NotOurs(part_path.to_owned()))
}

/// Flushes every written file's data to disk, in parallel ([`crate::flush`]).
fn sync_all(written: &[Result<Written, StorageError>]) -> Vec<std::io::Result<()>> {
    let files: Vec<Option<&File>> = written
        .iter()
        .map(|w| w.as_ref().ok().map(|w| &w.file))
        .collect();
    crate::flush::sync_data_all(&files)
}

/// Gives a written and flushed file its name.
fn name(written: Written, small: &SmallFile<'_>) -> Result<SmallDone, StorageError> {
    let Written {
        dir,
        file,
        part_name,
        part_path,
        final_path,
        record,
    } = written;
    let final_name = &small.manifest.name;
    let linked = link_into_place(
        &dir,
        &file,
        (&part_name, &part_path),
        (final_name, &final_path),
    );
    if let Err(err) = linked {
        // Someone's file took the name meanwhile: ours was written for nothing. (A part file
        // swapped under us is not ours to remove.)
        if !record && matches!(err, StorageError::AlreadyExists(_)) {
            let _ = dir.remove_file(&part_name);
        }
        return Err(err);
    }
    if record {
        let _ = dir.remove_file(format!("{part_name}{RECORD_SUFFIX}"));
    }
    let source = if small.share {
        Some(crate::SourceFile::assembled(
            file,
            final_path.clone(),
            small.manifest.clone(),
        )?)
    } else {
        None
    };
    Ok(SmallDone {
        path: final_path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use p2p_protocol::{CHUNK_SIZE, Sha256Hash};

    use super::*;

    fn manifest(name: &str, data: &[u8]) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: data.len() as u64,
            chunk_size: CHUNK_SIZE,
            chunks: if data.is_empty() {
                vec![]
            } else {
                vec![Sha256Hash::of(data)]
            },
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A batch across folders lands byte for byte, with nothing left under a part name; an
    /// existing file, bad bytes and an unsafe name fail alone.
    #[test]
    fn a_batch_lands_whole_and_bad_files_fail_alone() {
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("taken"), b"precious").unwrap();
        let a = vec!["a".to_string()];
        let ab = vec!["a".to_string(), "b".to_string()];
        let none: Vec<String> = vec![];
        let contents: Vec<(&[String], FileManifest, Vec<u8>)> = vec![
            (&a, manifest("one", b"first"), b"first".to_vec()),
            (&a, manifest("two", b"second"), b"second".to_vec()),
            (&ab, manifest("three", &[7u8; 70_000]), vec![7u8; 70_000]),
            (&none, manifest("empty", b""), vec![]),
            (&none, manifest("taken", b"new"), b"new".to_vec()),
            (&none, manifest("liar", b"promised"), b"delivered".to_vec()),
            (&ab, manifest("four", b"4"), b"4".to_vec()),
        ];
        let files: Vec<SmallFile<'_>> = contents
            .iter()
            .map(|(subdir, manifest, data)| SmallFile {
                subdir,
                manifest,
                data,
                verified: false,
                share: false,
            })
            .collect();
        let results = write_batch(&OutputDir::open(out.path()).unwrap(), &files);
        assert_eq!(results.len(), files.len());
        for (i, result) in results.iter().enumerate() {
            match contents[i].1.name.as_str() {
                "taken" => assert!(
                    matches!(result, Err(StorageError::AlreadyExists(_))),
                    "{result:?}"
                ),
                "liar" => assert!(matches!(result, Err(StorageError::ChunkLength { .. }))),
                _ => {
                    let done = result.as_ref().unwrap();
                    assert_eq!(std::fs::read(&done.path).unwrap(), contents[i].2);
                }
            }
        }
        assert_eq!(
            std::fs::read(out.path().join("taken")).unwrap(),
            b"precious"
        );
        assert_eq!(names(out.path()), ["a", "empty", "taken"]);
        assert_eq!(names(&out.path().join("a")), ["b", "one", "two"]);
        assert_eq!(names(&out.path().join("a/b")), ["four", "three"]);
    }

    /// A folder level that is a link out of the output folder is refused; nothing is
    /// written outside.
    #[test]
    fn nothing_lands_outside_the_output_folder() {
        let out = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), out.path().join("link")).unwrap();
        let m = manifest("f", b"data");
        for subdir in [vec!["link".to_string()], vec!["..".to_string()]] {
            let files = [SmallFile {
                subdir: &subdir,
                manifest: &m,
                data: b"data",
                verified: false,
                share: false,
            }];
            let results = write_batch(&OutputDir::open(out.path()).unwrap(), &files);
            assert!(results[0].is_err(), "{subdir:?}: {results:?}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// What an earlier run left under the part name: the very file (a crash between writing
    /// and naming) is taken over; a big-file download's part file with our record is
    /// rewritten; a user's own file or a link is never touched.
    #[test]
    fn part_files_left_behind_are_taken_over_only_when_ours() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let p = |name: &str| out.path().join(name);
        std::fs::write(p("crashed.part"), b"whole").unwrap();
        std::fs::write(p("resumed.part"), b"\0\0\0\0\0\0\0").unwrap();
        let mut record = RECORD_MAGIC.to_vec();
        record.extend([0u8; 37]);
        std::fs::write(p("resumed.part.chunks"), record).unwrap();
        std::fs::write(p("mine.part"), b"my notes").unwrap();
        std::os::unix::fs::symlink(&victim, p("linked.part")).unwrap();
        let ms = [
            manifest("crashed", b"whole"),
            manifest("resumed", b"content"),
            manifest("mine", b"download"),
            manifest("linked", b"keep me"),
        ];
        let datas: [&[u8]; 4] = [b"whole", b"content", b"download", b"keep me"];
        let files: Vec<SmallFile<'_>> = ms
            .iter()
            .zip(datas)
            .map(|(manifest, data)| SmallFile {
                subdir: &[],
                manifest,
                data,
                verified: false,
                share: false,
            })
            .collect();
        let results = write_batch(&OutputDir::open(out.path()).unwrap(), &files);
        assert_eq!(std::fs::read(p("crashed")).unwrap(), b"whole");
        assert_eq!(std::fs::read(p("resumed")).unwrap(), b"content");
        assert!(
            matches!(results[2], Err(StorageError::NotOurs(_))),
            "{results:?}"
        );
        assert!(
            matches!(results[3], Err(StorageError::NotAFile(_))),
            "{results:?}"
        );
        assert_eq!(std::fs::read(p("mine.part")).unwrap(), b"my notes");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(
            names(out.path()),
            ["crashed", "linked.part", "mine.part", "resumed"]
        );
    }

    /// A file asked to be shared is served from the handle it was written with.
    #[test]
    fn a_shared_small_file_is_served_from_its_handle() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest("s.txt", b"payload");
        let files = [SmallFile {
            subdir: &[],
            manifest: &m,
            data: b"payload",
            verified: false,
            share: true,
        }];
        let mut results = write_batch(&OutputDir::open(out.path()).unwrap(), &files);
        let done = results.remove(0).unwrap();
        let source = done.source.expect("a handle was kept");
        assert_eq!(source.manifest(), &m);
        let mut bytes = [0u8; 7];
        source.read_at(&mut bytes, 0).unwrap();
        assert_eq!(&bytes, b"payload");
    }
}
