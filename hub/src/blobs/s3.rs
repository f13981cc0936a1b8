//! The S3-compatible backend (`object_store`): `<prefix>/blobs/<2 hex>/<64 hex>` in one
//! bucket that every replica shares.
//!
//! - A blob is written to its key only after its bytes hashed to the expected digest: a
//!   small one with one create-only put (`If-None-Match: *`), a large one as a multipart
//!   upload that is completed only after the check (and aborted otherwise). A partial
//!   object is never visible. Content already stored is hashed but not sent again.
//! - Nothing is staged: downloads are served only for digests a committed release names, so
//!   a verified blob of a publish that failed is an orphan, never served, and removed by
//!   garbage collection after the grace period.
//! - Reusing stored content writes a small `touch/<hex>` marker, which garbage collection
//!   reads as "in use since", as the local backend reads a touched file's mtime.
//! - Credentials come from the config file or the environment and are never logged;
//!   errors name the operation and key only.

use super::{check_digest, parse_recipe, recipe_text, BlobError, GcReport, RemotePieces};
use bytes::Bytes;
use efa_domain::bundle::{Digest, Hasher};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;

/// Blobs up to this size are sent in one put; larger ones as a multipart upload in parts
/// of this size (S3 needs parts of at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Chunks of a chunked file fetched ahead of the one being sent (each at most 1 MiB).
const READ_AHEAD: usize = 4;

/// A bucket (and key prefix) of S3-compatible storage, with how to reach it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL of a non-AWS server (`http://127.0.0.1:8333`); unset: AWS or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`, which S3-compatible servers accept).
    pub region: Option<String>,
    /// Access key; unset: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret key; unset: `AWS_SECRET_ACCESS_KEY`. Never logged or shown.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs and error messages.
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for S3Location {
    type Err = String;

    /// `s3://bucket` or `s3://bucket/prefix`.
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| "an S3 location starts with s3://".to_string())?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!("{} is not a bucket name (3 to 63 of a-z 0-9 . -)", efa_domain::error::echo(bucket)));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p.is_empty() && !prefix.is_empty() || p == "." || p == "..")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(format!("{} is not a key prefix", efa_domain::error::echo(prefix)));
        }
        Ok(S3Location { bucket: bucket.into(), prefix: prefix.into(), ..Default::default() })
    }
}

/// The object store client and the runtime its requests run on (the blob interface is
/// synchronous, like the file system's, and is called from blocking sections).
pub(crate) struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: Arc<Runtime>,
}

impl Clone for S3Blobs {
    fn clone(&self) -> Self {
        S3Blobs { store: self.store.clone(), prefix: self.prefix.clone(), rt: self.rt.clone() }
    }
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A runtime that is shut down without waiting when the last store handle goes, so
/// dropping it inside an async context does not panic.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn remote<'a>(op: &'static str, key: &'a Key) -> impl FnOnce(object_store::Error) -> BlobError + 'a {
    move |e| BlobError::Remote { op, key: key.to_string(), message: bounded(&e.to_string()) }
}

