//! [`Upload`]: a file arriving from a front end (the web API), written into the upload folder
//! under a hidden temporary name and hashed as it arrives, then named and served without being
//! read again.
//!
//! Invariants:
//! * names follow the rule for names from the network ([`validate_file_name`]), and may not
//!   start with `.`: the folder keeps hidden names for uploads still arriving;
//! * the size limit and the free space are checked before a byte is written;
//! * until [`Upload::finish`], the bytes live only in `.<name>.upload-<16 hex>` (created with
//!   `O_EXCL`, mode 0600). A shared folder walk leaves dot-files out ([`crate::tree::left_out`]),
//!   so a half file is never shared, not even by a `--share-dir` over the upload folder;
//! * an upload dropped before `finish` (client gone, error, shutdown) removes its temporary
//!   file; one left by a crash is removed by [`sweep_stale`] once it is an hour old;
//! * each chunk is hashed incrementally as its bytes pass (no chunk buffer), so the manifest is
//!   the one registering the finished file would build, without reading it back;
//! * the final name appears through a hard link that fails if the name exists
//!   (`store::link_into_place`, as for a download): nothing is ever overwritten, not
//!   even a file created meanwhile;
//! * the finished file is served through the handle it was written with, never by its name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use p2p_protocol::{CHUNK_SIZE, FileManifest, MAX_CHUNKS_PER_FILE, Sha256Hash, validate_file_name};
use sha2::{Digest, Sha256};

use crate::store::{check_space, flush, link_into_place, write_error};
use crate::{SourceFile, StorageError};

/// What marks a temporary upload file: `.<name>` + this + 16 hex digits.
pub const TEMP_MARKER: &str = ".upload-";

/// A temporary upload file whose last write is older than this is left from a crash (a live
/// upload writes every few milliseconds) and is removed by [`sweep_stale`].
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(60 * 60);

/// At most this many bytes of the file name go into the temporary name, so that the
/// temporary name of a 255-byte name still fits in one path component.
const TEMP_NAME_PREFIX_MAX: usize = 200;

/// The temporary file's permissions: the owner's only, until it is finished.
const TEMP_MODE: u32 = 0o600;

/// The largest file one manifest can describe.
const MAX_FILE_SIZE: u64 = MAX_CHUNKS_PER_FILE as u64 * CHUNK_SIZE as u64;

/// How long an upload will be, as far as is known when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadLen {
    /// Exactly this many bytes (a raw request body with its `Content-Length`).
    Exact(u64),
    /// Not known until it ends, but at most this many bytes (a multipart field: the request's
    /// `Content-Length` bounds it). The space check uses this bound.
    AtMost(u64),
}

impl UploadLen {
    fn bound(self) -> u64 {
        match self {
            UploadLen::Exact(n) | UploadLen::AtMost(n) => n,
        }
    }
}

/// A file being uploaded into the upload folder. Blocking (std::fs): run it off the reactor.
#[derive(Debug)]
pub struct Upload {
    dir: Dir,
    file: File,
    name: String,
    temp_name: String,
    /// For messages only; never used to open anything.
    temp_path: PathBuf,
    final_path: PathBuf,
    len: UploadLen,
    /// The size limit: the caller's, or what one manifest can describe if that is less.
    max: u64,
    written: u64,
    hasher: ChunkHasher,
    /// The temporary name is gone (named or removed): nothing for `Drop` to do.
    done: bool,
}

impl Upload {
    /// Starts an upload of `name` into `dir` (created if missing). Refuses an unsafe or hidden
    /// name, a name that exists in `dir` ([`StorageError::AlreadyExists`]), an exact length
    /// over `max` ([`StorageError::TooLarge`]) and a disk without room for it
    /// ([`StorageError::NoSpace`]), before anything is written.
    pub fn begin(dir: &Path, name: &str, len: UploadLen, max: u64) -> Result<Self, StorageError> {
        validate_file_name(name)?;
        if name.starts_with('.') {
            return Err(StorageError::HiddenName(name.to_owned()));
        }
        let max = max.min(MAX_FILE_SIZE);
        if let UploadLen::Exact(n) = len
            && n > max
        {
            return Err(StorageError::TooLarge { max });
        }
        std::fs::create_dir_all(dir).map_err(StorageError::io("cannot create folder", dir))?;
        let folder = Dir::open_ambient_dir(dir, ambient_authority())
            .map_err(StorageError::io("cannot open upload folder", dir))?;
        let final_path = dir.join(name);
        if folder.symlink_metadata(name).is_ok() {
            return Err(StorageError::AlreadyExists(final_path));
        }
        check_space(&folder, &final_path, len.bound().min(max))?;
        let temp_name = temp_name(name, rand::random());
        let temp_path = dir.join(&temp_name);
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create_new(true)
            .mode(TEMP_MODE);
        let file = folder
            .open_with(&temp_name, &options)
            .map_err(StorageError::io("cannot create", &temp_path))?
            .into_std();
        Ok(Self {
            dir: folder,
            file,
            name: name.to_owned(),
            temp_name,
            temp_path,
            final_path,
            len,
            max,
            written: 0,
            hasher: ChunkHasher::default(),
            done: false,
        })
    }

