//! Guarantee 7: the transparency log survives SIGKILL. A real `efa-hub` signs a checkpoint
//! every 50 ms (`checkpoint_ms = 50`) while Kommunen of NRW send adoption reports over mTLS
//! without pause; the hub is SIGKILLed at random moments: in the middle of a burst, right
//! after an acknowledgement (before, during or after the integrator's round), the moment a
//! new checkpoint is served (its flush may not have finished), and while a restarted hub
//! starts and catches up on what the crash left unlogged. An observer keeps every
//! checkpoint it ever fetched, opened with the log's verifier key. After every kill and
//! restart, and at the end:
//!
//! - every checkpoint ever served is consistent with every later one (a consistency proof
//!   from the restarted hub verifies, a tree served later is never smaller, and one size
//!   never has two roots): a crash never makes the hub sign a different history;
//! - the store as the crash left it holds one leaf per event, in seq order (leaf `i` is
//!   event `i + 1`, of the same kind and content); the stored hashes give the roots that
//!   re-deriving the tree from the leaves gives, and those of every checkpoint served; the
//!   newest stored checkpoint is signed over a tree the store holds;
//! - at the end the newest checkpoint covers every event, and every acknowledged report
//!   (`AdoptionRecord.event_seq`) is its leaf, with an inclusion proof, and the text beside
//!   it opens its commitment.

use crate::harness::*;
use efa_domain::model::event::EventKind;
use efa_proto::convert::WireEnum;
use efa_proto::v1 as pb;
use efa_proto::v1::log_service_client::LogServiceClient;
use efa_registry::store::{LogStore, SledStore, Store};
use efa_tests::AdoptionServiceClient;
use efa_tlog::checkpoint::{Checkpoint, Trust};
use efa_tlog::tree::{check_consistency, check_inclusion, leaf_hash, Frontier};
use efa_tlog::{Hash, HashReader};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// The reporting Kommunen: Gemeinden of NRW (GV100AD; the same as in `rollout`'s rings).
const WRITERS: [&str; 5] = [
    "05913000", // Dortmund
    "05113000", // Essen
    "05315000", // Köln
    "05515000", // Münster
    "05711000", // Bielefeld
];
/// Releases the reports refer to.
const VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// The hub's checkpoint interval (`checkpoint_ms`); a report wakes the integrator earlier,
/// after letting a burst gather for as long again.
const CHECKPOINT_MS: u64 = 50;
/// No single RPC may hang the test; a dead hub fails calls much sooner.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the restarted hub may take to sign a checkpoint of every event at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Where a kill lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// At a random moment while the writers send their bursts.
    Burst,
    /// 0–150 ms after a report was acknowledged: before the integrator's round (which a
    /// report wakes, and which lets the burst gather for one interval first), during it or
    /// just after it.
    AfterAck,
    /// The moment the observer fetched a checkpoint of a new size: it is stored, and its
    /// flush may not have finished.
    WhenSigned,
    /// While a restarted hub opens its store and catches up on the events the crash before
    /// left unlogged (the dead process's lease on the integrator runs out first).
    Starting,
}

const KINDS: [Kill; 4] = [Kill::Burst, Kill::AfterAck, Kill::WhenSigned, Kill::Starting];

/// An acknowledged report: the seq the hub gave it and what was sent.
#[derive(Clone, Debug)]
struct Acked {
    seq: u64,
    ags: &'static str,
    version: &'static str,
    state: pb::AdoptionState,
    reason: String,
}

/// What the writers had acknowledged, and a counter main waits on.
struct Writes {
    acked: Mutex<Vec<Acked>>,
    acks: watch::Sender<u64>,
    sent: AtomicU64,
    failed: AtomicU64,
}

/// Every checkpoint the observer (and the checks after a restart) ever fetched.
#[derive(Default)]
struct Seen {
    /// Size -> root of every checkpoint served.
    roots: BTreeMap<u64, Hash>,
    /// Sizes kept since the last check against a newer checkpoint.
    fresh: BTreeSet<u64>,
    fetches: u64,
    /// (end of a fetch, largest size served up to then), in order of the fetches' ends.
    served: Vec<(Instant, u64)>,
    /// What contradicts what was served before: a split view, a smaller tree, a bad note.
    problems: Vec<String>,
}

