//! Scale-out: hub replicas on one PostgreSQL database (and one blob location) serve one
//! federation; any replica answers any call, and events committed on one reach streams on
//! the other.

use efa_domain::model::release::UpdatePolicy;
use efa_hub::dev::DevFederation;
use efa_hub::StoreLocation;
use efa_node::Handled;
use efa_tests::*;
use tokio_util::sync::CancellationToken;

/// A world whose hub stores in a fresh PostgreSQL database, and a second replica on the
/// same database, certificates and blob directory. `None` where PostgreSQL is missing (and
/// tools are not required).
async fn two_replicas() -> Option<(World, DevFederation)> {
    if !efa_testkit::tools::check("hub on postgres", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return None;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let tune = move |c: &mut efa_hub::HubConfig| c.store = StoreLocation::Postgres(url.clone());
    let w = World::tuned(tune.clone()).await;
    let b = DevFederation::start_tuned(w.dir.path(), "127.0.0.1:0".parse().unwrap(), tune).await.expect("replica B");
    Some((w, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_serve_one_federation() {
    let Some((w, b)) = two_replicas().await else { return };
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // A node of Dortmund talks to replica B only: catalog, release, blobs, reports.
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.hub = b.url();
    let node = efa_node::Agent::new(config).unwrap();
    assert_eq!(
        node.sync().await.unwrap(),
        vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() }]
    );
    // Replica A reads what it reported through B.
    let adopters = w.adopters("wohngeld-nrw").await;
    assert_eq!((adopters.len(), adopters[0].running_version.as_str()), (1, "1.0.0"));

    // A live stream on B hears a release published on A.
    let stop = CancellationToken::new();
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move { node.run(stop).await })
    };
    eventually(20, "the node's stream is attached to B", || async { b.hub.as_ref().unwrap().watchers() >= 1 }).await;
    w.publish(NRW, "wohngeld-nrw", "1.0.1", &w.standard_bundle("1.0.1")).await.unwrap();
    eventually(20, "the node deployed 1.0.1 published on the other replica", || async {
        w.adopters("wohngeld-nrw").await.first().is_some_and(|a| a.running_version == "1.0.1")
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();

    // One log: both replicas see the same head.
    let (ra, rb) = (w.fed.registry().unwrap(), b.registry().unwrap());
    assert_eq!(ra.head_seq().unwrap(), rb.head_seq().unwrap());
}
