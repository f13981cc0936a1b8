//! The publisher's side: turn a directory into a signed release and stream it to the hub,
//! and sign the Land's snapshot. Used by the `efa` CLI, the demo and the system tests alike.

mod offer;
mod scan;

pub use offer::{publish_offer, OfferSpec};

pub use scan::{digest_file, scan_dir};

use efa_domain::bundle::{BundleLimits, Manifest, MANIFEST_FORMAT, MANIFEST_FORMAT_WITH_SCHEMA};
use efa_domain::model::ids::{parse_version, Channel, LandCode, ServiceId};
use efa_domain::model::rollout::RolloutPlan;
use efa_domain::params::ParameterSpec;
use efa_domain::signing::SigningKey;
use efa_domain::snapshot::{Snapshot, SNAPSHOT_FORMAT};
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel as GrpcChannel;

/// Bytes per data message when uploading.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// Why a publish or snapshot did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bundle or an argument breaks a domain rule.
    #[error(transparent)]
    Bundle(#[from] efa_domain::Error),
    /// The hub refused.
    #[error("the hub refused ({:?}): {}", .0.code(), .0.message())]
    Hub(tonic::Status),
    /// A file of the bundle could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<tonic::Status> for PublishError {
    fn from(s: tonic::Status) -> Self {
        PublishError::Hub(s)
    }
}

/// What to publish.
pub struct PublishSpec<'a> {
    /// The bundle directory.
    pub dir: &'a Path,
    /// The service, registered by `land`.
    pub service_id: ServiceId,
    /// A semantic version not yet published.
    pub version: String,
    /// The channel, e.g. `stable`.
    pub channel: Channel,
    /// The publishing Land (from its certificate).
    pub land: LandCode,
    /// Notes for Kommunen.
    pub release_notes: String,
    /// The Land's release signing key.
    pub signing_key: &'a SigningKey,
    /// Ring by ring instead of to every subscriber at once; stored with the release.
    pub rollout: Option<RolloutPlan>,
}

/// A release ready to upload.
pub struct SignedRelease {
    /// The canonical manifest bytes.
    pub manifest: Vec<u8>,
    /// The Land's signature over them.
    pub signature: Vec<u8>,
    /// Local path of each manifest file, in manifest order.
    pub files: Vec<PathBuf>,
}

/// Builds the manifest for `spec.dir` and signs it.
pub fn build_signed_manifest(spec: &PublishSpec<'_>) -> Result<SignedRelease, PublishError> {
    build_signed_manifest_with(spec, None)
}

/// [`build_signed_manifest`], with the service's parameter schema signed into the manifest
/// (format 2) when `parameters` is given.
pub fn build_signed_manifest_with(
    spec: &PublishSpec<'_>,
    parameters: Option<Vec<ParameterSpec>>,
) -> Result<SignedRelease, PublishError> {
    parse_version(&spec.version)?;
    let limits = BundleLimits::default();
    let scanned = scan_dir(spec.dir, &limits)?;
    let manifest = Manifest {
        format: if parameters.is_some() { MANIFEST_FORMAT_WITH_SCHEMA } else { MANIFEST_FORMAT },
        service_id: spec.service_id.clone(),
        version: spec.version.clone(),
        channel: spec.channel.clone(),
        land: spec.land.clone(),
        created_at_ms: efa_domain::now_ms(),
        files: scanned.iter().map(|(e, _)| e.clone()).collect(),
        parameters,
    };
    manifest.validate(&limits)?;
    let bytes = manifest.to_bytes();
    let signature = spec.signing_key.sign(&bytes);
    Ok(SignedRelease { manifest: bytes, signature, files: scanned.into_iter().map(|(_, p)| p).collect() })
}

