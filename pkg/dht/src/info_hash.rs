//! The DHT key of a file: [`info_hash`].

use p2p_protocol::FileId;

/// Length of a Mainline DHT key (an SHA-1-sized info-hash).
pub const INFO_HASH_LEN: usize = 20;

/// The info-hash a file is announced and looked up under: the first 20 bytes of its 32-byte
/// SHA-256 file id. Truncating a SHA-256 keeps it uniformly spread over the DHT's key space,
/// and 160 bits are still far beyond any accidental collision.
///
/// ```
/// use p2p_protocol::FileId;
///
/// let id: FileId = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
///     .parse()
///     .unwrap();
/// let key = p2p_dht::info_hash(&id);
/// assert_eq!(key.len(), 20);
/// assert_eq!(key[..], id.as_bytes()[..20]);
/// ```
pub fn info_hash(id: &FileId) -> [u8; INFO_HASH_LEN] {
    let mut key = [0; INFO_HASH_LEN];
    key.copy_from_slice(&id.as_bytes()[..INFO_HASH_LEN]);
    key
}

/// The same key as mainline's type.
pub(crate) fn target(id: &FileId) -> mainline::Id {
    mainline::Id::from(info_hash(id))
}
