//! [`RoutingCache`]: the DHT nodes a peer knew, remembered across restarts in one small file.
//!
//! The file, `dht-nodes.txt` in the given folder, is text: the line [`HEADER`], then one
//! `IPv4:PORT` per line, at most [`MAX_CACHED_NODES`]. It is written to a temporary file that
//! is then renamed over the old one, so a crash leaves the old list or the new one, never half
//! of one. A missing file is an empty list (a first start); an unreadable or malformed one is
//! an empty list with a warning, never an error: the node then joins through its other
//! bootstrap nodes.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::DhtError;

/// The file's name in the folder.
pub const FILE_NAME: &str = "dht-nodes.txt";

/// The first line of the file, naming its format.
pub const HEADER: &str = "# p2p-transfer DHT nodes v1";

/// Most nodes kept (a full routing table of a large site is far fewer than this).
pub const MAX_CACHED_NODES: usize = 200;

/// Longest file read back; a bigger one is not ours.
const MAX_FILE_LEN: u64 = 64 * 1024;

/// The remembered nodes of one peer, in `dir`.
#[derive(Clone, Debug)]
pub struct RoutingCache {
    path: PathBuf,
}

impl RoutingCache {
    /// The cache kept in `dir` (created on the first save).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered nodes; empty when there are none or the file is unusable (with a
    /// warning).
    pub async fn load(&self) -> Vec<SocketAddrV4> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || load_blocking(&path))
            .await
            .unwrap_or_default()
    }

    /// Remembers `nodes` (the first [`MAX_CACHED_NODES`]), replacing the file atomically.
    pub async fn save(&self, nodes: &[SocketAddrV4]) -> Result<(), DhtError> {
        let path = self.path.clone();
        let text = render(nodes);
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &text).map_err(|source| DhtError::CacheWrite { path, source })
        })
        .await
        .map_err(|_| DhtError::NodeStopped)?
    }
}

/// The file's text for `nodes`.
fn render(nodes: &[SocketAddrV4]) -> String {
    let mut text = String::from(HEADER);
    text.push('\n');
    for node in nodes.iter().take(MAX_CACHED_NODES) {
        text.push_str(&node.to_string());
        text.push('\n');
    }
    text
}

/// The nodes in `text`, or why it is not a cache file.
fn parse(text: &str) -> Result<Vec<SocketAddrV4>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("the first line is not {HEADER:?}"));
    }
    let mut nodes = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let node = line
            .parse::<SocketAddrV4>()
            .map_err(|_| format!("line {}: {line:?} is not IPv4:PORT", n + 2))?;
        if nodes.len() < MAX_CACHED_NODES && !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    Ok(nodes)
}

fn load_blocking(path: &Path) -> Vec<SocketAddrV4> {
    let read = std::fs::File::open(path).and_then(|file| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_LEN + 1), &mut text)?;
        Ok(text)
    });
    let text = match read {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            warn!(path = %path.display(), %err, "DHT routing cache unreadable, starting without it");
            return Vec::new();
        }
    };
    if text.len() as u64 > MAX_FILE_LEN {
        warn!(path = %path.display(), "DHT routing cache too large, starting without it");
        return Vec::new();
    }
    parse(&text).unwrap_or_else(|why| {
        warn!(path = %path.display(), %why, "DHT routing cache malformed, starting without it");
        Vec::new()
    })
}

/// Writes `text` to a temporary file beside `path`, syncs it, and renames it over `path`.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn node(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), port)
    }

    #[tokio::test]
    async fn nodes_saved_are_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RoutingCache::new(&dir.path().join("state"));
        assert!(cache.load().await.is_empty(), "no file yet: empty");
        let nodes = [node(1, 8010), node(2, 8010), node(3, 9000)];
        cache.save(&nodes).await.unwrap();
        assert_eq!(cache.load().await, nodes);
        // Saving again replaces the list.
        cache.save(&nodes[..1]).await.unwrap();
        assert_eq!(cache.load().await, nodes[..1]);
        let text = std::fs::read_to_string(cache.path()).unwrap();
        assert_eq!(text, format!("{HEADER}\n10.1.0.1:8010\n"));
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RoutingCache::new(dir.path());
        for text in [
            String::new(),
            "10.1.0.1:8010\n".to_owned(),
            format!("{HEADER}\n10.1.0.1:8010\nnot an address\n"),
            format!("{HEADER}\n[::1]:8010\n"),
        ] {
            std::fs::write(cache.path(), &text).unwrap();
            assert!(cache.load().await.is_empty(), "{text:?}");
        }
        std::fs::write(cache.path(), [0xff, 0xfe, 0x00]).unwrap();
        assert!(cache.load().await.is_empty(), "not UTF-8");
        std::fs::write(cache.path(), vec![b'#'; MAX_FILE_LEN as usize + 1]).unwrap();
        assert!(cache.load().await.is_empty(), "too large");
    }

    #[test]
    fn at_most_max_cached_nodes_are_kept() {
        let many: Vec<_> = (0..300u16).map(|p| node(1, 1000 + p)).collect();
        let parsed = parse(&render(&many)).unwrap();
        assert_eq!(parsed, many[..MAX_CACHED_NODES]);
    }

    #[tokio::test]
    async fn an_unwritable_folder_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let cache = RoutingCache::new(&blocker);
        let err = cache.save(&[node(1, 8010)]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write the DHT routing cache {}",
                cache.path().display()
            )
        );
    }
}
