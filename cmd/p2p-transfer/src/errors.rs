//! Errors as a person reads them: ONE line saying what failed, why, and, where the cause is
//! one we know, what to try. `main` prints every command's error with [`one_line`]; the
//! shells print their commands' errors with it too.
//!
//! An error chain is its contexts and causes joined by `: `, as anyhow's `{:#}` does, with
//! two repairs: a part already said earlier in the line is left out (a context that quotes
//! its cause, a library that repeats the OS error), and the OS's error number (`(os error
//! 111)`) goes. The text is shown escaped: it may quote the network (an index's message, a
//! file name) and must stay one line.

use std::io::ErrorKind;

use p2p_peer::PeerError;
use p2p_protocol::{ProtocolError, printable};
use p2p_storage::StorageError;

/// What to try, for causes a person can do something about: `(the OS error's kind, text the
/// line must also hold, hint)`. The cause is the kind of an OS error in the chain (never its
/// English text, nor text that came over the network); the other text is this program's own
/// wording. The first that matches wins; none is added if the line already says what to do
/// (it has a `;`-clause of its own after the cause).
const HINTS: &[(ErrorKind, &str, &str)] = &[
    (
        ErrorKind::AddrInUse,
        "",
        "another program (another p2p-transfer?) is using that address: stop it, pick another \
         port, or give port 0 to let the system choose one",
    ),
    (
        ErrorKind::ConnectionRefused,
        "index server",
        "is the index server running there (`p2p-transfer server`)? Check the address, or find \
         one on the network with --auto-discover",
    ),
    (
        ErrorKind::ConnectionRefused,
        "",
        "nothing listens at that address: is the peer running, and is the address right?",
    ),
    (
        // EACCES and EPERM alike.
        ErrorKind::PermissionDenied,
        "",
        "this user may not use that path: check its owner and mode (ls -ld), or choose another \
         place",
    ),
    (
        ErrorKind::ReadOnlyFilesystem,
        "",
        "that file system is mounted read-only: choose a folder elsewhere",
    ),
    (
        ErrorKind::NetworkUnreachable,
        "",
        "this machine has no route to that address: check the address and the network",
    ),
    (
        ErrorKind::HostUnreachable,
        "",
        "this machine has no route to that address: check the address and the network",
    ),
];

/// The OS error behind `err`, if one is in its chain: as a cause (`source()`), or inside the
/// errors of this workspace that say their cause in their own text instead.
fn os_error(err: &anyhow::Error) -> Option<&std::io::Error> {
    err.chain().find_map(|e| {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        if let Some(p) = e.downcast_ref::<ProtocolError>() {
            return protocol_io(p);
        }
        if let Some(s) = e.downcast_ref::<StorageError>() {
            return storage_io(s);
        }
        match e.downcast_ref::<PeerError>()? {
            PeerError::IndexUnreachable { cause, .. }
            | PeerError::PeerUnreachable { cause, .. } => protocol_io(cause),
            PeerError::Listen { cause, .. } => Some(cause),
            PeerError::Storage(s) => storage_io(s),
            _ => None,
        }
    })
}

fn protocol_io(err: &ProtocolError) -> Option<&std::io::Error> {
    match err {
        ProtocolError::Io(io) => Some(io),
        _ => None,
    }
}

fn storage_io(err: &StorageError) -> Option<&std::io::Error> {
    match err {
        StorageError::Io { cause, .. } => Some(cause),
        _ => None,
    }
}

/// `err` as one line (without the `error: ` prefix).
pub fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err.chain().map(ToString::to_string).collect();
    let line = join_once(&parts);
    printable(&with_hint(line, os_error(err))).to_string()
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

/// `line`, with what to try appended if its cause (the OS error `os`) is one of [`HINTS`] and
/// it does not say already.
fn with_hint(line: String, os: Option<&std::io::Error>) -> String {
    let Some(os) = os else {
        return line;
    };
    let Some((_, _, hint)) = HINTS
        .iter()
        .find(|(kind, also, _)| *kind == os.kind() && line.contains(also))
    else {
        return line;
    };
    // Advice already given with the cause or after it (the library's own "...; do this").
    let cause = strip_os_error(&os.to_string());
    let after = &line[line.find(&cause).unwrap_or(0)..];
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

    /// An OS error of `kind` (as errno `code`) under the contexts `parts`, outermost first.
    fn os_chain(code: i32, parts: &[&str]) -> anyhow::Error {
        let mut err = anyhow::Error::new(std::io::Error::from_raw_os_error(code));
        for part in parts.iter().rev() {
            err = err.context(part.to_string());
        }
        err
    }

    #[test]
    fn hints_follow_the_os_error_never_its_text() {
        // ECONNREFUSED, inside the workspace's own wrappers (their cause is in their text).
        let refused = std::io::Error::from_raw_os_error(111);
        let err = anyhow::Error::new(PeerError::PeerUnreachable {
            addr: "127.0.0.1:9".parse().unwrap(),
            cause: ProtocolError::Io(refused),
        });
        assert!(
            one_line(&err).ends_with(
                "; nothing listens at that address: is the peer running, and is the address right?"
            ),
            "{}",
            one_line(&err)
        );
        // EPERM and EACCES are both "this user may not".
        for code in [1, 13] {
            let line = one_line(&os_chain(code, &["cannot open /x"]));
            assert!(line.contains("; this user may not use that path"), "{line}");
        }
        // The same words from elsewhere (an index's message, a file name) are no OS error.
        let quoted = chain(&["the index said: Permission denied"]);
        assert_eq!(one_line(&quoted), "the index said: Permission denied");
    }

    #[test]
    fn a_cause_said_twice_is_said_once() {
        let err = os_chain(
            111,
            &[
                "connection I/O failed: Connection refused (os error 111)",
                "connection I/O failed: Connection refused (os error 111)",
            ],
        );
        assert_eq!(
            one_line(&err),
            "connection I/O failed: Connection refused; nothing listens at that address: is the \
             peer running, and is the address right?"
        );
    }

    #[test]
    fn contexts_lead_and_hints_follow() {
        let err = os_chain(
            111,
            &[
                "cannot search for \"x\"",
                "cannot reach the index server at 127.0.0.1:9: connection I/O failed",
            ],
        );
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
        let os = std::io::Error::new(
            ErrorKind::PermissionDenied,
            "Permission denied; run it as its owner",
        );
        let err = anyhow::Error::new(os).context("cannot open x");
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
