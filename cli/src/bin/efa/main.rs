//! `efa`: the CLI for Land publishers and operators.

use anyhow::{bail, Result};
use clap::Parser;
use efa_cli::edge::{self, LogFormat};
use efa_cli::keys::{read_signing_key, write_signing_key};
use efa_cli::publish::{publish_dir, PublishSpec};
use efa_cli::reports;
use efa_cli::table::{time_cell, timestamp, Cell, Table};
use efa_domain::model::ids::LandCode;
use efa_domain::signing::SigningKey;
use efa_proto::tls::ClientTlsFiles;
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use efa_proto::v1::rollout_service_client::RolloutServiceClient;
use std::process::ExitCode;

mod args;
mod log;

use args::*;

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
        Command::Keys { conn, out, command: KeysCommand::Sets { land } } => {
            let mut client = CatalogServiceClient::new(conn.channel().await?);
            let land = if land.is_empty() {
                client
                    .get_signing_keys(pb::GetSigningKeysRequest { land_code: String::new() })
                    .await?
                    .into_inner()
                    .land_code
            } else {
                land.clone()
            };
            let sets = client.list_key_sets(pb::ListKeySetsRequest { land_code: land.clone() }).await?.into_inner();
            let mut t = Table::new(
                "key_sets",
                format!("Key sets of Land {land}"),
                &["version", "log leaf", "keys", "threshold", "revoked", "expires"],
            );
            for info in sets.key_sets {
                let signed = efa_domain::model::keyset::SignedKeySet::from(info.key_set.unwrap_or_default());
                let set = signed.peek()?;
                t.push(vec![
                    set.version.to_string().into(),
                    info.leaf_index.to_string().into(),
                    set.keys.join("\n").into(),
                    set.threshold.to_string().into(),
                    set.revoked.join("\n").into(),
                    timestamp(set.expires_ms).into(),
                ]);
            }
            out.print(&[&t])?;
        }
        Command::Keys {
            conn,
            command: KeysCommand::NewSet { keys, threshold, revoked, expires_days, sign_with, out: file },
            ..
        } => {
            let mut client = CatalogServiceClient::new(conn.channel().await?);
            let land = client
                .get_signing_keys(pb::GetSigningKeysRequest { land_code: String::new() })
                .await?
                .into_inner()
                .land_code;
            let sets = client.list_key_sets(pb::ListKeySetsRequest { land_code: land.clone() }).await?.into_inner();
            let version = sets.key_sets.iter().map(|k| k.version).max().unwrap_or(0) + 1;
            let keys = keys
                .iter()
                .map(|k| {
                    if k.trim().starts_with("efa-ed25519-public:") {
                        Ok(k.trim().to_string())
                    } else {
                        Ok(read_signing_key(std::path::Path::new(k))?.verifying_key().to_text())
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let set = efa_domain::model::keyset::KeySet {
                land: land.parse()?,
                version,
                expires_ms: efa_domain::now_ms() + i64::from(*expires_days) * 86_400_000,
                keys,
                threshold: *threshold,
                revoked: revoked.clone(),
            };
            let signers = sign_with.iter().map(|f| read_signing_key(f)).collect::<Result<Vec<_>, _>>()?;
            let signed = efa_cli::keysets::sign(&set, &signers.iter().collect::<Vec<_>>())?;
            match file {
                Some(path) => {
                    efa_cli::keysets::write(path, &signed)?;
                    println!(
                        "key set {version} of Land {land} written to {} ({} signature(s))",
                        path.display(),
                        signed.signatures.len()
                    );
                }
                None => {
                    let info = client.publish_key_set(pb::SignedKeySet::from(&signed)).await?.into_inner();
                    println!(
                        "published key set {} of Land {} (log leaf {})",
                        info.version, info.land_code, info.leaf_index
                    );
                }
            }
        }
        Command::Keys { command: KeysCommand::SignSet { file, sign_with }, .. } => {
            let mut signed = efa_cli::keysets::read(file)?;
            efa_cli::keysets::add_signature(&mut signed, &read_signing_key(sign_with)?)?;
            efa_cli::keysets::write(file, &signed)?;
            println!("signed {} ({} signature(s))", file.display(), signed.signatures.len());
        }
        Command::Keys { conn, command: KeysCommand::PublishSet { file }, .. } => {
            let signed = efa_cli::keysets::read(file)?;
            let info = CatalogServiceClient::new(conn.channel().await?)
                .publish_key_set(pb::SignedKeySet::from(&signed))
                .await?
                .into_inner();
            println!("published key set {} of Land {} (log leaf {})", info.version, info.land_code, info.leaf_index);
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
                KeysCommand::Sets { .. }
                | KeysCommand::NewSet { .. }
                | KeysCommand::SignSet { .. }
                | KeysCommand::PublishSet { .. } => unreachable!("matched above"),
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
            let mut t = Table::new(
                "services",
                "Services",
                &["id", "title", "land", "offered-by", "ozg-id", "themenfeld", "versions"],
            );
            for s in resp.services {
                let versions = Cell::with_value(s.versions.join(", "), serde_json::json!(s.versions));
                let offered = Cell::with_value(s.offered_by.join(", "), serde_json::json!(s.offered_by));
                t.push(vec![
                    s.id.into(),
                    s.title.into(),
                    s.land_code.into(),
                    offered,
                    s.ozg_id.into(),
                    s.themenfeld.into(),
                    versions,
                ]);
            }
            out.print(&[&t])?;
        }
        Command::Register {
            conn,
            id,
            ozg_id,
            leistungsschluessel,
            more_leistungsschluessel,
            title,
            description,
            params,
            adoption_public,
        } => {
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
                    more_leistungsschluessel: more_leistungsschluessel.clone(),
                })
                .await?
                .into_inner();
            println!("registered {} ({}, {} / {})", s.id, s.title, s.themenfeld, s.lebenslage);
        }
        Command::Publish { conn, dir, service, version, channel, notes, signing_key, rollout } => {
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
                rollout: rollout.as_deref().map(efa_cli::rollout::read_plan).transpose()?,
            };
            let first_ring = spec.rollout.as_ref().map(|p| p.ring_name(0).to_string());
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
            if let Some(ring) = first_ring {
                println!(
                    "rolls out ring by ring; ring 1 ({ring}) is open (efa rollout status {} {})",
                    r.service_id, r.version
                );
            }
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
        Command::Offer { conn, service, signing_key, channel, from_version, land_parameters, kommunen, withdraw } => {
            let key = read_signing_key(signing_key)?;
            let me =
                CatalogServiceClient::new(conn.channel().await?).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
            if me.role != "land" {
                bail!("only a Land offers services; you are {} {}", me.role, me.key);
            }
            let land_parameters = land_parameters
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--set {p:?}: write NAME=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let spec = efa_cli::publish::OfferSpec {
                service_id: service.parse()?,
                channel: channel.parse()?,
                from_version: from_version.clone(),
                land_parameters,
                kommunen: kommunen.iter().map(|a| a.parse()).collect::<Result<_, _>>()?,
                withdrawn: withdraw.clone(),
            };
            let o = efa_cli::publish::publish_offer(conn.channel().await?, &me.key.parse()?, &key, spec).await?;
            if o.withdrawn {
                println!("Land {} withdrew its offer of {}: {}", o.land_code, o.service_id, o.withdrawn_reason);
            } else {
                let whom = if o.kommunen.is_empty() {
                    "every Kommune of the Land".to_string()
                } else {
                    format!("{} Kommune(n)", o.kommunen.len())
                };
                println!(
                    "Land {} offers {} (built by Land {}) on {} from {} to {whom}, with {} Land parameter(s)",
                    o.land_code,
                    o.service_id,
                    o.building_land_code,
                    o.channel,
                    o.from_version,
                    o.land_parameters.len()
                );
            }
        }
        Command::Offers { conn, out, service, land } => {
            let resp = CatalogServiceClient::new(conn.channel().await?)
                .list_offers(pb::ListOffersRequest { service_id: service.clone(), land_code: land.clone() })
                .await?
                .into_inner();
            let mut t = Table::new(
                "offers",
                "Offers (Nachnutzung)",
                &["service", "offered-by", "built-by", "channel", "from", "kommunen", "land-parameters", "status"],
            );
            for o in resp.offers {
                let params: Vec<String> = o.land_parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let kommunen = if o.kommunen.is_empty() { "all".to_string() } else { o.kommunen.join(" ") };
                let status = if o.withdrawn { format!("withdrawn: {}", o.withdrawn_reason) } else { "offered".into() };
                t.push(vec![
                    o.service_id.into(),
                    o.land_code.into(),
                    o.building_land_code.into(),
                    o.channel.into(),
                    o.from_version.into(),
                    kommunen.into(),
                    params.join(", ").into(),
                    status.into(),
                ]);
            }
            out.print(&[&t])?;
        }
        Command::Rollout { conn, out, command } => {
            let mut client = RolloutServiceClient::new(conn.channel().await?);
            let act =
                |service: &str, version: &str, action: pb::RolloutAction, reason: &str| pb::RolloutActionRequest {
                    service_id: service.into(),
                    version: version.into(),
                    action: action as i32,
                    reason: reason.into(),
                };
            let status = match command {
                RolloutCommand::Status { service, version, land } => {
                    client
                        .get_rollout_status(pb::GetRolloutStatusRequest {
                            service_id: service.clone(),
                            version: version.clone(),
                            land_code: land.clone(),
                        })
                        .await?
                }
                RolloutCommand::Plan { service, version, plan } => {
                    let plan = efa_cli::rollout::read_plan(plan)?;
                    client
                        .set_rollout_plan(pb::SetRolloutPlanRequest {
                            service_id: service.clone(),
                            version: version.clone(),
                            plan: Some((&plan).into()),
                        })
                        .await?
                }
                RolloutCommand::Promote { service, version } => {
                    client.act_on_rollout(act(service, version, pb::RolloutAction::Promote, "")).await?
                }
                RolloutCommand::Pause { service, version, reason } => {
                    client.act_on_rollout(act(service, version, pb::RolloutAction::Pause, reason)).await?
                }
                RolloutCommand::Resume { service, version } => {
                    client.act_on_rollout(act(service, version, pb::RolloutAction::Resume, "")).await?
                }
                RolloutCommand::Abort { service, version, reason } => {
                    client.act_on_rollout(act(service, version, pb::RolloutAction::Abort, reason)).await?
                }
            }
            .into_inner();
            let [head, rings, gates] = efa_cli::rollout::status_tables(&status);
            out.print(&[&head, &rings, &gates])?;
        }
        Command::Yank { conn, service, version, reason, recall } => {
            let r = ReleaseServiceClient::new(conn.channel().await?)
                .yank_release(pb::YankReleaseRequest {
                    service_id: service.clone(),
                    version: version.clone(),
                    reason: reason.clone(),
                    recall: *recall,
                })
                .await?
                .into_inner();
            let what = if r.recalled { "yanked and recalled" } else { "yanked" };
            println!("{what} {} {}: {}", r.service_id, r.version, r.yank_reason);
        }
        Command::Deprecate { conn, service, reason, successor } => {
            let s = CatalogServiceClient::new(conn.channel().await?)
                .deprecate_service(pb::DeprecateServiceRequest {
                    service_id: service.clone(),
                    reason: reason.clone(),
                    successor_id: successor.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            let d = s.deprecated.unwrap_or_default();
            match d.successor_id.as_str() {
                "" => println!("deprecated {}: {}", s.id, d.reason),
                next => println!("deprecated {} (successor: {next}): {}", s.id, d.reason),
            }
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
        Command::Log { conn, command } => return log::run(conn, command).await,
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