    /// Where the file will be once finished.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// The temporary file the bytes go to until then.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, hashing it on the way. Refuses bytes past the announced length
    /// ([`StorageError::WrongLength`]) or the size limit ([`StorageError::TooLarge`]).
    pub fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let total = self.written + data.len() as u64;
        if total > self.max {
            return Err(StorageError::TooLarge { max: self.max });
        }
        if total > self.len.bound() {
            return Err(StorageError::WrongLength {
                path: self.temp_path.clone(),
                declared: self.len.bound(),
                got: total,
            });
        }
        self.file
            .write_all(data)
            .map_err(|e| write_error(e, &self.temp_path))?;
        let before = self.hasher.chunks.len();
        self.hasher.update(data);
        self.written = total;
        if self.hasher.chunks.len() > before {
            self.start_writeback(before, self.hasher.chunks.len());
        }
        Ok(())
    }

    /// Asks the kernel to start writing the chunks `from..to`, just completed, to disk now,
    /// so the flush in [`Upload::finish`] has little left to do (as a download does). A hint:
    /// failure changes nothing, the flush reports real errors.
    fn start_writeback(&self, from: usize, to: usize) {
        let chunk = u64::from(CHUNK_SIZE);
        let _ = rustix::fs::fadvise(
            &self.file,
            from as u64 * chunk,
            std::num::NonZeroU64::new((to - from) as u64 * chunk),
            rustix::fs::Advice::DontNeed,
        );
    }

    /// Completes the upload: checks its length, flushes it, builds its manifest from the
    /// hashes taken on the way, gives it its name (never replacing a file: see
    /// `store::link_into_place`) and returns it ready to serve, through the handle it
    /// was written with. On error the temporary file is removed.
    pub fn finish(mut self) -> Result<SourceFile, StorageError> {
        if let UploadLen::Exact(declared) = self.len
            && self.written != declared
        {
            return Err(StorageError::WrongLength {
                path: self.temp_path.clone(),
                declared,
                got: self.written,
            });
        }
        flush(&self.file, &self.temp_path)?;
        let on_disk = self
            .file
            .metadata()
            .map_err(StorageError::io("cannot stat", &self.temp_path))?
            .len();
        if on_disk != self.written {
            // Something other than this upload changed the temporary file.
            return Err(StorageError::FileChanged(self.temp_path.clone()));
        }
        let manifest = FileManifest {
            name: self.name.clone(),
            size: self.written,
            chunk_size: CHUNK_SIZE,
            chunks: std::mem::take(&mut self.hasher).finish(),
        };
        manifest
            .validate()
            .map_err(|cause| StorageError::Manifest {
                path: self.final_path.clone(),
                cause,
            })?;
        link_into_place(
            &self.file,
            (&self.dir, &self.temp_name, &self.temp_path),
            (&self.dir, &self.name, &self.final_path),
        )?;
        self.done = true;
        let file = self
            .file
            .try_clone()
            .map_err(StorageError::io("cannot reopen", &self.final_path))?;
        SourceFile::assembled(file, self.final_path.clone(), manifest)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.dir.remove_file(&self.temp_name);
        }
    }
}

/// `.<name>.upload-<hex>`, with the name cut (at a character boundary) so the whole fits in
/// one path component.
fn temp_name(name: &str, random: u64) -> String {
    let mut cut = name.len().min(TEMP_NAME_PREFIX_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}{TEMP_MARKER}{random:016x}", &name[..cut])
}

