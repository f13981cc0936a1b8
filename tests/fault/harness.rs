//! Process harness for the fault suite: builds the real `efa-hub` and `efa-node` binaries,
//! runs them as child processes on loopback with a dev PKI, kills them with SIGKILL and
//! restarts them on the same data. Every child sits in a [`ChildGuard`], so a failing test
//! never leaves processes behind, and its log tail is printed when a test panics.

use efa_cli::publish::{build_signed_manifest, publish_raw, PublishError, PublishSpec};
use efa_domain::authz::Identity;
use efa_domain::bundle::Digest;
use efa_domain::model::rollout::RolloutPlan;
use efa_domain::signing::SigningKey;
use efa_proto::tls::ClientTlsFiles;
use efa_proto::v1 as pb;
use efa_tests::{CatalogServiceClient, ReportServiceClient, SubscriptionServiceClient, NRW};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const SERVICE: &str = "wohngeld-nrw";
/// OZG-ID of Wohngeld in the OZG catalogue.
pub const WOHNGELD_OZG: &str = "10092";

/// `EFA_SOAK=1` selects the long variant.
pub fn soak() -> bool {
    std::env::var("EFA_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// How many fault cycles to run: `ci` normally, `soak` with `EFA_SOAK=1`, or exactly
/// `EFA_FAULT_CYCLES` when set.
pub fn cycles(ci: usize, soak_cycles: usize) -> usize {
    if let Some(n) = std::env::var("EFA_FAULT_CYCLES").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if soak() {
        soak_cycles
    } else {
        ci
    }
}

// ------------------------------------------------------------------ randomness, waiting, bundles

pub use efa_testkit::bundle::{rendered, write as write_bundle, Files};
pub use efa_testkit::wait::wait_for;
pub use efa_testkit::Rng;

// ------------------------------------------------------------------ binaries

pub struct Bins {
    pub hub: PathBuf,
    pub node: PathBuf,
}

/// The `efa-hub` and `efa-node` binaries of this workspace, built once per test process
/// with the profile this test binary was built with (`cargo` does nothing when they are
/// up to date, and always building means a fault run never tests stale code).
/// `EFA_HUB_BIN` and `EFA_NODE_BIN` point at prebuilt binaries instead.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        if let (Ok(hub), Ok(node)) = (std::env::var("EFA_HUB_BIN"), std::env::var("EFA_NODE_BIN")) {
            return Bins { hub: hub.into(), node: node.into() };
        }
        let profile_dir = efa_testkit::bins::build(&["efa-hub", "efa-node"]);
        let bins = Bins { hub: profile_dir.join("efa-hub"), node: profile_dir.join("efa-node") };
        for b in [&bins.hub, &bins.node] {
            assert!(b.is_file(), "{} missing after cargo build", b.display());
        }
        bins
    })
}

// ------------------------------------------------------------------ processes

/// A child process that is SIGKILLed when dropped. When the test is panicking, the tail
/// of its log is printed first.
pub struct ChildGuard {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> ChildGuard {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("log file")).stderr(file);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for a normal exit, failing the test after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("{} did not finish within {timeout:?}; log tail:\n{}", self.name, log_tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) log tail, {}:\n{}",
                self.name,
                self.pid(),
                self.log.display(),
                log_tail(&self.log)
            );
        }
        self.kill_now();
    }
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

// ------------------------------------------------------------------ PKI

/// The dev PKI of one test, made with `efa_hub::pki` (the code behind `efa-hub pki`).
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Pki {
        efa_hub::pki::init(&dir, &[]).expect("pki init");
        Pki { dir }
    }

    /// Client certificate files for `id`, issued on first use.
    pub fn tls(&self, id: &Identity) -> ClientTlsFiles {
        let stem = id.file_stem();
        let (cert, key) = (self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}.key")));
        if !cert.exists() {
            efa_hub::pki::issue(&self.dir, id, &id.to_uri()).expect("pki issue");
        }
        ClientTlsFiles { ca: self.dir.join("ca.pem"), cert, key }
    }
}

