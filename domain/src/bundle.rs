//! Release bundles: the signed manifest and the rules a file tree must follow.
//!
//! A bundle is a tree of regular files. The manifest lists every file with its size and
//! SHA-256 digest, and names service, version, channel and Land. The Land signs the exact
//! manifest bytes; the content digest of a release is the digest of those bytes. Anything
//! that unpacks a bundle trusts only [`BundlePath`], which cannot escape its root.

use crate::error::{echo, Error, Result};
use crate::model::ids::{parse_version, Channel, LandCode, ServiceId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Manifest format without a parameter schema (releases published before the schema was
/// signed, and clients that do not send one).
pub const MANIFEST_FORMAT: u32 = 1;
/// Manifest format that carries the service's parameter schema, signed with the release:
/// the node checks a Kommune's parameters against it, not against the hub's word.
pub const MANIFEST_FORMAT_WITH_SCHEMA: u32 = 2;

/// A SHA-256 digest, written `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix (blob file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::invalid("digest", format!("{} must start with \"sha256:\"", echo(s))))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| Error::invalid("digest", format!("{} must be sha256: followed by 64 hex digits", echo(s))))?;
        Ok(Digest(out))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Incremental SHA-256, for content that arrives in chunks.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Feeds the next chunk of content.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// Limits a bundle must stay within. The hub and node enforce the same ones.
#[derive(Clone, Debug)]
pub struct BundleLimits {
    /// Most files in one manifest (default 10,000).
    pub max_files: usize,
    /// Most bytes of all files together (default 512 MiB).
    pub max_total_size: u64,
    /// Longest bundle path, in bytes (default 255).
    pub max_path_len: usize,
    /// Most path components, i.e. directory nesting plus the file name (default 16).
    pub max_depth: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self { max_files: 10_000, max_total_size: 512 * 1024 * 1024, max_path_len: 255, max_depth: 16 }
    }
}

/// A relative path inside a bundle: `/`-separated, no `.`/`..`/empty components, no
/// backslashes or control characters. Joining it onto a root cannot leave that root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BundlePath(String);

impl BundlePath {
    /// Checks `s` against the path rules and `limits` (length, depth).
    pub fn parse(s: &str, limits: &BundleLimits) -> Result<Self> {
        let bad = |why: &str| Err(Error::invalid("bundle path", format!("{}: {why}", echo(s))));
        if s.is_empty() {
            return bad("is empty");
        }
        if s.len() > limits.max_path_len {
            return bad(&format!("is longer than {} bytes", limits.max_path_len));
        }
        if s.starts_with('/') {
            return bad("is absolute; bundle paths are relative to the bundle root");
        }
        if s.chars().any(|c| c == '\\' || c == ':' || c.is_control()) {
            return bad("contains a backslash, colon or control character");
        }
        let components: Vec<&str> = s.split('/').collect();
        if components.len() > limits.max_depth {
            return bad(&format!("is nested deeper than {} levels", limits.max_depth));
        }
        for c in &components {
            match *c {
                "" => return bad("has an empty component (// or trailing /)"),
                "." | ".." => return bad("contains . or .., which could escape the deploy directory"),
                _ => {}
            }
        }
        Ok(BundlePath(s.to_string()))
    }

    /// The path as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below `root`. Safe by construction: every component is a plain name.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.0.split('/') {
            p.push(c);
        }
        p
    }
}

impl TryFrom<String> for BundlePath {
    type Error = Error;
    /// Checks the structural rules only; length and depth limits are the caller's, applied
    /// by [`Manifest::validate`].
    fn try_from(s: String) -> Result<Self> {
        let structural = BundleLimits { max_path_len: usize::MAX, max_depth: usize::MAX, ..BundleLimits::default() };
        BundlePath::parse(&s, &structural)
    }
}

impl From<BundlePath> for String {
    fn from(p: BundlePath) -> String {
        p.0
    }
}

/// One file of a bundle as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Where it goes, relative to the bundle root.
    pub path: BundlePath,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub digest: Digest,
    /// Content-defined chunks whose concatenation is the file (large files only). Blobs are
    /// stored and moved per chunk, so an update moves only the chunks that changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
}

/// One content-defined chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Its length in bytes, 1..=1 MiB.
    pub size: u64,
    /// SHA-256 of the chunk; the blob is stored under it.
    pub digest: Digest,
}

