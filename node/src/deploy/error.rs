//! Why a deploy did not happen, in words a Kommune's operator can act on.

use super::RESERVED_DIR;
use efa_domain::bundle::Digest;
use std::io;
use std::path::{Path, PathBuf};

/// Why a deploy, switch, retirement or recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A file system operation in the deploy directory failed.
    #[error("cannot {action} {path}: {source}; check permissions and free space of the deploy directory")]
    Io {
        /// What was attempted, as a verb phrase (`create`, `read symlink`, ...).
        action: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A cached blob has another size than the manifest lists.
    #[error("bundle file {file}: local blob {blob} is {actual} bytes, the manifest says {expected}; the local cache is damaged, delete the blob and fetch the release again")]
    SizeMismatch {
        /// Bundle path of the file.
        file: String,
        /// The cached blob it was copied from.
        blob: PathBuf,
        /// Size in the manifest, in bytes.
        expected: u64,
        /// Bytes found (reading stops once past `expected`).
        actual: u64,
    },
    /// A cached blob does not hash to the manifest's digest.
    #[error("bundle file {file}: local blob {blob} has digest {actual}, the manifest says {expected}; the local cache is damaged or tampered with, delete the blob and fetch the release again")]
    DigestMismatch {
        /// Bundle path of the file.
        file: String,
        /// The cached blob it was copied from.
        blob: PathBuf,
        /// Digest in the manifest.
        expected: Digest,
        /// Digest of the bytes copied.
        actual: Digest,
    },
    /// A `.tmpl` file cannot be rendered (not UTF-8, a placeholder without a value, ...) or
    /// its target is not a valid bundle path.
    #[error("cannot render template {file}: {source}; set the missing parameter in the node config or ask the publishing Land to fix the template")]
    Template {
        /// Bundle path of the template.
        file: String,
        /// What is wrong with it.
        #[source]
        source: efa_domain::Error,
    },
    /// A template would render onto a file or directory the bundle already has.
    #[error("template {template} renders to {target}, which the bundle also contains; the publishing Land must ship only one of them")]
    TemplateTargetExists {
        /// Bundle path of the template.
        template: String,
        /// The path it renders to (the template's without `.tmpl`).
        target: String,
    },
    /// The manifest breaks a bundle rule.
    #[error("the manifest is invalid: {source}; the release cannot be deployed")]
    InvalidManifest {
        /// The rule broken.
        #[source]
        source: efa_domain::Error,
    },
    /// A bundle path (or template target) lies below the node's reserved `.efa/` directory.
    #[error("bundle path {path} is reserved: the node keeps its own metadata under {RESERVED_DIR}/; the publishing Land must rename it")]
    ReservedPath {
        /// The offending bundle path.
        path: String,
    },
    /// The manifest belongs to another service than the deploy was requested for.
    #[error(
        "the manifest is for service {manifest}, but the deploy was requested for {requested}; refusing to mix them up"
    )]
    ServiceMismatch {
        /// The service the caller asked to deploy.
        requested: String,
        /// The service the manifest names.
        manifest: String,
    },
    /// The manifest's version is not a semantic version.
    #[error("release version {version:?} is not usable as a directory name: {source}")]
    InvalidVersion {
        /// The version text from the manifest.
        version: String,
        /// Why it does not parse.
        #[source]
        source: efa_domain::Error,
    },
    /// The health command could not be started; the new version was rolled back.
    #[error("health command {command:?} for {service} {version} could not be started: {source}; the deploy was rolled back, check the command and that `sh` exists")]
    HealthCommandStart {
        /// The command line, as configured.
        command: String,
        /// The service deployed.
        service: String,
        /// The version whose check could not run.
        version: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// A switch asked for a version that is not installed.
    #[error("version {version:?} of {service} is not installed (installed: {installed}); deploy it first")]
    UnknownVersion {
        /// The service.
        service: String,
        /// The version asked for.
        version: String,
        /// The installed versions, comma-separated, or `none`.
        installed: String,
    },
    /// Undoing a failed deploy failed too; `current` may still point at the failed version.
    #[error("rolling back {service} after failed version {failed_version} did not complete: {source}; run recovery and check where `current` points")]
    RollbackFailed {
        /// The service.
        service: String,
        /// The version whose health check failed.
        failed_version: String,
        /// What went wrong while rolling back.
        #[source]
        source: Box<DeployError>,
    },
}

pub(super) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeployError + 'a {
    move |source| DeployError::Io { action, path: path.to_path_buf(), source }
}
