//! Deliveries: which client has fetched every chunk of a shared file or folder from this peer,
//! for a sender that stops once what it shares has arrived (`p2p-transfer send`).
//!
//! [`DeliveryBook`] is pure state: the watched files and folders, and per client (by node id,
//! from its TLS handshake, so a receiver that reconnects or comes back after an interruption
//! is the same client) the distinct chunks it was sent. A watched item is delivered to a client
//! once every distinct chunk of it (a chunk is a file id and an index; a file that appears twice
//! counts once) has been sent to that client during this run, over any number of connections.
//! An item without chunks (an empty file, a folder of empty files) is delivered when the
//! client asks for its manifest or head.
//!
//! A client may also say it has an item whole (a `Received` request): that counts as
//! delivered too, however it got the item (already on its disk, resumed from an earlier run of
//! the sender, chunks from other hosts). Counting chunks alone would miss those, as only what
//! this peer sent counts; it stays for receivers that don't confirm (built before `Received`).
//!
//! The receiving side is [`PeerHandle::confirm_received`], which sends that request.
//!
//! `Deliveries` wraps the book in one std mutex for the chunk server, which calls it after
//! each chunk it has sent; with nothing watched it costs an atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::{FileId, NodeId, PeerRequest, PeerResponse, ProtocolError};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::PeerHandle;
use crate::error::PeerError;
use crate::sharing::Shared;

/// How long a receiver waits for the sender's `ReceivedAck` (after the connect timeout): the
/// sender answers from memory.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// One watched item has reached one client whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Which item: its position in the list given to [`PeerHandle::watch_deliveries`].
    pub item: usize,
    /// The client, as its TLS handshake proved it.
    pub client: NodeId,
    /// Distinct chunks it was sent.
    pub chunks: u64,
}

/// A watched item: its id (a file's, or a folder's bytes) and what delivering it takes.
#[derive(Debug)]
struct Watched {
    id: FileId,
    /// Distinct chunks.
    total: u64,
    /// Whom to tell, and as which item of their list.
    tell: UnboundedSender<Delivery>,
    item: usize,
}

/// What one client has been sent, and how far each watched item got.
#[derive(Debug, Default)]
struct Client {
    sent: HashSet<(FileId, u32)>,
    /// Per watched item (same index as `DeliveryBook::watched`): distinct chunks sent.
    progress: Vec<u64>,
    delivered: Vec<bool>,
}

/// Pure state: what is watched, and what each client was sent. No I/O, no locks.
#[derive(Debug, Default)]
pub struct DeliveryBook {
    watched: Vec<Watched>,
    /// Chunks per file id, and the watched items that file belongs to.
    files: HashMap<FileId, (u32, Vec<usize>)>,
    clients: HashMap<NodeId, Client>,
}

impl DeliveryBook {
    /// Watches an item whose files are `files` (file id and chunk count each; repeats
    /// allowed) under `id`; deliveries go to `tell`, as item number `item`.
    fn watch(
        &mut self,
        id: FileId,
        files: impl IntoIterator<Item = (FileId, u32)>,
        tell: UnboundedSender<Delivery>,
        item: usize,
    ) {
        let at = self.watched.len();
        let mut total = 0u64;
        let mut seen = HashSet::new();
        for (file, chunks) in files {
            if !seen.insert(file) {
                continue;
            }
            total += u64::from(chunks);
            let entry = self.files.entry(file).or_insert((chunks, Vec::new()));
            entry.1.push(at);
        }
        self.watched.push(Watched {
            id,
            total,
            tell,
            item,
        });
        // Clients met before count what they were sent of it already (chunks of files
        // watched under another item).
        let mut done = Vec::new();
        for (node, client) in &mut self.clients {
            let progress = client
                .sent
                .iter()
                .filter(|(file, _)| seen.contains(file))
                .count() as u64;
            let delivered = total > 0 && progress >= total;
            client.progress.push(progress);
            client.delivered.push(delivered);
            if delivered {
                done.push(*node);
            }
        }
        for node in done {
            self.tell(at, node);
        }
    }

