//! Manifest files (`.p2pm`): a file's manifest, its id and the index servers to ask, in a
//! small JSON document a person can e-mail or carry on a USB stick. Whoever holds one can
//! fetch the file and check every byte of it, since the manifest must hash to the id.
//!
//! ```json
//! {
//!   "format": "p2p-transfer-manifest",
//!   "version": 3,
//!   "file_id": "<64 hex>",
//!   "name": "holiday.mkv",
//!   "size": 734003200,
//!   "chunk_size": 4194304,
//!   "chunks": ["<64 hex>", "..."],
//!   "servers": ["192.168.1.10:8000 MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E4DTC"]
//! }
//! ```
//!
//! Each server is `"ip:port"`, followed by a space and the index's node id when the writer
//! knew it (version 3; version 2 files, addresses only, are still read). A reader that
//! connects to such a server refuses one that shows another node id.
//!
//! Readers refuse another `format`, a `version` they don't know, malformed hex, a manifest
//! that fails [`FileManifest::validate`], and a manifest that does not hash to `file_id`.
//!
//! A folder's manifest file ([`FolderManifestFile`], format `p2p-transfer-folder`) lists every
//! file with its path, and from version 4 on its `folder_id` ([`crate::folder`]), which the
//! reader computes from the files and checks like a `file_id`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::FolderHead;
use crate::folder::{self, FolderError};
use crate::node_id::NodeId;
use crate::text::printable;
use crate::types::{FileId, FileManifest, FolderId, ManifestError, Sha256Hash};

/// The `format` every manifest file declares.
pub const FORMAT: &str = "p2p-transfer-manifest";
/// The version this code writes for a file (it reads this one and [`OLD_VERSION`]).
pub const VERSION: u32 = 3;
/// The previous version, still read: servers are addresses only.
pub const OLD_VERSION: u32 = 2;
/// The version this code writes for a folder: version 3 plus `folder_id`. Folders of
/// versions [`OLD_VERSION`] and [`VERSION`] are still read, their id computed.
pub const FOLDER_VERSION: u32 = 4;
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
    pub servers: Vec<IndexRef>,
}

/// Why a manifest file was refused. Whoever made the file chose the text these quote from it,
/// so they show it through [`printable`].
#[derive(Debug, thiserror::Error)]
pub enum ManifestFileError {
    /// Not JSON, or not the expected shape.
    #[error("not a p2p-transfer manifest file: {}", printable(.0))]
    Syntax(String),
    /// Another format or version.
    #[error(
        "unsupported manifest file: format {format:?} version {version} (this program reads {FORMAT:?} versions {OLD_VERSION} and {VERSION}, and {FOLDER_FORMAT:?} versions {OLD_VERSION} to {FOLDER_VERSION}; make it again with this release's `p2p-transfer manifest create`)"
    )]
    Unsupported {
        /// Declared format.
        format: String,
        /// Declared version.
        version: u32,
    },
    /// A hash that is not 64 hex characters.
    #[error("damaged manifest file: {}", printable(.0))]
    BadHash(String),
    /// Fields that disagree.
    #[error("damaged manifest file: {0}")]
    Invalid(ManifestError),
    /// Folder entries that can't all exist on disk: a path twice, or a path that is also
    /// another entry's folder.
    #[error("damaged manifest file: {}", printable(.0))]
    PathConflict(String),
    /// The manifest does not hash to the id it claims.
    #[error("damaged manifest file: its contents do not match its file id {0}")]
    IdMismatch(FileId),
    /// A folder's files break a rule of the folder record (an over-long path, too many
    /// files, ...).
    #[error("damaged manifest file: {0}")]
    Folder(FolderError),
    /// A folder's files do not hash to the folder id it claims.
    #[error("damaged manifest file: its files do not match its folder id {0}")]
    FolderIdMismatch(FolderId),
}

/// The cause is in the text only, as for [`ManifestError`].
impl From<FolderError> for ManifestFileError {
    fn from(err: FolderError) -> Self {
        ManifestFileError::Folder(err)
    }
}

