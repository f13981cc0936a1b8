//! The hub's TOML config file. Every key is optional; the defaults are what is shown in
//! `hub/hub.example.toml`. Command-line flags override the file. Relative paths are
//! resolved against the file's directory, so a config works from anywhere.

use crate::dashboard::DashboardConfig;
use crate::server::{HubConfig, ServerTls};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file could not be read, parsed or is inconsistent.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {message}")]
pub struct ConfigError {
    path: PathBuf,
    message: String,
}

/// The config file as written; [`into_hub_config`](Self::into_hub_config) turns it into a [`HubConfig`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubFile {
    /// gRPC address.
    pub listen: SocketAddr,
    /// sled store (`db/`) and blob store (`blobs/`).
    pub data_dir: PathBuf,
    /// `sled` (default: under `data_dir/db`) or a `postgres://` URL several replicas share.
    /// A URL with a password belongs here or in `EFA_STORE`, not on the command line.
    pub store: String,
    /// Bundle content: unset for `data_dir/blobs`, another directory, or
    /// `s3://bucket/prefix` (reached as the `[s3]` table says).
    pub blobs: String,
    /// The `[s3]` table: endpoint and credentials for `blobs = "s3://…"`. Unset keys fall
    /// back to `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
    pub s3: S3File,
    /// The `[tls]` table; required unless `insecure_dev`.
    pub tls: Option<TlsFile>,
    /// Plaintext with identities from a header. Development only.
    pub insecure_dev: bool,
    /// Largest accepted release bundle, in bytes (default 512 MiB).
    pub max_bundle_bytes: u64,
    /// Keep only the newest N events; nodes further behind resync. Unset: keep all.
    pub event_retention: Option<u64>,
    /// Seconds a node may leave its event stream unread before it is dropped (default 30).
    pub slow_subscriber_timeout_secs: u64,
    /// Bytes per `FetchBlob` message, 1..=4 MiB (default 256 KiB).
    pub download_chunk_bytes: usize,
    /// Memory for recently downloaded parts (blobs up to 1 MiB), shared by the nodes that
    /// fetch the same release; 0..=4 GiB (default 64 MiB; 0: off).
    pub download_cache_bytes: usize,
    /// Files up to this size are committed with their release in the store instead of the
    /// blob store, 0..=1 MiB (default 64 KiB; 0: every file goes to the blob store).
    pub inline_file_bytes: u64,
    /// zstd-compress the sled store when it is created (default true). An existing store
    /// keeps how it was created.
    pub sled_compression: bool,
    /// Operator dashboard (and `/metrics`) address; unset: off.
    pub dashboard_listen: Option<SocketAddr>,
    /// Limits per caller (certificate identity).
    pub limits: LimitsFile,
    /// Seconds between looks for blobs no published release names.
    pub blob_gc_interval_secs: u64,
    /// Seconds an unreferenced blob or abandoned upload is kept before it is removed.
    pub blob_gc_grace_secs: u64,
    /// Milliseconds between the rollout controller's rounds (default 5000); reports and
    /// ratings wake it earlier.
    pub rollout_round_ms: u64,
    /// The transparency log's signing key file (default `<data_dir>/log.key`, created on
    /// first start). Replicas sharing a store must name the same key.
    pub log_key: Option<PathBuf>,
    /// The log's name in its checkpoints (e.g. `efa-hub.nrw.example/log`), used when the
    /// key is created; default `efa-hub.local/log`.
    pub log_origin: String,
    /// Milliseconds between checkpoints of the transparency log (default 1000).
    pub checkpoint_ms: u64,
    /// Federation root keys (`efa-ed25519-public:…`) that may sign any Land's next key set.
    pub federation_root: Vec<String>,
}

/// `[limits]`: what one caller may use at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Calls in flight per caller (downloads included while they stream).
    pub calls_per_caller: usize,
    /// Open event streams per caller.
    pub streams_per_caller: usize,
    /// Adoption reports and ratings per second and caller, sustained.
    pub writes_per_second: f64,
    /// Adoption reports and ratings a caller may send in a burst.
    pub write_burst: f64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let l = crate::limits::Limits::default();
        LimitsFile {
            calls_per_caller: l.calls,
            streams_per_caller: l.streams,
            writes_per_second: l.writes_per_second,
            write_burst: l.write_burst,
        }
    }
}

