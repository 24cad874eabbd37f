//! [`OutputDir`]: where a folder job writes, and its staging folder, where the job keeps its
//! temporary files, outside the folder's own tree.
//!
//! The names inside a folder are chosen by whoever shares it. A temporary name beside a file
//! (`<name>.part`) could therefore be a name of the folder too: a folder holding `x`, `x.part`
//! and `x.part.chunks` would have the downloader take the file it just wrote as `x`'s part
//! file, rewrite it and remove it. So a folder job never gives a temporary name inside the
//! folder:
//! * a small file has no name until it is whole (`O_TMPFILE`, see [`crate::small`]);
//! * a big file is assembled in the staging folder of the folder's name,
//!   `<out>/.p2p-staging-<16 hex digits>/` ([`staging_name`]), as `<key>.part` with its
//!   record `<key>.part.chunks` ([`crate::PartFile::create_staged`]), and given its name by a
//!   hard link from there into its folder, never over an existing file. The link needs both
//!   on one mount: a part file whose folder is on another one (a mount point inside `<out>`)
//!   is refused as it is created (`OutputDir::check_same_mount`), before anything is
//!   fetched for it.
//!
//! The staging folder goes by the folder's name, not its id: the id of a folder shared with
//! `--share-dir` changes whenever one of its files does, and a re-run with the new id must
//! still find the big files the last run left half done. `<key>` is [`part_key`]: 32 hex
//! digits of a SHA-256 over the file's id and its path, so the same file at the same path
//! resumes from one version of the folder to the next, while two different files (two
//! versions of one path, or two identical files at two paths) never share a part file. Two
//! jobs of one folder name at once share the staging folder; the lock on each part file keeps
//! them apart, as it does two downloads of one file.
//!
//! The staging folder is created on first need (mode `0700`), opened only through the output
//! folder's handle and never through a link, and must belong to this user. It can vanish
//! under a running job (another job's tidy, or the user): a job that finds its handle on a
//! removed folder makes it again (`OutputDir::in_staging`). A job that ends with every file
//! in place tidies it ([`OutputDir::tidy_staging`]): whatever no running download holds goes,
//! then the folder if that left it empty; a job that stops early leaves it for the next run,
//! which resumes from it.
//!
//! A folder whose name starts with [`STAGING_PREFIX`] is refused ([`check_folder_name`]), so
//! no folder ever lands in a staging folder. Shared folders leave it out as a hidden name
//! ([`crate::tree::left_out`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use p2p_protocol::FileId;
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::path::PART_SUFFIX;
use crate::store::{RECORD_SUFFIX, is_same_file, open_nofollow, open_subdir};

/// The start of a staging folder's name; no downloaded folder may have a name that starts so.
pub const STAGING_PREFIX: &str = ".p2p-staging-";

/// Hex digits of the hash of the folder's name in its staging folder's name (64 bits: two
/// folders downloaded into one output folder never share one by chance).
const STAGING_DIGITS: usize = 16;

/// Domain tag of a staging folder's name, so it is never the hash of anything else.
const STAGING_TAG: &[u8] = b"p2p-staging-folder-v1\0";

/// Bytes of the SHA-256 in a part's key (128 bits, 32 hex digits).
const KEY_BYTES: usize = 16;

/// Domain tag of a part's key, so it is never the hash of anything else.
const KEY_TAG: &[u8] = b"p2p-staging-key-v1\0";

/// The name of the staging folder of the folder named `folder_name`: `.p2p-staging-` and the
/// first 16 hex digits of the SHA-256 over a domain tag and the name's bytes.
pub fn staging_name(folder_name: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(STAGING_TAG);
    hash.update(folder_name.as_bytes());
    format!(
        "{STAGING_PREFIX}{}",
        hex(&hash.finalize()[..STAGING_DIGITS / 2])
    )
}

/// The key a file's temporary files go by in a staging folder: 32 hex digits of the SHA-256
/// over a domain tag, its id and its path under the output folder (`subdir` levels, then
/// `name`, each ended by a zero byte, which no name holds).
pub fn part_key(file_id: &FileId, subdir: &[String], name: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(KEY_TAG);
    hash.update(file_id.0);
    for level in subdir.iter().map(String::as_str).chain([name]) {
        hash.update(level.as_bytes());
        hash.update([0]);
    }
    hex(&hash.finalize()[..KEY_BYTES])
}

