//! Flushing many files to disk at once, on threads kept for the life of the process.
//!
//! A batch of small files is made durable by one `fdatasync` per file, run in parallel so the
//! file system's journal commits are shared between them (`store.rs`'s invariants give the
//! figures). Threads started for each batch would cost more than the flushes themselves on a
//! fast disk: a 5,000-file download started about 1,300 of them. So the flushes run on one
//! pool of [`FLUSH_THREADS`] threads, started the first time it is needed, and idle (blocked
//! on a channel, no CPU) otherwise.

use std::fs::File;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Flushes in flight at once (most of their time is waiting for the disk, not CPU).
pub const FLUSH_THREADS: usize = 16;

/// The pool, or `None` if the system refused its threads (then each flush runs on the
/// caller's thread, one after another: slower, never wrong).
static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

fn pool() -> Option<&'static rayon::ThreadPool> {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(FLUSH_THREADS)
            .thread_name(|i| format!("p2p-flush-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Flushes the data of every file given (`None`: nothing to flush there, `Ok`), in parallel,
/// and returns one result per entry, in order.
pub fn sync_data_all(files: &[Option<&File>]) -> Vec<std::io::Result<()>> {
    let flush = |file: &Option<&File>| file.map_or(Ok(()), File::sync_data);
    match pool() {
        Some(pool) if files.len() > 1 => pool.install(|| {
            files
                .par_iter()
                // One file per task: a flush waits for the disk, so each should have its own
                // thread rather than queue behind another.
                .with_max_len(1)
                .map(flush)
                .collect()
        }),
        _ => files.iter().map(flush).collect(),
    }
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
