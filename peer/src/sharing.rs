//! Sharing: files and folders hashed (many at once), served, and announced to the index in
//! batches.
//!
//! There is one way in, [`PeerHandle::share_paths`]: a file is hashed and served through the
//! handle it was opened with; a folder is walked and its files hashed side by side
//! ([`p2p_storage::Tree::hash_files`]), then served as one [`SharedFolder`] (no file kept
//! open); what can't be read (a subfolder, a file in a folder, one of several paths) is named
//! in a warning and left out. Only when every path is hashed does anything start being
//! served, and then the index hears of it all at once: `AddFiles` for the files (as many a
//! request as a frame holds), `AddFolder` and `AddFolderFiles` (pages by the request's worth)
//! for each folder. The same
//! batches re-register everything after the index restarts ([`Node::register_everything`]),
//! and a finished download is shared the same way ([`PeerHandle::share_fetched`]), without
//! hashing it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use p2p_protocol::folder::FolderRef;
use p2p_protocol::{ErrorCode, FileId, FileManifest, FolderHead, FolderId, IdPrefix};
use p2p_storage::{OpenSource, SourceFile, Tree};
use tracing::{info, warn};

use crate::download::Fetched;
use crate::downloads::PeerChange;
use crate::error::PeerError;
use crate::index::{IndexClient, IndexLink, Session};
use crate::node::{Node, PeerHandle};
use crate::shared_files::SharedFileInfo;
use crate::shared_folders::{SharedFolder, SharedFolderError};

/// Most bytes of folder pages in one `AddFolderFiles` request (estimated; the control frame
/// limit is 2 MiB). A page of 1,024 files with 50-byte paths takes about 120 KB, so a
/// 100,000-file folder goes in about 8 requests.
const FOLDER_REFS_PER_CALL: usize = 1536 * 1024;

/// What sharing one path gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shared {
    /// A file, shared on its own.
    File {
        /// The path as given.
        path: PathBuf,
        /// Its manifest.
        manifest: FileManifest,
    },
    /// A folder, shared as a whole.
    Folder {
        /// The path as given.
        path: PathBuf,
        /// Its id.
        folder_id: FolderId,
        /// Its head (name, totals, page hashes).
        head: FolderHead,
        /// Its files in record order: path under the folder (parts joined by `/`) and
        /// manifest.
        files: Vec<(String, FileManifest)>,
    },
}

impl Shared {
    /// The line for `folder`, shared under `path` (as the user gave it).
    pub(crate) fn folder(path: PathBuf, folder: &SharedFolder) -> Self {
        Shared::Folder {
            path,
            folder_id: folder.id(),
            head: folder.head().clone(),
            files: folder
                .files()
                .map(|(p, m)| (p.to_owned(), m.clone()))
                .collect(),
        }
    }
}

/// What sharing is about to start: hashed, not served yet.
enum Prepared {
    File(PathBuf, SourceFile),
    Folder(Arc<SharedFolder>),
}

impl PeerHandle {
    /// Shares every path in `paths`: a file on its own, a folder as a whole (walked through a
    /// handle on it: links and FIFOs in it are skipped, nothing outside it is shared). What
    /// can't be read is named in a warning and left out, the rest shared: a subfolder that
    /// can't be listed, a file in a folder that can't be read, and one of several paths that
    /// can't be (a folder whose own listing fails, a file that can't be opened). Everything
    /// is hashed first; when no path could be, that is the error (the first one's) and
    /// nothing new is served. Then the index hears of it in batches.
    pub async fn share_paths(&self, paths: &[PathBuf]) -> Result<Vec<Shared>, PeerError> {
        let mut prepared = Vec::with_capacity(paths.len());
        let mut failed = Vec::new();
        for path in paths {
            match prepare(path).await {
                Ok(item) => prepared.push(item),
                Err(err) => failed.push(err),
            }
        }
        if prepared.is_empty() && !failed.is_empty() {
            return Err(failed.swap_remove(0));
        }
        for err in &failed {
            warn!("{err}; sharing the other paths without it");
        }
        let mut shared = Vec::with_capacity(prepared.len());
        let mut manifests = Vec::new();
        let mut folders = Vec::new();
        for item in prepared {
            match item {
                Prepared::File(path, source) => {
                    let manifest = source.manifest().clone();
                    self.serve_file(source);
                    manifests.push(manifest.clone());
                    shared.push(Shared::File { path, manifest });
                }
                Prepared::Folder(folder) => {
                    self.serve_folder(folder.clone());
                    shared.push(Shared::folder(folder.shown().to_owned(), &folder));
                    folders.push(folder);
                }
            }
        }
        let (manifests, folders) = (&manifests, &folders);
        self.node
            .indexes
            .tell("the shared files", |link, session| async move {
                add_files(&link.client, &session, manifests.clone()).await?;
                for folder in folders {
                    add_folder(&link.client, &session, folder).await?;
                }
                Ok(())
            })
            .await?;
        Ok(shared)
    }

