//! [`Connection`]: a stream that sends and receives whole messages. Nothing else in the
//! workspace touches the codec.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::codec::{DecodeFrame, MessageCodec};
use crate::error::ProtocolError;
use crate::message::{IndexRequest, IndexResponse, PeerRequest, PeerResponse};
use crate::types::FileId;
use crate::{MAX_CHUNK_FRAME_LEN, MAX_CONTROL_FRAME_LEN};

/// A framed, typed connection that receives `In` and sends `Out`.
#[derive(Debug)]
pub struct Connection<S, In, Out> {
    framed: Framed<S, MessageCodec<In, Out>>,
}

/// A peer's (or any client's) connection to the index server.
pub type IndexClientConnection<S> = Connection<S, IndexResponse, IndexRequest>;
/// The index server's side of a connection.
pub type IndexServerConnection<S> = Connection<S, IndexRequest, IndexResponse>;
/// A downloader's connection to a peer's chunk server.
pub type PeerClientConnection<S> = Connection<S, PeerResponse, PeerRequest>;
/// A chunk server's side of a connection.
pub type PeerServerConnection<S> = Connection<S, PeerRequest, PeerResponse>;

impl<S, In, Out> Connection<S, In, Out>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DecodeFrame,
    Out: Serialize,
{
    /// Wraps `stream`, accepting incoming frames up to `max_in` bytes and sending up to
    /// `max_out` bytes.
    pub fn with_limits(stream: S, max_in: usize, max_out: usize) -> Self {
        Self {
            framed: Framed::new(stream, MessageCodec::new(max_in, max_out)),
        }
    }

    /// Sends one message and flushes it.
    pub async fn send(&mut self, msg: &Out) -> Result<(), ProtocolError> {
        self.framed.send(msg).await
    }

    /// Sends one message, giving up after `timeout` (a client that stops reading must not
    /// hold a server's task forever).
    pub async fn send_timeout(
        &mut self,
        msg: &Out,
        timeout: Duration,
    ) -> Result<(), ProtocolError> {
        tokio::time::timeout(timeout, self.send(msg))
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }

    /// Receives the next message; `Ok(None)` when the remote closed the connection cleanly
    /// between frames.
    pub async fn recv(&mut self) -> Result<Option<In>, ProtocolError> {
        self.framed.next().await.transpose()
    }

    /// Receives the next message within `timeout`. A clean close is [`ProtocolError::Closed`].
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<In, ProtocolError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Ok(Some(msg))) => Ok(msg),
            Ok(Ok(None)) => Err(ProtocolError::Closed),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProtocolError::Timeout(timeout)),
        }
    }

    /// Sends `msg` and waits up to `timeout` for the reply.
    pub async fn request(&mut self, msg: &Out, timeout: Duration) -> Result<In, ProtocolError> {
        self.send_timeout(msg, timeout).await?;
        self.recv_timeout(timeout).await
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> IndexClientConnection<S> {
    /// Control-sized frames both ways.
    pub fn index_client(stream: S) -> Self {
        Self::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_FRAME_LEN)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> IndexServerConnection<S> {
    /// Control-sized frames both ways.
    pub fn index_server(stream: S) -> Self {
        Self::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_FRAME_LEN)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerClientConnection<S> {
    /// Receives chunk-sized frames, sends control-sized ones.
    pub fn peer_client(stream: S) -> Self {
        Self::with_limits(stream, MAX_CHUNK_FRAME_LEN, MAX_CONTROL_FRAME_LEN)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerServerConnection<S> {
    /// Receives control-sized frames, sends chunk-sized ones.
    pub fn peer_server(stream: S) -> Self {
        Self::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CHUNK_FRAME_LEN)
    }

    /// Sends `Chunk { file_id, index, data }` without copying `data` into a frame buffer: the
    /// few bytes before it are written, then the chunk itself, straight to the socket. The
    /// bytes on the wire are a valid frame like any other (the data as `bin 32`).
    pub async fn send_chunk(
        &mut self,
        file_id: FileId,
        index: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), ProtocolError> {
        let prefix =
            crate::codec::chunk_frame_prefix(file_id, index, data.len(), MAX_CHUNK_FRAME_LEN)?;
        let write = async {
            self.framed.flush().await?;
            let stream = self.framed.get_mut();
            stream.write_all(&prefix).await?;
            stream.write_all(data).await?;
            stream.flush().await?;
            Ok::<_, ProtocolError>(())
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }
}
