//! Scenarios against a real hub (mTLS on 127.0.0.1, sled and blobs in the work dir):
//! (B) durable writes, (C) downloads with an nginx peer, (D) event fan-out.

use crate::report::Row;
use crate::sys;
use anyhow::{anyhow, Result};
use efa_cli::publish::{build_signed_manifest, publish_raw, PublishSpec};
use efa_domain::authz::Identity;
use efa_domain::bundle::Manifest;
use efa_domain::model::catalog::NewService;
use efa_domain::model::ids::{Ags, LandCode, ServiceId};
use efa_hub::dev::DevFederation;
use efa_proto::v1 as pb;
use efa_proto::v1::adoption_service_client::AdoptionServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use efa_registry::import::bundled_ozg;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

const NRW: &str = "05";

/// A dev federation in its own temp dir under the work dir.
pub struct Hub {
    pub fed: DevFederation,
    pub dir: tempfile::TempDir,
}

impl Hub {
    pub async fn start(work_dir: &Path, chunk_size: Option<usize>) -> Result<Self> {
        Self::start_on(work_dir, chunk_size, efa_hub::StoreLocation::Sled).await
    }

    /// A hub on `store` (sled under its dir, or a PostgreSQL database).
    pub async fn start_on(work_dir: &Path, chunk_size: Option<usize>, store: efa_hub::StoreLocation) -> Result<Self> {
        Self::start_with(work_dir, chunk_size, store, efa_hub::BlobLocation::DataDir).await
    }

    /// A hub on `store` with its blobs at `blobs` (its data dir, or an S3 bucket).
    pub async fn start_with(
        work_dir: &Path,
        chunk_size: Option<usize>,
        store: efa_hub::StoreLocation,
        blobs: efa_hub::BlobLocation,
    ) -> Result<Self> {
        Self::start_tuned(work_dir, move |c| {
            c.store = store.clone();
            c.blobs = blobs.clone();
            if let Some(n) = chunk_size {
                c.download_chunk_size = n;
            }
        })
        .await
    }

    /// A hub on sled in its data dir with `tune` applied to its config after the bench's
    /// defaults, on every (re)start: a tune that reads a flag can switch a setting between
    /// restarts of the same federation (the transparency log in (L)).
    pub async fn start_tuned(
        work_dir: &Path,
        tune: impl Fn(&mut efa_hub::HubConfig) + Send + Sync + 'static,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("efa-bench-hub-").tempdir_in(work_dir)?;
        let fed = DevFederation::start_tuned(dir.path(), "127.0.0.1:0".parse()?, move |c| {
            c.dashboard = None;
            // The load of thousands of nodes comes through a few certificates here; per-caller
            // limits would measure the admission policy, not the hub.
            c.caller_limits = efa_hub::limits::Limits::unlimited();
            tune(c);
        })
        .await?;
        Ok(Hub { fed, dir })
    }

    pub fn land() -> LandCode {
        NRW.parse().expect("static Land code")
    }

    /// Registers `n` NRW services (ids `bench-<i>`) directly in the registry.
    pub fn register_services(&self, n: usize) -> Result<Vec<ServiceId>> {
        register_services(self.fed.registry().ok_or_else(|| anyhow!("hub not running"))?, n)
    }

    /// Publishes `dir` as `service` `version` through PublishRelease over mTLS.
    pub async fn publish(
        &self,
        channel: tonic::transport::Channel,
        dir: &Path,
        service: &ServiceId,
        version: &str,
    ) -> Result<Manifest> {
        publish_signed(channel, &self.fed.signing_key(&Self::land())?, dir, service, version).await
    }

    pub async fn land_channel(&self) -> Result<tonic::transport::Channel> {
        Ok(self.fed.channel(&Identity::Land(Self::land())).await?)
    }

    pub fn kommunen(&self, n: usize) -> Result<Vec<Ags>> {
        let gv = efa_registry::import::bundled_gv100ad()?;
        Ok(gv.kommunen.iter().take(n).map(|k| k.ags.clone()).collect())
    }
}

