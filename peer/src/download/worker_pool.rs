//! The bounded pool that moves chunks: `workers` tasks take chunk indices from one queue, fetch
//! each from the least loaded live host, verify and write it off the reactor, and put failed
//! chunks back for another host.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use p2p_protocol::{ErrorCode, FileId, PeerRequest, PeerResponse, ProtocolError};
use p2p_storage::{PartFile, StorageError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::hosts::{Host, pick};
use super::{DownloadEvent, DownloadOptions, EventSink};
use crate::error::PeerError;

/// A chunk waiting for a host, and the host that last failed it.
type Pending = (u32, Option<usize>);

/// Everything the workers of one download share.
pub(crate) struct Pool {
    pub file_id: FileId,
    pub part: Arc<PartFile>,
    pub hosts: Vec<Host>,
    pub options: DownloadOptions,
    pub events: EventSink,
    queue: Mutex<VecDeque<Pending>>,
    /// Chunks not yet verified and written.
    remaining: AtomicUsize,
    /// Wakes idle workers when a chunk is put back or the last one is done.
    changed: Notify,
    last_error: Mutex<String>,
}

/// Why one chunk fetch failed.
enum FetchError {
    /// The host's fault (network, bad data, refusal); `fatal` drops the host at once.
    Host { reason: String, fatal: bool },
    /// Our own disk failed: no other host can help.
    Local(StorageError),
}

impl Pool {
    pub fn new(
        file_id: FileId,
        part: Arc<PartFile>,
        hosts: Vec<Host>,
        options: DownloadOptions,
        events: EventSink,
    ) -> Self {
        let chunks = part.manifest().chunks.len();
        Self {
            file_id,
            part,
            hosts,
            options,
            events,
            queue: Mutex::new((0..chunks as u32).map(|i| (i, None)).collect()),
            remaining: AtomicUsize::new(chunks),
            changed: Notify::new(),
            last_error: Mutex::new(String::new()),
        }
    }

    /// Chunks verified and written so far.
    pub fn done(&self) -> usize {
        self.part.manifest().chunks.len() - self.remaining.load(Ordering::Acquire)
    }

    /// The most recent failure, for the final error message.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn all_hosts_failed(&self) -> PeerError {
        let manifest = self.part.manifest();
        PeerError::DownloadFailed {
            name: manifest.name.clone(),
            done: self.done(),
            total: manifest.chunks.len(),
            reason: format!("every host failed (last: {})", self.last_error()),
        }
    }

    /// Runs the workers until every chunk is written, all hosts failed, or `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), PeerError> {
        let workers = self
            .options
            .workers
            .max(1)
            .min(self.part.manifest().chunks.len().max(1));
        let stop = cancel.child_token();
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let pool = self.clone();
            let stop = stop.clone();
            set.spawn(async move { pool.worker(stop).await });
        }
        let mut result = Ok(());
        while let Some(joined) = set.join_next().await {
            let outcome = joined.unwrap_or_else(|e| {
                Err(PeerError::Internal(format!("download worker failed: {e}")))
            });
            if let Err(err) = outcome {
                // The first failure stops the others; keep it, not their "cancelled".
                stop.cancel();
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        if result.is_err() && cancel.is_cancelled() {
            return Err(PeerError::Cancelled);
        }
        result
    }

    async fn worker(&self, stop: CancellationToken) -> Result<(), PeerError> {
        loop {
            // Register for wake-ups before looking at the queue, so a chunk put back between
            // the look and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            if self.remaining.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some((index, avoid)) = next else {
                // Others hold the last chunks; one may come back if its host fails.
                tokio::select! {
                    _ = stop.cancelled() => return Err(PeerError::Cancelled),
                    _ = &mut changed => continue,
                }
            };
            let Some(h) = pick(&self.hosts, index, avoid) else {
                self.requeue(index, avoid);
                return Err(self.all_hosts_failed());
            };
            let host = &self.hosts[h];
            let fetched = tokio::select! {
                _ = stop.cancelled() => {
                    self.requeue(index, avoid);
                    return Err(PeerError::Cancelled);
                }
                fetched = self.fetch(host, index) => fetched,
            };
            match fetched {
                Ok(len) => {
                    host.delivered.fetch_add(1, Ordering::Relaxed);
                    self.events.send(DownloadEvent::ChunkDone {
                        index,
                        bytes: len,
                        host: host.addr,
                    });
                    if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.changed.notify_waiters();
                    }
                }
                Err(FetchError::Local(err)) => {
                    self.requeue(index, avoid);
                    return Err(err.into());
                }
                Err(FetchError::Host { reason, fatal }) => {
                    let dropped = host.record_failure(self.options.max_host_failures, fatal);
                    if dropped {
                        warn!(host = %host.addr, peer = %host.peer_id, %reason, "dropping host from this download");
                    } else {
                        debug!(host = %host.addr, chunk = index, %reason, "chunk failed; retrying elsewhere");
                    }
                    self.events.send(DownloadEvent::PeerFailed {
                        host: host.addr,
                        error: reason.clone(),
                        dropped,
                    });
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        format!("{}: {reason}", host.addr);
                    self.requeue(index, Some(h));
                }
            }
        }
    }

    fn requeue(&self, index: u32, avoid: Option<usize>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((index, avoid));
        self.changed.notify_one();
    }

    /// Fetches chunk `index` from `host`, verifies it and writes it. Returns its length.
    async fn fetch(&self, host: &Host, index: u32) -> Result<usize, FetchError> {
        let _in_flight = host.start_request();
        let network = |err: ProtocolError| FetchError::Host {
            reason: err.to_string(),
            fatal: false,
        };
        let mut conn = host
            .checkout(self.options.connect_timeout)
            .await
            .map_err(network)?;
        let request = PeerRequest::GetChunk {
            file_id: self.file_id,
            index,
        };
        let reply = conn
            .request(&request, self.options.request_timeout)
            .await
            .map_err(network)?;
        let data = match reply {
            PeerResponse::Chunk {
                file_id,
                index: got,
                data,
            } if file_id == self.file_id && got == index => {
                // The connection is free again before we spend time verifying.
                host.checkin(conn);
                data
            }
            PeerResponse::Error { code, message } => {
                host.checkin(conn);
                // These mean the host does not have the file (any more): don't ask it again.
                let fatal = matches!(
                    code,
                    ErrorCode::UnknownFile
                        | ErrorCode::FileUnavailable
                        | ErrorCode::ChunkOutOfRange
                );
                return Err(FetchError::Host {
                    reason: format!("{message} ({code})"),
                    fatal,
                });
            }
            other => {
                return Err(FetchError::Host {
                    reason: format!("unexpected reply to GetChunk: {}", reply_name(&other)),
                    fatal: true,
                });
            }
        };
        let part = self.part.clone();
        let len = data.len();
        // SHA-256 of 4 MiB and the write take milliseconds: off the reactor.
        let written = tokio::task::spawn_blocking(move || part.write_verified(index, &data))
            .await
            .map_err(|e| {
                FetchError::Local(StorageError::Io {
                    action: "cannot write chunk",
                    path: Default::default(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        match written {
            Ok(()) => Ok(len),
            Err(err @ (StorageError::HashMismatch { .. } | StorageError::ChunkLength { .. })) => {
                Err(FetchError::Host {
                    reason: format!("sent bad data: {err}"),
                    fatal: false,
                })
            }
            Err(err) => Err(FetchError::Local(err)),
        }
    }
}

fn reply_name(reply: &PeerResponse) -> &'static str {
    match reply {
        PeerResponse::Welcome { .. } => "Welcome",
        PeerResponse::Manifest { .. } => "Manifest",
        PeerResponse::Chunk { .. } => "Chunk for another chunk",
        PeerResponse::Error { .. } => "Error",
    }
}