/// Whether `name` has the shape of an upload's temporary file.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name.rfind(TEMP_MARKER).is_some_and(|at| {
            let hex = &name[at + TEMP_MARKER.len()..];
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Removes the temporary files of uploads that a crash left in `dir`: regular files named like
/// one whose last write is at least [`STALE_UPLOAD_AGE`] before `now`. Anything else (links,
/// folders, the user's own dot-files, a live upload) is left alone. Returns how many were
/// removed; a folder that does not exist or can't be read has none.
pub fn sweep_stale(dir: &Path, now: SystemTime) -> usize {
    let Ok(folder) = Dir::open_ambient_dir(dir, ambient_authority()) else {
        return 0;
    };
    let Ok(entries) = folder.entries() else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp_name(name) {
            continue;
        }
        let Ok(meta) = folder.symlink_metadata(name) else {
            continue;
        };
        let stale = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m.into_std()).ok())
            .is_some_and(|age| age >= STALE_UPLOAD_AGE);
        if meta.is_file() && stale && folder.remove_file(name).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// SHA-256 of each [`CHUNK_SIZE`] chunk of a stream, fed in pieces of any size: one running
/// hash for the chunk in progress, finished at each chunk boundary. No chunk is buffered.
#[derive(Debug, Default)]
struct ChunkHasher {
    current: Sha256,
    /// Bytes of the chunk in progress.
    in_chunk: u64,
    chunks: Vec<Sha256Hash>,
}

impl ChunkHasher {
    fn update(&mut self, mut data: &[u8]) {
        let chunk = u64::from(CHUNK_SIZE);
        while !data.is_empty() {
            let take = (chunk - self.in_chunk).min(data.len() as u64) as usize;
            self.current.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            if self.in_chunk == chunk {
                self.chunks
                    .push(Sha256Hash(self.current.finalize_reset().into()));
                self.in_chunk = 0;
            }
        }
    }

    /// The hashes of every chunk, the last one short if the length is not a multiple of the
    /// chunk size; none for an empty stream.
    fn finish(mut self) -> Vec<Sha256Hash> {
        if self.in_chunk > 0 {
            self.chunks.push(Sha256Hash(self.current.finalize().into()));
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::names;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::build_manifest;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    /// Uploads `bytes` into `dir` in pieces of `piece` bytes.
    fn upload(dir: &Path, name: &str, bytes: &[u8], piece: usize) -> SourceFile {
        let mut up =
            Upload::begin(dir, name, UploadLen::Exact(bytes.len() as u64), u64::MAX).unwrap();
        for part in bytes.chunks(piece) {
            up.write(part).unwrap();
        }
        up.finish().unwrap()
    }

    #[test]
    fn an_upload_has_the_id_registering_the_file_gives() {
        let chunk = CHUNK_SIZE as usize;
        for len in [0, 1, chunk - 1, chunk, chunk + 1] {
            let up = tempfile::tempdir().unwrap();
            let reg = tempfile::tempdir().unwrap();
            let bytes = data(len);
            // An odd piece size, so pieces straddle the chunk boundary.
            let served = upload(up.path(), "f.bin", &bytes, 100_003);
            std::fs::write(reg.path().join("f.bin"), &bytes).unwrap();
            let registered = build_manifest(&reg.path().join("f.bin")).unwrap().manifest;
            assert_eq!(served.manifest(), &registered, "length {len}");
            assert_eq!(served.manifest().id(), registered.id(), "length {len}");
            assert_eq!(std::fs::read(up.path().join("f.bin")).unwrap(), bytes);
            assert_eq!(names(up.path()), ["f.bin"], "no temporary file left");
        }
    }

    #[test]
    fn the_finished_upload_is_served_from_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let served = upload(dir.path(), "s.bin", b"payload", 3);
        assert_eq!(served.path(), dir.path().join("s.bin"));
        served.check_unchanged().unwrap();
        let mut buf = [0u8; 7];
        served.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"payload");
    }

    #[test]
    fn the_temporary_file_is_hidden_private_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Upload::begin(dir.path(), "d.bin", UploadLen::Exact(10), 100).unwrap();
        up.write(b"12345").unwrap();
        let temp = up.temp_path().to_owned();
        let temp_name = temp.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(is_temp_name(&temp_name), "{temp_name}");
        assert!(crate::tree::left_out(&temp_name));
        let mode = std::fs::metadata(&temp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names(dir.path()), [temp_name]);
        drop(up);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_name_is_refused_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.bin"), b"precious").unwrap();
        let err = Upload::begin(dir.path(), "e.bin", UploadLen::Exact(3), 100).unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");

