//! Downloading: one job (a file, or a folder of any number of files) runs through one engine
//! with one pool of requests and one set of connections per host.
//!
//! # Layout
//! * `run` (here): the one entry; a job's `JobSource` in, a [`JobReport`] out, its
//!   [`DownloadEvent`]s on the way.
//! * `engine`: the job's task: owns the scheduler, drives the links and the disk tasks.
//! * `schedule`: the pure scheduler (which chunk goes to which host, and when).
//! * `hosts`: the job's hosts as the scheduler sees them, and what a fault does to one.
//! * `links`: the connections to the hosts, with requests pipelined on each.
//! * `buffers`: the pool chunk data is received into.
//! * `disk`: the blocking work: local checks, part files, small-file batches.
//! * `record`: a folder's file list as the job reads it.
//! * `resolve`: what a download request stands for (a file or a folder, and its hosts).

mod buffers;
mod disk;
mod engine;
#[cfg(test)]
mod folder_tests;
mod hosts;
mod links;
pub(crate) mod record;
pub(crate) mod resolve;
mod schedule;
#[cfg(test)]
mod test_support;

pub(crate) use hosts::HostSpec;
#[allow(unused_imports)] // SKELETON (issue 14): used by resolve.rs (engineer D)
pub(crate) use record::{FolderFile, FolderRecord};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use p2p_protocol::{FileId, FileManifest, FolderHead, FolderId};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::config::PeerConfig;
use crate::error::PeerError;

/// Asks the indexes (and the DHT) for the job's current hosts (while every host is gone).
pub(crate) type Refresh = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<HostSpec>, PeerError>> + Send>>
        + Send
        + Sync,
>;

/// Progress of one download, for progress bars and shells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadEvent {
    /// The manifest checked out and the part file is ready.
    Started {
        /// The file.
        file_id: FileId,
        /// Its name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its chunk count.
        chunks: usize,
        /// Hosts that will be asked.
        hosts: usize,
        /// Bytes already verified by an earlier, interrupted run (resumed, not fetched again).
        resumed: u64,
    },
    /// A chunk passed verification and was written.
    ChunkDone {
        /// Chunk index.
        index: u32,
        /// Its length.
        bytes: usize,
        /// Who sent it.
        host: SocketAddr,
    },
    /// A host failed a chunk; `dropped` if it won't be asked again in this download.
    PeerFailed {
        /// The host.
        host: SocketAddr,
        /// What went wrong.
        error: String,
        /// Whether it was dropped.
        dropped: bool,
    },
    /// Every chunk is verified and written; the file is being flushed to disk before it gets
    /// its name.
    Flushing,
    /// A folder job started: its record checked out (a single file sends `Started`).
    JobStarted {
        /// The folder's name.
        name: String,
        /// How many files it holds.
        files: u64,
        /// Their total size.
        size: u64,
        /// Hosts that will be asked.
        hosts: usize,
        /// Bytes already verified by an earlier, interrupted run.
        resumed: u64,
    },
    /// One file of the job is in place: fetched and verified, or found already there
    /// (checked by hash).
    FileDone {
        /// Where it is.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// It was there already, identical; nothing was fetched.
        already_there: bool,
    },
    /// Something else is at one file's target; it was left alone and the file not fetched.
    FileConflict {
        /// The target.
        path: PathBuf,
        /// What is there, in one line.
        reason: String,
    },
    /// One file could not be fetched; the job goes on with the others.
    FileFailed {
        /// The target.
        path: PathBuf,
        /// Why, in one line.
        error: String,
    },
    /// The file (for a folder job: every file) is complete, verified and under its final
    /// name.
    Finished {
        /// Where it is.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// Time from start to finish.
        elapsed: Duration,
    },
}

/// Where events go; sending never blocks and never fails the download.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventSink(Option<UnboundedSender<DownloadEvent>>);

impl EventSink {
    pub fn new(sender: Option<UnboundedSender<DownloadEvent>>) -> Self {
        Self(sender)
    }

