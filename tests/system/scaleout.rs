//! Scale-out: hub replicas on one PostgreSQL database (and one blob location) serve one
//! federation; any replica answers any call, and events committed on one reach streams on
//! the other.

use efa_domain::model::release::UpdatePolicy;
use efa_hub::dev::DevFederation;
use efa_hub::StoreLocation;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_proto::v1::log_service_client::LogServiceClient;
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

/// The world's hub and two more replicas on one fresh PostgreSQL database and one S3
/// prefix (the test kit's SeaweedFS): the production shape, no shared directory for content.
async fn three_replicas_on_postgres_and_s3() -> Option<(World, DevFederation, DevFederation)> {
    if !efa_testkit::tools::check("hub on postgres", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return None;
    }
    let at = s3_location("hub on S3")?;
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let tune = move |c: &mut efa_hub::HubConfig| {
        c.store = StoreLocation::Postgres(url.clone());
        c.blobs = efa_hub::BlobLocation::S3(at.clone());
        // Only a notification can then bring another replica's release within seconds.
        c.shared_log_poll = std::time::Duration::from_secs(60);
    };
    let w = World::tuned(tune.clone()).await;
    let any = "127.0.0.1:0".parse().unwrap();
    // Data dirs of their own: only certificates are copied, content lives on S3.
    let replica = |name: &str| {
        let root = w.dir.path().join(name);
        copy_dir(&w.dir.path().join("pki"), &root.join("pki"));
        // One log, one key: every replica signs checkpoints with the same key file.
        std::fs::create_dir_all(root.join("hub")).unwrap();
        std::fs::copy(w.fed.hub_data_dir().join("log.key"), root.join("hub/log.key")).unwrap();
        root
    };
    let (rb, rc) = (replica("replica-b"), replica("replica-c"));
    let b = DevFederation::start_tuned(&rb, any, tune.clone()).await.expect("replica B");
    let c = DevFederation::start_tuned(&rc, any, tune).await.expect("replica C");
    Some((w, b, c))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_and_s3_serve_one_federation() {
    let Some((w, b, c)) = three_replicas_on_postgres_and_s3().await else { return };
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Dortmund talks to replica B only, Essen to C only: catalog, release, blobs, reports.
    let node_on = |ags: &str, replica: &DevFederation| {
        let mut config = w.node_config(ags, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
        config.hub = replica.url();
        efa_node::Agent::new(config).unwrap()
    };
    let (dortmund, essen) = (node_on(DORTMUND, &b), node_on(ESSEN, &c));
    for node in [&dortmund, &essen] {
        assert_eq!(
            node.sync().await.unwrap(),
            vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() }]
        );
    }
    // Replica A reads what was reported through B and C.
    let adopters = w.adopters("wohngeld-nrw").await;
    assert_eq!(adopters.len(), 2);
    assert!(adopters.iter().all(|a| a.running_version == "1.0.0"));

    // Live streams on B and C hear a release published on C.
    let stop = CancellationToken::new();
    let runs: Vec<_> = [dortmund, essen]
        .into_iter()
        .map(|node| {
            let stop = stop.clone();
            tokio::spawn(async move { node.run(stop).await })
        })
        .collect();
    eventually(20, "the nodes' streams are attached to B and C", || async {
        b.hub.as_ref().unwrap().watchers() >= 1 && c.hub.as_ref().unwrap().watchers() >= 1
    })
    .await;
    let bundle = w.standard_bundle("1.0.1");
    w.publish_through(c.channel(&land(NRW)).await.unwrap(), NRW, "wohngeld-nrw", "1.0.1", &bundle).await.unwrap();
    let published = std::time::Instant::now();
    eventually(20, "both nodes deployed 1.0.1 published on replica C", || async {
        let a = w.adopters("wohngeld-nrw").await;
        a.len() == 2 && a.iter().all(|a| a.running_version == "1.0.1")
    })
    .await;
    // Woken by PostgreSQL's NOTIFY: the replicas' fallback re-read is a minute here.
    let took = published.elapsed();
    eprintln!("publish on C -> deployed through B and C: {took:.1?}");
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");
    stop.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }

    // One log: every replica sees the same head, and serves the same signed checkpoint of
    // it (whichever replica's integrator signed it, with the one key they share).
    let heads: Vec<u64> =
        [w.fed.registry(), b.registry(), c.registry()].into_iter().map(|r| r.unwrap().head_seq().unwrap()).collect();
    assert!(heads.windows(2).all(|p| p[0] == p[1]), "{heads:?}");
    let trust = efa_tlog::checkpoint::Trust::new(&w.fed.log_key().unwrap()).unwrap();
    eventually(20, "every replica serves one checkpoint of the whole log", || async {
        let mut notes = Vec::new();
        for replica in [&w.fed, &b, &c] {
            let mut log = LogServiceClient::new(replica.channel(&operator()).await.unwrap());
            notes.push(log.get_checkpoint(pb::GetCheckpointRequest {}).await.map(|r| r.into_inner().note).ok());
        }
        notes.windows(2).all(|p| p[0] == p[1])
            && notes[0].as_ref().and_then(|n| trust.open(n).ok()).is_some_and(|cp| cp.size == heads[0])
    })
    .await;

    // The dashboard of every replica shows the federation.
    let http = w.dashboard_client();
    for (replica, url) in
        [(&w.fed, w.dashboard_url()), (&b, b.dashboard_url().unwrap()), (&c, c.dashboard_url().unwrap())]
    {
        let token = efa_hub::dashboard::tokens::issue(&replica.hub_data_dir(), "bund").unwrap();
        let page = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(page.status(), reqwest::StatusCode::OK, "{url}");
        let body = page.text().await.unwrap();
        assert!(body.contains("wohngeld-nrw") && body.contains("id=\"services\""), "{url}:\n{body}");
    }
}

