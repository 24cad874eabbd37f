//! MessagePack bodies in length-delimited frames: the only place that knows the byte layout.
//!
//! A frame is a 4-byte big-endian unsigned length `N` followed by `N` bytes holding exactly one
//! MessagePack value. The length is checked against the limit for that direction before any
//! buffer is reserved for the body, so a hostile prefix can't make us allocate.

use std::io::{Cursor, Write};
use std::marker::PhantomData;
use std::ops::Range;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::message::{IndexRequest, IndexResponse, PeerRequest, PeerResponse};
use crate::types::FileId;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encodes `Out` messages and decodes `In` messages, each direction with its own frame limit.
///
/// The framing is the same as tokio-util's `LengthDelimitedCodec` with a 4-byte big-endian
/// length, written out here because that codec consumes the header before the body arrives and
/// so can't report the announced length in [`ProtocolError::FrameTooLarge`], and because
/// encoding straight into the output buffer saves a copy of every chunk.
#[derive(Debug)]
pub struct MessageCodec<In, Out> {
    max_in: usize,
    max_out: usize,
    _messages: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Clone for MessageCodec<In, Out> {
    fn clone(&self) -> Self {
        Self::new(self.max_in, self.max_out)
    }
}

impl<In, Out> MessageCodec<In, Out> {
    /// A codec that accepts incoming frames of at most `max_in` bytes and refuses to send
    /// frames over `max_out` bytes.
    pub fn new(max_in: usize, max_out: usize) -> Self {
        Self {
            max_in,
            max_out,
            _messages: PhantomData,
        }
    }

    /// The largest incoming frame body accepted.
    pub fn max_in(&self) -> usize {
        self.max_in
    }

    /// The body length an incoming frame's `header` announces, if within the limit.
    pub(crate) fn frame_len(&self, header: [u8; HEADER_LEN]) -> Result<usize, ProtocolError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_in {
            return Err(ProtocolError::FrameTooLarge {
                len: len as u64,
                max: self.max_in,
            });
        }
        Ok(len)
    }
}

/// How a message type is decoded from a whole frame. The default is plain MessagePack; a chunk
/// reply takes a faster path that hands out the chunk's bytes as a slice of the frame, with no
/// copy (see [`crate::message::PeerResponse`]).
pub trait DecodeFrame: DeserializeOwned {
    /// Decodes one frame body.
    fn decode_frame(frame: BytesMut) -> Result<Self, ProtocolError> {
        decode_body(&frame)
    }
}

impl<In: DecodeFrame, Out> Decoder for MessageCodec<In, Out> {
    type Item = In;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtocolError> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = self.frame_len(*header)?;
        if src.len() < HEADER_LEN + len {
            // Checked above, so this reservation is bounded by the limit.
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let frame = src.split_to(len);
        In::decode_frame(frame).map(Some)
    }
}

/// Decodes one frame body, refusing trailing bytes so that a frame is exactly one message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let mut cursor = Cursor::new(body);
    let mut decoder = rmp_serde::Deserializer::new(&mut cursor);
    // Far below the decoder's own 1,024: each level is a recursive call, and 1,024 of them
    // overflow a 2 MiB thread stack in a debug build (a 1 KB frame could abort the process).
    decoder.set_max_depth(crate::MAX_NESTING_DEPTH);
    let value = T::deserialize(&mut decoder)?;
    if cursor.position() != body.len() as u64 {
        return Err(ProtocolError::Decode(rmp_serde::decode::Error::Syntax(
            "trailing bytes after the message".into(),
        )));
    }
    Ok(value)
}

impl<In, Out: Serialize> Encoder<&Out> for MessageCodec<In, Out> {
    type Error = ProtocolError;

    fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        // Serialise straight into the output buffer after a placeholder header, so a chunk's
        // bytes are copied once, then patch the length in.
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        rmp_serde::encode::write_named(&mut writer, item)?;
        writer.flush()?;
        let dst = writer.into_inner();
        let len = dst.len() - start - HEADER_LEN;
        if len > self.max_out {
            dst.truncate(start);
            return Err(ProtocolError::FrameTooLarge {
                len: len as u64,
                max: self.max_out,
            });
        }
        dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

impl DecodeFrame for IndexRequest {}
impl DecodeFrame for IndexResponse {}
impl DecodeFrame for PeerRequest {}

impl DecodeFrame for PeerResponse {
    fn decode_frame(frame: BytesMut) -> Result<Self, ProtocolError> {
        // The whole body: `{"Chunk": {"file_id", "index", "data"}}`, fields in any order.
        match scan_chunk(&frame, frame.len()) {
            Some((file_id, index, range)) => Ok(PeerResponse::Chunk {
                file_id,
                index,
                data: frame.freeze().slice(range),
            }),
            // Any other reply, or a chunk in an unusual encoding: the general decoder.
            None => decode_body(&frame),
        }
    }
}

/// Reads the fields of a `Chunk` frame body of `body_len` bytes from `bytes`: the whole body,
/// or only its start when the data comes last (as chunk servers built from this code send
/// it), in which case `bytes` must reach past the data's `bin` header. Returns the file id,
/// the index and where the data lies in the body; `None` if `bytes` can't tell or the body is
/// anything else, including one whose fields don't end exactly at `body_len` (a frame holds
/// exactly one message).
pub(crate) fn scan_chunk(bytes: &[u8], body_len: usize) -> Option<(FileId, u32, Range<usize>)> {
    use rmp::decode;
    let mut rd = bytes;
    if decode::read_map_len(&mut rd).ok()? != 1 || read_key(&mut rd)? != b"Chunk" {
        return None;
    }
    if decode::read_map_len(&mut rd).ok()? != 3 {
        return None;
    }
    let (mut file_id, mut index, mut data) = (None, None, None);
    // Where the last field read ends, in body coordinates (the data may lie past `bytes`).
    let mut end = 0;
    for _ in 0..3 {
        match read_key(&mut rd)? {
            b"file_id" if file_id.is_none() => {
                if decode::read_bin_len(&mut rd).ok()? != 32 || rd.len() < 32 {
                    return None;
                }
                file_id = Some(FileId(rd[..32].try_into().ok()?));
                rd = &rd[32..];
                end = bytes.len() - rd.len();
            }
            b"index" if index.is_none() => {
                index = Some(decode::read_int::<u32, _>(&mut rd).ok()?);
                end = bytes.len() - rd.len();
            }
            b"data" if data.is_none() => {
                let len = decode::read_bin_len(&mut rd).ok()? as usize;
                let start = bytes.len() - rd.len();
                end = start.checked_add(len)?;
                data = Some(start..end);
                // Past data that is not all here, nothing more can be read.
                rd = rd.get(len..).unwrap_or_default();
            }
            _ => return None,
        }
    }
    (end == body_len).then_some((file_id?, index?, data?))
}

fn read_key<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    if rd.len() < len {
        return None;
    }
    let (key, rest) = rd.split_at(len);
    *rd = rest;
    Some(key)
}

