//! One answer from several index servers: what each said about an id, combined.
//!
//! Each index's answer is checked against the id before it gets here
//! ([`IndexClient::locate`]), so merging never has to trust one index over another for the
//! bytes; it only decides what the id names and who hosts it. Answers come in the peer's
//! order of its indexes (the order they were given), and:
//!
//! * the first index that knows the id says what it is; every other index that names the same
//!   full id adds the hosts it knows. Hosts are one per address: an address already listed
//!   keeps the node id it came with first (the TLS handshake then decides who it really is);
//! * a file that one index knows as a top-level file and another only inside a folder is one
//!   file: the top-level answer wins (its manifest is in hand) and the folder's hosts, who
//!   serve the file by its id too, are added;
//! * a prefix that two indexes resolve to different ids is ambiguous, as it would be at one;
//! * when no index knows the id, a refusal from an index that answered (not found, an
//!   ambiguous prefix) says more than an index that could not be reached, so that is the
//!   error; with no index at all, [`PeerError::NoIndex`].
//!
//! [`IndexClient::locate`]: crate::index_client::IndexClient::locate

use p2p_protocol::HostInfo;

use crate::error::PeerError;
use crate::index_client::Located;

/// What the id `asked` names, from every index's answer to it, in the peer's order.
pub(crate) fn located(
    asked: &str,
    answers: impl IntoIterator<Item = Result<Located, PeerError>>,
) -> Result<Located, PeerError> {
    let mut best: Option<Located> = None;
    let mut refused = None;
    let mut failed = None;
    for answer in answers {
        match answer {
            Ok(found) => match best.take() {
                None => best = Some(found),
                Some(so_far) => best = Some(absorb(asked, so_far, found)?),
            },
            Err(err @ PeerError::IndexRefused { .. }) => {
                refused.get_or_insert(err);
            }
            Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    best.ok_or_else(|| refused.or(failed).unwrap_or(PeerError::NoIndex))
}

/// Every host the indexes that answered know, one per address, in the peer's order; an
/// error only when no index answered.
pub(crate) fn hosts(
    answers: impl IntoIterator<Item = Result<Vec<HostInfo>, PeerError>>,
) -> Result<Vec<HostInfo>, PeerError> {
    let mut all: Option<Vec<HostInfo>> = None;
    let mut first_err = None;
    for answer in answers {
        match answer {
            Ok(listed) => add_hosts(all.get_or_insert_with(Vec::new), listed),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    all.ok_or_else(|| first_err.unwrap_or(PeerError::NoIndex))
}

/// What a later index said, folded into what the earlier ones did.
fn absorb(asked: &str, so_far: Located, found: Located) -> Result<Located, PeerError> {
    if what(&so_far) != what(&found) {
        return Err(PeerError::AmbiguousPrefix {
            prefix: asked.to_owned(),
            count: 2,
            what: "files or folders across the index servers",
        });
    }
    let (mut kept, other) = match (&so_far, &found) {
        // The same file: the answer with its manifest in hand is the one to keep.
        (Located::InFolder { .. }, Located::File(_)) => (found, so_far),
        _ => (so_far, found),
    };
    add_hosts(hosts_mut(&mut kept), into_hosts(other));
    Ok(kept)
}

/// The full id an answer names, and whether it is a folder's.
fn what(located: &Located) -> ([u8; 32], bool) {
    match located {
        Located::File(found) => (found.file_id.0, false),
        Located::InFolder { file_id, .. } => (file_id.0, false),
        Located::Folder { folder_id, .. } => (folder_id.0, true),
    }
}

fn hosts_mut(located: &mut Located) -> &mut Vec<HostInfo> {
    match located {
        Located::File(found) => &mut found.hosts,
        Located::Folder { hosts, .. } | Located::InFolder { hosts, .. } => hosts,
    }
}

fn into_hosts(located: Located) -> Vec<HostInfo> {
    match located {
        Located::File(found) => found.hosts,
        Located::Folder { hosts, .. } | Located::InFolder { hosts, .. } => hosts,
    }
}

/// Adds `listed` to `hosts`, except addresses already there.
fn add_hosts(hosts: &mut Vec<HostInfo>, listed: Vec<HostInfo>) {
    for info in listed {
        if !hosts.iter().any(|h| h.addr == info.addr) {
            hosts.push(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use p2p_protocol::{ErrorCode, FileManifest, FolderId, NodeId, PeerId, ProtocolError};

    use super::*;
    use crate::index_client::Found;

    fn host(port: u16, node: u8) -> HostInfo {
        HostInfo {
            peer_id: PeerId(u64::from(port)),
            addr: format!("10.0.0.1:{port}").parse().unwrap(),
            node_id: NodeId([node; 32]),
        }
    }

    fn manifest(name: &str) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: 3,
            chunk_size: p2p_protocol::CHUNK_SIZE,
            chunks: vec![p2p_protocol::Sha256Hash([7; 32])],
        }
    }

    fn file(name: &str, hosts: Vec<HostInfo>) -> Located {
        let manifest = manifest(name);
        Located::File(Found {
            file_id: manifest.id(),
            manifest,
            hosts,
        })
    }

    fn in_folder(name: &str, hosts: Vec<HostInfo>) -> Located {
        Located::InFolder {
            file_id: manifest(name).id(),
            folder_id: FolderId([9; 32]),
            path: format!("album/{name}"),
            size: 3,
            hosts,
        }
    }

    fn not_found() -> PeerError {
        PeerError::IndexRefused {
            code: ErrorCode::UnknownFile,
            message: "no file matches".into(),
        }
    }

    fn unreachable() -> PeerError {
        PeerError::IndexUnreachable {
            addr: "10.0.0.9:8000".parse().unwrap(),
            cause: ProtocolError::Closed,
        }
    }

    fn addrs(located: &Located) -> Vec<u16> {
        let hosts = match located {
            Located::File(found) => &found.hosts,
            Located::Folder { hosts, .. } | Located::InFolder { hosts, .. } => hosts,
        };
        hosts.iter().map(|h| h.addr.port()).collect()
    }

    #[test]
    fn the_same_file_at_two_indexes_has_the_hosts_of_both_once_each() {
        let merged = located(
            "ab",
            [
                Ok(file("a.txt", vec![host(1, 1), host(2, 2)])),
                Err(unreachable()),
                Ok(file("a.txt", vec![host(2, 9), host(3, 3)])),
            ],
        )
        .unwrap();
        assert_eq!(addrs(&merged), [1, 2, 3]);
        // An address listed twice keeps the node id of the first index that listed it.
        let Located::File(found) = merged else {
            panic!("a file")
        };
        assert_eq!(found.hosts[1].node_id, NodeId([2; 32]));
        assert_eq!(found.file_id, manifest("a.txt").id());
    }

    #[test]
    fn a_top_level_answer_wins_over_the_same_file_inside_a_folder() {
        let merged = located(
            "ab",
            [
                Ok(in_folder("a.txt", vec![host(1, 1)])),
                Ok(file("a.txt", vec![host(2, 2)])),
            ],
        )
        .unwrap();
        assert!(matches!(merged, Located::File(_)), "{merged:?}");
        assert_eq!(addrs(&merged), [2, 1]);
    }

    #[test]
    fn a_prefix_naming_two_ids_at_two_indexes_is_ambiguous() {
        let err = located(
            "ab",
            [
                Ok(file("a.txt", vec![host(1, 1)])),
                Ok(file("b.txt", vec![host(2, 2)])),
            ],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ab matches 2 files or folders across the index servers"),
            "{err}"
        );
    }

    #[test]
    fn an_index_that_answered_says_more_than_one_that_could_not_be_reached() {
        let err = located("ab", [Err(unreachable()), Err(not_found())]).unwrap_err();
        assert!(matches!(err, PeerError::IndexRefused { .. }), "{err:?}");
        let err = located("ab", [Err(unreachable())]).unwrap_err();
        assert!(matches!(err, PeerError::IndexUnreachable { .. }), "{err:?}");
        let err = located("ab", []).unwrap_err();
        assert!(matches!(err, PeerError::NoIndex), "{err:?}");
    }

    #[test]
    fn hosts_are_merged_and_an_error_only_when_every_index_failed() {
        let merged = hosts([
            Err(unreachable()),
            Ok(vec![host(1, 1)]),
            Ok(vec![host(1, 1), host(2, 2)]),
        ])
        .unwrap();
        assert_eq!(
            merged.iter().map(|h| h.addr.port()).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(hosts([Err(unreachable()), Err(not_found())]).is_err());
    }
}