        // Created by someone else while the upload arrived: still not replaced.
        std::fs::remove_file(dir.path().join("e.bin")).unwrap();
        let mut up = Upload::begin(dir.path(), "e.bin", UploadLen::Exact(3), 100).unwrap();
        up.write(b"new").unwrap();
        std::fs::write(dir.path().join("e.bin"), b"precious").unwrap();
        let err = up.finish().unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("e.bin")).unwrap(),
            b"precious"
        );
        assert_eq!(names(dir.path()), ["e.bin"], "the temporary file is gone");
    }

    #[test]
    fn unsafe_and_hidden_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "../x",
            "a/b",
            "",
            "..",
            ".hidden",
            ".x.upload-0123456789abcdef",
        ] {
            let err = Upload::begin(dir.path(), name, UploadLen::Exact(1), 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::UnsafeName(_) | StorageError::HiddenName(_)
                ),
                "{name:?}: {err}"
            );
        }
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn the_size_limit_is_checked_before_and_while_writing() {
        let dir = tempfile::tempdir().unwrap();
        let err = Upload::begin(dir.path(), "big", UploadLen::Exact(101), 100).unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { max: 100 }), "{err}");
        assert_eq!(
            err.to_string(),
            "the upload is larger than the 100 bytes this node accepts"
        );
        // Length unknown up front: refused when it passes the limit.
        let mut up = Upload::begin(dir.path(), "big", UploadLen::AtMost(1000), 100).unwrap();
        up.write(&[0; 100]).unwrap();
        let err = up.write(&[0]).unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { max: 100 }), "{err}");
        drop(up);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_length_unknown_up_front_is_the_length_received() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(CHUNK_SIZE as usize + 5);
        let mut up =
            Upload::begin(dir.path(), "m.bin", UploadLen::AtMost(1 << 30), 1 << 30).unwrap();
        for part in bytes.chunks(65_536) {
            up.write(part).unwrap();
        }
        let served = up.finish().unwrap();
        assert_eq!(served.manifest().size, bytes.len() as u64);
        let registered = build_manifest(&dir.path().join("m.bin")).unwrap().manifest;
        assert_eq!(served.manifest().id(), registered.id());
    }

    #[test]
    fn more_or_fewer_bytes_than_announced_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Upload::begin(dir.path(), "l.bin", UploadLen::Exact(4), 100).unwrap();
        let err = up.write(b"12345").unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::WrongLength {
                    declared: 4,
                    got: 5,
                    ..
                }
            ),
            "{err}"
        );
        up.write(b"123").unwrap();
        let err = up.finish().unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::WrongLength {
                    declared: 4,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(names(dir.path()).is_empty(), "nothing named, nothing left");
    }

    #[test]
    fn a_long_name_gets_a_temporary_name_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let name = "é".repeat(127); // 254 bytes
        let served = upload(dir.path(), &name, b"x", 1);
        assert_eq!(served.path(), dir.path().join(&name));
        assert!(temp_name(&name, 1).len() <= 255);
        assert!(is_temp_name(&temp_name(&name, u64::MAX)));
    }

    #[test]
    fn the_sweep_removes_only_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let make = |name: &str, age: Duration| {
            let f = File::create(dir.path().join(name)).unwrap();
            f.set_modified(now - age).unwrap();
        };
        let hour = STALE_UPLOAD_AGE;
        make(
            ".old.bin.upload-0123456789abcdef",
            hour + Duration::from_secs(1),
        );
        make(
            ".new.bin.upload-0123456789abcdef",
            hour - Duration::from_secs(60),
        );
        make(".my-notes", hour * 10);
        make(".x.upload-not-hex-at-all", hour * 10);
        make("visible.bin", hour * 10);
        std::os::unix::fs::symlink("visible.bin", dir.path().join(".l.upload-0123456789abcdef"))
            .unwrap();
        assert_eq!(sweep_stale(dir.path(), now), 1);
        assert_eq!(
            names(dir.path()),
            [
                ".l.upload-0123456789abcdef",
                ".my-notes",
                ".new.bin.upload-0123456789abcdef",
                ".x.upload-not-hex-at-all",
                "visible.bin"
            ]
        );
        assert_eq!(sweep_stale(&dir.path().join("missing"), now), 0);
    }
}
