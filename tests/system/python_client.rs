//! A non-Rust client works: a Python grpcio client, generated from `proto/` with the stock
//! `grpc_tools.protoc`, talks to a real hub over mTLS. This proves the API is plain gRPC.

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
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("python3 lacks the gRPC packages ({})", stderr.trim().lines().last().unwrap_or("no output")))
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

    let root = repo_root();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.current_dir(&root)
        .arg(root.join(SCRIPT))
        .arg("--addr")
        .arg(w.fed.url())
        .arg("--ca")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(["--service", "wohngeld-nrw", "--version", "1.0.0", "--timeout", "30"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the Python client finishes within 120 s")
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- python stdout\n{stdout}--- python stderr\n{stderr}---");
    assert!(out.status.success(), "Python client failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
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