/// Registers `n` NRW services (ids `bench-<i>`) directly in `reg`: setup, not measured.
pub fn register_services(reg: &efa_registry::Registry, n: usize) -> Result<Vec<ServiceId>> {
    let ozg = bundled_ozg()?;
    (0..n)
        .map(|i| {
            let id: ServiceId = format!("bench-{i}").parse()?;
            reg.register_service(
                &efa_domain::authz::Identity::Land(Hub::land()),
                NewService {
                    id: id.clone(),
                    ozg_id: ozg[i % ozg.len()].ozg_id.clone(),
                    leistungsschluessel: None,
                    title: format!("Benchmark {i}"),
                    description: String::new(),
                    parameters: vec![],
                    adoption_public: false,
                    more_leistungsschluessel: vec![],
                },
            )?;
            Ok(id)
        })
        .collect()
}

/// Signs `dir` as NRW's release `service` `version` with `key` and sends it through
/// PublishRelease on `channel` (which must act as the Land).
pub async fn publish_signed(
    channel: tonic::transport::Channel,
    key: &efa_domain::signing::SigningKey,
    dir: &Path,
    service: &ServiceId,
    version: &str,
) -> Result<Manifest> {
    let spec = PublishSpec {
        dir,
        service_id: service.clone(),
        version: version.into(),
        channel: "stable".parse()?,
        land: Hub::land(),
        release_notes: String::new(),
        signing_key: key,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec)?;
    let manifest = Manifest::from_bytes(&signed.manifest, &Default::default())?;
    publish_raw(channel, signed.manifest, signed.signature, String::new(), signed.files, |_, _| {}).await?;
    Ok(manifest)
}

pub fn small_bundle(root: &Path) -> Result<PathBuf> {
    let dir = root.join("bundle-small");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), sys::random_bytes(1024, 1))?;
    Ok(dir)
}

// ------------------------------------------------------------------------ (B) writes

pub struct WriteScale {
    pub secs: f64,
    pub concurrency: Vec<usize>,
}

pub async fn writes(work_dir: &Path, scale: &WriteScale) -> Result<Vec<Row>> {
    let dur = Duration::from_secs_f64(scale.secs);
    // The disk is shared (a VM's virtual disk): its fsync rate can swing by 30x within
    // minutes, so the ceiling is measured before and after the writes and the higher one
    // judges them, which is the stricter comparison. The probe file sits beside the stores.
    let probe_dir = tempfile::Builder::new().prefix("efa-bench-fsync-").tempdir_in(work_dir)?;
    let ceiling_now = || -> Result<(f64, f64)> {
        Ok((
            sys::fsync_ceiling(probe_dir.path(), 4096, dur, true)?,
            sys::fsync_ceiling(probe_dir.path(), 4096, dur, false)?,
        ))
    };
    let before = ceiling_now()?;
    let scen = "B durable writes";
    // (metric, ops/s, note); turned into rows once the ceiling after the run is known.
    let mut measured: Vec<(String, f64, String)> = Vec::new();
    // The default store (zstd pages), then the same writes on an uncompressed one: what
    // compression costs per write, side by side in one run.
    for compressed in [true, false] {
        let hub = Hub::start_tuned(work_dir, move |c| c.sled_compression = compressed).await?;
        let store = if compressed { "" } else { ", uncompressed store" };
        for (metric, rate, note) in measure_writes(&hub, scale, dur).await? {
            let note = if compressed { note.to_string() } else { format!("{note}; sled_compression = false") };
            measured.push((format!("{metric}{store}"), rate, note));
        }
        hub_shutdown(hub).await;
    }
    let after = ceiling_now()?;
    let best = |(append, overwrite): (f64, f64)| append.max(overwrite);
    let ceiling = best(before).max(best(after));
    let mut rows =
        vec![Row::new(scen, "raw fsync ceiling (4 KiB write + fsync loop)", ceiling, "ops/s").note(format!(
            "one writer, same disk as the hubs' sled; higher of before/after the writes: \
         before {:.0}/s (append+fsync {:.0}, overwrite+fdatasync {:.0}), after {:.0}/s ({:.0}, {:.0})",
            best(before),
            before.0,
            before.1,
            best(after),
            after.0,
            after.1
        ))];
    for (metric, rate, note) in measured {
        rows.push(
            Row::new(scen, metric, rate, "ops/s")
                .peer("fsync", Some(ceiling))
                .goal("≥ 0.5× fsync ceiling", Some(rate >= ceiling / 2.0))
                .note(note),
        );
    }
    Ok(rows)
}

