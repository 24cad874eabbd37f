//! The tables of files that `search`, the peer shell's `search` and the server shell's
//! `list files` print, and the "... and N more" line under a cut list.

use indicatif::HumanBytes;
use p2p_protocol::{FileSummary, printable};

/// How a file table shows ids.
#[derive(Clone, Copy, Debug)]
pub enum Ids {
    /// All 64 hex characters, to copy into a script.
    Full,
    /// The first 12, enough to type back (any unique prefix of 6 or more is accepted).
    Short,
}

/// Prints `files` (the first of `total` matches) as a table of id, size, host count, file
/// count and name, or `none` if there are none. A folder's line gives its file count and its
/// name with a `/`; a file inside a folder shows its path in it (the folder's name first).
/// Names come from the index: they are shown escaped.
pub fn print_files(files: &[FileSummary], total: u64, ids: Ids, none: &str) {
    if files.is_empty() {
        println!("{none}");
        return;
    }
    println!(
        "{:<12}  {:>10}  {:>5}  {:>6}  NAME",
        "ID", "SIZE", "HOSTS", "FILES"
    );
    for f in files {
        let id = match ids {
            Ids::Full => f.file_id.to_string(),
            Ids::Short => f.file_id.fmt_short(),
        };
        println!(
            "{id:<12}  {:>10}  {:>5}  {:>6}  {}",
            HumanBytes(f.size).to_string(),
            f.hosts,
            f.files.map_or_else(String::new, |n| n.to_string()),
            printable(&shown_name(f))
        );
    }
    more(files.len(), total);
}

/// What a line's NAME column shows: `album/` for a folder, `album/2019/a.jpg` for a file in
/// one, the name for a file shared on its own.
pub fn shown_name(f: &FileSummary) -> String {
    match (&f.files, &f.path) {
        (Some(_), _) => format!("{}/", f.name),
        (None, Some(path)) => path.clone(),
        (None, None) => f.name.clone(),
    }
}

/// Notes a list cut to its first `shown` entries.
pub fn more(shown: usize, total: u64) {
    if (shown as u64) < total {
        println!("... and {} more", total - shown as u64);
    }
}