/// The frame header and message bytes that come before a chunk's data in a `Chunk` reply
/// whose data is sent separately (see `PeerServerConnection::send_chunk_from_file`).
pub fn chunk_frame_prefix(
    file_id: FileId,
    index: u32,
    data_len: usize,
    max: usize,
) -> Result<Vec<u8>, ProtocolError> {
    // Encode the message with empty data; it ends in `bin 8` of length 0 (0xc4 0x00), which
    // becomes a `bin 32` header for the real length.
    let empty = PeerResponse::Chunk {
        file_id,
        index,
        data: bytes::Bytes::new(),
    };
    let mut body = rmp_serde::to_vec_named(&empty)?;
    debug_assert_eq!(&body[body.len() - 2..], &[0xc4, 0x00]);
    body.truncate(body.len() - 2);
    body.push(0xc6);
    body.extend_from_slice(&(data_len as u32).to_be_bytes());
    let len = body.len() + data_len;
    if len > max {
        return Err(ProtocolError::FrameTooLarge {
            len: len as u64,
            max,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Encodes one message as a complete frame (header included). For tests and tools.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = rmp_serde::to_vec_named(msg)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_deeply_nested_body_is_refused_without_deep_recursion() {
        // `{"Hello": [[[[...]]]]}` 100,000 levels deep, decoded on a thread with a small stack:
        // the decoder must give up at the limit, not recurse until the stack overflows.
        let mut body = vec![0x81, 0xa5];
        body.extend_from_slice(b"Hello");
        body.extend(std::iter::repeat_n(0x91, 100_000));
        body.push(0xc0);
        let refused = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || decode_body::<crate::IndexRequest>(&body).is_err())
            .unwrap()
            .join()
            .expect("the decoder overflowed its stack");
        assert!(refused);
    }

    type PeerSide = MessageCodec<PeerRequest, PeerResponse>;

    #[test]
    fn round_trip_over_split_input() {
        let mut enc: MessageCodec<PeerResponse, PeerResponse> = MessageCodec::new(1 << 20, 1 << 20);
        let msg = PeerResponse::Chunk {
            file_id: FileId([7; 32]),
            index: 3,
            data: Bytes::from(vec![9u8; 1000]),
        };
        let mut buf = BytesMut::new();
        enc.encode(&msg, &mut buf).unwrap();
        // Feed the frame one byte at a time: nothing decodes until it is whole.
        let mut src = BytesMut::new();
        let mut out = None;
        for (i, b) in buf.iter().enumerate() {
            src.put_u8(*b);
            let got = enc.decode(&mut src).unwrap();
            if i + 1 < buf.len() {
                assert!(got.is_none());
            } else {
                out = got;
            }
        }
        assert_eq!(out, Some(msg));
        assert!(src.is_empty());
    }

    #[test]
    fn wire_shape_is_a_single_key_map_with_named_fields() {
        let frame = encode_frame(&IndexRequest::Hello { version: 1 }).unwrap();
        // fixmap(1) "Hello" fixmap(1) "version" 1
        let mut expected = vec![0x81, 0xa5];
        expected.extend_from_slice(b"Hello");
        expected.extend_from_slice(&[0x81, 0xa7]);
        expected.extend_from_slice(b"version");
        expected.push(0x01);
        assert_eq!(&frame[4..], &expected[..]);
        assert_eq!(&frame[..4], &(expected.len() as u32).to_be_bytes());

        let frame = encode_frame(&IndexRequest::ListFiles {}).unwrap();
        let mut expected = vec![0x81, 0xa9];
        expected.extend_from_slice(b"ListFiles");
        expected.push(0x80);
        assert_eq!(&frame[4..], &expected[..]);
    }

    #[test]
    fn hashes_travel_as_bin() {
        let frame = encode_frame(&PeerRequest::GetManifest {
            file_id: FileId([0xee; 32]),
        })
        .unwrap();
        let needle = [&[0xc4, 32][..], &[0xee; 32][..]].concat();
        assert!(frame.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = PeerSide::new(1024, 1024);
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x00][..]);
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert!(src.capacity() < 1 << 20);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        let mut codec = PeerSide::new(1024, 1024);
        let mut src = BytesMut::from(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(ProtocolError::Decode(_))
        ));

        let mut frame = encode_frame(&PeerRequest::Hello { version: 1 }).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let mut src = BytesMut::from(&frame[..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[test]
    fn huge_claimed_array_in_tiny_frame_is_an_error_not_an_allocation() {
        // {"GetChunk": array32 claiming 4 billion elements}
        let mut body = vec![0x81, 0xa8];
        body.extend_from_slice(b"GetChunk");
        body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode_body::<PeerRequest>(&body).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut body = vec![0x81, 0xa8];
        body.extend_from_slice(b"GetChunk");
        body.extend(std::iter::repeat_n(0x91, 100_000));
        assert!(decode_body::<PeerRequest>(&body).is_err());
    }

    #[test]
    fn encoder_refuses_oversized_frames() {
        let mut codec: MessageCodec<PeerRequest, PeerResponse> = MessageCodec::new(1024, 1024);
        let msg = PeerResponse::Chunk {
            file_id: FileId([0; 32]),
            index: 0,
            data: Bytes::from(vec![0; 2048]),
        };
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(&msg, &mut dst),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(dst.is_empty());
    }

    #[test]
    fn chunk_fast_paths_agree_with_the_general_codec() {
        let data = vec![0x5a; 70_000];
        let msg = PeerResponse::Chunk {
            file_id: FileId([3; 32]),
            index: 9,
            data: Bytes::from(data.clone()),
        };
        // Sent in two parts (prefix, then data) ...
        let mut wire = chunk_frame_prefix(FileId([3; 32]), 9, data.len(), 1 << 20).unwrap();
        wire.extend_from_slice(&data);
        // ... it is a frame the general decoder reads,
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4);
        assert_eq!(decode_body::<PeerResponse>(&wire[4..]).unwrap(), msg);
        // and the fast decoder gives the same message for it and for the general encoding.
        let mut codec: MessageCodec<PeerResponse, PeerRequest> =
            MessageCodec::new(1 << 20, 1 << 20);
        let mut src = BytesMut::from(&wire[..]);
        assert_eq!(codec.decode(&mut src).unwrap(), Some(msg.clone()));
        let general = encode_frame(&msg).unwrap();
        let mut src = BytesMut::from(&general[..]);
        assert_eq!(codec.decode(&mut src).unwrap(), Some(msg));
        // Fields in another order, and trailing bytes, still decode (or fail) as in general.
        let mut trailing = general.clone();
        trailing.push(0);
        let n = (trailing.len() - 4) as u32;
        trailing[..4].copy_from_slice(&n.to_be_bytes());
        let mut src = BytesMut::from(&trailing[..]);
        assert!(codec.decode(&mut src).is_err());
        assert!(chunk_frame_prefix(FileId([0; 32]), 0, 1 << 20, 1 << 20).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let mut codec = PeerSide::new(4096, 4096);
            let mut src = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = codec.decode(&mut src) {}
        }
    }
}
