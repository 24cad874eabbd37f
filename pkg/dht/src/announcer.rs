//! [`Announcer`]: keeps a set of file ids announced in the DHT, re-announcing each every
//! [`REANNOUNCE_EVERY`].
//!
//! Why re-announce at all when mainline never expires what it stores: the storing nodes keep
//! announcements in memory only, so a restarted node has forgotten them, nodes that joined
//! since may now be the closest to an id, and other BEP 5 implementations drop an announcement
//! after about 30 minutes. Re-announcing at half that keeps an id findable through all three.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_protocol::FileId;
use tokio::sync::{Notify, broadcast};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::node::Dht;
use crate::schedule::Schedule;

/// How often each id is announced again.
pub const REANNOUNCE_EVERY: Duration = Duration::from_secs(15 * 60);

/// How soon a failed announcement (no node stored it) is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Announcements running at once.
pub const ANNOUNCE_CONCURRENCY: usize = 8;

/// Events a subscriber may keep up with.
const EVENT_BUFFER: usize = 256;

/// What happened to one announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// At least one node stored the announcement.
    Announced {
        /// The file.
        id: FileId,
    },
    /// No node stored it; it is tried again after [`RETRY_AFTER`].
    Failed {
        /// The file.
        id: FileId,
        /// Why, as the DHT said.
        error: String,
    },
}

/// A background task that announces a set of file ids with one port (the chunk server's) and
/// keeps them announced. Stopping it (drop or [`Announcer::shutdown`]) stops re-announcing; it
/// cannot withdraw what nodes already store (BEP 5 has no withdrawal).
#[derive(Debug)]
pub struct Announcer {
    shared: Arc<Shared>,
    events: broadcast::Sender<AnnounceEvent>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    schedule: Mutex<Schedule>,
    wake: Notify,
}

impl Shared {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        // The schedule stays consistent even if a holder panicked: every change is one call.
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Announcer {
    /// Starts announcing with `port` through `dht`, every [`REANNOUNCE_EVERY`].
    pub fn start(dht: Dht, port: u16) -> Self {
        Self::with_period(dht, port, REANNOUNCE_EVERY, RETRY_AFTER)
    }

    /// Like [`Announcer::start`], announcing every `every`, retrying failures after `retry`.
    pub fn with_period(dht: Dht, port: u16, every: Duration, retry: Duration) -> Self {
        let shared = Arc::new(Shared {
            schedule: Mutex::new(Schedule::new(every, retry)),
            wake: Notify::new(),
        });
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let cancel = CancellationToken::new();
        let span = info_span!("dht_announcer", addr = %dht.local_addr(), port);
        let task = tokio::spawn(
            run(dht, port, shared.clone(), events.clone(), cancel.clone()).instrument(span),
        );
        Self {
            shared,
            events,
            cancel,
            task: Some(task),
        }
    }

    /// Announces `id` now and keeps it announced. Adding an id twice changes nothing.
    pub fn add(&self, id: FileId) {
        self.shared.schedule().add(id, Instant::now());
        self.shared.wake.notify_one();
    }

    /// Stops re-announcing `id`.
    pub fn remove(&self, id: &FileId) {
        self.shared.schedule().remove(id);
    }

    /// The ids being kept announced.
    pub fn ids(&self) -> Vec<FileId> {
        self.shared.schedule().ids()
    }

    /// Each announcement's outcome from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AnnounceEvent> {
        self.events.subscribe()
    }

    /// Stops the task and waits for it (running announcements are abandoned).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The task: start what is due, wait for the next due time, a new id, an end, or shutdown.
async fn run(
    dht: Dht,
    port: u16,
    shared: Arc<Shared>,
    events: broadcast::Sender<AnnounceEvent>,
    cancel: CancellationToken,
) {
    let mut running = JoinSet::new();
    loop {
        let (due, next) = {
            let mut schedule = shared.schedule();
            let free = ANNOUNCE_CONCURRENCY.saturating_sub(running.len());
            let due = schedule.take_due(Instant::now(), free);
            (due, schedule.next_due())
        };
        for id in due {
            let dht = dht.clone();
            running.spawn(async move { (id, dht.announce(&id, port).await) });
        }
        // With every slot taken, only an end can start the next one.
        let next = next.filter(|_| running.len() < ANNOUNCE_CONCURRENCY);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(ended) = running.join_next(), if !running.is_empty() => {
                let Ok((id, result)) = ended else { continue };
                let event = match result {
                    Ok(()) => AnnounceEvent::Announced { id },
                    Err(err) => {
                        let error = chain(&err);
                        warn!(id = %id.fmt_short(), %error, "DHT announcement failed");
                        AnnounceEvent::Failed { id, error }
                    }
                };
                shared.schedule().done(&id, matches!(event, AnnounceEvent::Announced { .. }), Instant::now());
                let _ = events.send(event);
            }
            _ = shared.wake.notified() => {}
            _ = sleep_until(next) => {}
        }
    }
    running.abort_all();
    debug!("DHT announcer stopped");
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An error and its causes on one line: `a: b: c`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
