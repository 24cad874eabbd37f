//! The connections of one download job, and the requests pipelined on them.
//!
//! A link is one connection to one host, driven by one task. The engine hands it requests
//! ([`Ask`]s) through a queue and gets one [`Answer`] back per request, in request order:
//!
//! * **Pipelining** (PROTOCOL.md §1): the task writes every request waiting in its queue
//!   (one flush per burst), then reads one reply, then writes what arrived meanwhile, and so
//!   on. A request goes to a link with room ([`PIPELINE_DEPTH`] requests and [`PIPELINE_BYTES`]
//!   of chunks outstanding) when the host has one, but those are preferences, not bounds: the
//!   scheduler caps a host at `per_host` × [`PIPELINE_DEPTH`] requests whatever links are open,
//!   and until the host's first link has delivered no second one opens (see below), so up to
//!   all of them (and their chunks' bytes, within the job's `max_bytes`) can wait on one link.
//!   That is still safe: at about 60 bytes each, those requests always fit in the socket
//!   buffers, so writing them never waits for the server, which does not read while it writes
//!   a reply, and the link is never stuck on flow control however deep its window. (A deep
//!   first window does lengthen the chunk times the endgame goes by.)
//! * **Buffers**: a chunk's data is read from the connection straight into a pooled buffer
//!   ([`BufPool`]), which goes to the engine with the answer (not yet verified).
//! * **Links per host**: at most `per_host` ([`LINKS_PER_HOST`], fewer with fewer workers).
//!   A request goes to an idle link of its host, else to a new link while there is room for
//!   one, else to the link with the fewest bytes outstanding. A new link is opened only once
//!   every link of the host has delivered a chunk: a full server makes room for a newcomer by
//!   closing an idle connection of the same address, and a connection still in its handshake
//!   is idle, so links opened all at once would close each other.
//! * **Reconnecting**: a connection that sat idle may have been closed by the host (its idle
//!   timeout, or to make room for another client). If the first reply after an idle spell
//!   finds it closed before a byte of it came, the link reconnects once and sends its
//!   requests again; that is nobody's fault.
//! * **Faults**: a failed request is answered with a [`HostFault`] for the scheduler. When the
//!   connection itself fails (timeout, reset, garbage), the request being read carries the
//!   fault and the ones behind it are [`Answered::Withdrawn`] (asked again, nobody's fault);
//!   the next request reconnects. An error reply fails only its own request.
//! * **Closing**: a link whose host was dropped, or whose job ended, withdraws everything it
//!   still holds and ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use p2p_protocol::{
    ChunkReply, ErrorCode, FileId, PeerConversation, PeerRequest, PeerResponse, ProtocolError,
};
use p2p_transport::Tls;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span};

use super::HostSpec;
use super::buffers::{Buf, BufPool};
use super::hosts::{BadData, HostFault, HostIx};
use super::schedule::{ChunkRef, PIPELINE_DEPTH};

/// Bytes of chunks outstanding on one link at most: two whole chunks, or many small ones.
pub(crate) const PIPELINE_BYTES: u64 = 8 * 1024 * 1024;

/// Connections to one host at most (fewer when the job has fewer workers).
pub(crate) const LINKS_PER_HOST: usize = 4;

/// A downloader's connection to a host.
pub(crate) type HostConnection = p2p_transport::ClientConnection<PeerConversation>;

/// Which link an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LinkId(u64);

/// One chunk request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    pub chunk: ChunkRef,
    /// The file, as the host knows it.
    pub file_id: FileId,
    /// The chunk's length per its manifest (for the link's window).
    pub len: u64,
    /// When the engine sent it, for the scheduler's chunk times.
    pub asked: Instant,
}

/// The answer to one [`Ask`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub link: LinkId,
    pub host: HostIx,
    pub ask: Ask,
    pub result: Answered,
}

/// What became of a request.
#[derive(Debug)]
pub(crate) enum Answered {
    /// The chunk's data as the host sent it, not yet verified.
    Data(Buf),
    /// The host failed it.
    Failed { fault: HostFault, error: String },
    /// Taken back: the link closed, or its connection failed on an earlier request.
    Withdrawn,
}

/// How links connect and wait.
#[derive(Clone, Debug)]
pub(crate) struct LinkConfig {
    pub tls: Tls,
    pub connect_timeout: Duration,
    /// For each reply, from when the link starts waiting for it.
    pub request_timeout: Duration,
    /// Links per host.
    pub per_host: usize,
}

