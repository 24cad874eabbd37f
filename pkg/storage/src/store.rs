//! [`PartFile`]: a download being assembled under a temporary name, resumable: the file of a
//! single-file download in `<out>/<name>.part` beside its target, a big file of a folder in the
//! job's staging folder as `<key>.part` ([`crate::staging`]: never a name inside the folder,
//! where the folder's own files could have it).
//!
//! Invariants:
//! * nothing is written to the part file until its chunk hash matched the manifest;
//! * the final name appears only once every chunk is verified and written (the file id covers
//!   every chunk hash, so that is the whole file, byte for byte), through a hard link that
//!   fails if the name exists (so an existing file is never replaced, not even in a race);
//! * every file operation is relative to a handle on the output folder (cap-std), and names
//!   come from [`crate::path::output_path`] rules, so nothing lands outside that folder, even if
//!   a symlink is swapped into it during the download;
//! * the record beside the part file (`<name>.part.chunks`, `<key>.part.chunks`) records
//!   which chunks were verified. It is a hint, not a promise: a
//!   resume re-hashes every chunk it lists before trusting it, so a crash or `kill -9` between
//!   writing data and writing the record can never make a corrupt chunk count as done;
//! * the part file is locked while a download uses it, so two downloads of the same file into
//!   the same folder can't interleave;
//! * a file's bytes are on disk (flushed) before its final name appears, so a crash or a power
//!   cut never leaves a named file with missing data. A big file is flushed alone in
//!   [`PartFile::finish`]. Small files ([`crate::small`]) are flushed in batches of up to
//!   [`crate::small::SMALL_BATCH`], all written first, then flushed by parallel `fdatasync`s
//!   (16 threads kept by [`crate::flush`]), then named. Parallel `fdatasync`s and not one `syncfs`: on this project's
//!   ext4 test machine, 128 files of 1-40 KB took 25 ms with 16 parallel `fdatasync`s,
//!   35 ms with `fsync`s, 571 ms with `fsync`s one after another, and 18 ms with one `syncfs`
//!   when the disk was quiet, but up to 825 ms when another program had written a lot:
//!   `syncfs` waits for every dirty page of the whole file system, so a download would wait
//!   for whatever else the machine is writing. The parallel flushes of one batch share the
//!   file system's journal commits, and cost what this download wrote, nothing more.
//!
//! Record layout: `"p2p-part-v1\0"` (12 bytes), the file id (32 bytes), the chunk count (u32
//! big-endian), then one bit per chunk, lowest bit of the first byte = chunk 0.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::chunk_buf::CHUNK_BUF_ALIGN;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use p2p_protocol::{FileId, FileManifest, Sha256Hash, validate_file_name};

use crate::StorageError;
use crate::path::PART_SUFFIX;
use crate::staging::{OutputDir, part_key};

/// Suffix of the record of verified chunks, after the part file's name.
pub const RECORD_SUFFIX: &str = ".chunks";

pub(crate) const RECORD_MAGIC: &[u8; 12] = b"p2p-part-v1\0";

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
    /// Where the part file and its record are.
    dir: Arc<Dir>,
    /// Where the final name goes (the same folder as `dir` for a single file).
    final_dir: Arc<Dir>,
    file: File,
    manifest: FileManifest,
    file_id: FileId,
    /// Names inside `dir`.
    part_name: String,
    record_name: String,
    /// Name inside `final_dir`.
    final_name: String,
    /// For messages only; never used to open anything.
    final_path: PathBuf,
    part_path: PathBuf,
    /// Which chunks are verified and written.
    verified: Mutex<Vec<bool>>,
    /// The same file opened with `O_DIRECT`, where the file system allows it: whole chunks
    /// are written through it, straight from the buffer to the disk, without copying them
    /// into the page cache.
    direct: Option<File>,
    /// Cleared for good the first time a direct write is refused for any reason but a full
    /// disk (some file systems accept `O_DIRECT` at open and not at write).
    use_direct: AtomicBool,
}

impl PartFile {
    /// Prepares `<out_dir>/<name>.part` for `manifest`, after checking that the manifest is
    /// valid, that `<out_dir>/<name>` does not exist yet, that no other download holds the
    /// part file, and that the disk has room for what is still missing. An existing part file
    /// is kept: see [`PartFile::resume`].
    pub fn create(out_dir: &Path, manifest: FileManifest) -> Result<Self, StorageError> {
        Self::create_in(out_dir, &[], manifest)
    }

    /// Like [`PartFile::create`], in the folder `subdir` (one name per level, each a safe base
    /// name) under `out_dir`, creating it as needed. Every level is opened relative to the one
    /// above through a directory handle, so no component (not even a symlink planted there)
    /// can lead outside `out_dir`.
    pub fn create_in(
        out_dir: &Path,
        subdir: &[String],
        manifest: FileManifest,
    ) -> Result<Self, StorageError> {
        validate_file_name(&manifest.name)?;
        let root = Dir::open_ambient_dir(out_dir, ambient_authority())
            .map_err(StorageError::io("cannot open output folder", out_dir))?;
        let (dir, out_dir) = open_subdir(&root, out_dir, subdir)?;
        let dir = Arc::new(dir);
        let part_name = format!("{}{PART_SUFFIX}", manifest.name);
        let place = Place {
            final_path: out_dir.join(&manifest.name),
            part_path: out_dir.join(&part_name),
            part_name,
            dir: dir.clone(),
            final_dir: dir,
            private: false,
        };
        Self::open(place, manifest)
    }

