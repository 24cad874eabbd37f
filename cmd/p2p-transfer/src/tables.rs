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

/// Prints lines merged from several indexes as a table of id, size, host count, file count,
/// the indexes that list it (`index` names them) and name, columns as wide as their content;
/// or `none` if there are none.
pub fn print_merged(
    lines: &[crate::run::search::Merged],
    index: impl Fn(usize) -> String,
    none: &str,
) {
    if lines.is_empty() {
        println!("{none}");
        return;
    }
    let rows: Vec<[String; 6]> = lines
        .iter()
        .map(|m| {
            let f = &m.summary;
            [
                f.file_id.to_string(),
                HumanBytes(f.size).to_string(),
                f.hosts.to_string(),
                f.files.map_or_else(String::new, |n| n.to_string()),
                m.indexes
                    .iter()
                    .map(|&i| index(i))
                    .collect::<Vec<_>>()
                    .join(","),
                printable(&shown_name(f)).to_string(),
            ]
        })
        .collect();
    let header = ["ID", "SIZE", "HOSTS", "FILES", "INDEXES", "NAME"];
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .chain([header[col].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3, w4) = (width(0), width(1), width(2), width(3), width(4));
    let line = |r: [&str; 6]| {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
}