    fn client(&mut self, node: NodeId) -> &mut Client {
        let watched = self.watched.len();
        self.clients.entry(node).or_insert_with(|| Client {
            sent: HashSet::new(),
            progress: vec![0; watched],
            delivered: vec![false; watched],
        })
    }

    /// Chunk `index` of `file` was sent to `node` whole: the deliveries it completes.
    pub fn sent(&mut self, node: NodeId, file: FileId, index: u32) -> Vec<Delivery> {
        let Some((chunks, items)) = self.files.get(&file) else {
            return Vec::new();
        };
        if index >= *chunks {
            return Vec::new();
        }
        let items: Vec<(usize, u64)> = items
            .iter()
            .map(|&at| (at, self.watched[at].total))
            .collect();
        let client = self.client(node);
        if !client.sent.insert((file, index)) {
            return Vec::new();
        }
        let mut done = Vec::new();
        for (at, total) in items {
            client.progress[at] += 1;
            if client.progress[at] >= total && !client.delivered[at] {
                client.delivered[at] = true;
                done.push(at);
            }
        }
        done.into_iter().map(|at| self.tell(at, node)).collect()
    }

    /// `node` asked for the manifest or head of `id`: delivers a watched item without chunks.
    pub fn asked(&mut self, node: NodeId, id: FileId) -> Vec<Delivery> {
        let empty: Vec<usize> = (0..self.watched.len())
            .filter(|&at| self.watched[at].id == id && self.watched[at].total == 0)
            .collect();
        if empty.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        let client = self.client(node);
        for at in empty {
            if !client.delivered[at] {
                client.delivered[at] = true;
                done.push(at);
            }
        }
        done.into_iter().map(|at| self.tell(at, node)).collect()
    }

    /// `node` says it has `id` whole and verified: delivers every watched item with that id.
    pub fn confirmed(&mut self, node: NodeId, id: FileId) -> Vec<Delivery> {
        let items: Vec<usize> = (0..self.watched.len())
            .filter(|&at| self.watched[at].id == id)
            .collect();
        if items.is_empty() {
            return Vec::new();
        }
        let client = self.client(node);
        let done: Vec<usize> = items
            .into_iter()
            .filter(|&at| !std::mem::replace(&mut client.delivered[at], true))
            .collect();
        done.into_iter().map(|at| self.tell(at, node)).collect()
    }

    /// Tells the watcher of item `at` (a watcher gone away is fine) and returns the delivery.
    fn tell(&self, at: usize, client: NodeId) -> Delivery {
        let watched = &self.watched[at];
        let delivery = Delivery {
            item: watched.item,
            client,
            chunks: watched.total,
        };
        let _ = watched.tell.send(delivery.clone());
        delivery
    }

    fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

/// The book behind one lock, as the chunk server and the handle share it, and the chunk
/// server's open connections per client: a sender waits for the receiver to hang up before
/// it exits, so that closing first can't cut off the last bytes it sent.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    /// Whether anything is watched: the chunk server's fast path.
    active: AtomicBool,
    book: Mutex<DeliveryBook>,
    /// Open chunk-server connections per client. std Mutex: a count, never held across an
    /// await.
    open: Mutex<HashMap<NodeId, usize>>,
    /// Woken whenever a connection closes.
    closed: Notify,
}

impl Deliveries {
    fn book(&self) -> std::sync::MutexGuard<'_, DeliveryBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A chunk was sent whole.
    pub(crate) fn sent(&self, node: NodeId, file: FileId, index: u32) {
        if self.active.load(Ordering::Relaxed) {
            self.book().sent(node, file, index);
        }
    }

    /// `node` confirmed it has `id` whole.
    pub(crate) fn confirmed(&self, node: NodeId, id: FileId) {
        if self.active.load(Ordering::Relaxed) {
            self.book().confirmed(node, id);
        }
    }

    /// A connection from `node` was admitted.
    pub(crate) fn opened(&self, node: NodeId) {
        *self.open_counts().entry(node).or_default() += 1;
    }

