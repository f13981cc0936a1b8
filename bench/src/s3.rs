//! (C) on S3: the same files downloaded from a hub whose blobs are on S3-compatible storage
//! (the test kit's SeaweedFS), beside nginx and beside the S3 server's own GET rate.

use crate::hub::{hub_download, hub_shutdown, DownloadScale, Hub, MB};
use crate::report::Row;
use anyhow::{anyhow, Result};
use std::path::Path;
use std::time::Instant;

/// Downloads from a hub whose blobs are on S3-compatible storage, beside nginx serving the
/// same files from a local directory.
pub async fn downloads(
    work_dir: &Path,
    server: &efa_testkit::s3::Server,
    bundle: &Path,
    nginx: &[Option<(f64, f64)>],
    scale: &DownloadScale,
) -> Result<Vec<Row>> {
    let at = efa_hub::S3Location {
        bucket: efa_testkit::s3::BUCKET.into(),
        prefix: server.fresh_prefix(),
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some(efa_testkit::s3::ACCESS_KEY.into()),
        secret_access_key: Some(efa_testkit::s3::SECRET_KEY.into()),
    };
    let hub =
        Hub::start_with(work_dir, None, efa_hub::StoreLocation::Sled, efa_hub::BlobLocation::S3(at.clone())).await?;
    let sid = hub.register_services(1)?.remove(0);
    let t = Instant::now();
    let manifest = hub.publish(hub.land_channel().await?, bundle, &sid, "1.0.0").await?;
    let publish_s = t.elapsed().as_secs_f64();
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let kommune = hub.kommunen(1)?.remove(0);
    let scen = "C download (S3)";
    let mut rows = vec![Row::new(scen, "publish to S3", total as f64 / MB / publish_s, "MB/s").note(format!(
        "{} files, {:.0} MB, SeaweedFS `weed mini` on loopback",
        manifest.files.len(),
        total as f64 / MB
    ))];
    for (mb, peer) in scale.sizes_mb.iter().zip(nginx) {
        let name = format!("blob-{mb}mb.bin");
        let entry = manifest.files.iter().find(|f| f.path.as_str() == name).ok_or_else(|| anyhow!("{name}"))?;
        let (single, many) = hub_download(&hub, &kommune, &entry.digest.to_string(), entry.size, scale).await?;
        let ratio = peer.map(|p| single / p.0);
        let raw = raw_get(&at, entry, scale.repeats).await?;
        rows.push(
            Row::new(scen, format!("{mb} MB, 1 stream"), single, "MB/s")
                .peer("nginx", peer.map(|p| p.0))
                .goal("≥ 0.8× nginx", ratio.map(|r| r >= 0.8))
                .note(format!(
                    "FetchBlob over mTLS, chunks read 4 ahead from S3, best of {}; the S3 server itself: {raw:.0} MB/s \
                     (the same GETs straight from it, no hub, no TLS); nginx: the median of the pairs above",
                    scale.repeats
                )),
        );
        rows.push(
            Row::new(scen, format!("{mb} MB, {} concurrent", scale.concurrent), many, "MB/s")
                .peer("nginx", peer.map(|p| p.1))
                .note("aggregate; one connection per downloader"),
        );
    }
    hub_shutdown(hub).await;
    Ok(rows)
}

/// MB/s of fetching a file's objects straight from the S3 server as the hub does (ranged
/// GETs per chunk, 4 in flight), best of `repeats`: the ceiling the server sets.
async fn raw_get(at: &efa_hub::S3Location, file: &efa_domain::bundle::FileEntry, repeats: usize) -> Result<f64> {
    use object_store::ObjectStore;
    let store = std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&at.bucket)
            .with_endpoint(at.endpoint.clone().unwrap_or_default())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(at.access_key_id.clone().unwrap_or_default())
            .with_secret_access_key(at.secret_access_key.clone().unwrap_or_default())
            .build()?,
    );
    let key = |d: &efa_domain::bundle::Digest| {
        object_store::path::Path::from(format!("{}/blobs/{}/{}", at.prefix, &d.hex()[..2], d.hex()))
    };
    let keys: Vec<object_store::path::Path> = if file.chunks.is_empty() {
        vec![key(&file.digest)]
    } else {
        file.chunks.iter().map(|c| key(&c.digest)).collect()
    };
    let mut best = 0.0f64;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let mut total = 0u64;
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = keys.iter();
        loop {
            while in_flight.len() < 4 {
                let Some(k) = next.next() else { break };
                let (store, k) = (store.clone(), k.clone());
                in_flight.push_back(tokio::spawn(async move { store.get(&k).await?.bytes().await }));
            }
            let Some(h) = in_flight.pop_front() else { break };
            total += h.await??.len() as u64;
        }
        anyhow::ensure!(total == file.size, "read {total} of {} bytes from S3", file.size);
        best = best.max(total as f64 / MB / t.elapsed().as_secs_f64());
    }
    Ok(best)
}
