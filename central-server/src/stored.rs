//! [`StoredManifest`]: how the index keeps a manifest, once per file id whoever hosts it, and
//! what that costs in bytes.
//!
//! The accounting is what the budgets of [`crate::ServerConfig`] count. It is conservative:
//! the variable parts (name, lower-case name, 32 bytes per chunk hash) are exact, because they
//! live in exactly-sized boxes, and the fixed parts are generous estimates of the map nodes,
//! reference counts and allocator headers around them.

use std::sync::Arc;

use p2p_protocol::{FileManifest, Sha256Hash};

/// Fixed cost of one stored file: its entries in the id and name maps (keys, values, B-tree
/// node slack), the shared manifest's header and reference counts, and an allocator header per
/// allocation.
pub const FILE_OVERHEAD: usize = 512;

/// Cost of one peer hosting one file: its id in the file's host set and the file id in the
/// peer's file set, with B-tree node slack.
pub const HOST_OVERHEAD: usize = 96;

/// A validated manifest as the index stores it: the chunk hashes in one exactly-sized block of
/// 32-byte arrays, and the name twice, as given (shared with the name index) and in lower case
/// for searches (only when that differs).
#[derive(Debug)]
pub struct StoredManifest {
    name: Arc<str>,
    lower: Option<Box<str>>,
    size: u64,
    chunk_size: u32,
    chunks: Box<[Sha256Hash]>,
}

impl StoredManifest {
    /// Stores `manifest` (already validated).
    pub fn new(manifest: FileManifest) -> Self {
        let lower = manifest.name.to_lowercase();
        Self {
            lower: (lower != manifest.name).then(|| lower.into_boxed_str()),
            name: manifest.name.into(),
            size: manifest.size,
            chunk_size: manifest.chunk_size,
            chunks: manifest.chunks.into_boxed_slice(),
        }
    }

    /// Bytes this manifest costs the index, by [`FILE_OVERHEAD`] and the exact sizes of its
    /// parts. The same as [`StoredManifest::cost_of`] for the manifest it was made from.
    pub fn cost(&self) -> usize {
        FILE_OVERHEAD
            + self.name.len()
            + self.lower.as_ref().map_or(0, |l| l.len())
            + std::mem::size_of_val(&*self.chunks)
    }

    /// What storing `manifest` would cost, before deciding to.
    pub fn cost_of(manifest: &FileManifest) -> usize {
        let lower = manifest.name.to_lowercase();
        FILE_OVERHEAD
            + manifest.name.len()
            + if lower == manifest.name {
                0
            } else {
                lower.len()
            }
            + manifest.chunks.len() * std::mem::size_of::<Sha256Hash>()
    }

    /// The name as registered.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The name in lower case (`str::to_lowercase`), for matching searches.
    pub fn lower_name(&self) -> &str {
        self.lower.as_deref().unwrap_or(&self.name)
    }

    /// Number of chunk hashes.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The manifest as it travels.
    pub fn to_manifest(&self) -> FileManifest {
        FileManifest {
            name: self.name.to_string(),
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self.chunks.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use p2p_protocol::CHUNK_SIZE;

    use super::*;

    #[test]
    fn stored_form_round_trips_and_costs_what_it_holds() {
        for name in ["plain.bin", "Mixed Case.ZIP", "ÄRGER.txt"] {
            let manifest = FileManifest {
                name: name.into(),
                size: 3 * u64::from(CHUNK_SIZE),
                chunk_size: CHUNK_SIZE,
                chunks: vec![
                    Sha256Hash([1; 32]),
                    Sha256Hash([2; 32]),
                    Sha256Hash([3; 32]),
                ],
            };
            let cost = StoredManifest::cost_of(&manifest);
            let stored = StoredManifest::new(manifest.clone());
            assert_eq!(stored.cost(), cost);
            assert_eq!(stored.to_manifest(), manifest);
            assert_eq!(stored.lower_name(), name.to_lowercase());
            // The hashes are packed: 32 bytes each, nothing per hash on top.
            assert!(cost <= FILE_OVERHEAD + 2 * name.len() + 3 * 32, "{cost}");
        }
    }
}
