//! (W) A rollout wave: a thousand nodes fetch a new release at the same moment; the time
//! until the last one has every byte, beside nginx serving the same file to as many
//! clients. The hub runs in its own process ([`crate::child`]), nginx in its own; the
//! clients live in this process, each on its own connection, all connected first.
//!
//! What a node does is `efa_node::fetch::fetch_release`: the manifest's parts (a large
//! file's content-defined chunks) one `FetchBlob` each, in order, into its blob cache. The
//! cache is left out here: a thousand caches of 10 MB each on this machine's one virtual
//! disk would measure the disk (and nginx's clients write nothing either). So each node
//! streams the parts exactly as `fetch_release` asks for them and counts the bytes.

use crate::child::HubProcess;
use crate::download::fetch_counted;
use crate::fanout::FD_RESERVE;
use crate::hub::MB;
use crate::paired::{interleave, Summary};
use crate::report::Row;
use crate::sys::{self, percentile};
use crate::{nginx, watchers};
use anyhow::{Context, Result};
use efa_domain::bundle::ChunkRef;
use efa_node::hub::HubClient;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct WaveScale {
    pub nodes: usize,
    pub mb: u64,
    pub pairs: usize,
    /// Whether nginx may be installed with apt-get (otherwise used only if present).
    pub may_install: bool,
}

/// One wave: seconds from the start signal until each node had every byte.
struct Wave {
    done_s: Vec<f64>,
}

impl Wave {
    fn last(&self) -> f64 {
        percentile(&self.done_s, 100.0)
    }
}

pub async fn wave(work_dir: &Path, scale: &WaveScale, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    // Each node costs a descriptor in this process and one in the server's.
    let nofile = sys::raise_nofile_limit();
    let nodes = scale.nodes.min(nofile.saturating_sub(FD_RESERVE) as usize).max(1);
    if nodes < scale.nodes {
        notes.push(format!(
            "W: wave capped at {nodes} nodes (open-files limit {nofile}, {FD_RESERVE} kept back; raise `ulimit -n`)"
        ));
    }
    let hub = HubProcess::spawn(work_dir).await?;
    let result = measure(&hub, nodes, scale, notes).await;
    hub.stop().await;
    result
}

async fn measure(hub: &HubProcess, nodes: usize, scale: &WaveScale, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    // The release: one file, so nginx serves the very bytes the nodes fetch.
    let release = hub.root().join("release");
    let www = hub.root().join("www");
    std::fs::create_dir_all(&release)?;
    std::fs::create_dir_all(&www)?;
    std::fs::write(release.join("release.bin"), sys::random_bytes((scale.mb * 1_000_000) as usize, 42))?;
    std::fs::hard_link(release.join("release.bin"), www.join("release.bin"))?;
    let manifest = hub.publish(hub.land_channel().await?, &release, "2.0.0").await?;
    let file = &manifest.files[0];
    let parts: Arc<[ChunkRef]> = file.parts().into();
    let size = file.size;

    let pki = hub.root().join("pki");
    let server = nginx::start_peer(&hub.root().join("nginx"), &www, &pki, scale.may_install, "W", notes);
    let ca = nginx::ca(&pki.join("ca.pem"))?;
    let url = server.as_ref().map(|n| format!("https://127.0.0.1:{}/release.bin", n.port));

    let rss_idle = hub.rss_kib();
    let pairs = interleave(
        scale.pairs,
        || hub_wave(hub, parts.clone(), size, nodes),
        url.as_deref().map(|u| {
            let ca = &ca;
            move || nginx_wave(ca, u, size, nodes)
        }),
    )
    .await?;
    if let Some(e) = &pairs.peer_error {
        notes.push(format!("W: nginx wave failed: {e}"));
    }
    let hwm = hub.hwm_kib();

    let scen = "W rollout wave";
    let last = pairs.summary(Wave::last);
    let p50 = pairs.summary(|w| percentile(&w.done_s, 50.0));
    let p99 = pairs.summary(|w| percentile(&w.done_s, 99.0));
    let label = format!("{nodes} nodes × {} MB", scale.mb);
    let aggregate = |s: &Summary| nodes as f64 * size as f64 / MB / s.hub;
    Ok(vec![
        last.row(scen, format!("{label}: until the last node has it"), "s", "nginx")
            .goal("≤ 1.25× nginx", last.ratio.map(|r| r <= 1.25))
            .note(format!(
                "{}; hub {:.0} MB/s in all; one {} MB file in {} part(s), fetched as fetch_release asks: one FetchBlob per part, in order, bytes counted, not written (a thousand \
                 caches would measure the disk); every node on its own mTLS connection with a node's HTTP/2 \
                 windows, one Kommune certificate for all (per-caller limits off); all handshakes done, then \
                 one start signal; nginx: one GET of the file per client, own connection each, same windows",
                last.how(),
                aggregate(&last),
                scale.mb,
                parts.len(),
            )),
        p50.row(scen, format!("{label}: per-node completion p50"), "s", "nginx").note(p50.how()),
        p99.row(scen, format!("{label}: per-node completion p99"), "s", "nginx").note(p99.how()),
        Row::new(scen, format!("{label}: hub peak RSS (VmHWM)"), hwm as f64 / 1024.0, "MiB").note(format!(
            "the hub process over its life (publish and every wave); {:.0} MiB before the first wave",
            rss_idle as f64 / 1024.0
        )),
    ])
}

/// One node's fetch; it starts when first polled.
type Fetch = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Spawns one task per node, each waiting for the start signal; returns when all are done.
async fn run_wave(nodes: Vec<Fetch>) -> Result<Wave> {
    let (go, start) = watch::channel(false);
    let mut set = JoinSet::new();
    for fetch in nodes {
        let mut start = start.clone();
        set.spawn(async move {
            start.wait_for(|go| *go).await?;
            fetch.await?;
            Ok::<_, anyhow::Error>(Instant::now())
        });
    }
    // Every task parked on the signal before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    go.send(true)?;
    let mut done_s = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        done_s.push(r??.saturating_duration_since(t0).as_secs_f64());
    }
    Ok(Wave { done_s })
}

async fn hub_wave(hub: &HubProcess, parts: Arc<[ChunkRef]>, size: u64, nodes: usize) -> Result<Wave> {
    let chans = watchers::connect_many(&hub.kommune_endpoint()?, nodes).await.context("connecting the nodes")?;
    let fetches = chans.into_iter().map(|ch| -> Fetch {
        let parts = parts.clone();
        Box::pin(async move {
            let client = HubClient::new(ch);
            let mut n = 0u64;
            for part in parts.iter() {
                let got = fetch_counted(&client, &part.digest).await?;
                anyhow::ensure!(got == part.size, "hub sent {got} of a part's {} bytes", part.size);
                n += got;
            }
            anyhow::ensure!(n == size, "hub sent {n} of {size} bytes");
            Ok(())
        })
    });
    run_wave(fetches.collect()).await
}

async fn nginx_wave(ca: &reqwest::Certificate, url: &str, size: u64, nodes: usize) -> Result<Wave> {
    let (clients, _) = nginx::connected(ca, url, nodes).await.context("connecting the clients")?;
    let fetches = clients.into_iter().map(|c| -> Fetch {
        let url = url.to_string();
        Box::pin(async move {
            let n = nginx::get(&c, &url).await?;
            anyhow::ensure!(n == size, "nginx sent {n} of {size} bytes");
            Ok(())
        })
    });
    run_wave(fetches.collect()).await
}
