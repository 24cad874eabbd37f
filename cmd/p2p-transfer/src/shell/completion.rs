//! Tab completion: command names (including two-word ones like `list files`), file paths
//! after the commands that take one, and the words a role knows after its commands (ids after
//! `download` and `unregister`, peers after `msg`).

use std::path::Path;
use std::sync::Arc;

use reedline::{Completer, CompletionResult, Span, Suggestion};

/// The words Tab may complete after a command, each with a description (a file's name, say):
/// asked with the command's name when Tab is pressed after it; an empty list for any other.
pub type Words = Arc<dyn Fn(&str) -> Vec<(String, String)> + Send + Sync>;

pub struct ShellCompleter {
    commands: &'static [&'static str],
    path_commands: &'static [&'static str],
    words: Option<Words>,
}

impl ShellCompleter {
    pub fn new(
        commands: &'static [&'static str],
        path_commands: &'static [&'static str],
        words: Option<Words>,
    ) -> Self {
        Self {
            commands,
            path_commands,
            words,
        }
    }

    fn suggestions(&self, line: &str, pos: usize) -> Vec<Suggestion> {
        let before = &line[..pos];
        let trimmed = before.trim_start();
        let lead = before.len() - trimmed.len();
        // The first argument of a command with words of its own (`download 3f<Tab>`).
        if let (Some(words), Some((command, arg))) = (&self.words, trimmed.split_once(' '))
            && !arg.contains(' ')
        {
            let known = words(command);
            if !known.is_empty() {
                let start = pos - arg.len();
                let mut out: Vec<Suggestion> = known
                    .into_iter()
                    .filter(|(word, _)| word.starts_with(arg) && word != arg)
                    .map(|(word, about)| Suggestion {
                        description: (!about.is_empty()).then_some(about),
                        ..suggestion(word, Span::new(start, pos), true)
                    })
                    .collect();
                out.sort_by(|a, b| a.value.cmp(&b.value));
                out.dedup_by(|a, b| a.value == b.value);
                return out;
            }
        }
        if let Some(command) = self.path_commands.iter().find(|c| {
            trimmed
                .strip_prefix(**c)
                .is_some_and(|rest| rest.starts_with(' '))
        }) {
            let arg_start = lead + command.len() + 1;
            let word_start =
                last_unescaped_space(&before[arg_start..]).map_or(arg_start, |i| arg_start + i + 1);
            return complete_path(&before[word_start..], Span::new(word_start, pos));
        }
        self.commands
            .iter()
            .filter(|c| c.starts_with(trimmed) && **c != trimmed)
            .map(|c| suggestion(c.to_string(), Span::new(lead, pos), true))
            .collect()
    }
}

impl Completer for ShellCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> CompletionResult {
        CompletionResult::fresh(self.suggestions(line, pos))
    }
}

/// Index of the last space not escaped by a backslash.
fn last_unescaped_space(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len())
        .rev()
        .find(|&i| bytes[i] == b' ' && (i == 0 || bytes[i - 1] != b'\\'))
}

/// Paths are typed with spaces escaped (`my\ file.txt`), which the shell's word splitting
/// undoes.
fn escape(path: &str) -> String {
    path.replace('\\', "\\\\").replace(' ', "\\ ")
}

fn unescape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn suggestion(value: String, span: Span, append_whitespace: bool) -> Suggestion {
    Suggestion {
        value,
        display_override: None,
        description: None,
        style: None,
        extra: None,
        span,
        append_whitespace,
        match_indices: None,
    }
}

/// Entries of the folder `word` points into whose names start with its last part. Folders
/// get a trailing `/` so Tab can continue into them.
fn complete_path(word: &str, span: Span) -> Vec<Suggestion> {
    let word = unescape(word);
    let word = word.as_str();
    let (dir, prefix) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word),
    };
    let expanded = if let Some(rest) = dir.strip_prefix("~/") {
        dirs::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| Path::new(dir).to_owned())
    } else if dir.is_empty() {
        Path::new(".").to_owned()
    } else {
        Path::new(dir).to_owned()
    };
    let Ok(entries) = std::fs::read_dir(&expanded) else {
        return Vec::new();
    };
    let mut out: Vec<Suggestion> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let value = if is_dir {
                format!("{dir}{name}/")
            } else {
                format!("{dir}{name}")
            };
            let value = escape(&value);
            Some(suggestion(value, span, !is_dir))
        })
        .collect();
    out.sort_by(|a, b| a.value.cmp(&b.value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMANDS: &[&str] = &["status", "list files", "list peers", "register", "exit"];

    #[test]
    fn commands_and_paths_complete() {
        let c = ShellCompleter::new(COMMANDS, &["register"], None);
        let values = |line: &str| -> Vec<String> {
            c.suggestions(line, line.len())
                .into_iter()
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(values("st"), ["status"]);
        assert_eq!(values("list "), ["list files", "list peers"]);
        assert!(values("zz").is_empty());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpha.bin"), b"").unwrap();
        std::fs::create_dir(dir.path().join("albums")).unwrap();
        let base = format!("{}/", dir.path().display());
        assert_eq!(
            values(&format!("register {base}al")),
            [format!("{base}albums/"), format!("{base}alpha.bin")]
        );
        std::fs::write(dir.path().join("my notes.txt"), b"").unwrap();
        let escaped = format!("{base}my\\ notes.txt");
        assert_eq!(values(&format!("register {base}my")), vec![escaped.clone()]);
        assert_eq!(
            values(&format!("register {base}my\\ n")),
            vec![escaped.clone()]
        );
        let words = shlex::split(&format!("register {escaped}")).unwrap();
        assert_eq!(words[1], format!("{base}my notes.txt"));
    }

    #[test]
    fn ids_and_peers_complete_after_their_commands() {
        let words: Words = Arc::new(|command: &str| match command {
            "download" => vec![
                ("3f2a9c11".to_owned(), "holiday.mkv".to_owned()),
                ("3f77aa00".to_owned(), "notes.pdf".to_owned()),
                ("b0b0b0b0".to_owned(), "other".to_owned()),
            ],
            "msg" => vec![("127.0.0.1:8001".to_owned(), String::new())],
            _ => Vec::new(),
        });
        let c = ShellCompleter::new(&["download", "msg", "register"], &["register"], Some(words));
        let values = |line: &str| -> Vec<String> {
            c.suggestions(line, line.len())
                .into_iter()
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(values("download 3f"), ["3f2a9c11", "3f77aa00"]);
        assert_eq!(values("download 3f2"), ["3f2a9c11"]);
        assert_eq!(values("msg 127"), ["127.0.0.1:8001"]);
        // Only the first argument; and commands still complete.
        assert!(values("msg 127.0.0.1:8001 he").is_empty());
        assert_eq!(values("dow"), ["download"]);
        let described = c.suggestions("download 3f2", 12);
        assert_eq!(described[0].description.as_deref(), Some("holiday.mkv"));
    }
}
