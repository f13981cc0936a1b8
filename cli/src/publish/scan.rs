//! Turning a directory into manifest entries: the publisher's side of a bundle.

use super::PublishError;
use efa_domain::bundle::{chunk_reader, BundleLimits, BundlePath, Digest, FileEntry, Hasher, CHUNKING_THRESHOLD};
use std::io::Read;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io { path: path.to_path_buf(), source }
}

/// Digest and length of a file's content, streamed.
pub fn digest_file(path: &Path) -> Result<(Digest, u64), PublishError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finish(), len))
}

/// Walks `root` and describes every regular file, large files with their content-defined
/// chunks. Symlinks and special files are refused, because a bundle must mean the same on
/// every machine.
pub fn scan_dir(root: &Path, limits: &BundleLimits) -> Result<Vec<(FileEntry, PathBuf)>, PublishError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel = rel
                    .to_str()
                    .ok_or_else(|| {
                        efa_domain::Error::invalid("bundle path", format!("{} is not UTF-8", rel.display()))
                    })?
                    .replace(std::path::MAIN_SEPARATOR, "/");
                let bundle_path = BundlePath::parse(&rel, limits)?;
                let (digest, size) = digest_file(&path)?;
                let chunks = if size >= CHUNKING_THRESHOLD {
                    let f = std::fs::File::open(&path).map_err(io(&path))?;
                    chunk_reader(std::io::BufReader::new(f), &path.display().to_string())?
                } else {
                    Vec::new()
                };
                out.push((FileEntry { path: bundle_path, size, digest, chunks }, path));
            } else {
                return Err(efa_domain::Error::invalid(
                    "bundle",
                    format!("{} is a symlink or special file; bundles hold regular files only", path.display()),
                )
                .into());
            }
        }
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(out)
}
