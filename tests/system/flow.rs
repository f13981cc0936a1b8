//! The core path: a Land publishes, Kommunen deploy with their own parameters, report,
//! rate, and an operator sees all of it.

use efa_domain::model::release::UpdatePolicy;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn land_publishes_kommune_deploys_rates_and_operator_reviews() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Dortmund subscribes with auto policy and catches up: it deploys 1.0.0.
    let dortmund = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    dortmund.register_subscriptions().await.unwrap();
    let handled = dortmund.reconcile().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() }]);

    // The Kommune's parameters were rendered into the service's config.
    let deploy = &dortmund.config().deploy_dir;
    let rendered = std::fs::read_to_string(deploy.join("wohngeld-nrw/current/config/payment.toml")).unwrap();
    assert_eq!(rendered, "purpose = \"wohngeld-nrw 05913000\"\nfee_cents = 1250\n");
    assert!(!deploy.join("wohngeld-nrw/current/config/payment.toml.tmpl").exists());
    assert!(deploy.join("wohngeld-nrw/1.0.0/forms/antrag.json").is_file());

    // Live: with the agent running, a new release reaches it over the event stream.
    let stop = CancellationToken::new();
    let agent = std::sync::Arc::new(dortmund);
    let runner = {
        let (agent, stop) = (agent.clone(), stop.clone());
        tokio::spawn(async move { agent.run(stop).await })
    };
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    eventually(20, "Dortmund runs 1.1.0", || async {
        w.adopters("wohngeld-nrw").await.iter().any(|a| a.ags == DORTMUND && a.running_version == "1.1.0")
    })
    .await;
    stop.cancel();
    runner.await.unwrap().unwrap();
    let current = std::fs::read_link(agent.config().deploy_dir.join("wohngeld-nrw/current")).unwrap();
    assert_eq!(current.to_str(), Some("1.1.0"));

    // The ledger holds every state change, in order.
    let states: Vec<(String, pb::AdoptionState)> =
        w.history(DORTMUND).await.iter().map(|h| (h.version.clone(), state(h))).collect();
    assert_eq!(
        states,
        vec![
            ("1.0.0".into(), pb::AdoptionState::Evaluating),
            ("1.0.0".into(), pb::AdoptionState::Deployed),
            ("1.1.0".into(), pb::AdoptionState::Evaluating),
            ("1.1.0".into(), pb::AdoptionState::Deployed),
        ]
    );

    // Dortmund rates; a second rating of the same version replaces the first.
    rate(&agent, "wohngeld-nrw", "1.1.0", 2, vec![(pb::Criterion::Payment, 2)], "ePayBL fehlt").await.unwrap();
    rate(&agent, "wohngeld-nrw", "1.1.0", 4, vec![(pb::Criterion::Payment, 3)], "jetzt mit ePayBL").await.unwrap();
    let summary = ReportServiceClient::new(w.channel(&operator()).await)
        .rating_summary(pb::RatingSummaryRequest { service_id: "wohngeld-nrw".into() })
        .await
        .unwrap()
        .into_inner();
    let overall = summary.overall.unwrap();
    assert_eq!((overall.count, overall.average_stars), (1, 4.0));
    assert_eq!(overall.criteria[0].average, 3.0);

    // Coverage: one of 396 NRW Gemeinden, and all of the kreisfreie Stadt Dortmund.
    let coverage = ReportServiceClient::new(w.channel(&operator()).await)
        .coverage(pb::CoverageRequest { service_id: "wohngeld-nrw".into(), land_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    let nrw = coverage.rows.iter().find(|r| r.level == "land" && r.code == NRW).unwrap();
    assert_eq!((nrw.adopted, nrw.total), (1, 396));
    let kreis = coverage.rows.iter().find(|r| r.level == "kreis" && r.code == "05913").unwrap();
    assert_eq!((kreis.adopted, kreis.total), (1, 1));
    // And by inhabitants (GV100AD, 2023-11-30): Dortmund's 593,317 of all NRW's.
    assert_eq!((kreis.inhabitants_adopted, kreis.inhabitants_total), (593_317, 593_317));
    assert_eq!(nrw.inhabitants_adopted, 593_317);
    eprintln!("NRW inhabitants in the register: {}", nrw.inhabitants_total);
    assert!(nrw.inhabitants_total > 17_000_000 && nrw.inhabitants_total < 19_000_000, "{}", nrw.inhabitants_total);

    // The publishing Land reads the feedback on its services.
    let feedback = ReportServiceClient::new(w.channel(&land(NRW)).await)
        .feedback(pb::FeedbackRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(feedback.ratings.len(), 1);
    assert_eq!(feedback.ratings[0].comment, "jetzt mit ePayBL");
    assert_eq!(feedback.ratings[0].kommune_name, "Dortmund, Stadt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_policy_waits_for_approval_and_rejections_reach_the_land() {
    let w = World::new().await;
    w.register(NRW, "gewerbe-nrw", "10294").await.unwrap();
    w.register(NRW, "baugenehmigung-nrw", "10519").await.unwrap();
    w.publish(NRW, "gewerbe-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    w.publish(NRW, "baugenehmigung-nrw", "2.0.0", &w.standard_bundle("2.0.0")).await.unwrap();

    let essen = w.node(
        ESSEN,
        &[
            Sub { service: "gewerbe-nrw", policy: UpdatePolicy::Manual },
            Sub { service: "baugenehmigung-nrw", policy: UpdatePolicy::Manual },
        ],
    );
    essen.register_subscriptions().await.unwrap();
    let handled = essen.reconcile().await.unwrap();
    assert!(handled.iter().all(|h| matches!(h, Handled::AwaitingApproval { .. })), "{handled:?}");
    assert_eq!(essen.deployer().current_version(&"gewerbe-nrw".parse().unwrap()).unwrap(), None);

    // Approving deploys; rejecting records the reason.
    assert!(matches!(essen.approve("gewerbe-nrw", "1.0.0").await.unwrap(), Handled::Deployed { .. }));
    essen.reject("baugenehmigung-nrw", Some("2.0.0"), "Anbindung an XBau-Fachverfahren fehlt").await.unwrap();
    let state = essen.state().unwrap();
    assert!(state.services["baugenehmigung-nrw"].pending.is_empty());

    let feedback = ReportServiceClient::new(w.channel(&land(NRW)).await)
        .feedback(pb::FeedbackRequest { service_id: "baugenehmigung-nrw".into(), land_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(feedback.rejections.len(), 1);
    assert_eq!(feedback.rejections[0].reason, "Anbindung an XBau-Fachverfahren fehlt");
    assert_eq!(feedback.rejections[0].kommune_name, "Essen, Stadt");

    // Essen evaluated 2.0.0, so it may rate it even though it rejected it.
    rate(&essen, "baugenehmigung-nrw", "2.0.0", 1, vec![], "nicht nutzbar ohne XBau").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_only_deploys_patches_and_holds_minor_updates() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(BIELEFELD, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::PatchOnly }]);
    node.register_subscriptions().await.unwrap();
    node.reconcile().await.unwrap();
    // A first install needs approval under patch-only.
    node.approve("wohngeld-nrw", "1.0.0").await.unwrap();
    node.sync_once().await.unwrap();

    w.publish(NRW, "wohngeld-nrw", "1.0.1", &w.standard_bundle("1.0.1")).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = node.sync_once().await.unwrap();
    assert_eq!(
        handled,
        vec![
            Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.1".into() },
            Handled::AwaitingApproval { service: "wohngeld-nrw".into(), version: "1.1.0".into() },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parameters_and_failing_health_checks_keep_the_running_version() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // A Kommune that did not fill in its payment purpose gets a clear refusal.
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.services.get_mut(&"wohngeld-nrw".parse().unwrap()).unwrap().parameters.remove("payment_purpose");
    let node = efa_node::Agent::new(config.clone()).unwrap();
    node.register_subscriptions().await.unwrap();
    let handled = node.reconcile().await.unwrap();
    let [Handled::Failed { reason, .. }] = handled.as_slice() else { panic!("{handled:?}") };
    assert!(reason.contains("missing required parameter 'payment_purpose'"), "{reason}");

    // Fixed config deploys 1.0.0; a 1.1.0 whose health check fails is rolled back.
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    config.services.get_mut(&"wohngeld-nrw".parse().unwrap()).unwrap().health_command =
        Some("grep -q 'Version 1.0' index.html".into());
    let node = efa_node::Agent::new(config).unwrap();
    assert!(matches!(node.reconcile().await.unwrap()[0], Handled::Deployed { .. }));
    node.sync_once().await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::RolledBack { version, .. }] if version == "1.1.0"), "{handled:?}");
    assert_eq!(node.deployer().current_version(&"wohngeld-nrw".parse().unwrap()).unwrap().as_deref(), Some("1.0.0"));
    let me = w.adopters("wohngeld-nrw").await;
    assert_eq!(state(&me[0]), pb::AdoptionState::RolledBack);
    assert_eq!(me[0].running_version, "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_release_costs_few_state_writes() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    let info = efa_node::hub::HubClient::new(w.channel(&kommune(DORTMUND)).await)
        .release(&"wohngeld-nrw".parse().unwrap(), &"1.0.0".parse().unwrap())
        .await
        .unwrap()
        .summary;

    let before = node.state_writes();
    let handled = node.handle_release(info).await.unwrap();
    assert_eq!(handled, Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() });
    // Evaluating queued, acknowledged; deployed with its state change queued, acknowledged.
    // (Each write is a temp file, fsync, rename and directory fsync.)
    assert_eq!(node.state_writes() - before, 4, "state.json writes for one deployed release");
    let state = node.state().unwrap();
    assert!(state.outbox.is_empty());
    assert_eq!(state.services["wohngeld-nrw"].land.as_deref(), Some(NRW), "the Land was pinned with the outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_by_hand_holds_until_approved_or_lifted() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.sync().await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.1", &w.standard_bundle("1.0.1")).await.unwrap();
    let handled = node.sync().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.1".into() }]);

    // Back to 1.0.0 by hand: the next sync must not deploy 1.0.1 (or a newer 1.0.2) again.
    node.rollback("wohngeld-nrw", "1.0.0").await.unwrap();
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().all(|h| !matches!(h, Handled::Deployed { .. })), "{handled:?}");
    w.publish(NRW, "wohngeld-nrw", "1.0.2", &w.standard_bundle("1.0.2")).await.unwrap();
    let handled = node.sync().await.unwrap();
    assert_eq!(handled, vec![Handled::AwaitingApproval { service: "wohngeld-nrw".into(), version: "1.0.2".into() }]);
    let current = |node: &efa_node::Agent| node.deployer().current_version(&"wohngeld-nrw".parse().unwrap()).unwrap();
    assert_eq!(current(&node).as_deref(), Some("1.0.0"));
    let status = node.status().unwrap();
    let hold = status.services[0].hold.clone().expect("status says it is held");
    assert_eq!((hold.version.as_str(), hold.reason.as_str()), ("1.0.0", "rolled back by hand from 1.0.1"));

    // Lifting the hold lets the policy deploy the newest release again.
    node.unhold("wohngeld-nrw").await.unwrap();
    let handled = node.sync().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.2".into() }]);

    // A hold set by hand ends with an approval of a newer release.
    node.hold("wohngeld-nrw", "Schulung der Sachbearbeitung erst im Januar").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.3", &w.standard_bundle("1.0.3")).await.unwrap();
    assert!(matches!(node.sync().await.unwrap()[..], [Handled::AwaitingApproval { .. }]));
    assert!(matches!(node.approve("wohngeld-nrw", "1.0.3").await.unwrap(), Handled::Deployed { .. }));
    assert!(node.status().unwrap().services[0].hold.is_none(), "the approval lifted the hold");
    assert!(node.unhold("wohngeld-nrw").await.is_err(), "nothing left to lift");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_the_hub_refuses_is_an_error_and_leaves_no_trace() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let err = node.reject("wohngeld-nwr", None, "Tippfehler").await.unwrap_err().to_string();
    assert!(err.contains("wohngeld-nwr"), "{err}");
    assert!(!node.state().unwrap().services.contains_key("wohngeld-nwr"), "a typo must not stay in the state");
    assert!(!node.metrics_text().contains("wohngeld-nwr"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_an_unknown_service_names_the_config_and_the_closest_id() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nwr", policy: UpdatePolicy::Auto }]);
    config.source = Some("/etc/efa-node.toml".into());
    let err = efa_node::Agent::new(config).unwrap().sync().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "/etc/efa-node.toml: [[subscriptions]] service = \"wohngeld-nwr\": the hub has no such service; did you mean wohngeld-nrw?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_says_per_area_whether_it_is_met_and_the_summary_counts_it() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    for ags in [DORTMUND, ESSEN] {
        let node = w.node(ags, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
        node.sync().await.unwrap();
        let info = AdoptionServiceClient::new(w.channel(&kommune(ags)).await)
            .submit_rating(pb::RatingRequest {
                service_id: "wohngeld-nrw".into(),
                version: "1.0.0".into(),
                stars: 4,
                criteria: vec![],
                comment: String::new(),
                met: vec![
                    pb::CriterionMet { criterion: pb::Criterion::Payment as i32, met: ags == DORTMUND },
                    pb::CriterionMet { criterion: pb::Criterion::RechtlicheNachnutzung as i32, met: true },
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.met.len(), 2);
    }
    let summary = ReportServiceClient::new(w.channel(&land(NRW)).await)
        .rating_summary(pb::RatingSummaryRequest { service_id: "wohngeld-nrw".into() })
        .await
        .unwrap()
        .into_inner()
        .overall
        .unwrap();
    let count = |c: pb::Criterion| summary.met.iter().find(|m| m.criterion == c as i32).map(|m| (m.met, m.not_met));
    assert_eq!(count(pb::Criterion::Payment), Some((1, 1)));
    assert_eq!(count(pb::Criterion::RechtlicheNachnutzung), Some((2, 0)));
    assert_eq!(count(pb::Criterion::Design), None, "an area nobody marked is left out");

    // The same area twice is refused.
    let err = AdoptionServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .submit_rating(pb::RatingRequest {
            service_id: "wohngeld-nrw".into(),
            version: "1.0.0".into(),
            stars: 4,
            criteria: vec![],
            comment: String::new(),
            met: vec![
                pb::CriterionMet { criterion: pb::Criterion::Payment as i32, met: true },
                pb::CriterionMet { criterion: pb::Criterion::Payment as i32, met: false },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
}