    /// Prepares a big file of a folder job: its final name is `<name>` in the folder `subdir`
    /// (one safe name per level, created as needed, as [`PartFile::create_in`] does) under
    /// `out`, and it is assembled in `out`'s staging folder as `<key>.part`, with its record
    /// `<key>.part.chunks` ([`crate::staging::part_key`] of its id and path). A file of the
    /// folder named like a part file or a record is just another file: it is never taken for
    /// one. The same checks as [`PartFile::create`]; an existing part file there is resumed.
    pub fn create_staged(
        out: &OutputDir,
        subdir: &[String],
        manifest: FileManifest,
    ) -> Result<Self, StorageError> {
        validate_file_name(&manifest.name)?;
        let (final_dir, out_dir) = open_subdir(out.root(), out.path(), subdir)?;
        let final_path = out_dir.join(&manifest.name);
        // Before the staging folder is made: a file already in place needs none.
        if final_dir.symlink_metadata(&manifest.name).is_ok() {
            return Err(StorageError::AlreadyExists(final_path));
        }
        let key = part_key(&manifest.id(), subdir, &manifest.name);
        let part_name = format!("{key}{PART_SUFFIX}");
        let final_dir = Arc::new(final_dir);
        out.in_staging(|staging| {
            out.check_same_mount(staging, &final_dir, &out_dir)?;
            let place = Place {
                final_path: final_path.clone(),
                part_path: out.staging_path().join(&part_name),
                part_name: part_name.clone(),
                dir: staging.clone(),
                final_dir: final_dir.clone(),
                private: true,
            };
            Self::open(place, manifest.clone())
        })
    }

    /// Opens (or takes over) the part file at `place` for `manifest`, locked, sized, with
    /// room on the disk for what is missing.
    fn open(place: Place, manifest: FileManifest) -> Result<Self, StorageError> {
        let Place {
            dir,
            final_dir,
            part_name,
            part_path,
            final_path,
            private,
        } = place;
        manifest
            .validate()
            .map_err(|cause| StorageError::Manifest {
                path: final_path.clone(),
                cause,
            })?;
        let final_name = manifest.name.clone();
        let record_name = format!("{part_name}{RECORD_SUFFIX}");
        if final_dir.symlink_metadata(&final_name).is_ok() {
            return Err(StorageError::AlreadyExists(final_path));
        }
        let record_path = part_path.with_file_name(&record_name);
        let file = open_part(
            &dir,
            (&part_name, &part_path),
            (&record_name, &record_path),
            &manifest,
            private,
        )?;
        let direct = open_direct(&dir, &part_name, &file);
        let chunks = manifest.chunks.len();
        let part = Self {
            dir,
            final_dir,
            file,
            use_direct: AtomicBool::new(direct.is_some()),
            direct,
            file_id: manifest.id(),
            manifest,
            part_name,
            record_name,
            final_name,
            final_path,
            part_path,
            verified: Mutex::new(vec![false; chunks]),
        };
        // Space already taken by an earlier run of this download (blocks actually allocated,
        // not the sparse length).
        let current = std::os::unix::fs::MetadataExt::blocks(
            &part
                .file
                .metadata()
                .map_err(StorageError::io("cannot stat", &part.part_path))?,
        ) * 512;
        check_space(
            &part.file,
            &part.part_path,
            part.manifest.size.saturating_sub(current),
        )?;
        part.file
            .set_len(part.manifest.size)
            .map_err(StorageError::io("cannot size", &part.part_path))?;
        Ok(part)
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

    /// Picks up an earlier, interrupted download of the same file: re-hashes every chunk the
    /// record lists and returns those that still match (they count as done). Anything else in
    /// the part file is ignored and will be fetched again.
    pub fn resume(&self) -> Vec<u32> {
        let Some(listed) = self.read_record() else {
            return Vec::new();
        };
        // Re-hashed on every core; if the part file can't be read, nothing in it is trusted.
        let hashes =
            crate::chunker::hash_chunks_at(&self.file, &self.manifest, &listed).unwrap_or_default();
        let good: Vec<u32> = listed
            .iter()
            .zip(&hashes)
            .filter(|&(&index, hash)| self.manifest.chunks[index as usize] == *hash)
            .map(|(&index, _)| index)
            .collect();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        for &index in &good {
            verified[index as usize] = true;
        }
        good
    }

    fn read_record(&self) -> Option<Vec<u32>> {
        let count = self.manifest.chunks.len();
        let header = RECORD_MAGIC.len() + 32 + 4;
        // One byte more than a valid record, so a longer file is seen as not one.
        let bytes =
            read_nofollow(&self.dir, &self.record_name, header + count.div_ceil(8) + 1).ok()?;
        if bytes.len() != header + count.div_ceil(8)
            || &bytes[..RECORD_MAGIC.len()] != RECORD_MAGIC
            || bytes[RECORD_MAGIC.len()..RECORD_MAGIC.len() + 32] != self.file_id.0
            || u32::from_be_bytes(bytes[header - 4..header].try_into().ok()?) as usize != count
        {
            return None;
        }
        let bits = &bytes[header..];
        Some(
            (0..count as u32)
                .filter(|i| bits[*i as usize / 8] & (1 << (i % 8)) != 0)
                .collect(),
        )
    }

    /// Writes the record of verified chunks (see `write_record`: a fresh temporary file,
    /// renamed over the old record, so a crash leaves the old record or the new one).
    pub fn save_record(&self) -> Result<(), StorageError> {
        let verified = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let record_path = self.part_path.with_file_name(&self.record_name);
        write_record(
            &self.dir,
            &self.record_name,
            &record_path,
            &record_bytes(&self.file_id, &verified),
        )
    }

    /// Whether chunk `index` is already verified and written.
    pub fn is_verified(&self, index: u32) -> bool {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())[index as usize]
    }

