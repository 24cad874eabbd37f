//! Whole small files of a download, written in batches: the files of a folder that fit in one
//! chunk of at most [`SMALL_FILE`] bytes, verified in memory before anything is written.
//!
//! A [`PartFile`](crate::PartFile) costs a record file, an `O_DIRECT` handle, a free-space
//! check and an `fsync` per file, which is nothing next to a 4 MiB chunk and most of the work
//! for a 20 KB file. A batch instead:
//! 1. checks the free space once for the whole batch;
//! 2. writes each file with no name at all: created with `O_TMPFILE` in its folder, through a
//!    handle on the folder opened once per folder in the batch;
//! 3. flushes every file of the batch to disk at once (see `store.rs`'s invariants for why
//!    by parallel `fdatasync`s and not `syncfs`);
//! 4. gives each its name with a hard link of the open file (`linkat` with `AT_EMPTY_PATH`,
//!    else of `/proc/self/fd/N`), which fails if the name exists: an `EEXIST` is the
//!    "already exists" of any other file, and the file with no name is gone when closed.
//!
//! So the invariants of `store.rs` hold for small files too: only verified bytes are written,
//! a name appears only for a whole file that is on disk, never over an existing file and never
//! outside the output folder. And no temporary name is ever taken inside the folder (where the
//! folder's own files could have it, [`crate::staging`]): a crash (`kill -9`, a power cut) at
//! any moment leaves the files already named and nothing else, so a later run has nothing of
//! ours in its way.
//!
//! Where the file system refuses `O_TMPFILE` (or a file with no name can't be linked, with no
//! `/proc` and no `AT_EMPTY_PATH`), the job's small files are written instead as `<key>.part`
//! in its staging folder ([`crate::staging`]), flushed as above, then linked into their folder
//! the same way and the temporary name removed. The staging folder is the job's own: a
//! `<key>.part` an earlier run left there is taken over and rewritten, unless another download
//! holds it.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};
use p2p_protocol::{FileManifest, validate_file_name};
use rustix::io::Errno;

use crate::StorageError;
use crate::path::PART_SUFFIX;
use crate::staging::{OutputDir, part_key};
use crate::store::{
    check_space, is_same_file, link_into_place, lock, open_nofollow, open_subdir, verify_chunk,
    write_error,
};

/// The largest file written as a small file (it must also be a single chunk).
pub const SMALL_FILE: u64 = 1024 * 1024;

/// Files flushed together at most: one batch.
pub const SMALL_BATCH: usize = 128;

/// The mode a new file asks for; the user's umask takes from it, as for any new file.
const FILE_MODE: u32 = 0o666;

/// The umask taken when the process's can't be read (no `/proc`): the usual one.
const DEFAULT_UMASK: u32 = 0o022;

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

/// Where a written file is until it is named.
enum Temp {
    /// Nowhere: a file with no name (`O_TMPFILE`).
    Unnamed,
    /// `name` in the staging folder `staging` (at `path`, for messages).
    Staged {
        staging: Arc<Dir>,
        name: String,
        path: PathBuf,
    },
}

/// A file of the batch written and not yet named.
struct Written {
    /// Its folder.
    dir: Arc<Dir>,
    file: File,
    temp: Temp,
    final_path: PathBuf,
}

impl Written {
    /// Where it is, for messages.
    fn temp_path(&self) -> &Path {
        match &self.temp {
            Temp::Unnamed => &self.final_path,
            Temp::Staged { path, .. } => path,
        }
    }

    /// Gives up on it: a file with no name goes with its handle; a temporary name is removed.
    fn discard(self) {
        if let Temp::Staged { staging, name, .. } = &self.temp {
            let _ = staging.remove_file(name);
        }
    }
}

