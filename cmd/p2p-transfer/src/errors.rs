//! Errors as a person reads them: ONE line saying what failed, why, and, where the cause is
//! one we know, what to try. `main` prints every command's error with [`one_line`]; the
//! shells print their commands' errors with it too.
//!
//! An error chain is its contexts and causes joined by `: `, as anyhow's `{:#}` does, with
//! two repairs: a part already said earlier in the line is left out (a context that quotes
//! its cause, a library that repeats the OS error), and the OS's error number (`(os error
//! 111)`) goes. The text is shown escaped: it may quote the network (an index's message, a
//! file name) and must stay one line.

use p2p_protocol::printable;

/// What to try, for causes a person can do something about: `(cause in the line, also
/// needed, hint)`. The first whose texts both appear wins; none is added if the line already
/// says what to do (it has a `;`-clause of its own after the cause).
const HINTS: &[(&str, &str, &str)] = &[
    (
        "Address already in use",
        "",
        "another program (another p2p-transfer?) is using that address: stop it, pick another \
         port, or give port 0 to let the system choose one",
    ),
    (
        "Connection refused",
        "index server",
        "is the index server running there (`p2p-transfer server`)? Check the address, or find \
         one on the network with --auto-discover",
    ),
    (
        "Connection refused",
        "",
        "nothing listens at that address: is the peer running, and is the address right?",
    ),
    (
        "Permission denied",
        "",
        "this user may not use that path: check its owner and mode (ls -ld), or choose another \
         place",
    ),
    (
        "Operation not permitted",
        "",
        "this user may not use that path: check its owner and mode (ls -ld), or choose another \
         place",
    ),
    (
        "Read-only file system",
        "",
        "that file system is mounted read-only: choose a folder elsewhere",
    ),
    (
        "Network is unreachable",
        "",
        "this machine has no route to that address: check the address and the network",
    ),
    (
        "No route to host",
        "",
        "this machine has no route to that address: check the address and the network",
    ),
];

/// `err` as one line (without the `error: ` prefix).
pub fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err.chain().map(ToString::to_string).collect();
    let line = join_once(&parts);
    printable(&with_hint(line)).to_string()
}

/// The parts joined by `: `, each `: `-separated piece left out if the line already has it,
/// and `(os error N)` dropped.
fn join_once(parts: &[String]) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for part in parts {
        for piece in part.split(": ") {
            let piece = strip_os_error(piece);
            if piece.is_empty() || pieces.contains(&piece) {
                continue;
            }
            pieces.push(piece);
        }
    }
    pieces.join(": ")
}

/// `Connection refused (os error 111)` → `Connection refused`.
fn strip_os_error(piece: &str) -> String {
    match piece.find(" (os error ") {
        Some(at) if piece.ends_with(')') => {
            let (text, rest) = piece.split_at(at);
            let tail = &rest[" (os error ".len()..rest.len() - 1];
            if tail.chars().all(|c| c.is_ascii_digit()) {
                return text.to_owned();
            }
            piece.to_owned()
        }
        _ => piece.trim().to_owned(),
    }
}

/// `line`, with what to try appended if its cause is one of [`HINTS`] and it does not say
/// already.
fn with_hint(line: String) -> String {
    let Some((cause, _, hint)) = HINTS
        .iter()
        .find(|(cause, also, _)| line.contains(cause) && line.contains(also))
    else {
        return line;
    };
    // Advice already given after the cause (the library's own "...; do this").
    let after = &line[line.find(cause).map_or(0, |at| at + cause.len())..];
    if after.contains(';') {
        return line;
    }
    format!("{line}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(parts: &[&str]) -> anyhow::Error {
        let mut parts = parts.iter().rev();
        let mut err = anyhow::anyhow!(parts.next().unwrap().to_string());
        for part in parts {
            err = err.context(part.to_string());
        }
        err
    }

    #[test]
    fn a_cause_said_twice_is_said_once() {
        let err = chain(&[
            "connection I/O failed: Connection refused (os error 111)",
            "connection I/O failed: Connection refused (os error 111)",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            one_line(&err),
            "connection I/O failed: Connection refused; nothing listens at that address: is the \
             peer running, and is the address right?"
        );
    }

    #[test]
    fn contexts_lead_and_hints_follow() {
        let err = chain(&[
            "cannot search for \"x\"",
            "cannot reach the index server at 127.0.0.1:9: connection I/O failed: Connection \
             refused (os error 111)",
        ]);
        let line = one_line(&err);
        assert!(
            line.starts_with(
                "cannot search for \"x\": cannot reach the index server at 127.0.0.1:9: \
                 connection I/O failed: Connection refused; is the index server running there"
            ),
            "{line}"
        );
        assert!(line.contains("--auto-discover"), "{line}");
    }

    #[test]
    fn advice_already_given_is_not_doubled() {
        let err = chain(&["cannot open x: Permission denied; run it as its owner"]);
        assert_eq!(
            one_line(&err),
            "cannot open x: Permission denied; run it as its owner"
        );
    }

    #[test]
    fn the_line_stays_one_line_and_escaped() {
        let err = chain(&["cannot share a\nb", "index said \x1b[2J"]);
        let line = one_line(&err);
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line:?}");
    }

    #[test]
    fn other_numbers_in_parentheses_stay() {
        assert_eq!(strip_os_error("x (os error 2)"), "x");
        assert_eq!(strip_os_error("x (os error two)"), "x (os error two)");
        assert_eq!(strip_os_error("x (limit_exceeded)"), "x (limit_exceeded)");
    }
}
