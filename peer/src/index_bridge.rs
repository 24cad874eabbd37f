//! SKELETON bridge (issue 14): engineer A's `IndexClient` calls for batches, folders and
//! `locate`, written by hand against the wire types until `DONE-WIRE(a-wire)` lands them.
//! Inherent methods win over these trait methods, so callers need no change at the merge;
//! delete this file then (and import `Located` from `index_client`).
#![allow(dead_code)]

use p2p_protocol::folder::FolderRef;
use p2p_protocol::{
    FileId, FileManifest, FolderHead, FolderId, HostInfo, IndexRequest, IndexResponse,
};

use crate::error::PeerError;
use crate::index_client::{IndexClient, Lookup, Session};

/// What an id or prefix names on the index.
#[derive(Debug)]
pub enum Located {
    /// A file shared on its own.
    File(Lookup),
    /// A folder.
    Folder {
        /// Its full id.
        folder_id: FolderId,
        /// Its head.
        head: FolderHead,
        /// Its hosts.
        hosts: Vec<HostInfo>,
    },
    /// A file known only inside a folder.
    InFolder {
        /// Its full id.
        file_id: FileId,
        /// The folder.
        folder_id: FolderId,
        /// Its path in the folder.
        path: String,
        /// Its size.
        size: u64,
        /// The folder's hosts.
        hosts: Vec<HostInfo>,
    },
}

pub(crate) trait Locate {
    async fn locate(&self, id: &str) -> Result<Located, PeerError>;
}

impl Locate for IndexClient {
    async fn locate(&self, id: &str) -> Result<Located, PeerError> {
        let prefix: p2p_protocol::IdPrefix = id.parse()?;
        match self
            .call(IndexRequest::Lookup {
                id: prefix.to_string(),
            })
            .await?
        {
            IndexResponse::Found {
                file_id,
                manifest,
                hosts,
            } => {
                if manifest.id() != file_id
                    || !prefix.matches(&file_id)
                    || manifest.validate().is_err()
                {
                    return Err(PeerError::ManifestMismatch(file_id));
                }
                Ok(Located::File(Lookup {
                    file_id,
                    manifest,
                    hosts,
                }))
            }
            IndexResponse::FoundFolder {
                folder_id,
                head,
                hosts,
            } => Ok(Located::Folder {
                folder_id,
                head,
                hosts,
            }),
            IndexResponse::FoundInFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            } => Ok(Located::InFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            }),
            other => Err(PeerError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}

/// SKELETON bridge: engineer A's `IndexClient` calls for batches and folders, by hand, until
/// `DONE-WIRE(a-wire)` lands them (inherent methods win over these, so the merge needs no
/// change here; delete this then).
pub(crate) trait IndexBatches {
    async fn add_files(
        &self,
        session: &Session,
        manifests: Vec<FileManifest>,
    ) -> Result<Vec<FileId>, PeerError>;
    async fn add_folder(&self, session: &Session, head: FolderHead) -> Result<FolderId, PeerError>;
    async fn add_folder_files(
        &self,
        session: &Session,
        folder_id: FolderId,
        first_page: u32,
        pages: Vec<Vec<FolderRef>>,
    ) -> Result<u64, PeerError>;
    async fn remove_folder(&self, session: &Session, folder_id: FolderId) -> Result<(), PeerError>;
}

impl IndexBatches for IndexClient {
    async fn add_files(
        &self,
        session: &Session,
        manifests: Vec<FileManifest>,
    ) -> Result<Vec<FileId>, PeerError> {
        let request = IndexRequest::AddFiles {
            peer_id: session.peer_id,
            manifests,
        };
        match self.call(request).await? {
            IndexResponse::FilesAdded { file_ids } => Ok(file_ids),
            other => Err(PeerError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn add_folder(&self, session: &Session, head: FolderHead) -> Result<FolderId, PeerError> {
        let request = IndexRequest::AddFolder {
            peer_id: session.peer_id,
            head,
        };
        match self.call(request).await? {
            IndexResponse::FolderAdded { folder_id } => Ok(folder_id),
            other => Err(PeerError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn add_folder_files(
        &self,
        session: &Session,
        folder_id: FolderId,
        first_page: u32,
        pages: Vec<Vec<FolderRef>>,
    ) -> Result<u64, PeerError> {
        let request = IndexRequest::AddFolderFiles {
            peer_id: session.peer_id,
            folder_id,
            first_page,
            pages,
        };
        match self.call(request).await? {
            IndexResponse::FolderFilesAdded { files } => Ok(files),
            other => Err(PeerError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn remove_folder(&self, session: &Session, folder_id: FolderId) -> Result<(), PeerError> {
        let request = IndexRequest::RemoveFolder {
            peer_id: session.peer_id,
            folder_id,
        };
        match self.call(request).await? {
            IndexResponse::FolderRemoved { .. } => Ok(()),
            other => Err(PeerError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}