    pub fn send(&self, event: DownloadEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

/// The download knobs taken from [`PeerConfig`].
#[derive(Clone, Debug)]
pub(crate) struct DownloadOptions {
    /// How this peer connects to hosts.
    pub tls: p2p_transport::Tls,
    pub workers: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_host_failures: u32,
    pub stall_timeout: Duration,
    /// Hand what was downloaded back to be shared ([`JobReport::shared`]).
    pub share: bool,
}

impl DownloadOptions {
    /// Whether `host` is this peer itself (by node id: peer ids are each index's own, so
    /// another index's peer 3 may be anyone), which never serves its own downloads.
    pub fn is_me(&self, host: &HostSpec) -> bool {
        host.node_id == Some(self.tls.node_id())
    }

    pub fn new(c: &PeerConfig, tls: p2p_transport::Tls) -> Self {
        Self {
            tls,
            workers: c.workers,
            connect_timeout: c.connect_timeout,
            request_timeout: c.request_timeout,
            max_host_failures: c.max_host_failures,
            stall_timeout: c.stall_timeout,
            share: c.share_downloads,
        }
    }
}

/// What a finished download produced.
#[derive(Clone, Debug)]
pub struct DownloadReport {
    /// The file.
    pub file_id: FileId,
    /// Where it is now.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Wall time from start to the verified file on disk.
    pub elapsed: Duration,
    /// Chunks each host delivered.
    pub per_host: Vec<(SocketAddr, u64)>,
}

/// What one download job fetches, and from whom.
#[derive(Debug)]
pub(crate) enum JobSource {
    /// One file, to `<out>/<name>`.
    File {
        file_id: FileId,
        manifest: FileManifest,
        hosts: Vec<HostSpec>,
    },
    /// A folder, to `<out>/<head.name>/<path>`.
    Folder {
        folder_id: FolderId,
        head: FolderHead,
        hosts: Vec<HostSpec>,
        record: FolderRecord,
    },
}

/// Most conflicts and failures a [`JobReport`] lists one by one (the rest are counted).
pub const MAX_REPORTED: usize = 1000;

/// One file of a job that is not in place, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    /// Its target.
    pub path: PathBuf,
    /// Why, in one line.
    pub reason: String,
}

/// What a job produced, whole or not.
#[derive(Debug)]
pub struct JobReport {
    /// The file, or the folder's root.
    pub path: PathBuf,
    /// Files in the job (1 for a single file).
    pub files: u64,
    /// Files fetched (or completed from a `.part`) in this run.
    pub fetched: u64,
    /// Files that were there already, identical.
    pub already_there: u64,
    /// Targets holding something else (at most [`MAX_REPORTED`]).
    pub conflicts: Vec<FileProblem>,
    /// How many conflicts in all.
    pub conflicts_total: u64,
    /// Files that could not be fetched (at most [`MAX_REPORTED`]).
    pub failed: Vec<FileProblem>,
    /// How many failures in all.
    pub failed_total: u64,
    /// Bytes fetched in this run.
    pub bytes_fetched: u64,
    /// Bytes an earlier run had verified (resumed from `.part` files).
    pub bytes_resumed: u64,
    /// Size of the whole job.
    pub size: u64,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// Chunks each host delivered.
    pub per_host: Vec<(SocketAddr, u64)>,
    /// What to share now that it is on disk.
    pub shared: Option<Fetched>,
}

impl JobReport {
    /// Every file of the job is in place.
    pub fn complete(&self) -> bool {
        self.fetched + self.already_there == self.files
    }
}

/// What a job put on disk, handed over for sharing.
#[derive(Debug)]
pub enum Fetched {
    /// One file, served through the handle it was written with.
    File(p2p_storage::SourceFile),
    /// A whole folder (only when every file is there).
    Folder {
        /// Its root.
        root: PathBuf,
        /// Its head.
        head: FolderHead,
        /// Its files: path under the root (parts joined by `/`) and manifest.
        files: Vec<(String, FileManifest)>,
    },
}

/// Runs one download job: every file of `source` into `out` (a file to `<out>/<name>`, a
/// folder's files to `<out>/<head.name>/<path>`), through one pool of requests and one set of
/// connections per host. `Err` only when the job as a whole failed (no host could deliver,
/// the disk failed, cancelled; for a single file, any failure); a folder's files that are in
/// conflict or failed are in the report.
pub(crate) async fn run(
    source: JobSource,
    out: &Path,
    options: DownloadOptions,
    events: EventSink,
    refresh: Option<Refresh>,
    cancel: CancellationToken,
) -> Result<JobReport, PeerError> {
    let (what, hosts, span) = match source {
        JobSource::File {
            file_id,
            manifest,
            hosts,
        } => (
            engine::What::File {
                manifest,
                subdir: Vec::new(),
            },
            hosts,
            info_span!("download", file = %file_id.fmt_short()),
        ),
        JobSource::Folder {
            folder_id,
            head,
            hosts,
            record,
        } => (
            engine::What::Folder { head, record },
            hosts,
            info_span!("download", folder = %folder_id.fmt_short()),
        ),
    };
    let job = engine::Job {
        what,
        hosts,
        out: out.to_owned(),
    };
    engine::run(job, options, events, refresh, cancel)
        .instrument(span)
        .await
}
