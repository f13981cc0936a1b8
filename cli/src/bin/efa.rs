//! `efa`: the CLI for Land publishers and operators.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use efa_cli::edge::{self, LogFormat};
use efa_cli::keys::{read_signing_key, write_signing_key};
use efa_cli::publish::{publish_dir, PublishSpec};
use efa_cli::reports;
use efa_cli::table::{render, time_cell, timestamp, Cell, Format, Output, Table};
use efa_domain::model::ids::LandCode;
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
#[command(
    name = "efa",
    version,
    about = "EfA Hub CLI for Land publishers and operators",
    after_help = "Exit status: 0 done as printed; 1 failed (the message says why); 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach the hub.
#[derive(Args, Clone)]
struct Conn {
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
}

/// How to print a report.
#[derive(Args, Clone)]
struct Out {
    /// Output format: table, csv or json (one JSON document with typed values).
    #[arg(long, global = true, default_value = "table")]
    format: Format,
    /// Shorthand for --format json.
    #[arg(long, global = true)]
    json: bool,
    /// CSV of a report with several tables: which one (default: the first).
    #[arg(long, global = true)]
    table: Option<String>,
    /// CSV: start with a UTF-8 byte order mark, for spreadsheet programs that need it for umlauts.
    #[arg(long, global = true)]
    bom: bool,
}

