//! The download registry (`Downloads`, owned by the node): every download this peer started
//! for its command line, a shell, a script or the web API, kept with its live progress so any
//! front end can list, cancel and resume it through [`PeerHandle`]. One registry per node; the
//! command line, the shells and the API read the same entries.
//!
//! A download here is a *job*: one or more [`DownloadRequest`]s (a file, or every file of a
//! folder manifest) fetched one after another into one output folder, with one handle.

//!
//! # Design
//! * Entries live in a `BTreeMap` under a std `Mutex`, held for one lookup or update and never
//!   across an await: a download only ever writes its own entry, and no reader can stall it.
//! * Each run of a job is one task on the node's `TaskTracker` (so `shutdown()` waits for it),
//!   with a `CancellationToken` that is a child of the node's shutdown token. Its
//!   [`DownloadEvent`]s arrive on the `fetch` channel and update the entry's pure [`Progress`].
//! * [`PeerChange`]s go out on a broadcast channel on state changes (and when a file of a job
//!   finishes), never per chunk. Every change, progress included, gives the entry the next
//!   value of one registry-wide counter as its `version`, so "what moved since `v`" is every
//!   entry with a version above `v`: a live view asks for exactly that
//!   ([`PeerHandle::downloads_changed_since`]), a range of an index kept by version, without
//!   listing every job.
//! * Cancelling a finished job changes nothing (it answers the job as it is), and so does
//!   resuming a job that is done. Resuming a cancelled or failed job runs the files not yet
//!   done again into the same folder, where the `.part` files pick up what was verified. A
//!   run that was cancelled and replaced by a resume no longer writes to the entry (`run`).
//! * At most [`KEPT_FINISHED`] finished jobs are kept; those that ended first are forgotten
//!   first (by end, not start: a long job that ends after many short ones is the newest
//!   news), and never the job that has just ended, so its final state is always seen.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use p2p_protocol::{FileId, printable};
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::download::{DownloadEvent, DownloadReport};
use crate::error::PeerError;
use crate::inbox::ReceivedMessage;
use crate::node::{DownloadRequest, PeerHandle};

/// The handle of one download job: small, stable for the node's lifetime, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownloadId(pub u64);

impl std::fmt::Display for DownloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a download job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadState {
    /// Asking the index (or the named hosts) for the manifest and hosts.
    LookingUp,
    /// Chunks are arriving.
    Running,
    /// Every chunk is verified; the file is being flushed before it gets its name.
    Flushing,
    /// Complete and verified.
    Done,
    /// Ended by an error (the message, printable).
    Failed(String),
    /// Cancelled by a user; part files are kept for a resume.
    Cancelled,
}

impl DownloadState {
    /// Whether the job has ended (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_) | Self::Cancelled)
    }
}

/// A snapshot of one download job, for listings and live views.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadInfo {
    /// Its handle.
    pub id: DownloadId,
    /// What the user asked for: an id, a prefix, or a manifest file's name.
    pub target: String,
    /// The output folder.
    pub out: PathBuf,
    /// The name of the file being fetched (the folder's name for a folder job), once known.
    pub name: Option<String>,
    /// The file id being fetched now, once known.
    pub file_id: Option<FileId>,
    /// Files in the job.
    pub files_total: usize,
    /// Files finished.
    pub files_done: usize,
    /// Bytes of the whole job, once known: a job from a folder manifest knows it at once, a
    /// file by id once its manifest arrives (0 before).
    pub size: u64,
    /// Bytes verified and written, resumed bytes included.
    pub done: u64,
    /// Bytes that were already on disk from an earlier run.
    pub resumed: u64,
    /// Bytes per second fetched in this run, over the last few seconds (0 once ended).
    pub speed: f64,
    /// Time left at that speed, while running.
    pub eta: Option<Duration>,
    /// Hosts known for the current file.
    pub hosts_known: usize,
    /// Hosts that delivered at least one chunk of the current file.
    pub hosts_delivering: usize,
    /// Where the job stands.
    pub state: DownloadState,
    /// The finished file (or folder) on disk, when done.
    pub path: Option<PathBuf>,
    /// When the job's latest run started (wall clock): its start, or its last resume.
    pub started: SystemTime,
    /// Time from `started` to now, or to the run's end.
    pub elapsed: Duration,
    /// The registry-wide change counter's value at this job's latest change (progress
    /// included): it grows with every change, and no two jobs share one, so a live view sends
    /// only what moved (see [`PeerHandle::downloads_changed_since`]).
    pub version: u64,
}

impl DownloadInfo {
    /// `done` as a percentage of `size`: 100 for an empty job that is done, 0 for one whose
    /// size is not known yet.
    pub fn percent(&self) -> f64 {
        if self.size == 0 {
            if self.state == DownloadState::Done {
                100.0
            } else {
                0.0
            }
        } else {
            self.done as f64 * 100.0 / self.size as f64
        }
    }
}

