//! [`Folders`]: the folders the index knows, who hosts them and the files inside them, and
//! what each costs. Pure state, no I/O; [`crate::index::Index`] owns one and does the
//! per-peer accounting around it.
//!
//! # Shape
//! * A folder is a [`StoredHead`] (name, totals, page hashes) in a slot of a slab, found by
//!   its id in `by_id`, with its hosts.
//! * Its files arrive page by page (`AddFolderFiles`). A page is checked against the head's
//!   hash for it ([`check_pages`], done outside the index's lock), then stored as a few
//!   exactly-sized columns: every path in one string, the ids, the sizes.
//! * Every in-folder file is also in one global set `files` of (file id, slot, number in the
//!   folder), so a lookup by id prefix is a range there and never a walk over folders, and a
//!   search walks that set in slices like the name map.
//!
//! # Cost
//! * A head costs [`StoredHead::cost`] (512 bytes, the name, 48 bytes per page).
//! * A page of `n` files costs [`PAGE_OVERHEAD`] + `n` × [`FOLDER_FILE_COST`] + the length of
//!   its paths. [`FOLDER_FILE_COST`] was measured (see the constant).
//! * A host costs [`folder_host_cost`]: [`HOST_OVERHEAD`] and a bit per page, whatever the
//!   number of files. Hosts hang on the folder, so a second host of a 100,000-file folder
//!   costs 112 bytes, not anything per file.
//!
//! So a 100,000-file folder with paths of 24 bytes is charged 13.8 MiB (it really takes
//! about 12.6 MiB), whatever the number of its hosts; the 32 MiB budget of one peer holds
//! about 230,000 such files.
//!
//! # Who pays
//! Each host is charged the head, its own host cost and every page it sent (a page sent
//! twice by the same host is charged once). A page stays stored while one of the hosts that
//! sent it remains (`payers`): nobody keeps alive, by adding a folder's head, pages that no
//! remaining host paid for.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use p2p_protocol::folder::{self, FOLDER_PAGE_FILES, FolderError};
use p2p_protocol::{FileId, FolderHead, FolderId, FolderRef, PeerId};

use crate::stored::{HOST_OVERHEAD, StoredHead};

/// Bytes accounted per file inside a folder, besides its path: its id (32) and size (8) and
/// the end of its path (4) in its page's columns, and its entry in the global file-id set
/// (a 40-byte key in B-tree nodes about 70 % full, with their headers). Measured
/// (`tests/folder_cost.rs`): a 100,000-file folder with 24-byte paths grows the server's
/// resident memory by 12.6 MiB, 108 bytes per file besides the path; this leaves a margin
/// for B-tree nodes filled less evenly.
pub const FOLDER_FILE_COST: usize = 120;

/// Bytes accounted per stored page besides its files: the page's own allocation and its four
/// columns' allocation headers.
pub const PAGE_OVERHEAD: usize = 256;

/// Where a folder lives in the slab. Slots of removed folders are reused.
pub type Slot = u32;

/// An in-folder file's entry in the global set: its id, its folder's slot, its number in the
/// folder (page × [`FOLDER_PAGE_FILES`] + place in the page).
pub type FileKey = (FileId, Slot, u32);

/// The pages a host sent, one bit each.
type PageSet = Box<[u64]>;

/// What a host of a folder with `pages` pages costs: [`HOST_OVERHEAD`] and a bit per page.
pub fn folder_host_cost(pages: usize) -> usize {
    HOST_OVERHEAD + 8 * pages.div_ceil(64)
}

/// What storing a page of `refs` costs.
pub fn page_cost(refs: &[FolderRef]) -> usize {
    cost_of_page(refs.len(), refs.iter().map(|r| r.path.len()).sum())
}

fn cost_of_page(files: usize, path_bytes: usize) -> usize {
    PAGE_OVERHEAD + files * FOLDER_FILE_COST + path_bytes
}

/// A folder: its head, its hosts (with the pages each sent) and the pages stored so far.
#[derive(Debug)]
pub struct Folder {
    id: FolderId,
    head: Arc<StoredHead>,
    hosts: BTreeMap<PeerId, PageSet>,
    pages: Box<[Option<Box<StoredPage>>]>,
    stored_files: u64,
}

