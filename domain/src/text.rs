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

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo of
/// it (at most a third of its length, and at least one edit): for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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

    #[test]
    fn closest_suggests_typos_only() {
        let ids = ["wohngeld-nrw", "gewerbe-nrw", "elfe-hb"];
        assert_eq!(closest("wohngeld-nwr", ids), Some("wohngeld-nrw"));
        assert_eq!(closest("gewerbe", ids), None, "too far to be a typo");
        assert_eq!(closest("xyz", ids), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
