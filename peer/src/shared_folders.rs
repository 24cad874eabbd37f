//! [`SharedFolder`]: a folder this peer shares as a whole, served without an open file per
//! file.
//!
//! A folder of 100,000 files can't keep 100,000 descriptors open (`ulimit -n` is often 1,024),
//! so a shared folder keeps, per file, only what serving needs: its place in the tree as the
//! walk saw it (path, size, modification time, device and inode) and its manifest, about
//! 150 bytes. A file is opened when a request for it comes, beneath the folder's handle and
//! checked to be that very file ([`Tree::open_file`]: no link followed, same inode), then with
//! the size and time it was hashed with; the opened files wait in [`OpenFiles`], at most
//! [`OPEN_HANDLES`] of them, the least recently used closed first. A file that changed on disk
//! is no longer served (`file_unavailable`), as a changed single file is not.
//!
//! The folder's record (its head and pages, see [`p2p_protocol::folder`]) is built once from
//! the same entries, kept in record order, so `GetFolderPages` builds pages from them on demand
//! instead of holding a second copy.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use p2p_protocol::folder::{
    self, FOLDER_PAGE_FILES, FolderError, FolderItem, FolderRef, INLINE_CHUNKS,
};
use p2p_protocol::{FileId, FileManifest, FolderHead, FolderId};
use p2p_storage::chunker::HashedFile;
use p2p_storage::{SourceFile, StorageError, Tree, TreeFile};

/// Most files of shared folders kept open at once, all folders together. Requests for more
/// files than this at a time reopen some (an `openat` and an `fstat`, microseconds).
pub(crate) const OPEN_HANDLES: usize = 256;

/// Most bytes of pages one `FolderPages` reply carries (whole pages; the first one always).
/// Below the control frame limit ([`p2p_protocol::MAX_CONTROL_FRAME_LEN`], 2 MiB) with room for
/// the largest page, whose 1,024 files of 1,024-byte paths and 16 chunk hashes take about
/// 1.7 MB.
pub(crate) const PAGES_BUDGET: usize = 1536 * 1024;

/// One file of a shared folder.
#[derive(Debug)]
struct Served {
    /// As the walk (or the hash) saw it: an open must find this very file again.
    file: TreeFile,
    manifest: FileManifest,
    /// The manifest's id, computed once: pages and refs carry it, and hashing a big file's
    /// manifest again for every `GetFolderPages` would cost a hash of its chunk list each time.
    id: FileId,
}

impl Served {
    /// Its item in a page of the record, as [`FolderItem::new`] makes it.
    fn item(&self) -> FolderItem {
        let inline = self.manifest.chunks.len() <= INLINE_CHUNKS;
        FolderItem {
            path: entry_path(self).to_owned(),
            size: self.manifest.size,
            file_id: (!inline).then_some(self.id),
            chunks: inline.then(|| self.manifest.chunks.clone()),
        }
    }
}

/// A folder shared as a whole: its record, and its files by id.
#[derive(Debug)]
pub(crate) struct SharedFolder {
    tree: Arc<Tree>,
    /// The path as the user gave it, for listings.
    shown: std::path::PathBuf,
    id: FolderId,
    head: FolderHead,
    /// Its files in record order: page `k` is `entries[k * FOLDER_PAGE_FILES..]`.
    entries: Box<[Served]>,
    /// (file id, index into `entries`), sorted by id: finds a requested file in log time.
    by_id: Box<[(FileId, u32)]>,
    /// Files seen changed on disk since they were hashed: no longer served.
    changed: Box<[AtomicBool]>,
    /// Errors the next opens fail with, first to last: how tests make an open fail for
    /// reasons of this peer's own (too many open files) that can't be caused on demand.
    #[cfg(test)]
    pub(crate) failing_opens: std::sync::Mutex<Vec<StorageError>>,
}

