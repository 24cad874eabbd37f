//! [`serve()`]: the one connection loop both servers run, from `accept` to the last reply.
//!
//! 1. **Accept**, pausing [`ACCEPT_BACKOFF`] after a failed `accept` (out of file descriptors,
//!    say), with `TCP_NODELAY` set: every message is a request or a reply someone waits for.
//! 2. **Admit** into the server's [`SlotTable`]. Accept first, then decide: a full server
//!    closes a connection that qualifies for the newcomer (the longest-idle, see
//!    [`crate::slots`]), or tells it why not, rather than leaving it unseen in the backlog. A
//!    refused connection gets its TLS handshake and one error reply after its first frame
//!    ([`Service::refusal`]), so that the client can read why.
//! 3. **TLS handshake**, within [`HANDSHAKE_TIMEOUT`], holding the slot: a client that stalls
//!    in it is dropped like one that never says `Hello`. The client's node id comes from it.
//! 4. **`Hello`**, read the way the server reads every request ([`Handler::receive`]), answered
//!    `Welcome`, or `Error` and a close.
//! 5. **Requests**: wait up to the first-request timeout (then the idle timeout) for a whole
//!    request; [`Handler::answer`] it and [`Handler::send`] the reply; repeat. A frame that
//!    can't be decoded is answered with an `Error` where one is worth sending, and closes the
//!    connection; so does a failed send.
//!
//! The connection's [`Slot`] says what it is doing, and the loop alone marks it: **idle**
//! while it handshakes and waits, **busy** from the moment a request has arrived whole while
//! the handler answers it (waiting for a turn or for room included), **writing** once the
//! handler starts sending, and idle again after. So a server that is full closes the
//! longest-idle connection, never one being answered, and closes a writing one only when its
//! client reads too slowly. Closing the slot (to make room, or at shutdown) ends the
//! connection wherever it is, answer and reply included; what the answer held is given back
//! as it is dropped.
//!
//! What differs between the servers is theirs to say: a [`Service`] says what a turned-away
//! client is told and makes a [`Handler`] for each connection, which reads requests (the
//! index reads a large frame only once its buffer budget has room), answers them and sends
//! the replies (the chunk server streams a chunk's data after its `Chunk` frame).
//! [`ServeConfig`] holds the caps and timeouts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_protocol::handshake::HANDSHAKE_TIMEOUT;
use p2p_protocol::{Connection, Conversation, NodeId, ProtocolError, answer_hello};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::slots::{Admission, Refusal, Slot, SlotLimits, SlotTable};
use crate::tls::{Stream, Tls};

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a refused client may take over its TLS handshake, then its `Hello`, and then over
/// reading the refusal.
pub const REFUSE_WAIT: Duration = Duration::from_secs(2);

/// The largest first frame a refused connection has read whole: a `Hello` takes about 15
/// bytes. A longer one is never read, so a refused client can't make the server buffer more
/// than a few bytes for it, whatever length it announces.
pub const REFUSE_READ_LEN: usize = 256;

/// Refusals being answered at once, a good default for [`SlotLimits::max_refusals`]; beyond
/// that a connection is closed without a reply.
pub const MAX_REFUSALS: usize = 64;

/// The caps and timeouts of one server's connections.
#[derive(Clone, Copy, Debug)]
pub struct ServeConfig {
    /// How many connections are served, and which one is closed for a newcomer.
    pub slots: SlotLimits,
    /// A connection that sends no whole request this long after `Welcome` is closed, so that
    /// connections that only say `Hello` don't hold slots. Never longer than `idle_timeout`:
    /// shortening that shortens both.
    pub first_request_timeout: Duration,
    /// A connection that sends no whole request for this long after a reply is closed, which
    /// also cuts off clients that trickle bytes.
    pub idle_timeout: Duration,
}

/// A server's side of a conversation `C` over TLS.
pub type ServerConnection<C> =
    Connection<Stream, <C as Conversation>::Request, <C as Conversation>::Response>;

/// The request of a handler's conversation.
pub type Request<H> = <<H as Handler>::Conversation as Conversation>::Request;
/// The response of a handler's conversation.
pub type Response<H> = <<H as Handler>::Conversation as Conversation>::Response;
/// What [`Handler::receive`] read: a whole request and its ticket, or `None` for a clean close.
pub type Received<H> = Option<(Request<H>, <H as Handler>::Ticket)>;

