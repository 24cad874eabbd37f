//! `GET /api/v1/events`: server-sent events, a `snapshot` first, then changes.
//!
//! Invariants (what keeps a dashboard from slowing a transfer):
//! * A download never waits on a client. The registry updates its own entry under a std
//!   mutex and sends state changes on a broadcast channel, which never blocks its sender. A
//!   stream reads the entries when *it* is polled, which is when the client can take more
//!   bytes; a stalled browser is simply not polled and loses intermediate progress, and a
//!   receiver that falls behind the broadcast gets a fresh `snapshot` instead of the backlog.
//! * Progress is throttled per client by [`Throttle`]: a job is sent only when its `version`
//!   moved, at most once per [`PROGRESS_EVERY`], except that a job's final state goes out
//!   at once. So a transfer of `s` seconds yields at most `⌈4·s⌉ + 2` `download` events.
//! * Peers and network files come from the index through ONE poller per node
//!   ([`PeerHub`]), every [`NETWORK_POLL`], running only while at least one stream listens.
//! * Every stream ends when the node shuts down (a stream whose client stopped reading is not
//!   polled, so it is closed with its connection when [`crate::SHUTDOWN_GRACE`] ends), and
//!   at most `max_event_clients` streams are open at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures::Stream;
use p2p_peer::{DownloadId, DownloadInfo, PeerChange, PeerHandle};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::error::ApiError;
use crate::peer_api::{PeerApp, network_peers, shared_files};
use crate::server_api::ServerApp;
use crate::views::{
    DownloadView, MessageView, NetworkFileView, NetworkFilesView, PeerSnapshotView, PeerStatusView,
    PeersView, ServerSnapshotView, ServerStatusView, SharedFileView, UnsharedView,
};

/// The least time between two progress events of one download job on one stream (so at most
/// 4 a second).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How often the peer asks its index for the peer and file lists while a stream listens.
pub const NETWORK_POLL: Duration = Duration::from_secs(3);
/// How often the server's streams look at its index.
pub const SERVER_POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies and browsers from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which download jobs a stream should send now. Pure: time is passed in.
///
/// It is fed the jobs that changed (from [`PeerHandle::downloads_changed_since`], so every
/// version reaches it at most once) and holds back a job's new version until [`PROGRESS_EVERY`]
/// after the last one sent, when it goes out even if the job did not move again. A final
/// state goes out at once. It remembers unfinished jobs only: once a job's final state went
/// out it is forgotten (it comes back only if it changes again, as when resumed), so what it
/// keeps is bounded by the jobs running, however long the stream stays open.
#[derive(Debug)]
pub(crate) struct Throttle {
    min_gap: Duration,
    /// Unfinished jobs sent: the version last sent and when.
    sent: HashMap<DownloadId, (u64, Instant)>,
    /// The latest version of each job the gap holds back, in handle order.
    held: BTreeMap<DownloadId, DownloadInfo>,
}

impl Throttle {
    pub(crate) fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            sent: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Takes the jobs that `changed` and answers those to send now, in handle order: every
    /// job with a version not sent yet whose gap has passed or that has finished. The others
    /// are held until a later call.
    pub(crate) fn release(
        &mut self,
        changed: impl IntoIterator<Item = DownloadInfo>,
        now: Instant,
    ) -> Vec<DownloadInfo> {
        for info in changed {
            let newer = self
                .held
                .get(&info.id)
                .is_none_or(|h| h.version < info.version);
            if newer {
                self.held.insert(info.id, info);
            }
        }
        let Self {
            min_gap,
            sent,
            held,
        } = self;
        let mut out = Vec::new();
        held.retain(|id, info| {
            let finished = info.state.is_finished();
            if let Some(&(version, at)) = sent.get(id) {
                if info.version <= version {
                    return false; // out already
                }
                if !finished && now.saturating_duration_since(at) < *min_gap {
                    return true;
                }
            }
            if finished {
                sent.remove(id);
            } else {
                sent.insert(*id, (info.version, now));
            }
            out.push(info.clone());
            false
        });
        out
    }

