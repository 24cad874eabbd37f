//! The download registry (`Downloads`, owned by the node): every download this peer started
//! for its command line, a shell, a script or the web API, kept with its live progress so any
//! front end can list, cancel and resume it through [`PeerHandle`]. One registry per node; the
//! command line, the shells and the API read the same entries.
//!
//! A download here is a *job*: one [`DownloadRequest`] (a file, or a whole folder) fetched into
//! one output folder by one run of the download engine, with one handle. A run resolves the
//! request (the manifest or folder record, and the hosts), hands it to
//! `crate::download::run`, then shares what it put on disk.
//!
//! # Design
//! * Entries live in a `BTreeMap` under a std `Mutex`, held for one lookup or update and never
//!   across an await: a download only ever writes its own entry, and no reader can stall it.
//! * Each run of a job is one task on the node's `TaskTracker` (so `shutdown()` waits for it),
//!   with a `CancellationToken` that is a child of the node's shutdown token. Its
//!   [`DownloadEvent`]s arrive on the engine's channel and update the entry's pure
//!   [`Progress`] (bytes over the whole job, files counted as each one is in place).
//! * [`PeerChange`]s go out on a broadcast channel on state changes only, never per chunk or
//!   per file. Every change, progress included, gives the entry the next value of one
//!   registry-wide counter as its `version`, so "what moved since `v`" is every entry with a
//!   version above `v`: a live view asks for exactly that
//!   ([`PeerHandle::downloads_changed_since`]), a range of an index kept by version, without
//!   listing every job.
//! * A run ends `Done` only when every file is in place. Files in conflict (something else at
//!   their target, left alone) or failed make it `Failed`, with a one-line summary; the other
//!   files are in place all the same.
//! * Cancelling a finished job changes nothing (it answers the job as it is), and so does
//!   resuming a job that is done. Resuming a cancelled or failed job runs the same request
//!   again into the same folder: files already there and identical are found (by hash) and
//!   skipped, `.part` files pick up what was verified, the rest is fetched. A run that was
//!   cancelled and replaced by a resume no longer writes to the entry (`run`).
//! * At most [`KEPT_FINISHED`] finished jobs are kept; those that ended first are forgotten
//!   first (by end, not start: a long job that ends after many short ones is the newest
//!   news), and never the job that has just ended, so its final state is always seen.

mod progress;

pub use progress::{Progress, SPEED_WINDOW};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use p2p_protocol::{FileId, FolderId, printable};
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::download::{self, DownloadEvent, DownloadOptions, EventSink, JobReport, JobSource};
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
    /// The name of the file (the folder's name for a folder job), once known.
    pub name: Option<String>,
    /// The file's id, once known (`None` for a folder job).
    pub file_id: Option<FileId>,
    /// The folder's id, for a folder job, once known.
    pub folder_id: Option<FolderId>,
    /// Files in the job, once known (0 before): 1 for a file.
    pub files_total: usize,
    /// Files in place: fetched, or found already there.
    pub files_done: usize,
    /// Of those, files that were already there (identical, checked by hash), not fetched.
    pub files_skipped: usize,
    /// Files whose target holds something else (another file, a folder, a link), left as it
    /// is and not fetched.
    pub conflicts: usize,
    /// Files that could not be fetched in this run.
    pub files_failed: usize,
    /// Bytes of the whole job, once known: a job from a manifest file knows it at once, one by
    /// id once its manifest or folder record arrives (0 before).
    pub size: u64,
    /// Bytes verified and written, resumed bytes included.
    pub done: u64,
    /// Bytes that were already on disk from an earlier run.
    pub resumed: u64,
    /// Bytes fetched from hosts in this run (neither resumed nor already there): what a
    /// speed is of.
    pub fetched: u64,
    /// Bytes per second fetched in this run, over the last few seconds (0 once ended).
    pub speed: f64,
    /// Time left at that speed, while running.
    pub eta: Option<Duration>,
    /// Hosts known for the job.
    pub hosts_known: usize,
    /// Hosts that delivered at least one chunk in this run.
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
/// line's startup download, with its progress bar, its lines per conflict and its summary),
/// through [`PeerHandle::start_download_observed`]; and, of every job nobody observes so, the
/// front end that reports all of them ([`PeerHandle::observe_other_jobs`]). Everyone else
/// reads the registry.
#[derive(Debug)]
// `Ended` comes once per run: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum JobUpdate {
    /// An event of the job.
    Event(DownloadEvent),
    /// The run ended: its report (complete or not: see [`JobReport::complete`]), or the error
    /// as it was (with its causes; the entry keeps its text only). Sent after the entry shows
    /// the end.
    Ended(Result<JobReport, PeerError>),
}

