//! The download request a manifest file stands for: one job, for a file or a whole folder. The command line, the shells and the web API all
//! turn a `.p2pm` into a job here, so they fetch the same files into the same places; and the
//! shells and the web API ask [`PeerHandle::check_manifest_index`] first, so a running peer
//! refuses a manifest for another index the same way whichever front end it came through.

use std::net::SocketAddr;

use p2p_protocol::NodeId;
use p2p_protocol::manifest_file::{AnyManifestFile, IndexRef};

use crate::error::{IndexConflict, PeerError};
use crate::node::{DownloadRequest, PeerHandle};

impl PeerHandle {
    /// Whether this running peer can download manifest file `doc`: the manifest must name no
    /// index, or one this peer uses (by address or node id). Otherwise
    /// [`PeerError::OtherIndex`], worded as the command line's refusal.
    pub fn check_manifest_index(&self, doc: &AnyManifestFile) -> Result<(), PeerError> {
        let ours = self.indexes();
        if ours.is_empty() {
            return index_conflict(doc.servers(), None, None)
                .map_or(Ok(()), |c| Err(PeerError::OtherIndex(c)));
        }
        let mut conflict = None;
        for index in &ours {
            match index_conflict(doc.servers(), Some(index.addr), index.node_id) {
                None => return Ok(()),
                Some(c) => {
                    conflict.get_or_insert(c);
                }
            }
        }
        conflict.map_or(Ok(()), |c| Err(PeerError::OtherIndex(c)))
    }
}

/// How the index servers `listed` by a manifest rule out downloading it on a peer that uses
/// the index at `ours` (known as `our_id`), if they do. Any one of them that is ours (by
/// address, or by node id at another address: the manifest was written on another machine)
/// will do, unless it gives our address another node id.
fn index_conflict(
    listed: &[IndexRef],
    ours: Option<SocketAddr>,
    our_id: Option<NodeId>,
) -> Option<IndexConflict> {
    if listed.is_empty() {
        return None;
    }
    for index in listed {
        let same_key = index.node_id.is_some() && index.node_id == our_id;
        let same_addr = Some(index.addr) == ours;
        match (same_addr, index.node_id, our_id) {
            (true, Some(named), Some(known)) if named != known => {
                return Some(IndexConflict::OtherKey {
                    addr: index.addr,
                    named,
                    known,
                });
            }
            _ if same_key || same_addr => return None,
            _ => {}
        }
    }
    Some(IndexConflict::OtherServers {
        named: listed.iter().map(|i| i.addr).collect(),
        ours,
    })
}

impl DownloadRequest {
    /// The request manifest file `doc` stands for, also asking `hosts` directly: one job,
    /// for a file or for a whole folder (its files go to `<out>/<folder name>/<path>`).
    pub fn for_manifest_file(doc: AnyManifestFile, hosts: &[SocketAddr]) -> Self {
        match doc {
            AnyManifestFile::File(f) => Self {
                id: f.file_id.to_string(),
                manifest: Some(f.manifest),
                folder: None,
                hosts: hosts.to_vec(),
                pinned_hosts: Vec::new(),
            },
            AnyManifestFile::Folder(folder) => Self {
                id: folder.folder_id().to_string(),
                manifest: None,
                folder: Some(std::sync::Arc::new(folder)),
                hosts: hosts.to_vec(),
                pinned_hosts: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn node(seed: u8) -> NodeId {
        NodeId([seed; 20])
    }

    fn index(port: u16, id: Option<NodeId>) -> IndexRef {
        IndexRef {
            addr: addr(port),
            node_id: id,
        }
    }

    #[test]
    fn a_manifest_naming_no_index_or_ours_is_accepted() {
        let (ours, our_id) = (Some(addr(7000)), Some(node(1)));
        let check = |listed: &[IndexRef]| index_conflict(listed, ours, our_id);
        assert_eq!(check(&[]), None);
        assert_eq!(check(&[index(7000, None)]), None);
        assert_eq!(check(&[index(7000, Some(node(1)))]), None);
        // The same key at another address (the manifest was written on another machine).
        assert_eq!(check(&[index(9, Some(node(1)))]), None);
        // Any one of several.
        assert_eq!(check(&[index(9, None), index(7000, None)]), None);
    }

    #[test]
    fn a_manifest_naming_another_index_is_refused_in_the_command_lines_words() {
        let (ours, our_id) = (Some(addr(7000)), Some(node(1)));
        let why = index_conflict(&[index(9, None), index(10, None)], ours, our_id)
            .unwrap()
            .to_string();
        assert_eq!(
            why,
            "the manifest names the index server at 127.0.0.1:9, 127.0.0.1:10, but this peer \
             uses the one at 127.0.0.1:7000; start a peer with --server 127.0.0.1:9 to download it"
        );
        let why = index_conflict(&[index(7000, Some(node(2)))], ours, our_id)
            .unwrap()
            .to_string();
        assert_eq!(
            why,
            format!(
                "the manifest names the index server at 127.0.0.1:7000 as {}, but this peer \
                 knows it as {}",
                node(2),
                node(1)
            )
        );
        let why = index_conflict(&[index(9, None)], None, None)
            .unwrap()
            .to_string();
        assert_eq!(
            why,
            "the manifest names the index server at 127.0.0.1:9, but this peer runs without an \
             index server; start a peer with --server 127.0.0.1:9 to download it"
        );
    }
}