impl Folder {
    /// Its id.
    pub fn id(&self) -> FolderId {
        self.id
    }

    /// Its head.
    pub fn head(&self) -> &Arc<StoredHead> {
        &self.head
    }

    /// Its hosts.
    pub fn hosts(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.hosts.keys().copied()
    }

    /// How many hosts it has.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Files stored so far (of every page some host sent).
    pub fn stored_files(&self) -> u64 {
        self.stored_files
    }

    /// File `number` of the folder (page × [`FOLDER_PAGE_FILES`] + place), if its page is
    /// stored: its path and size.
    fn file(&self, number: u32) -> Option<(&str, u64)> {
        let page = self
            .pages
            .get(number as usize / FOLDER_PAGE_FILES)?
            .as_ref()?;
        let i = number as usize % FOLDER_PAGE_FILES;
        Some((page.path(i), page.sizes[i]))
    }

    /// What `peer` has been charged for this folder: the head, its host cost and each page
    /// it sent.
    fn charge_of(&self, peer: &PeerId) -> usize {
        let Some(sent) = self.hosts.get(peer) else {
            return 0;
        };
        let pages: usize = self
            .pages
            .iter()
            .enumerate()
            .filter(|(k, _)| has(sent, *k))
            .filter_map(|(_, p)| p.as_ref().map(|p| p.cost()))
            .sum();
        self.head.cost() + folder_host_cost(self.pages.len()) + pages
    }
}

/// A page's files, stored compactly.
#[derive(Debug)]
struct StoredPage {
    /// Every path of the page, one after the other.
    paths: Box<str>,
    /// Where each path ends in `paths`.
    ends: Box<[u32]>,
    ids: Box<[FileId]>,
    sizes: Box<[u64]>,
    /// Hosts that sent this page (and were charged for it).
    payers: u32,
}

impl StoredPage {
    fn new(refs: Vec<FolderRef>) -> Self {
        let mut paths = String::with_capacity(refs.iter().map(|r| r.path.len()).sum());
        let mut ends = Vec::with_capacity(refs.len());
        let mut ids = Vec::with_capacity(refs.len());
        let mut sizes = Vec::with_capacity(refs.len());
        for r in refs {
            paths.push_str(&r.path);
            // A page holds at most 1024 paths of at most 1024 bytes.
            ends.push(paths.len() as u32);
            ids.push(r.file_id);
            sizes.push(r.size);
        }
        Self {
            paths: paths.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            ids: ids.into_boxed_slice(),
            sizes: sizes.into_boxed_slice(),
            payers: 0,
        }
    }

    fn path(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.paths[start..self.ends[i] as usize]
    }

    fn cost(&self) -> usize {
        cost_of_page(self.ids.len(), self.paths.len())
    }
}

fn has(set: &[u64], page: usize) -> bool {
    set.get(page / 64)
        .is_some_and(|w| w & (1 << (page % 64)) != 0)
}

fn set(set: &mut [u64], page: usize) {
    set[page / 64] |= 1 << (page % 64);
}

/// Pages of a folder's file list that passed [`check_pages`]: only these can be stored.
#[derive(Debug)]
pub struct CheckedPages {
    folder_id: FolderId,
    first: u32,
    pages: Vec<Vec<FolderRef>>,
}

impl CheckedPages {
    /// The folder they belong to.
    pub fn folder_id(&self) -> FolderId {
        self.folder_id
    }
}

/// Checks `pages`, numbered from `first`, against the head of folder `folder_id`: each one
/// is one of the head's pages, holds the files it should, hashes to the head's hash for it,
/// and has safe paths in order ([`folder::check_ref_page`]). Pure and lock-free: the caller
/// runs it outside the index's lock.
pub fn check_pages(
    folder_id: FolderId,
    head: &StoredHead,
    first: u32,
    pages: Vec<Vec<FolderRef>>,
) -> Result<CheckedPages, FolderError> {
    for (k, page) in pages.iter().enumerate() {
        let number = u32::try_from(k)
            .ok()
            .and_then(|k| first.checked_add(k))
            .ok_or(FolderError::PageBeyondEnd {
                page: u32::MAX,
                pages: head.pages().len() as u64,
            })?;
        folder::check_ref_page(head.pages(), head.files(), number, page)?;
    }
    Ok(CheckedPages {
        folder_id,
        first,
        pages,
    })
}

