//! Downloading one file: check the manifest, prepare `<out>/<name>.part`, let the worker pool
//! pull chunks from every host at once, verify each one, then give the file its name.

mod hosts;
pub(crate) mod record;
pub(crate) mod resolve;
mod worker_pool;

pub(crate) use hosts::HostSpec;
#[allow(unused_imports)] // SKELETON (issue 14): used by resolve.rs (engineer D)
pub(crate) use record::{FolderFile, FolderRecord};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_protocol::{FileId, FileManifest, FolderHead, FolderId, PeerId};
use p2p_storage::path::output_path;
use p2p_storage::{PartFile, StorageError};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::PeerConfig;
use crate::error::PeerError;
use hosts::Host;
use worker_pool::Pool;
pub(crate) use worker_pool::Refresh;

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
    /// This peer, never a host of its own downloads.
    pub me: Option<PeerId>,
}

/// A file to download and who hosts it.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub file_id: FileId,
    pub manifest: p2p_protocol::FileManifest,
    pub hosts: Vec<HostSpec>,
}

impl DownloadOptions {
    /// Whether `host` is this peer itself (by registration, or by node id), which never
    /// serves its own downloads.
    pub fn is_me(&self, host: &HostSpec) -> bool {
        Some(host.peer_id) == self.me || host.node_id == Some(self.tls.node_id())
    }

    pub fn new(c: &PeerConfig, tls: p2p_transport::Tls) -> Self {
        Self {
            tls,
            workers: c.workers,
            connect_timeout: c.connect_timeout,
            request_timeout: c.request_timeout,
            max_host_failures: c.max_host_failures,
            stall_timeout: c.stall_timeout,
            me: None,
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
#[allow(dead_code)] // SKELETON (issue 14): the job runner (engineer E) calls it
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

/// Runs one download job: every file of `source` into `out`, through one pool of requests
/// and one set of connections per host.
///
/// SKELETON (issue 14): engineer C replaces this with the engine; today a single file goes
/// through the old pool and a folder is refused.
#[allow(dead_code)]
pub(crate) async fn run(
    source: JobSource,
    out: &Path,
    options: DownloadOptions,
    events: EventSink,
    refresh: Option<Refresh>,
    cancel: CancellationToken,
) -> Result<JobReport, PeerError> {
    let JobSource::File {
        file_id,
        manifest,
        hosts,
    } = source
    else {
        return Err(PeerError::Internal(
            "folder downloads are not built yet".into(),
        ));
    };
    let size = manifest.size;
    let wanted = Wanted {
        file_id,
        manifest,
        hosts,
    };
    let (report, source) = download(wanted, out, &[], options, events, refresh, cancel).await?;
    Ok(JobReport {
        path: report.path,
        files: 1,
        fetched: 1,
        already_there: 0,
        conflicts: Vec::new(),
        conflicts_total: 0,
        failed: Vec::new(),
        failed_total: 0,
        bytes_fetched: size,
        bytes_resumed: 0,
        size,
        elapsed: report.elapsed,
        per_host: report.per_host,
        shared: source.ok().map(Fetched::File),
    })
}

/// Downloads the file `lookup` describes into `out_dir`, from its hosts other than `me`.
/// Returns what it produced and the finished file ready to serve (or why it can't be).
pub(crate) async fn download(
    wanted: Wanted,
    out_dir: &Path,
    subdir: &[String],
    options: DownloadOptions,
    events: EventSink,
    refresh: Option<Refresh>,
    cancel: CancellationToken,
) -> Result<
    (
        DownloadReport,
        Result<p2p_storage::SourceFile, p2p_storage::StorageError>,
    ),
    PeerError,
> {
    let started = Instant::now();
    let Wanted {
        file_id,
        manifest,
        hosts,
    } = wanted;
    let name = manifest.name.clone();
    let size = manifest.size;
    let chunks = manifest.chunks.len();
    let hosts: Vec<Host> = hosts
        .into_iter()
        .filter(|h| !options.is_me(h))
        .map(Host::new)
        .collect();

    if hosts.is_empty() && chunks > 0 {
        // Say "already exists" before "no hosts": that is the one the user can act on now.
        let mut folder = out_dir.to_owned();
        folder.extend(subdir);
        let target = output_path(&folder, &name)?;
        if target.symlink_metadata().is_ok() {
            return Err(StorageError::AlreadyExists(target).into());
        }
        return Err(PeerError::NoHosts { name, id: file_id });
    }
    let out = out_dir.to_owned();
    let subdir = subdir.to_vec();
    // Open (or pick up) the part file and re-verify what an earlier run recorded.
    let (part, resumed) = tokio::task::spawn_blocking(move || {
        let part = PartFile::create_in(&out, &subdir, manifest)?;
        let resumed = part.resume();
        Ok::<_, StorageError>((part, resumed))
    })
    .await
    .map_err(|e| PeerError::Internal(e.to_string()))??;
    let resumed_bytes: u64 = resumed
        .iter()
        .map(|i| part.manifest().chunk_len(*i).unwrap_or(0) as u64)
        .sum();
    events.send(DownloadEvent::Started {
        file_id,
        name: name.clone(),
        size,
        chunks,
        hosts: hosts.len(),
        resumed: resumed_bytes,
    });
    if resumed.is_empty() {
        info!(file = %file_id.fmt_short(), %name, size, chunks, hosts = hosts.len(), "download started");
    } else {
        info!(file = %file_id.fmt_short(), %name, size, chunks, resumed = resumed.len(), "download resumed");
    }

    let part = Arc::new(part);
    let pool = Arc::new(Pool::new(
        file_id,
        part.clone(),
        hosts,
        options,
        events.clone(),
        refresh,
    ));
    let outcome = pool
        .clone()
        .run(cancel)
        .instrument(info_span!("download", file = %file_id.fmt_short()))
        .await;
    if let Err(err) = outcome {
        // Keep what was verified for the next run.
        let saver = part.clone();
        if let Ok(Err(save)) = tokio::task::spawn_blocking(move || saver.save_record()).await {
            warn!(%save, "cannot save the record of verified chunks");
        }
        return Err(err);
    }
    let per_host = pool.per_host();
    drop(pool);
    events.send(DownloadEvent::Flushing);
    info!(file = %file_id.fmt_short(), elapsed = ?started.elapsed(), "all chunks verified and written; flushing to disk");
    // The finished file is served through the handle it was written with, not reopened by a
    // name someone could have swapped for a link in the meantime.
    let (path, source) = tokio::task::spawn_blocking(move || {
        let path = part.finish()?;
        Ok::<_, p2p_storage::StorageError>((path, part.into_source()))
    })
    .await
    .map_err(|e| PeerError::Internal(e.to_string()))??;
    let elapsed = started.elapsed();
    events.send(DownloadEvent::Finished {
        path: path.clone(),
        bytes: size,
        elapsed,
    });
    info!(file = %file_id.fmt_short(), path = %path.display(), ?elapsed, "download finished");
    let report = DownloadReport {
        file_id,
        path,
        bytes: size,
        elapsed,
        per_host,
    };
    Ok((report, source))
}
