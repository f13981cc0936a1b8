//! (D) Fan-out: one release published to a hub holding thousands of idle `WatchEvents`
//! streams, and the same number of prefix watchers on etcd.
//!
//! The hub runs in a child process ([`crate::child`]), so its RSS is the hub's own and not
//! polluted by the thousands of client streams, which live in this process. Two variants:
//! streams multiplexed over few connections, and one TLS connection per node at the
//! largest count the open-files limit allows.

use crate::child::HubProcess;
use crate::etcd;
use crate::hub::{small_bundle, Hub};
use crate::report::Row;
use crate::sys::{self, percentile};
use crate::watchers::{connect_many, settle, Figures, Latencies, Probe, Subscribers};
use anyhow::{anyhow, bail, Context, Result};
use efa_domain::authz::Identity;
use efa_hub::dev::client_tls_in;
use efa_proto::v1 as pb;
use efa_proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub struct FanoutScale {
    /// Streams (and etcd watchers) in the multiplexed variant.
    pub streams: usize,
    pub per_connection: usize,
    /// Streams in the one-connection-per-node variant, before the open-files cap; 0 skips it.
    pub per_node: usize,
    pub rounds: usize,
    /// Whether etcd may be installed with apt-get (otherwise used only if present).
    pub may_install: bool,
}

/// Descriptors kept back from the open-files limit for everything but the node
/// connections (sled, blobs, pipes, the Land's and etcd's connections).
pub const FD_RESERVE: u64 = 512;

/// Streams of the one-connection-per-node run unless `--per-node-connections` says.
pub const PER_NODE_DEFAULT: usize = 11_000;

// ------------------------------------------------------------------------ hub variants

/// `streams` WatchEvents streams as the hub's Kommune over `conns` connections, then
/// `rounds` releases.
async fn hub_variant(work_dir: &Path, streams: usize, conns: usize, rounds: usize) -> Result<Figures> {
    let hub = HubProcess::spawn(work_dir).await?;
    let result = hub_measure(&hub, streams, conns, rounds).await;
    hub.stop().await;
    result
}

async fn hub_measure(hub: &HubProcess, streams: usize, conns: usize, rounds: usize) -> Result<Figures> {
    hub_measure_over(&[hub], streams, conns, rounds).await
}

/// Streams spread round-robin over the connections to `replicas` (connections spread the
/// same way); releases are published on the first. RSS and CPU are the first's.
async fn hub_measure_over(replicas: &[&HubProcess], streams: usize, conns: usize, rounds: usize) -> Result<Figures> {
    let hub = replicas[0];
    let who = Identity::Kommune(hub.kommune.clone());
    let ep = hub.endpoint(&who)?;
    let control = ep.connect().await?;
    SubscriptionServiceClient::new(control.clone())
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::SubscriptionTarget {
                target: Some(pb::subscription_target::Target::ServiceId(hub.service.to_string())),
            }),
            channel: "stable".into(),
            policy: pb::UpdatePolicy::Auto as i32,
        })
        .await?;
    // The streams start at the log's head, as a node that is up to date does.
    let head = caught_up_head(control.clone()).await?;
    let land = hub.endpoint(&Identity::Land(Hub::land()))?.connect().await?;
    let bundle = small_bundle(hub.root())?;
    settle().await;
    let rss_before = hub.rss_kib();

    let setup = Instant::now();
    let mut chans = Vec::with_capacity(conns);
    for (i, r) in replicas.iter().enumerate() {
        let share = conns / replicas.len() + usize::from(i < conns % replicas.len());
        chans.extend(connect_many(&r.endpoint(&who)?, share).await?);
    }
    settle().await;
    let rss_connected = hub.rss_kib();
    let mut subs = Subscribers::new();
    for i in 0..streams {
        let ch = chans[i % chans.len()].clone();
        subs.spawn(move |probe| watch_stream(ch, head, probe));
    }
    subs.wait_ready().await?;
    let setup_s = setup.elapsed().as_secs_f64();
    settle().await;
    let rss_idle = hub.rss_kib();

    let mut lat = Latencies::default();
    for r in 0..rounds {
        let version = format!("1.{r}.0");
        let publish = async { hub.publish(land.clone(), &bundle, &version).await.map(drop) };
        subs.round(publish, hub.pid, &mut lat).await.with_context(|| format!("round {r}"))?;
    }
    Ok(Figures { subscribers: streams, connections: conns, setup_s, lat, rss_before, rss_connected, rss_idle })
}