impl Seen {
    /// Keeps a checkpoint whose fetch started at `started` and just ended.
    fn keep(&mut self, started: Instant, cp: &Checkpoint, who: &str) {
        self.fetches += 1;
        // Fetches that ended before this one started were served before it.
        let before = self.served.partition_point(|(end, _)| *end < started);
        if let Some(&(_, max)) = before.checked_sub(1).and_then(|i| self.served.get(i)) {
            if cp.size < max {
                self.problems.push(format!(
                    "{who}: the hub served a checkpoint of {} leaves after it had served one of {max} (a verifier \
                     sees the log shrink, i.e. truncated or rolled back)",
                    cp.size
                ));
            }
        }
        let max = self.served.last().map_or(cp.size, |&(_, m)| m.max(cp.size));
        self.served.push((Instant::now(), max));
        match self.roots.get(&cp.size) {
            Some(root) if *root != cp.root => self.problems.push(format!(
                "{who}: split view: a checkpoint of {} leaves with root {}, another one earlier with root {root}",
                cp.size, cp.root
            )),
            Some(_) => {}
            None => {
                self.roots.insert(cp.size, cp.root);
                self.fresh.insert(cp.size);
            }
        }
    }

    fn largest(&self) -> u64 {
        self.served.last().map_or(0, |&(_, m)| m)
    }
}

type Shared = Arc<Mutex<Seen>>;

#[derive(Default)]
struct Figures {
    kills: BTreeMap<&'static str, usize>,
    store_checks: usize,
    leaves_checked: usize,
    /// Kills that left events the log had not taken in yet, and how many at most.
    kills_with_backlog: usize,
    max_backlog: u64,
    /// Kills after which the observer had seen a checkpoint newer than the newest stored one.
    served_not_stored: usize,
    consistency_proofs: usize,
    inclusion_proofs: usize,
    texts_opened: usize,
}

/// One leaf's or event's content as the test compares them.
fn adoption_text(ags: &str, service: &str, version: &str, state: i32) -> String {
    format!("adoption {ags} {service} {version} state {state}")
}

fn event_text(kind: &EventKind) -> String {
    match kind {
        EventKind::ServiceRegistered { service_id, land } => format!("service {service_id} {land}"),
        EventKind::ReleasePublished { service_id, version } => format!("release {service_id} {version}"),
        EventKind::ReleaseYanked { service_id, version, .. } => format!("yank {service_id} {version}"),
        EventKind::Subscribed(s) => format!("subscribed {} {}", s.ags, s.target.key()),
        EventKind::Unsubscribed { ags, target } => format!("unsubscribed {ags} {target}"),
        EventKind::AdoptionReported(e) => adoption_text(
            e.ags.as_str(),
            e.service_id.as_str(),
            &e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            e.state.to_wire(),
        ),
        EventKind::Rated(r) => format!("rated {} {} {}", r.ags, r.service_id, r.version),
        EventKind::SigningKeysSet { land, .. } => format!("signing keys {land}"),
        EventKind::Offered { service_id, land, withdrawn } => format!("offer {service_id} {land} {withdrawn}"),
        EventKind::RolloutChanged { service_id, version, .. } => format!("rollout {service_id} {version} "),
        EventKind::LandRolloutChanged { service_id, version, land, .. } => {
            format!("rollout {service_id} {version} {land}")
        }
        EventKind::KeySetPublished { land, .. } => format!("key set {land}"),
    }
}

