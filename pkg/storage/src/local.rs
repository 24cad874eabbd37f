//! What is already at a download's target before anything is fetched: nothing, a partial file
//! to resume, the very file (checked by hash), or something else that must not be touched.
//!
//! This is what makes a re-run of a download complete it: identical files are skipped, part
//! files resume, missing files are fetched, and whatever else is in the way is reported and
//! left exactly as it is.
//!
//! | at the target                                         | state           |
//! |-------------------------------------------------------|-----------------|
//! | nothing, no partial file                              | `Missing`       |
//! | a partial file (and no `<name>`)                      | `Partial`       |
//! | a regular file, same size, every chunk hash equal     | `AlreadyThere`  |
//! | a regular file of another size or content             | `Conflict`      |
//! | a folder, symbolic link, FIFO, device or socket       | `Conflict`      |
//! | a file or link where one of its folders should be     | `Conflict`      |
//!
//! A single file's partial file is `<name>.part` beside it ([`check_local`],
//! [`check_local_in`]); a folder's file's is `<key>.part` in the job's staging folder
//! ([`check_local_staged`], [`crate::staging`]), and a `<name>.part` beside a folder's file is
//! just another file, of the user's or of the folder.
//!
//! Nothing here writes, and no symbolic link at the target or (with [`check_local_in`]) at a
//! folder level under the output folder is ever followed: a link to an identical file is still
//! a link, and a download must not write through it. A `.part` is not judged here: whether it
//! is ours and for this file is [`crate::PartFile`]'s call when it resumes it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, FileTypeExt, OpenOptions, OpenOptionsExt};
use p2p_protocol::{FileManifest, validate_file_name};

use crate::StorageError;
use crate::chunker::hash_chunks_at;
use crate::path::PART_SUFFIX;
use crate::staging::{OutputDir, part_key};

/// What is at `<dir>/<name>` (and `<dir>/<name>.part`) for one file of a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalState {
    /// Nothing: fetch it.
    Missing,
    /// A partial file: [`crate::PartFile`] resumes it.
    Partial,
    /// The same file, every chunk's hash equal: nothing to fetch.
    AlreadyThere,
    /// Something else is there; it is never touched. One line saying what.
    Conflict(String),
}

/// Looks at what is at the target of `manifest` inside `dir`. Blocking: hashes an existing
/// regular file of the right size.
///
/// `dir` itself is taken as given (a link the user chose as the output folder is followed);
/// if it is missing, the first of its ancestors that exists must be a folder, or the file
/// can't be written: a conflict naming it. To also refuse links at the folder levels a
/// download creates under the output folder, use [`check_local_in`].
pub fn check_local(dir: &Path, manifest: &FileManifest) -> Result<LocalState, StorageError> {
    validate_file_name(&manifest.name)?;
    match Dir::open_ambient_dir(dir, ambient_authority()) {
        Ok(handle) => check_in(&handle, dir, &[], manifest, Partial::Beside),
        Err(e) if e.kind() == ErrorKind::NotFound || is_not_a_dir(&e) => blocked_ancestor(dir),
        Err(e) => Err(StorageError::io("cannot open folder", dir)(e)),
    }
}

/// Like [`check_local`] for a file in the folder `subdir` (one name per level) under `out`,
/// the way [`crate::PartFile::create_in`] writes it: `out` is taken as given, and every level
/// below is looked at without following links. A level that is a file, a link or anything
/// but a folder is a conflict; a missing level means the file is missing.
pub fn check_local_in(
    out: &Path,
    subdir: &[String],
    manifest: &FileManifest,
) -> Result<LocalState, StorageError> {
    validate_file_name(&manifest.name)?;
    let dir = match Dir::open_ambient_dir(out, ambient_authority()) {
        Ok(handle) => handle,
        Err(e) if e.kind() == ErrorKind::NotFound || is_not_a_dir(&e) => {
            return blocked_ancestor(out);
        }
        Err(e) => return Err(StorageError::io("cannot open folder", out)(e)),
    };
    check_below(dir, out, subdir, manifest, Partial::Beside)
}

