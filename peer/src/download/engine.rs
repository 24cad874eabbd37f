//! The download engine: one task per job, whatever the number of files.
//!
//! The task owns the job's [`Scheduler`] (no lock: `&mut`) and waits, in one `select!`, for
//! whatever happens next: a link's answer ([`Links`]), a disk task's result (one `JoinSet` of
//! blocking tasks, [`super::disk`]), the index's answer to a request for hosts, the next
//! batch of the folder's record, the scheduler's next deadline (`wake_at`), or the job's
//! cancellation. It tells the scheduler what happened, carries out what the scheduler decides,
//! and emits the job's events.
//!
//! A file goes through: **taken** from the record (at most [`OPEN_FILES`] files are taken and
//! not yet done, at most [`OPEN_PARTS`] of them big), **checked** (what is at its target:
//! already there, a conflict, a partial file to resume, or nothing), **opened** (a big file's
//! part file), **fetched** (its chunks pipelined on the links with every other file's), **finished**
//! (named), and then it is only counters. Nothing lives per file for the whole job.
//!
//! Memory, whatever the number of files: chunk data in flight is bounded by the scheduler
//! (`workers` x 4 MiB, every copy counted, until verified and written); small chunks verified
//! on arrival wait for their batch in at most [`OPEN_FILES`] x [`INLINE_VERIFY`] bytes; the
//! buffer pool keeps what was in use at once, no more. Per file on its way, a few hundred
//! bytes (its path and manifest); the record is read a batch at a time. What grows with the
//! files is the list handed over for sharing (path and manifest, about 150 bytes a file,
//! dropped at the first file that is missing) and the conflict and failure lists (at most
//! [`MAX_REPORTED`] each).
//!
//! A single file ([`JobSource::File`]) runs the same way, with its old rules: an identical
//! file already there is reported done, anything else there is refused before any host is
//! asked, and every error ends the job.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use p2p_protocol::{FileId, FileManifest, FolderHead};
use p2p_storage::local::LocalState;
use p2p_storage::small::is_small;
use p2p_storage::{OutputDir, SourceFile, StorageError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::buffers::BufPool;
use super::disk::{
    self, Arrived, CHECK_BATCH, CHECKS_AT_ONCE, DiskDone, OPEN_PARTS, Output,
    SMALL_BATCHES_AT_ONCE, SmallItem, Target,
};
use super::hosts::{BadData, HostFault, HostSpec};
use super::links::{Answer, Answered, Ask, LINKS_PER_HOST, LinkConfig, Links};
use super::record::{FolderFile, FolderRecord};
use super::schedule::{
    Action, ChunkRef, FileIx, FileSpec, Limits, Note, OPEN_FILES, Outcome, Scheduler,
};
use super::{
    DownloadEvent, DownloadOptions, EventSink, Fetched, FileProblem, JobReport, MAX_REPORTED,
    Refresh,
};
use crate::error::PeerError;

/// One job, as the engine runs it.
pub(crate) struct Job {
    pub what: What,
    pub hosts: Vec<HostSpec>,
    /// The output folder.
    pub out: PathBuf,
}

/// What a job fetches.
pub(crate) enum What {
    /// One file, into `out/<subdir>/<name>`.
    File {
        manifest: FileManifest,
        subdir: Vec<String>,
    },
    /// A folder, into `out/<head.name>/...` (its temporary files in the staging folder of
    /// its name).
    Folder {
        head: FolderHead,
        record: FolderRecord,
    },
}

/// A small file's chunk of at most this many bytes is verified as it arrives, on the engine's
/// task: hashing it costs about what decrypting it did (tens of microseconds), and the
/// scheduler then counts it delivered at once, so its request slot is free again while the
/// file waits for its batch to be written and flushed. A larger one is verified in its batch.
const INLINE_VERIFY: usize = 64 * 1024;

/// A future the engine polls across loop turns.
type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A read of the folder's record: the record back, and the next files (`None`: the end).
type RecordRead = (FolderRecord, Result<Option<Vec<FolderFile>>, PeerError>);

/// Where a file's bytes go.
enum Store {
    /// Its target is being looked at.
    Checking,
    /// Its part file is being opened.
    Opening,
    /// A big file (or the single file of a job), assembled in its part file.
    Part(Arc<p2p_storage::PartFile>),
    /// A small file of a folder, written whole once its one chunk is here.
    Small(SmallStage),
}

enum SmallStage {
    /// Its chunk (if any) is still to come.
    Waiting,
    /// Its chunk arrived and was verified on arrival (at most [`INLINE_VERIFY`] bytes); the
    /// scheduler knows, and its finish writes it.
    Verified(Arrived),
    /// In a batch being written.
    Writing,
    /// Written, flushed and named.
    InPlace(PathBuf),
}

/// One file on its way.
struct FileState {
    target: Target,
    file_id: FileId,
    store: Store,
    /// Counts toward [`OPEN_PARTS`].
    big: bool,
}

impl FileState {
    /// Where it goes.
    fn path(&self, out: &Path) -> PathBuf {
        let mut path = out.to_owned();
        path.extend(&self.target.subdir);
        path.push(&self.target.manifest.name);
        path
    }
}

/// Where the job's files come from.
enum Feed {
    /// The single file, until taken.
    One(Option<Target>),
    /// A folder's record: files read but not taken yet, and whether the record has ended.
    Record {
        buffered: VecDeque<FolderFile>,
        /// The record while no read is running.
        record: Option<FolderRecord>,
        ended: bool,
        /// The folder's name: its files go under it.
        name: String,
    },
}

/// What the job counted, for its report.
#[derive(Default)]
struct Tally {
    fetched: u64,
    already_there: u64,
    conflicts: Vec<FileProblem>,
    conflicts_total: u64,
    failed: Vec<FileProblem>,
    failed_total: u64,
    bytes_fetched: u64,
    bytes_resumed: u64,
    /// Every file in place so far (path under the folder's root, manifest), while all are.
    files: Option<Vec<(String, FileManifest)>>,
}

/// The engine of one job.
struct Engine {
    out: PathBuf,
    /// A single-file job (its errors end the job; it sends `Started`, `Flushing`, `Finished`).
    single: bool,
    /// The file's or the folder's name, for the job's errors.
    name: String,
    /// The job's size in bytes.
    size: u64,
    options: DownloadOptions,
    events: EventSink,
    sched: Scheduler,
    links: Links,
    answers: mpsc::UnboundedReceiver<Answer>,
    pool: Arc<BufPool>,
    disk: JoinSet<DiskDone>,
    refresh: Option<Refresh>,
    asking: Option<Pending<Result<Vec<HostSpec>, PeerError>>>,
    feed: Feed,
    reading: Option<Pending<RecordRead>>,
    next_ix: u32,
    files: HashMap<FileIx, FileState>,
    /// Big files taken and not yet done.
    parts: usize,
    to_check: VecDeque<FileIx>,
    checks_running: usize,
    /// Files being opened.
    opening: usize,
    small_pending: Vec<SmallItem>,
    small_running: usize,
    /// Where the files go, as the disk tasks need it.
    output: Output,
    told_no_more: bool,
    tally: Tally,
    /// What ends the job early.
    failure: Option<PeerError>,
    /// The single file, in place, and its handle to serve it from.
    single_done: Option<(PathBuf, Option<SourceFile>)>,
    started: Instant,
}

/// Runs `job` to its end.
pub(crate) async fn run(
    job: Job,
    options: DownloadOptions,
    events: EventSink,
    refresh: Option<Refresh>,
    cancel: CancellationToken,
) -> Result<JobReport, PeerError> {
    let started = Instant::now();
    let Job { what, hosts, out } = job;
    let hosts: Vec<HostSpec> = hosts.into_iter().filter(|h| !options.is_me(h)).collect();
    let share = options.share;
    let (single, name, feed, head) = match what {
        What::File {
            manifest, subdir, ..
        } => {
            let name = manifest.name.clone();
            let feed = Feed::One(Some(Target { subdir, manifest }));
            (true, name, feed, None)
        }
        What::Folder { head, record } => {
            p2p_protocol::validate_file_name(&head.name).map_err(StorageError::from)?;
            p2p_storage::staging::check_folder_name(&head.name)?;
            let feed = Feed::Record {
                buffered: VecDeque::new(),
                record: Some(record),
                ended: false,
                name: head.name.clone(),
            };
            (false, head.name.clone(), feed, Some(head))
        }
    };
    let output = match &head {
        // The folder's root, created up front (a folder of no file is a folder too), and
        // the output folder's handle for the job's files.
        Some(head) => {
            let (out, name) = (out.clone(), head.name.clone());
            let opened = tokio::task::spawn_blocking(move || {
                let dir = OutputDir::open(&out, &name)?;
                dir.make_folder(&[name])?;
                Ok::<_, StorageError>(dir)
            })
            .await
            .map_err(|e| PeerError::Internal(format!("disk task failed: {e}")))??;
            Output::Folder(Arc::new(opened))
        }
        None => Output::File(out.clone()),
    };
    let limits = Limits::new(
        options.workers,
        LINKS_PER_HOST.min(options.workers.max(1)),
        options.max_host_failures,
        options.stall_timeout,
        refresh.is_some(),
    );
    let pool = Arc::new(BufPool::default());
    let link_config = LinkConfig {
        tls: options.tls.clone(),
        connect_timeout: options.connect_timeout,
        request_timeout: options.request_timeout,
        per_host: LINKS_PER_HOST.min(options.workers.max(1)),
    };
    let (links, answers) = Links::new(link_config, pool.clone(), cancel.child_token());
    let host_count = hosts.len();
    let size = match (&head, &feed) {
        (Some(head), _) => head.size,
        (None, Feed::One(Some(target))) => target.manifest.size,
        _ => 0,
    };
    let mut engine = Engine {
        out,
        single,
        name,
        size,
        sched: Scheduler::new(limits, hosts),
        options,
        events,
        links,
        answers,
        pool,
        disk: JoinSet::new(),
        refresh,
        asking: None,
        feed,
        reading: None,
        next_ix: 0,
        files: HashMap::new(),
        parts: 0,
        to_check: VecDeque::new(),
        checks_running: 0,
        opening: 0,
        small_pending: Vec::new(),
        small_running: 0,
        output,
        told_no_more: false,
        tally: Tally {
            files: (!single && share).then(Vec::new),
            ..Tally::default()
        },
        failure: None,
        single_done: None,
        started,
    };
    if let Some(head) = &head {
        engine.events.send(DownloadEvent::JobStarted {
            name: head.name.clone(),
            files: head.files,
            size: head.size,
            hosts: host_count,
            resumed: 0,
        });
        info!(folder = %head.name, files = head.files, size = head.size, hosts = host_count, "folder download started");
    }
    let outcome = engine.drive(&cancel).await;
    engine.wind_down(outcome.is_err()).await;
    outcome?;
    engine.tidy_staging(head.as_ref()).await;
    Ok(engine.report(head))
}

/// Waits for `future` if there is one, forever if not.
async fn poll<T>(future: &mut Option<Pending<T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// The job's loop (see the module docs).
    async fn drive(&mut self, cancel: &CancellationToken) -> Result<(), PeerError> {
        loop {
            self.pump();
            // Whatever is ready already is taken first, without waiting: answers and disk
            // results come in bursts, and the scheduler's next deadline is worth computing
            // only once the engine is about to wait.
            let mut ready = false;
            while self.failure.is_none() {
                if let Ok(answer) = self.answers.try_recv() {
                    self.on_answer(answer);
                } else if let Some(done) = self.disk.try_join_next() {
                    match done {
                        Ok(done) => self.on_disk(done),
                        Err(e) => {
                            return Err(PeerError::Internal(format!("disk task failed: {e}")));
                        }
                    }
                } else {
                    break;
                }
                ready = true;
            }
            if ready {
                continue;
            }
            if let Some(err) = self.failure.take() {
                return Err(err);
            }
            if cancel.is_cancelled() {
                return Err(PeerError::Cancelled);
            }
            if self.done() {
                return Ok(());
            }
            let wake = self.sched.wake_at().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                Some(done) = self.disk.join_next(), if !self.disk.is_empty() => match done {
                    Ok(done) => self.on_disk(done),
                    Err(e) => return Err(PeerError::Internal(format!("disk task failed: {e}"))),
                },
                Some(answer) = self.answers.recv() => self.on_answer(answer),
                listed = poll(&mut self.asking), if self.asking.is_some() => {
                    self.asking = None;
                    self.on_listed(listed);
                }
                (record, read) = poll(&mut self.reading), if self.reading.is_some() => {
                    self.reading = None;
                    self.on_read(record, read);
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
            }
        }
    }

    /// Does everything that can be done now: takes files, starts checks and small batches,
    /// carries out the scheduler's decisions.
    fn pump(&mut self) {
        loop {
            let mut moved = self.take_files();
            moved |= self.start_checks();
            moved |= self.start_small();
            if self.feed_ended()
                && self.to_check.is_empty()
                && self.checks_running == 0
                && self.opening == 0
                && !self.told_no_more
            {
                self.sched.no_more_files();
                self.told_no_more = true;
            }
            while let Some(action) = self.sched.next(Instant::now()) {
                moved = true;
                self.act(action);
                if self.failure.is_some() {
                    return;
                }
            }
            if !moved || self.failure.is_some() {
                return;
            }
        }
    }

    fn feed_ended(&self) -> bool {
        match &self.feed {
            Feed::One(next) => next.is_none(),
            Feed::Record {
                buffered, ended, ..
            } => *ended && buffered.is_empty() && self.reading.is_none(),
        }
    }

    fn done(&self) -> bool {
        self.told_no_more
            && self.sched.is_done()
            && self.files.is_empty()
            && self.disk.is_empty()
            && self.small_pending.is_empty()
    }

    // ---- files in ----

    /// Takes files from the feed while the window has room.
    fn take_files(&mut self) -> bool {
        let mut moved = false;
        while self.files.len() < OPEN_FILES {
            let target = match &mut self.feed {
                Feed::One(next) => match next.take() {
                    Some(target) => target,
                    None => break,
                },
                Feed::Record {
                    buffered,
                    record,
                    ended,
                    name,
                } => {
                    let Some(next) = buffered.front() else {
                        if !*ended && let Some(mut record) = record.take() {
                            self.reading = Some(Box::pin(async move {
                                let read = record.next_batch().await;
                                (record, read)
                            }));
                        }
                        break;
                    };
                    if !is_small(&next.manifest) && self.parts >= OPEN_PARTS {
                        break;
                    }
                    let file = buffered.pop_front().expect("looked at it");
                    let mut subdir = Vec::with_capacity(file.path.len());
                    subdir.push(name.clone());
                    subdir.extend_from_slice(&file.path[..file.path.len().saturating_sub(1)]);
                    Target {
                        subdir,
                        manifest: file.manifest,
                    }
                }
            };
            let big = self.single || !is_small(&target.manifest);
            if big {
                self.parts += 1;
            }
            let ix = FileIx(self.next_ix);
            self.next_ix += 1;
            self.files.insert(
                ix,
                FileState {
                    file_id: target.manifest.id(),
                    target,
                    store: Store::Checking,
                    big,
                },
            );
            self.to_check.push_back(ix);
            moved = true;
        }
        moved
    }

    fn on_read(&mut self, record: FolderRecord, read: Result<Option<Vec<FolderFile>>, PeerError>) {
        let Feed::Record {
            buffered,
            record: slot,
            ended,
            ..
        } = &mut self.feed
        else {
            return;
        };
        *slot = Some(record);
        match read {
            Ok(Some(files)) => buffered.extend(files),
            Ok(None) => *ended = true,
            Err(err) => self.failure = Some(err),
        }
    }

    fn start_checks(&mut self) -> bool {
        let mut moved = false;
        while self.checks_running < CHECKS_AT_ONCE && !self.to_check.is_empty() {
            let n = self.to_check.len().min(CHECK_BATCH);
            let batch: Vec<(FileIx, Target)> = self
                .to_check
                .drain(..n)
                .filter_map(|ix| self.files.get(&ix).map(|f| (ix, f.target.clone())))
                .collect();
            let out = self.output.clone();
            self.disk.spawn_blocking(move || disk::check(out, batch));
            self.checks_running += 1;
            moved = true;
        }
        moved
    }

    fn on_checked(&mut self, results: Vec<(FileIx, Result<LocalState, StorageError>)>) {
        self.checks_running -= 1;
        for (ix, state) in results {
            match state {
                Ok(LocalState::AlreadyThere) => self.already_there(ix),
                Ok(LocalState::Conflict(reason)) => {
                    if self.single {
                        let path = self.files[&ix].path(&self.out);
                        self.failure = Some(StorageError::AlreadyExists(path).into());
                        return;
                    }
                    self.problem(ix, Problem::Conflict(reason));
                    self.close(ix);
                }
                Ok(LocalState::Missing | LocalState::Partial) => self.start(ix),
                Err(err) => self.file_error(ix, err),
            }
        }
    }

    fn already_there(&mut self, ix: FileIx) {
        let file = &self.files[&ix];
        let path = file.path(&self.out);
        let bytes = file.target.manifest.size;
        info!(path = %path.display(), "already there, identical");
        self.events.send(DownloadEvent::FileDone {
            path,
            bytes,
            already_there: true,
        });
        self.tally.already_there += 1;
        if self.single {
            self.single_done = Some((self.files[&ix].path(&self.out), None));
        }
        self.note_in_place(ix);
        self.close(ix);
    }

    /// Starts fetching a file whose target is free.
    fn start(&mut self, ix: FileIx) {
        let file = self.files.get_mut(&ix).expect("an open file");
        let manifest = &file.target.manifest;
        if self.single && self.sched.host_count() == 0 && !manifest.chunks.is_empty() {
            self.failure = Some(PeerError::NoHosts {
                name: manifest.name.clone(),
                id: file.file_id,
            });
            return;
        }
        if file.big {
            file.store = Store::Opening;
            let (out, target) = (self.output.clone(), file.target.clone());
            self.disk
                .spawn_blocking(move || disk::open(out, ix, target));
            self.opening += 1;
        } else {
            file.store = Store::Small(SmallStage::Waiting);
            let spec = FileSpec::of(manifest);
            self.sched.add_file(ix, spec, (0..spec.chunks).collect());
        }
    }

    fn on_opened(
        &mut self,
        ix: FileIx,
        result: Result<(Arc<p2p_storage::PartFile>, Vec<u32>), StorageError>,
    ) {
        self.opening -= 1;
        let (part, resumed) = match result {
            Ok(opened) => opened,
            Err(err) => return self.file_error(ix, err),
        };
        let hosts = self.sched.host_count();
        let file = self.files.get_mut(&ix).expect("an open file");
        let manifest = part.manifest();
        let resumed_bytes: u64 = resumed
            .iter()
            .map(|i| manifest.chunk_len(*i).unwrap_or(0) as u64)
            .sum();
        self.tally.bytes_resumed += resumed_bytes;
        let (file_id, name, size, chunks) = (
            file.file_id,
            manifest.name.clone(),
            manifest.size,
            manifest.chunks.len(),
        );
        if self.single || resumed_bytes > 0 {
            // A folder's file says so only when it resumes (that is what progress needs).
            self.events.send(DownloadEvent::Started {
                file_id,
                name: name.clone(),
                size,
                chunks,
                hosts,
                resumed: resumed_bytes,
            });
        }
        if resumed.is_empty() {
            info!(file = %file_id.fmt_short(), %name, size, chunks, hosts, "download started");
        } else {
            info!(file = %file_id.fmt_short(), %name, size, chunks, resumed = resumed.len(), "download resumed");
        }
        let missing: Vec<u32> = (0..chunks as u32)
            .filter(|i| !part.is_verified(*i))
            .collect();
        let spec = FileSpec::of(part.manifest());
        file.store = Store::Part(part);
        self.sched.add_file(ix, spec, missing);
    }

    // ---- the scheduler's decisions ----

    fn act(&mut self, action: Action) {
        match action {
            Action::Fetch { chunk, host, .. } => {
                let Some(file) = self.files.get(&chunk.file) else {
                    // Cannot happen: the scheduler fetches only for open files.
                    return self.answer_now(chunk, host);
                };
                let ask = Ask {
                    chunk,
                    file_id: file.file_id,
                    len: FileSpec::of(&file.target.manifest).chunk_len(chunk.index),
                    asked: Instant::now(),
                };
                let spec = *self.sched.host(host);
                self.links.ask(host, spec, ask);
            }
            Action::FinishFile(ix) => self.finish(ix),
            Action::SaveRecord(ix) => {
                if let Some(FileState {
                    store: Store::Part(part),
                    ..
                }) = self.files.get(&ix)
                {
                    let part = part.clone();
                    self.disk.spawn_blocking(move || disk::save(part));
                }
            }
            Action::AskIndex => match &self.refresh {
                Some(refresh) => self.asking = Some(refresh()),
                None => self.on(Outcome::IndexFailed("no index to ask".into())),
            },
            Action::FileFailed(ix, failure) => {
                if self.single {
                    self.failure = Some(PeerError::DownloadFailed {
                        name: self.name.clone(),
                        done: failure.done,
                        total: failure.total,
                        reason: failure.reason,
                    });
                    return;
                }
                warn!(file = %self.files.get(&ix).map(|f| f.target.manifest.name.as_str()).unwrap_or(""), %failure, "file failed");
                self.save_record(ix);
                self.problem(ix, Problem::Failed(failure.to_string()));
                self.close(ix);
            }
            Action::GiveUp(failure) => {
                self.failure = Some(PeerError::DownloadFailed {
                    name: self.name.clone(),
                    done: failure.done,
                    total: failure.total,
                    reason: failure.reason,
                });
            }
        }
    }

    /// A fetch the engine cannot send: given back at once.
    fn answer_now(&mut self, chunk: ChunkRef, host: super::hosts::HostIx) {
        self.on(Outcome::Withdrawn { chunk, host });
    }

    fn finish(&mut self, ix: FileIx) {
        let Some(file) = self.files.get_mut(&ix) else {
            return;
        };
        match &mut file.store {
            Store::Part(part) => {
                if self.single {
                    self.events.send(DownloadEvent::Flushing);
                    info!(file = %file.file_id.fmt_short(), elapsed = ?self.started.elapsed(), "all chunks verified and written; flushing to disk");
                }
                let (part, share) = (part.clone(), self.single && self.options.share);
                self.disk
                    .spawn_blocking(move || disk::finish(part, ix, share));
            }
            Store::Small(SmallStage::InPlace(path)) => {
                let path = path.clone();
                self.on(Outcome::FileFinished(ix));
                self.in_place(ix, path);
            }
            Store::Small(stage @ SmallStage::Waiting) => {
                // An empty file: nothing to fetch, only to write.
                *stage = SmallStage::Writing;
                self.small_pending.push(SmallItem {
                    file: ix,
                    target: file.target.clone(),
                    arrived: None,
                    verified: false,
                });
            }
            Store::Small(stage @ SmallStage::Verified(_)) => {
                let SmallStage::Verified(arrived) = std::mem::replace(stage, SmallStage::Writing)
                else {
                    unreachable!("matched above");
                };
                self.small_pending.push(SmallItem {
                    file: ix,
                    target: file.target.clone(),
                    arrived: Some(arrived),
                    verified: true,
                });
            }
            Store::Small(SmallStage::Writing) | Store::Checking | Store::Opening => {
                debug_assert!(false, "FinishFile for a file not ready to finish");
            }
        }
    }

    fn save_record(&mut self, ix: FileIx) {
        if let Some(FileState {
            store: Store::Part(part),
            ..
        }) = self.files.get(&ix)
        {
            let part = part.clone();
            self.disk.spawn_blocking(move || disk::save(part));
        }
    }

    /// Tells the scheduler; turns what it notes into events.
    fn on(&mut self, outcome: Outcome) {
        for note in self.sched.on(outcome, Instant::now()) {
            match note {
                Note::HostFailed {
                    host,
                    addr,
                    error,
                    dropped,
                } => {
                    if dropped {
                        warn!(%addr, %error, "dropping host from this download");
                        self.links.close_host(host);
                    } else {
                        debug!(%addr, %error, "request failed; retrying elsewhere");
                    }
                    self.events.send(DownloadEvent::PeerFailed {
                        host: addr,
                        error,
                        dropped,
                    });
                }
                Note::HostAdded { addr, .. } => info!(%addr, "new host for this download"),
                Note::HostRevived { addr, .. } => info!(%addr, "host listed again; retrying it"),
            }
        }
    }

    fn on_listed(&mut self, listed: Result<Vec<HostSpec>, PeerError>) {
        match listed {
            Ok(listed) => {
                let specs = listed
                    .into_iter()
                    .filter(|h| !self.options.is_me(h))
                    .collect();
                self.on(Outcome::HostsListed(specs));
            }
            Err(err) => {
                debug!(%err, "cannot ask the index for hosts");
                self.on(Outcome::IndexFailed(err.to_string()));
            }
        }
    }

    // ---- chunks in ----

    fn on_answer(&mut self, answer: Answer) {
        self.links.answered(&answer);
        let Answer {
            host, ask, result, ..
        } = answer;
        let chunk = ask.chunk;
        match result {
            Answered::Withdrawn => self.on(Outcome::Withdrawn { chunk, host }),
            Answered::Failed { fault, error } => self.on(Outcome::Failed {
                chunk,
                host,
                fault,
                error,
            }),
            Answered::Data(buf) => {
                let arrived = Arrived {
                    chunk,
                    host,
                    asked: ask.asked,
                    buf,
                };
                let wanted = self.sched.needs(chunk);
                match self.files.get_mut(&chunk.file) {
                    Some(FileState {
                        store: Store::Part(part),
                        ..
                    }) if wanted => {
                        let part = part.clone();
                        self.disk.spawn_blocking(move || disk::write(part, arrived));
                    }
                    Some(FileState {
                        store: Store::Small(stage @ SmallStage::Waiting),
                        target,
                        ..
                    }) if wanted => {
                        let len = arrived.buf.as_slice().len();
                        if len > INLINE_VERIFY {
                            *stage = SmallStage::Writing;
                            self.small_pending.push(SmallItem {
                                file: chunk.file,
                                target: target.clone(),
                                arrived: Some(arrived),
                                verified: false,
                            });
                            return;
                        }
                        let checked = p2p_storage::store::verify_chunk(
                            &target.manifest,
                            chunk.index,
                            arrived.buf.as_slice(),
                        );
                        match checked {
                            Ok(()) => {
                                self.delivered(&arrived, len);
                                if let Some(FileState {
                                    store: Store::Small(stage @ SmallStage::Waiting),
                                    ..
                                }) = self.files.get_mut(&chunk.file)
                                {
                                    *stage = SmallStage::Verified(arrived);
                                } else {
                                    self.pool.give(arrived.buf);
                                }
                            }
                            Err(err) => {
                                self.bad_data(&arrived, &err);
                                self.pool.give(arrived.buf);
                            }
                        }
                    }
                    // Another copy was first, or is being written.
                    _ => {
                        self.pool.give(arrived.buf);
                        self.on(Outcome::Duplicate { chunk, host });
                    }
                }
            }
        }
    }

    /// A verified chunk is written: the scheduler and the user hear of it.
    fn delivered(&mut self, arrived: &Arrived, len: usize) {
        let (chunk, host) = (arrived.chunk, arrived.host);
        self.on(Outcome::Delivered {
            chunk,
            host,
            took: arrived.asked.elapsed(),
        });
        self.tally.bytes_fetched += len as u64;
        self.events.send(DownloadEvent::ChunkDone {
            index: chunk.index,
            bytes: len,
            host: self.sched.host(host).addr,
        });
    }

    /// The host sent bytes that are not the chunk.
    fn bad_data(&mut self, arrived: &Arrived, err: &StorageError) {
        warn!(host = %self.sched.host(arrived.host).addr, chunk = arrived.chunk.index, %err, "hash mismatch");
        self.on(Outcome::Failed {
            chunk: arrived.chunk,
            host: arrived.host,
            fault: HostFault::BadData(BadData::HashMismatch),
            error: format!("sent bad data: {err}"),
        });
    }

    fn start_small(&mut self) -> bool {
        let mut moved = false;
        while self.small_running < SMALL_BATCHES_AT_ONCE && !self.small_pending.is_empty() {
            let n = self
                .small_pending
                .len()
                .min(p2p_storage::small::SMALL_BATCH);
            let batch: Vec<SmallItem> = self.small_pending.drain(..n).collect();
            let Output::Folder(out) = &self.output else {
                unreachable!("only a folder job has small files");
            };
            let out = out.clone();
            self.disk.spawn_blocking(move || disk::small(out, batch));
            self.small_running += 1;
            moved = true;
        }
        moved
    }

    // ---- disk results ----

    fn on_disk(&mut self, done: DiskDone) {
        match done {
            DiskDone::Checked(results) => self.on_checked(results),
            DiskDone::Opened { file, result } => self.on_opened(file, result),
            DiskDone::Written {
                arrived,
                len,
                result,
            } => {
                match result {
                    Ok(true) => self.delivered(&arrived, len),
                    Ok(false) => self.on(Outcome::Duplicate {
                        chunk: arrived.chunk,
                        host: arrived.host,
                    }),
                    Err(
                        err
                        @ (StorageError::HashMismatch { .. } | StorageError::ChunkLength { .. }),
                    ) => self.bad_data(&arrived, &err),
                    Err(err) => {
                        self.on(Outcome::Withdrawn {
                            chunk: arrived.chunk,
                            host: arrived.host,
                        });
                        self.file_error(arrived.chunk.file, err);
                    }
                }
                self.pool.give(arrived.buf);
            }
            DiskDone::Small(results) => {
                self.small_running -= 1;
                for (item, result) in results {
                    self.on_small(item, result);
                }
            }
            DiskDone::Finished { file, result } => match result {
                Ok((path, source)) => {
                    self.on(Outcome::FileFinished(file));
                    if self.single {
                        let bytes = self.files[&file].target.manifest.size;
                        let elapsed = self.started.elapsed();
                        self.events.send(DownloadEvent::Finished {
                            path: path.clone(),
                            bytes,
                            elapsed,
                        });
                        info!(path = %path.display(), ?elapsed, "download finished");
                        self.tally.fetched += 1;
                        self.single_done = Some((path, source));
                        self.close(file);
                    } else {
                        self.in_place(file, path);
                    }
                }
                Err(err) => self.file_error(file, err),
            },
            DiskDone::Saved(Err(err)) => warn!(%err, "cannot save the record of verified chunks"),
            DiskDone::Saved(Ok(())) => {}
        }
    }

    fn on_small(
        &mut self,
        item: SmallItem,
        result: Result<p2p_storage::small::SmallDone, StorageError>,
    ) {
        let ix = item.file;
        if item.verified {
            // Delivered already: only the write is left to report.
            if let Some(arrived) = item.arrived {
                self.pool.give(arrived.buf);
            }
            match result {
                Ok(done) => {
                    self.on(Outcome::FileFinished(ix));
                    self.in_place(ix, done.path);
                }
                Err(err) => self.file_error(ix, err),
            }
            return;
        }
        match (item.arrived, result) {
            (Some(arrived), Ok(done)) => {
                let len = arrived.buf.as_slice().len();
                if let Some(file) = self.files.get_mut(&ix) {
                    file.store = Store::Small(SmallStage::InPlace(done.path));
                }
                self.delivered(&arrived, len);
                self.pool.give(arrived.buf);
            }
            (None, Ok(done)) => {
                self.on(Outcome::FileFinished(ix));
                self.in_place(ix, done.path);
            }
            (
                Some(arrived),
                Err(err @ (StorageError::HashMismatch { .. } | StorageError::ChunkLength { .. })),
            ) => {
                if let Some(file) = self.files.get_mut(&ix) {
                    file.store = Store::Small(SmallStage::Waiting);
                }
                self.bad_data(&arrived, &err);
                self.pool.give(arrived.buf);
            }
            (arrived, Err(err)) => {
                if let Some(arrived) = arrived {
                    self.on(Outcome::Withdrawn {
                        chunk: arrived.chunk,
                        host: arrived.host,
                    });
                    self.pool.give(arrived.buf);
                }
                self.file_error(ix, err);
            }
        }
    }

    /// A file is in place (fetched in this run).
    fn in_place(&mut self, ix: FileIx, path: PathBuf) {
        let bytes = self.files.get(&ix).map_or(0, |f| f.target.manifest.size);
        self.events.send(DownloadEvent::FileDone {
            path,
            bytes,
            already_there: false,
        });
        self.tally.fetched += 1;
        self.note_in_place(ix);
        self.close(ix);
    }

    /// Keeps the file for the list of what to share.
    fn note_in_place(&mut self, ix: FileIx) {
        let (Some(list), Some(file)) = (&mut self.tally.files, self.files.get(&ix)) else {
            return;
        };
        // Under the folder's root: its name (the first level) left out.
        let mut path = file.target.subdir[1..].join("/");
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&file.target.manifest.name);
        list.push((path, file.target.manifest.clone()));
    }

    /// A local error on one file: it ends a single-file job, and a folder job when it is
    /// the disk's (full, failing); otherwise the file is given up and the job goes on.
    fn file_error(&mut self, ix: FileIx, err: StorageError) {
        if self.single || is_disk_failure(&err) {
            self.failure = Some(err.into());
            return;
        }
        let fetching = matches!(
            self.files.get(&ix).map(|f| &f.store),
            Some(Store::Part(_) | Store::Small(_))
        );
        if fetching {
            self.on(Outcome::FileAbandoned(ix));
        }
        let problem = match err {
            StorageError::AlreadyExists(_) => {
                Problem::Conflict("a file appeared there during the download".into())
            }
            err @ (StorageError::NotOurs(_)
            | StorageError::NotAFile(_)
            | StorageError::PartLinked(_)) => Problem::Conflict(err.to_string()),
            err => Problem::Failed(failure_reason(&err)),
        };
        self.problem(ix, problem);
        self.close(ix);
    }

    /// Reports a file that is not in place.
    fn problem(&mut self, ix: FileIx, problem: Problem) {
        let Some(file) = self.files.get(&ix) else {
            return;
        };
        let path = file.path(&self.out);
        self.tally.files = None;
        let (list, total, reason) = match problem {
            Problem::Conflict(reason) => {
                warn!(path = %path.display(), %reason, "conflict: left alone");
                self.events.send(DownloadEvent::FileConflict {
                    path: path.clone(),
                    reason: reason.clone(),
                });
                (
                    &mut self.tally.conflicts,
                    &mut self.tally.conflicts_total,
                    reason,
                )
            }
            Problem::Failed(reason) => {
                warn!(path = %path.display(), %reason, "file failed");
                self.events.send(DownloadEvent::FileFailed {
                    path: path.clone(),
                    error: reason.clone(),
                });
                (&mut self.tally.failed, &mut self.tally.failed_total, reason)
            }
        };
        *total += 1;
        if list.len() < MAX_REPORTED {
            list.push(FileProblem { path, reason });
        }
    }

    /// The file leaves the window.
    fn close(&mut self, ix: FileIx) {
        if let Some(file) = self.files.remove(&ix)
            && file.big
        {
            self.parts -= 1;
        }
    }

    // ---- the end ----

    /// Stops the links and waits for every disk task (so nothing holds a part file or a
    /// connection once the job has returned); a job that did not complete saves the record
    /// of every part file still open, for the next run.
    async fn wind_down(&mut self, failed: bool) {
        self.links.close().await;
        while self.disk.join_next().await.is_some() {}
        if failed {
            let parts: Vec<_> = self
                .files
                .values()
                .filter_map(|f| match &f.store {
                    Store::Part(part) => Some(part.clone()),
                    _ => None,
                })
                .collect();
            if !parts.is_empty() {
                let saved = tokio::task::spawn_blocking(move || {
                    for part in parts {
                        if let Err(err) = part.save_record() {
                            warn!(%err, "cannot save the record of verified chunks");
                        }
                    }
                })
                .await;
                if let Err(err) = saved {
                    warn!(%err, "cannot save the records of verified chunks");
                }
            }
        }
        self.files.clear();
    }

    /// A folder job with every file in place needs nothing in its staging folder that no
    /// running download holds (part files of the folder's older versions, a crash's
    /// leftovers): that goes, then the folder if empty (`OutputDir::tidy_staging`). One that
    /// did not complete keeps it all, for the next run to resume from.
    async fn tidy_staging(&mut self, head: Option<&FolderHead>) {
        let (Output::Folder(out), Some(head)) = (&self.output, head) else {
            return;
        };
        if self.tally.fetched + self.tally.already_there != head.files {
            return;
        }
        let out = out.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || out.tidy_staging()).await {
            warn!(%err, "cannot tidy the staging folder");
        }
    }

    fn report(&mut self, head: Option<FolderHead>) -> JobReport {
        let elapsed = self.started.elapsed();
        let tally = std::mem::take(&mut self.tally);
        let (path, files, size, shared) = match head {
            Some(head) => {
                let root = self.out.join(&head.name);
                let complete = tally.fetched + tally.already_there == head.files;
                self.events.send(DownloadEvent::Finished {
                    path: root.clone(),
                    bytes: head.size,
                    elapsed,
                });
                info!(folder = %head.name, fetched = tally.fetched, already_there = tally.already_there,
                      conflicts = tally.conflicts_total, failed = tally.failed_total, ?elapsed, "folder download finished");
                let shared = match tally.files {
                    Some(files) if complete => Some(Fetched::Folder {
                        root: root.clone(),
                        head: head.clone(),
                        files,
                    }),
                    _ => None,
                };
                (root, head.files, head.size, shared)
            }
            None => {
                let (path, source) = match self.single_done.take() {
                    Some((path, source)) => (path, source),
                    None => (self.out.clone(), None),
                };
                (path, 1, self.size, source.map(Fetched::File))
            }
        };
        JobReport {
            path,
            files,
            fetched: tally.fetched,
            already_there: tally.already_there,
            conflicts: tally.conflicts,
            conflicts_total: tally.conflicts_total,
            failed: tally.failed,
            failed_total: tally.failed_total,
            bytes_fetched: tally.bytes_fetched,
            bytes_resumed: tally.bytes_resumed,
            size,
            elapsed,
            per_host: self.sched.per_host(),
            shared,
        }
    }
}

