//! `efa-node`: the Kommune agent and its commands.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use efa_node::{status, Agent, NodeConfig};
use efa_proto::v1 as pb;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "efa-node",
    version,
    about = "EfA node: subscribe to, verify, deploy and rate EfA services for a Kommune"
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
        /// datenaustauschstandard, routing-transport, rechtliche-nachnutzung, organisation.
        #[arg(long = "criterion")]
        criteria: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Explicitly switch back to an installed older version (operator-local rollback).
    Rollback { service: String, version: String },
    /// Stop serving a service and report it retired.
    Retire {
        service: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn parse_criterion(s: &str) -> Result<(pb::Criterion, u32)> {
    let (area, score) = s.split_once('=').context("criteria are AREA=SCORE, e.g. payment=2")?;
    let c = match area.to_ascii_lowercase().replace('_', "-").as_str() {
        "design" => pb::Criterion::Design,
        "fachlogik" => pb::Criterion::Fachlogik,
        "nutzerkonto" => pb::Criterion::Nutzerkonto,
        "payment" => pb::Criterion::Payment,
        "datenaustauschstandard" => pb::Criterion::Datenaustauschstandard,
        "routing-transport" => pb::Criterion::RoutingTransport,
        "rechtliche-nachnutzung" => pb::Criterion::RechtlicheNachnutzung,
        "organisation" => pb::Criterion::Organisation,
        other => bail!("unknown criterion {other:?}"),
    };
    Ok((c, score.parse().with_context(|| format!("score {score:?} is not a number"))?))
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
    let st = status::collect(agent)?;
    let (cursor, last_sync, queued, services) = (st.cursor, st.last_sync_ms, st.queued_reports, st.services);
    if json {
        let v: Vec<_> = services
            .iter()
            .map(|s| {
                serde_json::json!({
                    "service": s.service, "running": s.running, "installed": s.installed,
                    "pending": s.pending, "rejected": s.rejected, "yanked": s.yanked, "last_error": s.last_error,
                })
            })
            .collect();
        let out = serde_json::json!({ "ags": agent.config().ags.to_string(), "cursor": cursor, "last_sync_ms": last_sync, "queued_reports": queued, "warnings": st.warnings, "services": v });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let since = if last_sync == 0 {
        "never".to_string()
    } else {
        let ago = efa_registry::now_ms().saturating_sub(last_sync).max(0) as u64;
        format!("{} ago", humantime::format_duration(std::time::Duration::from_secs(ago / 1000)))
    };
    println!("Kommune {}: event cursor {cursor}, last sync {since}, {queued} report(s) queued", agent.config().ags);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["service", "running", "installed", "awaiting approval", "rejected", "yanked", "last error"]);
    for s in services {
        t.add_row([
            s.service,
            s.running.unwrap_or_else(|| "-".into()),
            s.installed.join(", "),
            s.pending.join(", "),
            s.rejected.join(", "),
            s.yanked.iter().map(|(v, r)| format!("{v} ({r})")).collect::<Vec<_>>().join(", "),
            s.last_error.unwrap_or_default(),
        ]);
    }
    println!("{t}");
    for w in &st.warnings {
        println!("WARNING: {w}");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (how service managers ask a process to stop).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("error: the hub refused ({:?}): {}", s.code(), s.message()),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let config = NodeConfig::load(&cli.config)?;
    let agent = std::sync::Arc::new(Agent::new(config)?.with_progress(download_bar()));
    match cli.command {
        Command::Run => {
            let token = CancellationToken::new();
            let t = token.clone();
            tokio::spawn(async move {
                stop_signal().await;
                t.cancel();
            });
            if let Some(addr) = agent.config().metrics_listen {
                let (agent, token) = (agent.clone(), token.clone());
                tokio::spawn(async move {
                    if let Err(e) = efa_node::metrics::serve(agent, addr, token).await {
                        tracing::error!(%addr, error = %e, "metrics endpoint failed");
                    }
                });
            }
            agent.run(token).await?;
        }
        Command::Sync => {
            agent.register_subscriptions().await?;
            agent.flush_outbox().await?;
            let mut handled = agent.reconcile().await?;
            handled.extend(agent.sync_once().await?);
            for h in handled {
                println!("{h:?}");
            }
        }
        Command::Status => print_status(&agent, cli.json)?,
        Command::Approve { service, version } => println!("{:?}", agent.approve(&service, &version).await?),
        Command::Reject { service, version, reason } => {
            agent.reject(&service, version.as_deref(), &reason).await?;
            println!("rejected {service} {}", version.unwrap_or_default());
        }
        Command::Rate { service, version, stars, criteria, comment } => {
            let criteria = criteria.iter().map(|c| parse_criterion(c)).collect::<Result<Vec<_>>>()?;
            let r = agent.rate(&service, &version, stars, criteria, &comment).await?;
            println!("rated {} {}: {} star(s)", r.service_id, r.version, r.stars);
        }
        Command::Rollback { service, version } => {
            let prev = agent.rollback(&service, &version).await?;
            println!("{service}: now {version} (was {})", prev.unwrap_or_else(|| "-".into()));
        }
        Command::Retire { service, reason } => {
            agent.retire(&service, &reason).await?;
            println!("{service} retired");
        }
    }
    Ok(())
}
