//! `ReleaseService`: publish (header, then content), yank, releases, snapshots, downloads.

use crate::blobs::{BlobBody, BlobWriter, Upload};
use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::{authorize, Action};
use efa_domain::bundle::{Digest, Hasher, Manifest};
use efa_domain::model::ids::{Channel, LandCode, ServiceId};
use efa_domain::model::rollout::RolloutPlan;
use efa_proto::convert::{parse, parse_opt};
use efa_proto::v1 as pb;
use efa_proto::v1::release_service_server::ReleaseService;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The `ReleaseService` implementation.
pub struct Releases(pub Arc<HubState>);

type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

/// One blob of an upload: a whole small file, or one content-defined chunk of a large one.
struct Part {
    file: usize,
    size: u64,
    digest: Digest,
    label: String,
    /// Last part of a chunked file: the file's own digest is checked here.
    ends_chunked_file: bool,
}

/// Receives the concatenated file contents of a manifest and stores each part (file or
/// chunk) as a blob, checking sizes and digests as they arrive.
struct ContentReceiver<'a> {
    upload: &'a Upload,
    manifest: &'a Manifest,
    parts: Vec<Part>,
    index: usize,
    current: Option<BlobWriter>,
    /// Hash of the chunked file being received, to check its digest as a whole.
    file_hasher: Option<Hasher>,
    received: u64,
}

impl<'a> ContentReceiver<'a> {
    fn new(upload: &'a Upload, manifest: &'a Manifest) -> Self {
        let mut parts = Vec::new();
        for (file, entry) in manifest.files.iter().enumerate() {
            let chunks = entry.parts();
            let n = chunks.len();
            for (i, c) in chunks.into_iter().enumerate() {
                let label = if entry.chunks.is_empty() {
                    entry.path.as_str().to_string()
                } else {
                    format!("{} (chunk {} of {n})", entry.path.as_str(), i + 1)
                };
                let ends_chunked_file = !entry.chunks.is_empty() && i + 1 == n;
                parts.push(Part { file, size: c.size, digest: c.digest, label, ends_chunked_file });
            }
        }
        ContentReceiver { upload, manifest, parts, index: 0, current: None, file_hasher: None, received: 0 }
    }

    fn writer(&mut self) -> Result<&mut BlobWriter, Status> {
        if self.current.is_none() {
            let part = &self.parts[self.index];
            if !self.manifest.files[part.file].chunks.is_empty() && self.file_hasher.is_none() {
                self.file_hasher = Some(Hasher::default());
            }
            self.current = Some(self.upload.writer(part.digest, part.label.clone())?);
        }
        Ok(self.current.as_mut().expect("set above"))
    }

    fn accept(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            let Some(part) = self.parts.get(self.index) else {
                return Err(Status::invalid_argument(format!(
                    "bundle has more data than its manifest declares ({} bytes); nothing was stored",
                    self.manifest.total_size()
                )));
            };
            let size = part.size;
            let writer = self.writer()?;
            let take = (size - writer.written()).min(data.len() as u64) as usize;
            writer.write(&data[..take])?;
            if let Some(h) = &mut self.file_hasher {
                h.update(&data[..take]);
            }
            self.received += take as u64;
            data = &data[take..];
            self.finish_complete_parts()?;
        }
        Ok(())
    }

    /// Finishes every part whose declared size is reached (including empty files).
    fn finish_complete_parts(&mut self) -> Result<(), Status> {
        while self.index < self.parts.len() {
            let size = self.parts[self.index].size;
            if self.writer()?.written() != size {
                break;
            }
            self.current.take().expect("writer exists").finish()?;
            let part = &self.parts[self.index];
            if part.ends_chunked_file {
                let entry = &self.manifest.files[part.file];
                let actual = self.file_hasher.take().unwrap_or_default().finish();
                if actual != entry.digest {
                    return Err(Status::invalid_argument(format!(
                        "file {} has digest {actual}, but the manifest says {}; nothing was stored",
                        entry.path.as_str(),
                        entry.digest
                    )));
                }
                let chunks: Vec<(Digest, u64)> = entry.chunks.iter().map(|c| (c.digest, c.size)).collect();
                self.upload.write_recipe(entry.digest, &chunks)?;
            }
            self.index += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), Status> {
        self.finish_complete_parts()?;
        if self.index < self.parts.len() {
            return Err(Status::invalid_argument(format!(
                "bundle ended after {} of {} bytes declared by its manifest (file {} incomplete); nothing was stored",
                self.received,
                self.manifest.total_size(),
                efa_domain::error::echo(self.manifest.files[self.parts[self.index].file].path.as_str())
            )));
        }
        Ok(())
    }
}

type ChunkSender = tokio::sync::mpsc::Sender<Result<pb::BlobChunk, Status>>;

