//! Auditing the transparency log from outside, with the real `efa` binary against a real
//! hub: `efa log verify` re-derives the roots from the leaves and recomputes adoption from
//! them, `efa log mirror` makes a static copy that verifies the same, a leaf changed in the
//! hub's store or a history rewritten and re-signed is caught (exit 2), and a witness
//! cosigns only checkpoints consistent with the last one it cosigned.

use efa_domain::model::event::EventKind;
use efa_proto::v1 as pb;
use efa_registry::store::codec;
use efa_tests::*;
use efa_tlog::checkpoint::{LogSigner, Trust};
use efa_tlog::tiles::{entry_bundle, hash_tile, TilePath, WIDTH};
use efa_tlog::tree::{leaf_hash, MemoryHashes};
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const SERVICE: &str = "wohngeld-nrw";
const OTHER: &str = "hundehaltung-nrw";
const MUENCHEN: &str = "09162000";

/// The `efa` binary, built once per test process with this test's profile.
fn efa_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| efa_testkit::bins::build(&["efa-cli"]).join("efa"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "efa failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

async fn efa(args: &[String]) -> Run {
    let out = tokio::process::Command::new(efa_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("EFA_HUB")
        .output()
        .await
        .expect("efa runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `efa log <command> ... --hub URL --ca --cert --key` as the federation's operator.
fn log_args(w: &World, command: &str, more: &[&str]) -> Vec<String> {
    let tls = w.fed.client_tls(&operator()).unwrap();
    let mut args: Vec<String> = ["log", command].iter().chain(more).map(|s| s.to_string()).collect();
    for (flag, path) in [("--ca", &tls.ca), ("--cert", &tls.cert), ("--key", &tls.key)] {
        args.extend([flag.to_string(), path.to_string_lossy().into_owned()]);
    }
    args.extend(["--hub".to_string(), w.fed.url()]);
    args
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn report(w: &World, ags: &str, service: &str, version: &str, state: pb::AdoptionState) {
    report_on(w.channel(&kommune(ags)).await, service, version, state).await;
}

/// Two NRW services, three releases, and reports from NRW and Bavaria: Dortmund and Essen
/// run 1.0.0 (Essen rolled 1.1.0 back), München runs 1.1.0, Bielefeld rejected the service;
/// Dortmund retired the other service.
async fn populate(w: &World) {
    w.register(NRW, SERVICE, "10092").await.unwrap();
    w.register(NRW, OTHER, "10160").await.unwrap();
    for v in ["1.0.0", "1.1.0"] {
        w.publish(NRW, SERVICE, v, &w.standard_bundle(v)).await.unwrap();
    }
    w.publish(NRW, OTHER, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    use pb::AdoptionState::*;
    report(w, DORTMUND, SERVICE, "1.0.0", Deployed).await;
    report(w, ESSEN, SERVICE, "1.0.0", Deployed).await;
    report(w, ESSEN, SERVICE, "1.1.0", Evaluating).await;
    report(w, ESSEN, SERVICE, "1.1.0", RolledBack).await;
    report(w, BIELEFELD, SERVICE, "", Rejected).await;
    report(w, MUENCHEN, SERVICE, "1.1.0", Deployed).await;
    report(w, DORTMUND, OTHER, "1.0.0", Deployed).await;
    report(w, DORTMUND, OTHER, "", Retired).await;
}

/// Waits for a checkpoint that covers every event; returns its size and signed note.
async fn logged(w: &World) -> (u64, Vec<u8>) {
    let reg = w.fed.registry().unwrap();
    efa_testkit::wait::wait_for(Duration::from_secs(30), "a checkpoint covering every event", || async move {
        let head = reg.head_seq().unwrap();
        reg.latest_checkpoint().unwrap().filter(|(size, _)| *size == head && head > 0)
    })
    .await
}

/// Keeps a checkpoint as an auditor would: its signed note in a file.
fn keep(w: &World, name: &str, note: &[u8]) -> String {
    let file = w.dir.path().join(name);
    std::fs::write(&file, note).unwrap();
    path(&file)
}

/// (running, rejected, running per Land) of `service` in `efa log verify --json` output.
fn figures(report: &Value, service: &str) -> (u64, u64, BTreeMap<String, u64>) {
    let s = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("{service} in {report}"));
    let per_land = s["running_per_land"].as_object().unwrap().iter().map(|(l, n)| (l.clone(), n.as_u64().unwrap()));
    (s["running"].as_u64().unwrap(), s["rejected"].as_u64().unwrap(), per_land.collect())
}

/// The same figures from the hub's registry: its counters and its adopters per Land.
fn registry_figures(w: &World, service: &str) -> (u64, u64, BTreeMap<String, u64>) {
    let reg = w.fed.registry().unwrap();
    let sid = service.parse().unwrap();
    let totals = reg.service_totals(&sid).unwrap();
    let mut per_land = BTreeMap::new();
    for a in reg.adopters(&operator(), &sid).unwrap() {
        if a.record.running.is_some() {
            *per_land.entry(a.record.latest.ags.land().to_string()).or_insert(0) += 1;
        }
    }
    (u64::from(totals.running), u64::from(totals.rejected), per_land)
}

/// Rewrites history in the stopped hub's store: Dortmund's deployment of `SERVICE` becomes
/// a retirement, and the log is cleared so the hub rebuilds and re-signs it from the edited
/// events (same size, other roots). Returns the edited event's seq.
fn rewrite_dortmunds_deployment(w: &World) -> u64 {
    edit_stopped_store(w, |db, log| {
        let events = db.open_tree("events").unwrap();
        let (key, mut event) = events
            .iter()
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (k, codec::decode::<efa_domain::model::event::Event>("events", &v).unwrap()))
            .find(|(_, e)| {
                matches!(&e.kind, EventKind::AdoptionReported(a)
                    if a.ags.as_str() == DORTMUND && a.service_id.as_str() == SERVICE)
            })
            .expect("Dortmund's report");
        let EventKind::AdoptionReported(entry) = &mut event.kind else { unreachable!() };
        entry.state = efa_domain::model::adoption::AdoptionState::Retired;
        events.insert(key, codec::encode(&event)).unwrap();
        for tree in ["log_tiles", "log_checkpoints", "log_beside", "log_releases"] {
            log.open_tree(tree).unwrap().clear().unwrap();
        }
        event.seq
    })
}

/// After publishes and reports, the log verifies against the hub, and the adoption it
/// gives is the registry's: the log alone says who runs what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_verifies_and_its_adoption_figures_are_the_registrys() {
    let w = World::new().await;
    populate(&w).await;
    let (size, _) = logged(&w).await;
    let key = w.fed.log_key().unwrap();

    let run = efa(&log_args(&w, "verify", &["--log-key", &key, "--json"])).await.ok();
    let r = run.json();
    assert_eq!(r["size"], size);
    assert_eq!(r["origin"], "efa-hub.local/log");
    assert_eq!(r["adoption_reports"], 8);
    let expected = (3, 1, BTreeMap::from([("05".to_string(), 2), ("09".to_string(), 1)]));
    assert_eq!(figures(&r, SERVICE), expected);
    assert_eq!(registry_figures(&w, SERVICE), expected);
    assert_eq!(figures(&r, OTHER), (0, 0, BTreeMap::new()));
    assert_eq!(registry_figures(&w, OTHER), figures(&r, OTHER));

    // The same for people, with the key from a file.
    let key_file = keep(&w, "log.vkey", format!("{key}\n").as_bytes());
    let run = efa(&log_args(&w, "verify", &["--log-key", &format!("@{key_file}")])).await.ok();
    assert!(run.stdout.contains(&format!("{size} leaves")), "{}", run.stdout);
    assert!(run.stdout.contains("05: 2, 09: 1"), "{}", run.stdout);

    // Another log's key opens nothing: not evidence, an error.
    let (_, stranger) = LogSigner::generate("efa-hub.local/log").unwrap();
    let run = efa(&log_args(&w, "verify", &["--log-key", &stranger])).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not signed by the log key"), "{}", run.stderr);
}

/// A mirror is a static copy that verifies like the hub; updating it writes the partial
/// tiles again and leaves the full ones alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_verifies_like_the_hub_and_keeps_its_full_tiles() {
    let w = World::new().await;
    populate(&w).await;
    // More than one entry bundle's worth of leaves.
    let (bielefeld, essen) = (w.channel(&kommune(BIELEFELD)).await, w.channel(&kommune(ESSEN)).await);
    for i in 0..150 {
        let state = if i % 2 == 0 { pb::AdoptionState::Evaluating } else { pb::AdoptionState::Deployed };
        report_on(bielefeld.clone(), OTHER, "1.0.0", state).await;
        report_on(essen.clone(), OTHER, "1.0.0", state).await;
    }
    let (size, first) = logged(&w).await;
    assert!(size > WIDTH, "{size} leaves");
    let kept = keep(&w, "first.checkpoint", &first);
    let key = w.fed.log_key().unwrap();
    let mirror = w.dir.path().join("mirror");
    let run = efa(&log_args(&w, "mirror", &["--to", &path(&mirror)])).await.ok();
    assert!(run.stdout.contains(&format!("checkpoint of {size} leaves")), "{}", run.stdout);
    assert_eq!(std::fs::read(mirror.join("checkpoint")).unwrap(), first);
    for tile in TilePath::all(size) {
        assert!(mirror.join(tile.to_string()).is_file(), "{tile} copied");
    }
    let full = mirror.join("tile/entries/000");
    let written = std::fs::metadata(&full).unwrap().modified().unwrap();

    report(&w, BIELEFELD, OTHER, "1.0.0", pb::AdoptionState::Deployed).await;
    let (grown, _) = logged(&w).await;
    assert!(grown > size);
    efa(&log_args(&w, "mirror", &["--to", &path(&mirror)])).await.ok();
    assert_eq!(std::fs::metadata(&full).unwrap().modified().unwrap(), written, "a full bundle is not written twice");

    let from_dir = efa(&["log", "verify", "--log-key", &key, "--json", "--dir", &path(&mirror), "--checkpoint", &kept]
        .map(String::from))
    .await
    .ok()
    .json();
    let from_hub = efa(&log_args(&w, "verify", &["--log-key", &key, "--json"])).await.ok().json();
    assert_eq!(from_dir["size"], grown);
    assert_eq!(from_dir["kept_checkpoints"][0]["size"], size);
    assert_eq!(from_dir["services"], from_hub["services"]);
    assert_eq!(figures(&from_dir, OTHER), registry_figures(&w, OTHER));
}

fn adoption(leaf: &[u8]) -> pb::LeafAdoption {
    match pb::LogLeaf::decode(leaf).unwrap().kind {
        Some(pb::log_leaf::Kind::AdoptionReported(a)) => a,
        other => panic!("not an adoption leaf: {other:?}"),
    }
}

/// One stored leaf changed behind the hub's back: the hash tiles still match, but the
/// leaves no longer give the signed root; verify says so and exits with 2, from the hub and
/// from a fresh mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_changed_in_the_store_is_caught() {
    let mut w = World::new().await;
    populate(&w).await;
    let (size, note) = logged(&w).await;
    let kept = keep(&w, "before.checkpoint", &note);
    let key = w.fed.log_key().unwrap();

    w.fed.stop_hub().await.unwrap();
    let index = edit_stopped_store(&w, |_, log| {
        // The sled log keeps leaves as C2SP entry bundles of 256 under `L` + bundle index.
        let tiles = log.open_tree("log_tiles").unwrap();
        for kv in tiles.scan_prefix(b"L") {
            let (k, v) = kv.unwrap();
            let mut leaves = Vec::new();
            let mut rest = v.as_ref();
            while let [a, b, tail @ ..] = rest {
                let n = usize::from(u16::from_be_bytes([*a, *b]));
                leaves.push(tail[..n].to_vec());
                rest = &tail[n..];
            }
            let Some(i) = leaves.iter().position(|leaf| {
                matches!(pb::LogLeaf::decode(leaf.as_slice()).unwrap().kind,
                    Some(pb::log_leaf::Kind::AdoptionReported(ref a)) if a.state == pb::AdoptionState::Deployed as i32)
            }) else {
                continue;
            };
            // The state is the last byte: deployed (2) becomes failed (3), still a valid leaf.
            let before = adoption(&leaves[i]);
            *leaves[i].last_mut().unwrap() ^= 1;
            assert_eq!(adoption(&leaves[i]), pb::LeafAdoption { state: pb::AdoptionState::Failed as i32, ..before });
            tiles.insert(&k, efa_tlog::tiles::entry_bundle(&leaves).unwrap()).unwrap();
            return u64::from_be_bytes(k[1..].try_into().unwrap()) * 256 + i as u64;
        }
        panic!("no deployed report among the leaves");
    });
    assert!(index < size);
    w.fed.restart_hub().await.unwrap();
    assert_eq!(w.fed.registry().unwrap().latest_checkpoint().unwrap().unwrap().1, note, "nothing re-signed");

    for args in [
        log_args(&w, "verify", &["--log-key", &key]),
        log_args(&w, "verify", &["--log-key", &key, "--checkpoint", &kept]),
    ] {
        let run = efa(&args).await;
        assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
        assert!(run.stderr.contains(&format!("the log was rewritten: at size {size}")), "{}", run.stderr);
    }
    let mirror = w.dir.path().join("mirror");
    efa(&log_args(&w, "mirror", &["--to", &path(&mirror)])).await.ok();
    let run = efa(&["log", "verify", "--log-key", &key, "--dir", &path(&mirror)].map(String::from)).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("the log was rewritten"), "{}", run.stderr);
}

