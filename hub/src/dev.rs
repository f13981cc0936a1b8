//! A development federation on one machine: a dev PKI, a hub with mTLS on loopback, and
//! the Länder's release signing keys, all under one directory. `efa-hub dev`, the demo and
//! the system tests start EfA Hub this way, so they all run the real TLS path.

use crate::dashboard::DashboardConfig;
use crate::pki::{self, PkiError};
use crate::server::{HubConfig, HubError, RunningHub, ServerTls};
use efa_domain::authz::Identity;
use efa_domain::model::ids::LandCode;
use efa_domain::signing::SigningKey;
use efa_proto::tls::ClientTlsFiles;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// Why a step of the development federation failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The dev PKI could not be created or a certificate issued.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The hub did not start or stop cleanly.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A registry call failed.
    #[error(transparent)]
    Registry(#[from] efa_registry::Error),
    /// A domain rule refused a value.
    #[error(transparent)]
    Domain(#[from] efa_domain::Error),
    /// A client could not connect to the hub.
    #[error(transparent)]
    Connect(#[from] efa_proto::tls::ConnectError),
    /// A Land signing key file could not be read or written.
    #[error(transparent)]
    Key(#[from] efa_cli::keys::KeyFileError),
    /// A directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Directory layout: `pki/` certificates, `keys/` Land signing keys, `hub/` hub data.
pub struct DevFederation {
    root: PathBuf,
    /// The running hub; `None` between [`stop_hub`](Self::stop_hub) and a restart.
    pub hub: Option<RunningHub>,
    /// The hub's gRPC address; kept across restarts.
    pub addr: SocketAddr,
    listen: SocketAddr,
    /// The operator dashboard's address: port 0 until the first start, then kept.
    dashboard_listen: SocketAddr,
    tune: Box<dyn Fn(&mut HubConfig) + Send + Sync>,
}

impl DevFederation {
    /// The dev PKI: `ca.pem`, the hub's and every issued client's certificate and key.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// The hub's data directory (store, blobs, dashboard tokens).
    pub fn hub_data_dir(&self) -> PathBuf {
        self.root.join("hub")
    }

    /// The transparency log's verifier key (what nodes set as `log_key`).
    pub fn log_key(&self) -> Result<String, DevError> {
        let path = self.hub_data_dir().join("log.key");
        let text = std::fs::read_to_string(&path).map_err(|e| DevError::Io { path: path.clone(), source: e })?;
        efa_tlog::checkpoint::verifier_key(&text).map_err(|e| DevError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// The hub's gRPC URL, `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The operator dashboard's base URL, e.g. `https://127.0.0.1:40123/` (if enabled).
    /// Tokens: [`crate::dashboard::tokens::issue`] with [`hub_data_dir`](Self::hub_data_dir).
    pub fn dashboard_url(&self) -> Option<String> {
        self.hub.as_ref()?.dashboard_addr.map(|a| format!("https://{a}/"))
    }

    /// Creates the PKI if needed and starts a hub on `listen` (port 0 picks a free one).
    pub async fn start(root: &Path, listen: SocketAddr) -> Result<Self, DevError> {
        Self::start_tuned(root, listen, |_| {}).await
    }

    /// Like [`start`](Self::start), with `tune` applied to the hub config on every start.
    pub async fn start_tuned(
        root: &Path,
        listen: SocketAddr,
        tune: impl Fn(&mut HubConfig) + Send + Sync + 'static,
    ) -> Result<Self, DevError> {
        let pki_dir = root.join("pki");
        if !pki_dir.join("ca.pem").exists() {
            pki::init(&pki_dir, &[])?;
        }
        let mut fed = DevFederation {
            root: root.to_path_buf(),
            hub: None,
            addr: listen,
            listen,
            dashboard_listen: SocketAddr::new(listen.ip(), 0),
            tune: Box::new(tune),
        };
        fed.start_hub().await?;
        Ok(fed)
    }

    fn hub_config(&self) -> HubConfig {
        let pki = self.pki_dir();
        let mut config = HubConfig::new(
            self.listen,
            self.hub_data_dir(),
            Some(ServerTls {
                cert: pki.join("hub.pem"),
                key: pki.join("hub.key"),
                client_ca: pki.join("ca.pem"),
                crl: pki.join("crl.pem").exists().then(|| pki.join("crl.pem")),
            }),
        );
        config.dashboard = Some(DashboardConfig { listen: self.dashboard_listen });
        (self.tune)(&mut config);
        config
    }

    /// Starts the hub again after [`stop_hub`](Self::stop_hub) (on the same address and data).
    pub async fn start_hub(&mut self) -> Result<(), DevError> {
        let hub = crate::start(self.hub_config()).await?;
        self.addr = hub.addr;
        // Restarts keep the address, so clients and node configs stay valid.
        self.listen = hub.addr;
        self.dashboard_listen = hub.dashboard_addr.unwrap_or(self.dashboard_listen);
        self.hub = Some(hub);
        Ok(())
    }

    /// Stops the hub gracefully (streams end, store flushed).
    pub async fn stop_hub(&mut self) -> Result<(), DevError> {
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await?;
        }
        Ok(())
    }

    /// Stops and starts the hub on the same address and data.
    pub async fn restart_hub(&mut self) -> Result<(), DevError> {
        self.stop_hub().await?;
        self.start_hub().await
    }

    /// The running hub's registry; `None` while the hub is stopped.
    pub fn registry(&self) -> Option<&efa_registry::Registry> {
        self.hub.as_ref().map(|h| h.registry.as_ref())
    }

    /// Client certificate files for `id`, issued on first use.
    pub fn client_tls(&self, id: &Identity) -> Result<ClientTlsFiles, DevError> {
        client_tls_in(&self.root, id)
    }

    /// A connected mTLS channel acting as `id`.
    pub async fn channel(&self, id: &Identity) -> Result<Channel, DevError> {
        Ok(efa_proto::tls::connect(&self.url(), Some(&self.client_tls(id)?)).await?)
    }

    /// The Land's release signing key, created on first use under `keys/`.
    pub fn signing_key(&self, land: &LandCode) -> Result<SigningKey, DevError> {
        signing_key_in(&self.root, land)
    }

    /// The file holding `land`'s release signing key (`efa-ed25519-secret:...`), created on
    /// first use: what a Land's own tooling reads to sign.
    pub fn signing_key_file(&self, land: &LandCode) -> Result<PathBuf, DevError> {
        signing_key_in(&self.root, land)?;
        Ok(signing_key_path(&self.root, land))
    }

    /// The public key text a node pins for `land`.
    pub fn trusted_key(&self, land: &LandCode) -> Result<String, DevError> {
        Ok(self.signing_key(land)?.verifying_key().to_text())
    }
}

/// [`DevFederation::client_tls`] for a federation directory `root` whose hub may run in
/// another process (benchmarks measure such a hub's memory on its own).
pub fn client_tls_in(root: &Path, id: &Identity) -> Result<ClientTlsFiles, DevError> {
    let dir = root.join("pki");
    let stem = id.file_stem();
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    if !cert.exists() {
        pki::issue(&dir, id, &id.to_uri())?;
    }
    Ok(ClientTlsFiles { ca: dir.join("ca.pem"), cert, key })
}

/// Where the dev federation in `root` keeps `land`'s release signing key.
fn signing_key_path(root: &Path, land: &LandCode) -> PathBuf {
    root.join("keys").join(format!("land-{land}.sign"))
}

/// [`DevFederation::signing_key`] for a federation directory `root`.
pub fn signing_key_in(root: &Path, land: &LandCode) -> Result<SigningKey, DevError> {
    let path = signing_key_path(root, land);
    let dir = root.join("keys");
    if !path.exists() {
        std::fs::create_dir_all(&dir).map_err(|source| DevError::Io { path: dir.clone(), source })?;
        efa_cli::keys::write_signing_key(&path, &SigningKey::generate())?;
    }
    Ok(efa_cli::keys::read_signing_key(&path)?)
}
