//! `--json`: what the one-shot commands and `peer` print for scripts, as NDJSON on stdout.
//!
//! Each line is one JSON object with an `"event"` field naming its kind; the other fields are
//! snake_case and stable (README, "Scripting with --json", lists every one). Sizes are bytes,
//! times seconds, speeds bytes per second: raw numbers, never formatted text. Ids are the full
//! 64 hex characters. A field that is not known is `null`, never left out, so a script can
//! index every documented field of an event. New fields may be added; none is renamed or
//! removed.
//!
//! Human text never goes to stdout in this mode: logs, warnings and the one-line error stay on
//! stderr, and the exit status says how the command ended.

use std::time::{Duration, Instant};

use p2p_peer::Shared;
use p2p_peer::downloads::DownloadInfo;
use p2p_peer::share_dir::FolderChange;
use serde::Serialize;

/// Least time between two `progress` events of one download job.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a line describes: a file, or a folder shared (and downloaded) as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One file.
    File,
    /// A folder, with one id for all its files.
    Folder,
}

/// One line of `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `peer`: its chunk server is up. `index` is the index server in use (`null` without
    /// one), `index_node_id` the id it proved.
    Listening {
        address: String,
        reach: Vec<String>,
        node_id: String,
        index: Option<String>,
        index_node_id: Option<String>,
    },
    /// `peer --web`: the dashboard's login URL (it holds the API key) and the API's base URL.
    Web {
        url: String,
        api: String,
        api_key_file: Option<String>,
    },
    /// `peer --register`/`--share-dir`: a file or a whole folder is shared. A file inside a
    /// shared folder has its own line first, with `folder_id` set to the folder's id. When a
    /// `--share-dir` folder changes: a line per file new at its path, then the folder's new
    /// line; `replaces` is the id it takes the place of (else `null`).
    Registered {
        kind: Kind,
        path: String,
        id: String,
        size: u64,
        files: u64,
        folder_id: Option<String>,
        replaces: Option<String>,
    },
    /// `manifest create`, `peer --write-manifest`: a manifest file was written.
    ManifestWritten {
        kind: Kind,
        path: String,
        id: String,
        size: u64,
        files: u64,
    },
    /// `peer --download`: where a running job stands, at most once a second.
    Progress {
        id: Option<String>,
        name: Option<String>,
        done: u64,
        size: u64,
        files_done: u64,
        files: u64,
        bytes_per_second: u64,
        eta_seconds: Option<f64>,
    },
    /// A folder download: one file whose target holds something else (left as it is).
    Conflict { path: String, reason: String },
    /// A folder download: one file that could not be fetched.
    FileFailed { path: String, error: String },
    /// `peer --download`: what the job did in this run. `complete` is false when files are
    /// missing; a `failed` event follows then.
    Downloaded {
        kind: Kind,
        path: String,
        id: String,
        size: u64,
        files: u64,
        fetched: u64,
        already_there: u64,
        conflicts: u64,
        failed: u64,
        bytes_fetched: u64,
        bytes_resumed: u64,
        seconds: f64,
        complete: bool,
    },
    /// `peer --download`: the job failed (or was interrupted). `id` is the full id when it
    /// was resolved, else what was asked for.
    Failed {
        id: String,
        name: Option<String>,
        error: String,
    },
    /// `send`: what to give the other side. `command` is the whole line to run there
    /// (`p2p-transfer receive TICKET`); `items` lists what the ticket names, in its order.
    Ticket {
        ticket: String,
        command: String,
        items: Vec<Item>,
    },
    /// `send`: one receiver has all of one item (`path` as given, `id` its file or folder
    /// id); `node_id` is the receiver's.
    Delivered {
        path: String,
        id: String,
        node_id: String,
    },
    /// `id`: this node's id.
    NodeId { role: &'static str, node_id: String },
    /// `search`: one index server asked; `error` is `null` when it answered.
    Index {
        address: String,
        name: Option<String>,
        node_id: Option<String>,
        matches: u64,
        total: u64,
        error: Option<String>,
    },
    /// `search`: one matching file or folder, merged over the indexes that listed it.
    Match {
        kind: Kind,
        id: String,
        name: String,
        path: Option<String>,
        size: u64,
        hosts: u64,
        files: u64,
        indexes: Vec<String>,
    },
}

/// One file or folder a `ticket` event lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    /// A file, or a folder as a whole.
    pub kind: Kind,
    /// Its file or folder id.
    pub id: String,
    /// The file's or folder's own name, as the receiver will write it.
    pub name: String,
    /// Bytes in all.
    pub size: u64,
    /// 1 for a file.
    pub files: u64,
}