/// Like [`check_local_in`] for a file of a folder job writing under `out`
/// ([`crate::PartFile::create_staged`]): its partial file is looked for in the job's staging folder,
/// and a `<name>.part` beside it counts for nothing.
pub fn check_local_staged(
    out: &OutputDir,
    subdir: &[String],
    manifest: &FileManifest,
) -> Result<LocalState, StorageError> {
    StagedChecker::new(out).check(subdir, manifest)
}

/// [`check_local_staged`] for the files of one folder job, one after another, keeping the
/// handle of the last file's folder: a folder's files come in path order, so most share their
/// folder with the file before and cost one look at their own name, not a walk down every
/// level (which was most of a re-run's time per small file).
pub struct StagedChecker<'a> {
    out: &'a OutputDir,
    /// The last folder walked down to (its levels) and where the walk ended.
    last: Option<(Vec<String>, Walked)>,
}

impl<'a> StagedChecker<'a> {
    /// A checker of files under `out`.
    pub fn new(out: &'a OutputDir) -> Self {
        Self { out, last: None }
    }

    /// What is at the target of `manifest` in the folder `subdir` under the output folder.
    pub fn check(
        &mut self,
        subdir: &[String],
        manifest: &FileManifest,
    ) -> Result<LocalState, StorageError> {
        validate_file_name(&manifest.name)?;
        let same = matches!(&self.last, Some((levels, _)) if levels.as_slice() == subdir);
        if !same {
            self.last = None;
            let root = self
                .out
                .root()
                .try_clone()
                .map_err(StorageError::io("cannot open folder", self.out.path()))?;
            self.last = Some((subdir.to_vec(), walk(root, self.out.path(), subdir)?));
        }
        match &self.last {
            Some((_, Walked::Open(dir, path))) => {
                check_in(dir, path, subdir, manifest, Partial::Staged(self.out))
            }
            // A missing folder, or a conflict on the way: the same for every file below.
            Some((_, Walked::Settled(state))) => Ok(state.clone()),
            None => unreachable!("set above"),
        }
    }
}

/// Where a download's partial file is.
#[derive(Clone, Copy)]
enum Partial<'a> {
    /// `<name>.part` beside its target.
    Beside,
    /// `<key>.part` in a folder job's staging folder.
    Staged(&'a OutputDir),
}

/// The target of `manifest` in the folder `subdir` under `dir` (at `out`), each level looked
/// at without following links.
fn check_below(
    dir: Dir,
    out: &Path,
    subdir: &[String],
    manifest: &FileManifest,
    partial: Partial<'_>,
) -> Result<LocalState, StorageError> {
    match walk(dir, out, subdir)? {
        Walked::Open(dir, path) => check_in(&dir, &path, subdir, manifest, partial),
        Walked::Settled(state) => Ok(state),
    }
}

/// Where a walk down a target's folders ended.
enum Walked {
    /// In the target's folder: its handle and path.
    Open(Dir, PathBuf),
    /// Before it, with the answer for any file below (missing, or a conflict on the way).
    Settled(LocalState),
}

/// Walks from `dir` (at `out`) down the folders `subdir`, each level looked at without
/// following links.
fn walk(mut dir: Dir, out: &Path, subdir: &[String]) -> Result<Walked, StorageError> {
    let mut path = out.to_owned();
    for level in subdir {
        validate_file_name(level)?;
        path.push(level);
        let kind = match dir.symlink_metadata(level) {
            Ok(meta) => meta.file_type(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Walked::Settled(LocalState::Missing));
            }
            Err(e) => return Err(StorageError::io("cannot stat", &path)(e)),
        };
        if !kind.is_dir() {
            return Ok(Walked::Settled(not_a_folder(&path, kind)));
        }
        dir = match dir.open_dir_nofollow(level) {
            Ok(next) => next,
            // Removed in between: nothing there.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Walked::Settled(LocalState::Missing));
            }
            // Replaced by something else in between: judge that.
            Err(e) if is_not_a_dir(&e) || is_loop(&e) => {
                return Ok(Walked::Settled(LocalState::Conflict(format!(
                    "{} is not a folder, where a folder is needed",
                    path.display()
                ))));
            }
            Err(e) => return Err(StorageError::io("cannot open folder", &path)(e)),
        };
    }
    Ok(Walked::Open(dir, path))
}