    /// How many chunks are verified and written.
    pub fn verified_count(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|v| **v)
            .count()
    }

    /// Verifies chunk `index` and, only if it matches, writes it at its offset. Returns false
    /// if the chunk was already written (another host's copy won the race).
    pub fn write_verified(&self, index: u32, data: &[u8]) -> Result<bool, StorageError> {
        verify_chunk(&self.manifest, index, data)?;
        if self.is_verified(index) {
            return Ok(false);
        }
        self.write_chunk(index, data)
            .map_err(|e| write_error(e, &self.part_path))?;
        let first = {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            let first = !verified[index as usize];
            verified[index as usize] = true;
            first
        };
        Ok(first)
    }

    /// Writes a verified chunk: with `O_DIRECT` when the file system allows it and the data
    /// sits in memory the way it needs (page-aligned start and length, as in a
    /// [`crate::ChunkBuf`]), else through the page cache.
    fn write_chunk(&self, index: u32, data: &[u8]) -> std::io::Result<()> {
        let offset = self.manifest.chunk_offset(index);
        if let Some(direct) = &self.direct
            && self.use_direct.load(Ordering::Relaxed)
            && data.len().is_multiple_of(CHUNK_BUF_ALIGN)
            && data.as_ptr().align_offset(CHUNK_BUF_ALIGN) == 0
        {
            match direct.write_all_at(data, offset) {
                Err(e) if !is_disk_full(&e) => {
                    // Refused for some other reason: the page cache will do, from now on.
                    self.use_direct.store(false, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        self.file.write_all_at(data, offset)?;
        self.start_writeback(index, data.len() as u64);
        Ok(())
    }

    /// Asks the kernel to start writing chunk `index` to disk now, without waiting for it.
    /// The disk then works alongside the network instead of after it: the `fsync` in
    /// [`PartFile::finish`] has almost nothing left to do (it took a quarter of a second per
    /// GiB before). `POSIX_FADV_DONTNEED` starts asynchronous writeback of the range; it would
    /// also drop pages already written back, but the ones just written are still dirty. A
    /// hint only: failure changes nothing, the final flush still reports real errors.
    fn start_writeback(&self, index: u32, len: u64) {
        let _ = rustix::fs::fadvise(
            &self.file,
            self.manifest.chunk_offset(index),
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }

    /// Flushes the part file and gives it its name, once every chunk is verified and written.
    /// That is the whole-file check: the file id covers every chunk hash, so a file whose
    /// chunks all matched is the file. An incomplete download keeps its part file and record
    /// for a later resume.
    pub fn finish(&self) -> Result<PathBuf, StorageError> {
        let part = &self.part_path;
        let missing = self.manifest.chunks.len() - self.verified_count();
        if missing > 0 {
            return Err(StorageError::Incomplete {
                path: part.clone(),
                missing,
            });
        }
        flush(&self.file, part)?;
        let len = self
            .file
            .metadata()
            .map_err(StorageError::io("cannot stat", part))?
            .len();
        if len != self.manifest.size {
            // Something other than this download changed the part file's length.
            self.discard();
            return Err(StorageError::FileChanged(part.clone()));
        }
        link_into_place(
            &self.file,
            (&self.dir, &self.part_name, part),
            (&self.final_dir, &self.final_name, &self.final_path),
        )?;
        let _ = self.dir.remove_file(&self.record_name);
        Ok(self.final_path.clone())
    }

    /// The finished download, to serve: through the handle it was written with, never by its
    /// name. Call after [`PartFile::finish`] succeeded.
    pub fn into_source(&self) -> Result<crate::SourceFile, StorageError> {
        let file = self
            .file
            .try_clone()
            .map_err(StorageError::io("cannot reopen", &self.final_path))?;
        crate::SourceFile::assembled(file, self.final_path.clone(), self.manifest.clone())
    }

    fn discard(&self) {
        let _ = self.dir.remove_file(&self.part_name);
        let _ = self.dir.remove_file(&self.record_name);
    }
}

/// Where a part file goes: its folder and name, and where its final name goes.
struct Place {
    dir: Arc<Dir>,
    final_dir: Arc<Dir>,
    part_name: String,
    /// For messages only.
    part_path: PathBuf,
    final_path: PathBuf,
    /// `dir` is a staging folder: this user's alone, so whatever is in it is ours, and a part
    /// file there needs no record beside it to be taken over (a tidy may have removed the
    /// record of a part file created a moment later).
    private: bool,
}

/// Opens the folder `subdir` (one name per level, each a safe base name) under `root` (whose
/// path is `root_path`, for messages), creating levels as needed. Every level is opened
/// relative to the one above through a directory handle, so no component (not even a symlink
/// planted there) can lead outside `root`. Returns the handle and the folder's path.
pub(crate) fn open_subdir(
    root: &Dir,
    root_path: &Path,
    subdir: &[String],
) -> Result<(Dir, PathBuf), StorageError> {
    let mut dir = root
        .try_clone()
        .map_err(StorageError::io("cannot open output folder", root_path))?;
    let mut path = root_path.to_owned();
    for level in subdir {
        validate_file_name(level)?;
        path.push(level);
        match dir.create_dir(level) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io("cannot create folder", &path)(e)),
        }
        dir = dir
            .open_dir(level)
            .map_err(StorageError::io("cannot open folder", &path))?;
    }
    Ok((dir, path))
}

/// Gives the finished file `file`, written under `temp` in its folder, its `final` name in its
/// folder (the same one or another on the same file system), and removes the temporary name:
/// through a hard link, which fails if the final name exists, so an existing file is never
/// replaced, not even one created a moment ago by someone else. Each name comes with its path,
/// for messages only.
///
/// Refuses ([`StorageError::Replaced`]) if the temporary name no longer leads to `file` (someone
/// swapped it): the final name would show that other file. On a file system without hard links,
/// checks that the final name is free, then renames (a narrow race accepted only there).
/// Shared by a finished download ([`PartFile::finish`]) and a finished upload
/// ([`crate::Upload::finish`]).
pub(crate) fn link_into_place(
    file: &File,
    (dir, temp_name, temp_path): (&Dir, &str, &Path),
    (final_dir, final_name, final_path): (&Dir, &str, &Path),
) -> Result<(), StorageError> {
    match dir.hard_link(temp_name, final_dir, final_name) {
        Ok(()) if !is_same_file(file, final_dir, final_name) => {
            // Take the name back: it shows another file than the one written.
            let _ = final_dir.remove_file(final_name);
            Err(StorageError::Replaced(temp_path.to_owned()))
        }
        Ok(()) => {
            let _ = dir.remove_file(temp_name);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(StorageError::AlreadyExists(final_path.to_owned()))
        }
        Err(_) if final_dir.symlink_metadata(final_name).is_err() => dir
            .rename(temp_name, final_dir, final_name)
            .map_err(StorageError::io("cannot rename", temp_path)),
        Err(e) => Err(StorageError::io("cannot link", temp_path)(e)),
    }
}

/// Flushes `file` to disk. A full disk can show up only now, when delayed writes are
/// allocated, and is reported as such.
pub(crate) fn flush(file: &File, path: &Path) -> Result<(), StorageError> {
    file.sync_all().map_err(|e| {
        if is_disk_full(&e) {
            write_error(e, path)
        } else {
            StorageError::io("cannot flush", path)(e)
        }
    })
}

/// Whether `name` in `dir` is `file` itself (not a link, not another file).
pub(crate) fn is_same_file(file: &File, dir: &Dir, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ours), Ok(there)) = (file.metadata(), dir.symlink_metadata(name)) else {
        return false;
    };
    there.is_file()
        && cap_std::fs::MetadataExt::dev(&there) == ours.dev()
        && cap_std::fs::MetadataExt::ino(&there) == ours.ino()
}

