//! `peer --json` (and `receive --json`): the events of download jobs and of shared folders
//! that change, as README "Scripting with --json" lists them.
//!
//! The startup download (`--download`, `receive`) is followed by [`crate::run::peer`], which
//! observes its own job and prints through [`job_event`], [`progress_due`] and
//! [`emit_report`]. Every other job the peer runs (one the web API started, a resumed one)
//! comes to [`report_other_jobs`] through the peer's observer of unobserved jobs: the same
//! updates, so the same events, and never twice, since a run goes to one observer only.
//! [`report_reshared`] prints a `--share-dir` folder's new records.

use std::collections::HashMap;

use p2p_peer::download::{JobReport, MAX_REPORTED};
use p2p_peer::share_dir::FolderChange;
use p2p_peer::{DownloadEvent, DownloadId, DownloadInfo, DownloadState, JobUpdate, PeerHandle};
use p2p_protocol::printable;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::json::{self, Event};

/// A `failed` event for the job asked for as `arg`: its full id once resolved.
pub fn emit_failed(arg: &str, info: Option<&DownloadInfo>, err: &anyhow::Error) {
    let resolved = info.and_then(|i| {
        i.folder_id
            .map(|f| f.to_string())
            .or_else(|| i.file_id.map(|f| f.to_string()))
    });
    json::emit(&Event::Failed {
        id: resolved.unwrap_or_else(|| arg.to_owned()),
        name: info.and_then(|i| i.name.clone()),
        error: crate::errors::one_line(err),
    });
}

/// A job's event: a dropped host is a warning on stderr; bytes arriving may bring a
/// `progress` line.
pub fn job_event(
    peer: &PeerHandle,
    id: DownloadId,
    event: &DownloadEvent,
    throttle: &mut json::Throttle,
) {
    match event {
        DownloadEvent::PeerFailed {
            host,
            error,
            dropped: true,
        } => note!("dropped {host}: {}", printable(error)),
        DownloadEvent::ChunkDone { .. }
        | DownloadEvent::FileDone { .. }
        | DownloadEvent::Started { .. }
        | DownloadEvent::JobStarted { .. } => progress_due(peer, id, throttle),
        _ => {}
    }
}

/// A `progress` line for job `id`, if it is running and the last one is a second old.
pub fn progress_due(peer: &PeerHandle, id: DownloadId, throttle: &mut json::Throttle) {
    let Some(info) = peer.download_info(id) else {
        return;
    };
    let running = matches!(info.state, DownloadState::Running | DownloadState::Flushing);
    if running && throttle.due(std::time::Instant::now()) {
        json::emit(&json::progress(&info));
    }
}

/// What a run did: its `conflict` and `file_failed` events (at most [`MAX_REPORTED`] of
/// each), then `downloaded`. Whether it is an error is the caller's to say (with `failed`).
pub fn emit_report(report: &JobReport, info: Option<&DownloadInfo>, arg: &str) {
    let folder_id = info.and_then(|i| i.folder_id);
    for problem in report.conflicts.iter().take(MAX_REPORTED) {
        json::emit(&Event::Conflict {
            path: json::path(&problem.path),
            reason: problem.reason.clone(),
        });
    }
    for problem in report.failed.iter().take(MAX_REPORTED) {
        json::emit(&Event::FileFailed {
            path: json::path(&problem.path),
            error: problem.reason.clone(),
        });
    }
    let id = folder_id
        .map(|f| f.to_string())
        .or_else(|| info.and_then(|i| i.file_id).map(|f| f.to_string()))
        .unwrap_or_else(|| arg.to_owned());
    json::emit(&Event::Downloaded {
        kind: if folder_id.is_some() {
            json::Kind::Folder
        } else {
            json::Kind::File
        },
        path: json::path(&report.path),
        id,
        size: report.size,
        files: report.files,
        fetched: report.fetched,
        already_there: report.already_there,
        conflicts: report.conflicts_total,
        failed: report.failed_total,
        bytes_fetched: report.bytes_fetched,
        bytes_resumed: report.bytes_resumed,
        seconds: report.elapsed.as_secs_f64(),
        complete: report.complete(),
    });
}

/// Prints the events of every job that `updates` brings (those no front end observes: see
/// [`PeerHandle::observe_other_jobs`]) as they come: `progress` at most once a second a job
/// (a stalled one says where it stands once a second too), then `downloaded` and/or
/// `failed` when its run ends. Once `stop` is cancelled (after the peer has shut down, so every
/// run has sent its end), prints what is left and returns.
pub async fn report_other_jobs(
    peer: PeerHandle,
    mut updates: UnboundedReceiver<(DownloadId, JobUpdate)>,
    stop: CancellationToken,
) {
    let mut running: HashMap<DownloadId, json::Throttle> = HashMap::new();
    let mut tick = tokio::time::interval(json::PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let update = tokio::select! {
            update = updates.recv() => update,
            _ = tick.tick() => {
                for (id, throttle) in &mut running {
                    progress_due(&peer, *id, throttle);
                }
                continue;
            }
            () = stop.cancelled() => break,
        };
        let Some((id, update)) = update else { return };
        other_job_update(&peer, &mut running, id, update);
    }
    while let Ok((id, update)) = updates.try_recv() {
        other_job_update(&peer, &mut running, id, update);
    }
}

/// One update of a job [`report_other_jobs`] prints.
fn other_job_update(
    peer: &PeerHandle,
    running: &mut HashMap<DownloadId, json::Throttle>,
    id: DownloadId,
    update: JobUpdate,
) {
    match update {
        JobUpdate::Event(event) => job_event(peer, id, &event, running.entry(id).or_default()),
        JobUpdate::Ended(result) => {
            running.remove(&id);
            let info = peer.download_info(id);
            let arg = info
                .as_ref()
                .map_or_else(|| id.to_string(), |i| i.target.clone());
            let failed = || format!("cannot download {arg}");
            let error = match result {
                Ok(report) => {
                    emit_report(&report, info.as_ref(), &arg);
                    let folder = info.as_ref().is_some_and(|i| i.folder_id.is_some());
                    match p2p_peer::downloads::shortfall(&report, folder) {
                        None => return,
                        Some(why) => anyhow::anyhow!(why).context(failed()),
                    }
                }
                Err(err) => anyhow::Error::from(err).context(failed()),
            };
            emit_failed(&arg, info.as_ref(), &error);
        }
    }
}

/// Prints the `registered` lines of each new record of a `--share-dir` folder that
/// `changes` brings, until every folder's sender is gone (the peer shut down).
pub async fn report_reshared(mut changes: UnboundedReceiver<FolderChange>) {
    while let Some(change) = changes.recv().await {
        for event in json::reshared(&change) {
            json::emit(&event);
        }
    }
}