/// Refuses a folder named like a staging folder: downloaded, it would land in one.
pub fn check_folder_name(name: &str) -> Result<(), StorageError> {
    if name.starts_with(STAGING_PREFIX) {
        return Err(StorageError::ReservedName(name.to_owned()));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The output folder of a folder job, opened once for the whole job, with the job's staging
/// folder (see the module docs).
#[derive(Debug)]
pub struct OutputDir {
    dir: Dir,
    path: PathBuf,
    /// The staging folder's name in `dir`.
    staging_name: String,
    staging_path: PathBuf,
    /// The staging folder as last opened. Checked before each use: a handle on a folder
    /// removed since (another job's tidy, the user) is dropped and the folder opened, or
    /// made, again.
    staging: Mutex<Option<Arc<Dir>>>,
    /// Small files are written with no name (`O_TMPFILE`); cleared for good the first time
    /// the file system refuses it, after which they go through the staging folder.
    unnamed: AtomicBool,
}

impl OutputDir {
    /// Opens the folder at `path` for the folder named `folder_name` (a link the user chose as
    /// output folder is followed, as everywhere else; nothing below it is).
    pub fn open(path: &Path, folder_name: &str) -> Result<Self, StorageError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(StorageError::io("cannot open output folder", path))?;
        let staging_name = staging_name(folder_name);
        Ok(Self {
            dir,
            path: path.to_owned(),
            staging_path: path.join(&staging_name),
            staging_name,
            staging: Mutex::new(None),
            unnamed: AtomicBool::new(true),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where its staging folder is (which may not exist).
    pub fn staging_path(&self) -> &Path {
        &self.staging_path
    }

    /// Creates the folder `subdir` (one safe name per level) under it, the way a batch does:
    /// each level through the handle of the one above, never leading outside. Returns its
    /// path.
    pub fn make_folder(&self, subdir: &[String]) -> Result<PathBuf, StorageError> {
        open_subdir(&self.dir, &self.path, subdir).map(|(_, path)| path)
    }

    /// Empties the staging folder of whatever no running download holds, then removes it if
    /// that left it empty. A folder job that ends with every file in place calls this: it is
    /// how the part files of the folder's older versions (files it no longer has) and the
    /// leftovers of a crash go. What goes:
    /// * `<key>.part`, opened without following a link: a plain file of this user's whose
    ///   lock is free (no download holds it), with its record; one held stays, record too;
    /// * `<key>.part.chunks` with no `<key>.part`;
    /// * `.<key>.part.chunks.<random>.tmp`, a record being written when a `kill -9` came.
    ///
    /// Anything else stays, and then so does the folder. Never blocks.
    pub fn tidy_staging(&self) {
        let Ok(Some(staging)) = self.existing_staging() else {
            return;
        };
        let Ok(entries) = staging.entries() else {
            return;
        };
        let names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        for part in names.iter().filter(|name| name.ends_with(PART_SUFFIX)) {
            remove_part_unless_held(&staging, part);
        }
        for name in &names {
            let orphan = name
                .strip_suffix(RECORD_SUFFIX)
                .filter(|part| part.ends_with(PART_SUFFIX))
                .is_some_and(|part| {
                    matches!(staging.symlink_metadata(part), Err(e) if e.kind() == ErrorKind::NotFound)
                });
            let temporary = name.starts_with('.')
                && name.ends_with(".tmp")
                && name.contains(&format!("{PART_SUFFIX}{RECORD_SUFFIX}."));
            if orphan || temporary {
                let _ = staging.remove_file(name);
            }
        }
        let _ = self.dir.remove_dir(&self.staging_name);
    }

    /// Removes what an earlier run left in the staging folder for a file that turned out to
    /// be in place already (a crash came between naming it and removing its temporary name):
    /// unless another download holds it. Never writes to it.
    pub fn discard_staged(&self, subdir: &[String], file_id: &FileId, name: &str) {
        let Ok(Some(staging)) = self.existing_staging() else {
            return;
        };
        let part = format!("{}{PART_SUFFIX}", part_key(file_id, subdir, name));
        remove_part_unless_held(&staging, &part);
    }

    /// The output folder's handle.
    pub(crate) fn root(&self) -> &Dir {
        &self.dir
    }

    /// Whether small files are to be written with no name.
    pub(crate) fn unnamed(&self) -> bool {
        self.unnamed.load(Ordering::Relaxed)
    }

    /// The file system refused a file with no name: small files go through the staging
    /// folder from now on.
    pub(crate) fn refuse_unnamed(&self) {
        self.unnamed.store(false, Ordering::Relaxed);
    }

    /// Refuses a file whose folder `folder` (at `folder_path`) is on another mount than the
    /// staging folder `staging`: it could be assembled there but never linked into place
    /// (`EXDEV`). Mount ids where the kernel gives them (`statx`, Linux 5.8: a bind mount of
    /// the same file system is another mount too), else devices.
    pub(crate) fn check_same_mount(
        &self,
        staging: &Dir,
        folder: &Dir,
        folder_path: &Path,
    ) -> Result<(), StorageError> {
        if same_mount(staging, folder) {
            return Ok(());
        }
        Err(StorageError::OtherFileSystem {
            folder: folder_path.to_owned(),
            out: self.path.clone(),
        })
    }

    /// Runs `create` (which makes a file in the staging folder) with the staging folder,
    /// created if it does not exist yet. If that fails and the folder turns out to have been
    /// removed under it meanwhile (every creation in a removed folder fails with `ENOENT`),
    /// runs it once more in the folder made again.
    pub(crate) fn in_staging<T>(
        &self,
        mut create: impl FnMut(&Arc<Dir>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let staging = self.staging()?;
        match create(&staging) {
            Err(_) if is_removed(&staging) => create(&self.staging()?),
            done => done,
        }
    }

    /// The staging folder, created (mode `0700`) if it does not exist yet.
    pub(crate) fn staging(&self) -> Result<Arc<Dir>, StorageError> {
        if let Some(dir) = self.current() {
            return Ok(dir);
        }
        match rustix::fs::mkdirat(&self.dir, &self.staging_name, rustix::fs::Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(StorageError::io("cannot create folder", &self.staging_path)(e.into()));
            }
        }
        self.existing_staging()?.ok_or_else(|| {
            StorageError::io("cannot open folder", &self.staging_path)(ErrorKind::NotFound.into())
        })
    }

    /// The staging folder if it exists: a folder of this user's, not a link.
    pub(crate) fn existing_staging(&self) -> Result<Option<Arc<Dir>>, StorageError> {
        if let Some(dir) = self.current() {
            return Ok(Some(dir));
        }
        let dir = match self.dir.open_dir_nofollow(&self.staging_name) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if is_not_a_folder(&e) => {
                return Err(StorageError::NotAFolder(self.staging_path.clone()));
            }
            Err(e) => {
                return Err(StorageError::io("cannot open folder", &self.staging_path)(
                    e,
                ));
            }
        };
        let owner = rustix::fs::fstat(&dir)
            .map_err(|e| StorageError::io("cannot stat", &self.staging_path)(e.into()))?
            .st_uid;
        if owner != rustix::process::geteuid().as_raw() {
            return Err(StorageError::PartLinked(self.staging_path.clone()));
        }
        let dir = Arc::new(dir);
        *self.staging.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.clone());
        Ok(Some(dir))
    }

    /// The staging folder's handle as last opened, unless that folder was removed since.
    fn current(&self) -> Option<Arc<Dir>> {
        let dir = self
            .staging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        if !is_removed(&dir) {
            return Some(dir);
        }
        let mut cached = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, &dir)) {
            *cached = None;
        }
        None
    }
}

