//! Property-based fuzzing of manifest decoding: `Manifest::from_bytes`, `BundlePath::parse` and
//! `Digest` parsing. Nothing may panic, and whatever is accepted must satisfy the documented
//! rules and survive a round trip through its canonical bytes.
//!
//! Runs 1024 cases per property by default; `EFA_FUZZ_CASES=20000 cargo test --release -p
//! efa-registry --test fuzz_manifest -- --nocapture` runs longer and prints the executions per
//! property. A failing case is shrunk, printed and its seed stored in
//! `tests/fuzz_manifest.proptest-regressions`, so the next run tries it first.

use efa_domain::bundle::{BundleLimits, BundlePath, Digest, Manifest, MANIFEST_FORMAT};
use efa_domain::model::ids::{parse_version, Channel, LandCode, ServiceId};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

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
// Oracles: the rules as documented, written independently of the implementation.

/// `BundlePath` rules: relative, `/`-separated, no `.`/`..`/empty components, no backslash,
/// colon or control character, within the length (bytes) and depth limits.
fn path_ok(s: &str, l: &BundleLimits) -> bool {
    !s.is_empty()
        && s.len() <= l.max_path_len
        && !s.starts_with('/')
        && !s.chars().any(|c| c == '\\' || c == ':' || c.is_control())
        && s.split('/').count() <= l.max_depth
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The limits serde applies to a lone path: structure only, no length or depth bound.
fn structural_limits() -> BundleLimits {
    BundleLimits { max_path_len: usize::MAX, max_depth: usize::MAX, ..BundleLimits::default() }
}

/// Checks an accepted path against the std path model: every component is a plain name, and
/// joining it onto a root stays below that root with exactly one component per segment.
fn check_path_is_contained(s: &str, l: &BundleLimits) -> TestCaseResult {
    prop_assert!(path_ok(s, l), "accepted path {s:?} breaks the documented rules");
    let segments = s.split('/').count();
    let components: Vec<Component> = Path::new(s).components().collect();
    prop_assert_eq!(components.len(), segments, "{:?} normalises to other components", s);
    prop_assert!(components.iter().all(|c| matches!(c, Component::Normal(_))), "{s:?}: {components:?}");
    let root = Path::new("/srv/efa/deploy/service/1.0.0");
    let joined = BundlePath::parse(s, l).expect("accepted before").under(root);
    let rel = joined.strip_prefix(root).expect("stays below root");
    prop_assert_eq!(rel.components().count(), segments);
    prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{joined:?}");
    Ok(())
}

/// Every rule an accepted manifest must satisfy, checked from the outside.
fn check_accepted(m: &Manifest, l: &BundleLimits) -> TestCaseResult {
    prop_assert_eq!(m.format, MANIFEST_FORMAT);
    prop_assert!(parse_version(&m.version).is_ok_and(|v| v.build.is_empty()), "version {:?}", m.version);
    prop_assert!(!m.files.is_empty());
    prop_assert!(m.files.len() <= l.max_files, "{} files > {}", m.files.len(), l.max_files);
    for w in m.files.windows(2) {
        prop_assert!(w[0].path.as_str() < w[1].path.as_str(), "not sorted/unique: {:?}", w);
    }
    let paths: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for p in &paths {
        check_path_is_contained(p, l)?;
        // No file may also be a directory of another file.
        let mut prefix = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for c in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            prop_assert!(!paths.contains(prefix.as_str()), "{prefix:?} is a file and a directory of {p:?}");
        }
    }
    let total: u128 = m.files.iter().map(|f| u128::from(f.size)).sum();
    prop_assert!(total <= u128::from(l.max_total_size), "total {total} > {}", l.max_total_size);
    prop_assert_eq!(m.total_size() as u128, total);

    // Canonical bytes round trip, and are a fixed point.
    let bytes = m.to_bytes();
    let again = Manifest::from_bytes(&bytes, l);
    prop_assert!(again.is_ok(), "canonical bytes rejected: {:?}\n{}", again, String::from_utf8_lossy(&bytes));
    let again = again.unwrap();
    prop_assert_eq!(&again, m);
    prop_assert_eq!(again.to_bytes(), bytes);
    Ok(())
}