/// Three hub replicas on one PostgreSQL database (the test kit's server) in child
/// processes sharing a directory; streams spread over all three, releases published on the
/// first: the others learn of them through PostgreSQL NOTIFY.
async fn replicas_variant(work_dir: &Path, streams: usize, conns: usize, rounds: usize) -> Result<Figures> {
    let url = efa_testkit::postgres::database().map_err(anyhow::Error::msg)?;
    let dir = tempfile::Builder::new().prefix("efa-bench-replicas-").tempdir_in(work_dir)?;
    let shared = dir.path().to_path_buf();
    let first = HubProcess::spawn_in(shared.clone(), Some(dir), Some(&url), false).await?;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(HubProcess::spawn_in(shared.clone(), None, Some(&url), true).await?);
    }
    let all: Vec<&HubProcess> = std::iter::once(&first).chain(others.iter()).collect();
    let result = hub_measure_over(&all, streams, conns, rounds).await;
    for p in others {
        p.stop().await;
    }
    first.stop().await;
    result
}

/// The hub's event log head, from a short-lived stream's CaughtUp.
async fn caught_up_head(ch: Channel) -> Result<u64> {
    let mut stream = SubscriptionServiceClient::new(ch).watch_events(pb::WatchEventsRequest { after_seq: 0 }).await?;
    while let Some(ev) = stream.get_mut().next().await {
        if let Some(pb::event::Kind::CaughtUp(c)) = ev?.kind {
            return Ok(c.head_seq);
        }
    }
    bail!("event stream ended before CaughtUp")
}

