//! Download progress: an indicatif bar (bytes, speed, ETA) when stdout is a terminal, plain
//! lines on stderr at most once a second otherwise, so logs and CI output stay readable. File
//! names and host errors come from the network and are shown escaped.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use p2p_peer::DownloadEvent;
use p2p_protocol::printable;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

/// Gap between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// A sender for the download's events and the task that shows them; the task ends when the
/// download drops the sender.
pub fn start() -> (UnboundedSender<DownloadEvent>, JoinHandle<()>) {
    let (tx, mut rx) = unbounded_channel();
    let terminal = std::io::stdout().is_terminal();
    let task = tokio::spawn(async move {
        let mut view: Box<dyn View + Send> = if terminal {
            Box::new(Bar::default())
        } else {
            Box::new(Plain::default())
        };
        while let Some(event) = rx.recv().await {
            view.show(&event);
        }
        view.close();
    });
    (tx, task)
}

trait View {
    fn show(&mut self, event: &DownloadEvent);
    fn close(&mut self) {}
}

#[derive(Default)]
struct Bar(Option<ProgressBar>);

impl View for Bar {
    fn show(&mut self, event: &DownloadEvent) {
        match event {
            DownloadEvent::Started {
                name,
                size,
                hosts,
                resumed,
                ..
            } => {
                let bar = ProgressBar::new(*size);
                bar.set_position(*resumed);
                if *resumed > 0 {
                    bar.reset_eta();
                }
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("template is valid")
                    .progress_chars("=> "),
                );
                bar.set_message(format!("{} from {hosts} peer(s)", printable(name)));
                self.0 = Some(bar);
            }
            DownloadEvent::ChunkDone { bytes, .. } => {
                if let Some(bar) = &self.0 {
                    bar.inc(*bytes as u64);
                }
            }
            DownloadEvent::PeerFailed {
                host,
                error,
                dropped: true,
            } => {
                if let Some(bar) = &self.0 {
                    bar.println(format!("dropped {host}: {}", printable(error)));
                }
            }
            DownloadEvent::Flushing => {
                if let Some(bar) = &self.0 {
                    bar.set_message("writing to disk");
                }
            }
            _ => {}
        }
    }

    fn close(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[derive(Default)]
struct Plain {
    name: String,
    size: u64,
    done: u64,
    /// Verified by an earlier run: not part of this run's speed.
    resumed: u64,
    started: Option<Instant>,
    last: Option<Instant>,
}

impl Plain {
    fn line(&self) {
        let secs = self
            .started
            .map_or(0.0, |s| s.elapsed().as_secs_f64())
            .max(1e-3);
        let pct = if self.size == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.size as f64
        };
        eprintln!(
            "progress {}: {pct:.0}% {}/{} bytes, {:.1} MB/s",
            printable(&self.name),
            self.done,
            self.size,
            (self.done - self.resumed) as f64 / secs / 1e6
        );
    }
}

impl View for Plain {
    fn show(&mut self, event: &DownloadEvent) {
        match event {
            DownloadEvent::Started {
                name,
                size,
                resumed,
                ..
            } => {
                self.name = name.clone();
                self.size = *size;
                self.done = *resumed;
                self.resumed = *resumed;
                if *resumed > 0 {
                    eprintln!(
                        "resuming {}: {resumed} bytes already verified",
                        printable(name)
                    );
                }
                self.started = Some(Instant::now());
                self.last = self.started;
            }
            DownloadEvent::ChunkDone { bytes, .. } => {
                self.done += *bytes as u64;
                if self.last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    self.line();
                    self.last = Some(Instant::now());
                }
            }
            DownloadEvent::PeerFailed {
                host,
                error,
                dropped: true,
            } => {
                eprintln!("dropped {host}: {}", printable(error));
            }
            DownloadEvent::Flushing => self.line(),
            _ => {}
        }
    }
}