/// Why a file is not in place.
enum Problem {
    /// Something else is at its target.
    Conflict(String),
    /// It could not be fetched or written.
    Failed(String),
}

/// `EIO`, the same number on every Unix: the device failed.
const EIO: i32 = 5;

/// Whether `err` says the disk itself failed, which no other file would escape either:
/// full (`ENOSPC`), over quota (`EDQUOT`), read-only (`EROFS`) or failing (`EIO`). An allow
/// list: anything else (a name too long, a file where a folder should be, a permission...)
/// is about one file, which fails alone.
fn is_disk_failure(err: &StorageError) -> bool {
    use std::io::ErrorKind;
    match err {
        StorageError::NoSpace { .. } => true,
        StorageError::Io { cause, .. } => {
            matches!(
                cause.kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem
            ) || cause.raw_os_error() == Some(EIO)
        }
        _ => false,
    }
}

/// What the user reads about a file that failed on `err`, in one line. (A folder's files
/// have no temporary name beside them, so a name the file system refuses is refused as it
/// is.)
fn failure_reason(err: &StorageError) -> String {
    if let StorageError::Io { cause, .. } = err
        && cause.kind() == std::io::ErrorKind::InvalidFilename
    {
        return "name too long for this file system".into();
    }
    err.to_string()
}
