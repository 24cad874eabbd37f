//! What a 100,000-file folder really costs the index, against what its accounting charges:
//! the heap the index grows by (the process's resident memory, read from `/proc/self/status`
//! before and after) must stay within what `stored_bytes` counts, or the byte budgets would
//! not bound its memory. Its own test binary, so nothing else allocates meanwhile.
//!
//! `cargo test -p p2p-central-server --test folder_cost -- --nocapture` prints the figures
//! quoted in `folders.rs`, docs/PROTOCOL.md §13.5 and the README.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use p2p_central_server::Index;
use p2p_central_server::folders::check_pages;
use p2p_central_server::index::IndexLimits;
use p2p_protocol::folder::{self, FOLDER_PAGE_FILES};
use p2p_protocol::{FileId, FolderHead, FolderRef, NodeId};

const FILES: usize = 100_000;
const MIB: f64 = 1024.0 * 1024.0;

/// Page `k` of the folder: paths like `2019/0042/IMG_004217.jpg` (23 bytes), 100 files to a
/// folder below the root, as a photo library has them.
fn page(k: usize) -> Vec<FolderRef> {
    let first = k * FOLDER_PAGE_FILES;
    (first..(first + FOLDER_PAGE_FILES).min(FILES))
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            // Spread like hashes: the global id set is filled in random order.
            let id = p2p_protocol::Sha256Hash::of(&id).0;
            FolderRef {
                path: format!("{}/{:04}/IMG_{i:06}.jpg", 2000 + i / 10_000, i / 100),
                file_id: FileId(id),
                size: 1_000_000 + i as u64,
            }
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100k_file_folder_costs_what_the_index_charges() {
    let pages = FILES.div_ceil(FOLDER_PAGE_FILES);
    let head = FolderHead {
        name: "photos".into(),
        files: FILES as u64,
        size: (0..FILES as u64).map(|i| 1_000_000 + i).sum(),
        pages: (0..pages).map(|k| folder::page_hash(&page(k))).collect(),
    };
    let path_bytes: usize = (0..pages)
        .map(|k| page(k).iter().map(|r| r.path.len()).sum::<usize>())
        .sum();
    let mut index = Index::new(IndexLimits {
        max_bytes_per_peer: 1 << 30,
        max_bytes_per_ip: 1 << 30,
        max_bytes: 1 << 30,
        ..IndexLimits::default()
    });
    let now = Instant::now();
    let node = NodeId([1; 20]);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let peer = index
        .register(SocketAddr::new(loopback, 1), loopback, node, now)
        .unwrap();
    let id = index.add_folder(peer, node, head, now).unwrap();
    // Warm the allocator with one page's worth of garbage, so the first page's temporaries
    // are not counted as growth.
    drop(std::hint::black_box(page(0)));
    let before_bytes = index.stored_bytes();
    let before = rss_kib();
    for k in 0..pages {
        let stored = index.folder_for_pages(peer, node, &id, now).unwrap();
        let checked = check_pages(id, &stored, k as u32, vec![page(k)]).unwrap();
        index.add_folder_files(peer, node, checked, now).unwrap();
    }
    // Signed: the resident size may shrink while pages come in (memory handed back).
    let grown = (rss_kib() as f64 - before as f64) * 1024.0;
    let charged = (index.stored_bytes() - before_bytes) as f64;
    let per_file = |bytes: f64| (bytes - path_bytes as f64) / FILES as f64;
    println!(
        "100,000-file folder: charged {:.2} MiB ({:.0} B/file besides {:.1} B of path), \
         resident memory grew {:.2} MiB ({:.0} B/file besides the path); whole folder with \
         its head: {:.2} MiB",
        charged / MIB,
        per_file(charged),
        path_bytes as f64 / FILES as f64,
        grown / MIB,
        per_file(grown),
        index.stored_bytes() as f64 / MIB,
    );
    assert_eq!(index.folder_file_count(), FILES);
    // The accounting bounds the memory (within a page of the allocator's slack)...
    assert!(
        grown <= charged + 256.0 * 1024.0,
        "grew {grown}, charged {charged}"
    );
    // ...without charging much more than it uses.
    assert!(charged <= 1.5 * grown, "grew {grown}, charged {charged}");
}
