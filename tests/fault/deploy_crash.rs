//! Guarantee 2: a deploy is crash-safe. `efa-node run` (auto policy, a health command that
//! takes a while) is SIGKILLed at random points of download, unpack, switch and health
//! check. After every kill `deploy_dir/<service>/current` must point at a complete version
//! (every manifest file with the right content, templates rendered with the Kommune's
//! parameters) that is the previous or the new one, never lower than before; after a
//! restart the node must finish the work: the newest version serves, the hub is told, and
//! no scratch entries remain.

use crate::harness::*;
use efa_domain::signing::SigningKey;
use efa_proto::v1 as pb;
use efa_tests::{ReportServiceClient, DORTMUND};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Seconds the health command sleeps: the window in which a kill leaves the new version
/// switched in but not yet confirmed.
const HEALTH_SECS: &str = "0.4";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// While a blob is being downloaded into the cache (`partial/` not empty).
    Download,
    /// While the release is staged (`.staging-*` exists).
    Unpack,
    /// After `current` switched to the new version, before the health command started.
    Switched,
    /// While the health command runs (its marker exists), at a random point of it.
    Health,
    /// A random time after the node started.
    Timer,
}

const PHASES: [Phase; 5] = [Phase::Download, Phase::Unpack, Phase::Switched, Phase::Health, Phase::Timer];

fn health_command(markers: &Path, extra: &str) -> String {
    format!(
        "touch '{}'/health-\"$EFA_VERSION\" && sleep {HEALTH_SECS} && test -s config/payment.toml{extra}",
        markers.display()
    )
}

fn clear_markers(markers: &Path) {
    let _ = std::fs::remove_dir_all(markers);
    std::fs::create_dir_all(markers).unwrap();
}

/// The hub's current adoption record of `ags` for the service.
async fn adoption(reports: &mut ReportServiceClient<Channel>, ags: &str) -> Option<pb::AdoptionRecord> {
    reports
        .service_adopters(pb::ServiceAdoptersRequest { service_id: SERVICE.into() })
        .await
        .ok()?
        .into_inner()
        .adopters
        .into_iter()
        .find(|a| a.ags == ags)
}

fn deployed_as(r: &Option<pb::AdoptionRecord>, version: &str) -> bool {
    r.as_ref().is_some_and(|r| r.running_version == version && r.state == pb::AdoptionState::Deployed as i32)
}

fn partial_downloads(node: &NodeProc) -> usize {
    std::fs::read_dir(node.state_dir.join("blobs/partial")).map(|d| d.count()).unwrap_or(0)
}

/// Checks what a kill left: `current` names a published version whose directory is
/// complete, and is not below the version the node last reported deployed (a version whose
/// health check never finished may be rolled back; a confirmed one never is). Returns it.
fn check_current(
    node: &NodeProc,
    expected: &BTreeMap<semver::Version, Files>,
    confirmed: Option<&semver::Version>,
    context: &str,
) -> Option<semver::Version> {
    let Some(target) = node.current() else {
        assert!(confirmed.is_none(), "{context}: `current` vanished, though {confirmed:?} was deployed");
        return None;
    };
    let version: semver::Version =
        target.parse().unwrap_or_else(|_| panic!("{context}: `current` points at {target:?}, not at a version dir"));
    let files =
        expected.get(&version).unwrap_or_else(|| panic!("{context}: `current` names unknown version {version}"));
    if let Err(e) = check_deployed(&node.service_dir().join("current"), &target, files) {
        panic!("{context}: `current` -> {target} is not a complete deploy: {e}");
    }
    if let Some(confirmed) = confirmed {
        assert!(&version >= confirmed, "{context}: `current` is {version}, below the deployed {confirmed}");
    }
    Some(version)
}

