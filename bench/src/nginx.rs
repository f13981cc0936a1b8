//! The nginx peer of the download benchmark (C): the same file over HTTPS from a
//! stock static file server, started with the hub's dev certificates.

use crate::hub::{DownloadScale, MB};
use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

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

pub async fn download(port: u16, ca: &Path, file: &str, size: u64, scale: &DownloadScale) -> Result<(f64, f64)> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let client = || reqwest::Client::builder().add_root_certificate(ca.clone()).build();
    let url = format!("https://127.0.0.1:{port}/{file}");
    async fn get(client: &reqwest::Client, url: &str) -> Result<u64> {
        let mut resp = client.get(url).send().await?.error_for_status()?;
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
    let c = client()?;
    get(&c, &url).await?; // connection warm-up, like the hub's pre-opened channel
    let mut best = 0.0f64;
    for _ in 0..scale.repeats {
        let t = Instant::now();
        let n = get(&c, &url).await?;
        anyhow::ensure!(n == size, "nginx sent {n} of {size} bytes");
        best = best.max(size as f64 / MB / t.elapsed().as_secs_f64());
    }
    let mut clients = Vec::new();
    for _ in 0..scale.concurrent {
        let c = client()?;
        // Handshake before the clock starts, as for the hub.
        let _ = c.head(&url).send().await?;
        clients.push(c);
    }
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in clients {
        let url = url.clone();
        set.spawn(async move { get(&c, &url).await });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok((best, total as f64 / MB / t.elapsed().as_secs_f64()))
}
