//! The download scheduler: which chunk of which file goes to which host, and when. A pure state
//! machine: no tokio, no I/O, no locks, no clock. The engine passes `now` in, reports what
//! happened ([`Scheduler::on`] with an [`Outcome`]) and carries out what it is told
//! ([`Scheduler::next`] returns [`Action`]s until `None`); [`Scheduler::wake_at`] says when
//! time alone will have something to do.
//!
//! # Driving it
//! ```text
//! let mut s = Scheduler::new(limits, hosts);
//! loop {
//!     while s.wants_files() > 0 && <more files> { s.add_file(ix, FileSpec::of(&m), missing) }
//!     if <no more files> { s.no_more_files() }
//!     while let Some(action) = s.next(now) { <carry it out> }
//!     if s.is_done() { break }
//!     <wait for a link reply, a disk completion, the index, or sleep_until(s.wake_at())>
//!     for note in s.on(outcome, now) { <events, logs> }
//! }
//! ```
//! Every [`Action::Fetch`] is answered by exactly one of [`Outcome::Delivered`],
//! [`Outcome::Duplicate`], [`Outcome::Failed`] or [`Outcome::Withdrawn`] for the same chunk
//! and host; every [`Action::FinishFile`] by [`Outcome::FileFinished`] or
//! [`Outcome::FileAbandoned`]; every [`Action::AskIndex`] by [`Outcome::HostsListed`] or
//! [`Outcome::IndexFailed`]. After [`Action::GiveUp`] the job is over and `next` returns `None`.
//!
//! # Rules (each has a unit test below; the host table's own are in `hosts.rs`)
//! * **Many files, one job**: chunks are [`ChunkRef`]s of files the engine adds as it learns
//!   them. At most `open_files` ([`OPEN_FILES`]) files are open (added and not yet finished,
//!   failed or abandoned); [`Scheduler::wants_files`] says how many more may be added. Chunks
//!   are fetched in the order files were added, so files finish (and leave the window) in order.
//! * **Bounds**: at most `workers` requests and `max_bytes` bytes of chunks are in flight for
//!   the whole job (every copy counted; a request goes out while the bytes are under the
//!   bound, so one chunk always fits), and at most `per_host` ([`PIPELINE_DEPTH`] ×
//!   the connections a host may get, not those open yet: see `links.rs`) on one host. So a big file has `PeerConfig::workers` 4 MiB chunks in flight,
//!   and a folder of small files many more, pipelined, in the same memory.
//! * **Rotation**: a chunk goes to the least loaded usable host, ties broken by a rotation on the
//!   chunk, so equal hosts share the work evenly.
//! * **Avoid the last failer**: a chunk a host just failed goes to another host if one is usable.
//! * **Requeue on fault**: a failed or withdrawn chunk goes back to the front of the queue,
//!   unless another copy of it is still in flight.
//! * **Host faults**: [`HostFault::effect`] decides (retry and count, lacks the file, drop, ban);
//!   see `hosts.rs`. A host that lacks one file of a folder is not asked for that file again but
//!   keeps serving the others; one that lacks every file left (the only file of a single-file
//!   job) is dropped, and says so.
//! * **Endgame**: when the queue has nothing a host can take, a chunk in flight for longer than
//!   max(3 × the moving average chunk time, 300 ms) is asked from a second host (never more than
//!   [`ENDGAME_COPIES`] copies, never twice from one host). The first verified copy wins; the
//!   other's delivery counts as a duplicate and nothing else.
//! * **A file nobody can serve fails alone**: when no known host could ever serve a file (each
//!   lacks it or is banned; without an index, dropped hosts count too, since nothing revives
//!   them) while other hosts are live, that file fails ([`Action::FileFailed`]) and the job goes
//!   on with the others.
//! * **Stall**: the job stalls when chunks wait and no live host can take them (every host
//!   dropped, or the ones left lack those files). Then it asks the index for hosts at once and
//!   every [`REFRESH_EVERY`] after (never two asks at once); a listed host that is new is added,
//!   a dropped one that is not banned is revived, and the waiting chunks go back to the queue.
//!   Without an index (hosts named directly) and no live host, it gives up at once. A delivered
//!   chunk ends the stall; revived hosts that fail again do not restart its clock. After
//!   `stall_timeout` it gives up ([`Action::GiveUp`]) if no host is live, or else fails the
//!   files still waiting. The [`Failure`] names the verified chunk count and the last error.
//! * **Finish**: when every chunk of a file is verified, [`Action::FinishFile`].
//! * **Record saves**: a file with chunks verified since its last save is saved at most once per
//!   [`RECORD_EVERY`] ([`Action::SaveRecord`]), the first time one interval after its first
//!   delivery. A finished file needs no save (finishing writes it).
//!
//! Memory: per open file a bit per chunk and the hosts that lack it; per queued chunk one entry;
//! finished files are counters. So a job of 100,000 files costs what 256 open files cost.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_protocol::FileManifest;

use super::hosts::{Effect, HostFault, HostIx, HostSpec, HostState, HostStatus, HostTable, Listed};

/// Files open at once in one job (started, not yet finished): bounds the part files held open
/// and the per-file state, whatever the number of files.
pub(crate) const OPEN_FILES: usize = 256;
/// Requests outstanding on one connection (pipelined; replies come in order).
pub(crate) const PIPELINE_DEPTH: usize = 32;
/// Pause between asks to the index while the job is stalled.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, one file's record of verified chunks is saved.
pub(crate) const RECORD_EVERY: Duration = Duration::from_secs(1);
/// Copies of one chunk requested at once in the endgame.
pub(crate) const ENDGAME_COPIES: usize = 2;
/// A chunk in flight for longer than this many typical chunk times gets a second copy...
const ENDGAME_SLOWNESS: u32 = 3;
/// ...and never sooner than this.
const ENDGAME_MIN_WAIT: Duration = Duration::from_millis(300);
/// How far past a chunk whose hosts are all full the queue is searched for a chunk another
/// host can take (a host may lack the first one's file).
const LOOKAHEAD: usize = 64;

/// A file of the job, numbered by the engine (unique within the job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileIx(pub u32);

/// One chunk of one file of the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkRef {
    pub file: FileIx,
    pub index: u32,
}

/// The shape of a file, from its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileSpec {
    pub size: u64,
    pub chunk_size: u32,
    pub chunks: u32,
}

impl FileSpec {
    pub fn of(manifest: &FileManifest) -> Self {
        Self {
            size: manifest.size,
            chunk_size: manifest.chunk_size,
            chunks: manifest.chunks.len() as u32,
        }
    }

    /// Length of chunk `index` in bytes.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        self.size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }
}

/// The job's bounds and patience.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Requests in flight for the whole job.
    pub workers: usize,
    /// Bytes of chunks in flight for the whole job (what bounds the job's buffers).
    pub max_bytes: u64,
    /// Requests in flight on one host: [`PIPELINE_DEPTH`] × its connections.
    pub per_host: usize,
    /// Files open at once ([`OPEN_FILES`]).
    pub open_files: usize,
    /// Failures (or files it lacks) after which a host is dropped.
    pub max_host_failures: u32,
    /// How long a stall may last before the job (or the files still waiting) gives up.
    pub stall_timeout: Duration,
    /// Whether there is an index to ask for hosts ([`Action::AskIndex`]); `false` for hosts
    /// named directly, which nothing can replace or revive.
    pub index: bool,
}

impl Limits {
    /// The bounds of a job with `workers` (`PeerConfig::workers`: that many whole chunks in
    /// flight, or as many requests for smaller chunks as fit in the same bytes, up to
    /// [`PIPELINE_DEPTH`] per worker).
    pub fn new(
        workers: usize,
        links_per_host: usize,
        max_host_failures: u32,
        stall_timeout: Duration,
        index: bool,
    ) -> Self {
        let workers = workers.max(1);
        Self {
            workers: workers * PIPELINE_DEPTH,
            max_bytes: workers as u64 * u64::from(p2p_protocol::CHUNK_SIZE),
            per_host: PIPELINE_DEPTH * links_per_host.max(1),
            open_files: OPEN_FILES,
            max_host_failures,
            stall_timeout,
            index,
        }
    }
}

/// Whether a fetch is a chunk's first request or an endgame copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FetchKind {
    First,
    Endgame,
}

/// What the engine must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Ask `host` for `chunk`.
    Fetch {
        chunk: ChunkRef,
        host: HostIx,
        kind: FetchKind,
    },
    /// Every chunk of the file is verified: flush it and give it its name.
    FinishFile(FileIx),
    /// Save the file's record of verified chunks.
    SaveRecord(FileIx),
    /// Ask the index for the job's hosts.
    AskIndex,
    /// The file cannot be completed in this job; the scheduler has forgotten it (replies for
    /// its chunks still in flight are ignored). The job goes on.
    FileFailed(FileIx, Failure),
    /// The job cannot go on: stop it (what was verified stays for a later run).
    GiveUp(Failure),
}