/// Something a live view (the API's event stream, the shell) wants to know about. Sent on
/// state changes only, never per chunk: progress is read from [`DownloadInfo::version`].
#[derive(Clone, Debug)]
pub enum PeerChange {
    /// A download job started, changed state or ended.
    Download(DownloadId),
    /// This peer started sharing a file.
    FileShared(FileId),
    /// This peer stopped sharing a file.
    FileUnshared(FileId),
    /// A message arrived or was sent.
    Message(ReceivedMessage),
}

/// What the run of a job tells the front end that started it and shows it itself (the command
/// line's startup download, with its progress bars and one line per file), through
/// [`PeerHandle::start_download_observed`]. Everyone else reads the registry.
#[derive(Debug)]
pub enum JobUpdate {
    /// An event of the file being fetched.
    Event(DownloadEvent),
    /// A file of the job is complete and verified.
    FileDone(DownloadReport),
    /// The run ended: every file fetched, or the error as it was (with its causes; the entry
    /// keeps its text only). Sent after the entry shows the end.
    Ended(Result<(), PeerError>),
}

/// What the shells' and the API's `status` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// This peer's node id.
    pub node_id: p2p_protocol::NodeId,
    /// Where the chunk server listens.
    pub listen_addr: SocketAddr,
    /// The address the index hands out for this peer, once registered.
    pub advertised_addr: Option<SocketAddr>,
    /// The index server, if the peer uses one.
    pub server_addr: Option<SocketAddr>,
    /// The index's node id, as its last handshake showed it.
    pub server_node_id: Option<p2p_protocol::NodeId>,
    /// Whether the peer is registered with the index right now.
    pub registered: bool,
    /// Files shared.
    pub files_shared: usize,
    /// Chunks served to other peers.
    pub chunks_served: u64,
    /// Download jobs not finished.
    pub downloads_active: usize,
    /// Hosts named for direct downloads (`--from`, `connect`).
    pub direct_hosts: Vec<SocketAddr>,
}

/// How far back the speed looks: long enough to smooth the gaps between 4 MiB chunks, short
/// enough to follow a host coming or going.
pub const SPEED_WINDOW: Duration = Duration::from_secs(5);
/// Finished jobs kept for listings; beyond this the ones that ended first are forgotten.
pub const KEPT_FINISHED: usize = 1000;
/// Changes a slow listener may fall behind by before it sees `Lagged` (and re-reads).
const CHANGES_CAPACITY: usize = 256;

/// The progress of one job, fed with [`DownloadEvent`]s. Pure: the caller passes `now`, so
/// speed and ETA are unit-tested with synthetic instants.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The job's size when every file's manifest was known up front (a manifest file).
    known_size: Option<u64>,
    /// Bytes of the job's files finished so far (in any run).
    finished_bytes: u64,
    /// The current file: its size and bytes verified (resumed ones included).
    file_size: u64,
    file_done: u64,
    /// Bytes found on disk from an earlier run, in this run.
    resumed: u64,
    /// When this run began.
    run_start: Instant,
    /// Bytes fetched in this run, by arrival, within the last [`SPEED_WINDOW`].
    window: VecDeque<(Instant, u64)>,
    hosts_known: usize,
    delivering: BTreeSet<SocketAddr>,
}

impl Progress {
    /// A job starting at `now`; `known_size` when every manifest is in hand.
    pub fn new(known_size: Option<u64>, now: Instant) -> Self {
        Self {
            known_size,
            finished_bytes: 0,
            file_size: 0,
            file_done: 0,
            resumed: 0,
            run_start: now,
            window: VecDeque::new(),
            hosts_known: 0,
            delivering: BTreeSet::new(),
        }
    }

    /// A new run of the same job (a resume): files finished stay counted, the rest starts over.
    pub fn restart(&mut self, now: Instant) {
        *self = Self {
            finished_bytes: self.finished_bytes,
            ..Self::new(self.known_size, now)
        };
    }

    /// Takes one event of the current file into account.
    pub fn apply(&mut self, event: &DownloadEvent, now: Instant) {
        match event {
            DownloadEvent::Started {
                size,
                hosts,
                resumed,
                ..
            } => {
                self.file_size = *size;
                self.file_done = *resumed;
                self.resumed += resumed;
                self.hosts_known = *hosts;
                self.delivering.clear();
            }
            DownloadEvent::ChunkDone { bytes, host, .. } => {
                self.file_done += *bytes as u64;
                self.window.push_back((now, *bytes as u64));
                self.delivering.insert(*host);
                self.prune(now);
            }
            DownloadEvent::PeerFailed {
                host,
                dropped: true,
                ..
            } => {
                self.delivering.remove(host);
                self.hosts_known = self.hosts_known.saturating_sub(1);
            }
            // A finished file is counted by `file_finished`, once, whichever run it was.
            DownloadEvent::PeerFailed { .. }
            | DownloadEvent::Flushing
            | DownloadEvent::Finished { .. } => {}
            // SKELETON (issue 14): engineer E counts folder jobs.
            DownloadEvent::JobStarted { .. }
            | DownloadEvent::FileDone { .. }
            | DownloadEvent::FileConflict { .. }
            | DownloadEvent::FileFailed { .. } => {}
        }
    }

