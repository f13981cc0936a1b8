//! The fan-out peer: etcd (Debian package `etcd-server`) on loopback with mTLS from the same
//! dev PKI as the hub, and thousands of watchers on one key prefix, each on its own Watch
//! stream, multiplexed over the same number of connections as the hub's streams.

use crate::sys;
use crate::watchers::{connect_many, settle, Figures, Latencies, Pki, Probe, Subscribers};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[allow(clippy::all)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use pb::watch_request::RequestUnion;

/// Where the benchmark's releases appear; every watcher watches this prefix.
const PREFIX: &[u8] = b"/efa/releases/";

pub struct Etcd {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Its data dir is a throwaway temp dir, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts a single-member etcd with its data under `root`, serving clients on a free
    /// loopback port over TLS with client certificates required.
    pub fn start(bin: &Path, root: &Path, pki: &Pki) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        // Both listeners are held until both ports are known, so they differ.
        let a = std::net::TcpListener::bind("127.0.0.1:0")?;
        let b = std::net::TcpListener::bind("127.0.0.1:0")?;
        let (port, peer_port) = (a.local_addr()?.port(), b.local_addr()?.port());
        drop((a, b));
        let client_url = format!("https://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = root.join("etcd.log");
        let child = std::process::Command::new(bin)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", root.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            // The peer port only talks to itself (one member); plain http is fine there.
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .arg(format!("--cert-file={}", pki.dir.join("hub.pem").display()))
            .arg(format!("--key-file={}", pki.dir.join("hub.key").display()))
            .arg(format!("--trusted-ca-file={}", pki.dir.join("ca.pem").display()))
            .arg("--client-cert-auth")
            // The JSON gateway would dial etcd with the server certificate as a client
            // certificate, which lacks clientAuth; the benchmark speaks gRPC only.
            .arg("--enable-grpc-gateway=false")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting etcd")?;
        let mut etcd = Etcd { child, port, log };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(etcd);
            }
            if let Some(status) = etcd.child.try_wait()? {
                bail!("etcd exited ({status}): {}", etcd.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("etcd did not listen on port {port}: {}", etcd.log_text())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default().chars().take(2000).collect()
    }

    fn rss_kib(&self) -> u64 {
        sys::pid_status_kib(self.pid(), "VmRSS")
    }
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn put_request(version: &str) -> pb::PutRequest {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(format!("bench-0/{version}").as_bytes());
    // About what a release notification carries (service, version, digest, channel).
    pb::PutRequest { key, value: sys::random_bytes(256, 3) }
}

/// `watchers` prefix watchers over `conns` connections, then `rounds` puts under the prefix.
pub async fn fanout(etcd: &Etcd, pki: &Pki, watchers: usize, conns: usize, rounds: usize) -> Result<Figures> {
    let ep = efa_proto::tls::endpoint(&format!("https://127.0.0.1:{}", etcd.port), Some(&pki.client))?;
    let control = ep.connect().await.with_context(|| format!("connecting to etcd: {}", etcd.log_text()))?;
    let mut kv = KvClient::new(control);
    // A fresh member elects itself first; until then writes fail.
    let mut attempt = 0;
    while let Err(e) = kv.put(put_request("0.0.0")).await {
        attempt += 1;
        if attempt >= 100 {
            bail!("etcd does not accept writes: {e}; log: {}", etcd.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle().await;
    let rss_before = etcd.rss_kib();

    let setup = Instant::now();
    let chans = connect_many(&ep, conns).await?;
    settle().await;
    let rss_connected = etcd.rss_kib();
    let mut subs = Subscribers::new();
    for i in 0..watchers {
        let ch = chans[i % chans.len()].clone();
        subs.spawn(move |probe| watch_prefix(ch, probe));
    }
    subs.wait_ready().await?;
    let setup_s = setup.elapsed().as_secs_f64();
    settle().await;
    let rss_idle = etcd.rss_kib();

    let mut lat = Latencies::default();
    for r in 0..rounds {
        let mut kv = kv.clone();
        let put = async move {
            kv.put(put_request(&format!("1.{r}.0"))).await?;
            Ok(())
        };
        subs.round(put, etcd.pid(), &mut lat).await.with_context(|| format!("etcd round {r}"))?;
    }
    if etcd.rss_kib() == 0 {
        return Err(anyhow!("etcd exited during the run: {}", etcd.log_text()));
    }
    Ok(Figures { subscribers: watchers, connections: conns, setup_s, lat, rss_before, rss_connected, rss_idle })
}

/// One watcher on its own Watch stream: ready when etcd confirms it, a hit per event.
async fn watch_prefix(ch: Channel, probe: Probe) -> Result<()> {
    let (tx, rx) = mpsc::channel(1);
    let create = pb::WatchCreateRequest { key: PREFIX.to_vec(), range_end: prefix_end(PREFIX), start_revision: 0 };
    tx.send(pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
    let mut stream = WatchClient::new(ch).watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    // `tx` stays alive until the stream ends: a watcher keeps its request side open.
    while let Some(resp) = stream.message().await? {
        if resp.canceled {
            bail!("etcd canceled the watch: {}", resp.cancel_reason);
        }
        if resp.created {
            let _ = probe.ready.send(());
        }
        if !resp.events.is_empty() {
            let _ = probe.hit.send(Instant::now());
        }
    }
    drop(tx);
    Ok(())
}