/// Opens the part file of a download, creating it (after its record, so that a part file of
/// ours always has a record beside it, whatever moment a crash or a failed write hits) or
/// taking over one an earlier run left. Returns it locked.
///
/// An existing part file is used only if it is a plain file (no link is followed), has no
/// other hard link (or writes would land in a file elsewhere), belongs to this user, and has
/// our record beside it (in a `private` folder, a staging folder, the record is not needed).
/// Two downloads racing for it: one wins the lock, the other is told another download of the
/// file is running there. Once locked, its name must still lead to it: a tidy or a discard
/// ([`crate::OutputDir::tidy_staging`]) may have removed it between the open and the lock,
/// and then it starts again.
fn open_part(
    dir: &Dir,
    (part_name, part_path): (&str, &Path),
    (record_name, record_path): (&str, &Path),
    manifest: &FileManifest,
    private: bool,
) -> Result<File, StorageError> {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    // Created and then taken by a racing download at most once or twice; a few tries settle it.
    for _ in 0..3 {
        let mut options = OpenOptions::new();
        options.read(true).write(true).follow(FollowSymlinks::No);
        match dir.open_with(part_name, &options) {
            Ok(file) => {
                let file = file.into_std();
                // Locked first: a running download's part file has a second link for a moment
                // while it is named (`finish`); a second download must hear it is running,
                // not that its part file looks linked.
                if !file.metadata().is_ok_and(|m| m.is_file()) {
                    return Err(StorageError::NotAFile(part_path.to_owned()));
                }
                match lock(&file, part_path) {
                    // Held by the tidy removing it: gone now, start again.
                    Err(StorageError::Busy(_)) if !is_same_file(&file, dir, part_name) => continue,
                    locked => locked?,
                }
                if !is_same_file(&file, dir, part_name) {
                    continue;
                }
                let record = (!private).then_some(record_name);
                check_existing_part(&file, part_path, dir, record)?;
                return Ok(file);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(StorageError::NotAFile(part_path.to_owned()));
            }
            Err(e) => return Err(StorageError::io("cannot open", part_path)(e)),
        }
        // Mark the part file as ours before it exists.
        let empty = vec![false; manifest.chunks.len()];
        write_record(
            dir,
            record_name,
            record_path,
            &record_bytes(&manifest.id(), &empty),
        )?;
        options.create_new(true);
        match dir.open_with(part_name, &options) {
            Ok(file) => {
                let file = file.into_std();
                lock(&file, part_path)?;
                if !is_same_file(&file, dir, part_name) {
                    continue;
                }
                return Ok(file);
            }
            // Another download created it in between: take the existing-file path.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StorageError::io("cannot create", part_path)(e)),
        }
    }
    Err(StorageError::Busy(part_path.to_owned()))
}

/// The checks an existing part file must pass before anything is written through it: and, with
/// `record`, the record of ours beside it in `dir`.
fn check_existing_part(
    file: &File,
    part_path: &Path,
    dir: &Dir,
    record: Option<&str>,
) -> Result<(), StorageError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(StorageError::io("cannot stat", part_path))?;
    if !meta.is_file() {
        return Err(StorageError::NotAFile(part_path.to_owned()));
    }
    if meta.nlink() != 1 || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(StorageError::PartLinked(part_path.to_owned()));
    }
    let ours = record.is_none_or(|record| {
        read_nofollow(dir, record, RECORD_MAGIC.len()).is_ok_and(|r| r.starts_with(RECORD_MAGIC))
    });
    if !ours {
        return Err(StorageError::NotOurs(part_path.to_owned()));
    }
    Ok(())
}

/// Takes the part file's lock, or says another download holds it.
pub(crate) fn lock(file: &File, part_path: &Path) -> Result<(), StorageError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Busy(part_path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io("cannot lock", part_path)(e)),
    }
}

