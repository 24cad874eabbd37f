//! `p2p-transfer`: the only binary. Parses flags, sets up logging on stderr, turns Ctrl-C and
//! SIGTERM into one cancellation token, and runs the server or a peer.
//!
//! # Layout
//! * `cli`: flags, and their mapping to `ServerConfig` / `PeerConfig`.
//! * `run`: what `server` and `peer` do with those configs.
//! * `discovery`: mDNS advertisement, `--auto-discover`, following a server that moves.
//! * `progress`: download progress as a bar on a terminal, plain lines otherwise.
//! * `shell`: the interactive shells; `logging`: where log lines go.

mod allow;
mod cli;
mod discovery;
mod logging;
mod progress;
mod run;
mod shell;
mod tables;
mod trust;

use std::process::ExitCode;

use clap::Parser;
use p2p_protocol::printable;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};

/// Threads for blocking work (hashing, disk I/O); more than the default download workers.
const BLOCKING_THREADS: usize = 16;

/// How long the process waits, once its work is done, for blocking I/O still running (a read
/// stuck on a hung network file system) before it exits anyway.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Raises the soft limit of open files to the hard one. The soft limit is often 1,024, and a
/// peer serving folders (up to 256 files kept open, 64 connections) while it downloads folders
/// of its own (a file open per file being written) can come near it; failing to open a file
/// for lack of descriptors only makes requests fail and come again.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        tracing::debug!(limit = ?limit.current, "open files limit");
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit")
        }
        Err(err) => {
            tracing::debug!(%err, limit = ?limit.current, "cannot raise the open files limit")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr (or above a shell's prompt): stdout carries the lines scripts read.
    logging::init(cli.command.interactive());
    raise_open_files_limit();

    // Few blocking threads: chunk hashing and disk writes need about one per download worker,
    // and every extra thread is another malloc arena holding freed 4 MiB buffers.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        match &cli.command {
            Command::Server(args) => run::server::run(args, shutdown).await,
            Command::Peer(args) => run::peer::run(args, shutdown).await,
            Command::Search(args) => run::search::run(args).await,
            Command::Send(args) => run::send::run(args, shutdown).await,
            Command::Receive(args) => run::receive::run(args, shutdown).await,
            Command::Id(args) => run::id::run(args),
            Command::Manifest(command) => tokio::select! {
                result = run::manifest::run(command) => result,
                () = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
            },
        }
    });
    // Work nobody waits for any more (hashing a file that was given up, a read stuck on a
    // hung disk) must not keep the process alive after a signal.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    report_peak_rss();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The chain may quote the network (an index's error message, a file name).
            eprintln!("error: {}", printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// With `P2P_REPORT_RSS=1`, prints the process's peak resident memory on stderr at exit, for
/// the benchmark (`make bench`).
fn report_peak_rss() {
    if std::env::var_os("P2P_REPORT_RSS").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        let kb = line.split_whitespace().nth(1).unwrap_or("0");
        eprintln!("peak rss: {kb} kB");
    }
}

/// First Ctrl-C or SIGTERM: cancel, so everything shuts down cleanly (unregister, keep
/// partial downloads). Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            eprintln!("shutting down (press Ctrl-C again to exit at once)");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}
