//! Property-based fuzzing of bundle unpacking: `Deployer::deploy` on random file trees, random
//! templates and parameters, and hostile manifests (duplicate or clashing paths, reserved names,
//! blobs that do not match the manifest, bad versions, template clashes).
//!
//! Properties: nothing panics; a deploy that succeeds leaves exactly the manifest's files (with
//! templates rendered) under `root/<service>/<version>/` and `current` pointing there; a deploy
//! that fails (or is rolled back) leaves the deploy tree exactly as it was; nothing is ever
//! written outside `root/<service>/`, and the blob cache is never modified. Paths that could
//! escape (`../x`, `/abs`, ...) cannot even be put into a `Manifest` through serde.
//!
//! Runs 128 cases by default (each deploy fsyncs); `EFA_FUZZ_CASES=5000 cargo test --release -p
//! efa-node --test fuzz_deploy -- --nocapture` runs longer and prints the executions. A failing
//! case is shrunk, printed and its seed stored in `tests/fuzz_deploy.proptest-regressions`.

use efa_domain::bundle::{BundleLimits, BundlePath, Digest, Manifest};
use efa_domain::model::ids::{parse_version, ServiceId};
use efa_domain::params::{render_template, ParamValue};
use efa_node::deploy::{DeployError, DeployOutcome, DeployRequest, Deployer, RecoveryReport, ReleaseRecord};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

const SERVICE: &str = "wohngeld-nrw";
const OTHER_SERVICE: &str = "other-service";
const TEMPLATE_SUFFIX: &str = ".tmpl";
const RESERVED_DIR: &str = ".efa";

// ---------------------------------------------------------------------------------------------
// Generators

/// Path components, all valid for `BundlePath`, including names that mean something to the
/// deployer (`.efa`, `current`, scratch prefixes, version-like names, template suffixes).
const COMPONENTS: &[&str] = &[
    "a",
    "a",
    "b",
    "b",
    "conf",
    "index.html",
    "ä",
    "...",
    "..a",
    ".hidden",
    "current",
    "current.new-1",
    ".staging-1",
    ".replaced-1.0.0-1",
    ".health-1.log",
    "1.0.0",
    "x.tmpl",
    "x.tmpl",
    "a.tmpl",
    "conf.tmpl",
    "ä.tmpl",
    "y.tmpl.tmpl",
    ".tmpl",
    ".efa",
    // U+2215 DIVISION SLASH: looks like `/`, but is part of one name.
    "..\u{2215}x",
];

/// Paths that must never get into a manifest: they escape, are absolute, empty, or otherwise
/// break the `BundlePath` rules.
const HOSTILE_PATHS: &[&str] = &[
    "../x",
    "a/../../b",
    "/abs",
    "/etc/passwd",
    "..",
    ".",
    "",
    "a//b",
    "./a",
    "a/.",
    "a/..",
    "a\\..\\b",
    "C:/x",
    "x\u{0}",
    "a/b/",
    "~/../x",
    "a/\n/b",
];

fn valid_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(COMPONENTS), 1..4).prop_map(|c| c.join("/"))
}

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    /// `{{<pad>name<pad>}}`
    Placeholder(&'static str, bool),
    Open,
    Close,
}

const PARAM_NAMES: &[&str] = &["fee", "url", "name", "flag", "list"];
/// Placeholders without a parameter of that name (or any valid name).
const BAD_PLACEHOLDERS: &[&str] = &["missing", "", "a b", "{{"];

fn content() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        20 => "[a-zä =\n/.]{0,8}".prop_map(Piece::Text),
        20 => (proptest::sample::select(PARAM_NAMES), any::<bool>()).prop_map(|(n, pad)| Piece::Placeholder(n, pad)),
        1 => (proptest::sample::select(BAD_PLACEHOLDERS), any::<bool>()).prop_map(|(n, pad)| Piece::Placeholder(n, pad)),
        1 => Just(Piece::Open),
        1 => Just(Piece::Close),
    ];
    let template = proptest::collection::vec(piece, 0..6).prop_map(|pieces| {
        let mut s = String::new();
        for p in pieces {
            match p {
                Piece::Text(t) => s.push_str(&t),
                Piece::Placeholder(n, true) => s.push_str(&format!("{{{{ {n} }}}}")),
                Piece::Placeholder(n, false) => s.push_str(&format!("{{{{{n}}}}}")),
                Piece::Open => s.push_str("{{"),
                Piece::Close => s.push_str("}}"),
            }
        }
        s.into_bytes()
    });
    prop_oneof![
        12 => template,
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        // Not UTF-8: a template like this cannot be rendered.
        1 => Just(vec![b'{', 0xff, 0xfe, b'}']),
    ]
}

