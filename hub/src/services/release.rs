//! `ReleaseService`: publish (header, then content), yank, releases, snapshots, downloads.

use crate::blobs::{check_digest, BlobBody, BlobError, BlobStore, BlobWriter, Upload};
use crate::error::status;
use crate::state::HubState;
use bytes::Bytes;
use efa_domain::authz::{authorize, Action};
use efa_domain::bundle::{Digest, Hasher, Manifest};
use efa_domain::model::ids::{Channel, LandCode, ServiceId};
use efa_domain::model::rollout::RolloutPlan;
use efa_proto::convert::{parse, parse_opt};
use efa_proto::v1 as pb;
use efa_proto::v1::release_service_server::ReleaseService;
use efa_registry::store::InlineBlob;
use efa_registry::BlobSource;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The `ReleaseService` implementation.
pub struct Releases(pub Arc<HubState>);

type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

/// At most this much of one release is kept in the store; further small files go to the
/// blob store, so a release of thousands of small files cannot swell one transaction.
const INLINE_RELEASE_MAX: u64 = 1024 * 1024;

/// One blob of an upload: a whole small file, or one content-defined chunk of a large one.
struct Part {
    file: usize,
    size: u64,
    digest: Digest,
    label: String,
    /// Last part of a chunked file: the file's own digest is checked here.
    ends_chunked_file: bool,
    /// Kept in the store with the release (received into memory).
    inline: bool,
}

/// Where the part being received goes.
enum Sink {
    Blob(BlobWriter),
    Memory { hasher: Hasher, bytes: Vec<u8> },
}

impl Sink {
    fn written(&self) -> u64 {
        match self {
            Sink::Blob(w) => w.written(),
            Sink::Memory { bytes, .. } => bytes.len() as u64,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        match self {
            Sink::Blob(w) => w.write(data),
            Sink::Memory { hasher, bytes } => {
                hasher.update(data);
                bytes.extend_from_slice(data);
                Ok(())
            }
        }
    }
}

/// Receives the concatenated file contents of a manifest and stores each part (file or
/// chunk) as a blob, or keeps it for the store, checking sizes and digests as they arrive.
struct ContentReceiver<'a> {
    blobs: &'a BlobStore,
    /// Started with the first part for the blob store: a release of small files only
    /// stages nothing and costs no file-system sync.
    upload: Option<Upload>,
    manifest: &'a Manifest,
    parts: Vec<Part>,
    index: usize,
    current: Option<Sink>,
    /// Hash of the chunked file being received, to check its digest as a whole.
    file_hasher: Option<Hasher>,
    received: u64,
    inline: Vec<InlineBlob>,
}

impl<'a> ContentReceiver<'a> {
    /// Files up to `inline_max` bytes (the hub's `inline_file_max`) are kept for the store
    /// ([`InlineBlob`]); chunked (large) files never are.
    fn new(blobs: &'a BlobStore, manifest: &'a Manifest, inline_max: u64) -> Self {
        let mut parts = Vec::new();
        let mut inline_budget = INLINE_RELEASE_MAX;
        for (file, entry) in manifest.files.iter().enumerate() {
            let chunks = entry.parts();
            let n = chunks.len();
            let inline = entry.chunks.is_empty() && entry.size <= inline_max && entry.size <= inline_budget;
            if inline {
                inline_budget -= entry.size;
            }
            for (i, c) in chunks.into_iter().enumerate() {
                let label = if entry.chunks.is_empty() {
                    entry.path.as_str().to_string()
                } else {
                    format!("{} (chunk {} of {n})", entry.path.as_str(), i + 1)
                };
                let ends_chunked_file = !entry.chunks.is_empty() && i + 1 == n;
                parts.push(Part { file, size: c.size, digest: c.digest, label, ends_chunked_file, inline });
            }
        }
        ContentReceiver {
            blobs,
            upload: None,
            manifest,
            parts,
            index: 0,
            current: None,
            file_hasher: None,
            received: 0,
            inline: Vec::new(),
        }
    }

    /// Whether receiving touches the blob store (file writes and syncs, which block).
    fn blocks(&self) -> bool {
        self.parts.iter().any(|p| !p.inline)
    }

    fn upload(&mut self) -> Result<&Upload, Status> {
        if self.upload.is_none() {
            self.upload = Some(self.blobs.upload()?);
        }
        Ok(self.upload.as_ref().expect("set above"))
    }