/// What adding checked pages would do, computed before deciding to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagePlan {
    /// Bytes to charge the host: the pages it had not sent before.
    pub charge: usize,
    /// Bytes the index would store: the pages no host had sent.
    pub growth: usize,
}

/// What removing a host gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// What the host had been charged for the folder.
    pub charge: usize,
    /// Bytes the index no longer stores.
    pub freed: usize,
    /// Files the folder declared (for the host's folder-file count).
    pub files: u64,
}

/// Every folder, and every file inside one.
#[derive(Debug, Default)]
pub struct Folders {
    slab: Vec<Option<Folder>>,
    free: Vec<Slot>,
    by_id: BTreeMap<FolderId, Slot>,
    files: BTreeSet<FileKey>,
}

impl Folders {
    /// The folder `id`, if known.
    pub fn get(&self, id: &FolderId) -> Option<&Folder> {
        self.by_id.get(id).map(|slot| self.at(*slot))
    }

    fn at(&self, slot: Slot) -> &Folder {
        self.slab[slot as usize]
            .as_ref()
            .expect("by_id and files name live slots only")
    }

    fn at_mut(&mut self, slot: Slot) -> &mut Folder {
        self.slab[slot as usize]
            .as_mut()
            .expect("by_id and files name live slots only")
    }

    /// How many folders are stored.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no folder is stored.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many in-folder files are stored.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Whether `peer` hosts folder `id`.
    pub fn is_host(&self, id: &FolderId, peer: &PeerId) -> bool {
        self.get(id).is_some_and(|f| f.hosts.contains_key(peer))
    }

    /// What adding `peer` as a host of `id` (with `head`, validated, whose id is `id`) would
    /// cost: (the charge to the host, the growth of the index).
    pub fn host_plan(&self, id: &FolderId, head: &FolderHead) -> (usize, usize) {
        let host = folder_host_cost(head.pages.len());
        match self.get(id) {
            Some(folder) => (folder.head.cost() + host, host),
            None => {
                let cost = StoredHead::cost_of(head);
                (cost + host, cost + host)
            }
        }
    }