    /// The current file is complete: its `bytes` count as done from now on.
    pub fn file_finished(&mut self, bytes: u64) {
        self.finished_bytes += bytes;
        self.file_size = 0;
        self.file_done = 0;
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.window.front() {
            if now.saturating_duration_since(at) > SPEED_WINDOW {
                self.window.pop_front();
            } else {
                break;
            }
        }
    }

    /// Bytes of the job, as far as known.
    pub fn size(&self) -> u64 {
        self.known_size
            .unwrap_or(self.finished_bytes + self.file_size)
    }

    /// Bytes verified and written, resumed ones included.
    pub fn done(&self) -> u64 {
        self.finished_bytes + self.file_done
    }

    /// Bytes found on disk from an earlier run.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Bytes per second fetched over the last [`SPEED_WINDOW`] (or since the run began, if
    /// that is shorter). Resumed bytes are not fetched, so they don't count.
    pub fn speed(&self, now: Instant) -> f64 {
        let since = now.saturating_duration_since(self.run_start);
        let span = since.min(SPEED_WINDOW);
        let bytes: u64 = self
            .window
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= SPEED_WINDOW)
            .map(|(_, b)| b)
            .sum();
        if bytes == 0 {
            return 0.0;
        }
        // Not less than a tenth of a second: one chunk in the first instant is no speed.
        bytes as f64 / span.as_secs_f64().max(0.1)
    }

    /// Time left at the current speed; `None` while nothing moves or the size is unknown.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let speed = self.speed(now);
        let left = self.size().checked_sub(self.done())?;
        (speed > 0.0 && self.size() > 0).then(|| Duration::from_secs_f64(left as f64 / speed))
    }

    /// Hosts known for the current file.
    pub fn hosts_known(&self) -> usize {
        self.hosts_known
    }

    /// Hosts that delivered a chunk of the current file.
    pub fn hosts_delivering(&self) -> usize {
        self.delivering.len()
    }
}

/// One job in the registry.
#[derive(Debug)]
struct Entry {
    target: String,
    out: PathBuf,
    requests: Arc<Vec<DownloadRequest>>,
    name: Option<String>,
    file_id: Option<FileId>,
    files_done: usize,
    progress: Progress,
    state: DownloadState,
    path: Option<PathBuf>,
    started: SystemTime,
    run_start: Instant,
    ended: Option<Instant>,
    version: u64,
    cancel: CancellationToken,
    /// Bumped by each run: a run that was cancelled and replaced (resumed) no longer writes.
    run: u64,
    /// Held by the run that works on the job's files: a resume right after a cancel waits
    /// for the cancelled run to let go of its part files (they are locked while open).
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    fn info(&self, id: DownloadId, now: Instant) -> DownloadInfo {
        let running = !self.state.is_finished();
        DownloadInfo {
            id,
            target: self.target.clone(),
            out: self.out.clone(),
            name: self.name.clone(),
            file_id: self.file_id,
            files_total: self.requests.len(),
            files_done: self.files_done,
            size: self.progress.size(),
            done: self.progress.done(),
            resumed: self.progress.resumed(),
            speed: if running {
                self.progress.speed(now)
            } else {
                0.0
            },
            eta: if running {
                self.progress.eta(now)
            } else {
                None
            },
            hosts_known: self.progress.hosts_known(),
            hosts_delivering: self.progress.hosts_delivering(),
            state: self.state.clone(),
            path: self.path.clone(),
            started: self.started,
            elapsed: self
                .ended
                .unwrap_or(now)
                .saturating_duration_since(self.run_start),
            version: self.version,
        }
    }

    fn set_state(&mut self, state: DownloadState, now: Instant) {
        if state.is_finished() {
            self.ended = Some(now);
        }
        self.state = state;
    }
}

/// The registry: every job of this run, under one std Mutex that is held for a lookup or an
/// update, never across an await, so no reader (a slow web client) can hold a download back.
#[derive(Debug)]
pub(crate) struct Downloads {
    jobs: Mutex<Jobs>,
    next: AtomicU64,
    changes: broadcast::Sender<PeerChange>,
}

