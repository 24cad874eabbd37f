//! Local state: the output folder (there, writable, free space), the identity folder and its
//! key files (owner, mode, readable), and partial downloads.
//!
//! A download locks its `.part` file (`flock`, through `File::try_lock` in
//! `pkg/storage/src/store.rs`) for as long as it uses it; the kernel lets go of the lock when
//! the process ends, so a lock never outlives its process. What can stand in the way is a
//! process that still lives but doesn't go on: stopped (Ctrl-Z, `kill -STOP`) or stuck in
//! the kernel (a hung network file system). Such a `.part` is named with the process that
//! holds it, found in `/proc/locks` (Linux). A `.part` without the record beside it that marks
//! it as ours, or with a second link, or another owner, is one a download refuses to take
//! over: named too.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use p2p_identity::{Identity, IdentityError};
use p2p_storage::staging::STAGING_PREFIX;

use super::{Check, Status};
use crate::units::size;

/// Free space below which the output folder is a problem: not one chunk's worth more than a
/// few.
pub const MIN_FREE_BYTES: u64 = 64 << 20;

/// Free space below which the output folder is a warning.
pub const LOW_FREE_BYTES: u64 = 1 << 30;

/// Partial files named one by one; beyond that, one line counts the rest.
const MAX_PART_LINES: usize = 16;

/// The suffix of a download's part file, and of its record beside it.
const PART: &str = ".part";
const RECORD: &str = ".part.chunks";

/// Checks the output folder `out`.
pub fn output_folder(out: &Path) -> Check {
    const CHECK: &str = "output_folder";
    let subject = out.display().to_string();
    let problem = |summary: String| Check::new(CHECK, subject.clone(), Status::Problem, summary);
    let meta = match fs::metadata(out) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Downloads create it (and its parents); the nearest folder that exists must let
            // this user do that.
            let parent = out.ancestors().skip(1).find(|p| p.is_dir());
            return match parent {
                Some(parent) if writable(parent) => Check::ok(
                    CHECK,
                    subject.clone(),
                    format!(
                        "does not exist yet; a download creates it in {}",
                        shown(parent)
                    ),
                ),
                Some(parent) => problem(format!(
                    "does not exist, and this user may not create it in {}",
                    shown(parent)
                ))
                .cause(format!("{} is not writable for this user", shown(parent)))
                .fix("choose another folder with --out, or create this one with the right owner"),
                None => {
                    problem("does not exist".to_owned()).fix("choose an existing folder with --out")
                }
            };
        }
        Err(err) => {
            return problem(format!("can't be read: {err}"))
                .cause("this user may not look into a folder above it")
                .fix("check the owner and mode of its folders (ls -ld), or choose another");
        }
    };
    if !meta.is_dir() {
        return problem("is not a folder".to_owned())
            .cause("a file has that name")
            .fix("give --out a folder (it is created if missing)");
    }
    if !writable(out) {
        return problem("this user may not write in it".to_owned())
            .cause(format!(
                "it belongs to uid {} with mode {:o}",
                meta.uid(),
                meta.mode() & 0o7777
            ))
            .fix("choose another folder with --out, or change its owner (chown) or mode");
    }
    let Ok(stat) = rustix::fs::statvfs(out) else {
        return Check::ok(CHECK, subject, "writable (free space unknown)");
    };
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return problem("is on a read-only file system".to_owned())
            .fix("choose a folder elsewhere with --out");
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let summary = format!("writable, {} free", size(free));
    if free < MIN_FREE_BYTES {
        problem(summary)
            .cause("the disk is (nearly) full: downloads fail once it is")
            .fix("free some space, or choose a folder on another disk with --out")
    } else if free < LOW_FREE_BYTES {
        Check::new(CHECK, subject, Status::Warning, summary)
            .cause("little space is left: a large download will not fit")
            .fix("free some space, or choose a folder on another disk with --out")
    } else {
        Check::ok(CHECK, subject, summary)
    }
}

