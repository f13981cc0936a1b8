//! Guarantee 6: the rollout controller opens every ring of a release exactly once, in
//! order, and only when the ring before passed, however often the hub is SIGKILLed while it
//! does. The hub's controller runs every 50 ms; each release is published with a plan of
//! five rings of real NRW Gemeinden. Per ring, one Kommune reports the release deployed,
//! too few for the gate, and the ring must stay the open one; then the others report (each
//! over mTLS with its own certificate), which lets the controller open the next ring. The
//! hub is killed around that: after the reports were acknowledged (before, during or after
//! the controller's round), the moment the next ring shows open, while the reports are in
//! flight, or right after the publish. After every kill the store is opened as the crash
//! left it, and once more after the last release: per release the log holds `Started`,
//! then `Opened` for ring 1, 2, … up to the last, each once and in order, each only after
//! the ring before had `MIN_HEALTHY` deployments in the log; the stored rollout agrees with
//! its log; every acknowledged report is stored once. The restarted hub never shows a ring
//! closed again, and at the end reports every rollout complete.

use crate::harness::*;
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::event::EventKind;
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan, Status, Transition};
use efa_domain::signing::SigningKey;
use efa_proto::v1 as pb;
use efa_proto::v1::rollout_service_client::RolloutServiceClient;
use efa_registry::store::{SledStore, Store};
use efa_tests::{AdoptionServiceClient, CatalogServiceClient};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The named rings: Gemeinden of NRW from the register the hub imports (GV100AD of
/// 30.11.2023; the test checks each with `GetKommune`). Every other Gemeinde is in the
/// implicit last ring, "alle übrigen", whose opening completes the rollout.
const RINGS: [(&str, &[&str]); 5] = [
    ("Pilot", &["05913000", "05711000"]),               // Dortmund, Bielefeld
    ("Welle 2", &["05113000", "05911000", "05112000"]), // Essen, Bochum, Duisburg
    ("Welle 3", &["05111000", "05315000"]),             // Düsseldorf, Köln
    ("Welle 4", &["05124000", "05914000", "05116000"]), // Wuppertal, Hagen, Mönchengladbach
    ("Welle 5", &["05515000", "05334002"]),             // Münster, Aachen
];
/// The last ring ("alle übrigen").
const LAST: usize = RINGS.len();
/// Healthy deployments a ring needs before the next one opens: fewer than some rings have,
/// so a ring may open while a report of it is still in flight.
const MIN_HEALTHY: u32 = 2;
/// The controller's round (`rollout_round_ms`); a report wakes it earlier, after letting a
/// burst settle for 100 ms.
const ROUND_MS: u64 = 50;
/// Kills after the reports land within this many ms of the last acknowledgement: before the
/// controller's round (which follows the first report of a ring by about 100 ms), during
/// it, or after it opened the next ring.
const AFTER_REPORTS_MS: u64 = 250;
/// How long a ring stays with too few deployments (and the controller judges it so) before
/// the rest of its Kommunen report: up to a few of the controller's rounds.
const PARTIAL_MS: u64 = 300;
/// No single RPC may hang the test; a dead hub fails calls much sooner.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the next ring may take to open once the open one passed (restart included).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn plan() -> RolloutPlan {
    RolloutPlan {
        rings: RINGS
            .iter()
            .map(|(name, ags)| Ring {
                name: (*name).into(),
                members: Members::Kommunen(ags.iter().map(|a| a.parse().unwrap()).collect()),
            })
            .collect(),
        gates: Gates { min_healthy: MIN_HEALTHY, ..Default::default() },
        decide_within_secs: None,
    }
}

/// Where a kill lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// 0–250 ms after the publish with the plan was acknowledged.
    AfterPublish,
    /// 0–250 ms after the open ring's reports were acknowledged.
    AfterReports,
    /// The moment `GetRolloutStatus` first shows the next ring open: the controller's
    /// write is applied, and its flush may not have finished.
    WhenOpen,
    /// 0–15 ms after the open ring's reports were sent, while they are in flight.
    DuringReports,
}

