//! Text from the network, made safe to show: [`printable`] and [`RemoteText`].
//!
//! Error messages, file names in `Files` and `Found` replies, peer messages and manifest files
//! are written by whoever is on the other side. Written to a terminal raw, an escape sequence
//! in them can set the window title, clear the screen, move the cursor, or (OSC 52) reach the
//! clipboard, and a bidirectional override can make `exe.pdf` read as `fdp.exe`. So every such
//! string passes [`printable`] on its way to a terminal or a log: each character that can
//! steer the terminal or hide what the text says is shown as `\u{XX}` (its code point in hex),
//! and everything else, accents, CJK, emoji, is kept as it is.
//!
//! Escaped, in full:
//! * control characters: C0 (`U+0000`–`U+001F`, so also newline and tab: a message is one
//!   line), DEL (`U+007F`) and C1 (`U+0080`–`U+009F`, among them the one-byte CSI `U+009B`);
//! * the line and paragraph separators `U+2028` and `U+2029`;
//! * format characters (Unicode category Cf): bidirectional marks, embeddings, overrides and
//!   isolates (`U+200E`, `U+200F`, `U+202A`–`U+202E`, `U+2066`–`U+2069`, `U+061C`), zero-width
//!   space, word joiner, invisible operators, the byte-order mark, soft hyphen, interlinear
//!   annotation and tag characters. Zero-width joiner and non-joiner (`U+200D`, `U+200C`) are
//!   kept: emoji sequences and several scripts need them.
//!
//! The output holds only characters that are kept as they are, plus `\`, `u`, braces and hex
//! digits, so escaping twice changes nothing. A backslash in the input is not escaped: the
//! output is for people to read, not to be parsed back.

use std::fmt::{self, Write};

/// `text` with every character that could steer a terminal or hide what the text says shown
/// as `\u{XX}`; see the [module docs](self) for the exact set.
///
/// ```
/// use p2p_protocol::text::printable;
/// assert_eq!(printable("a\x1b]0;pwned\x07b").to_string(), r"a\u{1b}]0;pwned\u{7}b");
/// assert_eq!(printable("exe\u{202e}.pdf").to_string(), r"exe\u{202e}.pdf");
/// assert_eq!(printable("café 日本 🎉").to_string(), "café 日本 🎉");
/// ```
pub fn printable(text: &str) -> Printable<'_> {
    Printable(text)
}

/// [`printable`]'s result: formats the escaped text without allocating. Width and alignment
/// (`{:<20}`) apply to the escaped text.
#[derive(Clone, Copy, Debug)]
pub struct Printable<'a>(&'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_some() {
            // Padding needs the escaped length.
            let mut escaped = String::with_capacity(self.0.len());
            write_escaped(&mut escaped, self.0)?;
            return f.pad(&escaped);
        }
        write_escaped(f, self.0)
    }
}

fn write_escaped(out: &mut impl Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(must_escape) {
        out.write_str(&rest[..at])?;
        let c = rest[at..]
            .chars()
            .next()
            .expect("find returned a char boundary");
        write!(out, "\\u{{{:x}}}", u32::from(c))?;
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// Whether `c` is shown escaped.
fn must_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_hidden_format(c)
}

/// Unicode category Cf (format characters, as of Unicode 15.1), minus ZWNJ and ZWJ.
fn is_hidden_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'
            | '\u{200e}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// A string that arrived from the network (an `Error` reply's `message`, say), kept exactly
/// as sent. It shows itself ([`Display`](fmt::Display) and [`Debug`](fmt::Debug)) only through
/// [`printable`], so it can sit in an error, a log field or a `format!` without reaching a
/// terminal raw; [`RemoteText::as_raw`] is there for code that compares it.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RemoteText(String);

impl RemoteText {
    /// The text exactly as it arrived. Never print this.
    pub fn as_raw(&self) -> &str {
        &self.0
    }
}

