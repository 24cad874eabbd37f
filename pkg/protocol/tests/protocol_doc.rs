//! `docs/PROTOCOL.md` is the contract others implement from, so its test vectors and hex
//! examples must be what this code produces. Each test encodes a message the document shows
//! and checks that the document holds exactly those bytes (16 per line, as printed there);
//! others check that every id it shows, and every figure it derives, is what the code computes.

use p2p_protocol::codec::{chunk_frame_prefix, encode_frame};
use std::net::SocketAddr;

use p2p_protocol::{
    CHUNK_SIZE, ErrorCode, FileId, FileManifest, FileSummary, HostInfo, IndexRequest,
    IndexResponse, MAX_CHUNK_FRAME_LEN, MAX_CHUNKS_PER_FILE, MAX_CONTROL_FRAME_LEN,
    MAX_FILE_NAME_LEN, MAX_HOSTS_PER_LOOKUP, MAX_LIST_ENTRIES, MAX_MESSAGE_LEN, MAX_SENDER_LEN,
    PROTOCOL_VERSION, PeerId, PeerRequest, PeerResponse, PeerSummary, ProtocolError, Role,
    Sha256Hash, Token,
};

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
    let known = [hello().id().0, hello().chunks[0].0, empty.id().0];
    let words = doc.split(|c: char| !c.is_ascii_hexdigit());
    for word in words.filter(|w| w.len() == 64) {
        assert!(
            known.iter().any(|k| hex(k) == word),
            "{word} in the document is not an id or hash of §6.5"
        );
    }
    let short = |k: &[u8; 32]| format!("{}…{}", &hex(k)[..8], &hex(k)[56..]);
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
                known.iter().any(|k| short(k) == shown),
                "{shown} in the document is not an id of §6.5"
            );
        }
    }
    // In the example frames, every bin 8 of 32 bytes (`c4 20`) is an id, a hash or the token.
    let token = [0xab; 32];
    for block in hex_blocks(&doc) {
        for at in 0..block.len().saturating_sub(1) {
            if block[at..].starts_with(&[0xc4, 0x20]) && block.len() >= at + 34 {
                let value: [u8; 32] = block[at + 2..at + 34].try_into().unwrap();
                assert!(
                    known.contains(&value) || value == token,
                    "an example frame holds {}, which is no id, hash or token of the examples",
                    hex(&value)
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
    ] {
        assert!(doc.contains(&text), "the document should say {text:?}");
    }
}

#[test]
fn peer_conversation_examples() {
    let id = hello().id();
    let get = PeerRequest::GetChunk {
        file_id: id,
        index: 0,
    };
    assert_documented("GetChunk", &encode_frame(&get).unwrap());
    let mut chunk = chunk_frame_prefix(id, 0, 6, MAX_CHUNK_FRAME_LEN).unwrap();
    chunk.extend_from_slice(b"hello\n");
    assert_documented("the Chunk reply", &chunk);

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

#[test]
fn index_conversation_examples() {
    let token = Token([0xab; 32]);
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
        token,
        addr: "192.168.1.20:8001".parse().unwrap(),
        heartbeat_interval_ms: 5000,
        heartbeat_timeout_ms: 15000,
    };
    assert_documented("Registered", &encode_frame(&registered).unwrap());
    let heartbeat = IndexRequest::Heartbeat {
        peer_id: PEER,
        token,
    };
    assert_documented("Heartbeat", &encode_frame(&heartbeat).unwrap());
    assert_documented_inline(
        "HeartbeatAck",
        &encode_frame(&IndexResponse::HeartbeatAck {}).unwrap(),
    );
    let add = IndexRequest::AddFile {
        peer_id: PEER,
        token,
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
        }],
    };
    assert_documented("Found", &encode_frame(&found).unwrap());
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

#[test]
fn manifest_file_example() {
    let file = p2p_protocol::manifest_file::ManifestFile::new(
        hello(),
        vec!["192.168.1.10:8000".parse().unwrap()],
    );
    let expected = format!("```json\n{}", file.to_json());
    assert!(
        document().contains(expected.trim_end()),
        "§12.3 should read:\n{expected}"
    );
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
/// message, a full chunk. Every integer is at its longest encoding.
#[test]
fn the_largest_frames_are_as_documented() {
    let chunk_body = |index| {
        let prefix = chunk_frame_prefix(
            FileId([0; 32]),
            index,
            CHUNK_SIZE as usize,
            MAX_CHUNK_FRAME_LEN,
        )
        .unwrap();
        u32::from_be_bytes(prefix[..4].try_into().unwrap()) as usize
    };
    let last = MAX_CHUNKS_PER_FILE - 1;
    assert_says(&format!(
        "a full 4 MiB `Chunk` reply has a body of {} to {} bytes, depending on how `index` is \
         encoded ({} to {} for the indices 0 to {} a valid file can have)",
        grouped(chunk_body(0)),
        grouped(chunk_body(u32::MAX)),
        grouped(chunk_body(0)),
        grouped(chunk_body(last)),
        grouped(last as usize),
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
        token: Token([0xff; 32]),
        manifest: manifest.clone(),
    };
    assert_says(&format!(
        "an `AddFile` carrying the largest allowed manifest ({} chunks, {MAX_FILE_NAME_LEN}-byte \
         name) is {} bytes;",
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
         as `\"{scoped}\"`, is {scoped_found} bytes. With {plain_len}-character unscoped IPv6 \
         addresses it is {plain_found} bytes."
    ));

    let files = IndexResponse::Files {
        files: vec![
            FileSummary {
                file_id: FileId([0xff; 32]),
                name: "n".repeat(MAX_FILE_NAME_LEN),
                size: u64::MAX,
                hosts: u32::MAX,
            };
            MAX_LIST_ENTRIES
        ],
        total: u64::MAX,
    };
    let peers = IndexResponse::Peers {
        peers: vec![
            PeerSummary {
                peer_id: PeerId(u64::MAX),
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
