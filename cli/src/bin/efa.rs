//! `efa`: the CLI for Land publishers and operators.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use efa_cli::edge::{self, LogFormat};
use efa_cli::keys::{read_signing_key, write_signing_key};
use efa_cli::publish::{publish_dir, PublishSpec};
use efa_cli::reports;
use efa_cli::table::{timestamp, Format, Table};
use efa_domain::params::ParameterKind;
use efa_domain::signing::SigningKey;
use efa_proto::convert::WireEnum;
use efa_proto::tls::ClientTlsFiles;
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use std::path::PathBuf;
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "efa", version, about = "EfA Hub CLI for Land publishers and operators")]
struct Cli {
    /// Hub URL.
    #[arg(long, global = true, env = "EFA_HUB", default_value = "https://127.0.0.1:50051")]
    hub: String,
    /// CA certificate of the hub (PEM).
    #[arg(long, global = true, env = "EFA_CA")]
    ca: Option<PathBuf>,
    /// Your client certificate (PEM); its URI SAN names your role.
    #[arg(long, global = true, env = "EFA_CERT")]
    cert: Option<PathBuf>,
    /// Your client key (PEM).
    #[arg(long, global = true, env = "EFA_KEY")]
    key: Option<PathBuf>,
    /// Output format: table, csv or json.
    #[arg(long, global = true, default_value = "table")]
    format: Format,
    /// Shorthand for --format json.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a Land's Ed25519 release signing key; prints the public key for node trust configs.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a signing key file, for node trust configs.
    Pubkey { signing_key: PathBuf },
    /// The release signing keys your Land registers with the hub, so it refuses releases
    /// signed with any other key at once (nodes still verify against the keys they pin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show who the hub thinks you are.
    Whoami,
    /// Check your certificate, key and CA file and the connection to the hub, and say in
    /// words what is wrong.
    Doctor,
    /// List services.
    Services {
        #[arg(long, default_value = "")]
        land: String,
        #[arg(long, default_value = "")]
        themenfeld: String,
    },
    /// Register (or update) a service of your Land.
    Register {
        #[arg(long)]
        id: String,
        #[arg(long)]
        ozg_id: String,
        #[arg(long, default_value = "")]
        leistungsschluessel: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// NAME:KIND[:required][:MAXLEN], KIND one of text, url, email, amount_cents,
        /// postcodes, boolean, integer. Repeat per parameter.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Let every Kommune see who adopted this service.
        #[arg(long)]
        adoption_public: bool,
    },
    /// Re-sign your Land's snapshot (newest version per service) so nodes can detect a
    /// hub that hides releases. Publishing does this too; run it daily so it never expires.
    Snapshot {
        #[arg(long)]
        signing_key: PathBuf,
        /// Days until nodes treat the snapshot as stale.
        #[arg(long, default_value_t = 7)]
        valid_days: u64,
    },
    /// Publish DIR as a new release, signed with your Land key.
    Publish {
        dir: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "stable")]
        channel: String,
        #[arg(long, default_value = "")]
        notes: String,
        /// Release signing key (from `efa keygen`).
        #[arg(long)]
        signing_key: PathBuf,
    },
    /// Yank a release: no new deployments; running ones are left alone.
    Yank {
        #[arg(long)]
        service: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        reason: String,
    },
    /// List the releases of a service.
    Releases { service: String },
    /// Adoption and rating reports.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the keys a Land registered (default: yours).
    List {
        #[arg(long, default_value = "")]
        land: String,
    },
    /// Register a key: the public key of a signing key file, or a public key in text form.
    Add {
        /// Signing key file (from `efa keygen`); its public key is registered.
        #[arg(long, conflicts_with = "public", required_unless_present = "public")]
        signing_key: Option<PathBuf>,
        /// A public key, `efa-ed25519-public:...`.
        #[arg(long)]
        public: Option<String>,
    },
    /// Stop accepting releases signed by a key (after rotating to a new one).
    Remove {
        /// The public key, `efa-ed25519-public:...`.
        public: String,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Which Kommunen adopted a service, in which state and version.
    Adopters { service: String },
    /// What a Kommune runs, and its adoption history.
    Kommune { ags: String },
    /// Share of Gemeinden per Land and Kreis that run a service.
    Coverage {
        service: String,
        #[arg(long, default_value = "")]
        land: String,
        /// Include Länder and Kreise without any adoption.
        #[arg(long)]
        all: bool,
    },
    /// Rating summary per version.
    Ratings { service: String },
    /// Comments and rejection reasons for your Land's services (operators: any).
    Feedback {
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long, default_value = "")]
        land: String,
    },
}