    /// Forgets everything and marks `jobs` as sent (they just went out in a snapshot).
    pub(crate) fn reset<'a>(
        &mut self,
        jobs: impl IntoIterator<Item = &'a DownloadInfo>,
        now: Instant,
    ) {
        self.held.clear();
        self.sent = jobs
            .into_iter()
            .filter(|d| !d.state.is_finished())
            .map(|d| (d.id, (d.version, now)))
            .collect();
    }

    /// How many jobs it remembers (unfinished ones sent, and held ones).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.sent.len() + self.held.len()
    }
}

/// One named event with a JSON body.
fn event(name: &str, data: &impl Serialize) -> Option<Event> {
    match Event::default().event(name).json_data(data) {
        Ok(event) => Some(event),
        Err(err) => {
            debug!(%err, event = name, "cannot encode an event");
            None
        }
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many event streams are open on this node; close one and try again",
    )
}

/// The response of an event stream: the events, keep-alive comments between them.
fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Peer

/// The peer and file lists of the network, as the poller last saw them.
#[derive(Clone, Debug, Default, PartialEq)]
struct NetworkLists {
    peers: Option<PeersView>,
    files: Option<NetworkFilesView>,
}

impl NetworkLists {
    /// Whether `other` differs in anything but heartbeat ages, which move on every poll.
    fn differs(&self, other: &Self) -> bool {
        let ageless = |p: &Option<PeersView>| {
            p.as_ref().map(|p| {
                let mut p = p.clone();
                p.peers.iter_mut().for_each(|p| p.last_seen_ms = 0);
                p
            })
        };
        self.files != other.files || ageless(&self.peers) != ageless(&other.peers)
    }
}

/// What a peer's event streams share: the limit on open streams and the network poller.
#[derive(Debug)]
pub(crate) struct PeerHub {
    clients: Arc<Semaphore>,
    lists: watch::Sender<NetworkLists>,
    /// Whether the poller runs; changed only together with subscribing and with the
    /// poller's check for listeners, so a stream never subscribes to a poller that is ending.
    polling: Mutex<bool>,
    /// Where the poller runs: the web server waits for it when it ends.
    tasks: TaskTracker,
}

impl PeerHub {
    fn new(max_clients: usize, tasks: TaskTracker) -> Self {
        Self {
            clients: Arc::new(Semaphore::new(max_clients)),
            lists: watch::channel(NetworkLists::default()).0,
            polling: Mutex::new(false),
            tasks,
        }
    }

    /// A receiver of the network lists, starting the poller if none runs.
    fn subscribe(
        self: &Arc<Self>,
        peer: &PeerHandle,
        shutdown: &CancellationToken,
    ) -> watch::Receiver<NetworkLists> {
        let mut polling = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.lists.subscribe();
        if !*polling {
            *polling = true;
            self.tasks
                .spawn(poll_network(self.clone(), peer.clone(), shutdown.clone()));
        }
        receiver
    }
}

/// Asks the index for the peer and file lists every [`NETWORK_POLL`] while a stream
/// listens, and publishes them when they changed.
async fn poll_network(hub: Arc<PeerHub>, peer: PeerHandle, shutdown: CancellationToken) {
    loop {
        let poll = async {
            let peers = network_peers(&peer).await;
            let files = peer.network_files().await;
            (peers, files)
        };
        let (peers, files) = tokio::select! {
            lists = poll => lists,
            () = shutdown.cancelled() => return,
        };
        hub.lists.send_if_modified(|lists| {
            // A failed poll keeps what was known (a peer without an index has neither).
            let next = NetworkLists {
                peers: peers.ok().or_else(|| lists.peers.clone()),
                files: files
                    .ok()
                    .map(|(files, total)| NetworkFilesView {
                        files: files.iter().map(NetworkFileView::from).collect(),
                        total,
                    })
                    .or_else(|| lists.files.clone()),
            };
            let differs = lists.differs(&next);
            if differs {
                *lists = next;
            }
            differs
        });
        tokio::select! {
            () = tokio::time::sleep(NETWORK_POLL) => {}
            () = shutdown.cancelled() => return,
        }
        let mut polling = hub.polling.lock().unwrap_or_else(|e| e.into_inner());
        if hub.lists.receiver_count() == 0 {
            *polling = false;
            return;
        }
    }
}