/// Which steps get a kill: step 0 of a release is its publish, step `k + 1` the opening of
/// ring `k + 1`. `kills` distinct steps out of all, chosen at random; the kills of ring
/// openings take the kinds in turn (half of them after the reports), so even a short run
/// has each.
fn schedule(kills: usize, releases: usize, rng: &mut Rng) -> BTreeMap<(usize, usize), Kill> {
    let per_release = LAST + 1;
    let mut steps: Vec<usize> = (0..releases * per_release).collect();
    let kills = kills.min(steps.len());
    for i in 0..kills {
        let j = rng.range(i as u64, steps.len() as u64) as usize;
        steps.swap(i, j);
    }
    let kinds = [Kill::AfterReports, Kill::WhenOpen, Kill::AfterReports, Kill::DuringReports];
    let mut turn = rng.range(0, kinds.len() as u64) as usize;
    steps[..kills]
        .iter()
        .map(|&s| {
            let (release, step) = (s / per_release, s % per_release);
            let kill = if step == 0 {
                Kill::AfterPublish
            } else {
                turn += 1;
                kinds[turn % kinds.len()]
            };
            ((release, step), kill)
        })
        .collect()
}

/// What the test sent and what the hub acknowledged.
#[derive(Default)]
struct Tracker {
    op: u64,
    /// Releases whose publish (with the plan) was acknowledged, in order.
    releases: Vec<String>,
    reports_tried: BTreeSet<String>,
    /// Acknowledged reports: reason (unique) -> AGS.
    reports_acked: BTreeMap<String, String>,
}

#[derive(Default)]
struct Figures {
    after_publish: usize,
    /// Kills after the reports at which the next ring was stored open already / not yet.
    after_reports_opened: usize,
    after_reports_not_yet: usize,
    /// Kills the moment the next ring showed open, at which it was stored / not yet durable.
    when_open_durable: usize,
    when_open_lost: usize,
    during_reports: usize,
    store_checks: usize,
    events_checked: usize,
    rings_opened: usize,
    reports_stored: usize,
    head: u64,
}

/// Every ring member is a Gemeinde of the register the hub imported.
async fn check_register(hub: &HubProc) -> usize {
    let mut catalog = CatalogServiceClient::new(hub.channel(&operator()).await);
    let mut n = 0;
    for ags in RINGS.iter().flat_map(|(_, m)| m.iter()) {
        let k = catalog
            .get_kommune(pb::GetKommuneRequest { ags: (*ags).into() })
            .await
            .unwrap_or_else(|s| panic!("ring member {ags} is not in the hub's register: {s:?}"))
            .into_inner();
        assert_eq!((k.ags.as_str(), k.land_code.as_str()), (*ags, "05"), "{ags} is a Gemeinde of NRW");
        n += 1;
    }
    n
}

async fn rollout_status(
    client: &mut RolloutServiceClient<tonic::transport::Channel>,
    version: &str,
) -> pb::RolloutStatus {
    let req =
        pb::GetRolloutStatusRequest { service_id: SERVICE.into(), version: version.into(), land_code: String::new() };
    match tokio::time::timeout(CALL_TIMEOUT, client.get_rollout_status(req)).await {
        Ok(Ok(s)) => s.into_inner(),
        other => panic!("GetRolloutStatus {version}: {other:?}"),
    }
}

/// Sends a `deployed` report for `version` from each of `members`, each as that Kommune
/// over its own connection, concurrently. Each task answers whether its report was
/// acknowledged.
fn send_reports(hub: &HubProc, t: &mut Tracker, version: &str, members: &[&'static str]) -> JoinSet<(String, bool)> {
    let mut set = JoinSet::new();
    for &ags in members {
        t.op += 1;
        let reason = format!("rollout fault {ags} {version} #{}", t.op);
        t.reports_tried.insert(reason.clone());
        let report = pb::AdoptionReport {
            service_id: SERVICE.into(),
            version: version.into(),
            state: pb::AdoptionState::Deployed as i32,
            reason: reason.clone(),
        };
        let mut client = AdoptionServiceClient::new(hub.lazy_channel(&kommune(ags)));
        set.spawn(async move {
            let acked = matches!(tokio::time::timeout(CALL_TIMEOUT, client.report_adoption(report)).await, Ok(Ok(_)));
            (reason, acked)
        });
    }
    set
}

/// Waits for every report; records the acknowledged ones and returns their Kommunen.
async fn join_reports(mut set: JoinSet<(String, bool)>, t: &mut Tracker) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    while let Some(done) = set.join_next().await {
        let (reason, ok) = done.expect("report task");
        if ok {
            let ags = reason.split(' ').nth(2).expect("AGS in the reason").to_string();
            acked.insert(ags.clone());
            t.reports_acked.insert(reason, ags);
        }
    }
    acked
}

