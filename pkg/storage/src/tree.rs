//! [`Tree`]: a folder shared as a whole, listed and opened only through a handle on it.
//!
//! The walk descends with directory handles that refuse symlinks, and each file is opened
//! beneath the folder's handle without following a link, then checked to be the very file the
//! walk saw (same device and inode). So whoever can write into a shared folder can't make the
//! peer list, hash or serve anything outside it: a file swapped for a link to `~/.ssh/id_ed25519`
//! between the walk and the open is refused, and so is a folder swapped for a link.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};

use p2p_protocol::FileManifest;

use crate::StorageError;
use crate::chunker::hash_open;
use crate::source::{OpenSource, source_open_flags};

/// At most this many threads hash the files of one folder at once (each holds one buffer of
/// at most a chunk). Small files are hashed side by side, one per thread, so a folder of
/// thousands of them runs at the speed of every core, not at one open and one read at a time.
const MAX_FILE_HASHERS: usize = 8;

/// A shared folder.
#[derive(Debug)]
pub struct Tree {
    /// The folder, symlinks resolved, for messages and for the paths files are shown under.
    root: PathBuf,
    dir: Dir,
}

/// What a walk found.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    /// Regular files, sorted by path.
    pub files: Vec<TreeFile>,
    /// Whether every folder could be listed. If not, files missing from `files` may still be
    /// there: don't take their absence as removal.
    pub complete: bool,
    /// The folders (relative to the shared folder; empty for the folder itself) that could
    /// not be listed, each with why: for the user to be told, by name.
    pub unlisted: Vec<(PathBuf, String)>,
}

/// A regular file as the walk saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    /// Its path relative to the folder.
    pub rel: PathBuf,
    /// Size when seen.
    pub size: u64,
    /// Modification time when seen.
    pub modified: SystemTime,
    /// (device, inode) when seen: an open must find this same file.
    identity: (u64, u64),
}

impl Tree {
    /// Opens the folder at `path` (the user's symlinks in it resolved once).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let root = std::fs::canonicalize(path)
            .map_err(StorageError::io("cannot open shared folder", path))?;
        let dir = Dir::open_ambient_dir(&root, ambient_authority())
            .map_err(StorageError::io("cannot open shared folder", path))?;
        Ok(Self { root, dir })
    }

    /// The folder, symlinks resolved.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `file` is, for messages.
    pub fn path_of(&self, file: &TreeFile) -> PathBuf {
        self.root.join(&file.rel)
    }

    /// Every regular file under the folder, sorted by path, except what [`left_out`] names.
    /// Symlinks, FIFOs, devices and sockets are skipped, and the walk never enters a
    /// symlinked folder. One folder handle is open at a time, whatever the depth or the
    /// number of folders. A folder that can't be listed makes the walk incomplete (its files
    /// are unknown, not gone).
    pub fn walk(&self) -> Walk {
        let mut walk = Walk {
            files: Vec::new(),
            complete: true,
            unlisted: Vec::new(),
        };
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let listed = if rel.as_os_str().is_empty() {
                self.dir.entries()
            } else {
                self.dir
                    .open_dir_nofollow(&rel)
                    .and_then(|dir| dir.entries())
            };
            let entries = match listed {
                Ok(entries) => entries,
                Err(err) => {
                    walk.complete = false;
                    walk.unlisted.push((rel, err.to_string()));
                    continue;
                }
            };
            for entry in entries {
                let Ok(entry) = entry else {
                    walk.complete = false;
                    continue;
                };
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if left_out(name) {
                    continue;
                }
                // The entry itself, not what a link points at.
                let Ok(meta) = entry.metadata() else {
                    walk.complete = false;
                    continue;
                };
                if meta.is_dir() {
                    pending.push(rel.join(name));
                } else if meta.is_file()
                    && let Ok(modified) = meta.modified()
                {
                    walk.files.push(TreeFile {
                        rel: rel.join(name),
                        size: meta.len(),
                        modified: modified.into_std(),
                        identity: (meta.dev(), meta.ino()),
                    });
                }
            }
        }
        walk.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        walk
    }

    /// Opens `file` beneath the folder, without following a link and without blocking, and
    /// checks that it is still the regular file the walk saw.
    pub fn open_file(&self, file: &TreeFile) -> Result<OpenSource, StorageError> {
        let path = self.path_of(file);
        let name = crate::source::base_name(&file.rel)?;
        let mut options = OpenOptions::new();
        options
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(source_open_flags());
        let handle = self
            .dir
            .open_with(&file.rel, &options)
            .map_err(StorageError::io("cannot open", &path))?
            .into_std();
        let opened = OpenSource::check(handle, name, path.clone())?;
        let meta = opened.file().metadata();
        match meta {
            Ok(meta) if (meta.dev(), meta.ino()) == file.identity => Ok(opened),
            _ => Err(StorageError::Replaced(path)),
        }
    }
}

