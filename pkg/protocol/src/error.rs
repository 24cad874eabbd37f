//! Errors raised while framing, decoding or handshaking.

use std::time::Duration;

use crate::message::{ErrorCode, Role};
use crate::text::{RemoteText, printable};

/// Everything that can go wrong on one connection. Any of these ends that connection only.
///
/// A variant that wraps a lower error says it in its own text and reports no `source()`, so
/// the cause is printed once, in a log field (`%err`) as in an error chain (`{err:#}`).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("connection I/O failed: {0}")]
    Io(std::io::Error),
    /// A length prefix announced a frame larger than this connection accepts. Rejected before
    /// any buffer for it is allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Limit in force for this direction.
        max: usize,
    },
    /// A frame arrived whole but its body is not a valid message. The decoder's text may quote
    /// the frame (an unknown message name, say), so it is shown escaped.
    #[error("malformed message: {}", printable(&.0.to_string()))]
    Decode(rmp_serde::decode::Error),
    /// A message could not be encoded (a bug, or a message over the frame limit).
    #[error("cannot encode message: {0}")]
    Encode(rmp_serde::encode::Error),
    /// The remote closed the connection where a reply was expected.
    #[error("connection closed by the remote side")]
    Closed,
    /// No complete frame arrived in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The remote speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the remote speaks {theirs}")]
    VersionMismatch {
        /// Our [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The version the remote announced.
        theirs: u32,
    },
    /// The remote is not the kind of node we expected (e.g. `--server` points at a peer).
    #[error("expected a {expected} at this address, but a {got} answered")]
    WrongRole {
        /// What we wanted to talk to.
        expected: Role,
        /// What answered.
        got: Role,
    },
    /// The remote answered with an `Error` reply.
    #[error("{message} ({code})")]
    Remote {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation from the remote, shown escaped.
        message: RemoteText,
    },
    /// A `Chunk` reply announced more data than a chunk can hold.
    #[error("a chunk of {0} bytes was announced; chunks are at most 4 MiB")]
    ChunkTooLarge(u32),
    /// The TLS handshake failed: the other side is not a node of this protocol, presented no
    /// certificate or one that isn't a node's, or failed to prove it holds the key.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The node that answered is not the one expected at this address (its handshake showed
    /// another node id).
    #[error("the node at this address is {got}, not the expected {expected}")]
    WrongNode {
        /// The node id we wanted (pinned, or named by the index).
        expected: crate::NodeId,
        /// The node id the handshake showed.
        got: crate::NodeId,
    },
    /// The remote sent a valid message that makes no sense at this point of the exchange.
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
}

impl From<std::io::Error> for ProtocolError {
    fn from(err: std::io::Error) -> Self {
        ProtocolError::Io(err)
    }
}

impl From<rmp_serde::decode::Error> for ProtocolError {
    fn from(err: rmp_serde::decode::Error) -> Self {
        ProtocolError::Decode(err)
    }
}

impl From<rmp_serde::encode::Error> for ProtocolError {
    fn from(err: rmp_serde::encode::Error) -> Self {
        ProtocolError::Encode(err)
    }
}

impl ProtocolError {
    /// The error code to send back to a client whose message caused this error, if any reply is
    /// worth sending before closing.
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            ProtocolError::FrameTooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            ProtocolError::Decode(_) => Some(ErrorCode::BadRequest),
            ProtocolError::VersionMismatch { .. } => Some(ErrorCode::VersionMismatch),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_body;
    use crate::message::IndexResponse;

    #[test]
    fn a_cause_is_printed_once() {
        let err = ProtocolError::from(std::io::Error::from_raw_os_error(104));
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.to_string(),
            "connection I/O failed: Connection reset by peer (os error 104)"
        );
    }

    #[test]
    fn remote_text_in_errors_is_shown_escaped() {
        // `{"\e]0;x\a": {}}`: the decoder quotes the unknown message name.
        let body = b"\x81\xa6\x1b]0;x\x07\x80";
        let err = decode_body::<IndexResponse>(body).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(r"\u{1b}]0;x\u{7}"), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");

        let err = ProtocolError::Remote {
            code: ErrorCode::Internal,
            message: "disk\x1b[2J\u{202e}".into(),
        };
        assert_eq!(err.to_string(), r"disk\u{1b}[2J\u{202e} (internal)");
    }
}
