//! Prometheus metrics of a node: what it runs, how fresh its view is, what went wrong.
//! Served as plain HTTP on `metrics_listen` (meant for the Kommune's internal monitoring).

use crate::status::NodeStatus;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Label set of per-service metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service id.
    pub service: String,
}

/// Label set of the running-version gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// The service id.
    pub service: String,
    /// The version.
    pub version: String,
}

/// Counters the agent bumps while it works.
#[derive(Default)]
pub struct NodeCounters {
    /// Successful deployments.
    pub deploys: Family<ServiceLabels, Counter>,
    /// Deployments rolled back after a failed health check.
    pub rollbacks: Family<ServiceLabels, Counter>,
    /// Releases refused or failed.
    pub failures: Family<ServiceLabels, Counter>,
}

/// Renders the node's metrics from its counters and its current status.
pub fn render(counters: &NodeCounters, status: Option<&NodeStatus>) -> String {
    let mut registry = Registry::with_prefix("efa_node");
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
    let (log_alarm, log_size): (Gauge, Gauge) = Default::default();
    if let Some(st) = status {
        for s in &st.services {
            if let Some(v) = &s.running {
                running.get_or_create(&VersionLabels { service: s.service.clone(), version: v.clone() }).set(1);
            }
            pending.get_or_create(&ServiceLabels { service: s.service.clone() }).set(s.pending.len() as i64);
        }
        cursor.set(i64::try_from(st.cursor).unwrap_or(i64::MAX));
        last_sync.set(st.last_sync_ms / 1000);
        queued.set(st.queued_reports as i64);
        warnings.set(st.warnings.len() as i64);
        log_alarm.set(i64::from(st.log_alarm));
        log_size.set(i64::try_from(st.log_size).unwrap_or(i64::MAX));
    }
    registry.register("running_version", "1 for the version each service serves now", running);
    registry.register("pending_approvals", "Verified releases waiting for approval", pending);
    registry.register("event_cursor", "Seq of the last hub event handled", cursor);
    registry.register("last_sync_timestamp_seconds", "Unix time of the last catch-up with the hub", last_sync);
    registry.register("queued_reports", "Adoption reports waiting for the hub", queued);
    registry.register("freshness_warnings", "Freeze-protection and staleness warnings", warnings);
    registry.register(
        "log_alarm",
        "1 when the hub's transparency log contradicted what this node verified (deploys stopped)",
        log_alarm,
    );
    registry.register("log_checkpoint_size", "Leaves of the newest log checkpoint this node verified", log_size);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        tracing::error!("encoding metrics failed");
    }
    out
}

/// Serves `GET /metrics` on `addr` until `shutdown`; `render` produces the text each time
/// (on the blocking pool: it reads the node's state from disk).
pub async fn serve(
    render: Arc<dyn Fn() -> String + Send + Sync>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "node metrics on /metrics");
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let render = render.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let render = render.clone();
            async move {
                let resp = if req.uri().path() == "/metrics" {
                    let body = tokio::task::spawn_blocking(move || render()).await.unwrap_or_default();
                    Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(body)))
                } else {
                    Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("not found\n")))
                };
                resp.map_err(std::io::Error::other)
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_labels() {
        let c = NodeCounters::default();
        c.deploys.get_or_create(&ServiceLabels { service: "wohngeld-nrw".into() }).inc();
        let out = render(&c, None);
        assert!(out.contains("efa_node_deploys_total{service=\"wohngeld-nrw\"} 1"), "{out}");
    }
}