impl Tree {
    /// The regular file at `rel` beneath the folder, as a walk would list it (without
    /// following a link at any level: a link, FIFO or folder there is
    /// [`StorageError::NotAFile`]). For a folder whose file list is known already (a download
    /// that just finished), so it can be served without walking or hashing it again.
    pub fn file_at(&self, rel: &Path) -> Result<TreeFile, StorageError> {
        let path = self.root.join(rel);
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let meta = match parent {
            Some(parent) => self
                .dir
                .open_dir_nofollow(parent)
                .and_then(|dir| dir.symlink_metadata(rel.file_name().unwrap_or_default())),
            None => self.dir.symlink_metadata(rel),
        }
        .map_err(StorageError::io("cannot stat", &path))?;
        if !meta.is_file() {
            return Err(StorageError::NotAFile(path));
        }
        let modified = meta
            .modified()
            .map_err(StorageError::io("cannot stat", &path))?;
        Ok(TreeFile {
            rel: rel.to_owned(),
            size: meta.len(),
            modified: modified.into_std(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// Hashes `files` (from [`Tree::walk`]), each opened beneath the folder as
    /// [`Tree::open_file`] does and hashed through that handle, which is closed again: nothing
    /// stays open. Small files (one chunk at most) are hashed side by side on up to
    /// 8 threads; bigger ones one after another, each on every core.
    ///
    /// Returns one result per file, in the order given, each with the file as it was hashed
    /// (its size and time from the handle, which a later open must find again). A file that
    /// can't be opened or changes while it is read fails alone.
    pub fn hash_files(
        &self,
        files: Vec<TreeFile>,
    ) -> Vec<Result<(TreeFile, FileManifest), StorageError>> {
        let hash_one = |file: &TreeFile| -> Result<(TreeFile, FileManifest), StorageError> {
            let opened = self.open_file(file)?;
            let hashed = hash_open(&opened)?;
            let mut seen = file.clone();
            seen.size = hashed.len;
            seen.modified = hashed.modified;
            Ok((seen, hashed.manifest))
        };
        let chunk = u64::from(p2p_protocol::CHUNK_SIZE);
        let small: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].size <= chunk)
            .collect();
        let mut results: Vec<Option<Result<(TreeFile, FileManifest), StorageError>>> =
            std::iter::repeat_with(|| None).take(files.len()).collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_FILE_HASHERS)
            .min(small.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let hash_some = || {
            let mut done = Vec::new();
            loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = small.get(at) else {
                    return done;
                };
                done.push((i, hash_one(&files[i])));
            }
        };
        let parts = std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(hash_some)).collect();
            let mut parts = vec![hash_some()];
            parts.extend(
                helpers
                    .into_iter()
                    .map(|h| h.join().expect("hashing thread panicked")),
            );
            parts
        });
        for (i, result) in parts.into_iter().flatten() {
            results[i] = Some(result);
        }
        // Big files: each one on every core already (the chunker's own threads).
        for (i, file) in files.iter().enumerate() {
            if results[i].is_none() {
                results[i] = Some(hash_one(file));
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every file was hashed"))
            .collect()
    }
}

