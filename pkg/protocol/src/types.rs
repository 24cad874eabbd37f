//! The nouns both sides share: hashes, ids, secrets and the file manifest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{CHUNK_SIZE, MAX_CHUNKS_PER_FILE, MAX_FILE_NAME_LEN, MIN_ID_PREFIX_LEN};

/// Defines a 32-byte newtype that travels as MessagePack `bin 8` of length 32 and prints as
/// 64 lowercase hex characters.
macro_rules! bytes32 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 12 hex characters, for logs and tables.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.fmt_short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::NotFullId(s.to_owned()))?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_bytes(Bytes32Visitor).map(Self)
            }
        }
    };
}

struct Bytes32Visitor;

impl<'de> serde::de::Visitor<'de> for Bytes32Visitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("32 bytes (MessagePack bin)")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into()
            .map_err(|_| E::invalid_length(v.len(), &"32 bytes"))
    }
}

bytes32!(
    /// Identifies a file: the SHA-256 of its manifest's canonical encoding
    /// ([`FileManifest::canonical_bytes`]). Anyone holding an id can check a manifest.
    FileId
);
bytes32!(
    /// A SHA-256 digest of a chunk.
    Sha256Hash
);
bytes32!(
    /// Identifies a shared folder: the SHA-256 of its head's canonical encoding
    /// ([`crate::folder::FolderHead::id`]), which certifies every file's path, id and size.
    FolderId
);

impl Sha256Hash {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

/// Identifies a registered peer for the lifetime of its registration. Assigned by the index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// A file id or a prefix of one, as a user types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPrefix(String);

impl IdPrefix {
    /// The lowercase hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `id` starts with this prefix.
    pub fn matches(&self, id: &FileId) -> bool {
        id.to_string().starts_with(&self.0)
    }

    /// The full id, if the prefix is all 64 characters.
    pub fn as_full_id(&self) -> Option<FileId> {
        self.0.parse().ok()
    }
}

impl FromStr for IdPrefix {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdParseError::NotHex(quote_start(&s)));
        }
        if s.len() < MIN_ID_PREFIX_LEN || s.len() > 64 {
            return Err(IdParseError::BadLength(quote_start(&s)));
        }
        Ok(Self(s))
    }
}

/// The start of what the user typed, for an error message that must stay one short line
/// (and fit in a reply frame) whatever was typed.
fn quote_start(s: &str) -> String {
    const SHOWN: usize = 70;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a typed id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdParseError {
    /// Not hexadecimal.
    #[error("'{0}' is not a file id: use hexadecimal characters 0-9 and a-f")]
    NotHex(String),
    /// Too short to be useful, or longer than an id.
    #[error(
        "'{0}' is not a file id: give at least {MIN_ID_PREFIX_LEN} and at most 64 hex characters"
    )]
    BadLength(String),
    /// Not a full 64-character id.
    #[error("'{0}' is not a full 64-character file id")]
    NotFullId(String),
}

/// Everything needed to fetch and verify a file. Its id is [`FileManifest::id`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// Base name of the file (no directory part); see [`validate_file_name`].
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size in bytes; always [`CHUNK_SIZE`] in this protocol version.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order. The last chunk may be short; an empty file has none.
    /// There is no separate whole-file hash: the id covers every chunk hash, so a file whose
    /// chunks all match is the file, byte for byte, and nothing has to hash it twice.
    pub chunks: Vec<Sha256Hash>,
}

/// Domain tag that starts the canonical encoding, so a manifest hash can't collide with
/// the hash of anything else.
const MANIFEST_TAG: &[u8; 16] = b"p2p-manifest-v2\0";

impl FileManifest {
    /// Number of chunks a file of `size` bytes has.
    pub fn chunk_count_for(size: u64, chunk_size: u32) -> u64 {
        size.div_ceil(u64::from(chunk_size))
    }

