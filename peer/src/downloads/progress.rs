//! [`Progress`]: where one download job stands, from its [`DownloadEvent`]s. Pure: the caller
//! passes `now`, so counts, speed and ETA are unit-tested with synthetic instants.
//!
//! A job is one file or a whole folder. Bytes are counted over the whole job, never per
//! "current file" (a folder job has many files in flight at once); files are counted from the
//! engine's per-file events, and the job's [`JobReport`] has the last word when it ends.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::download::{DownloadEvent, JobReport};

/// How far back the speed looks: long enough to smooth the gaps between 4 MiB chunks, short
/// enough to follow a host coming or going.
pub const SPEED_WINDOW: Duration = Duration::from_secs(5);

/// The progress of one job, fed with [`DownloadEvent`]s.
///
/// Bytes done is the larger of two lower bounds of what is verified on disk: bytes seen
/// arriving (plus those resumed or found already there), and the sizes of the files finished.
/// The first moves chunk by chunk; the second also covers bytes a file resumed from its `.part`
/// without an event of their own.
#[derive(Clone, Debug)]
pub struct Progress {
    /// What the request said before anything was looked up (a manifest file's size and file
    /// count). Kept across runs.
    planned_size: Option<u64>,
    planned_files: Option<u64>,
    /// What this run learned: from the resolved request, then `Started` / `JobStarted`.
    size: Option<u64>,
    files: Option<u64>,
    /// A folder job (`JobStarted` seen, or resolved as a folder).
    folder: bool,
    files_done: u64,
    files_skipped: u64,
    conflicts: u64,
    files_failed: u64,
    /// Bytes verified by an earlier run, as this run found them.
    resumed: u64,
    /// Bytes that arrived in this run (verified chunks).
    arrived: u64,
    /// Bytes of files found already there.
    skipped_bytes: u64,
    /// Bytes of files finished (fetched or already there).
    finished_bytes: u64,
    /// When this run began.
    run_start: Instant,
    /// Bytes fetched in this run, by arrival, within the last [`SPEED_WINDOW`].
    window: VecDeque<(Instant, u64)>,
    hosts_known: usize,
    delivering: BTreeSet<SocketAddr>,
}

impl Progress {
    /// A job starting at `now`; `size` and `files` when the request tells them up front (a
    /// manifest file).
    pub fn new(size: Option<u64>, files: Option<u64>, now: Instant) -> Self {
        Self {
            planned_size: size,
            planned_files: files,
            size: None,
            files: None,
            folder: false,
            files_done: 0,
            files_skipped: 0,
            conflicts: 0,
            files_failed: 0,
            resumed: 0,
            arrived: 0,
            skipped_bytes: 0,
            finished_bytes: 0,
            run_start: now,
            window: VecDeque::new(),
            hosts_known: 0,
            delivering: BTreeSet::new(),
        }
    }

    /// A new run of the same job (a resume). It counts everything again: files already in
    /// place are found there (and counted as such) by the new run.
    pub fn restart(&mut self, now: Instant) {
        *self = Self::new(self.planned_size, self.planned_files, now);
    }

    /// The request was resolved: the job holds `files` files of `size` bytes in all, from
    /// `hosts` hosts; `folder` if it is a folder.
    pub fn resolved(&mut self, size: u64, files: u64, hosts: usize, folder: bool) {
        self.size = Some(size);
        self.files = Some(files);
        self.hosts_known = hosts;
        self.folder = folder;
    }