fn leaf_text(leaf: &pb::LogLeaf) -> String {
    use pb::log_leaf::Kind;
    match &leaf.kind {
        None => "no kind".into(),
        Some(Kind::ServiceRegistered(s)) => format!("service {} {}", s.service_id, s.land_code),
        Some(Kind::ReleasePublished(r)) => format!("release {} {}", r.service_id, r.version),
        Some(Kind::ReleaseYanked(y)) => format!("yank {} {}", y.service_id, y.version),
        Some(Kind::Subscribed(s)) => format!("subscribed {} {}", s.ags, s.target),
        Some(Kind::Unsubscribed(u)) => format!("unsubscribed {} {}", u.ags, u.target),
        Some(Kind::AdoptionReported(a)) => adoption_text(&a.ags, &a.service_id, &a.version, a.state),
        Some(Kind::Rated(r)) => format!("rated {} {} {}", r.ags, r.service_id, r.version),
        Some(Kind::SigningKeysSet(k)) => format!("signing keys {}", k.land_code),
        Some(Kind::Offered(o)) => format!("offer {} {} {}", o.service_id, o.land_code, o.withdrawn),
        Some(Kind::RolloutChanged(r)) => format!("rollout {} {} {}", r.service_id, r.version, r.land_code),
        Some(Kind::KeySetPublished(k)) => format!("key set {}", k.land_code),
    }
}

/// The stored hashes of the crashed hub's store, as `efa_tlog` reads them.
struct StoredHashes<'a>(&'a SledStore);

impl HashReader for StoredHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, efa_tlog::HashReaderError> {
        self.0
            .log_hashes(indexes)
            .map(|hs| hs.into_iter().map(Hash).collect())
            .map_err(|e| efa_tlog::HashReaderError::InvalidInput(e.to_string()))
    }
}

/// What the store held after a kill.
#[derive(Clone, Debug)]
struct Stored {
    log_size: u64,
    head: u64,
    checkpoint: Option<u64>,
}

