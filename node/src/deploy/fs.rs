//! Durable file operations of the deployer: every write is fsynced, and so is the directory
//! that names it.

use super::error::{io_err, DeployError};
use super::{CURRENT, CURRENT_NEW};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;

pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let mut f = File::create_new(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), DeployError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Atomically points `<sdir>/current` at `version`, or removes it for `None`.
pub(super) fn point_current(sdir: &Path, version: Option<&str>) -> Result<(), DeployError> {
    let link = sdir.join(CURRENT);
    match version {
        Some(version) => {
            let tmp = sdir.join(format!("{CURRENT_NEW}{}", unique()));
            std::os::unix::fs::symlink(version, &tmp).map_err(io_err("create symlink", &tmp))?;
            if let Err(e) = fs::rename(&tmp, &link) {
                remove_best_effort(&tmp);
                return Err(io_err("replace symlink", &link)(e));
            }
        }
        None => match fs::remove_file(&link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove symlink", &link)(e)),
            _ => {}
        },
    }
    sync_dir(sdir)
}

pub(super) fn remove_best_effort(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "could not remove; recovery will retry on next start");
    }
}

/// Removes a scratch path when dropped, unless disarmed by taking the path out.
pub(super) struct RemoveOnDrop(pub(super) Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_best_effort(&path);
        }
    }
}

/// A name suffix unique within this host: pid, time and a counter. No '-', so recovery can
/// split it off a version.
pub(super) fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}x{nanos:x}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
