//! Registration speed against the single-core SHA-256 baseline, on the same file.
//!
//! `cargo run --release -p p2p-storage --example hash_bench [-- --quick]`
//!
//! Writes a random file (1 GiB, or 256 MiB with `--quick`) to a temporary folder, reads it
//! once to warm the page cache, then times three runs each of:
//! * `sha256`: one thread reading the file and hashing it with `sha2`, as a user's
//!   `sha256sum` would;
//! * `register`: [`p2p_storage::build_manifest`], i.e. chunk hashes plus the whole-file hash.
//!
//! Prints a table and one JSON line per scenario, and saves them in `target/bench/`.

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

const RUNS: usize = 3;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size: usize = if quick { 256 << 20 } else { 1 << 30 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.bin");
    {
        let mut file = File::create(&path).expect("create bench file");
        let mut buf = vec![0u8; 4 << 20];
        let mut rng = rand::rng();
        for _ in 0..size / buf.len() {
            rng.fill_bytes(&mut buf);
            file.write_all(&buf).expect("write bench file");
        }
    }
    // Warm the page cache so both scenarios read from memory.
    let _ = sha256_file(&path);

    let baseline = measure(|| {
        sha256_file(&path);
    });
    let register = measure(|| {
        p2p_storage::build_manifest(&path).expect("hash bench file");
    });

    let mb = size as f64 / 1e6;
    let rows = [("sha256", &baseline), ("register", &register)];
    let mut report = String::new();
    report += &format!(
        "{:<10} {:>10} {:>10} {:>10} {:>12}\n",
        "scenario", "median s", "min s", "max s", "MB/s (med)"
    );
    for (name, runs) in rows {
        let (med, min, max) = stats(runs);
        report += &format!(
            "{name:<10} {med:>10.3} {min:>10.3} {max:>10.3} {:>12.0}\n",
            mb / med
        );
    }
    let ratio = stats(&baseline).0 / stats(&register).0;
    report += &format!(
        "register throughput = {ratio:.2} x single-core sha256 ({} MiB file, {} runs)\n",
        size >> 20,
        RUNS
    );
    let mut json = String::new();
    for (name, runs) in rows {
        let (med, min, max) = stats(runs);
        json += &format!(
            "{{\"scenario\":\"{name}\",\"bytes\":{size},\"runs\":{RUNS},\"median_s\":{med:.4},\"min_s\":{min:.4},\"max_s\":{max:.4},\"mb_per_s\":{:.1}}}\n",
            mb / med
        );
    }
    print!("{report}{json}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("hash.txt"), &report);
        let _ = std::fs::write(out.join("hash.jsonl"), &json);
    }
}

fn sha256_file(path: &std::path::Path) -> [u8; 32] {
    let mut file = File::open(path).expect("open bench file");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read bench file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().into()
}

fn measure(mut f: impl FnMut()) -> Vec<Duration> {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

/// (median, min, max) in seconds.
fn stats(runs: &[Duration]) -> (f64, f64, f64) {
    let mut secs: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    (secs[secs.len() / 2], secs[0], secs[secs.len() - 1])
}
