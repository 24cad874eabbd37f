//! [`OutputDir`]: where a folder job writes, and its staging folder, where the job keeps its
//! temporary files, outside the folder's own tree.
//!
//! The names inside a folder are chosen by whoever shares it. A temporary name beside a file
//! (`<name>.part`) could therefore be a name of the folder too: a folder holding `x`, `x.part`
//! and `x.part.chunks` would have the downloader take the file it just wrote as `x`'s part
//! file, rewrite it and remove it. So a folder job never gives a temporary name inside the
//! folder:
//! * a small file has no name until it is whole (`O_TMPFILE`, see [`crate::small`]);
//! * a big file is assembled in the job's staging folder,
//!   `<out>/.p2p-staging-<first 16 hex digits of the folder id>/`, as `<key>.part` with its
//!   record `<key>.part.chunks` ([`crate::PartFile::create_staged`]), and given its name by a
//!   hard link from there into its folder (the same file system: both are under `<out>`),
//!   never over an existing file.
//!
//! `<key>` is [`part_key`]: 32 hex digits of a SHA-256 over the file's id and its path, so two
//! identical files at two paths never share a part file, and the same file at the same path
//! resumes from one run to the next. The staging folder is created on first need (mode
//! `0700`), opened only through the output folder's handle and never through a link, and must
//! belong to this user. A job that ends with every file in place removes it if it is empty; a
//! job that stops early leaves it for the next run, which resumes from it.
//!
//! A folder whose name starts with [`STAGING_PREFIX`] is refused ([`check_folder_name`]), so
//! no folder ever lands in a staging folder. Shared folders leave it out as a hidden name
//! ([`crate::tree::left_out`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use p2p_protocol::{FileId, FolderId};
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::path::PART_SUFFIX;
use crate::store::{RECORD_SUFFIX, open_subdir};

/// The start of a staging folder's name; no downloaded folder may have a name that starts so.
pub const STAGING_PREFIX: &str = ".p2p-staging-";

/// Hex digits of the folder id in its staging folder's name (64 bits: two folders downloaded
/// into one output folder never share one by chance).
const STAGING_ID_DIGITS: usize = 16;

/// Bytes of the SHA-256 in a part's key (128 bits, 32 hex digits).
const KEY_BYTES: usize = 16;

/// Domain tag of a part's key, so it is never the hash of anything else.
const KEY_TAG: &[u8] = b"p2p-staging-key-v1\0";

/// The name of the staging folder of the folder `folder_id`:
/// `.p2p-staging-<first 16 hex digits of its id>`.
pub fn staging_name(folder_id: &FolderId) -> String {
    let digits = hex(&folder_id.0);
    format!("{STAGING_PREFIX}{}", &digits[..STAGING_ID_DIGITS])
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
    /// The staging folder, once it exists.
    staging: OnceLock<Dir>,
    /// Small files are written with no name (`O_TMPFILE`); cleared for good the first time
    /// the file system refuses it, after which they go through the staging folder.
    unnamed: AtomicBool,
}

impl OutputDir {
    /// Opens the folder at `path` for the folder `folder_id` (a link the user chose as output
    /// folder is followed, as everywhere else; nothing below it is).
    pub fn open(path: &Path, folder_id: &FolderId) -> Result<Self, StorageError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(StorageError::io("cannot open output folder", path))?;
        let staging_name = staging_name(folder_id);
        Ok(Self {
            dir,
            path: path.to_owned(),
            staging_path: path.join(&staging_name),
            staging_name,
            staging: OnceLock::new(),
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

    /// Removes the staging folder if it is empty (a job with every file in place calls this;
    /// anything left in it stays, and so does the folder).
    pub fn remove_staging_if_empty(&self) {
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
        let Ok(file) = crate::store::open_nofollow(staging, &part, false) else {
            return;
        };
        if file.metadata().is_ok_and(|m| m.is_file()) && file.try_lock().is_ok() {
            let _ = staging.remove_file(format!("{part}{RECORD_SUFFIX}"));
            let _ = staging.remove_file(&part);
        }
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

    /// The staging folder, created (mode `0700`) if it does not exist yet.
    pub(crate) fn staging(&self) -> Result<&Dir, StorageError> {
        if let Some(dir) = self.staging.get() {
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
    pub(crate) fn existing_staging(&self) -> Result<Option<&Dir>, StorageError> {
        if let Some(dir) = self.staging.get() {
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
        let _ = self.staging.set(dir);
        Ok(self.staging.get())
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_staging_folder_is_named_after_its_folder_id() {
        let mut id = FolderId([0; 32]);
        id.0[0] = 0xab;
        id.0[7] = 0x01;
        id.0[8] = 0xff;
        assert_eq!(staging_name(&id), ".p2p-staging-ab00000000000001");
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
        let id = FolderId([3; 32]);
        let dir = OutputDir::open(out.path(), &id).unwrap();
        assert!(dir.existing_staging().unwrap().is_none());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        dir.staging().unwrap();
        let meta = std::fs::symlink_metadata(dir.staging_path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o077, 0, "private");
        dir.remove_staging_if_empty();
        assert!(!dir.staging_path().exists());

        // A link planted where it goes is not followed, and nothing is written behind it.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), out.path().join(staging_name(&id))).unwrap();
        let dir = OutputDir::open(out.path(), &id).unwrap();
        let err = dir.staging().unwrap_err();
        assert!(matches!(err, StorageError::NotAFolder(_)), "{err}");
        dir.remove_staging_if_empty();
        assert!(
            out.path().join(staging_name(&id)).is_symlink(),
            "left alone"
        );
    }

    #[test]
    fn a_staging_folder_with_something_in_it_stays() {
        let out = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(out.path(), &FolderId([4; 32])).unwrap();
        dir.staging().unwrap();
        std::fs::write(dir.staging_path().join("k.part"), b"kept").unwrap();
        dir.remove_staging_if_empty();
        assert_eq!(
            std::fs::read(dir.staging_path().join("k.part")).unwrap(),
            b"kept"
        );
    }
}
