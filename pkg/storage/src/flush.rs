//! Flushing many files to disk at once, on threads kept for the life of the process.
//!
//! A batch of small files is made durable by one `fdatasync` per file, run in parallel so the
//! file system's journal commits are shared between them (`store.rs`'s invariants give the
//! figures). Threads started for each batch would cost more than the flushes themselves on a
//! fast disk: a 5,000-file download started about 1,300 of them. So the flushes run on one
//! pool of [`FLUSH_THREADS`] threads, started the first time it is needed, and asleep on a
//! channel otherwise. (Not rayon's pool: its idle threads spin and yield before they sleep,
//! about 24,000 `sched_yield`s in one 5,000-file download, CPU taken from the download
//! itself; a flush is a wait for the disk, not work to balance.)

use std::fs::File;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};

/// Flushes in flight at once (most of their time is waiting for the disk, not CPU).
pub const FLUSH_THREADS: usize = 16;

/// One file to flush: a handle of its own (a duplicate of the caller's), where it stands in
/// the caller's list, and where to say how it went.
type Job = (File, usize, Sender<(usize, std::io::Result<()>)>);

/// The pool's queue, or `None` if the system refused its threads (then each flush runs on
/// the caller's thread, one after another: slower, never wrong).
static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    POOL.get_or_init(|| {
        let (queue, jobs) = channel::<Job>();
        let jobs = std::sync::Arc::new(Mutex::new(jobs));
        for i in 0..FLUSH_THREADS {
            let jobs = jobs.clone();
            let started = std::thread::Builder::new()
                .name(format!("p2p-flush-{i}"))
                .spawn(move || flusher(&jobs));
            // One thread is enough to be correct; none means flushing inline.
            if started.is_err() && i == 0 {
                return None;
            }
        }
        Some(Mutex::new(queue))
    })
    .as_ref()
}

/// A pool thread: waits (asleep, no spinning) for a file, flushes it, says how it went.
fn flusher(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((file, at, done)) = job else { return };
        let _ = done.send((at, file.sync_data()));
    }
}

/// Flushes the data of every file given (`None`: nothing to flush there, `Ok`), in parallel,
/// and returns one result per entry, in order.
pub fn sync_data_all(files: &[Option<&File>]) -> Vec<std::io::Result<()>> {
    let mut results: Vec<std::io::Result<()>> = files.iter().map(|_| Ok(())).collect();
    let Some(queue) = pool().filter(|_| files.len() > 1) else {
        for (result, file) in results.iter_mut().zip(files) {
            if let Some(file) = file {
                *result = file.sync_data();
            }
        }
        return results;
    };
    let (done, finished) = channel();
    let mut sent = 0;
    for (at, file) in files.iter().enumerate() {
        let Some(file) = file else { continue };
        // The pool needs a handle it owns; the duplicate flushes the same file.
        let queued = file.try_clone().ok().and_then(|own| {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.send((own, at, done.clone())).ok()
        });
        match queued {
            Some(()) => {
                // Until its flusher says otherwise.
                results[at] = Err(std::io::Error::other("not flushed"));
                sent += 1;
            }
            None => results[at] = file.sync_data(),
        }
    }
    drop(done);
    for (at, result) in finished.iter().take(sent) {
        results[at] = result;
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