    /// A connection from `node` ended.
    pub(crate) fn closed(&self, node: NodeId) {
        let mut open = self.open_counts();
        if let Some(count) = open.get_mut(&node) {
            *count -= 1;
            if *count == 0 {
                open.remove(&node);
            }
        }
        drop(open);
        self.closed.notify_waiters();
    }

    fn open_counts(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A manifest or a folder's head was asked for.
    pub(crate) fn asked(&self, node: NodeId, id: FileId) {
        if self.active.load(Ordering::Relaxed) {
            self.book().asked(node, id);
        }
    }
}

impl PeerHandle {
    /// Watches `items` (as [`PeerHandle::share_paths`] returned them) until the returned
    /// receiver is dropped (the watch itself lasts as long as the peer): a [`Delivery`] comes
    /// each time one client has been sent every distinct chunk of one item during this run.
    /// Call it before handing out the ids, so that no chunk sent goes uncounted.
    pub fn watch_deliveries(&self, items: &[Shared]) -> UnboundedReceiver<Delivery> {
        let (tell, deliveries) = unbounded_channel();
        let mut book = self.node.deliveries.book();
        for (item, shared) in items.iter().enumerate() {
            match shared {
                Shared::File { manifest, .. } => book.watch(
                    manifest.id(),
                    [(manifest.id(), manifest.chunks.len() as u32)],
                    tell.clone(),
                    item,
                ),
                Shared::Folder {
                    folder_id, files, ..
                } => book.watch(
                    FileId(folder_id.0),
                    files.iter().map(|(_, m)| (m.id(), m.chunks.len() as u32)),
                    tell.clone(),
                    item,
                ),
            }
        }
        let active = !book.is_empty();
        drop(book);
        self.node.deliveries.active.store(active, Ordering::Relaxed);
        deliveries
    }

    /// Tells the sender `node` at `to` that this peer has the file or folder `id` whole and
    /// verified (a `Received` request, on a connection of its own), so that a sender waiting
    /// for its deliveries counts it delivered however it arrived. A sender built before
    /// `Received` refuses it (`bad_request`): the caller decides whether that matters.
    pub async fn confirm_received(
        &self,
        to: SocketAddr,
        node: NodeId,
        id: FileId,
    ) -> Result<(), PeerError> {
        let request = PeerRequest::Received { id };
        match self
            .one_request(to, Some(node), &request, CONFIRM_TIMEOUT)
            .await?
        {
            (PeerResponse::ReceivedAck {}, _) => Ok(()),
            _ => Err(PeerError::PeerUnreachable {
                addr: to,
                cause: ProtocolError::Unexpected("expected ReceivedAck"),
            }),
        }
    }

    /// Returns once `client` holds no connection to this peer's chunk server (at once if it
    /// holds none now).
    pub async fn client_gone(&self, client: NodeId) {
        let deliveries = &self.node.deliveries;
        loop {
            let closed = deliveries.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close in between still wakes us.
            closed.as_mut().enable();
            if !deliveries.open_counts().contains_key(&client) {
                return;
            }
            closed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn file(n: u8) -> FileId {
        FileId([n; 32])
    }

    #[test]
    fn a_client_that_got_every_chunk_is_delivered_once() {
        let mut book = DeliveryBook::default();
        let (tell, mut told) = unbounded_channel();
        book.watch(file(1), [(file(1), 3)], tell, 0);
        assert!(book.sent(node(1), file(1), 0).is_empty());
        assert!(book.sent(node(1), file(1), 1).is_empty());
        // Another client's chunks don't add up with the first's.
        assert!(book.sent(node(2), file(1), 2).is_empty());
        // The same chunk again (a retry) counts once; an index past the end not at all.
        assert!(book.sent(node(1), file(1), 1).is_empty());
        assert!(book.sent(node(1), file(1), 7).is_empty());
        let done = book.sent(node(1), file(1), 2);
        assert_eq!(
            done,
            vec![Delivery {
                item: 0,
                client: node(1),
                chunks: 3
            }]
        );
        assert_eq!(told.try_recv().unwrap(), done[0]);
        // Sent again: not delivered twice.
        assert!(book.sent(node(1), file(1), 2).is_empty());
        assert!(told.try_recv().is_err());
    }

    #[test]
    fn a_folder_counts_each_distinct_chunk_of_its_files() {
        let mut book = DeliveryBook::default();
        let (tell, _told) = unbounded_channel();
        // File 2 twice (two copies in the folder), file 3 empty.
        let files = [(file(2), 2), (file(2), 2), (file(3), 0), (file(4), 1)];
        book.watch(file(9), files, tell.clone(), 0);
        // The same file shared on its own too.
        book.watch(file(4), [(file(4), 1)], tell, 1);
        assert_eq!(book.sent(node(1), file(4), 0).len(), 1, "the lone file");
        assert!(book.sent(node(1), file(2), 0).is_empty());
        let done = book.sent(node(1), file(2), 1);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].item, done[0].chunks), (0, 3));
        // Unwatched files are ignored.
        assert!(book.sent(node(1), file(5), 0).is_empty());
    }