/// `efa-hub migrate`: a hub's sled store copied into PostgreSQL and its blobs to S3, both
/// copies run again after an interruption, and a hub on the copies serves the same federation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_hub_moves_to_postgres_and_serves_the_same_federation() {
    if !efa_testkit::tools::check(
        "migrate to postgres",
        efa_testkit::postgres::available(),
        "apt-get install postgresql",
    ) {
        return;
    }
    let Some(at) = s3_location("migrate blobs to S3") else { return };
    let mut w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    // A large file too: its chunks and recipe move with it.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let dir = w.dir.path().join("bundle-1.0.0");
    efa_testkit::bundle::standard("1.0.0").write(&dir);
    std::fs::write(dir.join("formulare.bin"), &big).unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &dir).await.unwrap();
    let log_key = w.fed.log_key().unwrap();
    let checking = |w: &World, hub: String| {
        let mut c = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
        c.hub = hub;
        efa_node::Agent::new(c.check_log(log_key.clone())).unwrap()
    };
    let node = checking(&w, w.fed.url());
    node.sync().await.unwrap();
    rate(&node, "wohngeld-nrw", "1.0.0", 4, vec![], "läuft").await.unwrap();
    let before = (w.adopters("wohngeld-nrw").await, w.history(DORTMUND).await);
    let head = w.fed.registry().unwrap().head_seq().unwrap();
    // The node has verified a checkpoint of the whole history before the move.
    efa_testkit::wait::eventually(20, "a checkpoint of the whole history", || async {
        node.check_log().await.unwrap().is_some_and(|cp| cp.size == head)
    })
    .await;
    w.fed.stop_hub().await.unwrap();

    let url = efa_testkit::postgres::database().expect("a fresh database");
    let (db, u) = (w.fed.hub_data_dir().join("db"), url.clone());
    tokio::task::spawn_blocking(move || {
        let src = efa_registry::store::SledStore::open(&db).unwrap();
        let dst = efa_registry::store::PostgresStore::open(&u).unwrap();
        let report = dst.copy_from(&src, &|_, _| {}).unwrap();
        assert_eq!((report.events, report.log_leaves), (head, head));
        // As if the first run was killed after the events: gone rows come back, the rest stays.
        let server = efa_testkit::postgres::server().unwrap();
        let name = u.rsplit('/').next().unwrap();
        server.psql(name, "DELETE FROM history; DELETE FROM adoption; DELETE FROM events WHERE seq > 2").unwrap();
        // The log copy stopped after its first leaves (it copies in whole transactions).
        server.psql(name, "DELETE FROM log_leaves WHERE idx > 2; DELETE FROM log_hashes WHERE idx >= 4; DELETE FROM log_beside WHERE idx > 2; DELETE FROM log_releases WHERE idx > 2").unwrap();
        let again = dst.copy_from(&src, &|_, _| {}).unwrap();
        assert_eq!(again.events_digest, report.events_digest);
        efa_registry::Registry::new(std::sync::Arc::new(dst)).import_catalogue().unwrap();
    })
    .await
    .unwrap();

    // The blobs to S3: every one hashed against its name on the way. A second run (as
    // after a kill) writes nothing again.
    let blobs_dir = w.fed.hub_data_dir().join("blobs");
    let (from, to) = (blobs_dir.clone(), efa_hub::BlobLocation::S3(at.clone()));
    let first = tokio::task::spawn_blocking(move || efa_hub::blobs::copy_dir(&from, &to, &|_, _| {}).unwrap());
    let first = first.await.unwrap();
    // The large file's chunks and its recipe; the bundle's small files are in the store and
    // moved with it (the new node below deploys all of them from the copies).
    assert!(first.objects > 2 && first.copied + 1 == first.objects, "{first:?}");
    let (from, to) = (blobs_dir.clone(), efa_hub::BlobLocation::S3(at.clone()));
    let again = tokio::task::spawn_blocking(move || efa_hub::blobs::copy_dir(&from, &to, &|_, _| {}).unwrap());
    let again = again.await.unwrap();
    assert_eq!((again.objects, again.copied, again.bytes), (first.objects, 0, first.bytes));

    // A hub on the copies (same certificates; the local blob directory gone) answers as
    // the old one did.
    std::fs::rename(&blobs_dir, w.dir.path().join("blobs-before-migration")).unwrap();
    let pg = DevFederation::start_tuned(w.dir.path(), "127.0.0.1:0".parse().unwrap(), move |c| {
        c.store = StoreLocation::Postgres(url.clone());
        c.blobs = efa_hub::BlobLocation::S3(at.clone());
    })
    .await
    .unwrap();
    assert_eq!(pg.registry().unwrap().head_seq().unwrap(), head);
    let op = pg.channel(&operator()).await.unwrap();
    let after = (
        efa_testkit::reports::adopters(op.clone(), "wohngeld-nrw").await,
        efa_testkit::reports::history(op, DORTMUND).await,
    );
    assert_eq!(after, before);
    // The node carries on against it: nothing to do, nothing reported twice, and the log it
    // verified before the move goes on (same key, same history).
    let moved = checking(&w, pg.url());
    let again = moved.sync().await.unwrap();
    assert!(again.iter().all(|h| !matches!(h, Handled::Deployed { .. })), "{again:?}");
    let cp = moved.check_log().await.unwrap().expect("the copied log's checkpoint");
    assert!(cp.size >= head && moved.state().unwrap().log_alarm.is_none());
    let op = pg.channel(&operator()).await.unwrap();
    assert_eq!(efa_testkit::reports::history(op, DORTMUND).await, before.1, "nothing reported twice");
    // A new node gets the whole release from S3.
    let mut config = w.node_config(ESSEN, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.hub = pg.url();
    let handled = efa_node::Agent::new(config).unwrap().sync().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() }]);
    let deployed = w.dir.path().join("nodes").join(ESSEN).join("deploy/wohngeld-nrw/current/formulare.bin");
    assert_eq!(std::fs::read(deployed).unwrap(), big);
}

