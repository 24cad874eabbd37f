//! `p2p-transfer`: the only binary. Parses flags, sets up logging on stderr, turns Ctrl-C and
//! SIGTERM into one cancellation token, and runs the server or a peer.
//!
//! # Layout
//! * `cli`: flags, and their mapping to `ServerConfig` / `PeerConfig`; `address`: `--server`
//!   as typed (host names, IPv6, the default port); `config`: the config file, whose values
//!   stand in for the flags' defaults.
//! * `run`: what `server` and `peer` do with those configs.
//! * `discovery`: mDNS advertisement, `--auto-discover`, following a server that moves.
//! * `dns_sd`: `--dns-sd-domain`, the index servers published in the site's DNS.
//! * `json`: `--json` output, one event a line, for scripts.
//! * `reach`: the addresses others reach a listener at (the server's paste-ready command).
//! * `progress`: download progress as a bar on a terminal, plain lines otherwise.
//! * `shell`: the interactive shells; `logging`: where log lines go, and how many.
//! * `units`: how sizes and speeds are shown (IEC: KiB, MiB, GiB).
//! * `output`: `println!`/`eprintln!` that never panic on a closed pipe; stderr never blocks.
//! * `errors`: an error as the one line a person reads.
//! * `doctor`: `p2p-transfer doctor`'s checks (`run::doctor` runs them).
//!
//! # Exit codes (README, "Exit codes")
//! * 0: done (also when there was nothing to do, as a download already there).
//! * 1: the command failed; the last line on stderr says why (`error: ...`).
//! * 2: the command line is wrong (clap's usage error), or the config file is.
//! * 128 + N (130 for SIGINT/Ctrl-C, 143 for SIGTERM): a signal stopped a command before its
//!   work was done. A `server` or `peer` that serves until a signal exits 0 once it has shut
//!   down cleanly; a second signal exits at once with 128 + N.

// Before every other module: its `println!`/`eprintln!` stand for std's in all of them.
#[macro_use]
mod output;

mod address;
mod allow;
mod cli;
mod config;
mod discovery;
mod dns_sd;
mod doctor;
mod errors;
mod json;
mod logging;
mod progress;
mod reach;
mod run;
mod shell;
mod tables;
mod trust;
mod units;

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::cli::Command;

/// Threads for blocking work (hashing, disk I/O); more than the default download workers.
const BLOCKING_THREADS: usize = 16;

/// How long the process waits, once its work is done, for blocking I/O still running (a read
/// stuck on a hung network file system) before it exits anyway.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the process waits at exit for its last lines to reach stderr: long enough for a
/// terminal or a pipe being read, short enough that a stderr nobody reads can't keep it alive.
const STDERR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The first signal that asked the process to stop (0: none yet).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

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

/// The exit code of a command line or config file that is wrong (clap's own).
const USAGE_EXIT: u8 = 2;

fn main() -> ExitCode {
    // Flags > environment > config file > defaults.
    let loaded = match config::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(config::LoadError::Usage(err)) => err.exit(),
        Err(config::LoadError::File(err)) => {
            eprintln!("error: {}", errors::one_line(&err));
            logging::flush_stderr(STDERR_GRACE);
            return ExitCode::from(USAGE_EXIT);
        }
    };
    let cli = &loaded.cli;
    // Logs go to stderr (or above a shell's prompt): stdout carries the lines scripts read.
    logging::init(
        cli.command.interactive(),
        logging::Verbosity::from_flags(cli.quiet, cli.verbose),
    );
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
            logging::flush_stderr(STDERR_GRACE);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(err) = watch_signals(shutdown.clone()) {
        eprintln!("error: cannot watch for signals: {err}");
        logging::flush_stderr(STDERR_GRACE);
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Server(args) => run::server::run(args, shutdown).await,
            Command::Peer(args) => run::peer::run(args, shutdown).await,
            Command::Search(args) => interruptible(run::search::run(args), &shutdown).await,
            Command::Send(args) => run::send::run(args, shutdown).await,
            Command::Receive(args) => run::receive::run(args, shutdown).await,
            Command::Id(args) => run::id::run(args),
            Command::Completions(args) => run::completions::run(args),
            Command::Man(args) => run::man::run(args),
            Command::Config(args) => run::config::run(args, &loaded),
            Command::Doctor(args) => {
                interruptible(run::doctor::run(args, &loaded.settings), &shutdown).await
            }
            Command::Manifest(command) => {
                interruptible(run::manifest::run(command), &shutdown).await
            }
        }
    });
    // Work nobody waits for any more (hashing a file that was given up, a read stuck on a
    // hung disk) must not keep the process alive after a signal.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    report_peak_rss();
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", errors::one_line(&err));
            match STOPPED_BY.load(Ordering::Relaxed) {
                0 => ExitCode::FAILURE,
                signal => ExitCode::from(128 + signal as u8),
            }
        }
    };
    logging::flush_stderr(STDERR_GRACE);
    code
}

/// A one-shot command's work, given up at the first signal: a search waiting on a silent
/// index, hashing a huge file.
async fn interruptible(
    work: impl Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        result = work => result,
        () = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
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

/// First Ctrl-C (SIGINT) or SIGTERM: cancel, so everything shuts down cleanly (unregister,
/// keep partial downloads). Second: exit at once.
///
/// The signals are taken here, before this returns, and watched on a thread of their own
/// with a runtime of its own: however busy (or stuck) the main runtime's workers are, a
/// signal is always acted on. Nothing here waits for stderr, which may be a closed pipe.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut int, mut term) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                for round in 0..2 {
                    let signo = tokio::select! {
                        _ = int.recv() => SignalKind::interrupt().as_raw_value(),
                        _ = term.recv() => SignalKind::terminate().as_raw_value(),
                    };
                    if round == 0 {
                        STOPPED_BY.store(signo, Ordering::Relaxed);
                        // A stdout nobody reads must not hold the shutdown.
                        output::stop_waiting();
                        shutdown.cancel();
                        note!("shutting down (press Ctrl-C again to exit at once)");
                    } else {
                        std::process::exit(128 + signo);
                    }
                }
            });
        })?;
    Ok(())
}
