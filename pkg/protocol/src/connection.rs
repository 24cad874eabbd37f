//! [`Connection`]: a stream that sends and receives whole messages. Nothing else in the
//! workspace touches the codec.

use std::time::Duration;

use bytes::Buf;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Framed};

use crate::chunk_buf::ChunkBuf;
use crate::codec::{DecodeFrame, HEADER_LEN, MessageCodec, scan_chunk};
use crate::error::ProtocolError;
use crate::message::{IndexRequest, IndexResponse, PeerRequest, PeerResponse};
use crate::types::FileId;
use crate::{CHUNK_SIZE, MAX_CHUNK_FRAME_LEN, MAX_CONTROL_FRAME_LEN, MAX_PEER_REQUEST_FRAME_LEN};

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
            let n = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, read)
                    .await
                    .map_err(|_| ProtocolError::Timeout(body_timeout))??,
                None => read.await?,
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

    /// Starts the connection with no buffer memory (the codec's default is 8 KiB each way), so
    /// an idle connection costs a server nothing: buffers grow as frames arrive or are sent.
    fn without_buffers(mut self) -> Self {
        self.shrink_buffers();
        self
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

impl<S: AsyncRead + AsyncWrite + Unpin> IndexClientConnection<S> {
    /// Control-sized frames both ways.
    pub fn index_client(stream: S) -> Self {
        Self::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_FRAME_LEN)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> IndexServerConnection<S> {
    /// Control-sized frames both ways.
    pub fn index_server(stream: S) -> Self {
        Self::with_limits(stream, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_FRAME_LEN).without_buffers()
    }
}

/// What came back for a `GetChunk` sent with [`PeerClientConnection::request_chunk`].
#[derive(Debug)]
pub enum ChunkReply {
    /// A chunk; its data is in the buffer that was passed in.
    Chunk {
        /// The file, as the reply names it.
        file_id: FileId,
        /// The chunk index, as the reply names it.
        index: u32,
    },
    /// Any other reply (usually `Error`), or a `Chunk` with more than [`CHUNK_SIZE`] bytes.
    Other(PeerResponse),
}

/// Room for everything in a `Chunk` frame body before its data: the map headers, three keys,
/// the 32-byte id, the index and the `bin 32` header take at most 66 bytes.
const CHUNK_HEAD_MAX: usize = 96;

impl<S: AsyncRead + AsyncWrite + Unpin> PeerClientConnection<S> {
    /// Receives chunk-sized frames, sends request-sized ones.
    pub fn peer_client(stream: S) -> Self {
        Self::with_limits(stream, MAX_CHUNK_FRAME_LEN, MAX_PEER_REQUEST_FRAME_LEN)
    }

    /// Sends `request` (a `GetChunk`) and receives the reply within `timeout`. A `Chunk`'s data
    /// is read from the socket straight into `buf`, with no frame buffer in between, when the
    /// data comes last in the frame (as chunk servers built from this code send it); any other
    /// encoding is decoded the general way and copied into `buf`.
    ///
    /// After an error the connection is in an unknown state and must be dropped.
    pub async fn request_chunk(
        &mut self,
        request: &PeerRequest,
        buf: &mut ChunkBuf,
        timeout: Duration,
    ) -> Result<ChunkReply, ProtocolError> {
        self.send_timeout(request, timeout).await?;
        tokio::time::timeout(timeout, self.recv_chunk(buf))
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }

    async fn recv_chunk(&mut self, buf: &mut ChunkBuf) -> Result<ChunkReply, ProtocolError> {
        match self.recv_chunk_direct(buf).await? {
            Some(reply) => Ok(reply),
            None => self.recv_chunk_general(buf).await,
        }
    }

    /// Receives the next frame if it is a `Chunk` whose data comes last, reading the data from
    /// the socket straight into `buf`; `None`, with nothing consumed, for any other frame.
    async fn recv_chunk_direct(
        &mut self,
        buf: &mut ChunkBuf,
    ) -> Result<Option<ChunkReply>, ProtocolError> {
        let mut scratch = [0u8; 2 * CHUNK_HEAD_MAX];
        self.fill_read_buffer(HEADER_LEN, &mut scratch).await?;
        let announced = self.framed.read_buffer()[..HEADER_LEN]
            .try_into()
            .map(u32::from_be_bytes)
            .expect("header length") as usize;
        let head = if CHUNK_HEAD_MAX < announced && announced <= MAX_CHUNK_FRAME_LEN {
            self.fill_read_buffer(HEADER_LEN + CHUNK_HEAD_MAX, &mut scratch)
                .await?;
            let head = &self.framed.read_buffer()[HEADER_LEN..HEADER_LEN + CHUNK_HEAD_MAX];
            scan_chunk(head, announced)
                .filter(|(_, _, data)| data.end == announced && data.len() <= CHUNK_SIZE as usize)
        } else {
            None
        };
        let Some((file_id, index, data)) = head else {
            return Ok(None);
        };
        let start = data.start;
        let data = buf.fill(data.len());
        let read_buffer = self.framed.read_buffer_mut();
        read_buffer.advance(HEADER_LEN + start);
        // Whatever of the data came in with the head, then the rest straight from the socket.
        let buffered = read_buffer.len().min(data.len());
        data[..buffered].copy_from_slice(&read_buffer[..buffered]);
        read_buffer.advance(buffered);
        self.framed
            .get_mut()
            .read_exact(&mut data[buffered..])
            .await?;
        Ok(Some(ChunkReply::Chunk { file_id, index }))
    }

    /// Reads a whole frame through the codec (any reply, any encoding) and copies a chunk's
    /// data into `buf`.
    async fn recv_chunk_general(
        &mut self,
        buf: &mut ChunkBuf,
    ) -> Result<ChunkReply, ProtocolError> {
        let mut codec = self.framed.codec().clone();
        let mut scratch = vec![0u8; 64 * 1024];
        let reply = loop {
            if let Some(reply) = codec.decode(self.framed.read_buffer_mut())? {
                break reply;
            }
            self.read_more(&mut scratch).await?;
        };
        match reply {
            PeerResponse::Chunk {
                file_id,
                index,
                data,
            } if data.len() <= CHUNK_SIZE as usize => {
                buf.fill(data.len()).copy_from_slice(&data);
                Ok(ChunkReply::Chunk { file_id, index })
            }
            other => Ok(ChunkReply::Other(other)),
        }
    }

    /// Reads from the socket until the read buffer holds at least `want` bytes.
    async fn fill_read_buffer(
        &mut self,
        want: usize,
        scratch: &mut [u8],
    ) -> Result<(), ProtocolError> {
        while self.framed.read_buffer().len() < want {
            self.read_more(scratch).await?;
        }
        Ok(())
    }

    /// One read from the socket, appended to the read buffer.
    async fn read_more(&mut self, scratch: &mut [u8]) -> Result<(), ProtocolError> {
        let n = self.framed.get_mut().read(scratch).await?;
        if n == 0 {
            return Err(if self.framed.read_buffer().is_empty() {
                ProtocolError::Closed
            } else {
                ProtocolError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        self.framed
            .read_buffer_mut()
            .extend_from_slice(&scratch[..n]);
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerServerConnection<S> {
    /// Receives request-sized frames, sends chunk-sized ones.
    pub fn peer_server(stream: S) -> Self {
        Self::with_limits(stream, MAX_PEER_REQUEST_FRAME_LEN, MAX_CHUNK_FRAME_LEN)
    }
}

impl PeerServerConnection<tokio::net::TcpStream> {
    /// Sends `Chunk { file_id, index, data }` where `data` is the `len` bytes of `file` at
    /// `offset`, with `sendfile(2)`: the bytes go from the page cache to the socket without
    /// passing through user space (no buffer to allocate, fault in and copy twice). The few
    /// bytes before the data are written first; on the wire it is a frame like any other (the
    /// data as `bin 32`).
    ///
    /// Each `sendfile` call runs on a blocking thread, once the socket is writable: it may
    /// have to read the file from the disk, which must never stall the reactor, and it never
    /// waits for the network, so a slow client holds no thread. Where the file system can't
    /// `sendfile`, the rest is read and written the ordinary way.
    ///
    /// If the file turns out shorter than `len`, the frame can't be completed: the error
    /// means the connection must be dropped.
    pub async fn send_chunk_from_file<F>(
        &mut self,
        file_id: FileId,
        index: u32,
        file: std::sync::Arc<F>,
        offset: u64,
        len: usize,
        timeout: Duration,
    ) -> Result<(), ProtocolError>
    where
        F: std::os::fd::AsFd + Send + Sync + 'static,
    {
        let prefix = crate::codec::chunk_frame_prefix(file_id, index, len, MAX_CHUNK_FRAME_LEN)?;
        let write = async {
            self.framed.flush().await?;
            self.framed.get_mut().write_all(&prefix).await?;
            let stream: &tokio::net::TcpStream = self.framed.get_ref();
            // The blocking threads get their own handle on the socket (the same open socket).
            let socket =
                std::sync::Arc::new(rustix::io::dup(stream).map_err(std::io::Error::from)?);
            let (mut offset, mut left) = (offset, len);
            let mut tail = None;
            while left > 0 {
                stream.writable().await?;
                let (socket, file) = (socket.clone(), file.clone());
                let sent =
                    tokio::task::spawn_blocking(move || send_some(&socket, &*file, offset, left))
                        .await
                        .map_err(std::io::Error::other)??;
                match sent {
                    Sent::Bytes(0) => return Err(ProtocolError::Io(file_shrank())),
                    Sent::Bytes(n) => {
                        offset += n as u64;
                        left -= n;
                    }
                    // The socket filled up. Forget its readiness, so that the next wait is for
                    // room, but only if there is still no room now: room made after the full
                    // send but before this point would otherwise be a lost wake-up.
                    Sent::Full => {
                        let _ = stream.try_io(tokio::io::Interest::WRITABLE, || {
                            if has_room(stream, Duration::ZERO)? {
                                Ok(())
                            } else {
                                Err(std::io::ErrorKind::WouldBlock.into())
                            }
                        });
                    }
                    Sent::Read(rest) => {
                        tail = Some(rest);
                        break;
                    }
                }
            }
            if let Some(rest) = tail {
                self.framed.get_mut().write_all(&rest).await?;
            }
            Ok::<_, ProtocolError>(())
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| ProtocolError::Timeout(timeout))?
    }
}

/// How long a blocking thread keeps a full socket, waiting for room, before it hands the send
/// back to the reactor (a slow client must not hold a thread).
const KEEP_SENDING: Duration = Duration::from_millis(2);

/// What one `sendfile` call on a blocking thread did.
enum Sent {
    /// Sent this many bytes (0: the file ends sooner than it should).
    Bytes(usize),
    /// The socket's buffer is full.
    Full,
    /// The file system can't `sendfile`; here is the rest of the range, read normally.
    Read(Vec<u8>),
}

fn send_some(
    socket: &std::os::fd::OwnedFd,
    file: &impl std::os::fd::AsFd,
    offset: u64,
    left: usize,
) -> std::io::Result<Sent> {
    use rustix::io::Errno;
    let until = std::time::Instant::now() + KEEP_SENDING;
    let (mut at, mut sent) = (offset, 0);
    while sent < left {
        match rustix::fs::sendfile(socket, file, Some(&mut at), left - sent) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            // Full: a client reading at loopback speed makes room within microseconds, so
            // wait a little here rather than hand the socket back to the reactor.
            Err(Errno::AGAIN) => {
                if !has_room(
                    socket,
                    until.saturating_duration_since(std::time::Instant::now()),
                )? {
                    return Ok(if sent > 0 {
                        Sent::Bytes(sent)
                    } else {
                        Sent::Full
                    });
                }
            }
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if sent == 0 => {
                return read_range(file, offset, left).map(Sent::Read);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Sent::Bytes(sent))
}

/// Whether `socket` can take more bytes within `wait` (zero: right now).
fn has_room(socket: &impl std::os::fd::AsFd, wait: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(socket, PollFlags::OUT)];
    let wait = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    match poll(&mut fds, Some(&wait)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(fds[0]
        .revents()
        .intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP))
}

/// The error for a shared file that ends before the chunk being sent from it.
fn file_shrank() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the shared file became shorter while a chunk of it was being sent",
    )
}

/// `len` bytes of `file` at `offset`; an error if the file ends sooner.
fn read_range(file: &impl std::os::fd::AsFd, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let at = offset + data.len() as u64;
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut data), at)?;
        if n == 0 {
            return Err(file_shrank());
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::ErrorCode;
    use crate::codec::{chunk_frame_prefix, encode_frame};

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

    #[tokio::test]
    async fn chunks_arrive_whole_in_either_encoding_and_the_connection_stays_usable() {
        let (mut client, mut server) = pair();
        let full = pattern(CHUNK_SIZE as usize);
        let expected = full.clone();
        let serve = tokio::spawn(async move {
            // 1: as a chunk server sends it (data last, bin 32): the direct path.
            assert_eq!(read_request(&mut server).await, get(0));
            let mut frame = chunk_frame_prefix(ID, 0, full.len(), MAX_CHUNK_FRAME_LEN).unwrap();
            frame.extend_from_slice(&full);
            server.write_all(&frame).await.unwrap();
            // 2: an error reply.
            assert_eq!(read_request(&mut server).await, get(1));
            let error = PeerResponse::Error {
                code: ErrorCode::Busy,
                message: "busy".into(),
            };
            server
                .write_all(&encode_frame(&error).unwrap())
                .await
                .unwrap();
            // 3: a short chunk in the shortest encoding: the general path.
            assert_eq!(read_request(&mut server).await, get(2));
            let small = PeerResponse::Chunk {
                file_id: ID,
                index: 2,
                data: Bytes::from_static(b"hello\n"),
            };
            server
                .write_all(&encode_frame(&small).unwrap())
                .await
                .unwrap();
            server
        });
        let mut buf = ChunkBuf::new();
        // The reference encoding takes the direct way: no frame buffer holds the chunk.
        client.send(&get(0)).await.unwrap();
        let reply = client.recv_chunk_direct(&mut buf).await.unwrap();
        assert!(matches!(
            reply,
            Some(ChunkReply::Chunk {
                file_id: ID,
                index: 0
            })
        ));
        assert!(buf.as_slice() == expected, "chunk data differs");
        let reply = client.request_chunk(&get(1), &mut buf, T).await.unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Other(PeerResponse::Error {
                code: ErrorCode::Busy,
                ..
            })
        ));
        let reply = client.request_chunk(&get(2), &mut buf, T).await.unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Chunk {
                file_id: ID,
                index: 2
            }
        ));
        assert_eq!(buf.as_slice(), b"hello\n");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_chunk_larger_than_a_chunk_is_not_taken_as_one() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            let data = vec![1u8; CHUNK_SIZE as usize + 1];
            let mut frame = chunk_frame_prefix(ID, 0, data.len(), MAX_CHUNK_FRAME_LEN).unwrap();
            frame.extend_from_slice(&data);
            server.write_all(&frame).await.unwrap();
            server
        });
        let mut buf = ChunkBuf::new();
        let reply = client.request_chunk(&get(0), &mut buf, T).await.unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Other(PeerResponse::Chunk { .. })
        ));
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_host_that_stops_mid_chunk_is_an_error_not_a_short_chunk() {
        let (mut client, mut server) = pair();
        let serve = tokio::spawn(async move {
            read_request(&mut server).await;
            let mut frame =
                chunk_frame_prefix(ID, 0, CHUNK_SIZE as usize, MAX_CHUNK_FRAME_LEN).unwrap();
            frame.extend_from_slice(&[0u8; 1000]);
            server.write_all(&frame).await.unwrap();
            // Dropping the stream closes it.
        });
        let mut buf = ChunkBuf::new();
        let result = client.request_chunk(&get(0), &mut buf, T).await;
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
        let mut buf = ChunkBuf::new();
        let result = client.request_chunk(&get(0), &mut buf, T).await;
        assert!(
            matches!(result, Err(ProtocolError::FrameTooLarge { .. })),
            "{result:?}"
        );
        serve.await.unwrap();
    }

    /// A chunk server's connection and a downloader's, over real loopback TCP (sendfile needs
    /// a socket).
    async fn tcp_pair() -> (
        PeerServerConnection<tokio::net::TcpStream>,
        PeerClientConnection<tokio::net::TcpStream>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            PeerServerConnection::peer_server(accepted.unwrap().0),
            PeerClientConnection::peer_client(client.unwrap()),
        )
    }

    fn file_with(data: &[u8]) -> (tempfile::NamedTempFile, std::sync::Arc<std::fs::File>) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp, data).unwrap();
        let file = std::sync::Arc::new(tmp.reopen().unwrap());
        (tmp, file)
    }

    #[tokio::test]
    async fn a_chunk_sent_from_a_file_arrives_whole_even_to_a_slow_reader() {
        let (mut server, mut client) = tcp_pair().await;
        let data = pattern(CHUNK_SIZE as usize + 3);
        let (_tmp, file) = file_with(&data);
        // The chunk is the 4 MiB after the first 3 bytes; the reader starts late, so the
        // socket fills and the sender has to wait for room more than once.
        let send = tokio::spawn(async move {
            server
                .send_chunk_from_file(ID, 5, file, 3, CHUNK_SIZE as usize, T)
                .await
                .unwrap();
            server
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = ChunkBuf::new();
        let reply = client.recv_chunk(&mut buf).await.unwrap();
        assert!(matches!(
            reply,
            ChunkReply::Chunk {
                file_id: ID,
                index: 5
            }
        ));
        assert!(buf.as_slice() == &data[3..], "chunk data differs");
        send.await.unwrap();
    }

    #[tokio::test]
    async fn a_file_that_shrank_is_an_error_for_the_sender() {
        let (mut server, _client) = tcp_pair().await;
        let (_tmp, file) = file_with(&pattern(1000));
        let sent = server.send_chunk_from_file(ID, 0, file, 0, 5000, T).await;
        assert!(
            matches!(&sent, Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{sent:?}"
        );
    }

    #[test]
    fn the_fallback_read_gets_the_range_or_an_error() {
        let (_tmp, file) = file_with(&pattern(100));
        assert_eq!(read_range(&*file, 10, 20).unwrap(), pattern(100)[10..30]);
        assert!(read_range(&*file, 90, 20).is_err());
    }
}