    /// Byte offset of chunk `index`.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Length of chunk `index` (the last one may be short), or `None` if out of range.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        if index as usize >= self.chunks.len() {
            return None;
        }
        let start = self.chunk_offset(index);
        let len = (self.size - start).min(u64::from(self.chunk_size));
        Some(len as usize)
    }

    /// The bytes whose SHA-256 is the file id. Fixed layout, independent of MessagePack:
    ///
    /// ```text
    /// "p2p-manifest-v2\0"            16 bytes
    /// size                           u64 big-endian
    /// chunk_size                     u32 big-endian
    /// name length                    u16 big-endian, then the UTF-8 name
    /// chunk count                    u32 big-endian, then 32 bytes per chunk hash
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + 8 + 4 + 2 + self.name.len() + 4 + 32 * self.chunks.len());
        out.extend_from_slice(MANIFEST_TAG);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        // validate() caps names at MAX_FILE_NAME_LEN, far below u16::MAX.
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&c.0);
        }
        out
    }

    /// The file id: SHA-256 of [`Self::canonical_bytes`].
    pub fn id(&self) -> FileId {
        FileId(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Checks that the fields agree with each other and with the protocol's limits. Every
    /// manifest received from the network goes through this before it is used.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_file_name(&self.name)?;
        if self.chunk_size != CHUNK_SIZE {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        let expected = Self::chunk_count_for(self.size, self.chunk_size);
        if expected > MAX_CHUNKS_PER_FILE as u64 {
            return Err(ManifestError::TooLarge(self.size));
        }
        if self.chunks.len() as u64 != expected {
            return Err(ManifestError::ChunkCount {
                size: self.size,
                expected,
                got: self.chunks.len(),
            });
        }
        Ok(())
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The name is not a safe base name.
    #[error(transparent)]
    Name(#[from] FileNameError),
    /// Chunk size other than [`CHUNK_SIZE`].
    #[error("chunk size {0} is not the protocol's {CHUNK_SIZE}")]
    ChunkSize(u32),
    /// More chunks than [`MAX_CHUNKS_PER_FILE`].
    #[error("file of {0} bytes is larger than the protocol allows")]
    TooLarge(u64),
    /// The chunk list does not match the size.
    #[error("a file of {size} bytes has {expected} chunks, but the manifest lists {got}")]
    ChunkCount {
        /// Declared size.
        size: u64,
        /// Chunks that size needs.
        expected: u64,
        /// Chunks listed.
        got: usize,
    },
    /// The manifest does not hash to the id it was fetched for.
    #[error("manifest does not match file id {0}")]
    IdMismatch(FileId),
}

/// Why a file name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FileNameError {
    /// Empty.
    #[error("file name is empty")]
    Empty,
    /// Longer than [`MAX_FILE_NAME_LEN`] bytes.
    #[error("file name is longer than {MAX_FILE_NAME_LEN} bytes")]
    TooLong,
    /// `.` or `..`.
    #[error("file name {0:?} is a relative directory reference")]
    DotName(String),
    /// Contains `/`, `\`, NUL or another control character.
    #[error("file name {0:?} contains a path separator or control character")]
    BadCharacter(String),
    /// A name Windows reserves for devices (CON, NUL, COM1, ...).
    #[error("file name {0:?} is a reserved device name")]
    Reserved(String),
}

/// Checks that `name` is a plain base name that can't point outside a folder on any common
/// system: not empty, not `.`/`..`, no `/`, `\`, NUL or control characters, not a Windows
/// device name, at most [`MAX_FILE_NAME_LEN`] bytes.
///
/// ```
/// use p2p_protocol::validate_file_name;
/// assert!(validate_file_name("report é.pdf").is_ok());
/// assert!(validate_file_name("../etc/passwd").is_err());
/// assert!(validate_file_name("nul.txt").is_err());
/// ```
pub fn validate_file_name(name: &str) -> Result<(), FileNameError> {
    if name.is_empty() {
        return Err(FileNameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(FileNameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(FileNameError::DotName(name.to_owned()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(FileNameError::BadCharacter(name.to_owned()));
    }
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        return Err(FileNameError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(size: u64) -> FileManifest {
        let n = FileManifest::chunk_count_for(size, CHUNK_SIZE) as usize;
        FileManifest {
            name: "a.bin".into(),
            size,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([2; 32]); n],
        }
    }

    #[test]
    fn id_depends_on_name_and_content() {
        let a = manifest(10);
        let mut b = a.clone();
        assert_eq!(a.id(), b.id());
        b.name = "b.bin".into();
        assert_ne!(a.id(), b.id());
        let mut c = a.clone();
        c.chunks[0] = Sha256Hash([3; 32]);
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn chunk_lengths() {
        let m = manifest(u64::from(CHUNK_SIZE) * 2 + 5);
        assert_eq!(m.chunks.len(), 3);
        assert_eq!(m.chunk_len(0), Some(CHUNK_SIZE as usize));
        assert_eq!(m.chunk_len(2), Some(5));
        assert_eq!(m.chunk_len(3), None);
        assert_eq!(manifest(0).chunks.len(), 0);
        assert_eq!(manifest(u64::from(CHUNK_SIZE)).chunks.len(), 1);
    }

    #[test]
    fn validate_rejects_disagreeing_fields() {
        assert!(manifest(100).validate().is_ok());
        let mut m = manifest(100);
        m.chunks.push(Sha256Hash([0; 32]));
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChunkCount { .. })
        ));
        let mut m = manifest(100);
        m.chunk_size = 1024;
        assert_eq!(m.validate(), Err(ManifestError::ChunkSize(1024)));
        let mut m = manifest(100);
        m.size = u64::MAX;
        assert!(matches!(m.validate(), Err(ManifestError::TooLarge(_))));
    }

    #[test]
    fn file_names() {
        for bad in [
            "", ".", "..", "a/b", "a\\b", "a\0b", "CON", "com1.txt", "Lpt9", "x\n",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "..a",
            "résumé.pdf",
            "数据.bin",
            "COM10",
            "console.log",
            ".hidden",
        ] {
            assert!(validate_file_name(good).is_ok(), "{good:?} refused");
        }
        assert!(validate_file_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn id_prefixes() {
        let id = FileId([0xab; 32]);
        let p: IdPrefix = "ABABAB".parse().unwrap();
        assert!(p.matches(&id));
        assert!(p.as_full_id().is_none());
        assert!("abab".parse::<IdPrefix>().is_err());
        assert!("abzzzz".parse::<IdPrefix>().is_err());
        let full: IdPrefix = id.to_string().parse().unwrap();
        assert_eq!(full.as_full_id(), Some(id));
        assert_eq!(id.to_string().parse::<FileId>(), Ok(id));
        // However long the input, the error stays one short line.
        let err = "z"
            .repeat(2 << 20)
            .parse::<IdPrefix>()
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{}", err.len());
    }
}
