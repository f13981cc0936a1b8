//! Rollout rings on a real hub and store: the controller opens the next ring when the
//! pilot ring's gates pass, halts on a rollback, and the Land's moves are checked by the
//! one authorization table; nodes outside the open rings wait, over gRPC and on the stream.

use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan, Status, Transition, Verdict};
use efa_proto::v1 as pb;
use efa_registry::RolloutAction;
use efa_tests::*;

async fn report(w: &World, ags: &str, version: &str, state: pb::AdoptionState) {
    report_on(w.channel(&kommune(ags)).await, "wohngeld-nrw", version, state).await;
}

/// One controller step on the rollout as stored now, as the hub's controller takes it.
fn step(
    reg: &efa_registry::Registry,
    sid: &efa_domain::model::ids::ServiceId,
    v: &semver::Version,
) -> efa_registry::Result<(Verdict, Option<efa_domain::model::event::Event>)> {
    let rollout = reg.rollout(sid, v)?.expect("the release has a plan");
    reg.step_rollout(sid, v, rollout, efa_domain::now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_ring_that_passes_opens_the_rest_and_a_rollback_halts_the_next_release() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let reg = w.fed.registry().unwrap();
    let sid = "wohngeld-nrw".parse().unwrap();
    let v110: semver::Version = "1.1.0".parse().unwrap();

    // Only the building Land sets a plan, once.
    assert!(reg.set_rollout_plan(&kommune(DORTMUND), &sid, "1.1.0", pilot_plan()).is_err());
    reg.set_rollout_plan(&land(NRW), &sid, "1.1.0", pilot_plan()).unwrap();
    assert!(reg.set_rollout_plan(&land(NRW), &sid, "1.1.0", pilot_plan()).is_err());
    assert_eq!(reg.rollout_admits(&ESSEN.parse().unwrap(), &sid, &v110).unwrap(), (false, Some(1)));
    assert_eq!(reg.rollout_admits(&DORTMUND.parse().unwrap(), &sid, &v110).unwrap(), (true, Some(0)));

    // One pilot deployed: too little to judge. Both: the rest of NRW opens.
    report(&w, DORTMUND, "1.1.0", pb::AdoptionState::Deployed).await;
    let (verdict, moved) = step(reg, &sid, &v110).unwrap();
    assert!(matches!(verdict, Verdict::Wait(ref why) if why.contains("healthy deployments 1")), "{verdict:?}");
    assert!(moved.is_none());
    report(&w, BIELEFELD, "1.1.0", pb::AdoptionState::Deployed).await;
    let (verdict, moved) = step(reg, &sid, &v110).unwrap();
    assert_eq!(verdict, Verdict::Pass);
    let event = moved.expect("the next ring opened");
    assert!(matches!(
        event.kind,
        efa_domain::model::event::EventKind::RolloutChanged {
            transition: Transition::Opened { ring: 1, by_hand: false },
            ..
        }
    ));
    assert_eq!(reg.rollout_admits(&ESSEN.parse().unwrap(), &sid, &v110).unwrap(), (true, Some(1)));
    assert_eq!(reg.rollout(&sid, &v110).unwrap().unwrap().status, Status::Complete);

    // 1.1.1: Bielefeld rolls back, the rollout halts, and no ring opens after.
    w.publish(NRW, "wohngeld-nrw", "1.1.1", &w.standard_bundle("1.1.1")).await.unwrap();
    let v111: semver::Version = "1.1.1".parse().unwrap();
    reg.set_rollout_plan(&land(NRW), &sid, "1.1.1", pilot_plan()).unwrap();
    report(&w, DORTMUND, "1.1.1", pb::AdoptionState::Deployed).await;
    report(&w, BIELEFELD, "1.1.1", pb::AdoptionState::RolledBack).await;
    let (verdict, moved) = step(reg, &sid, &v111).unwrap();
    assert!(matches!(verdict, Verdict::Fail(ref why) if why.contains("rolled back")), "{verdict:?}");
    assert!(moved.is_some());
    let r = reg.rollout(&sid, &v111).unwrap().unwrap();
    assert!(matches!(r.status, Status::Halted { .. }));
    assert_eq!(reg.rollout_admits(&DORTMUND.parse().unwrap(), &sid, &v111).unwrap(), (false, Some(0)));
    assert!(reg.act_on_rollout(&land(NRW), &sid, "1.1.1", RolloutAction::Promote).is_err());
    // Another Land may not move it; the building Land may not resume a halted one.
    assert!(reg.act_on_rollout(&land("09"), &sid, "1.1.1", RolloutAction::Abort("nein".into())).is_err());
    assert!(reg.act_on_rollout(&land(NRW), &sid, "1.1.1", RolloutAction::Resume).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_land_pauses_promotes_and_aborts_by_hand() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let reg = w.fed.registry().unwrap();
    let sid = "wohngeld-nrw".parse().unwrap();
    let v: semver::Version = "1.1.0".parse().unwrap();
    assert!(reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Promote).is_err(), "no plan yet");
    reg.set_rollout_plan(&land(NRW), &sid, "1.1.0", pilot_plan()).unwrap();
    reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Pause("Rückmeldung abwarten".into())).unwrap();
    // Paused: the controller leaves it alone even when the gates pass.
    report(&w, DORTMUND, "1.1.0", pb::AdoptionState::Deployed).await;
    report(&w, BIELEFELD, "1.1.0", pb::AdoptionState::Deployed).await;
    assert!(step(reg, &sid, &v).unwrap().1.is_none());
    let (r, _) = reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Promote).unwrap();
    assert_eq!((r.open, r.status), (1, Status::Complete));
    let (r, _) =
        reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Abort("Fehler im Bescheid".into())).unwrap();
    assert!(matches!(r.status, Status::Halted { ref reason } if reason == "Fehler im Bescheid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_the_land_sets_and_moves_a_plan_and_everyone_reads_its_status() {
    use efa_proto::v1::rollout_service_client::RolloutServiceClient;
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let plan = pb::RolloutPlan {
        rings: vec![pb::RolloutRing {
            name: "Pilot".into(),
            kommunen: vec![DORTMUND.into(), BIELEFELD.into()],
            ..Default::default()
        }],
        gates: Some(pb::RolloutGates { min_healthy: 2, min_bake_secs: 3600, ..Default::default() }),
        decide_within_secs: 0,
    };
    let set = |plan: pb::RolloutPlan| pb::SetRolloutPlanRequest {
        service_id: "wohngeld-nrw".into(),
        version: "1.1.0".into(),
        plan: Some(plan),
    };
    // A Kommune may not set one; a plan that makes no sense is refused and named.
    let denied =
        RolloutServiceClient::new(w.channel(&kommune(DORTMUND)).await).set_rollout_plan(set(plan.clone())).await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
    let mut as_land = RolloutServiceClient::new(w.channel(&land(NRW)).await);
    let bad = pb::RolloutPlan {
        rings: vec![pb::RolloutRing { name: "X".into(), share_percent: 101, ..Default::default() }],
        ..plan.clone()
    };
    let refused = as_land.set_rollout_plan(set(bad)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Well-formed keys that name no Gemeinde or Kreis of the register: a ring nobody is in.
    for (kommunen, kreise) in [(vec!["05999999".to_string()], vec![]), (vec![], vec!["05999".to_string()])] {
        let ghost = pb::RolloutPlan {
            rings: vec![pb::RolloutRing { name: "Geister".into(), kommunen, kreise, share_percent: 0 }],
            ..plan.clone()
        };
        let refused = as_land.set_rollout_plan(set(ghost)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("of the register"), "{}", refused.message());
    }

    let status = as_land.set_rollout_plan(set(plan.clone())).await.unwrap().into_inner();
    assert_eq!((status.state.as_str(), status.open_ring), ("running", 0));
    assert_eq!(status.rings.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["Pilot", "alle übrigen"]);
    assert!(status.verdict.starts_with("wait:"), "{}", status.verdict);
    assert!(status.gates.iter().any(|g| g.gate == "healthy deployments" && g.state == "waiting"));
    assert_eq!(as_land.set_rollout_plan(set(plan)).await.unwrap_err().code(), tonic::Code::AlreadyExists);

    // The pilots report; the status counts them per ring; an operator reads it.
    report(&w, DORTMUND, "1.1.0", pb::AdoptionState::Deployed).await;
    let read = pb::GetRolloutStatusRequest {
        service_id: "wohngeld-nrw".into(),
        version: "1.1.0".into(),
        land_code: String::new(),
    };
    let status = RolloutServiceClient::new(w.channel(&operator()).await)
        .get_rollout_status(read.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.rings[0].healthy, 1);

    // Pause needs a reason; promote opens the last ring by hand.
    let act = |action: pb::RolloutAction, reason: &str| pb::RolloutActionRequest {
        service_id: "wohngeld-nrw".into(),
        version: "1.1.0".into(),
        action: action as i32,
        reason: reason.into(),
    };
    assert_eq!(
        as_land.act_on_rollout(act(pb::RolloutAction::Pause, " ")).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        as_land.act_on_rollout(act(pb::RolloutAction::Unspecified, "")).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let status = as_land.act_on_rollout(act(pb::RolloutAction::Promote, "")).await.unwrap().into_inner();
    assert_eq!((status.state.as_str(), status.open_ring), ("complete", 1));
    let missing = pb::GetRolloutStatusRequest { version: "9.9.9".into(), ..read };
    assert_eq!(as_land.get_rollout_status(missing).await.unwrap_err().code(), tonic::Code::NotFound);
}

/// Nodes deploy only in open rings: Essen waits while the pilots deploy, and its running
/// node deploys as soon as the controller opens its ring (the stream tells it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_open_rings_waits_and_deploys_when_its_ring_opens() {
    use efa_domain::model::release::UpdatePolicy;
    use efa_node::Handled;
    // The controller judges every 200 ms here (5 s by default).
    let w = World::tuned(|c| c.rollout_round = std::time::Duration::from_millis(200)).await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let reg = w.fed.registry().unwrap();
    let sid = "wohngeld-nrw".parse().unwrap();
    let v: semver::Version = "1.1.0".parse().unwrap();
    let mut plan = pilot_plan();
    // Until Essen's node listens, the pilots' gates cannot pass.
    plan.gates.min_ratings = 1;
    reg.set_rollout_plan(&land(NRW), &sid, "1.1.0", plan).unwrap();
    let subs = [Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }];

    let essen = w.node(ESSEN, &subs);
    let handled = essen.sync().await.unwrap();
    assert!(
        matches!(&handled[..], [Handled::Ignored { why, .. }] if why.contains("scheduled for ring 2 (alle übrigen)")),
        "{handled:?}"
    );
    assert!(essen.approve("wohngeld-nrw", "1.1.0").await.is_err(), "not even by hand");
    let mut pilots = Vec::new();
    for pilot in [DORTMUND, BIELEFELD] {
        let node = w.node(pilot, &subs);
        let handled = node.sync().await.unwrap();
        assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.1.0".into() }]);
        pilots.push(node);
    }

    // Essen's node follows its stream; the pilots' gates pass and the controller opens the rest.
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move { essen.run(stop).await })
    };
    eventually(20, "Essen's stream is attached", || async { w.fed.hub.as_ref().unwrap().watchers() >= 1 }).await;
    assert_eq!(reg.rollout(&sid, &v).unwrap().unwrap().open, 0, "waiting for a rating");
    rate(&pilots[0], "wohngeld-nrw", "1.1.0", 4, vec![], "läuft").await.unwrap();
    eventually(20, "Essen deployed 1.1.0 once its ring opened", || async {
        w.adopters("wohngeld-nrw").await.iter().any(|a| a.ags == ESSEN && a.running_version == "1.1.0")
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
}

/// A plan given at publish time is stored with the release: an auto node outside the pilot
/// ring that follows its stream never takes the release up, not even for a moment, and a
/// halted rollout leaves the pilots running it, told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_published_with_its_plan_never_reaches_a_node_outside_the_open_ring() {
    use efa_domain::model::release::UpdatePolicy;
    use efa_node::Handled;
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let subs = [Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }];
    let essen = std::sync::Arc::new(w.node(ESSEN, &subs));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let (stop, essen) = (stop.clone(), essen.clone());
        tokio::spawn(async move { essen.run(stop).await })
    };
    eventually(20, "Essen's stream is attached", || async { w.fed.hub.as_ref().unwrap().watchers() >= 1 }).await;

    let info =
        w.publish_rolled_out(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0"), pilot_plan()).await.unwrap();
    assert_eq!(info.version, "1.1.0");
    let dortmund = w.node(DORTMUND, &subs);
    assert_eq!(
        dortmund.sync().await.unwrap(),
        vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.1.0".into() }]
    );
    // Essen's node received the release on its stream and keeps it waiting.
    eventually(20, "Essen's node shows the release as scheduled", || async {
        essen
            .status()
            .unwrap()
            .services
            .iter()
            .any(|s| s.scheduled.iter().any(|(v, why)| v == "1.1.0" && why == "scheduled for ring 2 (alle übrigen)"))
    })
    .await;
    assert!(!w.adopters("wohngeld-nrw").await.iter().any(|a| a.ags == ESSEN && a.running_version == "1.1.0"));

    // The Land halts it: Dortmund keeps running 1.1.0 and is told; Essen never deploys it.
    efa_proto::v1::rollout_service_client::RolloutServiceClient::new(w.channel(&land(NRW)).await)
        .act_on_rollout(pb::RolloutActionRequest {
            service_id: "wohngeld-nrw".into(),
            version: "1.1.0".into(),
            action: pb::RolloutAction::Abort as i32,
            reason: "Bescheid falsch".into(),
        })
        .await
        .unwrap();
    let handled = dortmund.sync().await.unwrap();
    assert!(
        matches!(&handled[..], [Handled::Ignored { why, .. }] if why == "rollout halted: Bescheid falsch"),
        "{handled:?}"
    );
    let st = dortmund.status().unwrap();
    let s = st.services.iter().find(|s| s.service == "wohngeld-nrw").unwrap();
    assert_eq!(s.running.as_deref(), Some("1.1.0"));
    assert_eq!(s.scheduled, vec![("1.1.0".to_string(), "running; rollout halted: Bescheid falsch".to_string())]);
    stop.cancel();
    run.await.unwrap().unwrap();
    assert!(!w.adopters("wohngeld-nrw").await.iter().any(|a| a.ags == ESSEN && a.running_version == "1.1.0"));
}