impl Out {
    fn print(&self, tables: &[&Table]) -> Result<()> {
        let out = Output {
            format: if self.json { Format::Json } else { self.format },
            table: self.table.clone(),
            bom: self.bom,
        };
        print!("{}", render(tables, &out).map_err(anyhow::Error::msg)?);
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a Land's Ed25519 release signing key (mode 0600); prints its public key and
    /// where it goes.
    Keygen {
        /// File to create for the secret key; never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Your Land code (e.g. 05), to print the `[trust]` lines Kommunen paste.
        #[arg(long)]
        land: Option<String>,
    },
    /// Print the public key of a signing key file.
    Pubkey {
        signing_key: PathBuf,
        /// Print the `[trust]` lines for a node config instead, for this Land code.
        #[arg(long, value_name = "LAND")]
        trust: Option<String>,
    },
    /// The release signing keys your Land registers with the hub, so it refuses releases
    /// signed with any other key at once (nodes still verify against the keys they pin).
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Which Kommunen a municipal IT service provider may act for (operators set it).
    Grants {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Show who the hub thinks you are.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Check your certificate, key and CA file and the connection to the hub, and say in
    /// words what is wrong.
    Doctor {
        #[command(flatten)]
        conn: Conn,
    },
    /// List services.
    Services {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        /// Only this Land's (code, e.g. 05).
        #[arg(long, default_value = "")]
        land: String,
        /// Only this Themenfeld, exactly as in the OZG catalogue (e.g. "Familie & Kind").
        #[arg(long, default_value = "")]
        themenfeld: String,
    },
    /// Register (or update) a service of your Land.
    Register {
        #[command(flatten)]
        conn: Conn,
        /// Stable id: a-z, 0-9 and '-', 3..64 characters, e.g. wohngeld-nrw.
        #[arg(long)]
        id: String,
        /// 5-digit OZG-ID from the OZG catalogue.
        #[arg(long)]
        ozg_id: String,
        /// 14-digit LeiKa Leistungsschlüssel (optional).
        #[arg(long, default_value = "")]
        leistungsschluessel: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// NAME:KIND[:required][:MAXLEN], KIND one of text, url, email, amount_cents,
        /// postcodes, boolean, integer, fit_connect_destination (a UUID), phone. Repeat per
        /// parameter.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Let every Kommune see who adopted this service.
        #[arg(long)]
        adoption_public: bool,
    },
    /// Re-sign your Land's snapshot (newest version per service) so nodes can detect a
    /// hub that hides releases. Publishing does this too; run it daily so it never expires.
    Snapshot {
        #[command(flatten)]
        conn: Conn,
        /// Release signing key (from `efa keygen`).
        #[arg(long)]
        signing_key: PathBuf,
        /// Days until nodes treat the snapshot as stale.
        #[arg(long, default_value_t = 7)]
        valid_days: u64,
    },
    /// Publish DIR as a new release, signed with your Land key.
    Publish {
        #[command(flatten)]
        conn: Conn,
        dir: PathBuf,
        #[arg(long)]
        service: String,
        /// Semantic version, e.g. 1.0.0; published versions are immutable.
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
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        service: String,
        #[arg(long)]
        version: String,
        /// Why; Kommunen read it.
        #[arg(long)]
        reason: String,
    },
    /// List the releases of a service.
    Releases {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        service: String,
    },
    /// Adoption and rating reports.
    Report {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// Replace the Kommunen a provider may act for.
    Set {
        /// The provider's name (efa://provider/NAME in its certificate).
        #[arg(long)]
        provider: String,
        /// AGS of a Kommune it runs the node of; repeat. None revokes every grant.
        #[arg(long = "ags")]
        kommunen: Vec<String>,
    },
    /// Show the Kommunen a provider may act for (default: yours, as a provider).
    Show {
        #[arg(long, default_value = "")]
        provider: String,
    },
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
    /// Pre-flight results of a release: which Kommunen are ready for it and which are
    /// blocked (missing or invalid parameters), before anything is deployed.
    Preflight { service: String, version: String },
    /// The adoption matrix (Kommunen × services: what each runs, or its last report), for
    /// export as CSV or JSON; by default every service you may read.
    Matrix {
        /// Only these services (repeat); default: all.
        #[arg(long = "service")]
        services: Vec<String>,
        /// Only services of this Land (code, e.g. 05).
        #[arg(long, default_value = "")]
        land: String,
    },
    /// FIT-Connect routing for a Leistungsschlüssel: per ARS the destination the Kommune's
    /// node declared.
    Routing {
        #[arg(long)]
        leistungsschluessel: String,
    },
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

impl Conn {
    async fn channel(&self) -> Result<Channel> {
        let tls = match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            (None, None, None) if self.hub.starts_with("http://") => None,
            _ => {
                let missing: Vec<&str> =
                    [("--ca/EFA_CA", &self.ca), ("--cert/EFA_CERT", &self.cert), ("--key/EFA_KEY", &self.key)]
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(n, _)| *n)
                        .collect();
                bail!("missing {} to talk to the hub over mTLS (all three are needed)", missing.join(", "))
            }
        };
        match efa_proto::tls::connect(&self.hub, tls.as_ref()).await {
            Ok(ch) => Ok(ch),
            Err(e) => match tls.as_ref().and_then(efa_cli::doctor::explain) {
                Some(why) => bail!("{e}\n  {why}\n  (`efa doctor` runs every check)"),
                None => bail!("{e}\n  (`efa doctor` checks your certificate, key and CA file)"),
            },
        }
    }
}

/// The `[trust]` lines a Kommune pastes into its node config for `land`.
fn trust_snippet(land: &str, public: &str) -> String {
    format!("[trust]\n\"{land}\" = [\"{public}\"]")
}

fn main() -> ExitCode {
    edge::main_with(run())
}

async fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    edge::init_logging(LogFormat::Text, "warn");
    match &cli.command {
        Command::Keygen { out, land } => {
            if let Some(land) = land {
                land.parse::<LandCode>()?;
            }
            let key = SigningKey::generate();
            write_signing_key(out, &key)?;
            let public = key.verifying_key().to_text();
            let land = land.as_deref().unwrap_or("<your Land code>");
            println!("wrote {} (secret, mode 0600: keep it private and backed up)", out.display());
            println!("public key: {public}");
            println!();
            println!("Register it with the hub, so it refuses releases signed with any other key:");
            println!("  efa keys add --signing-key {}", out.display());
            println!(
                "Kommunen pin it in efa-node.toml (send them these lines; `efa pubkey --trust` prints them again):"
            );
            println!("{}", trust_snippet(land, &public));
        }
        Command::Pubkey { signing_key, trust } => {
            let public = read_signing_key(signing_key)?.verifying_key().to_text();
            match trust {
                Some(land) => {
                    land.parse::<LandCode>()?;
                    println!("{}", trust_snippet(land, &public));
                }
                None => println!("{public}"),
            }
        }
        Command::Keys { conn, out, command } => {
            let mut client = CatalogServiceClient::new(conn.channel().await?);
            let current = |land: String| pb::GetSigningKeysRequest { land_code: land };
            match command {
                KeysCommand::List { land } => {
                    let keys = client.get_signing_keys(current(land.clone())).await?.into_inner();
                    let mut t =
                        Table::new("keys", format!("Release signing keys of Land {}", keys.land_code), &["key"]);
                    for key in keys.keys {
                        t.push(vec![key.into()]);
                    }
                    out.print(&[&t])?;
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
        Command::Grants { conn, out, command } => {
            let mut client = CatalogServiceClient::new(conn.channel().await?);
            let grant = match command {
                GrantsCommand::Set { provider, kommunen } => client
                    .set_provider_grant(pb::ProviderGrant {
                        provider: provider.clone(),
                        kommunen: kommunen.clone(),
                        updated_at_ms: 0,
                    })
                    .await?
                    .into_inner(),
                GrantsCommand::Show { provider } => client
                    .get_provider_grant(pb::GetProviderGrantRequest { provider: provider.clone() })
                    .await?
                    .into_inner(),
            };
            let mut t = Table::new(
                "grant",
                format!("Provider {} may act for {} Kommune(n)", grant.provider, grant.kommunen.len()),
                &["ags"],
            );
            for ags in grant.kommunen {
                t.push(vec![ags.into()]);
            }
            out.print(&[&t])?;
        }
        Command::Doctor { conn } => {
            let (Some(ca), Some(cert), Some(key)) = (&conn.ca, &conn.cert, &conn.key) else {
                bail!("give --ca, --cert and --key (or EFA_CA, EFA_CERT, EFA_KEY) to check them");
            };
            let files = ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
            if !efa_cli::doctor::run(&conn.hub, &files).await {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Whoami { conn } => {
            let me =
                CatalogServiceClient::new(conn.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            println!("{} {} ({})", me.role, me.key, me.display_name);
        }
        Command::Services { conn, out, land, themenfeld } => {
            let resp = CatalogServiceClient::new(conn.channel().await?)
                .list_services(pb::ListServicesRequest { land_code: land.clone(), themenfeld: themenfeld.clone() })
                .await?
                .into_inner();
            let mut t =
                Table::new("services", "Services", &["id", "title", "land", "ozg-id", "themenfeld", "versions"]);
            for s in resp.services {
                let versions = Cell::with_value(s.versions.join(", "), serde_json::json!(s.versions));
                t.push(vec![
                    s.id.into(),
                    s.title.into(),
                    s.land_code.into(),
                    s.ozg_id.into(),
                    s.themenfeld.into(),
                    versions,
                ]);
            }
            out.print(&[&t])?;
        }
        Command::Register { conn, id, ozg_id, leistungsschluessel, title, description, params, adoption_public } => {
            let parameters = params.iter().map(|p| parse_param(p)).collect::<Result<Vec<_>>>()?;
            let s = CatalogServiceClient::new(conn.channel().await?)
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
        Command::Publish { conn, dir, service, version, channel, notes, signing_key } => {
            let key = read_signing_key(signing_key)?;
            let me =
                CatalogServiceClient::new(conn.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
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
            let r = publish_dir(conn.channel().await?, spec, move |sent, total| {
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
        Command::Snapshot { conn, signing_key, valid_days } => {
            let key = read_signing_key(signing_key)?;
            let me =
                CatalogServiceClient::new(conn.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            let validity = std::time::Duration::from_secs(valid_days * 24 * 3600);
            let s = efa_cli::publish::publish_snapshot(conn.channel().await?, &me.key.parse()?, &key, validity).await?;
            println!(
                "snapshot of Land {} covers {} services, valid until {} UTC",
                s.land_code,
                s.services,
                timestamp(s.expires_at_ms)
            );
        }
        Command::Yank { conn, service, version, reason } => {
            let r = ReleaseServiceClient::new(conn.channel().await?)
                .yank_release(pb::YankReleaseRequest {
                    service_id: service.clone(),
                    version: version.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            println!("yanked {} {}: {}", r.service_id, r.version, r.yank_reason);
        }
        Command::Releases { conn, out, service } => {
            let resp = ReleaseServiceClient::new(conn.channel().await?)
                .list_releases(pb::ListReleasesRequest { service_id: service.clone(), channel: String::new() })
                .await?
                .into_inner();
            let mut t = Table::new(
                "releases",
                format!("Releases of {service}"),
                &["version", "channel", "published", "files", "bytes", "yanked", "notes"],
            );
            for r in resp.releases {
                t.push(vec![
                    r.version.into(),
                    r.channel.into(),
                    time_cell(r.published_at_ms),
                    r.file_count.into(),
                    r.total_size.into(),
                    if r.yanked { Cell::text(r.yank_reason) } else { Cell::none() },
                    Cell::opt(r.release_notes),
                ]);
            }
            out.print(&[&t])?;
        }
        Command::Report { conn, out, command } => {
            let ch = conn.channel().await?;
            let tables = match command {
                ReportCommand::Adopters { service } => vec![reports::adopters(ch, service).await?],
                ReportCommand::Kommune { ags } => {
                    let (a, b) = reports::kommune(ch, ags).await?;
                    vec![a, b]
                }
                ReportCommand::Coverage { service, land, all } => {
                    vec![reports::coverage(ch, service, land, !all).await?]
                }
                ReportCommand::Ratings { service } => vec![reports::ratings(ch, service).await?],
                ReportCommand::Matrix { services, land } => {
                    let ids = if services.is_empty() {
                        let mut catalog = CatalogServiceClient::new(ch.clone());
                        // A Land reads the adoption of its own services; operators of all.
                        let me = catalog.who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
                        let land = if land.is_empty() && me.role == "land" { me.key } else { land.clone() };
                        catalog
                            .list_services(pb::ListServicesRequest { land_code: land, themenfeld: String::new() })
                            .await?
                            .into_inner()
                            .services
                            .into_iter()
                            .map(|s| s.id)
                            .collect()
                    } else {
                        services.clone()
                    };
                    vec![reports::matrix(ch, &ids).await?]
                }
                ReportCommand::Routing { leistungsschluessel } => {
                    vec![reports::routing(ch, leistungsschluessel).await?]
                }
                ReportCommand::Preflight { service, version } => vec![reports::preflight(ch, service, version).await?],
                ReportCommand::Feedback { service, land } => {
                    let (a, b) = reports::feedback(ch, service, land).await?;
                    vec![a, b]
                }
            };
            out.print(&tables.iter().collect::<Vec<_>>())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