/// The version the hub last heard the Kommune deployed.
async fn confirmed(reports: &mut ReportServiceClient<Channel>, ags: &str) -> Option<semver::Version> {
    adoption(reports, ags).await.and_then(|r| r.running_version.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_anywhere_in_a_deploy_never_serves_a_half_version() {
    let started = Instant::now();
    let rounds = cycles(8, 60);
    let mut rng = Rng::from_env("deploy_crash");
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    let key = SigningKey::generate();
    let markers = tmp.path().join("markers");
    clear_markers(&markers);
    let health = health_command(&markers, " && grep -q healthy status.txt");
    let mut node =
        NodeProc::new(&hub, &tmp.path().join("node"), DORTMUND, &key.verifying_key().to_text(), Some(&health));
    let mut reports = ReportServiceClient::new(hub.channel(&operator()).await);

    let mut expected: BTreeMap<semver::Version, Files> = BTreeMap::new();
    let mut serving: Option<semver::Version> = None;
    let mut kills: BTreeMap<Phase, usize> = BTreeMap::new();
    let (mut missed, mut checks, mut files_checked) = (0, 0, 0);
    let mut next_minor = 0;

    for round in 0..rounds {
        let last = round + 1 == rounds;
        // A new release, unless the last kill left the newest one unfinished and it is
        // worth killing the node again while it redoes that work.
        let newest = expected.keys().next_back().cloned();
        let unfinished = newest.is_some() && serving != newest;
        if !unfinished || last || rng.chance(60) {
            let version = format!("1.{next_minor}.0");
            next_minor += 1;
            let files = wohngeld_bundle(&version, true, 8, 192 * 1024);
            let dir = tmp.path().join("bundles").join(&version);
            write_bundle(&dir, &files);
            publish_dir(&hub, &key, &version, &dir).await.expect("publish");
            expected.insert(version.parse().unwrap(), rendered(&files, &node_params()));
        }
        let target = expected.keys().next_back().unwrap().to_string();
        // The last kill always hits the health check of the newest release: the restart
        // after it must still finish that deploy.
        let phase = if last { Phase::Health } else { PHASES[rng.range(0, PHASES.len() as u64) as usize] };
        let timer = Duration::from_millis(rng.range(0, 2500));
        let health_delay = Duration::from_millis(rng.range(0, 350));

        clear_markers(&markers);
        let child = node.spawn("run");
        let spawned = Instant::now();
        let marker = markers.join(format!("health-{target}"));
        let mut hub_checked = Instant::now();
        let hit = loop {
            let hit = match phase {
                Phase::Download => partial_downloads(&node) > 0,
                Phase::Unpack => node.leftovers().iter().any(|n| n.starts_with(".staging-")),
                Phase::Switched => node.current().as_deref() == Some(&target) && !marker.exists(),
                Phase::Health => {
                    if marker.exists() {
                        tokio::time::sleep(health_delay).await;
                        true
                    } else {
                        false
                    }
                }
                Phase::Timer => spawned.elapsed() >= timer,
            };
            if hit {
                break true;
            }
            if hub_checked.elapsed() > Duration::from_millis(100) {
                hub_checked = Instant::now();
                if deployed_as(&adoption(&mut reports, DORTMUND).await, &target) {
                    break false; // the node finished before the phase was seen
                }
            }
            assert!(spawned.elapsed() < Duration::from_secs(60), "round {round}: no progress towards {target}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        child.kill();
        if hit {
            *kills.entry(phase).or_default() += 1;
        } else {
            missed += 1;
        }
        let context = format!("round {round} (kill in {phase:?} of {target}, hit: {hit})");
        let deployed = confirmed(&mut reports, DORTMUND).await;
        serving = check_current(&node, &expected, deployed.as_ref(), &context);
        if let Some(v) = &serving {
            files_checked += expected[v].len();
        }
        checks += 1;
    }

    // Restart: the node recovers and finishes the newest deploy.
    let newest = expected.keys().next_back().unwrap().to_string();
    let child = node.spawn("run");
    wait_for(Duration::from_secs(60), "`current` reaches the newest version", || async {
        (node.current().as_deref() == Some(newest.as_str())).then_some(())
    })
    .await;
    // The hub must learn the outcome of the deploy that the last kill interrupted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut record = None;
    while Instant::now() < deadline {
        record = adoption(&mut reports, DORTMUND).await;
        if deployed_as(&record, &newest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Recovery cleaned up after every interrupted deploy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.leftovers().is_empty() {
        assert!(Instant::now() < deadline, "scratch entries left after recovery: {:?}", node.leftovers());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Downloads cut short by a kill, of releases superseded before they were resumed.
    let stale_partials = partial_downloads(&node);
    let deployed = confirmed(&mut reports, DORTMUND).await;
    check_current(&node, &expected, deployed.as_ref(), "after restart");
    checks += 1;
    child.kill();

    let killed: usize = kills.values().sum();
    eprintln!(
        "fault deploy_crash: node kills injected {killed} {kills:?}, rounds where the node finished first {missed}, \
         releases {}, `current` checks {checks} ({files_checked} files compared), half states 0, leftovers 0, \
         stale partial downloads {stale_partials}, hub told the newest is deployed: {}; {:.1?}",
        expected.len(),
        deployed_as(&record, &newest),
        started.elapsed()
    );
    assert!(
        deployed_as(&record, &newest),
        "after the restart `current` is {newest}, but the hub never heard it was deployed (record: {:?}); the last \
         kill hit the health check of {newest}: the restarted node must finish that check and report the outcome",
        record.map(|r| (r.version, r.state, r.running_version))
    );
}

/// A kill during the health check must not turn an unhealthy release into the served
/// one: after the restart the node must still reach the verdict and roll back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_check_still_rolls_back_after_a_kill_during_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    let key = SigningKey::generate();
    let markers = tmp.path().join("markers");
    clear_markers(&markers);
    let health = health_command(&markers, " && grep -q healthy status.txt");
    let mut node =
        NodeProc::new(&hub, &tmp.path().join("node"), DORTMUND, &key.verifying_key().to_text(), Some(&health));
    let mut reports = ReportServiceClient::new(hub.channel(&operator()).await);

    let mut expected = BTreeMap::new();
    for (version, healthy) in [("1.0.0", true), ("1.1.0", false)] {
        let files = wohngeld_bundle(version, healthy, 1, 1024);
        let dir = tmp.path().join("bundles").join(version);
        write_bundle(&dir, &files);
        expected.insert(version.parse::<semver::Version>().unwrap(), rendered(&files, &node_params()));
        if version == "1.0.0" {
            publish_dir(&hub, &key, version, &dir).await.expect("publish 1.0.0");
            node.sync().await;
            assert_eq!(node.current().as_deref(), Some("1.0.0"));
        } else {
            publish_dir(&hub, &key, version, &dir).await.expect("publish 1.1.0");
        }
    }

    // 1.1.0 is switched in and its (failing) health check runs: kill the node right then.
    let child = node.spawn("run");
    let marker = markers.join("health-1.1.0");
    wait_for(Duration::from_secs(60), "the health check of 1.1.0 starts", || async { marker.exists().then_some(()) })
        .await;
    child.kill();
    let at_kill = node.current();

    // After a restart the node must come to the verdict: 1.1.0 is unhealthy, 1.0.0 serves.
    let child = node.spawn("run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut record = None;
    while Instant::now() < deadline {
        record = adoption(&mut reports, DORTMUND).await;
        if node.current().as_deref() == Some("1.0.0")
            && record.as_ref().is_some_and(|r| r.state == pb::AdoptionState::RolledBack as i32)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill();
    assert_eq!(
        node.current().as_deref(),
        Some("1.0.0"),
        "killed during the failing health check of 1.1.0 (`current` was {at_kill:?} at the kill), the restarted node \
         keeps serving the unhealthy 1.1.0 and never rolls back; hub record: {:?}",
        record.map(|r| (r.version, r.state, r.running_version))
    );
    check_current(&node, &expected, None, "after the restart");
    eprintln!("fault deploy_crash/health: node kills injected 1 (during a failing health check), rolled back: yes");
}