/// Opens the sled store exactly as SIGKILL left it and checks the log against the events,
/// itself and every checkpoint served. At the end (`acked`), also every acknowledged report's
/// leaf and the text beside it.
fn check_store(hub: &HubProc, trust: &Trust, seen: &Seen, f: &mut Figures, acked: Option<&[Acked]>) -> Stored {
    let store = SledStore::open(&hub.data_dir.join("db")).expect("the crashed hub's store opens");
    let head = store.head_seq().unwrap();
    let events = store.events_after(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs == (1..=head).collect::<Vec<_>>(), "event log is not gapless 1..={head}");
    let size = store.log_size().unwrap();
    assert!(size <= head, "the log holds {size} leaves but there are only {head} events");
    let leaves = store.log_leaves(0, size).unwrap();
    assert_eq!(leaves.len() as u64, size, "leaves stored for a log of {size}");

    // Leaf i is event i + 1, as the hub encoded it; re-derive the tree from the leaves.
    let mut tree = Frontier::new();
    let mut roots = vec![tree.root()];
    for (i, (bytes, event)) in leaves.iter().zip(&events).enumerate() {
        let leaf = pb::LogLeaf::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("leaf {i} does not decode: {e}"));
        assert_eq!((leaf.format, leaf.seq), (1, i as u64 + 1), "leaf {i}: format and seq");
        assert_eq!(leaf.at_ms, event.at_ms, "leaf {i}: time of event {}", event.seq);
        assert_eq!(leaf_text(&leaf), event_text(&event.kind), "leaf {i} is not event {}", event.seq);
        tree.push(leaf_hash(bytes));
        roots.push(tree.root());
    }

    // The stored hashes give the same roots, and there are none beyond the log.
    let hashes = StoredHashes(&store);
    let stored_root = |n: u64| efa_tlog::tree::root(n, &hashes).unwrap_or_else(|e| panic!("root of {n} leaves: {e}"));
    assert_eq!(stored_root(size), roots[size as usize], "stored hashes and leaves disagree on the root of {size}");
    let beyond = efa_tlog::tree::stored_hash_count(size);
    assert!(store.log_hashes(&[beyond]).is_err(), "stored hash {beyond} lies beyond a log of {size} leaves");

    // The newest stored checkpoint signs a tree the store holds.
    let checkpoint = store.latest_checkpoint().unwrap().map(|(n, note)| {
        let cp = trust.open(&note).unwrap_or_else(|e| panic!("stored checkpoint of {n} leaves does not verify: {e}"));
        assert_eq!(cp.size, n, "stored checkpoint's key and size");
        assert!(n <= size, "the newest stored checkpoint has {n} leaves, the store only {size}");
        assert_eq!(cp.root, roots[n as usize], "the stored checkpoint of {n} leaves has another root than its leaves");
        assert_eq!(stored_root(n), cp.root, "stored hashes and the checkpoint of {n} disagree");
        n
    });

    // Every checkpoint ever served is of a tree the store holds, with the same root.
    for (&n, root) in &seen.roots {
        assert!(
            n <= size,
            "the hub served a checkpoint of {n} leaves, but after the crash its store holds only {size} (newest stored \
             checkpoint {checkpoint:?})"
        );
        assert_eq!(
            &roots[n as usize], root,
            "the hub served a checkpoint of {n} leaves with root {root}; its stored leaves give {}",
            roots[n as usize]
        );
        if let Some(note) = store.checkpoint(n).unwrap() {
            assert_eq!(&trust.open(&note).unwrap().root, root, "stored and served checkpoint of {n} leaves");
        }
    }

    // At the end: every acknowledged report is its leaf, and the text beside it opens it.
    for a in acked.unwrap_or_default() {
        let index = a.seq - 1;
        assert!(a.seq <= size, "report {:?} (seq {}) acknowledged but not in the log of {size}", a.reason, a.seq);
        let leaf = pb::LogLeaf::decode(leaves[index as usize].as_slice()).unwrap();
        let Some(pb::log_leaf::Kind::AdoptionReported(entry)) = &leaf.kind else {
            panic!("leaf {index} of report {:?} is {}", a.reason, leaf_text(&leaf))
        };
        let beside = store.beside_text(index).unwrap();
        match (&entry.reason, beside) {
            (None, None) if a.reason.is_empty() => {}
            (Some(c), Some(b)) => {
                assert_eq!((b.index, b.text.as_str()), (index, a.reason.as_str()), "text beside leaf {index}");
                assert_eq!(c.salted_sha256, efa_tlog::commit_text(&b.salt, &b.text), "commitment of leaf {index}");
                f.texts_opened += 1;
            }
            (c, b) => panic!("leaf {index} of report {:?}: commitment {c:?}, text beside {b:?}", a.reason),
        }
    }

    if size < head {
        f.kills_with_backlog += 1;
        f.max_backlog = f.max_backlog.max(head - size);
    }
    if seen.largest() > checkpoint.unwrap_or(0) {
        f.served_not_stored += 1;
    }
    f.store_checks += 1;
    f.leaves_checked += leaves.len();
    Stored { log_size: size, head, checkpoint }
}

fn log_client(channel: Channel) -> LogServiceClient<Channel> {
    LogServiceClient::new(channel)
}

fn to_hashes(proof: Vec<Vec<u8>>) -> Vec<Hash> {
    proof.into_iter().map(|h| Hash(h.try_into().expect("a 32-byte hash in a proof"))).collect()
}

/// Fetches the newest checkpoint, opens it and keeps it in `seen`.
async fn fetch_checkpoint(
    client: &mut LogServiceClient<Channel>,
    trust: &Trust,
    seen: &Shared,
    who: &str,
) -> Result<Checkpoint, tonic::Status> {
    let started = Instant::now();
    let note = match tokio::time::timeout(CALL_TIMEOUT, client.get_checkpoint(pb::GetCheckpointRequest {})).await {
        Ok(r) => r?.into_inner().note,
        Err(_) => return Err(tonic::Status::deadline_exceeded("GetCheckpoint")),
    };
    let mut seen = seen.lock().unwrap();
    match trust.open(&note) {
        Ok(cp) => {
            seen.keep(started, &cp, who);
            Ok(cp)
        }
        Err(e) => {
            seen.problems.push(format!("{who}: a checkpoint that does not verify with the log's key: {e}"));
            Err(tonic::Status::data_loss(e.to_string()))
        }
    }
}

