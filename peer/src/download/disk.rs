//! The engine's disk work. Everything here blocks (`std::fs`, SHA-256), so the engine runs it
//! in `spawn_blocking` tasks of one `JoinSet` and gets a [`DiskDone`] back for each:
//!
//! * **checks**: what is already at each file's target (`p2p_storage::local`), a batch of
//!   files per task, [`CHECKS_AT_ONCE`] tasks at most (an existing big file is hashed);
//! * **part files**: a file bigger than a small file is assembled in a
//!   [`PartFile`](p2p_storage::PartFile) (opened with its resume, one task per verified chunk,
//!   its record saved at most once a second, flushed and named at the end): a single file as
//!   `<out>/<name>.part`, a folder's file in the job's staging folder (`p2p_storage::staging`:
//!   never under a name inside the folder, where the folder's own files could have it). At
//!   most [`OPEN_PARTS`] are open at once: files are taken in the record's order and finish in
//!   that order, so this rarely holds a job back, and it bounds the job's file descriptors
//!   whatever the folder holds: three per part file (the part file, the same file opened
//!   with `O_DIRECT` where the file system allows it, and the handle of the folder it is
//!   named into; for a single file that is also the folder it is assembled in), plus, once
//!   per job, the output folder and the staging folder, which every part file of a folder
//!   shares (the record is opened only while it is read or written);
//! * **small files**: written with no name, flushed and named in batches
//!   (`p2p_storage::small`), [`SMALL_BATCHES_AT_ONCE`] batches at most: while one batch is
//!   flushed the next one fills, so a slow disk makes batches bigger instead of the job
//!   slower.

use std::path::PathBuf;
use std::sync::Arc;

use p2p_protocol::FileManifest;
use p2p_storage::local::LocalState;
use p2p_storage::small::{SmallDone, SmallFile};
use p2p_storage::{OutputDir, PartFile, SourceFile, StorageError};

use super::buffers::Buf;
use super::hosts::HostIx;
use super::schedule::{ChunkRef, FileIx};

/// Part files open at once in one job.
pub(crate) const OPEN_PARTS: usize = 32;
/// Files checked per blocking task.
pub(crate) const CHECK_BATCH: usize = 64;
/// Check tasks running at once.
pub(crate) const CHECKS_AT_ONCE: usize = 2;
/// Small-file batches being written at once.
pub(crate) const SMALL_BATCHES_AT_ONCE: usize = 2;

/// Where a job's files go.
#[derive(Clone, Debug)]
pub(crate) enum Output {
    /// A single file: into this folder, assembled beside its name as `<name>.part`.
    File(PathBuf),
    /// A folder's files: under this output folder, big ones assembled in its staging folder.
    Folder(Arc<OutputDir>),
}

/// A file of the job as the disk side needs it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Folders under the output folder, one name per level (for a folder's file: the
    /// folder's name first).
    pub subdir: Vec<String>,
    pub manifest: FileManifest,
}

/// A chunk as it arrived, with who sent it and when it was asked for.
#[derive(Debug)]
pub(crate) struct Arrived {
    pub chunk: ChunkRef,
    pub host: HostIx,
    pub asked: std::time::Instant,
    pub buf: Buf,
}

/// One small file of a batch: its data (none for an empty file).
#[derive(Debug)]
pub(crate) struct SmallItem {
    pub file: FileIx,
    pub target: Target,
    pub arrived: Option<Arrived>,
    /// Its data was verified against its manifest already (and reported delivered).
    pub verified: bool,
}