/// What the shells' and the API's `status` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// This peer's node id.
    pub node_id: p2p_protocol::NodeId,
    /// Where the chunk server listens.
    pub listen_addr: SocketAddr,
    /// The address the (first) index that registered this peer hands out for it.
    pub advertised_addr: Option<SocketAddr>,
    /// The first index server, if the peer uses one.
    pub server_addr: Option<SocketAddr>,
    /// The first index's node id, as its last handshake showed it.
    pub server_node_id: Option<p2p_protocol::NodeId>,
    /// Whether at least one index has the peer registered right now.
    pub registered: bool,
    /// Every index server, in order, and where the peer stands with each.
    pub indexes: Vec<crate::index::IndexStatus>,
    /// Files shared.
    pub files_shared: usize,
    /// Chunks served to other peers.
    pub chunks_served: u64,
    /// Download jobs not finished.
    pub downloads_active: usize,
    /// Hosts named for direct downloads (`--from`, `connect`).
    pub direct_hosts: Vec<SocketAddr>,
}

/// Finished jobs kept for listings; beyond this the ones that ended first are forgotten.
pub const KEPT_FINISHED: usize = 1000;
/// Changes a slow listener may fall behind by before it sees `Lagged` (and re-reads).
const CHANGES_CAPACITY: usize = 256;