/// The hub's operator edits an adoption event and lets the hub rebuild and re-sign the log:
/// the new log is consistent in itself, but a checkpoint an auditor kept from before names
/// the size where history changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_and_re_signed_history_is_caught_by_a_kept_checkpoint() {
    let mut w = World::new().await;
    populate(&w).await;
    let (old_size, old_note) = logged(&w).await;
    let kept = keep(&w, "old.checkpoint", &old_note);
    report(&w, BIELEFELD, OTHER, "1.0.0", pb::AdoptionState::Deployed).await;
    let (size, _) = logged(&w).await;
    let key = w.fed.log_key().unwrap();

    w.fed.stop_hub().await.unwrap();
    let seq = rewrite_dortmunds_deployment(&w);
    assert!(seq <= old_size);
    w.fed.restart_hub().await.unwrap();
    let (rebuilt, new_note) = logged(&w).await;
    assert_eq!(rebuilt, size, "the same events, the same size");
    assert_ne!(new_note, old_note);

    // Without the old checkpoint nothing tells: the new log is consistent in itself, and
    // its leaves now disagree with the registry's counters.
    let r = efa(&log_args(&w, "verify", &["--log-key", &key, "--json"])).await.ok().json();
    assert_eq!(figures(&r, SERVICE).0, 2, "Dortmund retired, as the edited event says");
    assert_eq!(registry_figures(&w, SERVICE).0, 3);

    let run = efa(&log_args(&w, "verify", &["--log-key", &key, "--checkpoint", &kept])).await;
    assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    let old_root = Trust::new(&key).unwrap().open(&old_note).unwrap().root;
    assert!(
        run.stderr.contains(&format!("the log was rewritten: at size {old_size}"))
            && run.stderr.contains(&format!("signs root {old_root}")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "no figures from a rewritten log: {}", run.stdout);
}