/// Checks the identity folder `dir` and the key files in it.
pub fn identity(dir: &Path) -> Vec<Check> {
    const CHECK: &str = "identity";
    let subject = dir.display().to_string();
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::ok(
                CHECK,
                subject,
                "not created yet: the first `peer`, `send` or `id` creates it (mode 700)",
            )];
        }
        Err(err) => {
            return vec![
                Check::new(
                    CHECK,
                    subject,
                    Status::Problem,
                    format!("can't be read: {err}"),
                )
                .fix("check the owner and mode of its folders (ls -ld)"),
            ];
        }
    };
    let mut checks = Vec::new();
    let mode = meta.mode() & 0o7777;
    let me = rustix::process::geteuid().as_raw();
    checks.push(if !meta.is_dir() {
        Check::new(CHECK, subject.clone(), Status::Problem, "is not a folder")
            .fix("move that file away, or give --identity-dir another folder")
    } else if meta.uid() != me {
        Check::new(
            CHECK,
            subject.clone(),
            Status::Problem,
            format!("belongs to uid {}, not to this user ({me})", meta.uid()),
        )
        .cause("another user's identity: its keys are not this user's to use")
        .fix("run as its owner, or give --identity-dir a folder of your own")
    } else if !writable(dir) {
        Check::new(
            CHECK,
            subject.clone(),
            Status::Problem,
            format!("not writable (mode {mode:o})"),
        )
        .cause("a node can't create its key or remember the index servers it met")
        .fix(format!("chmod 700 {subject}"))
    } else if mode & 0o077 != 0 {
        Check::new(
            CHECK,
            subject.clone(),
            Status::Warning,
            format!("other users may look into it (mode {mode:o})"),
        )
        .cause("it holds this node's private keys")
        .fix(format!("chmod 700 {subject}"))
    } else {
        Check::ok(
            CHECK,
            subject.clone(),
            format!("mode {mode:o}, this user's"),
        )
    });
    for name in ["peer.key", "server.key"] {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        checks.push(key_file(&path));
    }
    checks
}

/// Checks one key file: it must load (this user's, mode 600, a key).
fn key_file(path: &Path) -> Check {
    const CHECK: &str = "key_file";
    let subject = path.display().to_string();
    match Identity::load(path) {
        Ok(identity) => Check::ok(CHECK, subject, format!("node id {}", identity.node_id())),
        Err(err) => {
            let fix = match &err {
                IdentityError::TooOpen { .. } => format!("chmod 600 {subject}"),
                IdentityError::Corrupt { .. } => {
                    "restore it from a backup, or move it away to start with a new identity"
                        .to_owned()
                }
                IdentityError::Io { .. } => {
                    "it must be this user's and readable by it: check with ls -l".to_owned()
                }
            };
            Check::new(CHECK, subject, Status::Problem, err.to_string())
                .cause("a node refuses to start with a key it can't read or others can")
                .fix(fix)
        }
    }
}

/// Checks the part files in `out` and in its staging folders.
pub fn partial_files(out: &Path) -> Vec<Check> {
    let mut parts: Vec<PathBuf> = Vec::new();
    let mut look = |dir: &Path| {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(PART) {
                    parts.push(entry.path());
                }
            }
        }
    };
    look(out);
    if let Ok(entries) = fs::read_dir(out) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                look(&entry.path());
            }
        }
    }
    parts.sort();
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let total = parts.len();
    let mut checks: Vec<Check> = parts
        .iter()
        .take(MAX_PART_LINES)
        .map(|part| partial_file(part, &locks))
        .collect();
    if total > MAX_PART_LINES {
        checks.push(Check::ok(
            "partial_file",
            "",
            format!("{} more partial files not shown", total - MAX_PART_LINES),
        ));
    }
    checks
}