    /// Shares a file, or a folder as a whole; returns its line in [`PeerHandle::files`].
    pub async fn share_path(&self, path: &Path) -> Result<Vec<SharedFileInfo>, PeerError> {
        let shared = self.share_paths(&[path.to_owned()]).await?;
        Ok(shared
            .into_iter()
            .map(|s| match s {
                Shared::File { path, manifest } => SharedFileInfo {
                    file_id: manifest.id(),
                    name: manifest.name,
                    size: manifest.size,
                    path,
                    files: None,
                },
                Shared::Folder {
                    path,
                    folder_id,
                    head,
                    ..
                } => SharedFileInfo {
                    file_id: FileId(folder_id.0),
                    name: head.name,
                    size: head.size,
                    path,
                    files: Some(head.files),
                },
            })
            .collect())
    }

    /// Hashes the file at `path`, starts serving it and announces it to the index. Returns
    /// its id.
    pub async fn register(&self, path: &Path) -> Result<FileId, PeerError> {
        Ok(self.register_manifest(path).await?.id())
    }

    /// Like [`PeerHandle::register`], returning the whole manifest. The file is opened once
    /// (a FIFO, device or folder is refused, never waited on) and hashed and served through
    /// that one handle.
    pub async fn register_manifest(&self, path: &Path) -> Result<FileManifest, PeerError> {
        let owned = path.to_owned();
        let source =
            tokio::task::spawn_blocking(move || SourceFile::hash(OpenSource::open(&owned)?))
                .await
                .map_err(|e| PeerError::Internal(e.to_string()))??;
        let manifest = source.manifest().clone();
        self.share_source(source).await?;
        Ok(manifest)
    }

    /// Starts serving an already-hashed file and announces it.
    pub async fn share_source(&self, source: SourceFile) -> Result<FileId, PeerError> {
        let manifest = source.manifest().clone();
        let file_id = manifest.id();
        self.serve_file(source);
        let manifest = &manifest;
        self.node
            .indexes
            .tell("the shared file", |link, session| async move {
                link.client.add_file(&session, manifest.clone()).await?;
                Ok(())
            })
            .await?;
        info!(file = %file_id.fmt_short(), "sharing file");
        Ok(file_id)
    }

    /// Shares what a download job put on disk, without hashing it again: a file through the
    /// handle it was written with, a folder as a whole (its files found beneath it, each
    /// checked to be the size its manifest says, and served as any shared folder is). A
    /// failure is logged: the download itself succeeded.
    pub(crate) async fn share_fetched(&self, fetched: Fetched) {
        match fetched {
            Fetched::File(source) => {
                if let Err(err) = self.share_source(source).await {
                    warn!(%err, "downloaded file could not be announced to the index");
                }
            }
            Fetched::Folder { root, head, files } => {
                let built =
                    tokio::task::spawn_blocking(move || fetched_folder(&root, &head, files)).await;
                let folder = match built {
                    Ok(Ok(folder)) => Arc::new(folder),
                    Ok(Err(err)) => return warn!(%err, "downloaded folder can't be shared"),
                    Err(err) => return warn!(%err, "downloaded folder can't be shared"),
                };
                self.serve_folder(folder.clone());
                info!(folder = %folder.id().fmt_short(), files = folder.head().files, "sharing downloaded folder");
                let folder = &folder;
                let announced = self
                    .node
                    .indexes
                    .tell("the downloaded folder", |link, session| async move {
                        add_folder(&link.client, &session, folder).await
                    })
                    .await;
                if let Err(err) = announced {
                    warn!(%err, "downloaded folder could not be announced to the index");
                }
            }
        }
    }

    /// Stops sharing a file or folder given by full id or unique prefix among this peer's
    /// shares ([`PeerHandle::files`]).
    pub async fn unshare(&self, id: &str) -> Result<FileId, PeerError> {
        let prefix: IdPrefix = id.parse()?;
        let matching: Vec<SharedFileInfo> = self
            .files()
            .into_iter()
            .filter(|f| prefix.matches(&f.file_id))
            .collect();
        let gone = match matching.as_slice() {
            [one] => one.clone(),
            [] => return Err(PeerError::NotSharedPrefix(prefix.to_string())),
            _ => {
                return Err(PeerError::AmbiguousPrefix {
                    prefix: prefix.to_string(),
                    count: matching.len(),
                    what: "shared files",
                });
            }
        };
        let file_id = gone.file_id;
        if gone.files.is_some() {
            let folder_id = FolderId(file_id.0);
            if self.node.files.remove_folder(&folder_id).is_some() {
                self.node
                    .downloads
                    .announce(PeerChange::FileUnshared(file_id));
            }
            self.node
                .indexes
                .tell("the unshare", |link, session| async move {
                    remove_folder(&link.client, &session, folder_id).await
                })
                .await
                .or_else(offline_is_fine)?;
            return Ok(file_id);
        }
        if self.node.files.remove(&file_id) {
            self.node
                .downloads
                .announce(PeerChange::FileUnshared(file_id));
        }
        self.node
            .indexes
            .tell("the unshare", |link, session| async move {
                link.client.remove_file(&session, file_id).await
            })
            .await
            .or_else(offline_is_fine)?;
        Ok(file_id)
    }