pub fn land() -> Identity {
    Identity::Land(NRW.parse().unwrap())
}

pub fn kommune(ags: &str) -> Identity {
    Identity::Kommune(ags.parse().unwrap())
}

pub fn operator() -> Identity {
    Identity::Operator("fault-suite".into())
}

// ------------------------------------------------------------------ hub

/// `efa-hub serve` as a child process on a fixed loopback port, restartable on the same
/// data dir (`db/` and `blobs/`).
pub struct HubProc {
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub pki: Pki,
    pub child: Option<ChildGuard>,
    pub starts: usize,
    pub kills: usize,
    /// Further `efa-hub serve` arguments (e.g. `--store postgres://…`).
    pub extra_args: Vec<String>,
}

impl HubProc {
    /// Creates the PKI under `root/pki` and picks a port; does not start the hub.
    pub fn new(root: &Path) -> HubProc {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        HubProc {
            root: root.to_path_buf(),
            addr,
            data_dir: root.join("hub-data"),
            pki: Pki::new(root.join("pki")),
            child: None,
            starts: 0,
            kills: 0,
            extra_args: Vec::new(),
        }
    }

    /// Another replica of this hub: same certificates and data dir, its own port.
    pub fn replica(&self) -> HubProc {
        let root = self.root.join(format!("replica-{}", free_port()));
        std::fs::create_dir_all(root.join("logs")).unwrap();
        HubProc {
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            pki: Pki { dir: self.pki.dir.clone() },
            child: None,
            starts: 0,
            kills: 0,
            root,
            data_dir: self.data_dir.clone(),
            extra_args: self.extra_args.clone(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Makes the hub start with `--config root/hub.toml` holding `keys` (top-level keys as in
    /// `hub/hub.example.toml`, e.g. `rollout_round_ms = 50`) and this test's `[tls]`; the
    /// command-line flags still set the address, data dir and certificates.
    pub fn with_config(&mut self, keys: &str) {
        let path = self.root.join("hub.toml");
        let pem = |name: &str| toml_str(&self.pki.dir.join(name).to_string_lossy());
        let text = format!(
            "{keys}\n[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
            pem("hub.pem"),
            pem("hub.key"),
            pem("ca.pem")
        );
        std::fs::write(&path, text).unwrap();
        self.extra_args.extend(["--config".to_string(), path.to_string_lossy().into_owned()]);
    }

    /// Starts the hub process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        let bins = bins();
        let mut cmd = Command::new(&bins.hub);
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cert")
            .arg(self.pki.dir.join("hub.pem"))
            .arg("--key")
            .arg(self.pki.dir.join("hub.key"))
            .arg("--client-ca")
            .arg(self.pki.dir.join("ca.pem"))
            .args(&self.extra_args);
        self.starts += 1;
        let log = self.root.join("logs").join(format!("hub-{}.log", self.starts));
        self.child = Some(ChildGuard::spawn("efa-hub", cmd, log));
    }

    /// Starts the hub and waits until it answers a health check over mTLS.
    pub async fn start(&mut self) {
        self.spawn();
        let tls = self.pki.tls(&operator());
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.exited() {
                panic!("efa-hub exited during start ({status}); log:\n{}", log_tail(&child.log));
            }
            if let Ok(ch) = efa_proto::tls::connect(&url, Some(&tls)).await {
                let health = tonic_health::pb::health_client::HealthClient::new(ch)
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await;
                if health.is_ok_and(|h| {
                    h.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                }) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("efa-hub did not become ready at {url}; log:\n{}", log_tail(&child.log));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL: no shutdown path runs, nothing is flushed that was not flushed already.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill();
            self.kills += 1;
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    pub fn tls(&self, id: &Identity) -> ClientTlsFiles {
        self.pki.tls(id)
    }

    pub async fn channel(&self, id: &Identity) -> Channel {
        efa_proto::tls::connect(&self.url(), Some(&self.tls(id))).await.expect("mTLS connect to the hub")
    }

    /// A channel that connects on first use (for writers that must survive a dead hub).
    pub fn lazy_channel(&self, id: &Identity) -> Channel {
        efa_proto::tls::endpoint(&self.url(), Some(&self.tls(id)))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    /// Registers the Wohngeld service of NRW with the standard parameter schema.
    pub async fn register_service(&self) {
        CatalogServiceClient::new(self.channel(&land()).await)
            .register_service(pb::RegisterServiceRequest {
                id: SERVICE.into(),
                ozg_id: WOHNGELD_OZG.into(),
                leistungsschluessel: String::new(),
                title: "Wohngeld".into(),
                description: "Antrag auf Wohngeld (Mietzuschuss)".into(),
                parameters: efa_tests::standard_parameters(),
                adoption_public: false,
                more_leistungsschluessel: vec![],
            })
            .await
            .expect("register service");
    }

    /// Subscribes a Kommune to the service directly (as its node would).
    pub async fn subscribe(&self, ags: &str) {
        SubscriptionServiceClient::new(self.channel(&kommune(ags)).await)
            .subscribe(pb::SubscribeRequest {
                target: Some(pb::SubscriptionTarget {
                    target: Some(pb::subscription_target::Target::ServiceId(SERVICE.into())),
                }),
                channel: "stable".into(),
                policy: pb::UpdatePolicy::Auto as i32,
            })
            .await
            .expect("subscribe");
    }

    /// Every adoption state change of a Kommune, oldest first, as an operator reads it.
    pub async fn history(&self, ags: &str) -> Vec<pb::AdoptionRecord> {
        ReportServiceClient::new(self.channel(&operator()).await)
            .kommune_history(pb::KommuneHistoryRequest { ags: ags.into() })
            .await
            .expect("kommune history")
            .into_inner()
            .history
    }

    /// Release events a Kommune receives from `WatchEvents(after_seq)` up to `CaughtUp`:
    /// `(seq, version)` pairs and the head the hub reported.
    pub async fn watch_releases(&self, ags: &str, after_seq: u64) -> (Vec<(u64, String)>, u64) {
        use tokio_stream::StreamExt;
        let mut stream = SubscriptionServiceClient::new(self.channel(&kommune(ags)).await)
            .watch_events(pb::WatchEventsRequest { after_seq })
            .await
            .expect("watch events")
            .into_inner();
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            let event = next.expect("event stream stalled").expect("event stream ended early").expect("event");
            match event.kind {
                Some(pb::event::Kind::ReleasePublished(r)) => out.push((event.seq, r.version)),
                Some(pb::event::Kind::ReleaseYanked(r)) => out.push((event.seq, format!("yanked {}", r.version))),
                Some(pb::event::Kind::CaughtUp(c)) => return (out, c.head_seq),
                None => panic!("event without kind at seq {}", event.seq),
            }
        }
    }
}

// ------------------------------------------------------------------ bundles

/// A Wohngeld bundle for `version` with a parameter template, a health marker and
/// `blobs` binary assets of `blob_size` bytes (content derived from `version`).
pub fn wohngeld_bundle(version: &str, healthy: bool, blobs: usize, blob_size: usize) -> Files {
    let mut files = Files::new();
    files.insert("index.html".into(), format!("<h1>Wohngeld</h1><p>Version {version}</p>\n").into_bytes());
    files.insert("forms/antrag.json".into(), br#"{"fields":["name","anschrift","miete"]}"#.to_vec());
    files.insert(
        "config/payment.toml.tmpl".into(),
        format!("purpose = \"{{{{ payment_purpose }}}}\"\nfee_cents = {{{{ fee_cents }}}}\nrelease = \"{version}\"\n")
            .into_bytes(),
    );
    files.insert("status.txt".into(), if healthy { b"healthy\n".to_vec() } else { b"broken\n".to_vec() });
    let mut rng = Rng::from_text(version);
    for i in 0..blobs {
        files.insert(format!("assets/part-{i:02}.bin"), rng.bytes(blob_size));
    }
    files
}

/// Publishes `dir` as `version` of the service, signed with `key`. Returns once the hub
/// acknowledged the release (the snapshot is not refreshed, so the ack is exactly the
/// `PublishRelease` answer).
pub async fn publish(
    channel: Channel,
    key: &SigningKey,
    version: &str,
    dir: &Path,
) -> Result<pb::ReleaseInfo, PublishError> {
    let spec = PublishSpec {
        dir,
        service_id: SERVICE.parse().unwrap(),
        version: version.into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: format!("Wohngeld {version}"),
        signing_key: key,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec)?;
    publish_raw(channel, signed.manifest, signed.signature, spec.release_notes, signed.files, |_, _| {}).await
}

/// Publishes with `efa_cli::publish::publish_dir`, the path `efa publish` takes (release,
/// then the Land's signed snapshot).
pub async fn publish_dir(
    hub: &HubProc,
    key: &SigningKey,
    version: &str,
    dir: &Path,
) -> Result<pb::ReleaseInfo, PublishError> {
    publish_dir_with_plan(hub, key, version, dir, None).await
}

/// [`publish_dir`] with a rollout plan in the publish header: the release and its rollout
/// (first ring open) are stored in one transaction.
pub async fn publish_dir_with_plan(
    hub: &HubProc,
    key: &SigningKey,
    version: &str,
    dir: &Path,
    rollout: Option<RolloutPlan>,
) -> Result<pb::ReleaseInfo, PublishError> {
    let spec = PublishSpec {
        dir,
        service_id: SERVICE.parse().unwrap(),
        version: version.into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: format!("Wohngeld {version}"),
        signing_key: key,
        rollout,
    };
    efa_cli::publish::publish_dir(hub.channel(&land()).await, spec, |_, _| {}).await
}

pub fn digest_of_file(path: &Path) -> Option<Digest> {
    std::fs::read(path).ok().map(|b| Digest::of(&b))
}

// ------------------------------------------------------------------ node

/// One Kommune's `efa-node`: its config file, state and deploy dirs.
pub struct NodeProc {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub deploy_dir: PathBuf,
    pub root: PathBuf,
    pub runs: usize,
}

/// The Kommune parameters every fault-suite node uses for the Wohngeld service.
pub const PAYMENT_PURPOSE: &str = "Wohngeld Dortmund";
pub const FEE_CENTS: &str = "1250";

pub fn node_params() -> [(&'static str, &'static str); 2] {
    [("payment_purpose", PAYMENT_PURPOSE), ("fee_cents", FEE_CENTS)]
}

fn toml_str(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::to_string(s).unwrap()
}

impl NodeProc {
    /// Writes `root/node.toml` in the documented format (see `efa_node::config`): auto
    /// policy for the Wohngeld service, NRW's release key pinned, mTLS as the Kommune.
    pub fn new(hub: &HubProc, root: &Path, ags: &str, trusted: &str, health_command: Option<&str>) -> NodeProc {
        let tls = hub.tls(&kommune(ags));
        let (state_dir, deploy_dir) = (root.join("state"), root.join("deploy"));
        let mut text = format!(
            "ags = {ags}\nhub = {hub_url}\nstate_dir = {state}\ndeploy_dir = {deploy}\nkeep_versions = 3\n\
             health_timeout_secs = 30\n\n[tls]\nca = {ca}\ncert = {cert}\nkey = {key}\n\n[trust]\n\"{NRW}\" = [{trusted}]\n\n\
             [[subscriptions]]\nservice = \"{SERVICE}\"\nchannel = \"stable\"\npolicy = \"auto\"\n\n[services.{SERVICE}]\n",
            ags = toml_str(ags),
            hub_url = toml_str(&hub.url()),
            state = toml_str(&state_dir.to_string_lossy()),
            deploy = toml_str(&deploy_dir.to_string_lossy()),
            ca = toml_str(&tls.ca.to_string_lossy()),
            cert = toml_str(&tls.cert.to_string_lossy()),
            key = toml_str(&tls.key.to_string_lossy()),
            trusted = toml_str(trusted),
        );
        if let Some(cmd) = health_command {
            text.push_str(&format!("health_command = {}\n", toml_str(cmd)));
        }
        text.push_str(&format!(
            "[services.{SERVICE}.parameters]\npayment_purpose = {}\nfee_cents = {FEE_CENTS}\n",
            toml_str(PAYMENT_PURPOSE)
        ));
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let config = root.join("node.toml");
        std::fs::write(&config, text).unwrap();
        NodeProc { config, state_dir, deploy_dir, root: root.to_path_buf(), runs: 0 }
    }

    /// Starts `efa-node -c node.toml <command>` (`run` or `sync`).
    pub fn spawn(&mut self, command: &str) -> ChildGuard {
        self.runs += 1;
        let mut cmd = Command::new(&bins().node);
        cmd.arg("-c").arg(&self.config).arg(command);
        let log = self.root.join("logs").join(format!("node-{}-{command}.log", self.runs));
        ChildGuard::spawn(&format!("efa-node {command}"), cmd, log)
    }

    /// Runs `efa-node sync` to completion and requires success.
    pub async fn sync(&mut self) {
        let mut child = self.spawn("sync");
        let status = child.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "efa-node sync failed ({status}); log:\n{}", log_tail(&child.log));
    }

    pub fn service_dir(&self) -> PathBuf {
        self.deploy_dir.join(SERVICE)
    }

    /// Where `current` points, if it exists.
    pub fn current(&self) -> Option<String> {
        std::fs::read_link(self.service_dir().join("current")).ok().map(|t| t.to_string_lossy().into_owned())
    }

    /// The node's event cursor from `state.json`.
    pub fn cursor(&self) -> u64 {
        let bytes = std::fs::read(self.state_dir.join("state.json")).expect("state.json");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("state.json is JSON");
        v["cursor"].as_u64().expect("cursor")
    }

    /// Names in the service dir that only an interrupted deploy leaves behind.
    pub fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.service_dir()) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with(".staging-")
                    || n.starts_with(".replaced-")
                    || n.starts_with(".health-")
                    || n.starts_with("current.new-")
            })
            .collect()
    }
}

/// Checks that `dir` holds exactly the deployed form of `files` (plus the node's `.efa/`
/// metadata naming `version`). Returns what is wrong, if anything.
pub fn check_deployed(dir: &Path, version: &str, expected: &Files) -> Result<usize, String> {
    let mut found = Vec::new();
    collect_files(dir, dir, &mut found).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut checked = 0;
    for (path, bytes) in expected {
        let p = dir.join(path);
        match std::fs::read(&p) {
            Ok(actual) if &actual == bytes => checked += 1,
            Ok(actual) => {
                return Err(format!("{path}: {} bytes on disk, expected {} bytes", actual.len(), bytes.len()))
            }
            Err(e) => return Err(format!("{path} missing: {e}")),
        }
    }
    for f in &found {
        if !expected.contains_key(f) && !f.starts_with(".efa/") {
            return Err(format!("unexpected file {f}"));
        }
    }
    let record =
        std::fs::read_to_string(dir.join(".efa/release.json")).map_err(|e| format!(".efa/release.json: {e}"))?;
    let record: serde_json::Value = serde_json::from_str(&record).map_err(|e| format!(".efa/release.json: {e}"))?;
    if record["version"] != version {
        return Err(format!(".efa/release.json names version {}, expected {version}", record["version"]));
    }
    if !dir.join(".efa/parameters.json").is_file() {
        return Err(".efa/parameters.json missing".into());
    }
    Ok(checked)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    Ok(())
}