/// A node that knows two replicas carries on with the other when one stops: its stream
/// resumes there from its cursor, and a release published on the survivor is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_two_replica_addresses_carries_on_when_one_stops() {
    let Some((mut w, b)) = two_replicas().await else { return };
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.hubs = vec![b.url()];
    let node = efa_node::Agent::new(config).unwrap();
    let stop = CancellationToken::new();
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move { node.run(stop).await })
    };
    let op = b.channel(&operator()).await.unwrap();
    let running = |version: &'static str| {
        let op = op.clone();
        move || {
            let op = op.clone();
            async move {
                efa_testkit::reports::adopters(op, "wohngeld-nrw")
                    .await
                    .first()
                    .is_some_and(|a| a.running_version == version)
            }
        }
    };
    eventually(20, "1.0.0 deployed", running("1.0.0")).await;

    w.fed.stop_hub().await.unwrap();
    let bundle = w.standard_bundle("1.0.1");
    w.publish_through(b.channel(&land(NRW)).await.unwrap(), NRW, "wohngeld-nrw", "1.0.1", &bundle).await.unwrap();
    let started = std::time::Instant::now();
    eventually(30, "1.0.1 deployed through the surviving replica", running("1.0.1")).await;
    eprintln!("failover: 1.0.1 deployed {:.1?} after it was published on the survivor", started.elapsed());
    stop.cancel();
    run.await.unwrap().unwrap();

    // A one-shot `efa-node sync` whose first address is away goes on to the next.
    let mut config = w.node_config(ESSEN, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.hubs = vec![b.url()];
    let handled = efa_node::Agent::new(config).unwrap().sync().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.1".into() }]);
}

