//! MessagePack bodies in length-delimited frames: the only place that knows the byte layout.
//!
//! A frame is a 4-byte big-endian unsigned length `N` followed by `N` bytes holding exactly one
//! MessagePack value. The length is checked against the limit for that direction before any
//! buffer is reserved for the body, so a hostile prefix can't make us allocate.

use std::io::{Cursor, Write};
use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;

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

impl<In: DeserializeOwned, Out> Decoder for MessageCodec<In, Out> {
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
        decode_body(&frame).map(Some)
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
    use crate::message::{IndexRequest, PeerRequest, PeerResponse};
    use crate::types::FileId;

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
        let msg = PeerResponse::Error {
            code: crate::ErrorCode::Internal,
            message: "x".repeat(1000),
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
        let msg = PeerResponse::Error {
            code: crate::ErrorCode::Internal,
            message: "x".repeat(2048),
        };
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(&msg, &mut dst),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(dst.is_empty());
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