/// The cause is in the text only (not also `source()`), so it is printed once.
impl From<ManifestError> for ManifestFileError {
    fn from(err: ManifestError) -> Self {
        ManifestFileError::Invalid(err)
    }
}

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    #[serde(flatten)]
    file: FileFields,
    #[serde(default)]
    servers: Vec<String>,
}

impl ManifestFile {
    /// A manifest file for `manifest`, naming `servers`.
    pub fn new(manifest: FileManifest, servers: Vec<IndexRef>) -> Self {
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
            file: FileFields::from_manifest(m),
            servers: self.servers.iter().map(IndexRef::to_string).collect(),
        };
        let mut text =
            serde_json::to_string_pretty(&doc).expect("a manifest document always serialises");
        text.push('\n');
        text
    }

    /// Parses and checks a manifest file's text.
    pub fn parse(text: &str) -> Result<Self, ManifestFileError> {
        let version = check_head(text, FORMAT, VERSION)?;
        let doc: Document =
            serde_json::from_str(text).map_err(|e| ManifestFileError::Syntax(e.to_string()))?;
        let (manifest, file_id) = doc.file.into_checked("")?;
        let servers = parse_servers(&doc.servers, version)?;
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
        // Another version with other fields is "unsupported", not "broken": a later one, or
        // version 1 (which had a whole-file hash and so other ids).
        for other in [4, 1] {
            let changed = text
                .replace("\"version\": 3", &format!("\"version\": {other}"))
                .replace("\"chunks\"", "\"pieces\"");
            let err = ManifestFile::parse(&changed).unwrap_err().to_string();
            assert!(err.contains(&format!("version {other}")), "{err}");
        }
        let bad_hex = text.replacen("\"file_id\": \"", "\"file_id\": \"zz", 1);
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

/// An index server a manifest file names: its address and, when the writer knew it, its node
/// id. Written `"ip:port"` or `"ip:port NODE-ID"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRef {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Who it is; a reader refuses an index at `addr` that shows another.
    pub node_id: Option<NodeId>,
}

impl IndexRef {
    /// The index at `addr`, whoever it is.
    pub fn addr(addr: SocketAddr) -> Self {
        Self {
            addr,
            node_id: None,
        }
    }
}

impl fmt::Display for IndexRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node_id {
            Some(id) => write!(f, "{} {id}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl std::str::FromStr for IndexRef {
    type Err = ManifestFileError;

    fn from_str(s: &str) -> Result<Self, ManifestFileError> {
        let bad = |why: &str| ManifestFileError::Syntax(format!("server {s:?} {why}"));
        let (addr, id) = match s.trim().split_once(' ') {
            Some((addr, id)) => (addr, Some(id.trim())),
            None => (s.trim(), None),
        };
        let addr = addr
            .parse()
            .map_err(|_| bad("does not start with ip:port"))?;
        let node_id = id
            .map(|id| {
                id.parse::<NodeId>()
                    .map_err(|e| bad(&format!("has a bad node id: {e}")))
            })
            .transpose()?;
        Ok(Self { addr, node_id })
    }
}

/// The `servers` list; in a version 2 file, addresses only.
fn parse_servers(servers: &[String], version: u32) -> Result<Vec<IndexRef>, ManifestFileError> {
    servers
        .iter()
        .map(|s| {
            let server: IndexRef = s.parse()?;
            if version == OLD_VERSION && server.node_id.is_some() {
                return Err(ManifestFileError::Syntax(format!(
                    "server {s:?} is not ip:port (a version {OLD_VERSION} file names no ids)"
                )));
            }
            Ok(server)
        })
        .collect()
}

/// Checks `format` and `version` before anything else, so a newer version with other fields
/// is reported as such, not as a broken file.
/// Returns the version.
fn check_head(text: &str, format: &str, newest: u32) -> Result<u32, ManifestFileError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let head: Head =
        serde_json::from_str(text).map_err(|e| ManifestFileError::Syntax(e.to_string()))?;
    if head.format != format || !(OLD_VERSION..=newest).contains(&head.version) {
        return Err(ManifestFileError::Unsupported {
            format: head.format,
            version: head.version,
        });
    }
    Ok(head.version)
}

/// The `format` of a folder's manifest file.
pub const FOLDER_FORMAT: &str = "p2p-transfer-folder";

