//! Deploy, rollback and recovery against real temp directories.

use super::*;
use efa_domain::bundle::{BundleLimits, BundlePath, FileEntry};
use efa_domain::model::ids::Channel;
use std::fs;
use std::time::Instant;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    service: ServiceId,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("deploy");
        let cache = tmp.path().join("cache");
        fs::create_dir_all(&cache).unwrap();
        Env { _tmp: tmp, root, cache, service: "wohngeld-nrw".parse().unwrap() }
    }

    fn deployer(&self, keep: usize) -> Deployer {
        Deployer::new(&self.root, keep).with_health_timeout(Duration::from_millis(200))
    }

    /// Writes each file's content into the cache and builds a manifest for it.
    fn manifest(&self, version: &str, files: &[(&str, &str)]) -> Manifest {
        let mut entries: Vec<FileEntry> = files
            .iter()
            .map(|(path, content)| {
                let digest = Digest::of(content.as_bytes());
                fs::write(self.cache.join(digest.hex()), content).unwrap();
                FileEntry {
                    chunks: vec![],
                    path: BundlePath::parse(path, &BundleLimits::default()).unwrap(),
                    size: content.len() as u64,
                    digest,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest {
            format: 1,
            service_id: self.service.clone(),
            version: version.into(),
            channel: Channel::stable(),
            land: "05".parse().unwrap(),
            created_at_ms: 0,
            parameters: None,
            files: entries,
        }
    }

    fn deploy_with(
        &self,
        d: &Deployer,
        m: &Manifest,
        params: &BTreeMap<String, ParamValue>,
        health: Option<&str>,
    ) -> Result<DeployOutcome, DeployError> {
        let cache = self.cache.clone();
        let blob_path = move |dg: &Digest| cache.join(dg.hex());
        let digest = Manifest::content_digest(&m.to_bytes());
        d.deploy(&DeployRequest {
            service: &self.service,
            manifest: m,
            content_digest: &digest,
            blob_path: &blob_path,
            params,
            health_command: health,
        })
    }

    fn deploy(&self, d: &Deployer, version: &str, health: Option<&str>) -> Result<DeployOutcome, DeployError> {
        let m = self.manifest(version, &[("app.txt", version), ("www/index.html", "<h1>hi</h1>")]);
        self.deploy_with(d, &m, &BTreeMap::new(), health)
    }

    fn sdir(&self) -> PathBuf {
        self.root.join(self.service.as_str())
    }

    fn current(&self, d: &Deployer) -> Option<String> {
        d.current_version(&self.service).unwrap()
    }

    /// Names of scratch entries in the service dir (should be empty after any deploy).
    fn scratch(&self) -> Vec<String> {
        fs::read_dir(self.sdir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.starts_with(CURRENT_NEW))
            .collect()
    }
}

fn deployed(version: &str, previous: Option<&str>) -> DeployOutcome {
    DeployOutcome::Deployed { version: version.into(), previous: previous.map(Into::into) }
}

#[test]
fn deploying_v2_moves_current_and_keeps_v1() {
    let env = Env::new();
    let d = env.deployer(5);
    assert_eq!(env.deploy(&d, "1.0.0", None).unwrap(), deployed("1.0.0", None));
    assert_eq!(env.deploy(&d, "2.0.0", None).unwrap(), deployed("2.0.0", Some("1.0.0")));
    assert_eq!(env.current(&d).as_deref(), Some("2.0.0"));
    assert_eq!(fs::read_link(env.sdir().join("current")).unwrap(), PathBuf::from("2.0.0"));
    assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "2.0.0");
    assert_eq!(fs::read_to_string(env.sdir().join("1.0.0/www/index.html")).unwrap(), "<h1>hi</h1>");
    let record: ReleaseRecord =
        serde_json::from_slice(&fs::read(env.sdir().join("2.0.0/.efa/release.json")).unwrap()).unwrap();
    assert_eq!((record.service.as_str(), record.version.as_str()), ("wohngeld-nrw", "2.0.0"));
    assert!(record.content_digest.starts_with("sha256:"));
    assert!(env.sdir().join("2.0.0/.efa/parameters.json").is_file());
    let installed: Vec<String> = d.installed_versions(&env.service).unwrap().iter().map(|v| v.to_string()).collect();
    assert_eq!(installed, ["1.0.0", "2.0.0"]);
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn a_switch_whose_health_check_never_finished_is_rolled_back_on_recovery() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    env.deploy(&d, "2.0.0", Some("true")).unwrap();
    assert!(!env.sdir().join("2.0.0/.efa/unconfirmed").exists(), "a passed check clears the marker");
    // The state a crash during 2.0.0's health check leaves: switched, marker still there.
    fs::write(env.sdir().join("2.0.0/.efa/unconfirmed"), "1.0.0").unwrap();
    let report = d.recover().unwrap();
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    assert!(!env.sdir().join("2.0.0").exists());
    assert_eq!(report.restored, vec![env.sdir().join("2.0.0")]);
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    // A first install interrupted the same way leaves nothing serving.
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    fs::write(env.sdir().join("1.0.0/.efa/unconfirmed"), "").unwrap();
    d.recover().unwrap();
    assert_eq!(env.current(&d), None);
}

#[test]
fn templates_are_rendered_and_a_missing_parameter_changes_nothing() {
    let env = Env::new();
    let d = env.deployer(5);
    let m = env.manifest("1.0.0", &[("config/app.toml.tmpl", "fee = {{ fee_cents }}\nurl = \"{{ privacy_url }}\"\n")]);
    let params = BTreeMap::from([
        ("fee_cents".to_string(), ParamValue::Integer(1250)),
        ("privacy_url".to_string(), ParamValue::Text("https://dortmund.de/ds".into())),
    ]);
    env.deploy_with(&d, &m, &params, None).unwrap();
    let v1 = env.sdir().join("1.0.0");
    assert_eq!(
        fs::read_to_string(v1.join("config/app.toml")).unwrap(),
        "fee = 1250\nurl = \"https://dortmund.de/ds\"\n"
    );
    assert!(!v1.join("config/app.toml.tmpl").exists());
    let stored: BTreeMap<String, ParamValue> =
        serde_json::from_slice(&fs::read(v1.join(".efa/parameters.json")).unwrap()).unwrap();
    assert_eq!(stored, params);

    let m2 = env.manifest("2.0.0", &[("config/app.toml.tmpl", "fee = {{ fee_cents }} {{ iban }}")]);
    let err = env.deploy_with(&d, &m2, &params, None).unwrap_err();
    assert!(matches!(&err, DeployError::Template { file, .. } if file == "config/app.toml.tmpl"), "{err}");
    assert!(err.to_string().contains("iban"), "{err}");
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    assert!(!env.sdir().join("2.0.0").exists());
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn template_target_clash_is_refused() {
    let env = Env::new();
    let m = env.manifest("1.0.0", &[("a.conf", "x"), ("a.conf.tmpl", "y")]);
    let err = env.deploy_with(&env.deployer(5), &m, &BTreeMap::new(), None).unwrap_err();
    assert!(matches!(err, DeployError::TemplateTargetExists { .. }), "{err}");
}

#[test]
fn a_tampered_cache_blob_fails_and_v1_stays_current() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    let m = env.manifest("2.0.0", &[("app.txt", "good"), ("z.txt", "fine")]);
    // Same size, different content.
    fs::write(env.cache.join(Digest::of(b"good").hex()), "evil").unwrap();
    let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
    assert!(matches!(&err, DeployError::DigestMismatch { file, .. } if file == "app.txt"), "{err}");
    assert!(err.to_string().contains("app.txt"));
    // Different size.
    fs::write(env.cache.join(Digest::of(b"good").hex()), "good and then some").unwrap();
    let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
    assert!(matches!(&err, DeployError::SizeMismatch { expected: 4, .. }), "{err}");
    // Missing blob.
    fs::remove_file(env.cache.join(Digest::of(b"good").hex())).unwrap();
    let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
    assert!(matches!(err, DeployError::Io { .. }), "{err}");

    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    assert!(!env.sdir().join("2.0.0").exists());
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn failing_health_command_rolls_back_to_v1() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    let out = env.deploy(&d, "2.0.0", Some("echo database unreachable >&2; exit 3")).unwrap();
    let DeployOutcome::RolledBack { failed_version, restored, reason } = out else { panic!("{out:?}") };
    assert_eq!((failed_version.as_str(), restored.as_deref()), ("2.0.0", Some("1.0.0")));
    assert!(reason.contains('3') && reason.contains("database unreachable"), "{reason}");
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    assert!(!env.sdir().join("2.0.0").exists());
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn health_command_sees_its_environment() {
    let env = Env::new();
    let d = env.deployer(5);
    let check = r#"test "$EFA_SERVICE" = wohngeld-nrw && test "$EFA_VERSION" = 1.0.0 && test -f app.txt && test -f "$EFA_DEPLOY_DIR/.efa/release.json""#;
    assert_eq!(env.deploy(&d, "1.0.0", Some(check)).unwrap(), deployed("1.0.0", None));
}

#[test]
fn health_timeout_rolls_back_and_kills_the_command() {
    let env = Env::new();
    let d = env.deployer(5);
    let started = Instant::now();
    let out = env.deploy(&d, "1.0.0", Some("sleep 5; sleep 5")).unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let DeployOutcome::RolledBack { restored, reason, .. } = out else { panic!("{out:?}") };
    assert_eq!(restored, None);
    assert!(reason.contains("timed out"), "{reason}");
    assert_eq!(env.current(&d), None);
    assert!(!env.sdir().join("1.0.0").exists());
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn failed_redeploy_of_the_same_version_restores_the_old_copy() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    let m = env.manifest("1.0.0", &[("app.txt", "broken build")]);
    let out = env.deploy_with(&d, &m, &BTreeMap::new(), Some("exit 1")).unwrap();
    assert!(matches!(&out, DeployOutcome::RolledBack { restored: Some(v), .. } if v == "1.0.0"), "{out:?}");
    assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "1.0.0");
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    // And a healthy redeploy replaces it.
    env.deploy_with(&d, &m, &BTreeMap::new(), Some("true")).unwrap();
    assert_eq!(fs::read_to_string(env.sdir().join("current/app.txt")).unwrap(), "broken build");
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn retention_keeps_the_newest_n() {
    let env = Env::new();
    let d = env.deployer(2);
    let installed =
        || -> Vec<String> { d.installed_versions(&env.service).unwrap().iter().map(|v| v.to_string()).collect() };
    // Semver order, not lexical: 1.10.0 is newer than 1.2.0.
    for v in ["1.0.0", "1.2.0", "1.10.0", "2.0.0"] {
        env.deploy(&d, v, None).unwrap();
    }
    assert_eq!(installed(), ["1.10.0", "2.0.0"]);
    // An older version deployed on purpose is kept as current, and so is the one it replaced.
    env.deploy(&d, "0.9.0", None).unwrap();
    assert_eq!(installed(), ["0.9.0", "1.10.0", "2.0.0"]);
    // The replaced one survives even though it is not among the newest two.
    env.deploy(&d, "3.0.0", None).unwrap();
    assert_eq!(installed(), ["0.9.0", "2.0.0", "3.0.0"]);
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
}

#[test]
fn recover_removes_leftovers_and_restores_set_aside_versions() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    let sdir = env.sdir();
    fs::create_dir_all(sdir.join(".staging-2.0.0-1x2x3/www")).unwrap();
    fs::write(sdir.join(".staging-2.0.0-1x2x3/www/index.html"), "x").unwrap();
    std::os::unix::fs::symlink("2.0.0", sdir.join("current.new-1x2x4")).unwrap();
    fs::write(sdir.join(".health-1x2x5.log"), "x").unwrap();
    // Set aside, and the replacement is in place: the old copy goes.
    fs::create_dir(sdir.join(".replaced-1.0.0-1x2x6")).unwrap();
    // Set aside, and the crash came before the replacement arrived: it comes back.
    fs::create_dir(sdir.join(".replaced-3.0.0-rc.1-1x2x7")).unwrap();

    let report = d.recover().unwrap();
    let mut removed: Vec<String> =
        report.removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    removed.sort();
    assert_eq!(removed, [".health-1x2x5.log", ".replaced-1.0.0-1x2x6", ".staging-2.0.0-1x2x3", "current.new-1x2x4"]);
    assert_eq!(report.restored, [sdir.join("3.0.0-rc.1")]);
    assert!(env.scratch().is_empty(), "{:?}", env.scratch());
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    assert_eq!(d.recover().unwrap(), RecoveryReport::default());
    assert_eq!(Deployer::new(env.root.join("missing"), 1).recover().unwrap(), RecoveryReport::default());
}

#[test]
fn switch_to_and_retire() {
    let env = Env::new();
    let d = env.deployer(5);
    env.deploy(&d, "1.0.0", None).unwrap();
    env.deploy(&d, "2.0.0", None).unwrap();
    assert_eq!(d.switch_to(&env.service, "1.0.0").unwrap().as_deref(), Some("2.0.0"));
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));
    for bad in ["9.9.9", "../1.0.0", "current", ""] {
        let err = d.switch_to(&env.service, bad).unwrap_err();
        assert!(matches!(err, DeployError::UnknownVersion { .. }), "{bad}: {err}");
    }
    assert!(d.switch_to(&env.service, "9.9.9").unwrap_err().to_string().contains("1.0.0, 2.0.0"));
    assert_eq!(env.current(&d).as_deref(), Some("1.0.0"));

    d.retire(&env.service).unwrap();
    assert_eq!(env.current(&d), None);
    assert_eq!(d.installed_versions(&env.service).unwrap().len(), 2);
    d.retire(&env.service).unwrap();
    let other: ServiceId = "never-deployed".parse().unwrap();
    d.retire(&other).unwrap();
    assert_eq!(d.current_version(&other).unwrap(), None);
    assert!(d.switch_to(&other, "1.0.0").unwrap_err().to_string().contains("none"));
}

#[test]
fn reserved_paths_and_service_mismatch_are_refused() {
    let env = Env::new();
    let d = env.deployer(5);
    for path in [".efa/release.json", ".efa.tmpl", ".efa/x.tmpl"] {
        let m = env.manifest("1.0.0", &[(path, "{}")]);
        let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, DeployError::ReservedPath { .. }), "{path}: {err}");
    }
    let mut m = env.manifest("1.0.0", &[("a", "b")]);
    m.service_id = "other-service".parse().unwrap();
    let err = env.deploy_with(&d, &m, &BTreeMap::new(), None).unwrap_err();
    assert!(matches!(err, DeployError::ServiceMismatch { .. }), "{err}");
    assert!(!env.root.join("wohngeld-nrw/1.0.0").exists());
    assert_eq!(env.current(&d), None);
}