/// Fetches checkpoints every few ms until `stop`, keeping each; tells `sizes` the largest.
/// While `eager`, it fetches back to back, so a new checkpoint is seen (and the hub killed)
/// as early as possible, possibly before its flush finished.
async fn observer(
    endpoint: Endpoint,
    trust: Trust,
    seen: Shared,
    sizes: watch::Sender<u64>,
    seed: u64,
    eager: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut client = log_client(endpoint.connect_lazy());
    while !stop.load(Ordering::SeqCst) {
        match fetch_checkpoint(&mut client, &trust, &seen, "observer").await {
            Ok(cp) => {
                sizes.send_if_modified(|max| {
                    let grew = cp.size > *max;
                    *max = (*max).max(cp.size);
                    grew
                });
            }
            Err(_) => client = log_client(endpoint.connect_lazy()),
        }
        let pause = if eager.load(Ordering::SeqCst) { rng.range(0, 2) } else { rng.range(3, 20) };
        tokio::time::sleep(ms(pause)).await;
    }
}

/// One Kommune reporting in bursts of 1–8 reports, each state in turn with a reason (so the
/// leaf commits to a text kept beside it) or, for some evaluations, none.
async fn writer(
    ags: &'static str,
    endpoint: Endpoint,
    seed: u64,
    ops: Arc<AtomicU64>,
    writes: Arc<Writes>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut client = AdoptionServiceClient::new(endpoint.connect_lazy());
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..rng.range(1, 9) {
            let op = ops.fetch_add(1, Ordering::SeqCst) + 1;
            let text = format!("translog fault {ags} #{op}");
            let (state, reason) = match rng.range(0, 5) {
                0 if rng.chance(50) => (pb::AdoptionState::Evaluating, String::new()),
                0 => (pb::AdoptionState::Evaluating, text),
                1 => (pb::AdoptionState::Deployed, text),
                2 => (pb::AdoptionState::Failed, text),
                3 => (pb::AdoptionState::RolledBack, text),
                _ => (pb::AdoptionState::Rejected, text),
            };
            let version = VERSIONS[rng.range(0, VERSIONS.len() as u64) as usize];
            let report = pb::AdoptionReport {
                service_id: SERVICE.into(),
                version: version.into(),
                state: state as i32,
                reason: reason.clone(),
            };
            writes.sent.fetch_add(1, Ordering::SeqCst);
            match tokio::time::timeout(CALL_TIMEOUT, client.report_adoption(report)).await {
                Ok(Ok(record)) => {
                    let seq = record.into_inner().event_seq;
                    writes.acked.lock().unwrap().push(Acked { seq, ags, version, state, reason });
                    writes.acks.send_modify(|n| *n += 1);
                }
                _ => {
                    writes.failed.fetch_add(1, Ordering::SeqCst);
                    client = AdoptionServiceClient::new(endpoint.connect_lazy());
                    tokio::time::sleep(ms(20)).await;
                    break;
                }
            }
        }
        tokio::time::sleep(ms(rng.range(10, 150))).await;
    }
}

/// One run: the hub, the log's key, what was served and acknowledged, the figures.
struct Run {
    hub: HubProc,
    trust: Trust,
    seen: Shared,
    writes: Arc<Writes>,
    /// Makes the observer fetch back to back.
    eager: Arc<AtomicBool>,
    f: Figures,
    rng: Rng,
    /// The newest checkpoint checked after the last restart: every one kept before it is
    /// consistent with it, so later ones need to be checked against it only.
    anchor: Option<(u64, Hash)>,
    /// What the store held after the last kill.
    stored: Option<Stored>,
    last_start: Duration,
}

impl Run {
    async fn start(&mut self) {
        let t = Instant::now();
        self.hub.start().await;
        self.last_start = t.elapsed();
    }

