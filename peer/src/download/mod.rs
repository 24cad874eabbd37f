//! Downloading one file: check the manifest, prepare `<out>/<name>.part`, let the worker pool
//! pull chunks from every host at once, verify each one, then give the file its name.

mod hosts;
mod worker_pool;

pub(crate) use hosts::HostSpec;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_protocol::{FileId, PeerId};
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
    /// The file is complete, verified and under its final name.
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
