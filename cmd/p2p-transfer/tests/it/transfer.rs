//! Whole downloads between in-process peers: bytes identical, work spread over every seeder,
//! edge-sized files, id prefixes, and a target that already exists.

use std::time::Duration;

use p2p_peer::{DownloadEvent, PeerError};
use p2p_protocol::CHUNK_SIZE;
use tokio_util::sync::CancellationToken;

use crate::support::{random_file, start_peer, start_server};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seeders_each_serve_part_of_a_50_mib_file() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 50 MiB is 12.5 chunks: the last chunk is short.
    let (path, data) = random_file(src.path(), "big.bin", 50 * MIB, 1);
    assert_ne!(data.len() % CHUNK_SIZE as usize, 0);

    let mut seeders = Vec::new();
    let mut id = None;
    for _ in 0..3 {
        let seeder = start_peer(server.addr).await;
        let got = seeder.register(&path).await.unwrap();
        assert_eq!(
            *id.get_or_insert(got),
            got,
            "same content and name, same id"
        );
        seeders.push(seeder);
    }
    let id = id.unwrap();

    let leecher = start_peer(server.addr).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = leecher
        .download(
            &id.to_string(),
            out.path(),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .unwrap();

    assert_eq!(report.path, out.path().join("big.bin"));
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(!out.path().join("big.bin.part").exists());
    for seeder in &seeders {
        assert!(
            seeder.chunks_served() > 0,
            "seeder {} served nothing",
            seeder.local_addr()
        );
    }
    // Each chunk was written once, from the first verified copy (the endgame may have asked a
    // second host for a late chunk).
    let delivered: u64 = report.per_host.iter().map(|(_, n)| n).sum();
    assert_eq!(delivered, 13);
    let served: u64 = seeders.iter().map(|s| s.chunks_served()).sum();
    assert!(served >= 13);

    // The events add up to the file, and name only real seeders.
    let mut bytes = 0;
    let mut finished = false;
    while let Some(event) = rx.recv().await {
        match event {
            DownloadEvent::ChunkDone { bytes: b, host, .. } => {
                bytes += b;
                assert!(seeders.iter().any(|s| s.local_addr() == host));
            }
            DownloadEvent::Finished { bytes: b, .. } => {
                finished = true;
                assert_eq!(b as usize, data.len());
            }
            _ => {}
        }
    }
    assert!(finished);
    assert_eq!(bytes, data.len());

    // The leecher now hosts the file too.
    assert!(leecher.files().iter().any(|f| f.file_id == id));
    for peer in seeders.iter().chain([&leecher]) {
        peer.shutdown().await;
    }
}

async fn round_trip(name: &str, len: usize) {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), name, len, len as u64);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();
    let leecher = start_peer(server.addr).await;
    let report = leecher
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.path, out.path().join(name));
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert_eq!(report.bytes, len as u64);
    seeder.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test]
async fn empty_file() {
    round_trip("empty.txt", 0).await;
}

#[tokio::test]
async fn file_of_exactly_one_chunk() {
    round_trip("one-chunk.bin", CHUNK_SIZE as usize).await;
}

#[tokio::test]
async fn non_ascii_file_name() {
    round_trip("résumé 数据 🚀.txt", 3 * MIB + 7).await;
}

#[tokio::test]
async fn id_prefixes_unique_unknown_and_malformed() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "p.bin", 1000, 5);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap().to_string();
    let leecher = start_peer(server.addr).await;

    // A unique prefix of 6 characters, in upper case, is enough.
    let report = leecher
        .download(
            &id[..6].to_uppercase(),
            out.path(),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(report.path).unwrap(), data);

    // Unknown: a prefix differing from the real id in its first character.
    let other = if id.starts_with('0') { "1" } else { "0" };
    let unknown = format!("{other}{}", &id[1..8]);
    let err = leecher
        .download(&unknown, out.path(), None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("no file matches {unknown}")),
        "{err}"
    );

    for bad in ["abc", "not-hex!"] {
        let err = leecher
            .download(bad, out.path(), None, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::BadId(_)), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    seeder.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test]
