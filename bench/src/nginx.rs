//! The nginx peer of the downloads (C) and the rollout wave (W): the same file over HTTPS from a
//! stock static file server, started with the hub's dev certificates.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::time::Duration;

/// A running nginx; dropping it asks it to quit.
pub struct Nginx {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Nginx {
    /// Asks the master to quit so it takes its workers with it; SIGKILL would orphan them.
    fn drop(&mut self) {
        let quit = std::process::Command::new("kill").arg("-QUIT").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while quit.is_ok() && std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a scenario's peer, installed if `may_install` allows: `None`, with the reason in
/// `notes` under `scenario`'s label, when it cannot be installed or started (the scenario
/// still runs, without the peer's figures).
pub fn start_peer(
    root: &Path,
    www: &Path,
    pki: &Path,
    may_install: bool,
    scenario: &str,
    notes: &mut Vec<String>,
) -> Option<Nginx> {
    match crate::sys::ensure_peer("nginx", "nginx", may_install) {
        Ok(bin) => match start(&bin, root, www, pki) {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!("{scenario}: nginx peer could not start: {e:#}"));
                None
            }
        },
        Err(e) => {
            notes.push(format!("{scenario}: nginx peer not measured: {e}"));
            None
        }
    }
}

pub fn start(bin: &Path, root: &Path, www: &Path, pki: &Path) -> Result<Nginx> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = root.join("nginx.conf");
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\ndaemon off;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {root}/tmp;\n  proxy_temp_path {root}/tmp;\n  \
             fastcgi_temp_path {root}/tmp;\n  uwsgi_temp_path {root}/tmp;\n  scgi_temp_path {root}/tmp;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {pki}/hub.pem;\n    \
             ssl_certificate_key {pki}/hub.key;\n    ssl_protocols TLSv1.3;\n    root {www};\n  }}\n}}\n",
            root = root.display(),
            pki = pki.display(),
            www = www.display(),
        ),
    )?;
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting nginx")?;
    let mut ng = Nginx { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(ng);
        }
        if let Some(status) = ng.child.try_wait()? {
            let mut log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
            if let Some(mut err) = ng.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut log);
            }
            return Err(anyhow!("nginx exited ({status}): {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(anyhow!("nginx did not listen on port {port}"))
}

/// An HTTPS client trusting the dev CA, with the HTTP/2 windows a node's hub client has
/// (`efa_proto::tls::endpoint`: stream 4 MiB, connection 8 MiB): a download's pace is set
/// by the receiver's windows, so both servers get the same client. One client holds one
/// connection (HTTP/2 multiplexes its requests).
pub fn client(ca: &reqwest::Certificate) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .http2_initial_stream_window_size(4 * 1024 * 1024)
        .http2_initial_connection_window_size(8 * 1024 * 1024)
        .build()?)
}

/// The dev CA at `path` as a reqwest certificate.
pub fn ca(path: &Path) -> Result<reqwest::Certificate> {
    Ok(reqwest::Certificate::from_pem(&std::fs::read(path)?)?)
}

/// `n` clients of `url`, each with its connection open and its TLS handshake done (a HEAD
/// request), a bounded number at a time; and the HTTP version nginx spoke.
pub async fn connected(ca: &reqwest::Certificate, url: &str, n: usize) -> Result<(Vec<reqwest::Client>, String)> {
    let mut out = Vec::with_capacity(n);
    let mut version = String::new();
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        // As many handshakes in flight as `watchers::connect_many` lets the hub's clients have.
        while started < n && set.len() < 64 {
            let (c, url) = (client(ca)?, url.to_string());
            set.spawn(async move {
                let resp = c.head(&url).send().await?.error_for_status()?;
                Ok::<_, anyhow::Error>((c, format!("{:?}", resp.version())))
            });
            started += 1;
        }
        let (c, v) = set.join_next().await.ok_or_else(|| anyhow!("a connect in flight"))??.context("nginx HEAD")?;
        version = v;
        out.push(c);
    }
    Ok((out, version))
}

/// Downloads `url` once, counting the bytes.
pub async fn get(client: &reqwest::Client, url: &str) -> Result<u64> {
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}