/// A witness cosigns what extends what it cosigned before; auditors and nodes then count its
/// cosignature. After a rewrite it refuses (exit 2), cosigns nothing and keeps its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigns_consistent_checkpoints_and_refuses_a_rewrite() {
    let mut w = World::new().await;
    let key = w.fed.log_key().unwrap();
    let wkey_file = w.dir.path().join("witness.key");
    let run = efa(&["log", "witness-key", "--name", "witness.test/efa", "--out", &path(&wkey_file)].map(String::from))
        .await
        .ok();
    let wkey = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("witness key: "))
        .unwrap_or_else(|| panic!("{}", run.stdout))
        .to_string();
    let state = w.dir.path().join("witness.state");
    let witness = log_args(
        &w,
        "witness",
        &["--signing-key", &path(&wkey_file), "--log-key", &key, "--state", &path(&state), "--once"],
    );
    let cosigned_by_witness = |note: &[u8]| {
        Trust::new(&key).unwrap().with_witnesses(std::slice::from_ref(&wkey), 1).unwrap().open(note).map(|c| c.size)
    };

    populate(&w).await;
    let (first, _) = logged(&w).await;
    let run = efa(&witness).await.ok();
    assert!(run.stdout.contains(&format!("cosigned the checkpoint of {first} leaves")), "{}", run.stdout);
    let (_, note) = w.fed.registry().unwrap().latest_checkpoint().unwrap().unwrap();
    assert_eq!(cosigned_by_witness(&note).unwrap(), first, "the hub keeps the cosignature");
    let run = efa(&log_args(&w, "verify", &["--log-key", &key, "--witness", &wkey, "--json"])).await.ok();
    assert_eq!(run.json()["cosigned_by"][0], "witness.test/efa");

    // The log grows: the hub proves consistency from the witnessed size, the witness cosigns.
    report(&w, BIELEFELD, OTHER, "1.0.0", pb::AdoptionState::Deployed).await;
    let (second, _) = logged(&w).await;
    assert!(second > first);
    efa(&witness).await.ok();
    let (_, note) = w.fed.registry().unwrap().latest_checkpoint().unwrap().unwrap();
    assert_eq!(cosigned_by_witness(&note).unwrap(), second);
    let kept_state = std::fs::read(&state).unwrap();
    assert_eq!(Trust::new(&key).unwrap().open(&kept_state).unwrap().size, second);

    // History rewritten and the log re-signed, grown by one more event.
    w.fed.stop_hub().await.unwrap();
    rewrite_dortmunds_deployment(&w);
    w.fed.restart_hub().await.unwrap();
    report(&w, ESSEN, OTHER, "1.0.0", pb::AdoptionState::Deployed).await;
    let (third, _) = logged(&w).await;
    assert!(third > second);
    let run = efa(&witness).await;
    assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("refusing to cosign"), "{}", run.stderr);
    let (_, note) = w.fed.registry().unwrap().latest_checkpoint().unwrap().unwrap();
    assert!(cosigned_by_witness(&note).is_err(), "nothing cosigned");
    assert_eq!(std::fs::read(&state).unwrap(), kept_state, "the witness keeps what it cosigned");
    // Auditors who need the witness now refuse the hub's checkpoint.
    let run = efa(&log_args(&w, "verify", &["--log-key", &key, "--witness", &wkey])).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("0 of the 1 witness cosignatures"), "{}", run.stderr);
}