impl Item {
    /// What a ticket event says of a shared path.
    pub fn of(shared: &Shared) -> Self {
        match shared {
            Shared::File { manifest, .. } => Self {
                kind: Kind::File,
                id: manifest.id().to_string(),
                name: manifest.name.clone(),
                size: manifest.size,
                files: 1,
            },
            Shared::Folder {
                folder_id, head, ..
            } => Self {
                kind: Kind::Folder,
                id: folder_id.to_string(),
                name: head.name.clone(),
                size: head.size,
                files: head.files,
            },
        }
    }
}

/// Writes `event` as one line on stdout. A closed stdout is not an error of the command: the
/// script stopped reading.
pub fn emit(event: &Event) {
    let mut line = serde_json::to_string(event).expect("events serialize: plain fields only");
    line.push('\n');
    // Progress is dropped when stdout has no room for it (a reader that fell behind, or
    // stopped): the next one says where things stand. Results wait for room (until a signal).
    if matches!(event, Event::Progress { .. }) {
        crate::output::stdout_progress(&line);
    } else {
        crate::output::stdout(format_args!("{line}"));
    }
}

/// A path as text (lossy for a path that is not UTF-8; JSON escapes the rest).
pub fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `registered` lines of one shared item: a file's, or a folder's files' then its own.
pub fn registered(shared: &Shared) -> Vec<Event> {
    match shared {
        Shared::File { path: p, manifest } => vec![Event::Registered {
            kind: Kind::File,
            path: path(p),
            id: manifest.id().to_string(),
            size: manifest.size,
            files: 1,
            folder_id: None,
            replaces: None,
        }],
        Shared::Folder {
            path: p,
            folder_id,
            head,
            files,
        } => files
            .iter()
            .map(|(rel, manifest)| Event::Registered {
                kind: Kind::File,
                path: path(&p.join(rel)),
                id: manifest.id().to_string(),
                size: manifest.size,
                files: 1,
                folder_id: Some(folder_id.to_string()),
                replaces: None,
            })
            .chain(std::iter::once(Event::Registered {
                kind: Kind::Folder,
                path: path(p),
                id: folder_id.to_string(),
                size: head.size,
                files: head.files,
                folder_id: None,
                replaces: None,
            }))
            .collect(),
    }
}

/// The `registered` lines of a `--share-dir` folder's new record: one per file new at its
/// path, then the folder's.
pub fn reshared(change: &FolderChange) -> Vec<Event> {
    let folder_id = change.folder_id.to_string();
    change
        .files
        .iter()
        .map(|file| Event::Registered {
            kind: Kind::File,
            path: path(&change.path.join(&file.path)),
            id: file.manifest.id().to_string(),
            size: file.manifest.size,
            files: 1,
            folder_id: Some(folder_id.clone()),
            replaces: file.replaces.map(|id| id.to_string()),
        })
        .chain(std::iter::once(Event::Registered {
            kind: Kind::Folder,
            path: path(&change.path),
            id: folder_id.clone(),
            size: change.head.size,
            files: change.head.files,
            folder_id: None,
            replaces: Some(change.replaces.to_string()),
        }))
        .collect()
}

/// The `progress` line of a job as the registry sees it.
pub fn progress(info: &DownloadInfo) -> Event {
    let id = info
        .folder_id
        .map(|f| f.to_string())
        .or_else(|| info.file_id.map(|f| f.to_string()));
    Event::Progress {
        id,
        name: info.name.clone(),
        done: info.done,
        size: info.size,
        files_done: info.files_done as u64,
        files: info.files_total as u64,
        bytes_per_second: info.speed.max(0.0).round() as u64,
        eta_seconds: info.eta.map(|eta| eta.as_secs_f64()),
    }
}

/// Spaces `progress` events of one job at least [`PROGRESS_EVERY`] apart. Pure: the caller
/// passes `now`.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// Whether a line may go out at `now`; if so, counts it as sent.
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < PROGRESS_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_flat_objects_tagged_with_their_event() {
        let line = serde_json::to_value(Event::Failed {
            id: "ab".into(),
            name: None,
            error: "no host".into(),
        })
        .unwrap();
        assert_eq!(
            line,
            serde_json::json!({"event": "failed", "id": "ab", "name": null, "error": "no host"})
        );
        let line = serde_json::to_value(Event::ManifestWritten {
            kind: Kind::Folder,
            path: "a.p2pm".into(),
            id: "cd".into(),
            size: 3,
            files: 2,
        })
        .unwrap();
        assert_eq!(line["event"], "manifest_written");
        assert_eq!(line["kind"], "folder");
    }

    #[test]
    fn progress_is_at_most_once_a_second() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert!(throttle.due(start), "the first line goes out at once");
        assert!(!throttle.due(start + Duration::from_millis(999)));
        assert!(throttle.due(start + Duration::from_secs(1)));
        assert!(!throttle.due(start + Duration::from_millis(1500)));
        assert!(throttle.due(start + Duration::from_secs(5)));
    }
}
