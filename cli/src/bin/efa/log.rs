//! `efa log`: audit the hub's transparency log, mirror it, witness it.

use crate::args::Conn;
use anyhow::Result;
use clap::Subcommand;
use efa_cli::edge;
use efa_cli::translog::{self, key_arg, LogError, Source};
use efa_tlog::checkpoint::Trust;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const LOG_HELP: &str = "Keys are given as text or as @FILE. The log's verifier key is what \
`efa-hub log-key` prints.

Exit status of verify, mirror and witness: 0 checked (and copied or cosigned); 1 the check could \
not be completed (the message says why); 2 the log is inconsistent: it contradicts a checkpoint \
it signed, or signed leaves that are no valid events. Keep the checkpoint files as evidence.";

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Re-derive the log's roots from all its leaves, check them against the newest
    /// checkpoint and the ones you kept, and recompute adoption from the leaves alone.
    Verify {
        /// The log's verifier key (<origin>+<id>+<key>), or @FILE.
        #[arg(long, value_name = "VERIFIER_KEY")]
        log_key: String,
        /// Read a copy in the C2SP tlog-tiles layout (from `efa log mirror`, or any web
        /// server's) instead of the hub.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A checkpoint you kept from before (a signed note, e.g. a mirror's `checkpoint`);
        /// the log must still have its root at its size. Repeat.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// A witness's verifier key (or @FILE) whose cosignature counts. Repeat.
        #[arg(long = "witness", value_name = "WITNESS_KEY")]
        witnesses: Vec<String>,
        /// Cosignatures of distinct --witness keys the newest checkpoint needs (default: 1
        /// if any --witness is given).
        #[arg(long)]
        min_witnesses: Option<usize>,
        /// Print the result as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Copy the log into DIR as static C2SP tlog-tiles files (checkpoint, tile/...), for
    /// any web server or bucket to serve; again to bring the copy up to date.
    Mirror {
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Witness the log: cosign each new checkpoint only if the hub proves it extends the
    /// last one this witness cosigned (kept in --state).
    Witness {
        /// The witness's private key file (from `efa log witness-key`).
        #[arg(long, value_name = "FILE")]
        signing_key: PathBuf,
        /// The log's verifier key (<origin>+<id>+<key>), or @FILE.
        #[arg(long, value_name = "VERIFIER_KEY")]
        log_key: String,
        /// Where the last cosigned checkpoint is kept (created on the first round).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// One round, then exit.
        #[arg(long)]
        once: bool,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        every: u64,
    },
    /// Create a witness key (mode 0600) and print its verifier key for nodes and auditors.
    WitnessKey {
        /// The witness's name, e.g. witness.nrw.example/efa.
        #[arg(long)]
        name: String,
        /// File to create for the private key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `efa log ...`: an inconsistent log exits with 2, any other failure with 1.
pub(crate) async fn run(conn: &Conn, command: &LogCommand) -> Result<ExitCode> {
    match log_command(conn, command).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => match e.downcast_ref::<LogError>() {
            Some(inconsistent) if inconsistent.is_inconsistent() => {
                eprintln!("error: {inconsistent}");
                Ok(ExitCode::from(2))
            }
            _ => Err(e),
        },
    }
}

async fn log_command(conn: &Conn, command: &LogCommand) -> Result<()> {
    match command {
        LogCommand::Verify { log_key, dir, checkpoints, witnesses, min_witnesses, json } => {
            let log_key = key_arg(log_key)?;
            let witnesses = witnesses.iter().map(|w| key_arg(w)).collect::<Result<Vec<_>, _>>()?;
            let min = min_witnesses.unwrap_or(usize::from(!witnesses.is_empty()));
            let trust = Trust::new(&log_key)?.with_witnesses(&witnesses, min)?;
            // A kept checkpoint is evidence by the log's own signature; cosignatures it may
            // lack (it may predate the witnesses) add nothing to that.
            let log_only = Trust::new(&log_key)?;
            let kept = checkpoints
                .iter()
                .map(|p| translog::open_checkpoint_file(&log_only, p))
                .collect::<Result<Vec<_>, _>>()?;
            let source = match dir {
                Some(dir) => Source::Dir(dir.clone()),
                None => Source::hub(conn.channel().await?),
            };
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("checking entry bundles {bar:40} {pos}/{len} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let report = translog::verify(&source, &trust, kept, &move |done, total| {
                b.set_length(total);
                b.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            let report = report?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        LogCommand::Mirror { to } => {
            let started = std::time::Instant::now();
            let r = translog::mirror(&Source::hub(conn.channel().await?), to).await?;
            println!(
                "{}: checkpoint of {} leaves; {} file(s) written, {} full tile(s) already there, in {}",
                to.display(),
                r.size,
                r.written,
                r.present,
                indicatif::HumanDuration(started.elapsed())
            );
        }
        LogCommand::Witness { signing_key, log_key, state, once, every } => {
            let witness = translog::read_witness_key(signing_key)?;
            let trust = Trust::new(&key_arg(log_key)?)?;
            let client = translog::log_client(conn.channel().await?);
            loop {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                match translog::witness_round(&client, &trust, &witness, state, now).await {
                    Ok(translog::WitnessOutcome::Cosigned { size, root }) => {
                        println!("cosigned the checkpoint of {size} leaves (root {root})")
                    }
                    Ok(translog::WitnessOutcome::AlreadyCosigned { size }) => {
                        println!("the checkpoint of {size} leaves is cosigned already")
                    }
                    Err(e) if *once || e.is_inconsistent() => return Err(e.into()),
                    // A hub away for a while is no reason to stop witnessing.
                    Err(e) => eprintln!("warning: {e}; next round in {every} s"),
                }
                if *once {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs((*every).max(1))) => {}
                    _ = edge::stop_signal() => break,
                }
            }
        }
        LogCommand::WitnessKey { name, out } => {
            let public = translog::create_witness_key(name, out)?;
            println!("wrote {} (secret, mode 0600: keep it private and backed up)", out.display());
            println!("witness key: {public}");
            println!();
            println!("Auditors count its cosignatures with `efa log verify --witness {public}`;");
            println!(
                "run the witness with `efa log witness --signing-key {} --log-key KEY --state FILE`.",
                out.display()
            );
        }
    }
    Ok(())
}