/// The engine's side of one link.
#[derive(Debug)]
struct Handle {
    id: LinkId,
    asks: mpsc::UnboundedSender<Ask>,
    stop: CancellationToken,
    outstanding: usize,
    bytes: u64,
    /// It has delivered a chunk: its connection is up.
    up: bool,
}

impl Handle {
    fn has_room(&self) -> bool {
        self.outstanding < PIPELINE_DEPTH && self.bytes < PIPELINE_BYTES
    }
}

/// Every link of one job, on the engine's side: which link a request goes to, and how much
/// each one has outstanding. Owned by the engine, no locks.
#[derive(Debug)]
pub(crate) struct Links {
    config: LinkConfig,
    pool: Arc<BufPool>,
    hosts: HashMap<HostIx, Vec<Handle>>,
    answers: mpsc::UnboundedSender<Answer>,
    /// Stops every link (a child of the job's token).
    stop: CancellationToken,
    tasks: TaskTracker,
    next_id: u64,
}

impl Links {
    /// No links yet; answers will come out of the receiver.
    pub fn new(
        config: LinkConfig,
        pool: Arc<BufPool>,
        stop: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<Answer>) {
        let (answers, received) = mpsc::unbounded_channel();
        let links = Self {
            config,
            pool,
            hosts: HashMap::new(),
            answers,
            stop,
            tasks: TaskTracker::new(),
            next_id: 0,
        };
        (links, received)
    }

    /// Sends `ask` to `host` (`spec`) on one of its links.
    pub fn ask(&mut self, host: HostIx, spec: HostSpec, ask: Ask) {
        let per_host = self.config.per_host.max(1);
        let links = self.hosts.entry(host).or_default();
        let pick = match links.iter().position(|l| l.outstanding == 0) {
            Some(idle) => Some(idle),
            None if links.len() < per_host && links.iter().all(|l| l.up) => None,
            None => links
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| (!l.has_room(), l.bytes))
                .map(|(i, _)| i),
        };
        let index = match pick {
            Some(i) => i,
            None => {
                let handle = self.open(host, spec);
                let links = self.hosts.entry(host).or_default();
                links.push(handle);
                links.len() - 1
            }
        };
        let link = &mut self.hosts.get_mut(&host).expect("just used")[index];
        link.outstanding += 1;
        link.bytes += ask.len;
        if let Err(mpsc::error::SendError(ask)) = link.asks.send(ask) {
            // The task is gone (it only ends when stopped): answer for it.
            let _ = self.answers.send(Answer {
                link: link.id,
                host,
                ask,
                result: Answered::Withdrawn,
            });
        }
    }

    /// Books `answer` against its link's window.
    pub fn answered(&mut self, answer: &Answer) {
        if let Some(link) = self
            .hosts
            .get_mut(&answer.host)
            .and_then(|links| links.iter_mut().find(|l| l.id == answer.link))
        {
            link.outstanding -= 1;
            link.bytes -= answer.ask.len;
            link.up |= matches!(answer.result, Answered::Data(_));
        }
    }

    /// Closes every link of `host`: what they hold comes back [`Answered::Withdrawn`].
    pub fn close_host(&mut self, host: HostIx) {
        for link in self.hosts.remove(&host).unwrap_or_default() {
            link.stop.cancel();
        }
    }

    /// Requests outstanding on every link of `host`.
    #[cfg(test)]
    pub fn outstanding(&self, host: HostIx) -> usize {
        self.hosts
            .get(&host)
            .map_or(0, |links| links.iter().map(|l| l.outstanding).sum())
    }

    /// Stops every link and waits until their tasks have ended (so nothing holds a
    /// connection or a buffer of the job any more).
    pub async fn close(&mut self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn open(&mut self, host: HostIx, spec: HostSpec) -> Handle {
        self.next_id += 1;
        let id = LinkId(self.next_id);
        let (asks, queue) = mpsc::unbounded_channel();
        let stop = self.stop.child_token();
        let link = Link {
            id,
            host,
            spec,
            config: self.config.clone(),
            pool: self.pool.clone(),
            answers: self.answers.clone(),
            conn: None,
            waiting: VecDeque::new(),
            idle: false,
        };
        self.tasks.spawn(
            link.run(queue, stop.clone())
                .instrument(debug_span!("link", host = %spec.addr, id = id.0)),
        );
        Handle {
            id,
            asks,
            stop,
            outstanding: 0,
            bytes: 0,
            up: false,
        }
    }
}

