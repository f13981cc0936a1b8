//! Measuring many watch streams, for the hub and for etcd alike: connections opened in
//! bounded parallel, probes that time each notification, and the figures of a run.

use crate::sys::{self, percentile};
use anyhow::{anyhow, bail, Context, Result};
use efa_proto::tls::ClientTlsFiles;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

/// TLS handshakes in flight while opening connections: enough to keep both cores busy,
/// few enough not to overflow the listener's accept backlog.
const CONNECT_PARALLEL: usize = 64;
/// How long the slowest setup step (thousands of TLS handshakes on two cores) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Certificates for etcd: `dir` holds `ca.pem`, `hub.pem`, `hub.key` (server side).
pub struct Pki {
    pub dir: PathBuf,
    pub client: ClientTlsFiles,
}

/// Opens `n` separate connections to `ep`, a bounded number of handshakes at a time.
pub async fn connect_many(ep: &Endpoint, n: usize) -> Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < CONNECT_PARALLEL {
            let ep = ep.clone();
            set.spawn(async move { ep.connect().await });
            started += 1;
        }
        let ch = set.join_next().await.expect("a connect in flight")?;
        out.push(ch.with_context(|| format!("connection {} of {n}", out.len() + 1))?);
    }
    Ok(out)
}

/// What a subscriber task reports: its stream is set up (idle), or it saw the change.
pub struct Probe {
    pub ready: mpsc::UnboundedSender<()>,
    pub hit: mpsc::UnboundedSender<Instant>,
}

/// Subscriber tasks and the instants they were notified at.
pub struct Subscribers {
    tasks: JoinSet<Result<()>>,
    ready_rx: mpsc::UnboundedReceiver<()>,
    hit_rx: mpsc::UnboundedReceiver<Instant>,
    probe: Probe,
    n: usize,
}

impl Subscribers {
    pub fn new() -> Self {
        let (ready, ready_rx) = mpsc::unbounded_channel();
        let (hit, hit_rx) = mpsc::unbounded_channel();
        Subscribers { tasks: JoinSet::new(), ready_rx, hit_rx, probe: Probe { ready, hit }, n: 0 }
    }

    pub fn spawn<F: Future<Output = Result<()>> + Send + 'static>(&mut self, task: impl FnOnce(Probe) -> F) {
        let probe = Probe { ready: self.probe.ready.clone(), hit: self.probe.hit.clone() };
        self.tasks.spawn(task(probe));
        self.n += 1;
    }

    /// Waits until every subscriber is set up; a task that ends first is an error.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        let mut ready = 0;
        while ready < self.n {
            tokio::select! {
                r = self.ready_rx.recv() => { r.ok_or_else(|| anyhow!("ready channel closed"))?; ready += 1; }
                Some(ended) = self.tasks.join_next() => {
                    let why = match ended { Ok(Ok(())) => anyhow!("stream ended"), Ok(Err(e)) => e, Err(e) => e.into() };
                    bail!("a subscriber failed after {ready} of {} were set up: {why:#}", self.n);
                }
                _ = tokio::time::sleep_until(deadline) => bail!("only {ready} of {} subscribers set up in time", self.n),
            }
        }
        Ok(())
    }

    /// Runs `change` and waits until every subscriber has seen it; `server` is the server
    /// process whose CPU time is counted.
    pub async fn round(
        &mut self,
        change: impl Future<Output = Result<()>>,
        server: u32,
        lat: &mut Latencies,
    ) -> Result<()> {
        let cpu = (sys::cpu_secs(Some(server)), sys::cpu_secs(None));
        let t0 = Instant::now();
        change.await?;
        let t_ret = Instant::now();
        lat.rpc_ms.push(ms(t_ret - t0));
        let mut last = 0.0f64;
        for got in 0..self.n {
            match tokio::time::timeout(Duration::from_secs(60), self.hit_rx.recv()).await {
                Ok(Some(at)) => {
                    last = last.max(ms(at - t0));
                    lat.from_start.push(ms(at - t0));
                    lat.from_return.push(ms(at.saturating_duration_since(t_ret)));
                }
                _ => bail!("only {got} of {} subscribers notified within 60 s", self.n),
            }
        }
        lat.last_ms.push(last);
        lat.server_cpu_ms.push((sys::cpu_secs(Some(server)) - cpu.0) * 1000.0);
        lat.client_cpu_ms.push((sys::cpu_secs(None) - cpu.1) * 1000.0);
        Ok(())
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default)]
pub struct Latencies {
    /// From the change's RPC returning (release committed, PublishRelease / Put answered).
    pub from_return: Vec<f64>,
    /// From the change's RPC being sent.
    pub from_start: Vec<f64>,
    pub rpc_ms: Vec<f64>,
    /// Per round, from the change's RPC being sent until the last subscriber saw it.
    pub last_ms: Vec<f64>,
    /// CPU time per round of the server process and of this one (the clients).
    pub server_cpu_ms: Vec<f64>,
    pub client_cpu_ms: Vec<f64>,
}

/// One fan-out measurement: subscribers, connections, latencies and the server's RSS.
pub struct Figures {
    pub subscribers: usize,
    pub connections: usize,
    pub setup_s: f64,
    pub lat: Latencies,
    /// Server RSS in KiB: before any client connection, with the connections open, with
    /// every subscriber set up and idle.
    pub rss_before: u64,
    pub rss_connected: u64,
    pub rss_idle: u64,
}

impl Figures {
    pub fn kib_per_subscriber(&self) -> f64 {
        self.rss_idle.saturating_sub(self.rss_before) as f64 / self.subscribers.max(1) as f64
    }

    pub fn connection_share(&self) -> f64 {
        self.rss_connected.saturating_sub(self.rss_before) as f64 / self.subscribers.max(1) as f64
    }

    /// Latency percentile from the publishing RPC's start.
    pub fn p(&self, pct: f64) -> f64 {
        percentile(&self.lat.from_start, pct)
    }

    /// Percentile over rounds of the time until the last subscriber was notified.
    pub fn p_last(&self, pct: f64) -> f64 {
        percentile(&self.lat.last_ms, pct)
    }

    /// Latency percentile from the publishing RPC's return.
    pub fn p_ret(&self, pct: f64) -> f64 {
        percentile(&self.lat.from_return, pct)
    }

    pub fn cpu_note(&self, who: &str) -> String {
        format!(
            "{who} CPU {:.0} ms per release, clients {:.0} ms",
            percentile(&self.lat.server_cpu_ms, 50.0),
            percentile(&self.lat.client_cpu_ms, 50.0)
        )
    }
}

/// Lets allocator and runtime settle before an RSS reading.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1000)).await;
}