fn partial_file(part: &Path, locks: &str) -> Check {
    const CHECK: &str = "partial_file";
    let subject = part.display().to_string();
    let Ok(meta) = fs::symlink_metadata(part) else {
        return Check::ok(
            CHECK,
            subject,
            "gone while looking (a download finished it)",
        );
    };
    if let Some(pid) = lock_holder(locks, meta.dev(), meta.ino()) {
        let (state, name) = process(pid);
        return match state {
            'T' | 't' => Check::new(
                CHECK,
                subject,
                Status::Problem,
                format!("locked by a stopped process {pid} ({name})"),
            )
            .cause("a download was stopped (Ctrl-Z, kill -STOP) and holds the file: no other download of it can run")
            .fix(format!("let it go on with `kill -CONT {pid}` (or `fg` in its shell), or end it with `kill {pid}`; the next run resumes the file")),
            // A healthy download waits in this state for a moment at each write: one look
            // can't tell, so it is a warning, not a problem.
            'D' => Check::new(
                CHECK,
                subject,
                Status::Warning,
                format!("locked by process {pid} ({name}), waiting in the kernel"),
            )
            .cause("it was waiting for its disk or network file system; if this stays on a second run, that file system does not answer")
            .fix(format!("check that file system; end the process with `kill -9 {pid}` if it stays stuck")),
            _ => Check::ok(
                CHECK,
                subject,
                format!("a download is running into it (process {pid}, {name})"),
            ),
        };
    }
    let me = rustix::process::geteuid().as_raw();
    let beside = !part
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d.to_string_lossy().starts_with(STAGING_PREFIX));
    let refused = |why: &str| {
        Check::new(
            CHECK,
            subject.clone(),
            Status::Problem,
            format!("a download would refuse it: {why}"),
        )
        .fix(format!(
            "move it away (or remove it if it is nothing of yours): mv {subject} {subject}.old"
        ))
    };
    if !meta.is_file() {
        refused("not a plain file")
    } else if meta.uid() != me {
        refused(&format!("it belongs to uid {}, not this user", meta.uid()))
    } else if meta.nlink() != 1 {
        refused("it has another hard link")
    } else if beside && !Path::new(&format!("{subject}{}", &RECORD[PART.len()..])).exists() {
        refused(&format!("no {} beside it marks it as a download's", RECORD))
    } else {
        Check::ok(
            CHECK,
            subject,
            format!(
                "{} of an interrupted download: the same command resumes it",
                size(meta.len())
            ),
        )
    }
}

/// The process holding a `flock` on the file `dev`/`ino`, from `/proc/locks`.
fn lock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let wanted = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; a waiter's line has `->`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        (fields.get(5) == Some(&wanted.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

/// A process's state letter (`R`, `S`, `T`, `D`...) and name, from `/proc`.
fn process(pid: u32) -> (char, String) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?');
    let name = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    (state, name)
}

/// Whether this user may create files in `dir`.
fn writable(dir: &Path) -> bool {
    use rustix::fs::{Access, access};
    access(dir, Access::WRITE_OK | Access::EXEC_OK).is_ok()
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holder_is_found_by_device_and_inode() {
        let dev = rustix::fs::makedev(0xfd, 1);
        let locks = "1: POSIX  ADVISORY  WRITE 99 fd:01:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4321 fd:01:5678 0 EOF\n";
        assert_eq!(lock_holder(locks, dev, 5678), Some(1234));
        assert_eq!(lock_holder(locks, dev, 77), None, "not a flock");
        assert_eq!(lock_holder(locks, dev, 1), None);
    }

    #[test]
    fn a_part_file_is_resumable_unless_a_download_would_refuse_it() {
        let out = tempfile::tempdir().unwrap();
        let part = out.path().join("a.bin.part");
        fs::write(&part, b"x").unwrap();
        fs::write(out.path().join("a.bin.part.chunks"), b"x").unwrap();
        let checks = partial_files(out.path());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
        assert!(checks[0].summary.contains("resumes"), "{checks:?}");
        // One without its record would be refused by a download.
        fs::write(out.path().join("b.bin.part"), b"x").unwrap();
        let checks = partial_files(out.path());
        assert_eq!(checks[1].status, Status::Problem, "{checks:?}");
        assert!(checks[1].summary.contains("would refuse"), "{checks:?}");
    }

    #[test]
    fn a_missing_output_folder_is_fine_where_it_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let check = output_folder(&dir.path().join("new/deeper"));
        assert_eq!(check.status, Status::Ok, "{check:?}");
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert_eq!(output_folder(&file).status, Status::Problem);
        assert!(output_folder(dir.path()).summary.contains("free"));
    }

    #[test]
    fn a_key_readable_by_others_is_a_problem_with_its_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("identity");
        Identity::load_or_create(&ids, p2p_identity::Role::Peer).unwrap();
        let checks = identity(&ids);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
        let key = ids.join("peer.key");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let checks = identity(&ids);
        let bad = checks.iter().find(|c| c.check == "key_file").unwrap();
        assert_eq!(bad.status, Status::Problem);
        assert_eq!(
            bad.fix.as_deref(),
            Some(format!("chmod 600 {}", key.display()).as_str())
        );
    }
}
