//! Flushing many files to disk at once, on threads kept for the life of the process.
//!
//! A batch of small files is made durable by one `fdatasync` per file, run in parallel so the
//! file system's journal commits are shared between them (`store.rs`'s invariants give the
//! figures). Threads started for each batch would cost more than the flushes themselves on a
//! fast disk: a 5,000-file download started about 1,300 of them. So the flushes run on one
//! pool of threads kept between batches, asleep on a channel while idle, with a new one
//! started only when a flush finds none idle (so a hung disk holds only its own flushes'
//! threads, never another download's). (Not rayon's pool: its idle threads spin and yield before they sleep,
//! about 24,000 `sched_yield`s in one 5,000-file download, CPU taken from the download
//! itself; a flush is a wait for the disk, not work to balance.)

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Flushes one call keeps in flight at once (most of their time is waiting for the disk).
pub const FLUSHES_AT_ONCE: usize = 16;

/// Threads the pool holds at most; beyond, flushes queue for the next free thread.
const MAX_THREADS: usize = 256;

/// A thread idle this long ends (the pool starts another when it is needed again).
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// One file to flush: a handle of its own (a duplicate of the caller's), where it stands in
/// the caller's list, and where to say how it went.
type Job = (File, usize, Sender<(usize, std::io::Result<()>)>);

/// Threads that flush files. A thread is started whenever a flush is queued and none is
/// idle, so a disk that hangs holds only the threads flushing to it: every other download
/// gets threads of its own.
struct Pool {
    queue: Mutex<Sender<Job>>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    idle: Arc<AtomicUsize>,
    threads: Arc<AtomicUsize>,
}

impl Pool {
    fn new() -> Self {
        let (queue, jobs) = channel::<Job>();
        Self {
            queue: Mutex::new(queue),
            jobs: Arc::new(Mutex::new(jobs)),
            idle: Arc::new(AtomicUsize::new(0)),
            threads: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues `job`; `Err` gives it back if it can't be run (no thread could be started).
    fn submit(&self, job: Job) -> Result<(), Job> {
        // Queued first, idle threads counted after: a thread that stops being idle after
        // this count looks at the queue again before it ends (see `flusher`).
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|e| e.0)?;
        if self.idle.load(SeqCst) == 0 && self.threads.load(SeqCst) < MAX_THREADS {
            self.threads.fetch_add(1, SeqCst);
            let (jobs, idle, threads) =
                (self.jobs.clone(), self.idle.clone(), self.threads.clone());
            let started = std::thread::Builder::new()
                .name("p2p-flush".into())
                .spawn(move || flusher(&jobs, &idle, &threads));
            if started.is_err() {
                self.threads.fetch_sub(1, SeqCst);
                // No thread at all to run what was queued: the caller runs it.
                if self.threads.load(SeqCst) == 0 {
                    let taken = self
                        .jobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .try_recv();
                    if let Ok(job) = taken {
                        return Err(job);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A pool thread: waits (asleep, no spinning) for a file, flushes it, says how it went; ends
/// after [`IDLE_EXIT`] without work.
fn flusher(jobs: &Mutex<Receiver<Job>>, idle: &AtomicUsize, threads: &AtomicUsize) {
    loop {
        idle.fetch_add(1, SeqCst);
        let job = jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(IDLE_EXIT);
        idle.fetch_sub(1, SeqCst);
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                threads.fetch_sub(1, SeqCst);
                // A flush queued while this thread still counted as idle found no reason to
                // start another: it is run here.
                match jobs.lock().unwrap_or_else(|e| e.into_inner()).try_recv() {
                    Ok(job) => {
                        threads.fetch_add(1, SeqCst);
                        job
                    }
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (file, at, done) = job;
        let _ = done.send((at, file.sync_data()));
    }
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Flushes the data of every file given (`None`: nothing to flush there, `Ok`), up to
/// [`FLUSHES_AT_ONCE`] at a time, and returns one result per entry, in order.
pub fn sync_data_all(files: &[Option<&File>]) -> Vec<std::io::Result<()>> {
    let mut results: Vec<std::io::Result<()>> = files.iter().map(|_| Ok(())).collect();
    if files.iter().flatten().count() <= 1 {
        for (result, file) in results.iter_mut().zip(files) {
            if let Some(file) = file {
                *result = file.sync_data();
            }
        }
        return results;
    }
    let pool = POOL.get_or_init(Pool::new);
    let (done, finished) = channel();
    let mut waiting = files
        .iter()
        .enumerate()
        .filter_map(|(at, file)| file.map(|file| (at, file)));
    let mut in_flight = 0;
    let mut submit_next = |in_flight: &mut usize, results: &mut Vec<std::io::Result<()>>| {
        for (at, file) in waiting.by_ref() {
            // The pool needs a handle it owns; the duplicate flushes the same file.
            let queued = file
                .try_clone()
                .map_err(|_| ())
                .and_then(|own| pool.submit((own, at, done.clone())).map_err(|_| ()));
            match queued {
                Ok(()) => {
                    // Until its flusher says otherwise.
                    results[at] = Err(std::io::Error::other("not flushed"));
                    *in_flight += 1;
                    return;
                }
                Err(()) => results[at] = file.sync_data(),
            }
        }
    };
    for _ in 0..FLUSHES_AT_ONCE {
        submit_next(&mut in_flight, &mut results);
    }
    while in_flight > 0 {
        let Ok((at, result)) = finished.recv() else {
            break;
        };
        results[at] = result;
        in_flight -= 1;
        submit_next(&mut in_flight, &mut results);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file's result comes back in its place, and files are flushed whole.
    #[test]
    fn flushes_every_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<File> = (0..40)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                std::fs::write(&path, vec![i as u8; 1000 + i]).unwrap();
                File::options().write(true).open(path).unwrap()
            })
            .collect();
        let mut refs: Vec<Option<&File>> = files.iter().map(Some).collect();
        refs[7] = None;
        let results = sync_data_all(&refs);
        assert_eq!(results.len(), 40);
        assert!(results.iter().all(Result::is_ok));
    }

    /// Callers on many threads at once each get their own files' results.
    #[test]
    fn many_callers_at_once_each_get_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for caller in 0..8 {
                let dir = dir.path();
                scope.spawn(move || {
                    let files: Vec<File> = (0..50)
                        .map(|i| File::create(dir.join(format!("c{caller}-{i}"))).unwrap())
                        .collect();
                    let (reader, _writer) = std::io::pipe().unwrap();
                    let bad = File::from(std::os::fd::OwnedFd::from(reader));
                    let mut refs: Vec<Option<&File>> = files.iter().map(Some).collect();
                    refs.insert(caller, Some(&bad));
                    let results = sync_data_all(&refs);
                    for (at, result) in results.iter().enumerate() {
                        assert_eq!(result.is_err(), at == caller, "caller {caller} file {at}");
                    }
                });
            }
        });
    }

    /// A file that can't be flushed gets its error, in its place, and the others still go.
    #[test]
    fn an_error_stays_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = File::create(dir.path().join("good")).unwrap();
        // A pipe can't be fsynced: EINVAL.
        let (reader, _writer) = std::io::pipe().unwrap();
        let bad = File::from(std::os::fd::OwnedFd::from(reader));
        let results = sync_data_all(&[Some(&good), Some(&bad), Some(&good)]);
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
        assert!(results[2].is_ok());
    }
}