/// The target `manifest.name` inside the open folder `dir` (at `dir_path`, for messages; the
/// folder `subdir` under the output folder).
fn check_in(
    dir: &Dir,
    dir_path: &Path,
    subdir: &[String],
    manifest: &FileManifest,
    partial: Partial<'_>,
) -> Result<LocalState, StorageError> {
    let name = &manifest.name;
    let target = dir_path.join(name);
    match dir.symlink_metadata(name) {
        Ok(meta) => {
            let kind = meta.file_type();
            if !kind.is_file() {
                return Ok(LocalState::Conflict(format!("{} is there", describe(kind))));
            }
            if meta.len() != manifest.size {
                return Ok(different(meta.len()));
            }
            same_content(dir, name, &target, manifest)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let staging;
            let (folder, folder_path, part) = match partial {
                Partial::Beside => (dir, dir_path, format!("{name}{PART_SUFFIX}")),
                Partial::Staged(out) => match out.existing_staging() {
                    Ok(Some(found)) => {
                        staging = found;
                        (
                            &*staging,
                            out.staging_path(),
                            format!("{}{PART_SUFFIX}", part_key(&manifest.id(), subdir, name)),
                        )
                    }
                    // No staging folder, or one that can't be used (a file, a link, another
                    // user's): no part file of ours can be in it. Only creating a part file
                    // there fails, with what is wrong; a file that needs none is fine.
                    Ok(None) | Err(_) => return Ok(LocalState::Missing),
                },
            };
            match folder.symlink_metadata(&part) {
                Ok(_) => Ok(LocalState::Partial),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(LocalState::Missing),
                Err(e) => Err(StorageError::io("cannot stat", folder_path.join(part))(e)),
            }
        }
        Err(e) => Err(StorageError::io("cannot stat", &target)(e)),
    }
}

/// Hashes the regular file `name` (opened without following a link and without waiting)
/// chunk by chunk against `manifest`.
fn same_content(
    dir: &Dir,
    name: &str,
    target: &Path,
    manifest: &FileManifest,
) -> Result<LocalState, StorageError> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .follow(FollowSymlinks::No)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    let file = match dir.open_with(name, &options) {
        Ok(file) => file.into_std(),
        // Replaced by a link between the look and the open.
        Err(e) if is_loop(&e) => {
            return Ok(LocalState::Conflict("a symbolic link is there".into()));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(LocalState::Missing),
        Err(e) => return Err(StorageError::io("cannot open", target)(e)),
    };
    // Judge what was opened, not what the name showed a moment ago.
    let meta = file
        .metadata()
        .map_err(StorageError::io("cannot stat", target))?;
    if !meta.is_file() {
        return Ok(LocalState::Conflict(
            "something that is not a regular file is there".into(),
        ));
    }
    if meta.len() != manifest.size {
        return Ok(different(meta.len()));
    }
    let all: Vec<u32> = (0..manifest.chunks.len() as u32).collect();
    match hash_chunks_at(&file, manifest, &all) {
        Ok(hashes) if hashes == manifest.chunks => Ok(LocalState::AlreadyThere),
        Ok(_) => Ok(different(meta.len())),
        // Shrank while being read: another file now.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            Ok(different(file.metadata().map_or(meta.len(), |m| m.len())))
        }
        Err(e) => Err(StorageError::io("cannot read", target)(e)),
    }
}

