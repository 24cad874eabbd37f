//! A shared folder on the wire: its head (name, totals, page hashes), whose hash is the
//! [`FolderId`], and its file list in pages of [`FOLDER_PAGE_FILES`], each certified by a hash
//! in the head, so a downloader checks the list page by page while it streams.
//!
//! # Canonical bytes
//! Everything is big-endian; paths are the UTF-8 parts joined by `/`.
//! ```text
//! page_hash = SHA-256( "p2p-folder-page\0"      16 bytes
//!                      count                    u32, files in the page
//!                      per file, in order:
//!                        path length            u16, then the path
//!                        file id                32 bytes
//!                        size                   u64 )
//! folder_id = SHA-256( "p2p-folder-v1\0\0\0"    16 bytes
//!                      name length              u16, then the folder's name
//!                      files                    u64
//!                      size                     u64
//!                      pages                    u32, then 32 bytes per page hash )
//! ```
//! A page hash covers [`FolderRef`]s (path, file id, size): an item that carries chunk hashes
//! ([`FolderItem::chunks`]) is hashed with the id of the manifest it stands for.
//!
//! # Rules of a file list
//! * Files are sorted by path, compared part by part bytewise (the order of `Vec<String>`),
//!   strictly increasing: no path twice. No file's path is the folder of a later one (`a`
//!   then `a/b`); sorted, such a pair is always adjacent.
//! * Every part passes [`validate_file_name`], the path is at most [`MAX_FOLDER_PATH_LEN`]
//!   bytes, and its last part is the file's name.
//! * Pages hold [`FOLDER_PAGE_FILES`] files each, the last one the rest (≥ 1); a folder of no
//!   files has no pages. At most [`MAX_FOLDER_FILES`] files.
//! * A file of at most [`INLINE_CHUNKS`] chunks (≤ 64 MiB) travels with its chunk hashes, a
//!   bigger one with its file id only; never both, never neither.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::printable;
use crate::types::{
    FileId, FileManifest, FileNameError, FolderId, ManifestError, Sha256Hash, validate_file_name,
};
use crate::{CHUNK_SIZE, MAX_CHUNKS_PER_FILE};

/// Files per page of a folder's file list (the last page may be shorter).
pub const FOLDER_PAGE_FILES: usize = 1024;
/// A file of at most this many chunks travels with its chunk hashes inside the folder's
/// pages; a bigger one by its id only (its manifest comes from `GetManifest`).
pub const INLINE_CHUNKS: usize = 16;
/// Most files one folder may hold.
pub const MAX_FOLDER_FILES: u64 = 1 << 20;
/// Longest path of a file inside a folder, in bytes (parts joined by `/`).
pub const MAX_FOLDER_PATH_LEN: usize = 1024;

/// Domain tag that starts a page's canonical bytes.
const PAGE_TAG: &[u8; 16] = b"p2p-folder-page\0";
/// Domain tag that starts a head's canonical bytes.
const HEAD_TAG: &[u8; 16] = b"p2p-folder-v1\0\0\0";
/// Largest file that travels with its chunk hashes: [`INLINE_CHUNKS`] whole chunks.
const INLINE_MAX_SIZE: u64 = INLINE_CHUNKS as u64 * CHUNK_SIZE as u64;
/// Largest file a manifest may describe.
const MAX_FILE_SIZE: u64 = MAX_CHUNKS_PER_FILE as u64 * CHUNK_SIZE as u64;
/// How much of a path an error message quotes.
const QUOTED_PATH_LEN: usize = 120;

/// What identifies a folder and lets anyone check its file list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderHead {
    /// The folder's own name (one safe file name).
    pub name: String,
    /// How many files it holds.
    pub files: u64,
    /// Their total size in bytes.
    pub size: u64,
    /// The hash of each page of its file list, in order.
    pub pages: Vec<Sha256Hash>,
}

impl FolderHead {
    /// The bytes whose SHA-256 is the folder id (see the [module docs](self)).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + 2 + self.name.len() + 8 + 8 + 4 + 32 * self.pages.len());
        out.extend_from_slice(HEAD_TAG);
        // validate() caps names at MAX_FILE_NAME_LEN, far below u16::MAX; a longer one is
        // refused before its id matters, and the length still can't collide (it is cut).
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.files.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&(self.pages.len() as u32).to_be_bytes());
        for page in &self.pages {
            out.extend_from_slice(&page.0);
        }
        out
    }

    /// The folder's id: the SHA-256 of the head's canonical bytes.
    pub fn id(&self) -> FolderId {
        FolderId(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Checks the head against the protocol's limits: a safe name, at most
    /// [`MAX_FOLDER_FILES`] files, one page hash per [`FOLDER_PAGE_FILES`] files (rounded up).
    pub fn validate(&self) -> Result<(), FolderError> {
        validate_file_name(&self.name).map_err(FolderError::Name)?;
        if self.files > MAX_FOLDER_FILES {
            return Err(FolderError::TooManyFiles(self.files));
        }
        let expected = page_count(self.files);
        if self.pages.len() as u64 != expected {
            return Err(FolderError::PageCount {
                files: self.files,
                expected,
                got: self.pages.len() as u64,
            });
        }
        Ok(())
    }

    /// How many files page `page` holds (0 past the end).
    pub fn page_len(&self, page: u32) -> usize {
        page_len(self.files, page)
    }
}

/// How many files page `page` of a list of `files` files holds (0 past the end).
pub fn page_len(files: u64, page: u32) -> usize {
    let start = u64::from(page) * FOLDER_PAGE_FILES as u64;
    files.saturating_sub(start).min(FOLDER_PAGE_FILES as u64) as usize
}

/// Pages a list of `files` files takes.
pub fn page_count(files: u64) -> u64 {
    files.div_ceil(FOLDER_PAGE_FILES as u64)
}

/// One file of a folder as a page of `FolderPages` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderItem {
    /// Its path under the folder's root: safe names joined by `/`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its id, for a file of more than [`INLINE_CHUNKS`] chunks (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<FileId>,
    /// Its chunk hashes, for a file of at most [`INLINE_CHUNKS`] chunks (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Sha256Hash>>,
}

