//! Log set-up: tracing events go to stderr, or, while an interactive shell is showing its
//! prompt, above the prompt through reedline's external printer so they don't garble what the
//! user is typing. Every field value (the message too) is shown through
//! [`p2p_protocol::printable`]: log fields carry file names and errors from the network, and
//! tracing's own formatter writes them raw.
//!
//! Nothing here waits for stderr. Every line for stderr (logs, and [`crate::output`]'s
//! `eprintln!`) joins a bounded queue that one thread of its own writes out: a stderr nobody
//! reads (a full pipe, a terminal paused with Ctrl-S) holds up only that thread, and past
//! [`STDERR_QUEUE`] lines new ones are dropped and counted; a closed stderr (the reader of a
//! pipe gone, as after `p2p-transfer peer 2>&1 | grep x` and Ctrl-C) ends the writing, and every
//! line after it is dropped. So logging never blocks shutdown, or anything else, and never
//! panics.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use p2p_protocol::printable;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Where lines for "above the prompt" go while a shell runs.
static SHELL_PRINTER: Mutex<Option<SyncSender<String>>> = Mutex::new(None);

/// Sends log lines above the shell's prompt from now on.
pub fn route_to_shell(printer: SyncSender<String>) {
    *SHELL_PRINTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(printer);
}

/// Back to plain stderr (the shell has exited).
pub fn route_to_stderr() {
    *SHELL_PRINTER.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Prints `line` above the shell prompt if a shell runs, else on stderr. Never blocks: if the
/// shell is busy and its queue is full, the line goes to stderr.
pub fn print_above_prompt(line: String) {
    let printer = SHELL_PRINTER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let undelivered = match printer {
        Some(tx) => tx.try_send(line).err().map(|e| match e {
            std::sync::mpsc::TrySendError::Full(l)
            | std::sync::mpsc::TrySendError::Disconnected(l) => l,
        }),
        None => Some(line),
    };
    if let Some(line) = undelivered {
        to_stderr(line);
    }
}

/// Lines that may wait for a slow stderr before new ones are dropped: a burst of logs fits,
/// a stderr nobody reads costs at most this much memory.
const STDERR_QUEUE: usize = 4096;

/// The lines waiting for the stderr thread, and how far it got.
struct StderrQueue {
    lines: VecDeque<String>,
    /// Lines ever queued, and of those written out (or given up on): a flush waits for the
    /// second to reach the first.
    queued: u64,
    written: u64,
    /// Lines dropped since the thread last said so.
    dropped: u64,
    /// stderr failed for good (closed): lines are dropped from now on.
    closed: bool,
}

static STDERR: Mutex<StderrQueue> = Mutex::new(StderrQueue {
    lines: VecDeque::new(),
    queued: 0,
    written: 0,
    dropped: 0,
    closed: false,
});
/// Wakes the stderr thread when a line is queued.
static STDERR_QUEUED: Condvar = Condvar::new();
/// Wakes [`flush_stderr`] when lines were written.
static STDERR_WRITTEN: Condvar = Condvar::new();
static STDERR_THREAD: Once = Once::new();

fn stderr_queue() -> std::sync::MutexGuard<'static, StderrQueue> {
    STDERR.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues `line` (a newline is added) for stderr and returns at once.
pub fn to_stderr(line: String) {
    STDERR_THREAD.call_once(|| {
        let started = std::thread::Builder::new()
            .name("stderr".to_owned())
            .spawn(write_stderr);
        if started.is_err() {
            // No thread, no writing: better silent than blocked.
            stderr_queue().closed = true;
        }
    });
    let mut queue = stderr_queue();
    if queue.closed {
        return;
    }
    if queue.lines.len() >= STDERR_QUEUE {
        queue.dropped += 1;
        return;
    }
    queue.lines.push_back(line);
    queue.queued += 1;
    drop(queue);
    STDERR_QUEUED.notify_one();
}

/// Waits until every line queued so far is written out (or stderr is closed), at most
/// `limit`: at exit, so the last error line is not lost, but a stderr nobody reads can't keep
/// the process alive.
pub fn flush_stderr(limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut queue = stderr_queue();
    let target = queue.queued;
    while queue.written < target && !queue.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        queue = STDERR_WRITTEN
            .wait_timeout(queue, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// The stderr thread: writes queued lines out one at a time, the lock never held across a
/// write.
fn write_stderr() {
    let mut stderr = io::stderr();
    loop {
        let (line, dropped) = {
            let mut queue = stderr_queue();
            while queue.lines.is_empty() {
                queue = STDERR_QUEUED.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            let line = queue.lines.pop_front().unwrap_or_default();
            (line, std::mem::take(&mut queue.dropped))
        };
        let mut text = String::with_capacity(line.len() + 80);
        if dropped > 0 {
            text.push_str(&format!(
                "warning: {dropped} log line(s) dropped: stderr was not being read\n"
            ));
        }
        text.push_str(&line);
        text.push('\n');
        let result = stderr.write_all(text.as_bytes());
        let mut queue = stderr_queue();
        queue.written += 1;
        match result {
            // stderr was made non-blocking by whoever started us, and is full: this line is
            // lost, the next may pass.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => queue.dropped += 1,
            // Closed (EPIPE) or broken: nothing will be read any more.
            Err(_) => {
                queue.closed = true;
                queue.written = queue.queued;
                queue.lines.clear();
            }
            Ok(()) => {}
        }
        drop(queue);
        STDERR_WRITTEN.notify_all();
    }
}

/// How much a run says on stderr besides its errors and results: `-q`, the default, `-v`,
/// `-vv`, `-vvv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors and results only; no progress, no warnings.
    Quiet,
    /// Warnings and errors from the logs, the progress bar, and the results.
    #[default]
    Normal,
    /// `-v`: routine events too (info).
    Verbose,
    /// `-vv`: our crates' debug events.
    Debug,
    /// `-vvv`: everything, down to our crates' trace events.
    Trace,
}

impl Verbosity {
    /// From the global flags: `-q`, or the number of `-v`.
    pub fn from_flags(quiet: bool, verbose: u8) -> Self {
        match (quiet, verbose) {
            (true, _) => Self::Quiet,
            (false, 0) => Self::Normal,
            (false, 1) => Self::Verbose,
            (false, 2) => Self::Debug,
            (false, _) => Self::Trace,
        }
    }

    /// The log filter this level stands for when `RUST_LOG` is not set. Only our crates
    /// (`p2p_*`) go below info: the TLS, HTTP and mDNS libraries' debug output buries ours.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Quiet => "error",
            Self::Normal => "warn",
            Self::Verbose => "info",
            Self::Debug => "info,p2p=debug",
            Self::Trace => "debug,p2p=trace",
        }
    }
}

/// The level chosen at start (`-q` hides the progress bar too), for code far from `main`.
static VERBOSITY: std::sync::OnceLock<Verbosity> = std::sync::OnceLock::new();

/// Whether `-q` was given: only errors and results are shown.
pub fn quiet() -> bool {
    VERBOSITY.get().copied().unwrap_or_default() == Verbosity::Quiet
}

/// Installs the subscriber. `RUST_LOG` wins; otherwise the level of `-q`/`-v` (warnings and
/// errors by default, in a shell too, where routine events would bury the user's output).
pub fn init(interactive: bool, verbosity: Verbosity) {
    let _ = VERBOSITY.set(verbosity);
    tracing_subscriber::fmt()
        .fmt_fields(PrintableFields)
        .with_writer(LineWriter::default)
        .with_ansi(io::stderr().is_terminal() && !interactive)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(verbosity.filter())),
        )
        .init();
}