    fn sink(&mut self) -> Result<&mut Sink, Status> {
        if self.current.is_none() {
            let part = &self.parts[self.index];
            if !self.manifest.files[part.file].chunks.is_empty() && self.file_hasher.is_none() {
                self.file_hasher = Some(Hasher::default());
            }
            let sink = if part.inline {
                Sink::Memory { hasher: Hasher::default(), bytes: Vec::with_capacity(part.size as usize) }
            } else {
                let (digest, label) = (part.digest, part.label.clone());
                Sink::Blob(self.upload()?.writer(digest, label)?)
            };
            self.current = Some(sink);
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
            let sink = self.sink()?;
            let take = (size - sink.written()).min(data.len() as u64) as usize;
            sink.write(&data[..take])?;
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
            if self.sink()?.written() != size {
                break;
            }
            let part = &self.parts[self.index];
            match self.current.take().expect("sink exists") {
                Sink::Blob(w) => w.finish()?,
                Sink::Memory { hasher, bytes } => {
                    check_digest(hasher, part.digest, part.label.clone())?;
                    self.inline.push(InlineBlob { digest: part.digest, bytes });
                }
            }
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
                self.upload()?.write_recipe(entry.digest, &chunks)?;
            }
            self.index += 1;
        }
        Ok(())
    }

    /// Checks that every declared byte came; returns the staged upload (if any part went
    /// to the blob store) and the small files for the store.
    fn finish(mut self) -> Result<(Option<Upload>, Vec<InlineBlob>), Status> {
        self.finish_complete_parts()?;
        if self.index < self.parts.len() {
            return Err(Status::invalid_argument(format!(
                "bundle ended after {} of {} bytes declared by its manifest (file {} incomplete); nothing was stored",
                self.received,
                self.manifest.total_size(),
                efa_domain::error::echo(self.manifest.files[self.parts[self.index].file].path.as_str())
            )));
        }
        Ok((self.upload.take(), std::mem::take(&mut self.inline)))
    }
}

fn offset_past_end(offset: u64, digest: &Digest, len: u64) -> Status {
    Status::out_of_range(format!("offset {offset} is past the end of blob {digest} ({len} bytes)"))
}

