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

use efa_registry::bundle::{BundlePath, Digest, Hasher, Manifest};
use efa_registry::model::ids::ServiceId;
use efa_registry::params::{render_template, ParamValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot {action} {path}: {source}; check permissions and free space of the deploy directory")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bundle file {file}: local blob {blob} is {actual} bytes, the manifest says {expected}; the local cache is damaged, delete the blob and fetch the release again")]
    SizeMismatch { file: String, blob: PathBuf, expected: u64, actual: u64 },
    #[error("bundle file {file}: local blob {blob} has digest {actual}, the manifest says {expected}; the local cache is damaged or tampered with, delete the blob and fetch the release again")]
    DigestMismatch { file: String, blob: PathBuf, expected: Digest, actual: Digest },
    #[error("cannot render template {file}: {source}; set the missing parameter in the node config or ask the publishing Land to fix the template")]
    Template {
        file: String,
        #[source]
        source: efa_registry::error::Error,
    },
    #[error("template {template} renders to {target}, which the bundle also contains; the publishing Land must ship only one of them")]
    TemplateTargetExists { template: String, target: String },
    #[error("the manifest is invalid: {source}; the release cannot be deployed")]
    InvalidManifest {
        #[source]
        source: efa_registry::error::Error,
    },
    #[error("bundle path {path} is reserved: the node keeps its own metadata under {RESERVED_DIR}/; the publishing Land must rename it")]
    ReservedPath { path: String },
    #[error(
        "the manifest is for service {manifest}, but the deploy was requested for {requested}; refusing to mix them up"
    )]
    ServiceMismatch { requested: String, manifest: String },
    #[error("release version {version:?} is not usable as a directory name: {source}")]
    InvalidVersion {
        version: String,
        #[source]
        source: efa_registry::error::Error,
    },
    #[error("health command {command:?} for {service} {version} could not be started: {source}; the deploy was rolled back, check the command and that `sh` exists")]
    HealthCommandStart {
        command: String,
        service: String,
        version: String,
        #[source]
        source: io::Error,
    },
    #[error("version {version:?} of {service} is not installed (installed: {installed}); deploy it first")]
    UnknownVersion { service: String, version: String, installed: String },
    #[error("rolling back {service} after failed version {failed_version} did not complete: {source}; run recovery and check where `current` points")]
    RollbackFailed {
        service: String,
        failed_version: String,
        #[source]
        source: Box<DeployError>,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeployError + 'a {
    move |source| DeployError::Io { action, path: path.to_path_buf(), source }
}

pub struct DeployRequest<'a> {
    pub service: &'a ServiceId,
    pub manifest: &'a Manifest,
    pub content_digest: &'a Digest,
    /// Where the local cache keeps the blob with this digest.
    pub blob_path: &'a dyn Fn(&Digest) -> PathBuf,
    /// Already validated against the service's parameter schema.
    pub params: &'a BTreeMap<String, ParamValue>,
    pub health_command: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployOutcome {
    Deployed { version: String, previous: Option<String> },
    RolledBack { failed_version: String, restored: Option<String>, reason: String },
}

/// Content of `<version>/.efa/release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub service: String,
    pub version: String,
    pub content_digest: String,
    pub deployed_at_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Scratch entries left by an interrupted deploy, now deleted.
    pub removed: Vec<PathBuf>,
    /// Version dirs that were set aside for replacement and put back, because the
    /// replacement never arrived.
    pub restored: Vec<PathBuf>,
}

pub struct Deployer {
    root: PathBuf,
    keep_versions: usize,
    health_timeout: Duration,
}

impl Deployer {
    pub fn new(root: impl Into<PathBuf>, keep_versions: usize) -> Self {
        Self { root: root.into(), keep_versions, health_timeout: DEFAULT_HEALTH_TIMEOUT }
    }

    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn service_dir(&self, service: &ServiceId) -> PathBuf {
        // ServiceId is a slug (a-z, 0-9, '-'), so it is a safe single path component.
        self.root.join(service.as_str())
    }