    /// Takes one event of the job into account.
    pub fn apply(&mut self, event: &DownloadEvent, now: Instant) {
        match event {
            DownloadEvent::JobStarted {
                files,
                size,
                hosts,
                resumed,
                ..
            } => {
                self.folder = true;
                self.size = Some(*size);
                self.files = Some(*files);
                self.hosts_known = *hosts;
                self.resumed += resumed;
                self.delivering.clear();
            }
            DownloadEvent::Started {
                size,
                hosts,
                resumed,
                ..
            } => {
                self.resumed += resumed;
                // In a folder job a file's start says nothing about the job's size or hosts.
                if !self.folder {
                    self.size = Some(*size);
                    self.files = Some(1);
                    self.hosts_known = *hosts;
                    self.delivering.clear();
                }
            }
            DownloadEvent::ChunkDone { bytes, host, .. } => {
                self.arrived += *bytes as u64;
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
            DownloadEvent::FileDone {
                bytes,
                already_there,
                ..
            } => {
                if self.folder {
                    self.files_done += 1;
                    self.finished_bytes += bytes;
                    if *already_there {
                        self.files_skipped += 1;
                        self.skipped_bytes += bytes;
                    }
                } else {
                    // The one file: said once, or twice (with `Finished`); counted once.
                    self.files_done = 1;
                    self.finished_bytes = *bytes;
                    if *already_there {
                        self.files_skipped = 1;
                        self.skipped_bytes = *bytes;
                    }
                }
            }
            DownloadEvent::Finished { bytes, .. } => {
                // A folder's `Finished` closes the job; its files were counted one by one.
                if !self.folder {
                    self.files_done = 1;
                    self.finished_bytes = *bytes;
                }
            }
            DownloadEvent::FileConflict { .. } => self.conflicts += 1,
            DownloadEvent::FileFailed { .. } => self.files_failed += 1,
            DownloadEvent::PeerFailed { .. } | DownloadEvent::Flushing => {}
        }
    }

    /// The job's run ended with `report`: its counts are the last word.
    pub fn ended(&mut self, report: &JobReport) {
        self.size = Some(report.size);
        self.files = Some(report.files);
        self.files_done = report.fetched + report.already_there;
        self.files_skipped = report.already_there;
        self.conflicts = report.conflicts_total;
        self.files_failed = report.failed_total;
        self.resumed = self.resumed.max(report.bytes_resumed);
        if report.complete() {
            self.finished_bytes = report.size;
        }
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

    /// Whether the job is a folder, as far as known.
    pub fn is_folder(&self) -> bool {
        self.folder
    }

    /// Bytes of the job, once known (0 before).
    pub fn size(&self) -> u64 {
        self.size.or(self.planned_size).unwrap_or(0)
    }

    /// Files in the job, once known (0 before).
    pub fn files_total(&self) -> u64 {
        self.files.or(self.planned_files).unwrap_or(0)
    }

    /// Files in place: fetched in this run, or found already there.
    pub fn files_done(&self) -> u64 {
        self.files_done
    }

    /// Files found already there (identical, by hash), not fetched.
    pub fn files_skipped(&self) -> u64 {
        self.files_skipped
    }

    /// Files whose target holds something else (left alone, not fetched).
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Files that could not be fetched.
    pub fn files_failed(&self) -> u64 {
        self.files_failed
    }

    /// Bytes verified and in place, resumed and already-there ones included.
    pub fn done(&self) -> u64 {
        let seen = self.resumed + self.arrived + self.skipped_bytes;
        let done = seen.max(self.finished_bytes);
        match self.size() {
            0 => done,
            size => done.min(size),
        }
    }

    /// Bytes fetched from hosts in this run (not resumed, not already there).
    pub fn fetched(&self) -> u64 {
        self.arrived
    }

    /// Bytes found on disk from an earlier run.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Bytes per second fetched over the last [`SPEED_WINDOW`] (or since the run began, if
    /// that is shorter). Resumed bytes and files already there are not fetched, so they
    /// don't count.
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

    /// Hosts known for the job.
    pub fn hosts_known(&self) -> usize {
        self.hosts_known
    }

    /// Hosts that delivered a chunk in this run.
    pub fn hosts_delivering(&self) -> usize {
        self.delivering.len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use p2p_protocol::FileId;

    use super::*;
    use crate::download::FileProblem;

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

    fn job_started(files: u64, size: u64, hosts: usize) -> DownloadEvent {
        DownloadEvent::JobStarted {
            name: "album".into(),
            files,
            size,
            hosts,
            resumed: 0,
        }
    }

    fn chunk(bytes: usize, port: u16) -> DownloadEvent {
        DownloadEvent::ChunkDone {
            index: 0,
            bytes,
            host: host(port),
        }
    }

    fn file_done(bytes: u64, already_there: bool) -> DownloadEvent {
        DownloadEvent::FileDone {
            path: PathBuf::from("album/f"),
            bytes,
            already_there,
        }
    }

    const MB: usize = 1_000_000;

    #[test]
    fn speed_is_bytes_over_the_last_window() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, None, t0);
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
        let mut p = Progress::new(None, None, t0);
        p.apply(&started(10 * MB as u64, 1, 0), t0);
        p.apply(&chunk(2 * MB, 1), t0 + Duration::from_secs(1));
        let speed = p.speed(t0 + Duration::from_secs(2));
        assert!((speed - 1.0e6).abs() < 1.0, "{speed}");
    }

    #[test]
    fn resumed_bytes_count_as_done_but_not_as_speed() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, None, t0);
        p.apply(&started(8 * MB as u64, 1, 4 * MB as u64), t0);
        assert_eq!(p.done(), 4 * MB as u64);
        assert_eq!(p.resumed(), 4 * MB as u64);
        assert_eq!(p.fetched(), 0);
        assert_eq!(p.speed(t0 + Duration::from_secs(1)), 0.0);
        p.apply(&chunk(MB, 1), t0 + Duration::from_secs(1));
        let speed = p.speed(t0 + Duration::from_secs(1));
        assert!((speed - 1.0e6).abs() < 1.0, "{speed}");
        assert_eq!(p.fetched(), MB as u64);
    }

    #[test]
    fn hosts_delivering_and_dropped() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, None, t0);
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
    fn a_single_file_counts_once_however_its_end_is_told() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, None, t0);
        assert_eq!((p.size(), p.files_total()), (0, 0));
        p.apply(&started(10, 1, 0), t0);
        assert_eq!((p.size(), p.files_total()), (10, 1));
        p.apply(&chunk(10, 1), t0);
        p.apply(&file_done(10, false), t0);
        p.apply(
            &DownloadEvent::Finished {
                path: PathBuf::from("f"),
                bytes: 10,
                elapsed: Duration::ZERO,
            },
            t0,
        );
        assert_eq!((p.files_done(), p.files_skipped(), p.done()), (1, 0, 10));
        // Already there: no chunk, no `Started`; the file counts as done and skipped.
        let mut p = Progress::new(Some(10), Some(1), t0);
        p.apply(&file_done(10, true), t0);
        assert_eq!((p.files_done(), p.files_skipped(), p.done()), (1, 1, 10));
        assert_eq!(p.speed(t0 + Duration::from_secs(1)), 0.0);
    }

    #[test]
    fn a_folder_counts_bytes_over_all_its_files() {
        let t0 = Instant::now();
        let mut p = Progress::new(None, None, t0);
        p.apply(&job_started(5, 50, 2), t0);
        assert_eq!((p.files_total(), p.size(), p.hosts_known()), (5, 50, 2));
        assert!(p.is_folder());
        // Two files already there, chunks of two others arriving interleaved.
        p.apply(&file_done(10, true), t0);
        p.apply(&file_done(10, true), t0);
        p.apply(&chunk(4, 1), t0);
        p.apply(&chunk(4, 2), t0);
        // A file's own `Started` changes neither the job's size nor its hosts.
        p.apply(&started(10, 1, 0), t0);
        assert_eq!((p.size(), p.hosts_known()), (50, 2));
        assert_eq!((p.done(), p.files_done(), p.files_skipped()), (28, 2, 2));
        p.apply(&chunk(6, 1), t0);
        p.apply(&file_done(10, false), t0);
        assert_eq!((p.done(), p.files_done()), (34, 3));
        // A file that resumed 8 bytes from its .part without saying so: its end covers them.
        p.apply(&chunk(2, 2), t0);
        p.apply(&file_done(10, false), t0);
        assert_eq!((p.done(), p.files_done()), (40, 4));
        // One conflict: the job can't be done; the last 10 bytes stay missing.
        p.apply(
            &DownloadEvent::FileConflict {
                path: PathBuf::from("album/x"),
                reason: "a folder is there".into(),
            },
            t0,
        );
        assert_eq!((p.conflicts(), p.files_failed()), (1, 0));
        p.apply(
            &DownloadEvent::FileFailed {
                path: PathBuf::from("album/y"),
                error: "no host".into(),
            },
            t0,
        );
        assert_eq!((p.conflicts(), p.files_failed()), (1, 1));
        assert_eq!(p.done(), 40);
        // Only the 16 bytes that arrived make the speed (skipped ones were not fetched).
        let speed = p.speed(t0 + Duration::from_secs(1));
        assert!((speed - 16.0).abs() < 1e-9, "{speed}");
        let eta = p.eta(t0 + Duration::from_secs(1)).unwrap();
        assert!((eta.as_secs_f64() - 10.0 / 16.0).abs() < 1e-6, "{eta:?}");
    }

    #[test]
    fn the_report_has_the_last_word_and_a_restart_counts_again() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(30), Some(3), t0);
        assert_eq!((p.size(), p.files_total()), (30, 3));
        p.resolved(30, 3, 1, true);
        p.apply(&file_done(10, false), t0);
        let report = JobReport {
            path: PathBuf::from("/tmp/album"),
            files: 3,
            fetched: 1,
            already_there: 1,
            conflicts: vec![FileProblem {
                path: PathBuf::from("/tmp/album/c"),
                reason: "a folder is there".into(),
            }],
            conflicts_total: 1,
            failed: Vec::new(),
            failed_total: 0,
            bytes_fetched: 10,
            bytes_resumed: 0,
            size: 30,
            elapsed: Duration::from_secs(1),
            per_host: Vec::new(),
            shared: None,
        };
        p.ended(&report);
        assert_eq!(
            (p.files_done(), p.files_skipped(), p.conflicts()),
            (2, 1, 1)
        );
        // A resume: the new run finds the done files again and counts them as it goes.
        let t1 = t0 + Duration::from_secs(60);
        p.restart(t1);
        assert_eq!(
            (p.size(), p.files_total(), p.done(), p.files_done()),
            (30, 3, 0, 0)
        );
        p.apply(&job_started(3, 30, 1), t1);
        p.apply(&file_done(10, true), t1);
        p.apply(&file_done(10, true), t1);
        assert_eq!((p.done(), p.files_skipped()), (20, 2));
        assert_eq!(p.speed(t1 + Duration::from_secs(1)), 0.0);
        let complete = JobReport {
            fetched: 1,
            already_there: 2,
            conflicts: Vec::new(),
            conflicts_total: 0,
            ..report
        };
        p.ended(&complete);
        assert_eq!((p.done(), p.files_done(), p.conflicts()), (30, 3, 0));
    }
}