fn digest_str_ok(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------------
// Generators

/// A JSON value as text, and whether the field it is meant for accepts it.
#[derive(Clone, Debug)]
struct Field {
    json: String,
    ok: bool,
}

fn field(json: impl Into<String>, ok: bool) -> Field {
    Field { json: json.into(), ok }
}

/// A JSON string literal for `s`: plain, or with every character `\u`-escaped (surrogate pairs
/// beyond the BMP), which must decode to the same string.
fn json_string(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// A string field: mostly one of the `valid` values (so that whole manifests get accepted often
/// enough to check what is accepted), else hostile values, regex noise or not a string at all.
fn string_field(
    valid: &'static [&'static str],
    hostile: &'static [&'static str],
    regex: &'static str,
    ok: fn(&str) -> bool,
) -> impl Strategy<Value = Field> {
    let s = prop_oneof![
        60 => proptest::sample::select(valid).prop_map(String::from),
        3 => proptest::sample::select(hostile).prop_map(String::from),
        2 => regex,
        1 => any::<String>(),
    ];
    (s, any::<bool>(), 0..100u8).prop_map(move |(s, escape, weird)| match weird {
        // Not a string at all.
        0 => field("123", false),
        1 => field("null", false),
        // A lone surrogate is not valid JSON text for a Rust string.
        2 => field("\"\\ud800\"", false),
        _ => field(json_string(&s, escape && weird % 4 == 0), ok(&s)),
    })
}

fn format_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        20 => Just(field("1", true)),
        1 => proptest::sample::select(vec!["1.0", "0", "2", "-1", "4294967297", "\"1\"", "null", "1e0", "true"])
            .prop_map(|j| field(j, false)),
        1 => any::<u32>().prop_map(|n| field(n.to_string(), n == MANIFEST_FORMAT)),
    ]
}

fn service_field() -> impl Strategy<Value = Field> {
    const A64: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const A65: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    string_field(
        &["wohngeld-nrw", "abc", "a--b", "0-9", A64],
        &["ab", "-abc", "abc-", "ABC", "a_b", "wohngeld nrw", "", "ä-bc", " abc", A65],
        "[a-z0-9-]{0,70}",
        |s| s.parse::<ServiceId>().is_ok(),
    )
}

fn version_field() -> impl Strategy<Value = Field> {
    string_field(
        &["1.0.0", "0.0.1", "1.2.3-rc.1", " 1.0.0 ", "18446744073709551615.0.0"],
        // Build metadata is refused: 1.2.3+b has the same precedence as 1.2.3.
        &[
            "1.0",
            "01.0.0",
            "v1.0.0",
            "",
            "1.0.0-",
            "../1.0.0",
            "1.0.0/x",
            "1.0.0+../../x",
            "1.2.3+build.5",
            "1.2.3-alpha+b",
            "18446744073709551616.0.0",
        ],
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-[a-z0-9.]{1,5})?(\\+[a-z0-9./]{1,5})?",
        |s| parse_version(s).is_ok_and(|v| v.build.is_empty()),
    )
}

fn channel_field() -> impl Strategy<Value = Field> {
    string_field(&["stable", "beta", "nightly-2"], &["s", "Stable", "-beta", "", "stable "], "[a-z-]{0,34}", |s| {
        s.parse::<Channel>().is_ok()
    })
}

fn land_field() -> impl Strategy<Value = Field> {
    string_field(&["05", "01", "16", "99", " 05", "05 "], &["5", "005", "0x", "ä5", "٠٥", ""], "[0-9 ]{0,3}", |s| {
        s.parse::<LandCode>().is_ok()
    })
}

fn i64_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        10 => any::<i64>().prop_map(|n| field(n.to_string(), true)),
        1 => proptest::sample::select(vec!["9223372036854775808", "1.5", "1e3", "\"0\"", "null", "-0", "0x10"])
            .prop_map(|j| field(j, false)),
    ]
}

/// A file size as JSON and its value, if it is a valid u64.
fn size_field() -> impl Strategy<Value = (String, Option<u64>)> {
    prop_oneof![
        12 => (0..4096u64).prop_map(|n| (n.to_string(), Some(n))),
        1 => any::<u64>().prop_map(|n| (n.to_string(), Some(n))),
        1 => proptest::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 63, 512 * 1024 * 1024, 512 * 1024 * 1024 + 1])
            .prop_map(|n| (n.to_string(), Some(n))),
        1 => proptest::sample::select(vec!["18446744073709551616", "-1", "1.0", "\"1\"", "null"])
            .prop_map(|j| (j.to_string(), None)),
    ]
}