/// The route of a peer's event stream.
pub(crate) fn peer_route(app: &PeerApp) -> MethodRouter<PeerApp> {
    let hub = Arc::new(PeerHub::new(
        app.config.max_event_clients,
        app.tasks.clone(),
    ));
    get(move |State(app): State<PeerApp>| {
        let hub = hub.clone();
        async move { peer_events(app, hub) }
    })
}

fn peer_events(app: PeerApp, hub: Arc<PeerHub>) -> Response {
    let Ok(permit) = hub.clients.clone().try_acquire_owned() else {
        return busy().into_response();
    };
    // Subscribed before the snapshot is taken, so no change falls between the two.
    let changes = app.peer.subscribe_changes();
    let lists = hub.subscribe(&app.peer, &app.shutdown);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stream = PeerStream {
        app,
        changes,
        changes_open: true,
        lists,
        lists_open: true,
        tick,
        since: 0,
        throttle: Throttle::new(PROGRESS_EVERY),
        queue: VecDeque::new(),
        _permit: permit,
    };
    stream.snapshot();
    sse(futures::stream::unfold(stream, |mut stream| async move {
        stream.next().await.map(|event| (Ok(event), stream))
    }))
}

/// One client's peer stream.
struct PeerStream {
    app: PeerApp,
    changes: broadcast::Receiver<PeerChange>,
    changes_open: bool,
    lists: watch::Receiver<NetworkLists>,
    lists_open: bool,
    tick: tokio::time::Interval,
    /// The download registry's version up to which this stream has taken every change.
    since: u64,
    throttle: Throttle,
    /// Events ready to go, oldest first.
    queue: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
}

