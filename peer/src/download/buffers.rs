//! The buffers chunk data is received into, reused across the chunks of a job.
//!
//! A chunk larger than [`SMALL_BUF`] gets a [`ChunkBuf`] (4 MiB, page-aligned, so a whole
//! chunk can be written with `O_DIRECT`); a smaller one (a small file, or a big file's tail)
//! a plain buffer of the next power of two from [`MIN_CLASS`], so 5,000 files of 20 KB take
//! 32 KiB buffers, not 4 MiB ones. Buffers come back to the pool once their chunk is written;
//! the pool keeps at most [`KEEP_BIG`] big ones and [`KEEP_SMALL_BYTES`] of small ones, so its
//! memory is bounded whatever a job did before. What is in use at once is bounded by the
//! scheduler's requests in flight (each holds one buffer from its reply until it is written).
//!
//! Link tasks take buffers and the engine gives them back, so the pool is behind one std
//! mutex, held for a push or a pop.

use std::sync::Mutex;

use p2p_storage::ChunkBuf;

/// Chunks up to this size go into small buffers.
pub(crate) const SMALL_BUF: usize = 1024 * 1024;
/// The smallest small buffer.
const MIN_CLASS: usize = 4096;
/// Size classes: 4 KiB, 8 KiB, ... [`SMALL_BUF`].
const CLASSES: usize = (SMALL_BUF / MIN_CLASS).ilog2() as usize + 1;
/// Big buffers kept for reuse.
const KEEP_BIG: usize = 16;
/// Bytes of small buffers kept for reuse.
const KEEP_SMALL_BYTES: usize = 16 * 1024 * 1024;

/// One chunk's data.
pub(crate) enum Buf {
    Big(ChunkBuf),
    Small(Vec<u8>),
}

impl Buf {
    /// The data.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Buf::Big(buf) => buf.as_slice(),
            Buf::Small(buf) => buf,
        }
    }

    /// Room for `len` bytes (at most what the buffer was taken for), which are
    /// [`Buf::as_slice`] from then on.
    pub fn fill(&mut self, len: usize) -> &mut [u8] {
        match self {
            Buf::Big(buf) => buf.fill(len),
            Buf::Small(buf) => {
                buf.clear();
                buf.resize(len, 0);
                buf
            }
        }
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf({} bytes)", self.as_slice().len())
    }
}

/// Buffers not in use.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    big: Vec<ChunkBuf>,
    small: [Vec<Vec<u8>>; CLASSES],
    small_bytes: usize,
}

/// The class of a small buffer for `len` bytes, and its capacity.
fn class(len: usize) -> (usize, usize) {
    let size = len.max(MIN_CLASS).next_power_of_two();
    ((size / MIN_CLASS).ilog2() as usize, size)
}

impl BufPool {
    /// A buffer for a chunk of `len` bytes.
    pub fn take(&self, len: usize) -> Buf {
        if len > SMALL_BUF {
            let reused = self.lock().big.pop();
            return Buf::Big(reused.unwrap_or_default());
        }
        let (class, size) = class(len);
        let reused = {
            let mut free = self.lock();
            let reused = free.small[class].pop();
            if reused.is_some() {
                free.small_bytes -= size;
            }
            reused
        };
        Buf::Small(reused.unwrap_or_else(|| Vec::with_capacity(size)))
    }

    /// Takes a buffer back for reuse (or frees it, beyond what the pool keeps).
    pub fn give(&self, buf: Buf) {
        match buf {
            Buf::Big(buf) => {
                let mut free = self.lock();
                if free.big.len() < KEEP_BIG {
                    free.big.push(buf);
                }
            }
            Buf::Small(buf) => {
                let (class, size) = class(buf.capacity());
                // Only buffers of exactly their class's size go back (none other is made).
                if size != buf.capacity() {
                    return;
                }
                let mut free = self.lock();
                if free.small_bytes + size <= KEEP_SMALL_BYTES {
                    free.small_bytes += size;
                    free.small[class].push(buf);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_get_small_buffers_that_are_reused() {
        let pool = BufPool::default();
        let mut buf = pool.take(20_000);
        assert!(matches!(&buf, Buf::Small(v) if v.capacity() == 32 * 1024));
        buf.fill(20_000).fill(7);
        assert_eq!(buf.as_slice().len(), 20_000);
        let ptr = buf.as_slice().as_ptr();
        pool.give(buf);
        let mut again = pool.take(17_000);
        assert_eq!(again.fill(3).as_ptr(), ptr, "the same buffer came back");
        assert!(matches!(pool.take(SMALL_BUF + 1), Buf::Big(_)));
        assert!(matches!(pool.take(0), Buf::Small(v) if v.capacity() == MIN_CLASS));
    }

    #[test]
    fn the_pool_keeps_a_bounded_amount() {
        let pool = BufPool::default();
        let bufs: Vec<Buf> = (0..100).map(|_| pool.take(SMALL_BUF)).collect();
        for buf in bufs {
            pool.give(buf);
        }
        assert!(pool.lock().small_bytes <= KEEP_SMALL_BYTES);
        assert_eq!(
            pool.lock().small[CLASSES - 1].len(),
            KEEP_SMALL_BYTES / SMALL_BUF
        );
    }
}