fn digest_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        16 => any::<[u8; 32]>().prop_map(|b| field(json_string(&Digest(b).to_string(), false), true)),
        1 => any::<[u8; 32]>().prop_map(|b| {
            let s = format!("sha256:{}", hex_upper(&b));
            field(json_string(&s, false), true)
        }),
        1 => "(sha256:|md5:|SHA256:|)[0-9a-fA-Fg ]{0,70}".prop_map(|s| field(json_string(&s, false), digest_str_ok(&s))),
        1 => Just(field("null", false)),
    ]
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Path components, valid and hostile.
const COMPONENTS: &[&str] = &[
    "a",
    "b",
    "c",
    "index.html",
    "ä",
    "ö.txt",
    "...",
    "..a",
    "x.tmpl",
    ".efa",
    "current",
    " ",
    "%2e%2e",
    "a b",
    "\u{feff}",
    "\u{202e}gnp.exe",
    "𝔘",
    ".",
    "..",
    "",
    "a\\b",
    "C:",
    "\u{0}",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{2215}",
];

/// A path string (decoded, as the manifest will carry it).
fn path_string() -> impl Strategy<Value = String> {
    let component = prop_oneof![
        12 => proptest::sample::select(COMPONENTS).prop_map(String::from),
        1 => Just("l".repeat(100)),
    ];
    let joined = (proptest::collection::vec(component, 1..20), 0..6u8).prop_map(|(parts, edge)| {
        let mut s = parts.join("/");
        match edge {
            0 => s.insert(0, '/'),
            1 => s.push('/'),
            _ => {}
        }
        s
    });
    prop_oneof![
        // Mostly short, mostly valid paths, so that whole manifests are accepted often enough.
        16 => proptest::collection::vec(proptest::sample::select(&COMPONENTS[..12]), 1..4).prop_map(|p| p.join("/")),
        3 => joined,
        // Deep or long paths that are otherwise valid, around the default limits.
        1 => proptest::collection::vec(proptest::sample::select(&COMPONENTS[..12]), 14..20).prop_map(|p| p.join("/")),
        1 => (1..4usize, 60..90usize).prop_map(|(n, len)| vec!["l".repeat(len); n].join("/")),
        1 => "[a./\\\\:]{0,20}",
        1 => any::<String>(),
    ]
}

/// One entry of the `files` array, as JSON text, with what it decodes to.
#[derive(Clone, Debug)]
struct EntryCase {
    path: String,
    size: Option<u64>,
    json: String,
    /// All fields present and of the right type and form (with default limits for the path).
    ok: bool,
}

fn entry_case() -> impl Strategy<Value = EntryCase> {
    (path_string(), any::<bool>(), size_field(), digest_field(), 0..30u8).prop_map(
        |(path, escape, (size_json, size), digest, shape)| {
            let path_json = json_string(&path, escape);
            let mut fields =
                vec![("path", path_json.clone()), ("size", size_json.clone()), ("digest", digest.json.clone())];
            let mut ok = path_ok(&path, &structural_limits()) && size.is_some() && digest.ok;
            match shape {
                0 => {
                    fields.remove(1);
                    ok = false;
                }
                // Unknown fields in a file entry are refused: what is signed must be what is read.
                1 => {
                    fields.push(("mode", "\"0755\"".into()));
                    ok = false;
                }
                2 => {
                    fields.push(("path", path_json));
                    ok = false;
                }
                3 => fields.reverse(),
                _ => {}
            }
            EntryCase { path, size, json: object(&fields), ok }
        },
    )
}

