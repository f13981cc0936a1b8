//! `efa-node`: the Kommune agent and its commands.
//!
//! Exit status: 0 when the command did what it printed; 1 when it failed (the message says
//! why); 2 for a usage error; 3 when `sync` finished but a release it should have deployed
//! failed or was rolled back.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use efa_cli::edge::{self, LogFormat};
use efa_domain::model::ids::parse_version;
use efa_domain::model::rating::{Criterion, NewRating};
use efa_node::outbox::Sent;
use efa_node::{Agent, NodeConfig};
use efa_proto::tls::ClientTlsFiles;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// `sync` finished, but a release it should have deployed failed or was rolled back.
const EXIT_DEPLOY_FAILED: u8 = 3;
/// `status` and `check-log` when the hub's transparency log contradicted itself: for
/// monitoring, which must not depend on the hub's honesty.
const EXIT_LOG_ALARM: u8 = 4;

#[derive(Parser)]
#[command(
    name = "efa-node",
    version,
    about = "EfA node: subscribe to, verify, deploy and rate EfA services for a Kommune",
    after_help = "Exit status: 0 done as printed; 1 failed (the message says why; nothing was recorded); 2 usage error; 3 sync finished but a deployment failed or was rolled back."
)]
struct Cli {
    /// Node config (TOML); see the efa_node::config docs for every key.
    #[arg(long, short, global = true, default_value = "efa-node.toml", env = "EFA_NODE_CONFIG")]
    config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until Ctrl-C: follow the hub, deploy, report.
    Run,
    /// One pass: register subscriptions, reconcile, handle events until caught up.
    Sync,
    /// What runs, what is installed, what waits for approval.
    Status,
    /// Check the node's certificate, key, CA file and connection to the hub, and say in words
    /// what is wrong.
    Doctor,
    /// Deploy a release that waits for approval.
    Approve { service: String, version: String },
    /// Reject a release (or, without --version, the service) with a reason for the Land.
    Reject {
        service: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Rate a service version: 1-5 stars, optional criteria (e.g. --criterion payment=2).
    Rate {
        service: String,
        version: String,
        #[arg(long)]
        stars: u32,
        /// AREA=SCORE with AREA one of design, fachlogik, nutzerkonto, payment,
        /// datenaustauschstandard, routing_transport, rechtliche_nachnutzung, organisation.
        #[arg(long = "criterion")]
        criteria: Vec<String>,
        /// AREA=yes|no: whether the release meets that EfA-Mindestanforderungen area (the
        /// areas are MUSS/SOLL/KANN requirements), e.g. --met rechtliche_nachnutzung=no.
        #[arg(long = "met")]
        met: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Switch back to an installed older version by hand and hold it: newer releases then
    /// wait for approval until `approve` or `unhold`.
    Rollback { service: String, version: String },
    /// Keep the running version: newer releases wait for approval until `approve` or `unhold`.
    Hold {
        service: String,
        /// Why (shown in `status`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a hold: the next sync applies the subscription's policy again.
    Unhold { service: String },
    /// Check the hub's transparency log now (newest checkpoint, consistency with the one
    /// verified before, this node's reports in it). Exit code 4 on an alarm.
    CheckLog,
    /// Clear a transparency log alarm after an operator has looked into it; the node then
    /// trusts the hub's next checkpoint as its new starting point.
    LogReset,
    /// Stop serving a service and report it retired.
    Retire {
        service: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn parse_met(s: &str) -> Result<(Criterion, bool)> {
    let (area, answer) = s.split_once('=').context("--met is AREA=yes or AREA=no, e.g. payment=yes")?;
    let met = match answer.trim().to_ascii_lowercase().as_str() {
        "yes" | "ja" | "true" => true,
        "no" | "nein" | "false" => false,
        other => anyhow::bail!("--met {s:?}: {other:?} is neither yes nor no"),
    };
    Ok((area.parse()?, met))
}

fn parse_criterion(s: &str) -> Result<(Criterion, u32)> {
    let (area, score) = s.split_once('=').context("criteria are AREA=SCORE, e.g. payment=2")?;
    Ok((area.parse()?, score.parse().with_context(|| format!("score {score:?} is not a number"))?))
}

/// A progress bar per release download, on stderr (hidden when stderr is not a terminal).
fn download_bar() -> efa_node::agent::Progress {
    let bar: std::sync::Mutex<Option<(String, indicatif::ProgressBar)>> = std::sync::Mutex::new(None);
    std::sync::Arc::new(move |service: &str, done: u64, total: u64| {
        let Ok(mut slot) = bar.lock() else { return };
        if slot.as_ref().is_none_or(|(s, _)| s != service) {
            let pb = indicatif::ProgressBar::new(total).with_style(
                indicatif::ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_message(service.to_string());
            *slot = Some((service.to_string(), pb));
        }
        if let Some((_, pb)) = slot.as_ref() {
            pb.set_length(total);
            pb.set_position(done);
            if done >= total {
                pb.finish_and_clear();
                *slot = None;
            }
        }
    })
}

fn print_status(agent: &Agent, json: bool) -> Result<()> {
    let st = agent.status()?;
    if json {
        let v: Vec<_> = st
            .services
            .iter()
            .map(|s| {
                let yanked: serde_json::Map<String, serde_json::Value> =
                    s.yanked.iter().map(|(v, r)| (v.clone(), r.clone().into())).collect();
                let scheduled: serde_json::Map<String, serde_json::Value> =
                    s.scheduled.iter().map(|(v, r)| (v.clone(), r.clone().into())).collect();
                let recalled: serde_json::Map<String, serde_json::Value> =
                    s.recalled.iter().map(|(v, r)| (v.clone(), r.clone().into())).collect();
                let hold = s
                    .hold
                    .as_ref()
                    .map(|h| serde_json::json!({"version": h.version, "reason": h.reason, "since_ms": h.since_ms}));
                serde_json::json!({
                    "service": s.service, "running": s.running, "installed": s.installed,
                    "pending": s.pending, "rejected": s.rejected, "yanked": yanked, "held": hold,
                    "rollout": scheduled, "recalled": recalled, "deprecated": s.deprecated,
                    "last_error": s.last_error,
                })
            })
            .collect();
        let out = serde_json::json!({ "ags": agent.config().ags.to_string(), "cursor": st.cursor, "last_sync_ms": st.last_sync_ms, "queued_reports": st.queued_reports, "warnings": st.warnings, "services": v });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let since = if st.last_sync_ms == 0 {
        "never".to_string()
    } else {
        let ago = efa_domain::now_ms().saturating_sub(st.last_sync_ms).max(0) as u64;
        format!("{} ago", humantime::format_duration(std::time::Duration::from_secs(ago / 1000)))
    };
    println!(
        "Kommune {}: event cursor {}, last sync {since}, {} report(s) queued",
        agent.config().ags,
        st.cursor,
        st.queued_reports
    );
    let state = agent.state()?;
    match (&agent.config().log, &state.log) {
        (None, _) => println!("transparency log: not checked (no [log] key in the config)"),
        (Some(_), None) => println!("transparency log: no checkpoint verified yet"),
        (Some(_), Some(l)) => println!(
            "transparency log: checkpoint of {} leaves verified, {} report(s) awaiting their leaf",
            l.size,
            state.log_pending.len()
        ),
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "service",
        "running",
        "held",
        "installed",
        "awaiting approval",
        "rejected",
        "yanked",
        "rollout",
        "last error",
    ]);
    for s in &st.services {
        t.add_row([
            s.service.clone(),
            s.running.clone().unwrap_or_else(|| "-".into()),
            s.hold.as_ref().map(|h| format!("{} ({})", h.version, h.reason)).unwrap_or_default(),
            s.installed.join(", "),
            s.pending.join(", "),
            s.rejected.join(", "),
            s.yanked
                .iter()
                .map(|(v, r)| {
                    let recalled = s.recalled.iter().any(|(rv, _)| rv == v);
                    if recalled {
                        format!("{v} (recalled: {r})")
                    } else {
                        format!("{v} ({r})")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            s.scheduled.iter().map(|(v, r)| format!("{v}: {r}")).collect::<Vec<_>>().join(", "),
            s.last_error.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    for s in st.services.iter().filter(|s| s.deprecated.is_some()) {
        println!("NOTICE: {}: {}", s.service, s.deprecated.as_deref().unwrap_or_default());
    }
    for (service, version) in st.services.iter().flat_map(|s| {
        s.recalled.iter().filter(|(v, _)| s.running.as_deref() == Some(v.as_str())).map(|(v, _)| (&s.service, v))
    }) {
        println!("RECALLED: {service} {version} is recalled by its Land; stop serving it: efa-node retire {service}");
    }
    for w in &st.warnings {
        println!("WARNING: {w}");
    }
    Ok(())
}

/// How a report went out, for the line printed after a command.
fn delivery(sent: &Sent) -> &'static str {
    match sent {
        Sent::Delivered | Sent::Skipped => "",
        Sent::Queued => " (the hub is unreachable; the report is queued and goes out with the next sync)",
    }
}

fn main() -> ExitCode {
    edge::main_with(run())
}

async fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    // The agent logs what it does; a one-shot command prints its outcome and logs only
    // warnings, so its output reads as an answer (RUST_LOG overrides both).
    let level = if matches!(cli.command, Command::Run) { "info" } else { "warn" };
    edge::init_logging(if cli.log_json { LogFormat::Json } else { LogFormat::Text }, level);
    let config = NodeConfig::load(&cli.config)?;
    let tls =
        config.tls.as_ref().map(|t| ClientTlsFiles { ca: t.ca.clone(), cert: t.cert.clone(), key: t.key.clone() });
    let result = async {
        let agent = std::sync::Arc::new(Agent::new(config)?.with_progress(download_bar()));
        dispatch(cli, agent).await
    };
    result.await.map_err(|e| {
        // A refused TLS connection says little ("transport error"); say which file is wrong.
        let unreachable = e.downcast_ref::<efa_node::NodeError>().is_some_and(|n| n.is_transient());
        match tls.as_ref().filter(|_| unreachable).and_then(efa_cli::doctor::explain) {
            Some(why) => e.context(format!("{why} (`efa-node doctor` runs every check)")),
            None => e,
        }
    })
}

async fn dispatch(cli: Cli, agent: std::sync::Arc<Agent>) -> Result<ExitCode> {
    match cli.command {
        Command::Run => {
            let token = CancellationToken::new();
            let t = token.clone();
            tokio::spawn(async move {
                edge::stop_signal().await;
                t.cancel();
            });
            if let Some(addr) = agent.config().metrics_listen {
                let (a, token) = (agent.clone(), token.clone());
                let render = std::sync::Arc::new(move || a.metrics_text());
                tokio::spawn(async move {
                    if let Err(e) = efa_node::metrics::serve(render, addr, token).await {
                        tracing::error!(%addr, error = %e, "metrics endpoint failed");
                    }
                });
            }
            agent.run(token).await?;
        }
        Command::Sync => {
            let handled = agent.sync().await?;
            if handled.is_empty() {
                println!("nothing to do: no release of a subscribed service yet");
            }
            for h in &handled {
                println!("{h}");
            }
            if handled.iter().any(|h| h.is_failure()) {
                return Ok(ExitCode::from(EXIT_DEPLOY_FAILED));
            }
        }
        Command::Status => {
            print_status(&agent, cli.json)?;
            if agent.state()?.log_alarm.is_some() {
                return Ok(ExitCode::from(EXIT_LOG_ALARM));
            }
        }
        Command::CheckLog => match agent.check_log().await {
            Ok(Some(cp)) => println!("transparency log consistent: checkpoint of {} leaves verified", cp.size),
            Ok(None) => println!("transparency log not checked: no [log] key in the config, or no checkpoint yet"),
            Err(efa_node::NodeError::LogAlarm(why)) => {
                eprintln!("TRANSPARENCY LOG ALARM: {why}");
                return Ok(ExitCode::from(EXIT_LOG_ALARM));
            }
            Err(e) => return Err(e.into()),
        },
        Command::LogReset => {
            let was = agent.reset_log()?;
            match was {
                Some(why) => {
                    println!("log alarm cleared (it was: {why}); the next checkpoint is the new starting point")
                }
                None => println!("no log alarm; the next checkpoint is the new starting point"),
            }
        }
        Command::Doctor => {
            let Some(tls) = &agent.config().tls else {
                println!(
                    "no [tls] in {}: the node talks plaintext (only for a hub with --insecure-dev)",
                    cli.config.display()
                );
                return Ok(ExitCode::SUCCESS);
            };
            let files = ClientTlsFiles { ca: tls.ca.clone(), cert: tls.cert.clone(), key: tls.key.clone() };
            if !efa_cli::doctor::run(&agent.config().hub, &files).await {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Approve { service, version } => {
            let h = agent.approve(&service, &version).await?;
            println!("{h}");
            if h.is_failure() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Reject { service, version, reason } => {
            let sent = agent.reject(&service, version.as_deref(), &reason).await?;
            let what = version.map(|v| format!("{service} {v}")).unwrap_or_else(|| service.clone());
            println!("rejected {what}{}", delivery(&sent));
        }
        Command::Rate { service, version, stars, criteria, met, comment } => {
            let criteria = criteria.iter().map(|c| parse_criterion(c)).collect::<Result<Vec<_>>>()?;
            let met = met.iter().map(|m| parse_met(m)).collect::<Result<Vec<_>>>()?;
            let rating = NewRating {
                service_id: service.parse()?,
                version: parse_version(&version)?,
                stars,
                criteria,
                comment,
                met,
            };
            let r = agent.rate(&rating).await?;
            println!("rated {} {}: {} star(s)", r.service_id, r.version, r.stars);
        }
        Command::Rollback { service, version } => {
            let (prev, sent) = agent.rollback(&service, &version).await?;
            println!(
                "{service}: now {version} (was {}), held: newer releases wait for approval (efa-node unhold {service} lifts it){}",
                prev.unwrap_or_else(|| "-".into()),
                delivery(&sent)
            );
        }
        Command::Hold { service, reason } => {
            let h = agent.hold(&service, &reason).await?;
            println!("{service}: holding {} ({}); newer releases wait for approval", h.version, h.reason);
        }
        Command::Unhold { service } => {
            let h = agent.unhold(&service).await?;
            println!("{service}: no longer held at {}; the next sync applies the subscription's policy", h.version);
        }
        Command::Retire { service, reason } => {
            let sent = agent.retire(&service, &reason).await?;
            println!("{service} retired{}", delivery(&sent));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod command_line {
    /// clap checks option names only when a command is parsed: two options of one command
    /// with the same long name would abort `efa`/`efa-node`/`efa-hub` at run time.
    #[test]
    fn every_command_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