/// One connection's task.
struct Link {
    id: LinkId,
    host: HostIx,
    spec: HostSpec,
    config: LinkConfig,
    pool: Arc<BufPool>,
    answers: mpsc::UnboundedSender<Answer>,
    conn: Option<HostConnection>,
    /// Sent, reply not yet read, in request order.
    waiting: VecDeque<Ask>,
    /// The connection sat idle before the requests now waiting were sent: the host may
    /// have closed it meanwhile.
    idle: bool,
}

impl Link {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Ask>, stop: CancellationToken) {
        let mut burst = Vec::new();
        loop {
            if self.waiting.is_empty() {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    ask = queue.recv() => match ask {
                        Some(ask) => burst.push(ask),
                        None => break,
                    },
                }
            }
            while let Ok(ask) = queue.try_recv() {
                burst.push(ask);
            }
            if !burst.is_empty() {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    () = self.send(&mut burst) => {}
                }
            }
            if self.waiting.is_empty() {
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                () = self.receive() => {}
            }
        }
        // Whatever is left goes back to the engine.
        queue.close();
        let mut left: Vec<Ask> = self.waiting.drain(..).chain(burst).collect();
        while let Ok(ask) = queue.try_recv() {
            left.push(ask);
        }
        for ask in left {
            self.answer(ask, Answered::Withdrawn);
        }
    }

    /// Writes `burst` (connecting first if needed); afterwards every request of it waits
    /// for its reply or has been answered.
    async fn send(&mut self, burst: &mut Vec<Ask>) {
        if self.conn.is_none() {
            match self.connect().await {
                Ok(conn) => self.conn = Some(conn),
                Err(err) => {
                    let (fault, error) = connect_fault(&err);
                    let mut asks = burst.drain(..);
                    if let Some(first) = asks.next() {
                        self.answer(first, Answered::Failed { fault, error });
                    }
                    for ask in asks.collect::<Vec<_>>() {
                        self.answer(ask, Answered::Withdrawn);
                    }
                    return;
                }
            }
            self.idle = false;
        } else if self.waiting.is_empty() {
            self.idle = true;
        }
        let first_new = self.waiting.len();
        self.waiting.extend(burst.drain(..));
        if let Err(err) = self.write(first_new).await {
            if self.idle && closed_before_reply(&err) {
                self.reconnect(&err).await;
            } else {
                let (fault, error) = reply_fault(&err);
                self.broken(fault, error);
            }
        }
    }

    /// Writes the waiting requests from `from` on, with one flush.
    async fn write(&mut self, from: usize) -> Result<(), ProtocolError> {
        let conn = self.conn.as_mut().expect("connected before writing");
        let write = async {
            for ask in self.waiting.range(from..) {
                conn.feed(&PeerRequest::GetChunk {
                    file_id: ask.file_id,
                    index: ask.chunk.index,
                })
                .await?;
            }
            conn.flush().await
        };
        tokio::time::timeout(self.config.request_timeout, write)
            .await
            .map_err(|_| ProtocolError::Timeout(self.config.request_timeout))?
    }

    /// The idle connection turned out closed: once more on a new one, every waiting request
    /// sent again.
    async fn reconnect(&mut self, err: &ProtocolError) {
        debug!(host = %self.spec.addr, %err, "pooled connection was closed; reconnecting");
        self.conn = None;
        self.idle = false;
        match self.connect().await {
            Ok(conn) => self.conn = Some(conn),
            Err(err) => {
                let (fault, error) = connect_fault(&err);
                return self.broken(fault, error);
            }
        }
        if let Err(err) = self.write(0).await {
            let (fault, error) = reply_fault(&err);
            self.broken(fault, error);
        }
    }

    /// Reads the reply to the first waiting request.
    async fn receive(&mut self) {
        let ask = *self.waiting.front().expect("a request waits");
        let conn = self.conn.as_mut().expect("connected while requests wait");
        let mut data: Option<Buf> = None;
        let got = {
            let (pool, slot) = (&self.pool, &mut data);
            // The manifest's length: a host announcing another is refused before any
            // buffer is taken for it (or a liar could make us hold 4 MiB per 20 bytes asked).
            let expected = u32::try_from(ask.len).unwrap_or(u32::MAX);
            conn.recv_chunk(
                expected,
                move |len| slot.insert(pool.take(len)).fill(len),
                self.config.request_timeout,
            )
            .await
        };
        let result = match got {
            Ok(ChunkReply::Chunk { file_id, index })
                if file_id == ask.file_id && index == ask.chunk.index =>
            {
                Ok(Answered::Data(
                    data.take().expect("a chunk's data was read"),
                ))
            }
            Ok(ChunkReply::Chunk { .. }) => Err((
                HostFault::BadData(BadData::WrongReply),
                "unexpected reply to GetChunk: Chunk for another chunk".to_string(),
            )),
            Ok(ChunkReply::Other(PeerResponse::Error { code, message })) => {
                let fault = match code {
                    ErrorCode::Busy => HostFault::Busy,
                    code => HostFault::Refused(code),
                };
                let error = ProtocolError::Remote {
                    code,
                    message: message.into(),
                }
                .to_string();
                Ok(Answered::Failed { fault, error })
            }
            Ok(ChunkReply::Other(other)) => Err((
                HostFault::BadData(BadData::WrongReply),
                format!("unexpected reply to GetChunk: {}", reply_name(&other)),
            )),
            Err(err) if self.idle && closed_before_reply(&err) => {
                if let Some(buf) = data {
                    self.pool.give(buf);
                }
                return self.reconnect(&err).await;
            }
            Err(err) => Err(reply_fault(&err)),
        };
        match result {
            Ok(answered) => {
                self.waiting.pop_front();
                self.idle = false;
                self.answer(ask, answered);
            }
            Err((fault, error)) => {
                if let Some(buf) = data {
                    self.pool.give(buf);
                }
                self.broken(fault, error);
            }
        }
    }

    /// The connection failed: drop it; the first waiting request takes the fault, the
    /// others are withdrawn.
    fn broken(&mut self, fault: HostFault, error: String) {
        debug!(host = %self.spec.addr, %error, waiting = self.waiting.len(), "link failed");
        self.conn = None;
        self.idle = false;
        let mut waiting = std::mem::take(&mut self.waiting).into_iter();
        if let Some(first) = waiting.next() {
            self.answer(first, Answered::Failed { fault, error });
        }
        for ask in waiting {
            self.answer(ask, Answered::Withdrawn);
        }
    }

    async fn connect(&self) -> Result<HostConnection, ProtocolError> {
        let (conn, _) = p2p_transport::connect::<PeerConversation>(
            &self.config.tls,
            self.spec.addr,
            self.spec.node_id,
            self.config.connect_timeout,
        )
        .await?;
        Ok(conn)
    }

    fn answer(&self, ask: Ask, result: Answered) {
        if let Answered::Data(buf) = result {
            let answer = Answer {
                link: self.id,
                host: self.host,
                ask,
                result: Answered::Data(buf),
            };
            // The engine is gone (its job ended): the buffer goes back.
            if let Err(mpsc::error::SendError(Answer {
                result: Answered::Data(buf),
                ..
            })) = self.answers.send(answer)
            {
                self.pool.give(buf);
            }
            return;
        }
        let _ = self.answers.send(Answer {
            link: self.id,
            host: self.host,
            ask,
            result,
        });
    }
}