/// Publishes and adoption reports per second on `hub` at each concurrency of `scale`.
async fn measure_writes(hub: &Hub, scale: &WriteScale, dur: Duration) -> Result<Vec<(String, f64, &'static str)>> {
    let max_c = scale.concurrency.iter().copied().max().unwrap_or(1);
    let services = hub.register_services(max_c.max(1))?;
    let bundle = small_bundle(hub.dir.path())?;
    let mut measured = Vec::new();

    // Publishes: `c` Land publishers in flight, each on its own connection and service.
    for (r, &c) in scale.concurrency.iter().enumerate() {
        let r = r + 1;
        let mut chans = Vec::new();
        for _ in 0..c {
            chans.push(hub.land_channel().await?);
        }
        // A Land's publishing pipeline holds its key; reading the key file per publish would
        // spend the shared cores on the client instead of the hub.
        let key = hub.fed.signing_key(&Hub::land())?;
        let start = Instant::now();
        let tasks = chans.into_iter().enumerate().map(|(i, ch)| {
            let (sid, bundle, key) = (services[i].clone(), bundle.clone(), &key);
            async move {
                let mut n = 0u64;
                while start.elapsed() < dur {
                    publish_signed(ch.clone(), key, &bundle, &sid, &format!("{r}.{n}.0")).await?;
                    n += 1;
                }
                Ok::<u64, anyhow::Error>(n)
            }
        });
        let counts = futures_join_all(tasks).await?;
        let total: u64 = counts.iter().sum();
        let rate = total as f64 / start.elapsed().as_secs_f64();
        measured.push((
            format!("publishes/s, {c} in flight"),
            rate,
            "1 KiB bundle (its file committed with the release, no blob file), one release commit through the commit thread",
        ));
    }

    // Adoption reports: `c` Kommunen, each with its own certificate and connection.
    let sid = services[0].clone();
    hub.publish(hub.land_channel().await?, &bundle, &sid, "100.0.0").await?;
    let kommunen = hub.kommunen(max_c)?;
    for &c in &scale.concurrency {
        let rate = report_rate(hub, &sid, &kommunen[..c.min(kommunen.len())], dur).await?;
        measured.push((
            format!("adoption reports/s, {c} in flight"),
            rate,
            "ReportAdoption as a Kommune: sled transaction + event, flushed by the commit thread",
        ));
    }
    Ok(measured)
}

/// Adoption reports/s with one Kommune per entry of `kommunen` in flight (each with its own
/// certificate and connection), reporting on `sid` at version 100.0.0 for `dur`.
pub async fn report_rate(hub: &Hub, sid: &ServiceId, kommunen: &[Ags], dur: Duration) -> Result<f64> {
    let mut clients = Vec::new();
    for ags in kommunen {
        clients.push(AdoptionServiceClient::new(hub.fed.channel(&Identity::Kommune(ags.clone())).await?));
    }
    let start = Instant::now();
    let tasks = clients.into_iter().map(|mut client| {
        let sid = sid.to_string();
        async move {
            let mut n = 0u64;
            while start.elapsed() < dur {
                let state =
                    if n.is_multiple_of(2) { pb::AdoptionState::Evaluating } else { pb::AdoptionState::Deployed };
                client
                    .report_adoption(pb::AdoptionReport {
                        service_id: sid.clone(),
                        version: "100.0.0".into(),
                        state: state as i32,
                        reason: String::new(),
                    })
                    .await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }
    });
    let total: u64 = futures_join_all(tasks).await?.iter().sum();
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Runs futures concurrently on this task (no Send bound needed) and collects their results.
async fn futures_join_all<T, F: Future<Output = Result<T>>>(futs: impl IntoIterator<Item = F>) -> Result<Vec<T>> {
    let mut set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<Result<T>>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => out[i] = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|r| r.expect("every future completed")).collect()
}

pub(crate) async fn hub_shutdown(mut hub: Hub) {
    let _ = hub.fed.stop_hub().await;
}

// ------------------------------------------------------------------------ (C) downloads

#[derive(Clone)]
pub struct DownloadScale {
    pub sizes_mb: Vec<u64>,
    pub concurrent: usize,
    /// Interleaved hub/nginx pairs per row of the comparison.
    pub pairs: usize,
    /// MB a single-stream sample moves at least (a small file several times in a row).
    pub sample_mb: u64,
    /// Best-of repeats of the rows that are not compared in pairs (S3, sweeps).
    pub repeats: usize,
    pub chunk_sweep: Vec<usize>,
    /// Client HTTP/2 stream windows to try (the connection window is twice as large).
    pub window_sweep: Vec<u32>,
    pub may_install: bool,
}

pub const MB: f64 = 1_000_000.0;

async fn fetch_once(channel: tonic::transport::Channel, digest: &str) -> Result<u64> {
    let mut client = ReleaseServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let mut stream = client.fetch_blob(pb::FetchBlobRequest { digest: digest.into(), offset: 0 }).await?.into_inner();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk?.data.len() as u64;
    }
    Ok(n)
}