/// The store as SIGKILL left it, checked for every release published so far; returns each
/// release's open ring as stored. With `complete`, every rollout must have finished.
fn check_store(
    hub: &HubProc,
    t: &Tracker,
    f: &mut Figures,
    plan: &RolloutPlan,
    complete: bool,
) -> BTreeMap<String, usize> {
    let store = SledStore::open(&hub.data_dir.join("db")).expect("the crashed hub's store opens");
    let head = store.head_seq().unwrap();
    let events = store.events_after(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs == (1..=head).collect::<Vec<_>>(), "event log is not gapless 1..={head}");
    let service: ServiceId = SERVICE.parse().unwrap();

    // Walk the log: per release, the transitions in order; per Kommune, the version it last
    // reported deployed (what the gate counts).
    let mut published = BTreeSet::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut running: BTreeMap<Ags, semver::Version> = BTreeMap::new();
    let mut opened = 0;
    for e in &events {
        match &e.kind {
            EventKind::ReleasePublished { service_id, version } if service_id == &service => {
                published.insert(version.to_string());
            }
            EventKind::AdoptionReported(entry) if entry.state == AdoptionState::Deployed => {
                if let Some(v) = &entry.version {
                    running.insert(entry.ags.clone(), v.clone());
                }
            }
            EventKind::RolloutChanged { service_id, version, transition } => {
                assert_eq!(service_id, &service, "seq {}: rollout of another service", e.seq);
                let v = version.to_string();
                assert!(published.contains(&v), "seq {}: rollout of {v} logged before its release", e.seq);
                match transition {
                    Transition::Started => {
                        assert!(open.insert(v.clone(), 0).is_none(), "seq {}: rollout of {v} started twice", e.seq)
                    }
                    Transition::Opened { ring, by_hand } => {
                        assert!(!by_hand, "seq {}: {v} ring {ring} opened by hand; nobody promoted", e.seq);
                        let was = *open
                            .get(&v)
                            .unwrap_or_else(|| panic!("seq {}: {v} ring {ring} opened before Started", e.seq));
                        assert!(
                            *ring > was,
                            "seq {}: {v} ring {ring} opened twice (ring {was} was open already)",
                            e.seq
                        );
                        assert!(
                            *ring == was + 1,
                            "seq {}: {v} ring {ring} opened after ring {was}: ring(s) {:?} skipped",
                            e.seq,
                            (was + 1..*ring).collect::<Vec<_>>()
                        );
                        assert!(*ring <= LAST, "seq {}: {v} opened ring {ring}, beyond the last ring {LAST}", e.seq);
                        // The gate really passed: the ring before had its deployments, in the log before this.
                        let healthy = RINGS[was]
                            .1
                            .iter()
                            .filter(|a| running.get(&a.parse::<Ags>().unwrap()) == Some(version))
                            .count() as u32;
                        assert!(
                            healthy >= MIN_HEALTHY,
                            "seq {}: {v} ring {ring} opened with {healthy} healthy deployments in ring {was} (needs {MIN_HEALTHY})",
                            e.seq
                        );
                        open.insert(v.clone(), *ring);
                        opened += 1;
                    }
                    other => panic!("seq {}: unexpected rollout transition of {v}: {other:?}", e.seq),
                }
            }
            _ => {}
        }
    }

    // Every acknowledged publish is there with its rollout, which agrees with its log.
    let acked: BTreeSet<String> = t.releases.iter().cloned().collect();
    assert_eq!(published, acked, "releases in the log differ from the acknowledged publishes");
    for v in &t.releases {
        let version: semver::Version = v.parse().unwrap();
        let r = store
            .rollout(&service, &version, None)
            .unwrap()
            .unwrap_or_else(|| panic!("{v} stored without its rollout"));
        let logged = *open.get(v).unwrap_or_else(|| panic!("{v}: no Started event"));
        assert_eq!(&r.plan, plan, "{v}: stored plan");
        assert_eq!(r.open, logged, "{v}: stored open ring differs from the last Opened event");
        let status = if logged == LAST { Status::Complete } else { Status::Running };
        assert_eq!(r.status, status, "{v}: stored status with ring {logged} of {LAST} open");
        if complete {
            assert_eq!((r.open, &r.status), (LAST, &Status::Complete), "{v}: rollout not complete at the end");
        }
    }

    // Every acknowledged report is stored once; nothing is stored that was never sent.
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for ags in RINGS.iter().flat_map(|(_, m)| m.iter()) {
        for entry in store.history_of(&ags.parse().unwrap()).unwrap() {
            *stored.entry(entry.reason).or_default() += 1;
        }
    }
    let lost: Vec<&String> = t.reports_acked.keys().filter(|r| !stored.contains_key(*r)).collect();
    assert!(lost.is_empty(), "acknowledged reports lost after kill -9: {lost:?}");
    for (reason, n) in &stored {
        assert!(t.reports_tried.contains(reason), "report {reason:?} stored but never sent");
        assert_eq!(*n, 1, "report {reason:?} stored {n} times");
    }

    f.store_checks += 1;
    f.events_checked += events.len();
    f.rings_opened = opened;
    f.reports_stored = stored.len();
    f.head = head;
    open
}