/// Writes a log of `leaves` in the C2SP layout, as a static mirror would serve it.
fn write_tiles(dir: &Path, leaves: &[Vec<u8>], hashes: &MemoryHashes) {
    for tile in TilePath::all(leaves.len() as u64) {
        let data = match tile {
            TilePath::Hashes { level, index, width } => hash_tile(level, index, width, hashes).unwrap(),
            TilePath::Entries { index, width } => {
                let first = (index * WIDTH) as usize;
                entry_bundle(&leaves[first..first + usize::from(width)]).unwrap()
            }
        };
        let file = dir.join(tile.to_string());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, data).unwrap();
    }
}

/// `efa log verify` re-derives the RFC 6962 root efa_tlog computes, for tiny logs around
/// the bundle edges, at every kept size; a checkpoint signing any other root is refused
/// with the root the leaves give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_re_derives_the_rfc6962_root_of_a_directory_log() {
    let base = tempfile::tempdir().unwrap();
    let (skey, vkey) = LogSigner::generate("audit.test/log").unwrap();
    let signer = LogSigner::from_text(&skey).unwrap();
    let leaf = |seq: u64| {
        let kind = match seq % 3 {
            0 => pb::log_leaf::Kind::ServiceRegistered(pb::LeafService {
                service_id: format!("dienst-{seq}"),
                land_code: NRW.into(),
            }),
            1 => pb::log_leaf::Kind::AdoptionReported(pb::LeafAdoption {
                ags: DORTMUND.into(),
                service_id: SERVICE.into(),
                version: format!("1.0.{seq}"),
                state: pb::AdoptionState::Deployed as i32,
                reason: None,
            }),
            _ => pb::log_leaf::Kind::Unsubscribed(pb::LeafUnsubscribed { ags: ESSEN.into(), target: "x".repeat(200) }),
        };
        pb::LogLeaf { format: 1, seq, at_ms: seq as i64 * 1000, kind: Some(kind) }.encode_to_vec()
    };
    for size in [1u64, 2, 7, 255, 256, 257, 600] {
        let dir = base.path().join(size.to_string());
        let leaves: Vec<Vec<u8>> = (1..=size).map(leaf).collect();
        let mut hashes = MemoryHashes::default();
        hashes.append(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
        write_tiles(&dir, &leaves, &hashes);
        let root = efa_tlog::tree::root(size, &hashes).unwrap();
        std::fs::write(dir.join("checkpoint"), signer.sign(size, root).unwrap()).unwrap();
        // Checkpoints kept at smaller sizes, signed by the same key.
        let mut args: Vec<String> =
            ["log", "verify", "--log-key", &vkey, "--json", "--dir", &path(&dir)].map(String::from).into();
        for k in [1, size / 2, size - 1].into_iter().filter(|k| *k >= 1) {
            let file = dir.join(format!("kept-{k}"));
            std::fs::write(&file, signer.sign(k, efa_tlog::tree::root(k, &hashes).unwrap()).unwrap()).unwrap();
            args.extend(["--checkpoint".to_string(), path(&file)]);
        }
        let r = efa(&args).await.ok().json();
        assert_eq!(r["size"], size);
        assert_eq!(r["root"], root.to_string(), "size {size}");
        assert_eq!(r["adoption_reports"], size.div_ceil(3));

        // A checkpoint of this size over another root (that of one leaf fewer): refused,
        // naming the root the leaves give.
        let wrong = efa_tlog::tree::root(size - 1, &hashes).unwrap();
        let forged = dir.join("forged");
        std::fs::write(&forged, signer.sign(size, wrong).unwrap()).unwrap();
        let run = efa(&["log", "verify", "--log-key", &vkey, "--dir", &path(&dir), "--checkpoint", &path(&forged)]
            .map(String::from))
        .await;
        assert_eq!(run.code, 2, "size {size}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("at size {size}, the checkpoint in {} signs root {wrong}", path(&forged)))
                && run.stderr.contains(&format!("the log's leaves give root {root}")),
            "{}",
            run.stderr
        );
    }
}