    pub fn deploy(&self, req: &DeployRequest) -> Result<DeployOutcome, DeployError> {
        // Callers pass verified manifests; checking again keeps errors precise (a duplicate
        // path is a manifest error, not an I/O error) whatever the caller did.
        req.manifest
            .validate(&efa_registry::bundle::BundleLimits::default())
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
        fs::create_dir_all(&sdir).map_err(io_err("create", &sdir))?;
        sync_dir(&self.root)?;

        // Steps 1–3: everything that can fail happens in staging.
        let staging = sdir.join(format!("{STAGING}{version}-{}", unique()));
        let mut guard = RemoveOnDrop(Some(staging.clone()));
        fs::create_dir(&staging).map_err(io_err("create", &staging))?;
        self.stage(req, &version, &staging)?;

        // Step 4: move into place. An earlier copy of the same version is set aside, not
        // deleted, so a failing health check can put it back.
        let previous = self.current_version(service)?;
        let vdir = sdir.join(&version);
        let aside = if fs::symlink_metadata(&vdir).is_ok() {
            let aside = sdir.join(format!("{REPLACED}{version}-{}", unique()));
            fs::rename(&vdir, &aside).map_err(io_err("set aside", &vdir))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = fs::rename(&staging, &vdir) {
            if let Some(aside) = &aside {
                if let Err(e) = fs::rename(aside, &vdir) {
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

        fs::remove_file(&unconfirmed).map_err(io_err("remove", &unconfirmed))?;
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

    fn stage(&self, req: &DeployRequest, version: &str, staging: &Path) -> Result<(), DeployError> {
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
                source: efa_registry::error::Error::invalid("template", "is not UTF-8 text"),
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
            deployed_at_ms: efa_registry::now_ms(),
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
        fs::rename(&vdir, &trash).map_err(io_err("move failed release out of", &vdir))?;
        if let Some(aside) = aside {
            fs::rename(&aside, &vdir).map_err(io_err("restore replaced release from", &aside))?;
        }
        sync_dir(sdir)?;
        remove_best_effort(&trash);
        Ok(())
    }

    /// Runs the health command. `Ok(None)` means healthy, `Ok(Some(reason))` unhealthy.
    fn run_health(
        &self,
        command: &str,
        service: &ServiceId,
        version: &str,
        vdir: &Path,
        sdir: &Path,
    ) -> Result<Option<String>, DeployError> {
        // Output goes to a file rather than pipes: a grandchild that outlives the shell
        // would keep a pipe open and block us, a file never does.
        let log_path = sdir.join(format!("{HEALTH_LOG}{}.log", unique()));
        let log = File::create(&log_path).map_err(io_err("create", &log_path))?;
        let _remove_log = RemoveOnDrop(Some(log_path.clone()));
        let start_err = |source| DeployError::HealthCommandStart {
            command: command.to_string(),
            service: service.to_string(),
            version: version.to_string(),
            source,
        };
        let stdout = log.try_clone().map_err(start_err)?;
        let stderr = log.try_clone().map_err(start_err)?;
        let deploy_dir = std::path::absolute(vdir).unwrap_or_else(|_| vdir.to_path_buf());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(vdir)
            .env("EFA_SERVICE", service.as_str())
            .env("EFA_VERSION", version)
            .env("EFA_DEPLOY_DIR", &deploy_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group, so a timeout kills everything the command started.
            .process_group(0)
            .spawn()
            .map_err(start_err)?;
        // A timeout too large to represent means "wait forever".
        let deadline = Instant::now().checked_add(self.health_timeout);
        let status: Option<ExitStatus> = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "could not poll health command; treating it as timed out");
                    break None;
                }
            }
            let pause = Duration::from_millis(20);
            match deadline {
                Some(deadline) if Instant::now() >= deadline => break None,
                Some(deadline) => std::thread::sleep(deadline.saturating_duration_since(Instant::now()).min(pause)),
                None => std::thread::sleep(pause),
            }
        };
        if status.is_none() {
            let group = format!("kill -KILL -{}", child.id());
            if let Err(e) = Command::new("sh").arg("-c").arg(group).stdin(Stdio::null()).status() {
                warn!(error = %e, "could not kill the health command's process group");
            }
            // Reap the shell so it does not linger as a zombie; errors mean it is gone.
            let _ = child.kill();
            let _ = child.wait();
        }
        let tail = read_tail(&log_path);
        Ok(match status {
            Some(s) if s.success() => None,
            Some(s) => Some(format!("health command {command:?} failed ({s}); output:\n{tail}")),
            None => Some(format!(
                "health command {command:?} timed out after {:?} and was killed; output:\n{tail}",
                self.health_timeout
            )),
        })
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
            fs::rename(sdir.join(&name), &trash).map_err(io_err("move old release out of", &sdir))?;
            remove_best_effort(&trash);
            info!(service = %service, version = %name, "pruned old version");
        }
        Ok(())
    }

    /// The version `current` points to, if any.
    pub fn current_version(&self, service: &ServiceId) -> Result<Option<String>, DeployError> {
        let link = self.service_dir(service).join(CURRENT);
        match fs::read_link(&link) {
            Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read symlink", &link)(e)),
        }
    }

    /// Installed version dirs, oldest first.
    pub fn installed_versions(&self, service: &ServiceId) -> Result<Vec<semver::Version>, DeployError> {
        let sdir = self.service_dir(service);
        let entries = match fs::read_dir(&sdir) {
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
        if fs::symlink_metadata(&sdir).is_err() {
            return Ok(());
        }
        point_current(&sdir, None)?;
        info!(service = %service, "retired: nothing is served any more");
        Ok(())
    }

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

/// Refuses reserved paths and templates whose output would clash, before touching disk.
fn check_paths(manifest: &Manifest) -> Result<(), DeployError> {
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

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let mut f = File::create_new(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<(), DeployError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Atomically points `<sdir>/current` at `version`, or removes it for `None`.
fn point_current(sdir: &Path, version: Option<&str>) -> Result<(), DeployError> {
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

/// The last [`OUTPUT_TAIL`] bytes of a log, lossily decoded.
fn read_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    };
    read().unwrap_or_else(|e| format!("(output unavailable: {e})"))
}

fn remove_best_effort(path: &Path) {
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
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_best_effort(&path);
        }
    }
}

/// A name suffix unique within this host: pid, time and a counter. No '-', so recovery can
/// split it off a version.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}x{nanos:x}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use efa_registry::bundle::{BundleLimits, FileEntry};
    use efa_registry::model::ids::Channel;

    struct Env {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        cache: PathBuf,
        service: ServiceId,
    }

    impl Env {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("deploy");
            let cache = tmp.path().join("cache");
            fs::create_dir_all(&cache).unwrap();
            Env { _tmp: tmp, root, cache, service: "wohngeld-nrw".parse().unwrap() }
        }

        fn deployer(&self, keep: usize) -> Deployer {
            Deployer::new(&self.root, keep).with_health_timeout(Duration::from_millis(200))
        }

        /// Writes each file's content into the cache and builds a manifest for it.
        fn manifest(&self, version: &str, files: &[(&str, &str)]) -> Manifest {
            let mut entries: Vec<FileEntry> = files
                .iter()
                .map(|(path, content)| {
                    let digest = Digest::of(content.as_bytes());
                    fs::write(self.cache.join(digest.hex()), content).unwrap();
                    FileEntry {
                        chunks: vec![],
                        path: BundlePath::parse(path, &BundleLimits::default()).unwrap(),
                        size: content.len() as u64,
                        digest,
                    }
                })
                .collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Manifest {
                format: 1,
                service_id: self.service.clone(),
                version: version.into(),
                channel: Channel::stable(),
                land: "05".parse().unwrap(),
                created_at_ms: 0,
                files: entries,
            }
        }

        fn deploy_with(
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

        fn deploy(&self, d: &Deployer, version: &str, health: Option<&str>) -> Result<DeployOutcome, DeployError> {
            let m = self.manifest(version, &[("app.txt", version), ("www/index.html", "<h1>hi</h1>")]);
            self.deploy_with(d, &m, &BTreeMap::new(), health)
        }

        fn sdir(&self) -> PathBuf {
            self.root.join(self.service.as_str())
        }

        fn current(&self, d: &Deployer) -> Option<String> {
            d.current_version(&self.service).unwrap()
        }

        /// Names of scratch entries in the service dir (should be empty after any deploy).
        fn scratch(&self) -> Vec<String> {
            fs::read_dir(self.sdir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') || n.starts_with(CURRENT_NEW))
                .collect()
        }
    }

    fn deployed(version: &str, previous: Option<&str>) -> DeployOutcome {
        DeployOutcome::Deployed { version: version.into(), previous: previous.map(Into::into) }
    }

    #[test]
    fn deploying_v2_moves_current_and_keeps_v1() {
        let env = Env::new();
        let d = env.deployer(5);
        assert_eq!(env.deploy(&d, "1.0.0", None).unwrap(), deployed("1.0.0", None));
        assert_eq!(env.deploy(&d, "2.0.0", None).unwrap(), deployed("2.0.0", Some("1.0.0")));
        assert_eq!(env.current(&d).as_deref(), Some("2.0.0"));
        assert_eq!(fs::read_link(env.sdir().join("current")).unwrap(), PathBuf::from("2.0.0"));
        assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "2.0.0");
        assert_eq!(fs::read_to_string(env.sdir().join("1.0.0/www/index.html")).unwrap(), "<h1>hi</h1>");
        let record: ReleaseRecord =
            serde_json::from_slice(&fs::read(env.sdir().join("2.0.0/.efa/release.json")).unwrap()).unwrap();
        assert_eq!((record.service.as_str(), record.version.as_str()), ("wohngeld-nrw", "2.0.0"));
        assert!(record.content_digest.starts_with("sha256:"));
        assert!(env.sdir().join("2.0.0/.efa/parameters.json").is_file());
        let installed: Vec<String> =
            d.installed_versions(&env.service).unwrap().iter().map(|v| v.to_string()).collect();
        assert_eq!(installed, ["1.0.0", "2.0.0"]);
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn a_switch_whose_health_check_never_finished_is_rolled_back_on_recovery() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        env.deploy(&d, "2.0.0", Some("true")).unwrap();
        assert!(!env.sdir().join("2.0.0/.efa/unconfirmed").exists(), "a passed check clears the marker");
        // The state a crash during 2.0.0's health check leaves: switched, marker still there.
        fs::write(env.sdir().join("2.0.0/.efa/unconfirmed"), "1.0.0").unwrap();
        let report = d.recover().unwrap();
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        assert!(!env.sdir().join("2.0.0").exists());
        assert_eq!(report.restored, vec![env.sdir().join("2.0.0")]);
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
        // A first install interrupted the same way leaves nothing serving.
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        fs::write(env.sdir().join("1.0.0/.efa/unconfirmed"), "").unwrap();
        d.recover().unwrap();
        assert_eq!(env.current(&d), None);
    }

    #[test]
    fn templates_are_rendered_and_a_missing_parameter_changes_nothing() {
        let env = Env::new();
        let d = env.deployer(5);
        let m =
            env.manifest("1.0.0", &[("config/app.toml.tmpl", "fee = {{ fee_cents }}\nurl = \"{{ privacy_url }}\"\n")]);
        let params = BTreeMap::from([
            ("fee_cents".to_string(), ParamValue::Integer(1250)),
            ("privacy_url".to_string(), ParamValue::Text("https://dortmund.de/ds".into())),
        ]);
        env.deploy_with(&d, &m, &params, None).unwrap();
        let v1 = env.sdir().join("1.0.0");
        assert_eq!(
            fs::read_to_string(v1.join("config/app.toml")).unwrap(),
            "fee = 1250\nurl = \"https://dortmund.de/ds\"\n"
        );
        assert!(!v1.join("config/app.toml.tmpl").exists());
        let stored: BTreeMap<String, ParamValue> =
            serde_json::from_slice(&fs::read(v1.join(".efa/parameters.json")).unwrap()).unwrap();
        assert_eq!(stored, params);

        let m2 = env.manifest("2.0.0", &[("config/app.toml.tmpl", "fee = {{ fee_cents }} {{ iban }}")]);
        let err = env.deploy_with(&d, &m2, &params, None).unwrap_err();
        assert!(matches!(&err, DeployError::Template { file, .. } if file == "config/app.toml.tmpl"), "{err}");
        assert!(err.to_string().contains("iban"), "{err}");
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        assert!(!env.sdir().join("2.0.0").exists());
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn template_target_clash_is_refused() {
        let env = Env::new();
        let m = env.manifest("1.0.0", &[("a.conf", "x"), ("a.conf.tmpl", "y")]);
        let err = env.deploy_with(&env.deployer(5), &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, DeployError::TemplateTargetExists { .. }), "{err}");
    }

    #[test]
    fn a_tampered_cache_blob_fails_and_v1_stays_current() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        let m = env.manifest("2.0.0", &[("app.txt", "good"), ("z.txt", "fine")]);
        // Same size, different content.
        fs::write(env.cache.join(Digest::of(b"good").hex()), "evil").unwrap();
        let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(&err, DeployError::DigestMismatch { file, .. } if file == "app.txt"), "{err}");
        assert!(err.to_string().contains("app.txt"));
        // Different size.
        fs::write(env.cache.join(Digest::of(b"good").hex()), "good and then some").unwrap();
        let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(&err, DeployError::SizeMismatch { expected: 4, .. }), "{err}");
        // Missing blob.
        fs::remove_file(env.cache.join(Digest::of(b"good").hex())).unwrap();
        let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, DeployError::Io { .. }), "{err}");

        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        assert!(!env.sdir().join("2.0.0").exists());
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn failing_health_command_rolls_back_to_v1() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        let out = env.deploy(&d, "2.0.0", Some("echo database unreachable >&2; exit 3")).unwrap();
        let DeployOutcome::RolledBack { failed_version, restored, reason } = out else { panic!("{out:?}") };
        assert_eq!((failed_version.as_str(), restored.as_deref()), ("2.0.0", Some("1.0.0")));
        assert!(reason.contains('3') && reason.contains("database unreachable"), "{reason}");
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        assert!(!env.sdir().join("2.0.0").exists());
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn health_command_sees_its_environment() {
        let env = Env::new();
        let d = env.deployer(5);
        let check = r#"test "$EFA_SERVICE" = wohngeld-nrw && test "$EFA_VERSION" = 1.0.0 && test -f app.txt && test -f "$EFA_DEPLOY_DIR/.efa/release.json""#;
        assert_eq!(env.deploy(&d, "1.0.0", Some(check)).unwrap(), deployed("1.0.0", None));
    }

    #[test]
    fn health_timeout_rolls_back_and_kills_the_command() {
        let env = Env::new();
        let d = env.deployer(5);
        let started = Instant::now();
        let out = env.deploy(&d, "1.0.0", Some("sleep 5; sleep 5")).unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let DeployOutcome::RolledBack { restored, reason, .. } = out else { panic!("{out:?}") };
        assert_eq!(restored, None);
        assert!(reason.contains("timed out"), "{reason}");
        assert_eq!(env.current(&d), None);
        assert!(!env.sdir().join("1.0.0").exists());
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn failed_redeploy_of_the_same_version_restores_the_old_copy() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        let m = env.manifest("1.0.0", &[("app.txt", "broken build")]);
        let out = env.deploy_with(&d, &m, &BTreeMap::new(), Some("exit 1")).unwrap();
        assert!(matches!(&out, DeployOutcome::RolledBack { restored: Some(v), .. } if v == "1.0.0"), "{out:?}");
        assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "1.0.0");
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
        // And a healthy redeploy replaces it.
        env.deploy_with(&d, &m, &BTreeMap::new(), Some("true")).unwrap();
        assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "broken build");
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn retention_keeps_the_newest_n() {
        let env = Env::new();
        let d = env.deployer(2);
        let installed =
            || -> Vec<String> { d.installed_versions(&env.service).unwrap().iter().map(|v| v.to_string()).collect() };
        // Semver order, not lexical: 1.10.0 is newer than 1.2.0.
        for v in ["1.0.0", "1.2.0", "1.10.0", "2.0.0"] {
            env.deploy(&d, v, None).unwrap();
        }
        assert_eq!(installed(), ["1.10.0", "2.0.0"]);
        // An older version deployed on purpose is kept as current, and so is the one it replaced.
        env.deploy(&d, "0.9.0", None).unwrap();
        assert_eq!(installed(), ["0.9.0", "1.10.0", "2.0.0"]);
        // The replaced one survives even though it is not among the newest two.
        env.deploy(&d, "3.0.0", None).unwrap();
        assert_eq!(installed(), ["0.9.0", "2.0.0", "3.0.0"]);
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    }

    #[test]
    fn recover_removes_leftovers_and_restores_set_aside_versions() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        let sdir = env.sdir();
        fs::create_dir_all(sdir.join(".staging-2.0.0-1x2x3/www")).unwrap();
        fs::write(sdir.join(".staging-2.0.0-1x2x3/www/index.html"), "x").unwrap();
        std::os::unix::fs::symlink("2.0.0", sdir.join("current.new-1x2x4")).unwrap();
        fs::write(sdir.join(".health-1x2x5.log"), "x").unwrap();
        // Set aside, and the replacement is in place: the old copy goes.
        fs::create_dir(sdir.join(".replaced-1.0.0-1x2x6")).unwrap();
        // Set aside, and the crash came before the replacement arrived: it comes back.
        fs::create_dir(sdir.join(".replaced-3.0.0-rc.1-1x2x7")).unwrap();

        let report = d.recover().unwrap();
        let mut removed: Vec<String> =
            report.removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        removed.sort();
        assert_eq!(
            removed,
            [".health-1x2x5.log", ".replaced-1.0.0-1x2x6", ".staging-2.0.0-1x2x3", "current.new-1x2x4"]
        );
        assert_eq!(report.restored, [sdir.join("3.0.0-rc.1")]);
        assert!(env.scratch().is_empty(), "{:?}", env.scratch());
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        assert_eq!(d.recover().unwrap(), RecoveryReport::default());
        assert_eq!(Deployer::new(env.root.join("missing"), 1).recover().unwrap(), RecoveryReport::default());
    }

    #[test]
    fn switch_to_and_retire() {
        let env = Env::new();
        let d = env.deployer(5);
        env.deploy(&d, "1.0.0", None).unwrap();
        env.deploy(&d, "2.0.0", None).unwrap();
        assert_eq!(d.switch_to(&env.service, "1.0.0").unwrap().as_deref(), Some("2.0.0"));
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
        for bad in ["9.9.9", "../1.0.0", "current", ""] {
            let err = d.switch_to(&env.service, bad).unwrap_err();
            assert!(matches!(err, DeployError::UnknownVersion { .. }), "{bad}: {err}");
        }
        assert!(d.switch_to(&env.service, "9.9.9").unwrap_err().to_string().contains("1.0.0, 2.0.0"));
        assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));

        d.retire(&env.service).unwrap();
        assert_eq!(env.current(&d), None);
        assert_eq!(d.installed_versions(&env.service).unwrap().len(), 2);
        d.retire(&env.service).unwrap();
        let other: ServiceId = "never-deployed".parse().unwrap();
        d.retire(&other).unwrap();
        assert_eq!(d.current_version(&other).unwrap(), None);
        assert!(d.switch_to(&other, "1.0.0").unwrap_err().to_string().contains("none"));
    }

    #[test]
    fn reserved_paths_and_service_mismatch_are_refused() {
        let env = Env::new();
        let d = env.deployer(5);
        for path in [".efa/release.json", ".efa.tmpl", ".efa/x.tmpl"] {
            let m = env.manifest("1.0.0", &[(path, "{}")]);
            let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
            assert!(matches!(err, DeployError::ReservedPath { .. }), "{path}: {err}");
        }
        let mut m = env.manifest("1.0.0", &[("a", "b")]);
        m.service_id = "other-service".parse().unwrap();
        let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, DeployError::ServiceMismatch { .. }), "{err}");
        assert!(!env.root.join("wohngeld-nrw/1.0.0").exists());
        assert_eq!(env.current(&d), None);
    }
}
