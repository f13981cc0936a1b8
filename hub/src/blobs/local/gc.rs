//! Cleaning up after crashed publishes, and removing content no release names.

use super::upload::{promote_dir, RECIPE, SEALED, STAGED};
use super::{io, LocalBlobs};
use crate::blobs::{BlobError, GcReport};
use efa_domain::bundle::Digest;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

impl LocalBlobs {
    /// Finishes or removes staged uploads: one sealed for a release that `committed`
    /// (`"service version"`) is promoted; any other older than `grace` is removed (younger
    /// ones may belong to a publish in progress).
    pub(crate) fn recover(&self, grace: Duration, committed: impl Fn(&str) -> bool) -> Result<GcReport, BlobError> {
        let mut report = GcReport::default();
        let staged = self.root.join(STAGED);
        for entry in std::fs::read_dir(&staged).map_err(io(&staged))? {
            let dir = entry.map_err(io(&staged))?.path();
            let sealed = std::fs::read_to_string(dir.join(SEALED)).ok();
            if sealed.as_deref().is_some_and(&committed) {
                promote_dir(self, &dir)?;
                report.uploads_promoted += 1;
            } else if age(&dir) >= grace {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                report.uploads_removed += 1;
            }
        }
        Ok(report)
    }

    /// Removes blobs and recipes that no published release names (`referenced`) and that
    /// are older than `grace`, then finishes or removes staged uploads as
    /// [`recover`](Self::recover) does.
    pub(crate) fn collect_garbage(
        &self,
        grace: Duration,
        referenced: impl Fn(&Digest) -> bool,
        committed: impl Fn(&str) -> bool,
    ) -> Result<GcReport, BlobError> {
        let mut report = self.recover(grace, committed)?;
        for shard in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let shard = shard.map_err(io(&self.root))?.path();
            let name = shard.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.len() != 2 || !shard.is_dir() {
                continue; // tmp/, staged/
            }
            for entry in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let path = entry.map_err(io(&shard))?.path();
                let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let Ok(digest) = format!("sha256:{}", file.strip_suffix(RECIPE).unwrap_or(file)).parse::<Digest>()
                else {
                    continue;
                };
                if referenced(&digest) || age(&path) < grace {
                    continue;
                }
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&path).map_err(io(&path))?;
                report.blobs_removed += 1;
                report.bytes_removed += size;
            }
        }
        Ok(report)
    }
}
