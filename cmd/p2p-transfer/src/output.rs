//! `println!`, `print!`, `eprintln!` and `eprint!` for this binary, in place of std's, which
//! panic when the stream is closed. A closed stdout or stderr is ordinary for a command line
//! tool (`p2p-transfer search x | head -1`, `p2p-transfer peer 2>&1 | grep x` and then Ctrl-C):
//! a panic there would kill the task that printed (the signal handler, say, which then never
//! cancels anything, so the process ignores every later SIGINT and SIGTERM).
//!
//! * `println!` / `print!`: results on stdout. A write that fails is dropped; the command
//!   goes on and ends as it would have. A reader that stops reading without closing holds
//!   the writer, as for any Unix tool (results are never dropped for being slow): the first
//!   signal may then wait for it, the second exits at once.
//! * `eprintln!` / `eprint!`: through [`crate::logging`] (above a shell's prompt while one
//!   runs), whose own thread writes stderr: never blocks, never panics.
//!
//! They are declared before every other module of the crate (`#[macro_use]` in `main.rs`),
//! so each use of these names in the crate, present and future, is one of these.

use std::fmt;
use std::io::Write;

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

/// Writes `args` to stdout and flushes; a failure (a closed pipe) is dropped.
pub fn stdout(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}
