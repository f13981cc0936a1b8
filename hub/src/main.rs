//! `efa-hub`: run the hub, import the register, manage the development PKI.

/// jemalloc instead of glibc malloc: sled allocates and frees a copy of a leaf node per
/// insert, and under glibc a large store fragments the heap (a 1.15M-record load: 2.5x
/// slower, 6 GiB instead of 2.2 GiB RSS; see `efa-bench queries`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use efa_cli::edge::{self, LogFormat};
use efa_domain::authz::Identity;
use efa_hub::config::{HubFile, TlsFile};
use efa_hub::dashboard::{tokens, DashboardConfig};
use efa_hub::{pki, HubConfig, ServerTls};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "efa-hub", version, about = "EfA Hub: share EfA online services between Länder and Kommunen")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC over mTLS.
    Serve(ServeArgs),
    /// Start a hub with dev certificates created under DATA_DIR/pki (for trying it out).
    Dev {
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
        /// Serve the operator web dashboard (HTTPS, hub certificate) on this address.
        #[arg(long, default_value = "127.0.0.1:50443")]
        dashboard_listen: SocketAddr,
        /// `sled` (default) or a `postgres://` URL, e.g. for several dev replicas on one
        /// database (`scripts/replicas`).
        #[arg(long, env = "EFA_STORE", hide_env_values = true, default_value = "sled")]
        store: String,
        /// Bundle content: DATA_DIR/blobs (default), a directory, or `s3://bucket/prefix`
        /// (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
        #[arg(long, env = "EFA_BLOBS", default_value = "")]
        blobs: String,
    },
    /// Import the Destatis register, the OZG catalogue and LeiKa into the store (idempotent).
    /// Imports a register (Destatis GV100AD; without FILE the one shipped, status
    /// 2023-11-30) and the OZG catalogue, and prints what changed. Gemeinden the file no longer
    /// lists keep their records; their certificates are refused from then on.
    Import {
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
        /// A GV100AD file (fixed-width, UTF-8 or ISO-8859-1).
        file: Option<PathBuf>,
        /// Gemeinden that leave the register and their successors: OLD_AGS,SUCCESSOR_AGS per
        /// line (from Destatis' list of territorial changes).
        #[arg(long)]
        successors: Option<PathBuf>,
    },
    /// Copy a whole hub's store into PostgreSQL (records, events with their seqs, register),
    /// then check counts and the event log's digest on both sides; with --blobs-to, copy its
    /// blobs to S3 too (each hashed against its name, then looked up on the target). Stop the
    /// hub first; run it again after an interruption (every write is an idempotent upsert or
    /// a create-only put). Dashboard tokens stay in the data dir.
    Migrate {
        /// The source: `sled:DIR` (a hub's `DATA_DIR/db`).
        #[arg(long)]
        from: String,
        /// The target: a `postgres://` URL (a password in EFA_STORE instead).
        #[arg(long, env = "EFA_STORE", hide_env_values = true)]
        to: String,
        /// Also copy the blobs to `s3://bucket/prefix` (endpoint and keys from AWS_ENDPOINT_URL,
        /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
        #[arg(long)]
        blobs_to: Option<String>,
        /// The blob directory to copy [default: the blobs/ next to the --from db/].
        #[arg(long)]
        blobs_from: Option<PathBuf>,
    },
    /// Development PKI (rcgen): a CA, a hub certificate and role certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Operator tokens for the web dashboard (only their SHA-256 is stored in DATA_DIR).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Prints the transparency log's verifier key (for nodes' `[log] key`, auditors' `efa
    /// log verify --log-key` and witnesses). With --create, creates the signing key first if
    /// the hub has none yet (it does so on its first start, too).
    LogKey {
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
        /// The signing key file [default: DATA_DIR/log.key].
        #[arg(long)]
        key: Option<PathBuf>,
        /// The log's name, if the key is created now.
        #[arg(long, default_value = efa_hub::translog::DEFAULT_ORIGIN)]
        origin: String,
        /// Create the key if the file does not exist (without it, a missing file is an
        /// error: a mistyped directory must not quietly mint a new log).
        #[arg(long)]
        create: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for an operator and print it once.
    Issue {
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
        /// Operator name (1..64 of A-Z a-z 0-9 - _), e.g. bund.
        #[arg(long)]
        operator: String,
    },
    /// List issued tokens (operator and date; the tokens themselves are not stored).
    List {
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
    },
    /// Revoke every token of an operator.
    Revoke {
        #[arg(long, default_value = "efa-data")]
        data_dir: PathBuf,
        #[arg(long)]
        operator: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (see hub/hub.example.toml); the flags below override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Store and blob directory [default: efa-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `sled` (embedded, under the data dir) or a `postgres://user@host:port/db` URL that
    /// several replicas share. Put a password in EFA_STORE or the config file, not here.
    #[arg(long, env = "EFA_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Bundle content: a directory [default: DATA_DIR/blobs] or `s3://bucket/prefix` that
    /// several replicas share (endpoint and keys from [s3] in --config or AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "EFA_BLOBS")]
    blobs: Option<String>,
    /// Server certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// CA that client certificates must chain to (PEM).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Certificate revocation list of the client CA (PEM); reread when the file changes, and
    /// connections of revoked certificates are closed.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Plaintext, identities from a header. Development only.
    #[arg(long)]
    insecure_dev: bool,
    /// Largest accepted bundle, in bytes [default: 512 MiB].
    #[arg(long)]
    max_bundle_bytes: Option<u64>,
    /// Keep only the newest N events in the log; nodes further behind are told to resync.
    #[arg(long)]
    event_retention: Option<u64>,
    /// Serve the operator web dashboard on this address (HTTPS with --cert/--key; plain
    /// HTTP only with --insecure-dev). Tokens: `efa-hub token issue`.
    #[arg(long)]
    dashboard_listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create ca.pem/ca.key and hub.pem/hub.key in DIR.
    Init {
        #[arg(long, default_value = "efa-data/pki")]
        dir: PathBuf,
        /// Extra DNS names or IPs for the hub certificate.
        #[arg(long)]
        hub_name: Vec<String>,
    },
    /// Issue a client certificate for one role.
    Issue {
        #[arg(long, default_value = "efa-data/pki")]
        dir: PathBuf,
        /// A Land publisher, by Land code (e.g. 05).
        #[arg(long, group = "role")]
        land: Option<String>,
        /// A Kommune node, by AGS (e.g. 05913000).
        #[arg(long, group = "role")]
        kommune: Option<String>,
        /// An operator, by name.
        #[arg(long, group = "role")]
        operator: Option<String>,
        /// A municipal IT service provider, by name; it acts for the Kommunen an operator
        /// grants it (efa grants set).
        #[arg(long, group = "role")]
        provider: Option<String>,
        /// A Kreis, by Kreis code (e.g. 05978); it acts for its Gemeinden.
        #[arg(long, group = "role")]
        kreis: Option<String>,
        /// A Gemeindeverband (Amt, Verbandsgemeinde, Samtgemeinde), by the first 9 digits of
        /// its Gemeinden's ARS (e.g. 010575747); it acts for its member Gemeinden.
        #[arg(long, group = "role")]
        verband: Option<String>,
    },
    /// Revoke a client certificate: adds it to DIR/crl.pem (signed by the CA). A hub started
    /// with --crl DIR/crl.pem refuses it within seconds and closes its connections.
    Revoke {
        #[arg(long, default_value = "efa-data/pki")]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        #[arg(long)]
        cert: PathBuf,
    },
}

/// The one identity named by `(role, key)` pairs of which exactly one key is given.
fn identity(roles: [(&str, Option<String>); 6]) -> Result<Identity> {
    let given: Vec<(&str, String)> = roles.into_iter().filter_map(|(r, k)| k.map(|k| (r, k))).collect();
    match &given[..] {
        [(role, key)] => Ok(Identity::parse_uri(&format!("efa://{role}/{}", key.trim()))?),
        _ => bail!("name exactly one of --land, --kommune, --kreis, --verband, --operator, --provider"),
    }
}

async fn serve(config: HubConfig) -> Result<()> {
    let hub = efa_hub::start(config).await?;
    let token = hub.shutdown_token();
    tokio::spawn(async move {
        edge::stop_signal().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
    hub.wait().await?;
    Ok(())
}

fn ensure_dev_pki(dir: &Path) -> Result<ServerTls> {
    if !dir.join("ca.pem").exists() {
        pki::init(dir, &[])?;
        for id in [
            Identity::Land("05".parse()?),
            Identity::Kommune("05913000".parse()?),
            Identity::Operator("operator".into()),
        ] {
            pki::issue(dir, &id, &id.to_uri())?;
        }
        tracing::info!(dir = %dir.display(), "dev PKI created: ca, hub, land-05, kommune-05913000, operator-operator");
    }
    Ok(ServerTls {
        cert: dir.join("hub.pem"),
        key: dir.join("hub.key"),
        client_ca: dir.join("ca.pem"),
        crl: dir.join("crl.pem").exists().then(|| dir.join("crl.pem")),
    })
}

/// What a register import changed, for the person who ran it.
fn print_register_changes(c: &efa_domain::model::catalog::RegisterChanges) {
    println!(
        "{} new, {} no longer listed, {} renamed, {} otherwise updated, {} unchanged",
        c.added.len(),
        c.dissolved.len(),
        c.renamed.len(),
        c.updated,
        c.unchanged
    );
    for k in &c.added {
        println!("  new:      {} {}", k.ags, k.name);
    }
    for (k, successor) in &c.dissolved {
        let to = successor.as_ref().map(|s| format!(", successor {s}")).unwrap_or_default();
        println!("  dissolved: {} {}{to} (records kept; certificates refused)", k.ags, k.name);
    }
    for (ags, old, new) in &c.renamed {
        println!("  renamed:  {ags} {old} -> {new}");
    }
}

fn main() -> ExitCode {
    edge::main_with(async { run().await.map(|()| ExitCode::SUCCESS) })
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    edge::init_logging(if cli.log_json { LogFormat::Json } else { LogFormat::Text }, "info");
    match cli.command {
        Command::Serve(a) => {
            let mut file = match &a.config {
                Some(path) => HubFile::load(path)?,
                None => HubFile { insecure_dev: a.insecure_dev, ..HubFile::default() },
            };
            file.listen = a.listen.unwrap_or(file.listen);
            file.data_dir = a.data_dir.unwrap_or(file.data_dir);
            if let Some(store) = a.store {
                store.parse::<efa_hub::StoreLocation>().map_err(anyhow::Error::msg)?;
                file.store = store;
            }
            if let Some(blobs) = a.blobs {
                blobs.parse::<efa_hub::BlobLocation>().map_err(anyhow::Error::msg)?;
                file.blobs = blobs;
            }
            file.insecure_dev |= a.insecure_dev;
            file.max_bundle_bytes = a.max_bundle_bytes.unwrap_or(file.max_bundle_bytes);
            file.event_retention = a.event_retention.or(file.event_retention);
            file.dashboard_listen = a.dashboard_listen.or(file.dashboard_listen);
            match (a.cert, a.key, a.client_ca) {
                (Some(cert), Some(key), Some(client_ca)) => {
                    file.tls = Some(TlsFile { cert, key, client_ca, crl: a.crl.clone() })
                }
                (None, None, None) => {}
                _ => bail!("give all three of --cert, --key and --client-ca"),
            }
            if let (Some(crl), Some(tls)) = (a.crl, file.tls.as_mut()) {
                tls.crl = Some(crl);
            }
            if file.tls.is_none() && !file.insecure_dev {
                bail!("TLS is required: --cert, --key and --client-ca (or [tls] in --config), or --insecure-dev");
            }
            serve(file.into_hub_config()).await
        }
        Command::Dev { listen, data_dir, dashboard_listen, store, blobs } => {
            let store: efa_hub::StoreLocation = store.parse().map_err(anyhow::Error::msg)?;
            let blobs: efa_hub::BlobLocation = blobs.parse().map_err(anyhow::Error::msg)?;
            let tls = ensure_dev_pki(&data_dir.join("pki"))?;
            println!("EfA Hub (dev) on https://{listen}, data in {}", data_dir.display());
            println!(
                "client certificates: {}/pki/{{land-05,kommune-05913000,operator-operator}}.pem",
                data_dir.display()
            );
            println!("operator dashboard: https://{dashboard_listen}/ (token: efa-hub token issue --data-dir {} --operator NAME)", data_dir.display());
            let mut config = HubConfig::new(listen, data_dir, Some(tls));
            config.dashboard = Some(DashboardConfig { listen: dashboard_listen });
            config.store = store;
            config.blobs = blobs;
            serve(config).await
        }
        Command::Migrate { from, to, blobs_to, blobs_from } => {
            let Some(dir) = from.strip_prefix("sled:") else {
                bail!("--from must be sled:DIR (the db/ directory of a hub's data dir)");
            };
            if !matches!(to.parse::<efa_hub::StoreLocation>(), Ok(efa_hub::StoreLocation::Postgres(_))) {
                bail!("--to must be a postgres:// URL");
            }
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                bail!("{} is not a directory (give the hub's DATA_DIR/db)", dir.display());
            }
            let blobs = match &blobs_to {
                None => None,
                Some(to) => {
                    let at: efa_hub::BlobLocation = to.parse().map_err(anyhow::Error::msg)?;
                    if !matches!(at, efa_hub::BlobLocation::S3(_)) {
                        bail!("--blobs-to must be an s3:// location");
                    }
                    let from = blobs_from.clone().unwrap_or_else(|| dir.join("..").join("blobs"));
                    if !from.is_dir() {
                        bail!(
                            "{} is not a directory (give the hub's DATA_DIR/blobs with --blobs-from)",
                            from.display()
                        );
                    }
                    Some((from, at))
                }
            };
            let report = tokio::task::spawn_blocking(move || -> Result<efa_registry::store::postgres::CopyReport> {
                let src =
                    efa_registry::store::SledStore::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
                let dst = std::sync::Arc::new(efa_registry::store::PostgresStore::open(&to)?);
                let progress = |kind: &str, n: usize| eprintln!("  {kind}: {n}");
                let report = dst.copy_from(&src, &progress)?;
                // The OZG catalogue and LeiKa come from the data this build ships.
                efa_registry::Registry::new(dst).import_catalogue()?;
                Ok(report)
            })
            .await??;
            println!(
                "copied {} events (log digest sha256:{}), every record and the transparency log ({} leaves, same root); counts and digest match on both sides",
                report.events, report.events_digest, report.log_leaves
            );
            if let Some((from, at)) = blobs {
                let report = tokio::task::spawn_blocking(move || {
                    let progress = |n: u64, bytes: u64| {
                        if n.is_multiple_of(1000) {
                            eprintln!("  blobs: {n} ({bytes} bytes)");
                        }
                    };
                    efa_hub::blobs::copy_dir(&from, &at, &progress)
                })
                .await??;
                println!(
                    "copied {} blobs and recipes ({} bytes, {} written now); each matched its digest and is on the target",
                    report.objects, report.bytes, report.copied
                );
            }
            Ok(())
        }
        Command::Import { data_dir, file, successors } => {
            let db = data_dir.join("db");
            let store =
                efa_registry::store::SledStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
            let registry = efa_registry::Registry::new(std::sync::Arc::new(store));
            let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let gv = match &file {
                Some(f) => efa_registry::import::gv100ad::parse(&efa_registry::import::register_text(&read(f)?))?,
                None => efa_registry::import::bundled_gv100ad()?,
            };
            let successors = match &successors {
                Some(f) => efa_registry::import::parse_successors(&efa_registry::import::register_text(&read(f)?))?,
                None => Default::default(),
            };
            let changes = registry.update_register(gv, &successors)?;
            let c = registry.import_catalogue()?;
            print_register_changes(&changes);
            println!(
                "register status {}: {} Länder, {} Kreise, {} Gemeinden (dissolved ones kept); {} OZG-Leistungen, {} LeiKa keys in {}",
                changes.as_of,
                c.laender,
                c.kreise,
                c.kommunen,
                c.ozg_leistungen,
                c.leika,
                db.display()
            );
            Ok(())
        }
        Command::LogKey { data_dir, key, origin, create } => {
            let path = key.unwrap_or_else(|| data_dir.join("log.key"));
            if !create && !path.exists() {
                anyhow::bail!(
                    "{} does not exist: is DATA_DIR the hub's data directory? \
                     --create makes a new log key",
                    path.display()
                );
            }
            println!("{}", efa_hub::translog::load_or_create_key(&path, &origin)?.verifier_key);
            Ok(())
        }
        Command::Token(TokenCommand::Issue { data_dir, operator }) => {
            let token = tokens::issue(&data_dir, &operator)?;
            eprintln!(
                "Token for operator {operator} (stored as SHA-256 in {}); it is shown only this once:",
                tokens::tokens_path(&data_dir).display()
            );
            println!("{token}");
            eprintln!("Open the dashboard once with ?token=<token>, or send 'Authorization: Bearer <token>'.");
            Ok(())
        }
        Command::Token(TokenCommand::List { data_dir }) => {
            let list = tokens::list(&data_dir)?;
            if list.is_empty() {
                println!(
                    "no operator tokens in {} (issue one: efa-hub token issue --operator NAME)",
                    data_dir.display()
                );
            }
            for t in list {
                println!(
                    "{}\t{}\tsha256:{}…",
                    t.operator,
                    efa_cli::table::timestamp(t.created_at_ms),
                    t.sha256.get(..12).unwrap_or(&t.sha256)
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { data_dir, operator }) => {
            let n = tokens::revoke(&data_dir, &operator)?;
            println!("revoked {n} token(s) of operator {operator}");
            Ok(())
        }
        Command::Pki(PkiCommand::Init { dir, hub_name }) => {
            let files = pki::init(&dir, &hub_name)?;
            println!("CA: {0}/ca.pem  hub: {1}", dir.display(), files.cert.display());
            Ok(())
        }
        Command::Pki(PkiCommand::Revoke { dir, cert }) => {
            let crl = pki::revoke(&dir, &cert)?;
            println!("{} revoked; CRL written to {}", cert.display(), crl.display());
            Ok(())
        }
        Command::Pki(PkiCommand::Issue { dir, land, kommune, operator, provider, kreis, verband }) => {
            let id = identity([
                ("land", land),
                ("kommune", kommune),
                ("kreis", kreis),
                ("verband", verband),
                ("operator", operator),
                ("provider", provider),
            ])?;
            let files = pki::issue(&dir, &id, &id.to_uri())?;
            println!("{} -> {} / {}", id.to_uri(), files.cert.display(), files.key.display());
            Ok(())
        }
    }
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