fn param_value() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        any::<bool>().prop_map(ParamValue::Bool),
        any::<i64>().prop_map(ParamValue::Integer),
        "[a-zä/.{} ]{0,12}".prop_map(ParamValue::Text),
        proptest::collection::vec("[0-9]{5}", 0..3).prop_map(ParamValue::List),
    ]
}

/// What the blob cache holds for a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blob {
    Exact,
    SameSizeOther,
    Shorter,
    Longer,
    Missing,
}

fn blob() -> impl Strategy<Value = Blob> {
    prop_oneof![
        96 => Just(Blob::Exact),
        1 => Just(Blob::SameSizeOther),
        1 => Just(Blob::Shorter),
        1 => Just(Blob::Longer),
        1 => Just(Blob::Missing),
    ]
}

#[derive(Clone, Debug)]
struct FileCase {
    path: String,
    content: Vec<u8>,
    blob: Blob,
    /// Added to the real size in the manifest (`i64::MAX`: declare `u64::MAX`).
    size_delta: i64,
}

fn file_case() -> impl Strategy<Value = FileCase> {
    let delta = prop_oneof![160 => Just(0), 1 => Just(-1), 1 => Just(1), 1 => Just(i64::MAX)];
    (valid_path(), content(), blob(), delta).prop_map(|(path, content, blob, size_delta)| FileCase {
        path,
        content,
        blob,
        size_delta,
    })
}