impl PeerStream {
    /// The next event, or `None` when the node shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            tokio::select! {
                biased;
                () = self.app.shutdown.cancelled() => return None,
                change = self.changes.recv(), if self.changes_open => self.on_change(change),
                _ = self.tick.tick() => self.send_downloads(),
                seen = self.lists.changed(), if self.lists_open => match seen {
                    Ok(()) => self.queue_lists(),
                    Err(_) => self.lists_open = false,
                },
            }
        }
    }

    fn push(&mut self, event: Option<Event>) {
        self.queue.extend(event);
    }

    /// Everything a page needs to draw itself, then the network lists if known.
    fn snapshot(&mut self) {
        let peer = &self.app.peer;
        let (mut downloads, since) = peer.downloads_changed_since(0);
        downloads.sort_by_key(|d| d.id);
        self.since = since;
        self.throttle.reset(&downloads, Instant::now());
        let view = PeerSnapshotView {
            status: PeerStatusView::new(&peer.status(), self.app.config.found_index_by.clone()),
            files: shared_files(peer),
            downloads: downloads.iter().map(DownloadView::from).collect(),
            messages: peer.messages().iter().map(MessageView::from).collect(),
        };
        // A snapshot replaces everything queued before it.
        self.queue.clear();
        self.push(event("snapshot", &view));
        self.queue_lists();
    }

    fn queue_lists(&mut self) {
        let lists = self.lists.borrow_and_update().clone();
        if let Some(peers) = &lists.peers {
            self.push(event("peers", peers));
        }
        if let Some(files) = &lists.files {
            self.push(event("network_files", files));
        }
    }

    fn on_change(&mut self, change: Result<PeerChange, broadcast::error::RecvError>) {
        match change {
            // A state change: sent at once if it is a final one.
            Ok(PeerChange::Download(_)) => self.send_downloads(),
            Ok(PeerChange::FileShared(file_id)) => {
                let file = self
                    .app
                    .peer
                    .files()
                    .into_iter()
                    .find(|f| f.file_id == file_id);
                if let Some(file) = file {
                    self.push(event("file_shared", &SharedFileView::from(&file)));
                }
            }
            Ok(PeerChange::FileUnshared(file_id)) => self.push(event(
                "file_unshared",
                &UnsharedView {
                    file_id: file_id.to_string(),
                },
            )),
            Ok(PeerChange::Message(message)) => {
                self.push(event("message", &MessageView::from(&message)));
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, "event stream fell behind; sending a fresh snapshot");
                self.snapshot();
            }
            Err(broadcast::error::RecvError::Closed) => self.changes_open = false,
        }
    }

    /// Queues the download jobs that changed since the last look, as far as the throttle
    /// lets them through. Only the changed jobs are read, so a tick costs little however many
    /// jobs the registry keeps.
    fn send_downloads(&mut self) {
        let (changed, since) = self.app.peer.downloads_changed_since(self.since);
        self.since = since;
        for info in self.throttle.release(changed, Instant::now()) {
            self.push(event("download", &DownloadView::from(&info)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// The route of the index server's event stream.
pub(crate) fn server_route(app: &ServerApp) -> MethodRouter<ServerApp> {
    let clients = Arc::new(Semaphore::new(app.config.max_event_clients));
    get(move |State(app): State<ServerApp>| {
        let clients = clients.clone();
        async move { server_events(app, clients) }
    })
}

/// What the server's streams compare between polls: the views without the fields that move
/// on every poll (uptime, heartbeat ages), which a page counts on by itself.
#[derive(Clone, Debug, PartialEq)]
struct ServerSeen {
    status: ServerStatusView,
    peers: PeersView,
    files: NetworkFilesView,
}

impl ServerSeen {
    fn of(app: &ServerApp) -> Self {
        Self {
            status: app.status(),
            peers: app.peers(),
            files: app.files(),
        }
    }

    /// `self` without the fields that move by themselves.
    fn steady(&self) -> Self {
        let mut steady = self.clone();
        steady.status.uptime_ms = 0;
        steady
            .peers
            .peers
            .iter_mut()
            .for_each(|p| p.last_seen_ms = 0);
        steady
    }
}

fn server_events(app: ServerApp, clients: Arc<Semaphore>) -> Response {
    let Ok(permit) = clients.try_acquire_owned() else {
        return busy().into_response();
    };
    let first = ServerSeen::of(&app);
    let mut tick = tokio::time::interval(SERVER_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let snapshot = ServerSnapshotView {
        status: first.status.clone(),
        peers: first.peers.clone(),
        files: first.files.clone(),
    };
    let stream = ServerStream {
        last: first.steady(),
        app,
        tick,
        queue: event("snapshot", &snapshot).into_iter().collect(),
        _permit: permit,
    };
    sse(futures::stream::unfold(stream, |mut stream| async move {
        stream.next().await.map(|event| (Ok(event), stream))
    }))
}

/// One client's server stream.
struct ServerStream {
    app: ServerApp,
    /// What was last sent, without the fields that move by themselves.
    last: ServerSeen,
    tick: tokio::time::Interval,
    queue: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
}

impl ServerStream {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            tokio::select! {
                biased;
                () = self.app.shutdown.cancelled() => return None,
                _ = self.tick.tick() => self.poll(),
            }
        }
    }

    fn poll(&mut self) {
        let now = ServerSeen::of(&self.app);
        let steady = now.steady();
        if steady.status != self.last.status {
            self.queue.extend(event("status", &now.status));
        }
        if steady.peers != self.last.peers {
            self.queue.extend(event("peers", &now.peers));
        }
        if steady.files != self.last.files {
            self.queue.extend(event("files", &now.files));
        }
        self.last = steady;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::PeerView;

    const GAP: Duration = Duration::from_millis(250);

    /// Job `id` at `version`, running or done.
    fn job(id: u64, version: u64, finished: bool) -> DownloadInfo {
        DownloadInfo {
            id: DownloadId(id),
            target: "t".into(),
            out: "/out".into(),
            name: None,
            file_id: None,
            folder_id: None,
            files_total: 1,
            files_done: 0,
            files_skipped: 0,
            conflicts: 0,
            files_failed: 0,
            size: 0,
            done: 0,
            resumed: 0,
            fetched: 0,
            speed: 0.0,
            eta: None,
            hosts_known: 0,
            hosts_delivering: 0,
            state: if finished {
                p2p_peer::DownloadState::Done
            } else {
                p2p_peer::DownloadState::Running
            },
            path: None,
            started: std::time::SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            version,
        }
    }

    /// The (handle, version) pairs `release` lets out.
    fn release(throttle: &mut Throttle, jobs: &[DownloadInfo], now: Instant) -> Vec<(u64, u64)> {
        throttle
            .release(jobs.iter().cloned(), now)
            .iter()
            .map(|d| (d.id.0, d.version))
            .collect()
    }

    #[test]
    fn a_version_goes_out_once() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        assert_eq!(release(&mut throttle, &[job(1, 1, false)], t0), [(1, 1)]);
        let later = t0 + GAP * 10;
        assert!(release(&mut throttle, &[job(1, 1, false)], later).is_empty());
        assert!(release(&mut throttle, &[], later).is_empty());
    }

    #[test]
    fn progress_waits_for_the_gap_but_the_final_state_does_not() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        assert_eq!(release(&mut throttle, &[job(1, 1, false)], t0), [(1, 1)]);
        assert!(release(&mut throttle, &[job(1, 2, false)], t0 + GAP / 2).is_empty());
        // Held back, then out when the gap ends, though the job did not move again.
        assert!(release(&mut throttle, &[], t0 + GAP / 2 + GAP / 4).is_empty());
        assert_eq!(release(&mut throttle, &[], t0 + GAP), [(1, 2)]);
        // The latest version wins over a held one.
        assert!(release(&mut throttle, &[job(1, 3, false)], t0 + GAP).is_empty());
        assert!(release(&mut throttle, &[job(1, 4, false)], t0 + GAP).is_empty());
        let end = t0 + GAP + Duration::from_millis(1);
        assert_eq!(
            release(&mut throttle, &[job(1, 5, true), job(2, 6, false)], end),
            [(1, 5), (2, 6)],
            "the final state at once; another job has its own clock"
        );
    }

    #[test]
    fn at_most_four_a_second_plus_the_first_and_the_last() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        // A version bump every millisecond for 3 s, offered every millisecond.
        let mut sent = 0;
        for ms in 0..3000u64 {
            let now = t0 + Duration::from_millis(ms);
            sent += release(&mut throttle, &[job(7, ms + 1, false)], now).len();
        }
        let end = t0 + Duration::from_millis(3000);
        sent += release(&mut throttle, &[job(7, 3001, true)], end).len();
        assert!(sent <= 3 * 4 + 2, "{sent} events in 3 s");
        assert!(
            sent >= 3 * 4,
            "{sent} events in 3 s: progress was held back"
        );
    }

    #[test]
    fn a_snapshot_counts_as_sent() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        release(&mut throttle, &[job(1, 1, false)], t0);
        assert!(release(&mut throttle, &[job(1, 2, false)], t0).is_empty());
        throttle.reset(&[job(1, 3, false)], t0);
        assert!(
            release(&mut throttle, &[], t0 + GAP).is_empty(),
            "what was held went out in the snapshot"
        );
        assert!(release(&mut throttle, &[job(1, 3, false)], t0 + GAP).is_empty());
        assert_eq!(
            release(&mut throttle, &[job(1, 4, false)], t0 + GAP),
            [(1, 4)]
        );
    }

    #[test]
    fn a_job_is_forgotten_once_its_final_state_went_out() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        // Thousands of jobs come and go while a stream stays open.
        for id in 0..5000 {
            let now = t0 + Duration::from_millis(id);
            release(&mut throttle, &[job(id, 2 * id + 1, false)], now);
            release(&mut throttle, &[job(id, 2 * id + 2, true)], now);
        }
        assert_eq!(throttle.remembered(), 0);
        // One resumed later is new again, and goes out at once.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            release(&mut throttle, &[job(3, 20_000, false)], later),
            [(3, 20_000)]
        );
        throttle.reset(&[job(1, 1, true), job(2, 2, false)], later);
        assert_eq!(
            throttle.remembered(),
            1,
            "a snapshot's finished jobs are done with"
        );
    }

    #[test]
    fn heartbeat_ages_alone_are_no_change() {
        let peer = |age| PeerView {
            peer_id: "p".into(),
            node_id: "n".into(),
            addr: "127.0.0.1:1".into(),
            files: 1,
            last_seen_ms: age,
            this_peer: false,
        };
        let lists = |age| NetworkLists {
            peers: Some(PeersView {
                peers: vec![peer(age)],
                total: 1,
            }),
            files: None,
        };
        assert!(!lists(1).differs(&lists(900)));
        let mut more = lists(1);
        more.peers.as_mut().unwrap().total = 2;
        assert!(lists(1).differs(&more));
        assert!(lists(1).differs(&NetworkLists::default()));
    }
}
