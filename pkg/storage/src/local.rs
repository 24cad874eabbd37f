//! What is already at a download's target before anything is fetched: nothing, a `.part` to
//! resume, the very file (checked by hash), or something else that must not be touched.
//!
//! SKELETON (issue 14): the signature is final; the body is engineer E's.

use std::path::Path;

use p2p_protocol::FileManifest;

use crate::StorageError;

/// What is at `<dir>/<name>` (and `<dir>/<name>.part`) for one file of a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalState {
    /// Nothing: fetch it.
    Missing,
    /// A `.part` file: [`crate::PartFile`] resumes it.
    Partial,
    /// The same file, every chunk's hash equal: nothing to fetch.
    AlreadyThere,
    /// Something else is there; it is never touched. One line saying what.
    Conflict(String),
}

/// Looks at what is at the target of `manifest` inside `dir`. Blocking: hashes an existing
/// regular file of the right size.
pub fn check_local(dir: &Path, manifest: &FileManifest) -> Result<LocalState, StorageError> {
    let _ = (dir, manifest);
    Ok(LocalState::Missing)
}