impl FolderItem {
    /// The item for a file at `path` with `manifest`: its chunk hashes when it has at most
    /// [`INLINE_CHUNKS`] chunks, else its id.
    pub fn new(path: String, manifest: &FileManifest) -> Self {
        let inline = manifest.chunks.len() <= INLINE_CHUNKS;
        Self {
            path,
            size: manifest.size,
            file_id: (!inline).then(|| manifest.id()),
            chunks: inline.then(|| manifest.chunks.clone()),
        }
    }

    /// The manifest an item with chunk hashes stands for (named by the path's last part),
    /// not yet validated; `None` for an item by id.
    pub fn manifest(&self) -> Option<FileManifest> {
        let chunks = self.chunks.as_ref()?;
        Some(FileManifest {
            name: last_part(&self.path).to_owned(),
            size: self.size,
            chunk_size: CHUNK_SIZE,
            chunks: chunks.clone(),
        })
    }

    /// What the index gets for this item, and what its page hash covers. Checks the path's
    /// form ([`check_path`]) and that the item carries exactly one of `file_id` and `chunks`,
    /// in the form its size asks for, with chunk hashes that fit its size.
    pub fn to_ref(&self) -> Result<FolderRef, FolderError> {
        check_path(&self.path)?;
        self.file_id_checked().map(|file_id| FolderRef {
            path: self.path.clone(),
            file_id,
            size: self.size,
        })
    }

    /// The item's id: given, or the id of the manifest its chunk hashes make.
    fn file_id_checked(&self) -> Result<FileId, FolderError> {
        match (&self.file_id, &self.chunks) {
            (Some(_), Some(_)) => Err(FolderError::BothIdAndChunks(quote(&self.path))),
            (None, None) => Err(FolderError::NeitherIdNorChunks(quote(&self.path))),
            (Some(id), None) => {
                if self.size <= INLINE_MAX_SIZE {
                    return Err(FolderError::InlineExpected {
                        path: quote(&self.path),
                        size: self.size,
                    });
                }
                if self.size > MAX_FILE_SIZE {
                    return Err(FolderError::FileTooLarge {
                        path: quote(&self.path),
                        size: self.size,
                    });
                }
                Ok(*id)
            }
            (None, Some(chunks)) => {
                if chunks.len() > INLINE_CHUNKS || self.size > INLINE_MAX_SIZE {
                    return Err(FolderError::InlineTooLarge {
                        path: quote(&self.path),
                        size: self.size,
                    });
                }
                let manifest = self.manifest().expect("chunks are present");
                manifest
                    .validate()
                    .map_err(|reason| FolderError::Manifest {
                        path: quote(&self.path),
                        reason,
                    })?;
                Ok(manifest.id())
            }
        }
    }
}

/// The index's form of a page: each item's [`FolderItem::to_ref`].
pub fn refs(items: &[FolderItem]) -> Result<Vec<FolderRef>, FolderError> {
    items.iter().map(FolderItem::to_ref).collect()
}

/// One file of a folder as the index gets it (`AddFolderFiles`); a page hash is over these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRef {
    /// Its path under the folder's root.
    pub path: String,
    /// Its id.
    pub file_id: FileId,
    /// Its size in bytes.
    pub size: u64,
}

/// The hash of a page of `refs` (see the [module docs](self)).
pub fn page_hash(refs: &[FolderRef]) -> Sha256Hash {
    let mut hasher = Sha256::new();
    hasher.update(PAGE_TAG);
    hasher.update((refs.len() as u32).to_be_bytes());
    for r in refs {
        // check_path caps paths at MAX_FOLDER_PATH_LEN, far below u16::MAX.
        hasher.update((r.path.len() as u16).to_be_bytes());
        hasher.update(r.path.as_bytes());
        hasher.update(r.file_id.0);
        hasher.update(r.size.to_be_bytes());
    }
    Sha256Hash(hasher.finalize().into())
}

/// The canonical bytes of a page of `refs`, whose SHA-256 is [`page_hash`] (for docs and
/// tests; [`page_hash`] streams them).
pub fn page_bytes(refs: &[FolderRef]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(PAGE_TAG);
    out.extend_from_slice(&(refs.len() as u32).to_be_bytes());
    for r in refs {
        out.extend_from_slice(&(r.path.len() as u16).to_be_bytes());
        out.extend_from_slice(r.path.as_bytes());
        out.extend_from_slice(&r.file_id.0);
        out.extend_from_slice(&r.size.to_be_bytes());
    }
    out
}

