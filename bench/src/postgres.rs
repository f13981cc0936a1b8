//! (F) The hub on PostgreSQL, beside PostgreSQL's own ceiling on the same server: durable
//! adoption reports/s through a hub on PostgreSQL against a `pgbench` loop of single-row
//! insert + commit, and the adoption queries of (A) on PostgreSQL at a smaller scale (its
//! bulk load is row by row so far).
//!
//! The server is the test kit's: `initdb` in a temp dir and `postgres` on a free port.

use crate::hub::{report_rate, small_bundle, Hub};
use crate::queries::{self, QueryScale};
use crate::report::Row;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

const SCEN: &str = "F PostgreSQL";

/// Size of the database behind `url`, in bytes.
pub fn database_bytes(url: &str) -> Result<u64> {
    let server = efa_testkit::postgres::server().map_err(anyhow::Error::msg)?;
    let name = url.rsplit('/').next().unwrap_or_default();
    let out = std::process::Command::new(server.program("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "efa",
            "-d",
            name,
            "-c",
            "SELECT pg_database_size(current_database())",
        ])
        .arg("-p")
        .arg(server.port.to_string())
        .output()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().context("pg_database_size")
}

/// `pgbench` with `clients` connections for `secs`, each transaction one INSERT of a small
/// row, committed: transactions/s.
fn pgbench(clients: usize, secs: f64) -> Result<f64> {
    let server = efa_testkit::postgres::server().map_err(anyhow::Error::msg)?;
    let url = efa_testkit::postgres::database().map_err(anyhow::Error::msg)?;
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    server
        .psql(&db, "CREATE TABLE ledger (id BIGSERIAL PRIMARY KEY, ags TEXT NOT NULL, rec BYTEA NOT NULL)")
        .map_err(anyhow::Error::msg)?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), "INSERT INTO ledger (ags, rec) VALUES ('05913000', '\\x0102030405060708');\n")?;
    let out = std::process::Command::new(server.program("pgbench"))
        .args(["-n", "-h", "127.0.0.1", "-U", "efa"])
        .arg("-p")
        .arg(server.port.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.min(2).to_string())
        .arg("-T")
        .arg((secs.ceil() as u64).max(1).to_string())
        .arg("-f")
        .arg(script.path())
        .arg(&db)
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()))
        .context("pgbench printed no tps")
}

pub async fn run(work_dir: &Path, secs: f64, concurrency: &[usize], scale: &QueryScale) -> Result<Vec<Row>> {
    if let Err(why) = efa_testkit::postgres::available() {
        return Ok(vec![Row::new(SCEN, "not measured", 0.0, "-").note(format!("PostgreSQL is not available: {why}"))]);
    }
    let mut rows = Vec::new();
    let url = efa_testkit::postgres::database().map_err(anyhow::Error::msg)?;
    let hub = Hub::start_on(work_dir, None, efa_hub::StoreLocation::Postgres(url)).await?;
    let sid = hub.register_services(1)?.remove(0);
    let bundle = small_bundle(hub.dir.path())?;
    hub.publish(hub.land_channel().await?, &bundle, &sid, "100.0.0").await?;
    let max_c = concurrency.iter().copied().max().unwrap_or(1);
    let kommunen = hub.kommunen(max_c)?;
    let dur = Duration::from_secs_f64(secs);
    for &c in concurrency {
        let rate = report_rate(&hub, &sid, &kommunen[..c.min(kommunen.len())], dur).await?;
        let peer = pgbench(c, secs)?;
        rows.push(
            Row::new(SCEN, format!("adoption reports/s, {c} in flight"), rate, "ops/s")
                .peer("pgbench", Some(peer))
                .goal("≥ 0.5× pgbench", Some(rate >= peer / 2.0))
                .note(format!(
                    "ReportAdoption through a hub on PostgreSQL (record, history, totals, event in one transaction); \
                     pgbench: {c} clients, one INSERT + commit per transaction"
                )),
        );
    }
    drop(hub);
    let url = efa_testkit::postgres::database().map_err(anyhow::Error::msg)?;
    let (wd, scale) = (work_dir.to_path_buf(), scale.clone());
    rows.extend(tokio::task::spawn_blocking(move || queries::run_on(&wd, &scale, Some(&url))).await??);
    Ok(rows)
}