/// Streams a local blob in `chunk_size` messages until it ends, the client leaves or the hub stops.
fn send_file(
    mut file: crate::blobs::BlobReader,
    mut offset: u64,
    chunk_size: usize,
    tx: &ChunkSender,
    shutdown: &tokio_util::sync::CancellationToken,
    metrics: &crate::metrics::HubMetrics,
) {
    while !shutdown.is_cancelled() {
        // Read into spare capacity: a zero-filled buffer would cost a memset per chunk,
        // which with jemalloc's recycled extents was a third of a download's time.
        let mut buf = Vec::with_capacity(chunk_size);
        let n = match (&mut file).take(chunk_size as u64).read_to_end(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "reading a blob failed");
                let _ = tx.blocking_send(Err(Status::internal(
                    "reading the blob failed on the hub; retry from the offset received",
                )));
                return;
            }
        };
        if tx.blocking_send(Ok(pb::BlobChunk { offset, data: buf })).is_err() {
            return; // the client left
        }
        metrics.bytes_served.inc_by(n as u64);
        offset += n as u64;
    }
}

/// Streams an object store blob: its pieces regrouped into `chunk_size` messages.
async fn send_remote(
    mut pieces: crate::blobs::RemotePieces,
    mut offset: u64,
    chunk_size: usize,
    tx: ChunkSender,
    shutdown: tokio_util::sync::CancellationToken,
    metrics: Arc<crate::metrics::HubMetrics>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_size);
    loop {
        let piece = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = pieces.recv() => p,
        };
        let last = match piece {
            None => true,
            Some(Ok(mut bytes)) => {
                while !bytes.is_empty() {
                    let take = (chunk_size - buf.len()).min(bytes.len());
                    buf.extend_from_slice(&bytes.split_to(take));
                    if buf.len() == chunk_size {
                        let n = buf.len() as u64;
                        let data = std::mem::replace(&mut buf, Vec::with_capacity(chunk_size));
                        if tx.send(Ok(pb::BlobChunk { offset, data })).await.is_err() {
                            return;
                        }
                        metrics.bytes_served.inc_by(n);
                        offset += n;
                    }
                }
                false
            }
            Some(Err(e)) => {
                // Bytes before the failure are sent, so the node resumes right after them.
                if !buf.is_empty() {
                    let n = buf.len() as u64;
                    let _ = tx.send(Ok(pb::BlobChunk { offset, data: std::mem::take(&mut buf) })).await;
                    metrics.bytes_served.inc_by(n);
                }
                tracing::warn!(error = %e, "reading a blob from object storage failed");
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the hub's object storage is unreachable; retry from the offset received",
                    )))
                    .await;
                return;
            }
        };
        if last {
            if !buf.is_empty() {
                let n = buf.len() as u64;
                if tx.send(Ok(pb::BlobChunk { offset, data: std::mem::take(&mut buf) })).await.is_ok() {
                    metrics.bytes_served.inc_by(n);
                }
            }
            return;
        }
    }
}

