//! [`KnownIndexes`]: the index servers this node has met, by address, with the node id each
//! proved, like SSH's `known_hosts`. A later start refuses an index that answers at a
//! remembered address with another id, and prefers remembered ids among mDNS answers.
//!
//! The file (`known-indexes` beside the key files) is text, one `ADDRESS NODE-ID` per line;
//! blank lines and lines starting with `#` are ignored. Users may edit it: deleting a line
//! forgets that index.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use p2p_protocol::NodeId;

/// File name of the list, in the identity folder.
pub const KNOWN_INDEXES_FILE: &str = "known-indexes";

/// Why the list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KnownIndexesError {
    /// Reading or writing the file failed.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A line is not `ADDRESS NODE-ID`.
    #[error(
        "{}, line {line}: expected \"ADDRESS NODE-ID\" (e.g. 192.168.1.10:8000 MFRG-GZDF-…), \
         found {text:?}; fix or delete that line",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// The index servers this node has met.
#[derive(Debug)]
pub struct KnownIndexes {
    path: PathBuf,
    entries: Vec<(SocketAddr, NodeId)>,
}

impl KnownIndexes {
    /// The list kept in `identity_dir`; empty if there is none yet.
    pub fn load(identity_dir: &Path) -> Result<Self, KnownIndexesError> {
        let path = identity_dir.join(KNOWN_INDEXES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(cause) => {
                return Err(KnownIndexesError::Io {
                    action: "read",
                    path,
                    cause,
                });
            }
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || KnownIndexesError::Malformed {
                path: path.clone(),
                line: i + 1,
                text: line.to_owned(),
            };
            let (addr, id) = line.split_once(char::is_whitespace).ok_or_else(malformed)?;
            let addr: SocketAddr = addr.parse().map_err(|_| malformed())?;
            let id: NodeId = id.trim().parse().map_err(|_| malformed())?;
            entries.push((addr, id));
        }
        Ok(Self { path, entries })
    }

    /// Where the list is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node id remembered for the index at `addr`.
    pub fn get(&self, addr: SocketAddr) -> Option<NodeId> {
        self.entries
            .iter()
            .find(|(known, _)| *known == addr)
            .map(|(_, id)| *id)
    }

    /// Every address remembered, with its id, in the order of the file.
    pub fn entries(&self) -> impl Iterator<Item = (SocketAddr, NodeId)> + '_ {
        self.entries.iter().copied()
    }

    /// Every id remembered.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.entries.iter().map(|(_, id)| *id)
    }

    /// Remembers that the index at `addr` is `id` (replacing what was remembered for that
    /// address), and saves the list: written to a new file, then renamed over the old one,
    /// readable by this user only.
    pub fn remember(&mut self, addr: SocketAddr, id: NodeId) -> Result<(), KnownIndexesError> {
        self.entries.retain(|(known, _)| *known != addr);
        self.entries.push((addr, id));
        let io = |action, cause| KnownIndexesError::Io {
            action,
            path: self.path.clone(),
            cause,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("write", e))?;
        let mut text = String::from(
            "# Index servers this node has met: ADDRESS NODE-ID. Delete a line to forget one.\n",
        );
        for (addr, id) in &self.entries {
            text.push_str(&format!("{addr} {id}\n"));
        }
        tmp.write_all(text.as_bytes())
            .and_then(|()| {
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o600))
            })
            .map_err(|e| io("write", e))?;
        tmp.persist(&self.path).map_err(|e| io("write", e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> NodeId {
        NodeId([byte; 20])
    }

    #[test]
    fn remembered_indexes_survive_a_reload_and_replace_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "192.168.1.10:8000".parse().unwrap();
        let mut known = KnownIndexes::load(dir.path()).unwrap();
        assert_eq!(known.get(addr), None);
        known.remember(addr, id(1)).unwrap();
        known
            .remember("10.0.0.1:8000".parse().unwrap(), id(2))
            .unwrap();
        known.remember(addr, id(3)).unwrap();
        let again = KnownIndexes::load(dir.path()).unwrap();
        assert_eq!(again.get(addr), Some(id(3)));
        let ids: Vec<NodeId> = again.ids().collect();
        assert!(ids.contains(&id(2)) && !ids.contains(&id(1)));
        let mode = std::fs::metadata(again.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_hand_edited_list_is_read_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KNOWN_INDEXES_FILE);
        // Lower case, no dashes: ids are read as loosely as they are typed.
        let typed = id(7).to_string().replace('-', "").to_lowercase();
        std::fs::write(&path, format!("# mine\n\n10.0.0.1:8000   {typed}\n")).unwrap();
        let known = KnownIndexes::load(dir.path()).unwrap();
        assert_eq!(known.get("10.0.0.1:8000".parse().unwrap()), Some(id(7)));
        std::fs::write(&path, format!("10.0.0.1:8000 {typed}\n10.0.0.2 {typed}\n")).unwrap();
        let err = KnownIndexes::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("10.0.0.2"), "{err}");
    }
}
