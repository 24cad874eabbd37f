//! Downloads started from the peer shell run as jobs in the peer's registry: `transfers`
//! prints them (a folder is one job, one row, with its files done out of its files), and a
//! task prints each finished or failed one above the prompt.

use std::collections::BTreeSet;

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
        let pct = d.percent();
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
            DownloadState::LookingUp => "looking up".to_owned(),
            DownloadState::Running => "running".to_owned(),
            DownloadState::Flushing => "writing to disk".to_owned(),
            DownloadState::Done => "done".to_owned(),
            DownloadState::Failed(err) => format!("failed: {err}"),
            DownloadState::Cancelled => "cancelled".to_owned(),
        };
        let id: String = d.target.chars().take(14).collect();
        println!(
            "{:<14} {pct:>4.0}% {files:>13} {speed:>11} {hosts:>6}  {state:<10} {}",
            printable(&id),
            printable(d.name.as_deref().unwrap_or("?"))
        );
    }
}

/// Prints each download job's outcome above the prompt as it ends: done, or failed with why.
/// (Cancelled ones were cancelled by the user, who knows.)
pub fn show_outcomes(peer: &PeerHandle) -> tokio::task::JoinHandle<()> {
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
                        if told.insert(id) {
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