async fn ambiguous_prefix_names_the_candidates() {
    use p2p_peer::index::IndexClient;
    use p2p_protocol::{FileManifest, Sha256Hash};

    let server = start_server().await;
    // Announce synthetic manifests (the index never reads file data) until two ids share six
    // hex characters: about 5,000 by the birthday bound, deterministic names.
    let client = IndexClient::new(server.addr, Duration::from_secs(5), crate::support::tls());
    let session = client
        .register("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    let (prefix, a, b) = loop {
        let name = format!("n{}", seen.len());
        let manifest = FileManifest {
            name: name.clone(),
            size: 1,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash::of(name.as_bytes())],
        };
        let id = client
            .add_file(&session, manifest)
            .await
            .unwrap()
            .to_string();
        if let Some(other) = seen.insert(id[..6].to_owned(), id.clone()) {
            break (id[..6].to_owned(), id, other);
        }
    };
    let leecher = crate::support::start_peer(server.addr).await;
    let out = tempfile::tempdir().unwrap();
    let err = leecher
        .download(&prefix, out.path(), None, CancellationToken::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("matches 2 files"), "{msg}");
    assert!(msg.contains(&a[..12]) && msg.contains(&b[..12]), "{msg}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    leecher.shutdown().await;
}

#[tokio::test]
async fn existing_target_is_left_untouched() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "keep.txt", 2 * MIB, 9);
    std::fs::write(out.path().join("keep.txt"), b"precious").unwrap();
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();
    let leecher = start_peer(server.addr).await;
    let err = leecher
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("already exists; refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.path().join("keep.txt")).unwrap(),
        b"precious"
    );
    assert!(!out.path().join("keep.txt.part").exists());
    assert_eq!(seeder.chunks_served(), 0, "nothing was fetched");
    seeder.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_seeder_is_outvoted_by_the_hashes() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "v.bin", 30 * MIB, 11);
    let good = start_peer(server.addr).await;
    let id = good.register(&path).await.unwrap();
    let liar = crate::bad_input::FakeSeeder::start(
        server.addr,
        &path,
        crate::bad_input::Misbehaviour::WrongBytes,
    )
    .await;

    let leecher = start_peer(server.addr).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = leecher
        .download(
            &id.to_string(),
            out.path(),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(liar.requests() > 0, "the lying seeder was asked");
    let mut dropped = false;
    while let Some(event) = rx.recv().await {
        if let DownloadEvent::PeerFailed {
            host,
            error,
            dropped: d,
        } = event
        {
            assert_eq!(host, liar.addr);
            assert!(error.contains("failed verification"), "{error}");
            dropped |= d;
        }
    }
    assert!(dropped, "the liar was dropped after repeated bad chunks");
    good.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test]
async fn file_changed_on_disk_is_no_longer_served() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "c.bin", MIB, 12);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();
    // Edited in place after registration: same name, new size.
    std::fs::write(&path, b"edited").unwrap();
    let leecher = start_peer(server.addr).await;
    let err = leecher
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("download of c.bin failed with 0 of 1 chunks complete"),
        "{err}"
    );
    assert!(err.to_string().contains("file_unavailable"), "{err}");
    assert!(!out.path().join("c.bin").exists());
    assert!(
        seeder.files().is_empty(),
        "the changed file is no longer shared"
    );
    seeder.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test]
async fn search_matches_every_word_ignoring_case() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let seeder = start_peer(server.addr).await;
    for (i, name) in ["Holiday Photos.zip", "holiday-video.mp4", "report.pdf"]
        .iter()
        .enumerate()
    {
        let (path, _) = random_file(src.path(), name, 10, i as u64);
        seeder.register(&path).await.unwrap();
    }
    let names = |(files, _): (Vec<p2p_protocol::FileSummary>, u64)| -> Vec<String> {
        files.into_iter().map(|f| f.name).collect()
    };
    assert_eq!(
        names(seeder.search("HOLIDAY").await.unwrap()),
        ["Holiday Photos.zip", "holiday-video.mp4"]
    );
    assert_eq!(
        names(seeder.search("holiday mp4").await.unwrap()),
        ["holiday-video.mp4"]
    );
    assert!(names(seeder.search("holiday pdf").await.unwrap()).is_empty());
    let err = seeder.search("   ").await.unwrap_err();
    assert!(err.to_string().contains("a search needs"), "{err}");
    seeder.shutdown().await;
}

#[tokio::test]
async fn deleted_file_is_reported_unavailable() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "d.bin", 1000, 13);
    let seeder = start_peer(server.addr).await;
    let id = seeder.register(&path).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let leecher = start_peer(server.addr).await;
    let err = leecher
        .download(&id.to_string(), out.path(), None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("download of d.bin failed with 0 of 1 chunks complete"),
        "{err}"
    );
    assert!(err.to_string().contains("file_unavailable"), "{err}");
    assert!(seeder.files().is_empty());
    seeder.shutdown().await;
    leecher.shutdown().await;
}
