//! [`StorageError`]: which disk step failed.

use std::path::PathBuf;

use p2p_protocol::{FileNameError, ManifestError, Sha256Hash};

/// A disk operation that failed, with the path it concerned.
///
/// Every variant says its cause in its own text and reports no `source()`, so the cause is
/// printed once, in a log field (`%err`) as in an error chain (`{err:#}`).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{action} {}: {cause}", path.display())]
    Io {
        /// What we were doing ("cannot open", "cannot write to"...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A chunk's bytes do not hash to the manifest's value.
    #[error("chunk {index} failed verification: expected {}, got {}", expected.fmt_short(), got.fmt_short())]
    HashMismatch {
        /// Chunk index.
        index: u32,
        /// From the manifest.
        expected: Sha256Hash,
        /// Of the bytes received.
        got: Sha256Hash,
    },
    /// A chunk of the wrong length.
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    ChunkLength {
        /// Chunk index.
        index: u32,
        /// From the manifest.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A chunk index past the end.
    #[error("chunk {index} is out of range (the file has {count} chunks)")]
    ChunkOutOfRange {
        /// Requested.
        index: u32,
        /// Chunks in the file.
        count: usize,
    },
    /// `finish` was called before every chunk was verified and written.
    #[error("{} is incomplete: {missing} chunk(s) still missing", path.display())]
    Incomplete {
        /// The partial file (kept for a resume).
        path: PathBuf,
        /// Chunks not yet verified.
        missing: usize,
    },
    /// The target already exists; it is left as it is.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    /// A file with the part file's name exists but was not started by this program.
    #[error("{} exists and is not a download of this program; move it away and try again", .0.display())]
    NotOurs(PathBuf),
    /// Another download holds this part file.
    #[error("another download of this file is already running into the same folder ({} is locked)", .0.display())]
    Busy(PathBuf),
    /// An existing part file has other hard links or another owner: writing through it would
    /// change a file elsewhere.
    #[error("{} is linked to another file or belongs to another user; refusing to write through it (move it away and try again)", .0.display())]
    PartLinked(PathBuf),
    /// The disk is (or would be) full.
    #[error("not enough disk space for {}{}", path.display(), if *needed > 0 { format!(": {needed} more bytes needed, {available} available") } else { String::new() })]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// Bytes still to write (0 if unknown: the disk filled up during the download).
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// A registered file changed size or modification time on disk.
    #[error("{} changed on disk since it was registered", .0.display())]
    FileChanged(PathBuf),
    /// The name now leads to another file than the one listed a moment ago.
    #[error("{} was replaced while it was being opened", .0.display())]
    Replaced(PathBuf),
    /// A folder to share has no name it can go by on the network: `/`, a name that is not
    /// UTF-8, or one that is unsafe to hand to others.
    #[error("the folder {} has no name it can be shared under: {reason}", path.display())]
    FolderName {
        /// The folder, symlinks resolved.
        path: PathBuf,
        /// Why its name can't be used.
        reason: String,
    },
    /// A folder a download keeps its temporary files in is something else (a link, a file).
    #[error("{} is not a folder; move it away and try again", .0.display())]
    NotAFolder(PathBuf),
    /// A folder of a folder download is on another file system (another mount) than the
    /// output folder, where the download assembles its big files: they could not be linked
    /// into it.
    #[error(
        "{} is on another file system than {}; a folder download assembles its big files in {} and can't move them across: download into an output folder on that file system",
        folder.display(),
        out.display(),
        out.display()
    )]
    OtherFileSystem {
        /// The folder the file goes to.
        folder: PathBuf,
        /// The output folder.
        out: PathBuf,
    },
    /// A folder's name is one the downloader keeps for itself.
    #[error(
        "the folder name {0} is reserved: names starting with {prefix} hold a download's temporary files",
        prefix = crate::staging::STAGING_PREFIX
    )]
    ReservedName(String),
    /// Not a regular file.
    #[error("{} is not a regular file (FIFOs, devices, sockets and folders can't be shared as files)", .0.display())]
    NotAFile(PathBuf),
    /// The name can't be used for a file.
    #[error("unsafe file name: {0}")]
    UnsafeName(FileNameError),
    /// An uploaded file's name starts with `.`: hidden, and the upload folder keeps such
    /// names for uploads still arriving.
    #[error(
        "unsafe file name: {0:?} starts with '.' (hidden names are kept for uploads still arriving)"
    )]
    HiddenName(String),
    /// An upload is larger than this node accepts.
    #[error("the upload is larger than the {max} bytes this node accepts")]
    TooLarge {
        /// The limit, in bytes.
        max: u64,
    },
    /// An upload's bytes did not match the length it announced.
    #[error("{}: {got} bytes received where {declared} were announced", path.display())]
    WrongLength {
        /// The upload's temporary file.
        path: PathBuf,
        /// Bytes announced.
        declared: u64,
        /// Bytes received.
        got: u64,
    },
    /// The file can't be described by a valid manifest (too large, bad name...).
    #[error("{}: {cause}", path.display())]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: ManifestError,
    },
}

impl StorageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| StorageError::Io {
            action,
            path,
            cause,
        }
    }
}

impl From<FileNameError> for StorageError {
    fn from(err: FileNameError) -> Self {
        StorageError::UnsafeName(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of `err` and of every cause under it, as `{err:#}` shows an error chain.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut next = err.source();
        while let Some(cause) = next {
            text = format!("{text}: {cause}");
            next = cause.source();
        }
        text
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = StorageError::io("cannot open", "/tmp/x")(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            chain(&io),
            "cannot open /tmp/x: No such file or directory (os error 2)"
        );
        let name = StorageError::from(FileNameError::Empty);
        assert_eq!(
            chain(&name)
                .matches(&FileNameError::Empty.to_string())
                .count(),
            1
        );
        let manifest = StorageError::Manifest {
            path: "/tmp/x".into(),
            cause: ManifestError::TooLarge(1),
        };
        assert_eq!(
            chain(&manifest),
            format!("/tmp/x: {}", ManifestError::TooLarge(1))
        );
    }
}