impl Default for Downloads {
    fn default() -> Self {
        Self {
            jobs: Mutex::new(Jobs::default()),
            next: AtomicU64::new(1),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }
}

/// The entries and their versions, kept together under the registry's lock. Pure: no I/O,
/// no clock of its own.
///
/// Invariants: `by_version` holds exactly one key per entry, that entry's `version`; every
/// version is at most `version`, and no two entries share one.
#[derive(Debug, Default)]
struct Jobs {
    entries: BTreeMap<DownloadId, Entry>,
    /// The registry-wide change counter: the version of the latest change to any job.
    version: u64,
    /// Each job under its version, so "changed since" is a range, not a scan of every job.
    by_version: BTreeMap<u64, DownloadId>,
}

impl Jobs {
    /// Adds a job at the next version.
    fn insert(&mut self, id: DownloadId, mut entry: Entry) {
        self.version += 1;
        entry.version = self.version;
        self.by_version.insert(entry.version, id);
        if let Some(old) = self.entries.insert(id, entry) {
            self.by_version.remove(&old.version);
        }
    }

    /// Records a change to job `id`: it takes the next version.
    fn touch(&mut self, id: DownloadId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        self.by_version.remove(&entry.version);
        self.version += 1;
        entry.version = self.version;
        self.by_version.insert(entry.version, id);
    }

    /// Forgets job `id`.
    fn remove(&mut self, id: DownloadId) {
        if let Some(entry) = self.entries.remove(&id) {
            self.by_version.remove(&entry.version);
        }
    }

    /// Keeps at most [`KEPT_FINISHED`] finished jobs, forgetting those that ended first,
    /// never `ended_now` (the job whose end is being recorded). Ties in the end time go by
    /// id.
    fn forget_first_ended(&mut self, ended_now: DownloadId) {
        let mut others: Vec<(Instant, DownloadId)> = self
            .entries
            .iter()
            .filter(|(id, e)| **id != ended_now && e.state.is_finished())
            .map(|(id, e)| (e.ended.unwrap_or(e.run_start), *id))
            .collect();
        let finished = others.len() + 1;
        let excess = finished.saturating_sub(KEPT_FINISHED).min(others.len());
        if excess == 0 {
            return;
        }
        others.select_nth_unstable(excess - 1);
        for &(_, id) in &others[..excess] {
            self.remove(id);
        }
    }

    /// The jobs changed after version `since`, in the order they last changed.
    fn changed_since(&self, since: u64) -> impl Iterator<Item = (DownloadId, &Entry)> {
        self.by_version
            .range((Bound::Excluded(since), Bound::Unbounded))
            .filter_map(|(_, id)| self.entries.get(id).map(|e| (*id, e)))
    }
}

/// What a run needs to know about its job.
pub(crate) struct RunTicket {
    pub id: DownloadId,
    pub run: u64,
    pub out: PathBuf,
    pub requests: Arc<Vec<DownloadRequest>>,
    pub cancel: CancellationToken,
    /// The job's run lock (see `Entry::running`).
    pub running: Arc<tokio::sync::Mutex<()>>,
    /// Who started the job and wants its [`JobUpdate`]s (the first run only: a resume is
    /// somebody else's).
    pub observer: Option<UnboundedSender<JobUpdate>>,
}

impl Downloads {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The change feed's sender (shared files and messages are announced on it too).
    pub fn changes(&self) -> &broadcast::Sender<PeerChange> {
        &self.changes
    }

    /// Announces a change; nobody listening is fine.
    pub fn announce(&self, change: PeerChange) {
        let _ = self.changes.send(change);
    }

    /// Adds a job in state `LookingUp`; returns what its first run needs.
    pub fn insert(
        &self,
        target: String,
        requests: Vec<DownloadRequest>,
        out: PathBuf,
        cancel: CancellationToken,
    ) -> RunTicket {
        let now = Instant::now();
        let id = DownloadId(self.next.fetch_add(1, Ordering::Relaxed));
        let known_size = requests
            .iter()
            .map(|r| r.manifest.as_ref().map(|m| m.size))
            .sum::<Option<u64>>()
            .filter(|_| requests.len() > 1);
        // A folder job is named after its folder from the start.
        let name = requests
            .first()
            .and_then(|r| r.folder_name().map(str::to_owned));
        let requests = Arc::new(requests);
        let running = Arc::new(tokio::sync::Mutex::new(()));
        let ticket = RunTicket {
            id,
            run: 0,
            out: out.clone(),
            requests: requests.clone(),
            cancel: cancel.clone(),
            running: running.clone(),
            observer: None,
        };
        let entry = Entry {
            target,
            out,
            requests,
            name,
            file_id: None,
            files_done: 0,
            progress: Progress::new(known_size, now),
            state: DownloadState::LookingUp,
            path: None,
            started: SystemTime::now(),
            run_start: now,
            ended: None,
            // Set by `Jobs::insert`.
            version: 0,
            cancel,
            run: 0,
            running,
        };
        {
            self.lock().insert(id, entry);
        }
        self.announce(PeerChange::Download(id));
        ticket
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<DownloadInfo> {
        let now = Instant::now();
        self.lock()
            .entries
            .iter()
            .map(|(id, e)| e.info(*id, now))
            .collect()
    }

    /// The jobs whose version moved after `since`, in the order they last changed, and the
    /// registry's version now (to pass as `since` next time). Looks at the changed jobs only.
    pub fn changed_since(&self, since: u64) -> (Vec<DownloadInfo>, u64) {
        let now = Instant::now();
        let jobs = self.lock();
        let changed = jobs
            .changed_since(since)
            .map(|(id, e)| e.info(id, now))
            .collect();
        (changed, jobs.version)
    }

    /// One job.
    pub fn get(&self, id: DownloadId) -> Option<DownloadInfo> {
        self.lock()
            .entries
            .get(&id)
            .map(|e| e.info(id, Instant::now()))
    }

    /// Jobs not finished.
    pub fn active(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| !e.state.is_finished())
            .count()
    }

