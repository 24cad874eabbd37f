//! `println!`, `print!`, `eprintln!` and `eprint!` for this binary, in place of std's, which
//! panic when the stream is closed. A closed stdout or stderr is ordinary for a command line
//! tool (`p2p-transfer search x | head -1`, `p2p-transfer peer 2>&1 | grep x` and then Ctrl-C):
//! a panic there would kill the task that printed (the signal handler, say, which then never
//! cancels anything, so the process ignores every later SIGINT and SIGTERM).
//!
//! * `println!` / `print!` and `--json` events ([`crate::json::emit`]): results on stdout. A
//!   write that fails is dropped; the command goes on and ends as it would have. A reader that
//!   stops reading without closing holds the writer, as for any Unix tool: a result waits for
//!   room, never dropped for being slow, until a signal comes ([`stop_waiting`]); then what
//!   doesn't fit is dropped (a line may be cut short), so the first SIGINT or SIGTERM ends
//!   the command promptly. Progress (`--json`'s `progress` events, [`stdout_progress`]) is
//!   never waited for: a line that doesn't fit at once is dropped, and the next one tells
//!   where things stand.
//! * `eprintln!` / `eprint!`: through [`crate::logging`] (above a shell's prompt while one
//!   runs), whose own thread writes stderr: never blocks, never panics.
//!
//! They are declared before every other module of the crate (`#[macro_use]` in `main.rs`),
//! so each use of these names in the crate, present and future, is one of these.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};

/// A line on stdout; dropped if stdout is closed.
macro_rules! println {
    () => {
        $crate::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Text on stdout (flushed: a prompt or a partial line); dropped if stdout is closed.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*))
    };
}

/// A line on stderr that is neither a result nor an error (what is going on, a warning that
/// changes nothing for the result): left out under `-q`.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::logging::quiet() {
            $crate::logging::print_above_prompt(format!($($arg)*))
        }
    };
}

/// A line on stderr, queued: never blocks, never panics.
macro_rules! eprintln {
    () => {
        $crate::logging::print_above_prompt(String::new())
    };
    ($($arg:tt)*) => {
        $crate::logging::print_above_prompt(format!($($arg)*))
    };
}

/// As `eprintln!` (stderr takes whole lines; a trailing newline is not doubled).
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::logging::print_above_prompt(
            format!($($arg)*).trim_end_matches('\n').to_owned()
        )
    };
}

/// A pipe takes a write of at most this many bytes whole once poll says it has room (POSIX
/// `PIPE_BUF`, 4096 on Linux): stdout is written in pieces of this size, each once there is
/// room for it, so no write blocks.
const PIPE_BUF: usize = 4096;

/// Writes `args` to stdout and flushes, waiting for room while no signal has come; a failure
/// (a closed pipe) is dropped.
pub fn stdout(args: fmt::Arguments<'_>) {
    let text = fmt::format(args);
    write_stdout(text.as_bytes(), false);
}

/// Writes a progress line to stdout if it fits now; else drops it.
pub fn stdout_progress(line: &str) {
    write_stdout(line.as_bytes(), true);
}

/// From now on, a write to stdout that has no room is dropped instead of waited for: called
/// at the first signal, so that a reader that stopped reading can't hold the shutdown.
pub fn stop_waiting() {
    if let Some(stop) = stop_fd() {
        let _ = rustix::io::write(stop, &1u64.to_ne_bytes());
    }
}

/// Readable once [`stop_waiting`] was called: what a write waiting for room also polls.
/// `None` if the system has no eventfd to spare (then writes wait, as std's do).
fn stop_fd() -> Option<&'static OwnedFd> {
    static STOP: OnceLock<Option<OwnedFd>> = OnceLock::new();
    STOP.get_or_init(|| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok())
        .as_ref()
}

/// Writes `bytes` whole in pieces, each once stdout has room for it, unless a signal has come
/// and there is no room; a `droppable` line goes only if its first piece fits at once.
fn write_stdout(bytes: &[u8], droppable: bool) {
    let mut out = std::io::stdout().lock();
    for (n, piece) in bytes.chunks(PIPE_BUF).enumerate() {
        if !room(&out, droppable && n == 0) {
            return;
        }
        if out.write_all(piece).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Whether `out` has room for a piece (or has failed: the write then says so): at once if
/// `now`; else once it has, or `false` once [`stop_waiting`] was called and it still has none.
fn room(out: &impl AsFd, now: bool) -> bool {
    let ready = PollFlags::OUT | PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL;
    let stop = stop_fd();
    let mut fds = vec![PollFd::new(out, PollFlags::OUT)];
    if let (Some(stop), false) = (stop, now) {
        fds.push(PollFd::new(stop, PollFlags::IN));
    }
    let timeout = now.then_some(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    loop {
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) if fds[0].revents().intersects(ready) => return true,
            // Not ready at once, or stopped.
            Ok(_) if now || fds.len() > 1 => return false,
            // Woken without news (never expected): poll again.
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            // poll itself failed: write as std would, blocking if need be.
            Err(_) => return true,
        }
    }
}
