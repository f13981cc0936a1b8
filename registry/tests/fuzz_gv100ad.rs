//! Property-based fuzzing of the reference data parsers: the fixed-width GV100AD parser and the
//! OZG and LeiKa CSV parsers. Nothing may panic, whatever the input; an accepted GV100AD yields
//! only consistent Länder, Kreise and Gemeinden; real data that was not mutated still parses.
//!
//! Runs 1024 cases per property by default (256 for the truncation sweep); `EFA_FUZZ_CASES=20000 cargo test --release -p
//! efa-registry --test fuzz_gv100ad -- --nocapture` runs longer and prints the executions per
//! property. A failing case is shrunk, printed and its seed stored in
//! `tests/fuzz_gv100ad.proptest-regressions`, so the next run tries it first.

use efa_registry::import::{self, gv100ad, leika, ozg, Gv100ad, ImportError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Harness

use efa_testkit::fuzz as support;

/// Runs a property with the shared harness; regressions are saved next to this file.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    support::fuzz(file!(), name, default_cases, strategy, test)
}

// ---------------------------------------------------------------------------------------------
// The real GV100AD, split into lines, with each line's Land and Kreis record.

struct Real {
    lines: Vec<&'static str>,
    /// Indices of lines with non-ASCII characters (umlauts), where char and byte offsets differ.
    multibyte: Vec<usize>,
    /// For each line: the nearest Land record before it, and the nearest Kreis record after that.
    parents: Vec<(Option<usize>, Option<usize>)>,
}

fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        let text = import::GV100AD_TEXT.strip_prefix('\u{feff}').unwrap_or(import::GV100AD_TEXT);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let multibyte = (0..lines.len()).filter(|&i| !lines[i].is_ascii()).collect();
        let mut parents = Vec::with_capacity(lines.len());
        let (mut land, mut kreis) = (None, None);
        for (i, line) in lines.iter().enumerate() {
            parents.push((land, kreis));
            match line.get(..2) {
                Some("10") => {
                    land = Some(i);
                    kreis = None;
                }
                Some("40") => kreis = Some(i),
                _ => {}
            }
        }
        Real { lines, multibyte, parents }
    })
}

/// The Land and Kreis records a window starting at `start` needs to stand on its own.
fn header(start: usize) -> Vec<&'static str> {
    let r = real();
    let (land, kreis) = r.parents[start];
    land.into_iter().chain(kreis).map(|i| r.lines[i]).collect()
}

fn record_type(line: &str) -> &str {
    line.get(..2).unwrap_or("")
}

/// Everything an accepted GV100AD must satisfy.
fn check_accepted(gv: &Gv100ad) -> TestCaseResult {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let mut laender = HashSet::new();
    for l in &gv.laender {
        prop_assert!(digits(l.code.as_str(), 2), "{:?}", l.code);
        prop_assert!(!l.name.is_empty() && l.name.trim() == l.name, "{:?}", l.name);
        prop_assert!(laender.insert(l.code.as_str()), "Land {} twice", l.code);
    }
    let mut kreise = HashSet::new();
    for k in &gv.kreise {
        prop_assert!(digits(k.code.as_str(), 5), "{:?}", k.code);
        prop_assert!(!k.name.is_empty() && k.name.trim() == k.name, "{:?}", k.name);
        prop_assert!(laender.contains(&k.code.as_str()[..2]), "Kreis {} without Land", k.code);
        prop_assert!(kreise.insert(k.code.as_str()), "Kreis {} twice", k.code);
    }
    let mut ags = HashSet::new();
    for g in &gv.kommunen {
        let (a, r) = (g.ags.as_str(), g.ars.as_str());
        prop_assert!(digits(a, 8) && digits(r, 12), "{a:?} {r:?}");
        prop_assert!(r[..5] == a[..5] && r[9..] == a[5..], "ARS {r} does not contain AGS {a}");
        prop_assert!(kreise.contains(&a[..5]), "Gemeinde {a} without Kreis");
        prop_assert!(!g.name.is_empty() && g.name.trim() == g.name, "{:?}", g.name);
        prop_assert!(digits(&g.textkennzeichen, 2), "{:?}", g.textkennzeichen);
        prop_assert!(!gv100ad::GEMEINDEFREI.contains(&g.textkennzeichen.as_str()), "{a}: gemeindefrei");
        prop_assert!(ags.insert(a), "Gemeinde {a} twice");
    }
    Ok(())
}