/// Files at least this large are split into content-defined chunks.
pub const CHUNKING_THRESHOLD: u64 = 1024 * 1024;
/// FastCDC parameters: small enough that a local edit touches few bytes, large enough that
/// a 100 MB bundle has a few hundred chunks, not tens of thousands.
const CHUNK_MIN: usize = 64 * 1024;
const CHUNK_AVG: usize = 256 * 1024;
const CHUNK_MAX: usize = 1024 * 1024;

impl FileEntry {
    /// The blobs this file is stored and moved as: its chunks, or the file itself.
    pub fn parts(&self) -> Vec<ChunkRef> {
        if self.chunks.is_empty() {
            vec![ChunkRef { size: self.size, digest: self.digest }]
        } else {
            self.chunks.clone()
        }
    }
}

/// Splits content into content-defined chunks (FastCDC): boundaries depend on the content,
/// so an insertion shifts only nearby boundaries and the other chunks keep their digests.
/// `label` names the content in errors.
pub fn chunk_reader(content: impl Read, label: &str) -> Result<Vec<ChunkRef>> {
    let chunker = fastcdc::v2020::StreamCDC::new(content, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    let mut out = Vec::new();
    for chunk in chunker {
        let chunk = chunk.map_err(|e| Error::invalid("bundle", format!("chunking {label} failed: {e}")))?;
        out.push(ChunkRef { size: chunk.length as u64, digest: Digest::of(&chunk.data) });
    }
    Ok(out)
}

/// The signed description of a release's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version; must equal [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The service released.
    pub service_id: ServiceId,
    /// Semantic version as text, exactly as signed; [`semver`](Self::semver) parses it.
    pub version: String,
    /// The channel it is published on.
    pub channel: Channel,
    /// The Land whose release key signs it.
    pub land: LandCode,
    /// When the publisher built it, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Sorted by path, no duplicates.
    pub files: Vec<FileEntry>,
    /// The parameters a Kommune fills in for this release (format 2; absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<crate::params::ParameterSpec>>,
}

