//! Log set-up: tracing events go to stderr, or, while an interactive shell is showing its
//! prompt, above the prompt through reedline's external printer so they don't garble what the
//! user is typing.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::mpsc::SyncSender;

use tracing_subscriber::EnvFilter;

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
        let _ = writeln!(io::stderr(), "{line}");
    }
}

/// Installs the subscriber. `RUST_LOG` wins; otherwise `info`, or `warn` in a shell, where
/// routine events would bury the user's own output.
pub fn init(interactive: bool) {
    let default = if interactive { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(LineWriter::default)
        .with_ansi(io::stderr().is_terminal() && !interactive)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
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
