//! Metrics a Prometheus server would scrape from the hub and from a node.

use efa_domain::model::release::UpdatePolicy;
use efa_tests::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_node_expose_prometheus_metrics() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.metrics_listen = Some(([127, 0, 0, 1], port).into());
    let node = Arc::new(efa_node::Agent::new(config).unwrap());
    node.register_subscriptions().await.unwrap();
    node.reconcile().await.unwrap();
    node.sync_once().await.unwrap();

    let hub = w.fed.hub.as_ref().unwrap().metrics_text();
    for needle in [
        "efa_hub_publishes_total 1",
        "efa_hub_downloads_total",
        "efa_hub_adoption_reports_total 2",
        "efa_hub_subscriptions 1",
        "efa_hub_rpc_duration_seconds_count{method=\"/efa.v1.ReleaseService/PublishRelease\"} 1",
        "efa_hub_event_delivery_seconds_count",
        "efa_hub_event_head_seq",
    ] {
        assert!(hub.contains(needle), "hub metrics lack {needle:?}:\n{hub}");
    }

    // Prometheus scrapes the hub on the dashboard port with an operator token.
    let http = w.dashboard_client();
    let url = format!("{}/metrics", w.dashboard_url().trim_end_matches('/'));
    assert_eq!(http.get(&url).send().await.unwrap().status(), reqwest::StatusCode::UNAUTHORIZED);
    let scraped = http.get(&url).bearer_auth(w.dashboard_token("prometheus")).send().await.unwrap();
    assert_eq!(scraped.status(), reqwest::StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("efa_hub_publishes_total 1"));

    // The node serves its metrics over plain HTTP while it runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let n = node.clone();
    let render = std::sync::Arc::new(move || n.metrics_text());
    let server = tokio::spawn(efa_node::metrics::serve(render, ([127, 0, 0, 1], port).into(), stop.clone()));
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
            s.read_to_string(&mut body).await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for needle in [
        "200 OK",
        "efa_node_running_version{service=\"wohngeld-nrw\",version=\"1.0.0\"} 1",
        "efa_node_deploys_total{service=\"wohngeld-nrw\"} 1",
        "efa_node_queued_reports 0",
        "efa_node_last_sync_timestamp_seconds",
    ] {
        assert!(body.contains(needle), "node metrics lack {needle:?}:\n{body}");
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}
