//! Prometheus metrics of a node: what it runs, how fresh its view is, what went wrong.
//! Served as plain HTTP on `metrics_listen` (meant for the Kommune's internal monitoring).

use crate::agent::Agent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub service: String,
    pub version: String,
}

/// Counters the agent bumps while it works.
#[derive(Default)]
pub struct NodeCounters {
    pub deploys: Family<ServiceLabels, Counter>,
    pub rollbacks: Family<ServiceLabels, Counter>,
    pub failures: Family<ServiceLabels, Counter>,
}

/// Renders the node's metrics; state-like values are read now from disk.
pub fn render(agent: &Agent) -> String {
    let mut registry = Registry::with_prefix("efa_node");
    let counters = agent.counters();
    registry.register("deploys", "Successful deployments", counters.deploys.clone());
    registry.register("rollbacks", "Deployments rolled back after a failed health check", counters.rollbacks.clone());
    registry.register(
        "failures",
        "Releases refused or failed (verification, parameters, deploy)",
        counters.failures.clone(),
    );
    let running: Family<VersionLabels, Gauge> = Family::default();
    let pending: Family<ServiceLabels, Gauge> = Family::default();
    let (cursor, last_sync, queued, warnings): (Gauge, Gauge, Gauge, Gauge) = Default::default();
    if let Ok(st) = crate::status::collect(agent) {
        for s in &st.services {
            if let Some(v) = &s.running {
                running.get_or_create(&VersionLabels { service: s.service.clone(), version: v.clone() }).set(1);
            }
            pending.get_or_create(&ServiceLabels { service: s.service.clone() }).set(s.pending.len() as i64);
        }
        cursor.set(st.cursor as i64);
        last_sync.set(st.last_sync_ms / 1000);
        queued.set(st.queued_reports as i64);
        warnings.set(st.warnings.len() as i64);
    }
    registry.register("running_version", "1 for the version each service serves now", running);
    registry.register("pending_approvals", "Verified releases waiting for approval", pending);
    registry.register("event_cursor", "Seq of the last hub event handled", cursor);
    registry.register("last_sync_timestamp_seconds", "Unix time of the last catch-up with the hub", last_sync);
    registry.register("queued_reports", "Adoption reports waiting for the hub", queued);
    registry.register("freshness_warnings", "Freeze-protection and staleness warnings", warnings);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        tracing::error!("encoding metrics failed");
    }
    out
}

/// Serves `GET /metrics` on `addr` until `shutdown`.
pub async fn serve(agent: Arc<Agent>, addr: SocketAddr, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let agent = agent.clone();
            async move {
                let body = tokio::task::spawn_blocking(move || render(&agent)).await.unwrap_or_default();
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "node metrics on /metrics");
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_labels() {
        let c = NodeCounters::default();
        c.deploys.get_or_create(&ServiceLabels { service: "wohngeld-nrw".into() }).inc();
        let mut registry = Registry::with_prefix("efa_node");
        registry.register("deploys", "Successful deployments", c.deploys.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("efa_node_deploys_total{service=\"wohngeld-nrw\"} 1"), "{out}");
    }
}