impl From<String> for RemoteText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for RemoteText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// Compares the text as it arrived.
impl PartialEq<str> for RemoteText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RemoteText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for RemoteText {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// Most characters of a [`RemoteText`] that are shown; the rest is summarised as
/// `… (N more bytes)`, so a hostile error message of two megabytes can't flood a terminal
/// or a log. Every message of this implementation is far shorter.
pub const MAX_SHOWN_CHARS: usize = 1000;

impl RemoteText {
    /// The part that is shown, and how many bytes are left out.
    fn shown(&self) -> (&str, usize) {
        match self.0.char_indices().nth(MAX_SHOWN_CHARS) {
            Some((cut, _)) => (&self.0[..cut], self.0.len() - cut),
            None => (&self.0, 0),
        }
    }
}

impl fmt::Display for RemoteText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown() {
            (all, 0) => printable(all).fmt(f),
            (shown, left) => write!(f, "{}… ({left} more bytes)", printable(shown)),
        }
    }
}

impl fmt::Debug for RemoteText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown() {
            (all, 0) => write!(f, "\"{}\"", printable(all)),
            (shown, left) => write!(f, "\"{}\"… ({left} more bytes)", printable(shown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        printable(text).to_string()
    }

    #[test]
    fn escape_sequences_are_shown_not_run() {
        // OSC: set the window title, ended by BEL or by ST (ESC \).
        assert_eq!(shown("a\x1b]0;pwned\x07b"), r"a\u{1b}]0;pwned\u{7}b");
        assert_eq!(shown("\x1b]0;x\x1b\\"), r"\u{1b}]0;x\u{1b}\");
        // CSI: clear the screen, colours.
        assert_eq!(shown("\x1b[2J\x1b[31mred"), r"\u{1b}[2J\u{1b}[31mred");
        // C1: the one-character CSI and OSC, NEL.
        assert_eq!(shown("\u{9b}2J\u{9d}0;t\u{85}"), r"\u{9b}2J\u{9d}0;t\u{85}");
        // DEL, NUL, and line breaks: one line stays one line.
        assert_eq!(
            shown("a\x7f\0b\r\nc\td\u{2028}"),
            r"a\u{7f}\u{0}b\u{d}\u{a}c\u{9}d\u{2028}"
        );
    }

    #[test]
    fn text_that_hides_or_reorders_itself_is_shown() {
        // RIGHT-TO-LEFT OVERRIDE makes "invoice\u{202e}fdp.exe" read "invoiceexe.pdf".
        assert_eq!(shown("invoice\u{202e}fdp.exe"), r"invoice\u{202e}fdp.exe");
        for c in [
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{61c}',
            '\u{200b}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{e0041}',
        ] {
            assert_eq!(shown(&c.to_string()), format!("\\u{{{:x}}}", u32::from(c)));
        }
    }

    #[test]
    fn ordinary_unicode_is_kept() {
        for text in [
            "report é.pdf",
            "日本語のファイル.txt",
            "Привет мир",
            "مرحبا.txt",
            "🎉 party 👨\u{200d}👩\u{200d}👧.mp4",
            "e\u{301}",
            "a\u{fe0f}",
            "\u{a0}non-breaking and\u{3000}ideographic spaces",
            r"back\slash and {braces}",
            "",
        ] {
            assert_eq!(shown(text), text);
        }
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = shown("x\x1b[2J\u{9b}\u{202e}y 日本");
        assert_eq!(shown(&once), once);
    }

    #[test]
    fn width_applies_to_the_escaped_text() {
        assert_eq!(format!("[{:<8}]", printable("a\x07")), r"[a\u{7}  ]");
        assert_eq!(format!("[{:>4}]", printable("ab")), "[  ab]");
    }

    #[test]
    fn remote_text_shows_itself_escaped_and_keeps_the_original() {
        let text = RemoteText::from("no\x1b[2J");
        assert_eq!(text.to_string(), r"no\u{1b}[2J");
        assert_eq!(format!("{text:?}"), r#""no\u{1b}[2J""#);
        assert_eq!(text.as_raw(), "no\x1b[2J");
        assert_eq!(text, "no\x1b[2J");
    }

    #[test]
    fn a_flood_of_remote_text_is_cut_short() {
        let flood = RemoteText::from("\u{1b}[2J".repeat(500_000));
        let shown = flood.to_string();
        assert!(
            shown.len() < 10 * MAX_SHOWN_CHARS,
            "{} bytes shown",
            shown.len()
        );
        assert!(shown.ends_with(&format!("… ({} more bytes)", 2_000_000 - MAX_SHOWN_CHARS)));
        assert!(!shown.contains('\u{1b}'));
        let short = RemoteText::from("no such file");
        assert_eq!(short.to_string(), "no such file");
        assert_eq!(format!("{short:?}"), "\"no such file\"");
    }
}
