//! The node's TOML config: who it is, where the hub is, what it trusts, what it follows,
//! and the local parameters of each service.
//!
//! ```toml
//! ags = "05913000"                       # this Kommune (Dortmund)
//! hub = "https://hub.example:50051"
//! hubs = ["https://hub2.example:50051"]  # optional: further replicas of the same hub
//! state_dir = "/var/lib/efa-node"        # cursor, pending approvals, blob cache
//! deploy_dir = "/srv/efa"                # <service>/<version>/ and <service>/current
//! keep_versions = 3
//! health_timeout_secs = 60
//! max_staleness_secs = 86400             # status warns when the last sync is older
//! covers = []                            # a Kreis or Amt node: further Gemeinden it serves
//! metrics_listen = "127.0.0.1:9464"      # optional: Prometheus /metrics while running
//!
//! [tls]
//! ca = "/etc/efa/ca.pem"
//! cert = "/etc/efa/kommune-05913000.pem"
//! key = "/etc/efa/kommune-05913000.key"
//!
//! [trust]                                # release signing keys per Land code
//! "05" = ["efa-ed25519-public:..."]
//!
//! [[subscriptions]]
//! service = "wohngeld-nrw"               # or: themenfeld = "Familie & Kind"
//! channel = "stable"
//! policy = "auto"                        # auto | patch_only | manual
//!
//! [parameters]                           # for every service that declares them
//! datenschutz_url = "https://www.dortmund.example/datenschutz"
//!
//! [services.wohngeld-nrw]
//! health_command = "test -f index.html"
//! [services.wohngeld-nrw.parameters]
//! payment_purpose = "Wohngeld Dortmund"
//! ```

use crate::error::{NodeError, Result};
use efa_domain::model::catalog::Service;
use efa_domain::model::ids::{Ags, Channel, LandCode, ServiceId};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::model::subscription::{NewSubscription, SubscriptionTarget};
use efa_domain::params::ParamValue;
use efa_domain::signing::VerifyingKey;
use efa_proto::tls::ClientTlsFiles;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The node's config file, as documented at the top of this module.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The file it was read from, for messages that point at it (not a key in the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// This Kommune; the hub knows it by the AGS in its client certificate.
    pub ags: Ags,
    /// Further Gemeinden the deployments of this node serve (Zuständigkeit: a Kreis or an
    /// Amt running one deployment for its Gemeinden). Every adoption report goes out for
    /// `ags` and for each of these; the certificate must be allowed to act for all of them
    /// (a Kreis for its Gemeinden, an Amt for its members, a provider for its grant).
    #[serde(default)]
    pub covers: Vec<Ags>,
    /// The hub's URL, `https://host:port`.
    pub hub: String,
    /// Further replicas of the same hub (one database behind them all): the node spreads
    /// its calls over every address that answers and carries on with the others when one
    /// is away; a broken event stream resumes from its cursor on another.
    #[serde(default)]
    pub hubs: Vec<String>,
    /// Holds `state.json` and the blob cache.
    pub state_dir: PathBuf,
    /// Deployed services: `<service>/<version>/` and `<service>/current`.
    pub deploy_dir: PathBuf,
    /// Version dirs kept per service besides the current one and its predecessor (default 3).
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
    /// How long a health command may run before it counts as failed, in seconds (default 60).
    #[serde(default = "default_health_timeout")]
    pub health_timeout_secs: u64,
    /// `status` warns when the last successful sync with the hub is older than this.
    #[serde(default = "default_max_staleness")]
    pub max_staleness_secs: u64,
    /// Where `efa-node run` serves Prometheus metrics (plain HTTP, `/metrics`); off if unset.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Absent only when the hub runs with --insecure-dev.
    pub tls: Option<TlsConfig>,
    /// Release signing keys per Land code; several keys per Land allow rotation.
    #[serde(default)]
    pub trust: BTreeMap<LandCode, Vec<String>>,
    /// The hub's transparency log: its key and the witnesses the node counts. Unset: the
    /// node does not check the log (and `status` says so).
    #[serde(default)]
    pub log: Option<LogConfig>,
    /// What the node follows; the agent registers these with the hub before it syncs.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Local settings per service; a service without an entry gets the defaults.
    #[serde(default)]
    pub services: BTreeMap<ServiceId, ServiceConfig>,
    /// Values for every service that declares the name (the well-known ones such as
    /// `datenschutz_url`, `impressum_url`, `kontakt_email`): set once, used by each service;
    /// a service's own `[services.<id>.parameters]` wins.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
}

fn default_keep() -> usize {
    3
}

fn default_health_timeout() -> u64 {
    60
}

fn default_max_staleness() -> u64 {
    24 * 3600
}

