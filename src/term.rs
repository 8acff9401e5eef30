//! Text from an image, made safe for a terminal.
//!
//! File names and contents inside an image are chosen by whoever made it:
//! an ESC sequence in a name could rewrite the screen, a newline could fake
//! a line of `verify` output. Human-readable output passes every such
//! string through [`escape`]; `--json` output stays exact (JSON escapes
//! control characters itself).

use std::fmt::Write;

/// `s` with control characters and invisible formatting characters written
/// as escapes, the way GNU `ls --quoting-style=escape` (`ls -b`) shows
/// them: `\n`, `\t`, `\a`, `\033` (octal) for C0 controls and DEL,
/// `\u{202e}` for C1 controls and Unicode line separators and direction
/// overrides, and `\\` for a backslash. Everything else is unchanged.
pub(crate) fn escape(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\{:03o}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped line by line: for reports whose lines are built from
/// single-line fields, the line breaks stay and nothing else acts on the
/// terminal.
pub(crate) fn escape_lines(s: &str) -> String {
    s.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// `s` on one line with only what a terminal would act on escaped
/// (controls, line breaks, invisible formatting); backslashes are kept as
/// they are. The last line of defence for error messages, whose
/// image-derived parts were already escaped with [`escape`] where they
/// were formed.
pub(crate) fn defuse(s: &str) -> String {
    s.split('\\').map(escape).collect::<Vec<_>>().join("\\")
}

/// Characters a terminal would act on or hide rather than show.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn defuse_keeps_backslashes_and_lines() {
        assert_eq!(super::defuse("a\\033b\n\x1b[31mc"), "a\\033b\\n\\033[31mc");
        assert_eq!(super::escape_lines("x\ny\x07"), "x\ny\\a");
    }

    #[test]
    fn plain_names_are_unchanged() {
        assert_eq!(escape("ssh.service"), "ssh.service");
        assert_eq!(escape("café ü"), "café ü");
        assert_eq!(escape("a\\b"), "a\\\\b", "a backslash is doubled");
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b[2Jx"), "\\033[2Jx");
        assert_eq!(escape("bell\x07"), "bell\\a");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape("\u{85}"), "\\u{85}");
        // A name with a real backslash-n and one with a newline differ.
        assert_ne!(escape("a\\nb"), escape("a\nb"));
    }
}
