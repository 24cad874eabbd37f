//! The `Hello` / `Welcome` exchange that opens every connection, written once for both
//! conversations.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::PROTOCOL_VERSION;
use crate::connection::Connection;
use crate::error::ProtocolError;
use crate::message::{ErrorCode, IndexRequest, IndexResponse, PeerRequest, PeerResponse, Role};

/// How long either side waits for the other's half of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The request/response pair of one conversation, as far as the handshake needs it.
pub trait Conversation {
    /// Client → server messages.
    type Request: Serialize + DeserializeOwned;
    /// Server → client messages.
    type Response: Serialize + DeserializeOwned;
    /// Who serves this conversation.
    const ROLE: Role;
    /// Largest request frame body the server accepts.
    const MAX_REQUEST_LEN: usize;
    /// Largest response frame body the client accepts.
    const MAX_RESPONSE_LEN: usize;

    /// `Hello { version }`.
    fn hello(version: u32) -> Self::Request;
    /// The version if `req` is a `Hello`.
    fn as_hello(req: &Self::Request) -> Option<u32>;
    /// `Welcome { version, role }`.
    fn welcome(version: u32) -> Self::Response;
    /// `(version, role)` if `resp` is a `Welcome`.
    fn as_welcome(resp: &Self::Response) -> Option<(u32, Role)>;
    /// `Error { code, message }`.
    fn error(code: ErrorCode, message: String) -> Self::Response;
    /// `(code, message)` if `resp` is an `Error`.
    fn into_error(resp: Self::Response) -> Option<(ErrorCode, String)>;
}

/// Peer ↔ index server.
#[derive(Debug)]
pub enum IndexConversation {}
/// Downloader ↔ chunk server.
#[derive(Debug)]
pub enum PeerConversation {}

macro_rules! conversation {
    ($name:ident, $req:ident, $resp:ident, $role:expr, $max_req:expr, $max_resp:expr) => {
        impl Conversation for $name {
            type Request = $req;
            type Response = $resp;
            const ROLE: Role = $role;
            const MAX_REQUEST_LEN: usize = $max_req;
            const MAX_RESPONSE_LEN: usize = $max_resp;

            fn hello(version: u32) -> $req {
                $req::Hello { version }
            }
            fn as_hello(req: &$req) -> Option<u32> {
                match req {
                    $req::Hello { version } => Some(*version),
                    _ => None,
                }
            }
            fn welcome(version: u32) -> $resp {
                $resp::Welcome {
                    version,
                    role: $role,
                }
            }
            fn as_welcome(resp: &$resp) -> Option<(u32, Role)> {
                match resp {
                    $resp::Welcome { version, role } => Some((*version, *role)),
                    _ => None,
                }
            }
            fn error(code: ErrorCode, message: String) -> $resp {
                $resp::Error { code, message }
            }
            fn into_error(resp: $resp) -> Option<(ErrorCode, String)> {
                match resp {
                    $resp::Error { code, message } => Some((code, message)),
                    _ => None,
                }
            }
        }
    };
}

conversation!(
    IndexConversation,
    IndexRequest,
    IndexResponse,
    Role::Index,
    crate::MAX_CONTROL_FRAME_LEN,
    crate::MAX_CONTROL_FRAME_LEN
);
conversation!(
    PeerConversation,
    PeerRequest,
    PeerResponse,
    Role::Peer,
    crate::MAX_PEER_REQUEST_FRAME_LEN,
    crate::MAX_CONTROL_FRAME_LEN
);