/// One run: the hub, what was sent and acknowledged, the figures, the random choices.
struct Run {
    hub: HubProc,
    t: Tracker,
    f: Figures,
    rng: Rng,
    plan: RolloutPlan,
}

impl Run {
    /// SIGKILL has happened: checks the store as it was left, restarts the hub on it, and
    /// checks that the restarted hub shows no ring closed again. Returns the stored open rings.
    async fn check_and_restart(&mut self) -> BTreeMap<String, usize> {
        assert!(self.hub.child.is_none(), "the hub is down");
        let stored = check_store(&self.hub, &self.t, &mut self.f, &self.plan, false);
        self.hub.start().await;
        let mut client = RolloutServiceClient::new(self.hub.channel(&land()).await);
        for (version, open) in &stored {
            let shown = rollout_status(&mut client, version).await.open_ring as usize;
            assert!(shown >= *open, "{version}: ring {open} was stored open, the restarted hub shows ring {shown}");
        }
        stored
    }

    /// Ring `ring` is open. One of its Kommunen reports `version` deployed, too few for the
    /// gate, and the controller's rounds meanwhile must not open the next ring; then the
    /// others report until each report is acknowledged, the hub is killed as `kill` says,
    /// and the controller must open ring `ring + 1`, and no further.
    async fn open_next_ring(&mut self, version: &str, ring: usize, mut kill: Option<Kill>) {
        let (first, rest) = RINGS[ring].1.split_at(MIN_HEALTHY as usize - 1);
        let acked = join_reports(send_reports(&self.hub, &mut self.t, version, first), &mut self.t).await;
        assert_eq!(acked.len(), first.len(), "{version}: the running hub did not acknowledge the reports of {first:?}");
        tokio::time::sleep(ms(self.rng.range(0, PARTIAL_MS + 1))).await;
        let mut client = RolloutServiceClient::new(self.hub.channel(&land()).await);
        let shown = rollout_status(&mut client, version).await.open_ring as usize;
        assert_eq!(shown, ring, "{version}: ring {shown} is open with only {first:?} of ring {ring} deployed");

        let mut pending: Vec<&'static str> = rest.to_vec();
        while !pending.is_empty() {
            let reports = send_reports(&self.hub, &mut self.t, version, &pending);
            let during = kill == Some(Kill::DuringReports);
            if during {
                tokio::time::sleep(ms(self.rng.range(0, 15))).await;
                self.hub.kill();
            }
            let acked = join_reports(reports, &mut self.t).await;
            pending.retain(|a| !acked.contains(*a));
            if during {
                kill = None;
                self.f.during_reports += 1;
                self.check_and_restart().await;
                // The restarted controller judges the ring from the stored records first.
                tokio::time::sleep(ms(self.rng.range(0, PARTIAL_MS + 1))).await;
            } else {
                assert!(
                    pending.is_empty(),
                    "{version}: the running hub did not acknowledge the reports of {pending:?}"
                );
            }
        }
        match kill {
            Some(Kill::AfterReports) => {
                tokio::time::sleep(ms(self.rng.range(0, AFTER_REPORTS_MS + 1))).await;
                self.hub.kill();
                let stored = self.check_and_restart().await;
                if stored.get(version).is_some_and(|&open| open > ring) {
                    self.f.after_reports_opened += 1;
                } else {
                    self.f.after_reports_not_yet += 1;
                }
            }
            Some(Kill::WhenOpen) => {
                let mut client = RolloutServiceClient::new(self.hub.channel(&land()).await);
                let deadline = Instant::now() + OPEN_TIMEOUT;
                while (rollout_status(&mut client, version).await.open_ring as usize) <= ring {
                    assert!(
                        Instant::now() < deadline,
                        "{version}: ring {} did not open after ring {ring} passed",
                        ring + 1
                    );
                }
                self.hub.kill();
                let stored = self.check_and_restart().await;
                if stored.get(version).is_some_and(|&open| open > ring) {
                    self.f.when_open_durable += 1;
                } else {
                    self.f.when_open_lost += 1;
                }
            }
            _ => {}
        }

        let client = RolloutServiceClient::new(self.hub.channel(&land()).await);
        let what = format!("{version}: ring {} opens after ring {ring} passed", ring + 1);
        let status = wait_for(OPEN_TIMEOUT, &what, || {
            let mut client = client.clone();
            async move { Some(rollout_status(&mut client, version).await).filter(|s| s.open_ring as usize > ring) }
        })
        .await;
        assert_eq!(
            status.open_ring as usize,
            ring + 1,
            "{version}: ring {} is open though ring {}'s Kommunen have not reported: a ring was skipped",
            status.open_ring,
            ring + 1
        );
        let state = if ring + 1 == LAST { "complete" } else { "running" };
        assert_eq!(status.state, state, "{version}: state with ring {} of {LAST} open", ring + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_controller_opens_rings_opens_none_twice_and_skips_none() {
    let started = Instant::now();
    let kills = cycles(9, 90);
    // Six steps per release (its publish and five ring openings), about four of them killed.
    let releases = kills.div_ceil(4).max(1);
    let mut rng = Rng::from_env("rollout");
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    hub.with_config(&format!("rollout_round_ms = {ROUND_MS}"));
    hub.start().await;
    hub.register_service().await;
    let members = check_register(&hub).await;
    let key = SigningKey::generate();
    let schedule = schedule(kills, releases, &mut rng);
    let mut run = Run { hub, t: Tracker::default(), f: Figures::default(), rng, plan: plan() };

    for r in 0..releases {
        let version = format!("1.{r}.0");
        let dir = tmp.path().join("bundles").join(&version);
        write_bundle(&dir, &wohngeld_bundle(&version, true, 0, 0));
        publish_dir_with_plan(&run.hub, &key, &version, &dir, Some(run.plan.clone()))
            .await
            .unwrap_or_else(|e| panic!("publish {version}: {e}"));
        run.t.releases.push(version.clone());
        if schedule.contains_key(&(r, 0)) {
            tokio::time::sleep(ms(run.rng.range(0, AFTER_REPORTS_MS + 1))).await;
            run.hub.kill();
            run.f.after_publish += 1;
            let stored = run.check_and_restart().await;
            assert_eq!(stored.get(&version), Some(&0), "{version}: published with its plan, only the first ring open");
        }
        for ring in 0..LAST {
            run.open_next_ring(&version, ring, schedule.get(&(r, ring + 1)).copied()).await;
        }
    }
    let Run { mut hub, t, mut f, plan, .. } = run;
    let injected = hub.kills;
    assert_eq!(injected, schedule.len(), "every scheduled kill happened");

    // The end: the store as a last kill leaves it, then the restarted hub's view.
    hub.kill();
    check_store(&hub, &t, &mut f, &plan, true);
    assert_eq!(f.rings_opened, releases * LAST, "rings opened in the log");
    hub.start().await;
    let mut client = RolloutServiceClient::new(hub.channel(&land()).await);
    for version in &t.releases {
        let s = rollout_status(&mut client, version).await;
        assert_eq!((s.state.as_str(), s.open_ring as usize), ("complete", LAST), "{version} after the final restart");
    }
    hub.kill();
    eprintln!(
        "fault rollout: hub crashes injected {injected} ({} after a publish; after the reports {} with the next ring \
         stored open, {} before; {} the moment it showed open, of which {} before its flush; {} with reports in flight); \
         releases {releases} x {} rings of {members} Kommunen, rings opened {} (each once, in order, none skipped, none \
         early); reports acked {} (stored {}, lost 0); store checks {}, events checked {} (log gapless 1..={}); {:.1?}",
        f.after_publish,
        f.after_reports_opened,
        f.after_reports_not_yet,
        f.when_open_durable + f.when_open_lost,
        f.when_open_lost,
        f.during_reports,
        LAST + 1,
        f.rings_opened,
        t.reports_acked.len(),
        f.reports_stored,
        f.store_checks,
        f.events_checked,
        f.head,
        started.elapsed()
    );
}