/// What happened, for the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The chunk arrived, verified and was written: this copy was the first.
    Delivered {
        chunk: ChunkRef,
        host: HostIx,
        /// From the request to the verified chunk.
        took: Duration,
    },
    /// The chunk arrived but another copy was written first.
    Duplicate { chunk: ChunkRef, host: HostIx },
    /// The request failed.
    Failed {
        chunk: ChunkRef,
        host: HostIx,
        fault: HostFault,
        /// What went wrong, as the user reads it (`PeerFailed`, the final error).
        error: String,
    },
    /// The engine took the request back (its link closed with the host dropped, its file
    /// abandoned): nobody's fault.
    Withdrawn { chunk: ChunkRef, host: HostIx },
    /// The file asked for by [`Action::FinishFile`] is in place.
    FileFinished(FileIx),
    /// The engine stopped fetching the file (a disk error, or its finish failed): it leaves the
    /// window.
    FileAbandoned(FileIx),
    /// The index's answer to [`Action::AskIndex`] (this peer already filtered out).
    HostsListed(Vec<HostSpec>),
    /// The index could not be asked; the next ask comes [`REFRESH_EVERY`] later.
    IndexFailed(String),
}

/// Something worth an event or a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // all about hosts, so far
pub(crate) enum Note {
    /// A request to the host failed; `dropped`: this failure dropped the host.
    HostFailed {
        host: HostIx,
        addr: SocketAddr,
        error: String,
        dropped: bool,
    },
    /// The index named a host the job did not know.
    HostAdded { host: HostIx, addr: SocketAddr },
    /// The index listed a dropped host again; it is asked again.
    HostRevived { host: HostIx, addr: SocketAddr },
}

/// Why a file or the job gave up, with the count a user reads ("failed with `done` of `total`
/// chunks complete: `reason`", [`crate::PeerError::DownloadFailed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Chunks verified (resumed ones included): of the file, or of every file of the job.
    pub done: usize,
    /// Chunks in the file, or in every file added to the job.
    pub total: usize,
    /// One line, ending with what to do.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed with {} of {} chunks complete: {}",
            self.done, self.total, self.reason
        )
    }
}

/// A chunk waiting for a host, and the host that last failed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queued {
    chunk: ChunkRef,
    avoid: Option<HostIx>,
}

/// The copies of one chunk in flight: host, since when, and the chunk's length.
type Copies = Vec<(HostIx, Instant, u64)>;

/// One open file.
#[derive(Debug)]
struct FileState {
    spec: FileSpec,
    /// Bit per chunk: still to be verified.
    needed: Box<[u64]>,
    /// Chunks still to be verified.
    waiting: u32,
    /// Hosts that said they lack this file.
    lacks: Vec<HostIx>,
    /// Chunks verified since the record was last saved.
    dirty: bool,
    saved_at: Option<Instant>,
    /// [`Action::FinishFile`] went out.
    finishing: bool,
    /// The last failure of one of its chunks, `addr: error`.
    last_error: Option<String>,
}

impl FileState {
    fn needs(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.needed.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Clears the chunk's bit; whether it was set.
    fn take(&mut self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        match self.needed.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => {
                *w &= !(1 << bit);
                true
            }
            _ => false,
        }
    }

    fn done(&self) -> usize {
        (self.spec.chunks - self.waiting) as usize
    }
}

/// Where a queued chunk can go now.
enum Place {
    Host(HostIx),
    /// Usable hosts exist but all are full.
    Busy,
    /// No live host can take it, but a re-list could bring one (a dropped host that does not
    /// lack the file).
    Starved,
    /// No known host could ever serve its file.
    Hopeless,
    /// No host is live at all: the job stalls.
    NoLiveHost,
}

/// The scheduler of one download job (see the module docs).
#[derive(Debug)]
pub(crate) struct Scheduler {
    limits: Limits,
    hosts: HostTable,
    files: HashMap<FileIx, FileState>,
    /// Chunks waiting for a host, in the order they will be asked. Every entry is a chunk an
    /// open file still needs and that is not in flight.
    queue: VecDeque<Queued>,
    /// Chunks no live host can take now, until a re-list brings one.
    starved: Vec<Queued>,
    in_flight: HashMap<ChunkRef, Copies>,
    /// Requests in flight, every copy counted.
    requests: usize,
    /// Bytes of the chunks in flight, every copy counted.
    bytes: u64,
    /// Actions decided while handling an outcome, given out first by `next`.
    ready: VecDeque<Action>,
    /// Record saves due: (when, file); entries of files saved or closed since are skipped.
    saves: BinaryHeap<Reverse<(Instant, FileIx)>>,
    /// Moving average of a chunk's time (first copies), for the endgame.
    chunk_time: Duration,
    /// When the current stall began; cleared by a delivered chunk.
    stall_since: Option<Instant>,
    asked_at: Option<Instant>,
    /// An [`Action::AskIndex`] is unanswered.
    asking: bool,
    last_error: Option<String>,
    no_more_files: bool,
    /// [`Action::GiveUp`] went out.
    over: bool,
    chunks_total: usize,
    chunks_verified: usize,
}

impl Scheduler {
    /// A job over `hosts` (this peer already filtered out).
    pub fn new(limits: Limits, hosts: Vec<HostSpec>) -> Self {
        Self {
            hosts: HostTable::new(hosts, limits.max_host_failures),
            limits,
            files: HashMap::new(),
            queue: VecDeque::new(),
            starved: Vec::new(),
            in_flight: HashMap::new(),
            requests: 0,
            bytes: 0,
            ready: VecDeque::new(),
            saves: BinaryHeap::new(),
            chunk_time: Duration::ZERO,
            stall_since: None,
            asked_at: None,
            asking: false,
            last_error: None,
            no_more_files: false,
            over: false,
            chunks_total: 0,
            chunks_verified: 0,
        }
    }

    /// How many more files may be added now (0 once the job is over or no more will come).
    #[allow(dead_code)] // for tests and callers to come
    pub fn wants_files(&self) -> usize {
        if self.over || self.no_more_files {
            return 0;
        }
        self.limits.open_files.saturating_sub(self.files.len())
    }

    /// Opens `file` (of shape `spec`) with the chunks in `missing` still to fetch (the others
    /// are verified already: resumed). A file with nothing missing is finished at once.
    pub fn add_file(&mut self, file: FileIx, spec: FileSpec, missing: Vec<u32>) {
        debug_assert!(!self.files.contains_key(&file), "file {file:?} added twice");
        debug_assert!(
            self.files.len() < self.limits.open_files,
            "more files added than wants_files allows"
        );
        if self.over || self.files.contains_key(&file) {
            return;
        }
        let mut needed = vec![0u64; (spec.chunks as usize).div_ceil(64)].into_boxed_slice();
        let mut waiting = 0;
        for index in missing {
            let (word, bit) = (index as usize / 64, index % 64);
            match needed.get_mut(word) {
                Some(w) if index < spec.chunks && *w & (1 << bit) == 0 => {
                    *w |= 1 << bit;
                    waiting += 1;
                    self.queue.push_back(Queued {
                        chunk: ChunkRef { file, index },
                        avoid: None,
                    });
                }
                _ => debug_assert!(false, "chunk {index} of {file:?} is out of range or twice"),
            }
        }
        self.chunks_total += spec.chunks as usize;
        self.chunks_verified += (spec.chunks - waiting) as usize;
        let finishing = waiting == 0;
        self.files.insert(
            file,
            FileState {
                spec,
                needed,
                waiting,
                lacks: Vec::new(),
                dirty: false,
                saved_at: None,
                finishing,
                last_error: None,
            },
        );
        if finishing {
            self.ready.push_back(Action::FinishFile(file));
        }
    }

    /// The engine has added every file of the job.
    pub fn no_more_files(&mut self) {
        self.no_more_files = true;
    }

    /// Whether every file was added and has left the window (finished, failed or abandoned).
    /// Requests still in flight then are endgame copies nobody needs.
    pub fn is_done(&self) -> bool {
        self.no_more_files && self.files.is_empty() && self.ready.is_empty() && !self.over
    }

    /// Whether the engine should still verify and write a copy of `chunk`.
    pub fn needs(&self, chunk: ChunkRef) -> bool {
        self.files
            .get(&chunk.file)
            .is_some_and(|f| f.needs(chunk.index))
    }

    pub fn host(&self, host: HostIx) -> &HostSpec {
        &self.hosts.get(host).spec
    }

    /// Hosts known to the job (live or not).
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Chunks each host delivered first, for the job's report.
    pub fn per_host(&self) -> Vec<(SocketAddr, u64)> {
        self.hosts.per_host()
    }

    /// Requests in flight, every copy counted.
    #[allow(dead_code)] // for tests and callers to come
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Requests in flight to `host`.
    #[allow(dead_code)] // for tests and callers to come
    pub fn load(&self, host: HostIx) -> usize {
        self.hosts.get(host).load
    }

    /// Files open now.
    #[allow(dead_code)] // for tests and callers to come
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Chunks verified so far (resumed ones included) and chunks in every file added.
    #[allow(dead_code)] // for tests and callers to come
    pub fn chunks(&self) -> (usize, usize) {
        (self.chunks_verified, self.chunks_total)
    }

    /// Takes in what happened; returns what is worth telling the user.
    pub fn on(&mut self, outcome: Outcome, now: Instant) -> Vec<Note> {
        let mut notes = Vec::new();
        match outcome {
            Outcome::Delivered { chunk, host, took } => {
                self.end_request(chunk, host);
                self.delivered(chunk, host, took, now);
            }
            Outcome::Duplicate { chunk, host } => self.end_request(chunk, host),
            Outcome::Failed {
                chunk,
                host,
                fault,
                error,
            } => {
                self.end_request(chunk, host);
                if let Some(note) = self.failed(chunk, host, fault, error) {
                    notes.push(note);
                }
            }
            Outcome::Withdrawn { chunk, host } => {
                self.end_request(chunk, host);
                self.requeue(chunk, None);
            }
            Outcome::FileFinished(file) | Outcome::FileAbandoned(file) => self.close_file(file),
            Outcome::HostsListed(listed) => {
                self.asking = false;
                notes = self.hosts_listed(listed);
            }
            Outcome::IndexFailed(_) => self.asking = false,
        }
        notes
    }