fn object(fields: &[(&str, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
    format!("{{{}}}", inner.join(","))
}

fn limits() -> impl Strategy<Value = BundleLimits> {
    prop_oneof![
        8 => Just(BundleLimits::default()),
        2 => (1..6usize, 0..200u64, 1..40usize, 1..6usize).prop_map(|(max_files, max_total_size, max_path_len, max_depth)| {
            BundleLimits { max_files, max_total_size, max_path_len, max_depth }
        }),
        // Larger than the defaults, as a caller with more generous limits would pass.
        1 => (10_000..20_000usize, any::<u64>(), 256..600usize, 17..40usize).prop_map(
            |(max_files, max_total_size, max_path_len, max_depth)| BundleLimits {
                max_files,
                max_total_size,
                max_path_len,
                max_depth,
            }
        ),
    ]
}

/// A whole manifest as JSON text, and whether `from_bytes` must accept it.
#[derive(Clone, Debug)]
struct ManifestCase {
    json: String,
    limits: BundleLimits,
    expect_ok: bool,
}

/// A well-formed header (as a careful publisher writes it), for half of the cases.
fn clean_header() -> impl Strategy<Value = [Field; 6]> {
    let s = |values: &'static [&'static str]| {
        proptest::sample::select(values).prop_map(|v| field(json_string(v, false), true))
    };
    (
        s(&["wohngeld-nrw", "abc"]),
        s(&["1.0.0", "1.2.3-rc.1", "2.0.0-rc.2"]),
        s(&["stable", "beta"]),
        s(&["05", "16"]),
        any::<i64>(),
    )
        .prop_map(|(service, version, channel, land, created)| {
            [field("1", true), service, version, channel, land, field(created.to_string(), true)]
        })
}

/// Well-formed file entries: short valid paths, small sizes, valid digests. Clashes,
/// duplicates and limits still apply.
fn clean_entry() -> impl Strategy<Value = EntryCase> {
    let path = prop_oneof![
        20 => proptest::collection::vec(proptest::sample::select(&COMPONENTS[..12]), 1..4).prop_map(|p| p.join("/")),
        1 => proptest::collection::vec(proptest::sample::select(&COMPONENTS[..12]), 14..20).prop_map(|p| p.join("/")),
        1 => (1..4usize, 60..90usize).prop_map(|(n, len)| vec!["l".repeat(len); n].join("/")),
    ];
    (path, 0..100u64, any::<[u8; 32]>()).prop_map(|(path, size, digest)| {
        let json = object(&[
            ("path", json_string(&path, false)),
            ("size", size.to_string()),
            ("digest", json_string(&Digest(digest).to_string(), false)),
        ]);
        EntryCase { path, size: Some(size), json, ok: true }
    })
}

fn manifest_case() -> impl Strategy<Value = ManifestCase> {
    let hostile = (format_field(), service_field(), version_field(), channel_field(), land_field(), i64_field())
        .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f]);
    let header = prop_oneof![hostile, clean_header()];
    let entries =
        prop_oneof![proptest::collection::vec(entry_case(), 0..6), proptest::collection::vec(clean_entry(), 1..6)];
    let files = (entries, 0..10u8, any::<Index>());
    (header, files, 0..40u8, limits()).prop_map(
        |([format, service, version, channel, land, created], (mut entries, order, dup), shape, limits)| {
            match order {
                // Usually sorted by the decoded path, as a publisher writes it.
                0..=5 => entries.sort_by(|a, b| a.path.cmp(&b.path)),
                6 => entries.reverse(),
                7 if !entries.is_empty() => {
                    let e = dup.get(&entries).clone();
                    entries.push(e);
                    entries.sort_by(|a, b| a.path.cmp(&b.path));
                }
                _ => {}
            }
            let files_json = format!("[{}]", entries.iter().map(|e| e.json.as_str()).collect::<Vec<_>>().join(","));
            let mut fields = vec![
                ("format", format.json.clone()),
                ("service_id", service.json.clone()),
                ("version", version.json.clone()),
                ("channel", channel.json.clone()),
                ("land", land.json.clone()),
                ("created_at_ms", created.json.clone()),
                ("files", files_json),
            ];
            let mut shape_ok = true;
            match shape {
                0 => {
                    fields.push(("signature", "\"x\"".into()));
                    shape_ok = false;
                }
                1 => {
                    fields.remove(3);
                    shape_ok = false;
                }
                2 => {
                    fields.push(("version", version.json.clone()));
                    shape_ok = false;
                }
                3 => fields.reverse(),
                4 => fields[6].1 = "{}".into(),
                _ => {}
            }
            if shape == 4 {
                shape_ok = false;
            }
            let mut json = object(&fields);
            if shape == 5 {
                json = format!(" \n\t{json}\n ");
            }
            if shape == 6 {
                json.push_str(" x");
                shape_ok = false;
            }

            let header_ok = format.ok && service.ok && version.ok && channel.ok && land.ok && created.ok;
            let entries_ok = entries.iter().all(|e| e.ok);
            let files_ok = entries_ok && files_ok(&entries, &limits);
            ManifestCase { json, limits, expect_ok: shape_ok && header_ok && files_ok }
        },
    )
}