/// Whether a file in a shared folder is left out: hidden files (any path component starting
/// with `.`), partial downloads (`.part`, `.part.chunks`, `.tmp`) and manifest files (`.p2pm`).
pub fn left_out(name: &str) -> bool {
    name.starts_with('.')
        || [
            crate::path::PART_SUFFIX,
            crate::store::RECORD_SUFFIX,
            ".tmp",
            p2p_protocol::manifest_file::SUFFIX,
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn rels(tree: &Tree) -> Vec<String> {
        tree.walk()
            .files
            .iter()
            .map(|f| f.rel.display().to_string())
            .collect()
    }

    #[test]
    fn hidden_partial_and_special_files_are_left_out() {
        for name in [
            ".hidden",
            "movie.mkv.part",
            "movie.mkv.part.chunks",
            "x.tmp",
            "a.p2pm",
        ] {
            assert!(left_out(name), "{name}");
        }
        for name in ["movie.mkv", "partial.txt", "notes.chunk"] {
            assert!(!left_out(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"key").unwrap();
        std::fs::create_dir_all(dir.path().join("sub/.git")).unwrap();
        // A download's staging folder, as one into this folder leaves it.
        std::fs::create_dir_all(dir.path().join(".p2p-staging-0123456789abcdef")).unwrap();
        for f in [
            "a",
            "sub/b",
            "sub/.git/c",
            ".d",
            "e.part",
            ".p2p-staging-0123456789abcdef/00ff.part",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        symlink(outside.path(), dir.path().join("linked-dir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        assert_eq!(rels(&tree), ["a", "sub/b"]);
    }

    #[test]
    fn many_folders_are_walked_with_one_handle_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        // More folders than the usual limit of 1,024 open files.
        for i in 0..1500 {
            let sub = dir.path().join(format!("d{i:04}"));
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(sub.join("f"), b"x").unwrap();
        }
        let tree = Tree::open(dir.path()).unwrap();
        let walk = tree.walk();
        assert!(walk.complete);
        assert_eq!(walk.files.len(), 1500);
    }

    #[test]
    fn a_file_swapped_for_a_link_after_the_walk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"private key").unwrap();
        std::fs::write(dir.path().join("a"), b"shared").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let seen = tree.walk().files.remove(0);

        std::fs::remove_file(dir.path().join("a")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("a")).unwrap();
        let err = tree.open_file(&seen).unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");

        // Another regular file in its place is not the file the walk saw either (the old one
        // is kept, or its inode number could be reused at once).
        std::fs::remove_file(dir.path().join("a")).unwrap();
        std::fs::hard_link(outside.path().join("secret"), dir.path().join("a")).unwrap();
        let err = tree.open_file(&seen).unwrap_err();
        assert!(matches!(err, StorageError::Replaced(_)), "{err}");
    }

    #[test]
    fn a_folder_swapped_for_a_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("sub/secret"), b"private key").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/secret"), b"shared").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let seen = tree.walk().files.remove(0);

        std::fs::rename(dir.path().join("sub"), dir.path().join("moved")).unwrap();
        symlink(outside.path().join("sub"), dir.path().join("sub")).unwrap();
        assert!(tree.open_file(&seen).is_err());
    }

    #[test]
    fn many_small_files_are_hashed_side_by_side_each_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let rel = if i % 3 == 0 {
                format!("sub/f{i:03}")
            } else {
                format!("f{i:03}")
            };
            let data = vec![i as u8; i as usize * 7];
            std::fs::write(dir.path().join(&rel), &data).unwrap();
            expected.push((rel, data));
        }
        // One file bigger than a chunk goes through the chunker's own threads.
        let big = vec![9u8; p2p_protocol::CHUNK_SIZE as usize + 5];
        std::fs::write(dir.path().join("big"), &big).unwrap();
        expected.push(("big".into(), big));
        let tree = Tree::open(dir.path()).unwrap();
        let walk = tree.walk();
        let hashed = tree.hash_files(walk.files.clone());
        assert_eq!(hashed.len(), expected.len());
        for (file, result) in walk.files.iter().zip(hashed) {
            let (seen, manifest) = result.unwrap();
            assert_eq!(&seen, file, "the file as the walk saw it");
            let data = &expected
                .iter()
                .find(|(rel, _)| Path::new(rel) == file.rel)
                .unwrap()
                .1;
            let chunks: Vec<_> = data
                .chunks(p2p_protocol::CHUNK_SIZE as usize)
                .map(p2p_protocol::Sha256Hash::of)
                .collect();
            assert_eq!(manifest.chunks, chunks, "{}", file.rel.display());
            assert_eq!(manifest.size, data.len() as u64);
            assert_eq!(Path::new(&manifest.name), file.rel.file_name().unwrap());
        }
    }

    #[test]
    fn a_file_that_went_away_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let tree = Tree::open(dir.path()).unwrap();
        let walk = tree.walk();
        std::fs::remove_file(dir.path().join("b")).unwrap();
        let hashed = tree.hash_files(walk.files);
        assert!(hashed[0].is_ok() && hashed[2].is_ok());
        assert!(matches!(hashed[1], Err(StorageError::Io { .. })));
    }

    #[test]
    fn a_known_file_is_found_without_a_walk_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"shared").unwrap();
        std::fs::write(outside.path().join("secret"), b"key").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        symlink(outside.path(), dir.path().join("linked-dir")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let found = tree.file_at(Path::new("sub/a")).unwrap();
        assert_eq!(found, tree.walk().files[0]);
        assert!(tree.open_file(&found).is_ok());
        assert!(matches!(
            tree.file_at(Path::new("link")),
            Err(StorageError::NotAFile(_))
        ));
        assert!(tree.file_at(Path::new("linked-dir/secret")).is_err());
        assert!(tree.file_at(Path::new("sub")).is_err());
    }

    #[test]
    fn a_fifo_swapped_in_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"shared").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let seen = tree.walk().files.remove(0);
        std::fs::remove_file(dir.path().join("a")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("a"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Would block forever without O_NONBLOCK: no writer ever comes.
        let err = tree.open_file(&seen).unwrap_err();
        assert!(matches!(err, StorageError::NotAFile(_)), "{err}");
    }
}
