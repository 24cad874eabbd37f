//! What both servers share about a connection's life: accepting with a pause after failures,
//! turning a connection away with one error reply that the client can actually read, and, for
//! an admitted connection, the handshake and the wait for each request while its
//! [`Slot`] says whether it is idle or busy (so that the longest-idle connection, not one
//! being answered, is closed when the server is full; see [`crate::slots`]).

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::handshake::{Conversation, server_hello};
use p2p_protocol::{Connection, ProtocolError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::slots::Slot;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection, with `TCP_NODELAY` set (every message is a request or a reply that
/// someone waits for), or `None` once `shutdown` fires. A failed `accept` is logged and
/// retried after [`ACCEPT_BACKOFF`].
pub async fn accept(
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

/// Turns a connection away: reads the client's first frame (its `Hello`) so that the reply is
/// not lost to a reset caused by unread data, then sends `reply`. Each step waits at most
/// `wait`; the caller closes the connection by dropping it. A first frame over
/// [`REFUSE_READ_LEN`] bytes is never admitted, so a refused client can't make the server
/// buffer more than a few bytes for it, whatever length it announces.
pub async fn refuse<S, In, Out>(conn: &mut Connection<S, In, Out>, reply: &Out, wait: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    let never = |_| std::future::pending::<()>();
    let _ = tokio::time::timeout(wait, conn.recv_admitted(REFUSE_READ_LEN, wait, never)).await;
    let _ = conn.send_timeout(reply, wait).await;
}

/// The largest first frame [`refuse`] reads whole: a `Hello` takes about 15 bytes.
pub const REFUSE_READ_LEN: usize = 256;

/// The server side of the handshake on an admitted connection. `Ok(false)` if the connection
/// was closed first, to make room for another or because the server is shutting down.
pub async fn welcome<C, S>(
    conn: &mut Connection<S, C::Request, C::Response>,
    slot: &Slot,
) -> Result<bool, ProtocolError>
where
    C: Conversation,
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        _ = slot.closed() => Ok(false),
        shaken = server_hello::<C, S>(conn) => shaken.map(|()| true),
    }
}

/// Waits up to `wait` for the next request and marks the slot busy once one has arrived
/// whole. `Ok(None)` when the connection should close without a reply: the client closed it,
/// sent nothing complete in time, or the slot was closed (to make room, or shutdown). A frame
/// that can't be decoded is answered with an `Error` where one is worth sending, and is
/// returned as the error; the caller then closes the connection. The caller marks the slot
/// writing ([`Slot::writing`]) just before it sends the reply, and idle again
/// ([`Slot::idle`]) once the reply is sent.
pub async fn next_request<C, S>(
    conn: &mut Connection<S, C::Request, C::Response>,
    slot: &Slot,
    wait: Duration,
) -> Result<Option<C::Request>, ProtocolError>
where
    C: Conversation,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let received = await_request(slot, wait, conn.recv()).await;
    next_request_reply::<C, S, _>(conn, received).await
}

/// The waiting half of [`next_request`], for a server that reads frames its own way (the
/// index reads large ones only once there is room for them): `receive` is the read. Returns
/// what it gave, `Ok(None)` on a timeout or a closed slot, and marks the slot busy when a
/// request arrived whole.
pub async fn await_request<T>(
    slot: &Slot,
    wait: Duration,
    receive: impl Future<Output = Result<Option<T>, ProtocolError>>,
) -> Result<Option<T>, ProtocolError> {
    let received = tokio::select! {
        biased;
        _ = slot.closed() => return Ok(None),
        received = tokio::time::timeout(wait, receive) => received,
    };
    match received {
        Err(_) => {
            debug!(?wait, "no request in time; closing the connection");
            Ok(None)
        }
        // Closed to make room just as the request arrived: drop it, the client sees a close.
        Ok(Ok(Some(_))) if !slot.busy(std::time::Instant::now()) => Ok(None),
        Ok(received) => received,
    }
}

/// The replying half of [`next_request`]: a frame that could not be decoded is answered with
/// an `Error` where one is worth sending, and returned as the error.
pub async fn next_request_reply<C, S, T>(
    conn: &mut Connection<S, C::Request, C::Response>,
    received: Result<Option<T>, ProtocolError>,
) -> Result<Option<T>, ProtocolError>
where
    C: Conversation,
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(err) = &received
        && let Some(code) = err.reply_code()
    {
        warn!(%err, "bad frame; closing connection");
        let _ = conn.send(&C::error(code, err.to_string())).await;
    }
    received
}
