//! A real PostgreSQL server for tests: `initdb` into a temp dir, `postgres` on a free port on
//! 127.0.0.1, shared by the whole test process and stopped when it exits. Each test gets a
//! database of its own ([`database`]), so tests never see each other's rows.
//!
//! Debian's `postgresql` package provides the binaries (`scripts/test` installs it); they
//! are looked up on `PATH`, then under `/usr/lib/postgresql/<version>/bin`. PostgreSQL
//! refuses to run as root, so under root the server runs as the package's `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shared server: its port and the directory holding its data and socket.
pub struct Server {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_user: Option<&'static str>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Whether PostgreSQL can run here, for [`crate::tools::check`].
pub fn available() -> Result<(), String> {
    server().map(|_| ())
}

/// The shared server, started on first use.
pub fn server() -> Result<&'static Server, String> {
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// A server of the caller's own, for a test that restarts it (the shared one serves every
/// other test of the process). Stopped when the test process ends.
pub fn private() -> Result<Server, String> {
    start()
}

/// A URL of a new, empty database on the shared server.
pub fn database() -> Result<String, String> {
    let s = server()?;
    let name = format!("efa_t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    s.psql("postgres", &format!("CREATE DATABASE {name}"))?;
    Ok(s.url(&name))
}

impl Server {
    /// `postgres://efa@127.0.0.1:PORT/NAME`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://efa@127.0.0.1:{}/{database}", self.port)
    }

    /// The path of a PostgreSQL program (`psql`, `pgbench`, …) of this installation.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// A URL of a new, empty database on this server.
    pub fn database(&self) -> Result<String, String> {
        let name = format!("efa_t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut, and it comes
    /// back on the same port with the same data. Returns once it accepts connections again.
    pub fn restart(&self) -> Result<(), String> {
        let out = command(&self.bin, self.as_user, "pg_ctl")
            .args(["restart", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres-restarted.log"))
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl restart: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs one SQL command with `psql` (e.g. to restart or inspect in a test).
    pub fn psql(&self, database: &str, sql: &str) -> Result<(), String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "efa", "-d", database, "-c", sql])
            .arg("-p")
            .arg(self.port.to_string())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

fn command(bin: &Path, as_user: Option<&str>, program: &str) -> Command {
    match as_user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin.join(program));
            c
        }
        None => Command::new(bin.join(program)),
    }
}

/// The directory with `initdb`, `postgres` and `psql`.
fn find_bin() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists());
    if let Some(d) = on_path {
        // Debian links some binaries into /usr/local/bin or /usr/bin; use the real directory.
        let real = std::fs::canonicalize(d.join("initdb")).ok().and_then(|p| p.parent().map(Path::to_path_buf));
        return Ok(real.unwrap_or(d));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (no initdb on PATH, no /usr/lib/postgresql)".to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    versions.pop().ok_or_else(|| "PostgreSQL is not installed (no initdb under /usr/lib/postgresql)".into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn start() -> Result<Server, String> {
    let bin = find_bin()?;
    let as_user = is_root().then_some("postgres");
    let dir = std::env::temp_dir().join(format!("efa-pg-{}-{}", std::process::id(), free_port()?));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(user) = as_user {
        let ok = Command::new("chown").args([&format!("{user}:{user}"), dir.to_str().unwrap_or_default()]).status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            return Err(format!("cannot hand {} to user {user} (is Debian's postgresql installed?)", dir.display()));
        }
    }
    let out = command(&bin, as_user, "initdb")
        .args(["-U", "efa", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let port = free_port()?;
    let log = dir.join("postgres.log");
    let postgres = {
        let c = command(&bin, as_user, "postgres");
        let mut parts: Vec<String> = std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        parts.extend(
            ["-D", data.to_str().unwrap_or_default(), "-h", "127.0.0.1", "-p", &port.to_string()]
                .iter()
                .map(|s| s.to_string()),
        );
        parts.extend(
            ["-k", dir.to_str().unwrap_or_default(), "-c", "max_connections=300"].iter().map(|s| s.to_string()),
        );
        parts.iter().map(|p| format!("'{}'", p.replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
    };
    let pg_ctl = {
        let c = command(&bin, as_user, "pg_ctl");
        std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .map(|p| format!("'{}'", p.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // A watchdog shell: the server (or the one a test restarted) stops when this test
    // process is gone, however it ends.
    let script = format!(
        "{postgres} >'{log}' 2>&1 &\nwhile kill -0 {parent} 2>/dev/null; do sleep 0.5; done\n{pg_ctl} stop -m immediate -D '{data}' >/dev/null 2>&1\nrm -rf '{dir}'",
        log = log.display(),
        parent = std::process::id(),
        data = data.display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let server = Server { port, bin, dir, as_user };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::read_to_string(&log).unwrap_or_default().contains("ready to accept connections")
            && server.psql("postgres", "SELECT 1").is_ok()
        {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "postgres did not start within 30 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