impl SharedFolder {
    /// The folder `tree` with `files` (each as it was hashed, and its manifest), named by
    /// [`p2p_storage::path::folder_name`]. `shown` is the path the user gave.
    pub fn new(
        tree: Arc<Tree>,
        shown: std::path::PathBuf,
        files: Vec<(TreeFile, FileManifest)>,
    ) -> Result<Self, SharedFolderError> {
        let name = p2p_storage::path::folder_name(&tree)?;
        let mut entries: Vec<(String, Served)> = files
            .into_iter()
            .map(|(file, manifest)| {
                let path = rel_path(&file.rel)?;
                let id = manifest.id();
                Ok((path, Served { file, manifest, id }))
            })
            .collect::<Result<_, SharedFolderError>>()?;
        entries.sort_by(|a, b| folder::compare_paths(&a.0, &b.0));
        let listed = entries
            .iter()
            .map(|(path, s)| (path.clone(), s.manifest.clone()))
            .collect();
        let (head, pages) = folder::build(&name, listed)?;
        // build sorts the same way; the pages are dropped here and rebuilt from the entries
        // on request, so check once that both orders agree.
        let same_order = pages
            .iter()
            .flatten()
            .zip(&entries)
            .all(|(item, (path, _))| item.path == *path);
        assert!(
            same_order,
            "folder::build and compare_paths sort a folder the same way"
        );
        let entries: Box<[Served]> = entries.into_iter().map(|(_, s)| s).collect();
        let mut by_id: Vec<(FileId, u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i as u32))
            .collect();
        by_id.sort_unstable();
        let changed = (0..entries.len()).map(|_| AtomicBool::new(false)).collect();
        Ok(Self {
            tree,
            shown,
            id: head.id(),
            head,
            entries,
            by_id: by_id.into(),
            changed,
            #[cfg(test)]
            failing_opens: Default::default(),
        })
    }

    /// Its id.
    pub fn id(&self) -> FolderId {
        self.id
    }

    /// Its head.
    pub fn head(&self) -> &FolderHead {
        &self.head
    }

    /// Where it is, symlinks resolved.
    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// The path the user gave.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The file with this id, if the folder holds it.
    pub fn find(&self, file_id: &FileId) -> Option<u32> {
        let at = self
            .by_id
            .partition_point(|(id, _)| id < file_id)
            .min(self.by_id.len());
        self.by_id
            .get(at)
            .filter(|(id, _)| id == file_id)
            .map(|(_, ix)| *ix)
    }

    /// The manifest of file `ix`.
    pub fn manifest(&self, ix: u32) -> &FileManifest {
        &self.entries[ix as usize].manifest
    }

    /// The path of file `ix` under the folder's root (`/` between parts).
    pub fn path(&self, ix: u32) -> &str {
        entry_path(&self.entries[ix as usize])
    }

    /// Every file: its path under the root and its manifest, in record order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileManifest)> {
        self.entries.iter().map(|s| (entry_path(s), &s.manifest))
    }

    /// The files as they were hashed, in record order.
    pub fn tree_files(&self) -> impl Iterator<Item = (&TreeFile, &FileManifest)> {
        self.entries.iter().map(|s| (&s.file, &s.manifest))
    }

    /// Whether file `ix` was seen changed on disk.
    pub fn is_changed(&self, ix: u32) -> bool {
        self.changed[ix as usize].load(Ordering::Relaxed)
    }

    /// Stops serving file `ix`: it changed on disk.
    pub fn mark_changed(&self, ix: u32) {
        self.changed[ix as usize].store(true, Ordering::Relaxed);
    }

    /// Opens file `ix` beneath the folder, checked to be the file that was hashed (same
    /// inode, size and modification time). Blocking.
    pub fn open(&self, ix: u32) -> Result<SourceFile, StorageError> {
        #[cfg(test)]
        if let Some(err) = self.failing_opens.lock().unwrap().pop() {
            return Err(err);
        }
        let served = &self.entries[ix as usize];
        let opened = self.tree.open_file(&served.file)?;
        SourceFile::cached(
            opened,
            HashedFile {
                manifest: served.manifest.clone(),
                len: served.file.size,
                modified: served.file.modified,
            },
        )
    }

    /// Pages `first..first + count` of the record, as many whole ones as fit in
    /// [`PAGES_BUDGET`] bytes, and always the first one asked for unless it is past the end
    /// (then none).
    pub fn pages(&self, first: u32, count: u32) -> Vec<Vec<FolderItem>> {
        let mut pages = Vec::new();
        let mut used = 0;
        for page in first..first.saturating_add(count) {
            let Some(files) = self.page_entries(page) else {
                break;
            };
            let items: Vec<FolderItem> = files.iter().map(Served::item).collect();
            let len: usize = items.iter().map(item_len).sum::<usize>() + 8;
            if !pages.is_empty() && used + len > PAGES_BUDGET {
                break;
            }
            used += len;
            pages.push(items);
        }
        pages
    }

    /// Page `page` as the index gets it (`AddFolderFiles`), `None` past the end.
    pub fn refs(&self, page: u32) -> Option<Vec<FolderRef>> {
        self.page_entries(page).map(|files| {
            files
                .iter()
                .map(|s| FolderRef {
                    path: entry_path(s).to_owned(),
                    file_id: s.id,
                    size: s.manifest.size,
                })
                .collect()
        })
    }

    fn page_entries(&self, page: u32) -> Option<&[Served]> {
        let start = page as usize * FOLDER_PAGE_FILES;
        (start < self.entries.len())
            .then(|| &self.entries[start..(start + FOLDER_PAGE_FILES).min(self.entries.len())])
    }
}

