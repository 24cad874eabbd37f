//! `docs/PROTOCOL.md` is the contract others implement from, so its test vectors and hex
//! examples must be what this code produces. Each test encodes a message the document shows
//! and checks that the document holds exactly those bytes (16 per line, as printed there);
//! others check that every id it shows, and every figure it derives, is what the code computes,
//! and that the node-id algorithm it spells out is the one the code runs. (The transport's
//! figures, from `p2p-transport`, are checked by that crate's `transport_doc.rs`.)

use std::net::SocketAddr;

use p2p_protocol::codec::encode_frame;
use p2p_protocol::folder::{
    self, FOLDER_PAGE_FILES, FolderItem, INLINE_CHUNKS, MAX_FOLDER_FILES, MAX_FOLDER_PATH_LEN,
};
use p2p_protocol::handshake::HANDSHAKE_TIMEOUT;
use p2p_protocol::manifest_file::{
    FOLDER_FORMAT, FOLDER_VERSION, FORMAT, FolderManifestFile, IndexRef, ManifestFile,
    ManifestFileError, OLD_VERSION, VERSION,
};
use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileId, FileManifest, FileSummary, FolderHead, FolderId, FolderRef,
    HostInfo, IndexRequest, IndexResponse, MAX_CHUNKS_PER_FILE, MAX_CONTROL_FRAME_LEN,
    MAX_FILE_NAME_LEN, MAX_FILES_PER_ADD, MAX_HOSTS_PER_LOOKUP, MAX_LIST_ENTRIES, MAX_MESSAGE_LEN,
    MAX_SENDER_LEN, NodeId, PROTOCOL_VERSION, PeerId, PeerRequest, PeerResponse, PeerSummary,
    ProbeOutcome, ProtocolError, Role, Sha256Hash,
};
use sha2::{Digest, Sha256};

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable")
}

/// Bytes as PROTOCOL.md prints them: lowercase hex, 16 per line.
fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The document with every run of whitespace made one space, so a phrase may wrap anywhere.
fn flat_document() -> String {
    flatten(&document())
}

fn flatten(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Asserts that the document says `phrase`, however its lines wrap.
fn assert_says(phrase: &str) {
    assert!(
        flat_document().contains(&flatten(phrase)),
        "docs/PROTOCOL.md should say {phrase:?}"
    );
}

/// Asserts that the document shows `bytes` inline, as `` `00 00 00 0c …` ``, however the line
/// wraps.
fn assert_documented_inline(what: &str, bytes: &[u8]) {
    let expected = format!("`{}`", dump(bytes).replace('\n', " "));
    assert!(
        flat_document().contains(&expected),
        "docs/PROTOCOL.md does not show {what} as the code encodes it; it should read {expected}"
    );
}

fn assert_documented(what: &str, bytes: &[u8]) {
    let expected = format!("```\n{}\n```", dump(bytes));
    assert!(
        document().contains(&expected),
        "docs/PROTOCOL.md does not show {what} as the code encodes it; it should read:\n{expected}"
    );
}

/// The `hello.txt` manifest of §6.5: the 6 bytes `hello\n`.
fn hello() -> FileManifest {
    FileManifest {
        name: "hello.txt".into(),
        size: 6,
        chunk_size: CHUNK_SIZE,
        chunks: vec![Sha256Hash::of(b"hello\n")],
    }
}

const PEER: PeerId = PeerId(0x0123_4567_89ab_cdef);

/// The empty file `empty` of §6.5.
fn empty() -> FileManifest {
    FileManifest {
        name: "empty".into(),
        size: 0,
        chunk_size: CHUNK_SIZE,
        chunks: vec![],
    }
}

/// §13.7's folder: `hello.txt` and `sub/empty` in `photos`; its head and its one page.
fn photos() -> (FolderHead, Vec<FolderItem>) {
    let (head, mut pages) = folder::build(
        "photos",
        vec![("hello.txt".into(), hello()), ("sub/empty".into(), empty())],
    )
    .unwrap();
    (head, pages.remove(0))
}

/// The public key of RFC 8032 §7.1, TEST 1: the key of §2.5's worked example.
const RFC8032_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// What every Ed25519 `SubjectPublicKeyInfo` starts with (§2.4; `p2p-transport` checks that
/// the document's bytes are the ones it uses).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The `SubjectPublicKeyInfo` of the worked example's key.
fn example_spki() -> Vec<u8> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend(hex::decode(RFC8032_KEY).unwrap());
    spki
}

/// The node id of §2.5's worked example, which the examples of §4 use.
fn example_node() -> NodeId {
    NodeId::of_public_key(&example_spki())
}

#[test]
fn file_ids_of_the_test_vectors() {
    let doc = document();
    let id = hello().id().to_string();
    assert!(
        doc.contains(&id),
        "hello.txt's id {id} is not in the document"
    );
    let short = format!("{}…{}", &id[..8], &id[56..]);
    assert!(doc.contains(&short), "the examples should call it {short}");
    let empty = FileManifest {
        name: "empty".into(),
        size: 0,
        chunk_size: CHUNK_SIZE,
        chunks: vec![],
    };
    assert_documented("the empty file's canonical bytes", &empty.canonical_bytes());
    let id = empty.id().to_string();
    assert!(
        doc.contains(&id),
        "the empty file's id {id} is not in the document"
    );
}

/// Wherever the document counts the manifest's fields, it counts what the encoder writes.
#[test]
fn the_manifest_has_the_fields_the_document_counts() {
    let body = rmp_serde::to_vec_named(&hello()).unwrap();
    assert_eq!(body[0] & 0xf0, 0x80, "a manifest is a fixmap");
    let fields = body[0] & 0x0f;
    for phrase in [
        format!("| `Manifest` | a map of its {fields} fields |"),
        format!("a manifest as a {fields}-element array"),
        format!("On the wire it is a map of these {fields} fields."),
        format!("The index stores only the {fields} known fields."),
    ] {
        assert_says(&phrase);
    }
}

/// The bytes of every plain fenced block of the document, from the hex pairs each line starts
/// with (annotations after them are skipped), one `Vec` per block.
fn hex_blocks(doc: &str) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut parts = doc.split("```");
    parts.next();
    // Fences alternate: an opening one (with its info string), then a closing one.
    while let (Some(block), _) = (parts.next(), parts.next()) {
        let Some(body) = block.strip_prefix('\n') else {
            continue; // ```json and the like
        };
        let bytes: Vec<u8> = body
            .lines()
            .flat_map(|line| {
                line.split_whitespace()
                    .map_while(|t| (t.len() == 2).then(|| u8::from_str_radix(t, 16).ok())?)
            })
            .collect();
        blocks.push(bytes);
    }
    blocks
}

