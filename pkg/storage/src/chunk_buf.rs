//! [`ChunkBuf`]: a reusable buffer for one chunk, aligned so that it can be written to disk
//! with `O_DIRECT` straight from where the network put it.

use p2p_protocol::CHUNK_SIZE;

/// Alignment of a [`ChunkBuf`]'s data: the page size, which `O_DIRECT` needs on every common
/// file system.
pub const CHUNK_BUF_ALIGN: usize = 4096;

/// Room for one chunk (up to [`CHUNK_SIZE`] bytes) whose first byte sits at a multiple of
/// [`CHUNK_BUF_ALIGN`]. A download keeps a few of these and reuses them, so receiving a chunk
/// neither allocates nor faults in fresh pages, and its memory stays at a fixed size.
pub struct ChunkBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl ChunkBuf {
    /// A zeroed buffer (so its pages are mapped once, here, not during a transfer).
    pub fn new() -> Self {
        let storage = vec![0u8; CHUNK_SIZE as usize + CHUNK_BUF_ALIGN];
        let start = storage.as_ptr().align_offset(CHUNK_BUF_ALIGN);
        Self {
            storage,
            start,
            len: 0,
        }
    }

    /// The data received so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Empties the buffer and returns `len` bytes to fill (at most [`CHUNK_SIZE`]); they are
    /// [`Self::as_slice`] from then on.
    pub fn fill(&mut self, len: usize) -> &mut [u8] {
        assert!(
            len <= CHUNK_SIZE as usize,
            "a chunk is at most CHUNK_SIZE bytes"
        );
        self.len = len;
        &mut self.storage[self.start..self.start + len]
    }
}

impl Default for ChunkBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ChunkBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_aligned_and_sized() {
        let mut buf = ChunkBuf::new();
        assert!(buf.as_slice().is_empty());
        buf.fill(5).copy_from_slice(b"hello");
        assert_eq!(buf.as_slice(), b"hello");
        assert_eq!(buf.as_slice().as_ptr() as usize % CHUNK_BUF_ALIGN, 0);
        assert_eq!(buf.fill(CHUNK_SIZE as usize).len(), CHUNK_SIZE as usize);
    }
}
