//! The interactive shells (`server -i`, `peer -i`): a reedline loop over a clap multicall
//! enum per role, run on its own thread and reaching the async core through a runtime handle.
//!
//! * Tab completes command names, paths after commands that take one, and the words a role
//!   knows after its commands (the peer: ids after `download`/`unregister`, peers after `msg`).
//! * History persists in the user's data directory (`$XDG_DATA_HOME/p2p-transfer/`), or in
//!   `P2P_HISTORY_FILE` if set.
//! * Ctrl-C clears the line; Ctrl-D leaves like `exit`.
//! * Messages from background work (logs, finished downloads) are printed above the prompt.
//! * A parse error prints clap's one-line error and the usage of that command.
//!
//! # Layout
//! * `completion`: command and path completion.
//! * `server`, `peer`: the commands of each role.
//! * `transfers`: the `transfers` table and finished downloads above the prompt, from the
//!   peer's download registry.

mod completion;
pub mod peer;
pub mod server;
pub mod transfers;

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;

use clap::Parser;
use reedline::{
    ColumnarMenu, DefaultPrompt, DefaultPromptSegment, Emacs, ExternalPrinter, FileBackedHistory,
    KeyCode, KeyModifiers, MenuBuilder, Reedline, ReedlineEvent, ReedlineMenu, Signal,
    default_emacs_keybindings,
};

use crate::logging;
use completion::ShellCompleter;
pub use completion::Words;

/// Entries kept in a history file.
const HISTORY_SIZE: usize = 1000;
/// Lines that may wait to be printed above the prompt.
const PRINTER_QUEUE: usize = 1024;

/// What a command asks the loop to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Show the prompt again.
    Continue,
    /// Leave the shell.
    Exit,
}

/// What a role tells the loop about its commands.
pub struct ShellSpec {
    /// `server` or `peer`: the prompt and the history file name.
    pub role: &'static str,
    /// Every command line prefix Tab can complete, e.g. `list files`.
    pub commands: &'static [&'static str],
    /// Commands after which Tab completes file paths.
    pub path_commands: &'static [&'static str],
}

/// A sender that prints above the prompt while the shell runs.
pub fn printer() -> (ExternalPrinter<String>, SyncSender<String>) {
    let printer = ExternalPrinter::new(PRINTER_QUEUE);
    let sender = printer.sender();
    (printer, sender)
}

/// Whether clap refused the first word itself (not a sub-command of a known command).
fn is_unknown_command(err: &clap::Error, first: &str) -> bool {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    err.kind() == ErrorKind::InvalidSubcommand
        && matches!(err.get(ContextKind::InvalidSubcommand), Some(ContextValue::String(s)) if s == first)
}

/// The first word of each command, for error messages.
fn command_names(spec: &ShellSpec) -> String {
    let mut names: Vec<&str> = spec
        .commands
        .iter()
        .map(|c| c.split(' ').next().unwrap_or(c))
        .collect();
    names.dedup();
    names.join(", ")
}

fn history_path(role: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("P2P_HISTORY_FILE") {
        return Some(PathBuf::from(path));
    }
    dirs::data_dir().map(|d| d.join("p2p-transfer").join(format!("{role}-history.txt")))
}

/// Runs the loop on a thread of its own (reedline blocks), routing logs above its prompt;
/// the receiver fires when the shell ends. The thread is not joined: if the process must stop
/// while the shell waits for input, it exits with it.
pub fn spawn<C: Parser + 'static>(
    spec: &'static ShellSpec,
    words: Option<Words>,
    handle: impl FnMut(C) -> Flow + Send + 'static,
) -> tokio::sync::oneshot::Receiver<std::io::Result<()>> {
    let (printer, sender) = printer();
    logging::route_to_shell(sender);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(spec, printer, words, handle));
    });
    rx
}

/// Runs the loop until `exit`, Ctrl-D, or a command returning [`Flow::Exit`]. Blocks the
/// calling thread: run it on a thread of its own.
pub fn run<C: Parser>(
    spec: &ShellSpec,
    printer: ExternalPrinter<String>,
    words: Option<Words>,
    mut handle: impl FnMut(C) -> Flow,
) -> std::io::Result<()> {
    let mut keybindings = default_emacs_keybindings();
    keybindings.add_binding(
        KeyModifiers::NONE,
        KeyCode::Tab,
        ReedlineEvent::UntilFound(vec![
            ReedlineEvent::Menu("completion_menu".to_owned()),
            ReedlineEvent::MenuNext,
        ]),
    );
    let menu = ColumnarMenu::default().with_name("completion_menu");
    let mut editor = Reedline::create()
        .with_completer(Box::new(ShellCompleter::new(
            spec.commands,
            spec.path_commands,
            words,
        )))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(menu)))
        .with_quick_completions(true)
        .with_partial_completions(true)
        .with_edit_mode(Box::new(Emacs::new(keybindings)))
        .with_external_printer(printer);
    if let Some(path) = history_path(spec.role) {
        match FileBackedHistory::with_file(HISTORY_SIZE, path.clone()) {
            Ok(history) => editor = editor.with_history(Box::new(history)),
            Err(err) => eprintln!("note: history not saved ({}: {err})", path.display()),
        }
    }
    let prompt = DefaultPrompt::new(
        DefaultPromptSegment::Basic(format!("p2p-{}", spec.role)),
        DefaultPromptSegment::Empty,
    );
    println!("type 'help' for commands, 'exit' or Ctrl-D to leave");
    loop {
        match editor.read_line(&prompt)? {
            Signal::Success(line) => {
                let Some(words) = shlex::split(&line) else {
                    println!("error: unbalanced quotes");
                    continue;
                };
                if words.is_empty() {
                    continue;
                }
                let first = words[0].clone();
                match C::try_parse_from(words) {
                    Ok(command) => {
                        if handle(command) == Flow::Exit {
                            break;
                        }
                    }
                    Err(err) if is_unknown_command(&err, &first) => {
                        println!(
                            "error: unknown command '{first}'; commands: {}",
                            command_names(spec)
                        );
                    }
                    // Help and usage errors, as plain text (no colour codes in transcripts).
                    Err(err) => print!("{}", err.render()),
                }
            }
            // Ctrl-C: reedline already cleared the line.
            Signal::CtrlC => {}
            // Ctrl-D: as `exit` (which may ask first).
            Signal::CtrlD => {
                let stay = C::try_parse_from(["exit"])
                    .is_ok_and(|command| handle(command) == Flow::Continue);
                if !stay {
                    break;
                }
            }
            _ => {}
        }
    }
    logging::route_to_stderr();
    Ok(())
}
