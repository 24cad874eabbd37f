//! [`Connection`]: a stream that sends and receives whole messages. Nothing else in the
//! workspace touches the codec.

use std::time::Duration;

use bytes::Buf;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Framed};

use crate::CHUNK_SIZE;
use crate::codec::{HEADER_LEN, MessageCodec};
use crate::error::ProtocolError;
use crate::handshake::{Conversation, IndexConversation, PeerConversation};
use crate::message::{IndexRequest, IndexResponse, PeerRequest, PeerResponse};
use crate::types::FileId;

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
    In: DeserializeOwned,
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

    /// Queues one message without flushing it: it goes out with the next
    /// [`Connection::flush`], or earlier once the queued bytes pass the write batch
    /// ([`Connection::set_write_batch`]). A client that pipelines sends a burst of requests
    /// this way and flushes once.
    pub async fn feed(&mut self, msg: &Out) -> Result<(), ProtocolError> {
        self.framed.feed(msg).await
    }

    /// Pushes every queued message (and bytes written after them) to the network.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        SinkExt::<&Out>::flush(&mut self.framed).await
    }

    /// How many queued bytes [`Connection::feed`] lets pile up before it writes them out
    /// itself (8 KiB unless set).
    pub fn set_write_batch(&mut self, bytes: usize) {
        self.framed.set_backpressure_boundary(bytes);
    }

    /// Whether a whole incoming frame can be received now without waiting: it is buffered
    /// already, or it is in what the stream has ready (read here without waiting). A server
    /// that answers pipelined requests flushes its replies only when this is false, so a
    /// burst of requests gets its replies in a few writes rather than one each.
    pub fn frame_ready(&mut self) -> bool {
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};
        use tokio::io::ReadBuf;
        let mut scratch = [0u8; READY_READ];
        loop {
            if let Some(header) = self.framed.read_buffer().first_chunk::<HEADER_LEN>() {
                // A frame over the limit: the receive refuses it at once, without reading it
                // (so this never buffers more than one frame within the limit).
                let Ok(len) = self.framed.codec().frame_len(*header) else {
                    return true;
                };
                if self.framed.read_buffer().len() >= HEADER_LEN + len {
                    return true;
                }
            }
            let mut cx = Context::from_waker(Waker::noop());
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(self.framed.get_mut()).poll_read(&mut cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    let filled = read.filled();
                    self.framed.read_buffer_mut().extend_from_slice(filled);
                }
                // Nothing ready, the end, or an error: the next receive finds out.
                _ => return false,
            }
        }
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
    ///
    /// A TLS stream that ends without `close_notify` reports `UnexpectedEof`; between frames
    /// that is a close like any other (every message is framed, so nothing can have been cut
    /// off), and only inside a frame an error.
    pub async fn recv(&mut self) -> Result<Option<In>, ProtocolError> {
        match self.framed.next().await.transpose() {
            Err(ProtocolError::Io(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && self.framed.read_buffer().is_empty() =>
            {
                Ok(None)
            }
            other => other,
        }
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

    /// Receives the next message like [`Connection::recv`], but reads the body of a frame
    /// longer than `free_len` bytes only once `admit(len)` has finished, and then within
    /// `body_timeout`. Returns the message with what `admit` returned (`None` for a frame that
    /// needed no admission); keep it until done with the message.
    ///
    /// A server passes an `admit` that waits for room in a memory budget shared by all its
    /// connections, so that a client announcing big frames costs it nothing until there is
    /// room. The read buffer grows only with bytes that have arrived, never past the end of
    /// the frame, and at most to twice what has arrived: a client that announces a frame and
    /// sends nothing more costs its 4-byte header, whatever length it announced, and one that
    /// trickles a frame costs what it has sent. Until a frame is admitted, only its header is
    /// read. Once the frame is decoded, its buffer is given back, so a connection between
    /// frames holds no read buffer. A frame over the connection's limit fails as in `recv`,
    /// without being admitted.
    ///
    /// Use this or `recv` on a connection, not both: this reads the stream itself. Dropping
    /// the future part-way through a frame leaves the connection unusable: close it.
    pub async fn recv_admitted<T, F, Fut>(
        &mut self,
        free_len: usize,
        body_timeout: Duration,
        admit: F,
    ) -> Result<Option<(In, Option<T>)>, ProtocolError>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let mut admit = Some(admit);
        let mut ticket = None;
        let mut deadline = None;
        loop {
            let buffered = self.framed.read_buffer();
            // The frame's whole length (header included) once its header is here; until then
            // read no more than the header, so that a frame not yet admitted is never read.
            let mut frame_end = HEADER_LEN;
            if let Some(header) = buffered.get(..HEADER_LEN) {
                let header = header.try_into().expect("4 bytes");
                let len = self.framed.codec().frame_len(header)?;
                if len > free_len && ticket.is_none() {
                    let admit = admit.take().expect("one frame is admitted once");
                    ticket = Some(admit(len).await);
                    deadline = Some(tokio::time::Instant::now() + body_timeout);
                }
                frame_end = HEADER_LEN + len;
                if self.framed.read_buffer().len() >= frame_end {
                    return self
                        .decode_buffered(frame_end)
                        .map(|msg| Some((msg, ticket)));
                }
            }
            // Read no further than the end of this frame, so the buffer never outgrows it.
            let have = self.framed.read_buffer().len();
            let mut scratch = vec![0u8; (frame_end - have).min(ADMISSION_READ)];
            let read = self.framed.get_mut().read(&mut scratch);
            let read = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, read)
                    .await
                    .map_err(|_| ProtocolError::Timeout(body_timeout))?,
                None => read.await,
            };
            // A TLS stream that ends without `close_notify`: a close like any other (see
            // `recv`).
            let n = match read {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                read => read?,
            };
            if n == 0 {
                return if self.framed.read_buffer().is_empty() {
                    Ok(None)
                } else {
                    Err(ProtocolError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
            grow_within(self.framed.read_buffer_mut(), &scratch[..n], frame_end);
        }
    }

    /// Decodes the frame that makes up the first `frame_end` bytes of the read buffer, and
    /// leaves the read buffer holding only the bytes after it, in a buffer of their own: the
    /// frame's memory goes with the frame (a frame split off a buffer otherwise keeps the
    /// whole allocation alive in what is left, however little that looks).
    fn decode_buffered(&mut self, frame_end: usize) -> Result<In, ProtocolError> {
        let read_buffer = self.framed.read_buffer_mut();
        let mut frame = read_buffer.split_to(frame_end);
        *read_buffer = bytes::BytesMut::from(&read_buffer[..]);
        let mut codec = self.framed.codec().clone();
        Ok(codec
            .decode(&mut frame)?
            .expect("a whole frame is buffered"))
    }

    /// Gives back the memory of both buffers, keeping any bytes not yet read or written in
    /// buffers just large enough for them. A server calls this after each reply so that an
    /// idle connection does not sit on the room its largest frame took. (A buffer's
    /// `capacity` can't tell: once its bytes have been consumed it reports only what lies
    /// past them, while the whole allocation stays behind it.)
    pub fn shrink_buffers(&mut self) {
        let shrink = |buffer: &mut bytes::BytesMut| *buffer = bytes::BytesMut::from(&buffer[..]);
        shrink(self.framed.read_buffer_mut());
        shrink(self.framed.write_buffer_mut());
    }

    /// Whether either buffer still holds memory for `bytes` more bytes, including memory
    /// behind bytes already consumed (which `capacity` does not show).
    #[cfg(test)]
    fn holds_room_for(&mut self, bytes: usize) -> bool {
        self.framed.read_buffer_mut().try_reclaim(bytes)
            || self.framed.write_buffer_mut().try_reclaim(bytes)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }
}

/// Most bytes [`Connection::recv_admitted`] reads at once.
pub const ADMISSION_READ: usize = 4096;

/// Most bytes [`Connection::frame_ready`] reads at a time while it looks for a whole frame.
const READY_READ: usize = 4096;

/// Appends `bytes` to `buffer`, growing it when it must to twice its length, but never past
/// `end` (the end of the frame being read) nor less than the bytes need. Left to itself,
/// `BytesMut` would round its allocation up past the frame's end.
fn grow_within(buffer: &mut bytes::BytesMut, bytes: &[u8], end: usize) {
    let needed = buffer.len() + bytes.len();
    if buffer.capacity() < needed {
        let capacity = needed.max((2 * buffer.len()).min(end));
        let mut grown = bytes::BytesMut::with_capacity(capacity);
        grown.extend_from_slice(buffer);
        *buffer = grown;
    }
    buffer.extend_from_slice(bytes);
}

impl<S: AsyncRead + AsyncWrite + Unpin, In: DeserializeOwned, Out: Serialize>
    Connection<S, In, Out>
{
    /// A client's side of conversation `C`: requests out, responses in, each within `C`'s
    /// frame limits.
    pub fn client<C>(stream: S) -> Self
    where
        C: Conversation<Request = Out, Response = In>,
    {
        Self::with_limits(stream, C::MAX_RESPONSE_LEN, C::MAX_REQUEST_LEN)
    }

    /// A server's side of conversation `C`, starting with no buffer memory (the codec's
    /// default is 8 KiB each way), so that an idle connection costs a server nothing.
    pub fn server<C>(stream: S) -> Self
    where
        C: Conversation<Request = In, Response = Out>,
    {
        let mut conn = Self::with_limits(stream, C::MAX_REQUEST_LEN, C::MAX_RESPONSE_LEN);
        conn.shrink_buffers();
        conn
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> IndexClientConnection<S> {
    /// [`Connection::client`] of the index conversation.
    pub fn index_client(stream: S) -> Self {
        Self::client::<IndexConversation>(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> IndexServerConnection<S> {
    /// [`Connection::server`] of the index conversation.
    pub fn index_server(stream: S) -> Self {
        Self::server::<IndexConversation>(stream)
    }
}

/// What came back for a `GetChunk` sent with [`PeerClientConnection::request_chunk`].
#[derive(Debug)]
pub enum ChunkReply {
    /// A chunk; its data is in the buffer `fill` returned.
    Chunk {
        /// The file, as the reply names it.
        file_id: FileId,
        /// The chunk index, as the reply names it.
        index: u32,
    },
    /// Any other reply (usually `Error`).
    Other(PeerResponse),
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerClientConnection<S> {
    /// [`Connection::client`] of the peer conversation.
    pub fn peer_client(stream: S) -> Self {
        Self::client::<PeerConversation>(stream)
    }

    /// Sends `request` (a `GetChunk`) and receives the reply within `timeout`. For a `Chunk`,
    /// `fill(size)` gives the buffer for its `size` bytes of data, which are read into it
    /// straight from the connection: whatever of them arrived with the reply's frame, then
    /// the rest with no frame buffer in between.
    ///
    /// A `Chunk` announcing more than [`CHUNK_SIZE`] bytes is an error. After any error the
    /// connection is in an unknown state and must be dropped.
    pub async fn request_chunk<'b>(
        &mut self,
        request: &PeerRequest,
        fill: impl FnOnce(usize) -> &'b mut [u8],
        timeout: Duration,
    ) -> Result<ChunkReply, ProtocolError> {
        self.send_timeout(request, timeout).await?;
        self.receive_chunk(None, fill, timeout).await
    }

    /// Receives the reply to a `GetChunk` sent earlier (a client may send several before it
    /// reads the first reply), as [`PeerClientConnection::request_chunk`] does, for a chunk
    /// of `expected` bytes (per its manifest): a `Chunk` announcing any other size is an
    /// error ([`ProtocolError::Unexpected`]) before any buffer is asked of `fill` or any of
    /// its data is read, so a host can't make the client hold more than it asked for.
    pub async fn recv_chunk<'b>(
        &mut self,
        expected: u32,
        fill: impl FnOnce(usize) -> &'b mut [u8],
        timeout: Duration,
    ) -> Result<ChunkReply, ProtocolError> {
        self.receive_chunk(Some(expected), fill, timeout).await
    }

    async fn receive_chunk<'b>(
        &mut self,
        expected: Option<u32>,
        fill: impl FnOnce(usize) -> &'b mut [u8],
        timeout: Duration,
    ) -> Result<ChunkReply, ProtocolError> {
        let receive = async {
            let reply = self.recv().await?.ok_or(ProtocolError::Closed)?;
            let PeerResponse::Chunk {
                file_id,
                index,
                size,
            } = reply
            else {
                return Ok(ChunkReply::Other(reply));
            };
            if size > CHUNK_SIZE {
                return Err(ProtocolError::ChunkTooLarge(size));
            }
            if expected.is_some_and(|expected| size != expected) {
                return Err(ProtocolError::Unexpected(
                    "a Chunk of another size than the chunk asked for",
                ));
            }
            let data = fill(size as usize);
            let read_buffer = self.framed.read_buffer_mut();
            let buffered = read_buffer.len().min(data.len());
            data[..buffered].copy_from_slice(&read_buffer[..buffered]);
            read_buffer.advance(buffered);
            self.framed
                .get_mut()
                .read_exact(&mut data[buffered..])
                .await?;
            Ok(ChunkReply::Chunk { file_id, index })
        };
        tokio::time::timeout(timeout, receive)
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerServerConnection<S> {
    /// [`Connection::server`] of the peer conversation.
    pub fn peer_server(stream: S) -> Self {
        Self::server::<PeerConversation>(stream)
    }

    /// Writes part of a chunk's data, after the `Chunk` frame that announced it was sent
    /// (with [`Connection::send`], which flushed everything queued before it). The caller
    /// writes exactly the `size` bytes announced, in as many parts as it likes, then
    /// [`Connection::flush`]es; a chunk that can't be completed leaves the connection
    /// unusable: drop it.
    pub async fn send_chunk_data(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        debug_assert!(
            self.framed.write_buffer().is_empty(),
            "chunk data would overtake queued frames"
        );
        Ok(self.framed.get_mut().write_all(data).await?)
    }

    /// Queues a `Chunk` frame and its whole `data` behind it without flushing, like
    /// [`Connection::feed`]: for a small chunk, so that it leaves with the replies around it
    /// in one write instead of two of its own.
    pub async fn feed_chunk(
        &mut self,
        chunk: &PeerResponse,
        data: &[u8],
    ) -> Result<(), ProtocolError> {
        debug_assert!(
            matches!(chunk, PeerResponse::Chunk { size, .. } if *size as usize == data.len())
        );
        self.framed.feed(chunk).await?;
        self.framed.write_buffer_mut().extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::*;
    use crate::ErrorCode;
    use crate::codec::encode_frame;

    const ID: FileId = FileId([7; 32]);
    const T: Duration = Duration::from_secs(5);

    /// A client, and the server's side as a raw stream (small pipe, so reads come in pieces).
    fn pair() -> (PeerClientConnection<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (PeerClientConnection::peer_client(client), server)
    }

    fn get(index: u32) -> PeerRequest {
        PeerRequest::GetChunk { file_id: ID, index }
    }

    /// Reads one request frame off the raw server side.
    async fn read_request(server: &mut DuplexStream) -> PeerRequest {
        let mut header = [0u8; HEADER_LEN];
        server.read_exact(&mut header).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        server.read_exact(&mut body).await.unwrap();
        crate::codec::decode_body(&body).unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// The index server's side of a connection, and the client's side as a raw stream.
    fn index_pair(pipe: usize) -> (IndexServerConnection<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(pipe);
        (IndexServerConnection::index_server(server), client)
    }

    /// Frames up to this long need no admission in these tests, as on the index server.
    const FREE: usize = 16 * 1024;

    /// Many connections that announce the largest frame needing no admission and then send
    /// nothing more (or a few bytes of it) hold a few bytes each, not the length they
    /// announced.
    #[tokio::test]
    async fn an_announced_frame_costs_only_the_bytes_that_arrived() {
        use futures::FutureExt;

        let mut conns = Vec::new();
        for i in 0..100 {
            let (mut server, mut client) = index_pair(64 * 1024);
            let mut partial = (FREE as u32).to_be_bytes().to_vec();
            partial.extend(std::iter::repeat_n(0x81, i % 2 * 10));
            client.write_all(&partial).await.unwrap();
            // One poll reads everything that has arrived, then waits for the rest.
            let received = server.recv_admitted(FREE, T, |_| async {}).now_or_never();
            assert!(received.is_none(), "a partial frame was returned");
            conns.push((server, client));
        }
        for (server, _) in &mut conns {
            assert!(
                !server.holds_room_for(1024),
                "a connection that sent at most 14 bytes holds a kilobyte"
            );
        }
    }

    /// Once a large frame has been received, and a large reply sent and the buffers shrunk,
    /// the connection holds none of their memory: a server's room for them in its budget is
    /// given back with the memory, not before.
    #[tokio::test]
    async fn a_large_frame_leaves_no_memory_behind() {
        let (mut server, mut client) = index_pair(4 * 1024 * 1024);
        let request = IndexRequest::Lookup {
            id: "a".repeat(1024 * 1024),
        };
        let frame = encode_frame(&request).unwrap();
        client.write_all(&frame).await.unwrap();
        let (received, ticket) = server
            .recv_admitted(FREE, T, |len| async move { len })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, request);
        assert_eq!(
            ticket,
            Some(frame.len() - HEADER_LEN),
            "a large frame is admitted"
        );
        assert!(
            !server.holds_room_for(64 * 1024),
            "the request's buffer outlives it"
        );

        let reply = IndexResponse::Error {
            code: ErrorCode::BadRequest,
            message: "b".repeat(1024 * 1024),
        };
        server.send(&reply).await.unwrap();
        server.shrink_buffers();
        assert!(
            !server.holds_room_for(64 * 1024),
            "the reply's buffer outlives it"
        );
    }

    /// Frames that arrive together are received one by one, and a small one is not admitted.
    #[tokio::test]
    async fn frames_sent_together_are_received_in_order() {
        let (mut server, mut client) = index_pair(64 * 1024);
        let first = IndexRequest::ListFiles {};
        let second = IndexRequest::Search {
            query: "holiday".into(),
        };
        let mut both = encode_frame(&first).unwrap();
        both.extend(encode_frame(&second).unwrap());
        client.write_all(&both).await.unwrap();
        drop(client);
        for expected in [first, second] {
            let (received, ticket) = server
                .recv_admitted(FREE, T, |_| async { panic!("admitted a small frame") })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(received, expected);
            assert!(ticket.is_none());
        }
        let end = server.recv_admitted(FREE, T, |_| async {}).await.unwrap();
        assert!(end.is_none(), "a clean close between frames is the end");
    }

    /// Sends a `Chunk` announcing `size` bytes, then `data` (which may be shorter or longer).
    async fn send_chunk(server: &mut DuplexStream, index: u32, size: u32, data: &[u8]) {
        let header = PeerResponse::Chunk {
            file_id: ID,
            index,
            size,
        };
        let mut bytes = encode_frame(&header).unwrap();
        bytes.extend_from_slice(data);
        server.write_all(&bytes).await.unwrap();
    }

    #[tokio::test]
    async fn chunks_arrive_whole_and_the_connection_stays_usable() {
        let (mut client, mut server) = pair();
        let full = pattern(CHUNK_SIZE as usize);
        let expected = full.clone();
        let serve = tokio::spawn(async move {
            assert_eq!(read_request(&mut server).await, get(0));
            send_chunk(&mut server, 0, CHUNK_SIZE, &full).await;
            assert_eq!(read_request(&mut server).await, get(1));
            let error = PeerResponse::Error {
                code: ErrorCode::Busy,
                message: "busy".into(),
            };
            server
                .write_all(&encode_frame(&error).unwrap())
                .await
                .unwrap();
            // A small chunk and the next reply in one write: the data ends where it says.
            assert_eq!(read_request(&mut server).await, get(2));
            send_chunk(&mut server, 2, 6, b"hello\n").await;
            server
        });
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let reply = client
            .request_chunk(&get(0), |len| &mut buf[..len], T)
            .await
            .unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Chunk {
                file_id: ID,
                index: 0
            }
        ));
        assert!(buf == expected, "chunk data differs");
        let reply = client
            .request_chunk(&get(1), |len| &mut buf[..len], T)
            .await
            .unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Other(PeerResponse::Error {
                code: ErrorCode::Busy,
                ..
            })
        ));
        let mut small = Vec::new();
        let reply = client
            .request_chunk(
                &get(2),
                |len| {
                    small.resize(len, 0);
                    &mut small[..]
                },
                T,
            )
            .await
            .unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Chunk {
                file_id: ID,
                index: 2
            }
        ));
        assert_eq!(small, b"hello\n");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_chunk_larger_than_a_chunk_is_refused_before_its_data_is_read() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            send_chunk(&mut server, 0, CHUNK_SIZE + 1, &[]).await;
            server
        });
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let result = client
            .request_chunk(&get(0), |len| &mut buf[..len], T)
            .await;
        assert!(
            matches!(result, Err(ProtocolError::ChunkTooLarge(n)) if n == CHUNK_SIZE + 1),
            "{result:?}"
        );
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_chunk_of_another_size_than_asked_is_refused_before_any_buffer_is_taken() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            // 20 bytes asked, a whole chunk announced (its data never sent).
            send_chunk(&mut server, 0, CHUNK_SIZE, &[]).await;
            server
        });
        client.send(&get(0)).await.unwrap();
        let mut asked_for = None;
        let mut buf = [0u8; 20];
        let result = client
            .recv_chunk(
                20,
                |len| {
                    asked_for = Some(len);
                    &mut buf[..len.min(20)]
                },
                T,
            )
            .await;
        assert!(
            matches!(result, Err(ProtocolError::Unexpected(_))),
            "{result:?}"
        );
        assert_eq!(asked_for, None, "no buffer was asked for");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_host_that_stops_mid_chunk_is_an_error_not_a_short_chunk() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            send_chunk(&mut server, 0, CHUNK_SIZE, &[0u8; 1000]).await;
            // Dropping the stream closes it.
        });
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let result = client
            .request_chunk(&get(0), |len| &mut buf[..len], T)
            .await;
        assert!(result.is_err(), "{result:?}");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            server
                .write_all(&[0xff, 0xff, 0xff, 0xff, 0x81])
                .await
                .unwrap();
            server
        });
        let mut buf = [0u8; 16];
        let result = client
            .request_chunk(&get(0), |len| &mut buf[..len], T)
            .await;
        assert!(
            matches!(result, Err(ProtocolError::FrameTooLarge { .. })),
            "{result:?}"
        );
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn chunk_data_sent_in_parts_arrives_whole() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut client = PeerClientConnection::peer_client(client);
        let mut server = PeerServerConnection::peer_server(server);
        let data = pattern(CHUNK_SIZE as usize);
        let sent = data.clone();
        let serve = tokio::spawn(async move {
            assert_eq!(server.recv().await.unwrap(), Some(get(4)));
            let header = PeerResponse::Chunk {
                file_id: ID,
                index: 4,
                size: CHUNK_SIZE,
            };
            server.send(&header).await.unwrap();
            for part in sent.chunks(256 * 1024 + 7) {
                server.send_chunk_data(part).await.unwrap();
            }
            server.flush().await.unwrap();
            server
        });
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let reply = client
            .request_chunk(&get(4), |len| &mut buf[..len], T)
            .await
            .unwrap();
        assert!(matches!(reply, ChunkReply::Chunk { index: 4, .. }));
        assert!(buf == data, "chunk data differs");
        serve.await.unwrap();
    }
}
