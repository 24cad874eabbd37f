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

use std::collections::{HashMap, VecDeque};
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
#[derive(Debug)]
pub(crate) struct Throttle {
    min_gap: Duration,
    /// Per job: the version last sent and when.
    sent: HashMap<DownloadId, (u64, Instant)>,
}

impl Throttle {
    pub(crate) fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            sent: HashMap::new(),
        }
    }

    /// Whether to send job `id` at `version` now, and if so, remember it as sent. A version
    /// already sent never goes again; a new one waits `min_gap` after the last send, unless
    /// it is the job's final state.
    pub(crate) fn admit(
        &mut self,
        id: DownloadId,
        version: u64,
        finished: bool,
        now: Instant,
    ) -> bool {
        if let Some(&(sent, at)) = self.sent.get(&id) {
            if sent == version {
                return false;
            }
            if !finished && now.saturating_duration_since(at) < self.min_gap {
                return false;
            }
        }
        self.sent.insert(id, (version, now));
        true
    }

    /// Forgets everything and marks `jobs` as sent (they just went out in a snapshot).
    pub(crate) fn reset<'a>(
        &mut self,
        jobs: impl IntoIterator<Item = &'a DownloadInfo>,
        now: Instant,
    ) {
        self.sent = jobs.into_iter().map(|d| (d.id, (d.version, now))).collect();
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
}

impl PeerHub {
    fn new(max_clients: usize) -> Self {
        Self {
            clients: Arc::new(Semaphore::new(max_clients)),
            lists: watch::channel(NetworkLists::default()).0,
            polling: Mutex::new(false),
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
            tokio::spawn(poll_network(self.clone(), peer.clone(), shutdown.clone()));
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
    let hub = Arc::new(PeerHub::new(app.config.max_event_clients));
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
                _ = self.tick.tick() => self.on_tick(),
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
        let downloads = peer.downloads();
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
            Ok(PeerChange::Download(id)) => {
                if let Some(info) = self.app.peer.download_info(id) {
                    self.offer(&info, Instant::now());
                }
            }
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

    fn on_tick(&mut self) {
        let now = Instant::now();
        for info in self.app.peer.downloads() {
            self.offer(&info, now);
        }
    }

    /// Queues job `info` if the throttle lets it through.
    fn offer(&mut self, info: &DownloadInfo, now: Instant) {
        if self
            .throttle
            .admit(info.id, info.version, info.state.is_finished(), now)
        {
            self.push(event("download", &DownloadView::from(info)));
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
        peers: first.peers.peers.clone(),
        files: first.files.files.clone(),
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

    #[test]
    fn a_version_goes_out_once() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        let id = DownloadId(1);
        assert!(throttle.admit(id, 1, false, t0));
        assert!(!throttle.admit(id, 1, false, t0 + GAP * 10));
        assert!(!throttle.admit(id, 1, true, t0 + GAP * 10));
    }

    #[test]
    fn progress_waits_for_the_gap_but_the_final_state_does_not() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        let id = DownloadId(1);
        assert!(throttle.admit(id, 1, false, t0));
        assert!(!throttle.admit(id, 2, false, t0 + GAP / 2));
        assert!(throttle.admit(id, 3, false, t0 + GAP));
        assert!(throttle.admit(id, 4, true, t0 + GAP + Duration::from_millis(1)));
        // Another job has its own clock.
        assert!(throttle.admit(DownloadId(2), 1, false, t0 + GAP));
    }

    #[test]
    fn at_most_four_a_second_plus_the_first_and_the_last() {
        let mut throttle = Throttle::new(GAP);
        let t0 = Instant::now();
        let id = DownloadId(7);
        // A version bump every millisecond for 3 s, offered every millisecond.
        let mut sent = 0;
        for ms in 0..3000u64 {
            sent += usize::from(throttle.admit(id, ms, false, t0 + Duration::from_millis(ms)));
        }
        sent += usize::from(throttle.admit(id, 3000, true, t0 + Duration::from_millis(3000)));
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
        throttle.admit(DownloadId(1), 1, false, t0);
        throttle.reset(&[], t0);
        // Forgotten: goes out again (a job that a fresh snapshot no longer lists is new).
        assert!(throttle.admit(DownloadId(1), 1, false, t0));
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