/// Single-stream MB/s (best of `repeats`) and aggregate MB/s of `concurrent` downloads,
/// each on its own connection.
pub(crate) async fn hub_download(
    hub: &Hub,
    kommune: &Ags,
    digest: &str,
    size: u64,
    scale: &DownloadScale,
) -> Result<(f64, f64)> {
    let ch = hub.fed.channel(&Identity::Kommune(kommune.clone())).await?;
    let mut best = 0.0f64;
    for _ in 0..scale.repeats {
        let t = Instant::now();
        let n = fetch_once(ch.clone(), digest).await?;
        anyhow::ensure!(n == size, "downloaded {n} of {size} bytes");
        best = best.max(size as f64 / MB / t.elapsed().as_secs_f64());
    }
    let mut chans = Vec::new();
    for _ in 0..scale.concurrent {
        chans.push(hub.fed.channel(&Identity::Kommune(kommune.clone())).await?);
    }
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for ch in chans {
        let d = digest.to_string();
        set.spawn(async move { fetch_once(ch, &d).await });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok((best, total as f64 / MB / t.elapsed().as_secs_f64()))
}

/// (C): the hub in its own process beside nginx in interleaved pairs ([`crate::download`]),
/// then the same files from a hub whose blobs are on S3, then the chunk and window sweeps
/// (these two in-process: they compare the hub with itself).
pub async fn downloads(work_dir: &Path, scale: &DownloadScale, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let files = tempfile::Builder::new().prefix("efa-bench-files-").tempdir_in(work_dir)?;
    let bundle = files.path().join("bundle-big");
    let www = files.path().join("www");
    std::fs::create_dir_all(&bundle)?;
    std::fs::create_dir_all(&www)?;
    for (i, mb) in scale.sizes_mb.iter().enumerate() {
        let name = format!("blob-{mb}mb.bin");
        std::fs::write(bundle.join(&name), sys::random_bytes((*mb * 1_000_000) as usize, 100 + i as u64))?;
        // The same bytes for nginx, without writing them twice.
        std::fs::hard_link(bundle.join(&name), www.join(&name))?;
    }
    let (mut rows, nginx_results) = crate::download::paired(work_dir, &bundle, &www, scale, notes).await?;
    // The same files from a hub whose blobs are on S3 (SeaweedFS from the test kit).
    match efa_testkit::s3::server() {
        Ok(server) => rows.extend(crate::s3::downloads(work_dir, server, &bundle, &nginx_results, scale).await?),
        Err(e) => notes.push(format!("C: downloads from S3 not measured: {e}")),
    }

    // Chunk-size sweep on the largest size: why 256 KiB (the default) was chosen.
    let scen = "C download";
    if let Some(&mb) = scale.sizes_mb.iter().max() {
        for &chunk in &scale.chunk_sweep {
            let hub = Hub::start(work_dir, Some(chunk)).await?;
            let sid = hub.register_services(1)?.remove(0);
            let dir = hub.dir.path().join("b");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("blob.bin"), sys::random_bytes((mb * 1_000_000) as usize, 7))?;
            let m = hub.publish(hub.land_channel().await?, &dir, &sid, "1.0.0").await?;
            let k = hub.kommunen(1)?.remove(0);
            let one = DownloadScale { concurrent: 0, chunk_sweep: vec![], window_sweep: vec![], ..scale.clone() };
            let (single, _) = hub_download(&hub, &k, &m.files[0].digest.to_string(), m.files[0].size, &one).await?;
            rows.push(
                Row::new(scen, format!("chunk sweep {} KiB, {mb} MB 1 stream", chunk / 1024), single, "MB/s")
                    .note("HTTP/2 windows fixed: connection 8 MiB, stream 4 MiB"),
            );
            hub_shutdown(hub).await;
        }
        if !scale.window_sweep.is_empty() {
            rows.extend(window_sweep(work_dir, mb, scale).await?);
        }
    }
    Ok(rows)
}

