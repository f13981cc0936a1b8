//! Why a deploy did not happen, in words a Kommune's operator can act on.

use super::RESERVED_DIR;
use efa_domain::bundle::Digest;
use std::io;
use std::path::{Path, PathBuf};

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
        source: efa_domain::Error,
    },
    #[error("template {template} renders to {target}, which the bundle also contains; the publishing Land must ship only one of them")]
    TemplateTargetExists { template: String, target: String },
    #[error("the manifest is invalid: {source}; the release cannot be deployed")]
    InvalidManifest {
        #[source]
        source: efa_domain::Error,
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
        source: efa_domain::Error,
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

pub(super) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeployError + 'a {
    move |source| DeployError::Io { action, path: path.to_path_buf(), source }
}