fn parse_param(s: &str) -> Result<pb::ParameterSpec> {
    let parts: Vec<&str> = s.split(':').collect();
    let [name, kind, rest @ ..] = parts.as_slice() else {
        bail!("--param {s:?}: expected NAME:KIND[:required][:MAXLEN]")
    };
    let kind: ParameterKind = kind.parse().with_context(|| format!("--param {s:?}"))?;
    let mut spec = pb::ParameterSpec { name: name.to_string(), kind: kind.to_wire(), ..Default::default() };
    for r in rest {
        if *r == "required" {
            spec.required = true;
        } else {
            spec.max_length =
                r.parse().with_context(|| format!("--param {s:?}: {r:?} is neither 'required' nor a length"))?;
        }
    }
    Ok(spec)
}

impl Cli {
    async fn channel(&self) -> Result<Channel> {
        let tls = match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            (None, None, None) if self.hub.starts_with("http://") => None,
            _ => bail!("give --ca, --cert and --key (or EFA_CA, EFA_CERT, EFA_KEY) to talk to the hub over mTLS"),
        };
        Ok(efa_proto::tls::connect(&self.hub, tls.as_ref()).await?)
    }

    fn print(&self, tables: &[Table]) {
        let format = if self.json { Format::Json } else { self.format };
        if format == Format::Csv {
            // A UTF-8 byte order mark makes spreadsheet programs (Excel in particular) read
            // umlauts correctly instead of guessing a legacy code page.
            print!("\u{feff}");
        }
        for (i, t) in tables.iter().enumerate() {
            if i > 0 && format == Format::Csv {
                println!();
            }
            print!("{}", t.render(format));
        }
    }
}

fn main() -> ExitCode {
    edge::main_with(run())
}

async fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    edge::init_logging(LogFormat::Text, "warn");
    match &cli.command {
        Command::Keygen { out } => {
            let key = SigningKey::generate();
            write_signing_key(out, &key)?;
            println!("{}", key.verifying_key().to_text());
        }
        Command::Pubkey { signing_key } => println!("{}", read_signing_key(signing_key)?.verifying_key().to_text()),
        Command::Keys(k) => {
            let mut client = CatalogServiceClient::new(cli.channel().await?);
            let current = |land: String| pb::GetSigningKeysRequest { land_code: land };
            match k {
                KeysCommand::List { land } => {
                    let keys = client.get_signing_keys(current(land.clone())).await?.into_inner();
                    let mut t = Table::new(format!("Release signing keys of Land {}", keys.land_code), &["key"]);
                    for key in keys.keys {
                        t.push(vec![key]);
                    }
                    cli.print(&[t]);
                }
                KeysCommand::Add { signing_key, public } => {
                    let key = match (signing_key, public) {
                        (Some(file), _) => read_signing_key(file)?.verifying_key().to_text(),
                        (None, Some(public)) => public.trim().to_string(),
                        (None, None) => bail!("give --signing-key FILE or --public KEY"),
                    };
                    let mut keys = client.get_signing_keys(current(String::new())).await?.into_inner().keys;
                    if keys.contains(&key) {
                        println!("{key} is registered already");
                    } else {
                        keys.push(key.clone());
                        let set = client.set_signing_keys(pb::SetSigningKeysRequest { keys }).await?.into_inner();
                        println!("registered {key}; Land {} has {} key(s)", set.land_code, set.keys.len());
                    }
                }
                KeysCommand::Remove { public } => {
                    let keys = client.get_signing_keys(current(String::new())).await?.into_inner().keys;
                    let left: Vec<String> = keys.iter().filter(|k| k.trim() != public.trim()).cloned().collect();
                    if left.len() == keys.len() {
                        bail!("{public} is not registered (see `efa keys list`)");
                    }
                    let set = client.set_signing_keys(pb::SetSigningKeysRequest { keys: left }).await?.into_inner();
                    println!("removed {public}; Land {} has {} key(s)", set.land_code, set.keys.len());
                }
            }
        }
        Command::Doctor => {
            let (Some(ca), Some(cert), Some(key)) = (&cli.ca, &cli.cert, &cli.key) else {
                bail!("give --ca, --cert and --key (or EFA_CA, EFA_CERT, EFA_KEY) to check them");
            };
            let files = ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
            if !efa_cli::doctor::run(&cli.hub, &files).await {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Whoami => {
            let me = CatalogServiceClient::new(cli.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            println!("{} {} ({})", me.role, me.key, me.display_name);
        }
        Command::Services { land, themenfeld } => {
            let resp = CatalogServiceClient::new(cli.channel().await?)
                .list_services(pb::ListServicesRequest { land_code: land.clone(), themenfeld: themenfeld.clone() })
                .await?
                .into_inner();
            let mut t = Table::new("Services", &["id", "title", "land", "ozg-id", "themenfeld", "versions"]);
            for s in resp.services {
                t.push(vec![s.id, s.title, s.land_code, s.ozg_id, s.themenfeld, s.versions.join(", ")]);
            }
            cli.print(&[t]);
        }
        Command::Register { id, ozg_id, leistungsschluessel, title, description, params, adoption_public } => {
            let parameters = params.iter().map(|p| parse_param(p)).collect::<Result<Vec<_>>>()?;
            let s = CatalogServiceClient::new(cli.channel().await?)
                .register_service(pb::RegisterServiceRequest {
                    id: id.clone(),
                    ozg_id: ozg_id.clone(),
                    leistungsschluessel: leistungsschluessel.clone(),
                    title: title.clone(),
                    description: description.clone(),
                    parameters,
                    adoption_public: *adoption_public,
                })
                .await?
                .into_inner();
            println!("registered {} ({}, {} / {})", s.id, s.title, s.themenfeld, s.lebenslage);
        }
        Command::Publish { dir, service, version, channel, notes, signing_key } => {
            let key = read_signing_key(signing_key)?;
            let me = CatalogServiceClient::new(cli.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            if me.role != "land" {
                bail!("publishing needs a Land certificate; yours is {} {}", me.role, me.key);
            }
            let spec = PublishSpec {
                dir,
                service_id: service.parse()?,
                version: version.clone(),
                channel: channel.parse()?,
                land: me.key.parse()?,
                release_notes: notes.clone(),
                signing_key: &key,
            };
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let started = std::time::Instant::now();
            let r = publish_dir(cli.channel().await?, spec, move |sent, total| {
                b.set_length(total);
                b.set_position(sent);
            })
            .await;
            bar.finish_and_clear();
            let r = r?;
            println!(
                "published {} {} on {} ({} files, {}, {}) in {}",
                r.service_id,
                r.version,
                r.channel,
                r.file_count,
                indicatif::HumanBytes(r.total_size),
                r.content_digest,
                indicatif::HumanDuration(started.elapsed())
            );
        }
        Command::Snapshot { signing_key, valid_days } => {
            let key = read_signing_key(signing_key)?;
            let me = CatalogServiceClient::new(cli.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            let validity = std::time::Duration::from_secs(valid_days * 24 * 3600);
            let s = efa_cli::publish::publish_snapshot(cli.channel().await?, &me.key.parse()?, &key, validity).await?;
            println!(
                "snapshot of Land {} covers {} services, valid until {}",
                s.land_code,
                s.services,
                timestamp(s.expires_at_ms)
            );
        }
        Command::Yank { service, version, reason } => {
            let r = ReleaseServiceClient::new(cli.channel().await?)
                .yank_release(pb::YankReleaseRequest {
                    service_id: service.clone(),
                    version: version.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            println!("yanked {} {}: {}", r.service_id, r.version, r.yank_reason);
        }
        Command::Releases { service } => {
            let resp = ReleaseServiceClient::new(cli.channel().await?)
                .list_releases(pb::ListReleasesRequest { service_id: service.clone(), channel: String::new() })
                .await?
                .into_inner();
            let mut t = Table::new(
                format!("Releases of {service}"),
                &["version", "channel", "published", "files", "bytes", "yanked", "notes"],
            );
            for r in resp.releases {
                t.push(vec![
                    r.version,
                    r.channel,
                    timestamp(r.published_at_ms),
                    r.file_count.to_string(),
                    r.total_size.to_string(),
                    if r.yanked { format!("yes: {}", r.yank_reason) } else { String::new() },
                    r.release_notes,
                ]);
            }
            cli.print(&[t]);
        }
        Command::Report(r) => {
            let ch = cli.channel().await?;
            let tables = match r {
                ReportCommand::Adopters { service } => vec![reports::adopters(ch, service).await?],
                ReportCommand::Kommune { ags } => {
                    let (a, b) = reports::kommune(ch, ags).await?;
                    vec![a, b]
                }
                ReportCommand::Coverage { service, land, all } => {
                    vec![reports::coverage(ch, service, land, !all).await?]
                }
                ReportCommand::Ratings { service } => vec![reports::ratings(ch, service).await?],
                ReportCommand::Feedback { service, land } => {
                    let (a, b) = reports::feedback(ch, service, land).await?;
                    vec![a, b]
                }
            };
            cli.print(&tables);
        }
    }
    Ok(ExitCode::SUCCESS)
}
