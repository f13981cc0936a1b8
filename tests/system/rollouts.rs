//! Rollout rings on a real hub and store: the controller opens the next ring when the
//! pilot ring's gates pass, halts on a rollback, and the Land's moves are checked by the
//! one authorization table. (Nodes and the wire come next; here Kommunen report directly.)

use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan, Status, Transition, Verdict};
use efa_proto::v1 as pb;
use efa_registry::RolloutAction;
use efa_tests::*;

async fn report(w: &World, ags: &str, version: &str, state: pb::AdoptionState) {
    AdoptionServiceClient::new(w.channel(&kommune(ags)).await)
        .report_adoption(pb::AdoptionReport {
            service_id: "wohngeld-nrw".into(),
            version: version.into(),
            state: state as i32,
            reason: if state == pb::AdoptionState::Deployed { String::new() } else { "Gesundheitsprüfung".into() },
        })
        .await
        .unwrap();
}

fn pilot_plan() -> RolloutPlan {
    RolloutPlan {
        rings: vec![Ring {
            name: "Pilot".into(),
            members: Members::Kommunen([DORTMUND.parse().unwrap(), BIELEFELD.parse().unwrap()].into()),
        }],
        gates: Gates { min_healthy: 2, max_failed_percent: Some(0), ..Default::default() },
        decide_within_secs: None,
    }
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
    let (verdict, moved) = reg.step_rollout(&sid, &v110, efa_domain::now_ms()).unwrap();
    assert!(matches!(verdict, Verdict::Wait(ref why) if why.contains("healthy deployments 1")), "{verdict:?}");
    assert!(moved.is_none());
    report(&w, BIELEFELD, "1.1.0", pb::AdoptionState::Deployed).await;
    let (verdict, moved) = reg.step_rollout(&sid, &v110, efa_domain::now_ms()).unwrap();
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
    let (verdict, moved) = reg.step_rollout(&sid, &v111, efa_domain::now_ms()).unwrap();
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
    assert!(reg.step_rollout(&sid, &v, efa_domain::now_ms()).unwrap().1.is_none());
    let (r, _) = reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Promote).unwrap();
    assert_eq!((r.open, r.status), (1, Status::Complete));
    let (r, _) =
        reg.act_on_rollout(&land(NRW), &sid, "1.1.0", RolloutAction::Abort("Fehler im Bescheid".into())).unwrap();
    assert!(matches!(r.status, Status::Halted { ref reason } if reason == "Fehler im Bescheid"));
}
