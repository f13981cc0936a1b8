//! A non-Rust client works: a Python grpcio client, generated from `proto/` with the stock
//! `grpc_tools.protoc`, talks to a real hub over mTLS. This proves the API is plain gRPC.

use efa_domain::model::release::UpdatePolicy;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

const REQUIREMENTS: &str = "tests/python/requirements.txt";
const SCRIPT: &str = "tests/python/efa_client_check.py";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Whether `python3` with grpcio, grpcio-tools and grpcio-health-checking is available.
async fn python_ready() -> Result<(), String> {
    let out = tokio::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_health, jsonschema"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "python3 lacks the gRPC or jsonschema packages ({})",
            stderr.trim().lines().last().unwrap_or("no output")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_lists_subscribes_and_receives_a_release() {
    let install = format!("python3 -m pip install -r {REQUIREMENTS}");
    if !efa_testkit::tools::check("python_client", python_ready().await, &install) {
        return;
    }

    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let tls = w.fed.client_tls(&kommune(DORTMUND)).unwrap();

    let mut args: Vec<std::ffi::OsString> = vec!["--addr".into(), w.fed.url().into()];
    args.extend(tls_args(&tls));
    args.extend(["--service", "wohngeld-nrw", "--version", "1.0.0", "--timeout", "30"].map(Into::into));
    let stdout = run_python(SCRIPT, &args).await;
    assert!(stdout.contains("release_published: wohngeld-nrw 1.0.0"), "no event line in:\n{stdout}");

    // The Python client's Subscribe really changed the hub's state.
    let subs = SubscriptionServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .list_subscriptions(pb::ListSubscriptionsRequest { ags: String::new() })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let sub = subs
        .iter()
        .find(|s| {
            matches!(
                s.target.as_ref().and_then(|t| t.target.as_ref()),
                Some(pb::subscription_target::Target::ServiceId(id)) if id == "wohngeld-nrw"
            )
        })
        .unwrap_or_else(|| panic!("no subscription to wohngeld-nrw for Dortmund: {subs:?}"));
    assert_eq!(sub.policy, pb::UpdatePolicy::Manual as i32);
    assert_eq!(sub.ags, DORTMUND);
}

/// A Land's own tooling, in Python only: it writes the manifest, signs it with the Land's
/// key, registers that key, uploads the files (one of them chunked) and a signed snapshot,
/// following docs/wire-formats.md. A Rust node then verifies and deploys the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_written_and_signed_in_python_is_deployed_by_a_node() {
    let install = format!("python3 -m pip install -r {REQUIREMENTS}");
    let ready = match python_ready().await {
        Ok(()) => python_has("cryptography").await,
        e => e,
    };
    if !efa_testkit::tools::check("python_publish", ready, &install) {
        return;
    }

    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let bundle = w.standard_bundle("2.0.0");
    // A file above the chunking threshold, so the Python manifest lists chunks.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(bundle.join("forms/anlage.bin"), &big).unwrap();

    let tls = w.fed.client_tls(&land(NRW)).unwrap();
    let key_file = w.fed.signing_key_file(&NRW.parse().unwrap()).unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["--addr".into(), w.fed.url().into()];
    args.extend(tls_args(&tls));
    args.extend(["--signing-key".into(), key_file.into_os_string()]);
    args.extend(
        ["--land", NRW, "--service", "wohngeld-nrw", "--version", "2.0.0", "--notes", "aus Python"].map(Into::into),
    );
    args.extend(["--bundle".into(), bundle.clone().into_os_string()]);
    run_python("tests/python/efa_publish.py", &args).await;

    // The hub holds the Python-signed key, release and snapshot.
    let detail = ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .get_release(pb::GetReleaseRequest { service_id: "wohngeld-nrw".into(), version: "2.0.0".into() })
        .await
        .unwrap()
        .into_inner();
    let info = detail.info.unwrap();
    assert_eq!((info.file_count, info.release_notes.as_str()), (4, "aus Python"));
    let manifest = String::from_utf8(detail.manifest).unwrap();
    assert!(manifest.contains("\"chunks\""), "the large file is chunked:\n{manifest}");

    // A node that pins NRW's key verifies, renders and deploys it.
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    let handled = node.reconcile().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "2.0.0".into() }]);
    let current = node.config().deploy_dir.join("wohngeld-nrw/current");
    assert_eq!(std::fs::read(current.join("forms/anlage.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(current.join("config/payment.toml")).unwrap(),
        "purpose = \"wohngeld-nrw 05913000\"\nfee_cents = 1250\n"
    );
}

/// Another Land's tooling, in Python only, offers NRW's service to its Kommunen: the
/// signed offer (schema-checked) goes through, two hostile ones are refused, and a Kommune
/// of that Land following the Themenfeld deploys the service with the Land's parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_written_and_signed_in_python_brings_the_service_to_that_lands_kommune() {
    let install = format!("python3 -m pip install -r {REQUIREMENTS}");
    let ready = match python_ready().await {
        Ok(()) => python_has("cryptography").await,
        e => e,
    };
    if !efa_testkit::tools::check("python_offer", ready, &install) {
        return;
    }
    const BAYERN: &str = "09";
    const MUENCHEN: &str = "09162000";
    let w = World::new().await;
    let info = w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    let tls = w.fed.client_tls(&land(BAYERN)).unwrap();
    let key_file = w.fed.signing_key_file(&BAYERN.parse().unwrap()).unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["--addr".into(), w.fed.url().into()];
    args.extend(tls_args(&tls));
    args.extend(["--signing-key".into(), key_file.into_os_string()]);
    args.extend(["--land", BAYERN, "--service", "wohngeld-nrw", "--set", "fee_cents=0"].map(Into::into));
    run_python("tests/python/efa_offer.py", &args).await;

    let mut config = w.node_config(MUENCHEN, &[]);
    config.subscriptions.push(efa_node::config::SubscriptionConfig {
        service: None,
        themenfeld: Some(info.themenfeld),
        channel: "stable".parse().unwrap(),
        policy: UpdatePolicy::Auto,
    });
    let bayern: efa_domain::model::ids::LandCode = BAYERN.parse().unwrap();
    let purpose = efa_domain::params::ParamValue::Text("Wohngeld München".into());
    let config = config.trust(bayern.clone(), w.fed.trusted_key(&bayern).unwrap()).parameters(
        "wohngeld-nrw".parse().unwrap(),
        std::collections::BTreeMap::from([("payment_purpose".to_string(), purpose)]),
    );
    let node = efa_node::Agent::new(config).unwrap();
    let handled = node.sync().await.unwrap();
    assert_eq!(handled, vec![Handled::Deployed { service: "wohngeld-nrw".into(), version: "1.0.0".into() }]);
    let rendered =
        std::fs::read_to_string(node.config().deploy_dir.join("wohngeld-nrw/current/config/payment.toml")).unwrap();
    assert!(rendered.contains("fee_cents = 0"), "{rendered}");
}