#[derive(Clone, Debug)]
struct DeployCase {
    /// Deployed first (valid, healthy), so there is a `current` to preserve.
    baseline: Option<&'static str>,
    version: &'static str,
    other_service: bool,
    files: Vec<FileCase>,
    /// 0..=16 sorted, 17 reversed, 18 duplicate one entry, 19 as generated.
    order: u8,
    duplicate: Index,
    /// Replace one path with a hostile one (must be refused by serde).
    hostile: Option<(Index, &'static str)>,
    params: BTreeMap<String, ParamValue>,
    health: Option<&'static str>,
    keep: usize,
}

const VERSIONS: &[&str] = &["1.0.0", "2.0.0-rc.1", "0.9.0", " 1.0.0"];
const BAD_VERSIONS: &[&str] = &["1.0", "../1.0.0", "1.0.0/../../x", "", "current", ".staging-1.0.0", "1.0.0+build.7"];

/// Health commands and whether they succeed in a deployed version dir.
const HEALTH: &[(&str, bool)] = &[("true", true), ("exit 1", false), ("test -f .efa/release.json", true)];

fn deploy_case() -> impl Strategy<Value = DeployCase> {
    let baseline = prop_oneof![Just(None), Just(Some("1.0.0")), Just(Some("0.1.0"))];
    let hostile = prop_oneof![
        9 => Just(None),
        1 => (any::<Index>(), proptest::sample::select(HOSTILE_PATHS)).prop_map(Some),
    ];
    let health = prop_oneof![6 => Just(None), 1 => proptest::sample::select(HEALTH).prop_map(|(c, _)| Some(c))];
    // Usually every parameter has a value; a missing one makes templates using it fail.
    let value = prop_oneof![20 => param_value().prop_map(Some), 1 => Just(None)];
    let params = proptest::collection::vec(value, PARAM_NAMES.len()).prop_map(|values| {
        PARAM_NAMES.iter().zip(values).filter_map(|(n, v)| Some((n.to_string(), v?))).collect::<BTreeMap<_, _>>()
    });
    let other = prop_oneof![30 => Just(false), 1 => Just(true)];
    (
        (
            baseline,
            prop_oneof![12 => proptest::sample::select(VERSIONS), 1 => proptest::sample::select(BAD_VERSIONS)],
            other,
        ),
        (proptest::collection::vec(file_case(), 0..7), 0..20u8, any::<Index>(), hostile),
        (params, health, 1..4usize),
    )
        .prop_map(
            |((baseline, version, other_service), (files, order, duplicate, hostile), (params, health, keep))| {
                DeployCase { baseline, version, other_service, files, order, duplicate, hostile, params, health, keep }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// The world of one case: a temp dir holding `root/` (the deploy dir) and `cache/` (blobs).

struct World {
    tmp: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    service: ServiceId,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let cache = tmp.path().join("cache");
        fs::create_dir(&cache).expect("cache dir");
        World { tmp, root, cache, service: SERVICE.parse().unwrap() }
    }

    fn sdir(&self) -> PathBuf {
        self.root.join(SERVICE)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.cache.join(d.hex())
    }

    fn deploy(
        &self,
        d: &Deployer,
        m: &Manifest,
        params: &BTreeMap<String, ParamValue>,
        health: Option<&str>,
    ) -> Result<DeployOutcome, DeployError> {
        let cache = self.cache.clone();
        let blob_path = move |dg: &Digest| cache.join(dg.hex());
        let digest = Manifest::content_digest(&m.to_bytes());
        d.deploy(&DeployRequest {
            service: &self.service,
            manifest: m,
            content_digest: &digest,
            blob_path: &blob_path,
            params,
            health_command: health,
        })
    }
}

/// A file-system node, not following symlinks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    Other,
}

/// Every entry below `dir`, by `/`-joined relative path.
fn snapshot(dir: &Path) -> BTreeMap<String, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries {
            let entry = entry.expect("read_dir entry");
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let node = if meta.is_symlink() {
                Node::Symlink(fs::read_link(&path).expect("read_link"))
            } else if meta.is_dir() {
                walk(base, &path, out);
                Node::Dir
            } else if meta.is_file() {
                Node::File(fs::read(&path).expect("read file"))
            } else {
                Node::Other
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Nothing outside `root/<service>/` and `cache/`, `current` a plain relative name, no other
/// symlinks, no scratch entries left behind.
fn check_containment(w: &World, cache_before: &BTreeMap<String, Node>) -> TestCaseResult {
    let top = names(w.tmp.path());
    prop_assert!(top.iter().all(|n| n == "root" || n == "cache"), "unexpected entries next to root: {top:?}");
    let in_root = names(&w.root);
    prop_assert!(in_root.iter().all(|n| n == SERVICE), "unexpected entries in root: {in_root:?}");
    prop_assert_eq!(&snapshot(&w.cache), cache_before, "the blob cache changed");
    for (rel, node) in snapshot(&w.root) {
        if let Node::Symlink(target) = &node {
            prop_assert_eq!(rel.as_str(), format!("{SERVICE}/current"), "unexpected symlink");
            let parts: Vec<Component> = target.components().collect();
            prop_assert!(parts.len() == 1 && matches!(parts[0], Component::Normal(_)), "current -> {target:?}");
        }
        prop_assert!(node != Node::Other, "special file {rel}");
    }
    for n in names(&w.sdir()) {
        let scratch = [".staging-", ".replaced-", ".health-", "current.new-"].iter().any(|p| n.starts_with(p));
        prop_assert!(!scratch, "scratch entry {n:?} left in the service dir");
    }
    Ok(())
}

/// The deploy tree is as it was, except that the service dir may now exist (empty).
fn check_unchanged(w: &World, before: &BTreeMap<String, Node>, what: &str) -> TestCaseResult {
    let mut after = snapshot(&w.root);
    if !before.contains_key(SERVICE) && after.get(SERVICE) == Some(&Node::Dir) && after.len() == 1 {
        after.clear();
    }
    prop_assert_eq!(&after, before, "{} changed the deploy tree", what);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Expected outcome, from the documented rules.

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Succeed,
    Fail(String),
    /// Not specified (empty or unsorted manifests: the deployer trusts the verified manifest).
    Either,
}

fn expected(
    case: &DeployCase,
    entries: &[(String, Vec<u8>, u64)],
    cache: &Path,
    params: &BTreeMap<String, ParamValue>,
) -> Expect {
    if case.other_service {
        return Expect::Fail("service mismatch".into());
    }
    // Build metadata is refused: 1.0.0+x has the same precedence as 1.0.0.
    if parse_version(case.version).map_or(true, |v| !v.build.is_empty()) {
        return Expect::Fail(format!("version {:?}", case.version));
    }
    let paths: BTreeSet<&str> = entries.iter().map(|(p, ..)| p.as_str()).collect();
    if paths.len() != entries.len() {
        return Expect::Fail("duplicate path".into());
    }
    let is_dir = |p: &str| paths.iter().any(|q| q.starts_with(&format!("{p}/")));
    let reserved = |p: &str| p.split('/').next() == Some(RESERVED_DIR);
    for (path, content, size) in entries {
        if reserved(path) {
            return Expect::Fail(format!("reserved {path}"));
        }
        if is_dir(path) {
            return Expect::Fail(format!("{path} is a file and a directory"));
        }
        let digest = Digest::of(content);
        if fs::read(cache.join(digest.hex())).ok().as_ref() != Some(content) || *size != content.len() as u64 {
            return Expect::Fail(format!("blob of {path} does not match"));
        }
        if let Some(target) = path.strip_suffix(TEMPLATE_SUFFIX) {
            if BundlePath::parse(target, &BundleLimits::default()).is_err() {
                return Expect::Fail(format!("template target of {path} is not a path"));
            }
            if reserved(target) || paths.contains(target) || is_dir(target) {
                return Expect::Fail(format!("template {path} clashes"));
            }
            let Ok(text) = std::str::from_utf8(content) else {
                return Expect::Fail(format!("template {path} is not UTF-8"));
            };
            if render_template(text, params).is_err() {
                return Expect::Fail(format!("template {path} does not render"));
            }
        }
    }
    if entries.is_empty() || !entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return Expect::Either;
    }
    Expect::Succeed
}

/// The files a successful deploy must leave in the version dir (templates rendered, metadata).
fn expected_tree(
    entries: &[(String, Vec<u8>, u64)],
    params: &BTreeMap<String, ParamValue>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (path, content, _) in entries {
        match path.strip_suffix(TEMPLATE_SUFFIX) {
            Some(target) => {
                let text = std::str::from_utf8(content).expect("checked");
                out.insert(target.to_string(), render_template(text, params).expect("checked").into_bytes());
            }
            None => {
                out.insert(path.clone(), content.clone());
            }
        }
    }
    out
}

fn manifest_json(version: &str, service: &str, files: &[(String, Vec<u8>, u64)]) -> serde_json::Value {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|(path, content, size)| {
            serde_json::json!({ "path": path, "size": size, "digest": Digest::of(content).to_string() })
        })
        .collect();
    serde_json::json!({
        "format": 1,
        "service_id": service,
        "version": version,
        "channel": "stable",
        "land": "05",
        "created_at_ms": 0,
        "files": files,
    })
}

fn write_blob(cache: &Path, content: &[u8], blob: Blob) {
    let path = cache.join(Digest::of(content).hex());
    let bytes = match blob {
        Blob::Exact => content.to_vec(),
        Blob::SameSizeOther => content.iter().map(|b| b ^ 0x5a).collect(),
        Blob::Shorter => content[..content.len().saturating_sub(1)].to_vec(),
        Blob::Longer => [content, b"!"].concat(),
        Blob::Missing => return,
    };
    fs::write(path, bytes).expect("write blob");
}

// ---------------------------------------------------------------------------------------------
// The property

/// How a case ended, for the statistics printed at the end.
#[derive(Clone, Copy)]
enum Ended {
    Deployed = 0,
    RolledBack = 1,
    Failed = 2,
    HostileRefused = 3,
}

fn run_case(case: DeployCase) -> Result<Ended, TestCaseError> {
    let w = World::new();
    let deployer = Deployer::new(&w.root, case.keep).with_health_timeout(Duration::from_secs(10));

    // Baseline: a healthy earlier deploy, so that there is a `current` to keep.
    if let Some(v) = case.baseline {
        let content = format!("baseline {v}").into_bytes();
        fs::write(w.blob_path(&Digest::of(&content)), &content).unwrap();
        let files = vec![("app.txt".to_string(), content.clone(), content.len() as u64)];
        let m: Manifest = serde_json::from_value(manifest_json(v, SERVICE, &files)).unwrap();
        let out = w.deploy(&deployer, &m, &BTreeMap::new(), None);
        prop_assert!(matches!(out, Ok(DeployOutcome::Deployed { .. })), "baseline deploy: {out:?}");
    }

    // The manifest entries, in manifest order: (path, content, declared size).
    let mut entries: Vec<(String, Vec<u8>, u64)> = case
        .files
        .iter()
        .map(|f| {
            let size = match f.size_delta {
                i64::MAX => u64::MAX,
                delta => (f.content.len() as i64 + delta).max(0) as u64,
            };
            (f.path.clone(), f.content.clone(), size)
        })
        .collect();
    match case.order {
        0..=16 => entries.sort_by(|a, b| a.0.cmp(&b.0)),
        17 => entries.reverse(),
        18 if !entries.is_empty() => {
            let dup = case.duplicate.get(&entries).clone();
            entries.push(dup);
            entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        _ => {}
    }
    for f in &case.files {
        write_blob(&w.cache, &f.content, f.blob);
    }

    // Hostile paths cannot be smuggled in through serde (nor through from_bytes).
    let service = if case.other_service { OTHER_SERVICE } else { SERVICE };
    if let Some((i, path)) = case.hostile {
        if !entries.is_empty() {
            let n = i.index(entries.len());
            entries[n].0 = path.to_string();
            let json = manifest_json(case.version, service, &entries);
            let parsed = serde_json::from_value::<Manifest>(json.clone());
            prop_assert!(parsed.is_err(), "serde accepted the hostile path {path:?}: {parsed:?}");
            let bytes = serde_json::to_vec(&json).unwrap();
            prop_assert!(Manifest::from_bytes(&bytes, &BundleLimits::default()).is_err());
            return Ok(Ended::HostileRefused);
        }
    }
    let manifest: Manifest = serde_json::from_value(manifest_json(case.version, service, &entries))
        .map_err(|e| TestCaseError::fail(format!("a manifest of valid paths did not deserialize: {e}")))?;

    let expect = expected(&case, &entries, &w.cache, &case.params);
    let cache_before = snapshot(&w.cache);
    let root_before = snapshot(&w.root);
    let current_before = deployer.current_version(&w.service).unwrap();

    let result = w.deploy(&deployer, &manifest, &case.params, case.health);

    check_containment(&w, &cache_before)?;
    let current_after = deployer.current_version(&w.service).unwrap();
    let healthy = case.health.is_none_or(|c| HEALTH.iter().any(|&(h, ok)| h == c && ok));
    match &result {
        Ok(DeployOutcome::Deployed { version, previous }) => {
            prop_assert!(!matches!(expect, Expect::Fail(_)), "deploy succeeded, expected failure: {expect:?}");
            prop_assert!(healthy, "deployed although the health command fails");
            let canonical = parse_version(case.version).unwrap().to_string();
            prop_assert_eq!(version, &canonical);
            prop_assert_eq!(previous, &current_before);
            prop_assert_eq!(current_after.as_ref(), Some(&canonical));
            // Only `current`, the new version and the one it replaced (never pruned) remain.
            let allowed: BTreeSet<String> =
                ["current".to_string(), canonical.clone()].into_iter().chain(current_before.clone()).collect();
            let in_sdir = names(&w.sdir());
            prop_assert!(in_sdir.is_subset(&allowed), "service dir holds {:?}", in_sdir);
            prop_assert!(current_before.iter().all(|v| in_sdir.contains(v)), "previous version pruned: {:?}", in_sdir);

            // Exactly the manifest's files, rendered, plus the node's metadata.
            let vdir = w.sdir().join(&canonical);
            let mut want = expected_tree(&entries, &case.params);
            let got = snapshot(&vdir);
            let release: ReleaseRecord = match got.get(".efa/release.json") {
                Some(Node::File(b)) => serde_json::from_slice(b).unwrap(),
                other => return Err(TestCaseError::fail(format!("no release.json: {other:?}"))),
            };
            prop_assert_eq!(&release.service, SERVICE);
            prop_assert_eq!(&release.version, &canonical);
            prop_assert_eq!(&release.content_digest, &Manifest::content_digest(&manifest.to_bytes()).to_string());
            match got.get(".efa/parameters.json") {
                Some(Node::File(b)) => {
                    let stored: BTreeMap<String, ParamValue> = serde_json::from_slice(b).unwrap();
                    prop_assert_eq!(&stored, &case.params);
                }
                other => prop_assert!(false, "no parameters.json: {other:?}"),
            }
            want.insert(".efa/release.json".into(), Vec::new());
            want.insert(".efa/parameters.json".into(), Vec::new());
            let files: BTreeMap<&String, &Vec<u8>> = got
                .iter()
                .filter_map(|(p, n)| match n {
                    Node::File(b) => Some((p, b)),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(files.keys().copied().collect::<BTreeSet<_>>(), want.keys().collect::<BTreeSet<_>>());
            for (path, bytes) in &want {
                if !path.starts_with(".efa/") {
                    prop_assert_eq!(files[path], bytes, "content of {}", path);
                }
            }
            prop_assert!(got.values().all(|n| matches!(n, Node::File(_) | Node::Dir)), "{got:?}");
            Ok(Ended::Deployed)
        }
        Ok(DeployOutcome::RolledBack { failed_version, restored, reason }) => {
            prop_assert!(!matches!(expect, Expect::Fail(_)), "staged although expected to fail: {expect:?}");
            prop_assert!(!healthy, "rolled back although healthy: {reason}");
            prop_assert_eq!(failed_version, &parse_version(case.version).unwrap().to_string());
            prop_assert_eq!(restored, &current_before);
            prop_assert_eq!(&current_after, &current_before);
            check_unchanged(&w, &root_before, "a rolled back deploy")?;
            Ok(Ended::RolledBack)
        }
        Err(e) => {
            prop_assert!(expect != Expect::Succeed, "deploy failed, expected success: {e}");
            prop_assert!(!e.to_string().is_empty());
            prop_assert_eq!(&current_after, &current_before, "a failed deploy moved current: {}", e);
            check_unchanged(&w, &root_before, &format!("a failed deploy ({e})"))?;
            Ok(Ended::Failed)
        }
    }
}

#[test]
fn fuzz_deploy_random_trees_and_hostile_manifests() {
    let ended: [AtomicU64; 4] = Default::default();
    fuzz("deploy/trees", 128, deploy_case(), |case| {
        let how = run_case(case)?;
        ended[how as usize].fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    let [deployed, rolled_back, failed, refused] = ended.map(|n| n.into_inner());
    eprintln!(
        "fuzz deploy/trees: {deployed} deployed, {rolled_back} rolled back, {failed} refused by the deployer, \
         {refused} hostile paths refused by serde"
    );
}

// ---------------------------------------------------------------------------------------------
// Sequences: deploys (healthy, unhealthy, broken), switches and retirements against a model of
// what `current`, the installed versions and their content must be afterwards.

#[derive(Clone, Debug)]
enum Step {
    Deploy { version: &'static str, health: Health },
    SwitchTo(&'static str),
    Retire,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// No health command.
    None,
    Passes,
    Fails,
    /// The blob in the cache does not match: refused while staging.
    BrokenBlob,
}

const SEQ_VERSIONS: &[&str] = &["0.9.0", "1.0.0", "1.0.1", "1.10.0", "2.0.0-rc.1", "2.0.0"];

fn step() -> impl Strategy<Value = Step> {
    let health = prop_oneof![
        6 => Just(Health::None),
        1 => Just(Health::Passes),
        2 => Just(Health::Fails),
        2 => Just(Health::BrokenBlob),
    ];
    prop_oneof![
        8 => (proptest::sample::select(SEQ_VERSIONS), health).prop_map(|(version, health)| Step::Deploy { version, health }),
        2 => proptest::sample::select(SEQ_VERSIONS).prop_map(Step::SwitchTo),
        1 => Just(Step::Retire),
    ]
}

#[derive(Debug, Default)]
struct Model {
    current: Option<String>,
    /// Installed versions and the content of their `app.txt`.
    installed: BTreeMap<semver::Version, String>,
}

impl Model {
    /// What `prune` keeps: the newest `keep`, plus `current` and the version it replaced.
    fn prune(&mut self, keep: usize, current: &str, previous: Option<&str>) {
        let newest: BTreeSet<semver::Version> = self.installed.keys().rev().take(keep).cloned().collect();
        self.installed.retain(|v, _| {
            let name = v.to_string();
            newest.contains(v) || name == current || Some(name.as_str()) == previous
        });
    }
}

fn check_model(w: &World, d: &Deployer, model: &Model, step: usize) -> TestCaseResult {
    prop_assert_eq!(&d.current_version(&w.service).unwrap(), &model.current, "current after step {}", step);
    let installed = d.installed_versions(&w.service).unwrap();
    prop_assert_eq!(&installed, &model.installed.keys().cloned().collect::<Vec<_>>(), "installed after step {}", step);
    for (v, content) in &model.installed {
        let got = fs::read_to_string(w.sdir().join(v.to_string()).join("app.txt")).unwrap();
        prop_assert_eq!(&got, content, "content of {} after step {}", v, step);
    }
    let allowed: BTreeSet<String> = model
        .installed
        .keys()
        .map(|v| v.to_string())
        .chain(model.current.as_ref().map(|_| "current".to_string()))
        .collect();
    let in_sdir = names(&w.sdir());
    prop_assert_eq!(&in_sdir, &allowed, "service dir after step {}", step);
    Ok(())
}

fn run_sequence(steps: Vec<Step>, keep: usize) -> TestCaseResult {
    let w = World::new();
    let d = Deployer::new(&w.root, keep).with_health_timeout(Duration::from_secs(10));
    let mut model = Model::default();
    for (i, step) in steps.iter().enumerate() {
        // Deploy steps add their blobs first; nothing may change the cache after that.
        let mut cache_before = snapshot(&w.cache);
        match *step {
            Step::Deploy { version, health } => {
                let content = format!("{version} from step {i}");
                let files = vec![
                    ("app.txt".to_string(), content.clone().into_bytes(), content.len() as u64),
                    ("conf/app.toml.tmpl".to_string(), b"step = {{ step }}".to_vec(), 17),
                ];
                for (_, bytes, _) in &files {
                    let blob = if health == Health::BrokenBlob { Blob::SameSizeOther } else { Blob::Exact };
                    write_blob(&w.cache, bytes, blob);
                }
                let m: Manifest = serde_json::from_value(manifest_json(version, SERVICE, &files)).unwrap();
                let params = BTreeMap::from([("step".to_string(), ParamValue::Integer(i as i64))]);
                let command = match health {
                    Health::Passes => Some("test -f conf/app.toml"),
                    Health::Fails => Some("exit 3"),
                    Health::None | Health::BrokenBlob => None,
                };
                cache_before = snapshot(&w.cache);
                let root_before = snapshot(&w.root);
                let result = w.deploy(&d, &m, &params, command);
                check_containment(&w, &cache_before)?;
                match (health, &result) {
                    (Health::None | Health::Passes, Ok(DeployOutcome::Deployed { version: v, previous })) => {
                        prop_assert_eq!(v, version);
                        prop_assert_eq!(previous, &model.current);
                        let previous = model.current.replace(version.to_string());
                        model.installed.insert(version.parse().unwrap(), content);
                        model.prune(keep, version, previous.as_deref());
                        let rendered = fs::read_to_string(w.sdir().join("current/conf/app.toml")).unwrap();
                        prop_assert_eq!(rendered, format!("step = {i}"));
                    }
                    (Health::Fails, Ok(DeployOutcome::RolledBack { restored, .. })) => {
                        prop_assert_eq!(restored, &model.current);
                        check_unchanged(&w, &root_before, "a rolled back deploy")?;
                    }
                    (Health::BrokenBlob, Err(DeployError::DigestMismatch { .. })) => {
                        check_unchanged(&w, &root_before, "a refused deploy")?;
                    }
                    _ => prop_assert!(false, "step {i} {step:?}: unexpected {result:?}"),
                }
            }
            Step::SwitchTo(version) => {
                let result = d.switch_to(&w.service, version);
                if model.installed.contains_key(&version.parse().unwrap()) {
                    prop_assert_eq!(result.ok(), Some(model.current.clone()), "step {} {:?}", i, step);
                    model.current = Some(version.to_string());
                } else {
                    prop_assert!(matches!(result, Err(DeployError::UnknownVersion { .. })), "step {i}: {result:?}");
                }
            }
            Step::Retire => {
                d.retire(&w.service).unwrap();
                model.current = None;
            }
        }
        check_containment(&w, &cache_before)?;
        check_model(&w, &d, &model, i)?;
        // Without a crash, recovery finds nothing to do.
        prop_assert_eq!(d.recover().unwrap(), RecoveryReport::default(), "recover after step {}", i);
    }
    Ok(())
}

#[test]
fn fuzz_deploy_sequences_match_a_model() {
    let case = (proptest::collection::vec(step(), 1..8), 1..4usize);
    fuzz("deploy/sequences", 48, case, |(steps, keep)| run_sequence(steps, keep));
}