/// `efa keys ... --hub URL --ca --cert --key` as Land NRW.
fn keys_args(w: &World, more: &[&str]) -> Vec<String> {
    let tls = w.fed.client_tls(&land(NRW)).unwrap();
    let mut args: Vec<String> = ["keys"].iter().chain(more).map(|s| s.to_string()).collect();
    for (flag, path) in [("--ca", &tls.ca), ("--cert", &tls.cert), ("--key", &tls.key)] {
        args.extend([flag.to_string(), path.to_string_lossy().into_owned()]);
    }
    args.extend(["--hub".to_string(), w.fed.url()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_land_rotates_its_keys_with_efa_keys_and_the_log_holds_each_set() {
    let w = World::new().await;
    let old = path(&w.fed.signing_key_file(&NRW.parse().unwrap()).unwrap());
    let new = w.dir.path().join("new.key");
    efa(&["keygen".into(), "--out".into(), path(&new)]).await.ok();
    let new = path(&new);
    let old_pub = w.fed.signing_key(&NRW.parse().unwrap()).unwrap().verifying_key().to_text();

    // Set 1 (the current key), published at once.
    let run = efa(&keys_args(&w, &["new-set", "--set-key", &old, "--sign-with", &old])).await.ok();
    assert!(run.stdout.contains("published key set 1 of Land 05"), "{}", run.stdout);
    // Set 2 written to a file, signed, then published: the new key, the old one revoked.
    let file = path(&w.dir.path().join("set-2.json"));
    let args = ["new-set", "--set-key", &new, "--revoke", &old_pub, "--sign-with", &old, "--out", &file];
    let run = efa(&keys_args(&w, &args)).await.ok();
    assert!(run.stdout.contains("key set 2 of Land 05 written"), "{}", run.stdout);
    // Signed by a key outside set 1: the hub refuses it with the reason.
    let stranger = w.dir.path().join("stranger.key");
    efa(&["keygen".into(), "--out".into(), path(&stranger)]).await.ok();
    let bad = path(&w.dir.path().join("set-2-bad.json"));
    let args = ["new-set", "--set-key", &new, "--sign-with", &path(&stranger), "--out", &bad];
    efa(&keys_args(&w, &args)).await.ok();
    let refused = efa(&keys_args(&w, &["publish-set", &bad])).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("signed by 0 of the 1 keys of set 1"), "{}", refused.stderr);
    efa(&keys_args(&w, &["publish-set", &file])).await.ok();

    let run = efa(&keys_args(&w, &["sets", "--json"])).await.ok();
    let sets = run.json();
    let rows = sets.as_array().unwrap_or_else(|| panic!("{sets}"));
    let versions: Vec<&str> = rows.iter().map(|r| r["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2"], "{sets}");
    assert_eq!(rows[1]["revoked"], old_pub.as_str());
    // The log holds both, and the auditor's re-derived tree agrees.
    logged(&w).await;
    efa(&log_args(&w, "verify", &["--log-key", &w.fed.log_key().unwrap()])).await.ok();
}