    /// SIGKILL, then the store as the crash left it: checked, and its log not behind what
    /// the check after the kill before saw (the log only grows, also across crashes).
    fn kill(&mut self, kind: &'static str) -> Stored {
        self.hub.kill();
        *self.f.kills.entry(kind).or_default() += 1;
        let now = {
            let seen = self.seen.lock().unwrap();
            check_store(&self.hub, &self.trust, &seen, &mut self.f, None)
        };
        if let Some(before) = &self.stored {
            assert!(
                now.log_size >= before.log_size && now.checkpoint >= before.checkpoint,
                "the stored log went from {} leaves (newest checkpoint {:?}) to {} ({:?}) across a crash",
                before.log_size,
                before.checkpoint,
                now.log_size,
                now.checkpoint
            );
        }
        self.stored = Some(now.clone());
        now
    }

    /// Every checkpoint kept since the last check (and the last anchor) is consistent with
    /// the newest one the hub serves now, which becomes the anchor. With `all`, every
    /// checkpoint ever kept is checked against it.
    async fn check_served(&mut self, stored: Option<&Stored>, all: bool) -> Checkpoint {
        let what = "the hub serves a checkpoint";
        let mut client = log_client(self.hub.channel(&operator()).await);
        let newest = {
            let (trust, seen) = (self.trust.clone(), self.seen.clone());
            wait_for(Duration::from_secs(10), what, || {
                let (mut client, trust, seen) = (client.clone(), trust.clone(), seen.clone());
                async move { fetch_checkpoint(&mut client, &trust, &seen, "after a restart").await.ok() }
            })
            .await
        };
        let context = || match stored {
            Some(s) => format!(
                "; the store after the crash held {} events, {} leaves, newest checkpoint {:?}",
                s.head, s.log_size, s.checkpoint
            ),
            None => String::new(),
        };
        let (olds, problems): (Vec<(u64, Hash)>, Vec<String>) = {
            let mut seen = self.seen.lock().unwrap();
            let sizes: Vec<u64> =
                if all { seen.roots.keys().copied().collect() } else { seen.fresh.iter().copied().collect() };
            seen.fresh.clear();
            let mut olds: Vec<(u64, Hash)> = sizes.into_iter().map(|n| (n, seen.roots[&n])).collect();
            olds.extend(self.anchor);
            (olds, seen.problems.clone())
        };
        assert!(problems.is_empty(), "served checkpoints contradict each other: {problems:#?}{}", context());
        for (size, root) in olds {
            let proof = if size > 0 && size < newest.size {
                let req = pb::ConsistencyProofRequest { old_size: size, new_size: newest.size };
                match tokio::time::timeout(CALL_TIMEOUT, client.get_consistency_proof(req)).await {
                    Ok(Ok(p)) => to_hashes(p.into_inner().hashes),
                    other => panic!("GetConsistencyProof({size}, {}): {other:?}", newest.size),
                }
            } else {
                Vec::new()
            };
            check_consistency(&proof, size, root, newest.size, newest.root).unwrap_or_else(|e| {
                panic!(
                    "the checkpoint of {size} leaves served before and the newest of {} disagree: {e}{}",
                    newest.size,
                    context()
                )
            });
            self.f.consistency_proofs += 1;
        }
        self.anchor = Some((newest.size, newest.root));
        newest
    }