/// Writes `files` under `out`, flushes them to disk and names them. Returns one result per
/// file, in order: a file that fails does not stop the others. Blocking.
pub fn write_batch(
    out: &OutputDir,
    files: &[SmallFile<'_>],
) -> Vec<Result<SmallDone, StorageError>> {
    let (root, root_path) = (out.root(), out.path());
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
        written.push(opened.and_then(|(dir, path)| write_one(out, dir, &path, file)));
    }
    let synced = sync_all(&written);
    written
        .into_iter()
        .zip(synced)
        .zip(files)
        .map(|((written, synced), file)| {
            let written = written?;
            if let Err(e) = synced {
                let err = write_error(e, written.temp_path());
                written.discard();
                return Err(err);
            }
            name(out, written, file)
        })
        .collect()
}

/// Verifies one file and writes it, with no name (or under a temporary name in the staging
/// folder), for its folder `dir` (at `path`).
fn write_one(
    out: &OutputDir,
    dir: Arc<Dir>,
    path: &Path,
    small: &SmallFile<'_>,
) -> Result<Written, StorageError> {
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
    let (file, temp) = create(out, &dir, path, small)?;
    let written = Written {
        dir,
        file,
        temp,
        final_path,
    };
    if let Err(e) = written.file.write_all_at(small.data, 0) {
        let err = write_error(e, written.temp_path());
        written.discard();
        return Err(err);
    }
    Ok(written)
}

/// A new file for `small`: with no name in its folder `dir` (at `path`) while the file system
/// allows it, else in the staging folder.
fn create(
    out: &OutputDir,
    dir: &Dir,
    path: &Path,
    small: &SmallFile<'_>,
) -> Result<(File, Temp), StorageError> {
    if out.unnamed() {
        match create_unnamed(dir) {
            Ok(file) => return Ok((file, Temp::Unnamed)),
            Err(e) if refuses_unnamed(e) => out.refuse_unnamed(),
            Err(e) => return Err(StorageError::io("cannot create a file in", path)(e.into())),
        }
    }
    create_staged(out, dir, path, small)
}

/// A file with no name in `dir`, for reading and writing, with the mode a new file gets
/// there.
fn create_unnamed(dir: &Dir) -> rustix::io::Result<File> {
    create_unnamed_under(dir, umask())
}

/// [`create_unnamed`] for a process whose umask is `umask`.
///
/// Kernels before the 2022 fix "fs: add missing umask strip in vfs_tmpfile" (Linux 5.19, and
/// stable kernels that took it) did not apply the umask to an `O_TMPFILE` file on a file
/// system without POSIX ACLs: such a file came out `0666`, writable by everyone, where any
/// other new file would be `0644`. So the mode is set here, to what a new file gets: `0666`
/// less the umask. Unless the folder has a default ACL: that decides a new file's mode
/// instead of the umask, and the kernel applied it (only a file system with ACLs has one).
fn create_unnamed_under(dir: &Dir, umask: u32) -> rustix::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    )?;
    let wanted = new_file_mode(umask);
    if rustix::fs::fstat(&fd)?.st_mode & 0o7777 != wanted && !has_default_acl(dir) {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(wanted))?;
    }
    Ok(File::from(fd))
}

/// The mode a new file gets under `umask`.
fn new_file_mode(umask: u32) -> u32 {
    FILE_MODE & !umask
}

/// Whether the folder `dir` has a default ACL (which then sets its new files' modes).
fn has_default_acl(dir: &Dir) -> bool {
    rustix::fs::fgetxattr_query(dir, "system.posix_acl_default").is_ok()
}

/// The process's umask, read once. Read from `/proc/self/status` (`Umask:`, Linux 4.7) and
/// never with `umask(2)`, which reads it only by setting it: process-wide, so a file another
/// thread created meanwhile would get the wrong mode. [`DEFAULT_UMASK`] where it can't be
/// read.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_umask(&status))
            .unwrap_or(DEFAULT_UMASK)
    })
}

/// The umask in the text of `/proc/self/status` (`Umask:\t0022`).
fn parse_umask(status: &str) -> Option<u32> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8)
        .ok()
        .map(|umask| umask & 0o777)
}