/// What a disk task did.
#[derive(Debug)]
pub(crate) enum DiskDone {
    /// What is at each file's target.
    Checked(Vec<(FileIx, Result<LocalState, StorageError>)>),
    /// A part file is open, with the chunks an earlier run verified.
    Opened {
        file: FileIx,
        result: Result<(Arc<PartFile>, Vec<u32>), StorageError>,
    },
    /// A chunk of a part file was verified and written (`Ok(false)`: another copy was
    /// first).
    Written {
        arrived: Arrived,
        len: usize,
        result: Result<bool, StorageError>,
    },
    /// A batch of small files, each written, flushed and named, or not.
    Small(Vec<(SmallItem, Result<SmallDone, StorageError>)>),
    /// A part file was flushed and named (with a handle to serve it, when asked).
    Finished {
        file: FileIx,
        result: Result<(PathBuf, Option<SourceFile>), StorageError>,
    },
    /// A record was saved (or not: a later save or the finish will do).
    Saved(Result<(), StorageError>),
}

/// Looks at each file's target under `out`. A folder's file found in place already needs
/// nothing an earlier run left in the staging folder for it (a crash between naming it and
/// removing its temporary name): that goes.
pub(crate) fn check(out: Output, files: Vec<(FileIx, Target)>) -> DiskDone {
    use p2p_storage::local::{StagedChecker, check_local_in};
    let results = match &out {
        Output::File(out) => files
            .into_iter()
            .map(|(file, t)| (file, check_local_in(out, &t.subdir, &t.manifest)))
            .collect(),
        Output::Folder(out) => {
            let mut checker = StagedChecker::new(out);
            files
                .into_iter()
                .map(|(file, t)| {
                    let state = checker.check(&t.subdir, &t.manifest);
                    if matches!(state, Ok(LocalState::AlreadyThere)) {
                        out.discard_staged(&t.subdir, &t.manifest.id(), &t.manifest.name);
                    }
                    (file, state)
                })
                .collect()
        }
    };
    DiskDone::Checked(results)
}

/// Opens (or picks up) the part file of `target` under `out` and re-verifies what an earlier
/// run recorded.
pub(crate) fn open(out: Output, file: FileIx, target: Target) -> DiskDone {
    let part = match &out {
        Output::File(out) => PartFile::create_in(out, &target.subdir, target.manifest),
        Output::Folder(out) => PartFile::create_staged(out, &target.subdir, target.manifest),
    };
    let result = part.map(|part| {
        let resumed = part.resume();
        (Arc::new(part), resumed)
    });
    DiskDone::Opened { file, result }
}

/// Verifies chunk data and writes it into its part file.
pub(crate) fn write(part: Arc<PartFile>, arrived: Arrived) -> DiskDone {
    let data = arrived.buf.as_slice();
    let len = data.len();
    let result = part.write_verified(arrived.chunk.index, data);
    DiskDone::Written {
        arrived,
        len,
        result,
    }
}

/// Writes, flushes and names a batch of small files under `out`.
pub(crate) fn small(out: Arc<OutputDir>, items: Vec<SmallItem>) -> DiskDone {
    let files: Vec<SmallFile<'_>> = items
        .iter()
        .map(|item| SmallFile {
            subdir: &item.target.subdir,
            manifest: &item.target.manifest,
            data: item.arrived.as_ref().map_or(&[], |a| a.buf.as_slice()),
            verified: item.verified,
            share: false,
        })
        .collect();
    let results = p2p_storage::small::write_batch(&out, &files);
    drop(files);
    DiskDone::Small(items.into_iter().zip(results).collect())
}

/// Flushes a complete part file and gives it its name; with `share`, keeps the handle it was
/// written with to serve it from.
pub(crate) fn finish(part: Arc<PartFile>, file: FileIx, share: bool) -> DiskDone {
    let result = part.finish().map(|path| {
        let source = match share.then(|| part.into_source()).transpose() {
            Ok(source) => source,
            // Named and whole; only serving it from this handle failed.
            Err(err) => {
                tracing::warn!(%err, "downloaded file can't be shared");
                None
            }
        };
        (path, source)
    });
    DiskDone::Finished { file, result }
}

/// Saves a part file's record of verified chunks.
pub(crate) fn save(part: Arc<PartFile>) -> DiskDone {
    DiskDone::Saved(part.save_record())
}
