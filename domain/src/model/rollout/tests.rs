use super::*;

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

fn ags(s: &str) -> Ags {
    s.parse().unwrap()
}

fn plan(rings: Vec<Ring>) -> RolloutPlan {
    RolloutPlan { rings, gates: Gates::default(), decide_within_secs: None }
}

fn ring(name: &str, members: Members) -> Ring {
    Ring { name: name.into(), members }
}

/// Real Gemeinden of NRW (GV100AD 2023-11-30): Dortmund, Essen, Bielefeld, Bönen (Kreis Unna).
const DORTMUND: &str = "05913000";
const ESSEN: &str = "05113000";
const BIELEFELD: &str = "05711000";
const BOENEN: &str = "05978008";

#[test]
fn named_rings_come_first_then_shares_then_everyone_else() {
    let sid: ServiceId = "wohngeld-nrw".parse().unwrap();
    let p = plan(vec![
        ring("Pilot", Members::Kommunen([ags(DORTMUND), ags(BIELEFELD)].into())),
        ring("Kreis Unna", Members::Kreise(["05978".parse().unwrap()].into())),
        ring("Zehn Prozent", Members::Share { percent: 10 }),
    ]);
    p.validate().unwrap();
    assert_eq!(p.ring_of(&ags(DORTMUND), &sid, &v("1.1.0")), 0);
    assert_eq!(p.ring_of(&ags(BIELEFELD), &sid, &v("1.1.0")), 0);
    assert_eq!(p.ring_of(&ags(BOENEN), &sid, &v("1.1.0")), 1);
    let essen = p.ring_of(&ags(ESSEN), &sid, &v("1.1.0"));
    assert!(essen == 2 || essen == 3);
    assert_eq!(p.ring_name(3), LAST_RING);
    assert_eq!(p.ring_count(), 4);
}

#[test]
fn share_rings_are_deterministic_sized_and_differ_per_release() {
    let sid: ServiceId = "wohngeld-nrw".parse().unwrap();
    let p = plan(vec![ring("Erste", Members::Share { percent: 10 }), ring("Zweite", Members::Share { percent: 30 })]);
    // 10,000 AGS-shaped keys of Land 05: each share within two points of its size.
    let keys: Vec<Ags> = (0..10_000).map(|i| ags(&format!("05{:06}", i))).collect();
    let count = |ring: usize, version: &str| keys.iter().filter(|a| p.ring_of(a, &sid, &v(version)) == ring).count();
    let (first, second, rest) = (count(0, "1.1.0"), count(1, "1.1.0"), count(2, "1.1.0"));
    assert!((800..=1200).contains(&first), "{first}");
    assert!((2800..=3200).contains(&second), "{second}");
    assert_eq!(first + second + rest, keys.len());
    // The same every time; another release draws other Kommunen.
    let once: Vec<usize> = keys.iter().map(|a| p.ring_of(a, &sid, &v("1.1.0"))).collect();
    let again: Vec<usize> = keys.iter().map(|a| p.ring_of(a, &sid, &v("1.1.0"))).collect();
    assert_eq!(again, once);
    let other: Vec<usize> = keys.iter().map(|a| p.ring_of(a, &sid, &v("1.2.0"))).collect();
    assert_ne!(other, once);
}

#[test]
fn plans_that_make_no_sense_are_refused() {
    let bad = [
        plan(vec![]),
        plan(vec![ring("", Members::Share { percent: 5 })]),
        plan(vec![ring("A", Members::Share { percent: 5 }), ring("a", Members::Share { percent: 5 })]),
        plan(vec![ring("A", Members::Share { percent: 0 })]),
        plan(vec![ring("A", Members::Share { percent: 60 }), ring("B", Members::Share { percent: 41 })]),
        plan(vec![ring("A", Members::Kommunen(BTreeSet::new()))]),
        plan(vec![ring("A\u{1b}[2J", Members::Share { percent: 5 })]),
        plan((0..=MAX_RINGS).map(|i| ring(&format!("R{i}"), Members::Share { percent: 1 })).collect()),
    ];
    for p in bad {
        assert!(p.validate().is_err(), "{p:?}");
    }
    let mut p = plan(vec![ring("A", Members::Share { percent: 5 })]);
    p.gates.min_stars_tenths = Some(60);
    assert!(p.validate().is_err());
    p.gates.min_stars_tenths = Some(35);
    p.gates.max_failed_percent = Some(101);
    assert!(p.validate().is_err());
}