/// Publishes a directory as a release, then refreshes the Land's signed snapshot so nodes
/// can tell if a hub ever hides it. `progress` is called with (bytes sent, bytes in total).
pub async fn publish_dir(
    channel: GrpcChannel,
    spec: PublishSpec<'_>,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<pb::ReleaseInfo, PublishError> {
    // The schema the service is registered with is signed into the release, so nodes check
    // Kommunen's parameters against what the Land signed, not against the hub's word.
    let service = CatalogServiceClient::new(channel.clone())
        .get_service(pb::GetServiceRequest { id: spec.service_id.to_string() })
        .await?
        .into_inner();
    let parameters =
        service.parameters.into_iter().map(ParameterSpec::try_from).collect::<Result<Vec<_>, efa_domain::Error>>()?;
    let signed = build_signed_manifest_with(&spec, Some(parameters))?;
    let header = pb::PublishHeader {
        manifest: signed.manifest,
        signature: signed.signature,
        release_notes: spec.release_notes,
        rollout_plan: spec.rollout.as_ref().map(pb::RolloutPlan::from),
    };
    let info = publish_header(channel.clone(), header, signed.files, progress).await?;
    // The release is committed now; a failed snapshot refresh must not look like a failed
    // publish (a retry would only get "already exists").
    if let Err(e) = publish_snapshot(channel, &spec.land, spec.signing_key, DEFAULT_SNAPSHOT_VALIDITY).await {
        tracing::warn!(error = %e, "release published, but refreshing the signed snapshot failed; run `efa snapshot`");
    }
    Ok(info)
}

/// How long a snapshot stays valid unless refreshed (`efa snapshot` in a daily job).
pub const DEFAULT_SNAPSHOT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Signs and uploads the Land's snapshot: the newest version of each of its services per
/// channel, as the hub lists them now, valid for `validity`.
pub async fn publish_snapshot(
    channel: GrpcChannel,
    land: &LandCode,
    key: &SigningKey,
    validity: std::time::Duration,
) -> Result<pb::SnapshotInfo, PublishError> {
    let services = CatalogServiceClient::new(channel.clone())
        .list_services(pb::ListServicesRequest { land_code: land.to_string(), themenfeld: String::new() })
        .await?
        .into_inner()
        .services;
    let mut latest = BTreeMap::new();
    for s in services {
        let releases = ReleaseServiceClient::new(channel.clone())
            .list_releases(pb::ListReleasesRequest { service_id: s.id.clone(), channel: String::new() })
            .await?
            .into_inner()
            .releases;
        let mut per_channel: BTreeMap<Channel, String> = BTreeMap::new();
        // Newest first: the first seen per channel is the newest.
        for r in releases {
            per_channel.entry(r.channel.parse()?).or_insert(r.version);
        }
        if !per_channel.is_empty() {
            latest.insert(s.id.parse()?, per_channel);
        }
    }
    let now = efa_domain::now_ms();
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT,
        land: land.clone(),
        issued_at_ms: now,
        expires_at_ms: now + validity.as_millis() as i64,
        latest,
    };
    let bytes = snapshot.to_bytes();
    let signature = key.sign(&bytes);
    Ok(ReleaseServiceClient::new(channel)
        .publish_snapshot(pb::SignedSnapshot { snapshot: bytes, signature })
        .await?
        .into_inner())
}

/// Streams a header and the given files' contents, as they are on disk.
pub async fn publish_raw(
    channel: GrpcChannel,
    manifest: Vec<u8>,
    signature: Vec<u8>,
    release_notes: String,
    files: Vec<PathBuf>,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<pb::ReleaseInfo, PublishError> {
    let header = pb::PublishHeader { manifest, signature, release_notes, rollout_plan: None };
    publish_header(channel, header, files, progress).await
}

/// Streams `header`, then the given files' contents, as they are on disk.
pub async fn publish_header(
    channel: GrpcChannel,
    header: pb::PublishHeader,
    files: Vec<PathBuf>,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<pb::ReleaseInfo, PublishError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PublishChunk>(8);
    let header = pb::PublishChunk { part: Some(pb::publish_chunk::Part::Header(header)) };
    let total: u64 = files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let reader = tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        let mut sent = 0u64;
        for path in files {
            let mut f =
                tokio::fs::File::open(&path).await.map_err(|source| PublishError::Io { path: path.clone(), source })?;
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let n = f.read(&mut buf).await.map_err(|source| PublishError::Io { path: path.clone(), source })?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                sent += n as u64;
                if tx.send(pb::PublishChunk { part: Some(pb::publish_chunk::Part::Data(buf)) }).await.is_err() {
                    return Ok(()); // the hub ended the call; its status says why
                }
                progress(sent, total);
            }
        }
        Ok::<(), PublishError>(())
    });
    let result = ReleaseServiceClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .publish_release(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read_result = reader.await.unwrap_or(Ok(()));
    let info = result?.into_inner();
    read_result?;
    Ok(info)
}