/// A server, as [`serve()`] sees it: shared by all its connections.
pub trait Service: Send + Sync + 'static {
    /// What answers one connection.
    type Handler: Handler;

    /// The error reply for a connection the server can't take.
    fn refusal(&self, refusal: Refusal) -> Response<Self::Handler>;

    /// The handler of a connection from `addr`, whose TLS handshake showed node id `node`.
    fn handler(self: &Arc<Self>, addr: SocketAddr, node: NodeId) -> Self::Handler;
}

/// One connection's part of a server: how it reads a request, answers it and sends the reply.
/// [`serve()`] bounds each wait and marks the connection's [`Slot`] around these (module docs).
pub trait Handler: Send + 'static {
    /// The conversation served.
    type Conversation: Conversation<Request: Send, Response: Send + Sync>;
    /// What a request holds from when it is read until it is answered (the index: room in its
    /// buffer budget). Dropped unused for the `Hello`.
    type Ticket: Send;
    /// An answer, ready to be sent.
    type Reply: Send;

    /// Reads the next request, the `Hello` included; `Ok(None)` when the client closed the
    /// connection cleanly between frames.
    fn receive(
        &mut self,
        conn: &mut ServerConnection<Self::Conversation>,
    ) -> impl Future<Output = Result<Received<Self>, ProtocolError>> + Send;

    /// Answers `request`. However long this takes, the connection is busy, never closed to
    /// make room (except for a server's fair share, [`SlotLimits::fair_share`]); `slot` is
    /// there to privilege the connection, or to stop work once it is closed.
    fn answer(
        &mut self,
        request: Request<Self>,
        ticket: Self::Ticket,
        slot: &Slot,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// Sends `reply`, within the server's own deadline; from its first byte the connection
    /// is writing, and a client that reads it too slowly may lose it. An error closes the
    /// connection.
    fn send(
        &mut self,
        conn: &mut ServerConnection<Self::Conversation>,
        reply: Self::Reply,
    ) -> impl Future<Output = Result<(), ProtocolError>> + Send;
}

/// Serves `service` on `listener`, as the node of `tls`, until `shutdown` is cancelled; then
/// closes every connection and returns once all of them have finished.
pub async fn serve<S: Service>(
    listener: TcpListener,
    tls: Tls,
    config: ServeConfig,
    service: Arc<S>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let slots = SlotTable::new(config.slots);
    while let Some((tcp, addr)) = accept(&listener, &shutdown).await {
        let slot = match slots.admit(addr.ip(), now(), &shutdown) {
            Admission::Admitted(slot) => slot,
            Admission::Refused(refusal, place) => {
                debug!(client = %addr, ?refusal, "connection refused");
                let (tls, reply) = (tls.clone(), service.refusal(refusal));
                tasks.spawn(async move {
                    refuse::<<S::Handler as Handler>::Conversation>(&tls, tcp, &reply).await;
                    drop(place);
                });
                continue;
            }
            Admission::Dropped => continue,
        };
        let (tls, service) = (tls.clone(), service.clone());
        tasks.spawn(
            connection(tls, service, tcp, addr, slot, config)
                .instrument(info_span!("conn", client = %addr)),
        );
    }
    tasks.close();
    tasks.wait().await;
}

/// One admitted connection, from its TLS handshake to its close.
async fn connection<S: Service>(
    tls: Tls,
    service: Arc<S>,
    tcp: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    config: ServeConfig,
) {
    let shaken = tokio::select! {
        biased;
        _ = slot.closed() => return,
        shaken = tls.accept(tcp, HANDSHAKE_TIMEOUT) => shaken,
    };
    let (stream, node) = match shaken {
        Ok(done) => done,
        Err(err) => {
            info!(%err, "TLS handshake failed");
            return;
        }
    };
    let conn = Connection::server::<<S::Handler as Handler>::Conversation>(stream);
    match converse(service.handler(addr, node), conn, &slot, &config).await {
        Ok(()) => debug!("connection closed"),
        Err(err) => info!(%err, "connection dropped"),
    }
}