/// One file of a folder: where it goes, and its manifest (named like the path's last part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Folders below the folder's own, then the file name; every part a safe base name.
    pub path: Vec<String>,
    /// The file's manifest.
    pub manifest: FileManifest,
    /// Its id.
    pub file_id: FileId,
}

/// A folder's manifest file: every file with its place in the tree, and the folder's id.
///
/// ```json
/// { "format": "p2p-transfer-folder", "version": 4, "name": "photos",
///   "folder_id": "...",
///   "files": [ { "path": "2024/beach.jpg", "file_id": "...", "name": "beach.jpg", "size": 1,
///                "chunk_size": 4194304, "chunks": ["..."] } ],
///   "servers": ["192.168.1.10:8000"] }
/// ```
///
/// Readers check every entry like a file's manifest file, and that every path part is a safe
/// base name (no `..`, no separators, no device names), that the last part is the manifest's
/// name, and that no path appears twice: nothing can be written outside the output folder.
/// They then build the folder's head ([`folder::build`], which also checks the folder rules:
/// paths of at most 1,024 bytes, at most 1,048,576 files) and check that it hashes to
/// `folder_id` (version 4; older versions have none, and the id is the computed one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderManifestFile {
    /// The folder's name (created under the output folder).
    pub name: String,
    /// Its files: sorted by path, part by part, when made with [`FolderManifestFile::new`];
    /// in the file's own order when parsed (readers accept any order).
    pub files: Vec<FolderEntry>,
    /// Index servers to ask for hosts.
    pub servers: Vec<IndexRef>,
    /// The folder's head, built from `name` and `files`.
    head: FolderHead,
    /// Its id.
    folder_id: FolderId,
}

#[derive(Serialize, Deserialize)]
struct FolderDocument {
    format: String,
    version: u32,
    name: String,
    /// From version 4 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    folder_id: Option<String>,
    files: Vec<FolderEntryDocument>,
    #[serde(default)]
    servers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct FolderEntryDocument {
    path: String,
    #[serde(flatten)]
    file: FileFields,
}

#[derive(Serialize, Deserialize)]
struct FileFields {
    file_id: String,
    name: String,
    size: u64,
    chunk_size: u32,
    chunks: Vec<String>,
}

/// Either kind of manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyManifestFile {
    /// One file.
    File(ManifestFile),
    /// A folder of files.
    Folder(FolderManifestFile),
}

impl AnyManifestFile {
    /// Parses a manifest file of either kind.
    pub fn parse(text: &str) -> Result<Self, ManifestFileError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
        }
        let head: Head =
            serde_json::from_str(text).map_err(|e| ManifestFileError::Syntax(e.to_string()))?;
        if head.format == FOLDER_FORMAT {
            FolderManifestFile::parse(text).map(Self::Folder)
        } else {
            ManifestFile::parse(text).map(Self::File)
        }
    }

    /// The index servers it names (none: any index, or direct hosts).
    pub fn servers(&self) -> &[IndexRef] {
        match self {
            Self::File(f) => &f.servers,
            Self::Folder(f) => &f.servers,
        }
    }
}

impl FileFields {
    fn from_manifest(m: &FileManifest) -> Self {
        Self {
            file_id: m.id().to_string(),
            name: m.name.clone(),
            size: m.size,
            chunk_size: m.chunk_size,
            chunks: m.chunks.iter().map(Sha256Hash::to_string).collect(),
        }
    }

