//! Free text from outside (titles, descriptions, reasons, comments, release notes): bounded
//! in length and free of characters that corrupt or disguise what a reader sees. A NUL or
//! an escape sequence breaks terminals and CSV exports; bidirectional overrides make a
//! comment display differently from what it says.

use crate::error::{Error, Result};

/// Whether line breaks and tabs are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// One line: a title or a name.
    Single,
    /// Paragraphs: `\n`, `\r` and `\t` are allowed.
    Multi,
}

/// Checks `s` for `field`: at most `max_chars` characters, no control characters (except
/// line breaks and tabs in [`Lines::Multi`] text) and no bidirectional overrides.
pub fn check(field: &'static str, s: &str, max_chars: usize, lines: Lines) -> Result<()> {
    let n = s.chars().count();
    if n > max_chars {
        return Err(Error::invalid(field, format!("is {n} characters, more than the limit of {max_chars}")));
    }
    let allowed = |c: char| lines == Lines::Multi && matches!(c, '\n' | '\r' | '\t');
    if let Some((i, c)) = s.chars().enumerate().find(|&(_, c)| (c.is_control() && !allowed(c)) || is_bidi_control(c)) {
        let what = if is_bidi_control(c) { "a bidirectional override" } else { "a control character" };
        return Err(Error::invalid(field, format!("contains {what} (U+{:04X}) at character {}", c as u32, i + 1)));
    }
    Ok(())
}

/// The explicit embedding, override and isolate controls (Unicode TR9), used to make text
/// display in an order other than the one it is stored in.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_plain_text_passes_and_hostile_text_is_named() {
        assert!(check("title", "Wohngeld – Antrag (Änderung)", 200, Lines::Single).is_ok());
        assert!(check("reason", "Zeile 1\nZeile 2\tEnde\r\n", 2000, Lines::Multi).is_ok());
        let e = check("title", "Zeile 1\nZeile 2", 200, Lines::Single).unwrap_err().to_string();
        assert!(e.contains("control character (U+000A) at character 8"), "{e}");
        let e = check("comment", "gut\u{0}", 2000, Lines::Multi).unwrap_err().to_string();
        assert!(e.contains("U+0000"), "{e}");
        let e = check("comment", "gut \u{202E}livE", 2000, Lines::Multi).unwrap_err().to_string();
        assert!(e.contains("bidirectional override (U+202E)"), "{e}");
        let e = check("title", &"x".repeat(201), 200, Lines::Single).unwrap_err().to_string();
        assert!(e.contains("201 characters, more than the limit of 200"), "{e}");
        assert!(check("title", &"ä".repeat(200), 200, Lines::Single).is_ok(), "characters, not bytes");
    }
}
