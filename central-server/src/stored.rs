//! [`StoredManifest`] and [`StoredHead`]: how the index keeps a manifest or a folder's head,
//! once per id whoever hosts it, and what that costs in bytes.
//!
//! The accounting is what the budgets of [`crate::ServerConfig`] count. It is conservative:
//! the variable parts (name, lower-case name, 32 bytes per chunk hash) are exact, because they
//! live in exactly-sized boxes, and the fixed parts are generous estimates of the map nodes,
//! reference counts and allocator headers around them.

use std::sync::Arc;

use p2p_protocol::{FileManifest, FolderHead, Sha256Hash};

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

/// Fixed cost of one stored folder head: its entries in the folder and name maps, its slot,
/// the shared head's header and reference counts, and allocator headers.
pub const FOLDER_OVERHEAD: usize = 512;

/// Cost of each page of a stored folder in its head: the page's hash (32 bytes) and the
/// pointer to the page's files once stored (8 bytes), and how many hosts sent it.
pub const HEAD_PAGE_COST: usize = 48;

/// A validated folder head as the index stores it: the page hashes in one exactly-sized block,
/// and the name as given and in lower case (only when that differs), as for a manifest.
#[derive(Debug)]
pub struct StoredHead {
    name: Arc<str>,
    lower: Option<Box<str>>,
    files: u64,
    size: u64,
    pages: Box<[Sha256Hash]>,
}

impl StoredHead {
    /// Stores `head` (already validated).
    pub fn new(head: FolderHead) -> Self {
        let lower = head.name.to_lowercase();
        Self {
            lower: (lower != head.name).then(|| lower.into_boxed_str()),
            name: head.name.into(),
            files: head.files,
            size: head.size,
            pages: head.pages.into_boxed_slice(),
        }
    }

    /// Bytes this head costs the index: [`FOLDER_OVERHEAD`], the names, and
    /// [`HEAD_PAGE_COST`] per page. The same as [`StoredHead::cost_of`] for its head.
    pub fn cost(&self) -> usize {
        FOLDER_OVERHEAD
            + self.name.len()
            + self.lower.as_ref().map_or(0, |l| l.len())
            + self.pages.len() * HEAD_PAGE_COST
    }

    /// What storing `head` would cost, before deciding to.
    pub fn cost_of(head: &FolderHead) -> usize {
        let lower = head.name.to_lowercase();
        FOLDER_OVERHEAD
            + head.name.len()
            + if lower == head.name { 0 } else { lower.len() }
            + head.pages.len() * HEAD_PAGE_COST
    }

    /// The folder's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The name in lower case, for matching searches.
    pub fn lower_name(&self) -> &str {
        self.lower.as_deref().unwrap_or(&self.name)
    }

    /// Files in the folder.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Their total size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The page hashes.
    pub fn pages(&self) -> &[Sha256Hash] {
        &self.pages
    }

    /// The head as it travels.
    pub fn to_head(&self) -> FolderHead {
        FolderHead {
            name: self.name.to_string(),
            files: self.files,
            size: self.size,
            pages: self.pages.to_vec(),
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

    #[test]
    fn stored_head_round_trips_and_costs_what_it_holds() {
        let head = FolderHead {
            name: "Photos".into(),
            files: 2000,
            size: 5,
            pages: vec![Sha256Hash([1; 32]), Sha256Hash([2; 32])],
        };
        let cost = StoredHead::cost_of(&head);
        let stored = StoredHead::new(head.clone());
        assert_eq!(stored.cost(), cost);
        assert_eq!(cost, FOLDER_OVERHEAD + 12 + 2 * HEAD_PAGE_COST);
        assert_eq!(stored.to_head(), head);
        assert_eq!(stored.lower_name(), "photos");
    }
}