/// The path of an entry: the walk keeps only UTF-8 names, so the conversion can't fail.
fn entry_path(served: &Served) -> &str {
    served
        .file
        .rel
        .to_str()
        .expect("entries have UTF-8 paths (checked when the folder was built)")
}

/// A path relative to the folder as a record writes it: UTF-8 parts joined by `/`.
fn rel_path(rel: &Path) -> Result<String, SharedFolderError> {
    let path = rel
        .to_str()
        .ok_or_else(|| SharedFolderError::NotUtf8(rel.to_owned()))?;
    Ok(path.to_owned())
}

/// An upper bound of an item's MessagePack size in a `FolderPages` reply (named fields).
fn item_len(item: &FolderItem) -> usize {
    // Map header; "path" and its string header; "size" and a u64; "file_id" and 32 bytes;
    // "chunks", an array header and 32 bytes with a 2-byte header per hash.
    let chunks = item.chunks.as_ref().map_or(0, |c| 10 + 34 * c.len());
    let id = if item.file_id.is_some() { 42 } else { 0 };
    1 + 8 + item.path.len() + 14 + id + chunks
}

/// Why a folder can't be shared as it is.
#[derive(Debug, thiserror::Error)]
pub enum SharedFolderError {
    /// Its name or a path in it breaks a rule of folder records.
    #[error(transparent)]
    Record(#[from] FolderError),
    /// Its own name can't be used.
    #[error(transparent)]
    Name(#[from] StorageError),
    /// A path that is not UTF-8 (the walk leaves such files out, so only a caller's list).
    #[error("{} is not a UTF-8 path", .0.display())]
    NotUtf8(std::path::PathBuf),
}

/// Files of shared folders opened for requests, the least recently used closed first: at
/// most `limit` at a time. An entry handed out stays open while a request still uses it,
/// however soon it leaves the cache.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    limit: usize,
    /// Bumped on every use; orders the entries.
    tick: u64,
    files: HashMap<FileId, (Arc<SourceFile>, u64)>,
    /// Last use → file.
    by_use: BTreeMap<u64, FileId>,
}

impl Default for OpenFiles {
    fn default() -> Self {
        Self::new(OPEN_HANDLES)
    }
}

impl OpenFiles {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            tick: 0,
            files: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The open file with this id, marked as just used.
    pub fn get(&mut self, file_id: &FileId) -> Option<Arc<SourceFile>> {
        self.tick += 1;
        let tick = self.tick;
        let (file, used) = self.files.get_mut(file_id)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, *file_id);
        Some(file.clone())
    }

    /// Keeps `file` open, closing the least recently used one if the cache is full.
    pub fn insert(&mut self, file_id: FileId, file: Arc<SourceFile>) {
        self.remove(&file_id);
        if self.files.len() >= self.limit
            && let Some((_, oldest)) = self.by_use.pop_first()
        {
            self.files.remove(&oldest);
        }
        self.tick += 1;
        self.by_use.insert(self.tick, file_id);
        self.files.insert(file_id, (file, self.tick));
    }

    /// Closes this file (once no request uses it any more).
    pub fn remove(&mut self, file_id: &FileId) {
        if let Some((_, used)) = self.files.remove(file_id) {
            self.by_use.remove(&used);
        }
    }

    /// Closes every file of `folder`.
    pub fn remove_folder(&mut self, folder: &SharedFolder) {
        let ids: Vec<FileId> = self
            .files
            .keys()
            .filter(|id| folder.find(id).is_some())
            .copied()
            .collect();
        for id in ids {
            self.remove(&id);
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A folder of `n` files `d<i/10>/f<i>` (i bytes each) on disk, shared.
    pub(crate) fn shared(n: usize) -> (tempfile::TempDir, SharedFolder) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("album");
        for i in 0..n {
            let sub = root.join(format!("d{}", i / 10));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}")), vec![b'x'; i]).unwrap();
        }
        let tree = Arc::new(Tree::open(&root).unwrap());
        let files = tree
            .hash_files(tree.walk().files)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let folder = SharedFolder::new(tree, "album".into(), files).unwrap();
        (dir, folder)
    }