    #[test]
    fn an_item_without_chunks_is_delivered_when_asked_for() {
        let mut book = DeliveryBook::default();
        let (tell, _told) = unbounded_channel();
        book.watch(file(3), [(file(3), 0)], tell, 0);
        assert!(book.asked(node(1), file(4)).is_empty());
        assert_eq!(book.asked(node(1), file(3)).len(), 1);
        assert!(book.asked(node(1), file(3)).is_empty(), "once");
    }

    #[test]
    fn a_confirmation_delivers_whatever_was_sent() {
        let mut book = DeliveryBook::default();
        let (tell, mut told) = unbounded_channel();
        book.watch(file(1), [(file(1), 3)], tell.clone(), 0);
        book.watch(file(9), [(file(2), 1), (file(3), 0)], tell, 1);
        // Nothing sent at all (the receiver had it already), or part of it (it resumed).
        assert!(book.sent(node(1), file(1), 0).is_empty());
        let done = book.confirmed(node(1), file(1));
        assert_eq!(
            done,
            vec![Delivery {
                item: 0,
                client: node(1),
                chunks: 3
            }]
        );
        assert_eq!(told.try_recv().unwrap(), done[0]);
        // Once per client and item, whichever way it comes.
        assert!(book.confirmed(node(1), file(1)).is_empty());
        assert!(book.sent(node(1), file(1), 1).is_empty());
        assert!(book.sent(node(1), file(1), 2).is_empty());
        // A folder by its id; a file inside it is not the folder; an unwatched id is nothing.
        assert!(book.confirmed(node(1), file(2)).is_empty());
        assert!(book.confirmed(node(1), file(7)).is_empty());
        assert_eq!(book.confirmed(node(2), file(9)).len(), 1);
        assert!(
            told.try_recv()
                .is_ok_and(|d| d.item == 1 && d.client == node(2))
        );
        assert!(told.try_recv().is_err());
    }

    #[test]
    fn a_client_met_before_the_watch_keeps_what_it_was_sent() {
        let mut book = DeliveryBook::default();
        let (tell, mut told) = unbounded_channel();
        book.watch(file(1), [(file(1), 2)], tell.clone(), 0);
        assert!(book.sent(node(1), file(1), 0).is_empty());
        // A folder holding file 1 and file 2: chunk 0 of file 1 is there already.
        book.watch(file(9), [(file(1), 2), (file(2), 1)], tell.clone(), 1);
        assert!(book.sent(node(1), file(2), 0).is_empty());
        let done = book.sent(node(1), file(1), 1);
        let items: Vec<usize> = done.iter().map(|d| d.item).collect();
        assert_eq!(items, vec![0, 1]);
        // Watching what a client has whole already tells at once.
        book.watch(file(2), [(file(2), 1)], tell, 2);
        let told: Vec<usize> = std::iter::from_fn(|| told.try_recv().ok())
            .map(|d| d.item)
            .collect();
        assert_eq!(told, vec![0, 1, 2]);
    }
}
