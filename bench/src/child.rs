//! The hub in a child process (this binary's hidden `hub-child` subcommand), for the
//! scenarios that compare it with a peer in its own process: (C) downloads beside nginx,
//! (D) fan-out beside etcd, (W) the rollout wave beside nginx. Its RSS and CPU are then the
//! hub's own, and the clients in this process cost both sides alike.

use crate::hub::{publish_signed, register_services, Hub};
use crate::sys;
use anyhow::{anyhow, Context, Result};
use efa_domain::authz::Identity;
use efa_domain::bundle::Manifest;
use efa_domain::model::ids::{Ags, ServiceId};
use efa_hub::dev::{client_tls_in, signing_key_in, DevFederation};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tonic::transport::{Channel, Endpoint};

/// What the hub child prints, as one JSON line, once it listens and the setup is done.
#[derive(Serialize, Deserialize)]
struct ChildReady {
    addr: SocketAddr,
    service: String,
    kommune: String,
}

/// `efa-bench hub-child --dir D [--store URL] [--replica]`: a dev federation in `dir` with
/// one NRW service, the Land's and one Kommune's certificates and the Land's signing key;
/// runs until stdin closes. With `--replica`, another hub on the store a first child set up
/// (same directory: certificates, keys and blobs).
pub async fn hub_child(dir: &Path, store: Option<&str>, replica: bool) -> Result<()> {
    let store = match store {
        Some(url) => efa_hub::StoreLocation::Postgres(url.to_string()),
        None => efa_hub::StoreLocation::Sled,
    };
    // Every client comes through one Kommune certificate here (see the notes); per-caller
    // limits would cap it at a node's share.
    let mut fed = DevFederation::start_tuned(dir, "127.0.0.1:0".parse()?, move |c| {
        c.store = store.clone();
        c.dashboard = None;
        c.caller_limits = efa_hub::limits::Limits::unlimited();
    })
    .await?;
    let reg = fed.registry().ok_or_else(|| anyhow!("hub not running"))?;
    let service = if replica {
        reg.services(None, None)?.into_iter().next().ok_or_else(|| anyhow!("the first replica set up no service"))?.id
    } else {
        register_services(reg, 1)?.remove(0)
    };
    let gv = efa_registry::import::bundled_gv100ad()?;
    let kommune = gv.kommunen.first().ok_or_else(|| anyhow!("no Gemeinden bundled"))?.ags.clone();
    if !replica {
        // Issued here, so the parent only reads files and never races the child on the CA.
        fed.client_tls(&Identity::Land(Hub::land()))?;
        fed.client_tls(&Identity::Kommune(kommune.clone()))?;
        fed.signing_key(&Hub::land())?;
    }
    let ready = ChildReady { addr: fed.addr, service: service.to_string(), kommune: kommune.to_string() };
    println!("{}", serde_json::to_string(&ready)?);
    // The parent holds our stdin open for as long as it wants the hub; EOF (or its death) ends it.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    fed.stop_hub().await?;
    Ok(())
}

/// A hub child started by this process.
pub struct HubProcess {
    child: tokio::process::Child,
    pub pid: u32,
    root: PathBuf,
    /// Removes the directory when the process is done with (the first of several replicas).
    _dir: Option<tempfile::TempDir>,
    addr: SocketAddr,
    pub service: ServiceId,
    pub kommune: Ags,
}

impl HubProcess {
    pub async fn spawn(work_dir: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("efa-bench-hub-").tempdir_in(work_dir)?;
        Self::spawn_in(dir.path().to_path_buf(), Some(dir), None, false).await
    }

    /// A hub child on `root` (removed with `dir`, if given), storing in `store` (sled if none).
    pub async fn spawn_in(
        root: PathBuf,
        dir: Option<tempfile::TempDir>,
        store: Option<&str>,
        replica: bool,
    ) -> Result<Self> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg("hub-child").arg("--dir").arg(&root);
        if let Some(url) = store {
            cmd.arg("--store").arg(url);
        }
        if replica {
            cmd.arg("--replica");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the hub child process")?;
        let pid = child.id().ok_or_else(|| anyhow!("hub child exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("hub child stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("hub child did not report ready within 120 s")??
            .ok_or_else(|| anyhow!("hub child exited before it was ready"))?;
        let ready: ChildReady = serde_json::from_str(&line).with_context(|| format!("hub child said {line:?}"))?;
        Ok(HubProcess {
            child,
            pid,
            root,
            _dir: dir,
            addr: ready.addr,
            service: ready.service.parse()?,
            kommune: ready.kommune.parse()?,
        })
    }

    /// The federation directory: PKI, keys, hub data; free for the parent's own files too.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An endpoint acting as `id`, with the same settings every EfA client uses (nodes
    /// included: their HTTP/2 windows, keep-alive and TLS come from the same function).
    pub fn endpoint(&self, id: &Identity) -> Result<Endpoint> {
        let tls = client_tls_in(self.root(), id)?;
        Ok(efa_proto::tls::endpoint(&format!("https://{}", self.addr), Some(&tls))?)
    }

    /// An endpoint acting as the hub's Kommune.
    pub fn kommune_endpoint(&self) -> Result<Endpoint> {
        self.endpoint(&Identity::Kommune(self.kommune.clone()))
    }

    /// A connection acting as the Land, for publishing.
    pub async fn land_channel(&self) -> Result<Channel> {
        Ok(self.endpoint(&Identity::Land(Hub::land()))?.connect().await?)
    }

    pub fn rss_kib(&self) -> u64 {
        sys::pid_status_kib(self.pid, "VmRSS")
    }

    /// The child's peak RSS so far.
    pub fn hwm_kib(&self) -> u64 {
        sys::pid_status_kib(self.pid, "VmHWM")
    }

    /// Publishes `bundle` as `version` of the hub's service, signed with the Land's key the
    /// child wrote into the federation directory.
    pub async fn publish(&self, channel: Channel, bundle: &Path, version: &str) -> Result<Manifest> {
        let key = signing_key_in(self.root(), &Hub::land())?;
        publish_signed(channel, &key, bundle, &self.service, version).await
    }

    /// Closes the child's stdin so it shuts the hub down gracefully; kills it if it lingers.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
