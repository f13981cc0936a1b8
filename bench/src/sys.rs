//! Machine measurements: RSS, disk usage, the raw fsync ceiling, percentiles, peers from apt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A field of /proc/self/status in KiB (e.g. "VmRSS", "VmHWM"); 0 if unavailable.
pub fn proc_status_kib(field: &str) -> u64 {
    status_kib("/proc/self/status", field)
}

/// A field of another process's /proc/<pid>/status in KiB (the hub child, etcd); 0 if gone.
pub fn pid_status_kib(pid: u32, field: &str) -> u64 {
    status_kib(&format!("/proc/{pid}/status"), field)
}

/// The memory of every `postgres` process on the machine (the bench's server), as the sum
/// of their proportional set sizes: shared buffers count once, not once per backend.
pub fn postgres_pss_mib() -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut kib = 0u64;
    for p in procs.flatten() {
        let dir = p.path();
        if std::fs::read_to_string(dir.join("comm")).map(|c| c.trim() == "postgres").unwrap_or(false) {
            kib += status_kib(&dir.join("smaps_rollup").to_string_lossy(), "Pss");
        }
    }
    kib as f64 / 1024.0
}

fn status_kib(path: &str, field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else { return 0 };
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system, all threads) used so far by process `pid`, or by this
/// process with `None`; from /proc/<pid>/stat, in USER_HZ ticks (100 per second on Linux).
pub fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let Ok(text) = std::fs::read_to_string(path) else { return 0.0 };
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let Some((_, rest)) = text.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

/// Raises this process's open-files soft limit to its hard limit (children inherit it) and
/// returns the soft limit now in force: one connection per node needs one descriptor each.
pub fn raise_nofile_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024)
}

pub fn rss_mib() -> f64 {
    proc_status_kib("VmRSS") as f64 / 1024.0
}

pub fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// Bytes allocated on disk under `dir` (st_blocks, so sparse files count what they use).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&e.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// The durable-write ceiling of the disk under `dir` for one writer, in fsyncs per second:
/// `block` bytes then fsync, in a loop, for `dur`. `append: true` grows the file (each fsync
/// also commits the new size to the journal); `false` overwrites a preallocated file with
/// `fdatasync`, the cheapest durable write the disk offers.
pub fn fsync_ceiling(dir: &Path, block: usize, dur: Duration, append: bool) -> std::io::Result<f64> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe.bin");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    let buf = vec![0x5au8; block];
    const PREALLOC: u64 = 64 << 20;
    if !append {
        f.write_all(&vec![0u8; PREALLOC as usize])?;
        f.sync_all()?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        if append {
            f.write_all(&buf)?;
            f.sync_all()?;
        } else {
            f.write_all_at(&buf, (n * block as u64) % PREALLOC)?;
            f.sync_data()?;
        }
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// Percentile (0..=100) of unsorted samples, nearest-rank.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub fn which(bin: &str) -> Option<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Finds `bin`, installing Debian package `pkg` with apt-get if allowed. Err says why not.
pub fn ensure_peer(bin: &str, pkg: &str, may_install: bool) -> Result<PathBuf, String> {
    if let Some(p) = which(bin) {
        return Ok(p);
    }
    if !may_install {
        return Err(format!("{bin} is not installed and installing peers is off (smoke mode or --no-install)"));
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprintln!("installing peer {pkg} (apt-get install -y {pkg}) ...");
    let installed =
        apt(&["install", "-y", "-qq", pkg]) || (apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", pkg]));
    if !installed {
        return Err(format!("apt-get install -y {pkg} failed (not root, or no package mirror reachable)"));
    }
    which(bin).ok_or_else(|| format!("{pkg} installed but {bin} not found"))
}

/// Deterministic pseudo-random numbers (splitmix64), so every run loads the same data.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `len` bytes of incompressible data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut s = seed;
    while out.len() < len {
        s = mix(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}