fn gates() -> Gates {
    Gates {
        min_healthy: 2,
        max_failed_percent: Some(20),
        min_bake_secs: 3600,
        min_ratings: 2,
        min_stars_tenths: Some(35),
        min_criterion_tenths: [(Criterion::Payment, 30)].into(),
        max_blocked_percent: Some(25),
    }
}

fn good() -> RingCounts {
    RingCounts {
        opened_at_ms: 0,
        healthy: 2,
        ratings: 2,
        stars_sum: 8,
        criteria: [(Criterion::Payment, (2, 7))].into(),
        preflights: 4,
        blocked: 1,
        ..Default::default()
    }
}

const HOUR_MS: i64 = 3_600_000;

#[test]
fn a_ring_passes_when_every_gate_is_met() {
    assert_eq!(gates().verdict(&good(), HOUR_MS, None), Verdict::Pass);
    assert!(gates().check(&good(), HOUR_MS).iter().all(|c| c.state == GateState::Met));
}

#[test]
fn each_gate_can_hold_a_ring_back() {
    let g = gates();
    let wait = |c: RingCounts, now: i64| matches!(g.verdict(&c, now, None), Verdict::Wait(_));
    assert!(wait(good(), HOUR_MS - 1), "bake time");
    assert!(wait(RingCounts { healthy: 1, ..good() }, HOUR_MS), "healthy deployments");
    // One rating: too few to judge the average either way, even a bad one.
    let one = RingCounts { ratings: 1, stars_sum: 1, criteria: [(Criterion::Payment, (1, 1))].into(), ..good() };
    assert!(wait(one, HOUR_MS));
    assert!(wait(RingCounts { criteria: BTreeMap::new(), ..good() }, HOUR_MS), "no Payment scores yet");
}

#[test]
fn each_halting_gate_fails_the_ring() {
    let g = gates();
    let fail = |c: RingCounts| match g.verdict(&c, HOUR_MS, None) {
        Verdict::Fail(why) => why,
        other => panic!("{other:?}"),
    };
    // Bielefeld rolled back: 1 of 3 reports, 34 % > 20 %.
    assert!(fail(RingCounts { rolled_back: 1, ..good() }).contains("failed or rolled back 34 %"));
    assert!(fail(RingCounts { failed: 1, ..good() }).contains("failed"));
    // 3.0 stars average (2 + 4) < 3.5.
    assert!(fail(RingCounts { stars_sum: 6, ..good() }).contains("average stars 3.0"));
    // Payment 2.5 < 3.0.
    assert!(fail(RingCounts { criteria: [(Criterion::Payment, (2, 5))].into(), ..good() }).contains("2.5"));
    // 2 of 4 pre-flights block: 50 % > 25 %.
    assert!(fail(RingCounts { blocked: 2, ..good() }).contains("pre-flight blocked 50 %"));
    // A failure decides even before the bake time is over.
    assert!(matches!(g.verdict(&RingCounts { rolled_back: 1, ..good() }, 0, None), Verdict::Fail(_)));
}

#[test]
fn waiting_past_the_deadline_is_overdue() {
    let g = gates();
    let c = RingCounts { healthy: 1, ..good() };
    assert!(matches!(g.verdict(&c, 2 * HOUR_MS, Some(3 * HOUR_MS)), Verdict::Wait(_)));
    let overdue = g.verdict(&c, 3 * HOUR_MS, Some(3 * HOUR_MS));
    assert!(matches!(&overdue, Verdict::Overdue(why) if why.contains("healthy deployments 1")), "{overdue:?}");
    // A passing ring is never overdue.
    assert_eq!(g.verdict(&good(), 3 * HOUR_MS, Some(3 * HOUR_MS)), Verdict::Pass);
}

#[test]
fn no_gates_means_the_next_ring_opens_at_once() {
    assert_eq!(Gates::default().verdict(&RingCounts::default(), 0, None), Verdict::Pass);
}