/// `path` (or one of its ancestors) is missing or not a folder: the first ancestor that
/// exists must be a folder (or a link to one), or nothing can be written under it.
fn blocked_ancestor(path: &Path) -> Result<LocalState, StorageError> {
    for at in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(at) {
            Ok(meta) => {
                if meta.is_dir() || std::fs::metadata(at).is_ok_and(|m| m.is_dir()) {
                    return Ok(LocalState::Missing);
                }
                return Ok(not_a_folder(at, meta.file_type()));
            }
            Err(e) if e.kind() == ErrorKind::NotFound || is_not_a_dir(&e) => continue,
            Err(e) => return Err(StorageError::io("cannot stat", at)(e)),
        }
    }
    Ok(LocalState::Missing)
}

fn different(len: u64) -> LocalState {
    LocalState::Conflict(format!("a different file is there ({len} bytes)"))
}

fn not_a_folder(path: &Path, kind: impl Into<Kind>) -> LocalState {
    LocalState::Conflict(format!(
        "{} is {}, where a folder is needed",
        path.display(),
        describe(kind)
    ))
}

/// What a name on disk is, as std or cap-std reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Folder,
    Link,
    File,
    Fifo,
    Device,
    Socket,
    Other,
}

impl From<FileType> for Kind {
    fn from(t: FileType) -> Self {
        match () {
            () if t.is_dir() => Kind::Folder,
            () if t.is_symlink() => Kind::Link,
            () if t.is_file() => Kind::File,
            () if t.is_fifo() => Kind::Fifo,
            () if t.is_char_device() || t.is_block_device() => Kind::Device,
            () if t.is_socket() => Kind::Socket,
            () => Kind::Other,
        }
    }
}

impl From<std::fs::FileType> for Kind {
    fn from(t: std::fs::FileType) -> Self {
        use std::os::unix::fs::FileTypeExt as _;
        match () {
            () if t.is_dir() => Kind::Folder,
            () if t.is_symlink() => Kind::Link,
            () if t.is_file() => Kind::File,
            () if t.is_fifo() => Kind::Fifo,
            () if t.is_char_device() || t.is_block_device() => Kind::Device,
            () if t.is_socket() => Kind::Socket,
            () => Kind::Other,
        }
    }
}

/// "a folder", "a symbolic link"...: what a name on disk is, for a user.
fn describe(kind: impl Into<Kind>) -> &'static str {
    match kind.into() {
        Kind::Folder => "a folder",
        Kind::Link => "a symbolic link",
        Kind::File => "a file",
        Kind::Fifo => "a FIFO",
        Kind::Device => "a device",
        Kind::Socket => "a socket",
        Kind::Other => "something that is not a regular file",
    }
}

