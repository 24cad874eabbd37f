//! [`Ticket`]: everything a receiver needs to fetch what a sender shares, without an index, as
//! one short string to copy, paste or show as a QR code.
//!
//! Not on the wire: a person hands a ticket to another (`p2p-transfer send` prints one,
//! `p2p-transfer receive TICKET` reads it). `docs/PROTOCOL.md` §14 is the format's contract;
//! this module and that section must agree.
//!
//! # Text form
//! `p2p` (the format's name) and the version digit, then the payload in RFC 4648 base32
//! (`a`–`z`, `2`–`7`), lower case, without padding. Readers accept either case, so a QR
//! encoder may upper-case the whole ticket to use its compact alphanumeric mode.
//!
//! # Payload, version 1 (`p2p1`)
//! ```text
//! node id         20 bytes: the sender's node id (§2.5); its TLS handshake must prove it
//! item count      1 byte, 1..=MAX_TICKET_ITEMS
//! item            item count times: 1 byte kind (0 file, 1 folder), then the 32-byte id
//! address count   1 byte, 1..=MAX_TICKET_ADDRS
//! address         address count times: 1 byte family (4 or 6), the IP (4 or 16 bytes),
//!                 the port (2 bytes, big-endian, not 0)
//! checksum        4 bytes: the first 4 bytes of the SHA-256 of every byte before it
//! ```
//! Nothing may follow the checksum.
//!
//! # Payload, version 2 (`p2p2`)
//! Version 1's fields up to the last address, then the index servers the sender is registered
//! with, then the checksum as in version 1:
//! ```text
//! index count     1 byte, 1..=MAX_TICKET_INDEXES
//! index           index count times: the index's node id (20 bytes), then its address
//!                 encoded as a version 1 address
//! ```
//! A ticket with no index server is written as version 1, byte for byte, so readers that
//! know only version 1 keep reading every ticket that needs nothing more.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::node_id::NODE_ID_LEN;
use crate::{FileId, FolderId, NodeId};

/// What a ticket of version 1 starts with: the format's name and its version. A ticket that
/// names no index server is always of this version.
pub const TICKET_PREFIX: &str = "p2p1";

/// What a ticket of version 2 (one that names the sender's index servers) starts with.
pub const TICKET_PREFIX_WITH_INDEXES: &str = "p2p2";

/// The format's name: what every ticket starts with, before its version digit.
const TICKET_NAME: &str = "p2p";

/// The version of a ticket that names no index server.
const VERSION_PLAIN: u8 = 1;
/// The version of a ticket that names index servers.
const VERSION_WITH_INDEXES: u8 = 2;

/// Most files and folders one ticket names.
pub const MAX_TICKET_ITEMS: usize = 16;

/// Most addresses one ticket lists for its sender.
pub const MAX_TICKET_ADDRS: usize = 8;

/// Most index servers one (version 2) ticket names: the ones the sender is registered with.
/// Each costs 27 or 39 bytes (about 43 or 62 characters): a handful keeps the ticket short
/// enough to paste and to show as a QR code.
pub const MAX_TICKET_INDEXES: usize = 4;

/// Bytes of the checksum that ends the payload.
pub const TICKET_CHECKSUM_LEN: usize = 4;

/// Kind byte of a file.
const KIND_FILE: u8 = 0;
/// Kind byte of a folder.
const KIND_FOLDER: u8 = 1;

/// The base32 alphabet of RFC 4648, as written (lower case).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// One thing a ticket names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TicketItem {
    /// A file, by its file id (§6.2).
    File(FileId),
    /// A folder, by its folder id (§13.2).
    Folder(FolderId),
}

impl TicketItem {
    /// The id as text (64 hex digits), as `peer --download` takes it.
    pub fn id_text(&self) -> String {
        match self {
            TicketItem::File(id) => id.to_string(),
            TicketItem::Folder(id) => id.to_string(),
        }
    }

    /// The 32 bytes of the id.
    pub fn id_bytes(&self) -> [u8; 32] {
        match self {
            TicketItem::File(id) => id.0,
            TicketItem::Folder(id) => id.0,
        }
    }
}

/// One index server a ticket names: where it is, and who it must prove to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TicketIndex {
    /// The index's node id, as its TLS handshake proved it to the sender: a receiver refuses
    /// an index at `addr` that proves another.
    pub node_id: NodeId,
    /// Where it listens, as the sender reached it.
    pub addr: SocketAddr,
}

