//! Download progress: one indicatif bar per job (bytes over all its files; for a folder also
//! `{done}/{total} files`; speed and ETA) when stdout is a terminal, plain lines on stderr at
//! most once a second otherwise, so logs and CI output stay readable; nothing with `-q`. Counting, speed and ETA
//! come from the peer's pure [`Progress`], as the registry, the shells and the web page show
//! them: speed is of bytes fetched in this run (not those resumed or found already there).
//! File names and host errors come from the network and are shown escaped.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressStyle};
use p2p_peer::DownloadEvent;
use p2p_peer::downloads::Progress;
use p2p_protocol::printable;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::units;

/// Gap between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// Gap between updates of the bar's speed, ETA and file count (a folder sends many events).
const BAR_EVERY: Duration = Duration::from_millis(200);

/// A sender for the job's events and the task that shows them; the task ends when the job
/// drops the sender.
pub fn start() -> (UnboundedSender<DownloadEvent>, JoinHandle<()>) {
    let (tx, mut rx) = unbounded_channel();
    let terminal = std::io::stdout().is_terminal();
    let quiet = crate::logging::quiet();
    let task = tokio::spawn(async move {
        let now = Instant::now();
        let mut view: Box<dyn View + Send> = if quiet {
            Box::new(Silent)
        } else if terminal {
            Box::new(Bar::new(now))
        } else {
            Box::new(Plain::new(now))
        };
        while let Some(event) = rx.recv().await {
            view.show(&event, Instant::now());
        }
        view.close();
    });
    (tx, task)
}

trait View {
    fn show(&mut self, event: &DownloadEvent, now: Instant);
    fn close(&mut self) {}
}

/// `-q`: no progress at all.
struct Silent;

impl View for Silent {
    fn show(&mut self, _: &DownloadEvent, _: Instant) {}
}

/// What the job is: its name and, once known, how many hosts it asks.
fn title(name: &str, hosts: usize) -> String {
    format!("{} from {hosts} peer(s)", printable(name))
}

/// `12/5000 files, 3.1 MiB/s, eta 4s` (files for a folder only).
fn status(progress: &Progress, now: Instant) -> String {
    let mut parts = Vec::new();
    if progress.is_folder() {
        parts.push(format!(
            "{}/{} files",
            progress.files_done(),
            progress.files_total()
        ));
    }
    parts.push(units::speed(progress.speed(now)));
    if let Some(eta) = progress.eta(now) {
        parts.push(format!("eta {}", HumanDuration(eta)));
    }
    parts.join(", ")
}

struct Bar {
    bar: Option<ProgressBar>,
    progress: Progress,
    shown: Option<Instant>,
}

impl Bar {
    fn new(now: Instant) -> Self {
        Self {
            bar: None,
            progress: Progress::new(None, None, now),
            shown: None,
        }
    }

    fn open(&mut self, name: &str, hosts: usize) {
        let bar = ProgressBar::new(self.progress.size());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(title(name, hosts));
        self.bar = Some(bar);
        self.shown = None;
    }
}

impl View for Bar {
    fn show(&mut self, event: &DownloadEvent, now: Instant) {
        self.progress.apply(event, now);
        match event {
            // A folder's files each may start; the job's bar is opened once.
            DownloadEvent::Started { name, hosts, .. } if !self.progress.is_folder() => {
                self.open(name, *hosts);
            }
            DownloadEvent::JobStarted { name, hosts, .. } => self.open(name, *hosts),
            DownloadEvent::PeerFailed {
                host,
                error,
                dropped: true,
            } => {
                if let Some(bar) = &self.bar {
                    bar.println(format!("dropped {host}: {}", printable(error)));
                }
            }
            DownloadEvent::Flushing if !self.progress.is_folder() => {
                if let Some(bar) = &self.bar {
                    bar.set_message("writing to disk");
                    self.shown = Some(now);
                }
                return;
            }
            _ => {}
        }
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_length(self.progress.size());
        bar.set_position(self.progress.done());
        if self
            .shown
            .is_none_or(|t| now.saturating_duration_since(t) >= BAR_EVERY)
        {
            bar.set_message(status(&self.progress, now));
            self.shown = Some(now);
        }
    }

    fn close(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

struct Plain {
    name: String,
    progress: Progress,
    last: Option<Instant>,
}

impl Plain {
    fn new(now: Instant) -> Self {
        Self {
            name: String::new(),
            progress: Progress::new(None, None, now),
            last: None,
        }
    }

    fn line(&mut self, now: Instant) {
        let (done, size) = (self.progress.done(), self.progress.size());
        let pct = if size == 0 {
            100.0
        } else {
            done as f64 * 100.0 / size as f64
        };
        let files = if self.progress.is_folder() {
            format!(
                ", {}/{} files",
                self.progress.files_done(),
                self.progress.files_total()
            )
        } else {
            String::new()
        };
        eprintln!(
            "progress {}: {pct:.0}% {done}/{size} bytes{files}, {}",
            printable(&self.name),
            units::speed(self.progress.speed(now))
        );
        self.last = Some(now);
    }

    fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= PLAIN_EVERY)
    }
}

impl View for Plain {
    fn show(&mut self, event: &DownloadEvent, now: Instant) {
        self.progress.apply(event, now);
        match event {
            DownloadEvent::Started { name, resumed, .. } if !self.progress.is_folder() => {
                self.name = name.clone();
                if *resumed > 0 {
                    eprintln!(
                        "resuming {}: {resumed} bytes already verified",
                        printable(name)
                    );
                }
                self.last = Some(now);
            }
            DownloadEvent::JobStarted {
                name,
                files,
                size,
                resumed,
                ..
            } => {
                self.name = name.clone();
                eprintln!(
                    "folder {}: {files} files, {size} bytes{}",
                    printable(name),
                    if *resumed > 0 {
                        format!(", {resumed} already verified")
                    } else {
                        String::new()
                    }
                );
                self.last = Some(now);
            }
            DownloadEvent::ChunkDone { .. } | DownloadEvent::FileDone { .. } if self.due(now) => {
                self.line(now);
            }
            DownloadEvent::PeerFailed {
                host,
                error,
                dropped: true,
            } => {
                eprintln!("dropped {host}: {}", printable(error));
            }
            DownloadEvent::Flushing if !self.progress.is_folder() => self.line(now),
            _ => {}
        }
    }
}
