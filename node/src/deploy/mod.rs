//! The local deployer of a Kommune node.
//!
//! Layout below `root`:
//! - `<service>/<version>/` the unpacked bundle, with `.efa/parameters.json` and `.efa/release.json`;
//! - `<service>/current` a relative symlink to `<version>`: what is served.
//!
//! Every step that can fail happens in a staging dir, so a failed deploy never touches
//! `current`. Switching is one `rename` of a fresh symlink over `current`, which is atomic
//! on POSIX. Names starting with `.` or `current.new-` are scratch and are cleaned up by
//! [`Deployer::recover`] after a crash. The API is synchronous; run it in `spawn_blocking`.
//! One deploy per service at a time: the caller serialises deploys of the same service.
//!
//! By concern: this file holds the numbered steps of [`Deployer::deploy`] and the version
//! bookkeeping; [`stage`](self::stage) fills the staging dir, `health` runs the health
//! command, `recover` cleans up after a crash, `fs` holds the durable file operations.

mod error;
mod fs;
mod health;
mod recover;
mod stage;
#[cfg(test)]
mod tests;

pub use error::DeployError;

use self::fs::{point_current, remove_best_effort, sync_dir, unique, write_new, RemoveOnDrop};
use efa_domain::bundle::{Digest, Manifest};
use efa_domain::model::ids::ServiceId;
use efa_domain::params::ParamValue;
use error::io_err;
use serde::{Deserialize, Serialize};
use stage::check_paths;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Bundle paths below this first component are the node's own metadata.
pub const RESERVED_DIR: &str = ".efa";
const CURRENT: &str = "current";
/// Marker in `<version>/.efa/` while the version serves but its health check has not passed.
const UNCONFIRMED: &str = "unconfirmed";
const STAGING: &str = ".staging-";
const REPLACED: &str = ".replaced-";
const HEALTH_LOG: &str = ".health-";
const CURRENT_NEW: &str = "current.new-";
const TEMPLATE_SUFFIX: &str = ".tmpl";
/// How much health command output ends up in a rollback reason.
const OUTPUT_TAIL: u64 = 2048;
/// How long a health command may run unless the node config says otherwise.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// One release to deploy, with everything the deployer needs and nothing it fetches itself.
pub struct DeployRequest<'a> {
    /// The service to deploy; must match the manifest's.
    pub service: &'a ServiceId,
    /// The verified manifest of the release.
    pub manifest: &'a Manifest,
    /// The release's content digest, recorded in `.efa/release.json`.
    pub content_digest: &'a Digest,
    /// Where the local cache keeps the blob with this digest.
    pub blob_path: &'a dyn Fn(&Digest) -> PathBuf,
    /// Already validated against the service's parameter schema.
    pub params: &'a BTreeMap<String, ParamValue>,
    /// Shell command run in the new version dir after the switch; a non-zero exit or a timeout
    /// rolls back. `None`: no check, the switch is final.
    pub health_command: Option<&'a str>,
}

/// How a deploy that ran to the end turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployOutcome {
    /// `current` points at the new version.
    Deployed {
        /// The version now served.
        version: String,
        /// The version served before; `None` on a first install or after retirement.
        previous: Option<String>,
    },
    /// The health check failed and `current` points where it did before.
    RolledBack {
        /// The version whose health check failed.
        failed_version: String,
        /// The version served again; `None` if nothing was served before.
        restored: Option<String>,
        /// Why the check failed, with the tail of its output.
        reason: String,
    },
}

/// Content of `<version>/.efa/release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The service id.
    pub service: String,
    /// The version, in canonical semver form (also the dir name).
    pub version: String,
    /// The release's content digest, `sha256:<64 hex>`.
    pub content_digest: String,
    /// When it was staged, ms since the Unix epoch.
    pub deployed_at_ms: i64,
}

/// What [`Deployer::recover`] cleaned up; empty after a clean shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Scratch entries left by an interrupted deploy, now deleted.
    pub removed: Vec<PathBuf>,
    /// Version dirs that were set aside for replacement and put back, because the
    /// replacement never arrived.
    pub restored: Vec<PathBuf>,
}

/// Deploys releases of any number of services below one root directory.
pub struct Deployer {
    root: PathBuf,
    keep_versions: usize,
    health_timeout: Duration,
}

impl Deployer {
    /// A deployer below `root` (created on first deploy) that keeps the newest
    /// `keep_versions` version dirs per service, plus the current and the one it replaced.
    pub fn new(root: impl Into<PathBuf>, keep_versions: usize) -> Self {
        Self { root: root.into(), keep_versions, health_timeout: DEFAULT_HEALTH_TIMEOUT }
    }