/// Who shares what, and where to reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The sender's node id: a receiver refuses any host at these addresses that proves
    /// another in its TLS handshake.
    pub node_id: NodeId,
    /// What the sender shares, 1 to [`MAX_TICKET_ITEMS`] items.
    pub items: Vec<TicketItem>,
    /// Where the sender listens, 1 to [`MAX_TICKET_ADDRS`] addresses, best first.
    pub addrs: Vec<SocketAddr>,
    /// The index servers the sender is registered with, 0 to [`MAX_TICKET_INDEXES`]: where
    /// a receiver can find the sender (or other hosts of the items) when none of `addrs`
    /// answers, across subnets. None: a version 1 ticket; any: version 2.
    pub indexes: Vec<TicketIndex>,
}

/// Why a string is not a ticket this program can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// It does not start with `p2p` and a version digit.
    #[error(
        "not a ticket: a ticket starts with \"{TICKET_PREFIX}\" or \"{TICKET_PREFIX_WITH_INDEXES}\""
    )]
    NotATicket,
    /// A ticket of another version of the format.
    #[error(
        "a ticket of format version {0}, which this program does not read (it reads versions 1 \
         and 2): update p2p-transfer"
    )]
    Version(char),
    /// A character outside the base32 alphabet.
    #[error("the ticket holds {0:?}, which no ticket has: copy it again in full")]
    Character(char),
    /// The checksum does not match: something was changed or lost in copying.
    #[error("the ticket is damaged (its checksum does not match): copy it again in full")]
    Checksum,
    /// Too short for what it says it holds.
    #[error("the ticket is cut short: copy it again in full")]
    Truncated,
    /// The checksum matches, but the content breaks a rule (a sender made it wrongly).
    #[error("the ticket's content is invalid: {0}")]
    Invalid(&'static str),
}

impl Ticket {
    /// The format version this ticket is written in: 1 when it names no index server, else 2.
    pub fn version(&self) -> u8 {
        if self.indexes.is_empty() {
            VERSION_PLAIN
        } else {
            VERSION_WITH_INDEXES
        }
    }