/// Rollout rings on two replicas of one PostgreSQL database: a release published with its
/// plan on one, reports on the other, and whichever replica holds the controller's lease
/// opens the next ring; both replicas then tell the Kommune it may deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_moves_on_postgres_whichever_replica_hears_the_reports() {
    if !efa_testkit::tools::check("hub on postgres", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let tune = move |c: &mut efa_hub::HubConfig| {
        c.store = StoreLocation::Postgres(url.clone());
        c.rollout_round = std::time::Duration::from_millis(200);
    };
    let w = World::tuned(tune.clone()).await;
    let b = DevFederation::start_tuned(w.dir.path(), "127.0.0.1:0".parse().unwrap(), tune).await.expect("replica B");
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish_rolled_out(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0"), pilot_plan()).await.unwrap();

    let admitted = |channel: tonic::transport::Channel| async move {
        ReleaseServiceClient::new(channel)
            .get_release(pb::GetReleaseRequest { service_id: "wohngeld-nrw".into(), version: "1.1.0".into() })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap()
            .rollout
            .unwrap()
            .admitted
    };
    assert!(!admitted(b.channel(&kommune(ESSEN)).await.unwrap()).await, "Essen waits, on either replica");
    assert!(!admitted(w.channel(&kommune(ESSEN)).await).await);
    for pilot in [DORTMUND, BIELEFELD] {
        report_on(b.channel(&kommune(pilot)).await.unwrap(), "wohngeld-nrw", "1.1.0", pb::AdoptionState::Deployed)
            .await;
    }
    eventually(20, "a replica's controller opens the last ring", || async {
        efa_proto::v1::rollout_service_client::RolloutServiceClient::new(w.channel(&operator()).await)
            .get_rollout_status(pb::GetRolloutStatusRequest {
                service_id: "wohngeld-nrw".into(),
                version: "1.1.0".into(),
                land_code: String::new(),
            })
            .await
            .is_ok_and(|s| s.get_ref().state == "complete")
    })
    .await;
    assert!(admitted(b.channel(&kommune(ESSEN)).await.unwrap()).await);
    assert!(admitted(w.channel(&kommune(ESSEN)).await).await);
}
