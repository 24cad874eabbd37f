//! Allow-lists: which nodes may register with an index, or download from and message a peer.
//!
//! The file is text: one node id a line, optionally followed by a name for it (`MFRG-… alice's
//! laptop`); `#` starts a comment, blank lines are ignored. An id may be typed in any case,
//! with or without its dashes. [`Allowed`] is what a server checks; the binary reloads it
//! when the file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use p2p_protocol::NodeId;

/// Why an allow-list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AllowListError {
    /// The file could not be read.
    #[error("cannot read the allow-list {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A line does not start with a node id.
    #[error("{}, line {line}: {text:?} does not start with a node id ({reason})", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with the id.
        reason: String,
    },
}

/// The nodes an allow-list names, with the names given to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    nodes: HashMap<NodeId, String>,
}

impl AllowList {
    /// Reads the list in `path`.
    pub fn load(path: &Path) -> Result<Self, AllowListError> {
        let text = std::fs::read_to_string(path).map_err(|cause| AllowListError::Io {
            path: path.to_owned(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of the list in `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AllowListError> {
        let mut nodes = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (id, name) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let id: NodeId =
                id.parse()
                    .map_err(|e: p2p_protocol::NodeIdError| AllowListError::Malformed {
                        path: path.to_owned(),
                        line: i + 1,
                        text: line.to_owned(),
                        reason: e.to_string(),
                    })?;
            nodes.insert(id, name.trim().to_owned());
        }
        Ok(Self { nodes })
    }

    /// How many nodes it names.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it names no node (then nobody is allowed).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether it names `node`.
    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node)
    }

    /// The name given to `node`, if any.
    pub fn name(&self, node: NodeId) -> Option<&str> {
        self.nodes
            .get(&node)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// Who a server lets in: everyone, or the nodes of a list that can be replaced while it runs.
/// Cheap to clone; clones share the list.
#[derive(Clone, Debug, Default)]
pub struct Allowed {
    /// `None`: everyone.
    list: Arc<RwLock<Option<AllowList>>>,
}

impl Allowed {
    /// Everyone is allowed.
    pub fn everyone() -> Self {
        Self::default()
    }

    /// Only the nodes of `list`.
    pub fn only(list: AllowList) -> Self {
        Self {
            list: Arc::new(RwLock::new(Some(list))),
        }
    }

    /// Whether `node` is allowed.
    pub fn permits(&self, node: NodeId) -> bool {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|list| list.contains(node))
    }

    /// The name the list gives `node`, if any.
    pub fn name(&self, node: NodeId) -> Option<String> {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|list| list.name(node).map(str::to_owned))
    }

    /// Puts `list` in force from now on, for every clone.
    pub fn replace(&self, list: AllowList) {
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = Some(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> NodeId {
        NodeId([byte; 20])
    }

    #[test]
    fn a_list_names_nodes_with_comments_names_and_loose_ids() {
        let loose = id(2).to_string().replace('-', "").to_lowercase();
        let text = format!("# the lab\n{} alice's laptop # hers\n\n  {loose}\n", id(1));
        let list = AllowList::parse(&text, Path::new("allow")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.name(id(1)), Some("alice's laptop"));
        assert_eq!(list.name(id(2)), None);
        assert!(list.contains(id(2)) && !list.contains(id(3)));
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let text = format!("{}\nbob\n", id(1));
        let err = AllowList::parse(&text, Path::new("/etc/allow"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/allow, line 2: \"bob\" does not start with a node id"),
            "{err}"
        );
    }

    #[test]
    fn allowed_starts_open_and_a_replaced_list_applies_to_every_clone() {
        let allowed = Allowed::everyone();
        let seen_by_server = allowed.clone();
        assert!(seen_by_server.permits(id(9)));
        allowed.replace(AllowList::parse(&id(1).to_string(), Path::new("a")).unwrap());
        assert!(seen_by_server.permits(id(1)) && !seen_by_server.permits(id(9)));
    }
}