    /// What its text form starts with: [`TICKET_PREFIX`] or [`TICKET_PREFIX_WITH_INDEXES`].
    pub fn prefix(&self) -> &'static str {
        match self.version() {
            VERSION_PLAIN => TICKET_PREFIX,
            _ => TICKET_PREFIX_WITH_INDEXES,
        }
    }

    /// The payload of [`Ticket::version`]: the bytes the text form spells in base32. Only the
    /// first [`MAX_TICKET_ITEMS`] items, [`MAX_TICKET_ADDRS`] addresses and
    /// [`MAX_TICKET_INDEXES`] index servers are written ([`Ticket::new`] and
    /// [`Ticket::with_indexes`] refuse more).
    pub fn to_bytes(&self) -> Vec<u8> {
        let items = &self.items[..self.items.len().min(MAX_TICKET_ITEMS)];
        let addrs = &self.addrs[..self.addrs.len().min(MAX_TICKET_ADDRS)];
        let indexes = &self.indexes[..self.indexes.len().min(MAX_TICKET_INDEXES)];
        let mut out =
            Vec::with_capacity(64 + 33 * items.len() + 19 * addrs.len() + 40 * indexes.len());
        out.extend_from_slice(&self.node_id.0);
        out.push(items.len() as u8);
        for item in items {
            out.push(match item {
                TicketItem::File(_) => KIND_FILE,
                TicketItem::Folder(_) => KIND_FOLDER,
            });
            out.extend_from_slice(&item.id_bytes());
        }
        out.push(addrs.len() as u8);
        for addr in addrs {
            write_addr(&mut out, addr);
        }
        // Version 2 only: a ticket without indexes stays version 1, byte for byte.
        if !indexes.is_empty() {
            out.push(indexes.len() as u8);
            for index in indexes {
                out.extend_from_slice(&index.node_id.0);
                write_addr(&mut out, &index.addr);
            }
        }
        let checksum = checksum(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Reads a payload of format `version` (1 or 2, the digit after `p2p`), checksum first,
    /// and checks every rule of the format.
    pub fn from_bytes(version: u8, bytes: &[u8]) -> Result<Self, TicketError> {
        if version != VERSION_PLAIN && version != VERSION_WITH_INDEXES {
            let digit = char::from_digit(u32::from(version), 10).unwrap_or('?');
            return Err(TicketError::Version(digit));
        }
        if bytes.len() < TICKET_CHECKSUM_LEN {
            return Err(TicketError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - TICKET_CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(TicketError::Checksum);
        }
        let mut reader = Reader { rest: body };
        let node_id = reader.node_id()?;
        let count = usize::from(reader.byte()?);
        if count == 0 || count > MAX_TICKET_ITEMS {
            return Err(TicketError::Invalid(ITEMS_RULE));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = reader.byte()?;
            let id: [u8; 32] = reader.take(32)?.try_into().expect("32 bytes");
            items.push(match kind {
                KIND_FILE => TicketItem::File(FileId(id)),
                KIND_FOLDER => TicketItem::Folder(FolderId(id)),
                _ => return Err(TicketError::Invalid("an item of an unknown kind")),
            });
        }
        let count = usize::from(reader.byte()?);
        if count == 0 || count > MAX_TICKET_ADDRS {
            return Err(TicketError::Invalid(ADDRS_RULE));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let addr = reader.addr()?;
            if !usable(&addr) {
                return Err(TicketError::Invalid(ADDR_RULE));
            }
            addrs.push(addr);
        }
        let mut indexes = Vec::new();
        if version == VERSION_WITH_INDEXES {
            let count = usize::from(reader.byte()?);
            if count == 0 || count > MAX_TICKET_INDEXES {
                return Err(TicketError::Invalid(INDEXES_RULE));
            }
            for _ in 0..count {
                let node_id = reader.node_id()?;
                let addr = reader.addr()?;
                if !usable(&addr) {
                    return Err(TicketError::Invalid(INDEX_ADDR_RULE));
                }
                indexes.push(TicketIndex { node_id, addr });
            }
        }
        if !reader.rest.is_empty() {
            return Err(TicketError::Invalid(match version {
                VERSION_PLAIN => "bytes after the last address",
                _ => "bytes after the last index server",
            }));
        }
        Ok(Self {
            node_id,
            items,
            addrs,
            indexes,
        })
    }

    /// A ticket (of version 1: it names no index server yet), once it is checked against the
    /// format's rules.
    pub fn new(
        node_id: NodeId,
        items: Vec<TicketItem>,
        addrs: Vec<SocketAddr>,
    ) -> Result<Self, TicketError> {
        let ticket = Self {
            node_id,
            items,
            addrs,
            indexes: Vec::new(),
        };
        ticket.validate()?;
        Ok(ticket)
    }

    /// This ticket naming `indexes` too (version 2 when there is any), once checked.
    pub fn with_indexes(self, indexes: Vec<TicketIndex>) -> Result<Self, TicketError> {
        let ticket = Self { indexes, ..self };
        ticket.validate()?;
        Ok(ticket)
    }

    /// Checks the rules a reader checks: 1 to [`MAX_TICKET_ITEMS`] items, 1 to
    /// [`MAX_TICKET_ADDRS`] addresses, at most [`MAX_TICKET_INDEXES`] index servers, no
    /// address with port 0 or an unspecified IP.
    pub fn validate(&self) -> Result<(), TicketError> {
        if self.items.is_empty() || self.items.len() > MAX_TICKET_ITEMS {
            return Err(TicketError::Invalid(ITEMS_RULE));
        }
        if self.addrs.is_empty() || self.addrs.len() > MAX_TICKET_ADDRS {
            return Err(TicketError::Invalid(ADDRS_RULE));
        }
        if self.addrs.iter().any(|a| !usable(a)) {
            return Err(TicketError::Invalid(ADDR_RULE));
        }
        if self.indexes.len() > MAX_TICKET_INDEXES {
            return Err(TicketError::Invalid(INDEXES_RULE));
        }
        if self.indexes.iter().any(|i| !usable(&i.addr)) {
            return Err(TicketError::Invalid(INDEX_ADDR_RULE));
        }
        Ok(())
    }
}

const ITEMS_RULE: &str = "it must name 1 to 16 files or folders";
const ADDRS_RULE: &str = "it must list 1 to 8 addresses";
const ADDR_RULE: &str = "an address with port 0 or an unspecified IP";
const INDEXES_RULE: &str = "a version 2 ticket must name 1 to 4 index servers";
const INDEX_ADDR_RULE: &str = "an index server's address with port 0 or an unspecified IP";

/// Whether a receiver could connect to `addr` at all.
fn usable(addr: &SocketAddr) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified()
}

/// One address: family (4 or 6), IP, port big-endian.
fn write_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The first [`TICKET_CHECKSUM_LEN`] bytes of the SHA-256 of `body`.
fn checksum(body: &[u8]) -> [u8; TICKET_CHECKSUM_LEN] {
    let digest = Sha256::digest(body);
    digest[..TICKET_CHECKSUM_LEN]
        .try_into()
        .expect("SHA-256 is longer")
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TicketError> {
        if self.rest.len() < n {
            return Err(TicketError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, TicketError> {
        self.take(1).map(|b| b[0])
    }

    fn node_id(&mut self) -> Result<NodeId, TicketError> {
        Ok(NodeId(
            self.take(NODE_ID_LEN)?.try_into().expect("20 bytes"),
        ))
    }

    /// An address as [`write_addr`] writes it (any port: the caller checks).
    fn addr(&mut self) -> Result<SocketAddr, TicketError> {
        let ip = match self.byte()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).expect("4 bytes"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("16 bytes"),
            )),
            _ => return Err(TicketError::Invalid("an address of an unknown family")),
        };
        let port = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        Ok(SocketAddr::new(ip, port))
    }
}

/// RFC 4648 base32, lower case, no padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The inverse of [`base32_encode`], in either case. The bits left over after the last whole
/// byte must be fewer than 5 and zero, as an encoder writes them, so that no change to the
/// last character goes unnoticed.
fn base32_decode(text: &str) -> Result<Vec<u8>, TicketError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.chars() {
        let lower = c.to_ascii_lowercase();
        let value = ALPHABET
            .iter()
            .position(|&a| char::from(a) == lower)
            .ok_or(TicketError::Character(c))?;
        acc = (acc << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
        return Err(TicketError::Checksum);
    }
    Ok(out)
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix(), base32_encode(&self.to_bytes()))
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    /// Reads the text form; surrounding whitespace is ignored, the case of every letter too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let head = s.get(..TICKET_NAME.len()).ok_or(TicketError::NotATicket)?;
        if !head.eq_ignore_ascii_case(TICKET_NAME) {
            return Err(TicketError::NotATicket);
        }
        let rest = &s[TICKET_NAME.len()..];
        let version = rest.chars().next().ok_or(TicketError::NotATicket)?;
        let number = version.to_digit(10).ok_or(TicketError::NotATicket)?;
        // A digit: 0 to 9, one byte.
        let number = number as u8;
        if number != VERSION_PLAIN && number != VERSION_WITH_INDEXES {
            return Err(TicketError::Version(version));
        }
        Self::from_bytes(number, &base32_decode(&rest[1..])?)
    }
}