/// The `[log]` table: what the node checks of the hub's transparency log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The log's verifier key, as `efa-hub log-key` prints it (`<origin>+<id>+<key>`).
    pub key: String,
    /// Witness verifier keys (`efa log witness-key` prints them) whose cosignatures count.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// Cosignatures of distinct witnesses a checkpoint needs before the node trusts it.
    #[serde(default)]
    pub min_witnesses: usize,
    /// Seconds within which each adoption report must show up in the log (default 600).
    #[serde(default = "default_report_deadline")]
    pub report_deadline_secs: u64,
    /// Federation root keys (`efa-ed25519-public:…`), pinned once: each may sign any Land's
    /// key set. A Land's first set is accepted when signed by one of these or by the keys
    /// `[trust]` pins for that Land.
    #[serde(default)]
    pub federation_root: Vec<String>,
}

fn default_report_deadline() -> u64 {
    600
}

impl LogConfig {
    /// Whom to trust, checked when the config is read.
    pub fn trust(&self) -> std::result::Result<efa_tlog::checkpoint::Trust, efa_tlog::Error> {
        efa_tlog::checkpoint::Trust::new(&self.key)?.with_witnesses(&self.witnesses, self.min_witnesses)
    }
}

/// The `[tls]` table: PEM files for mTLS with the hub.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate that signed the hub's certificate.
    pub ca: PathBuf,
    /// This Kommune's client certificate (URI SAN `efa://kommune/<AGS>`).
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

/// One `[[subscriptions]]` entry; names exactly one of `service` or `themenfeld`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Follow this service.
    pub service: Option<ServiceId>,
    /// Follow every service of this Themenfeld.
    pub themenfeld: Option<String>,
    /// Only releases on this channel (default `stable`).
    #[serde(default)]
    pub channel: Channel,
    /// How the node reacts to a new release.
    pub policy: UpdatePolicy,
}

impl SubscriptionConfig {
    /// The service or Themenfeld followed; an error unless exactly one is named.
    pub(crate) fn target(&self) -> Result<SubscriptionTarget, String> {
        match (&self.service, &self.themenfeld) {
            (Some(s), None) => Ok(SubscriptionTarget::Service(s.clone())),
            (None, Some(t)) => Ok(SubscriptionTarget::Themenfeld(t.clone())),
            _ => Err("each [[subscriptions]] entry names exactly one of `service` or `themenfeld`".into()),
        }
    }
}

/// A `[services.<id>]` table: how this Kommune runs one service.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Run in the new version's directory after switching; non-zero exit rolls back.
    pub health_command: Option<String>,
    /// The Kommune's values for the service's parameters, by parameter name.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
}