/// The file system (or the kernel) has no files with no name: `EOPNOTSUPP` from a file
/// system without them, `EISDIR` from a kernel that does not know `O_TMPFILE`, `EINVAL`.
fn refuses_unnamed(e: Errno) -> bool {
    [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL].contains(&e)
}

/// `small`'s temporary file in the staging folder, `<key>.part`: created exclusively, or an
/// earlier run's taken over (a plain file of this user's with no other link, that no other
/// download holds: the staging folder is this user's alone, so it needs no record to be
/// ours) and emptied. Locked, and still under its name once locked (a tidy may have removed
/// it in between: then it starts again).
fn create_staged(
    out: &OutputDir,
    dir: &Dir,
    dir_path: &Path,
    small: &SmallFile<'_>,
) -> Result<(File, Temp), StorageError> {
    let manifest = small.manifest;
    let name = format!(
        "{}{PART_SUFFIX}",
        part_key(&manifest.id(), small.subdir, &manifest.name)
    );
    let path = out.staging_path().join(&name);
    out.in_staging(|staging| {
        out.check_same_mount(staging, dir, dir_path)?;
        for _ in 0..STAGED_TRIES {
            if let Some(file) = open_staged(staging, &name, &path)? {
                let temp = Temp::Staged {
                    staging: staging.clone(),
                    name: name.clone(),
                    path: path.clone(),
                };
                return Ok((file, temp));
            }
        }
        Err(StorageError::Busy(path.clone()))
    })
}

/// Tries of [`open_staged`]: a file taken away under it once or twice settles it.
const STAGED_TRIES: usize = 3;

/// One try of [`create_staged`]: the file, or `None` if its name no longer led to it once
/// locked.
fn open_staged(staging: &Dir, name: &str, path: &Path) -> Result<Option<File>, StorageError> {
    use std::os::unix::fs::MetadataExt;
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    let file = match staging.open_with(name, &options) {
        Ok(file) => {
            let file = file.into_std();
            lock(&file, path)?;
            file
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let file = match open_nofollow(staging, name, true) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                    return Err(StorageError::NotAFile(path.to_owned()));
                }
                Err(e) => return Err(StorageError::io("cannot open", path)(e)),
            };
            let meta = file
                .metadata()
                .map_err(StorageError::io("cannot stat", path))?;
            if !meta.is_file() {
                return Err(StorageError::NotAFile(path.to_owned()));
            }
            match lock(&file, path) {
                Err(StorageError::Busy(_)) if !is_same_file(&file, staging, name) => {
                    return Ok(None);
                }
                locked => locked?,
            }
            if meta.nlink() != 1 || meta.uid() != rustix::process::geteuid().as_raw() {
                return Err(StorageError::PartLinked(path.to_owned()));
            }
            file
        }
        Err(e) => return Err(StorageError::io("cannot create", path)(e)),
    };
    if !is_same_file(&file, staging, name) {
        return Ok(None);
    }
    file.set_len(0).map_err(|e| write_error(e, path))?;
    Ok(Some(file))
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
fn name(
    out: &OutputDir,
    written: Written,
    small: &SmallFile<'_>,
) -> Result<SmallDone, StorageError> {
    let final_name = &small.manifest.name;
    let final_path = &written.final_path;
    match &written.temp {
        Temp::Unnamed => match link_unnamed(&written.file, &written.dir, final_name, final_path) {
            Ok(()) => {}
            Err(NotNamed::Failed(err)) => return Err(err),
            Err(NotNamed::Refused) => {
                // A file with no name can't be named on this system after all (see
                // `refuses_linking`): written again through the staging folder, as every
                // small file of the job from now on.
                out.refuse_unnamed();
                let again = write_one(out, written.dir.clone(), parent(final_path), small)?;
                if let Err(e) = again.file.sync_data() {
                    let err = write_error(e, again.temp_path());
                    again.discard();
                    return Err(err);
                }
                return name(out, again, small);
            }
        },
        Temp::Staged {
            staging,
            name,
            path,
        } => {
            let linked = link_into_place(
                &written.file,
                (staging, name, path),
                (&written.dir, final_name, final_path),
            );
            if let Err(err) = linked {
                // Ours, written for nothing (a temporary name swapped under us is not ours).
                if !matches!(err, StorageError::Replaced(_)) {
                    let _ = staging.remove_file(name);
                }
                return Err(err);
            }
        }
    }
    let Written {
        file, final_path, ..
    } = written;
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

/// The folder part of a file's path (for messages).
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// How a file with no name is given one.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH` before Linux
    /// 6.10, or a file opened with the caller's own credentials since.
    EmptyPath,
    /// `linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)`, the way
    /// `open(2)` shows: needs `/proc`.
    Proc,
}