/// The `files` rules for entries whose fields are all well-formed.
fn files_ok(entries: &[EntryCase], l: &BundleLimits) -> bool {
    if entries.is_empty() || entries.len() > l.max_files {
        return false;
    }
    // Serde parses every path with the default limits before `validate` applies the caller's,
    // so a caller's limits above the defaults do not take effect (FINDING 1 below).
    if !entries.iter().all(|e| path_ok(&e.path, l)) {
        return false;
    }
    if !entries.windows(2).all(|w| w[0].path < w[1].path) {
        return false;
    }
    let paths: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let clash = entries.iter().any(|e| {
        let parts: Vec<&str> = e.path.split('/').collect();
        (1..parts.len()).any(|n| paths.contains(parts[..n].join("/").as_str()))
    });
    let total: u128 = entries.iter().map(|e| u128::from(e.size.unwrap_or(0))).sum();
    !clash && total <= u128::from(l.max_total_size)
}

/// A manifest that is valid by construction (for mutation seeds).
fn valid_manifest_bytes() -> impl Strategy<Value = Vec<u8>> {
    let paths = proptest::collection::btree_set(
        proptest::collection::vec(proptest::sample::select(&COMPONENTS[..12]), 1..4).prop_map(|p| p.join("/")),
        1..6,
    );
    (paths, any::<i64>(), proptest::collection::vec((0..1000u64, any::<[u8; 32]>()), 6)).prop_map(
        |(paths, created, sizes)| {
            let mut files: Vec<String> = Vec::new();
            let mut dirs = BTreeSet::new();
            for p in &paths {
                let parts: Vec<&str> = p.split('/').collect();
                for n in 1..parts.len() {
                    dirs.insert(parts[..n].join("/"));
                }
            }
            for (p, (size, digest)) in paths.iter().filter(|p| !dirs.contains(*p)).zip(sizes) {
                files.push(object(&[
                    ("path", json_string(p, false)),
                    ("size", size.to_string()),
                    ("digest", json_string(&Digest(digest).to_string(), false)),
                ]));
            }
            format!(
                "{{\"format\":1,\"service_id\":\"wohngeld-nrw\",\"version\":\"1.2.3\",\"channel\":\"stable\",\
                 \"land\":\"05\",\"created_at_ms\":{created},\"files\":[{}]}}",
                files.join(",")
            )
            .into_bytes()
        },
    )
}

#[derive(Clone, Debug)]
enum ByteEdit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => proptest::sample::select(b"\"\\/.,:{}[]0 9-+eEnu\x00\xc3\xa4\xff\n".to_vec()),
        1 => any::<u8>(),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, bit)| ByteEdit::Flip(i, 1 << bit)),
        3 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        3 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        3 => any::<Index>().prop_map(ByteEdit::Delete),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            ByteEdit::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= mask,
            ByteEdit::Set(i, b) if len > 0 => bytes[i.index(len)] = b,
            ByteEdit::Insert(i, b) => bytes.insert(i.index(len + 1), b),
            ByteEdit::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            ByteEdit::Truncate(i) => bytes.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn fuzz_manifest_arbitrary_bytes_never_panic() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        // JSON-ish text reaches further into the decoder than random bytes.
        "[{}\\[\\]\":,0-9a-z_ .\\\\/-]{0,300}".prop_map(String::into_bytes),
    ];
    fuzz("manifest/arbitrary-bytes", 1024, (bytes, limits()), |(bytes, limits)| {
        if let Ok(m) = Manifest::from_bytes(&bytes, &limits) {
            check_accepted(&m, &limits)?;
        }
        Ok(())
    });
}

#[test]
fn fuzz_manifest_structured_hostile_json() {
    let accepted = AtomicU64::new(0);
    fuzz("manifest/structured-json", 1024, manifest_case(), |case| {
        let result = Manifest::from_bytes(case.json.as_bytes(), &case.limits);
        if result.is_ok() {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        match &result {
            Ok(m) => check_accepted(m, &case.limits)?,
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
            }
        }
        prop_assert_eq!(
            result.is_ok(),
            case.expect_ok,
            "from_bytes returned {:?} for\n{}\nwith {:?}",
            result,
            case.json,
            case.limits
        );
        Ok(())
    });
    eprintln!("fuzz manifest/structured-json: {} manifests accepted", accepted.load(Ordering::Relaxed));
}