/// The record's bytes: magic, file id, chunk count, one bit per verified chunk.
fn record_bytes(file_id: &FileId, verified: &[bool]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RECORD_MAGIC.len() + 36 + verified.len() / 8 + 1);
    bytes.extend_from_slice(RECORD_MAGIC);
    bytes.extend_from_slice(&file_id.0);
    bytes.extend_from_slice(&(verified.len() as u32).to_be_bytes());
    let mut bits = vec![0u8; verified.len().div_ceil(8)];
    for (i, done) in verified.iter().enumerate() {
        if *done {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bytes.extend_from_slice(&bits);
    bytes
}

/// Replaces the record `record_name` with `bytes`: written to a temporary file under a fresh
/// random name, created exclusively (`O_CREAT|O_EXCL`, which never follows a link, so nothing
/// planted under a predictable name can redirect the write), then renamed over the record
/// (which replaces a link there rather than writing through it).
///
/// In a staging folder, another job's tidy ([`crate::OutputDir::tidy_staging`]) removes such
/// temporary files, a kill's leftovers, and may take one between its creation and its rename:
/// the rename then finds nothing, and the record is written again under a new name.
fn write_record(
    dir: &Dir,
    record_name: &str,
    record_path: &Path,
    bytes: &[u8],
) -> Result<(), StorageError> {
    use std::io::Write;
    let mut tries = RECORD_TRIES;
    loop {
        let tmp = format!(".{record_name}.{:016x}.tmp", rand::random::<u64>());
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let mut created = false;
        let written = dir
            .open_with(&tmp, &options)
            .inspect(|_| created = true)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| dir.rename(&tmp, dir, record_name));
        match written {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = dir.remove_file(&tmp);
                tries -= 1;
                if !(created && e.kind() == ErrorKind::NotFound && tries > 0) {
                    return Err(write_error(e, record_path));
                }
            }
        }
    }
}

/// Writes of a record whose temporary file was taken away, at most.
const RECORD_TRIES: u32 = 3;

/// Opens `name` in `dir` for reading (and writing, with `write`) without following a link
/// (`ELOOP` if it is one) and without waiting (a FIFO planted there opens at once).
pub(crate) fn open_nofollow(dir: &Dir, name: &str, write: bool) -> std::io::Result<File> {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    use cap_std::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(write)
        .follow(FollowSymlinks::No)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    Ok(dir.open_with(name, &options)?.into_std())
}

