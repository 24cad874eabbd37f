//! `IndexLink`: this peer's standing with one index server: the client that talks to it,
//! the registration it gave us, and how the last attempt to reach it went ([`IndexStatus`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use p2p_protocol::{NodeId, PeerId};

use super::client::{IndexClient, Session};
use crate::config::{IndexSpec, Rediscover};

/// Where this peer stands with one index server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexState {
    /// Not registered yet: the first attempt has not ended.
    Connecting,
    /// Registered; heartbeats are answered.
    Registered,
    /// The last attempt failed (unreachable, refused, or the wrong node): the peer keeps
    /// trying every heartbeat interval. The text is the error a user sees.
    Down(String),
}

/// One index server as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexStatus {
    /// Its address now (it changes when mDNS finds the server again elsewhere).
    pub addr: SocketAddr,
    /// Its node id, as its last handshake showed it (or as pinned, before the first one).
    pub node_id: Option<NodeId>,
    /// Where this peer stands with it.
    pub state: IndexState,
    /// The id this index gave this peer (each index numbers its own peers).
    pub peer_id: Option<PeerId>,
    /// The address this index hands out for this peer.
    pub advertised_addr: Option<SocketAddr>,
    /// When it last answered a heartbeat or a registration.
    pub last_answer: Option<SystemTime>,
}

/// Session and health: changed together, read together.
#[derive(Debug)]
struct Standing {
    /// `None` until registered, and while registering again fails.
    session: Option<Session>,
    state: IndexState,
    last_answer: Option<SystemTime>,
}

/// This peer's standing with one index server.
#[derive(Debug)]
pub(crate) struct IndexLink {
    pub client: IndexClient,
    /// Finds this index again when it stops answering (the one found over mDNS).
    pub rediscover: Option<Arc<dyn Rediscover>>,
    /// The id it was pinned to, for `status` before the first handshake.
    pinned: Option<NodeId>,
    /// std Mutex: read or replaced, never held across an await.
    standing: Mutex<Standing>,
    /// This index missed a share or an unshare (it was down, or failed it): it registers us
    /// afresh, with everything shared then, once it answers again.
    missed: AtomicBool,
}

impl IndexLink {
    /// A link to the index `spec` names; nothing is sent yet.
    pub fn new(spec: &IndexSpec, timeout: std::time::Duration, tls: p2p_transport::Tls) -> Self {
        Self {
            client: IndexClient::new(spec.addr, timeout, tls).expecting(spec.node_id),
            rediscover: spec.rediscover.clone(),
            pinned: spec.node_id,
            standing: Mutex::new(Standing {
                session: None,
                state: IndexState::Connecting,
                last_answer: None,
            }),
            missed: AtomicBool::new(false),
        }
    }

    /// Whether the last attempt to reach this index failed.
    pub fn is_down(&self) -> bool {
        matches!(self.standing().state, IndexState::Down(_))
    }

    /// This index missed a share or an unshare.
    pub fn missed(&self) {
        self.missed.store(true, Ordering::Relaxed);
    }

    /// Whether this index missed something since the last call.
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registration this index gave us, if we have one now.
    pub fn session(&self) -> Option<Session> {
        self.standing().session.clone()
    }

    /// Registered (again): `session` stands from now on.
    pub fn registered(&self, session: Session) {
        let mut standing = self.standing();
        standing.session = Some(session);
        standing.state = IndexState::Registered;
        standing.last_answer = Some(SystemTime::now());
    }

    /// A heartbeat was answered.
    pub fn answered(&self) {
        let mut standing = self.standing();
        standing.state = IndexState::Registered;
        standing.last_answer = Some(SystemTime::now());
    }

    /// The last attempt failed with `error`; the session (if any) is kept until the index
    /// says it forgot us.
    pub fn failed(&self, error: &crate::PeerError) {
        self.standing().state = IndexState::Down(error.to_string());
    }

    /// The index forgot us, or we left it.
    pub fn forget_session(&self) {
        self.standing().session = None;
    }

    /// The index's node id: as its last handshake showed it, else as pinned.
    pub fn node_id(&self) -> Option<NodeId> {
        self.client.server_node_id().or(self.pinned)
    }

    /// What `status` shows for this index.
    pub fn status(&self) -> IndexStatus {
        let standing = self.standing();
        IndexStatus {
            addr: self.client.server(),
            node_id: self.node_id(),
            state: standing.state.clone(),
            peer_id: standing.session.as_ref().map(|s| s.peer_id),
            advertised_addr: standing.session.as_ref().map(|s| s.addr),
            last_answer: standing.last_answer,
        }
    }
}
