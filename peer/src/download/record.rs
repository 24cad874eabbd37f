//! A folder's file list as a download reads it: pages fetched from its hosts (a few ahead)
//! and checked against the folder id, or a `.p2pm` folder's list in memory.
//!
//! From hosts, one task reads the record page by page (`GetFolderPages`, one page per
//! request) and checks each against the head the user's id certifies
//! ([`PageChecker`]): the page's hash, its paths (safe, sorted, no duplicate, no file that is
//! also a folder), its files' ids. A big file's page entry carries only its id; its manifest
//! comes from `GetManifest` on the same connection and must hash to that id. A host that sends
//! anything that does not check out, or fails, is left for the next one, which carries on from
//! the page due: pages already checked stay checked. Verified files wait in a channel of one
//! page, so at most two pages are held ahead of the job whatever the folder's size. When every
//! host has failed, the job hears one error naming the folder and the last host's reason.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::folder::{CheckedItem, FolderItem, PageChecker, compare_paths};
use p2p_protocol::{
    FileManifest, FolderHead, FolderId, PeerConversation, PeerRequest, PeerResponse,
};
use p2p_transport::{ClientConnection, Tls};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info_span, warn};

use super::HostSpec;
use crate::error::PeerError;

/// Files a batch of a record held in memory holds (a page's worth).
const BATCH_FILES: usize = p2p_protocol::folder::FOLDER_PAGE_FILES;

/// One verified file of a folder.
#[derive(Clone, Debug)]
pub(crate) struct FolderFile {
    /// Parts of its path under the folder's root; the last one is the manifest's name.
    pub path: Vec<String>,
    /// Its manifest (its id is the one the folder's record certifies).
    pub manifest: FileManifest,
}

/// How long a record's host may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordTimeouts {
    /// To connect (TCP, TLS, `Hello`).
    pub connect: Duration,
    /// To answer one request.
    pub request: Duration,
}

/// Yields a folder's files, verified, in path order.
#[derive(Debug)]
pub(crate) struct FolderRecord {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// A `.p2pm` folder's files, checked when it was read.
    Memory(std::vec::IntoIter<FolderFile>),
    /// Pages read from hosts by a task (stopped when the record is dropped).
    Hosts {
        pages: mpsc::Receiver<Result<Vec<FolderFile>, PeerError>>,
        _task: AbortOnDropHandle<()>,
    },
}

impl FolderRecord {
    /// A folder whose list is in hand (a `.p2pm` folder), already checked by its reader
    /// and made into `head`; yielded in the record's order.
    pub fn from_files(head: &FolderHead, files: Vec<FolderFile>) -> Self {
        debug_assert_eq!(head.files, files.len() as u64, "the head is of these files");
        let mut files = files;
        files.sort_by(|a, b| compare_paths(&a.path.join("/"), &b.path.join("/")));
        Self {
            source: Source::Memory(files.into_iter()),
        }
    }

    /// A folder read from `hosts`, in their order, checked against `folder_id`. The head must
    /// be the folder's (its id is checked again here; a mismatch is the error of the first
    /// [`FolderRecord::next_batch`]).
    pub fn from_hosts(
        folder_id: FolderId,
        head: FolderHead,
        hosts: Vec<HostSpec>,
        tls: Tls,
        timeouts: RecordTimeouts,
    ) -> Self {
        // One page waits in the channel while the task reads the next: two ahead at most.
        let (tx, rx) = mpsc::channel(1);
        let span = info_span!("folder_record", folder = %folder_id.fmt_short());
        let reader = Reader {
            folder_id,
            name: head.name.clone(),
            head,
            hosts,
            tls,
            timeouts,
            tx,
        };
        let task = tokio::spawn(reader.run().instrument(span));
        Self {
            source: Source::Hosts {
                pages: rx,
                _task: AbortOnDropHandle::new(task),
            },
        }
    }

    /// The next files, or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<FolderFile>>, PeerError> {
        match &mut self.source {
            Source::Memory(files) => {
                let batch: Vec<FolderFile> = files.by_ref().take(BATCH_FILES).collect();
                Ok((!batch.is_empty()).then_some(batch))
            }
            Source::Hosts { pages, .. } => pages.recv().await.transpose(),
        }
    }
}

/// Reads a folder's record from its hosts, one after another until one gives all of it.
struct Reader {
    folder_id: FolderId,
    name: String,
    head: FolderHead,
    hosts: Vec<HostSpec>,
    tls: Tls,
    timeouts: RecordTimeouts,
    tx: mpsc::Sender<Result<Vec<FolderFile>, PeerError>>,
}

/// Where reading stands, kept across hosts.
struct Progress {
    checker: PageChecker,
    /// Files of the page in hand whose manifest is known.
    ready: Vec<FolderFile>,
    /// Files of the page in hand still waiting for their manifest (`GetManifest`).
    waiting: VecDeque<CheckedItem>,
}

/// Why one host could not go on: what the user reads after "cannot get the file list".
type HostFailure = String;