/// Blob writes and their fsyncs block. On the multi-thread runtime they run in place while
/// the worker's other tasks move to another thread, so concurrent publishes fsync in
/// parallel and other connections are not stalled; elsewhere they simply run inline.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[tonic::async_trait]
impl ReleaseService for Releases {
    async fn publish_release(
        &self,
        req: Request<Streaming<pb::PublishChunk>>,
    ) -> Result<Response<pb::ReleaseInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ManageService { owner: None }).map_err(status)?;
        let mut stream = req.into_inner();
        let header = match stream.next().await {
            Some(Ok(pb::PublishChunk { part: Some(pb::publish_chunk::Part::Header(h)) })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message of a publish stream must be the header")),
        };
        let pb::PublishHeader { manifest, signature, release_notes, rollout_plan } = header;
        let plan = rollout_plan.map(RolloutPlan::try_from).transpose().map_err(status)?;
        let plan = match plan {
            Some(p) => Some(self.0.registry(move |r| r.check_rollout_plan(&p).map(|()| p)).await?),
            None => None,
        };
        // The one parse of the manifest: ownership, version and limits are checked on it,
        // and the checked release carries it to the commit.
        let checked = self.0.registry(move |r| r.check_publish(&who, manifest, signature)).await?;

        // Content is staged in an upload of its own: nothing of it is served before the
        // release is committed, and a publish that fails leaves nothing behind.
        let upload = self.0.blobs.upload()?;
        let mut receiver = ContentReceiver::new(&upload, checked.manifest());
        off_the_runtime(|| receiver.finish_complete_parts())?;
        while let Some(msg) = stream.next().await {
            match msg?.part {
                Some(pb::publish_chunk::Part::Data(data)) => off_the_runtime(|| receiver.accept(&data))?,
                _ => return Err(Status::invalid_argument("only data chunks may follow the header")),
            }
        }
        off_the_runtime(|| receiver.finish())?;
        let m = checked.manifest();
        off_the_runtime(|| upload.seal(&format!("{} {}", m.service_id, m.version)))?;

        let (release, events) = self.0.registry(move |r| r.commit_release(checked, release_notes, plan)).await?;
        if let Err(e) = off_the_runtime(|| upload.promote()) {
            // The release is committed; the next garbage collection (or start) promotes it.
            tracing::error!(service = %release.service_id, version = %release.version, error = %e, "promoting the release's content failed; it is retried");
        }
        tracing::info!(service = %release.service_id, version = %release.version, channel = %release.channel, bytes = release.total_size, "release published");
        self.0.metrics.publishes.inc();
        self.0.metrics.publish_bytes.inc_by(release.total_size);
        for event in events {
            self.0.feed.publish(event);
        }
        Ok(Response::new((&release.summary()).into()))
    }

    async fn yank_release(&self, req: Request<pb::YankReleaseRequest>) -> Result<Response<pb::ReleaseInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let (release, event) = self.0.registry(move |reg| reg.yank(&who, &id, &r.version, &r.reason, r.recall)).await?;
        tracing::info!(service = %release.service_id, version = %release.version, "release yanked");
        self.0.feed.publish(event);
        Ok(Response::new((&release.summary()).into()))
    }

    async fn get_release(&self, req: Request<pb::GetReleaseRequest>) -> Result<Response<pb::ReleaseDetail>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let (release, summary) = self
            .0
            .registry(move |reg| {
                let release = reg.release(&id, &r.version)?;
                let summary = reg.summary_for(&who, &release)?;
                Ok((release, summary))
            })
            .await?;
        let mut detail: pb::ReleaseDetail = (&release).into();
        detail.info = Some((&summary).into());
        Ok(Response::new(detail))
    }

    async fn list_releases(
        &self,
        req: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let channel: Option<Channel> = parse_opt(&r.channel).map_err(status)?;
        let summaries = self
            .0
            .registry(move |reg| {
                reg.releases(&id, channel.as_ref())?
                    .iter()
                    .map(|r| reg.summary_for(&who, r))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(Response::new(pb::ListReleasesResponse { releases: summaries.iter().map(Into::into).collect() }))
    }

    async fn publish_snapshot(&self, req: Request<pb::SignedSnapshot>) -> Result<Response<pb::SnapshotInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let s = self.0.registry(move |reg| reg.publish_snapshot(&who, r.snapshot, r.signature)).await?;
        tracing::info!(land = %s.land, services = s.latest.len(), expires_at_ms = s.expires_at_ms, "snapshot published");
        Ok(Response::new(pb::SnapshotInfo {
            land_code: s.land.to_string(),
            issued_at_ms: s.issued_at_ms,
            expires_at_ms: s.expires_at_ms,
            services: s.latest.len() as u32,
        }))
    }

    async fn get_snapshot(&self, req: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::SignedSnapshot>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadCatalog).map_err(status)?;
        let land: LandCode = parse(&req.into_inner().land_code).map_err(status)?;
        let (snapshot, signature) = self.0.registry(move |r| r.snapshot(&land)).await?;
        Ok(Response::new(pb::SignedSnapshot { snapshot, signature }))
    }

    type FetchBlobStream = BlobStream;

    async fn fetch_blob(&self, req: Request<pb::FetchBlobRequest>) -> Result<Response<BlobStream>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let digest: Digest = parse(&r.digest).map_err(status)?;
        // Only content of published releases is served; staged or stray blobs are not.
        let d = digest;
        if !self.0.registry(move |reg| reg.blob_referenced(&d)).await? {
            return Err(Status::not_found(format!("blob {digest} is not part of a published release")));
        }
        let blobs = self.0.blobs.clone();
        let offset = r.offset;
        let Some((body, len)) = off_the_runtime(|| blobs.reader(&digest, offset))? else {
            return Err(Status::not_found(format!("blob {digest} is not stored on this hub")));
        };
        if r.offset > len {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end of blob {digest} ({len} bytes)",
                r.offset
            )));
        }
        let chunk_size = self.0.download_chunk_size;
        let metrics = self.0.metrics.clone();
        metrics.downloads.inc();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shutdown = self.0.shutdown.clone();
        match body {
            BlobBody::File(file) => {
                // One blocking reader per download: plain reads into the channel, instead of a
                // blocking-pool hop for every chunk as async file reads would take.
                tokio::task::spawn_blocking(move || send_file(file, r.offset, chunk_size, &tx, &shutdown, &metrics));
            }
            BlobBody::Remote(pieces) => {
                tokio::spawn(send_remote(pieces, r.offset, chunk_size, tx, shutdown, metrics));
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