/// Reads at most `max` bytes of the regular file `name` in `dir`: without following a link,
/// without waiting (a FIFO planted there fails at once), and without reading a planted huge
/// file whole.
pub(crate) fn read_nofollow(dir: &Dir, name: &str, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_nofollow(dir, name, false)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Refuses to start when the disk holding `on` (a file or a folder handle) can't hold `needed`
/// more bytes, instead of failing midway.
pub(crate) fn check_space(
    on: impl std::os::fd::AsFd,
    path: &Path,
    needed: u64,
) -> Result<(), StorageError> {
    let Ok(stats) = rustix::fs::fstatvfs(on) else {
        // Can't tell (an unusual file system): writes will report a full disk if it happens.
        return Ok(());
    };
    ensure_room(path, needed, stats.f_bavail.saturating_mul(stats.f_frsize))
}

fn ensure_room(path: &Path, needed: u64, available: u64) -> Result<(), StorageError> {
    if needed > available {
        return Err(StorageError::NoSpace {
            path: path.to_owned(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Opens `name` in `dir` again with `O_DIRECT`, if the file system supports it (tmpfs, for
/// one, does not) and the name still refers to the same file as `file` (nothing swapped it
/// in between).
fn open_direct(dir: &Dir, name: &str, file: &File) -> Option<File> {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    use cap_std::fs::OpenOptionsExt;
    use std::os::unix::fs::MetadataExt;
    let mut options = OpenOptions::new();
    // Never through a link, and never waiting (a FIFO swapped in meanwhile fails at once).
    options
        .write(true)
        .follow(FollowSymlinks::No)
        .custom_flags((rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::NONBLOCK).bits() as i32);
    let direct = dir.open_with(name, &options).ok()?.into_std();
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

/// Whether `e` says the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error().is_some_and(|code| {
        code == Errno::NOSPC.raw_os_error() || code == Errno::DQUOT.raw_os_error()
    })
}

pub(crate) fn write_error(e: std::io::Error, path: &Path) -> StorageError {
    if is_disk_full(&e) {
        StorageError::NoSpace {
            path: path.to_owned(),
            needed: 0,
            available: 0,
        }
    } else {
        StorageError::io("cannot write to", path)(e)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::names;
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
        assert!(!out.path().join("f.bin.part").exists());
    }

    #[test]
    fn aligned_chunks_and_a_short_tail_assemble_into_the_file() {
        // Whole chunks in page-aligned buffers go through O_DIRECT where the file system
        // allows it; the short tail through the page cache. Both must land where they belong.
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let size = 2 * CHUNK_SIZE as usize + 100;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let m = source(src.path(), "f.bin", &data);
        let part = PartFile::create(out.path(), m).unwrap();
        // On the usual disk file systems the direct path must really be taken.
        const EXT4: i64 = 0xEF53;
        const XFS: i64 = 0x5846_5342;
        const BTRFS: i64 = 0x9123_683E;
        let fs_type = rustix::fs::statfs(out.path()).unwrap().f_type as i64;
        let expect_direct = [EXT4, XFS, BTRFS].contains(&fs_type);
        if expect_direct {
            assert!(part.direct.is_some(), "no O_DIRECT handle on {fs_type:#x}");
        }
        let mut buf = crate::ChunkBuf::new();
        for index in [2u32, 0, 1] {
            let start = index as usize * CHUNK_SIZE as usize;
            let chunk = &data[start..(start + CHUNK_SIZE as usize).min(size)];
            buf.fill(chunk.len()).copy_from_slice(chunk);
            assert!(part.write_verified(index, buf.as_slice()).unwrap());
        }
        // Where there is a direct handle, no write was refused through it.
        assert_eq!(
            part.use_direct.load(Ordering::Relaxed),
            part.direct.is_some()
        );
        let path = part.finish().unwrap();
        assert!(
            std::fs::read(&path).unwrap() == data,
            "assembled file differs"
        );
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
    fn an_incomplete_download_gets_no_name_and_keeps_its_chunks() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE as usize + 10).map(|i| i as u8).collect();
        let m = source(src.path(), "f.bin", &data);
        let part = PartFile::create(out.path(), m.clone()).unwrap();
        part.write_verified(1, &data[CHUNK_SIZE as usize..])
            .unwrap();
        let err = part.finish().unwrap_err();
        assert!(matches!(err, StorageError::Incomplete { missing: 1, .. }));
        assert!(err.to_string().contains("1 chunk"), "{err}");
        assert!(!out.path().join("f.bin").exists());
        part.save_record().unwrap();
        drop(part);
        // The chunk written is still there for the next run.
        let part = PartFile::create(out.path(), m).unwrap();
        assert_eq!(part.resume(), vec![1]);
    }

    #[test]
    fn unsafe_names_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let m = FileManifest {
            name: "../escape".into(),
            size: 0,
            chunk_size: CHUNK_SIZE,
            chunks: vec![],
        };
        assert!(matches!(
            PartFile::create(out.path(), m),
            Err(StorageError::UnsafeName(_))
        ));
    }

    #[test]
    fn resume_trusts_only_listed_chunks_that_still_verify() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let size = 3 * CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        let m = source(src.path(), "r.bin", &data);
        let chunk = |i: usize| &data[i * CHUNK_SIZE as usize..(i + 1) * CHUNK_SIZE as usize];
        {
            let part = PartFile::create(out.path(), m.clone()).unwrap();
            assert!(part.write_verified(0, chunk(0)).unwrap());
            assert!(part.write_verified(2, chunk(2)).unwrap());
            part.save_record().unwrap();
            // Interrupted here: dropped without finish.
        }
        // Chunk 2 is damaged on disk after the record was written (a crash mid-write).
        let part_file = std::fs::OpenOptions::new()
            .write(true)
            .open(out.path().join("r.bin.part"))
            .unwrap();
        part_file
            .write_all_at(b"garbage", 2 * u64::from(CHUNK_SIZE) + 10)
            .unwrap();

        let part = PartFile::create(out.path(), m).unwrap();
        assert_eq!(
            part.resume(),
            vec![0],
            "chunk 2 fails its hash and is fetched again"
        );
        assert!(!part.write_verified(0, chunk(0)).unwrap(), "already done");
        part.write_verified(1, chunk(1)).unwrap();
        part.write_verified(2, chunk(2)).unwrap();
        let path = part.finish().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        let left: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["r.bin"], "part file and record are gone");
    }

    #[test]
    fn record_of_another_file_is_ignored() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = source(src.path(), "same.bin", b"first version");
        {
            let part = PartFile::create(out.path(), a).unwrap();
            part.write_verified(0, b"first version").unwrap();
            part.save_record().unwrap();
        }
        std::fs::write(src.path().join("same.bin"), b"second version").unwrap();
        let b = build_manifest(&src.path().join("same.bin"))
            .unwrap()
            .manifest;
        let part = PartFile::create(out.path(), b).unwrap();
        assert!(part.resume().is_empty());
    }

    #[test]
    fn one_download_per_part_file() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "l.bin", b"locked");
        let _first = PartFile::create(out.path(), m.clone()).unwrap();
        assert!(matches!(
            PartFile::create(out.path(), m),
            Err(StorageError::Busy(_))
        ));
    }

    #[test]
    fn folders_are_created_inside_and_links_out_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let m = source(src.path(), "f.bin", b"data");
        let part = PartFile::create_in(out.path(), &["a".into(), "b".into()], m.clone()).unwrap();
        part.write_verified(0, b"data").unwrap();
        assert_eq!(part.finish().unwrap(), out.path().join("a/b/f.bin"));
        // A link in the output folder pointing elsewhere can't be used as a folder level.
        std::os::unix::fs::symlink(outside.path(), out.path().join("link")).unwrap();
        assert!(PartFile::create_in(out.path(), &["link".into()], m.clone()).is_err());
        assert!(PartFile::create_in(out.path(), &["..".into()], m).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_users_own_file_named_like_a_part_file_is_never_touched() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("data.part"), b"my notes").unwrap();
        let m = source(src.path(), "data", b"payload");
        let err = PartFile::create(out.path(), m).unwrap_err();
        assert!(matches!(err, StorageError::NotOurs(_)), "{err}");
        assert_eq!(
            std::fs::read(out.path().join("data.part")).unwrap(),
            b"my notes"
        );
    }

    #[test]
    fn a_symlink_planted_as_the_part_file_is_refused() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, out.path().join("s.bin.part")).unwrap();
        let m = source(src.path(), "s.bin", b"payload");
        assert!(matches!(
            PartFile::create(out.path(), m),
            Err(StorageError::NotAFile(_))
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn links_planted_under_record_names_are_never_written_through() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let precious = out.path().join("precious.txt");
        std::fs::write(&precious, b"keep me").unwrap();
        // Under the temporary name an earlier version used, and under the record's own name.
        for name in ["f.bin.part.chunks.tmp", "f.bin.part.chunks"] {
            std::os::unix::fs::symlink("precious.txt", out.path().join(name)).unwrap();
        }
        let m = source(src.path(), "f.bin", b"payload");
        let part = PartFile::create(out.path(), m).unwrap();
        part.write_verified(0, b"payload").unwrap();
        part.save_record().unwrap();
        assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
        assert_eq!(std::fs::read(part.finish().unwrap()).unwrap(), b"payload");
        assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    }

    #[test]
    fn a_part_file_hard_linked_to_a_file_elsewhere_is_refused() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let m = source(src.path(), "h.bin", b"payload");
        std::fs::hard_link(&victim, out.path().join("h.bin.part")).unwrap();
        // With a record that looks like ours, as an attacker can write one.
        std::fs::write(
            out.path().join("h.bin.part.chunks"),
            record_bytes(&m.id(), &[false]),
        )
        .unwrap();
        let err = PartFile::create(out.path(), m).unwrap_err();
        assert!(matches!(err, StorageError::PartLinked(_)), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn a_fifo_planted_as_the_record_or_part_neither_hangs_nor_counts() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "q.bin", b"payload");
        let fifo = |name: &str| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                out.path().join(name),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap()
        };
        // A part file of ours with a FIFO where its record goes: reading the record used to
        // wait for a writer forever.
        drop(PartFile::create(out.path(), m.clone()).unwrap());
        std::fs::remove_file(out.path().join("q.bin.part.chunks")).unwrap();
        fifo("q.bin.part.chunks");
        let err = PartFile::create(out.path(), m.clone()).unwrap_err();
        assert!(matches!(err, StorageError::NotOurs(_)), "{err}");
        // A FIFO as the part file itself.
        std::fs::remove_file(out.path().join("q.bin.part")).unwrap();
        std::fs::remove_file(out.path().join("q.bin.part.chunks")).unwrap();
        fifo("q.bin.part");
        let err = PartFile::create(out.path(), m).unwrap_err();
        assert!(matches!(err, StorageError::NotAFile(_)), "{err}");
    }

    #[test]
    fn a_finished_download_is_served_from_its_own_handle_not_its_name() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let private = tempfile::tempdir().unwrap();
        let secret = private.path().join("id_ed25519");
        // The same size as the download: a size check can't tell them apart.
        std::fs::write(&secret, b"SECRET!").unwrap();
        let m = source(src.path(), "k.bin", b"payload");
        let part = PartFile::create(out.path(), m).unwrap();
        part.write_verified(0, b"payload").unwrap();
        let path = part.finish().unwrap();
        // Swapped for a link as soon as it got its name.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();

        let served = part.into_source().unwrap();
        let mut bytes = vec![0u8; 7];
        served.read_at(&mut bytes, 0).unwrap();
        assert_eq!(
            bytes, b"payload",
            "served from the handle it was written with"
        );
        // And since its name now leads elsewhere, it is not served at all.
        assert!(matches!(
            served.prepare_chunk(0),
            Err(StorageError::FileChanged(_))
        ));
    }

    #[test]
    fn a_failed_record_write_leaves_nothing_the_next_run_refuses() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "r.bin", b"payload");
        // A folder where the record goes: the record can't be written.
        std::fs::create_dir(out.path().join("r.bin.part.chunks")).unwrap();
        assert!(PartFile::create(out.path(), m.clone()).is_err());
        assert!(!out.path().join("r.bin.part").exists());
        std::fs::remove_dir(out.path().join("r.bin.part.chunks")).unwrap();
        let part = PartFile::create(out.path(), m).unwrap();
        part.write_verified(0, b"payload").unwrap();
        part.finish().unwrap();
        // No temporary file left behind either.
        let names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["r.bin"]);
    }

    #[test]
    fn the_loser_of_two_racing_downloads_is_told_another_one_runs() {
        let src = tempfile::tempdir().unwrap();
        let m = source(src.path(), "race.bin", b"payload");
        for _ in 0..100 {
            let out = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<_> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            PartFile::create(out.path(), m.clone())
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let won = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "{results:?}");
            for result in &results {
                if let Err(err) = result {
                    assert!(matches!(err, StorageError::Busy(_)), "{err}");
                    assert!(err.to_string().contains("another download of this file"));
                }
            }
        }
    }

    #[test]
    fn a_folders_big_file_is_assembled_in_the_staging_folder_and_resumes_there() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * CHUNK_SIZE as usize + 7)
            .map(|i| (i % 241) as u8)
            .collect();
        let m = source(src.path(), "x", &data);
        let album = vec!["album".to_string()];
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let key = part_key(&m.id(), &album, "x");
        let chunk = |i: usize| {
            &data[i * CHUNK_SIZE as usize..((i + 1) * CHUNK_SIZE as usize).min(data.len())]
        };
        {
            let part = PartFile::create_staged(&dir, &album, m.clone()).unwrap();
            assert_eq!(
                part.part_path(),
                dir.staging_path().join(format!("{key}.part"))
            );
            assert_eq!(part.final_path(), out.path().join("album/x"));
            part.write_verified(1, chunk(1)).unwrap();
            part.save_record().unwrap();
            // Interrupted here.
        }
        assert_eq!(names(&out.path().join("album")), Vec::<String>::new());
        assert_eq!(
            names(dir.staging_path()),
            [format!("{key}.part"), format!("{key}.part.chunks")]
        );
        // The next run (another handle on the same output folder) resumes from there.
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let part = PartFile::create_staged(&dir, &album, m).unwrap();
        assert_eq!(part.resume(), vec![1]);
        part.write_verified(0, chunk(0)).unwrap();
        part.write_verified(2, chunk(2)).unwrap();
        assert_eq!(part.finish().unwrap(), out.path().join("album/x"));
        assert_eq!(std::fs::read(out.path().join("album/x")).unwrap(), data);
        assert_eq!(names(dir.staging_path()), Vec::<String>::new());
        dir.tidy_staging();
        assert_eq!(names(out.path()), ["album"]);
    }

    /// A folder holding `x` and also files named `x.part` and `x.part.chunks` (the latter
    /// crafted as a record of ours saying every chunk is done): `x` is assembled elsewhere,
    /// and the two files are neither read, nor rewritten, nor removed.
    #[test]
    fn files_named_like_a_part_file_and_its_record_are_never_taken_for_them() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE as usize + 99)
            .map(|i| (i % 13) as u8)
            .collect();
        let m = source(src.path(), "x", &data);
        let album = vec!["album".to_string()];
        std::fs::create_dir(out.path().join("album")).unwrap();
        let fake_part = vec![0u8; data.len()];
        let fake_record = record_bytes(&m.id(), &[true, true]);
        std::fs::write(out.path().join("album/x.part"), &fake_part).unwrap();
        std::fs::write(out.path().join("album/x.part.chunks"), &fake_record).unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let part = PartFile::create_staged(&dir, &album, m).unwrap();
        assert!(part.resume().is_empty(), "nothing of theirs counts as done");
        part.write_verified(0, &data[..CHUNK_SIZE as usize])
            .unwrap();
        part.write_verified(1, &data[CHUNK_SIZE as usize..])
            .unwrap();
        part.finish().unwrap();
        assert_eq!(std::fs::read(out.path().join("album/x")).unwrap(), data);
        assert_eq!(
            std::fs::read(out.path().join("album/x.part")).unwrap(),
            fake_part
        );
        assert_eq!(
            std::fs::read(out.path().join("album/x.part.chunks")).unwrap(),
            fake_record
        );
    }

    #[test]
    fn the_same_file_at_two_paths_has_two_part_files() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "same.bin", b"same bytes");
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let (one, two) = (vec!["a".to_string()], vec!["b".to_string()]);
        let first = PartFile::create_staged(&dir, &one, m.clone()).unwrap();
        let second = PartFile::create_staged(&dir, &two, m.clone()).unwrap();
        assert_ne!(first.part_path(), second.part_path());
        // The same path twice is one part file, held by one download at a time.
        assert!(matches!(
            PartFile::create_staged(&dir, &one, m),
            Err(StorageError::Busy(_))
        ));
        for part in [first, second] {
            part.write_verified(0, b"same bytes").unwrap();
            part.finish().unwrap();
        }
        assert_eq!(
            std::fs::read(out.path().join("a/same.bin")).unwrap(),
            b"same bytes"
        );
        assert_eq!(
            std::fs::read(out.path().join("b/same.bin")).unwrap(),
            b"same bytes"
        );
    }

    /// A crash between naming a folder's file and removing its temporary name leaves the
    /// file in place and its part file (the same file) in the staging folder: the next run
    /// finds it there already and drops the leftovers, never touching the file; a part file
    /// another download holds stays.
    #[test]
    fn leftovers_of_a_file_already_in_place_are_dropped_unless_held() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "x", b"payload");
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let part = PartFile::create_staged(&dir, &[], m.clone()).unwrap();
        part.write_verified(0, b"payload").unwrap();
        part.save_record().unwrap();
        std::fs::hard_link(part.part_path(), out.path().join("x")).unwrap();
        // Held by a download: left alone.
        dir.discard_staged(&[], &m.id(), "x");
        assert_eq!(names(dir.staging_path()).len(), 2);
        drop(part);
        dir.discard_staged(&[], &m.id(), "x");
        assert_eq!(names(dir.staging_path()), Vec::<String>::new());
        assert_eq!(std::fs::read(out.path().join("x")).unwrap(), b"payload");
    }

    /// A part file in the staging folder with no record beside it (a tidy took the record of
    /// a part file another job created a moment later, or a crash came between the two) is
    /// still ours: the staging folder is this user's alone. It is taken over, and nothing in
    /// it counts as done. Beside its target, the same would be someone else's file.
    #[test]
    fn a_staged_part_file_without_a_record_is_taken_over_trusting_nothing() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "x", b"payload");
        let dir = OutputDir::open(out.path(), "album").unwrap();
        let part = PartFile::create_staged(&dir, &[], m.clone()).unwrap();
        part.write_verified(0, b"payload").unwrap();
        part.save_record().unwrap();
        let record = part.part_path().with_file_name(format!(
            "{}{RECORD_SUFFIX}",
            part.part_path().file_name().unwrap().to_str().unwrap()
        ));
        drop(part);
        std::fs::remove_file(record).unwrap();
        let part = PartFile::create_staged(&dir, &[], m).unwrap();
        assert!(part.resume().is_empty());
        part.write_verified(0, b"payload").unwrap();
        part.finish().unwrap();
        assert_eq!(std::fs::read(out.path().join("x")).unwrap(), b"payload");
    }

    #[test]
    fn a_folders_file_already_in_place_needs_no_staging_folder() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = source(src.path(), "f.bin", b"new content");
        std::fs::write(out.path().join("f.bin"), b"precious").unwrap();
        let dir = OutputDir::open(out.path(), "album").unwrap();
        assert!(matches!(
            PartFile::create_staged(&dir, &[], m),
            Err(StorageError::AlreadyExists(_))
        ));
        assert_eq!(names(out.path()), ["f.bin"]);
        assert_eq!(
            std::fs::read(out.path().join("f.bin")).unwrap(),
            b"precious"
        );
    }

    #[test]
    fn a_disk_filling_up_mid_download_is_reported_as_such() {
        let err = write_error(
            std::io::Error::from_raw_os_error(28),
            Path::new("/o/f.part"),
        );
        assert_eq!(err.to_string(), "not enough disk space for /o/f.part");
    }

    #[test]
    fn too_little_space_is_refused_up_front() {
        let path = Path::new("/o/f.part");
        assert!(ensure_room(path, 100, 100).is_ok());
        let err = ensure_room(path, 101, 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not enough disk space for /o/f.part: 101 more bytes needed, 100 available"
        );
    }
}
