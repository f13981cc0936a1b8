//! (C) downloads, the hub beside nginx: both in their own processes on the same two cores,
//! the same files, clients with the same HTTP/2 windows in this process, measured in
//! interleaved pairs ([`crate::paired`]).

use crate::child::HubProcess;
use crate::hub::{DownloadScale, MB};
use crate::paired::{interleave, Pairs};
use crate::report::Row;
use crate::{nginx, watchers};
use anyhow::{anyhow, Context, Result};
use efa_domain::bundle::Digest;
use efa_node::hub::HubClient;
use std::path::Path;
use std::time::Instant;
use tokio_stream::StreamExt;

/// The nginx figures of one size for the S3 rows: medians of (1 stream, concurrent) MB/s.
pub type PeerMedians = Option<(f64, f64)>;

/// The rows of the comparison, and nginx's medians per size (in `scale.sizes_mb` order).
pub async fn paired(
    work_dir: &Path,
    bundle: &Path,
    www: &Path,
    scale: &DownloadScale,
    notes: &mut Vec<String>,
) -> Result<(Vec<Row>, Vec<PeerMedians>)> {
    let hub = HubProcess::spawn(work_dir).await?;
    let result = measure(&hub, bundle, www, scale, notes).await;
    hub.stop().await;
    result
}

async fn measure(
    hub: &HubProcess,
    bundle: &Path,
    www: &Path,
    scale: &DownloadScale,
    notes: &mut Vec<String>,
) -> Result<(Vec<Row>, Vec<PeerMedians>)> {
    let manifest = hub.publish(hub.land_channel().await?, bundle, "1.0.0").await?;
    let pki = hub.root().join("pki");
    let server = nginx::start_peer(&hub.root().join("nginx"), www, &pki, scale.may_install, "C", notes);
    let ca = nginx::ca(&pki.join("ca.pem"))?;
    if let (Some(n), Some(mb)) = (&server, scale.sizes_mb.first()) {
        let (_, version) = nginx::connected(&ca, &format!("https://127.0.0.1:{}/blob-{mb}mb.bin", n.port), 1).await?;
        notes.push(format!(
            "C: hub and nginx each in their own process; nginx spoke {version} to reqwest clients with a node's \
             HTTP/2 windows (stream 4 MiB, connection 8 MiB)"
        ));
    }
    let scen = "C download";
    let mut rows = Vec::new();
    let mut medians = Vec::new();
    for mb in &scale.sizes_mb {
        let name = format!("blob-{mb}mb.bin");
        let entry = manifest.files.iter().find(|f| f.path.as_str() == name).ok_or_else(|| anyhow!("{name}"))?;
        let (digest, size) = (&entry.digest, entry.size);
        let url = server.as_ref().map(|n| format!("https://127.0.0.1:{}/{name}", n.port));
        // Small files move several times in a row per sample, so a sample lasts long
        // enough for the clock's and the scheduler's noise not to matter.
        let reps = (scale.sample_mb / mb).max(1);

        let one = interleave(
            scale.pairs,
            || hub_one(hub, digest, size, reps),
            url.as_deref().map(|u| {
                let ca = &ca;
                move || nginx_one(ca, u, size, reps)
            }),
        )
        .await
        .with_context(|| format!("{name}, 1 stream"))?;
        let many = interleave(
            scale.pairs,
            || hub_many(hub, digest, size, scale.concurrent),
            url.as_deref().map(|u| {
                let ca = &ca;
                move || nginx_many(ca, u, size, scale.concurrent)
            }),
        )
        .await
        .with_context(|| format!("{name}, {} concurrent", scale.concurrent))?;
        for (p, what) in [(&one, "1 stream"), (&many, "concurrent")] {
            if let Some(e) = &p.peer_error {
                notes.push(format!("C: nginx download of {name} ({what}) failed: {e}"));
            }
        }
        let (s1, sn) = (summary(&one), summary(&many));
        medians.push(s1.peer.zip(sn.peer));
        let met = |s: &crate::paired::Summary| s.ratio.map(|r| r >= 0.8);
        rows.push(s1.row(scen, format!("{mb} MB, 1 stream"), "MB/s", "nginx").goal("≥ 0.8× nginx", met(&s1)).note(
            format!(
                "{}; a sample: {reps} download(s) in a row on one fresh connection (handshake before the clock); \
                 FetchBlob of the whole file over mTLS vs GET over HTTPS, client windows as a node's",
                s1.how()
            ),
        ));
        rows.push(
            sn.row(scen, format!("{mb} MB, {} concurrent", scale.concurrent), "MB/s", "nginx")
                .goal("≥ 0.8× nginx", met(&sn))
                .note(format!(
                    "{}; aggregate of {} downloads, one fresh connection each, all handshakes before the clock",
                    sn.how(),
                    scale.concurrent
                )),
        );
    }
    Ok((rows, medians))
}

fn summary(p: &Pairs<f64>) -> crate::paired::Summary {
    p.summary(|v| *v)
}

/// Streams blob `digest` from offset 0 as a node does, counting the bytes.
pub async fn fetch_counted(client: &HubClient, digest: &Digest) -> Result<u64> {
    let mut parts = client.blob(digest, 0).await?;
    let mut n = 0u64;
    while let Some(part) = parts.next().await {
        n += part?.1.len() as u64;
    }
    Ok(n)
}

/// MB/s of `reps` downloads in a row on one fresh connection.
async fn hub_one(hub: &HubProcess, digest: &Digest, size: u64, reps: u64) -> Result<f64> {
    let client = HubClient::new(hub.kommune_endpoint()?.connect().await?);
    let t = Instant::now();
    for _ in 0..reps {
        let n = fetch_counted(&client, digest).await?;
        anyhow::ensure!(n == size, "hub sent {n} of {size} bytes");
    }
    Ok((reps * size) as f64 / MB / t.elapsed().as_secs_f64())
}

async fn nginx_one(ca: &reqwest::Certificate, url: &str, size: u64, reps: u64) -> Result<f64> {
    let (clients, _) = nginx::connected(ca, url, 1).await?;
    let t = Instant::now();
    for _ in 0..reps {
        let n = nginx::get(&clients[0], url).await?;
        anyhow::ensure!(n == size, "nginx sent {n} of {size} bytes");
    }
    Ok((reps * size) as f64 / MB / t.elapsed().as_secs_f64())
}

/// Aggregate MB/s of `n` downloads at once, each on its own connection.
async fn hub_many(hub: &HubProcess, digest: &Digest, size: u64, n: usize) -> Result<f64> {
    let chans = watchers::connect_many(&hub.kommune_endpoint()?, n).await?;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for ch in chans {
        let d = *digest;
        set.spawn(async move { fetch_counted(&HubClient::new(ch), &d).await });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    anyhow::ensure!(total == size * n as u64, "hub sent {total} of {} bytes", size * n as u64);
    Ok(total as f64 / MB / t.elapsed().as_secs_f64())
}

async fn nginx_many(ca: &reqwest::Certificate, url: &str, size: u64, n: usize) -> Result<f64> {
    let (clients, _) = nginx::connected(ca, url, n).await?;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in clients {
        let url = url.to_string();
        set.spawn(async move { nginx::get(&c, &url).await });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    anyhow::ensure!(total == size * n as u64, "nginx sent {total} of {} bytes", size * n as u64);
    Ok(total as f64 / MB / t.elapsed().as_secs_f64())
}