impl NodeConfig {
    /// A config with the defaults of every optional key, no subscriptions, no trusted keys.
    pub fn new(
        ags: Ags,
        hub: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        deploy_dir: impl Into<PathBuf>,
    ) -> Self {
        NodeConfig {
            source: None,
            ags,
            covers: Vec::new(),
            hub: hub.into(),
            hubs: Vec::new(),
            state_dir: state_dir.into(),
            deploy_dir: deploy_dir.into(),
            keep_versions: default_keep(),
            health_timeout_secs: default_health_timeout(),
            max_staleness_secs: default_max_staleness(),
            metrics_listen: None,
            tls: None,
            trust: BTreeMap::new(),
            log: None,
            subscriptions: Vec::new(),
            services: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }

    /// Connects with these mTLS files.
    pub fn with_tls(mut self, files: ClientTlsFiles) -> Self {
        self.tls = Some(TlsConfig { ca: files.ca, cert: files.cert, key: files.key });
        self
    }

    /// Checks the hub's transparency log against `key` (the log's verifier key).
    pub fn check_log(mut self, key: impl Into<String>) -> Self {
        self.log = Some(LogConfig {
            key: key.into(),
            witnesses: Vec::new(),
            min_witnesses: 0,
            report_deadline_secs: default_report_deadline(),
            federation_root: Vec::new(),
        });
        self
    }

    /// Trusts `key` (`efa-ed25519-public:...`) for releases of `land`.
    pub fn trust(mut self, land: LandCode, key: impl Into<String>) -> Self {
        self.trust.entry(land).or_default().push(key.into());
        self
    }

    /// Subscribes to a service on `stable` with `policy`.
    pub fn subscribe(mut self, service: ServiceId, policy: UpdatePolicy) -> Self {
        self.subscriptions.push(SubscriptionConfig {
            service: Some(service),
            themenfeld: None,
            channel: Channel::stable(),
            policy,
        });
        self
    }

    /// Sets the Kommune's parameters of a service.
    pub fn parameters(mut self, service: ServiceId, parameters: BTreeMap<String, ParamValue>) -> Self {
        self.services.entry(service).or_default().parameters = parameters;
        self
    }

    /// Sets the health command of a service.
    pub fn health_command(mut self, service: ServiceId, command: impl Into<String>) -> Self {
        self.services.entry(service).or_default().health_command = Some(command.into());
        self
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeError::Config { path: path.to_path_buf(), message: with_hint(&text, e.to_string()) })?;
        config.validate().map_err(|message| NodeError::Config { path: path.to_path_buf(), message })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Where messages say the config is: its file, or "the node config".
    pub fn describe_source(&self) -> String {
        self.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the node config".into())
    }

    /// Checks what serde cannot: one target per subscription, parseable trusted keys.
    fn validate(&self) -> Result<(), String> {
        if let Some(log) = &self.log {
            log.trust().map_err(|e| format!("[log]: {e}"))?;
            for k in &log.federation_root {
                efa_domain::signing::VerifyingKey::from_text(k).map_err(|e| format!("[log] federation_root: {e}"))?;
            }
        }
        if self.covers.contains(&self.ags) {
            return Err(format!("covers lists {} twice: it is the node's own ags", self.ags));
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            s.target().map_err(|e| format!("subscriptions[{i}]: {e}"))?;
        }
        for (land, keys) in &self.trust {
            for k in keys {
                VerifyingKey::from_text(k).map_err(|e| format!("trust.\"{land}\": {e}"))?;
            }
        }
        Ok(())
    }

    /// The mTLS files to connect with; `None` without a `[tls]` table.
    pub(crate) fn tls_files(&self) -> Option<ClientTlsFiles> {
        self.tls.as_ref().map(|t| ClientTlsFiles { ca: t.ca.clone(), cert: t.cert.clone(), key: t.key.clone() })
    }

    /// The keys trusted for releases of `land`; empty if none (every release is refused).
    pub(crate) fn trusted_keys(&self, land: &LandCode) -> Vec<VerifyingKey> {
        self.trust
            .get(land)
            .map(|keys| keys.iter().filter_map(|k| VerifyingKey::from_text(k).ok()).collect())
            .unwrap_or_default()
    }

    /// The subscriptions as the hub takes them.
    pub fn new_subscriptions(&self) -> Result<Vec<NewSubscription>, String> {
        self.subscriptions
            .iter()
            .map(|s| Ok(NewSubscription { target: s.target()?, channel: s.channel.clone(), policy: s.policy }))
            .collect()
    }

    /// The policy and channel of the subscription covering `service`; a subscription to
    /// the service itself wins over one to its Themenfeld.
    pub fn policy_for(&self, service: &Service) -> Option<(UpdatePolicy, Channel)> {
        let by_service = self.subscriptions.iter().find(|s| s.service.as_ref() == Some(&service.id));
        let by_theme =
            || self.subscriptions.iter().find(|s| s.themenfeld.as_deref() == Some(service.themenfeld.as_str()));
        by_service.or_else(by_theme).map(|s| (s.policy, s.channel.clone()))
    }

    /// True if a subscription names the service itself (not only its Themenfeld): the
    /// Kommune chose it, wherever it was built, offered by its Land or not.
    pub fn subscribes_to(&self, service: &ServiceId) -> bool {
        self.subscriptions.iter().any(|s| s.service.as_ref() == Some(service))
    }

    /// The local settings of a service (defaults if the config has none).
    pub fn service(&self, id: &ServiceId) -> ServiceConfig {
        self.services.get(id).cloned().unwrap_or_default()
    }

    /// The config as a TOML file, e.g. to write out one built in code.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// A TOML error with a hint for the mistake people make most: an AGS, Land code or OZG-ID
/// written as a number (`ags = 05913000`). They are codes with leading zeros and must be
/// quoted; TOML only says "expected newline".
fn with_hint(text: &str, message: String) -> String {
    let unquoted = text.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        let (key, value) = (key.trim(), value.trim());
        (value.starts_with(|c: char| c.is_ascii_digit()) && matches!(key, "ags" | "land" | "ozg_id")).then_some(key)
    });
    match unquoted {
        Some(key) => format!(
            "{message}\nhint: write `{key}` in quotes, e.g. {key} = \"05913000\": it is a code with leading zeros, not a number"
        ),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unquoted_ags_gets_a_hint_to_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("efa-node.toml");
        std::fs::write(&path, "ags = 05913000\nhub = \"https://127.0.0.1:50051\"\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("hint: write `ags` in quotes, e.g. ags = \"05913000\""), "{err}");
    }

    #[test]
    fn parses_the_documented_example_and_names_bad_keys() {
        let text = r#"
ags = "05913000"
hub = "https://127.0.0.1:50051"
state_dir = "/tmp/s"
deploy_dir = "/tmp/d"
[[subscriptions]]
service = "wohngeld-nrw"
policy = "patch_only"
[services.wohngeld-nrw.parameters]
payment_purpose = "Wohngeld Dortmund"
fee_cents = 0
postcodes = ["44135"]
"#;
        let c: NodeConfig = toml::from_str(text).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.keep_versions, 3);
        assert_eq!(c.subscriptions[0].channel, Channel::stable());
        let params = &c.services[&"wohngeld-nrw".parse().unwrap()].parameters;
        assert_eq!(params["fee_cents"], ParamValue::Integer(0));

        let bad = text.replace("05913000", "5913000");
        let err = toml::from_str::<NodeConfig>(&bad).unwrap_err().to_string();
        assert!(err.contains("AGS"), "{err}");
        let typo = text.replace("policy = \"patch_only\"", "policy = \"sometimes\"");
        assert!(toml::from_str::<NodeConfig>(&typo).is_err());
    }
}
