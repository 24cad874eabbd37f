//! The bounded pool that moves chunks: `workers` tasks take chunk indices from one queue, fetch
//! each from the least loaded live host, verify and write it off the reactor, and put failed
//! chunks back for another host.
//!
//! * **Endgame**: when the queue is empty, idle workers ask a second host for a chunk that has
//!   been in flight much longer than chunks usually take, so one slow host can't hold back the
//!   end; the first verified copy wins and the rest of the pool stops as soon as every chunk is
//!   in. Hosts of equal speed rarely trigger it, so little is fetched twice.
//! * **Stalls**: when every host is dropped, the pool asks the index for hosts again (reviving
//!   those that only failed to answer) for up to `stall_timeout`, then gives up with the count
//!   of verified chunks; the part file and its record stay for a later resume.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use p2p_protocol::{
    ChunkReply, ErrorCode, FileId, HostInfo, PeerRequest, PeerResponse, ProtocolError,
};
use p2p_storage::{ChunkBuf, PartFile, StorageError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::hosts::{Host, HostSpec, pick};
use super::{DownloadEvent, DownloadOptions, EventSink};
use crate::error::PeerError;

/// Pause between asks to the index while no host is available.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often the record of verified chunks is rewritten during a download.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// Copies of one chunk requested at once in the endgame.
const ENDGAME_COPIES: usize = 2;
/// A chunk in flight for longer than this many typical chunk times gets a second copy...
const ENDGAME_SLOWNESS: u32 = 3;
/// ...and never sooner than this.
const ENDGAME_MIN_WAIT: Duration = Duration::from_millis(300);
/// How often idle workers look for late chunks.
const ENDGAME_POLL: Duration = Duration::from_millis(100);

/// Asks the index for the file's current hosts.
pub(crate) type Refresh = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<HostInfo>, PeerError>> + Send>>
        + Send
        + Sync,
>;

/// A chunk waiting for a host, and the host that last failed it.
type Pending = (u32, Option<usize>);

/// Everything the workers of one download share.
pub(crate) struct Pool {
    pub file_id: FileId,
    pub part: Arc<PartFile>,
    /// Grows when the index names new hosts.
    hosts: RwLock<Vec<Arc<Host>>>,
    options: DownloadOptions,
    events: EventSink,
    refresh: Option<Refresh>,
    queue: Mutex<VecDeque<Pending>>,
    /// Chunk → hosts fetching it right now, and since when (the endgame asks one more).
    fetching: Mutex<HashMap<u32, Vec<(usize, Instant)>>>,
    /// Moving average of how long a chunk takes, for the endgame.
    chunk_time: Mutex<Duration>,
    /// Chunks not yet verified and written.
    remaining: AtomicUsize,
    /// Wakes idle workers when a chunk is put back, a host appears, or the last chunk is done.
    changed: Notify,
    /// One worker at a time asks the index for hosts.
    refreshing: tokio::sync::Mutex<()>,
    last_error: Mutex<String>,
    record_saved: Mutex<Instant>,
    /// When every host became unusable; cleared by a delivered chunk.
    stall_since: Mutex<Option<Instant>>,
    /// Chunk writes running on blocking threads.
    writes: TaskTracker,
    /// Chunk buffers not in use. One per worker at most is ever allocated (a worker holds one
    /// from the request until its chunk is written), so a download's memory does not grow
    /// with the file.
    buffers: Mutex<Vec<ChunkBuf>>,
}

/// Why one chunk fetch failed.
enum FetchError {
    /// The host's fault (network, refusal, bad data); `fatal` drops the host at once.
    Host {
        reason: String,
        fatal: bool,
        lied: bool,
    },
    /// Our own disk failed, or our own write task did: no other host can help.
    Local(PeerError),
}

impl Pool {
    pub fn new(
        file_id: FileId,
        part: Arc<PartFile>,
        hosts: Vec<Host>,
        options: DownloadOptions,
        events: EventSink,
        refresh: Option<Refresh>,
    ) -> Self {
        let missing: VecDeque<Pending> = (0..part.manifest().chunks.len() as u32)
            .filter(|i| !part.is_verified(*i))
            .map(|i| (i, None))
            .collect();
        Self {
            file_id,
            remaining: AtomicUsize::new(missing.len()),
            queue: Mutex::new(missing),
            part,
            hosts: RwLock::new(hosts.into_iter().map(Arc::new).collect()),
            options,
            events,
            refresh,
            fetching: Mutex::new(HashMap::new()),
            chunk_time: Mutex::new(Duration::ZERO),
            changed: Notify::new(),
            refreshing: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(String::new()),
            record_saved: Mutex::new(Instant::now()),
            stall_since: Mutex::new(None),
            writes: TaskTracker::new(),
            buffers: Mutex::new(Vec::new()),
        }
    }

    fn hosts(&self) -> Vec<Arc<Host>> {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Chunks each host delivered first.
    pub fn per_host(&self) -> Vec<(std::net::SocketAddr, u64)> {
        self.hosts()
            .iter()
            .map(|h| (h.addr, h.delivered.load(Ordering::Relaxed)))
            .collect()
    }

    /// The most recent failure, for the final error message.
    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn failed(&self, reason: String) -> PeerError {
        let manifest = self.part.manifest();
        PeerError::DownloadFailed {
            name: manifest.name.clone(),
            done: self.part.verified_count(),
            total: manifest.chunks.len(),
            reason,
        }
    }

    /// Runs the workers until every chunk is written, the hosts are gone for good, or `cancel`
    /// fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), PeerError> {
        let missing = self.remaining.load(Ordering::Acquire);
        // Enough workers for a second copy of each missing chunk (the endgame), even for a
        // one-chunk file.
        let workers = self
            .options
            .workers
            .max(1)
            .min((missing * ENDGAME_COPIES).max(1));
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
            if self.remaining.load(Ordering::Acquire) == 0 {
                // Done: stop the workers still waiting on endgame copies.
                stop.cancel();
                continue;
            }
            if let Err(err) = outcome {
                // The first failure stops the others; keep it, not their "cancelled".
                stop.cancel();
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        // A cancelled worker's chunk write may still be running on a blocking thread; wait for
        // it, so that when the download returns nothing holds the part file (or its lock).
        self.writes.close();
        self.writes.wait().await;
        if self.remaining.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        if cancel.is_cancelled() {
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
            let Some((index, avoid)) = self.next_job() else {
                // Others hold the last chunks; one may come back, or turn out late.
                tokio::select! {
                    _ = stop.cancelled() => return Err(PeerError::Cancelled),
                    _ = &mut changed => continue,
                    _ = tokio::time::sleep(ENDGAME_POLL) => continue,
                }
            };
            let hosts = self.hosts();
            let Some(h) = pick(&hosts, index, &avoid) else {
                self.requeue(index, None);
                tokio::select! {
                    _ = stop.cancelled() => return Err(PeerError::Cancelled),
                    found = self.wait_for_hosts() => found?,
                }
                continue;
            };
            let host = hosts[h].clone();
            let started = Instant::now();
            self.fetching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(index)
                .or_default()
                .push((h, started));
            let fetched = tokio::select! {
                _ = stop.cancelled() => None,
                fetched = self.fetch(&host, index) => Some(fetched),
            };
            self.stop_fetching(index, h);
            let Some(fetched) = fetched else {
                if !self.part.is_verified(index) {
                    self.requeue(index, None);
                }
                return Err(PeerError::Cancelled);
            };
            match fetched {
                Ok(Some(len)) => {
                    self.note_chunk_time(started.elapsed());
                    *self.stall_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    host.delivered.fetch_add(1, Ordering::Relaxed);
                    self.events.send(DownloadEvent::ChunkDone {
                        index,
                        bytes: len,
                        host: host.addr,
                    });
                    if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.changed.notify_waiters();
                    }
                    self.save_record_if_due().await;
                }
                // Another host's copy was first (endgame).
                Ok(None) => {}
                Err(FetchError::Local(err)) => {
                    self.requeue(index, None);
                    return Err(err);
                }
                Err(FetchError::Host {
                    reason,
                    fatal,
                    lied,
                }) => {
                    let dropped = host.record_failure(self.options.max_host_failures, fatal, lied);
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
                    if !self.part.is_verified(index) && !self.is_fetching(index) {
                        self.requeue(index, Some(h));
                    }
                    // Wake a waiting worker: this chunk may need an endgame copy now.
                    self.changed.notify_one();
                }
            }
        }
    }

    /// The next chunk to fetch and the hosts to avoid for it: the queue first, then (endgame)
    /// the latest chunk in flight on fewer than [`ENDGAME_COPIES`] hosts, if it is late.
    fn next_job(&self) -> Option<(u32, Vec<usize>)> {
        loop {
            let queued = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match queued {
                // Another copy finished it meanwhile.
                Some((index, _)) if self.part.is_verified(index) => continue,
                Some((index, avoid)) => return Some((index, avoid.into_iter().collect())),
                None => break,
            }
        }
        let live = self.hosts().iter().filter(|h| !h.is_dropped()).count();
        let typical = *self.chunk_time.lock().unwrap_or_else(|e| e.into_inner());
        let late = (typical * ENDGAME_SLOWNESS).max(ENDGAME_MIN_WAIT);
        let fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        fetching
            .iter()
            .filter(|(index, hosts)| {
                hosts.len() < ENDGAME_COPIES.min(live) && !self.part.is_verified(**index)
            })
            .filter_map(|(index, hosts)| {
                let oldest = hosts.iter().map(|(_, since)| *since).min()?;
                (oldest.elapsed() >= late).then_some((oldest, *index, hosts))
            })
            .min_by_key(|(oldest, index, _)| (*oldest, *index))
            .map(|(_, index, hosts)| (index, hosts.iter().map(|(h, _)| *h).collect()))
    }

    fn note_chunk_time(&self, took: Duration) {
        let mut avg = self.chunk_time.lock().unwrap_or_else(|e| e.into_inner());
        *avg = if avg.is_zero() {
            took
        } else {
            (*avg * 7 + took) / 8
        };
    }

    fn stop_fetching(&self, index: u32, host: usize) {
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hosts) = fetching.get_mut(&index) {
            if let Some(pos) = hosts.iter().position(|(h, _)| *h == host) {
                hosts.remove(pos);
            }
            if hosts.is_empty() {
                fetching.remove(&index);
            }
        }
    }

    fn is_fetching(&self, index: u32) -> bool {
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&index)
    }

    fn requeue(&self, index: u32, avoid: Option<usize>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((index, avoid));
        self.changed.notify_one();
    }

    /// Every host is dropped: ask the index again until a usable host appears or
    /// `stall_timeout` passes.
    async fn wait_for_hosts(&self) -> Result<(), PeerError> {
        let _turn = self.refreshing.lock().await;
        if self.refresh.is_none() && !self.hosts().iter().any(|h| !h.is_dropped()) {
            // No index to ask (hosts named directly): nobody new can turn up.
            return Err(self.failed(format!(
                "every host given failed (last error: {}); run the same download again to resume",
                self.last_error()
            )));
        }
        // One deadline per stall, kept across calls: hosts that are revived and fail again
        // don't restart the clock. A delivered chunk ends the stall.
        let (deadline, again) = {
            let mut since = self.stall_since.lock().unwrap_or_else(|e| e.into_inner());
            let again = since.is_some();
            (
                *since.get_or_insert_with(Instant::now) + self.options.stall_timeout,
                again,
            )
        };
        if again {
            // Revived hosts failed again: don't ask the index in a tight loop.
            tokio::time::sleep(REFRESH_EVERY).await;
        }
        loop {
            if Instant::now() >= deadline {
                return Err(self.failed(format!(
                    "no host could deliver for {}s (last error: {}); run the same download again to resume",
                    self.options.stall_timeout.as_secs(),
                    self.last_error()
                )));
            }
            if self.hosts().iter().any(|h| !h.is_dropped()) {
                return Ok(());
            }
            if let Some(refresh) = &self.refresh {
                match refresh().await {
                    Ok(listed) => {
                        if self.adopt(listed) {
                            self.changed.notify_waiters();
                            return Ok(());
                        }
                    }
                    Err(err) => debug!(%err, "cannot ask the index for hosts"),
                }
            }
            tokio::time::sleep(
                REFRESH_EVERY.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    /// Adds hosts the index names that we don't have, and revives dropped ones it still
    /// lists; returns whether any host is usable now.
    fn adopt(&self, listed: Vec<HostInfo>) -> bool {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        for info in listed.into_iter().map(HostSpec::from) {
            if let Some(known) = hosts.iter().find(|h| h.addr == info.addr) {
                if known.revive() {
                    info!(host = %info.addr, "host listed again; retrying it");
                }
            } else if !self.options.is_me(&info) {
                info!(host = %info.addr, "new host for this download");
                hosts.push(Arc::new(Host::new(info)));
            }
        }
        hosts.iter().any(|h| !h.is_dropped())
    }

    async fn save_record_if_due(&self) {
        {
            let mut saved = self.record_saved.lock().unwrap_or_else(|e| e.into_inner());
            if saved.elapsed() < RECORD_EVERY {
                return;
            }
            *saved = Instant::now();
        }
        let part = self.part.clone();
        match self.writes.spawn_blocking(move || part.save_record()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "cannot save the record of verified chunks"),
            Err(err) => warn!(%err, "cannot save the record of verified chunks"),
        }
    }

    fn take_buffer(&self) -> ChunkBuf {
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn return_buffer(&self, buf: ChunkBuf) {
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf);
    }

    /// Asks `host` for chunk `index` and receives its data into `buf` (not yet verified).
    async fn receive(&self, host: &Host, index: u32, buf: &mut ChunkBuf) -> Result<(), FetchError> {
        let network = |err: ProtocolError| match err {
            // Another node at the host's address, or data no chunk can have: never again.
            ProtocolError::WrongNode { .. } => FetchError::Host {
                reason: format!("refused: {err} (someone else is at the host's address)"),
                fatal: true,
                lied: true,
            },
            ProtocolError::ChunkTooLarge(_) => FetchError::Host {
                reason: format!("sent bad data: {err}"),
                fatal: false,
                lied: true,
            },
            err => FetchError::Host {
                reason: err.to_string(),
                fatal: false,
                lied: false,
            },
        };
        let tls = &self.options.tls;
        let (mut conn, reused) = host
            .checkout(tls, self.options.connect_timeout)
            .await
            .map_err(network)?;
        let request = PeerRequest::GetChunk {
            file_id: self.file_id,
            index,
        };
        let timeout = self.options.request_timeout;
        let reply = match conn
            .request_chunk(&request, |len| buf.fill(len), timeout)
            .await
        {
            // A pooled connection the host closed while it sat idle (its idle timeout, or it
            // made room for another client): not the host failing, so once more on a new one.
            Err(err) if reused && closed_before_reply(&err) => {
                debug!(host = %host.addr, %err, "pooled connection was closed; reconnecting");
                conn = host
                    .connect(tls, self.options.connect_timeout)
                    .await
                    .map_err(network)?;
                conn.request_chunk(&request, |len| buf.fill(len), timeout)
                    .await
            }
            other => other,
        }
        .map_err(network)?;
        match reply {
            ChunkReply::Chunk {
                file_id,
                index: got,
            } if file_id == self.file_id && got == index => {
                // The connection is free again before we spend time verifying.
                host.checkin(conn);
                Ok(())
            }
            ChunkReply::Other(PeerResponse::Error { code, message }) => {
                host.checkin(conn);
                // These mean the host does not have the file (any more), or won't serve us
                // (its allow-list): don't ask it again.
                let fatal = matches!(
                    code,
                    ErrorCode::UnknownFile
                        | ErrorCode::FileUnavailable
                        | ErrorCode::ChunkOutOfRange
                        | ErrorCode::Forbidden
                );
                Err(FetchError::Host {
                    reason: ProtocolError::Remote {
                        code,
                        message: message.into(),
                    }
                    .to_string(),
                    fatal,
                    lied: false,
                })
            }
            ChunkReply::Chunk { .. } => Err(FetchError::Host {
                reason: "unexpected reply to GetChunk: Chunk for another chunk".into(),
                fatal: true,
                lied: true,
            }),
            ChunkReply::Other(other) => Err(FetchError::Host {
                reason: format!("unexpected reply to GetChunk: {}", reply_name(&other)),
                fatal: true,
                lied: true,
            }),
        }
    }

    /// Fetches chunk `index` from `host`, verifies it and writes it. Returns its length, or
    /// `None` if another copy was written first.
    async fn fetch(&self, host: &Host, index: u32) -> Result<Option<usize>, FetchError> {
        let _in_flight = host.start_request();
        let mut buf = self.take_buffer();
        if let Err(err) = self.receive(host, index, &mut buf).await {
            self.return_buffer(buf);
            return Err(err);
        }
        let part = self.part.clone();
        let len = buf.as_slice().len();
        // SHA-256 of 4 MiB and the write take milliseconds: off the reactor.
        let written = self
            .writes
            .spawn_blocking(move || {
                let written = part.write_verified(index, buf.as_slice());
                (written, buf)
            })
            .await
            .map(|(written, buf)| {
                self.return_buffer(buf);
                written
            })
            // The verify-and-write task itself failed (it panicked): a bug of ours.
            .map_err(|e| {
                FetchError::Local(PeerError::Internal(format!("chunk write task failed: {e}")))
            })?;
        match written {
            Ok(true) => Ok(Some(len)),
            Ok(false) => Ok(None),
            Err(err @ (StorageError::HashMismatch { .. } | StorageError::ChunkLength { .. })) => {
                Err(FetchError::Host {
                    reason: format!("sent bad data: {err}"),
                    fatal: false,
                    lied: true,
                })
            }
            Err(err) => Err(FetchError::Local(err.into())),
        }
    }
}

/// Whether `err` says the connection was already closed when the request went out: a clean
/// close before any byte of the reply, or a reset.
fn closed_before_reply(err: &ProtocolError) -> bool {
    use std::io::ErrorKind;
    match err {
        ProtocolError::Closed => true,
        ProtocolError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

fn reply_name(reply: &PeerResponse) -> &'static str {
    match reply {
        PeerResponse::Welcome { .. } => "Welcome",
        PeerResponse::Manifest { .. } => "Manifest",
        PeerResponse::Chunk { .. } => "Chunk",
        PeerResponse::Error { .. } => "Error",
        PeerResponse::MessageReceived {} => "MessageReceived",
        PeerResponse::Folder { .. } => "Folder",
        PeerResponse::FolderPages { .. } => "FolderPages",
    }
}