    fn into_checked(self, what: &str) -> Result<(FileManifest, FileId), ManifestFileError> {
        let hash = |field: &str, hex: &str| -> Result<Sha256Hash, ManifestFileError> {
            hex.parse::<Sha256Hash>().map_err(|_| {
                ManifestFileError::BadHash(format!("{what}{field} is not 64 hex characters"))
            })
        };
        let file_id: FileId = self.file_id.parse().map_err(|_| {
            ManifestFileError::BadHash(format!("{what}file_id is not 64 hex characters"))
        })?;
        let manifest = FileManifest {
            name: self.name,
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self
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
        Ok((manifest, file_id))
    }
}

/// The head and id of folder `name` with `files`, checked against the folder rules.
fn head_of(name: &str, files: &[FolderEntry]) -> Result<(FolderHead, FolderId), FolderError> {
    let listed = files
        .iter()
        .map(|f| (f.path.join("/"), f.manifest.clone()))
        .collect();
    let (head, _) = folder::build(name, listed)?;
    let id = head.id();
    Ok((head, id))
}

impl FolderManifestFile {
    /// A folder manifest from `(path parts, manifest)` pairs; refused if they break a rule of
    /// the folder record ([`folder::build`]).
    pub fn new(
        name: String,
        files: Vec<(Vec<String>, FileManifest)>,
        servers: Vec<IndexRef>,
    ) -> Result<Self, FolderError> {
        let mut files: Vec<FolderEntry> = files
            .into_iter()
            .map(|(path, manifest)| FolderEntry {
                path,
                file_id: manifest.id(),
                manifest,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let (head, folder_id) = head_of(&name, &files)?;
        Ok(Self {
            name,
            files,
            servers,
            head,
            folder_id,
        })
    }

    /// The folder's head (what the index and a downloader check the file list against).
    pub fn head(&self) -> &FolderHead {
        &self.head
    }

    /// The folder's id.
    pub fn folder_id(&self) -> FolderId {
        self.folder_id
    }

    /// The folder's head and id together.
    pub fn head_and_id(&self) -> (FolderHead, FolderId) {
        (self.head.clone(), self.folder_id)
    }

    /// The JSON text, pretty-printed, ending in a newline.
    pub fn to_json(&self) -> String {
        let doc = FolderDocument {
            format: FOLDER_FORMAT.to_owned(),
            version: FOLDER_VERSION,
            name: self.name.clone(),
            folder_id: Some(self.folder_id.to_string()),
            files: self
                .files
                .iter()
                .map(|e| FolderEntryDocument {
                    path: e.path.join("/"),
                    file: FileFields::from_manifest(&e.manifest),
                })
                .collect(),
            servers: self.servers.iter().map(IndexRef::to_string).collect(),
        };
        let mut text =
            serde_json::to_string_pretty(&doc).expect("a folder document always serialises");
        text.push('\n');
        text
    }

    /// Parses and checks a folder's manifest file.
    pub fn parse(text: &str) -> Result<Self, ManifestFileError> {
        let version = check_head(text, FOLDER_FORMAT, FOLDER_VERSION)?;
        let doc: FolderDocument =
            serde_json::from_str(text).map_err(|e| ManifestFileError::Syntax(e.to_string()))?;
        let claimed: Option<FolderId> = match (&doc.folder_id, version) {
            (Some(hex), FOLDER_VERSION) => Some(hex.parse().map_err(|_| {
                ManifestFileError::BadHash("folder_id is not 64 hex characters".to_owned())
            })?),
            (None, FOLDER_VERSION) => {
                return Err(ManifestFileError::Syntax(format!(
                    "a version {FOLDER_VERSION} folder needs its folder_id"
                )));
            }
            // Older versions had no id: one given there is not theirs.
            (Some(_), _) => {
                return Err(ManifestFileError::Syntax(format!(
                    "a version {version} folder has no folder_id"
                )));
            }
            (None, _) => None,
        };
        crate::validate_file_name(&doc.name).map_err(|e| ManifestFileError::Invalid(e.into()))?;
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::with_capacity(doc.files.len());
        for entry in doc.files {
            let path: Vec<String> = entry.path.split('/').map(str::to_owned).collect();
            for part in &path {
                crate::validate_file_name(part)
                    .map_err(|e| ManifestFileError::Invalid(e.into()))?;
            }
            let (manifest, file_id) = entry.file.into_checked(&format!("{}: ", entry.path))?;
            if path.last() != Some(&manifest.name) {
                return Err(ManifestFileError::Syntax(format!(
                    "{}: the path does not end in the file's name",
                    entry.path
                )));
            }
            if !seen.insert(path.clone()) {
                return Err(ManifestFileError::PathConflict(format!(
                    "{} appears twice",
                    entry.path
                )));
            }
            files.push(FolderEntry {
                path,
                manifest,
                file_id,
            });
        }
        // A path that is also the folder of another (`a` and `a/b`) can't both be made: the
        // download would fail halfway. Sorted, such a folder comes right before its files.
        let mut paths: Vec<&[String]> = files.iter().map(|f| f.path.as_slice()).collect();
        paths.sort();
        if let Some(pair) = paths.windows(2).find(|w| w[1].starts_with(w[0])) {
            return Err(ManifestFileError::PathConflict(format!(
                "{} is a file and also the folder of {}",
                pair[0].join("/"),
                pair[1].join("/")
            )));
        }
        let servers = parse_servers(&doc.servers, version)?;
        let (head, folder_id) = head_of(&doc.name, &files)?;
        if let Some(claimed) = claimed
            && claimed != folder_id
        {
            return Err(ManifestFileError::FolderIdMismatch(claimed));
        }
        Ok(Self {
            name: doc.name,
            files,
            servers,
            head,
            folder_id,
        })
    }
}

#[cfg(test)]
mod folder_tests {
    use super::*;
    use crate::CHUNK_SIZE;

    fn manifest(name: &str) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: 1,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(name.as_bytes())],
        }
    }