/// Collects one event's bytes and hands them over as one line when dropped.
#[derive(Default)]
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        print_above_prompt(text.trim_end_matches('\n').to_owned());
    }
}

/// Formats fields like tracing's default (`message key=value ...`), each value escaped.
struct PrintableFields;

impl<'w> FormatFields<'w> for PrintableFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PrintableVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PrintableVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for PrintableVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // `log` records bridged into tracing carry their metadata as `log.*` fields, which the
        // event's header already shows.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let value = format!("{value:?}");
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", printable(&value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={}", printable(&value))
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flags_choose_the_level() {
        assert_eq!(Verbosity::from_flags(false, 0).filter(), "warn");
        assert_eq!(Verbosity::from_flags(false, 1).filter(), "info");
        assert_eq!(Verbosity::from_flags(false, 2).filter(), "info,p2p=debug");
        assert_eq!(Verbosity::from_flags(false, 9), Verbosity::Trace);
        assert_eq!(Verbosity::from_flags(true, 0).filter(), "error");
        // Each filter is one EnvFilter accepts.
        for v in [0, 1, 2, 3] {
            let filter = Verbosity::from_flags(false, v).filter();
            assert!(EnvFilter::try_new(filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn log_fields_from_the_network_are_escaped() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(PrintableFields)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let name = "a\x1b]0;pwned\x07.txt";
        let reason = "no\u{9b}2J (internal)";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", peer = %"p\u{202e}q");
            let _entered = span.enter();
            tracing::warn!(%name, %reason, count = 3, "dropping host {}", "x\x1b[2J");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.trim(),
            r"WARN conn{peer=p\u{202e}q}: p2p_transfer::logging::tests: dropping host x\u{1b}[2J name=a\u{1b}]0;pwned\u{7}.txt reason=no\u{9b}2J (internal) count=3"
        );
    }
}