/// A Land's tooling, in Python only, rolls a release out ring by ring: it publishes it with
/// a pilot ring in the header, reads the rollout as operator and Kommunen, gets every
/// hostile plan and move refused with the right code (a bad plan in the header before any
/// content, leaving no release), promotes it, deprecates the service and recalls the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_deprecation_and_recall_driven_from_python_reach_every_reader() {
    let install = format!("python3 -m pip install -r {REQUIREMENTS}");
    let ready = match python_ready().await {
        Ok(()) => python_has("cryptography").await,
        e => e,
    };
    if !efa_testkit::tools::check("python_rollout", ready, &install) {
        return;
    }
    const BAYERN: &str = "09";
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.register(NRW, "wohngeld-plus", "10092").await.unwrap();
    let bundle = w.standard_bundle("1.1.0");

    let mut args: Vec<std::ffi::OsString> = vec!["--addr".into(), w.fed.url().into()];
    args.extend(tls_args(&w.fed.client_tls(&land(NRW)).unwrap()));
    args.extend(["--signing-key".into(), w.fed.signing_key_file(&NRW.parse().unwrap()).unwrap().into_os_string()]);
    args.extend(
        ["--land", NRW, "--service", "wohngeld-nrw", "--version", "1.1.0", "--plain-version", "1.2.0"].map(Into::into),
    );
    args.extend(["--bundle".into(), bundle.into_os_string(), "--successor".into(), "wohngeld-plus".into()]);
    for (who, id) in [
        ("pilot", kommune(DORTMUND)),
        ("outside", kommune(ESSEN)),
        ("operator", operator()),
        ("other-land", land(BAYERN)),
    ] {
        let tls = w.fed.client_tls(&id).unwrap();
        args.extend([format!("--{who}-cert").into(), tls.cert.into_os_string()]);
        args.extend([format!("--{who}-key").into(), tls.key.into_os_string()]);
    }
    let stdout = run_python("tests/python/efa_rollout.py", &args).await;
    assert!(stdout.contains("OK: rollout, deprecation and recall from Python"), "{stdout}");

    // The hub's own records agree with what the Python client read.
    let reg = w.fed.registry().unwrap();
    let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
    let rollout = reg.rollout(&sid, &"1.1.0".parse().unwrap()).unwrap().expect("the plan stored with 1.1.0");
    assert_eq!((rollout.open, rollout.status), (1, efa_domain::model::rollout::Status::Complete));
    assert_eq!(rollout.plan.rings.len(), 1);
    assert!(reg.rollout(&sid, &"1.2.0".parse().unwrap()).unwrap().is_none(), "no refused plan was stored");
    let releases = ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .list_releases(pb::ListReleasesRequest { service_id: "wohngeld-nrw".into(), channel: String::new() })
        .await
        .unwrap()
        .into_inner()
        .releases;
    let seen: Vec<_> = releases.iter().map(|r| (r.version.as_str(), r.yanked, r.recalled)).collect();
    assert_eq!(seen, [("1.2.0", false, false), ("1.1.0", true, true)]);
    let service = CatalogServiceClient::new(w.channel(&kommune(ESSEN)).await)
        .get_service(pb::GetServiceRequest { id: "wohngeld-nrw".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(service.deprecated.map(|d| d.successor_id), Some("wohngeld-plus".to_string()));
}

/// `--ca/--cert/--key` for a client certificate.
fn tls_args(tls: &efa_proto::tls::ClientTlsFiles) -> Vec<std::ffi::OsString> {
    vec![
        "--ca".into(),
        tls.ca.clone().into_os_string(),
        "--cert".into(),
        tls.cert.clone().into_os_string(),
        "--key".into(),
        tls.key.clone().into_os_string(),
    ]
}

/// Runs a Python script of the repo with `args`, prints its output and returns its
/// stdout; fails the test if it fails or takes longer than 120 s.
async fn run_python(script: &str, args: &[std::ffi::OsString]) -> String {
    let root = repo_root();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.current_dir(&root)
        .arg(root.join(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within 120 s"))
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- {script} stdout\n{stdout}--- stderr\n{stderr}---");
    assert!(out.status.success(), "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout.into_owned()
}

async fn python_has(module: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("python3 lacks {module}"))
    }
}

/// An outside audit of the transparency log in Python, written from the specifications
/// alone (C2SP signed-note, tlog-checkpoint, tlog-tiles, tlog-cosignature; RFC 6962/9162)
/// with hashlib and `cryptography`: it checks the log's signature, recomputes the root from
/// every entry bundle, checks the hash tiles, the leaves, inclusion and consistency proofs
/// and the refusals, and witnesses the checkpoint as a Land. So the Rust hashing and formats
/// are cross-checked by code that shares nothing with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_auditor_verifies_the_transparency_log() {
    use efa_proto::v1::log_service_client::LogServiceClient;
    let install = format!("python3 -m pip install -r {REQUIREMENTS}");
    let ready = match python_ready().await {
        Ok(()) => python_has("cryptography").await,
        e => e,
    };
    if !efa_testkit::tools::check("python_log", ready, &install) {
        return;
    }
    const BAYERN: &str = "09";
    const LEAVES: u64 = 256 + 7;
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().all(|h| !h.is_failure()), "{handled:?}");
    // More reports, so the tree passes 256 leaves: a full entry bundle and hash tile, a
    // partial one after it, and a level-1 hash tile.
    let reg = w.fed.registry().unwrap();
    let dortmund = w.channel(&kommune(DORTMUND)).await;
    for i in reg.head_seq().unwrap()..LEAVES {
        let state = if i % 2 == 0 { pb::AdoptionState::Evaluating } else { pb::AdoptionState::Deployed };
        report_on(dortmund.clone(), "wohngeld-nrw", "1.0.0", state).await;
    }
    // Every event so far, the node's reports among them, is in a signed checkpoint.
    let head = reg.head_seq().unwrap();
    assert_eq!(head, LEAVES);
    let mut log = LogServiceClient::new(w.channel(&operator()).await);
    let mut signed = 0;
    for _ in 0..100 {
        let note = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map(|cp| cp.into_inner().note);
        signed = note.map(|n| efa_tlog::checkpoint::peek(&n).unwrap().1).unwrap_or(0);
        if signed >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(signed, head, "the log holds one leaf per event, all of them signed");
    let note = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
    let (size, root) = (signed, String::from_utf8(note).unwrap().lines().nth(2).unwrap().to_string());
    let adoptions = reg
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, efa_domain::model::event::EventKind::AdoptionReported(_)))
        .count() as u64;
    assert!(adoptions >= 2 + 250, "the node's evaluating and deployed, and the reports sent here");

    let log_key = w.fed.log_key().unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["--addr".into(), w.fed.url().into()];
    args.extend(tls_args(&w.fed.client_tls(&kommune(DORTMUND)).unwrap()));
    args.extend(["--log-key".into(), log_key.clone().into()]);
    let bayern = w.fed.client_tls(&land(BAYERN)).unwrap();
    args.extend(["--land-cert".into(), bayern.cert.into_os_string()]);
    args.extend(["--land-key".into(), bayern.key.into_os_string()]);
    let stdout = run_python("tests/python/efa_log.py", &args).await;

    let summary = stdout.lines().find(|l| l.starts_with("log ok: ")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(summary.starts_with(&format!("log ok: size {size}, root {root}, ")), "{summary}");
    let count = |what: &str| -> u64 {
        let before = summary.split(&format!(" {what}")).next().unwrap_or("");
        before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no {what} in {summary}"))
    };
    assert_eq!(count("adoption leaves"), adoptions, "{summary}");
    assert!(count("proofs checked") >= 10, "{summary}");

    // The cosignature the Python witness made is one the Rust side verifies too.
    let witness = stdout
        .lines()
        .find_map(|l| l.strip_prefix("witness key: "))
        .unwrap_or_else(|| panic!("no witness key in:\n{stdout}"));
    let note = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
    let trust = efa_tlog::checkpoint::Trust::new(&log_key).unwrap().with_witnesses(&[witness.to_string()], 1).unwrap();
    let cp = trust.open(&note).expect("the checkpoint with the Python witness's cosignature opens");
    assert_eq!((cp.size, cp.witnesses.len()), (size, 1));

    // And it is no rubber stamp: under another key of the same name it refuses the log.
    let (_, other_key) = efa_tlog::checkpoint::LogSigner::generate(log_key.split('+').next().unwrap()).unwrap();
    let position = args.iter().position(|a| a == "--log-key").unwrap() + 1;
    args[position] = other_key.into();
    let root_dir = repo_root();
    let out = tokio::process::Command::new("python3")
        .current_dir(&root_dir)
        .arg(root_dir.join("tests/python/efa_log.py"))
        .args(&args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no signature by the log key"), "{stderr}");
}
