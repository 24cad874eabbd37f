//! What both servers' accept loops share: accepting with a pause after failures, and turning
//! a connection away with one error reply that the client can actually read.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::codec::DecodeFrame;
use crate::connection::Connection;

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
/// `wait`; the caller closes the connection by dropping it.
pub async fn refuse<S, In, Out>(conn: &mut Connection<S, In, Out>, reply: &Out, wait: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DecodeFrame,
    Out: Serialize,
{
    let _ = conn.recv_timeout(wait).await;
    let _ = conn.send_timeout(reply, wait).await;
}