/// Whether `text` looks like a ticket (starts with `p2p` and a digit), rather than an id, an
/// id prefix or a path: decides how `receive` reads its argument.
pub fn looks_like_ticket(text: &str) -> bool {
    let text = text.trim().as_bytes();
    text.len() > 3 && text[..3].eq_ignore_ascii_case(b"p2p") && text[3].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Ticket {
        Ticket {
            node_id: NodeId::of_public_key(b"sender"),
            items: vec![
                TicketItem::File(FileId([0xab; 32])),
                TicketItem::Folder(FolderId([0x01; 32])),
            ],
            addrs: vec![
                "192.168.1.20:40123".parse().unwrap(),
                "[fd00::1]:40123".parse().unwrap(),
            ],
            indexes: vec![],
        }
    }

    /// [`sample`] naming two index servers: a version 2 ticket.
    fn with_indexes() -> Ticket {
        sample()
            .with_indexes(vec![
                TicketIndex {
                    node_id: NodeId::of_public_key(b"index a"),
                    addr: "10.1.0.2:8000".parse().unwrap(),
                },
                TicketIndex {
                    node_id: NodeId::of_public_key(b"index b"),
                    addr: "[fd00::2]:8000".parse().unwrap(),
                },
            ])
            .unwrap()
    }

    /// `body` with the checksum it needs, read as `version`: what a reader says of content
    /// that no copying error explains.
    fn with_sum(version: u8, mut body: Vec<u8>) -> Result<Ticket, TicketError> {
        let sum = checksum(&body);
        body.extend_from_slice(&sum);
        Ticket::from_bytes(version, &body)
    }

    /// The payload of `ticket` without its checksum.
    fn body(ticket: &Ticket) -> Vec<u8> {
        let bytes = ticket.to_bytes();
        bytes[..bytes.len() - TICKET_CHECKSUM_LEN].to_vec()
    }

    #[test]
    fn round_trips_in_either_case() {
        let ticket = sample();
        let text = ticket.to_string();
        assert!(text.starts_with("p2p1"), "{text}");
        assert!(
            text[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)),
            "{text}"
        );
        assert_eq!(text.parse::<Ticket>(), Ok(ticket.clone()));
        assert_eq!(text.to_uppercase().parse::<Ticket>(), Ok(ticket.clone()));
        assert_eq!(format!("  {text}\n").parse::<Ticket>(), Ok(ticket));
        assert!(looks_like_ticket(&text));
        assert!(!looks_like_ticket("c7e3d81f205e"));
    }

    #[test]
    fn one_file_one_address_is_short() {
        let ticket = Ticket {
            items: vec![TicketItem::File(FileId([7; 32]))],
            addrs: vec!["10.0.0.5:41000".parse().unwrap()],
            ..sample()
        };
        // 20 + 1 + 33 + 1 + 7 + 4 = 66 bytes: 106 base32 characters and the prefix.
        assert_eq!(ticket.to_bytes().len(), 66);
        assert_eq!(ticket.to_string().len(), 4 + 106);
    }

    /// Every ticket that differs from `text` in one character of its payload is refused.
    fn assert_every_typo_caught(text: &str) {
        let bytes = text.as_bytes();
        for at in 4..bytes.len() {
            for &c in ALPHABET {
                if c == bytes[at] {
                    continue;
                }
                let mut typo = bytes.to_vec();
                typo[at] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert!(typo.parse::<Ticket>().is_err(), "{typo} accepted");
            }
        }
    }

    #[test]
    fn every_single_typo_is_caught() {
        assert_every_typo_caught(&sample().to_string());
    }

    #[test]
    fn clear_errors() {
        let text = sample().to_string();
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::NotATicket));
        assert_eq!("".parse::<Ticket>(), Err(TicketError::NotATicket));
        assert_eq!("p2p".parse::<Ticket>(), Err(TicketError::NotATicket));
        assert_eq!(
            format!("p2p3{}", &text[4..]).parse::<Ticket>(),
            Err(TicketError::Version('3'))
        );
        assert_eq!(
            format!("p2p0{}", &text[4..]).parse::<Ticket>(),
            Err(TicketError::Version('0'))
        );
        // A version 1 payload under the version 2 prefix lacks the index servers.
        assert_eq!(
            format!("p2p2{}", &text[4..]).parse::<Ticket>(),
            Err(TicketError::Truncated)
        );
        assert_eq!(
            format!("{}!{}", &text[..10], &text[11..]).parse::<Ticket>(),
            Err(TicketError::Character('!'))
        );
        assert_eq!(
            text[..text.len() - 9].parse::<Ticket>(),
            Err(TicketError::Checksum)
        );
        assert_eq!("p2p1aa".parse::<Ticket>(), Err(TicketError::Truncated));
    }

    #[test]
    fn rules_hold_even_with_a_good_checksum() {
        let with_sum = |body: Vec<u8>| with_sum(1, body);
        let body = body(&sample());
        assert!(with_sum(body.clone()).is_ok());
        let mut extra = body.clone();
        extra.push(0);
        assert!(matches!(with_sum(extra), Err(TicketError::Invalid(_))));
        let mut no_items = body[..NODE_ID_LEN].to_vec();
        no_items.push(0);
        assert!(matches!(with_sum(no_items), Err(TicketError::Invalid(_))));
        let mut kind = body.clone();
        kind[NODE_ID_LEN + 1] = 9;
        assert!(matches!(with_sum(kind), Err(TicketError::Invalid(_))));
        let port_zero = Ticket {
            addrs: vec!["10.0.0.1:0".parse().unwrap()],
            ..sample()
        };
        assert!(port_zero.validate().is_err());
        let unspecified = Ticket {
            addrs: vec!["0.0.0.0:5".parse().unwrap()],
            ..sample()
        };
        assert!(unspecified.validate().is_err());
        let too_many = Ticket {
            addrs: vec!["10.0.0.1:5".parse().unwrap(); MAX_TICKET_ADDRS + 1],
            ..sample()
        };
        assert!(too_many.validate().is_err());
        assert!(sample().validate().is_ok());
    }

    /// §14.4's ticket: what a version 1 writer wrote before version 2 existed.
    const V1_EXAMPLE: &str = "p2p1a3r73d62fg5wbk2zkv66mhw3blwnwiyraeampy6yd4qf5a242oinbpp3kbusg6vyqtyzcpzbxolahj6p76ywc3abatakqaiuts5qris4ua";

    #[test]
    fn without_indexes_a_ticket_stays_version_1_byte_for_byte() {
        let ticket = Ticket::new(
            "A3R7-3D62-FG5W-BK2Z-KV66-MHW3-BLWN-WIYRJ".parse().unwrap(),
            vec![TicketItem::File(
                "c7e3d81f205e835cd390d0bdfb5069237ab884f1913f21bb9603a7cfffb1616c"
                    .parse()
                    .unwrap(),
            )],
            vec!["192.168.1.20:40123".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(ticket.version(), 1);
        assert_eq!(ticket.to_string(), V1_EXAMPLE);
        let emptied = ticket.clone().with_indexes(vec![]).unwrap();
        assert_eq!(emptied.to_string(), V1_EXAMPLE);
        assert_eq!(V1_EXAMPLE.parse::<Ticket>(), Ok(ticket));
    }

    #[test]
    fn indexes_round_trip_in_version_2() {
        let ticket = with_indexes();
        assert_eq!(ticket.version(), 2);
        let text = ticket.to_string();
        assert!(text.starts_with("p2p2"), "{text}");
        assert!(looks_like_ticket(&text));
        assert_eq!(text.parse::<Ticket>(), Ok(ticket.clone()));
        assert_eq!(text.to_uppercase().parse::<Ticket>(), Ok(ticket.clone()));
        // Everything but the index servers is where version 1 has it.
        let v1 = body(&sample());
        let v2 = body(&ticket);
        assert_eq!(v2[..v1.len()], v1[..]);
        // A count, then 20 + 7 and 20 + 19 bytes.
        assert_eq!(v2.len(), v1.len() + 1 + 27 + 39);
        assert_eq!(v2[v1.len()], 2);
    }

    #[test]
    fn every_single_typo_in_version_2_is_caught() {
        assert_every_typo_caught(&with_indexes().to_string());
    }

    #[test]
    fn version_2_errors_are_clear() {
        let text = with_indexes().to_string();
        // Damaged in copying.
        assert_eq!(
            text[..text.len() - 9].parse::<Ticket>(),
            Err(TicketError::Checksum)
        );
        let mut garbled = text.clone().into_bytes();
        let at = garbled.len() - 20;
        garbled[at] = if garbled[at] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            String::from_utf8(garbled).unwrap().parse::<Ticket>(),
            Err(TicketError::Checksum)
        );
        // A version 2 payload under the version 1 prefix: more than version 1 holds.
        assert_eq!(
            format!("p2p1{}", &text[4..]).parse::<Ticket>(),
            Err(TicketError::Invalid("bytes after the last address"))
        );

        // The rest with a good checksum: a sender that wrote it wrongly.
        let v1_len = body(&sample()).len();
        let good = body(&with_indexes());
        assert_eq!(with_sum(2, good.clone()), Ok(with_indexes()));
        // Cut short inside the second index server, and right after the count.
        assert_eq!(
            with_sum(2, good[..good.len() - 5].to_vec()),
            Err(TicketError::Truncated)
        );
        assert_eq!(
            with_sum(2, good[..v1_len + 1].to_vec()),
            Err(TicketError::Truncated)
        );
        let rule = |message| Err(TicketError::Invalid(message));
        // No index server: that is a version 1 ticket.
        let mut none = good[..v1_len].to_vec();
        none.push(0);
        assert_eq!(with_sum(2, none), rule(INDEXES_RULE));
        // More than MAX_TICKET_INDEXES, each complete.
        let mut too_many = good[..v1_len].to_vec();
        too_many.push(MAX_TICKET_INDEXES as u8 + 1);
        for _ in 0..=MAX_TICKET_INDEXES {
            too_many.extend_from_slice(&good[v1_len + 1..v1_len + 1 + 27]);
        }
        assert_eq!(with_sum(2, too_many), rule(INDEXES_RULE));
        // Port 0, and an unspecified IP (the first index server's address follows its id).
        let first_addr = v1_len + 1 + NODE_ID_LEN;
        let mut port_zero = good.clone();
        port_zero[first_addr + 5..first_addr + 7].copy_from_slice(&[0, 0]);
        assert_eq!(with_sum(2, port_zero), rule(INDEX_ADDR_RULE));
        let mut unspecified = good.clone();
        unspecified[first_addr + 1..first_addr + 5].copy_from_slice(&[0; 4]);
        assert_eq!(with_sum(2, unspecified), rule(INDEX_ADDR_RULE));
        let mut family = good.clone();
        family[first_addr] = 5;
        assert_eq!(with_sum(2, family), rule("an address of an unknown family"));
        // Bytes after the last index server.
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            with_sum(2, trailing),
            rule("bytes after the last index server")
        );
        // Each error is one line a user can act on.
        for err in [
            TicketError::Truncated,
            TicketError::Checksum,
            TicketError::Invalid(INDEXES_RULE),
            TicketError::Invalid(INDEX_ADDR_RULE),
        ] {
            let line = err.to_string();
            assert!(!line.contains('\n') && !line.is_empty(), "{line}");
        }
    }

    #[test]
    fn a_writer_refuses_what_a_reader_would() {
        let index = |addr: &str| TicketIndex {
            node_id: NodeId([3; 20]),
            addr: addr.parse().unwrap(),
        };
        let too_many = vec![index("10.0.0.9:8000"); MAX_TICKET_INDEXES + 1];
        assert_eq!(
            sample().with_indexes(too_many),
            Err(TicketError::Invalid(INDEXES_RULE))
        );
        assert_eq!(
            sample().with_indexes(vec![index("10.0.0.9:0")]),
            Err(TicketError::Invalid(INDEX_ADDR_RULE))
        );
        assert_eq!(
            sample().with_indexes(vec![index("[::]:8000")]),
            Err(TicketError::Invalid(INDEX_ADDR_RULE))
        );
        let most = vec![index("10.0.0.9:8000"); MAX_TICKET_INDEXES];
        assert!(sample().with_indexes(most).is_ok());
    }

    proptest! {
        #[test]
        fn any_valid_ticket_round_trips(
            node in any::<[u8; 20]>(),
            items in proptest::collection::vec((any::<bool>(), any::<[u8; 32]>()), 1..=MAX_TICKET_ITEMS),
            addrs in proptest::collection::vec((any::<[u8; 16]>(), any::<bool>(), 1..=u16::MAX), 1..=MAX_TICKET_ADDRS),
            indexes in proptest::collection::vec((any::<[u8; 20]>(), any::<[u8; 16]>(), any::<bool>(), 1..=u16::MAX), 0..=MAX_TICKET_INDEXES),
        ) {
            let addr = |ip: [u8; 16], v4: bool, port: u16| {
                let mut ip = ip;
                ip[0] |= 1; // never unspecified
                let ip = if v4 {
                    IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(ip))
                };
                SocketAddr::new(ip, port)
            };
            let ticket = Ticket {
                node_id: NodeId(node),
                items: items.into_iter().map(|(folder, id)| if folder {
                    TicketItem::Folder(FolderId(id))
                } else {
                    TicketItem::File(FileId(id))
                }).collect(),
                addrs: addrs.into_iter().map(|(ip, v4, port)| addr(ip, v4, port)).collect(),
                indexes: indexes.into_iter().map(|(node, ip, v4, port)| TicketIndex {
                    node_id: NodeId(node),
                    addr: addr(ip, v4, port),
                }).collect(),
            };
            let text = ticket.to_string();
            let prefix = if ticket.indexes.is_empty() { "p2p1" } else { "p2p2" };
            prop_assert!(text.starts_with(prefix), "{}", text);
            prop_assert_eq!(text.parse::<Ticket>(), Ok(ticket));
        }

        #[test]
        fn garbage_never_panics(text in "p2p[12][a-z2-7]{0,300}") {
            let _ = text.parse::<Ticket>();
        }
    }
}