    /// Cancels a job that runs; one already finished is left as it is.
    pub fn cancel(&self, id: DownloadId) -> Result<DownloadInfo, PeerError> {
        let now = Instant::now();
        let info = {
            let mut jobs = self.lock();
            let entry = jobs
                .entries
                .get_mut(&id)
                .ok_or(PeerError::UnknownDownload(id))?;
            if entry.state.is_finished() {
                return Ok(entry.info(id, now));
            }
            entry.cancel.cancel();
            entry.set_state(DownloadState::Cancelled, now);
            jobs.touch(id);
            jobs.forget_first_ended(id);
            jobs.entries[&id].info(id, now)
        };
        self.announce(PeerChange::Download(id));
        Ok(info)
    }

    /// Prepares another run of a cancelled or failed job; `Ok(None)` for one that is done.
    pub fn resume(
        &self,
        id: DownloadId,
        cancel: CancellationToken,
    ) -> Result<Option<RunTicket>, PeerError> {
        let now = Instant::now();
        let ticket = {
            let mut jobs = self.lock();
            let entry = jobs
                .entries
                .get_mut(&id)
                .ok_or(PeerError::UnknownDownload(id))?;
            match entry.state {
                DownloadState::Done => return Ok(None),
                DownloadState::Failed(_) | DownloadState::Cancelled => {}
                _ => return Err(PeerError::DownloadRunning(id)),
            }
            entry.run += 1;
            entry.cancel = cancel.clone();
            entry.progress.restart(now);
            entry.state = DownloadState::LookingUp;
            entry.started = SystemTime::now();
            entry.run_start = now;
            entry.ended = None;
            entry.path = None;
            let ticket = RunTicket {
                id,
                run: entry.run,
                out: entry.out.clone(),
                requests: entry.requests.clone(),
                cancel,
                running: entry.running.clone(),
                observer: None,
            };
            jobs.touch(id);
            ticket
        };
        self.announce(PeerChange::Download(id));
        Ok(Some(ticket))
    }

    /// Updates a job for its run `run`, if that run is still the job's (any run: `None`);
    /// announces a change of state. `f` returns whether the state changed.
    fn update(
        &self,
        id: DownloadId,
        run: Option<u64>,
        f: impl FnOnce(&mut Entry, Instant) -> bool,
    ) {
        let now = Instant::now();
        let changed = {
            let mut jobs = self.lock();
            let Some(entry) = jobs
                .entries
                .get_mut(&id)
                .filter(|e| run.is_none_or(|r| r == e.run))
            else {
                return;
            };
            let changed = f(entry, now);
            let finished = entry.state.is_finished();
            jobs.touch(id);
            if changed && finished {
                jobs.forget_first_ended(id);
            }
            changed
        };
        if changed {
            self.announce(PeerChange::Download(id));
        }
    }

    /// Moves a running job to `state` (a cancelled one stays cancelled).
    fn set_state(&self, id: DownloadId, run: u64, state: DownloadState) {
        self.update(id, Some(run), |e, now| {
            if e.state.is_finished() || e.state == state {
                return false;
            }
            e.set_state(state, now);
            true
        });
    }

    fn apply(&self, id: DownloadId, run: u64, event: &DownloadEvent) {
        self.update(id, Some(run), |e, now| {
            e.progress.apply(event, now);
            let state = match event {
                DownloadEvent::Started { file_id, name, .. } => {
                    e.file_id = Some(*file_id);
                    if e.requests.len() == 1 || e.name.is_none() {
                        e.name = Some(name.clone());
                    }
                    DownloadState::Running
                }
                DownloadEvent::Flushing => DownloadState::Flushing,
                _ => return false,
            };
            if e.state.is_finished() || e.state == state {
                return false;
            }
            e.state = state;
            true
        });
    }

    /// Files of a job finished so far (in any run).
    fn files_done(&self, id: DownloadId) -> usize {
        self.lock().entries.get(&id).map_or(0, |e| e.files_done)
    }