    /// The next thing to do now, or `None` until an outcome arrives or [`Self::wake_at`].
    pub fn next(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.ready.pop_front() {
            return Some(action);
        }
        if self.over {
            return None;
        }
        if self.has_room() {
            if let Some(action) = self.dispatch_queued(now) {
                return Some(action);
            }
            if let Some((chunk, host)) = self.endgame(now) {
                self.start_request(chunk, host, now);
                return Some(Action::Fetch {
                    chunk,
                    host,
                    kind: FetchKind::Endgame,
                });
            }
        }
        if let Some(file) = self.due_save(now) {
            return Some(Action::SaveRecord(file));
        }
        self.stall(now)
    }

    /// When time alone will give [`Self::next`] something to do (an endgame copy, a record
    /// save, an ask to the index, the stall's end); `None`: only an outcome will. Ask after
    /// `next` returned `None` (it is then in the future).
    pub fn wake_at(&self) -> Option<Instant> {
        if self.over {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if self.has_room() {
            let late = self.late();
            for (chunk, copies) in &self.in_flight {
                if let Some(oldest) = self.endgame_candidate(*chunk, copies) {
                    consider(oldest + late);
                }
            }
        }
        // `next` drops the entries of files saved or closed since; one left on top (a file
        // closed after the last `next`) costs one early wake, nothing more.
        if let Some(Reverse((due, _))) = self.saves.peek() {
            consider(*due);
        }
        if self.stalled() {
            if let Some(since) = self.stall_since {
                consider(since + self.limits.stall_timeout);
            }
            if let Some(asked) = self.asked_at
                && self.limits.index
                && !self.asking
            {
                consider(asked + REFRESH_EVERY);
            }
        }
        at
    }

    // ---- outcomes ----

    /// Another request may go out.
    fn has_room(&self) -> bool {
        self.requests < self.limits.workers && self.bytes < self.limits.max_bytes
    }

    /// The length of `chunk` (0 once its file is closed: its copies were counted at the length
    /// they had, which `end_request` takes back from the copies' entry).
    fn chunk_len(&self, chunk: ChunkRef) -> u64 {
        self.files
            .get(&chunk.file)
            .map_or(0, |f| f.spec.chunk_len(chunk.index))
    }

    fn start_request(&mut self, chunk: ChunkRef, host: HostIx, now: Instant) {
        let len = self.chunk_len(chunk);
        self.in_flight
            .entry(chunk)
            .or_default()
            .push((host, now, len));
        self.hosts.start(host);
        self.requests += 1;
        self.bytes += len;
    }

    fn end_request(&mut self, chunk: ChunkRef, host: HostIx) {
        let Some(copies) = self.in_flight.get_mut(&chunk) else {
            debug_assert!(false, "an outcome for {chunk:?} that was not asked");
            return;
        };
        let Some(pos) = copies.iter().position(|(h, _, _)| *h == host) else {
            debug_assert!(false, "an outcome for {chunk:?} from a host not asked");
            return;
        };
        let (_, _, len) = copies.swap_remove(pos);
        if copies.is_empty() {
            self.in_flight.remove(&chunk);
        }
        self.hosts.end(host);
        self.requests -= 1;
        self.bytes -= len;
    }

    fn delivered(&mut self, chunk: ChunkRef, host: HostIx, took: Duration, now: Instant) {
        let Some(file) = self.files.get_mut(&chunk.file) else {
            return;
        };
        if !file.take(chunk.index) {
            // The first copy was verified already: this is a duplicate.
            return;
        }
        file.waiting -= 1;
        self.chunks_verified += 1;
        self.hosts.delivered(host);
        self.chunk_time = if self.chunk_time.is_zero() {
            took
        } else {
            (self.chunk_time * 7 + took) / 8
        };
        self.stall_since = None;
        if file.waiting == 0 {
            file.finishing = true;
            self.ready.push_back(Action::FinishFile(chunk.file));
        } else if !file.dirty {
            file.dirty = true;
            let due = file.saved_at.unwrap_or(now) + RECORD_EVERY;
            self.saves.push(Reverse((due.max(now), chunk.file)));
        }
    }

    fn failed(
        &mut self,
        chunk: ChunkRef,
        host: HostIx,
        fault: HostFault,
        error: String,
    ) -> Option<Note> {
        let effect = fault.effect();
        let addr = self.hosts.get(host).spec.addr;
        let dropped = match (effect, self.files.get_mut(&chunk.file)) {
            (Effect::Requeue, _) => false,
            (Effect::Lacks, Some(file)) if file.lacks.contains(&host) => false,
            (Effect::Lacks, Some(file)) => {
                file.lacks.push(host);
                let dropped = self.hosts.fault(host, effect);
                // Nothing left to ask it for (a single file's only host, say): dropped like
                // a host that refuses us, which a re-list can revive.
                dropped || (self.lacks_everything(host) && self.hosts.fault(host, Effect::Drop))
            }
            // A file no longer open: its lack costs the host nothing.
            (Effect::Lacks, None) => false,
            (effect, _) => self.hosts.fault(host, effect),
        };
        let avoid = (effect != Effect::Requeue).then_some(host);
        self.requeue(chunk, avoid);
        if effect == Effect::Requeue {
            return None;
        }
        let line = format!("{addr}: {error}");
        if let Some(file) = self.files.get_mut(&chunk.file) {
            file.last_error = Some(line.clone());
        }
        self.last_error = Some(line);
        Some(Note::HostFailed {
            host,
            addr,
            error,
            dropped,
        })
    }

    /// Whether every file still to come lacks `host`: no more files will be added and each
    /// open one says it lacks it.
    fn lacks_everything(&self, host: HostIx) -> bool {
        self.no_more_files && self.files.values().all(|f| f.lacks.contains(&host))
    }

    /// Puts `chunk` back at the front of the queue if its file still needs it and no other
    /// copy is in flight.
    fn requeue(&mut self, chunk: ChunkRef, avoid: Option<HostIx>) {
        if self.needs(chunk) && !self.in_flight.contains_key(&chunk) {
            self.queue.push_front(Queued { chunk, avoid });
        }
    }

    fn close_file(&mut self, file: FileIx) {
        let Some(state) = self.files.remove(&file) else {
            return;
        };
        if state.waiting > 0 {
            // Abandoned: its chunks wait no more.
            self.queue.retain(|q| q.chunk.file != file);
            self.starved.retain(|q| q.chunk.file != file);
        }
    }

    fn fail_file(&mut self, file: FileIx, reason: String) {
        if let Some(state) = self.files.get(&file) {
            let failure = Failure {
                done: state.done(),
                total: state.spec.chunks as usize,
                reason,
            };
            self.close_file(file);
            self.ready.push_back(Action::FileFailed(file, failure));
        }
    }

    fn hosts_listed(&mut self, listed: Vec<HostSpec>) -> Vec<Note> {
        let changes = self.hosts.listed(listed);
        if !changes.is_empty() {
            // Chunks that waited for a host may have one now.
            for q in self.starved.drain(..).rev() {
                self.queue.push_front(q);
            }
        }
        changes
            .into_iter()
            .map(|change| match change {
                Listed::Added(host) => Note::HostAdded {
                    host,
                    addr: self.hosts.get(host).spec.addr,
                },
                Listed::Revived(host) => Note::HostRevived {
                    host,
                    addr: self.hosts.get(host).spec.addr,
                },
            })
            .collect()
    }

    // ---- decisions ----

    /// A fetch for the first queued chunk a host can take; sets aside the chunks no live host
    /// can take, and fails the files nobody can serve.
    fn dispatch_queued(&mut self, now: Instant) -> Option<Action> {
        let mut i = 0;
        let mut busy = 0;
        while i < self.queue.len() && busy < LOOKAHEAD {
            let q = self.queue[i];
            match self.place(q) {
                Place::Host(host) => {
                    self.queue.remove(i);
                    self.start_request(q.chunk, host, now);
                    return Some(Action::Fetch {
                        chunk: q.chunk,
                        host,
                        kind: FetchKind::First,
                    });
                }
                Place::Busy => {
                    i += 1;
                    busy += 1;
                }
                Place::Starved => {
                    self.queue.remove(i);
                    self.starved.push(q);
                }
                Place::Hopeless => {
                    let reason = self.hopeless_reason(q.chunk.file);
                    self.fail_file(q.chunk.file, reason);
                    return self.ready.pop_front();
                }
                Place::NoLiveHost => return None,
            }
        }
        None
    }

    fn place(&self, q: Queued) -> Place {
        let Some(file) = self.files.get(&q.chunk.file) else {
            debug_assert!(false, "a queued chunk of a closed file");
            return Place::Starved;
        };
        let usable =
            |h: HostIx, s: &HostState| s.status == HostStatus::Live && !file.lacks.contains(&h);
        let per_host = self.limits.per_host;
        let rotation = rotation(q.chunk);
        if let Some(host) = self
            .hosts
            .pick(rotation, q.avoid, |h, s| usable(h, s) && s.load < per_host)
        {
            return Place::Host(host);
        }
        if self.hosts.iter().any(|(h, s)| usable(h, s)) {
            return Place::Busy;
        }
        // Every host said it lacks the file (or is banned): none ever will serve it, live or
        // not (a host dropped for lacking every file left included).
        let lacked = !self.hosts.is_empty()
            && self
                .hosts
                .iter()
                .all(|(h, s)| file.lacks.contains(&h) || s.status == HostStatus::Banned);
        if lacked && file.lacks.iter().any(|h| !self.hosts.is_banned(*h)) {
            return Place::Hopeless;
        }
        if !self.hosts.any_live() {
            return Place::NoLiveHost;
        }
        // Live hosts all lack it; a dropped one that does not could be revived by a re-list.
        let revivable = self.limits.index
            && self
                .hosts
                .iter()
                .any(|(h, s)| s.status != HostStatus::Banned && !file.lacks.contains(&h));
        if revivable {
            Place::Starved
        } else {
            Place::Hopeless
        }
    }

    fn hopeless_reason(&self, file: FileIx) -> String {
        let last = self
            .files
            .get(&file)
            .and_then(|f| f.last_error.clone())
            .or_else(|| self.last_error.clone())
            .unwrap_or_else(|| "none".into());
        if self.limits.index {
            format!(
                "every host lacks it or failed (last error: {last}); run the same download again to resume"
            )
        } else {
            format!(
                "every host given failed (last error: {last}); run the same download again to resume"
            )
        }
    }

    /// How long a chunk may take before it gets an endgame copy.
    fn late(&self) -> Duration {
        (self.chunk_time * ENDGAME_SLOWNESS).max(ENDGAME_MIN_WAIT)
    }

    /// When `chunk`'s oldest copy started, if it may get an endgame copy once late: fewer
    /// than [`ENDGAME_COPIES`] copies, still needed, and a usable host with room that is not
    /// fetching it already.
    fn endgame_candidate(&self, chunk: ChunkRef, copies: &Copies) -> Option<Instant> {
        if copies.len() >= ENDGAME_COPIES {
            return None;
        }
        let file = self.files.get(&chunk.file)?;
        if !file.needs(chunk.index) {
            return None;
        }
        self.endgame_host(chunk, copies, file)?;
        copies.iter().map(|(_, since, _)| *since).min()
    }

    fn endgame_host(&self, chunk: ChunkRef, copies: &Copies, file: &FileState) -> Option<HostIx> {
        let per_host = self.limits.per_host;
        self.hosts.pick(rotation(chunk), None, |h, s| {
            s.status == HostStatus::Live
                && s.load < per_host
                && !file.lacks.contains(&h)
                && !copies.iter().any(|(c, _, _)| *c == h)
        })
    }

    /// The late chunk that has waited longest (ties: the first), and a host for its copy.
    fn endgame(&self, now: Instant) -> Option<(ChunkRef, HostIx)> {
        let late = self.late();
        let (_, chunk) = self
            .in_flight
            .iter()
            .filter_map(|(chunk, copies)| {
                let oldest = self.endgame_candidate(*chunk, copies)?;
                (now.saturating_duration_since(oldest) >= late).then_some((oldest, *chunk))
            })
            .min()?;
        let file = self.files.get(&chunk.file)?;
        let host = self.endgame_host(chunk, &self.in_flight[&chunk], file)?;
        Some((chunk, host))
    }

    fn save_pending(&self, file: FileIx) -> bool {
        self.files
            .get(&file)
            .is_some_and(|f| f.dirty && !f.finishing)
    }

    fn due_save(&mut self, now: Instant) -> Option<FileIx> {
        while let Some(Reverse((due, file))) = self.saves.peek().copied() {
            if !self.save_pending(file) {
                self.saves.pop();
                continue;
            }
            if due > now {
                return None;
            }
            self.saves.pop();
            let state = self.files.get_mut(&file).expect("save_pending checked it");
            state.dirty = false;
            state.saved_at = Some(now);
            return Some(file);
        }
        None
    }

    /// Chunks wait and no live host can take them.
    fn stalled(&self) -> bool {
        !self.starved.is_empty() || (!self.queue.is_empty() && !self.hosts.any_live())
    }

    fn stall(&mut self, now: Instant) -> Option<Action> {
        if !self.stalled() {
            return None;
        }
        let last = self.last_error.clone().unwrap_or_else(|| "none".into());
        let live = self.hosts.any_live();
        if !live && !self.limits.index {
            // Nothing can bring a host back.
            return Some(self.give_up(format!(
                "every host given failed (last error: {last}); run the same download again to resume"
            )));
        }
        let since = *self.stall_since.get_or_insert(now);
        if now >= since + self.limits.stall_timeout {
            let reason = format!(
                "no host could deliver for {}s (last error: {last}); run the same download again to resume",
                self.limits.stall_timeout.as_secs()
            );
            if !live {
                return Some(self.give_up(reason));
            }
            // Hosts are live but lack these files: they fail, the others go on.
            self.stall_since = None;
            let mut waiting: Vec<FileIx> = self.starved.iter().map(|q| q.chunk.file).collect();
            waiting.sort_unstable();
            waiting.dedup();
            for file in waiting {
                self.fail_file(file, reason.clone());
            }
            return self.ready.pop_front();
        }
        if self.limits.index
            && !self.asking
            && self.asked_at.is_none_or(|t| now >= t + REFRESH_EVERY)
        {
            self.asking = true;
            self.asked_at = Some(now);
            return Some(Action::AskIndex);
        }
        None
    }

    fn give_up(&mut self, reason: String) -> Action {
        self.over = true;
        self.ready.clear();
        Action::GiveUp(Failure {
            done: self.chunks_verified,
            total: self.chunks_total,
            reason,
        })
    }
}

/// The rotation that breaks ties between equally loaded hosts: equal hosts take turns.
fn rotation(chunk: ChunkRef) -> usize {
    (chunk.index as usize).wrapping_add(chunk.file.0 as usize)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use p2p_protocol::{CHUNK_SIZE, ErrorCode};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::download::hosts::BadData;

    const MS: Duration = Duration::from_millis(1);
    const STALL: Duration = Duration::from_secs(10);

    fn spec(i: usize) -> HostSpec {
        HostSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
            node_id: None,
        }
    }

