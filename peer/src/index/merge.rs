//! One answer from several index servers: what each said about an id, combined.
//!
//! Each index's answer is checked against the id before it gets here
//! ([`IndexClient::locate`]), so merging never has to trust one index over another for the
//! bytes; it only decides what the id names and who hosts it. Answers come in the peer's
//! order of its indexes (the order they were given), and:
//!
//! * the first index that knows the id says what it is; every other index that names the same
//!   full id adds the hosts it knows. Hosts are one per address; when two indexes give one
//!   address different node ids, neither is pinned: whoever answers there is asked, and its
//!   chunks verified (pinning the first would let an index that lies about node ids get a
//!   real host refused);
//! * a file that one index knows as a top-level file and another only inside a folder is one
//!   file: the top-level answer wins (its manifest is in hand) and the folder's hosts, who
//!   serve the file by its id too, are added;
//! * a prefix that two indexes resolve to different ids is ambiguous, as it would be at one;
//! * when no index knows the id, a refusal from an index that answered (not found, an
//!   ambiguous prefix) says more than an index that could not be reached, so that is the
//!   error; with no index at all, [`PeerError::NoIndex`].
//!
//! Listings (search, files, peers) are one line per file or folder (by id, kind and path) or
//! per node, in the order first listed.
//!
//! [`IndexClient::locate`]: super::client::IndexClient::locate

use p2p_protocol::{FileSummary, HostInfo, PeerSummary};

use super::client::Located;
use crate::error::PeerError;

/// A file or folder listed by one or more indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedFile {
    /// As the first index that listed it described it; `hosts` is the most any index knows
    /// (the same peer may be registered with several; a listing carries counts, not hosts).
    pub summary: FileSummary,
    /// Positions, among the indexes asked, of those that listed it.
    pub indexes: Vec<usize>,
}

/// Merges what each index listed (by position among the indexes asked): one line per file or
/// folder (by id, kind and path), in the order first listed, naming every index that has it.
pub fn files(answers: impl IntoIterator<Item = (usize, Vec<FileSummary>)>) -> Vec<MergedFile> {
    let mut merged: Vec<MergedFile> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (index, files) in answers {
        for file in files {
            let key = (file.file_id, file.files.is_some(), file.path.clone());
            match seen.get(&key) {
                Some(&at) => {
                    let line: &mut MergedFile = &mut merged[at];
                    line.summary.hosts = line.summary.hosts.max(file.hosts);
                    if !line.indexes.contains(&index) {
                        line.indexes.push(index);
                    }
                }
                None => {
                    seen.insert(key, merged.len());
                    merged.push(MergedFile {
                        summary: file,
                        indexes: vec![index],
                    });
                }
            }
        }
    }
    merged
}

/// One listing from the listings of every index that answered: merged lines, and the largest
/// total any index gave (at least the lines); an error only when none answered.
pub(crate) fn file_lists(
    answers: impl IntoIterator<Item = Result<(Vec<FileSummary>, u64), PeerError>>,
) -> Result<(Vec<FileSummary>, u64), PeerError> {
    let (lists, total) = answered(answers)?;
    let lines: Vec<FileSummary> = files(lists.into_iter().enumerate())
        .into_iter()
        .map(|m| m.summary)
        .collect();
    let total = total.max(lines.len() as u64);
    Ok((lines, total))
}

/// The peers every index that answered lists, one line per node (as the first index listed
/// it: peer ids are each index's own); an error only when none answered.
pub(crate) fn peer_lists(
    answers: impl IntoIterator<Item = Result<(Vec<PeerSummary>, u64), PeerError>>,
) -> Result<(Vec<PeerSummary>, u64), PeerError> {
    let (lists, total) = answered(answers)?;
    let mut lines: Vec<PeerSummary> = Vec::new();
    for peer in lists.into_iter().flatten() {
        if !lines.iter().any(|p| p.node_id == peer.node_id) {
            lines.push(peer);
        }
    }
    let total = total.max(lines.len() as u64);
    Ok((lines, total))
}