fn is_not_a_dir(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

fn is_loop(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use p2p_protocol::CHUNK_SIZE;

    use super::*;
    use crate::build_manifest;

    /// Two chunks and a bit, so a difference in any chunk but the first is noticed too.
    fn two_chunks() -> Vec<u8> {
        (0..CHUNK_SIZE as usize + 1000)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    /// The manifest of `data` under `name` (hashed from a copy elsewhere).
    fn manifest_of(name: &str, data: &[u8]) -> FileManifest {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join(name), data).unwrap();
        build_manifest(&src.path().join(name)).unwrap().manifest
    }

    fn conflict(state: LocalState) -> String {
        match state {
            LocalState::Conflict(reason) => reason,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn nothing_there_is_missing() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest_of("a.bin", b"abc");
        assert_eq!(check_local(out.path(), &m).unwrap(), LocalState::Missing);
        // A folder level that does not exist yet: missing too.
        let deeper = out.path().join("x/y");
        assert_eq!(check_local(&deeper, &m).unwrap(), LocalState::Missing);
        let levels = ["x".to_string(), "y".to_string()];
        assert_eq!(
            check_local_in(out.path(), &levels, &m).unwrap(),
            LocalState::Missing
        );
    }

    #[test]
    fn a_part_file_is_partial_whatever_its_record_says() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest_of("a.bin", b"abc");
        // Not judged here: PartFile decides whether it is ours and for this file.
        std::fs::write(out.path().join("a.bin.part"), b"").unwrap();
        assert_eq!(check_local(out.path(), &m).unwrap(), LocalState::Partial);
    }

    /// One checker over many files, in path order, across folders that exist, are missing,
    /// or are blocked by a file, says for each what a fresh look at it says.
    #[test]
    fn a_checker_over_many_files_agrees_with_a_fresh_look_at_each() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let root = out.path().join("album");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("c/d")).unwrap();
        // A file where the folder `b` should be.
        std::fs::write(root.join("b"), b"in the way").unwrap();
        std::fs::write(root.join("a/same.txt"), b"same").unwrap();
        std::fs::write(root.join("a/other.txt"), b"not the same").unwrap();
        std::fs::write(root.join("c/d/same.txt"), b"deep").unwrap();
        let level = |path: &[&str]| -> Vec<String> {
            ["album"]
                .iter()
                .chain(path)
                .map(|s| s.to_string())
                .collect()
        };
        let files = [
            (level(&[]), manifest_of("top.txt", b"top")),
            (level(&["a"]), manifest_of("other.txt", b"expected")),
            (level(&["a"]), manifest_of("same.txt", b"same")),
            (level(&["a"]), manifest_of("missing.txt", b"x")),
            (level(&["b"]), manifest_of("x.txt", b"x")),
            (level(&["b"]), manifest_of("y.txt", b"y")),
            (level(&["c", "d"]), manifest_of("same.txt", b"deep")),
            (level(&["e"]), manifest_of("new.txt", b"n")),
            (level(&["e"]), manifest_of("new2.txt", b"n2")),
            (level(&["a"]), manifest_of("same.txt", b"same")),
        ];
        let mut checker = StagedChecker::new(&dir);
        let states: Vec<LocalState> = files
            .iter()
            .map(|(subdir, m)| {
                let state = checker.check(subdir, m).unwrap();
                assert_eq!(state, check_local_staged(&dir, subdir, m).unwrap());
                state
            })
            .collect();
        use LocalState::*;
        assert!(
            matches!(
                states.as_slice(),
                [
                    Missing,
                    Conflict(_),
                    AlreadyThere,
                    Missing,
                    Conflict(_),
                    Conflict(_),
                    AlreadyThere,
                    Missing,
                    Missing,
                    AlreadyThere
                ]
            ),
            "{states:?}"
        );
    }

    #[test]
    fn a_folders_partial_is_in_the_staging_folder_not_beside_it() {
        let out = tempfile::tempdir().unwrap();
        let data = two_chunks();
        let m = manifest_of("a.bin", &data);
        let album = vec!["album".to_string()];
        let dir = OutputDir::open(out.path(), "album").unwrap();
        assert_eq!(
            check_local_staged(&dir, &album, &m).unwrap(),
            LocalState::Missing
        );
        // Beside it: a file of the folder's or of the user's, nothing of the download's.
        std::fs::create_dir(out.path().join("album")).unwrap();
        std::fs::write(out.path().join("album/a.bin.part"), b"").unwrap();
        assert_eq!(
            check_local_staged(&dir, &album, &m).unwrap(),
            LocalState::Missing
        );
        drop(crate::PartFile::create_staged(&dir, &album, m.clone()).unwrap());
        assert_eq!(
            check_local_staged(&dir, &album, &m).unwrap(),
            LocalState::Partial
        );
        // Another path of the same file has no partial.
        assert_eq!(
            check_local_staged(&dir, &[], &m).unwrap(),
            LocalState::Missing
        );
        std::fs::write(out.path().join("album/a.bin"), &data).unwrap();
        assert_eq!(
            check_local_staged(&dir, &album, &m).unwrap(),
            LocalState::AlreadyThere
        );
    }

    /// Something that is not a usable staging folder where the staging folder goes (a file,
    /// a link): files that need no part file are judged as ever, a missing one is just
    /// missing; only creating a part file there fails, saying what is wrong.
    #[test]
    fn a_blocked_staging_folder_fails_only_the_files_that_need_it() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let album = vec!["album".to_string()];
        std::fs::create_dir(out.path().join("album")).unwrap();
        std::fs::write(out.path().join("album/there.txt"), b"there").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        for blocker in ["file", "link"] {
            let staging = dir.staging_path();
            let _ = std::fs::remove_file(staging);
            match blocker {
                "file" => std::fs::write(staging, b"not a folder").unwrap(),
                _ => std::os::unix::fs::symlink(elsewhere.path(), staging).unwrap(),
            }
            let dir = OutputDir::open(out.path(), "album").unwrap();
            let missing = manifest_of("missing.bin", &two_chunks());
            assert_eq!(
                check_local_staged(&dir, &album, &missing).unwrap(),
                LocalState::Missing,
                "{blocker}"
            );
            assert_eq!(
                check_local_staged(&dir, &album, &manifest_of("there.txt", b"there")).unwrap(),
                LocalState::AlreadyThere,
                "{blocker}"
            );
            let err = crate::PartFile::create_staged(&dir, &album, missing).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{} is not a folder; move it away and try again",
                    staging.display()
                ),
                "{blocker}"
            );
        }
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_same_file_is_already_there_and_left_alone() {
        let out = tempfile::tempdir().unwrap();
        let data = two_chunks();
        let m = manifest_of("a.bin", &data);
        let target = out.path().join("a.bin");
        std::fs::write(&target, &data).unwrap();
        let before = std::fs::metadata(&target).unwrap();
        assert_eq!(
            check_local(out.path(), &m).unwrap(),
            LocalState::AlreadyThere
        );
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(
            (before.ino(), before.mtime(), before.mtime_nsec()),
            (after.ino(), after.mtime(), after.mtime_nsec())
        );
        // An empty file has no chunk to compare: equal size says it all.
        let empty = manifest_of("e", b"");
        std::fs::write(out.path().join("e"), b"").unwrap();
        assert_eq!(
            check_local(out.path(), &empty).unwrap(),
            LocalState::AlreadyThere
        );
        // A finished file beside a stale part file: the file wins.
        std::fs::write(out.path().join("a.bin.part"), b"").unwrap();
        assert_eq!(
            check_local(out.path(), &m).unwrap(),
            LocalState::AlreadyThere
        );
    }

    #[test]
    fn a_different_file_is_a_conflict_and_untouched() {
        let out = tempfile::tempdir().unwrap();
        let data = two_chunks();
        let m = manifest_of("a.bin", &data);
        let target = out.path().join("a.bin");
        // Same size, the last chunk differs by one byte.
        let mut other = data.clone();
        *other.last_mut().unwrap() ^= 1;
        std::fs::write(&target, &other).unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            format!("a different file is there ({} bytes)", data.len())
        );
        assert_eq!(std::fs::read(&target).unwrap(), other);
        // Another size: not even read.
        std::fs::write(&target, b"short").unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            "a different file is there (5 bytes)"
        );
        // Even with a part file beside it, the file in the way is what counts.
        std::fs::write(out.path().join("a.bin.part"), b"").unwrap();
        assert!(matches!(
            check_local(out.path(), &m).unwrap(),
            LocalState::Conflict(_)
        ));
    }

    #[test]
    fn a_folder_at_the_target_is_a_conflict() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest_of("a.bin", b"abc");
        std::fs::create_dir(out.path().join("a.bin")).unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            "a folder is there"
        );
    }

    #[test]
    fn a_symlink_to_the_very_file_is_a_conflict_never_followed() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let data = b"identical bytes";
        let m = manifest_of("a.bin", data);
        let real = elsewhere.path().join("a.bin");
        std::fs::write(&real, data).unwrap();
        std::os::unix::fs::symlink(&real, out.path().join("a.bin")).unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            "a symbolic link is there"
        );
        // A dangling one too.
        std::fs::remove_file(&real).unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            "a symbolic link is there"
        );
    }

    #[test]
    fn a_fifo_at_the_target_is_a_conflict_without_waiting() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest_of("a.bin", b"");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            out.path().join("a.bin"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            conflict(check_local(out.path(), &m).unwrap()),
            "a FIFO is there"
        );
    }

    #[test]
    fn devices_and_sockets_are_named() {
        let null = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert_eq!(describe(null), "a device");
        let dir = tempfile::tempdir().unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let m = manifest_of("s", b"");
        assert_eq!(
            conflict(check_local(dir.path(), &m).unwrap()),
            "a socket is there"
        );
    }

    #[test]
    fn a_file_where_a_folder_is_needed_is_a_conflict() {
        let out = tempfile::tempdir().unwrap();
        let m = manifest_of("a.bin", b"abc");
        std::fs::write(out.path().join("sub"), b"a file").unwrap();
        let sub = out.path().join("sub");
        let expected = format!("{} is a file, where a folder is needed", sub.display());
        // Right above the target, and two levels above it.
        assert_eq!(conflict(check_local(&sub, &m).unwrap()), expected);
        assert_eq!(
            conflict(check_local(&sub.join("deeper"), &m).unwrap()),
            expected
        );
        let levels = ["sub".to_string(), "deeper".to_string()];
        assert_eq!(
            conflict(check_local_in(out.path(), &levels, &m).unwrap()),
            expected
        );
        assert_eq!(std::fs::read(&sub).unwrap(), b"a file");
    }

    #[test]
    fn a_symlinked_folder_level_is_a_conflict_never_followed() {
        let out = tempfile::tempdir().unwrap();
        let data = b"identical bytes";
        let m = manifest_of("a.bin", data);
        // A real folder holding the very file, and a link to it where the download's folder
        // level goes (inside the output folder, so a sandboxed open would follow it).
        std::fs::create_dir(out.path().join("real")).unwrap();
        std::fs::write(out.path().join("real/a.bin"), data).unwrap();
        std::os::unix::fs::symlink("real", out.path().join("sub")).unwrap();
        let levels = ["sub".to_string()];
        assert_eq!(
            conflict(check_local_in(out.path(), &levels, &m).unwrap()),
            format!(
                "{} is a symbolic link, where a folder is needed",
                out.path().join("sub").display()
            )
        );
        // The real folder level is fine.
        let levels = ["real".to_string()];
        assert_eq!(
            check_local_in(out.path(), &levels, &m).unwrap(),
            LocalState::AlreadyThere
        );
    }

    #[test]
    fn the_output_folder_may_itself_be_a_link() {
        // The user's choice of output folder is taken as given.
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("real")).unwrap();
        std::fs::write(base.path().join("real/a.bin"), b"abc").unwrap();
        std::os::unix::fs::symlink("real", base.path().join("out")).unwrap();
        let m = manifest_of("a.bin", b"abc");
        let out = base.path().join("out");
        assert_eq!(check_local(&out, &m).unwrap(), LocalState::AlreadyThere);
        assert_eq!(
            check_local_in(&out, &[], &m).unwrap(),
            LocalState::AlreadyThere
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let mut m = manifest_of("a.bin", b"abc");
        let levels = ["..".to_string()];
        assert!(check_local_in(out.path(), &levels, &m).is_err());
        m.name = "../a.bin".into();
        assert!(check_local(out.path(), &m).is_err());
    }
}
