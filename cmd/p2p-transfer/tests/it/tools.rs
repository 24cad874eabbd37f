//! The one-shot tools and what they feed: `search`, `manifest create`, downloads from a
//! manifest file (also damaged ones), `--register --write-manifest`, `--share-dir`.

use std::time::{Duration, Instant};

use crate::process::{bin, leecher, read_line_starting, seed, spawn_until, start_server};
use crate::support::random_file;

#[test]
fn search_lists_matching_files_with_their_hosts() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (a, _) = random_file(src.path(), "Holiday Photos.zip", 1000, 61);
    let (b, _) = random_file(src.path(), "holiday-video.mp4", 1000, 62);
    let (_s1, id_a) = seed(&addr, &a);
    let (_s2, _) = seed(&addr, &b);
    let output = bin()
        .args(["search", "HOLIDAY", "zip", "--server", &addr])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(
        rows[0].starts_with(&id_a) && rows[0].ends_with("Holiday Photos.zip"),
        "{stdout}"
    );
    assert!(rows[0].contains(" 1  "), "one host: {stdout}");

    let output = bin()
        .args(["search", "nothing-like-this", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "no file on the network matches \"nothing-like-this\""
    );
}

#[test]
fn a_manifest_file_names_the_index_and_checks_the_download() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "carried.bin", 9 * 1024 * 1024 + 3, 63);
    let (_seeder, id) = seed(&addr, &path);

    let p2pm = out.path().join("carried.p2pm");
    let output = bin()
        .args(["manifest", "create"])
        .arg(&path)
        .args(["--server", &addr, "-o"])
        .arg(&p2pm)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("wrote {} {id}", p2pm.display())
    );
    // Creating it again never overwrites.
    let again = bin()
        .args(["manifest", "create"])
        .arg(&path)
        .arg("-o")
        .arg(&p2pm)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));

    // No --server: the manifest file says where the index is.
    let dest = out.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let output = bin()
        .args(["peer", "--addr", "127.0.0.1:0", "--download"])
        .arg(&p2pm)
        .arg("--out")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(dest.join("carried.bin")).unwrap(), data);

    // A damaged manifest file: a clear error, nothing fetched or written.
    let text = std::fs::read_to_string(&p2pm).unwrap();
    let damaged = out.path().join("damaged.p2pm");
    std::fs::write(&damaged, text.replace("carried.bin", "renamed.bin")).unwrap();
    let output = leecher(&addr, damaged.to_str().unwrap(), &dest)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: ")
            && last.contains("damaged manifest file: its contents do not match its file id"),
        "{stderr}"
    );
    let truncated = out.path().join("cut.p2pm");
    std::fs::write(&truncated, &text[..text.len() / 3]).unwrap();
    let output = leecher(&addr, truncated.to_str().unwrap(), &dest)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a p2p-transfer manifest file"));
    assert!(!dest.join("renamed.bin").exists());
}

#[test]
fn register_can_write_manifest_files() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "w.bin", 100, 64);
    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        &addr,
        "--write-manifest",
        "--register",
    ])
    .arg(&path);
    let (_seeder, _, mut out) = crate::process::spawn_until(cmd, "registered ");
    let wrote = crate::process::read_line_starting(&mut out, "wrote ");
    let p2pm = src.path().join("w.bin.p2pm");
    assert!(
        wrote.starts_with(&format!("wrote {}", p2pm.display())),
        "{wrote}"
    );
    let doc =
        p2p_protocol::manifest_file::ManifestFile::parse(&std::fs::read_to_string(&p2pm).unwrap())
            .unwrap();
    let servers: Vec<_> = doc.servers.iter().map(|s| s.addr).collect();
    assert_eq!(servers, vec![addr.parse().unwrap()]);
    assert!(
        doc.servers[0].node_id.is_some(),
        "the index's id is not recorded"
    );
    assert_eq!(doc.manifest.name, "w.bin");
}