/// `[s3]`: how to reach the bucket of `blobs = "s3://…"`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3File {
    /// Endpoint URL of an S3-compatible server, e.g. `https://s3.example.org`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key.
    pub access_key_id: Option<String>,
    /// Secret key (better: `AWS_SECRET_ACCESS_KEY`, or a file only the hub can read).
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3File")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl HubFile {
    /// Where bundle content lives, with the `[s3]` settings applied.
    pub fn blob_location(&self) -> Result<crate::blobs::BlobLocation, String> {
        let mut at: crate::blobs::BlobLocation = self.blobs.parse()?;
        if let crate::blobs::BlobLocation::S3(s3) = &mut at {
            s3.endpoint = self.s3.endpoint.clone();
            s3.region = self.s3.region.clone();
            s3.access_key_id = self.s3.access_key_id.clone();
            s3.secret_access_key = self.s3.secret_access_key.clone();
        }
        Ok(at)
    }
}

/// The `[tls]` table: the hub's certificate and the CA its clients' certificates chain to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// The hub's certificate chain (PEM).
    pub cert: PathBuf,
    /// The hub's private key (PEM).
    pub key: PathBuf,
    /// CA certificate that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation list of that CA (PEM); reread when the file changes.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

impl Default for HubFile {
    fn default() -> Self {
        let defaults = HubConfig::new(([127, 0, 0, 1], 50051).into(), "efa-data".into(), None);
        HubFile {
            listen: defaults.listen,
            data_dir: defaults.data_dir,
            store: String::new(),
            blobs: String::new(),
            s3: S3File::default(),
            tls: None,
            insecure_dev: false,
            max_bundle_bytes: defaults.limits.max_total_size,
            event_retention: None,
            slow_subscriber_timeout_secs: defaults.slow_subscriber_timeout.as_secs(),
            download_chunk_bytes: defaults.download_chunk_size,
            download_cache_bytes: defaults.download_cache_bytes,
            inline_file_bytes: defaults.inline_file_max,
            sled_compression: defaults.sled_compression,
            limits: LimitsFile::default(),
            blob_gc_interval_secs: defaults.blob_gc_interval.as_secs(),
            blob_gc_grace_secs: defaults.blob_gc_grace.as_secs(),
            rollout_round_ms: defaults.rollout_round.as_millis() as u64,
            log_key: None,
            log_origin: defaults.log_origin.clone(),
            checkpoint_ms: defaults.checkpoint_interval.as_millis() as u64,
            federation_root: Vec::new(),
            dashboard_listen: None,
        }
    }
}