/// The lists of the indexes that answered and the largest total; the first error when none
/// did ([`PeerError::NoIndex`] with no index at all).
fn answered<T>(
    answers: impl IntoIterator<Item = Result<(Vec<T>, u64), PeerError>>,
) -> Result<(Vec<Vec<T>>, u64), PeerError> {
    let mut lists = Vec::new();
    let mut total = 0;
    let mut first_err = None;
    for answer in answers {
        match answer {
            Ok((list, count)) => {
                total = total.max(count);
                lists.push(list);
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    if lists.is_empty() {
        return Err(first_err.unwrap_or(PeerError::NoIndex));
    }
    Ok((lists, total))
}

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

/// Adds `listed` to `hosts`, one per address; an address listed with two node ids is marked
/// in `unpinned`.
fn add_hosts(hosts: &mut Vec<HostInfo>, listed: Vec<HostInfo>) {
    for info in listed {
        match hosts.iter_mut().find(|h| h.addr == info.addr) {
            Some(known) if known.node_id != info.node_id => known.node_id = UNPINNED,
            Some(_) => {}
            None => hosts.push(info),
        }
    }
}

/// The node id of a host two indexes disagree about: no node has it (it is not a key's
/// hash), and [`crate::download::HostSpec`] takes it as "whoever answers".
pub(crate) const UNPINNED: p2p_protocol::NodeId = p2p_protocol::NodeId([0; 20]);

#[cfg(test)]
mod tests {
    use p2p_protocol::{ErrorCode, FileManifest, FolderId, NodeId, PeerId, ProtocolError};

    use super::*;
    use crate::index::client::Found;

    fn host(port: u16, node: u8) -> HostInfo {
        HostInfo {
            peer_id: PeerId(u64::from(port)),
            addr: format!("10.0.0.1:{port}").parse().unwrap(),
            node_id: NodeId([node; 20]),
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
        // An address listed with two node ids is pinned to neither.
        let Located::File(found) = merged else {
            panic!("a file")
        };
        assert_eq!(found.hosts[0].node_id, NodeId([1; 20]));
        assert_eq!(found.hosts[1].node_id, UNPINNED);
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

    fn summary(id: u8, name: &str, hosts: u32) -> FileSummary {
        FileSummary {
            file_id: p2p_protocol::FileId([id; 32]),
            name: name.to_owned(),
            size: 10,
            hosts,
            files: None,
            path: None,
        }
    }

    #[test]
    fn a_file_on_two_indexes_is_one_line_naming_both() {
        let merged = files(vec![
            (0, vec![summary(1, "a", 1), summary(2, "b", 1)]),
            (1, vec![summary(3, "c", 2), summary(1, "a", 3)]),
        ]);
        let lines: Vec<(&str, u32, Vec<usize>)> = merged
            .iter()
            .map(|m| (m.summary.name.as_str(), m.summary.hosts, m.indexes.clone()))
            .collect();
        assert_eq!(
            lines,
            vec![("a", 3, vec![0, 1]), ("b", 1, vec![0]), ("c", 2, vec![1])]
        );
    }

    #[test]
    fn a_folder_and_a_file_in_another_folder_stay_apart() {
        let mut folder = summary(1, "album", 1);
        folder.files = Some(2);
        let mut inside = summary(1, "a.jpg", 1);
        inside.path = Some("album/a.jpg".into());
        assert_eq!(files(vec![(0, vec![folder, inside])]).len(), 2);
    }

    #[test]
    fn listings_merge_with_the_largest_total_and_fail_only_when_none_answered() {
        let (lines, total) = file_lists([
            Ok((vec![summary(1, "a", 1)], 7)),
            Err(unreachable()),
            Ok((vec![summary(1, "a", 2), summary(2, "b", 1)], 2)),
        ])
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].hosts, 2);
        assert_eq!(total, 7);
        let err = file_lists([Err(unreachable())]).unwrap_err();
        assert!(matches!(err, PeerError::IndexUnreachable { .. }), "{err:?}");
    }
}
