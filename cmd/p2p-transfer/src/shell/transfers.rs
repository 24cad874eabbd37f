//! Downloads started from the peer shell run as jobs in the peer's registry: `transfers`
//! prints them (a folder is one job, one row, with its files done out of its files), and a
//! task prints each finished or failed one above the prompt.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use p2p_peer::{DownloadId, DownloadInfo, DownloadState, PeerChange, PeerHandle};
use p2p_protocol::printable;
use tokio::sync::broadcast::error::RecvError;

use crate::logging::print_above_prompt;

/// Prints the `transfers` table.
pub fn print(peer: &PeerHandle) {
    let list = peer.downloads();
    if list.is_empty() {
        println!("no downloads in this session");
        return;
    }
    println!(
        "{:<14} {:>5} {:>13} {:>11} {:>6}  {:<10} NAME",
        "ID", "DONE", "FILES", "SPEED", "HOSTS", "STATE"
    );
    for d in &list {
        // A failed job's percent says nothing about the files it meant to write.
        let pct = match d.state {
            DownloadState::Failed(_) | DownloadState::Cancelled => "-".to_owned(),
            _ => format!("{:.0}%", d.percent()),
        };
        // While running: the recent speed; once ended: the average of the run.
        let rate = if d.state.is_finished() {
            d.fetched as f64 / d.elapsed.as_secs_f64().max(1e-3)
        } else {
            d.speed
        };
        let speed = crate::units::speed(rate);
        let hosts = format!("{}/{}", d.hosts_delivering, d.hosts_known);
        // Unknown until the request is resolved.
        let files = if d.files_total == 0 {
            "-".to_owned()
        } else {
            format!("{}/{}", d.files_done, d.files_total)
        };
        let state = match &d.state {
            DownloadState::LookingUp => "looking up",
            DownloadState::Running => "running",
            DownloadState::Flushing => "writing to disk",
            DownloadState::Done => "done",
            DownloadState::Failed(_) => "failed",
            DownloadState::Cancelled => "cancelled",
        };
        let id: String = d.target.chars().take(14).collect();
        // Before the lookup ends there is no name: what was asked for stands in.
        let mut name = printable(d.name.as_deref().unwrap_or(&d.target)).to_string();
        if let DownloadState::Failed(err) = &d.state {
            name.push_str(&format!(": {}", short(&err.to_string())));
        }
        println!(
            "{:<14} {pct:>5} {files:>13} {speed:>11} {hosts:>6}  {state:<10} {name}",
            printable(&id),
        );
    }
}

/// Longest reason a `transfers` row shows (the line printed above the prompt when the job
/// failed has all of it).
const REASON_CHARS: usize = 60;

/// `reason`, escaped, cut at [`REASON_CHARS`] with `…`.
fn short(reason: &str) -> String {
    let shown = printable(reason).to_string();
    if shown.chars().count() <= REASON_CHARS {
        return shown;
    }
    let cut: String = shown.chars().take(REASON_CHARS - 1).collect();
    format!("{cut}…")
}

/// Jobs whose failure the shell's `download` command reports itself (it waits for the lookup
/// and prints a failed one as its own error): not printed again above the prompt.
pub type Reported = Arc<ReportedJobs>;

/// See [`Reported`]. A job may fail before `download` learns its id: while one is being
/// started, a failure is held back until it is known whose it is.
#[derive(Debug)]
pub struct ReportedJobs {
    ids: Mutex<BTreeSet<DownloadId>>,
    /// True while `download` starts a job whose id it doesn't know yet.
    starting: tokio::sync::watch::Sender<bool>,
}

impl Default for ReportedJobs {
    fn default() -> Self {
        Self {
            ids: Mutex::default(),
            starting: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl ReportedJobs {
    fn ids(&self) -> std::sync::MutexGuard<'_, BTreeSet<DownloadId>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a job with `start` and takes over reporting its failure (until [`Self::release`]).
    pub fn start<E>(&self, start: impl FnOnce() -> Result<DownloadId, E>) -> Result<DownloadId, E> {
        self.starting.send_replace(true);
        let started = start();
        if let Ok(id) = &started {
            self.ids().insert(*id);
        }
        self.starting.send_replace(false);
        started
    }

    /// `id`'s end is printed above the prompt again from now on.
    pub fn release(&self, id: DownloadId) {
        self.ids().remove(&id);
    }

    /// Whether `download` reports `id`'s failure itself (waiting, if a job is being started,
    /// until it is known whose that is).
    async fn own(&self, id: DownloadId) -> bool {
        let mut starting = self.starting.subscribe();
        let _ = starting.wait_for(|s| !*s).await;
        self.ids().contains(&id)
    }
}

/// Prints each download job's outcome above the prompt as it ends: done, or failed with why.
/// (Cancelled ones were cancelled by the user, who knows.)
pub fn show_outcomes(peer: &PeerHandle, reported: Reported) -> tokio::task::JoinHandle<()> {
    let mut changes = peer.subscribe_changes();
    let peer = peer.clone();
    tokio::spawn(async move {
        let mut told: BTreeSet<DownloadId> = BTreeSet::new();
        loop {
            let ids: Vec<DownloadId> = match changes.recv().await {
                Ok(PeerChange::Download(id)) => vec![id],
                Ok(_) => continue,
                // Fell behind: look at every job.
                Err(RecvError::Lagged(_)) => peer.downloads().iter().map(|d| d.id).collect(),
                Err(RecvError::Closed) => return,
            };
            for id in ids {
                let Some(info) = peer.download_info(id) else {
                    continue;
                };
                match &info.state {
                    DownloadState::Done | DownloadState::Failed(_) => {
                        let own = matches!(info.state, DownloadState::Failed(_))
                            && reported.own(id).await;
                        if told.insert(id) && !own {
                            print_above_prompt(outcome(&info));
                        }
                    }
                    // Resumed: its next end is news again.
                    _ => {
                        told.remove(&id);
                    }
                }
            }
        }
    })
}

/// The line a finished job gets.
fn outcome(info: &DownloadInfo) -> String {
    match &info.state {
        DownloadState::Failed(err) => {
            format!("error: download {} failed: {err}", printable(&info.target))
        }
        _ => {
            let secs = info.elapsed.as_secs_f64();
            let path = info
                .path
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string());
            let what = match (info.folder_id, info.file_id) {
                (Some(folder), _) if info.files_skipped > 0 => format!(
                    "{folder} ({} files, {} already there)",
                    info.files_done, info.files_skipped
                ),
                (Some(folder), _) => format!("{folder} ({} files)", info.files_done),
                (None, Some(id)) if info.files_skipped > 0 => format!("{id} (already there)"),
                (None, Some(id)) => id.to_string(),
                (None, None) => format!("({} files)", info.files_done),
            };
            format!(
                "downloaded {} {what} {} in {secs:.2}s {}",
                printable(&path),
                info.size,
                crate::units::transfer_summary(info.fetched, info.resumed, info.elapsed)
            )
        }
    }
}