impl HubFile {
    /// Reads and checks a config file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut file: HubFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut file.data_dir);
        if let Some(k) = &mut file.log_key {
            resolve(k);
        }
        for k in &file.federation_root {
            efa_domain::signing::VerifyingKey::from_text(k).map_err(|e| err(format!("federation_root: {e}")))?;
        }
        if !efa_tlog::checkpoint::is_key_name(&file.log_origin) {
            return Err(err(format!("log_origin {:?}: no spaces or '+', at most 200 characters", file.log_origin)));
        }
        if let Some(tls) = &mut file.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            resolve(&mut tls.client_ca);
            if let Some(crl) = &mut tls.crl {
                resolve(crl);
            }
        }
        if file.download_chunk_bytes == 0 || file.download_chunk_bytes > 4 * 1024 * 1024 {
            return Err(err("download_chunk_bytes must be between 1 and 4194304".into()));
        }
        if file.download_cache_bytes > 4 << 30 {
            return Err(err("download_cache_bytes must be between 0 and 4294967296".into()));
        }
        if file.inline_file_bytes > 1024 * 1024 {
            return Err(err("inline_file_bytes must be between 0 and 1048576".into()));
        }
        if file.tls.is_none() && !file.insecure_dev {
            return Err(err("[tls] with cert, key and client_ca is required (or insecure_dev = true)".into()));
        }
        file.store.parse::<crate::server::StoreLocation>().map_err(err)?;
        let blobs = file.blob_location().map_err(err)?;
        if let crate::blobs::BlobLocation::Dir(d) = blobs {
            if d.is_relative() {
                file.blobs = base.join(d).to_string_lossy().into_owned();
            }
        }
        Ok(file)
    }

    /// The hub config it describes; settings the file has no key for keep [`HubConfig::new`]'s defaults.
    pub fn into_hub_config(self) -> HubConfig {
        let blobs = self.blob_location().unwrap_or_default();
        let tls = self.tls.map(|t| ServerTls { cert: t.cert, key: t.key, client_ca: t.client_ca, crl: t.crl });
        let mut c = HubConfig::new(self.listen, self.data_dir, tls);
        c.insecure_dev = self.insecure_dev;
        // Checked by `load`; a file built in code with a bad value falls back to sled.
        c.store = self.store.parse().unwrap_or(crate::server::StoreLocation::Sled);
        c.blobs = blobs;
        c.limits.max_total_size = self.max_bundle_bytes;
        c.event_retention = self.event_retention;
        c.slow_subscriber_timeout = Duration::from_secs(self.slow_subscriber_timeout_secs);
        c.download_chunk_size = self.download_chunk_bytes;
        c.download_cache_bytes = self.download_cache_bytes;
        c.inline_file_max = self.inline_file_bytes;
        c.sled_compression = self.sled_compression;
        c.rollout_round = Duration::from_millis(self.rollout_round_ms.max(10));
        c.log_key = self.log_key;
        c.log_origin = self.log_origin;
        c.checkpoint_interval = Duration::from_millis(self.checkpoint_ms.max(10));
        c.federation_root = self.federation_root;
        c.caller_limits = crate::limits::Limits {
            calls: self.limits.calls_per_caller.max(1),
            streams: self.limits.streams_per_caller.max(1),
            writes_per_second: if self.limits.writes_per_second > 0.0 { self.limits.writes_per_second } else { 1.0 },
            write_burst: self.limits.write_burst.max(1.0),
        };
        c.blob_gc_interval = Duration::from_secs(self.blob_gc_interval_secs.max(1));
        c.blob_gc_grace = Duration::from_secs(self.blob_gc_grace_secs);
        c.dashboard = self.dashboard_listen.map(|listen| DashboardConfig { listen });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, include_str!("../hub.example.toml")).unwrap();
        let f = HubFile::load(&path).unwrap();
        assert_eq!(f.data_dir, dir.path().join("efa-data"));
        assert_eq!(f.tls.as_ref().unwrap().client_ca, dir.path().join("efa-data/pki/ca.pem"));
        let c = f.into_hub_config();
        assert_eq!(c.slow_subscriber_timeout, Duration::from_secs(30));
    }

    #[test]
    fn blobs_on_s3_take_the_s3_table_and_relative_directories_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "insecure_dev = true\nblobs = \"s3://efa-bundles/hub\"\n[s3]\nendpoint = \"https://s3.example.org\"\n\
             access_key_id = \"efa-hub\"\nsecret_access_key = \"geheim\"\n",
        )
        .unwrap();
        let f = HubFile::load(&path).unwrap();
        assert!(!format!("{f:?}").contains("geheim"), "the secret stays out of Debug");
        let crate::blobs::BlobLocation::S3(s3) = f.into_hub_config().blobs else { panic!("S3 expected") };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("efa-bundles", "hub"));
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.org"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("geheim"));

        std::fs::write(&path, "insecure_dev = true\nblobs = \"bundles\"\n").unwrap();
        let c = HubFile::load(&path).unwrap().into_hub_config();
        assert_eq!(c.blobs, crate::blobs::BlobLocation::Dir(dir.path().join("bundles")));
        std::fs::write(&path, "insecure_dev = true\nblobs = \"s3://Not_A_Bucket\"\n").unwrap();
        assert!(HubFile::load(&path).unwrap_err().to_string().contains("bucket"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "insecure_dev = true\nevent_retension = 5\n").unwrap();
        let e = HubFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("hub.toml") && e.contains("event_retension"), "{e}");
        std::fs::write(&path, "insecure_dev = true\nlisten = \"nowhere\"\n").unwrap();
        let e = HubFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
        assert!(HubFile::load(&path).unwrap_err().to_string().contains("[tls]"));
    }
}