    fn specs(n: usize) -> Vec<HostSpec> {
        (0..n).map(spec).collect()
    }

    fn limits(workers: usize) -> Limits {
        Limits {
            workers,
            max_bytes: u64::MAX,
            per_host: 1000,
            open_files: OPEN_FILES,
            max_host_failures: 3,
            stall_timeout: STALL,
            index: true,
        }
    }

    fn shape(chunks: u32) -> FileSpec {
        FileSpec {
            size: u64::from(chunks) * u64::from(CHUNK_SIZE),
            chunk_size: CHUNK_SIZE,
            chunks,
        }
    }

    fn c(file: u32, index: u32) -> ChunkRef {
        ChunkRef {
            file: FileIx(file),
            index,
        }
    }

    const H0: HostIx = HostIx(0);
    const H1: HostIx = HostIx(1);

    /// A scheduler over `hosts` hosts with one file of `chunks` chunks, all missing.
    fn one_file(hosts: usize, workers: usize, chunks: u32) -> Scheduler {
        let mut s = Scheduler::new(limits(workers), specs(hosts));
        s.add_file(FileIx(0), shape(chunks), (0..chunks).collect());
        s.no_more_files();
        s
    }

    /// Every action `next` gives now.
    fn drain(s: &mut Scheduler, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(action) = s.next(now) {
            actions.push(action);
            assert!(actions.len() < 100_000, "next never returns None");
        }
        actions
    }

    /// Every action `next` gives now but record saves.
    fn drain_no_saves(s: &mut Scheduler, now: Instant) -> Vec<Action> {
        let mut actions = drain(s, now);
        actions.retain(|a| !matches!(a, Action::SaveRecord(_)));
        actions
    }