/// Whether the folders `a` and `b` are on one mount (see [`OutputDir::check_same_mount`]).
/// True when it can't be told: the link will say.
fn same_mount(a: &Dir, b: &Dir) -> bool {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let of = |dir: &Dir| statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok();
    let has_id = |stat: &rustix::fs::Statx| stat.stx_mask & StatxFlags::MNT_ID.bits() != 0;
    match (of(a), of(b)) {
        (Some(a), Some(b)) if has_id(&a) && has_id(&b) => a.stx_mnt_id == b.stx_mnt_id,
        (Some(a), Some(b)) => {
            (a.stx_dev_major, a.stx_dev_minor) == (b.stx_dev_major, b.stx_dev_minor)
        }
        _ => match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev,
            _ => true,
        },
    }
}

/// Whether the folder `dir` is open on was removed (its link count drops to 0 then).
fn is_removed(dir: &Dir) -> bool {
    rustix::fs::fstat(dir).is_ok_and(|stat| stat.st_nlink == 0)
}

/// Removes the part file `part` in `staging` and its record, unless it is not a plain file of
/// this user's (opened without following a link, and without waiting) or a download holds it.
/// Removed while locked, so no download can take it up meanwhile; one that opened it just
/// before sees, once it has the lock, that its name leads elsewhere and starts again.
fn remove_part_unless_held(staging: &Dir, part: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(file) = open_nofollow(staging, part, false) else {
        return;
    };
    let ours = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == rustix::process::geteuid().as_raw());
    if ours && file.try_lock().is_ok() && is_same_file(&file, staging, part) {
        let _ = staging.remove_file(format!("{part}{RECORD_SUFFIX}"));
        let _ = staging.remove_file(part);
    }
}