/// A blob held in memory (a small file of the store, or a cached part), from `offset`, in
/// messages of at most `chunk_size` that share its buffer.
fn memory_chunks(bytes: Bytes, offset: u64, chunk_size: usize, metrics: &crate::metrics::HubMetrics) -> BlobStream {
    metrics.downloads.inc();
    let chunk_size = chunk_size.max(1);
    let start = offset as usize;
    metrics.bytes_served.inc_by((bytes.len() - start) as u64);
    let chunks: Vec<Result<pb::BlobChunk, Status>> = (start..bytes.len())
        .step_by(chunk_size)
        .map(|at| Ok(pb::BlobChunk { offset: at as u64, data: bytes.slice(at..(at + chunk_size).min(bytes.len())) }))
        .collect();
    Box::pin(tokio_stream::iter(chunks))
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
        if tx.blocking_send(Ok(pb::BlobChunk { offset, data: buf.into() })).is_err() {
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
                        if tx.send(Ok(pb::BlobChunk { offset, data: data.into() })).await.is_err() {
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
                    let _ = tx.send(Ok(pb::BlobChunk { offset, data: std::mem::take(&mut buf).into() })).await;
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
                if tx.send(Ok(pb::BlobChunk { offset, data: std::mem::take(&mut buf).into() })).await.is_ok() {
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
/// A blob's whole content (`len` bytes), for the download cache; `None` if the store gave
/// a different length (the caller serves nothing then, rather than caching a wrong part).
async fn read_whole(body: BlobBody, len: u64) -> Result<Option<Bytes>, Status> {
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "reading a blob failed");
        Status::internal("reading the blob failed on the hub; retry")
    };
    let mut buf = Vec::with_capacity(len as usize);
    match body {
        BlobBody::File(mut file) => {
            // `len` is at most the cache's largest entry: one read, off the async workers.
            off_the_runtime(|| (&mut file).take(len + 1).read_to_end(&mut buf)).map_err(|e| failed(&e))?;
        }
        BlobBody::Remote(mut pieces) => {
            while let Some(piece) = pieces.recv().await {
                let piece = piece.map_err(|e| failed(&e))?;
                if buf.len() + piece.len() > len as usize {
                    return Ok(None);
                }
                buf.extend_from_slice(&piece);
            }
        }
    }
    Ok((buf.len() as u64 == len).then(|| Bytes::from(buf)))
}

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
        // The one parse of the manifest: ownership, version and limits are checked on it,
        // and the checked release carries it to the commit. One blocking-pool hop for both.
        let (checked, plan) = self
            .0
            .registry(move |r| {
                if let Some(p) = &plan {
                    r.check_rollout_plan(p)?;
                }
                Ok((r.check_publish(&who, manifest, signature)?, plan))
            })
            .await?;

        // Content that goes to the blob store is staged in an upload of its own: nothing of
        // it is served before the release is committed, and a publish that fails leaves
        // nothing behind. Small files are kept in memory and committed with the release.
        let mut receiver = ContentReceiver::new(&self.0.blobs, checked.manifest(), self.0.inline_file_max);
        let blocks = receiver.blocks();
        let io = |f: &mut dyn FnMut() -> Result<(), Status>| if blocks { off_the_runtime(f) } else { f() };
        io(&mut || receiver.finish_complete_parts())?;
        while let Some(msg) = stream.next().await {
            match msg?.part {
                Some(pb::publish_chunk::Part::Data(data)) => io(&mut || receiver.accept(&data))?,
                _ => return Err(Status::invalid_argument("only data chunks may follow the header")),
            }
        }
        let (upload, inline) = if blocks { off_the_runtime(|| receiver.finish())? } else { receiver.finish()? };
        let m = checked.manifest();
        if let Some(u) = &upload {
            off_the_runtime(|| u.seal(&format!("{} {}", m.service_id, m.version)))?;
        }

        let (release, events) =
            self.0.registry.commit_release(checked, release_notes, plan, inline).await.map_err(status)?;
        if let Some(u) = upload {
            if let Err(e) = off_the_runtime(|| u.promote()) {
                // The release is committed; the next garbage collection (or start) promotes it.
                tracing::error!(service = %release.service_id, version = %release.version, error = %e, "promoting the release's content failed; it is retried");
            }
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
        let chunk_size = self.0.download_chunk_size;
        let in_memory = |bytes: Bytes| {
            let len = bytes.len() as u64;
            if r.offset > len {
                return Err(offset_past_end(r.offset, &digest, len));
            }
            Ok(Response::new(memory_chunks(bytes, r.offset, chunk_size, &self.0.metrics)))
        };
        // A part that another node fetched moments ago (a rollout wave): no registry read
        // and no file. Only content a published release names was ever cached.
        let cached = || {
            let bytes = self.0.hot.get(&digest)?;
            self.0.metrics.download_cache_hits.inc();
            Some(bytes)
        };
        if let Some(bytes) = cached() {
            return in_memory(bytes);
        }
        // Only content of published releases is served; staged or stray blobs are not.
        let d = digest;
        let body = match self.0.registry(move |reg| reg.blob_source(&d)).await? {
            BlobSource::Unreferenced => {
                return Err(Status::not_found(format!("blob {digest} is not part of a published release")))
            }
            BlobSource::Inline(bytes) => return in_memory(bytes.into()),
            BlobSource::Stored => {
                // The first requests of a wave take turns: one reads the part, the rest find it.
                let _turn = match r.offset == 0 && self.0.hot.is_on() {
                    true => Some(self.0.hot.load_turn(&digest).await),
                    false => None,
                };
                if let Some(bytes) = cached() {
                    return in_memory(bytes);
                }
                let blobs = self.0.blobs.clone();
                let offset = r.offset;
                let Some((body, len)) = off_the_runtime(|| blobs.reader(&digest, offset))? else {
                    return Err(Status::not_found(format!("blob {digest} is not stored on this hub")));
                };
                if r.offset > len {
                    return Err(offset_past_end(r.offset, &digest, len));
                }
                // A whole part from its start: read it at once and keep it for the next node.
                if offset == 0 && self.0.hot.admits(len) {
                    if let Some(bytes) = read_whole(body, len).await? {
                        self.0.hot.insert(digest, bytes.clone());
                        return in_memory(bytes);
                    }
                    return Err(Status::internal(format!(
                        "blob {digest} on this hub is not the {len} bytes it should be; retry later"
                    )));
                }
                body
            }
        };
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