    #[test]
    fn folder_round_trip_and_escapes_refused() {
        let folder = FolderManifestFile::new(
            "photos".into(),
            vec![
                (vec!["2024".into(), "b.jpg".into()], manifest("b.jpg")),
                (vec!["a.jpg".into()], manifest("a.jpg")),
            ],
            vec![],
        )
        .unwrap();
        let text = folder.to_json();
        assert_eq!(
            AnyManifestFile::parse(&text).unwrap(),
            AnyManifestFile::Folder(folder)
        );
        for (from, to) in [
            ("2024/b.jpg", "../b.jpg"),
            ("2024/b.jpg", "/etc/b.jpg"),
            ("\"photos\"", "\"..\""),
        ] {
            let evil = text.replace(from, to);
            assert!(FolderManifestFile::parse(&evil).is_err(), "{to} accepted");
        }
        let twice = text.replace("\"2024/b.jpg\"", "\"b.jpg\"").replace(
            "\"a.jpg\",\n      \"file_id\"",
            "\"b.jpg\",\n      \"file_id\"",
        );
        assert!(FolderManifestFile::parse(&twice).is_err());
    }

    #[test]
    fn a_file_that_is_also_a_folder_is_refused_up_front() {
        let conflict = vec![
            (vec!["a".into()], manifest("a")),
            (vec!["a".into(), "b".into()], manifest("b")),
        ];
        assert!(matches!(
            FolderManifestFile::new("photos".into(), conflict, vec![]),
            Err(FolderError::PrefixConflict { .. })
        ));
        let files = format!(
            "[{}, {}]",
            entry_json("a", &manifest("a")),
            entry_json("a/b", &manifest("b"))
        );
        let err = FolderManifestFile::parse(&folder_json(&files, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "damaged manifest file: a is a file and also the folder of a/b"
        );
        // A shared prefix of names is not a folder.
        let fine = FolderManifestFile::new(
            "photos".into(),
            vec![
                (vec!["a".into()], manifest("a")),
                (vec!["ab".into(), "b".into()], manifest("b")),
            ],
            vec![],
        )
        .unwrap();
        assert!(FolderManifestFile::parse(&fine.to_json()).is_ok());
    }

    /// A folder with one file at `path`, as the reader sees it; `files` and `servers` are
    /// spliced in as JSON text.
    fn folder_json(files: &str, servers: Option<&str>) -> String {
        let servers = servers.map_or(String::new(), |s| format!(", \"servers\": {s}"));
        format!(
            r#"{{"format": "p2p-transfer-folder", "version": 2, "name": "photos",
                "files": {files}{servers}}}"#
        )
    }

    /// The JSON object of one entry of a folder manifest.
    fn entry_json(path: &str, m: &FileManifest) -> String {
        let fields = serde_json::to_string(&FileFields::from_manifest(m)).unwrap();
        format!(r#"{{"path": "{path}", {}"#, &fields[1..])
    }

    #[test]
    fn servers_carry_their_node_ids_from_version_3_on() {
        let id = NodeId([5; 20]);
        let server = IndexRef {
            addr: "192.168.1.10:8000".parse().unwrap(),
            node_id: Some(id),
        };
        let doc = ManifestFile::new(manifest("a.txt"), vec![server]);
        let text = doc.to_json();
        assert!(
            text.contains(&format!("\"192.168.1.10:8000 {id}\"")),
            "{text}"
        );
        assert_eq!(ManifestFile::parse(&text).unwrap().servers, vec![server]);
        // Version 2 named addresses only; an id there is a damaged file.
        let old = text.replace("\"version\": 3", "\"version\": 2");
        assert!(matches!(
            ManifestFile::parse(&old),
            Err(ManifestFileError::Syntax(_))
        ));
        let old = old.replace(&format!(" {id}"), "");
        assert_eq!(
            ManifestFile::parse(&old).unwrap().servers,
            vec![IndexRef::addr(server.addr)]
        );
        let bad = text.replace(&id.to_string()[..5], "XXXXX");
        let err = ManifestFile::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("has a bad node id"), "{err}");
    }

    #[test]
    fn servers_may_be_missing_but_not_null() {
        let files = format!("[{}]", entry_json("a.jpg", &manifest("a.jpg")));
        let missing = FolderManifestFile::parse(&folder_json(&files, None)).unwrap();
        assert_eq!(missing.servers, vec![]);
        let listed = folder_json(&files, Some(r#"["192.168.1.10:8000"]"#));
        assert_eq!(
            FolderManifestFile::parse(&listed).unwrap().servers,
            vec![IndexRef::addr("192.168.1.10:8000".parse().unwrap())]
        );
        for refused in ["null", r#"["localhost:8000"]"#] {
            let err = FolderManifestFile::parse(&folder_json(&files, Some(refused))).unwrap_err();
            assert!(
                matches!(err, ManifestFileError::Syntax(_)),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn files_may_be_empty_but_not_missing_or_null() {
        let empty = FolderManifestFile::parse(&folder_json("[]", None)).unwrap();
        assert_eq!(empty.name, "photos");
        assert!(empty.files.is_empty());
        // What `manifest create` writes for a folder without files reads back the same.
        let written = FolderManifestFile::new("photos".into(), vec![], vec![]).unwrap();
        assert!(written.to_json().contains("\"files\": []"));
        assert_eq!(
            FolderManifestFile::parse(&written.to_json()).unwrap(),
            written
        );
        for refused in [
            r#"{"format": "p2p-transfer-folder", "version": 2, "name": "photos"}"#.to_owned(),
            folder_json("null", None),
        ] {
            let err = FolderManifestFile::parse(&refused).unwrap_err();
            assert!(
                matches!(err, ManifestFileError::Syntax(_)),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn files_are_read_in_any_order_and_kept_in_it() {
        let (z, a) = (manifest("z.jpg"), manifest("a.jpg"));
        let files = format!(
            "[{}, {}]",
            entry_json("z.jpg", &z),
            entry_json("2024/a.jpg", &a)
        );
        let read = FolderManifestFile::parse(&folder_json(&files, None)).unwrap();
        let paths: Vec<String> = read.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["z.jpg", "2024/a.jpg"]);
    }

    #[test]
    fn the_writer_sorts_paths_part_by_part() {
        let folder = FolderManifestFile::new(
            "photos".into(),
            vec![
                (vec!["a.b".into()], manifest("a.b")),
                (vec!["a b".into(), "c".into()], manifest("c")),
                (vec!["a".into(), "c".into()], manifest("c")),
                (vec!["a".into(), "b".into()], manifest("b")),
            ],
            vec![],
        )
        .unwrap();
        let paths: Vec<String> = folder.files.iter().map(|f| f.path.join("/")).collect();
        // Not the order of the joined strings, which would put `a b/c` and `a.b` first.
        assert_eq!(paths, ["a/b", "a/c", "a b/c", "a.b"]);
    }

    #[test]
    fn an_entry_with_a_field_given_twice_is_refused() {
        let entry = entry_json("a.jpg", &manifest("a.jpg"));
        let twice = entry.replacen("{", r#"{"size": 1, "#, 1);
        let err = FolderManifestFile::parse(&folder_json(&format!("[{twice}]"), None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate field `size`"), "{err}");
        // An unknown field is ignored.
        let extra = entry.replacen("{", r#"{"note": [1, {"x": null}], "#, 1);
        assert!(FolderManifestFile::parse(&folder_json(&format!("[{extra}]"), None)).is_ok());
    }

    #[test]
    fn text_quoted_from_the_file_is_shown_escaped() {
        // A path the reader accepts part by part (no control characters), quoted in the error.
        let files = format!("[{}]", entry_json("x\u{202e}y/c.jpg", &manifest("b.jpg")));
        let err = FolderManifestFile::parse(&folder_json(&files, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r"not a p2p-transfer manifest file: x\u{202e}y/c.jpg: the path does not end in the file's name"
        );
    }

    fn photos() -> FolderManifestFile {
        FolderManifestFile::new(
            "photos".into(),
            vec![
                (vec!["2024".into(), "b.jpg".into()], manifest("b.jpg")),
                (vec!["a.jpg".into()], manifest("a.jpg")),
            ],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn a_folder_carries_its_folder_id_from_version_4_on() {
        let folder = photos();
        let (head, id) = folder.head_and_id();
        assert_eq!(head.id(), id);
        assert_eq!(
            (head.name.as_str(), head.files, head.size),
            ("photos", 2, 2)
        );
        let text = folder.to_json();
        assert!(text.contains("\"version\": 4"), "{text}");
        assert!(text.contains(&format!("\"folder_id\": \"{id}\"")), "{text}");
        assert_eq!(FolderManifestFile::parse(&text).unwrap(), folder);
        // A path changed everywhere it appears: each entry is still sound, the folder is not
        // the one its id names.
        let moved = text.replace("2024/b.jpg", "2025/b.jpg");
        let err = FolderManifestFile::parse(&moved).unwrap_err();
        assert!(matches!(err, ManifestFileError::FolderIdMismatch(claimed) if claimed == id));
        assert_eq!(
            err.to_string(),
            format!("damaged manifest file: its files do not match its folder id {id}")
        );
        let bad_hex = text.replace(&id.to_string()[..4], "zzzz");
        assert!(matches!(
            FolderManifestFile::parse(&bad_hex),
            Err(ManifestFileError::BadHash(_))
        ));
        // Version 4 needs it; older versions have none, and their id is computed.
        let missing = text.replace(&format!("\"folder_id\": \"{id}\","), "");
        assert!(matches!(
            FolderManifestFile::parse(&missing),
            Err(ManifestFileError::Syntax(_))
        ));
        for old in ["2", "3"] {
            let older = missing.replace("\"version\": 4", &format!("\"version\": {old}"));
            let read = FolderManifestFile::parse(&older).unwrap();
            assert_eq!(read.folder_id(), id, "version {old}");
            let with_id = text.replace("\"version\": 4", &format!("\"version\": {old}"));
            assert!(
                FolderManifestFile::parse(&with_id).is_err(),
                "version {old}"
            );
        }
        let newer = text.replace("\"version\": 4", "\"version\": 5");
        let err = FolderManifestFile::parse(&newer).unwrap_err().to_string();
        assert!(
            err.contains("version 5") && err.contains("versions 2 to 4"),
            "{err}"
        );
        // A file's manifest file stays at version 3.
        let file = ManifestFile::new(manifest("a.txt"), vec![]).to_json();
        assert!(file.contains("\"version\": 3"), "{file}");
        let four = file.replace("\"version\": 3", "\"version\": 4");
        assert!(matches!(
            ManifestFile::parse(&four),
            Err(ManifestFileError::Unsupported { version: 4, .. })
        ));
    }

    #[test]
    fn an_older_folder_that_breaks_the_folder_rules_is_refused() {
        let long = format!("{}x", "d/".repeat(crate::folder::MAX_FOLDER_PATH_LEN / 2));
        let files = format!("[{}]", entry_json(&long, &manifest("x")));
        let err = FolderManifestFile::parse(&folder_json(&files, None)).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestFileError::Folder(FolderError::PathTooLong { .. })
            ),
            "{err}"
        );
    }
}
