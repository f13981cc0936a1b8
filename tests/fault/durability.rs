//! Guarantee 1: the hub acknowledges a publish, an adoption report or a rating only once it
//! is durable. Writers hammer a real `efa-hub` process over mTLS; the hub is SIGKILLed at
//! a random moment; then the sled store is opened as the crashed hub left it, and once
//! more through the restarted hub's RPCs, and every acknowledged write must be there, the
//! event log gapless, the log and the data in agreement, and every release's blobs stored.

use crate::harness::*;
use efa_domain::bundle::{BundleLimits, Digest, Manifest};
use efa_domain::model::event::EventKind;
use efa_domain::signing::SigningKey;
use efa_proto::v1 as pb;
use efa_registry::store::{SledStore, Store};
use efa_tests::{ReleaseServiceClient, ReportServiceClient, DORTMUND, ESSEN};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPORTERS: [&str; 2] = [DORTMUND, ESSEN];
/// No single RPC may hang a writer; a dead hub fails calls much sooner.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What the writers tried and what the hub acknowledged, over all cycles.
#[derive(Default)]
struct Tracker {
    op: u64,
    /// Acknowledged publishes: version -> digests of its files, in ack order.
    releases_acked: BTreeMap<String, Vec<Digest>>,
    release_order: Vec<String>,
    releases_tried: BTreeSet<String>,
    /// Acknowledged adoption reports: reason (unique) -> AGS.
    reports_acked: BTreeMap<String, String>,
    reports_tried: BTreeSet<String>,
    /// Ratings: (AGS, version) -> op number of the last acknowledged / the highest tried.
    ratings_acked: BTreeMap<(String, String), u64>,
    ratings_tried: BTreeMap<(String, String), u64>,
    /// Every acknowledged rating comment (each must be in the event log, even if replaced).
    rating_comments_acked: BTreeSet<String>,
}

impl Tracker {
    fn next_op(&mut self) -> u64 {
        self.op += 1;
        self.op
    }
}

type Shared = Arc<Mutex<Tracker>>;

