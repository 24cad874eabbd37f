//! How p2p-transfer nodes reach each other: TCP, then TLS 1.3 in which both sides present a
//! certificate for their node's Ed25519 key, then the protocol's `Hello` exchange. Each side
//! learns the other's [`NodeId`] from the handshake, never from a message.
//!
//! A client opens a conversation with [`connect()`]; a server takes connections with
//! [`serve()`], the one loop both servers (the index and every peer's chunk server) run, and
//! answers each request with its own [`Handler`].
//!
//! # Layout
//! * [`tls`]: [`Tls`], this node's TLS set-up, and the TLS handshakes.
//! * [`certificate`]: this node's certificate, and the checks on the other side's.
//! * [`connect()`] (here): the one way to open a conversation with a server.
//! * [`serve`](mod@serve): the server side: accepting, admitting or refusing, the TLS and
//!   `Hello` handshakes, waiting for each request, and the [`Service`] and [`Handler`] traits
//!   through which each server answers.
//! * [`slots`]: which connections a server serves, what each is doing, and which one it
//!   closes when full ([`SlotTable`](slots::SlotTable)).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certificate;
pub mod serve;
pub mod slots;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::{Connection, Conversation, NodeId, ProtocolError, client_hello};

pub use certificate::CertificateError;
pub use serve::{Handler, ServeConfig, ServerConnection, Service, serve};
pub use slots::{Refusal, Slot, SlotLimits};
pub use tls::{ALPN, Stream, Tls};

/// A client's side of a conversation `C` over TLS.
pub type ClientConnection<C> =
    Connection<Stream, <C as Conversation>::Response, <C as Conversation>::Request>;

/// Opens conversation `C` with the server at `addr`: TCP, TLS, then `Hello`, all within
/// `timeout`. Returns the connection and the server's node id; with `expect`, a server with
/// another node id is refused ([`ProtocolError::WrongNode`]) before anything is said to it.
pub async fn connect<C: Conversation>(
    tls: &Tls,
    addr: SocketAddr,
    expect: Option<NodeId>,
    timeout: Duration,
) -> Result<(ClientConnection<C>, NodeId), ProtocolError> {
    let started = tokio::time::Instant::now();
    let (stream, node_id) = tls.connect(addr, expect, timeout).await?;
    let mut conn = Connection::client::<C>(stream);
    let left = timeout.saturating_sub(started.elapsed());
    tokio::time::timeout(left, client_hello::<C, _>(&mut conn))
        .await
        .map_err(|_| ProtocolError::Timeout(timeout))??;
    Ok((conn, node_id))
}