/// The conversation on a connection: `Hello`, then one reply per request, until the client
/// closes it, goes quiet, sends something undecodable, or the slot is closed.
async fn converse<H: Handler>(
    mut handler: H,
    mut conn: ServerConnection<H::Conversation>,
    slot: &Slot,
    config: &ServeConfig,
) -> Result<(), ProtocolError> {
    if !welcome(&mut handler, &mut conn, slot).await? {
        return Ok(());
    }
    let mut wait = config.first_request_timeout.min(config.idle_timeout);
    while let Some((request, ticket)) = next_request(&mut handler, &mut conn, slot, wait).await? {
        let answered = async {
            let reply = handler.answer(request, ticket, slot).await;
            // From here on, time taken is the client's: it reads too slowly.
            slot.writing(now());
            handler.send(&mut conn, reply).await
        };
        tokio::select! {
            biased;
            _ = slot.closed() => return Ok(()),
            sent = answered => sent?,
        }
        slot.idle(now());
        wait = config.idle_timeout;
    }
    Ok(())
}

/// The server side of the `Hello` exchange, its first frame read like any request (so the
/// index, say, reads a large one only once it has room for it), within [`HANDSHAKE_TIMEOUT`].
/// `Ok(false)` if the slot was closed first.
async fn welcome<H: Handler>(
    handler: &mut H,
    conn: &mut ServerConnection<H::Conversation>,
    slot: &Slot,
) -> Result<bool, ProtocolError> {
    let shake = async {
        let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handler.receive(conn)).await {
            Err(_) => Err(ProtocolError::Timeout(HANDSHAKE_TIMEOUT)),
            Ok(Ok(Some((first, _ticket)))) => Ok(first),
            Ok(Ok(None)) => Err(ProtocolError::Closed),
            Ok(Err(err)) => Err(err),
        };
        answer_hello::<H::Conversation, _>(conn, first).await
    };
    tokio::select! {
        biased;
        _ = slot.closed() => Ok(false),
        shaken = shake => shaken.map(|()| true),
    }
}

/// Waits up to `wait` for the next request and marks the slot busy once one has arrived
/// whole. `Ok(None)` when the connection should close without a reply: the client closed it,
/// sent nothing whole in time, or the slot was closed. A frame that can't be decoded is
/// answered with an `Error` where one is worth sending, and returned as the error.
async fn next_request<H: Handler>(
    handler: &mut H,
    conn: &mut ServerConnection<H::Conversation>,
    slot: &Slot,
    wait: Duration,
) -> Result<Received<H>, ProtocolError> {
    let received = tokio::select! {
        biased;
        _ = slot.closed() => return Ok(None),
        received = tokio::time::timeout(wait, handler.receive(conn)) => received,
    };
    let received = match received {
        Err(_) => {
            debug!(?wait, "no request in time; closing the connection");
            return Ok(None);
        }
        // Closed to make room just as the request arrived: drop it, the client sees a close.
        Ok(Ok(Some(_))) if !slot.busy(now()) => return Ok(None),
        Ok(received) => received,
    };
    if let Err(err) = &received
        && let Some(code) = err.reply_code()
    {
        warn!(%err, "bad frame; closing connection");
        let reply = <H::Conversation as Conversation>::error(code, err.to_string());
        let _ = conn.send(&reply).await;
    }
    received
}

/// The next connection, with `TCP_NODELAY` set, or `None` once `shutdown` fires. A failed
/// `accept` is logged and retried after [`ACCEPT_BACKOFF`].
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, addr));
                }
                Err(err) => warn!(%err, "accept failed"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
        }
    }
}

/// Turns a connection away: the TLS handshake, then the client's first frame (its `Hello`),
/// read so that the reply is not lost to a reset caused by unread data (but never past
/// [`REFUSE_READ_LEN`] bytes), then `reply`; each step within [`REFUSE_WAIT`]. Dropping the
/// connection closes it.
async fn refuse<C>(tls: &Tls, tcp: TcpStream, reply: &C::Response)
where
    C: Conversation<Request: Send, Response: Send + Sync>,
{
    let Ok((stream, _)) = tls.accept(tcp, REFUSE_WAIT).await else {
        return;
    };
    let mut conn = Connection::server::<C>(stream);
    let never = |_| std::future::pending::<()>();
    let first = conn.recv_admitted(REFUSE_READ_LEN, REFUSE_WAIT, never);
    let _ = tokio::time::timeout(REFUSE_WAIT, first).await;
    let _ = conn.send_timeout(reply, REFUSE_WAIT).await;
}