    /// Serves a folder in place of `old` (a shared folder that changed on disk): the new
    /// record is served and announced first, then the old one withdrawn.
    pub(crate) async fn replace_folder(
        &self,
        old: Option<FolderId>,
        folder: Arc<SharedFolder>,
    ) -> Result<(), PeerError> {
        self.serve_folder(folder.clone());
        let old = old.filter(|id| *id != folder.id());
        if let Some(old) = old
            && self.node.files.retire_folder(&old).is_some()
        {
            self.node
                .downloads
                .announce(PeerChange::FileUnshared(FileId(old.0)));
        }
        let folder = &folder;
        self.node
            .indexes
            .tell("the changed folder", |link, session| async move {
                add_folder(&link.client, &session, folder).await?;
                if let Some(old) = old {
                    remove_folder(&link.client, &session, old).await?;
                }
                Ok(())
            })
            .await
            .or_else(offline_is_fine)
    }

    fn serve_file(&self, source: SourceFile) {
        let file_id = source.manifest().id();
        self.node.files.insert(file_id, Arc::new(source));
        self.node
            .downloads
            .announce(PeerChange::FileShared(file_id));
    }

    pub(crate) fn serve_folder(&self, folder: Arc<SharedFolder>) {
        let id = folder.id();
        self.node.files.insert_folder(folder);
        self.node
            .downloads
            .announce(PeerChange::FileShared(FileId(id.0)));
    }
}