#[test]
fn fuzz_manifest_mutated_valid_bytes() {
    let case = (valid_manifest_bytes(), proptest::collection::vec(byte_edit(), 0..6), limits());
    fuzz("manifest/mutated-bytes", 1024, case, |(bytes, edits, limits)| {
        if edits.is_empty() {
            let m = Manifest::from_bytes(&bytes, &BundleLimits::default());
            prop_assert!(m.is_ok(), "valid seed rejected: {:?}\n{}", m, String::from_utf8_lossy(&bytes));
        }
        let mutated = apply_edits(bytes, &edits);
        if let Ok(m) = Manifest::from_bytes(&mutated, &limits) {
            check_accepted(&m, &limits)?;
        }
        Ok(())
    });
}

#[test]
fn fuzz_bundle_path_parse_matches_the_rules() {
    let s = prop_oneof![4 => path_string(), 1 => any::<String>()];
    fuzz("bundle-path/parse", 1024, (s, limits()), |(s, limits)| {
        let parsed = BundlePath::parse(&s, &limits);
        prop_assert_eq!(parsed.is_ok(), path_ok(&s, &limits), "parse({:?}, {:?}) = {:?}", s, limits, parsed);
        if let Ok(p) = parsed {
            prop_assert_eq!(p.as_str(), s.as_str());
            check_path_is_contained(&s, &limits)?;
            // Serde checks the structural rules; length and depth are the manifest's limits.
            let json = serde_json::to_string(&p).unwrap();
            let back: Result<BundlePath, _> = serde_json::from_str(&json);
            prop_assert_eq!(back.is_ok(), path_ok(&s, &structural_limits()));
        }
        let via_serde: Result<BundlePath, _> = serde_json::from_str(&json_string(&s, false));
        prop_assert_eq!(via_serde.is_ok(), path_ok(&s, &structural_limits()), "serde accepted {:?}", s);
        Ok(())
    });
}

#[test]
fn fuzz_digest_round_trip_and_garbage() {
    let garbage = prop_oneof![
        any::<String>(),
        "(sha256:|sha256|SHA256:|sha512:|)[0-9a-fA-Fg:\u{e4} ]{0,70}",
        any::<[u8; 32]>().prop_map(|b| format!("sha256:{}", hex_upper(&b))),
        (any::<[u8; 32]>(), 0..70usize).prop_map(|(b, cut)| {
            let s = Digest(b).to_string();
            s[..cut.min(s.len())].to_string()
        }),
    ];
    fuzz("digest/round-trip", 1024, (any::<[u8; 32]>(), garbage), |(bytes, garbage)| {
        let d = Digest(bytes);
        let text = d.to_string();
        prop_assert!(text.len() == 71 && text.starts_with("sha256:"), "{text}");
        prop_assert!(text[7..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{text}");
        prop_assert_eq!(text.parse::<Digest>().ok(), Some(d));
        prop_assert_eq!(format!("{d:?}"), text.clone());
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(d));

        let parsed = garbage.parse::<Digest>();
        prop_assert_eq!(parsed.is_ok(), digest_str_ok(&garbage), "{:?} -> {:?}", garbage, parsed);
        if let Ok(g) = parsed {
            // Upper-case hex is accepted; the canonical form is lower case.
            prop_assert_eq!(g.to_string(), garbage.to_ascii_lowercase());
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Regressions: minimal inputs the fuzzers found, kept after the fix.

/// `Manifest::from_bytes` once ignored caller limits above the defaults for path depth and
/// length (`BundlePath`'s serde impl used the defaults). Found by
/// `fuzz_manifest_structured_hostile_json` (limits larger than the defaults).
#[test]
fn finding_1_caller_limits_above_defaults_are_ignored() {
    let json = r#"{"format":1,"service_id":"wohngeld-nrw","version":"1.0.0","channel":"stable","land":"05","created_at_ms":0,"files":[{"path":"a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a","size":0,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#;
    let limits = BundleLimits { max_files: 10_000, max_total_size: 0, max_path_len: 256, max_depth: 17 };
    assert!(BundlePath::parse("a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a", &limits).is_ok());
    let result = Manifest::from_bytes(json.as_bytes(), &limits);
    assert!(result.is_ok(), "{result:?}");
}