    fn fetches(actions: &[Action]) -> Vec<(ChunkRef, HostIx)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fetch { chunk, host, .. } => Some((*chunk, *host)),
                _ => None,
            })
            .collect()
    }

    fn deliver(s: &mut Scheduler, chunk: ChunkRef, host: HostIx, now: Instant) {
        let notes = s.on(
            Outcome::Delivered {
                chunk,
                host,
                took: 100 * MS,
            },
            now,
        );
        assert!(notes.is_empty());
    }

    fn fail(s: &mut Scheduler, chunk: ChunkRef, host: HostIx, fault: HostFault) -> Vec<Note> {
        s.on(
            Outcome::Failed {
                chunk,
                host,
                fault,
                error: format!("{fault:?}"),
            },
            Instant::now(),
        )
    }

    fn dropped(notes: &[Note]) -> bool {
        matches!(notes, [Note::HostFailed { dropped: true, .. }])
    }

    #[test]
    fn equal_hosts_share_chunks_evenly() {
        let mut s = one_file(3, 9, 9);
        let sent = fetches(&drain(&mut s, Instant::now()));
        let mut counts = [0; 3];
        for (_, host) in &sent {
            counts[host.0] += 1;
        }
        assert_eq!(counts, [3, 3, 3]);
    }

    #[test]
    fn the_least_loaded_host_gets_the_next_chunk() {
        let t = Instant::now();
        let mut s = one_file(2, 4, 8);
        let first = fetches(&drain(&mut s, t));
        assert_eq!(first.len(), 4, "workers bound the requests in flight");
        // Host 1 answers both of its chunks; host 0 still holds two.
        for (chunk, host) in first.iter().filter(|(_, h)| *h == H1) {
            deliver(&mut s, *chunk, *host, t);
        }
        let next = fetches(&drain(&mut s, t));
        assert_eq!(next.len(), 2);
        assert!(next.iter().all(|(_, h)| *h == H1), "{next:?}");
    }

    #[test]
    fn a_failed_chunk_goes_first_to_another_host_if_there_is_one() {
        let t = Instant::now();
        let mut s = one_file(2, 1, 3);
        let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        fail(&mut s, chunk, host, HostFault::Timeout);
        let [(again, other)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        assert_eq!(again, chunk, "the failed chunk is requeued at the front");
        assert_ne!(other, host, "and goes to another host");

        // With one host, that one gets it again.
        let mut s = one_file(1, 1, 3);
        let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        fail(&mut s, chunk, host, HostFault::Timeout);
        assert_eq!(fetches(&drain(&mut s, t)), vec![(chunk, host)]);
    }

    #[test]
    fn a_failed_chunk_is_not_requeued_while_another_copy_is_in_flight() {
        let t = Instant::now();
        let mut s = one_file(2, 2, 1);
        let [(chunk, h)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        let copy = fetches(&drain(&mut s, t + ENDGAME_MIN_WAIT));
        assert_eq!(copy.len(), 1, "an endgame copy");
        fail(&mut s, chunk, h, HostFault::Timeout);
        assert!(
            fetches(&drain(&mut s, t + ENDGAME_MIN_WAIT)).is_empty(),
            "the other copy still flies"
        );
    }

    #[test]
    fn endgame_asks_a_second_host_only_after_three_chunk_times_or_300_ms() {
        let t = Instant::now();
        let mut s = one_file(3, 8, 2);
        let sent = fetches(&drain(&mut s, t));
        assert_eq!(sent.len(), 2);
        // One chunk in 100 ms: late means max(3 × 100 ms, 300 ms) = 300 ms.
        deliver(&mut s, sent[1].0, sent[1].1, t + 100 * MS);
        assert!(drain(&mut s, t + 299 * MS).is_empty());
        assert_eq!(s.wake_at(), Some(t + 300 * MS));
        let copy = drain(&mut s, t + 300 * MS);
        let [
            Action::Fetch {
                chunk,
                host,
                kind: FetchKind::Endgame,
            },
        ] = copy[..]
        else {
            panic!("{copy:?}")
        };
        assert_eq!(chunk, sent[0].0);
        assert_ne!(host, sent[0].1, "never twice from one host");
        // Never more than two copies, however late.
        assert!(fetches(&drain(&mut s, t + Duration::from_secs(60))).is_empty());
        assert_eq!(s.wake_at(), None);

        // Slower chunks: 3 × the moving average.
        let mut s = one_file(2, 8, 3);
        let sent = fetches(&drain(&mut s, t));
        s.on(
            Outcome::Delivered {
                chunk: sent[0].0,
                host: sent[0].1,
                took: Duration::from_secs(1),
            },
            t + Duration::from_secs(1),
        );
        assert!(fetches(&drain(&mut s, t + 2999 * MS)).is_empty());
        assert_eq!(fetches(&drain(&mut s, t + 3000 * MS)).len(), 2);
    }

    #[test]
    fn no_endgame_with_a_single_host() {
        let t = Instant::now();
        let mut s = one_file(1, 8, 1);
        assert_eq!(fetches(&drain(&mut s, t)).len(), 1);
        assert!(drain(&mut s, t + Duration::from_secs(60)).is_empty());
        assert_eq!(s.wake_at(), None);
    }

    #[test]
    fn the_first_verified_copy_wins_and_the_other_is_ignored() {
        let t = Instant::now();
        let mut s = one_file(2, 8, 1);
        let [(chunk, slow)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        let [(_, fast)] = fetches(&drain(&mut s, t + ENDGAME_MIN_WAIT))[..] else {
            panic!()
        };
        deliver(&mut s, chunk, fast, t + ENDGAME_MIN_WAIT);
        assert!(!s.needs(chunk), "the engine need not verify the other copy");
        assert_eq!(
            drain(&mut s, t + ENDGAME_MIN_WAIT),
            vec![Action::FinishFile(FileIx(0))]
        );
        // The slow copy arrives too (an engine that did not check `needs`).
        deliver(&mut s, chunk, slow, t + ENDGAME_MIN_WAIT);
        assert!(
            drain(&mut s, t + ENDGAME_MIN_WAIT).is_empty(),
            "finished once"
        );
        assert_eq!(s.chunks(), (1, 1), "counted once");
        assert_eq!(s.per_host(), vec![(spec(0).addr, 0), (spec(1).addr, 1)]);
        assert_eq!(s.requests(), 0);
        s.on(Outcome::FileFinished(FileIx(0)), t);
        assert!(s.is_done());
    }

    #[test]
    fn a_host_is_dropped_after_max_host_failures_and_not_asked_again() {
        let t = Instant::now();
        let mut s = one_file(2, 1, 10);
        let mut failures = 0;
        loop {
            let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
                panic!()
            };
            if host == H1 {
                deliver(&mut s, chunk, host, t);
                continue;
            }
            failures += 1;
            let notes = fail(&mut s, chunk, host, HostFault::Unreachable);
            assert_eq!(dropped(&notes), failures == 3, "{notes:?}");
            if failures == 3 {
                break;
            }
        }
        let mut rest = 0;
        while let [(chunk, host)] = fetches(&drain(&mut s, t))[..] {
            assert_eq!(host, H1, "a dropped host is not asked");
            deliver(&mut s, chunk, host, t);
            rest += 1;
        }
        assert!(rest > 0);
        assert_eq!(drain(&mut s, t), vec![]);
        assert_eq!(s.chunks(), (10, 10));
    }

    #[test]
    fn fault_effects_drop_ban_or_count() {
        let t = Instant::now();
        // Forbidden: dropped at once, and a re-list revives it.
        let mut s = one_file(1, 1, 4);
        let [(chunk, _)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        let notes = fail(&mut s, chunk, H0, HostFault::Refused(ErrorCode::Forbidden));
        assert!(dropped(&notes));
        assert_eq!(drain(&mut s, t), vec![Action::AskIndex]);
        let notes = s.on(Outcome::HostsListed(specs(1)), t);
        assert_eq!(
            notes,
            vec![Note::HostRevived {
                host: H0,
                addr: spec(0).addr
            }]
        );
        assert_eq!(fetches(&drain(&mut s, t)), vec![(chunk, H0)]);

        // Another node at the address: banned at once; a re-list does not bring it back.
        let notes = fail(&mut s, chunk, H0, HostFault::WrongNode);
        assert!(dropped(&notes));
        assert_eq!(drain(&mut s, t + REFRESH_EVERY), vec![Action::AskIndex]);
        assert_eq!(s.on(Outcome::HostsListed(specs(1)), t), vec![]);
        assert!(fetches(&drain(&mut s, t + 2 * REFRESH_EVERY)).is_empty());

        // A pooled connection closed while idle: asked again, never held against the host.
        let mut s = one_file(1, 1, 1);
        for _ in 0..10 {
            let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
                panic!()
            };
            assert!(fail(&mut s, chunk, host, HostFault::ClosedIdle).is_empty());
        }
    }

    #[test]
    fn bad_data_counts_and_a_host_that_sent_it_is_never_revived() {
        let t = Instant::now();
        let mut s = one_file(2, 1, 20);
        let bad = HostFault::BadData(BadData::HashMismatch);
        let mut bad_chunks = 0;
        while bad_chunks < 3 {
            let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
                panic!()
            };
            if host == H1 {
                deliver(&mut s, chunk, host, t);
                continue;
            }
            bad_chunks += 1;
            let notes = fail(&mut s, chunk, host, bad);
            // One bad chunk may be a flipped bit on its disk: not dropped for it alone.
            assert_eq!(dropped(&notes), bad_chunks == 3);
        }
        // Host 1 fails too, so nobody is live: a stall.
        for _ in 0..3 {
            let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
                panic!()
            };
            assert_eq!(host, H1);
            fail(&mut s, chunk, host, HostFault::Timeout);
        }
        assert_eq!(drain(&mut s, t), vec![Action::AskIndex]);
        let notes = s.on(Outcome::HostsListed(specs(2)), t);
        assert_eq!(
            notes,
            vec![Note::HostRevived {
                host: H1,
                addr: spec(1).addr
            }],
            "the host that only failed to answer comes back; the liar does not"
        );
        let sent = fetches(&drain(&mut s, t));
        assert!(!sent.is_empty() && sent.iter().all(|(_, h)| *h == H1));
    }

    #[test]
    fn a_re_list_adds_new_hosts_once() {
        let t = Instant::now();
        let mut s = one_file(1, 4, 4);
        for (chunk, host) in fetches(&drain(&mut s, t)) {
            fail(
                &mut s,
                chunk,
                host,
                HostFault::Refused(ErrorCode::Forbidden),
            );
        }
        assert_eq!(drain(&mut s, t), vec![Action::AskIndex]);
        let notes = s.on(Outcome::HostsListed(vec![spec(7), spec(7)]), t);
        assert_eq!(
            notes,
            vec![Note::HostAdded {
                host: H1,
                addr: spec(7).addr
            }]
        );
        let sent = fetches(&drain(&mut s, t));
        assert_eq!(sent.len(), 4);
        assert!(sent.iter().all(|(_, h)| *h == H1));
        assert_eq!(s.per_host().len(), 2);
    }

    /// A seeder that edited files during a job lacks them now, however many: it is never
    /// asked for them again, but stays to serve every other file (the ones it lacks fail
    /// alone, nobody else having them), with an index or without one (`--from`).
    #[test]
    fn a_host_lacking_some_files_keeps_serving_the_others() {
        let t = Instant::now();
        for index in [true, false] {
            let mut s = Scheduler::new(Limits { index, ..limits(2) }, specs(1));
            for f in 0..20 {
                s.add_file(FileIx(f), shape(2), vec![0, 1]);
            }
            s.no_more_files();
            let lacked = [1, 4, 7, 11, 19].map(FileIx);
            let (mut asked_lacked, mut finished, mut failed) = (Vec::new(), Vec::new(), Vec::new());
            while !s.is_done() {
                let actions = drain(&mut s, t);
                assert!(!actions.is_empty(), "index {index}: the job hangs");
                for action in actions {
                    match action {
                        Action::Fetch { chunk, host, .. } if lacked.contains(&chunk.file) => {
                            asked_lacked.push(chunk.file);
                            let notes = fail(
                                &mut s,
                                chunk,
                                host,
                                HostFault::Refused(ErrorCode::UnknownFile),
                            );
                            // Only once it lacks every file left (the others arrived).
                            assert!(
                                !dropped(&notes) || finished.len() == 15,
                                "index {index}: {notes:?}"
                            );
                        }
                        Action::Fetch { chunk, host, .. } => deliver(&mut s, chunk, host, t),
                        Action::FinishFile(file) => {
                            finished.push(file);
                            s.on(Outcome::FileFinished(file), t);
                        }
                        Action::FileFailed(file, _) => failed.push(file),
                        other => panic!("index {index}: {other:?}"),
                    }
                }
            }
            finished.sort();
            let others: Vec<FileIx> = (0..20)
                .map(FileIx)
                .filter(|f| !lacked.contains(f))
                .collect();
            assert_eq!(finished, others, "index {index}: the 15 others arrive");
            failed.sort();
            assert_eq!(failed, lacked, "index {index}");
            asked_lacked.sort();
            asked_lacked.dedup();
            assert_eq!(
                asked_lacked, lacked,
                "index {index}: asked once per file it lacks"
            );
            assert_eq!(
                s.per_host()[0].1,
                30,
                "index {index}: it served every other chunk"
            );
        }
    }

    /// The only file of a job, refused by its only host: the host is dropped (it has nothing
    /// left to give), and says so; with another file still wanted it would not be.
    #[test]
    fn a_host_lacking_every_file_left_is_dropped() {
        let t = Instant::now();
        let mut s = Scheduler::new(limits(1), specs(1));
        s.add_file(FileIx(0), shape(2), vec![0, 1]);
        let sent = fetches(&drain(&mut s, t));
        let notes = fail(
            &mut s,
            sent[0].0,
            H0,
            HostFault::Refused(ErrorCode::UnknownFile),
        );
        assert!(!dropped(&notes), "more files may come: {notes:?}");

        let mut s = Scheduler::new(limits(1), specs(1));
        s.add_file(FileIx(0), shape(2), vec![0, 1]);
        s.no_more_files();
        let sent = fetches(&drain(&mut s, t));
        let notes = fail(
            &mut s,
            sent[0].0,
            H0,
            HostFault::Refused(ErrorCode::FileUnavailable),
        );
        assert!(dropped(&notes), "{notes:?}");
    }

    /// The last file of a job, lacked by its only host after every other file arrived: that
    /// file fails alone (the host, dropped for lacking everything left, does not make the
    /// whole job give up).
    #[test]
    fn the_last_file_lacked_by_every_host_fails_alone() {
        let t = Instant::now();
        for index in [true, false] {
            let mut s = Scheduler::new(Limits { index, ..limits(1) }, specs(1));
            s.add_file(FileIx(0), shape(1), vec![0]);
            s.add_file(FileIx(1), shape(1), vec![0]);
            s.no_more_files();
            let sent = fetches(&drain(&mut s, t));
            deliver(&mut s, sent[0].0, sent[0].1, t);
            let actions = drain(&mut s, t);
            assert!(actions.contains(&Action::FinishFile(FileIx(0))));
            s.on(Outcome::FileFinished(FileIx(0)), t);
            let sent = fetches(&actions);
            assert_eq!(sent[0].0.file, FileIx(1));
            let notes = fail(
                &mut s,
                sent[0].0,
                H0,
                HostFault::Refused(ErrorCode::UnknownFile),
            );
            assert!(dropped(&notes), "{notes:?}");
            let actions = drain(&mut s, t);
            assert!(
                matches!(actions.as_slice(), [Action::FileFailed(FileIx(1), _)]),
                "index {index}: {actions:?}"
            );
            assert!(s.is_done());
        }
    }

    #[test]
    fn a_file_no_host_has_fails_alone() {
        let t = Instant::now();
        for index in [true, false] {
            let mut s = Scheduler::new(Limits { index, ..limits(2) }, specs(2));
            for f in 0..3 {
                s.add_file(FileIx(f), shape(3), vec![0, 1, 2]);
            }
            s.no_more_files();
            let mut finished = Vec::new();
            let mut failed = Vec::new();
            while !s.is_done() {
                let actions = drain(&mut s, t);
                assert!(!actions.is_empty(), "the job hangs");
                for action in actions {
                    match action {
                        Action::Fetch { chunk, host, .. } if chunk.file == FileIx(1) => {
                            let notes = fail(
                                &mut s,
                                chunk,
                                host,
                                HostFault::Refused(ErrorCode::UnknownFile),
                            );
                            assert!(!dropped(&notes), "one lacking file drops no host");
                        }
                        Action::Fetch { chunk, host, .. } => deliver(&mut s, chunk, host, t),
                        Action::FinishFile(file) => {
                            finished.push(file);
                            s.on(Outcome::FileFinished(file), t);
                        }
                        Action::FileFailed(file, failure) => failed.push((file, failure)),
                        other => panic!("{other:?}"),
                    }
                }
            }
            assert_eq!(finished, vec![FileIx(0), FileIx(2)]);
            let [(FileIx(1), ref failure)] = failed[..] else {
                panic!("{failed:?}")
            };
            assert_eq!((failure.done, failure.total), (0, 3));
            let expected = if index {
                "every host lacks it or failed (last error: 127.0.0.1:"
            } else {
                "every host given failed (last error: 127.0.0.1:"
            };
            assert!(failure.reason.starts_with(expected), "{failure}");
            assert!(failure.reason.contains("UnknownFile"), "{failure}");
            assert!(s.per_host().iter().all(|(_, n)| *n > 0), "no host dropped");
        }
    }

    /// Every host dropped: `t0` is when the stall began.
    fn stalled_job(index: bool) -> (Scheduler, Instant) {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Limits { index, ..limits(1) }, specs(1));
        // One chunk of four verified by an earlier run.
        s.add_file(FileIx(0), shape(4), (1..4).collect());
        s.no_more_files();
        for _ in 0..3 {
            let [(chunk, host)] = fetches(&drain(&mut s, t0))[..] else {
                panic!()
            };
            s.on(
                Outcome::Failed {
                    chunk,
                    host,
                    fault: HostFault::Unreachable,
                    error: "connection refused".into(),
                },
                t0,
            );
        }
        (s, t0)
    }

    #[test]
    fn a_stall_asks_the_index_every_second_then_gives_up() {
        let (mut s, t0) = stalled_job(true);
        assert_eq!(drain(&mut s, t0), vec![Action::AskIndex], "at once");
        assert!(
            drain(&mut s, t0 + 5 * REFRESH_EVERY).is_empty(),
            "one ask at a time"
        );
        s.on(Outcome::IndexFailed("index down".into()), t0 + 10 * MS);
        assert_eq!(s.wake_at(), Some(t0 + REFRESH_EVERY));
        assert!(drain(&mut s, t0 + 999 * MS).is_empty());
        assert_eq!(drain(&mut s, t0 + REFRESH_EVERY), vec![Action::AskIndex]);
        // The index lists nobody new.
        assert_eq!(
            s.on(Outcome::HostsListed(vec![]), t0 + REFRESH_EVERY),
            vec![]
        );
        assert_eq!(s.wake_at(), Some(t0 + 2 * REFRESH_EVERY));
        let mut now;
        let mut asks = 2;
        let give_up = loop {
            now = s.wake_at().expect("a stall always has a deadline");
            match &drain(&mut s, now)[..] {
                [Action::AskIndex] => {
                    asks += 1;
                    s.on(Outcome::HostsListed(vec![]), now);
                }
                [Action::GiveUp(failure)] => break failure.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(now, t0 + STALL, "gives up at the stall timeout");
        assert_eq!(asks, 10, "once a second");
        assert_eq!(
            give_up.to_string(),
            "failed with 1 of 4 chunks complete: no host could deliver for 10s (last error: \
             127.0.0.1:1000: connection refused); run the same download again to resume"
        );
        assert!(drain(&mut s, now + STALL).is_empty(), "over");
        assert_eq!(s.wake_at(), None);
        assert_eq!(s.wants_files(), 0);
        assert!(!s.is_done());
    }

    #[test]
    fn without_an_index_every_host_failed_gives_up_at_once() {
        let (mut s, t0) = stalled_job(false);
        let actions = drain(&mut s, t0);
        let [Action::GiveUp(failure)] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            failure.to_string(),
            "failed with 1 of 4 chunks complete: every host given failed (last error: \
             127.0.0.1:1000: connection refused); run the same download again to resume"
        );
    }

    #[test]
    fn revived_hosts_that_fail_again_keep_the_stall_clock_and_a_delivery_ends_it() {
        let (mut s, t0) = stalled_job(true);
        assert_eq!(drain(&mut s, t0), vec![Action::AskIndex]);
        let t1 = t0 + 4 * REFRESH_EVERY;
        s.on(Outcome::HostsListed(specs(1)), t1);
        // Revived, fails three times again: the clock still counts from t0.
        for _ in 0..3 {
            let [(chunk, host)] = fetches(&drain(&mut s, t1))[..] else {
                panic!()
            };
            fail(&mut s, chunk, host, HostFault::Unreachable);
        }
        assert_eq!(drain(&mut s, t1), vec![Action::AskIndex]);
        s.on(Outcome::HostsListed(specs(1)), t1);
        let [(chunk, host)] = fetches(&drain(&mut s, t1))[..] else {
            panic!()
        };
        // This time it delivers: the stall is over...
        deliver(&mut s, chunk, host, t1);
        for _ in 0..3 {
            let [(chunk, host)] = fetches(&drain(&mut s, t1))[..] else {
                panic!()
            };
            fail(&mut s, chunk, host, HostFault::Unreachable);
        }
        // ...so the next one starts a new clock at t2 and lasts the whole timeout.
        let t2 = t0 + 9 * REFRESH_EVERY;
        assert_eq!(drain_no_saves(&mut s, t2), vec![Action::AskIndex]);
        s.on(Outcome::HostsListed(vec![]), t2);
        assert_eq!(drain_no_saves(&mut s, t0 + STALL), vec![Action::AskIndex]);
        s.on(Outcome::HostsListed(vec![]), t0 + STALL);
        assert!(!matches!(
            drain_no_saves(&mut s, t2 + STALL - MS)[..],
            [Action::GiveUp(_)]
        ));
        assert!(matches!(
            drain_no_saves(&mut s, t2 + STALL)[..],
            [Action::GiveUp(_)]
        ));
    }

    #[test]
    fn a_file_waiting_for_a_dropped_host_gets_it_back_on_a_re_list() {
        let t = Instant::now();
        let mut s = Scheduler::new(limits(1), specs(2));
        s.add_file(FileIx(0), shape(1), vec![0]);
        s.add_file(FileIx(1), shape(1), vec![0]);
        s.no_more_files();
        // Host 0 lacks file 0; host 1 is dropped (forbidden) before it gets it.
        let mut asked = false;
        let mut done = Vec::new();
        while !s.is_done() {
            let actions = drain(&mut s, t);
            assert!(!actions.is_empty(), "the job hangs");
            for action in actions {
                match action {
                    Action::Fetch { chunk, host, .. } if chunk.file == FileIx(0) && host == H0 => {
                        fail(
                            &mut s,
                            chunk,
                            host,
                            HostFault::Refused(ErrorCode::UnknownFile),
                        );
                    }
                    Action::Fetch { chunk, host, .. } if host == H1 && !asked => {
                        fail(
                            &mut s,
                            chunk,
                            host,
                            HostFault::Refused(ErrorCode::Forbidden),
                        );
                    }
                    Action::Fetch { chunk, host, .. } => deliver(&mut s, chunk, host, t),
                    Action::AskIndex => {
                        asked = true;
                        s.on(Outcome::HostsListed(specs(2)), t);
                    }
                    Action::FinishFile(file) => {
                        done.push(file);
                        s.on(Outcome::FileFinished(file), t);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(asked);
        done.sort();
        assert_eq!(done, vec![FileIx(0), FileIx(1)]);
    }

    #[test]
    fn files_still_waiting_at_the_stall_timeout_fail_while_live_hosts_go_on() {
        let t = Instant::now();
        let mut s = Scheduler::new(limits(1), specs(2));
        s.add_file(FileIx(0), shape(1), vec![0]);
        s.add_file(FileIx(1), shape(2), vec![0, 1]);
        s.no_more_files();
        // Host 0 lacks file 0, host 1 refuses us (dropped, revivable but never revived).
        let mut now = t;
        let mut failed = Vec::new();
        while !s.is_done() {
            // As an engine does: after outcomes, `next` until None, and only then `wake_at`.
            let actions = drain(&mut s, now);
            if actions.is_empty() {
                now = s.wake_at().expect("waiting files have a deadline");
            }
            for action in actions {
                match action {
                    Action::Fetch { chunk, host, .. } if chunk.file == FileIx(0) && host == H0 => {
                        fail(
                            &mut s,
                            chunk,
                            host,
                            HostFault::Refused(ErrorCode::UnknownFile),
                        );
                    }
                    Action::Fetch { chunk, host, .. } if host == H1 => {
                        fail(
                            &mut s,
                            chunk,
                            host,
                            HostFault::Refused(ErrorCode::Forbidden),
                        );
                    }
                    Action::Fetch { chunk, host, .. } => deliver(&mut s, chunk, host, now),
                    Action::AskIndex => {
                        s.on(Outcome::HostsListed(vec![]), now);
                    }
                    Action::FinishFile(file) => {
                        assert_eq!(file, FileIx(1));
                        s.on(Outcome::FileFinished(file), now);
                    }
                    Action::FileFailed(file, failure) => failed.push((file, failure, now)),
                    other => panic!("{other:?}"),
                }
            }
        }
        let [(FileIx(0), ref failure, when)] = failed[..] else {
            panic!("{failed:?}")
        };
        assert!(when - t >= STALL);
        assert!(
            failure.reason.starts_with("no host could deliver for 10s"),
            "{failure}"
        );
    }

    #[test]
    fn record_saves_at_most_once_a_second_per_file() {
        let t = Instant::now();
        let mut s = one_file(1, 1, 100);
        let mut saves = Vec::new();
        let mut now = t;
        // A chunk every 100 ms for 5 s.
        while now < t + Duration::from_secs(5) {
            for action in drain(&mut s, now) {
                match action {
                    Action::Fetch { chunk, host, .. } => deliver(&mut s, chunk, host, now),
                    Action::SaveRecord(file) => saves.push((file, now)),
                    other => panic!("{other:?}"),
                }
            }
            now += 100 * MS;
        }
        assert!((4..=5).contains(&saves.len()), "{saves:?}");
        for pair in saves.windows(2) {
            assert!(pair[1].1 - pair[0].1 >= RECORD_EVERY, "{saves:?}");
        }
        // Nothing new since the last save: nothing to save.
        let mut s = one_file(1, 1, 3);
        let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        deliver(&mut s, chunk, host, t);
        let _ = drain(&mut s, t);
        assert_eq!(s.wake_at(), Some(t + RECORD_EVERY));
        assert_eq!(
            drain(&mut s, t + RECORD_EVERY),
            vec![Action::SaveRecord(FileIx(0))]
        );
        assert_eq!(s.wake_at(), None);
    }

    #[test]
    fn a_file_with_nothing_missing_finishes_at_once() {
        let t = Instant::now();
        let mut s = Scheduler::new(limits(4), specs(1));
        s.add_file(FileIx(0), shape(0), vec![]);
        s.add_file(FileIx(1), shape(3), vec![]);
        s.no_more_files();
        assert_eq!(
            drain(&mut s, t),
            vec![Action::FinishFile(FileIx(0)), Action::FinishFile(FileIx(1))]
        );
        assert_eq!(s.chunks(), (3, 3));
        s.on(Outcome::FileFinished(FileIx(0)), t);
        s.on(Outcome::FileFinished(FileIx(1)), t);
        assert!(s.is_done());
    }

    #[test]
    fn a_withdrawn_or_abandoned_request_is_nobodys_fault() {
        let t = Instant::now();
        let mut s = one_file(1, 1, 2);
        for _ in 0..5 {
            let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
                panic!()
            };
            assert!(s.on(Outcome::Withdrawn { chunk, host }, t).is_empty());
        }
        let [(chunk, host)] = fetches(&drain(&mut s, t))[..] else {
            panic!()
        };
        // The engine abandons the file (a disk error): its chunks go, the window frees.
        s.on(Outcome::FileAbandoned(FileIx(0)), t);
        assert_eq!(s.wants_files(), 0, "no more files");
        assert!(s.is_done());
        s.on(Outcome::Withdrawn { chunk, host }, t);
        assert_eq!(drain(&mut s, t), vec![]);
        assert_eq!(s.requests(), 0);
    }

    /// `workers` whole chunks in flight, or as many small chunks as fit in the same bytes
    /// (up to PIPELINE_DEPTH per worker): a folder of small files pipelines, a big file's
    /// memory stays what it was.
    #[test]
    fn bytes_in_flight_bound_big_chunks_and_let_small_ones_pipeline() {
        let t = Instant::now();
        let limits = Limits::new(2, 4, 3, STALL, true);
        let mut s = Scheduler::new(limits, specs(2));
        s.add_file(FileIx(0), shape(10), (0..10).collect());
        assert_eq!(fetches(&drain(&mut s, t)).len(), 2, "two 4 MiB chunks");

        let mut s = Scheduler::new(limits, specs(2));
        let small = FileSpec {
            size: 20_000,
            chunk_size: CHUNK_SIZE,
            chunks: 1,
        };
        for f in 0..200 {
            s.add_file(FileIx(f), small, vec![0]);
        }
        s.add_file(FileIx(200), shape(3), (0..3).collect());
        let sent = fetches(&drain(&mut s, t));
        assert_eq!(
            sent.len(),
            2 * PIPELINE_DEPTH,
            "small files: the request bound"
        );
        // Delivered small ones make room by bytes for the big file's chunks, one at a time
        // once over the bound.
        let mut s = Scheduler::new(limits, specs(1));
        s.add_file(FileIx(0), small, vec![0]);
        s.add_file(FileIx(1), shape(3), (0..3).collect());
        let sent = fetches(&drain(&mut s, t));
        assert_eq!(
            sent.len(),
            3,
            "20 KB + 4 MiB + 4 MiB: the bound is passed by one chunk"
        );
        deliver(&mut s, sent[0].0, sent[0].1, t);
        assert!(
            fetches(&drain(&mut s, t)).is_empty(),
            "still over the bound"
        );
        deliver(&mut s, sent[1].0, sent[1].1, t);
        assert_eq!(fetches(&drain(&mut s, t)).len(), 1);
    }

    #[test]
    fn the_per_host_cap_holds() {
        let t = Instant::now();
        let mut s = Scheduler::new(
            Limits {
                per_host: 3,
                ..limits(100)
            },
            specs(2),
        );
        s.add_file(FileIx(0), shape(20), (0..20).collect());
        let sent = fetches(&drain(&mut s, t));
        assert_eq!(sent.len(), 6);
        assert_eq!((s.load(H0), s.load(H1)), (3, 3));
        deliver(&mut s, sent[0].0, sent[0].1, t);
        assert_eq!(fetches(&drain(&mut s, t)), vec![(c(0, 6), sent[0].1)]);
    }

    // ---- whole jobs, simulated ----

    /// How a simulated host answers one request.
    #[derive(Clone, Copy, Debug)]
    enum Reply {
        Ok(Duration),
        Fail(HostFault, Duration),
    }

    /// Runs a whole job against simulated hosts and checks the bounds at every step.
    struct Sim {
        s: Scheduler,
        now: Instant,
        /// (when, sequence) → the outcome then.
        pending: BTreeMap<(Instant, u64), Outcome>,
        seq: u64,
        files: u32,
        chunks: Box<dyn Fn(u32) -> u32>,
        added: u32,
        finished: Vec<FileIx>,
        failed: Vec<(FileIx, Failure)>,
        gave_up: Option<Failure>,
        /// The hosts the simulated index lists.
        listed: Vec<HostSpec>,
        max_open: usize,
        max_requests: usize,
        max_load: usize,
    }

    impl Sim {
        fn new(s: Scheduler, files: u32, chunks: impl Fn(u32) -> u32 + 'static) -> Self {
            Self {
                s,
                now: Instant::now(),
                pending: BTreeMap::new(),
                seq: 0,
                files,
                chunks: Box::new(chunks),
                added: 0,
                finished: Vec::new(),
                failed: Vec::new(),
                gave_up: None,
                listed: Vec::new(),
                max_open: 0,
                max_requests: 0,
                max_load: 0,
            }
        }

        fn run(&mut self, mut reply: impl FnMut(ChunkRef, HostIx, Instant) -> Reply) {
            for _ in 0..10_000_000 {
                while self.s.wants_files() > 0 && self.added < self.files {
                    let n = (self.chunks)(self.added);
                    self.s
                        .add_file(FileIx(self.added), shape(n), (0..n).collect());
                    self.added += 1;
                }
                if self.added == self.files {
                    self.s.no_more_files();
                }
                while let Some(action) = self.s.next(self.now) {
                    match action {
                        Action::Fetch { chunk, host, .. } => {
                            let (after, outcome) = match reply(chunk, host, self.now) {
                                Reply::Ok(took) => (took, Outcome::Delivered { chunk, host, took }),
                                Reply::Fail(fault, after) => (
                                    after,
                                    Outcome::Failed {
                                        chunk,
                                        host,
                                        fault,
                                        error: format!("{fault:?}"),
                                    },
                                ),
                            };
                            self.seq += 1;
                            self.pending.insert((self.now + after, self.seq), outcome);
                        }
                        Action::FinishFile(file) => {
                            self.finished.push(file);
                            self.s.on(Outcome::FileFinished(file), self.now);
                        }
                        Action::SaveRecord(_) => {}
                        Action::AskIndex => {
                            self.seq += 1;
                            self.pending.insert(
                                (self.now + 10 * MS, self.seq),
                                Outcome::HostsListed(self.listed.clone()),
                            );
                        }
                        Action::FileFailed(file, failure) => self.failed.push((file, failure)),
                        Action::GiveUp(failure) => {
                            self.gave_up = Some(failure);
                            return;
                        }
                    }
                }
                self.max_open = self.max_open.max(self.s.open_files());
                self.max_requests = self.max_requests.max(self.s.requests());
                for (h, _) in self.s.hosts.iter() {
                    self.max_load = self.max_load.max(self.s.load(h));
                }
                if self.s.is_done() {
                    return;
                }
                let wake = self.s.wake_at();
                assert!(
                    wake.is_none_or(|w| w > self.now),
                    "wake_at is not in the future, though next had nothing to do"
                );
                let event = self.pending.keys().next().map(|(t, _)| *t);
                let Some(next) = [wake, event].into_iter().flatten().min() else {
                    panic!("the job hangs: nothing in flight, nothing to wait for")
                };
                self.now = next;
                while let Some(entry) = self.pending.first_entry() {
                    if entry.key().0 > self.now {
                        break;
                    }
                    let mut outcome = entry.remove();
                    if let Outcome::Delivered { chunk, host, .. } = outcome
                        && !self.s.needs(chunk)
                    {
                        outcome = Outcome::Duplicate { chunk, host };
                    }
                    self.s.on(outcome, self.now);
                }
            }
            panic!("the job never ends");
        }
    }

    #[test]
    fn two_files_finish_on_the_other_host_when_one_dies_after_three_chunks() {
        let s = Scheduler::new(limits(4), specs(2));
        let mut sim = Sim::new(s, 2, |_| 8);
        let mut served_by_0 = 0;
        sim.run(|_, host, _| {
            if host == H0 {
                served_by_0 += 1;
                if served_by_0 > 3 {
                    return Reply::Fail(HostFault::Unreachable, 5 * MS);
                }
            }
            Reply::Ok(20 * MS)
        });
        assert!(sim.gave_up.is_none() && sim.failed.is_empty());
        assert_eq!(sim.finished, vec![FileIx(0), FileIx(1)]);
        assert_eq!(sim.s.chunks(), (16, 16));
        let per_host = sim.s.per_host();
        assert_eq!(per_host[0].1, 3);
        assert_eq!(per_host[1].1, 13);
    }

    #[test]
    fn the_open_files_window_holds_over_10_000_files() {
        let s = Scheduler::new(limits(16), specs(3));
        let mut sim = Sim::new(s, 10_000, |f| f % 3);
        let mut rng = StdRng::seed_from_u64(14);
        sim.run(|_, _, _| Reply::Ok(Duration::from_micros(rng.random_range(100..5000))));
        assert!(sim.gave_up.is_none() && sim.failed.is_empty());
        assert_eq!(sim.finished.len(), 10_000);
        assert_eq!(sim.max_open, OPEN_FILES);
        assert!(sim.max_requests <= 16);
        assert!(sim.s.files.is_empty() && sim.s.queue.is_empty() && sim.s.saves.is_empty());
    }

    #[test]
    fn workers_and_per_host_bounds_hold_under_random_faults() {
        for seed in 0..20 {
            let s = Scheduler::new(
                Limits {
                    per_host: 4,
                    ..limits(6)
                },
                specs(3),
            );
            let mut sim = Sim::new(s, 200, |f| 1 + f % 5);
            sim.listed = specs(3);
            let mut rng = StdRng::seed_from_u64(seed);
            sim.run(|_, _, _| {
                let after = Duration::from_micros(rng.random_range(50..400_000));
                match rng.random_range(0..100) {
                    0..5 => Reply::Fail(HostFault::Timeout, after),
                    5..7 => Reply::Fail(HostFault::ClosedIdle, after),
                    7..8 => Reply::Fail(HostFault::Refused(ErrorCode::Forbidden), after),
                    _ => Reply::Ok(after),
                }
            });
            assert!(sim.gave_up.is_none(), "seed {seed}: {:?}", sim.gave_up);
            assert!(sim.failed.is_empty(), "seed {seed}: {:?}", sim.failed);
            assert_eq!(sim.finished.len(), 200, "seed {seed}");
            assert_eq!(
                sim.max_requests, 6,
                "seed {seed}: the bound is reached, never passed"
            );
            assert!(sim.max_load <= 4, "seed {seed}");
            let (done, total) = sim.s.chunks();
            assert_eq!(done, total);
        }
    }
}