/// Now, on tokio's clock (which tests may pause).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use p2p_protocol::{
        ErrorCode, PeerClientConnection, PeerConversation, PeerRequest, PeerResponse,
    };
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::connect;

    const T: Duration = Duration::from_secs(10);

    /// Answers every `Message` with `MessageReceived`; one whose text is "hold" first reports
    /// that it is being answered, then waits for a permit of `gate`.
    struct Held {
        answering: mpsc::UnboundedSender<()>,
        gate: Semaphore,
    }

    impl Service for Held {
        type Handler = HeldHandler;

        fn refusal(&self, refusal: Refusal) -> PeerResponse {
            PeerResponse::Error {
                code: ErrorCode::Busy,
                message: format!("refused: {refusal:?}"),
            }
        }

        fn handler(self: &Arc<Self>, _: SocketAddr, _: NodeId) -> HeldHandler {
            HeldHandler(self.clone())
        }
    }

    struct HeldHandler(Arc<Held>);

    impl Handler for HeldHandler {
        type Conversation = PeerConversation;
        type Ticket = ();
        type Reply = PeerResponse;

        async fn receive(
            &mut self,
            conn: &mut ServerConnection<PeerConversation>,
        ) -> Result<Received<Self>, ProtocolError> {
            Ok(conn.recv().await?.map(|request| (request, ())))
        }

        async fn answer(&mut self, request: PeerRequest, (): (), _: &Slot) -> PeerResponse {
            if matches!(&request, PeerRequest::Message { text, .. } if text == "hold") {
                self.0.answering.send(()).unwrap();
                self.0.gate.acquire().await.unwrap().forget();
            }
            PeerResponse::MessageReceived {}
        }

        async fn send(
            &mut self,
            conn: &mut ServerConnection<PeerConversation>,
            reply: PeerResponse,
        ) -> Result<(), ProtocolError> {
            conn.send_timeout(&reply, T).await
        }
    }

    fn message(text: &str) -> PeerRequest {
        PeerRequest::Message {
            from: "test".into(),
            text: text.into(),
        }
    }

    /// A server of one slot: a connection being answered keeps it (a newcomer is told the
    /// service's refusal), and once it is idle again a newcomer takes it, and it is closed.
    #[tokio::test]
    async fn a_busy_connection_keeps_its_slot_an_idle_one_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let tls = |name: &str| {
            let (identity, _) = p2p_identity::Identity::load_or_create(
                &dir.path().join(name),
                p2p_identity::Role::Peer,
            )
            .unwrap();
            Tls::new(&identity).unwrap()
        };
        let (server_tls, client_tls) = (tls("server"), tls("client"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (answering, mut answered) = mpsc::unbounded_channel();
        let service = Arc::new(Held {
            answering,
            gate: Semaphore::new(0),
        });
        let config = ServeConfig {
            slots: SlotLimits {
                max: 1,
                max_per_ip: 4,
                max_refusals: MAX_REFUSALS,
                slow_after: T,
                fair_share: false,
            },
            first_request_timeout: T,
            idle_timeout: T,
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            server_tls,
            config,
            service.clone(),
            shutdown.clone(),
        ));
        let open = || connect::<PeerConversation>(&client_tls, addr, None, T);

        let (mut first, _): (PeerClientConnection<_>, _) = open().await.unwrap();
        first.send(&message("hold")).await.unwrap();
        tokio::time::timeout(T, answered.recv()).await.unwrap();
        match open().await {
            Err(ProtocolError::Remote { code, message }) => {
                assert_eq!(code, ErrorCode::Busy);
                assert!(message.to_string().contains("Full"), "{message}");
            }
            other => panic!("expected the service's refusal, got {other:?}"),
        }

        service.gate.add_permits(1);
        let reply = first.recv_timeout(T).await.unwrap();
        assert_eq!(reply, PeerResponse::MessageReceived {});
        // The slot is idle again just after the reply went out: a newcomer that comes sooner
        // is refused, so try until one is let in.
        let deadline = tokio::time::Instant::now() + T;
        let (mut second, _) = loop {
            match open().await {
                Ok(opened) => break opened,
                Err(ProtocolError::Remote { .. }) if tokio::time::Instant::now() < deadline => {}
                Err(err) => panic!("the idle connection made no room: {err}"),
            }
        };
        let reply = second.request(&message("hi"), T).await.unwrap();
        assert_eq!(reply, PeerResponse::MessageReceived {});
        let closed = tokio::time::timeout(T, first.recv()).await.unwrap();
        assert!(!matches!(closed, Ok(Some(_))), "{closed:?}");

        shutdown.cancel();
        tokio::time::timeout(T, server).await.unwrap().unwrap();
    }
}