/// A file of a folder that passed [`PageChecker::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedItem {
    /// Its path under the folder's root.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Its id.
    pub file_id: FileId,
    /// Its manifest, when the page carried its chunk hashes.
    pub manifest: Option<FileManifest>,
}

/// Why a folder head, page or file list is refused. Paths are quoted from the record (cut to
/// a short length) and shown through [`printable`], so every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// The folder's own name is not a safe file name.
    #[error("folder name refused: {0}")]
    Name(FileNameError),
    /// More files than [`MAX_FOLDER_FILES`].
    #[error("a folder of {0} files is more than the protocol allows ({MAX_FOLDER_FILES})")]
    TooManyFiles(u64),
    /// The head lists another number of page hashes than its file count needs.
    #[error("a folder of {files} files has {expected} pages, but its head lists {got}")]
    PageCount {
        /// Files in the head.
        files: u64,
        /// Pages they need.
        expected: u64,
        /// Page hashes listed.
        got: u64,
    },
    /// The files' sizes add up past `u64`.
    #[error("the folder's files add up to more bytes than can be counted")]
    SizeOverflow,
    /// The head does not hash to the id it was fetched for.
    #[error("folder record does not match folder id {0}")]
    IdMismatch(FolderId),
    /// A page came out of order.
    #[error("folder page {got} came where page {expected} was due")]
    PageOrder {
        /// The page due.
        expected: u32,
        /// The page that came.
        got: u32,
    },
    /// A page past the folder's last one.
    #[error("folder page {page} is past the folder's {pages} pages")]
    PageBeyondEnd {
        /// The page that came.
        page: u32,
        /// Pages the folder has.
        pages: u64,
    },
    /// A page holds another number of files than its place in the folder asks for.
    #[error("folder page {page} should hold {expected} files but holds {got}")]
    PageLength {
        /// The page.
        page: u32,
        /// Files it should hold.
        expected: usize,
        /// Files it holds.
        got: usize,
    },
    /// A page does not hash to the folder head's hash for it.
    #[error("folder page {0} does not match the folder's record")]
    PageHash(u32),
    /// A path longer than [`MAX_FOLDER_PATH_LEN`] bytes.
    #[error("path {} is {len} bytes, longer than {MAX_FOLDER_PATH_LEN}", printable(.path))]
    PathTooLong {
        /// The start of the path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// A path starting with `/`.
    #[error("path {} is absolute", printable(.0))]
    Absolute(String),
    /// A path with an empty part (`a//b`, a trailing `/`, or empty).
    #[error("path {} has an empty part", printable(.0))]
    EmptyPart(String),
    /// A part that is not a safe file name (`..`, a control character, a device name, ...).
    #[error("path {} refused: {reason}", printable(.path))]
    BadPart {
        /// The path.
        path: String,
        /// What is wrong with the part.
        reason: FileNameError,
    },
    /// The path's last part is not the file's name.
    #[error("path {} does not end in the file's name {}", printable(.path), printable(.name))]
    NameMismatch {
        /// The path.
        path: String,
        /// The file's name.
        name: String,
    },
    /// A path that does not come after the one before it.
    #[error("path {} comes after {}: the list is not sorted", printable(.path), printable(.previous))]
    Unsorted {
        /// The path.
        path: String,
        /// The one before it.
        previous: String,
    },
    /// The same path twice.
    #[error("path {} appears twice", printable(.0))]
    Duplicate(String),
    /// A file whose path is also the folder of another file.
    #[error("{} is a file and also the folder of {}", printable(.file), printable(.path))]
    PrefixConflict {
        /// The file.
        file: String,
        /// The path below it.
        path: String,
    },
    /// An item with both a file id and chunk hashes.
    #[error("{} carries both a file id and chunk hashes", printable(.0))]
    BothIdAndChunks(String),
    /// An item with neither a file id nor chunk hashes.
    #[error("{} carries neither a file id nor chunk hashes", printable(.0))]
    NeitherIdNorChunks(String),
    /// A small file sent by id only: its chunk hashes must come in the page.
    #[error("{} ({size} bytes) must carry its chunk hashes, not only its id", printable(.path))]
    InlineExpected {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A file of more than [`INLINE_CHUNKS`] chunks sent with its chunk hashes.
    #[error("{} ({size} bytes) is too big to carry its chunk hashes in a page", printable(.path))]
    InlineTooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A file bigger than any manifest can describe.
    #[error("{} is {size} bytes, larger than the protocol allows", printable(.path))]
    FileTooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// An item's manifest (or chunk hashes) does not agree with its size.
    #[error("{}: {reason}", printable(.path))]
    Manifest {
        /// The path.
        path: String,
        /// What is wrong.
        reason: ManifestError,
    },
    /// Fewer pages than the head lists.
    #[error("the folder record ended after {got} of its {expected} pages")]
    MissingPages {
        /// Pages in the head.
        expected: u64,
        /// Pages checked.
        got: u64,
    },
    /// The files' sizes do not add up to the head's total.
    #[error("the folder's files add up to {got} bytes, but its record says {expected}")]
    TotalSize {
        /// The head's total.
        expected: u64,
        /// What the files add up to (so far).
        got: u64,
    },
}

/// Builds a folder's head and pages from its files (`path`, manifest), in any order.
pub fn build(
    name: &str,
    files: Vec<(String, FileManifest)>,
) -> Result<(FolderHead, Vec<Vec<FolderItem>>), FolderError> {
    validate_file_name(name).map_err(FolderError::Name)?;
    if files.len() as u64 > MAX_FOLDER_FILES {
        return Err(FolderError::TooManyFiles(files.len() as u64));
    }
    let mut files = files;
    files.sort_by(|a, b| compare_paths(&a.0, &b.0));
    let mut size = 0u64;
    let mut previous: Option<&str> = None;
    for (path, manifest) in &files {
        check_path(path)?;
        manifest
            .validate()
            .map_err(|reason| FolderError::Manifest {
                path: quote(path),
                reason,
            })?;
        if last_part(path) != manifest.name {
            return Err(FolderError::NameMismatch {
                path: quote(path),
                name: quote(&manifest.name),
            });
        }
        if let Some(previous) = previous {
            check_order(previous, path)?;
        }
        previous = Some(path);
        size = size
            .checked_add(manifest.size)
            .ok_or(FolderError::SizeOverflow)?;
    }
    let mut pages = Vec::with_capacity(page_count(files.len() as u64) as usize);
    let mut hashes = Vec::with_capacity(pages.capacity());
    let count = files.len() as u64;
    let mut files = files.into_iter().peekable();
    while files.peek().is_some() {
        let page: Vec<FolderItem> = files
            .by_ref()
            .take(FOLDER_PAGE_FILES)
            .map(|(path, manifest)| FolderItem::new(path, &manifest))
            .collect();
        let refs = refs(&page)?;
        hashes.push(page_hash(&refs));
        pages.push(page);
    }
    let head = FolderHead {
        name: name.to_owned(),
        files: count,
        size,
        pages: hashes,
    };
    Ok((head, pages))
}

/// Orders paths part by part, bytewise: `a/b` < `a/c` < `a b/c` < `a.b`.
pub fn compare_paths(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Checks one path's form: not absolute, no empty part, every part a safe file name, at most
/// [`MAX_FOLDER_PATH_LEN`] bytes.
pub fn check_path(path: &str) -> Result<(), FolderError> {
    if path.len() > MAX_FOLDER_PATH_LEN {
        return Err(FolderError::PathTooLong {
            path: quote(path),
            len: path.len(),
        });
    }
    if path.starts_with('/') {
        return Err(FolderError::Absolute(quote(path)));
    }
    for part in path.split('/') {
        if part.is_empty() {
            return Err(FolderError::EmptyPart(quote(path)));
        }
        validate_file_name(part).map_err(|reason| FolderError::BadPart {
            path: quote(path),
            reason,
        })?;
    }
    Ok(())
}

/// Checks that `path` may follow `previous`: strictly after it, and `previous` is not one of
/// its folders.
fn check_order(previous: &str, path: &str) -> Result<(), FolderError> {
    match compare_paths(previous, path) {
        Ordering::Less => {}
        Ordering::Equal => return Err(FolderError::Duplicate(quote(path))),
        Ordering::Greater => {
            return Err(FolderError::Unsorted {
                path: quote(path),
                previous: quote(previous),
            });
        }
    }
    if path.len() > previous.len()
        && path.starts_with(previous)
        && path.as_bytes()[previous.len()] == b'/'
    {
        return Err(FolderError::PrefixConflict {
            file: quote(previous),
            path: quote(path),
        });
    }
    Ok(())
}

/// What the index checks of a page it is given (`AddFolderFiles`): that `page` is one of a
/// head's (`files` files, `page_hashes`), holds the files it should, hashes to the head's
/// hash for it, and that its paths are safe and in order. The head must have passed
/// [`FolderHead::validate`].
pub fn check_ref_page(
    page_hashes: &[Sha256Hash],
    files: u64,
    page: u32,
    refs: &[FolderRef],
) -> Result<(), FolderError> {
    let Some(expected_hash) = page_hashes.get(page as usize) else {
        return Err(FolderError::PageBeyondEnd {
            page,
            pages: page_hashes.len() as u64,
        });
    };
    let expected = page_len(files, page);
    if refs.len() != expected {
        return Err(FolderError::PageLength {
            page,
            expected,
            got: refs.len(),
        });
    }
    if page_hash(refs) != *expected_hash {
        return Err(FolderError::PageHash(page));
    }
    let mut previous: Option<&str> = None;
    for r in refs {
        check_path(&r.path)?;
        if let Some(previous) = previous {
            check_order(previous, &r.path)?;
        }
        previous = Some(&r.path);
    }
    Ok(())
}

/// Checks a folder's pages as they stream in, against the id the user asked for.
#[derive(Debug)]
pub struct PageChecker {
    head: FolderHead,
    /// The page due next.
    next_page: u32,
    /// The last path checked, to check the order across pages.
    last_path: Option<String>,
    /// Files checked so far.
    files: u64,
    /// Their total size.
    size: u64,
}

impl PageChecker {
    /// Starts checking: the head must hash to `id` and pass [`FolderHead::validate`].
    pub fn new(id: &FolderId, head: &FolderHead) -> Result<Self, FolderError> {
        if head.id() != *id {
            return Err(FolderError::IdMismatch(*id));
        }
        head.validate()?;
        Ok(Self {
            head: head.clone(),
            next_page: 0,
            last_path: None,
            files: 0,
            size: 0,
        })
    }

    /// The head being checked against.
    pub fn head(&self) -> &FolderHead {
        &self.head
    }

    /// The page due next (equal to the page count when all came).
    pub fn next_page(&self) -> u32 {
        self.next_page
    }

    /// Checks page `page_no`; pages must come in order. In this order: the page is the one
    /// due and holds the files it should; every item's path has a safe form and the item one
    /// form (chunk hashes or id) that fits its size; the page hashes to the head's hash for
    /// it; then the order of the paths and the running total.
    pub fn check(
        &mut self,
        page_no: u32,
        items: &[FolderItem],
    ) -> Result<Vec<CheckedItem>, FolderError> {
        if page_no as usize >= self.head.pages.len() {
            return Err(FolderError::PageBeyondEnd {
                page: page_no,
                pages: self.head.pages.len() as u64,
            });
        }
        if page_no != self.next_page {
            return Err(FolderError::PageOrder {
                expected: self.next_page,
                got: page_no,
            });
        }
        let expected = self.head.page_len(page_no);
        if items.len() != expected {
            return Err(FolderError::PageLength {
                page: page_no,
                expected,
                got: items.len(),
            });
        }
        let refs = refs(items)?;
        if page_hash(&refs) != self.head.pages[page_no as usize] {
            return Err(FolderError::PageHash(page_no));
        }
        let mut size = self.size;
        let mut checked = Vec::with_capacity(items.len());
        let mut previous = self.last_path.as_deref();
        for (item, r) in items.iter().zip(refs) {
            if let Some(previous) = previous {
                check_order(previous, &item.path)?;
            }
            previous = Some(&item.path);
            size = size
                .checked_add(item.size)
                .ok_or(FolderError::SizeOverflow)?;
            if size > self.head.size {
                return Err(FolderError::TotalSize {
                    expected: self.head.size,
                    got: size,
                });
            }
            checked.push(CheckedItem {
                path: r.path,
                size: r.size,
                file_id: r.file_id,
                manifest: item.manifest(),
            });
        }
        self.last_path = checked.last().map(|c| c.path.clone());
        self.size = size;
        self.files += checked.len() as u64;
        self.next_page += 1;
        Ok(checked)
    }

    /// Ends the check: every page seen, counts and sizes add up.
    pub fn finish(self) -> Result<(), FolderError> {
        let pages = self.head.pages.len() as u64;
        if u64::from(self.next_page) != pages {
            return Err(FolderError::MissingPages {
                expected: pages,
                got: u64::from(self.next_page),
            });
        }
        // Every page held the files its place asks for, so the count adds up; the size is
        // the head's own claim.
        debug_assert_eq!(self.files, self.head.files);
        if self.size != self.head.size {
            return Err(FolderError::TotalSize {
                expected: self.head.size,
                got: self.size,
            });
        }
        Ok(())
    }
}

/// The last part of a path (the whole path if it has no `/`).
fn last_part(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The start of a path for an error message.
fn quote(path: &str) -> String {
    match path.char_indices().nth(QUOTED_PATH_LEN) {
        Some((cut, _)) => format!("{}...", &path[..cut]),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, content: &[u8]) -> FileManifest {
        FileManifest {
            name: name.into(),
            size: content.len() as u64,
            chunk_size: CHUNK_SIZE,
            chunks: if content.is_empty() {
                vec![]
            } else {
                vec![Sha256Hash::of(content)]
            },
        }
    }

    fn file(path: &str) -> (String, FileManifest) {
        let name = last_part(path);
        (path.to_owned(), manifest(name, path.as_bytes()))
    }

    /// A head and pages for `items` exactly as given: hashed right, no rule checked, as a
    /// lying host would make them.
    fn forge(items: Vec<FolderItem>) -> (FolderHead, Vec<Vec<FolderItem>>) {
        let pages: Vec<Vec<FolderItem>> =
            items.chunks(FOLDER_PAGE_FILES).map(<[_]>::to_vec).collect();
        let head = FolderHead {
            name: "photos".into(),
            files: items.len() as u64,
            size: items.iter().map(|i| i.size).sum(),
            pages: pages
                .iter()
                .map(|p| {
                    let refs: Vec<FolderRef> = p
                        .iter()
                        .map(|i| FolderRef {
                            path: i.path.clone(),
                            file_id: i.file_id.unwrap_or_else(|| i.manifest().unwrap().id()),
                            size: i.size,
                        })
                        .collect();
                    page_hash(&refs)
                })
                .collect(),
        };
        (head, pages)
    }

    fn item(path: &str) -> FolderItem {
        let (path, m) = file(path);
        FolderItem::new(path, &m)
    }

    /// Checks every page of a forged folder of `items`; the first error.
    fn check_forged(items: Vec<FolderItem>) -> Result<(), FolderError> {
        let (head, pages) = forge(items);
        let mut checker = PageChecker::new(&head.id(), &head)?;
        for (k, page) in pages.iter().enumerate() {
            checker.check(k as u32, page)?;
        }
        checker.finish()
    }

    /// The worked example of PROTOCOL.md §13 (checked there too by protocol_doc.rs): the
    /// `hello.txt` of §6.5 and the empty file `empty` of §6.5, in folder `photos`.
    #[test]
    fn the_two_file_example_has_the_documented_id() {
        let hello = manifest("hello.txt", b"hello\n");
        let empty = manifest("empty", b"");
        let (head, pages) = build(
            "photos",
            vec![
                ("sub/empty".into(), empty.clone()),
                ("hello.txt".into(), hello.clone()),
            ],
        )
        .unwrap();
        assert_eq!((head.files, head.size, pages.len()), (2, 6, 1));
        let paths: Vec<&str> = pages[0].iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["hello.txt", "sub/empty"]);
        let refs = refs(&pages[0]).unwrap();
        assert_eq!(
            Sha256Hash(Sha256::digest(page_bytes(&refs)).into()),
            head.pages[0]
        );
        assert_eq!(
            head.pages[0].to_string(),
            "6c6ca1ecd103bfee2a9e1dfeb9e95ebc597eb1d5fdf49ce2f77959e89000751d"
        );
        assert_eq!(
            head.id().to_string(),
            "0e585092c45db873af581beb12ef25038061cce0f6a249aeab4f82ac86f2b2d6"
        );
        let mut checker = PageChecker::new(&head.id(), &head).unwrap();
        let checked = checker.check(0, &pages[0]).unwrap();
        assert_eq!(checked[0].manifest, Some(hello));
        assert_eq!(checked[1].file_id, empty.id());
        checker.finish().unwrap();
    }

    #[test]
    fn pages_turn_at_1024_files() {
        for (n, lens) in [
            (0usize, vec![]),
            (1, vec![1]),
            (1024, vec![1024]),
            (1025, vec![1024, 1]),
            (2049, vec![1024, 1024, 1]),
        ] {
            let files = (0..n).map(|i| file(&format!("d/f{i:05}"))).collect();
            let (head, pages) = build("photos", files).unwrap();
            let got: Vec<usize> = pages.iter().map(Vec::len).collect();
            assert_eq!(got, lens, "{n} files");
            assert_eq!(head.pages.len(), lens.len());
            for (k, len) in lens.iter().enumerate() {
                assert_eq!(head.page_len(k as u32), *len);
            }
            let mut checker = PageChecker::new(&head.id(), &head).unwrap();
            for (k, page) in pages.iter().enumerate() {
                assert_eq!(checker.check(k as u32, page).unwrap().len(), page.len());
            }
            checker.finish().unwrap();
        }
    }

    #[test]
    fn a_head_must_list_one_hash_per_page() {
        let (mut head, _) = build(
            "photos",
            (0..1025).map(|i| file(&format!("f{i}"))).collect(),
        )
        .unwrap();
        head.pages.pop();
        assert_eq!(
            head.validate(),
            Err(FolderError::PageCount {
                files: 1025,
                expected: 2,
                got: 1
            })
        );
        assert!(matches!(
            PageChecker::new(&head.id(), &head),
            Err(FolderError::PageCount { .. })
        ));
        let huge = FolderHead {
            name: "photos".into(),
            files: MAX_FOLDER_FILES + 1,
            size: 0,
            pages: vec![],
        };
        assert_eq!(
            huge.validate(),
            Err(FolderError::TooManyFiles(MAX_FOLDER_FILES + 1))
        );
        let bad_name = FolderHead {
            name: "..".into(),
            files: 0,
            size: 0,
            pages: vec![],
        };
        assert!(matches!(bad_name.validate(), Err(FolderError::Name(_))));
    }

    #[test]
    fn the_id_covers_name_totals_and_pages() {
        let (head, _) = build("photos", vec![file("a"), file("b")]).unwrap();
        let id = head.id();
        let mut other = head.clone();
        other.name = "photos2".into();
        assert_ne!(other.id(), id);
        let mut other = head.clone();
        other.size += 1;
        assert_ne!(other.id(), id);
        let mut other = head.clone();
        other.files += 1;
        assert_ne!(other.id(), id);
        let mut other = head.clone();
        other.pages[0].0[0] ^= 1;
        assert_ne!(other.id(), id);
        assert_eq!(
            PageChecker::new(&id, &other).unwrap_err(),
            FolderError::IdMismatch(id)
        );
    }

    #[test]
    fn build_sorts_part_by_part_and_inlines_small_files() {
        let big = FileManifest {
            name: "big.bin".into(),
            size: INLINE_MAX_SIZE + 1,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([7; 32]); INLINE_CHUNKS + 1],
        };
        let edge = FileManifest {
            name: "edge.bin".into(),
            size: INLINE_MAX_SIZE,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([8; 32]); INLINE_CHUNKS],
        };
        let (head, pages) = build(
            "photos",
            vec![
                file("a.b"),
                file("a b/c"),
                file("a/c"),
                file("a/b"),
                ("z/big.bin".into(), big.clone()),
                ("z/edge.bin".into(), edge.clone()),
            ],
        )
        .unwrap();
        let paths: Vec<&str> = pages[0].iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["a/b", "a/c", "a b/c", "a.b", "z/big.bin", "z/edge.bin"]
        );
        assert_eq!(pages[0][4].file_id, Some(big.id()));
        assert_eq!(pages[0][4].chunks, None);
        assert_eq!(pages[0][5].file_id, None);
        assert_eq!(pages[0][5].chunks, Some(edge.chunks.clone()));
        let mut checker = PageChecker::new(&head.id(), &head).unwrap();
        let checked = checker.check(0, &pages[0]).unwrap();
        assert_eq!(checked[4].manifest, None);
        assert_eq!(checked[4].file_id, big.id());
        assert_eq!(checked[5].manifest, Some(edge));
        checker.finish().unwrap();
    }

    #[test]
    fn build_refuses_what_a_checker_would() {
        assert!(matches!(
            build("a/b", vec![]),
            Err(FolderError::Name(FileNameError::BadCharacter(_)))
        ));
        assert!(matches!(
            build("photos", vec![("a/x.txt".into(), manifest("y.txt", b"1"))]),
            Err(FolderError::NameMismatch { .. })
        ));
        assert!(matches!(
            build("photos", vec![file("a"), file("a")]),
            Err(FolderError::Duplicate(_))
        ));
        assert!(matches!(
            build("photos", vec![file("a/b"), file("a")]),
            Err(FolderError::PrefixConflict { .. })
        ));
        assert!(matches!(
            build("photos", vec![file("../x")]),
            Err(FolderError::BadPart { .. })
        ));
        let mut broken = manifest("x", b"1");
        broken.chunks.clear();
        assert!(matches!(
            build("photos", vec![("x".into(), broken)]),
            Err(FolderError::Manifest { .. })
        ));
        // An empty folder is a folder.
        let (head, pages) = build("photos", vec![]).unwrap();
        assert_eq!((head.files, head.pages.len(), pages.len()), (0, 0, 0));
        PageChecker::new(&head.id(), &head)
            .unwrap()
            .finish()
            .unwrap();
    }

    #[test]
    fn every_path_rule_has_its_own_error() {
        type Is = fn(&FolderError) -> bool;
        let cases: Vec<(Vec<FolderItem>, Is)> = vec![
            (vec![item("b"), item("a")], |e| {
                matches!(e, FolderError::Unsorted { .. })
            }),
            (vec![item("a"), item("a")], |e| {
                matches!(e, FolderError::Duplicate(_))
            }),
            (vec![item("a"), item("a/b")], |e| {
                matches!(e, FolderError::PrefixConflict { .. })
            }),
            (vec![item("a/../b")], |e| {
                matches!(
                    e,
                    FolderError::BadPart {
                        reason: FileNameError::DotName(_),
                        ..
                    }
                )
            }),
            (vec![item("/etc/passwd")], |e| {
                matches!(e, FolderError::Absolute(_))
            }),
            (vec![item("a//b")], |e| {
                matches!(e, FolderError::EmptyPart(_))
            }),
            (vec![item("a/")], |e| matches!(e, FolderError::EmptyPart(_))),
            (vec![item("a\0b")], |e| {
                matches!(
                    e,
                    FolderError::BadPart {
                        reason: FileNameError::BadCharacter(_),
                        ..
                    }
                )
            }),
        ];
        for (items, is) in cases {
            let err = check_forged(items.clone()).unwrap_err();
            assert!(is(&err), "{items:?}: {err:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let long = format!("{}x", "d/".repeat(MAX_FOLDER_PATH_LEN / 2));
        assert!(matches!(
            check_forged(vec![item(&long)]),
            Err(FolderError::PathTooLong { len, .. }) if len == MAX_FOLDER_PATH_LEN + 1
        ));
        let fits = format!("{}x", "d/".repeat(MAX_FOLDER_PATH_LEN / 2 - 1));
        check_forged(vec![item(&fits)]).unwrap();
        // `a` then `ab/c` share a prefix of bytes but not a folder.
        check_forged(vec![item("a"), item("ab/c")]).unwrap();
        // A path shown in an error can't steer a terminal.
        let err = check_forged(vec![item("x\u{1b}[2J")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(r"\u{1b}"), "{err}");
    }

    #[test]
    fn order_is_checked_across_pages() {
        let mut items: Vec<FolderItem> = (0..FOLDER_PAGE_FILES + 1)
            .map(|i| item(&format!("f{i:05}")))
            .collect();
        // The second page's only file sorts before the first page's last one.
        items[FOLDER_PAGE_FILES] = item("a");
        assert!(matches!(
            check_forged(items),
            Err(FolderError::Unsorted { .. })
        ));
    }

    #[test]
    fn every_item_carries_one_form_that_fits_its_size() {
        let small = item("a");
        let id = small.to_ref().unwrap().file_id;
        let mut both = small.clone();
        both.file_id = Some(id);
        assert!(matches!(
            check_forged(vec![both]),
            Err(FolderError::BothIdAndChunks(_))
        ));
        let mut neither = small.clone();
        neither.chunks = None;
        let (head, pages) = forge(vec![small.clone()]);
        let mut checker = PageChecker::new(&head.id(), &head).unwrap();
        assert!(matches!(
            checker.check(0, &[neither]),
            Err(FolderError::NeitherIdNorChunks(_))
        ));
        assert!(
            checker.check(0, &pages[0]).is_ok(),
            "a failed check changes nothing"
        );
        let by_id = FolderItem {
            path: "a".into(),
            size: 1,
            file_id: Some(id),
            chunks: None,
        };
        assert!(matches!(
            check_forged(vec![by_id]),
            Err(FolderError::InlineExpected { .. })
        ));
        let too_many = FolderItem {
            path: "a".into(),
            size: INLINE_MAX_SIZE + 1,
            file_id: None,
            chunks: Some(vec![Sha256Hash([1; 32]); INLINE_CHUNKS + 1]),
        };
        assert!(matches!(
            check_forged(vec![too_many]),
            Err(FolderError::InlineTooLarge { .. })
        ));
        let huge = FolderItem {
            path: "a".into(),
            size: MAX_FILE_SIZE + 1,
            file_id: Some(id),
            chunks: None,
        };
        assert!(matches!(
            check_forged(vec![huge]),
            Err(FolderError::FileTooLarge { .. })
        ));
        let wrong_count = FolderItem {
            path: "a".into(),
            size: 10,
            file_id: None,
            chunks: Some(vec![]),
        };
        assert!(matches!(
            check_forged(vec![wrong_count]),
            Err(FolderError::Manifest {
                reason: ManifestError::ChunkCount { .. },
                ..
            })
        ));
    }

    #[test]
    fn pages_must_match_the_head_and_come_in_order() {
        let files = (0..FOLDER_PAGE_FILES + 2)
            .map(|i| file(&format!("f{i:05}")))
            .collect();
        let (head, pages) = build("photos", files).unwrap();
        let id = head.id();
        let mut checker = PageChecker::new(&id, &head).unwrap();
        assert_eq!(
            checker.check(1, &pages[1]).unwrap_err(),
            FolderError::PageOrder {
                expected: 0,
                got: 1
            }
        );
        assert_eq!(
            checker.check(2, &pages[1]).unwrap_err(),
            FolderError::PageBeyondEnd { page: 2, pages: 2 }
        );
        assert!(matches!(
            checker.check(0, &pages[0][1..]),
            Err(FolderError::PageLength {
                page: 0,
                expected: 1024,
                got: 1023
            })
        ));
        let mut tampered = pages[0].clone();
        tampered[3].size += 1;
        tampered[3].chunks = Some(vec![Sha256Hash([0; 32])]);
        assert_eq!(
            checker.check(0, &tampered).unwrap_err(),
            FolderError::PageHash(0)
        );
        let mut renamed = pages[0].clone();
        renamed[3].path = "f00003x".into();
        assert_eq!(
            checker.check(0, &renamed).unwrap_err(),
            FolderError::PageHash(0)
        );
        checker.check(0, &pages[0]).unwrap();
        // The record stopping early is not a whole folder.
        assert_eq!(
            checker.finish().unwrap_err(),
            FolderError::MissingPages {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn the_sizes_must_add_up_to_the_heads_total() {
        let (mut head, pages) = forge(vec![item("a"), item("b")]);
        head.size += 1;
        let mut checker = PageChecker::new(&head.id(), &head).unwrap();
        checker.check(0, &pages[0]).unwrap();
        assert_eq!(
            checker.finish().unwrap_err(),
            FolderError::TotalSize {
                expected: head.size,
                got: head.size - 1
            }
        );
        head.size -= 2;
        let mut checker = PageChecker::new(&head.id(), &head).unwrap();
        assert!(matches!(
            checker.check(0, &pages[0]),
            Err(FolderError::TotalSize { .. })
        ));
    }

    #[test]
    fn the_index_checks_a_page_of_refs() {
        let files = (0..FOLDER_PAGE_FILES + 1)
            .map(|i| file(&format!("f{i:05}")))
            .collect();
        let (head, pages) = build("photos", files).unwrap();
        let page1 = refs(&pages[1]).unwrap();
        check_ref_page(&head.pages, head.files, 1, &page1).unwrap();
        assert_eq!(
            check_ref_page(&head.pages, head.files, 0, &page1).unwrap_err(),
            FolderError::PageLength {
                page: 0,
                expected: 1024,
                got: 1
            }
        );
        assert!(matches!(
            check_ref_page(&head.pages, head.files, 2, &page1),
            Err(FolderError::PageBeyondEnd { .. })
        ));
        let mut wrong = page1.clone();
        wrong[0].file_id = FileId([9; 32]);
        assert_eq!(
            check_ref_page(&head.pages, head.files, 1, &wrong).unwrap_err(),
            FolderError::PageHash(1)
        );
        // A page hashed right but with an unsafe path is refused too.
        let evil = vec![FolderRef {
            path: "../x".into(),
            file_id: FileId([1; 32]),
            size: 0,
        }];
        let head = FolderHead {
            name: "photos".into(),
            files: 1,
            size: 0,
            pages: vec![page_hash(&evil)],
        };
        assert!(matches!(
            check_ref_page(&head.pages, head.files, 0, &evil),
            Err(FolderError::BadPart { .. })
        ));
    }

    #[test]
    fn an_item_by_id_leaves_chunks_out_of_the_frame() {
        let item = FolderItem {
            path: "a".into(),
            size: 1,
            file_id: None,
            chunks: Some(vec![]),
        };
        let bytes = rmp_serde::to_vec_named(&item).unwrap();
        assert!(!bytes.windows(7).any(|w| w == b"file_id"));
        let back: FolderItem = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, item);
    }
}