/// HTTP/2 flow-control sweep: on a download the *receiver's* windows bound how much the hub
/// may send before waiting for a WINDOW_UPDATE, so these are the node's (client's) settings.
async fn window_sweep(work_dir: &Path, mb: u64, scale: &DownloadScale) -> Result<Vec<Row>> {
    let hub = Hub::start(work_dir, None).await?;
    let sid = hub.register_services(1)?.remove(0);
    let dir = hub.dir.path().join("b");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("blob.bin"), sys::random_bytes((mb * 1_000_000) as usize, 7))?;
    let m = hub.publish(hub.land_channel().await?, &dir, &sid, "1.0.0").await?;
    let (digest, size) = (m.files[0].digest.to_string(), m.files[0].size);
    let tls = hub.fed.client_tls(&Identity::Kommune(hub.kommunen(1)?.remove(0)))?;
    let mut rows = Vec::new();
    for &window in &scale.window_sweep {
        let ch = efa_proto::tls::endpoint(&hub.fed.url(), Some(&tls))?
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.saturating_mul(2))
            .connect()
            .await?;
        let mut best = 0.0f64;
        // Small windows crawl (the 64 KiB default moves ~2 MB/s); one run says enough.
        let repeats = if window < 1024 * 1024 { 1 } else { scale.repeats };
        for _ in 0..repeats {
            let t = Instant::now();
            let n = fetch_once(ch.clone(), &digest).await?;
            anyhow::ensure!(n == size, "downloaded {n} of {size} bytes");
            best = best.max(size as f64 / MB / t.elapsed().as_secs_f64());
        }
        rows.push(
            Row::new("C download", format!("window sweep {} KiB, {mb} MB 1 stream", window / 1024), best, "MB/s").note(
                format!("node stream window {} KiB, connection window twice that; 256 KiB chunks", window / 1024),
            ),
        );
    }
    hub_shutdown(hub).await;
    Ok(rows)
}

/// (E) Incremental updates: a node that has version 1 of a bundle fetches version 2, in
/// which `changed_pct` % of one large file was rewritten in place. Reports bytes moved.
pub async fn incremental(work_dir: &Path, size_mb: u64, changed_pct: f64) -> Result<Vec<Row>> {
    let hub = Hub::start(work_dir, None).await?;
    let sid = hub.register_services(1)?.remove(0);
    let size = (size_mb * 1_000_000) as usize;
    let mut data = sys::random_bytes(size, 7);
    let v1 = hub.dir.path().join("incr-v1");
    let v2 = hub.dir.path().join("incr-v2");
    std::fs::create_dir_all(&v1)?;
    std::fs::create_dir_all(&v2)?;
    std::fs::write(v1.join("bundle.bin"), &data)?;
    let changed = ((size as f64) * changed_pct / 100.0) as usize;
    let start = size / 2;
    for b in &mut data[start..start + changed] {
        *b = !*b;
    }
    std::fs::write(v2.join("bundle.bin"), &data)?;
    let m1 = hub.publish(hub.land_channel().await?, &v1, &sid, "1.0.0").await?;
    let m2 = hub.publish(hub.land_channel().await?, &v2, &sid, "1.1.0").await?;
    let kommune = hub.kommunen(1)?.remove(0);
    let ch = hub.fed.channel(&efa_domain::authz::Identity::Kommune(kommune)).await?;
    let cache = efa_node::fetch::BlobCache::new(&hub.dir.path().join("node-cache"))?;
    let hub_client = efa_node::hub::HubClient::new(ch);
    let first = efa_node::fetch::fetch_release(&hub_client, &cache, &m1, &|_, _| {}).await?;
    let update = efa_node::fetch::fetch_release(&hub_client, &cache, &m2, &|_, _| {}).await?;
    let pct = 100.0 * update.bytes_downloaded as f64 / size as f64;
    let scen = "E incremental";
    Ok(vec![
        Row::new(
            scen,
            format!("{size_mb} MB bundle, first install: bytes moved"),
            first.bytes_downloaded as f64 / MB,
            "MB",
        )
        .note(format!("{} content-defined chunks", m1.files[0].chunks.len())),
        Row::new(scen, format!("{changed_pct}% rewritten: bytes moved"), update.bytes_downloaded as f64 / MB, "MB")
            .note(format!("{:.2} % of the bundle", pct)),
        Row::new(scen, "update moves, % of bundle", pct, "%").goal("≤ 3 %", Some(pct <= 3.0)),
    ])
}