/// One node's WatchEvents stream: ready at CaughtUp, a hit per release.
async fn watch_stream(ch: Channel, after_seq: u64, probe: Probe) -> Result<()> {
    let mut stream = SubscriptionServiceClient::new(ch).watch_events(pb::WatchEventsRequest { after_seq }).await?;
    while let Some(ev) = stream.get_mut().next().await {
        match ev?.kind {
            Some(pb::event::Kind::CaughtUp(_)) => {
                let _ = probe.ready.send(());
            }
            Some(pb::event::Kind::ReleasePublished(_)) => {
                let _ = probe.hit.send(Instant::now());
            }
            _ => {}
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------ scenario

pub async fn fanout(work_dir: &Path, scale: &FanoutScale, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let scen = "D fan-out";
    let nofile = sys::raise_nofile_limit();
    let conns = scale.streams.div_ceil(scale.per_connection.max(1));
    notes.push(
        "D: the hub runs in its own process; every stream uses one Kommune certificate (the hub keeps the same \
         per-stream state whoever the caller is, and GV100AD has fewer than 11,000 Gemeinden)"
            .into(),
    );

    eprintln!("   hub, {} streams over {conns} connections", scale.streams);
    let mux = hub_variant(work_dir, scale.streams, conns, scale.rounds).await.context("hub, multiplexed")?;

    // The peer, before the one-connection-per-node run so its figures sit next to the
    // multiplexed ones even if that larger run fails.
    let peer = match etcd_peer(work_dir, scale, conns).await {
        Ok(f) => Some(f),
        Err(e) => {
            notes.push(format!("D: etcd peer not measured: {e:#}"));
            None
        }
    };

    // One connection per node: each connection costs a descriptor in this process and in
    // the hub's, so the open-files limit caps the count.
    let cap = nofile.saturating_sub(FD_RESERVE) as usize;
    let per_node = scale.per_node.min(cap);
    let single = if per_node == 0 {
        None
    } else {
        if scale.per_node < scale.streams {
            notes.push(format!(
                "D: one connection per node with {} streams, not {} (default up to {PER_NODE_DEFAULT}, the scale \
                 of earlier runs; --per-node-connections for more, up to the open-files limit)",
                scale.per_node, scale.streams
            ));
        }
        if per_node < scale.per_node {
            notes.push(format!(
                "D: one connection per node capped at {per_node} (open-files limit {nofile}, {FD_RESERVE} kept back)"
            ));
        }
        eprintln!("   hub, {per_node} streams, one connection each");
        match hub_variant(work_dir, per_node, per_node, scale.rounds).await {
            Ok(f) => Some(f),
            Err(e) => {
                notes.push(format!("D: one-connection-per-node run with {per_node} failed: {e:#}"));
                None
            }
        }
    };

    // Three replicas on one PostgreSQL database, the streams spread over them.
    let replicas = match efa_testkit::postgres::available() {
        Ok(()) => {
            eprintln!("   3 hub replicas on PostgreSQL, {} streams over {conns} connections", scale.streams);
            match replicas_variant(work_dir, scale.streams, conns, scale.rounds).await {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(format!("D: three-replica run failed: {e:#}"));
                    None
                }
            }
        }
        Err(e) => {
            notes.push(format!("D: three replicas not measured: {e}"));
            None
        }
    };

    let mut rows = hub_rows(scen, "multiplexed", &mux, peer.as_ref(), true);
    rows[0] = rows[0].clone().note(format!(
        "{} mTLS connections × ≤{} streams; set up in {:.1} s; etcd: {}",
        mux.connections,
        scale.per_connection,
        mux.setup_s,
        match &peer {
            Some(p) => format!("{} watchers, one Watch stream each, as many connections", p.subscribers),
            None => "not measured".into(),
        }
    ));
    if let Some(r) = &replicas {
        let mut more = hub_rows(scen, "3 replicas", r, None, false);
        more[0] = more[0].clone().note(format!(
            "3 hub processes on one PostgreSQL database; {} mTLS connections spread over them, ≤{} streams each; \
             published on the first, the others woken by NOTIFY; RSS is the first's; set up in {:.1} s",
            r.connections, scale.per_connection, r.setup_s
        ));
        rows.extend(more);
    }
    if let Some(s) = &single {
        let mut more = hub_rows(scen, "1 conn/node", s, None, false);
        more[0] = more[0].clone().note(format!(
            "{} mTLS connections, one stream each (open-files limit {nofile}); set up in {:.1} s",
            s.connections, s.setup_s
        ));
        rows.extend(more);
    }
    Ok(rows)
}

async fn etcd_peer(work_dir: &Path, scale: &FanoutScale, conns: usize) -> Result<Figures> {
    let bin = sys::ensure_peer("etcd", "etcd-server", scale.may_install).map_err(|e| anyhow!(e))?;
    // etcd gets the same dev PKI as the hub: server certificate, client CA, a Kommune's
    // client certificate, so both sides pay for TLS alike.
    let dir = tempfile::Builder::new().prefix("efa-bench-etcd-").tempdir_in(work_dir)?;
    let pki = hub_pki(dir.path())?;
    eprintln!("   etcd, {} watchers over {conns} connections", scale.streams);
    let server = etcd::Etcd::start(&bin, &dir.path().join("etcd"), &pki)?;
    etcd::fanout(&server, &pki, scale.streams, conns, scale.rounds).await
}

/// Creates a dev PKI (CA, server and one Kommune's client certificate) under `root`.
fn hub_pki(root: &Path) -> Result<crate::watchers::Pki> {
    let pki = root.join("pki");
    efa_hub::pki::init(&pki, &[])?;
    let kommune = efa_registry::import::bundled_gv100ad()?
        .kommunen
        .first()
        .ok_or_else(|| anyhow!("no Gemeinden bundled"))?
        .ags
        .clone();
    let client = client_tls_in(root, &Identity::Kommune(kommune))?;
    Ok(crate::watchers::Pki { dir: PathBuf::from(&pki), client })
}

/// The rows of one hub run; with `compare`, next to etcd's figures (n/a if it was not measured).
fn hub_rows(scen: &str, label: &str, f: &Figures, peer: Option<&Figures>, compare: bool) -> Vec<Row> {
    let p99 = f.p(99.0);
    let last_p99 = f.p_last(99.0);
    let with_peer = |row: Row, v: Option<f64>| if compare { row.peer("etcd", v) } else { row };
    vec![
        Row::new(scen, format!("{label}: streams (idle, caught up)"), f.subscribers as f64, "streams"),
        with_peer(Row::new(scen, format!("{label}: publish → notified p50"), f.p(50.0), "ms"), peer.map(|p| p.p(50.0)))
            .note(format!(
                "from the publishing RPC's start (PublishRelease of a 1 KiB bundle{}); {} rounds; {}{}",
                if compare { "; etcd: Put" } else { "" },
                f.lat.rpc_ms.len(),
                f.cpu_note("hub"),
                peer.map(|p| format!("; {}", p.cpu_note("etcd"))).unwrap_or_default()
            )),
        with_peer(Row::new(scen, format!("{label}: publish → notified p99"), p99, "ms"), peer.map(|p| p.p(99.0)))
            .note("over every stream's notification in every round"),
        // The goal: per release, the time until the last node knows; its p99 over
        // the rounds (with few rounds, their maximum).
        with_peer(
            Row::new(scen, format!("{label}: publish → last node notified p99"), last_p99, "ms"),
            peer.map(|p| p.p_last(99.0)),
        )
        .goal("p99 ≤ 1 s", Some(last_p99 <= 1000.0))
        .note(format!(
            "per round, until the last stream saw the release; p99 of {} rounds (p50 {:.1} ms); \
             PublishRelease itself p50 {:.1} ms{}",
            f.lat.last_ms.len(),
            f.p_last(50.0),
            percentile(&f.lat.rpc_ms, 50.0),
            peer.map(|p| format!(
                "; etcd Put p50 {:.1} ms (etcd queues every watcher's event inside the write, before it answers)",
                percentile(&p.lat.rpc_ms, 50.0)
            ))
            .unwrap_or_default()
        )),
        with_peer(
            Row::new(scen, format!("{label}: RPC return → notified p99"), f.p_ret(99.0), "ms"),
            peer.map(|p| p.p_ret(99.0)),
        )
        .note(format!(
            "p50 {:.1}, max {:.1} ms{}; 0 = notified before the RPC returned",
            f.p_ret(50.0),
            f.p_ret(100.0),
            peer.map(|p| format!("; etcd p50 {:.1}, max {:.1} ms", p.p_ret(50.0), p.p_ret(100.0))).unwrap_or_default()
        )),
        {
            let kib = f.kib_per_subscriber();
            let row = Row::new(scen, format!("{label}: hub RSS per idle subscription"), kib, "KiB").note(format!(
                "hub process RSS {:.0} → {:.0} MiB; connections' share {:.1} KiB/subscription{}",
                f.rss_before as f64 / 1024.0,
                f.rss_idle as f64 / 1024.0,
                f.connection_share(),
                peer.map(|p| format!(
                    "; etcd RSS {:.0} → {:.0} MiB, connections' share {:.1} KiB/watcher",
                    p.rss_before as f64 / 1024.0,
                    p.rss_idle as f64 / 1024.0,
                    p.connection_share()
                ))
                .unwrap_or_default()
            ));
            let etcd = peer.map(|p| p.kib_per_subscriber());
            if compare {
                row.peer("etcd per watcher", etcd).goal("≤ 0.25× etcd per watcher", etcd.map(|e| kib <= 0.25 * e))
            } else {
                row
            }
        },
    ]
}