#[test]
fn a_whole_folder_is_shared_and_recreated_under_out() {
    let (_server, addr) = start_server();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("2024/summer")).unwrap();
    let (_, top) = random_file(&album, "cover.jpg", 3000, 91);
    let (_, deep) = random_file(&album.join("2024/summer"), "beach.jpg", 5 * 1024 * 1024, 92);
    random_file(&album, ".DS_Store", 10, 93);

    let mut cmd = bin();
    cmd.args([
        "peer",
        "--addr",
        "127.0.0.1:0",
        "--server",
        &addr,
        "--write-manifest",
        "--register",
    ])
    .arg(&album);
    let (_seeder, _, mut stdout) = crate::process::spawn_until(cmd, "registered ");
    let wrote = crate::process::read_line_starting(&mut stdout, "wrote ");
    let p2pm = src.path().join("album.p2pm");
    assert_eq!(wrote, format!("wrote {}", p2pm.display()));

    let output = leecher(&addr, p2pm.to_str().unwrap(), out.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One job for the whole folder; its summary is the last line.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("folder album ")
            && summary.contains(": 2 fetched, 0 already there, 0 conflicts, 0 failed ("),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(out.path().join("album/cover.jpg")).unwrap(),
        top
    );
    assert_eq!(
        std::fs::read(out.path().join("album/2024/summer/beach.jpg")).unwrap(),
        deep
    );
    assert!(
        !out.path().join("album/.DS_Store").exists(),
        "hidden files are not part of it"
    );

    // Entries that try to leave the output folder: refused before anything is fetched.
    let text = std::fs::read_to_string(&p2pm).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("\"2024/summer/beach.jpg\"", "\"../../beach.jpg\""),
        ("\"name\": \"album\"", "\"name\": \"..\""),
    ] {
        let evil = out.path().join("evil.p2pm");
        std::fs::write(&evil, text.replace(from, to)).unwrap();
        let dest = elsewhere.path().join("inner");
        std::fs::create_dir_all(&dest).unwrap();
        let output = leecher(&addr, evil.to_str().unwrap(), &dest)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{to} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("damaged manifest file")
                || stderr.contains("relative directory reference"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(elsewhere.path()).unwrap().count(),
            1,
            "nothing beside the output folder"
        );
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "nothing in it either"
        );
    }
}

/// The names `search WORD` finds on the index at `addr`.
fn search_names(addr: &str, word: &str) -> Vec<String> {
    let output = bin()
        .args(["search", word, "--server", addr])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|row| row.rsplit("  ").next())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn share_dir_registers_the_folder_and_follows_it() {
    let (_server, addr) = start_server();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "shared-a.bin", 5 * 1024 * 1024, 71);
    random_file(dir.path(), ".hidden-shared.bin", 10, 72);
    let mut cmd = bin();
    cmd.env("P2P_MANIFEST_CACHE", cache.path().join("cache.json"))
        .args([
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            &addr,
            "--share-dir",
        ])
        .arg(dir.path());
    let (_peer, _, mut stdout) = spawn_until(cmd, "peer listening on ");
    // One line per shared file, as with --register; hidden files are not shared.
    let line = read_line_starting(&mut stdout, "registered ");
    let id = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(line, format!("registered {} {id}", path.display()));
    // The folder's own line follows its files'.
    let folder_line = read_line_starting(&mut stdout, "registered ");
    let folder_id = folder_line.rsplit(' ').next().unwrap();
    assert_eq!(
        folder_line,
        format!("registered {} {folder_id}", dir.path().display())
    );
    // Found by name, shown by its path in the folder (the folder's name first).
    let folder = dir.path().file_name().unwrap().to_str().unwrap();
    let in_folder = |name: &str| format!("{folder}/{name}");
    assert_eq!(search_names(&addr, "shared"), [in_folder("shared-a.bin")]);

    // Others can download it.
    let output = leecher(&addr, &id, out.path()).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(out.path().join("shared-a.bin")).unwrap(),
        data
    );

    // A file dropped into the folder later is shared without a restart.
    random_file(dir.path(), "shared-b.bin", 1000, 73);
    let deadline = Instant::now() + Duration::from_secs(20);
    while search_names(&addr, "shared").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        search_names(&addr, "shared"),
        [in_folder("shared-a.bin"), in_folder("shared-b.bin")]
    );
}
