//! Prometheus metrics of the hub, in the text exposition format.
//!
//! Counters are bumped where things happen (publish, download, report, fan-out); gauges
//! that describe current state (connected streams, subscriptions, event head) are read
//! when scraped, so they can never drift from the truth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/efa.v1.ReleaseService/PublishRelease` style path.
    pub method: String,
}

pub struct HubMetrics {
    registry: Registry,
    pub publishes: Counter,
    pub publish_bytes: Counter,
    pub downloads: Counter,
    pub bytes_served: Counter,
    /// Downloads served from the hub's memory (see `blobs::HotBlobs`).
    pub download_cache_hits: Counter,
    pub adoption_reports: Counter,
    pub ratings: Counter,
    pub streams_dropped_slow: Counter,
    /// Seconds from an event's commit to its delivery into a node's stream.
    pub event_delivery_seconds: Histogram,
    pub rpc_seconds: Family<RpcLabels, Histogram>,
    pub event_streams: Gauge,
    pub subscriptions: Gauge,
    pub event_head: Gauge,
    /// Bytes the download cache holds.
    pub download_cache_bytes: Gauge,
    /// Leaves in the newest signed checkpoint of the transparency log.
    pub log_size: Gauge,
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("efa_hub");
        let m = HubMetrics {
            publishes: Counter::default(),
            publish_bytes: Counter::default(),
            downloads: Counter::default(),
            bytes_served: Counter::default(),
            download_cache_hits: Counter::default(),
            adoption_reports: Counter::default(),
            ratings: Counter::default(),
            streams_dropped_slow: Counter::default(),
            event_delivery_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rpc_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            event_streams: Gauge::default(),
            subscriptions: Gauge::default(),
            event_head: Gauge::default(),
            download_cache_bytes: Gauge::default(),
            log_size: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("publishes", "Releases published", m.publishes.clone());
        registry.register("publish_bytes", "Bundle bytes received by publishes", m.publish_bytes.clone());
        registry.register("downloads", "Blob downloads started (FetchBlob calls)", m.downloads.clone());
        registry.register("bytes_served", "Blob bytes sent to nodes", m.bytes_served.clone());
        registry.register(
            "download_cache_hits",
            "Downloads served from memory: a part another node fetched moments before",
            m.download_cache_hits.clone(),
        );
        registry.register(
            "download_cache_bytes",
            "Bytes of recently downloaded parts held in memory",
            m.download_cache_bytes.clone(),
        );
        registry.register("adoption_reports", "Adoption state changes recorded", m.adoption_reports.clone());
        registry.register("ratings", "Ratings recorded", m.ratings.clone());
        registry.register(
            "event_streams_dropped_slow",
            "Event streams dropped because the node stopped reading",
            m.streams_dropped_slow.clone(),
        );
        registry.register(
            "event_delivery_seconds",
            "Seconds from an event's commit to its hand-over to a node's stream (event lag)",
            m.event_delivery_seconds.clone(),
        );
        registry.register("rpc_duration_seconds", "gRPC call latency until response headers", m.rpc_seconds.clone());
        registry.register("event_streams", "Connected node event streams", m.event_streams.clone());
        registry.register("subscriptions", "Active subscriptions of Kommunen", m.subscriptions.clone());
        registry.register("event_head_seq", "Sequence number of the newest event", m.event_head.clone());
        registry.register(
            "log_checkpoint_size",
            "Leaves in the newest signed checkpoint of the transparency log",
            m.log_size.clone(),
        );
        HubMetrics { registry, ..m }
    }
}

impl HubMetrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }

    /// Sets the gauges that describe current state (read by the caller at scrape time, so
    /// they never drift from the truth), then renders.
    pub fn scrape(&self, now: Gauges) -> String {
        self.event_streams.set(now.event_streams as i64);
        if let Some(n) = now.subscriptions {
            self.subscriptions.set(n as i64);
        }
        if let Some(head) = now.event_head {
            self.event_head.set(head as i64);
        }
        self.download_cache_bytes.set(now.download_cache_bytes as i64);
        self.render()
    }
}

/// Current-state values for a scrape; `None` where reading it failed (the gauge keeps its
/// last value).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Connected node event streams.
    pub event_streams: usize,
    /// Subscriptions of all Kommunen.
    pub subscriptions: Option<usize>,
    /// Seq of the newest event.
    pub event_head: Option<u64>,
    /// Bytes the download cache holds.
    pub download_cache_bytes: usize,
}

/// A tower layer that times every gRPC call by method.
#[derive(Clone)]
pub struct RpcTimingLayer(pub Arc<HubMetrics>);

impl<S> tower::Layer<S> for RpcTimingLayer {
    type Service = RpcTiming<S>;
    fn layer(&self, inner: S) -> RpcTiming<S> {
        RpcTiming { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct RpcTiming<S> {
    inner: S,
    metrics: Arc<HubMetrics>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcTiming<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            metrics.rpc_seconds.get_or_create(&RpcLabels { method }).observe(started.elapsed().as_secs_f64());
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_the_prefix() {
        let m = HubMetrics::default();
        m.publishes.inc();
        m.rpc_seconds.get_or_create(&RpcLabels { method: "/efa.v1.CatalogService/ListServices".into() }).observe(0.01);
        let text = m.render();
        assert!(text.contains("efa_hub_publishes_total 1"), "{text}");
        assert!(
            text.contains("efa_hub_rpc_duration_seconds_count{method=\"/efa.v1.CatalogService/ListServices\"} 1"),
            "{text}"
        );
    }
}
