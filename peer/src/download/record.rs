//! A folder's file list as a download reads it: pages fetched from its hosts (a few ahead)
//! and checked against the folder id, or a `.p2pm` folder's list in memory.
//!
//! From hosts, one task reads the record page by page (`GetFolderPages`, one page per
//! request) and checks each against the head the user's id certifies
//! ([`PageChecker`]): the page's hash, its paths (safe, sorted, no duplicate, no file that is
//! also a folder), its files' ids. A big file's page entry carries only its id; its manifest
//! comes from `GetManifest` on the same connection and must hash to that id. A host that fails
//! is left for the next one, which carries on from the page due: pages already checked stay
//! checked. The hosts are gone over in rounds, with a growing pause between rounds
//! ([`RETRY_FIRST`] to [`RETRY_MAX`]): a host that was busy, timed out, could not be reached
//! or failed on its side is asked again in the next round; one that refused the folder
//! (`unknown_file`, `forbidden`) or lied (sent anything that does not check out) is not asked
//! again in this job. While another host is left, a host that takes over [`SLOW_REPLY`] to
//! answer one request is left for it. Verified files wait in a channel of one page, so at most
//! two pages are held ahead of the job whatever the folder's size. When no host is left to ask,
//! or no page or manifest came for the job's stall timeout, the job hears one error naming the
//! folder and the last host's reason.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use p2p_protocol::folder::{CheckedItem, FolderItem, PageChecker, compare_paths};
use p2p_protocol::{
    ErrorCode, FileManifest, FolderHead, FolderId, PeerConversation, PeerRequest, PeerResponse,
};
use p2p_transport::{ClientConnection, Tls};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info_span, warn};

use super::HostSpec;
use crate::error::PeerError;

/// Files a batch of a record held in memory holds (a page's worth).
const BATCH_FILES: usize = p2p_protocol::folder::FOLDER_PAGE_FILES;

/// The pause after the first round of hosts that all failed for now; doubled after each such
/// round up to [`RETRY_MAX`], and back to this once a page or manifest comes.
const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest pause between two rounds of hosts.
const RETRY_MAX: Duration = Duration::from_secs(4);

/// While another host can be asked, the longest one host may take to answer one request (a
/// page of the record is at most about 1.7 MB: even this is under 200 KB/s). With no other
/// host, it has the request timeout.
const SLOW_REPLY: Duration = Duration::from_secs(10);

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
    /// Without a page or manifest from any host this long, the record is given up on (the
    /// job's stall timeout).
    pub stall: Duration,
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
    /// Pages and manifests received and checked, from any host.
    received: u64,
}

/// Why one host could not go on.
struct HostFailure {
    /// What the user reads after "cannot get the file list".
    reason: String,
    /// Whether to ask it again.
    fault: Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Busy, slow, unreachable, or failed on its side: ask it again in the next round.
    Transient,
    /// It does not share the folder (any more) or won't give it to us: not asked again.
    Refused,
    /// It sent something that is not the folder's: not asked again.
    Lied,
}