/// One job in the registry.
#[derive(Debug)]
struct Entry {
    target: String,
    out: PathBuf,
    request: Arc<DownloadRequest>,
    name: Option<String>,
    file_id: Option<FileId>,
    folder_id: Option<FolderId>,
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
            folder_id: self.folder_id,
            files_total: count(self.progress.files_total()),
            files_done: count(self.progress.files_done()),
            files_skipped: count(self.progress.files_skipped()),
            conflicts: count(self.progress.conflicts()),
            files_failed: count(self.progress.files_failed()),
            size: self.progress.size(),
            done: self.progress.done(),
            resumed: self.progress.resumed(),
            fetched: self.progress.fetched(),
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

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The registry: every job of this run, under one std Mutex that is held for a lookup or an
/// update, never across an await, so no reader (a slow web client) can hold a download back.
#[derive(Debug)]
pub(crate) struct Downloads {
    jobs: Mutex<Jobs>,
    next: AtomicU64,
    changes: broadcast::Sender<PeerChange>,
    /// Told of every run nobody observes (see [`PeerHandle::observe_other_jobs`]). std
    /// Mutex: a clone out at the start of a run.
    others: Mutex<Option<UnboundedSender<(DownloadId, JobUpdate)>>>,
}

impl Default for Downloads {
    fn default() -> Self {
        Self {
            jobs: Mutex::new(Jobs::default()),
            next: AtomicU64::new(1),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            others: Mutex::new(None),
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
    pub request: Arc<DownloadRequest>,
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

    /// Where a run that nobody observes sends its updates, if anywhere.
    fn others(&self) -> Option<UnboundedSender<(DownloadId, JobUpdate)>> {
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Announces a change; nobody listening is fine.
    pub fn announce(&self, change: PeerChange) {
        let _ = self.changes.send(change);
    }

    /// Adds a job in state `LookingUp`; returns what its first run needs.
    pub fn insert(
        &self,
        target: String,
        request: DownloadRequest,
        out: PathBuf,
        cancel: CancellationToken,
    ) -> RunTicket {
        let now = Instant::now();
        let id = DownloadId(self.next.fetch_add(1, Ordering::Relaxed));
        // A job from a manifest file knows its name, size and files from the start.
        let (name, file_id, size, files) = match (&request.manifest, &request.folder) {
            (Some(m), _) => (Some(m.name.clone()), Some(m.id()), Some(m.size), Some(1)),
            (None, Some(folder)) => (
                Some(folder.name.clone()),
                None,
                Some(folder.files.iter().map(|f| f.manifest.size).sum()),
                Some(folder.files.len() as u64),
            ),
            (None, None) => (None, None, None, None),
        };
        let request = Arc::new(request);
        let running = Arc::new(tokio::sync::Mutex::new(()));
        let ticket = RunTicket {
            id,
            run: 0,
            out: out.clone(),
            request: request.clone(),
            cancel: cancel.clone(),
            running: running.clone(),
            observer: None,
        };
        let entry = Entry {
            target,
            out,
            request,
            name,
            file_id,
            folder_id: None,
            progress: Progress::new(size, files, now),
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
                request: entry.request.clone(),
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

    fn apply(&self, id: DownloadId, run: u64, event: &DownloadEvent) {
        self.update(id, Some(run), |e, now| {
            e.progress.apply(event, now);
            let state = match event {
                // A file of a folder starting names nothing: the job keeps its folder's name.
                DownloadEvent::Started { name, .. } if !e.progress.is_folder() => {
                    e.name = Some(name.clone());
                    DownloadState::Running
                }
                DownloadEvent::JobStarted { name, .. } => {
                    e.name = Some(name.clone());
                    DownloadState::Running
                }
                DownloadEvent::Started { .. }
                | DownloadEvent::ChunkDone { .. }
                | DownloadEvent::FileDone { .. }
                    if e.state == DownloadState::LookingUp =>
                {
                    DownloadState::Running
                }
                // A file of a folder being flushed is no state of the whole job.
                DownloadEvent::Flushing if !e.progress.is_folder() => DownloadState::Flushing,
                _ => return false,
            };
            if e.state.is_finished() || e.state == state {
                return false;
            }
            e.state = state;
            true
        });
    }

    /// The run `run` resolved its request into `source`: the job's name, id, size, file count
    /// and hosts are known from now on.
    fn resolved(&self, id: DownloadId, run: u64, source: &JobSource) {
        self.update(id, Some(run), |e, _| {
            match source {
                JobSource::File {
                    file_id,
                    manifest,
                    hosts,
                } => {
                    e.name = Some(manifest.name.clone());
                    e.file_id = Some(*file_id);
                    e.progress.resolved(manifest.size, 1, hosts.len(), false);
                }
                JobSource::Folder {
                    folder_id,
                    head,
                    hosts,
                    ..
                } => {
                    e.name = Some(head.name.clone());
                    e.file_id = None;
                    e.folder_id = Some(*folder_id);
                    e.progress
                        .resolved(head.size, head.files, hosts.len(), true);
                }
            }
            false
        });
    }

    /// Ends a run: done (every file in place), failed (some file missing, or an error) or
    /// cancelled.
    fn finish(&self, id: DownloadId, run: u64, result: &Result<JobReport, PeerError>) {
        self.update(id, Some(run), |e, now| {
            if e.state.is_finished() {
                return false;
            }
            let state = match result {
                Ok(report) => {
                    e.progress.ended(report);
                    match shortfall(report, e.progress.is_folder()) {
                        None => {
                            e.path = Some(report.path.clone());
                            DownloadState::Done
                        }
                        Some(_) if e.cancel.is_cancelled() => DownloadState::Cancelled,
                        Some(missing) => {
                            let hint = if e.progress.is_folder() {
                                "; run the same download again to resume"
                            } else {
                                ""
                            };
                            DownloadState::Failed(
                                printable(&format!("{missing}{hint}")).to_string(),
                            )
                        }
                    }
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

/// What a run that ended without every file in place is missing, in one line; `None` when
/// every file is there. A folder: `3 of 5000 files missing (1 conflict, 2 failed)`. A single
/// file: its path and what is in the way (or why it failed).
pub fn shortfall(report: &JobReport, folder: bool) -> Option<String> {
    if report.complete() {
        return None;
    }
    if !folder {
        if let Some(conflict) = report.conflicts.first() {
            return Some(format!(
                "{}: {}; it was left as it is: move it away, or download into another folder",
                conflict.path.display(),
                conflict.reason
            ));
        }
        if let Some(failed) = report.failed.first() {
            return Some(format!("{}: {}", failed.path.display(), failed.reason));
        }
    }
    let missing = report
        .files
        .saturating_sub(report.fetched + report.already_there);
    let mut why = Vec::new();
    match report.conflicts_total {
        0 => {}
        1 => why.push("1 conflict".to_owned()),
        n => why.push(format!("{n} conflicts")),
    }
    if report.failed_total > 0 {
        why.push(format!("{} failed", report.failed_total));
    }
    let unexplained = missing.saturating_sub(report.conflicts_total + report.failed_total);
    if unexplained > 0 {
        why.push(format!("{unexplained} not fetched"));
    }
    Some(format!(
        "{missing} of {} files missing ({})",
        report.files,
        why.join(", ")
    ))
}

/// Download jobs: what every front end (the command line, the shells, the web API) calls to
/// start, list, cancel and resume them.
impl PeerHandle {
    /// Starts a download job in the background: what `request` names (a file or a folder)
    /// fetched into `out`, also from the direct hosts. `target` is what the user asked for
    /// (shown in listings). `out` must be an existing folder.
    pub async fn start_download(
        &self,
        target: String,
        request: DownloadRequest,
        out: PathBuf,
    ) -> Result<DownloadId, PeerError> {
        self.start_job(target, request, out, None).await
    }

    /// [`Self::start_download`], for a front end that shows the job itself: `observer` gets
    /// the job's events as they come, then the run's end: its report, or its error as it was
    /// (see [`JobUpdate`]). The job is listed, cancelled and resumed like any other.
    pub async fn start_download_observed(
        &self,
        target: String,
        request: DownloadRequest,
        out: PathBuf,
        observer: UnboundedSender<JobUpdate>,
    ) -> Result<DownloadId, PeerError> {
        self.start_job(target, request, out, Some(observer)).await
    }

    async fn start_job(
        &self,
        target: String,
        request: DownloadRequest,
        out: PathBuf,
        observer: Option<UnboundedSender<JobUpdate>>,
    ) -> Result<DownloadId, PeerError> {
        if !is_dir(&out).await {
            return Err(PeerError::NoOutputFolder(out));
        }
        let mut ticket = self
            .registry()
            .insert(target, request, out, self.shutdown_token());
        ticket.observer = observer;
        let id = ticket.id;
        self.spawn_run(ticket);
        Ok(id)
    }

    /// For a front end that reports every job as it goes (the command line's `--json`): the
    /// runs that no front end observes (a job the web API started, a resumed one) send their
    /// updates here from now on, each with its job's handle, as an observer of
    /// [`Self::start_download_observed`] gets them. One receiver at a time: another call
    /// takes the place of this one.
    pub fn observe_other_jobs(
        &self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<(DownloadId, JobUpdate)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .registry()
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn spawn_run(&self, ticket: RunTicket) {
        let span = info_span!("download", id = %ticket.id);
        self.spawn(run(self.clone(), ticket).instrument(span));
    }

    /// Every download job of this run, oldest first.
    pub fn downloads(&self) -> Vec<DownloadInfo> {
        self.registry().list()
    }

    /// The download jobs that changed (progress included) after registry version `since`, in
    /// the order they last changed, and the registry's version now: pass it as `since` next
    /// time to get only what moved in between (0 gets every job). Builds views of the changed
    /// jobs only, so a live view can poll it often; jobs forgotten meanwhile (see
    /// [`crate::downloads::KEPT_FINISHED`]) are not in it.
    pub fn downloads_changed_since(&self, since: u64) -> (Vec<DownloadInfo>, u64) {
        self.registry().changed_since(since)
    }

    /// One download job.
    pub fn download_info(&self, id: DownloadId) -> Option<DownloadInfo> {
        self.registry().get(id)
    }

    /// Cancels a running job; its part files stay for a resume. A job that has finished (done,
    /// failed or cancelled) is left as it is and answered as it is.
    pub fn cancel_download(&self, id: DownloadId) -> Result<DownloadInfo, PeerError> {
        self.registry().cancel(id)
    }

    /// Runs a cancelled or failed job again into the same folder: the same request once more,
    /// where files already there (identical, checked by hash) are skipped and `.part` files
    /// pick up what was verified. A job that is done is answered as it is; a running one is
    /// [`PeerError::DownloadRunning`].
    pub fn resume_download(&self, id: DownloadId) -> Result<DownloadInfo, PeerError> {
        if let Some(ticket) = self.registry().resume(id, self.shutdown_token())? {
            self.spawn_run(ticket);
        }
        self.registry()
            .get(id)
            .ok_or(PeerError::UnknownDownload(id))
    }
}

/// Whether `path` is a folder (following links), without blocking the reactor on the `stat`.
async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Runs a job once: resolves its request (direct hosts known now, `connect` and `--from`,
/// asked as well), runs the engine on it, shares what it put on disk, and keeps the job's
/// entry up to date and its observer (if any) told.
pub(crate) async fn run(peer: PeerHandle, ticket: RunTicket) {
    let RunTicket {
        id,
        run,
        out,
        request,
        cancel,
        running,
        observer,
    } = ticket;
    let downloads = peer.registry();
    // Whoever reports the jobs nobody observes, if this is one.
    let others = match observer {
        Some(_) => None,
        None => downloads.others(),
    };
    let observed = observer.is_some() || others.is_some();
    // Nobody listening any more is fine: the entry is what counts.
    let tell = |update: JobUpdate| {
        if let Some(observer) = &observer {
            let _ = observer.send(update);
        } else if let Some(others) = &others {
            let _ = others.send((id, update));
        }
    };
    // After a cancelled run has let go of its part files.
    let _running = running.lock_owned().await;
    let mut request = (*request).clone();
    for host in peer.direct_hosts() {
        if !request.hosts.contains(&host) {
            request.hosts.push(host);
        }
    }
    let event = |event: DownloadEvent| {
        downloads.apply(id, run, &event);
        tell(JobUpdate::Event(event));
    };
    let result = run_once(&peer, id, run, &request, &out, &cancel, event).await;
    // An observer reports the end itself (the command line prints the error).
    if !observed {
        match &result {
            Err(err) => warn!(download = %id, %err, "download ended"),
            Ok(report) if !report.complete() => {
                warn!(download = %id, missing = report.files - report.fetched - report.already_there, "download ended with files missing");
            }
            Ok(_) => {}
        }
    }
    downloads.finish(id, run, &result);
    tell(JobUpdate::Ended(result));
}

/// One run of a job: resolve, engine, share. Events go to `event` as they come.
async fn run_once(
    peer: &PeerHandle,
    id: DownloadId,
    run: u64,
    request: &DownloadRequest,
    out: &Path,
    cancel: &CancellationToken,
    event: impl Fn(DownloadEvent),
) -> Result<JobReport, PeerError> {
    let (source, refresh) = tokio::select! {
        resolved = peer.resolve(request) => resolved?,
        () = cancel.cancelled() => return Err(PeerError::Cancelled),
    };
    peer.registry().resolved(id, run, &source);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = download::run(
        source,
        out,
        peer.download_options(),
        EventSink::new(Some(tx)),
        refresh,
        cancel.clone(),
    );
    tokio::pin!(job);
    let ended = loop {
        tokio::select! {
            ended = &mut job => break ended,
            Some(e) = rx.recv() => event(e),
        }
    };
    while let Ok(e) = rx.try_recv() {
        event(e);
    }
    let mut report = ended?;
    // Share what is on disk now (verified, not hashed again).
    if let Some(fetched) = report.shared.take() {
        peer.share_fetched(fetched).await;
    }
    Ok(report)
}

impl PeerHandle {
    /// The download knobs of this peer.
    fn download_options(&self) -> DownloadOptions {
        let node = &self.node;
        DownloadOptions::new(&node.config, node.tls.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::download::FileProblem;

    fn started(size: u64) -> DownloadEvent {
        DownloadEvent::Started {
            file_id: FileId([7; 32]),
            name: "f".into(),
            size,
            chunks: 1,
            hosts: 1,
            resumed: 0,
        }
    }

    fn chunk(bytes: usize) -> DownloadEvent {
        DownloadEvent::ChunkDone {
            index: 0,
            bytes,
            host: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    /// What a run that put every one of `files` files (`size` bytes) in place reports.
    fn report(files: u64, size: u64) -> JobReport {
        JobReport {
            path: PathBuf::from("/tmp/f"),
            files,
            fetched: files,
            already_there: 0,
            conflicts: Vec::new(),
            conflicts_total: 0,
            failed: Vec::new(),
            failed_total: 0,
            bytes_fetched: size,
            bytes_resumed: 0,
            size,
            elapsed: Duration::from_secs(1),
            per_host: Vec::new(),
            shared: None,
        }
    }

    fn problem(path: &str, reason: &str) -> FileProblem {
        FileProblem {
            path: PathBuf::from(path),
            reason: reason.into(),
        }
    }

    fn job(downloads: &Downloads) -> RunTicket {
        downloads.insert(
            "t".into(),
            DownloadRequest::by_id("abcdef12"),
            PathBuf::from("/tmp"),
            CancellationToken::new(),
        )
    }

    fn folder_job(downloads: &Downloads) -> RunTicket {
        let ticket = job(downloads);
        downloads.apply(
            ticket.id,
            ticket.run,
            &DownloadEvent::JobStarted {
                name: "album".into(),
                files: 5000,
                size: 5000,
                hosts: 2,
                resumed: 0,
            },
        );
        ticket
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
        downloads.apply(id, first.run, &started(10));
        downloads.finish(id, first.run, &Err(PeerError::Cancelled));
        let info = downloads.get(id).unwrap();
        assert_eq!((info.state, info.size), (DownloadState::LookingUp, 0));
        // The second one does.
        downloads.apply(id, second.run, &started(10));
        downloads.apply(id, second.run, &chunk(10));
        downloads.finish(id, second.run, &Ok(report(1, 10)));
        let info = downloads.get(id).unwrap();
        assert_eq!(info.state, DownloadState::Done);
        assert_eq!((info.done, info.files_done, info.files_total), (10, 1, 1));
        assert_eq!(info.path, Some(PathBuf::from("/tmp/f")));
        // Done: cancel and resume leave it as it is.
        assert_eq!(downloads.cancel(id).unwrap().state, DownloadState::Done);
        assert!(
            downloads
                .resume(id, CancellationToken::new())
                .unwrap()
                .is_none()
        );
        // insert, cancel, resume, Running, Done: one change each, no more (none per chunk).
        let mut seen = 0;
        while changes.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 5);
        assert!(matches!(
            downloads.cancel(DownloadId(99)),
            Err(PeerError::UnknownDownload(DownloadId(99)))
        ));
    }

    #[test]
    fn a_folder_job_is_one_entry_counting_its_files() {
        let downloads = Downloads::default();
        let mut changes = downloads.changes().subscribe();
        let ticket = folder_job(&downloads);
        let id = ticket.id;
        // A big file of the folder starting (its part file ready) names nothing.
        downloads.apply(id, ticket.run, &started(10));
        for n in 0..10u64 {
            downloads.apply(
                id,
                ticket.run,
                &DownloadEvent::FileDone {
                    path: PathBuf::from(format!("/tmp/album/{n}")),
                    bytes: 1,
                    already_there: n < 4,
                },
            );
        }
        downloads.apply(
            id,
            ticket.run,
            &DownloadEvent::FileConflict {
                path: PathBuf::from("/tmp/album/x"),
                reason: "a folder is there".into(),
            },
        );
        let info = downloads.get(id).unwrap();
        assert_eq!(downloads.list().len(), 1);
        assert_eq!(info.name.as_deref(), Some("album"));
        assert_eq!(
            (
                info.files_total,
                info.files_done,
                info.files_skipped,
                info.conflicts
            ),
            (5000, 10, 4, 1)
        );
        assert_eq!((info.size, info.done), (5000, 10));
        // insert and Running are news; files done are progress (a version), not news.
        let mut seen = 0;
        while changes.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_folder_missing_files_fails_with_a_summary_and_resumes() {
        let downloads = Downloads::default();
        let ticket = folder_job(&downloads);
        let id = ticket.id;
        let ended = JobReport {
            fetched: 4990,
            already_there: 7,
            conflicts: vec![problem("/tmp/album/a", "a folder is there")],
            conflicts_total: 1,
            failed: vec![
                problem("/tmp/album/b", "no host has it"),
                problem("/tmp/album/c", "no host has it"),
            ],
            failed_total: 2,
            ..report(5000, 5000)
        };
        downloads.finish(id, ticket.run, &Ok(ended));
        let info = downloads.get(id).unwrap();
        assert_eq!(
            info.state,
            DownloadState::Failed(
                "3 of 5000 files missing (1 conflict, 2 failed); run the same download again \
                 to resume"
                    .into()
            )
        );
        assert_eq!(
            (
                info.files_done,
                info.files_skipped,
                info.conflicts,
                info.files_failed
            ),
            (4997, 7, 1, 2)
        );
        assert_eq!(info.path, None);
        // A resume is the same request again; the new run counts from nothing.
        let again = downloads
            .resume(id, CancellationToken::new())
            .unwrap()
            .unwrap();
        let info = downloads.get(id).unwrap();
        assert_eq!((info.files_done, info.conflicts), (0, 0));
        assert_eq!(again.request.id, "abcdef12");
    }

    #[test]
    fn a_single_file_in_the_way_is_named() {
        let ended = JobReport {
            fetched: 0,
            conflicts: vec![problem("/tmp/f", "a different file is there (5 bytes)")],
            conflicts_total: 1,
            ..report(1, 10)
        };
        assert_eq!(
            shortfall(&ended, false).unwrap(),
            "/tmp/f: a different file is there (5 bytes); it was left as it is: move it away, \
             or download into another folder"
        );
        // The same report as a one-file folder is counted, not named.
        assert_eq!(
            shortfall(&ended, true).unwrap(),
            "1 of 1 files missing (1 conflict)"
        );
        assert_eq!(shortfall(&report(3, 3), true), None);
        // Files missing without a reason listed (the run stopped early) are said so.
        let short = JobReport {
            fetched: 1,
            ..report(3, 3)
        };
        assert_eq!(
            shortfall(&short, true).unwrap(),
            "2 of 3 files missing (2 not fetched)"
        );
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
        downloads.apply(long.id, long.run, &started(10));
        downloads.apply(long.id, long.run, &chunk(10));
        downloads.finish(long.id, long.run, &Ok(report(1, 10)));
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
        downloads.apply(a.id, a.run, &started(10));
        downloads.apply(a.id, a.run, &chunk(4));
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
}