fn check_error(e: &ImportError, lines: usize) -> TestCaseResult {
    match e {
        ImportError::Malformed { file, line, reason } => {
            prop_assert_eq!(*file, import::GV100AD_FILE);
            prop_assert!(*line >= 1 && *line as usize <= lines.max(1), "line {line} of {lines}: {reason}");
            prop_assert!(!reason.is_empty());
        }
        ImportError::Csv { .. } => prop_assert!(false, "GV100AD is not CSV: {e}"),
    }
    Ok(())
}

fn parse_checked(text: &str) -> Result<Option<Gv100ad>, TestCaseError> {
    match gv100ad::parse(text) {
        Ok(gv) => {
            check_accepted(&gv)?;
            Ok(Some(gv))
        }
        Err(e) => {
            check_error(&e, text.split('\n').count())?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Characters that stress a fixed-width parser working in characters: digits and blanks that
/// keep the layout plausible, umlauts and wider characters that shift byte offsets, a BOM,
/// line breaks (`\n` splits a record, `\r` and NEL do not for `str::lines`) and controls.
const CHARS: &[char] = &[
    '0',
    '1',
    '5',
    '6',
    '9',
    ' ',
    'a',
    'Z',
    'ä',
    'Ö',
    'ß',
    'é',
    '€',
    '\u{10348}',
    '𝔘',
    '\u{feff}',
    '\r',
    '\n',
    '\t',
    '\0',
    '\u{85}',
    '\u{2028}',
    '６',
    '٣',
];

#[derive(Clone, Debug)]
enum Edit {
    /// Replace the character at a position.
    Flip(Index, Index, char),
    Insert(Index, Index, char),
    Delete(Index, Index),
    /// Cut the line after a number of characters.
    Truncate(Index, Index),
    /// Repeat a line right after itself (duplicate keys).
    Duplicate(Index),
    /// Drop a line (orphans).
    Drop(Index),
    /// Swap two lines (children before parents).
    Swap(Index, Index),
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![4 => proptest::sample::select(CHARS), 1 => any::<char>()]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<Index>(), any::<Index>(), any_char()).prop_map(|(l, p, c)| Edit::Flip(l, p, c)),
        4 => (any::<Index>(), any::<Index>(), any_char()).prop_map(|(l, p, c)| Edit::Insert(l, p, c)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(l, p)| Edit::Delete(l, p)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(l, p)| Edit::Truncate(l, p)),
        1 => any::<Index>().prop_map(Edit::Duplicate),
        1 => any::<Index>().prop_map(Edit::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

fn apply(lines: &mut Vec<String>, edit: &Edit) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match edit {
        Edit::Flip(l, p, c) | Edit::Insert(l, p, c) => {
            let line = &mut lines[l.index(n)];
            let mut chars: Vec<char> = line.chars().collect();
            match edit {
                Edit::Flip(..) if !chars.is_empty() => {
                    let i = p.index(chars.len());
                    chars[i] = *c;
                }
                Edit::Flip(..) => chars.push(*c),
                _ => {
                    let i = p.index(chars.len() + 1);
                    chars.insert(i, *c);
                }
            }
            *line = chars.into_iter().collect();
        }
        Edit::Delete(l, p) => {
            let line = &mut lines[l.index(n)];
            let mut chars: Vec<char> = line.chars().collect();
            if !chars.is_empty() {
                chars.remove(p.index(chars.len()));
            }
            *line = chars.into_iter().collect();
        }
        Edit::Truncate(l, p) => {
            let line = &mut lines[l.index(n)];
            let keep = p.index(line.chars().count() + 1);
            *line = line.chars().take(keep).collect();
        }
        Edit::Duplicate(l) => {
            let i = l.index(n);
            let copy = lines[i].clone();
            lines.insert(i + 1, copy);
        }
        Edit::Drop(l) => {
            lines.remove(l.index(n));
        }
        Edit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
    }
}

/// A window of real lines (with its Land and Kreis records), some edits, and how to join it.
#[derive(Clone, Debug)]
struct WindowCase {
    start: Index,
    len: usize,
    edits: Vec<Edit>,
    crlf: bool,
    bom: bool,
    trailing_blank: bool,
}

fn window_case() -> impl Strategy<Value = WindowCase> {
    (any::<Index>(), 1..40usize, proptest::collection::vec(edit(), 0..6), any::<bool>(), 0..8u8, 0..4u8).prop_map(
        |(start, len, edits, crlf, bom, trailing)| WindowCase {
            start,
            len,
            edits,
            crlf,
            bom: bom == 0,
            trailing_blank: trailing == 0,
        },
    )
}

fn join(lines: &[String], crlf: bool, bom: bool, trailing_blank: bool) -> String {
    let mut text = if bom { String::from('\u{feff}') } else { String::new() };
    text.push_str(&lines.join(if crlf { "\r\n" } else { "\n" }));
    if trailing_blank {
        text.push_str("\n  \r\n\n");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Properties: GV100AD

#[test]
fn fuzz_gv100ad_arbitrary_strings_never_panic() {
    let text = prop_oneof![
        any::<String>(),
        // Record-shaped noise: a type, a date, then digits, blanks and umlauts.
        "((10|20|30|40|50|60|70|６0)[0-9]{0,8}[0-9 aäöüß€\u{feff}\r\t]{0,140}\n?){1,6}",
        proptest::collection::vec(proptest::sample::select(CHARS), 0..300).prop_map(|c| c.into_iter().collect()),
    ];
    fuzz("gv100ad/arbitrary-strings", 1024, text, |text: String| {
        parse_checked(&text)?;
        Ok(())
    });
}

#[test]
fn fuzz_gv100ad_mutated_real_lines() {
    let parsed_clean = AtomicU64::new(0);
    let accepted_edited = AtomicU64::new(0);
    fuzz("gv100ad/mutated-lines", 1024, window_case(), |case| {
        let r = real();
        let start = case.start.index(r.lines.len());
        let end = (start + case.len).min(r.lines.len());
        let mut lines: Vec<String> =
            header(start).into_iter().chain(r.lines[start..end].iter().copied()).map(String::from).collect();
        let expected_kommunen = r.lines[start..end]
            .iter()
            .filter(|l| {
                record_type(l) == "60"
                    && !gv100ad::GEMEINDEFREI.iter().any(|tk| l.chars().skip(122).take(2).eq(tk.chars()))
            })
            .count();
        for e in &case.edits {
            apply(&mut lines, e);
        }
        let text = join(&lines, case.crlf, case.bom, case.trailing_blank);
        let result = parse_checked(&text)?;
        if case.edits.is_empty() {
            // Real data, untouched, must parse.
            prop_assert!(
                result.is_some(),
                "unmutated window {start}..{end} rejected: {:?}",
                gv100ad::parse(&text).err()
            );
            let gv = result.unwrap();
            prop_assert_eq!(gv.kommunen.len(), expected_kommunen);
            parsed_clean.fetch_add(1, Ordering::Relaxed);
        } else if result.is_some() {
            accepted_edited.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    eprintln!(
        "fuzz gv100ad/mutated-lines: {} unmutated windows parsed, {} edited windows accepted",
        parsed_clean.load(Ordering::Relaxed),
        accepted_edited.load(Ordering::Relaxed)
    );
}

#[test]
fn fuzz_gv100ad_truncated_at_every_char_boundary() {
    // Half the cases pick a line with umlauts, where byte and char offsets differ.
    let line = prop_oneof![any::<Index>().prop_map(|i| (i, false)), any::<Index>().prop_map(|i| (i, true))];
    fuzz("gv100ad/truncation", 256, (line, any::<bool>()), |((index, multibyte), crlf)| {
        let r = real();
        let i = if multibyte { r.multibyte[index.index(r.multibyte.len())] } else { index.index(r.lines.len()) };
        let line = r.lines[i];
        let head: Vec<String> = header(i).into_iter().map(String::from).collect();
        let full = {
            let mut l = head.clone();
            l.push(line.to_string());
            join(&l, crlf, false, false)
        };
        prop_assert!(gv100ad::parse(&full).is_ok(), "real line {} rejected: {:?}", i + 1, gv100ad::parse(&full).err());
        for (chars, (cut, _)) in line.char_indices().enumerate() {
            let mut l = head.clone();
            l.push(line[..cut].to_string());
            let result = parse_checked(&join(&l, crlf, false, false))?;
            // A Gemeinde needs its Textkennzeichen at characters 123-124; Land and Kreis need a name.
            let too_short = match record_type(line) {
                "60" => chars < 124,
                "10" | "40" => chars <= 22,
                _ => false,
            };
            if chars > 0 && too_short {
                prop_assert!(result.is_none(), "line {} cut after {chars} characters was accepted", i + 1);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Properties: OZG and LeiKa

#[derive(Clone, Debug)]
enum ByteEdit {
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let byte = prop_oneof![3 => proptest::sample::select(b"\",\n\r 09a\xc3\xa4\xff\x00".to_vec()), 1 => any::<u8>()];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Delete),
    ]
}

fn apply_bytes(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match e {
            ByteEdit::Set(i, b) if n > 0 => bytes[i.index(n)] = *b,
            ByteEdit::Insert(i, b) => bytes.insert(i.index(n + 1), *b),
            ByteEdit::Delete(i) if n > 0 => {
                bytes.remove(i.index(n));
            }
            _ => {}
        }
    }
    bytes
}

/// Header plus a window of data rows of a bundled CSV, then byte edits.
fn csv_window(csv: &'static str) -> impl Strategy<Value = (Vec<u8>, bool)> {
    let lines: Vec<&'static str> = csv.lines().collect();
    (any::<Index>(), 1..30usize, proptest::collection::vec(byte_edit(), 0..5)).prop_map(move |(start, len, edits)| {
        let rows = &lines[1..];
        let s = start.index(rows.len());
        let mut text = format!("{}\n", lines[0]);
        for row in &rows[s..(s + len).min(rows.len())] {
            text.push_str(row);
            text.push('\n');
        }
        let clean = edits.is_empty();
        (apply_bytes(text.into_bytes(), &edits), clean)
    })
}

fn csv_input(csv: &'static str, header: &'static str) -> impl Strategy<Value = (Vec<u8>, bool)> {
    prop_oneof![
        2 => csv_window(csv),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| (b, false)),
        // The right header, then CSV-shaped noise.
        1 => "([0-9]{0,16}|nicht im LeiKa|\"[^\"]{0,8}\"?|[a-zäß &]{0,10})(,([0-9]{0,16}|\"[a-z,\n]{0,8}\"?|[a-zä ]{0,8})){0,5}\r?\n"
            .prop_map(move |row| (format!("{header}\n{row}").into_bytes(), false)),
    ]
}

#[test]
fn fuzz_ozg_parse_never_panics() {
    fuzz("ozg/parse", 1024, csv_input(import::OZG_CSV, "ozg_id,name,lebenslage,themenfeld"), |(bytes, clean)| {
        match ozg::parse(bytes.as_slice()) {
            Ok(all) => {
                let mut ids = BTreeSet::new();
                for l in &all {
                    let id = l.ozg_id.as_str();
                    prop_assert!(id.len() == 5 && id.bytes().all(|b| b.is_ascii_digit()), "{id:?}");
                    prop_assert!(ids.insert(id.to_string()), "OZG-ID {id} twice");
                    for v in [&l.name, &l.lebenslage, &l.themenfeld] {
                        prop_assert!(!v.is_empty() && v.trim() == v, "{v:?}");
                    }
                }
            }
            Err(e) => prop_assert!(!clean, "unmutated OZG rows rejected: {e}"),
        }
        Ok(())
    });
}

#[test]
fn fuzz_leika_parse_never_panics() {
    let input = csv_input(import::LEIKA_CSV, "leistungsschluessel,name,leika_typ,ozg_id");
    fuzz("leika/parse", 1024, input, |(bytes, clean)| {
        match leika::parse(bytes.as_slice()) {
            Ok(all) => {
                let mut keys = BTreeSet::new();
                for e in &all {
                    let k = e.schluessel.as_str();
                    prop_assert!(
                        k.len() == 14 && k.starts_with("99") && k.bytes().all(|b| b.is_ascii_digit()),
                        "{k:?}"
                    );
                    prop_assert!(keys.insert(k.to_string()), "key {k} twice");
                    prop_assert!(!e.name.is_empty(), "{k}: no name");
                    if let Some(id) = &e.ozg_id {
                        prop_assert!(id.as_str().len() == 5, "{id}");
                    }
                }
            }
            Err(e) => prop_assert!(!clean, "unmutated LeiKa rows rejected: {e}"),
        }
        Ok(())
    });
}