impl HostFailure {
    fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            fault: Fault::Transient,
        }
    }

    fn lied(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            fault: Fault::Lied,
        }
    }

    /// An error reply to `what`: `busy` and `internal` pass; any other means this host won't
    /// serve it, `file_unavailable` included (the host replaced that folder by a new id, or the
    /// big file changed on its disk: asking it again will not help, §13.6, §8.1).
    fn refusal(what: &str, code: ErrorCode, message: &str) -> Self {
        let fault = match code {
            ErrorCode::Busy | ErrorCode::Internal => Fault::Transient,
            _ => Fault::Refused,
        };
        Self {
            reason: format!(
                "refused {what}: {code}: {}",
                p2p_protocol::printable(message)
            ),
            fault,
        }
    }
}

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
            received: 0,
        };
        let mut last = String::from("no host to ask");
        // Hosts still worth asking, in the order given.
        let mut askable: Vec<&HostSpec> = self.hosts.iter().collect();
        let mut progressed = Instant::now();
        let mut pause = RETRY_FIRST;
        loop {
            let mut i = 0;
            while i < askable.len() {
                let host = askable[i];
                let before = progress.received;
                let others = askable.len() > 1;
                let failure = match self.read_from(host, &mut progress, others).await {
                    Ok(true) => {
                        if let Err(err) = progress.checker.finish() {
                            let _ = self.tx.send(Err(failed(err.to_string()))).await;
                        }
                        return;
                    }
                    // Nobody reads any more: the job ended.
                    Ok(false) => return,
                    Err(failure) => failure,
                };
                if progress.received > before {
                    progressed = Instant::now();
                    pause = RETRY_FIRST;
                }
                let reason = failure.reason;
                last = format!("{}: {reason}", host.addr);
                if failure.fault == Fault::Transient {
                    debug!(host = %host.addr, %reason, "folder record: host failed for now; trying the next");
                    i += 1;
                } else {
                    warn!(host = %host.addr, %reason, "folder record refused from this host; not asking it again");
                    askable.remove(i);
                }
            }
            let left = self.timeouts.stall.saturating_sub(progressed.elapsed());
            if askable.is_empty() || left.is_zero() {
                let _ = self.tx.send(Err(failed(last))).await;
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(pause.min(left)) => {}
                () = self.tx.closed() => return,
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Reads the rest of the record from `host`: `Ok(true)` at its end, `Ok(false)` when the
    /// job stopped reading, or why this host can't go on. With `others` (another host can be
    /// asked), a request it takes over [`SLOW_REPLY`] to answer leaves it for the next.
    async fn read_from(
        &self,
        host: &HostSpec,
        progress: &mut Progress,
        others: bool,
    ) -> Result<bool, HostFailure> {
        let addr = host.addr;
        let timeout = if others {
            self.timeouts.request.min(SLOW_REPLY)
        } else {
            self.timeouts.request
        };
        let (mut conn, _) = p2p_transport::connect::<PeerConversation>(
            &self.tls,
            addr,
            host.node_id,
            self.timeouts.connect,
        )
        .await
        .map_err(|e| HostFailure::transient(format!("cannot connect: {e}")))?;
        loop {
            while let Some(item) = progress.waiting.front() {
                let manifest = self.manifest(&mut conn, item, timeout).await?;
                progress.received += 1;
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
            let items = self.page(&mut conn, addr, page, timeout).await?;
            let checked = progress.checker.check(page, &items).map_err(|e| {
                HostFailure::lied(format!(
                    "sent a folder page that does not match the folder's record: {e}"
                ))
            })?;
            progress.received += 1;
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
        timeout: Duration,
    ) -> Result<Vec<FolderItem>, HostFailure> {
        let request = PeerRequest::GetFolderPages {
            folder_id: self.folder_id,
            first: page,
            count: 1,
        };
        match conn.request(&request, timeout).await {
            Ok(PeerResponse::FolderPages {
                folder_id,
                first,
                mut pages,
            }) if folder_id == self.folder_id && first == page && !pages.is_empty() => {
                debug!(%addr, page, "folder page received");
                Ok(pages.swap_remove(0))
            }
            Ok(PeerResponse::FolderPages { .. }) => Err(HostFailure::lied(format!(
                "answered the request for page {page} with another folder's or page's pages, or none"
            ))),
            Ok(PeerResponse::Error { code, message }) => Err(HostFailure::refusal(
                &format!("page {page}"),
                code,
                &message,
            )),
            Ok(_) => Err(HostFailure::lied(format!(
                "answered the request for page {page} with another reply"
            ))),
            Err(e) => Err(HostFailure::transient(e.to_string())),
        }
    }

    /// The manifest of a big file of the record, which must hash to the id its page gave.
    async fn manifest(
        &self,
        conn: &mut ClientConnection<PeerConversation>,
        item: &CheckedItem,
        timeout: Duration,
    ) -> Result<FileManifest, HostFailure> {
        let request = PeerRequest::GetManifest {
            file_id: item.file_id,
        };
        let path = p2p_protocol::printable(&item.path);
        match conn.request(&request, timeout).await {
            Ok(PeerResponse::Manifest { manifest, .. }) => {
                let name = item.path.rsplit('/').next().unwrap_or(&item.path);
                if manifest.id() != item.file_id
                    || manifest.validate().is_err()
                    || manifest.size != item.size
                    || manifest.name != name
                {
                    return Err(HostFailure::lied(format!(
                        "sent a manifest for {path} that does not match the folder's record"
                    )));
                }
                Ok(manifest)
            }
            Ok(PeerResponse::Error { code, message }) => Err(HostFailure::refusal(
                &format!("the manifest of {path}"),
                code,
                &message,
            )),
            Ok(_) => Err(HostFailure::lied(format!(
                "answered the request for the manifest of {path} with another reply"
            ))),
            Err(e) => Err(HostFailure::transient(e.to_string())),
        }
    }
}

/// A record path's parts.
fn split(path: &str) -> Vec<String> {
    path.split('/').map(str::to_owned).collect()
}