/// Client side: sends `Hello` and checks the `Welcome`.
pub async fn client_hello<C: Conversation, S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S, C::Response, C::Request>,
) -> Result<(), ProtocolError> {
    let reply = conn
        .request(&C::hello(PROTOCOL_VERSION), HANDSHAKE_TIMEOUT)
        .await?;
    if let Some((version, role)) = C::as_welcome(&reply) {
        if role != C::ROLE {
            return Err(ProtocolError::WrongRole {
                expected: C::ROLE,
                got: role,
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        return Ok(());
    }
    match C::into_error(reply) {
        Some((code, message)) => Err(ProtocolError::Remote {
            code,
            message: message.into(),
        }),
        None => Err(ProtocolError::Unexpected("expected Welcome")),
    }
}

/// Server side: waits for `Hello`, answers `Welcome`, or answers `Error` and fails (the caller
/// then closes the connection).
pub async fn server_hello<C: Conversation, S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S, C::Request, C::Response>,
) -> Result<(), ProtocolError> {
    let first = conn.recv_timeout(HANDSHAKE_TIMEOUT).await;
    answer_hello::<C, S>(conn, first).await
}

/// The second half of [`server_hello`], for a server that received the first message its own
/// way (within [`HANDSHAKE_TIMEOUT`]; a clean close is [`ProtocolError::Closed`]): answers it
/// `Welcome`, or answers `Error` and fails.
pub async fn answer_hello<C: Conversation, S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S, C::Request, C::Response>,
    first: Result<C::Request, ProtocolError>,
) -> Result<(), ProtocolError> {
    let first = match first {
        Ok(msg) => msg,
        Err(err) => {
            if let Some(code) = err.reply_code() {
                let _ = conn.send(&C::error(code, err.to_string())).await;
            }
            return Err(err);
        }
    };
    match C::as_hello(&first) {
        Some(PROTOCOL_VERSION) => conn.send(&C::welcome(PROTOCOL_VERSION)).await,
        Some(theirs) => {
            let err = ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            };
            let message = format!(
                "this {} speaks protocol version {PROTOCOL_VERSION}, you sent {theirs}",
                C::ROLE
            );
            let _ = conn
                .send(&C::error(ErrorCode::VersionMismatch, message))
                .await;
            Err(err)
        }
        None => {
            let message = "the first message must be Hello".to_owned();
            let _ = conn.send(&C::error(ErrorCode::BadRequest, message)).await;
            Err(ProtocolError::Unexpected("first message was not Hello"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{PeerClientConnection, PeerServerConnection};

    #[tokio::test]
    async fn matching_versions_shake_hands() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = PeerClientConnection::peer_client(a);
        let mut server = PeerServerConnection::peer_server(b);
        let (c, s) = tokio::join!(
            client_hello::<PeerConversation, _>(&mut client),
            server_hello::<PeerConversation, _>(&mut server)
        );
        c.unwrap();
        s.unwrap();
    }

    #[tokio::test]
    async fn wrong_version_gets_a_clear_error() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = PeerClientConnection::peer_client(a);
        let mut server = PeerServerConnection::peer_server(b);
        let server_task =
            tokio::spawn(async move { server_hello::<PeerConversation, _>(&mut server).await });
        let reply = client
            .request(&PeerRequest::Hello { version: 99 }, HANDSHAKE_TIMEOUT)
            .await
            .unwrap();
        match reply {
            PeerResponse::Error { code, message } => {
                assert_eq!(code, ErrorCode::VersionMismatch);
                assert!(message.contains("99"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            server_task.await.unwrap(),
            Err(ProtocolError::VersionMismatch { theirs: 99, .. })
        ));
    }

    #[tokio::test]
    async fn index_client_refuses_a_peer() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = crate::connection::IndexClientConnection::index_client(a);
        let mut server = PeerServerConnection::peer_server(b);
        // A peer answering on the port the user thought was the index. The messages overlap
        // (both Hello), so the role in Welcome is what tells them apart.
        let server_task =
            tokio::spawn(async move { server_hello::<PeerConversation, _>(&mut server).await });
        let err = client_hello::<IndexConversation, _>(&mut client)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::WrongRole {
                expected: Role::Index,
                got: Role::Peer
            }
        ));
        server_task.await.unwrap().unwrap();
    }
}