fn is_not_a_folder(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use crate::test_support::names;
    use std::os::unix::fs::PermissionsExt;

    use p2p_protocol::{CHUNK_SIZE, FileManifest, Sha256Hash};

    use super::*;
    use crate::PartFile;

    #[test]
    fn a_staging_folder_is_named_after_its_folders_name() {
        // SHA-256("p2p-staging-folder-v1\0album"), first 8 bytes: the derivation PROTOCOL.md
        // §8.4 gives, so a third-party client finds the same folder.
        let mut hash = Sha256::new();
        hash.update(b"p2p-staging-folder-v1\0album");
        let digest = hash.finalize();
        let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(staging_name("album"), format!(".p2p-staging-{expected}"));
        assert_eq!(staging_name("album").len(), ".p2p-staging-".len() + 16);
        assert_ne!(staging_name("album"), staging_name("album2"));
        assert_ne!(staging_name("album"), staging_name("Album"));
    }

    #[test]
    fn a_key_is_of_the_file_and_its_path() {
        let (a, b) = (FileId([1; 32]), FileId([2; 32]));
        let sub = vec!["album".to_string(), "disc 1".to_string()];
        let key = part_key(&a, &sub, "x");
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|c| c.is_ascii_hexdigit()), "{key}");
        // The same file at the same path: the same key, run after run.
        assert_eq!(key, part_key(&a, &sub, "x"));
        // Another file, another folder, another name, or the same bytes split differently:
        // another key.
        assert_ne!(key, part_key(&b, &sub, "x"));
        assert_ne!(key, part_key(&a, &sub[..1], "x"));
        assert_ne!(key, part_key(&a, &sub, "y"));
        let joined = vec!["album".to_string()];
        assert_ne!(
            part_key(&a, &joined, "disc 1x"),
            part_key(&a, &sub, "x"),
            "levels are kept apart"
        );
    }

    #[test]
    fn a_folder_named_like_a_staging_folder_is_refused() {
        let err = check_folder_name(".p2p-staging-0123456789abcdef").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the folder name .p2p-staging-0123456789abcdef is reserved: names starting with \
             .p2p-staging- hold a download's temporary files"
        );
        for fine in ["album", ".p2p-stagin", "p2p-staging-x", ".hidden"] {
            assert!(check_folder_name(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn the_staging_folder_is_made_private_on_first_need_and_never_through_a_link() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        assert!(dir.existing_staging().unwrap().is_none());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        dir.staging().unwrap();
        let meta = std::fs::symlink_metadata(dir.staging_path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o077, 0, "private");
        dir.tidy_staging();
        assert!(!dir.staging_path().exists());

        // A link planted where it goes is not followed, and nothing is written behind it.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), out.path().join(staging_name("album")))
            .unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let err = dir.staging().unwrap_err();
        assert!(matches!(err, StorageError::NotAFolder(_)), "{err}");
        dir.tidy_staging();
        assert!(
            out.path().join(staging_name("album")).is_symlink(),
            "left alone"
        );
    }

    /// A manifest for `data` (at most one chunk) named `name`.
    fn manifest(name: &str, data: &[u8]) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: data.len() as u64,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(data)],
        }
    }

    /// Tidying keeps what a running download holds (its part file and record), and removes
    /// an old part no one holds with its record, a record with no part and a record's
    /// temporary file a kill left; what is not ours stays, and with it the folder.
    #[test]
    fn tidying_removes_what_no_download_holds() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let album = vec!["album".to_string()];
        let held = PartFile::create_staged(&dir, &album, manifest("held", b"held")).unwrap();
        held.save_record().unwrap();
        // An older version's part, no longer held, with its record.
        drop(PartFile::create_staged(&dir, &album, manifest("old", b"old")).unwrap());
        let staging = dir.staging_path().to_owned();
        let held_key = part_key(&manifest("held", b"held").id(), &album, "held");
        std::fs::write(staging.join("0123.part.chunks"), b"orphan record").unwrap();
        std::fs::write(
            staging.join(format!(".{held_key}.part.chunks.00112233aabbccdd.tmp")),
            b"half a record",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", staging.join("linked.part")).unwrap();
        std::fs::write(staging.join("notes.txt"), b"not ours to judge").unwrap();
        dir.tidy_staging();
        assert_eq!(
            names(&staging),
            [
                format!("{held_key}.part"),
                format!("{held_key}.part.chunks"),
                "linked.part".to_string(),
                "notes.txt".to_string()
            ]
        );
        // Once only what a download holds is left and that download is done, the folder goes.
        std::fs::remove_file(staging.join("linked.part")).unwrap();
        std::fs::remove_file(staging.join("notes.txt")).unwrap();
        dir.tidy_staging();
        assert!(staging.exists(), "held");
        drop(held);
        dir.tidy_staging();
        assert!(!staging.exists());
        assert_eq!(names(out.path()), ["album"]);
    }

    /// A folder on another mount than the output folder is told apart from one on the same,
    /// with an error that says what to do.
    #[test]
    fn a_folder_on_another_mount_is_refused_with_what_to_do() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let staging = dir.staging().unwrap();
        std::fs::create_dir(out.path().join("album")).unwrap();
        let album =
            Dir::open_ambient_dir(out.path().join("album"), cap_std::ambient_authority()).unwrap();
        assert!(
            dir.check_same_mount(&staging, &album, Path::new("x"))
                .is_ok()
        );
        // /proc is a mount of its own on any Linux.
        let proc = Dir::open_ambient_dir("/proc", cap_std::ambient_authority()).unwrap();
        let err = dir
            .check_same_mount(&staging, &proc, Path::new("/proc"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "/proc is on another file system than {out}; a folder download assembles its \
                 big files in {out} and can't move them across: download into an output folder \
                 on that file system",
                out = out.path().display()
            )
        );
    }

    /// The staging folder removed under a job (another job's tidy, the user): the next part
    /// file is created in it made again, not refused with "no such file" for the rest of the
    /// job; a check finds what is in the new one.
    #[test]
    fn a_staging_folder_removed_under_a_job_is_made_again() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let album = vec!["album".to_string()];
        drop(PartFile::create_staged(&dir, &album, manifest("one", b"one")).unwrap());
        dir.tidy_staging();
        assert!(!dir.staging_path().exists());
        let m = manifest("two", b"two");
        let part = PartFile::create_staged(&dir, &album, m.clone()).unwrap();
        assert!(part.part_path().exists());
        assert_eq!(
            crate::local::check_local_staged(&dir, &album, &m).unwrap(),
            crate::local::LocalState::Partial
        );
        part.write_verified(0, b"two").unwrap();
        part.finish().unwrap();
        assert_eq!(std::fs::read(out.path().join("album/two")).unwrap(), b"two");

        // Removed between the check of the handle and the creation: made again all the same.
        let calls = std::cell::Cell::new(0);
        let made = dir.in_staging(|staging| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                std::fs::remove_dir_all(dir.staging_path()).unwrap();
            }
            staging
                .create("made")
                .map_err(StorageError::io("cannot create", dir.staging_path()))
        });
        assert!(made.is_ok(), "{made:?}");
        assert_eq!(calls.get(), 2);
        assert_eq!(names(dir.staging_path()), ["made"]);
    }
}