/// The fault of a failed connection attempt, and what the user reads.
fn connect_fault(err: &ProtocolError) -> (HostFault, String) {
    match err {
        // Another node at the host's address: never again.
        ProtocolError::WrongNode { .. } => (
            HostFault::WrongNode,
            format!("refused: {err} (someone else is at the host's address)"),
        ),
        ProtocolError::Remote {
            code: ErrorCode::Busy,
            ..
        } => (HostFault::Busy, err.to_string()),
        ProtocolError::Remote { code, .. } => (HostFault::Refused(*code), err.to_string()),
        _ => (HostFault::Unreachable, err.to_string()),
    }
}

/// The fault of a connection that failed while requests waited on it.
fn reply_fault(err: &ProtocolError) -> (HostFault, String) {
    match err {
        ProtocolError::ChunkTooLarge(_) => (
            HostFault::BadData(BadData::TooLarge),
            format!("sent bad data: {err}"),
        ),
        // A Chunk of another size than the one asked for.
        ProtocolError::Unexpected(_) => (
            HostFault::BadData(BadData::WrongReply),
            format!("sent bad data: {err}"),
        ),
        // No reply in time, or the connection died or was garbled during one.
        _ => (HostFault::Timeout, err.to_string()),
    }
}

/// Whether `err` says the connection was already closed when the request went out: a clean
/// close before any byte of the reply, or a reset.
fn closed_before_reply(err: &ProtocolError) -> bool {
    use std::io::ErrorKind;
    match err {
        ProtocolError::Closed => true,
        ProtocolError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

fn reply_name(reply: &PeerResponse) -> &'static str {
    match reply {
        PeerResponse::Welcome { .. } => "Welcome",
        PeerResponse::Manifest { .. } => "Manifest",
        PeerResponse::Chunk { .. } => "Chunk",
        PeerResponse::Error { .. } => "Error",
        PeerResponse::MessageReceived {} => "MessageReceived",
        PeerResponse::ReceivedAck {} => "ReceivedAck",
        PeerResponse::Folder { .. } => "Folder",
        PeerResponse::FolderPages { .. } => "FolderPages",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use p2p_protocol::{CHUNK_SIZE, FileManifest};

    use super::*;
    use crate::PeerHandle;
    use crate::download::schedule::FileIx;
    use crate::download::test_support::{bytes, lone_peer, tls, write};

    /// Generous for a loaded machine; a stall on flow control would last the server's 30 s
    /// write timeout.
    const T: Duration = Duration::from_secs(20);

    fn links(per_host: usize) -> (Links, mpsc::UnboundedReceiver<Answer>) {
        let config = LinkConfig {
            tls: tls(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: T,
            per_host,
        };
        Links::new(config, Arc::default(), CancellationToken::new())
    }

    fn spec(addr: std::net::SocketAddr) -> HostSpec {
        HostSpec {
            addr,
            node_id: None,
        }
    }

    fn ask(file: u32, manifest: &FileManifest, index: u32) -> Ask {
        Ask {
            chunk: ChunkRef {
                file: FileIx(file),
                index,
            },
            file_id: manifest.id(),
            len: manifest.chunk_len(index).unwrap() as u64,
            asked: Instant::now(),
        }
    }

    async fn share(
        peer: &PeerHandle,
        dir: &std::path::Path,
        name: &str,
        data: &[u8],
    ) -> FileManifest {
        let path = write(dir, name, data);
        peer.register(&path).await.unwrap();
        p2p_storage::build_manifest(&path).unwrap().manifest
    }

    async fn next(answers: &mut mpsc::UnboundedReceiver<Answer>) -> Answer {
        tokio::time::timeout(T, answers.recv())
            .await
            .expect("an answer in time")
            .expect("the links are open")
    }

    /// One connection with 64 requests for 4 MiB chunks outstanding (far more than the
    /// socket buffers hold), and a new request written after each reply while the server is
    /// busy writing the next ones: every chunk arrives, whole and in order, with no stall on
    /// flow control.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deep_window_on_one_connection_never_stalls() {
        let src = tempfile::tempdir().unwrap();
        let seeder = lone_peer(|_| {}).await;
        let data = bytes(4 * CHUNK_SIZE as usize, 1);
        let manifest = share(&seeder, src.path(), "big.bin", &data).await;
        let (mut links, mut answers) = links(1);
        let host = HostIx(0);
        let total = 96;
        for i in 0..64 {
            links.ask(host, spec(seeder.local_addr()), ask(0, &manifest, i % 4));
        }
        let mut asked = 64;
        for n in 0..total {
            let answer = next(&mut answers).await;
            links.answered(&answer);
            assert_eq!(
                answer.ask.chunk.index,
                n % 4,
                "replies come in request order"
            );
            let Answered::Data(buf) = answer.result else {
                panic!("chunk {n}: {:?}", answer.result);
            };
            let at = (n % 4) as usize * CHUNK_SIZE as usize;
            assert!(
                buf.as_slice() == &data[at..at + CHUNK_SIZE as usize],
                "chunk {n} differs"
            );
            if asked < total {
                links.ask(
                    host,
                    spec(seeder.local_addr()),
                    ask(0, &manifest, asked % 4),
                );
                asked += 1;
            }
        }
        assert_eq!(links.hosts[&host].len(), 1, "one connection");
        assert_eq!(links.outstanding(host), 0);
        assert_eq!(seeder.chunks_served(), u64::from(total));
        links.close().await;
        seeder.shutdown().await;
    }

    /// Hundreds of small files asked at once go over at most `per_host` connections, each
    /// answered with its own bytes; an unknown file fails its own request only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_files_share_a_few_connections_and_an_error_fails_one_request() {
        let src = tempfile::tempdir().unwrap();
        let seeder = lone_peer(|_| {}).await;
        let mut files = Vec::new();
        for i in 0..300u32 {
            let data = bytes(1000 + (i as usize * 137) % 40_000, u64::from(i));
            let manifest = share(&seeder, src.path(), &format!("f{i}"), &data).await;
            files.push((manifest, data));
        }
        let unknown = FileManifest {
            name: "nobody".into(),
            size: 5,
            chunk_size: CHUNK_SIZE,
            chunks: vec![p2p_protocol::Sha256Hash::of(b"nope!")],
        };
        let (mut links, mut answers) = links(4);
        let host = HostIx(3);
        for (i, (manifest, _)) in files.iter().enumerate() {
            links.ask(host, spec(seeder.local_addr()), ask(i as u32, manifest, 0));
            if i == 150 {
                links.ask(host, spec(seeder.local_addr()), ask(9999, &unknown, 0));
            }
        }
        let mut got = HashMap::new();
        let mut refused = 0;
        for _ in 0..301 {
            let answer = next(&mut answers).await;
            links.answered(&answer);
            match answer.result {
                Answered::Data(buf) => {
                    got.insert(answer.ask.chunk.file.0, buf.as_slice().to_vec());
                }
                Answered::Failed {
                    fault: HostFault::Refused(ErrorCode::UnknownFile),
                    ..
                } if answer.ask.chunk.file.0 == 9999 => refused += 1,
                other => panic!("{:?}: {other:?}", answer.ask),
            }
        }
        assert_eq!(refused, 1);
        assert_eq!(got.len(), 300);
        for (i, (_, data)) in files.iter().enumerate() {
            assert!(&got[&(i as u32)] == data, "file {i} differs");
        }
        assert!(links.hosts[&host].len() <= 4);
        links.close().await;
        seeder.shutdown().await;
    }

    /// A host that closed the idle connection (its idle timeout) costs nothing: the link
    /// reconnects and asks again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_host_closed_while_idle_is_replaced_silently() {
        let src = tempfile::tempdir().unwrap();
        let seeder = lone_peer(|c| {
            c.idle_timeout = Duration::from_millis(100);
            c.first_request_timeout = Duration::from_millis(100);
        })
        .await;
        let data = bytes(10_000, 5);
        let manifest = share(&seeder, src.path(), "s.bin", &data).await;
        let (mut links, mut answers) = links(1);
        for round in 0..3 {
            links.ask(HostIx(0), spec(seeder.local_addr()), ask(0, &manifest, 0));
            let answer = next(&mut answers).await;
            links.answered(&answer);
            assert!(
                matches!(&answer.result, Answered::Data(buf) if buf.as_slice() == data),
                "round {round}: {:?}",
                answer.result
            );
            // Long enough for the host to close the connection (not needed for the test to
            // pass: a connection still open is simply reused).
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        links.close().await;
        seeder.shutdown().await;
    }

    /// Nobody listening: the first request carries the fault, the others are withdrawn. A
    /// host that takes the connection and never answers holds its requests until its links
    /// are closed, which gives them all back.
    #[tokio::test]
    async fn unreachable_and_closed_hosts_give_their_requests_back() {
        let manifest = FileManifest {
            name: "x".into(),
            size: 5,
            chunk_size: CHUNK_SIZE,
            chunks: vec![p2p_protocol::Sha256Hash::of(b"hello")],
        };
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (mut links, mut answers) = links(1);
        for i in 0..3 {
            links.ask(HostIx(0), spec(closed), ask(i, &manifest, 0));
        }
        let mut results = Vec::new();
        for _ in 0..3 {
            let answer = next(&mut answers).await;
            links.answered(&answer);
            results.push(answer.result);
        }
        assert!(
            matches!(
                results[0],
                Answered::Failed {
                    fault: HostFault::Unreachable,
                    ..
                }
            ),
            "{results:?}"
        );
        assert!(
            results[1..]
                .iter()
                .all(|r| matches!(r, Answered::Withdrawn))
        );

        // Accepts TCP, never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        for i in 0..3 {
            links.ask(
                HostIx(1),
                spec(silent.local_addr().unwrap()),
                ask(i, &manifest, 0),
            );
        }
        links.close_host(HostIx(1));
        for _ in 0..3 {
            let answer = next(&mut answers).await;
            assert!(matches!(answer.result, Answered::Withdrawn), "{answer:?}");
        }
        links.close().await;
    }
}