fn link_fd(file: &File, dir: &Dir, name: &str, how: Link) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    match how {
        Link::EmptyPath => linkat(file, "", dir, name, AtFlags::EMPTY_PATH),
        Link::Proc => {
            let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            linkat(CWD, fd.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
        }
    }
}

/// Why a file with no name got none.
#[derive(Debug)]
enum NotNamed {
    /// This system lets no file with no name be named ([`refuses_linking`]): the job's small
    /// files go through the staging folder instead.
    Refused,
    /// This file could not be named, for a reason of its own or of its folder's (the name is
    /// taken, the folder was removed, the disk is full...): that file fails, with this.
    Failed(StorageError),
}

/// Gives the file with no name `file` the name `name` in `dir` (at `final_path`, for
/// messages), never over an existing name.
fn link_unnamed(file: &File, dir: &Dir, name: &str, final_path: &Path) -> Result<(), NotNamed> {
    let linked = match link_fd(file, dir, name, Link::EmptyPath) {
        // `AT_EMPTY_PATH` not allowed to this process (`ENOENT` without `CAP_DAC_READ_SEARCH`
        // before Linux 6.10, `EINVAL` from a kernel without it, `EPERM`/`EACCES` from a
        // sandbox): through `/proc` then, which decides.
        Err(Errno::NOENT | Errno::PERM | Errno::ACCESS | Errno::INVAL) => {
            link_fd(file, dir, name, Link::Proc)
        }
        linked => linked,
    };
    match linked {
        // Linked from the open file itself, so it can only be ours, unless it was replaced
        // at once: never reported as this file then.
        Ok(()) if !is_same_file(file, dir, name) => Err(NotNamed::Failed(StorageError::Replaced(
            final_path.to_owned(),
        ))),
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(NotNamed::Failed(StorageError::AlreadyExists(
            final_path.to_owned(),
        ))),
        Err(e) if refuses_linking(e, proc_fds_there, || folder_writable(dir)) => {
            Err(NotNamed::Refused)
        }
        Err(e) => Err(NotNamed::Failed(StorageError::io(
            "cannot name",
            final_path,
        )(e.into()))),
    }
}

/// Whether `e`, from the link of a file with no name through `/proc/self/fd/N` (after
/// `AT_EMPTY_PATH` was refused), says that this system names no such file at all, rather than
/// something about this file or its folder. Only then does the job switch to the staging
/// folder: a file's own trouble fails that file alone, with its own error.
/// * `ENOENT`: a refusal only if there is no `/proc/self/fd` to go through (`proc_fds`: no
///   `/proc` mounted, as in some containers and chroots). With it, the missing piece is the
///   folder, removed meanwhile: that file's error.
/// * `EPERM`: the file system has no hard links at all, or a security module (or
///   `fs.protected_hardlinks`) refuses the link; neither changes from one file to the next.
///   (A folder's permissions give `EACCES`, not `EPERM`.)
/// * `EACCES`: a refusal only if the folder is writable to us (`writable`): then what refuses
///   is not the folder but a security module or the way to `/proc`. A folder we may not
///   write to fails its files alone.
/// * `EXDEV`, `EOPNOTSUPP`, `ENOSYS`, `EINVAL`: `/proc`'s link does not lead to a file that
///   can be linked (some sandboxes' `/proc`), or the call is not there. The file was made in
///   the very folder it is linked into, so this is never about that folder.
///
/// Anything else (`ENOSPC`, `EDQUOT`, `EMLINK`, `EROFS`, `EIO`, `ENAMETOOLONG`...) would hit
/// a new file with a name in that folder just as well: that file's error.
fn refuses_linking(
    e: Errno,
    proc_fds: impl FnOnce() -> bool,
    writable: impl FnOnce() -> bool,
) -> bool {
    match e {
        Errno::NOENT => !proc_fds(),
        Errno::ACCESS => writable(),
        Errno::PERM | Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL => true,
        _ => false,
    }
}