    /// Kills the hub as `kind` says, checks the store as the crash left it, restarts the
    /// hub and checks what it serves.
    async fn kill_once(&mut self, kind: Kill, sizes: &mut watch::Receiver<u64>) {
        tokio::time::sleep(ms(self.rng.range(100, 400))).await;
        let stored = match kind {
            Kill::Burst => {
                tokio::time::sleep(ms(self.rng.range(0, if soak() { 1200 } else { 600 }))).await;
                self.kill("in a burst")
            }
            Kill::AfterAck => {
                let mut acks = self.writes.acks.subscribe();
                acks.borrow_and_update();
                tokio::time::timeout(Duration::from_secs(10), acks.changed())
                    .await
                    .expect("no report acknowledged within 10 s")
                    .unwrap();
                tokio::time::sleep(ms(self.rng.range(0, 3 * CHECKPOINT_MS + 1))).await;
                self.kill("after an ack")
            }
            Kill::WhenSigned => {
                self.eager.store(true, Ordering::SeqCst);
                let base = *sizes.borrow_and_update();
                tokio::time::timeout(Duration::from_secs(10), sizes.wait_for(|&n| n > base))
                    .await
                    .expect("no new checkpoint within 10 s")
                    .unwrap();
                let stored = self.kill("when a checkpoint was served");
                self.eager.store(false, Ordering::SeqCst);
                stored
            }
            Kill::Starting => {
                self.kill("before a restart");
                // The restarted hub: killed while it opens the store, waits for the dead
                // process's lease or integrates what the crash left unlogged.
                self.hub.spawn();
                tokio::time::sleep(ms(self.rng.range(0, self.last_start.as_millis() as u64 + 300))).await;
                self.kill("while starting")
            }
        };
        self.start().await;
        self.check_served(Some(&stored), false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_makes_the_hub_sign_another_history() {
    let started = Instant::now();
    let kills = cycles(10, 100);
    let mut rng = Rng::from_env("translog");
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    hub.with_config(&format!("checkpoint_ms = {CHECKPOINT_MS}"));
    hub.start().await;
    hub.register_service().await;
    for ags in WRITERS {
        hub.subscribe(ags).await;
    }
    let key = efa_domain::signing::SigningKey::generate();
    for version in VERSIONS {
        let dir = tmp.path().join("bundles").join(version);
        write_bundle(&dir, &wohngeld_bundle(version, true, 0, 0));
        publish(hub.channel(&land()).await, &key, version, &dir)
            .await
            .unwrap_or_else(|e| panic!("publish {version}: {e}"));
    }
    let log_key = std::fs::read_to_string(hub.data_dir.join("log.key")).expect("DATA_DIR/log.key");
    let trust = Trust::new(&efa_tlog::checkpoint::verifier_key(&log_key).expect("verifier key")).expect("log key");

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Shared = Arc::default();
    let (sizes_tx, mut sizes) = watch::channel(0u64);
    let writes = Arc::new(Writes {
        acked: Mutex::default(),
        acks: watch::channel(0).0,
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let endpoint = |id| {
        efa_proto::tls::endpoint(&hub.url(), Some(&hub.tls(&id)))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
    };
    let eager = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(observer(
        endpoint(operator()),
        trust.clone(),
        seen.clone(),
        sizes_tx,
        rng.next_u64(),
        eager.clone(),
        stop.clone(),
    ));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for ags in WRITERS {
        let task = writer(ags, endpoint(kommune(ags)), rng.next_u64(), ops.clone(), writes.clone(), stop.clone());
        writers.push(tokio::spawn(task));
    }

    let mut turn = rng.range(0, KINDS.len() as u64) as usize;
    let mut run = Run {
        hub,
        trust,
        seen,
        writes: writes.clone(),
        eager,
        f: Figures::default(),
        rng,
        anchor: None,
        stored: None,
        last_start: Duration::from_millis(500),
    };
    while run.hub.kills < kills {
        turn += 1;
        run.kill_once(KINDS[turn % KINDS.len()], &mut sizes).await;
    }

    // The end: the writers stop, the hub signs every event, every report is its leaf.
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w).await.expect("writer stops").expect("writer task");
    }
    tokio::time::timeout(Duration::from_secs(60), watcher).await.expect("observer stops").expect("observer task");
    let settle = Instant::now();
    let (_, head) = run.hub.watch_releases(WRITERS[0], 0).await;
    let mut client = log_client(run.hub.channel(&operator()).await);
    let newest = {
        let (trust, seen) = (run.trust.clone(), run.seen.clone());
        let what = format!("a checkpoint of all {head} events");
        wait_for(SETTLE_TIMEOUT, &what, || {
            let (mut client, trust, seen) = (client.clone(), trust.clone(), seen.clone());
            async move {
                fetch_checkpoint(&mut client, &trust, &seen, "at the end").await.ok().filter(|cp| cp.size >= head)
            }
        })
        .await
    };
    let settled = settle.elapsed();
    assert_eq!(newest.size, head, "the newest checkpoint covers exactly the {head} events");
    let last = run.check_served(None, true).await;
    assert_eq!((last.size, last.root), (newest.size, newest.root), "the hub moved on with no writes");

    let acked = writes.acked.lock().unwrap().clone();
    for a in &acked {
        assert!(a.seq >= 1, "report {:?} acknowledged without its event's seq", a.reason);
        let req = pb::InclusionProofRequest {
            index: a.seq - 1,
            tree_size: newest.size,
            service_id: String::new(),
            version: String::new(),
        };
        let proof = match tokio::time::timeout(CALL_TIMEOUT, client.get_inclusion_proof(req)).await {
            Ok(Ok(p)) => p.into_inner(),
            other => panic!("GetInclusionProof of seq {} in {}: {other:?}", a.seq, newest.size),
        };
        let index = a.seq - 1;
        assert_eq!((proof.index, proof.tree_size), (index, newest.size), "inclusion proof of seq {}", a.seq);
        check_inclusion(&to_hashes(proof.hashes), newest.size, newest.root, index, leaf_hash(&proof.leaf))
            .unwrap_or_else(|e| panic!("report {:?} (seq {}): {e}", a.reason, a.seq));
        let leaf = pb::LogLeaf::decode(proof.leaf.as_slice()).expect("leaf decodes");
        assert_eq!(leaf.seq, a.seq, "leaf {index}");
        assert_eq!(
            leaf_text(&leaf),
            adoption_text(a.ags, SERVICE, a.version, a.state as i32),
            "leaf {index} of the acknowledged report {:?}",
            a.reason
        );
        run.f.inclusion_proofs += 1;
    }

    // And the store as a last kill leaves it.
    run.hub.kill();
    let stored = {
        let seen = run.seen.lock().unwrap();
        check_store(&run.hub, &run.trust, &seen, &mut run.f, Some(&acked))
    };
    // Every leaf is durable; the newest checkpoint need not be (it is not fsynced on its
    // own): the hub signs it again, identically, from the leaves before it serves anything.
    assert_eq!(stored.log_size, head, "the log at the end");
    assert!(stored.checkpoint.is_some_and(|c| c <= head), "stored checkpoint {:?} of {head} leaves", stored.checkpoint);
    run.start().await;
    let mut client = log_client(run.hub.channel(&operator()).await);
    let again =
        fetch_checkpoint(&mut client, &run.trust, &run.seen, "after the last kill").await.expect("a checkpoint");
    assert_eq!((again.size, again.root), (newest.size, newest.root), "the first checkpoint after the last kill");
    assert_eq!(again.note, newest.note, "signed again byte for byte (Ed25519 is deterministic)");
    run.hub.kill();

    let f = &run.f;
    let seen = run.seen.lock().unwrap();
    assert!(acked.len() >= 50, "only {} reports acknowledged: too few to prove anything", acked.len());
    assert!(seen.roots.len() >= kills, "only {} checkpoints observed", seen.roots.len());
    eprintln!(
        "fault translog: hub crashes injected {} ({}); reports sent {} by {} Kommunen, acked {} (each its leaf, inclusion \
         proven {}, texts opened {}), failed {}; checkpoints observed {} distinct of {} fetches, consistency proofs {}, \
         split views 0, shrinks 0; kills with events not yet logged {} (at most {} behind), with the newest served \
         checkpoint not yet stored {}; store checks {}, leaves checked {} (log 1..={head}); settled in {settled:.1?}; \
         {:.1?}",
        run.hub.kills,
        f.kills.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
        writes.sent.load(Ordering::SeqCst),
        WRITERS.len(),
        acked.len(),
        f.inclusion_proofs,
        f.texts_opened,
        writes.failed.load(Ordering::SeqCst),
        seen.roots.len(),
        seen.fetches,
        f.consistency_proofs,
        f.kills_with_backlog,
        f.max_backlog,
        f.served_not_stored,
        f.store_checks,
        f.leaves_checked,
        started.elapsed()
    );
}
