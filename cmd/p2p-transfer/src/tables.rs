//! The tables of files that `search`, the peer shell's `search` and the server shell's
//! `list files` print, and the "... and N more" line under a cut list.

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
/// count and name, or `none` if there are none. Each column is as wide as its widest cell
/// (its header included), so full 64-character ids line up under their header. A folder's
/// line gives its file count and its name with a `/`; a file inside a folder shows its path
/// in it (the folder's name first). Names come from the index: they are shown escaped.
pub fn print_files(files: &[FileSummary], total: u64, ids: Ids, none: &str) {
    if files.is_empty() {
        println!("{none}");
        return;
    }
    for line in file_table(files, ids) {
        println!("{line}");
    }
    more(files.len(), total);
}

/// The lines of [`print_files`]'s table: the header, then a row per file.
pub fn file_table(files: &[FileSummary], ids: Ids) -> Vec<String> {
    let header = ["ID", "SIZE", "HOSTS", "FILES"];
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            [
                match ids {
                    Ids::Full => f.file_id.to_string(),
                    Ids::Short => f.file_id.fmt_short(),
                },
                crate::units::size(f.size),
                f.hosts.to_string(),
                f.files.map_or_else(String::new, |n| n.to_string()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    fn line(cells: [&str; 4], [id_w, size_w, hosts_w, files_w]: [usize; 4], name: &str) -> String {
        format!(
            "{:<id_w$}  {:>size_w$}  {:>hosts_w$}  {:>files_w$}  {name}",
            cells[0], cells[1], cells[2], cells[3]
        )
    }
    let mut lines = vec![line(header, widths, "NAME")];
    for (f, row) in files.iter().zip(&rows) {
        let cells = [&*row[0], &*row[1], &*row[2], &*row[3]];
        lines.push(line(cells, widths, &printable(&shown_name(f)).to_string()));
    }
    lines
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
    lines: &[p2p_peer::index::merge::MergedFile],
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
                crate::units::size(f.size),
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

#[cfg(test)]
mod tests {
    use p2p_protocol::FileId;

    use super::*;

    fn summary(id: u8, size: u64, name: &str) -> FileSummary {
        FileSummary {
            file_id: FileId([id; 32]),
            name: name.to_owned(),
            size,
            hosts: 12,
            files: None,
            path: None,
        }
    }

    #[test]
    fn columns_fit_their_widest_cell() {
        let files = [summary(0xab, 5, "a.txt"), summary(0x01, 3 << 30, "big.iso")];
        let lines = file_table(&files, Ids::Full);
        let id = "ab".repeat(32);
        assert_eq!(
            lines,
            [
                format!("{:<64}  {:>8}  HOSTS  FILES  NAME", "ID", "SIZE"),
                format!("{id}  {:>8}     12         a.txt", "5 B"),
                format!("{}  3.00 GiB     12         big.iso", "01".repeat(32)),
            ]
        );
        // Every column starts where its header does.
        let at = |line: &str, what: &str| line.find(what).unwrap();
        assert_eq!(at(&lines[0], "NAME"), at(&lines[1], "a.txt"));
        let short = file_table(&files, Ids::Short);
        assert!(short[1].starts_with("abababababab  "), "{}", short[1]);
    }
}