impl Node {
    /// Registers afresh with the index of `link` and re-adds every shared file and folder,
    /// in batches.
    pub async fn register_everything(&self, link: &IndexLink) -> Result<Session, PeerError> {
        let index = &link.client;
        let session = index.register(self.advertised_addr()).await?;
        // The registration stands even if some file is refused (a cap, say): keep it, or the
        // next heartbeat would register yet another peer.
        link.registered(session.clone());
        let manifests = self.files.manifests();
        for batch in manifests.chunks(p2p_protocol::MAX_FILES_PER_ADD) {
            match add_files(index, &session, batch.to_vec()).await {
                Ok(()) => {}
                // A batch is taken whole or not at all: find the files refused, keep the rest.
                Err(PeerError::IndexRefused { .. }) => {
                    for manifest in batch {
                        match index.add_file(&session, manifest.clone()).await {
                            Ok(_) => {}
                            Err(err @ PeerError::IndexRefused { .. }) => {
                                warn!(%err, file = %manifest.name, "the index refused a shared file");
                            }
                            Err(err) => return Err(err),
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        for folder in self.files.folders() {
            match add_folder(index, &session, &folder).await {
                Ok(()) => {}
                Err(err @ PeerError::IndexRefused { .. }) => {
                    warn!(%err, folder = %folder.head().name, "the index refused a shared folder");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(session)
    }

    /// Withdraws files that changed on disk from every index that has us registered.
    pub async fn withdraw_pending(&self) {
        for file_id in self.files.take_withdrawn() {
            self.downloads.announce(PeerChange::FileUnshared(file_id));
            let withdrawn = self
                .indexes
                .tell("the withdrawal", |link, session| async move {
                    link.client.remove_file(&session, file_id).await
                })
                .await;
            if let Err(err) = withdrawn {
                warn!(%err, file = %file_id.fmt_short(), "cannot withdraw changed file from the index");
            }
        }
    }
}

/// Hashes what `path` names, off the reactor: a file, or a folder's every file. Errors name
/// the path given, or the file inside the folder that failed.
async fn prepare(path: &Path) -> Result<Prepared, PeerError> {
    let shown = path.to_owned();
    let is_dir = tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir());
    tokio::task::spawn_blocking(move || {
        let failed = |at: &Path, cause: PeerError| PeerError::Share {
            path: at.to_owned(),
            cause: Box::new(cause),
        };
        if !is_dir {
            let source = OpenSource::open(&shown)
                .and_then(SourceFile::hash)
                .map_err(|e| failed(&shown, e.into()))?;
            return Ok(Prepared::File(shown, source));
        }
        let tree = Arc::new(Tree::open(&shown).map_err(|e| failed(&shown, e.into()))?);
        // Before anything is walked or hashed: `/` has no name to share it under.
        p2p_storage::path::folder_name(&tree).map_err(|e| failed(&shown, e.into()))?;
        let walked = tree.walk();
        // A subfolder this user can't list is left out, by name; the rest is shared. The
        // folder itself unlisted is an error: there would be nothing to share.
        for (rel, why) in &walked.unlisted {
            if rel.as_os_str().is_empty() {
                return Err(PeerError::IncompleteFolder(shown));
            }
            warn!(
                "cannot list {} ({why}); sharing the rest of {} without it",
                shown.join(rel).display(),
                shown.display()
            );
        }
        // So is a file it can't read (or that changes while it is read).
        let mut files = Vec::with_capacity(walked.files.len());
        for hashed in tree.hash_files(walked.files) {
            match hashed {
                Ok(file) => files.push(file),
                Err(err) => warn!("{err}; sharing the rest of {} without it", shown.display()),
            }
        }
        let folder =
            SharedFolder::new(tree, shown.clone(), files).map_err(|e| failed(&shown, e.into()))?;
        Ok(Prepared::Folder(Arc::new(folder)))
    })
    .await
    .map_err(|e| PeerError::Internal(e.to_string()))?
}

/// A folder a download just finished, as a [`SharedFolder`]: its files found beneath `root`
/// (never through a link), each the size its manifest says, and together the record `head`.
fn fetched_folder(
    root: &Path,
    head: &FolderHead,
    files: Vec<(String, FileManifest)>,
) -> Result<SharedFolder, PeerError> {
    let tree = Arc::new(Tree::open(root)?);
    let found = files
        .into_iter()
        .map(|(path, manifest)| {
            let file = tree.file_at(Path::new(&path))?;
            if file.size != manifest.size {
                return Err(p2p_storage::StorageError::FileChanged(tree.path_of(&file)).into());
            }
            Ok((file, manifest))
        })
        .collect::<Result<Vec<_>, PeerError>>()?;
    let folder = SharedFolder::new(tree, root.to_owned(), found)?;
    if folder.head() != head {
        return Err(PeerError::Internal(format!(
            "the downloaded folder at {} no longer matches its record",
            root.display()
        )));
    }
    Ok(folder)
}

impl From<SharedFolderError> for PeerError {
    fn from(err: SharedFolderError) -> Self {
        match err {
            SharedFolderError::Record(e) => PeerError::Folder(e),
            SharedFolderError::Name(e) => PeerError::Storage(e),
            SharedFolderError::NotUtf8(path) => {
                PeerError::Internal(format!("{} is not a UTF-8 path", path.display()))
            }
        }
    }
}

/// An unshare (or a changed folder) while no index has us registered is no error: when an
/// index registers us again it hears only of what is shared then.
fn offline_is_fine(err: PeerError) -> Result<(), PeerError> {
    match err {
        PeerError::IndexRefused {
            code: ErrorCode::UnknownPeer,
            ..
        } => Ok(()),
        err => Err(err),
    }
}

/// Announces `manifests` (the client sends them in as few requests as fit).
async fn add_files(
    index: &IndexClient,
    session: &Session,
    manifests: Vec<FileManifest>,
) -> Result<(), PeerError> {
    if !manifests.is_empty() {
        index.add_files(session, manifests).await?;
    }
    Ok(())
}

/// Announces a folder: its head, then its pages, as many as fit in a request at a time.
async fn add_folder(
    index: &IndexClient,
    session: &Session,
    folder: &Arc<SharedFolder>,
) -> Result<(), PeerError> {
    // The client checks the id the index computed against the head.
    let id = index.add_folder(session, folder.head().clone()).await?;
    let mut first = 0;
    loop {
        // Each file's id is a hash: off the reactor.
        let from = folder.clone();
        let pages = tokio::task::spawn_blocking(move || refs_batch(&from, first))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))?;
        if pages.is_empty() {
            return Ok(());
        }
        let next = first + pages.len() as u32;
        index.add_folder_files(session, id, first, &pages).await?;
        first = next;
    }
}

/// Pages of `folder` from `first` on, as many as one `AddFolderFiles` request carries (at
/// least one, unless past the end).
fn refs_batch(folder: &SharedFolder, first: u32) -> Vec<Vec<FolderRef>> {
    let mut pages = Vec::new();
    let mut bytes = 0;
    let mut page = first;
    while let Some(refs) = folder.refs(page) {
        let len: usize = refs.iter().map(|r| 64 + r.path.len()).sum();
        if !pages.is_empty() && bytes + len > FOLDER_REFS_PER_CALL {
            break;
        }
        bytes += len;
        pages.push(refs);
        page += 1;
    }
    pages
}

async fn remove_folder(
    index: &IndexClient,
    session: &Session,
    folder_id: FolderId,
) -> Result<(), PeerError> {
    index.remove_folder(session, folder_id).await
}