/// Every id and hash the document shows, in hex or inside an example frame, is one the code
/// computes from the test vectors, so an example can't keep a stale id when the id changes.
#[test]
fn every_id_in_the_document_is_computed() {
    let doc = document();
    let empty = FileManifest {
        name: "empty".into(),
        size: 0,
        chunk_size: CHUNK_SIZE,
        chunks: vec![],
    };
    let key: [u8; 32] = hex::decode(RFC8032_KEY).unwrap().try_into().unwrap();
    let spki_hash: [u8; 32] = Sha256::digest(example_spki()).into();
    let (head, _) = photos();
    let known = [
        hello().id().0,
        hello().chunks[0].0,
        empty.id().0,
        key,
        spki_hash,
        head.pages[0].0,
        head.id().0,
    ];
    let node = example_node().0;
    let words = doc.split(|c: char| !c.is_ascii_hexdigit());
    for word in words {
        match word.len() {
            64 => assert!(
                known.iter().any(|k| hex(k) == word),
                "{word} in the document is not an id or hash of §6.5 or §13.7, nor a key or \
                 hash of §2.5"
            ),
            // §15.2's info-hash: the first 20 bytes of hello.txt's id (pkg/dht checks that
            // this is what its code computes).
            40 if word == hex(&hello().id().0[..20]) => {}
            40 => assert_eq!(word, hex(&node), "a node id in the document is not §2.5's"),
            _ => {}
        }
    }
    let short = |k: &[u8]| format!("{}…{}", &hex(k)[..8], &hex(k)[hex(k).len() - 8..]);
    for (at, _) in doc.match_indices('…') {
        let before = doc[..at].rsplit(|c: char| !c.is_ascii_hexdigit()).next();
        let after = doc[at + '…'.len_utf8()..]
            .split(|c: char| !c.is_ascii_hexdigit())
            .next();
        if let (Some(a), Some(b)) = (before, after)
            && a.len() == 8
            && b.len() == 8
        {
            let shown = format!("{a}…{b}");
            assert!(
                known.iter().any(|k| short(k) == shown) || short(&node) == shown,
                "{shown} in the document is not an id of §6.5 or §13.7, or the node id of §2.5"
            );
        }
    }
    // In the example frames, every bin 8 of 32 bytes (`c4 20`) is an id or a hash, and every
    // bin 8 of 20 bytes (`c4 14`) the node id.
    for block in hex_blocks(&doc) {
        for at in 0..block.len().saturating_sub(1) {
            if block[at..].starts_with(&[0xc4, 0x20]) && block.len() >= at + 34 {
                let value: [u8; 32] = block[at + 2..at + 34].try_into().unwrap();
                assert!(
                    known.contains(&value),
                    "an example frame holds {}, which is no id or hash of the examples",
                    hex(&value)
                );
            }
            if block[at..].starts_with(&[0xc4, 0x14]) && block.len() >= at + 22 {
                assert_eq!(
                    hex(&block[at + 2..at + 22]),
                    hex(&node),
                    "an example frame holds a node id other than §2.5's"
                );
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn handshake_examples() {
    let hello = IndexRequest::Hello {
        version: PROTOCOL_VERSION,
    };
    let welcome = IndexResponse::Welcome {
        version: PROTOCOL_VERSION,
        role: Role::Index,
    };
    let peer_welcome = PeerResponse::Welcome {
        version: PROTOCOL_VERSION,
        role: Role::Peer,
    };
    assert_documented("Hello", &encode_frame(&hello).unwrap());
    assert_documented("the index's Welcome", &encode_frame(&welcome).unwrap());
    assert_documented(
        "a chunk server's Welcome",
        &encode_frame(&peer_welcome).unwrap(),
    );
    let doc = document();
    for text in [
        format!("wire protocol, version {PROTOCOL_VERSION}"),
        format!("The current version is **{PROTOCOL_VERSION}**."),
        format!("`Hello {{ version: {PROTOCOL_VERSION} }}`"),
        format!("**Version {PROTOCOL_VERSION}** (current)"),
    ] {
        assert!(doc.contains(&text), "the document should say {text:?}");
    }
    // The example programs written from the document speak this version too.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/");
    for (file, says) in [
        (
            "p2p_client.py",
            format!("PROTOCOL_VERSION = {PROTOCOL_VERSION}\n"),
        ),
        (
            "p2p_hello.go",
            format!("// Hello {{ version: {PROTOCOL_VERSION} }}, as §4.1"),
        ),
    ] {
        let text = std::fs::read_to_string(format!("{examples}{file}")).unwrap();
        assert!(
            text.contains(&says),
            "docs/examples/{file} should say {says:?}"
        );
    }
    let secs = HANDSHAKE_TIMEOUT.as_secs();
    assert_says(&format!(
        "the connection is closed if the TLS handshake is not complete within **{secs} s** \
         (`HANDSHAKE_TIMEOUT`) of the server accepting the connection, or no complete `Hello` \
         frame arrives within **{secs} s** more of the TLS handshake's end."
    ));
}

/// What a version 2 client makes of a version 3 node's answer (§10): the first bytes of a TLS
/// alert record, read as a frame header, announce a frame over any limit it has.
#[test]
fn a_tls_alert_read_as_a_frame_is_as_documented() {
    let alert_header = [0x15, 0x03, 0x03, 0x00];
    let len = u32::from_be_bytes(alert_header) as usize;
    assert!(len > MAX_CONTROL_FRAME_LEN);
    assert_says(&format!(
        "whose first bytes `15 03 03 00` the old client takes for the header of a frame of {} \
         bytes",
        grouped(len)
    ));
}

#[test]
fn peer_conversation_examples() {
    let id = hello().id();
    let get = PeerRequest::GetChunk {
        file_id: id,
        index: 0,
    };
    assert_documented("GetChunk", &encode_frame(&get).unwrap());
    // The reply: its frame, then the chunk's bytes, raw.
    let chunk = PeerResponse::Chunk {
        file_id: id,
        index: 0,
        size: 6,
    };
    let frame = encode_frame(&chunk).unwrap();
    assert_documented("the Chunk reply", &frame);
    assert_documented("the chunk's data", b"hello\n");
    assert_says(&format!(
        "and right after its last byte, `{:02x}`, the chunk's 6 bytes of data, raw, outside any \
         frame:",
        frame.last().unwrap()
    ));
    let full = PeerResponse::Chunk {
        file_id: id,
        index: 0,
        size: CHUNK_SIZE,
    };
    let full = rmp_serde::to_vec_named(&full).unwrap();
    assert!(full.ends_with(&[0xa4, b's', b'i', b'z', b'e', 0xce, 0x00, 0x40, 0x00, 0x00]));
    assert_says(
        "For a full chunk, `size` is `ce 00 40 00 00` (4,194,304) and 4,194,304 bytes follow.",
    );

    let message = PeerRequest::Message {
        from: "192.168.1.20:8001".into(),
        text: "hi, the file is up".into(),
    };
    assert_documented("Message", &encode_frame(&message).unwrap());
    assert_documented(
        "MessageReceived",
        &encode_frame(&PeerResponse::MessageReceived {}).unwrap(),
    );
    let empty = PeerRequest::Message {
        from: String::new(),
        text: String::new(),
    };
    assert_documented_inline("the empty Message", &encode_frame(&empty).unwrap());
    // The chunk server's wording, which this crate can't produce: the example is checked for
    // its encoding.
    let refused = PeerResponse::Error {
        code: ErrorCode::BadRequest,
        message: "a message needs 1 to 1024 bytes of text and a sender of at most 64 bytes".into(),
    };
    assert_documented("the refused Message", &encode_frame(&refused).unwrap());

    let received = PeerRequest::Received { id };
    assert_documented("Received", &encode_frame(&received).unwrap());
    assert_documented(
        "ReceivedAck",
        &encode_frame(&PeerResponse::ReceivedAck {}).unwrap(),
    );
}

#[test]
fn error_examples() {
    let unknown = IndexResponse::Error {
        code: ErrorCode::UnknownFile,
        message: "no file matches a1b2c3".into(),
    };
    assert_documented("the unknown_file Error", &encode_frame(&unknown).unwrap());
    let too_large = ProtocolError::FrameTooLarge {
        len: MAX_CONTROL_FRAME_LEN as u64 + 1,
        max: MAX_CONTROL_FRAME_LEN,
    };
    let reply = IndexResponse::Error {
        code: too_large.reply_code().unwrap(),
        message: too_large.to_string(),
    };
    assert_documented("the frame_too_large Error", &encode_frame(&reply).unwrap());
}

/// Every error code the code knows has its row in §3.3's table, spelled as it travels, and
/// `forbidden`'s row names both servers and every cause (allow-lists on both, ownership on the
/// index).
#[test]
fn every_error_code_is_in_the_table() {
    use ErrorCode::*;
    let codes = [
        VersionMismatch,
        BadRequest,
        FrameTooLarge,
        UnknownPeer,
        Forbidden,
        UnknownFile,
        AmbiguousPrefix,
        InvalidManifest,
        ChunkOutOfRange,
        FileUnavailable,
        Busy,
        LimitExceeded,
        Internal,
    ];
    for code in codes {
        // No wildcard: a new code fails to compile here until it is listed above.
        match code {
            VersionMismatch | BadRequest | FrameTooLarge | UnknownPeer | Forbidden
            | UnknownFile | AmbiguousPrefix | InvalidManifest | ChunkOutOfRange
            | FileUnavailable | Busy | LimitExceeded | Internal | Unknown => {}
        }
        let wire: String = rmp_serde::from_slice(&rmp_serde::to_vec(&code).unwrap()).unwrap();
        assert_eq!(wire, code.to_string());
        assert!(
            document().contains(&format!("\n| `{wire}` | ")),
            "§3.3 has no row for `{wire}`"
        );
    }
    let doc = document();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `forbidden` | "))
        .unwrap();
    for says in [
        "the `peer_id` is registered, but by another node (§7.1)",
        "to `Register`, the index has an allow-list that does not name this node (§7.1)",
        "From a chunk server: the peer has an allow-list that does not name this node",
        "The connection stays open.",
        "| both servers |",
    ] {
        assert!(
            row.contains(says),
            "§3.3's forbidden row should say {says:?}"
        );
    }
}

#[test]
fn index_conversation_examples() {
    assert_documented(
        "ListFiles",
        &encode_frame(&IndexRequest::ListFiles {}).unwrap(),
    );
    assert_documented_inline(
        "ListPeers",
        &encode_frame(&IndexRequest::ListPeers {}).unwrap(),
    );
    let register = IndexRequest::Register {
        addr: "0.0.0.0:8001".parse().unwrap(),
    };
    assert_documented("Register", &encode_frame(&register).unwrap());
    let registered = IndexResponse::Registered {
        peer_id: PEER,
        addr: "192.168.1.20:8001".parse().unwrap(),
        heartbeat_interval_ms: 5000,
        heartbeat_timeout_ms: 15000,
    };
    assert_documented("Registered", &encode_frame(&registered).unwrap());
    let heartbeat = IndexRequest::Heartbeat { peer_id: PEER };
    assert_documented("Heartbeat", &encode_frame(&heartbeat).unwrap());
    assert_documented_inline(
        "HeartbeatAck",
        &encode_frame(&IndexResponse::HeartbeatAck {}).unwrap(),
    );
    let add = IndexRequest::AddFile {
        peer_id: PEER,
        manifest: hello(),
    };
    assert_documented("AddFile", &encode_frame(&add).unwrap());
    let lookup = IndexRequest::Lookup {
        id: hello().id().to_string()[..6].to_owned(),
    };
    assert_documented("Lookup", &encode_frame(&lookup).unwrap());
    let found = IndexResponse::Found {
        file_id: hello().id(),
        manifest: hello(),
        hosts: vec![HostInfo {
            peer_id: PEER,
            addr: "192.168.1.20:8001".parse().unwrap(),
            node_id: example_node(),
        }],
    };
    assert_documented("Found", &encode_frame(&found).unwrap());
    assert_says(&format!(
        "A downloader that connects to this host MUST see the node id `{}` in the TLS handshake",
        example_node()
    ));
    let peers = IndexResponse::Peers {
        peers: vec![PeerSummary {
            peer_id: PEER,
            node_id: example_node(),
            addr: "192.168.1.20:8001".parse().unwrap(),
            files: 1,
            last_seen_ms: 1200,
        }],
        total: 1,
    };
    assert_documented("Peers", &encode_frame(&peers).unwrap());
}

#[test]
fn search_examples() {
    let search = IndexRequest::Search {
        query: "HELLO txt".into(),
    };
    assert_documented("Search", &encode_frame(&search).unwrap());
    let files = IndexResponse::Files {
        files: vec![FileSummary {
            file_id: hello().id(),
            name: "hello.txt".into(),
            size: 6,
            hosts: 1,
            files: None,
            path: None,
        }],
        total: 1,
    };
    assert_documented("the Files reply", &encode_frame(&files).unwrap());
    let nothing = IndexResponse::Files {
        files: vec![],
        total: 0,
    };
    assert_documented_inline("the empty Files reply", &encode_frame(&nothing).unwrap());
    let blank = IndexRequest::Search {
        query: " \t ".into(),
    };
    assert_documented("the blank Search", &encode_frame(&blank).unwrap());
    // The index server's wording, which this crate can't produce: the example is checked for
    // its encoding.
    let refused = IndexResponse::Error {
        code: ErrorCode::BadRequest,
        message: "a search needs 1 to 1024 bytes of text".into(),
    };
    assert_documented("the refused Search", &encode_frame(&refused).unwrap());
}

/// The servers of §12.3's example: the index of §2.5's node id, and one whose id the writer
/// did not know.
fn example_servers() -> Vec<IndexRef> {
    vec![
        IndexRef {
            addr: "192.168.1.10:8000".parse().unwrap(),
            node_id: Some(example_node()),
        },
        IndexRef::addr("192.168.1.11:8000".parse().unwrap()),
    ]
}

/// The ```json blocks of the document, in order.
fn json_blocks(doc: &str) -> Vec<&str> {
    doc.split("```json\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect()
}

/// §12.3's example is what the writer writes, and the reader reads it back; the claims around
/// it about versions 2 and 3 are what the reader does.
#[test]
fn manifest_file_example() {
    let file = ManifestFile::new(hello(), example_servers());
    let text = file.to_json();
    let expected = format!("```json\n{text}```");
    assert!(
        document().contains(&expected),
        "§12.3 should read:\n{expected}"
    );
    assert_eq!(ManifestFile::parse(&text).unwrap(), file);
    let id = example_node().to_string();
    assert!(text.contains(&format!("\"192.168.1.10:8000 {id}\"")));
    assert_says(&format!(
        "optionally followed by one space and the index's node id in its text form (§2.5): \
         `\"192.168.1.10:8000 {id}\"`."
    ));

    // The versions the table and the checks name.
    assert_says(&format!(
        "| `version` | integer | `{VERSION}`, the version of this file format, separate from the \
         protocol version. Version {VERSION} added node ids to `servers`; every other field is \
         as in version {OLD_VERSION}, which readers still read (§12.2)."
    ));
    assert_says(&format!(
        "`format` is `\"{FORMAT}\"` and `version` is `{VERSION}` or `{OLD_VERSION}`."
    ));
    // "The same file with `"version": 2` is refused (step 6: a version 2 file names no ids);
    // without the node id it would be a valid version 2 file."
    assert_says(&format!(
        "The same file with `\"version\": {OLD_VERSION}` is refused (step 6: a version \
         {OLD_VERSION} file names no ids); without the node id it would be a valid version \
         {OLD_VERSION} file."
    ));
    let old = text.replace(
        &format!("\"version\": {VERSION}"),
        &format!("\"version\": {OLD_VERSION}"),
    );
    assert!(matches!(
        ManifestFile::parse(&old),
        Err(ManifestFileError::Syntax(_))
    ));
    let old = old.replace(&format!(" {id}"), "");
    let servers: Vec<IndexRef> = example_servers()
        .iter()
        .map(|s| IndexRef::addr(s.addr))
        .collect();
    assert_eq!(ManifestFile::parse(&old).unwrap().servers, servers);
    // Any other version is unsupported.
    for other in [OLD_VERSION - 1, VERSION + 1] {
        let other = text.replace(
            &format!("\"version\": {VERSION}"),
            &format!("\"version\": {other}"),
        );
        assert!(matches!(
            ManifestFile::parse(&other),
            Err(ManifestFileError::Unsupported { .. })
        ));
    }
    // Format and version are read first: another version with other fields is unsupported,
    // not malformed (the note on steps 1 and 2).
    let later = text
        .replace(
            &format!("\"version\": {VERSION}"),
            &format!("\"version\": {}", VERSION + 1),
        )
        .replace("\"chunks\"", "\"pieces\"");
    assert!(matches!(
        ManifestFile::parse(&later),
        Err(ManifestFileError::Unsupported { .. })
    ));
    assert_says(
        "the reference reader reads `format` and `version` first, on their own (a JSON object \
         whose `format` is a string and whose `version` fits a `u32`), and only then the other \
         fields, so a document of another version is reported as unsupported whatever its \
         other fields are.",
    );
    // The tolerances of the note on step 6, and a damaged check character.
    let loose = text.replace(
        &format!("\"192.168.1.10:8000 {id}\""),
        &format!(
            "\" 192.168.1.10:8000   {} \"",
            id.replace('-', "").to_lowercase()
        ),
    );
    assert_eq!(ManifestFile::parse(&loose).unwrap(), file);
    let last = id.chars().last().unwrap();
    let damaged = format!(
        "{}{}",
        &id[..id.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    assert!(matches!(
        ManifestFile::parse(&text.replace(&id, &damaged)),
        Err(ManifestFileError::Syntax(_))
    ));
}

/// §12.5's folder example declares the current version and names its server as §12.1 says.
#[test]
fn folder_manifest_file_example() {
    let doc = document();
    let blocks = json_blocks(&doc);
    let folder = blocks
        .iter()
        .find(|b| b.contains(&format!("\"format\": \"{FOLDER_FORMAT}\"")))
        .expect("§12.5 shows a folder manifest file");
    assert!(
        folder.contains(&format!("\"version\": {FOLDER_VERSION},")),
        "§12.5's example should be version {FOLDER_VERSION}"
    );
    assert!(folder.contains("\"folder_id\": "));
    // What the writer writes for §13.7's folder carries §13.7's folder id.
    let written = FolderManifestFile::new(
        "photos".into(),
        vec![
            (vec!["hello.txt".into()], hello()),
            (vec!["sub".into(), "empty".into()], empty()),
        ],
        vec![],
    )
    .unwrap()
    .to_json();
    let expected = format!(
        "\"version\": {FOLDER_VERSION},\n  \"name\": \"photos\",\n  \"folder_id\": \"{}\"",
        photos().0.id()
    );
    assert!(written.contains(&expected), "{written}");
    let servers = folder
        .split("\"servers\": [\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the example names a server");
    assert_eq!(servers.parse::<IndexRef>().unwrap(), example_servers()[0]);
    assert_says(&format!(
        "| `version` | integer | `{FOLDER_VERSION}`; versions {VERSION} and {OLD_VERSION} (no \
         `folder_id`; in version {OLD_VERSION} `servers` are addresses only, as in §12.1) are \
         still read, their folder id computed |"
    ));
}

/// §13's worked example: the page's and the head's canonical bytes, their hashes, and the
/// frames that carry them, are what the code computes; the limits §13 names are the code's.
#[test]
fn folder_examples() {
    let (head, items) = photos();
    let refs = folder::refs(&items).unwrap();
    let blocks = hex_blocks(&document());
    let page = folder::page_bytes(&refs);
    assert!(blocks.contains(&page), "§13.7 should show the page's bytes");
    assert!(
        blocks.contains(&head.canonical_bytes()),
        "§13.7 should show the head's bytes"
    );
    assert_eq!(Sha256Hash::of(&page), head.pages[0]);
    assert_says(&format!(
        "**Page hash** = SHA-256 of those {} bytes = `{}`",
        page.len(),
        head.pages[0]
    ));
    assert_says(&format!(
        "**Folder id** = SHA-256 of those {} bytes = `{}`",
        head.canonical_bytes().len(),
        head.id()
    ));
    let id = head.id();
    let frames = [
        (
            "AddFolder",
            encode_frame(&IndexRequest::AddFolder {
                peer_id: PEER,
                head: head.clone(),
            }),
        ),
        (
            "FolderAdded",
            encode_frame(&IndexResponse::FolderAdded { folder_id: id }),
        ),
        (
            "AddFolderFiles",
            encode_frame(&IndexRequest::AddFolderFiles {
                peer_id: PEER,
                folder_id: id,
                first_page: 0,
                pages: vec![refs.clone()],
            }),
        ),
        (
            "GetFolderPages",
            encode_frame(&PeerRequest::GetFolderPages {
                folder_id: id,
                first: 0,
                count: 16,
            }),
        ),
        (
            "FolderPages",
            encode_frame(&PeerResponse::FolderPages {
                folder_id: id,
                first: 0,
                pages: vec![items.clone()],
            }),
        ),
    ];
    for (what, frame) in frames {
        assert_documented(what, &frame.unwrap());
    }
    // The downloader's checks accept it.
    let mut checker = folder::PageChecker::new(&id, &head).unwrap();
    let checked = checker.check(0, &items).unwrap();
    assert_eq!(checked[0].manifest, Some(hello()));
    assert_eq!(checked[1].manifest, Some(empty()));
    checker.finish().unwrap();
    for phrase in [
        format!(
            "in **pages** of {} files (`FOLDER_PAGE_FILES`)",
            grouped(FOLDER_PAGE_FILES)
        ),
        format!(
            "is at most **{} bytes** (`MAX_FOLDER_PATH_LEN`) in all",
            grouped(MAX_FOLDER_PATH_LEN)
        ),
        format!(
            "A folder holds at most **{}** files (`MAX_FOLDER_FILES`)",
            grouped(MAX_FOLDER_FILES as usize)
        ),
        format!(
            "a file of at most **{INLINE_CHUNKS} chunks** (`INLINE_CHUNKS`; `size` ≤ {})",
            grouped(INLINE_CHUNKS * CHUNK_SIZE as usize)
        ),
        format!(
            "adds up to **{}** top-level files (`MAX_FILES_PER_ADD`",
            grouped(MAX_FILES_PER_ADD)
        ),
    ] {
        assert_says(&phrase);
    }
}

/// `n` as the document writes numbers: `1,114,491`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The body length of an encoded frame.
fn body_len<T: serde::Serialize>(msg: &T) -> usize {
    encode_frame(msg).unwrap().len() - 4
}

/// The largest frames legitimate traffic produces (§2.1), computed by encoding them: the
/// largest manifest, the most hosts with the longest address, full listings, the longest
/// message, a full chunk's frame. Every integer is at its longest encoding.
#[test]
fn the_largest_frames_are_as_documented() {
    let chunk_body = |index| {
        body_len(&PeerResponse::Chunk {
            file_id: FileId([0; 32]),
            index,
            size: CHUNK_SIZE,
        })
    };
    let last = MAX_CHUNKS_PER_FILE - 1;
    assert_says(&format!(
        "the `Chunk` frame of a full 4 MiB chunk is {} to {} bytes, depending on how `index` is \
         encoded ({} to {} for the indices 0 to {} a valid file can have); the chunk's {} bytes \
         of data follow it;",
        grouped(chunk_body(0)),
        grouped(chunk_body(u32::MAX)),
        grouped(chunk_body(0)),
        grouped(chunk_body(last)),
        grouped(last as usize),
        grouped(CHUNK_SIZE as usize),
    ));

    let manifest = FileManifest {
        name: "n".repeat(MAX_FILE_NAME_LEN),
        size: u64::from(CHUNK_SIZE) * u64::from(MAX_CHUNKS_PER_FILE),
        chunk_size: CHUNK_SIZE,
        chunks: vec![Sha256Hash([0xff; 32]); MAX_CHUNKS_PER_FILE as usize],
    };
    manifest.validate().unwrap();
    let add = IndexRequest::AddFile {
        peer_id: PeerId(u64::MAX),
        manifest: manifest.clone(),
    };
    let reply = PeerResponse::Manifest {
        file_id: manifest.id(),
        manifest: manifest.clone(),
    };
    let reply_len = grouped(body_len(&reply));
    assert_says(&format!(
        "an `AddFile` carrying the largest allowed manifest ({} chunks, {MAX_FILE_NAME_LEN}-byte \
         name) is {} bytes, and a `Manifest` reply carrying it is {reply_len} bytes",
        grouped(MAX_CHUNKS_PER_FILE as usize),
        grouped(body_len(&add)),
    ));

    let found = |addr: &str| {
        let addr: SocketAddr = addr.parse().unwrap();
        let found = IndexResponse::Found {
            file_id: manifest.id(),
            manifest: manifest.clone(),
            hosts: vec![
                HostInfo {
                    peer_id: PeerId(u64::MAX),
                    addr,
                    node_id: NodeId([0xff; 20]),
                };
                MAX_HOSTS_PER_LOOKUP
            ],
        };
        (addr.to_string().len(), grouped(body_len(&found)))
    };
    let scoped = "[fe80:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";
    let (scoped_len, scoped_found) = found(scoped);
    let (plain_len, plain_found) = found("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    assert_says(&format!(
        "with {MAX_HOSTS_PER_LOOKUP} hosts (the most one `Found` lists, `MAX_HOSTS_PER_LOOKUP`), \
         each with the longest address string, a {scoped_len}-character scoped IPv6 address such \
         as `\"{scoped}\"`, and its node id, is {scoped_found} bytes. With {plain_len}-character \
         unscoped IPv6 addresses it is {plain_found} bytes."
    ));

    let files = IndexResponse::Files {
        files: vec![
            FileSummary {
                file_id: FileId([0xff; 32]),
                name: "n".repeat(MAX_FILE_NAME_LEN),
                size: u64::MAX,
                hosts: u32::MAX,
                files: None,
                path: None,
            };
            MAX_LIST_ENTRIES
        ],
        total: u64::MAX,
    };
    let peers = IndexResponse::Peers {
        peers: vec![
            PeerSummary {
                peer_id: PeerId(u64::MAX),
                node_id: NodeId([0xff; 20]),
                addr: scoped.parse().unwrap(),
                files: u32::MAX,
                last_seen_ms: u64::MAX,
            };
            MAX_LIST_ENTRIES
        ],
        total: u64::MAX,
    };
    assert_says(&format!(
        "a `Files` reply with {} entries (`MAX_LIST_ENTRIES`), each with a {MAX_FILE_NAME_LEN}-byte \
         name, is {} bytes, and a `Peers` reply with {} entries of the longest address is {} \
         bytes;",
        grouped(MAX_LIST_ENTRIES),
        grouped(body_len(&files)),
        grouped(MAX_LIST_ENTRIES),
        grouped(body_len(&peers)),
    ));

    // Folders (§13): the largest replies and requests they add.
    let long_path = |len: usize| "p".repeat(len);
    let with_paths = IndexResponse::Files {
        files: vec![
            FileSummary {
                file_id: FileId([0xff; 32]),
                name: "n".repeat(MAX_FILE_NAME_LEN),
                size: u64::MAX,
                hosts: u32::MAX,
                files: None,
                path: Some(long_path(MAX_FILE_NAME_LEN + 1 + MAX_FOLDER_PATH_LEN)),
            };
            MAX_LIST_ENTRIES
        ],
        total: u64::MAX,
    };
    assert_says(&format!(
        "a `Files` reply to a `Search` with {} files inside folders, each with a \
         {MAX_FILE_NAME_LEN}-byte name and the longest `path` (a {MAX_FILE_NAME_LEN}-byte folder \
         name, `/`, a {}-byte path), is {} bytes;",
        grouped(MAX_LIST_ENTRIES),
        grouped(MAX_FOLDER_PATH_LEN),
        grouped(body_len(&with_paths)),
    ));
    let most_pages = (MAX_FOLDER_FILES as usize).div_ceil(FOLDER_PAGE_FILES);
    let found_folder = IndexResponse::FoundFolder {
        folder_id: FolderId([0xff; 32]),
        head: FolderHead {
            name: "n".repeat(MAX_FILE_NAME_LEN),
            files: u64::MAX,
            size: u64::MAX,
            pages: vec![Sha256Hash([0xff; 32]); most_pages],
        },
        hosts: vec![
            HostInfo {
                peer_id: PeerId(u64::MAX),
                addr: scoped.parse().unwrap(),
                node_id: NodeId([0xff; 20]),
            };
            MAX_HOSTS_PER_LOOKUP
        ],
    };
    let files_added = IndexResponse::FilesAdded {
        file_ids: vec![FileId([0xff; 32]); MAX_FILES_PER_ADD],
    };
    assert_says(&format!(
        "a `FoundFolder` for a folder of {} pages (the most a folder has) with \
         {MAX_HOSTS_PER_LOOKUP} hosts of the longest address is {} bytes; a `FilesAdded` for {} \
         files is {} bytes;",
        grouped(most_pages),
        grouped(body_len(&found_folder)),
        grouped(MAX_FILES_PER_ADD),
        grouped(body_len(&files_added)),
    ));
    let page_of_refs = vec![
        FolderRef {
            path: long_path(MAX_FOLDER_PATH_LEN),
            file_id: FileId([0xff; 32]),
            size: u64::MAX,
        };
        FOLDER_PAGE_FILES
    ];
    let add_pages = IndexRequest::AddFolderFiles {
        peer_id: PeerId(u64::MAX),
        folder_id: FolderId([0xff; 32]),
        first_page: u32::MAX,
        pages: vec![page_of_refs],
    };
    assert_says(&format!(
        "an `AddFolderFiles` carrying one page of {} files with {}-byte paths is {} bytes;",
        grouped(FOLDER_PAGE_FILES),
        grouped(MAX_FOLDER_PATH_LEN),
        grouped(body_len(&add_pages)),
    ));
    // The largest page a host sends: every file with the longest path and the most chunk
    // hashes a page carries (a file of 16 chunks is at most 64 MiB).
    let page_of_items = vec![
        FolderItem {
            path: long_path(MAX_FOLDER_PATH_LEN),
            size: INLINE_CHUNKS as u64 * u64::from(CHUNK_SIZE),
            file_id: None,
            chunks: Some(vec![Sha256Hash([0xff; 32]); INLINE_CHUNKS]),
        };
        FOLDER_PAGE_FILES
    ];
    let folder_pages = PeerResponse::FolderPages {
        folder_id: FolderId([0xff; 32]),
        first: u32::MAX,
        pages: vec![page_of_items],
    };
    let pages_len = grouped(body_len(&folder_pages));
    assert_says(&format!(
        "a `FolderPages` reply carrying one page of {} files with {}-byte paths and \
         {INLINE_CHUNKS} chunk hashes each (the largest page there is) is {pages_len} bytes",
        grouped(FOLDER_PAGE_FILES),
        grouped(MAX_FOLDER_PATH_LEN),
    ));
    assert_says(&format!(
        "**{}** (2 MiB; its largest reply is a `FolderPages` of one page of {pages_len} bytes, \
         see below)",
        grouped(MAX_CONTROL_FRAME_LEN)
    ));
    assert!(body_len(&folder_pages) <= MAX_CONTROL_FRAME_LEN);
    assert!(body_len(&with_paths) <= MAX_CONTROL_FRAME_LEN);

    let message = PeerRequest::Message {
        from: "f".repeat(MAX_SENDER_LEN),
        text: "t".repeat(MAX_MESSAGE_LEN),
    };
    let message_len = grouped(body_len(&message));
    assert_says(&format!(
        "a `Message` with a {MAX_SENDER_LEN}-byte `from` and a {}-byte `text`, is {message_len} \
         bytes.",
        grouped(MAX_MESSAGE_LEN),
    ));
    assert_says(&format!("its largest request is {message_len} bytes"));
}

/// `{"Hello": {"version": 2, "x": <value>}}`: a `Hello` with an unknown extra field.
fn hello_with_extra(value: &[u8]) -> Vec<u8> {
    let mut body = vec![0x81, 0xa5];
    body.extend(b"Hello");
    body.extend([0x82, 0xa7]);
    body.extend(b"version");
    body.push(PROTOCOL_VERSION as u8);
    body.extend([0xa1, b'x']);
    body.extend(value);
    body
}

/// Whether `body` decodes as an index request, on a thread with room for the decoder's
/// recursion even in a debug build.
fn decodes(body: Vec<u8>) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            p2p_protocol::codec::decode_body::<IndexRequest>(&body)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The decoder's nesting limit (§3) is the one the document gives: a body may nest maps and
/// arrays (or end in an ext value) exactly that many levels deep, counting the message's map.
#[test]
fn the_nesting_limit_is_as_documented() {
    const LEVELS: usize = p2p_protocol::MAX_NESTING_DEPTH;
    assert_says(&format!(
        "A body may nest maps and arrays at most **{}** levels deep",
        grouped(LEVELS)
    ));
    // The message's map and its field map are levels 1 and 2; then arrays, then `nil`.
    let nested = |levels: usize| {
        let mut value = vec![0x91; levels - 2];
        value.push(0xc0);
        hello_with_extra(&value)
    };
    assert_eq!(decodes(nested(LEVELS)), Ok(()));
    assert_eq!(
        decodes(nested(LEVELS + 1)),
        Err("malformed message: depth limit exceeded".to_owned())
    );
    // An ext value counts as a level of its own.
    let ext = |levels: usize| {
        let mut value = vec![0x91; levels - 3];
        value.extend([0xd4, 1, 0]);
        hello_with_extra(&value)
    };
    assert_eq!(decodes(ext(LEVELS)), Ok(()));
    assert!(decodes(ext(LEVELS + 1)).is_err());
}

/// §2.5's text form of a node id, computed the way the document spells it out, step by step:
/// base32, then the Luhn mod 32 check character, then the groups. Returns the text and the
/// check sum of step 2.
fn documented_node_id_text(id: &[u8; 20]) -> (String, u32) {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // Step 1: the 160 bits, most significant first, five at a time.
    let bits: Vec<usize> = id
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| usize::from(byte >> i & 1)))
        .collect();
    let mut chars: Vec<u8> = bits
        .chunks(5)
        .map(|five| ALPHABET[five.iter().fold(0, |v, bit| v << 1 | bit)])
        .collect();
    // Step 2: from the last character to the first, factor 2, 1, 2, ...
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
    let (mut factor, mut sum) = (2, 0);
    for &c in chars.iter().rev() {
        let addend = factor * value(c);
        sum += addend / 32 + addend % 32;
        factor = if factor == 2 { 1 } else { 2 };
    }
    chars.push(ALPHABET[((32 - sum % 32) % 32) as usize]);
    // Step 3: groups of four, the last of five.
    let text = String::from_utf8(chars).unwrap();
    let mut groups: Vec<&str> = (0..28).step_by(4).map(|i| &text[i..i + 4]).collect();
    groups.push(&text[28..]);
    (groups.join("-"), sum)
}

/// The node-id algorithm of §2.5 is the code's, and its worked example is what the code
/// computes, step by step.
#[test]
fn node_ids_are_computed_as_documented() {
    let spki = example_spki();
    assert_documented("the example key's SubjectPublicKeyInfo", &spki);
    let digest = Sha256::digest(&spki);
    let node = example_node();
    assert_eq!(
        node.0[..],
        digest[..20],
        "a node id is the hash's first 20 bytes"
    );
    let (text, sum) = documented_node_id_text(&node.0);
    assert_eq!(text, node.to_string());
    let rest = sum % 32;
    let check = (32 - rest) % 32;
    for phrase in [
        format!("its SHA-256 is `{}`;", hex(&digest)),
        format!("the node id is its first 20 bytes, `{}`;", hex(&node.0)),
        format!("in base32: `{}`;", &text.replace('-', "")[..32]),
        format!(
            "the check sum of step 2 is {sum}; {sum} mod 32 = {rest}, and (32 − {rest}) mod 32 = \
             {check}, the value of `{}`;",
            &text[text.len() - 1..]
        ),
        format!("so the node id reads `{text}`."),
        format!(
            "of four separated by `-`, the last group holding five: {} characters in all",
            text.len()
        ),
    ] {
        assert_says(&phrase);
    }
    // The steps as written give the code's text for any id.
    for seed in 0u32..2000 {
        let id = NodeId::of_public_key(&seed.to_be_bytes());
        assert_eq!(documented_node_id_text(&id.0).0, id.to_string());
    }
    // Reading one back ignores case, dashes and whitespace, and checks the check character.
    assert_says(
        "drop every `-` and whitespace character, convert letters to upper case, and refuse the \
         text unless 33 characters are left, all from the alphabet, and the check character \
         computed over the first 32 equals the 33rd",
    );
    let loose = format!(" {} ", text.to_lowercase().replace('-', " "));
    assert_eq!(loose.parse::<NodeId>(), Ok(node));
    let wrong_check = format!(
        "{}{}",
        &text[..text.len() - 1],
        if text.ends_with('A') { 'B' } else { 'A' }
    );
    assert!(wrong_check.parse::<NodeId>().is_err());
    assert!(
        text[..text.len() - 1].parse::<NodeId>().is_err(),
        "32 characters"
    );
}

/// On the wire a node id is a MessagePack bin of exactly 20 bytes, as §3.1 says: any bin
/// header, nothing else.
#[test]
fn a_node_id_on_the_wire_is_a_bin_of_20_bytes() {
    let node = example_node();
    let encoded = rmp_serde::to_vec(&node).unwrap();
    assert_eq!(encoded[..2], [0xc4, 0x14], "bin 8 of 20 bytes");
    assert_says("Written as bin 8: `c4 14` followed by the 20 bytes.");
    let decode = |header: &[u8], len: usize| {
        let mut bytes = header.to_vec();
        bytes.extend(std::iter::repeat_n(7u8, len));
        rmp_serde::from_slice::<NodeId>(&bytes)
    };
    assert_eq!(decode(&[0xc4, 20], 20).unwrap(), NodeId([7; 20]));
    assert_eq!(decode(&[0xc5, 0, 20], 20).unwrap(), NodeId([7; 20]));
    assert_eq!(decode(&[0xc6, 0, 0, 0, 20], 20).unwrap(), NodeId([7; 20]));
    assert!(decode(&[0xc4, 19], 19).is_err(), "19 bytes");
    assert!(decode(&[0xc4, 21], 21).is_err(), "21 bytes");
    assert!(decode(&[0xb4], 20).is_err(), "a str of 20 bytes");
    assert!(
        decode(&[0xdc, 0, 20], 20).is_err(),
        "an array of 20 integers"
    );
    assert_says(
        "bin 16 and bin 32 headers with length 20 are accepted too; any other length, an array \
         of integers, or a str is rejected.",
    );
}

/// §14: the worked ticket is what the code writes and reads, and the limits are the code's.
#[test]
fn the_ticket_example_and_limits_are_the_codes() {
    use p2p_protocol::ticket::{
        MAX_TICKET_ADDRS, MAX_TICKET_ITEMS, TICKET_CHECKSUM_LEN, TICKET_PREFIX,
    };
    use p2p_protocol::{Ticket, TicketItem};

    let node_id: NodeId = "A3R7-3D62-FG5W-BK2Z-KV66-MHW3-BLWN-WIYRJ".parse().unwrap();
    let file_id: FileId = "c7e3d81f205e835cd390d0bdfb5069237ab884f1913f21bb9603a7cfffb1616c"
        .parse()
        .unwrap();
    let ticket = Ticket::new(
        node_id,
        vec![TicketItem::File(file_id)],
        vec!["192.168.1.20:40123".parse().unwrap()],
    )
    .unwrap();
    let bytes = ticket.to_bytes();
    assert_eq!(bytes.len(), 66);
    assert_documented("the §14.4 ticket payload", &bytes);
    let text = ticket.to_string();
    assert_eq!(text.len(), 110);
    assert!(
        document().contains(&format!("```\n{text}\n```")),
        "docs/PROTOCOL.md §14.4 should show the ticket {text}"
    );
    assert_eq!(text.parse::<Ticket>(), Ok(ticket));
    assert_says("A ticket with one file and one IPv4 address is 66 bytes, 110 characters.");
    assert_eq!(TICKET_PREFIX, "p2p1");
    assert_eq!(TICKET_CHECKSUM_LEN, 4);
    assert_says(&format!("| item count | 1 | 1 to {MAX_TICKET_ITEMS} |"));
    assert_says(&format!("| address count | 1 | 1 to {MAX_TICKET_ADDRS} |"));
}

/// §14.5: the worked version 2 ticket (§14.4's, naming §12.3's index) is what the code writes
/// and reads, and its limit is the code's.
#[test]
fn the_version_2_ticket_example_and_limit_are_the_codes() {
    use p2p_protocol::ticket::{MAX_TICKET_INDEXES, TICKET_PREFIX_WITH_INDEXES};
    use p2p_protocol::{Ticket, TicketIndex, TicketItem};

    let node_id: NodeId = "A3R7-3D62-FG5W-BK2Z-KV66-MHW3-BLWN-WIYRJ".parse().unwrap();
    let file_id: FileId = "c7e3d81f205e835cd390d0bdfb5069237ab884f1913f21bb9603a7cfffb1616c"
        .parse()
        .unwrap();
    let v1 = Ticket::new(
        node_id,
        vec![TicketItem::File(file_id)],
        vec!["192.168.1.20:40123".parse().unwrap()],
    )
    .unwrap();
    let ticket = v1
        .clone()
        .with_indexes(vec![TicketIndex {
            node_id,
            addr: "192.168.1.10:8000".parse().unwrap(),
        }])
        .unwrap();
    let bytes = ticket.to_bytes();
    assert_eq!(bytes.len(), 66 + 28);
    assert_eq!(
        bytes[..62],
        v1.to_bytes()[..62],
        "version 1's fields, unchanged"
    );
    assert_documented("the §14.5 version 2 ticket payload", &bytes);
    let text = ticket.to_string();
    assert_eq!(text.len(), 155);
    assert!(text.starts_with(TICKET_PREFIX_WITH_INDEXES));
    assert!(
        document().contains(&format!("```\n{text}\n```")),
        "docs/PROTOCOL.md §14.5 should show the ticket {text}"
    );
    assert_eq!(text.parse::<Ticket>(), Ok(ticket));
    assert_says("The same ticket naming one IPv4 index server is 94 bytes, 155 characters.");
    assert_eq!(TICKET_PREFIX_WITH_INDEXES, "p2p2");
    assert_says(&format!("| index count | 1 | 1 to {MAX_TICKET_INDEXES} |"));
}

#[test]
fn probe_examples() {
    let probe = IndexRequest::Probe { port: 7001 };
    assert_documented_inline("Probe", &encode_frame(&probe).unwrap());
    let probed = IndexResponse::Probed {
        addr: "192.168.1.20:7001".parse().unwrap(),
        outcome: ProbeOutcome::Reached,
        message: "the index reached you at 192.168.1.20:7001".into(),
    };
    assert_documented("the Probed reply", &encode_frame(&probed).unwrap());
    // Every outcome is named in the document as it travels.
    for outcome in [
        ProbeOutcome::Reached,
        ProbeOutcome::OtherNode,
        ProbeOutcome::Refused,
        ProbeOutcome::TimedOut,
        ProbeOutcome::Failed,
    ] {
        assert_says(&format!("`\"{outcome}\"`"));
    }
    assert_says("index probe timeout | 3 s (`PROBE_TIMEOUT`");
}