/// Error texts of the HTTP client can quote whole response bodies; keep them short.
fn bounded(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
    s
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Blobs {
    pub fn open(at: &S3Location) -> Result<Self, BlobError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&at.bucket)
            // S3-compatible servers and AWS both honour If-None-Match on puts.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // A server that is away makes a publish fail within seconds, not minutes.
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(10), ..Default::default() })
            .with_client_options(
                ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(60)),
            );
        if let Some(endpoint) = &at.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(endpoint) = b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint) {
            // A self-hosted server (from the config or AWS_ENDPOINT_URL): buckets by path, and
            // plain HTTP only where the operator wrote http://.
            b = b.with_allow_http(endpoint.starts_with("http://")).with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &at.region {
            b = b.with_region(region);
        }
        if let Some(k) = &at.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &at.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let store = b.build().map_err(|e| BlobError::Config(bounded(&e.to_string())))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("efa-s3")
            .enable_all()
            .build()
            .map_err(|e| BlobError::Config(format!("cannot start the object storage runtime: {e}")))?;
        let blobs = S3Blobs { store: Arc::new(store), prefix: at.prefix.clone(), rt: Arc::new(Runtime(Some(rt))) };
        // Fail at start, not at the first publish, when the bucket is wrong or unreachable.
        let probe = blobs.key("blobs");
        let store = blobs.store.clone();
        blobs.run(async move {
            let mut list = store.list(Some(&probe));
            match list.next().await {
                Some(Err(e)) => Err(remote("list", &probe)(e)),
                _ => Ok(()),
            }
        })?;
        Ok(blobs)
    }

    fn key(&self, rest: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rest)
        } else {
            Key::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, digest: &Digest) -> Key {
        let hex = digest.hex();
        self.key(&format!("blobs/{}/{hex}", &hex[..2]))
    }

    fn recipe_key(&self, file: &Digest) -> Key {
        let hex = file.hex();
        self.key(&format!("blobs/{}/{hex}.chunks", &hex[..2]))
    }

    fn touch_key(&self, digest: &Digest) -> Key {
        self.key(&format!("touch/{}", digest.hex()))
    }

    /// Runs `fut` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, BlobError>> + Send + 'static,
    ) -> Result<T, BlobError> {
        let Some(rt) = self.rt.0.as_ref() else {
            return Err(BlobError::Config("the object storage client is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = || rx.recv().unwrap_or_else(|_| Err(BlobError::Config("an object storage task ended early".into())));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The object's size, `None` if it does not exist.
    fn size(&self, key: Key) -> Result<Option<u64>, BlobError> {
        let store = self.store.clone();
        self.run(async move {
            match store.head(&key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(remote("head", &key)(e)),
            }
        })
    }

    /// Whether the blob is stored with `size` bytes.
    pub fn has(&self, digest: &Digest, size: u64) -> Result<bool, BlobError> {
        Ok(self.size(self.blob_key(digest))? == Some(size))
    }

    /// Writes `bytes` to `key` unless an object is there already; true if it was written.
    fn put_new(&self, key: Key, bytes: Bytes) -> Result<bool, BlobError> {
        let store = self.store.clone();
        self.run(async move {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match store.put_opts(&key, PutPayload::from_bytes(bytes), opts).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(remote("put", &key)(e)),
            }
        })
    }

    /// Marks `digest` as in use now, so garbage collection spares it (see the module docs).
    fn touch(&self, digest: &Digest) -> Result<(), BlobError> {
        let (store, key) = (self.store.clone(), self.touch_key(digest));
        self.run(
            async move { store.put(&key, PutPayload::from_static(b"")).await.map(|_| ()).map_err(remote("put", &key)) },
        )
    }

    pub fn upload(&self) -> Upload {
        Upload { blobs: self.clone() }
    }

    pub fn reader(&self, digest: &Digest, offset: u64) -> Result<Option<(RemotePieces, u64)>, BlobError> {
        let key = self.blob_key(digest);
        let parts: Vec<(Key, u64)> = match self.size(key.clone())? {
            Some(size) => vec![(key, size)],
            None => {
                let (store, recipe) = (self.store.clone(), self.recipe_key(digest));
                let text = self.run(async move {
                    match store.get(&recipe).await {
                        Ok(r) => r.bytes().await.map(Some).map_err(remote("get", &recipe)),
                        Err(e) if is_not_found(&e) => Ok(None),
                        Err(e) => Err(remote("get", &recipe)(e)),
                    }
                })?;
                let Some(text) = text else { return Ok(None) };
                let Some(chunks) = parse_recipe(&String::from_utf8_lossy(&text)) else { return Ok(None) };
                let mut parts = Vec::with_capacity(chunks.len());
                for (chunk, size) in chunks {
                    let key = self.blob_key(&chunk);
                    let size = match size {
                        Some(s) => s,
                        None => match self.size(key.clone())? {
                            Some(s) => s,
                            None => return Ok(None),
                        },
                    };
                    parts.push((key, size));
                }
                parts
            }
        };
        let len: u64 = parts.iter().map(|(_, s)| s).sum();
        let mut skip = offset.min(len);
        let mut ranges: Vec<(Key, u64, u64)> = Vec::new();
        for (key, size) in parts {
            if skip >= size {
                skip -= size;
                continue;
            }
            ranges.push((key, skip, size));
            skip = 0;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.store.clone();
        let Some(rt) = self.rt.0.as_ref() else {
            return Err(BlobError::Config("the object storage client is closed".into()));
        };
        // One ranged GET per chunk, up to READ_AHEAD of them in flight, so a chunked file
        // streams at the store's throughput rather than one round trip per chunk; a single
        // blob streams as it arrives. The download stops when the client leaves.
        rt.spawn(async move {
            if ranges.len() == 1 {
                let (key, from, to) = ranges.remove(0);
                let opts = GetOptions { range: Some(GetRange::Bounded(from..to)), ..Default::default() };
                let mut body = match store.get_opts(&key, opts).await {
                    Ok(r) => r.into_stream(),
                    Err(e) => {
                        let _ = tx.send(Err(remote("get", &key)(e))).await;
                        return;
                    }
                };
                while let Some(piece) = body.next().await {
                    let piece = piece.map_err(remote("get", &key));
                    let failed = piece.is_err();
                    if tx.send(piece).await.is_err() || failed {
                        return;
                    }
                }
                return;
            }
            let mut ranges = ranges.into_iter();
            let mut in_flight = std::collections::VecDeque::new();
            loop {
                while in_flight.len() < READ_AHEAD {
                    let Some((key, from, to)) = ranges.next() else { break };
                    let store = store.clone();
                    in_flight.push_back(tokio::spawn(async move {
                        let opts = GetOptions { range: Some(GetRange::Bounded(from..to)), ..Default::default() };
                        match store.get_opts(&key, opts).await {
                            Ok(r) => r.bytes().await.map_err(remote("get", &key)),
                            Err(e) => Err(remote("get", &key)(e)),
                        }
                    }));
                }
                let Some(next) = in_flight.pop_front() else { return };
                let piece = match next.await {
                    Ok(p) => p,
                    Err(e) => Err(BlobError::Config(format!("a download task failed: {e}"))),
                };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    for t in in_flight {
                        t.abort();
                    }
                    return;
                }
            }
        });
        Ok(Some((rx, len)))
    }

    /// Removes blobs and recipes no published release names whose content was neither
    /// written nor reused within `grace`, and markers older than `grace`.
    pub fn collect_garbage(
        &self,
        grace: Duration,
        referenced: impl Fn(&Digest) -> bool,
    ) -> Result<GcReport, BlobError> {
        let cutoff_ms = SystemTime::now()
            .checked_sub(grace)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let list = |prefix: Key| {
            let store = self.store.clone();
            self.run(async move {
                let mut out = Vec::new();
                let mut s = store.list(Some(&prefix));
                while let Some(meta) = s.next().await {
                    let meta = meta.map_err(remote("list", &prefix))?;
                    out.push((meta.location, meta.size, meta.last_modified.timestamp_millis()));
                }
                Ok(out)
            })
        };
        // Blobs first, markers second: a publish that reuses content touches it before its
        // commit, so a marker written after the blob listing is still seen below.
        let blobs = list(self.key("blobs"))?;
        let touched: HashMap<String, i64> = list(self.key("touch"))?
            .into_iter()
            .filter_map(|(k, _, at)| Some((k.filename()?.to_string(), at)))
            .collect();
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for (key, size, at) in blobs {
            let Some(name) = key.filename() else { continue };
            let hex = name.strip_suffix(".chunks").unwrap_or(name);
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else { continue };
            let last_use = at.max(touched.get(hex).copied().unwrap_or(0));
            if last_use >= cutoff_ms || referenced(&digest) {
                continue;
            }
            report.blobs_removed += 1;
            report.bytes_removed += size;
            doomed.push(key);
        }
        for (key, _, at) in list(self.key("touch"))? {
            if at < cutoff_ms {
                doomed.push(key);
            }
        }
        for key in doomed {
            let store = self.store.clone();
            self.run(async move {
                match store.delete(&key).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(remote("delete", &key)(e)),
                }
            })?;
        }
        Ok(report)
    }
}

/// The blobs of one publish on S3: each goes to its key once verified (see the module docs).
pub(crate) struct Upload {
    blobs: S3Blobs,
}

impl Upload {
    pub fn writer(&self, expected: Digest, label: String) -> Result<BlobWriter, BlobError> {
        let key = self.blobs.blob_key(&expected);
        let existing = self.blobs.size(key.clone())?.is_some();
        if existing {
            self.blobs.touch(&expected)?;
        }
        Ok(BlobWriter {
            blobs: self.blobs.clone(),
            key,
            expected,
            label,
            existing,
            buffer: Vec::new(),
            multipart: None,
            hasher: Hasher::default(),
            written: 0,
        })
    }

    pub fn write_recipe(&self, file: Digest, chunks: &[(Digest, u64)]) -> Result<(), BlobError> {
        // Same file, same chunks, same text: an existing recipe is the one we would write.
        let key = self.blobs.recipe_key(&file);
        if !self.blobs.put_new(key, Bytes::from(recipe_text(chunks)))? {
            self.blobs.touch(&file)?;
        }
        Ok(())
    }
}

/// One blob on its way to S3.
pub(crate) struct BlobWriter {
    blobs: S3Blobs,
    key: Key,
    expected: Digest,
    label: String,
    /// Stored already: bytes are only hashed.
    pub(super) existing: bool,
    buffer: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
    hasher: Hasher,
    written: u64,
}

impl BlobWriter {
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.existing {
            return Ok(());
        }
        while !bytes.is_empty() {
            let take = (PART_SIZE - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // Send a full part only once more bytes follow: the last part may be small, and
            // a blob of exactly PART_SIZE still goes in one put.
            if self.buffer.len() == PART_SIZE && !bytes.is_empty() {
                self.send_part()?;
            }
        }
        if self.buffer.len() == PART_SIZE && self.multipart.is_some() {
            self.send_part()?;
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<(), BlobError> {
        let part = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE)));
        let mut upload = match self.multipart.take() {
            Some(u) => u,
            None => {
                let (store, key) = (self.blobs.store.clone(), self.key.clone());
                self.blobs.run(async move { store.put_multipart(&key).await.map_err(remote("put", &key)) })?
            }
        };
        let key = self.key.clone();
        let (upload, result) = self.blobs.run(async move {
            let r = upload.put_part(PutPayload::from_bytes(part)).await.map_err(remote("put part", &key));
            Ok((upload, r))
        })?;
        self.multipart = Some(upload);
        result
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(mut self) -> Result<(), BlobError> {
        // On a mismatch, dropping the writer aborts a multipart upload: no object appears.
        check_digest(std::mem::take(&mut self.hasher), self.expected, std::mem::take(&mut self.label))?;
        if self.existing {
            return Ok(());
        }
        match self.multipart.take() {
            None => {
                let bytes = Bytes::from(std::mem::take(&mut self.buffer));
                if !self.blobs.put_new(self.key.clone(), bytes)? {
                    // Stored meanwhile by a concurrent publish of the same content.
                    self.blobs.touch(&self.expected)?;
                }
                Ok(())
            }
            Some(mut upload) => {
                let rest = Bytes::from(std::mem::take(&mut self.buffer));
                let key = self.key.clone();
                self.blobs.run(async move {
                    let r = async {
                        if !rest.is_empty() {
                            upload.put_part(PutPayload::from_bytes(rest)).await?;
                        }
                        upload.complete().await
                    }
                    .await;
                    match r {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            let _ = upload.abort().await;
                            Err(remote("complete", &key)(e))
                        }
                    }
                })
            }
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // A publish that failed or was cut off: the parts sent so far are discarded.
        if let (Some(mut upload), Some(rt)) = (self.multipart.take(), self.blobs.rt.0.as_ref()) {
            rt.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}
