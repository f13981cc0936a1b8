//! Crash recovery: what an interrupted deploy left behind is removed or put back on start.

use super::error::{io_err, DeployError};
use super::fs::{point_current, sync_dir, unique};
use super::{Deployer, RecoveryReport, CURRENT, CURRENT_NEW, HEALTH_LOG, REPLACED, RESERVED_DIR, STAGING, UNCONFIRMED};
use std::fs;
use std::io;
use tracing::warn;

impl Deployer {
    /// Crash recovery on start: removes scratch entries of interrupted deploys.
    pub fn recover(&self) -> Result<RecoveryReport, DeployError> {
        let mut report = RecoveryReport::default();
        let services = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(io_err("list", &self.root)(e)),
        };
        for service in services {
            let service = service.map_err(io_err("list", &self.root))?;
            if !service.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let sdir = service.path();
            // A switch whose health check never finished (the node died during it) is not
            // trusted: point `current` back and drop the unconfirmed version. The agent will
            // deploy and check it again.
            if let Ok(cur) = fs::read_link(sdir.join(CURRENT)) {
                let vdir = sdir.join(&cur);
                if let Ok(prev) = fs::read_to_string(vdir.join(RESERVED_DIR).join(UNCONFIRMED)) {
                    let prev = prev.trim().to_string();
                    point_current(&sdir, if prev.is_empty() { None } else { Some(&prev) })?;
                    let trash = sdir.join(format!("{STAGING}{}-{}", cur.to_string_lossy(), unique()));
                    fs::rename(&vdir, &trash).map_err(io_err("move unconfirmed version out of", &vdir))?;
                    warn!(path = %vdir.display(), "recovery: rolled back a switch whose health check never finished");
                    report.restored.push(vdir);
                }
            }
            for entry in fs::read_dir(&sdir).map_err(io_err("list", &sdir))? {
                let entry = entry.map_err(io_err("list", &sdir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if let Some(rest) = name.strip_prefix(REPLACED) {
                    // `.replaced-<version>-<unique>`; unique has no '-'. If the crash came
                    // before the new copy arrived, `current` may name this dir: restore it.
                    let version = rest.rsplit_once('-').map_or(rest, |(v, _)| v);
                    let vdir = sdir.join(version);
                    if !version.is_empty() && fs::symlink_metadata(&vdir).is_err() {
                        fs::rename(&path, &vdir).map_err(io_err("restore", &path))?;
                        warn!(path = %vdir.display(), "recovery: restored a version set aside by an interrupted deploy");
                        report.restored.push(vdir);
                        continue;
                    }
                } else if !(name.starts_with(STAGING) || name.starts_with(CURRENT_NEW) || name.starts_with(HEALTH_LOG))
                {
                    continue;
                }
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let removed = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                removed.map_err(io_err("remove", &path))?;
                warn!(path = %path.display(), "recovery: removed leftover of an interrupted deploy");
                report.removed.push(path);
            }
            sync_dir(&sdir)?;
        }
        Ok(report)
    }
}