    /// How long a health command may run before it counts as failed (default
    /// [`DEFAULT_HEALTH_TIMEOUT`]).
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn service_dir(&self, service: &ServiceId) -> PathBuf {
        // ServiceId is a slug (a-z, 0-9, '-'), so it is a safe single path component.
        self.root.join(service.as_str())
    }

    /// Stages, switches to and health-checks a release (steps below). An `Err` before the
    /// switch leaves `current` as it was; a failed health check is an `Ok(RolledBack)`.
    pub fn deploy(&self, req: &DeployRequest) -> Result<DeployOutcome, DeployError> {
        // Callers pass verified manifests; checking again keeps errors precise (a duplicate
        // path is a manifest error, not an I/O error) whatever the caller did.
        req.manifest
            .validate(&efa_domain::bundle::BundleLimits::default())
            .map_err(|source| DeployError::InvalidManifest { source })?;
        let service = req.service;
        if req.manifest.service_id != *service {
            return Err(DeployError::ServiceMismatch {
                requested: service.to_string(),
                manifest: req.manifest.service_id.to_string(),
            });
        }
        // The canonical form only holds [0-9A-Za-z.+-], so it is a safe directory name.
        let version = req
            .manifest
            .semver()
            .map_err(|source| DeployError::InvalidVersion { version: req.manifest.version.clone(), source })?
            .to_string();
        check_paths(req.manifest)?;

        let sdir = self.service_dir(service);
        std::fs::create_dir_all(&sdir).map_err(io_err("create", &sdir))?;
        sync_dir(&self.root)?;

        // Steps 1–3: everything that can fail happens in staging.
        let staging = sdir.join(format!("{STAGING}{version}-{}", unique()));
        let mut guard = RemoveOnDrop(Some(staging.clone()));
        std::fs::create_dir(&staging).map_err(io_err("create", &staging))?;
        self.stage(req, &version, &staging)?;

        // Step 4: move into place. An earlier copy of the same version is set aside, not
        // deleted, so a failing health check can put it back.
        let previous = self.current_version(service)?;
        let vdir = sdir.join(&version);
        let aside = if std::fs::symlink_metadata(&vdir).is_ok() {
            let aside = sdir.join(format!("{REPLACED}{version}-{}", unique()));
            std::fs::rename(&vdir, &aside).map_err(io_err("set aside", &vdir))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&staging, &vdir) {
            if let Some(aside) = &aside {
                if let Err(e) = std::fs::rename(aside, &vdir) {
                    warn!(path = %aside.display(), error = %e, "could not put the replaced version back; recovery will");
                }
            }
            return Err(io_err("move staged release to", &vdir)(e));
        }
        guard.0 = None;
        sync_dir(&sdir)?;

        // Step 5: switch. Until the health check passes, a marker in the new version names
        // the previous one, so a crash mid-check is rolled back by `recover`, not trusted.
        let unconfirmed = vdir.join(RESERVED_DIR).join(UNCONFIRMED);
        write_new(&unconfirmed, previous.as_deref().unwrap_or("").as_bytes())?;
        // On failure undo step 4, so the old state is back.
        if let Err(e) = point_current(&sdir, Some(&version)) {
            self.undo_install(&sdir, &version, aside)?;
            return Err(e);
        }
        info!(service = %service, %version, previous = ?previous, "switched current to the new version");

        // Step 6: health check against the switched version.
        if let Some(command) = req.health_command {
            let failure = match self.run_health(command, service, &version, &vdir, &sdir) {
                Ok(None) => None,
                Ok(Some(reason)) => Some(Ok(reason)),
                Err(e) => Some(Err(e)),
            };
            if let Some(failure) = failure {
                self.roll_back(&sdir, service, &version, previous.as_deref(), aside)?;
                let reason = failure?;
                warn!(service = %service, failed_version = %version, restored = ?previous, %reason, "health check failed, rolled back");
                return Ok(DeployOutcome::RolledBack { failed_version: version, restored: previous, reason });
            }
        }

        std::fs::remove_file(&unconfirmed).map_err(io_err("remove", &unconfirmed))?;
        sync_dir(&vdir.join(RESERVED_DIR))?;

        // Step 7: clean up. The deploy already succeeded, so failures here only warn.
        if let Some(aside) = aside {
            remove_best_effort(&aside);
        }
        if let Err(e) = self.prune(service, &version, previous.as_deref()) {
            warn!(service = %service, error = %e, "could not prune old versions");
        }
        info!(service = %service, %version, previous = ?previous, "deployed");
        Ok(DeployOutcome::Deployed { version, previous })
    }

