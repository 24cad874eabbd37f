//! Manifest files (`.p2pm`): a file's manifest, its id and the index servers to ask, in a
//! small JSON document a person can e-mail or carry on a USB stick. Whoever holds one can
//! fetch the file and check every byte of it, since the manifest must hash to the id.
//!
//! ```json
//! {
//!   "format": "p2p-transfer-manifest",
//!   "version": 1,
//!   "file_id": "<64 hex>",
//!   "name": "holiday.mkv",
//!   "size": 734003200,
//!   "chunk_size": 4194304,
//!   "file_hash": "<64 hex>",
//!   "chunks": ["<64 hex>", "..."],
//!   "servers": ["192.168.1.10:8000"]
//! }
//! ```
//!
//! Readers refuse another `format`, a `version` they don't know, malformed hex, a manifest
//! that fails [`FileManifest::validate`], and a manifest that does not hash to `file_id`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::types::{FileId, FileManifest, ManifestError, Sha256Hash};

/// The `format` every manifest file declares.
pub const FORMAT: &str = "p2p-transfer-manifest";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;
/// The usual file name suffix.
pub const SUFFIX: &str = ".p2pm";

/// A parsed, checked manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// The manifest (it hashes to `file_id`).
    pub manifest: FileManifest,
    /// Its id.
    pub file_id: FileId,
    /// Index servers to ask for hosts.
    pub servers: Vec<SocketAddr>,
}

/// Why a manifest file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestFileError {
    /// Not JSON, or not the expected shape.
    #[error("not a p2p-transfer manifest file: {0}")]
    Syntax(String),
    /// Another format or version.
    #[error(
        "unsupported manifest file: format {format:?} version {version} (this program reads {FORMAT:?} version {VERSION})"
    )]
    Unsupported {
        /// Declared format.
        format: String,
        /// Declared version.
        version: u32,
    },
    /// A hash that is not 64 hex characters.
    #[error("damaged manifest file: {0}")]
    BadHash(String),
    /// Fields that disagree.
    #[error("damaged manifest file: {0}")]
    Invalid(#[from] ManifestError),
    /// The manifest does not hash to the id it claims.
    #[error("damaged manifest file: its contents do not match its file id {0}")]
    IdMismatch(FileId),
}

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    file_id: String,
    name: String,
    size: u64,
    chunk_size: u32,
    file_hash: String,
    chunks: Vec<String>,
    #[serde(default)]
    servers: Vec<String>,
}

impl ManifestFile {
    /// A manifest file for `manifest`, naming `servers`.
    pub fn new(manifest: FileManifest, servers: Vec<SocketAddr>) -> Self {
        Self {
            file_id: manifest.id(),
            manifest,
            servers,
        }
    }

    /// The JSON text, pretty-printed, ending in a newline.
    pub fn to_json(&self) -> String {
        let m = &self.manifest;
        let doc = Document {
            format: FORMAT.to_owned(),
            version: VERSION,
            file_id: self.file_id.to_string(),
            name: m.name.clone(),
            size: m.size,
            chunk_size: m.chunk_size,
            file_hash: m.file_hash.to_string(),
            chunks: m.chunks.iter().map(Sha256Hash::to_string).collect(),
            servers: self.servers.iter().map(SocketAddr::to_string).collect(),
        };
        let mut text =
            serde_json::to_string_pretty(&doc).expect("a manifest document always serialises");
        text.push('\n');
        text
    }

    /// Parses and checks a manifest file's text.
    pub fn parse(text: &str) -> Result<Self, ManifestFileError> {
        let doc: Document =
            serde_json::from_str(text).map_err(|e| ManifestFileError::Syntax(e.to_string()))?;
        if doc.format != FORMAT || doc.version != VERSION {
            return Err(ManifestFileError::Unsupported {
                format: doc.format,
                version: doc.version,
            });
        }
        let hash = |what: &str, hex: &str| -> Result<Sha256Hash, ManifestFileError> {
            hex.parse::<Sha256Hash>()
                .map_err(|_| ManifestFileError::BadHash(format!("{what} is not 64 hex characters")))
        };
        let file_id: FileId = doc
            .file_id
            .parse()
            .map_err(|_| ManifestFileError::BadHash("file_id is not 64 hex characters".into()))?;
        let manifest = FileManifest {
            name: doc.name,
            size: doc.size,
            chunk_size: doc.chunk_size,
            file_hash: hash("file_hash", &doc.file_hash)?,
            chunks: doc
                .chunks
                .iter()
                .enumerate()
                .map(|(i, c)| hash(&format!("chunk {i}"), c))
                .collect::<Result<_, _>>()?,
        };
        manifest.validate()?;
        if manifest.id() != file_id {
            return Err(ManifestFileError::IdMismatch(file_id));
        }
        let servers = doc
            .servers
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| ManifestFileError::Syntax(format!("server {s:?} is not ip:port")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            manifest,
            file_id,
            servers,
        })
    }
}

impl fmt::Display for ManifestFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CHUNK_SIZE;

    fn sample() -> ManifestFile {
        let manifest = FileManifest {
            name: "a b.txt".into(),
            size: 5,
            chunk_size: CHUNK_SIZE,
            file_hash: Sha256Hash::of(b"hello"),
            chunks: vec![Sha256Hash::of(b"hello")],
        };
        ManifestFile::new(manifest, vec!["192.168.1.10:8000".parse().unwrap()])
    }

    #[test]
    fn round_trip() {
        let file = sample();
        let text = file.to_json();
        assert!(text.contains("\"format\": \"p2p-transfer-manifest\""));
        assert_eq!(ManifestFile::parse(&text).unwrap(), file);
    }

    #[test]
    fn damage_is_detected() {
        let text = sample().to_json();
        let renamed = text.replace("a b.txt", "other.txt");
        assert!(matches!(
            ManifestFile::parse(&renamed),
            Err(ManifestFileError::IdMismatch(_))
        ));
        let cut = &text[..text.len() / 2];
        assert!(matches!(
            ManifestFile::parse(cut),
            Err(ManifestFileError::Syntax(_))
        ));
        let v2 = text.replace("\"version\": 1", "\"version\": 2");
        assert!(
            ManifestFile::parse(&v2)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let bad_hex = text.replacen("\"file_hash\": \"", "\"file_hash\": \"zz", 1);
        assert!(matches!(
            ManifestFile::parse(&bad_hex),
            Err(ManifestFileError::BadHash(_))
        ));
        let traversal = text.replace("a b.txt", "../x");
        assert!(matches!(
            ManifestFile::parse(&traversal),
            Err(ManifestFileError::Invalid(_))
        ));
    }
}