/// Whether this process has a `/proc/self/fd` to link files with no name through.
fn proc_fds_there() -> bool {
    std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.is_dir())
}

/// Whether this process may create names in the folder `dir`.
fn folder_writable(dir: &Dir) -> bool {
    use rustix::fs::{Access, AtFlags};
    rustix::fs::accessat(
        dir,
        ".",
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use crate::test_support::names;
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

    /// The output folder at `path`, writing small files with no name or (`staged`) through
    /// the staging folder, as where the file system has no `O_TMPFILE`.
    fn output(path: &Path, staged: bool) -> OutputDir {
        let out = OutputDir::open(path, "album").unwrap();
        if staged {
            out.refuse_unnamed();
        }
        out
    }

    /// What is left in the staging folder (nothing, when it is not there); then tidies it,
    /// as a job that completed does.
    fn left_in_staging(out: &OutputDir) -> Vec<String> {
        let left = if out.staging_path().exists() {
            names(out.staging_path())
        } else {
            Vec::new()
        };
        out.tidy_staging();
        left
    }

    fn batch<'a>(files: &'a [(&'a [String], FileManifest, &'a [u8])]) -> Vec<SmallFile<'a>> {
        files
            .iter()
            .map(|(subdir, manifest, data)| SmallFile {
                subdir,
                manifest,
                data,
                verified: false,
                share: false,
            })
            .collect()
    }

    /// A batch across folders lands byte for byte, with nothing left under any temporary
    /// name; an existing file, bad bytes and an unsafe name fail alone. With no name or
    /// through the staging folder alike.
    #[test]
    fn a_batch_lands_whole_and_bad_files_fail_alone() {
        for staged in [false, true] {
            let out = tempfile::tempdir().unwrap();
            std::fs::write(out.path().join("taken"), b"precious").unwrap();
            let a = vec!["a".to_string()];
            let ab = vec!["a".to_string(), "b".to_string()];
            let none: Vec<String> = vec![];
            let big = vec![7u8; 70_000];
            let contents: Vec<(&[String], FileManifest, &[u8])> = vec![
                (&a, manifest("one", b"first"), b"first"),
                (&a, manifest("two", b"second"), b"second"),
                (&ab, manifest("three", &big), &big),
                (&none, manifest("empty", b""), b""),
                (&none, manifest("taken", b"new"), b"new"),
                (&none, manifest("liar", b"promised"), b"delivered"),
                (&ab, manifest("four", b"4"), b"4"),
            ];
            let files = batch(&contents);
            let dir = output(out.path(), staged);
            let results = write_batch(&dir, &files);
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
            assert_eq!(left_in_staging(&dir), Vec::<String>::new(), "{staged}");
            assert_eq!(names(out.path()), ["a", "empty", "taken"], "{staged}");
            assert_eq!(names(&out.path().join("a")), ["b", "one", "two"]);
            assert_eq!(names(&out.path().join("a/b")), ["four", "three"]);
        }
    }

    /// A folder level that is a link out of the output folder is refused; nothing is
    /// written outside.
    #[test]
    fn nothing_lands_outside_the_output_folder() {
        for staged in [false, true] {
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
                let results = write_batch(&output(out.path(), staged), &files);
                assert!(results[0].is_err(), "{subdir:?}: {results:?}");
            }
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        }
    }

    /// Names that look like the part files and records of an older version, or of a big
    /// file, are just names: the folder's files beside them land, and they are never read,
    /// rewritten, taken over or removed (a link among them is not followed either).
    #[test]
    fn files_named_like_part_files_are_just_files() {
        for staged in [false, true] {
            let out = tempfile::tempdir().unwrap();
            let elsewhere = tempfile::tempdir().unwrap();
            let victim = elsewhere.path().join("victim");
            std::fs::write(&victim, b"keep me").unwrap();
            let p = |name: &str| out.path().join(name);
            std::fs::write(p("crashed.part"), b"whole").unwrap();
            std::fs::write(p("resumed.part"), b"\0\0\0\0\0\0\0").unwrap();
            let mut record = crate::store::RECORD_MAGIC.to_vec();
            record.extend([0u8; 37]);
            std::fs::write(p("resumed.part.chunks"), &record).unwrap();
            std::fs::write(p("mine.part"), b"my notes").unwrap();
            std::os::unix::fs::symlink(&victim, p("linked.part")).unwrap();
            let contents: Vec<(&[String], FileManifest, &[u8])> = vec![
                (&[], manifest("crashed", b"whole"), b"whole"),
                (&[], manifest("resumed", b"content"), b"content"),
                (&[], manifest("mine", b"download"), b"download"),
                (&[], manifest("linked", b"keep me"), b"keep me"),
            ];
            let dir = output(out.path(), staged);
            let results = write_batch(&dir, &batch(&contents));
            for ((_, m, data), result) in contents.iter().zip(&results) {
                let done = result.as_ref().unwrap();
                assert_eq!(done.path, p(&m.name));
                assert_eq!(std::fs::read(&done.path).unwrap(), *data);
            }
            assert_eq!(std::fs::read(p("crashed.part")).unwrap(), b"whole");
            assert_eq!(std::fs::read(p("resumed.part")).unwrap(), b"\0\0\0\0\0\0\0");
            assert_eq!(std::fs::read(p("resumed.part.chunks")).unwrap(), record);
            assert_eq!(std::fs::read(p("mine.part")).unwrap(), b"my notes");
            assert!(p("linked.part").is_symlink());
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
            assert_eq!(left_in_staging(&dir), Vec::<String>::new());
            assert_eq!(
                names(out.path()),
                [
                    "crashed",
                    "crashed.part",
                    "linked",
                    "linked.part",
                    "mine",
                    "mine.part",
                    "resumed",
                    "resumed.part",
                    "resumed.part.chunks"
                ]
            );
        }
    }

    /// A file written and never named (the process died before its batch was named)
    /// leaves nothing in its folder; a name taken while it was being written is never
    /// replaced, and the file written for it leaves nothing either.
    #[test]
    fn a_file_not_named_leaves_nothing_and_never_replaces_a_name() {
        for staged in [false, true] {
            let out = tempfile::tempdir().unwrap();
            let dir = output(out.path(), staged);
            let folder =
                Arc::new(Dir::open_ambient_dir(out.path(), cap_std::ambient_authority()).unwrap());
            let m = manifest("late", b"mine");
            let file = SmallFile {
                subdir: &[],
                manifest: &m,
                data: b"mine",
                verified: false,
                share: false,
            };
            // Written, then dropped unnamed, as by a crash.
            drop(write_one(&dir, folder.clone(), out.path(), &file).unwrap());
            let in_folder: Vec<String> = names(out.path())
                .into_iter()
                .filter(|n| !n.starts_with(crate::staging::STAGING_PREFIX))
                .collect();
            assert_eq!(in_folder, Vec::<String>::new(), "{staged}");

            let written = write_one(&dir, folder, out.path(), &file).unwrap();
            std::fs::write(out.path().join("late"), b"theirs").unwrap();
            let err = name(&dir, written, &file).unwrap_err();
            assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");
            assert_eq!(std::fs::read(out.path().join("late")).unwrap(), b"theirs");
            assert_eq!(left_in_staging(&dir), Vec::<String>::new(), "{staged}");
            assert_eq!(names(out.path()), ["late"], "{staged}");
        }
    }

    /// Both ways of naming a file with no name give it its name, with the mode a new file
    /// gets, and neither replaces a name that exists.
    #[test]
    fn an_unnamed_file_is_named_either_way_and_never_over_a_name() {
        let out = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(out.path(), cap_std::ambient_authority()).unwrap();
        std::fs::write(out.path().join("plain"), b"").unwrap();
        for (how, name) in [(Link::EmptyPath, "by-fd"), (Link::Proc, "by-proc")] {
            let file = create_unnamed(&dir).unwrap();
            file.write_all_at(b"named", 0).unwrap();
            match link_fd(&file, &dir, name, how) {
                Ok(()) => {}
                // Not allowed to this process (an older kernel, no capability).
                Err(Errno::NOENT | Errno::PERM) if matches!(how, Link::EmptyPath) => continue,
                Err(e) => panic!("{how:?}: {e}"),
            }
            assert_eq!(std::fs::read(out.path().join(name)).unwrap(), b"named");
            use std::os::unix::fs::PermissionsExt;
            let mode = |n: &str| {
                std::fs::metadata(out.path().join(n))
                    .unwrap()
                    .permissions()
                    .mode()
            };
            assert_eq!(
                mode(name),
                mode("plain"),
                "the umask applies as to any file"
            );
            let other = create_unnamed(&dir).unwrap();
            other.write_all_at(b"other", 0).unwrap();
            assert_eq!(link_fd(&other, &dir, name, how), Err(Errno::EXIST));
            let err = link_unnamed(&other, &dir, name, &out.path().join(name)).unwrap_err();
            assert!(
                matches!(err, NotNamed::Failed(StorageError::AlreadyExists(_))),
                "{err:?}"
            );
            assert_eq!(std::fs::read(out.path().join(name)).unwrap(), b"named");
        }
        assert!(names(out.path()).contains(&"by-proc".to_string()));
    }

    /// A file with no name gets the mode a new file gets, `0666` less the umask, even where
    /// the kernel does not apply the umask to it (the umask is injected here, so the kernel
    /// applies another one than the file must end with).
    #[test]
    fn an_unnamed_file_gets_0666_less_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(new_file_mode(0o022), 0o644);
        assert_eq!(new_file_mode(0o077), 0o600);
        assert_eq!(new_file_mode(0o002), 0o664);
        let status = "Name:\tp2p\nUmask:\t0027\nState:\tR (running)\n";
        assert_eq!(parse_umask(status), Some(0o027));
        assert_eq!(parse_umask("Name:\tp2p\n"), None);
        assert_eq!(parse_umask("Umask:\tnot octal\n"), None);

        let out = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(out.path(), cap_std::ambient_authority()).unwrap();
        assert!(!has_default_acl(&dir));
        for umask in [0o077, 0o027, 0o002, 0o000, 0o022] {
            let file = create_unnamed_under(&dir, umask).unwrap();
            file.write_all_at(b"x", 0).unwrap();
            let name = format!("umask-{umask:03o}");
            link_fd(&file, &dir, &name, Link::Proc).unwrap();
            let mode = std::fs::metadata(out.path().join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o666 & !umask, "{name}");
        }
    }

    /// Only an error that says this system names no file with no name sends the job's small
    /// files through the staging folder; an error of one file or its folder fails that file.
    #[test]
    fn only_a_refusal_to_name_unnamed_files_switches_the_job() {
        let (yes, no) = (|| true, || false);
        assert!(refuses_linking(Errno::NOENT, no, yes), "no /proc");
        assert!(
            !refuses_linking(Errno::NOENT, yes, yes),
            "the folder is gone"
        );
        assert!(refuses_linking(Errno::PERM, yes, yes));
        assert!(
            refuses_linking(Errno::ACCESS, yes, yes),
            "refused, folder writable"
        );
        assert!(
            !refuses_linking(Errno::ACCESS, yes, no),
            "a folder we can't write to"
        );
        for e in [Errno::XDEV, Errno::OPNOTSUPP, Errno::NOSYS, Errno::INVAL] {
            assert!(refuses_linking(e, yes, yes), "{e}");
        }
        for e in [
            Errno::EXIST,
            Errno::NOSPC,
            Errno::DQUOT,
            Errno::MLINK,
            Errno::ROFS,
            Errno::IO,
            Errno::NAMETOOLONG,
        ] {
            assert!(!refuses_linking(e, no, yes), "{e}");
        }
        assert!(proc_fds_there(), "this test machine has /proc");
    }

    /// A file whose folder was removed between its writing and its naming fails alone, with
    /// its own error; the job's other small files still get no name until whole (nothing
    /// goes through the staging folder).
    #[test]
    fn a_file_whose_folder_went_away_fails_alone() {
        let out = tempfile::tempdir().unwrap();
        let dir = output(out.path(), false);
        let gone = vec!["gone".to_string()];
        let m = manifest("f", b"data");
        let file = SmallFile {
            subdir: &gone,
            manifest: &m,
            data: b"data",
            verified: false,
            share: false,
        };
        let (folder, path) = open_subdir(dir.root(), out.path(), &gone).unwrap();
        let written = write_one(&dir, Arc::new(folder), &path, &file).unwrap();
        std::fs::remove_dir(out.path().join("gone")).unwrap();
        let err = name(&dir, written, &file).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot name {}", path.join("f").display())),
            "{err}"
        );
        assert!(
            dir.unnamed(),
            "one folder gone says nothing of the file system"
        );
        assert!(!dir.staging_path().exists());
        let m = manifest("g", b"more");
        let results = write_batch(&dir, &batch(&[(&[], m, b"more")]));
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(names(out.path()), ["g"]);
    }

    /// Through the staging folder, a temporary file an earlier run left there (a crash) is
    /// the job's own: rewritten and named, and gone from the staging folder after.
    #[test]
    fn a_crash_leftover_in_the_staging_folder_is_taken_over() {
        let out = tempfile::tempdir().unwrap();
        let dir = output(out.path(), true);
        let sub = vec!["album".to_string()];
        let m = manifest("song", b"the song");
        let key = part_key(&m.id(), &sub, "song");
        dir.staging().unwrap();
        std::fs::write(
            dir.staging_path().join(format!("{key}{PART_SUFFIX}")),
            b"half a song and more junk",
        )
        .unwrap();
        let files = [SmallFile {
            subdir: &sub,
            manifest: &m,
            data: b"the song",
            verified: false,
            share: false,
        }];
        let done = write_batch(&dir, &files).remove(0).unwrap();
        assert_eq!(std::fs::read(done.path).unwrap(), b"the song");
        assert_eq!(left_in_staging(&dir), Vec::<String>::new());
        assert_eq!(names(out.path()), ["album"]);
    }

    /// A file asked to be shared is served from the handle it was written with.
    #[test]
    fn a_shared_small_file_is_served_from_its_handle() {
        for staged in [false, true] {
            let out = tempfile::tempdir().unwrap();
            let m = manifest("s.txt", b"payload");
            let files = [SmallFile {
                subdir: &[],
                manifest: &m,
                data: b"payload",
                verified: false,
                share: true,
            }];
            let mut results = write_batch(&output(out.path(), staged), &files);
            let done = results.remove(0).unwrap();
            let source = done.source.expect("a handle was kept");
            assert_eq!(source.manifest(), &m);
            let mut bytes = [0u8; 7];
            source.read_at(&mut bytes, 0).unwrap();
            assert_eq!(&bytes, b"payload");
        }
    }
}
