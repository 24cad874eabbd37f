//! `docs/PROTOCOL.md` is the contract others implement from, so its test vectors and hex
//! examples must be what this code produces. Each test encodes a message the document shows
//! and checks that the document holds exactly those bytes (16 per line, as printed there).

use p2p_protocol::codec::{chunk_frame_prefix, encode_frame};
use p2p_protocol::{
    CHUNK_SIZE, FileManifest, HostInfo, IndexRequest, IndexResponse, MAX_CHUNK_FRAME_LEN,
    PROTOCOL_VERSION, PeerId, PeerRequest, PeerResponse, Role, Sha256Hash, Token,
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
}

#[test]
fn index_conversation_examples() {
    let token = Token([0xab; 32]);
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
