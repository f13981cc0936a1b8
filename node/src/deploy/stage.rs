//! Steps 1–3 of a deploy: copy and verify every file into staging, render templates, write
//! the node's metadata. Nothing here touches what is served.

use super::error::{io_err, DeployError};
use super::fs::{sync_dir, write_new};
use super::{DeployRequest, Deployer, ReleaseRecord, RESERVED_DIR, TEMPLATE_SUFFIX};
use efa_domain::bundle::{BundlePath, Digest, Hasher, Manifest};
use efa_domain::params::render_template;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

impl Deployer {
    pub(super) fn stage(&self, req: &DeployRequest, version: &str, staging: &Path) -> Result<(), DeployError> {
        let mut dirs = BTreeSet::from([staging.to_path_buf()]);
        for entry in &req.manifest.files {
            let dest = entry.path.under(staging);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                dirs.insert(parent.to_path_buf());
            }
            let blob = (req.blob_path)(&entry.digest);
            let (actual, size) = copy_hashed(&blob, &dest, entry.size)?;
            let file = entry.path.as_str().to_string();
            if size != entry.size {
                return Err(DeployError::SizeMismatch { file, blob, expected: entry.size, actual: size });
            }
            if actual != entry.digest {
                return Err(DeployError::DigestMismatch { file, blob, expected: entry.digest, actual });
            }
        }
        for entry in &req.manifest.files {
            let Some(target) = entry.path.as_str().strip_suffix(TEMPLATE_SUFFIX) else {
                continue;
            };
            let file = entry.path.as_str().to_string();
            let src = entry.path.under(staging);
            let bytes = fs::read(&src).map_err(io_err("read", &src))?;
            let text = String::from_utf8(bytes).map_err(|_| DeployError::Template {
                file: file.clone(),
                source: efa_domain::Error::invalid("template", "is not UTF-8 text"),
            })?;
            let rendered =
                render_template(&text, req.params).map_err(|source| DeployError::Template { file, source })?;
            // check_paths made sure the target is a valid bundle path.
            let dest = staging.join(target);
            write_new(&dest, rendered.as_bytes())?;
            fs::remove_file(&src).map_err(io_err("remove", &src))?;
        }
        let meta = staging.join(RESERVED_DIR);
        fs::create_dir(&meta).map_err(io_err("create", &meta))?;
        dirs.insert(meta.clone());
        let params = serde_json::to_vec_pretty(req.params).map_err(io::Error::other);
        let params = params.map_err(io_err("serialize parameters for", &meta))?;
        write_new(&meta.join("parameters.json"), &params)?;
        let record = ReleaseRecord {
            service: req.service.to_string(),
            version: version.to_string(),
            content_digest: req.content_digest.to_string(),
            deployed_at_ms: efa_domain::now_ms(),
        };
        let record = serde_json::to_vec_pretty(&record).map_err(io::Error::other);
        let record = record.map_err(io_err("serialize release record for", &meta))?;
        write_new(&meta.join("release.json"), &record)?;
        // Children before parents, so each directory's entries are durable before it is.
        for dir in dirs.iter().rev() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Refuses reserved paths and templates whose output would clash, before touching disk.
pub(super) fn check_paths(manifest: &Manifest) -> Result<(), DeployError> {
    let reserved = |p: &str| p.split('/').next() == Some(RESERVED_DIR);
    let paths: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for p in &paths {
        if reserved(p) {
            return Err(DeployError::ReservedPath { path: p.to_string() });
        }
        let Some(target) = p.strip_suffix(TEMPLATE_SUFFIX) else {
            continue;
        };
        if let Err(source) = BundlePath::parse(target, &Default::default()) {
            return Err(DeployError::Template { file: p.to_string(), source });
        }
        if reserved(target) {
            return Err(DeployError::ReservedPath { path: p.to_string() });
        }
        let is_dir =
            paths.range(format!("{target}/").as_str()..).next().is_some_and(|q| q.starts_with(&format!("{target}/")));
        if paths.contains(target) || is_dir {
            return Err(DeployError::TemplateTargetExists { template: p.to_string(), target: target.to_string() });
        }
    }
    Ok(())
}

/// Copies `src` to a new file `dest`, hashing on the way. Stops reading once the copy is
/// larger than `limit`, so a damaged cache cannot fill the disk.
fn copy_hashed(src: &Path, dest: &Path, limit: u64) -> Result<(Digest, u64), DeployError> {
    let mut input = File::open(src).map_err(io_err("open cached blob", src))?;
    let mut out = File::create_new(dest).map_err(io_err("create", dest))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    while len <= limit {
        let n = input.read(&mut buf).map_err(io_err("read cached blob", src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err("write", dest))?;
        len += n as u64;
    }
    out.sync_all().map_err(io_err("fsync", dest))?;
    Ok((hasher.finish(), len))
}
