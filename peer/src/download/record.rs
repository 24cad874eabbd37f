//! A folder's file list as a download reads it: pages fetched from its hosts (a few ahead)
//! and checked against the folder id, or a `.p2pm` folder's list in memory.
//!
//! SKELETON (issue 14): the names are final; the bodies are engineer D's.
#![allow(dead_code)]

use p2p_protocol::{FileManifest, FolderHead};

use crate::error::PeerError;

/// One verified file of a folder.
#[derive(Clone, Debug)]
pub(crate) struct FolderFile {
    /// Parts of its path under the folder's root; the last one is the manifest's name.
    pub path: Vec<String>,
    /// Its manifest (its id is the one the folder's record certifies).
    pub manifest: FileManifest,
}

/// Yields a folder's files, verified, in path order.
#[derive(Debug)]
pub(crate) struct FolderRecord {
    files: std::vec::IntoIter<FolderFile>,
}

impl FolderRecord {
    /// A folder whose list is in hand (a `.p2pm` folder), already checked.
    pub fn from_files(head: &FolderHead, files: Vec<FolderFile>) -> Self {
        let _ = head;
        Self {
            files: files.into_iter(),
        }
    }

    /// The next files, or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<FolderFile>>, PeerError> {
        let batch: Vec<FolderFile> = self.files.by_ref().take(1024).collect();
        Ok((!batch.is_empty()).then_some(batch))
    }
}