/// The controller's counters, kept current from the event log, always equal a fresh count
/// from the records, whatever order reports, rollbacks and re-ratings come in; and a
/// restarted controller (seeded from the records) agrees too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_counters_match_a_count_from_the_records() {
    use efa_domain::model::adoption::{AdoptionReport, AdoptionState};
    use efa_domain::model::rating::NewRating;
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let reg = w.fed.registry().unwrap();
    let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
    let nrw: Vec<efa_domain::model::ids::Ags> = reg
        .store()
        .kommunen()
        .unwrap()
        .into_iter()
        .map(|k| k.ags)
        .filter(|a| a.to_string().starts_with("05"))
        .take(80)
        .collect();
    let plan = RolloutPlan {
        rings: vec![
            Ring { name: "Pilot".into(), members: Members::Kommunen(nrw.iter().take(5).cloned().collect()) },
            Ring { name: "Hälfte".into(), members: Members::Share { percent: 50 } },
        ],
        // Never passes: the rollout stays running, so the controller keeps counting.
        gates: Gates { min_healthy: 1_000, ..Default::default() },
        decide_within_secs: None,
    };
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    w.publish_rolled_out(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0"), plan).await.unwrap();
    let (v100, v110): (semver::Version, semver::Version) = ("1.0.0".parse().unwrap(), "1.1.0".parse().unwrap());
    let mut ctl = efa_registry::RolloutController::default();
    assert!(reg.controller_round(&mut ctl, efa_domain::now_ms()).unwrap().is_empty());

    let mut rng = efa_testkit::rng::Rng::from_env("controller counters");
    for round in 0..6 {
        for _ in 0..60 {
            let ags = &nrw[rng.range(0, nrw.len() as u64) as usize];
            let (version, state) = match rng.range(0, 6) {
                0 => (v100.clone(), AdoptionState::Deployed),
                1 | 2 => (v110.clone(), AdoptionState::Deployed),
                3 => (v110.clone(), AdoptionState::Failed),
                4 => (v110.clone(), AdoptionState::RolledBack),
                _ => (v110.clone(), AdoptionState::Evaluating),
            };
            let reason = if matches!(state, AdoptionState::Failed | AdoptionState::RolledBack) { "Test" } else { "" };
            let report =
                AdoptionReport { service_id: sid.clone(), version: Some(version), state, reason: reason.into() };
            reg.report_adoption(ags, report).await.unwrap();
            if rng.range(0, 3) == 0 {
                let stars = rng.range(1, 6) as u32;
                let rating = NewRating {
                    service_id: sid.clone(),
                    version: v110.clone(),
                    stars,
                    criteria: vec![(efa_domain::model::rating::Criterion::Payment, stars)],
                    comment: String::new(),
                    met: vec![],
                };
                // Only a Kommune that evaluated or deployed 1.1.0 may rate it.
                let _ = reg.rate(ags, rating).await;
            }
        }
        reg.controller_round(&mut ctl, efa_domain::now_ms()).unwrap();
        let rollout = reg.rollout(&sid, &v110).unwrap().unwrap();
        let mut fresh = reg.ring_counts(&sid, &v110, None, &rollout).unwrap();
        fresh[0].opened_at_ms = 0;
        assert_eq!(ctl.counts(&sid, &v110, None).unwrap(), &fresh[..], "round {round}");
        let mut restarted = efa_registry::RolloutController::default();
        reg.controller_round(&mut restarted, efa_domain::now_ms()).unwrap();
        assert_eq!(restarted.counts(&sid, &v110, None).unwrap(), &fresh[..], "restarted, round {round}");
    }
    let total: u32 = ctl.counts(&sid, &v110, None).unwrap().iter().map(|c| c.healthy + c.failed + c.rolled_back).sum();
    assert!(total > 0, "the test exercised something");
}