    #[test]
    fn the_record_is_the_one_build_makes_and_files_are_found_by_id() {
        let (_dir, folder) = shared(1500);
        let listed = folder
            .files()
            .map(|(p, m)| (p.to_owned(), m.clone()))
            .collect();
        let (head, pages) = folder::build("album", listed).unwrap();
        assert_eq!(folder.head(), &head);
        assert_eq!(folder.id(), head.id());
        assert_eq!(folder.pages(0, 5), pages, "both pages fit in one reply");
        assert_eq!(folder.pages(1, 1), pages[1..]);
        assert!(folder.pages(2, 1).is_empty(), "past the end: none");
        for page in 0..2 {
            let refs = folder.refs(page).unwrap();
            assert_eq!(folder::page_hash(&refs), head.pages[page as usize]);
        }
        for (path, manifest) in folder.files() {
            let ix = folder.find(&manifest.id()).unwrap();
            // Files with equal content and name share an id; any of them will do.
            assert_eq!(folder.manifest(ix).id(), manifest.id(), "{path}");
        }
        assert_eq!(folder.find(&FileId([0; 32])), None);
        assert_eq!(folder.find(&FileId([0xff; 32])), None);
    }

    #[test]
    fn pages_carry_the_items_folder_item_new_makes_for_small_and_big_files() {
        let (_dir, folder) = shared(3);
        let mut entries: Vec<Served> = folder
            .entries
            .iter()
            .map(|s| Served {
                file: s.file.clone(),
                manifest: s.manifest.clone(),
                id: s.id,
            })
            .collect();
        // A manifest of more chunks than travel inline: its item carries its id.
        let big = &mut entries[0];
        big.manifest.size = (INLINE_CHUNKS as u64 + 1) * u64::from(p2p_protocol::CHUNK_SIZE);
        big.manifest.chunks = vec![p2p_protocol::Sha256Hash::of(b"x"); INLINE_CHUNKS + 1];
        big.id = big.manifest.id();
        for served in &entries {
            assert_eq!(
                served.item(),
                FolderItem::new(entry_path(served).to_owned(), &served.manifest)
            );
        }
        assert!(entries[0].item().file_id.is_some());
        assert!(entries[1].item().chunks.is_some());
    }

    #[test]
    fn a_reply_holds_whole_pages_within_the_budget_and_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("long");
        // Paths of ~250 bytes: a page of 1,024 takes ~290 KB, so 5 fit in 1.5 MiB.
        let deep = root.join("d".repeat(200));
        std::fs::create_dir_all(&deep).unwrap();
        for i in 0..(8 * FOLDER_PAGE_FILES) {
            std::fs::write(deep.join(format!("{i:040}")), b"").unwrap();
        }
        let tree = Arc::new(Tree::open(&root).unwrap());
        let files = tree
            .hash_files(tree.walk().files)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let folder = SharedFolder::new(tree, root.clone(), files).unwrap();
        let pages = folder.pages(0, 100);
        assert!((2..8).contains(&pages.len()), "{}", pages.len());
        let encoded = rmp_serde::to_vec_named(&pages).unwrap().len();
        assert!(encoded <= PAGES_BUDGET, "{encoded}");
        assert_eq!(folder.pages(7, 100).len(), 1);
    }

    #[test]
    fn files_are_opened_on_demand_and_refused_once_changed() {
        let (dir, folder) = shared(20);
        let ix = (0..20).find(|&i| folder.path(i) == "d1/f15").unwrap();
        let file = folder.open(ix).unwrap();
        assert_eq!(file.manifest(), folder.manifest(ix));
        drop(file);
        std::fs::write(dir.path().join("album/d1/f15"), b"other").unwrap();
        assert!(matches!(folder.open(ix), Err(StorageError::FileChanged(_))));
    }

    #[test]
    fn open_files_are_bounded_and_the_least_recently_used_goes_first() {
        let (_dir, folder) = shared(10);
        let mut open = OpenFiles::new(3);
        let ids: Vec<FileId> = (0..4).map(|i| folder.manifest(i).id()).collect();
        for (i, id) in ids.iter().take(3).enumerate() {
            open.insert(*id, Arc::new(folder.open(i as u32).unwrap()));
        }
        assert!(open.get(&ids[0]).is_some(), "0 is now the most recent");
        open.insert(ids[3], Arc::new(folder.open(3).unwrap()));
        assert_eq!(open.len(), 3);
        assert!(open.get(&ids[1]).is_none(), "1 was the least recently used");
        for i in [0, 2, 3] {
            assert!(open.get(&ids[i]).is_some());
        }
        open.remove_folder(&folder);
        assert_eq!(open.len(), 0);
    }
}