fn op_of(text: &str) -> u64 {
    text.rsplit('#').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[derive(Default)]
struct Figures {
    crashes: usize,
    events_checked: usize,
    blobs_checked: usize,
    committed_in_flight: usize,
    head: u64,
}

async fn publisher(
    ch: tonic::transport::Channel,
    key: SigningKey,
    bundles: PathBuf,
    cycle: usize,
    seed: u64,
    tracker: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let version = format!("1.{cycle}.{n}");
        // Sizes vary so that some kills land in the middle of an upload.
        let files = wohngeld_bundle(&version, true, 1, rng.range(1_000, 400_000) as usize);
        let dir = bundles.join(&version);
        write_bundle(&dir, &files);
        let digests = files.values().map(|b| Digest::of(b)).collect();
        tracker.lock().unwrap().releases_tried.insert(version.clone());
        let acked = tokio::time::timeout(CALL_TIMEOUT, publish(ch.clone(), &key, &version, &dir)).await;
        let _ = std::fs::remove_dir_all(&dir);
        match acked {
            Ok(Ok(info)) => {
                assert_eq!(info.version, version);
                let mut t = tracker.lock().unwrap();
                t.releases_acked.insert(version.clone(), digests);
                t.release_order.push(version);
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn reporter(ags: &'static str, ch: tonic::transport::Channel, seed: u64, tracker: Shared, stop: Arc<AtomicBool>) {
    let mut client = efa_tests::AdoptionServiceClient::new(ch);
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let picked = {
            let mut t = tracker.lock().unwrap();
            let recent = &t.release_order[t.release_order.len().saturating_sub(3)..];
            if recent.is_empty() {
                None
            } else {
                let version = recent[rng.range(0, recent.len() as u64) as usize].clone();
                Some((version, t.next_op()))
            }
        };
        let Some((version, op)) = picked else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let reason = format!("fault report {ags} #{op}");
        tracker.lock().unwrap().reports_tried.insert(reason.clone());
        let report = pb::AdoptionReport {
            service_id: SERVICE.into(),
            version: version.clone(),
            state: pb::AdoptionState::Evaluating as i32,
            reason: reason.clone(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.report_adoption(report)).await {
            Ok(Ok(_)) => {
                tracker.lock().unwrap().reports_acked.insert(reason, ags.to_string());
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        // Having evaluated the version, the Kommune may rate it; each rating replaces the last.
        let comment = format!("fault rating {ags} #{op}");
        let key = (ags.to_string(), version.clone());
        {
            let mut t = tracker.lock().unwrap();
            let tried = t.ratings_tried.entry(key.clone()).or_default();
            *tried = (*tried).max(op);
        }
        let rating = pb::RatingRequest {
            service_id: SERVICE.into(),
            version,
            stars: 1 + (op % 5) as u32,
            criteria: vec![pb::CriterionScore { criterion: pb::Criterion::Payment as i32, score: 1 + (op % 3) as u32 }],
            comment: comment.clone(),
            met: vec![pb::CriterionMet { criterion: pb::Criterion::Design as i32, met: op % 2 == 0 }],
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.submit_rating(rating)).await {
            Ok(Ok(_)) => {
                let mut t = tracker.lock().unwrap();
                t.ratings_acked.insert(key, op);
                t.rating_comments_acked.insert(comment);
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What the store holds, read in-process from the crashed hub's data dir.
struct Stored {
    head: u64,
    releases: BTreeSet<String>,
    /// AGS -> reasons of its ledger entries, oldest first.
    history: BTreeMap<String, Vec<String>>,
    /// (AGS, version) -> comment of the stored rating.
    ratings: BTreeMap<(String, String), String>,
}

/// Opens the sled store exactly as SIGKILL left it and checks the log and the data.
fn check_store(hub: &HubProc, t: &Tracker, figures: &mut Figures) -> Stored {
    let store = SledStore::open(&hub.data_dir.join("db")).expect("the crashed hub's store opens");
    let head = store.head_seq().unwrap();
    let events = store.events_after(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert!(seqs == expected, "event log is not gapless 1..={head}: {} events, first gaps at {:?}", seqs.len(), {
        seqs.windows(2).filter(|w| w[1] != w[0] + 1).take(5).collect::<Vec<_>>()
    });
    figures.events_checked += events.len();

    let service = SERVICE.parse().unwrap();
    let mut logged_releases = BTreeSet::new();
    let mut logged_history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut logged_ratings: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut logged_comments = BTreeSet::new();
    for e in &events {
        match &e.kind {
            EventKind::ReleasePublished { version, .. } => {
                assert!(logged_releases.insert(version.to_string()), "release {version} logged twice");
            }
            EventKind::AdoptionReported(entry) => {
                logged_history.entry(entry.ags.to_string()).or_default().push(entry.reason.clone())
            }
            EventKind::Rated(r) => {
                logged_ratings.insert((r.ags.to_string(), r.version.to_string()), r.comment.clone());
                logged_comments.insert(r.comment.clone());
            }
            _ => {}
        }
    }

    // The log and the data agree (same transaction).
    let releases = store.releases(&service).unwrap();
    let stored_releases: BTreeSet<String> = releases.iter().map(|r| r.version.to_string()).collect();
    assert_eq!(stored_releases, logged_releases, "releases in the data differ from ReleasePublished events");
    let mut history = BTreeMap::new();
    for ags in REPORTERS {
        let reasons: Vec<String> =
            store.history_of(&ags.parse().unwrap()).unwrap().into_iter().map(|e| e.reason).collect();
        assert_eq!(
            Some(&reasons),
            logged_history.get(ags).or(Some(&Vec::new())),
            "ledger of {ags} differs from its AdoptionReported events"
        );
        history.insert(ags.to_string(), reasons);
    }
    let ratings: BTreeMap<(String, String), String> = store
        .ratings(&service)
        .unwrap()
        .into_iter()
        .map(|r| ((r.ags.to_string(), r.version.to_string()), r.comment))
        .collect();
    assert_eq!(ratings, logged_ratings, "stored ratings differ from the newest Rated event per key");

    // A committed release has all its blobs stored under their digests, or sealed for it in
    // a staged upload (killed between commit and promotion), which the next start promotes.
    let blobs = hub.data_dir.join("blobs");
    let sealed_for = |release: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(blobs.join("staged"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|d| std::fs::read_to_string(d.join("release")).is_ok_and(|r| r == release))
            .collect()
    };
    for r in &releases {
        let manifest = Manifest::from_bytes(&r.manifest, &BundleLimits::default()).expect("stored manifest parses");
        let staged = sealed_for(&format!("{SERVICE} {}", r.version));
        // Large files are stored as their content-defined chunks.
        for (f, part) in manifest.files.iter().flat_map(|f| f.parts().into_iter().map(move |p| (f, p))) {
            let hex = part.digest.hex();
            let stored = blobs.join(&hex[..2]).join(&hex);
            // Small files are committed with the release, in the store.
            if let Some(bytes) = store.inline_blob(&part.digest).expect("store reads") {
                assert_eq!(Digest::of(&bytes), part.digest, "release {} file {}", r.version, f.path.as_str());
                figures.blobs_checked += 1;
                continue;
            }
            let path = std::iter::once(stored.clone())
                .chain(staged.iter().map(|d| d.join(&hex)))
                .find(|p| p.is_file())
                .unwrap_or(stored);
            assert_eq!(
                digest_of_file(&path),
                Some(part.digest),
                "release {} file {} is committed but its blob {} is missing or damaged",
                r.version,
                f.path.as_str(),
                path.display()
            );
            figures.blobs_checked += 1;
        }
    }

    // Every acknowledged write is there; nothing is there that was never attempted.
    let lost_releases: Vec<&String> = t.releases_acked.keys().filter(|v| !stored_releases.contains(*v)).collect();
    let mut all_reasons: BTreeMap<&String, usize> = BTreeMap::new();
    for r in history.values().flatten() {
        *all_reasons.entry(r).or_default() += 1;
    }
    let lost_reports: Vec<&String> = t.reports_acked.keys().filter(|r| !all_reasons.contains_key(r)).collect();
    let lost_ratings: Vec<&String> = t.rating_comments_acked.iter().filter(|c| !logged_comments.contains(*c)).collect();
    assert!(
        lost_releases.is_empty() && lost_reports.is_empty() && lost_ratings.is_empty(),
        "acknowledged writes lost after kill -9: releases {lost_releases:?}, reports {lost_reports:?}, ratings {lost_ratings:?}"
    );
    for v in &stored_releases {
        assert!(t.releases_tried.contains(v), "release {v} stored but never published");
    }
    for (r, n) in &all_reasons {
        assert!(t.reports_tried.contains(*r), "report {r:?} stored but never sent");
        assert_eq!(*n, 1, "report {r:?} stored {n} times");
    }
    for (key, comment) in &ratings {
        let (stored, acked, tried) = (op_of(comment), t.ratings_acked.get(key), t.ratings_tried.get(key));
        assert!(
            acked.is_none_or(|a| stored >= *a) && tried.is_some_and(|t| stored <= *t),
            "rating {key:?} holds op {stored}, but op {acked:?} was acknowledged last (highest tried {tried:?})"
        );
    }
    figures.committed_in_flight =
        stored_releases.len() - t.releases_acked.len() + all_reasons.len() - t.reports_acked.len();
    Stored { head, releases: stored_releases, history, ratings }
}

/// The restarted hub serves exactly what the store held.
async fn check_through_rpcs(hub: &HubProc, stored: &Stored) {
    let releases: BTreeSet<String> = ReleaseServiceClient::new(hub.channel(&land()).await)
        .list_releases(pb::ListReleasesRequest { service_id: SERVICE.into(), channel: String::new() })
        .await
        .expect("list releases")
        .into_inner()
        .releases
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(releases, stored.releases, "ListReleases after restart");
    for ags in REPORTERS {
        let reasons: Vec<String> = hub.history(ags).await.into_iter().map(|h| h.reason).collect();
        assert_eq!(Some(&reasons), stored.history.get(ags), "KommuneHistory of {ags} after restart");
    }
    let feedback = ReportServiceClient::new(hub.channel(&operator()).await)
        .feedback(pb::FeedbackRequest { service_id: SERVICE.into(), land_code: String::new() })
        .await
        .expect("feedback")
        .into_inner();
    let ratings: BTreeMap<(String, String), String> =
        feedback.ratings.into_iter().map(|r| ((r.ags, r.version), r.comment)).collect();
    assert_eq!(ratings, stored.ratings, "Feedback ratings after restart");

    // A subscribed Kommune replays the log from 0: every release once, in seq order, and
    // the head it is told is the store's head. Resuming from the middle gives the suffix.
    let (events, head) = hub.watch_releases(DORTMUND, 0).await;
    assert_eq!(head, stored.head, "CaughtUp head after restart");
    assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "WatchEvents seqs not increasing");
    let versions: Vec<String> = events.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(versions.len(), stored.releases.len(), "WatchEvents delivers each release once");
    assert_eq!(versions.iter().cloned().collect::<BTreeSet<_>>(), stored.releases);
    if let Some(&(mid, _)) = events.get(events.len() / 2) {
        let (suffix, _) = hub.watch_releases(DORTMUND, mid).await;
        let expected: Vec<(u64, String)> = events.iter().filter(|(s, _)| *s > mid).cloned().collect();
        assert_eq!(suffix, expected, "WatchEvents(after_seq={mid}) is not the suffix of the log");
    }

    // After the restart every committed release's content is served (uploads the crash left
    // sealed were promoted), and no staged upload of a committed release is left.
    let mut client = ReleaseServiceClient::new(hub.channel(&kommune(DORTMUND)).await);
    for version in &stored.releases {
        let detail = client
            .get_release(pb::GetReleaseRequest { service_id: SERVICE.into(), version: version.clone() })
            .await
            .expect("committed release")
            .into_inner();
        let manifest = Manifest::from_bytes(&detail.manifest, &BundleLimits::default()).unwrap();
        for f in &manifest.files {
            let mut stream = client
                .fetch_blob(pb::FetchBlobRequest { digest: f.digest.to_string(), offset: 0 })
                .await
                .unwrap_or_else(|s| panic!("{version} {}: {s:?}", f.path.as_str()))
                .into_inner();
            let mut got = 0u64;
            while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
                got += chunk.expect("blob chunk").data.len() as u64;
            }
            assert_eq!(got, f.size, "{version} {} served whole after the restart", f.path.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_hub() {
    let started = Instant::now();
    let cycles = cycles(5, 60);
    let mut rng = Rng::from_env("durability");
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    for ags in REPORTERS {
        hub.subscribe(ags).await;
    }
    let key = SigningKey::generate();
    let tracker: Shared = Arc::default();
    let mut figures = Figures::default();

    for cycle in 0..cycles {
        // Mixed cycles test concurrent commits and flushes; in the others one kind of write
        // runs alone, so no other writer's flush can make up for a missing one.
        let (publishing, reporting) = match cycle % 3 {
            0 => (true, true),
            1 => (true, false),
            _ => (false, true),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        if publishing {
            writers.push(tokio::spawn(publisher(
                hub.lazy_channel(&land()),
                SigningKey::from_text(&key.to_text()).unwrap(),
                tmp.path().join("bundles"),
                cycle,
                rng.next_u64(),
                tracker.clone(),
                stop.clone(),
            )));
        }
        for ags in REPORTERS.iter().filter(|_| reporting) {
            let ch = hub.lazy_channel(&kommune(ags));
            writers.push(tokio::spawn(reporter(ags, ch, rng.next_u64(), tracker.clone(), stop.clone())));
        }
        // Let the writers run, then pull the plug at a random moment.
        let first_cycle_extra = if cycle == 0 { 300 } else { 0 };
        let delay = rng.range(150, if soak() { 1500 } else { 900 }) + first_cycle_extra;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        hub.kill();
        figures.crashes += 1;
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(60), w).await.expect("writer stops").expect("writer task");
        }

        let stored = {
            let t = tracker.lock().unwrap();
            check_store(&hub, &t, &mut figures)
        };
        figures.head = stored.head;
        hub.start().await;
        check_through_rpcs(&hub, &stored).await;
    }

    let t = tracker.lock().unwrap();
    let acked = t.releases_acked.len() + t.reports_acked.len() + t.rating_comments_acked.len();
    assert!(t.releases_acked.len() >= cycles, "too few publishes acknowledged to prove anything");
    assert!(!t.reports_acked.is_empty() && !t.rating_comments_acked.is_empty(), "no reports or ratings acknowledged");
    eprintln!(
        "fault durability: crashes injected {}, writes acked {acked} (publishes {}, reports {}, ratings {}), \
         found {acked}, lost 0; in flight at a crash yet committed {}; events checked {} (log gapless 1..={}), \
         blobs checked {}; {:.1?}",
        figures.crashes,
        t.releases_acked.len(),
        t.reports_acked.len(),
        t.rating_comments_acked.len(),
        figures.committed_in_flight,
        figures.events_checked,
        figures.head,
        figures.blobs_checked,
        started.elapsed()
    );
}
