//! [`NodeId`]: who a node is, as a short, readable, checkable string.
//!
//! A node id is the first 20 bytes (160 bits) of the SHA-256 of the node's public key in its
//! DER `SubjectPublicKeyInfo` form, the form a TLS peer presents. It is written as 32
//! characters of RFC 4648 base32 (`A`–`Z`, `2`–`7`) and one check character computed with the
//! Luhn mod 32 algorithm over them, in groups of four with the last group of five:
//! `MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E4DTC`. The check character catches every single
//! mistyped character and most swaps of two neighbours. Reading one back, case, dashes and
//! spaces don't matter.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Bytes of a node id.
pub const NODE_ID_LEN: usize = 20;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Characters of a node id without dashes: 32 for the bytes, one check character.
const CHARS: usize = 33;

/// Who a node is: derived from its public key, so only the holder of the private key can
/// prove it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The id of the node whose public key is `spki_der` (a DER `SubjectPublicKeyInfo`).
    pub fn of_public_key(spki_der: &[u8]) -> Self {
        let digest = Sha256::digest(spki_der);
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        Self(id)
    }

    /// The first two groups, for logs: `MFRG-GZDF`.
    pub fn fmt_short(&self) -> String {
        self.to_string()[..9].to_owned()
    }

    /// The 32 base32 characters of the bytes, without the check character.
    fn base32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // 160 bits = 32 groups of 5, most significant first.
        let mut acc: u64 = 0;
        let mut bits = 0;
        let mut at = 0;
        for &byte in &self.0 {
            acc = (acc << 8) | u64::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out[at] = ALPHABET[((acc >> bits) & 31) as usize];
                at += 1;
            }
        }
        out
    }
}

/// Luhn mod 32 check character of `chars` (each in [`ALPHABET`]).
fn check_char(chars: &[u8]) -> u8 {
    let mut factor = 2;
    let mut sum = 0;
    for &c in chars.iter().rev() {
        let code = value(c).expect("alphabet character") as u32;
        let addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    ALPHABET[((32 - sum % 32) % 32) as usize]
}

fn value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|i| i as u8)
}

/// On the wire: MessagePack `bin` of 20 bytes.
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id: 20 bytes (MessagePack bin)")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
                v.try_into()
                    .map(NodeId)
                    .map_err(|_| E::invalid_length(v.len(), &"20 bytes"))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.base32().to_vec();
        chars.push(check_char(&chars));
        for (i, group) in chars[..28].chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(group).expect("ASCII"))?;
        }
        write!(f, "-{}", std::str::from_utf8(&chars[28..]).expect("ASCII"))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Not 33 characters once dashes and spaces are left out.
    #[error("a node id has 33 characters (A-Z, 2-7; dashes optional), not {0}")]
    Length(usize),
    /// A character outside `A`–`Z`, `2`–`7`.
    #[error("{0:?} can't be part of a node id (it uses A-Z and 2-7)")]
    Character(char),
    /// The check character does not match: a typo somewhere.
    #[error("the node id's check character does not match: a character is mistyped")]
    Check,
    /// Characters that don't encode 20 bytes (the last one has stray low bits).
    #[error("not a node id this program can produce")]
    Bits,
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = Vec::with_capacity(CHARS);
        for c in s.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
            let upper = c.to_ascii_uppercase();
            if !upper.is_ascii() || value(upper as u8).is_none() {
                return Err(NodeIdError::Character(c));
            }
            chars.push(upper as u8);
        }
        if chars.len() != CHARS {
            return Err(NodeIdError::Length(chars.len()));
        }
        let (data, check) = chars.split_at(32);
        if check_char(data) != check[0] {
            return Err(NodeIdError::Check);
        }
        let mut id = [0u8; NODE_ID_LEN];
        let mut acc: u64 = 0;
        let mut bits = 0;
        let mut at = 0;
        for &c in data {
            acc = (acc << 5) | u64::from(value(c).expect("checked above"));
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                id[at] = (acc >> bits) as u8;
                at += 1;
            }
        }
        if bits != 0 {
            return Err(NodeIdError::Bits);
        }
        Ok(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_loosely() {
        let id = NodeId::of_public_key(b"some key");
        let text = id.to_string();
        assert_eq!(text.len(), 33 + 7, "{text}");
        assert_eq!(text.matches('-').count(), 7);
        assert_eq!(text.parse::<NodeId>(), Ok(id));
        assert_eq!(text.to_lowercase().parse::<NodeId>(), Ok(id));
        assert_eq!(text.replace('-', " ").parse::<NodeId>(), Ok(id));
        assert_eq!(text.replace('-', "").parse::<NodeId>(), Ok(id));
        assert_eq!(id.fmt_short(), text[..9]);
    }

    #[test]
    fn known_value() {
        // SHA-256("") = e3b0c442 98fc1c14 9afbf4c8 996fb924 27ae41e4 ...; its first 20 bytes
        // in base32 (checked with Python's base64.b32encode), then the check character.
        let id = NodeId::of_public_key(b"");
        assert_eq!(
            id.to_string()[..39].replace('-', ""),
            "4OYMIQUY7QOBJGX36TEJS35ZEQT24QPE"
        );
    }

    #[test]
    fn every_single_typo_is_caught() {
        let id = NodeId::of_public_key(b"another key");
        let text: Vec<u8> = id.to_string().replace('-', "").into_bytes();
        for at in 0..text.len() {
            for &c in ALPHABET {
                if c == text[at] {
                    continue;
                }
                let mut typo = text.clone();
                typo[at] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert!(typo.parse::<NodeId>().is_err(), "{typo} accepted");
            }
        }
    }

    #[test]
    fn clear_errors() {
        assert_eq!("ABC".parse::<NodeId>(), Err(NodeIdError::Length(3)));
        assert_eq!(
            "MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E4DT1".parse::<NodeId>(),
            Err(NodeIdError::Character('1'))
        );
    }
}