impl Reader {
    async fn run(self) {
        let failed = |reason: String| PeerError::NoFolderRecord {
            name: self.name.clone(),
            id: self.folder_id,
            reason,
        };
        let checker = match PageChecker::new(&self.folder_id, &self.head) {
            Ok(checker) => checker,
            Err(err) => {
                let _ = self.tx.send(Err(failed(err.to_string()))).await;
                return;
            }
        };
        let mut progress = Progress {
            checker,
            ready: Vec::new(),
            waiting: VecDeque::new(),
        };
        let mut last = String::from("no host to ask");
        for host in &self.hosts {
            match self.read_from(host, &mut progress).await {
                Ok(true) => {
                    if let Err(err) = progress.checker.finish() {
                        let _ = self.tx.send(Err(failed(err.to_string()))).await;
                    }
                    return;
                }
                // Nobody reads any more: the job ended.
                Ok(false) => return,
                Err(reason) => {
                    warn!(host = %host.addr, %reason, "folder record refused from this host; trying the next");
                    last = format!("{}: {reason}", host.addr);
                }
            }
        }
        let _ = self.tx.send(Err(failed(last))).await;
    }

    /// Reads the rest of the record from `host`: `Ok(true)` at its end, `Ok(false)` when the
    /// job stopped reading, or why this host can't be used.
    async fn read_from(
        &self,
        host: &HostSpec,
        progress: &mut Progress,
    ) -> Result<bool, HostFailure> {
        let addr = host.addr;
        let (mut conn, _) = p2p_transport::connect::<PeerConversation>(
            &self.tls,
            addr,
            host.node_id,
            self.timeouts.connect,
        )
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
        loop {
            while let Some(item) = progress.waiting.front() {
                let manifest = self.manifest(&mut conn, item).await?;
                let item = progress.waiting.pop_front().expect("front was Some");
                progress.ready.push(FolderFile {
                    path: split(&item.path),
                    manifest,
                });
            }
            if !progress.ready.is_empty() {
                let batch = std::mem::take(&mut progress.ready);
                if self.tx.send(Ok(batch)).await.is_err() {
                    return Ok(false);
                }
            }
            let page = progress.checker.next_page();
            if page as usize >= self.head.pages.len() {
                return Ok(true);
            }
            let items = self.page(&mut conn, addr, page).await?;
            let checked = progress.checker.check(page, &items).map_err(|e| {
                format!("sent a folder page that does not match the folder's record: {e}")
            })?;
            for mut item in checked {
                match item.manifest.take() {
                    Some(manifest) => progress.ready.push(FolderFile {
                        path: split(&item.path),
                        manifest,
                    }),
                    None => progress.waiting.push_back(item),
                }
            }
        }
    }

    /// Page `page` of the record, as `conn`'s host sends it (not checked yet).
    async fn page(
        &self,
        conn: &mut ClientConnection<PeerConversation>,
        addr: SocketAddr,
        page: u32,
    ) -> Result<Vec<FolderItem>, HostFailure> {
        let request = PeerRequest::GetFolderPages {
            folder_id: self.folder_id,
            first: page,
            count: 1,
        };
        match conn.request(&request, self.timeouts.request).await {
            Ok(PeerResponse::FolderPages {
                folder_id,
                first,
                mut pages,
            }) if folder_id == self.folder_id && first == page && !pages.is_empty() => {
                debug!(%addr, page, "folder page received");
                Ok(pages.swap_remove(0))
            }
            Ok(PeerResponse::FolderPages { .. }) => Err(format!(
                "answered the request for page {page} with another folder's or page's pages, or none"
            )),
            Ok(PeerResponse::Error { code, message }) => Err(format!(
                "refused page {page}: {code}: {}",
                p2p_protocol::printable(&message)
            )),
            Ok(_) => Err(format!(
                "answered the request for page {page} with another reply"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The manifest of a big file of the record, which must hash to the id its page gave.
    async fn manifest(
        &self,
        conn: &mut ClientConnection<PeerConversation>,
        item: &CheckedItem,
    ) -> Result<FileManifest, HostFailure> {
        let request = PeerRequest::GetManifest {
            file_id: item.file_id,
        };
        let path = p2p_protocol::printable(&item.path);
        match conn.request(&request, self.timeouts.request).await {
            Ok(PeerResponse::Manifest { manifest, .. }) => {
                let name = item.path.rsplit('/').next().unwrap_or(&item.path);
                if manifest.id() != item.file_id
                    || manifest.validate().is_err()
                    || manifest.size != item.size
                    || manifest.name != name
                {
                    return Err(format!(
                        "sent a manifest for {path} that does not match the folder's record"
                    ));
                }
                Ok(manifest)
            }
            Ok(PeerResponse::Error { code, message }) => Err(format!(
                "refused the manifest of {path}: {code}: {}",
                p2p_protocol::printable(&message)
            )),
            Ok(_) => Err(format!(
                "answered the request for the manifest of {path} with another reply"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A record path's parts.
fn split(path: &str) -> Vec<String> {
    path.split('/').map(str::to_owned).collect()
}