    /// Records a file of the job as finished (`path` is where it now is, `bytes` its size).
    /// Counted whichever run fetched it: a run cancelled just as its file completed still
    /// completed it, and the next run must not fetch it again.
    fn file_finished(&self, id: DownloadId, path: PathBuf, bytes: u64) {
        self.update(id, None, |e, _| {
            e.files_done += 1;
            e.progress.file_finished(bytes);
            if e.requests.len() == 1 {
                e.path = Some(path);
            }
            // Files done is news for a listing, as a state is.
            true
        });
    }

    /// Ends a run: done (every file fetched), cancelled or failed.
    fn finish(&self, id: DownloadId, run: u64, result: &Result<(), PeerError>) {
        self.update(id, Some(run), |e, now| {
            if e.state.is_finished() {
                return false;
            }
            let state = match result {
                Ok(()) => {
                    if e.requests.len() != 1 {
                        // The folder the files went under, or the output folder.
                        let top = e.requests.first().and_then(|r| r.folder_name());
                        e.path = Some(top.map_or_else(|| e.out.clone(), |t| e.out.join(t)));
                    }
                    DownloadState::Done
                }
                Err(PeerError::Cancelled) => DownloadState::Cancelled,
                Err(_) if e.cancel.is_cancelled() => DownloadState::Cancelled,
                Err(err) => DownloadState::Failed(printable(&err.to_string()).to_string()),
            };
            e.set_state(state, now);
            true
        });
    }
}

/// Runs a job's requests one after another, from the first not finished yet, keeping its
/// entry up to date and its observer (if any) told. Direct hosts known now (`connect`,
/// `--from`) are asked as well.
pub(crate) async fn run(peer: PeerHandle, ticket: RunTicket) {
    let RunTicket {
        id,
        run,
        out,
        requests,
        cancel,
        running,
        observer,
    } = ticket;
    // Nobody listening any more is fine: the entry is what counts.
    let tell = |update: JobUpdate| {
        if let Some(observer) = &observer {
            let _ = observer.send(update);
        }
    };
    // After a cancelled run has let go; files it finished meanwhile count.
    let _running = running.lock_owned().await;
    let downloads = peer.registry();
    let from = downloads.files_done(id);
    let direct = peer.direct_hosts();
    let mut result = Ok(());
    for request in requests.iter().skip(from) {
        if cancel.is_cancelled() {
            result = Err(PeerError::Cancelled);
            break;
        }
        downloads.set_state(id, run, DownloadState::LookingUp);
        let mut request = request.clone();
        for host in &direct {
            if !request.hosts.contains(host) {
                request.hosts.push(*host);
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let fetch = peer.fetch(request, &out, Some(tx), cancel.clone());
        tokio::pin!(fetch);
        let event = |event: DownloadEvent| {
            downloads.apply(id, run, &event);
            tell(JobUpdate::Event(event));
        };
        let fetched = loop {
            tokio::select! {
                fetched = &mut fetch => break fetched,
                Some(e) = rx.recv() => event(e),
            }
        };
        while let Ok(e) = rx.try_recv() {
            event(e);
        }
        match fetched {
            Ok(report) => {
                downloads.file_finished(id, report.path.clone(), report.bytes);
                tell(JobUpdate::FileDone(report));
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    // An observer reports the end itself (the command line prints the error).
    if let (Err(err), None) = (&result, &observer) {
        warn!(download = %id, %err, "download ended");
    }
    downloads.finish(id, run, &result);
    tell(JobUpdate::Ended(result));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn started(size: u64, hosts: usize, resumed: u64) -> DownloadEvent {
        DownloadEvent::Started {
            file_id: FileId([7; 32]),
            name: "f".into(),
            size,
            chunks: 1,
            hosts,
            resumed,
        }
    }

    fn chunk(bytes: usize, port: u16) -> DownloadEvent {
        DownloadEvent::ChunkDone {
            index: 0,
            bytes,
            host: host(port),
        }
    }

    const MB: usize = 1_000_000;

    #[test]
    fn speed_is_bytes_over_the_last_window() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, t0);
        p.apply(&started(100 * MB as u64, 2, 0), t0);
        // 1 MB every second for 10 s.
        for s in 1..=10 {
            p.apply(&chunk(MB, 1), t0 + Duration::from_secs(s));
        }
        let now = t0 + Duration::from_secs(10);
        // The last 5 s hold 5 chunks (6..=10) plus the one exactly at the edge (5).
        let speed = p.speed(now);
        assert!((1.0e6..=1.2e6).contains(&speed), "{speed}");
        assert_eq!(p.done(), 10 * MB as u64);
        // 90 MB left at about 1 MB/s.
        let eta = p.eta(now).unwrap().as_secs_f64();
        assert!((75.0..=90.0).contains(&eta), "{eta}");
        // Nothing for 10 s more: the window is empty, the speed 0, no ETA.
        let later = now + Duration::from_secs(10);
        assert_eq!(p.speed(later), 0.0);
        assert_eq!(p.eta(later), None);
    }

    #[test]
    fn early_speed_divides_by_the_time_since_the_start() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, t0);
        p.apply(&started(10 * MB as u64, 1, 0), t0);
        p.apply(&chunk(2 * MB, 1), t0 + Duration::from_secs(1));
        let speed = p.speed(t0 + Duration::from_secs(2));
        assert!((speed - 1.0e6).abs() < 1.0, "{speed}");
    }

    #[test]
    fn resumed_bytes_count_as_done_but_not_as_speed() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, t0);
        p.apply(&started(8 * MB as u64, 1, 4 * MB as u64), t0);
        assert_eq!(p.done(), 4 * MB as u64);
        assert_eq!(p.resumed(), 4 * MB as u64);
        assert_eq!(p.speed(t0 + Duration::from_secs(1)), 0.0);
        p.apply(&chunk(MB, 1), t0 + Duration::from_secs(1));
        let speed = p.speed(t0 + Duration::from_secs(1));
        assert!((speed - 1.0e6).abs() < 1.0, "{speed}");
    }

