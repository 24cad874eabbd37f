//! Files on disk for p2p-transfer: hashing a file into a manifest, reading chunks to serve, and
//! writing verified chunks of a download so that the final file is whole or absent.
//!
//! Everything here is blocking `std::fs` work. Callers on an async runtime run it in
//! `spawn_blocking`: hashing a 4 MiB chunk takes milliseconds, which would stall a reactor.
//!
//! # Layout
//! * [`chunker`]: file → [`p2p_protocol::FileManifest`], hashing chunks on every core at once.
//! * [`source`]: [`OpenSource`], a file to share opened once (no link followed, never
//!   blocking), and [`SourceFile`], a registered file that chunks are served from.
//! * [`tree`]: [`Tree`], a shared folder walked and opened only through a handle on it.
//! * [`chunk_buf`]: [`ChunkBuf`], a reusable chunk buffer aligned for `O_DIRECT` writes.
//! * [`store`]: [`PartFile`], a download in progress: verified writes, then a no-overwrite
//!   rename once every chunk is in.
//! * [`small`]: whole small files of a download, verified in memory, written with no name,
//!   flushed and named in batches.
//! * [`staging`]: [`OutputDir`], a folder job's output folder and the staging folder beside
//!   the folder's tree where its big files are assembled.
//! * [`upload`]: [`Upload`], a file arriving from a front end: written under a hidden
//!   temporary name and hashed as it arrives, then named (never over a file) and served.
//! * [`local`]: what is already at a download's target (skip, resume, or a conflict).
//! * [`path`]: where a download may be written.
//! * [`error`][mod@error]: [`StorageError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunk_buf;
pub mod chunker;
pub mod error;
pub mod flush;
pub mod local;
pub mod path;
pub mod small;
pub mod source;
pub mod staging;
pub mod store;
pub mod tree;
pub mod upload;

pub use chunk_buf::ChunkBuf;
pub use chunker::build_manifest;
pub use error::StorageError;
pub use source::{ChunkRange, OpenSource, SourceFile};
pub use staging::OutputDir;
pub use store::PartFile;
pub use tree::{Tree, TreeFile, Walk};
pub use upload::{Upload, UploadLen};

/// What the unit tests of several modules share.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    /// The names in `dir`, sorted.
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}
