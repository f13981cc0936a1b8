//! The event stream resumes from a node's cursor without gaps or duplicates, across hub
//! restarts.

use efa_domain::model::release::UpdatePolicy;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_resumes_from_its_cursor_after_a_hub_restart() {
    let mut w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    assert_eq!(node.sync_once().await.unwrap().len(), 1);
    let cursor = node.state().unwrap().cursor;

    // The hub restarts; meanwhile nothing is lost.
    w.fed.restart_hub().await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.1", &w.standard_bundle("1.0.1")).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.2", &w.standard_bundle("1.0.2")).await.unwrap();

    // The same node (a fresh agent on the same state dir, as after its own restart) sees
    // exactly the two new releases, in order.
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let handled = node.sync_once().await.unwrap();
    assert_eq!(
        handled,
        vec![
            Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.1".into() },
            Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.2".into() },
        ]
    );
    assert!(node.state().unwrap().cursor > cursor);
    assert!(node.sync_once().await.unwrap().is_empty(), "no duplicates on the next sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_is_filtered_per_subscription_and_ordered() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.register(NRW, "hundehaltung-nrw", "10160").await.unwrap();
    let ch = w.channel(&kommune(ESSEN)).await;
    SubscriptionServiceClient::new(ch.clone())
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::SubscriptionTarget {
                target: Some(pb::subscription_target::Target::Themenfeld("Engagement & Hobby".into())),
            }),
            channel: "stable".into(),
            policy: pb::UpdatePolicy::Manual as i32,
        })
        .await
        .unwrap();
    for v in ["1.0.0", "1.0.1"] {
        w.publish(NRW, "wohngeld-nrw", v, &w.standard_bundle(v)).await.unwrap();
        w.publish(NRW, "hundehaltung-nrw", v, &w.standard_bundle(v)).await.unwrap();
    }
    let mut stream = SubscriptionServiceClient::new(ch)
        .watch_events(pb::WatchEventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        assert!(event.seq > last_seq || matches!(event.kind, Some(pb::event::Kind::CaughtUp(_))));
        last_seq = event.seq;
        match event.kind {
            Some(pb::event::Kind::ReleasePublished(r)) => seen.push(format!("{} {}", r.service_id, r.version)),
            Some(pb::event::Kind::CaughtUp(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Hundehaltung is in Themenfeld "Engagement & Hobby"; Wohngeld is not.
    assert_eq!(seen, ["hundehaltung-nrw 1.0.0", "hundehaltung-nrw 1.0.1"]);

    // A cursor ahead of the hub's log is refused, not silently accepted.
    let err = SubscriptionServiceClient::new(w.channel(&kommune(ESSEN)).await)
        .watch_events(pb::WatchEventsRequest { after_seq: 1_000_000 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_retention_resyncs_from_the_catalog() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3"] {
        w.publish(NRW, "wohngeld-nrw", v, &w.standard_bundle(v)).await.unwrap();
    }
    let registry = w.fed.registry().unwrap();
    // Retention removes only events the transparency log has taken in.
    efa_testkit::wait::eventually(20, "the log holds every event", || async {
        registry.log_size().unwrap() == registry.head_seq().unwrap()
    })
    .await;
    assert!(registry.trim_events_keep(2).unwrap() > 0);

    // The raw answer is a clear "resync needed" with the head to resume from.
    let err = SubscriptionServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .watch_events(pb::WatchEventsRequest { after_seq: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("resync needed"), "{}", err.message());
    let head = registry.head_seq().unwrap();
    assert_eq!(err.metadata().get(efa_proto::RESYNC_HEAD_METADATA).unwrap().to_str().unwrap(), head.to_string());

    // The node reconciles: it deploys the newest release once and resumes from the head.
    let handled = node.sync_once().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.3".into() }]);
    assert!(node.state().unwrap().cursor >= head);
    assert!(node.sync_once().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped_and_others_are_unaffected() {
    let w = World::tuned(|c| c.slow_subscriber_timeout = std::time::Duration::from_millis(300)).await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.register(NRW, "hundehaltung-nrw", "10160").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let sub = pb::SubscribeRequest {
        target: Some(pb::SubscriptionTarget {
            target: Some(pb::subscription_target::Target::ServiceId("wohngeld-nrw".into())),
        }),
        channel: "stable".into(),
        policy: pb::UpdatePolicy::Auto as i32,
    };
    // A small HTTP/2 window on the stuck client, so back-pressure reaches the hub quickly.
    let tls = w.fed.client_tls(&kommune(ESSEN)).unwrap();
    let stuck_channel = efa_proto::tls::endpoint(&w.fed.url(), Some(&tls))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    SubscriptionServiceClient::new(stuck_channel.clone()).subscribe(sub).await.unwrap();
    let stuck = SubscriptionServiceClient::new(stuck_channel)
        .watch_events(pb::WatchEventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let before = w.fed.hub.as_ref().unwrap().watchers();

    // Flood the log with releases the stuck subscriber would have to receive.
    let registry = w.fed.registry().unwrap();
    let template = registry.release(&"wohngeld-nrw".parse().unwrap(), "1.0.0").unwrap();
    for patch in 1..=1500u64 {
        let mut r = template.clone();
        r.version = semver::Version::new(1, 0, patch);
        registry.store().insert_release(&r, &[]).unwrap();
    }
    // One real publish wakes the streams up.
    w.publish(NRW, "wohngeld-nrw", "2.0.0", &w.standard_bundle("2.0.0")).await.unwrap();

    // A healthy node on another service still syncs promptly meanwhile.
    let node = w.node(DORTMUND, &[Sub { service: "hundehaltung-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    w.publish(NRW, "hundehaltung-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let handled = tokio::time::timeout(std::time::Duration::from_secs(20), node.sync_once()).await.unwrap().unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "hundehaltung-nrw".into(), version: "1.0.0".into() }]);

    eventually(20, "the stuck subscriber is dropped", || async { w.fed.hub.as_ref().unwrap().watchers() < before })
        .await;
    drop(stuck);
}