    #[test]
    fn hosts_delivering_and_dropped() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, t0);
        p.apply(&started(10, 3, 0), t0);
        p.apply(&chunk(1, 1), t0);
        p.apply(&chunk(1, 2), t0);
        p.apply(&chunk(1, 2), t0);
        assert_eq!((p.hosts_known(), p.hosts_delivering()), (3, 2));
        p.apply(
            &DownloadEvent::PeerFailed {
                host: host(2),
                error: "gone".into(),
                dropped: true,
            },
            t0,
        );
        assert_eq!((p.hosts_known(), p.hosts_delivering()), (2, 1));
        // A failure that keeps the host changes nothing.
        p.apply(
            &DownloadEvent::PeerFailed {
                host: host(1),
                error: "slow".into(),
                dropped: false,
            },
            t0,
        );
        assert_eq!((p.hosts_known(), p.hosts_delivering()), (2, 1));
    }

    #[test]
    fn files_of_a_job_add_up_and_survive_a_restart() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(30), t0);
        p.apply(&started(10, 1, 0), t0);
        p.apply(&chunk(10, 1), t0);
        p.file_finished(10);
        p.apply(&started(20, 1, 0), t0);
        p.apply(&chunk(5, 1), t0);
        assert_eq!((p.size(), p.done()), (30, 15));
        let t1 = t0 + Duration::from_secs(60);
        p.restart(t1);
        // The finished file stays; the half file will report its resumed bytes again.
        assert_eq!((p.size(), p.done()), (30, 10));
        p.apply(&started(20, 1, 5), t1);
        assert_eq!((p.done(), p.resumed()), (15, 5));
        assert_eq!(p.speed(t1), 0.0);
    }

    fn job(downloads: &Downloads) -> RunTicket {
        downloads.insert(
            "t".into(),
            vec![DownloadRequest::by_id("abcdef12")],
            PathBuf::from("/tmp"),
            CancellationToken::new(),
        )
    }

    #[test]
    fn cancel_resume_and_a_stale_run() {
        let downloads = Downloads::default();
        let mut changes = downloads.changes().subscribe();
        let first = job(&downloads);
        let id = first.id;
        assert_eq!(id, DownloadId(1));
        assert_eq!(downloads.get(id).unwrap().state, DownloadState::LookingUp);
        assert!(matches!(
            downloads.resume(id, CancellationToken::new()),
            Err(PeerError::DownloadRunning(_))
        ));
        let cancelled = downloads.cancel(id).unwrap();
        assert_eq!(cancelled.state, DownloadState::Cancelled);
        assert!(first.cancel.is_cancelled());
        let second = downloads
            .resume(id, CancellationToken::new())
            .unwrap()
            .unwrap();
        assert_eq!(second.run, 1);
        // The first run ends late: it no longer writes to the job.
        downloads.apply(id, first.run, &started(10, 1, 0));
        downloads.finish(id, first.run, &Err(PeerError::Cancelled));
        let info = downloads.get(id).unwrap();
        assert_eq!((info.state, info.size), (DownloadState::LookingUp, 0));
        // The second one does.
        downloads.apply(id, second.run, &started(10, 1, 0));
        downloads.file_finished(id, PathBuf::from("/tmp/f"), 10);
        downloads.finish(id, second.run, &Ok(()));
        let info = downloads.get(id).unwrap();
        assert_eq!(info.state, DownloadState::Done);
        assert_eq!((info.done, info.files_done), (10, 1));
        assert_eq!(info.path, Some(PathBuf::from("/tmp/f")));
        // Done: cancel and resume leave it as it is.
        assert_eq!(downloads.cancel(id).unwrap().state, DownloadState::Done);
        assert!(
            downloads
                .resume(id, CancellationToken::new())
                .unwrap()
                .is_none()
        );
        // insert, cancel, resume, Running, file done, Done: one change each, no more.
        let mut seen = 0;
        while changes.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 6);
        assert!(matches!(
            downloads.cancel(DownloadId(99)),
            Err(PeerError::UnknownDownload(DownloadId(99)))
        ));
    }

    #[test]
    fn the_oldest_finished_jobs_are_forgotten() {
        let downloads = Downloads::default();
        let running = job(&downloads).id;
        for _ in 0..KEPT_FINISHED + 5 {
            let id = job(&downloads).id;
            downloads.finish(id, 0, &Err(PeerError::Cancelled));
        }
        let list = downloads.list();
        assert_eq!(list.len(), KEPT_FINISHED + 1);
        // The running one stays; the first five finished are gone.
        assert_eq!(list[0].id, running);
        assert_eq!(list[1].id, DownloadId(7));
        assert_eq!(downloads.active(), 1);
    }

    #[test]
    fn a_long_job_that_ends_last_is_kept_and_seen_ending() {
        let downloads = Downloads::default();
        // Job 1 runs long; more than the kept number of newer jobs end meanwhile.
        let long = job(&downloads);
        for _ in 0..KEPT_FINISHED + 5 {
            let id = job(&downloads).id;
            downloads.finish(id, 0, &Err(PeerError::Cancelled));
        }
        let (_, seen) = downloads.changed_since(0);
        downloads.apply(long.id, long.run, &started(10, 1, 0));
        downloads.file_finished(long.id, PathBuf::from("/tmp/f"), 10);
        downloads.finish(long.id, long.run, &Ok(()));
        // Its end is kept, and is what a live view gets next.
        let info = downloads
            .get(long.id)
            .expect("the job that just ended is kept");
        assert_eq!((info.state, info.done), (DownloadState::Done, 10));
        let (moved, _) = downloads.changed_since(seen);
        let last = moved.last().unwrap();
        assert_eq!((last.id, &last.state), (long.id, &DownloadState::Done));
        // The job that ended first went instead (2..=7 went before, as they ended).
        let list = downloads.list();
        assert_eq!(list.len(), KEPT_FINISHED);
        assert_eq!((list[0].id, list[1].id), (long.id, DownloadId(8)));
        // A cancel is an end too: it forgets the next to have ended, not job 1.
        let extra = job(&downloads).id;
        downloads.cancel(extra).unwrap();
        let list = downloads.list();
        assert_eq!(list.len(), KEPT_FINISHED);
        assert_eq!((list[0].id, list[1].id), (long.id, DownloadId(9)));
        assert_eq!(list.last().unwrap().id, extra);
    }

    #[test]
    fn changed_since_gives_only_what_moved() {
        let downloads = Downloads::default();
        let (all, v0) = downloads.changed_since(0);
        assert!(all.is_empty());
        let a = job(&downloads);
        let b = job(&downloads);
        let c = job(&downloads);
        let (all, v1) = downloads.changed_since(v0);
        let ids: Vec<_> = all.iter().map(|d| d.id).collect();
        assert_eq!(ids, [a.id, b.id, c.id]);
        assert_eq!(v1, all.last().unwrap().version);
        // Nothing moved: nothing to send.
        assert_eq!(downloads.changed_since(v1), (vec![], v1));
        // Progress (no state change) of one job, a cancel of another.
        downloads.apply(a.id, a.run, &started(10, 1, 0));
        downloads.apply(a.id, a.run, &chunk(4, 1));
        downloads.cancel(c.id).unwrap();
        let (moved, v2) = downloads.changed_since(v1);
        let seen: Vec<_> = moved.iter().map(|d| (d.id, d.done)).collect();
        assert_eq!(seen, [(a.id, 4), (c.id, 0)]);
        assert_eq!(moved[1].state, DownloadState::Cancelled);
        assert!(v2 > v1);
        // Versions come from one counter: every job's is its own, and agrees with a listing.
        let listed = downloads.list();
        let versions: BTreeSet<u64> = listed.iter().map(|d| d.version).collect();
        assert_eq!(versions.len(), 3);
        assert!(versions.iter().all(|v| *v <= v2));
        // A resume moves the job again; an older `since` sees it along with the rest.
        downloads.resume(c.id, CancellationToken::new()).unwrap();
        let (moved, v3) = downloads.changed_since(v2);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].id, &moved[0].state),
            (c.id, &DownloadState::LookingUp)
        );
        assert_eq!(downloads.changed_since(v1).0.len(), 2);
        assert_eq!(downloads.changed_since(v3).0, vec![]);
    }

    #[test]
    fn unknown_total_grows_file_by_file() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, t0);
        assert_eq!(p.size(), 0);
        p.apply(&started(10, 1, 0), t0);
        assert_eq!(p.size(), 10);
    }
}
