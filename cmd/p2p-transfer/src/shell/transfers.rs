//! Downloads started from the peer shell: they run in the background, their progress is kept
//! for `transfers`, and their outcome is printed above the prompt.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::HumanBytes;
use p2p_peer::{DownloadEvent, DownloadRequest, PeerError, PeerHandle};
use p2p_protocol::printable;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::logging::print_above_prompt;

/// Where a download stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Flushing,
    Done(PathBuf),
    Failed(String),
    Cancelled,
}

#[derive(Debug)]
struct Transfer {
    /// What the user typed.
    id: String,
    name: Option<String>,
    size: u64,
    done: u64,
    started: Instant,
    finished: Option<Instant>,
    hosts_known: usize,
    hosts_used: BTreeSet<SocketAddr>,
    state: State,
}

/// Every download of this shell session.
#[derive(Clone, Default)]
pub struct Transfers {
    list: Arc<Mutex<Vec<Transfer>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Transfers {
    fn update(&self, index: usize, f: impl FnOnce(&mut Transfer)) {
        if let Some(t) = self
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            f(t);
        }
    }

    /// Starts downloading `id` into `dir` in the background.
    pub fn start(
        &self,
        rt: &Handle,
        peer: PeerHandle,
        request: DownloadRequest,
        dir: PathBuf,
        cancel: CancellationToken,
    ) {
        let id = request.id.clone();
        let index = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            list.push(Transfer {
                id: id.clone(),
                name: None,
                size: 0,
                done: 0,
                started: Instant::now(),
                finished: None,
                hosts_known: 0,
                hosts_used: BTreeSet::new(),
                state: State::Starting,
            });
            list.len() - 1
        };
        let this = self.clone();
        let _guard = rt.enter();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let download = peer.fetch(request, &dir, Some(tx), cancel);
                tokio::pin!(download);
                let result = loop {
                    tokio::select! {
                        result = &mut download => break result,
                        Some(event) = rx.recv() => this.apply(index, event),
                    }
                };
                while let Ok(event) = rx.try_recv() {
                    this.apply(index, event);
                }
                let state = match &result {
                    Ok(report) => {
                        let secs = report.elapsed.as_secs_f64();
                        print_above_prompt(format!(
                            "downloaded {} {} {} in {secs:.2}s ({:.1} MB/s)",
                            printable(&report.path.display().to_string()),
                            report.file_id,
                            report.bytes,
                            report.bytes as f64 / secs.max(1e-9) / 1e6
                        ));
                        State::Done(report.path.clone())
                    }
                    Err(PeerError::Cancelled) => State::Cancelled,
                    Err(err) => {
                        // The error may quote the network (a host's error message, the name).
                        let err = printable(&err.to_string()).to_string();
                        print_above_prompt(format!(
                            "error: download {} failed: {err}",
                            printable(&id)
                        ));
                        State::Failed(err)
                    }
                };
                this.update(index, |t| {
                    t.state = state;
                    t.finished = Some(Instant::now());
                });
            });
    }

    fn apply(&self, index: usize, event: DownloadEvent) {
        self.update(index, |t| match event {
            DownloadEvent::Started {
                name,
                size,
                hosts,
                resumed,
                ..
            } => {
                t.name = Some(name);
                t.size = size;
                t.done = resumed;
                t.hosts_known = hosts;
                t.state = State::Running;
            }
            DownloadEvent::ChunkDone { bytes, host, .. } => {
                t.done += bytes as u64;
                t.hosts_used.insert(host);
            }
            DownloadEvent::PeerFailed {
                host,
                dropped: true,
                ..
            } => {
                t.hosts_used.remove(&host);
                t.hosts_known = t.hosts_known.saturating_sub(1);
            }
            DownloadEvent::Flushing => t.state = State::Flushing,
            _ => {}
        });
    }

    /// Prints the `transfers` table.
    pub fn print(&self) {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            println!("no downloads in this session");
            return;
        }
        println!(
            "{:<14} {:>5} {:>11} {:>6}  {:<10} NAME",
            "ID", "DONE", "SPEED", "HOSTS", "STATE"
        );
        for t in list.iter() {
            let pct = if t.size == 0 {
                100.0
            } else {
                t.done as f64 * 100.0 / t.size as f64
            };
            let secs = t
                .finished
                .unwrap_or_else(Instant::now)
                .duration_since(t.started)
                .as_secs_f64();
            let speed = format!("{}/s", HumanBytes((t.done as f64 / secs.max(1e-3)) as u64));
            let hosts = format!("{}/{}", t.hosts_used.len(), t.hosts_known);
            let state = match &t.state {
                State::Starting => "looking up".to_owned(),
                State::Running => "running".to_owned(),
                State::Flushing => "writing to disk".to_owned(),
                State::Done(_) => "done".to_owned(),
                State::Failed(err) => format!("failed: {err}"),
                State::Cancelled => "cancelled".to_owned(),
            };
            let id: String = t.id.chars().take(14).collect();
            println!(
                "{:<14} {pct:>4.0}% {speed:>11} {hosts:>6}  {state:<10} {}",
                printable(&id),
                printable(t.name.as_deref().unwrap_or("?"))
            );
        }
    }

    /// Downloads not finished yet.
    pub fn active(&self) -> usize {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|t| t.finished.is_none())
            .count()
    }

    /// Waits for every download task to end (after cancelling them).
    pub async fn wait(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}
