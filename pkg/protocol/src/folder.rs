//! A shared folder on the wire: its head (name, totals, page hashes), whose hash is the
//! [`FolderId`], and its file list in pages of [`FOLDER_PAGE_FILES`], each certified by a hash
//! in the head, so a downloader checks the list page by page while it streams.
//!
//! SKELETON (issue 14): the types are final; the bodies are engineer A's.

use serde::{Deserialize, Serialize};

use crate::types::{FileId, FileManifest, FolderId, Sha256Hash};

/// Files per page of a folder's file list (the last page may be shorter).
pub const FOLDER_PAGE_FILES: usize = 1024;
/// A file of at most this many chunks travels with its chunk hashes inside the folder's
/// pages; a bigger one by its id only (its manifest comes from `GetManifest`).
pub const INLINE_CHUNKS: usize = 16;
/// Most files one folder may hold.
pub const MAX_FOLDER_FILES: u64 = 1 << 20;
/// Longest path of a file inside a folder, in bytes (parts joined by `/`).
pub const MAX_FOLDER_PATH_LEN: usize = 1024;

/// What identifies a folder and lets anyone check its file list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderHead {
    /// The folder's own name (one safe file name).
    pub name: String,
    /// How many files it holds.
    pub files: u64,
    /// Their total size in bytes.
    pub size: u64,
    /// The hash of each page of its file list, in order.
    pub pages: Vec<Sha256Hash>,
}

impl FolderHead {
    /// The folder's id: the SHA-256 of the head's canonical bytes.
    pub fn id(&self) -> FolderId {
        todo!("engineer A")
    }
}

/// One file of a folder as a page of `FolderPages` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderItem {
    /// Its path under the folder's root: safe names joined by `/`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its id, for a file of more than [`INLINE_CHUNKS`] chunks (absent otherwise).
    pub file_id: Option<FileId>,
    /// Its chunk hashes, for a file of at most [`INLINE_CHUNKS`] chunks (absent otherwise).
    pub chunks: Option<Vec<Sha256Hash>>,
}

/// One file of a folder as the index gets it (`AddFolderFiles`); a page hash is over these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRef {
    /// Its path under the folder's root.
    pub path: String,
    /// Its id.
    pub file_id: FileId,
    /// Its size in bytes.
    pub size: u64,
}

/// A file of a folder that passed [`PageChecker::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedItem {
    /// Its path under the folder's root.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Its id.
    pub file_id: FileId,
    /// Its manifest, when the page carried its chunk hashes.
    pub manifest: Option<FileManifest>,
}

/// Why a folder head, page or file list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// Placeholder until engineer A lands the rules.
    #[error("folder record refused: {0}")]
    Invalid(String),
}

/// Builds a folder's head and pages from its files (`path`, manifest), in any order.
pub fn build(
    name: &str,
    files: Vec<(String, FileManifest)>,
) -> Result<(FolderHead, Vec<Vec<FolderItem>>), FolderError> {
    let _ = (name, files);
    todo!("engineer A")
}

/// Checks a folder's pages as they stream in, against the id the user asked for.
#[derive(Debug)]
pub struct PageChecker {
    head: FolderHead,
}

impl PageChecker {
    /// Starts checking: the head must hash to `id`.
    pub fn new(id: &FolderId, head: &FolderHead) -> Result<Self, FolderError> {
        let _ = id;
        Ok(Self { head: head.clone() })
    }

    /// Checks page `page_no`; pages must come in order.
    pub fn check(
        &mut self,
        page_no: u32,
        items: &[FolderItem],
    ) -> Result<Vec<CheckedItem>, FolderError> {
        let _ = (page_no, items, &self.head);
        todo!("engineer A")
    }

    /// Ends the check: every page seen, counts and sizes add up.
    pub fn finish(self) -> Result<(), FolderError> {
        todo!("engineer A")
    }
}