impl Manifest {
    /// Parses manifest bytes (as signed) and checks every rule.
    pub fn from_bytes(bytes: &[u8], limits: &BundleLimits) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid("manifest", format!("not a valid manifest: {e}")))?;
        m.validate(limits)?;
        Ok(m)
    }

    /// Canonical bytes: what the Land signs and the hub stores.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }

    /// The version, parsed.
    pub fn semver(&self) -> Result<semver::Version> {
        parse_version(&self.version)
    }

    /// Sum of the file sizes, in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Checks every rule: format, version, file count and size limits, path rules, sorted
    /// unique paths, no path both file and directory, chunks adding up to their file.
    pub fn validate(&self, limits: &BundleLimits) -> Result<()> {
        match (self.format, &self.parameters) {
            (MANIFEST_FORMAT, None) => {}
            (MANIFEST_FORMAT_WITH_SCHEMA, Some(specs)) => crate::params::validate_schema(specs)?,
            (MANIFEST_FORMAT, Some(_)) => {
                return Err(Error::invalid("manifest", "format 1 has no parameters; a manifest with them is format 2"))
            }
            (MANIFEST_FORMAT_WITH_SCHEMA, None) => {
                return Err(Error::invalid("manifest", "format 2 needs its parameters (an empty list for none)"))
            }
            (other, _) => {
                return Err(Error::invalid(
                    "manifest",
                    format!(
                        "format {other} is not supported (expected {MANIFEST_FORMAT} or {MANIFEST_FORMAT_WITH_SCHEMA})"
                    ),
                ))
            }
        }
        let version = self.semver()?;
        if !version.build.is_empty() {
            // Build metadata does not count in semver precedence: 1.0.0 and 1.0.0+x would be
            // two releases no one can tell apart by version.
            return Err(Error::invalid(
                "version",
                format!(
                    "{} has build metadata (+{}); publish a version without it",
                    echo(&self.version),
                    version.build
                ),
            ));
        }
        if self.files.is_empty() {
            return Err(Error::invalid("bundle", "is empty: a release needs at least one file"));
        }
        if self.files.len() > limits.max_files {
            return Err(Error::invalid(
                "bundle",
                format!("has {} files, more than the limit of {}", self.files.len(), limits.max_files),
            ));
        }
        let mut total: u64 = 0;
        let mut seen = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for f in &self.files {
            // Re-check with the caller's limits; serde used the defaults.
            BundlePath::parse(f.path.as_str(), limits)?;
            if !seen.insert(f.path.as_str()) {
                return Err(Error::invalid("bundle", format!("file {} is listed twice", echo(f.path.as_str()))));
            }
            let mut prefix = String::new();
            for c in f.path.as_str().split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d).unwrap_or(&[]) {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
                dirs.insert(prefix.clone());
            }
            total = total.checked_add(f.size).ok_or_else(|| Error::invalid("bundle", "sizes overflow"))?;
            if !f.chunks.is_empty() {
                let sum = f.chunks.iter().try_fold(0u64, |acc, c| acc.checked_add(c.size));
                if sum != Some(f.size) || f.chunks.iter().any(|c| c.size == 0 || c.size > CHUNK_MAX as u64) {
                    return Err(Error::invalid(
                        "manifest",
                        format!(
                            "chunks of {} must be 1..={CHUNK_MAX} bytes each and add up to its size",
                            echo(f.path.as_str())
                        ),
                    ));
                }
            }
        }
        if let Some(clash) = seen.iter().find(|p| dirs.contains(**p)) {
            return Err(Error::invalid("bundle", format!("{} is both a file and a directory", echo(clash))));
        }
        if !self.files.windows(2).all(|w| w[0].path < w[1].path) {
            return Err(Error::invalid("manifest", "files must be sorted by path"));
        }
        if total > limits.max_total_size {
            return Err(Error::invalid(
                "bundle",
                format!("is {total} bytes, more than the limit of {} bytes", limits.max_total_size),
            ));
        }
        Ok(())
    }

    /// Every blob a release is stored and moved as: each file's digest, and the digests of
    /// the chunks of chunked files. Reads `bytes` without checking limits (they were checked
    /// when the release was published); bytes that are no manifest give none.
    pub fn blob_digests(bytes: &[u8]) -> Vec<Digest> {
        let Ok(m) = serde_json::from_slice::<Manifest>(bytes) else { return Vec::new() };
        let mut out: Vec<Digest> =
            m.files.iter().flat_map(|f| std::iter::once(f.digest).chain(f.chunks.iter().map(|c| c.digest))).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The content digest of a release: the digest of its manifest bytes.
    pub fn content_digest(bytes: &[u8]) -> Digest {
        Digest::of(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry { path: BundlePath(path.into()), size, chunks: vec![], digest: Digest::of(path.as_bytes()) }
    }

    fn manifest(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: 1,
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.0.0".into(),
            channel: Channel::stable(),
            land: "05".parse().unwrap(),
            created_at_ms: 0,
            parameters: None,
            files,
        }
    }

    #[test]
    fn paths_that_could_escape_are_refused() {
        let l = BundleLimits::default();
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\\..\\b", "C:/x", "", "a/"] {
            assert!(BundlePath::parse(bad, &l).is_err(), "{bad}");
        }
        assert!(BundlePath::parse("forms/antrag.json", &l).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let l = BundleLimits { max_depth: 3, ..Default::default() };
        assert!(BundlePath::parse("a/b/c", &l).is_ok());
        assert!(BundlePath::parse("a/b/c/d", &l).is_err());
    }

    #[test]
    fn duplicate_and_clashing_paths_are_refused() {
        let l = BundleLimits::default();
        assert!(manifest(vec![entry("a", 1), entry("a", 1)]).validate(&l).is_err());
        assert!(manifest(vec![entry("a", 1), entry("a/b", 1)]).validate(&l).is_err());
        assert!(manifest(vec![entry("a/b", 1), entry("a/c", 1)]).validate(&l).is_ok());
    }

    #[test]
    fn empty_and_oversized_bundles_are_refused() {
        let l = BundleLimits { max_total_size: 10, ..Default::default() };
        assert!(manifest(vec![]).validate(&l).unwrap_err().to_string().contains("empty"));
        assert!(manifest(vec![entry("a", 11)]).validate(&l).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn manifest_round_trips_through_bytes() {
        let m = manifest(vec![entry("a", 1)]);
        let again = Manifest::from_bytes(&m.to_bytes(), &BundleLimits::default()).unwrap();
        assert_eq!(m, again);
        let mut bad = m.clone();
        bad.version = "1.0".into();
        assert!(Manifest::from_bytes(&bad.to_bytes(), &BundleLimits::default()).is_err());
    }

    #[test]
    fn digest_parses_its_display_form() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:zz".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
    }
}
