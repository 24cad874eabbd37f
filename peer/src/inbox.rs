//! [`Inbox`]: short text messages other peers sent this one, and those this one sent (marked
//! `sent`), kept for `messages` and announced to whoever listens (the shell prints received
//! ones above its prompt; the web API shows the conversation).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use p2p_protocol::RemoteText;
use tokio::sync::broadcast;

use crate::downloads::PeerChange;

/// Messages kept; older ones are forgotten.
const KEPT: usize = 100;

/// One message received. `from` and `text` are the sender's words: they show themselves
/// escaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// How the sender named itself (its words: anyone can claim any name here).
    pub from: RemoteText,
    /// Who sent it: the node id the sender proved in the TLS handshake.
    pub node: p2p_protocol::NodeId,
    /// The name this peer's allow-list gives that node, if any (the receiver's words).
    pub name: Option<String>,
    /// Where the connection came from.
    pub remote: SocketAddr,
    /// The text.
    pub text: RemoteText,
    /// When it arrived (or was sent).
    pub at: SystemTime,
    /// `true` for a message this peer sent: `node`, `name` and `remote` are then the
    /// recipient's, and `from` is this peer's own address.
    pub sent: bool,
}

/// Messages received during this run.
#[derive(Debug)]
pub struct Inbox {
    /// std Mutex: a push or a copy, never held across an await.
    kept: Mutex<VecDeque<ReceivedMessage>>,
    live: broadcast::Sender<ReceivedMessage>,
    /// The node's change feed, told of every message too.
    changes: Option<broadcast::Sender<PeerChange>>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            kept: Mutex::new(VecDeque::new()),
            live: broadcast::channel(KEPT).0,
            changes: None,
        }
    }
}

impl Inbox {
    /// An inbox that also announces each message on `changes` (the node's change feed).
    pub fn with_changes(changes: broadcast::Sender<PeerChange>) -> Self {
        Self {
            changes: Some(changes),
            ..Self::default()
        }
    }

    /// Stores a message and tells the listeners.
    pub fn push(&self, message: ReceivedMessage) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(message.clone());
        drop(kept);
        // Nobody listening is fine.
        if let Some(changes) = &self.changes {
            let _ = changes.send(PeerChange::Message(message.clone()));
        }
        let _ = self.live.send(message);
    }

    /// Every message kept, oldest first.
    pub fn list(&self) -> Vec<ReceivedMessage> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Messages as they arrive.
    pub fn subscribe(&self) -> broadcast::Receiver<ReceivedMessage> {
        self.live.subscribe()
    }
}