    /// Puts `current` back where it was and removes the failed version dir.
    fn roll_back(
        &self,
        sdir: &Path,
        service: &ServiceId,
        version: &str,
        previous: Option<&str>,
        aside: Option<PathBuf>,
    ) -> Result<(), DeployError> {
        let result = (|| {
            // When the same version was redeployed, `current` already names the right dir
            // once the old copy is back; switching first would point at the failed copy.
            if previous != Some(version) {
                point_current(sdir, previous)?;
            }
            self.undo_install(sdir, version, aside)
        })();
        result.map_err(|e| DeployError::RollbackFailed {
            service: service.to_string(),
            failed_version: version.to_string(),
            source: Box::new(e),
        })
    }

    /// Removes `<version>` and puts back a copy that was set aside for it.
    fn undo_install(&self, sdir: &Path, version: &str, aside: Option<PathBuf>) -> Result<(), DeployError> {
        let vdir = sdir.join(version);
        // Renaming first makes removal atomic from a reader's view; the staging name lets
        // recovery finish the job if we crash halfway through remove_dir_all.
        let trash = sdir.join(format!("{STAGING}{version}-{}", unique()));
        std::fs::rename(&vdir, &trash).map_err(io_err("move failed release out of", &vdir))?;
        if let Some(aside) = aside {
            std::fs::rename(&aside, &vdir).map_err(io_err("restore replaced release from", &aside))?;
        }
        sync_dir(sdir)?;
        remove_best_effort(&trash);
        Ok(())
    }

    /// Removes version dirs beyond the newest `keep_versions`, never `current` or the one
    /// just replaced (the natural rollback target).
    fn prune(&self, service: &ServiceId, current: &str, previous: Option<&str>) -> Result<(), DeployError> {
        let sdir = self.service_dir(service);
        let versions = self.installed_versions(service)?;
        for v in versions.into_iter().rev().skip(self.keep_versions) {
            let name = v.to_string();
            if name == current || Some(name.as_str()) == previous {
                continue;
            }
            let trash = sdir.join(format!("{STAGING}{name}-{}", unique()));
            std::fs::rename(sdir.join(&name), &trash).map_err(io_err("move old release out of", &sdir))?;
            remove_best_effort(&trash);
            info!(service = %service, version = %name, "pruned old version");
        }
        Ok(())
    }

    /// The version `current` points to, if any.
    pub fn current_version(&self, service: &ServiceId) -> Result<Option<String>, DeployError> {
        let link = self.service_dir(service).join(CURRENT);
        match std::fs::read_link(&link) {
            Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read symlink", &link)(e)),
        }
    }

    /// Installed version dirs, oldest first.
    pub fn installed_versions(&self, service: &ServiceId) -> Result<Vec<semver::Version>, DeployError> {
        let sdir = self.service_dir(service);
        let entries = match std::fs::read_dir(&sdir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &sdir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &sdir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if let (true, Ok(v)) = (is_dir, semver::Version::parse(&name)) {
                if v.to_string() == name {
                    out.push(v);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Points `current` at an installed version (explicit local rollback). Returns the
    /// version it pointed to before.
    pub fn switch_to(&self, service: &ServiceId, version: &str) -> Result<Option<String>, DeployError> {
        let installed = self.installed_versions(service)?;
        if !installed.iter().any(|v| v.to_string() == version) {
            let list: Vec<String> = installed.iter().map(|v| v.to_string()).collect();
            return Err(DeployError::UnknownVersion {
                service: service.to_string(),
                version: version.to_string(),
                installed: if list.is_empty() { "none".into() } else { list.join(", ") },
            });
        }
        let previous = self.current_version(service)?;
        point_current(&self.service_dir(service), Some(version))?;
        info!(service = %service, %version, previous = ?previous, "switched current version");
        Ok(previous)
    }

    /// Stops serving the service: removes `current`, keeps the version dirs.
    pub fn retire(&self, service: &ServiceId) -> Result<(), DeployError> {
        let sdir = self.service_dir(service);
        if std::fs::symlink_metadata(&sdir).is_err() {
            return Ok(());
        }
        point_current(&sdir, None)?;
        info!(service = %service, "retired: nothing is served any more");
        Ok(())
    }
}