    /// Adds `peer` as a host of folder `id` (a new folder if unknown) and returns the folder's
    /// head, plus whether the folder is new. The caller checked [`Folders::host_plan`].
    pub fn add_host(
        &mut self,
        id: FolderId,
        head: FolderHead,
        peer: PeerId,
    ) -> (Arc<StoredHead>, bool) {
        let (slot, new) = match self.by_id.get(&id) {
            Some(slot) => (*slot, false),
            None => {
                let pages = head.pages.len();
                let folder = Folder {
                    id,
                    head: Arc::new(StoredHead::new(head)),
                    hosts: BTreeMap::new(),
                    pages: (0..pages).map(|_| None).collect(),
                    stored_files: 0,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slab[slot as usize] = Some(folder);
                        slot
                    }
                    None => {
                        self.slab.push(Some(folder));
                        (self.slab.len() - 1) as Slot
                    }
                };
                self.by_id.insert(id, slot);
                (slot, true)
            }
        };
        let folder = self.at_mut(slot);
        let words = folder.pages.len().div_ceil(64);
        folder
            .hosts
            .entry(peer)
            .or_insert_with(|| vec![0; words].into_boxed_slice());
        (folder.head.clone(), new)
    }

    /// What storing `pages` for `peer` would cost; `None` if `peer` does not host the folder.
    pub fn page_plan(&self, pages: &CheckedPages, peer: &PeerId) -> Option<PagePlan> {
        let folder = self.get(&pages.folder_id)?;
        let sent = folder.hosts.get(peer)?;
        let mut plan = PagePlan {
            charge: 0,
            growth: 0,
        };
        for (k, refs) in pages.pages.iter().enumerate() {
            let number = pages.first as usize + k;
            if has(sent, number) {
                continue;
            }
            let cost = page_cost(refs);
            plan.charge += cost;
            if folder.pages[number].is_none() {
                plan.growth += cost;
            }
        }
        Some(plan)
    }

    /// Stores `pages` as sent by `peer` (who hosts the folder; the caller checked
    /// [`Folders::page_plan`]), and returns how many of the folder's files are stored now.
    pub fn store_pages(&mut self, pages: CheckedPages, peer: &PeerId) -> u64 {
        let Some(&slot) = self.by_id.get(&pages.folder_id) else {
            return 0;
        };
        let mut new_files = Vec::new();
        let folder = self.at_mut(slot);
        let sent = folder
            .hosts
            .get_mut(peer)
            .expect("the caller checked that the peer hosts the folder");
        for (k, refs) in pages.pages.into_iter().enumerate() {
            let number = pages.first as usize + k;
            if has(sent, number) {
                continue;
            }
            set(sent, number);
            let page = folder.pages[number].get_or_insert_with(|| {
                let base = (number * FOLDER_PAGE_FILES) as u32;
                new_files.extend(
                    refs.iter()
                        .enumerate()
                        .map(|(i, r)| (r.file_id, slot, base + i as u32)),
                );
                folder.stored_files += refs.len() as u64;
                Box::new(StoredPage::new(refs))
            });
            page.payers += 1;
        }
        let stored = folder.stored_files;
        self.files.extend(new_files);
        stored
    }

    /// Takes `peer` off folder `id`'s hosts: the pages only it paid for go, and the folder
    /// with its last host. `None` if it was not a host.
    pub fn remove_host(&mut self, id: &FolderId, peer: &PeerId) -> Option<Released> {
        let &slot = self.by_id.get(id)?;
        let folder = self.at(slot);
        if !folder.hosts.contains_key(peer) {
            return None;
        }
        let charge = folder.charge_of(peer);
        let files = folder.head.files();
        let folder = self.at_mut(slot);
        let sent = folder.hosts.remove(peer).expect("checked above");
        let mut freed = folder_host_cost(folder.pages.len());
        let mut gone = Vec::new();
        for (number, page) in folder.pages.iter_mut().enumerate() {
            if !has(&sent, number) {
                continue;
            }
            let Some(stored) = page else { continue };
            stored.payers -= 1;
            if stored.payers == 0 {
                let stored = page.take().expect("matched Some above");
                freed += stored.cost();
                folder.stored_files -= stored.ids.len() as u64;
                let base = (number * FOLDER_PAGE_FILES) as u32;
                gone.extend(
                    stored
                        .ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| (*id, slot, base + i as u32)),
                );
            }
        }
        if folder.hosts.is_empty() {
            freed += folder.head.cost();
            // No host left, so no page either: every page has a payer among the hosts.
            debug_assert_eq!(folder.stored_files, 0);
            self.slab[slot as usize] = None;
            self.free.push(slot);
            self.by_id.remove(id);
        }
        for key in gone {
            self.files.remove(&key);
        }
        Some(Released {
            charge,
            freed,
            files,
        })
    }

    /// Folder ids from `low` to `high`, in order.
    pub fn ids_in(&self, low: FolderId, high: FolderId) -> impl Iterator<Item = &FolderId> + '_ {
        self.by_id.range(low..=high).map(|(id, _)| id)
    }

    /// The first in-folder file whose id is at least `low` (after every entry of `after`, if
    /// given) and at most `high`: distinct ids one by one, without walking the copies of
    /// one id (an empty `__init__.py` may be in thousands of places).
    pub fn next_file_id(
        &self,
        low: FileId,
        high: FileId,
        after: Option<FileId>,
    ) -> Option<FileKey> {
        let start = match after {
            Some(id) => Bound::Excluded((id, Slot::MAX, u32::MAX)),
            None => Bound::Included((low, 0, 0)),
        };
        self.files
            .range((start, Bound::Included((high, Slot::MAX, u32::MAX))))
            .next()
            .copied()
    }

    /// The file an entry of the global set names: (its folder, its path, its size).
    pub fn file_at(&self, (_, slot, number): FileKey) -> Option<(&Folder, &str, u64)> {
        let folder = self.slab.get(slot as usize)?.as_ref()?;
        let (path, size) = folder.file(number)?;
        Some((folder, path, size))
    }

    /// In-folder files after `after` (all of them from the start if `None`), in id order.
    pub fn files_after(
        &self,
        after: Option<FileKey>,
    ) -> impl Iterator<Item = (FileKey, &Folder, &str, u64)> + '_ {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.files
            .range((start, Bound::Unbounded))
            .filter_map(|key| {
                self.file_at(*key)
                    .map(|(f, path, size)| (*key, f, path, size))
            })
    }

    /// Every folder (for checking accounts in tests).
    pub fn iter(&self) -> impl Iterator<Item = &Folder> + '_ {
        self.by_id.values().map(|slot| self.at(*slot))
    }

    /// Bytes `peer` has been charged for folder `id`.
    pub fn charge_of(&self, id: &FolderId, peer: &PeerId) -> usize {
        self.get(id).map_or(0, |f| f.charge_of(peer))
    }

    /// Bytes stored for one folder: its head, its hosts and its stored pages.
    pub fn stored_cost(folder: &Folder) -> usize {
        folder.head.cost()
            + folder.hosts.len() * folder_host_cost(folder.pages.len())
            + folder
                .pages
                .iter()
                .flatten()
                .map(|p| p.cost())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use p2p_protocol::folder::FolderItem;
    use p2p_protocol::{CHUNK_SIZE, FileManifest, Sha256Hash};

    use super::*;

    /// A folder of `n` files and its pages as the index gets them.
    fn folder(n: usize) -> (FolderId, FolderHead, Vec<Vec<FolderRef>>) {
        let files = (0..n)
            .map(|i| {
                let name = format!("f{i:06}");
                let manifest = FileManifest {
                    name: name.clone(),
                    size: 1,
                    chunk_size: CHUNK_SIZE,
                    chunks: vec![Sha256Hash::of(name.as_bytes())],
                };
                (format!("d/{name}"), manifest)
            })
            .collect();
        let (head, pages) = folder::build("photos", files).unwrap();
        let refs = pages
            .iter()
            .map(|p| folder::refs(p).unwrap())
            .collect::<Vec<_>>();
        (head.id(), head, refs)
    }

    fn checked(
        id: FolderId,
        head: &FolderHead,
        first: u32,
        pages: &[Vec<FolderRef>],
    ) -> CheckedPages {
        check_pages(id, &StoredHead::new(head.clone()), first, pages.to_vec()).unwrap()
    }

    #[test]
    fn a_page_is_stored_once_and_paid_by_each_host_that_sent_it() {
        let (id, head, pages) = folder(1500);
        let mut folders = Folders::default();
        let (a, b) = (PeerId(1), PeerId(2));
        let (charge, growth) = folders.host_plan(&id, &head);
        assert_eq!(charge, growth);
        folders.add_host(id, head.clone(), a);
        let plan = folders
            .page_plan(&checked(id, &head, 0, &pages), &a)
            .unwrap();
        assert_eq!(plan.charge, plan.growth);
        assert_eq!(plan.charge, page_cost(&pages[0]) + page_cost(&pages[1]));
        assert_eq!(folders.store_pages(checked(id, &head, 0, &pages), &a), 1500);
        // Sent again: nothing to pay, nothing stored.
        let again = checked(id, &head, 1, &pages[1..]);
        assert_eq!(
            folders.page_plan(&again, &a),
            Some(PagePlan {
                charge: 0,
                growth: 0
            })
        );
        assert_eq!(folders.store_pages(again, &a), 1500);
        assert_eq!(folders.file_count(), 1500);
        // A second host pays the head and its link; the index stores only the link.
        assert_eq!(folders.host_plan(&id, &head).1, folder_host_cost(2));
        folders.add_host(id, head.clone(), b);
        let plan = folders
            .page_plan(&checked(id, &head, 0, &pages[..1]), &b)
            .unwrap();
        assert_eq!((plan.charge, plan.growth), (page_cost(&pages[0]), 0));
        folders.store_pages(checked(id, &head, 0, &pages[..1]), &b);
        // `a` leaves: page 1 had no other payer, so it goes; page 0 stays for `b`.
        let released = folders.remove_host(&id, &a).unwrap();
        assert_eq!(released.freed, folder_host_cost(2) + page_cost(&pages[1]));
        assert_eq!(folders.get(&id).unwrap().stored_files(), 1024);
        assert_eq!(folders.file_count(), 1024);
        let released = folders.remove_host(&id, &b).unwrap();
        assert_eq!(released.charge, released.freed);
        assert_eq!(folders.len(), 0);
        assert_eq!(folders.file_count(), 0);
        assert_eq!(folders.remove_host(&id, &b), None);
    }

    #[test]
    fn a_page_that_does_not_hash_to_the_head_is_refused() {
        let (id, head, mut pages) = folder(3);
        pages[0][1].size += 1;
        let err = check_pages(id, &StoredHead::new(head.clone()), 0, pages.clone()).unwrap_err();
        assert_eq!(err, FolderError::PageHash(0));
        let err = check_pages(id, &StoredHead::new(head), 1, pages).unwrap_err();
        assert!(
            matches!(err, FolderError::PageBeyondEnd { page: 1, .. }),
            "{err:?}"
        );
    }

    /// docs/PROTOCOL.md §13.5 states the charges these constants make.
    #[test]
    fn the_protocol_document_states_these_costs() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
                .unwrap();
        let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        for says in [
            format!(
                "the head: **{}** bytes, plus the name's UTF-8 length, plus the length of its \
                 lower-case form when that differs, plus **{}** bytes per page;",
                crate::stored::FOLDER_OVERHEAD,
                crate::stored::HEAD_PAGE_COST
            ),
            format!(
                "each page stored: **{PAGE_OVERHEAD}** bytes, plus **{FOLDER_FILE_COST}** bytes \
                 per file, plus the length of every path in it"
            ),
            format!(
                "each host of the folder: **{HOST_OVERHEAD}** bytes, plus 8 bytes per 64 pages"
            ),
            format!(
                "a second host of a 100,000-file folder costs {} bytes",
                folder_host_cost(98)
            ),
        ] {
            assert!(
                flat.contains(&says),
                "PROTOCOL.md §13.5 should say {says:?}"
            );
        }
        // "A 100,000-file folder costs the index about 13.8 MiB with paths of 24 bytes".
        let pages = 100_000usize.div_ceil(FOLDER_PAGE_FILES);
        let charged = 100_000 * (FOLDER_FILE_COST + 24) + pages * PAGE_OVERHEAD;
        let mib = charged as f64 / (1024.0 * 1024.0);
        assert!(
            flat.contains(&format!(
                "costs the index about {mib:.1} MiB** with paths of 24 bytes"
            )),
            "{mib:.1}"
        );
    }

    #[test]
    fn copies_of_one_id_are_skipped_as_one() {
        // Three empty files of one name in three folders: one id, three places.
        let empty = FileManifest {
            name: "__init__.py".into(),
            size: 0,
            chunk_size: CHUNK_SIZE,
            chunks: vec![],
        };
        let files = ["a", "b", "c"]
            .map(|d| (format!("{d}/__init__.py"), empty.clone()))
            .to_vec();
        let (head, pages) = folder::build("src", files).unwrap();
        assert!(
            pages[0]
                .iter()
                .all(|i: &FolderItem| i.chunks == Some(vec![]))
        );
        let id = head.id();
        let refs = vec![folder::refs(&pages[0]).unwrap()];
        let mut folders = Folders::default();
        folders.add_host(id, head.clone(), PeerId(1));
        folders.store_pages(checked(id, &head, 0, &refs), &PeerId(1));
        let (low, high) = (FileId([0; 32]), FileId([0xff; 32]));
        let first = folders.next_file_id(low, high, None).unwrap();
        assert_eq!(first.0, empty.id());
        assert_eq!(folders.next_file_id(low, high, Some(first.0)), None);
        let paths: Vec<&str> = folders.files_after(None).map(|(_, _, p, _)| p).collect();
        assert_eq!(paths, ["a/__init__.py", "b/__init__.py", "c/__init__.py"]);
    }
}
