//! The steps the story repeats: node configs, registering and publishing, rollout waits,
//! and the audit of the transparency log.

use crate::cast::{
    builder, demo_destination, more_leistungsschluessel, write_bundle, Kommune, FREE_OF_CHARGE, NRW, PROVIDER, SERVICES,
};
use crate::section;
use anyhow::{ensure, Context, Result};
use efa_cli::publish::{publish_dir, PublishSpec};
use efa_cli::table::{render, Output};
use efa_domain::authz::Identity;
use efa_domain::model::rating::{Criterion, NewRating};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan};
use efa_domain::params::ParamValue;
use efa_hub::dev::DevFederation;
use efa_node::{Agent, Handled, NodeConfig};
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::report_service_client::ReportServiceClient;
use efa_proto::v1::rollout_service_client::RolloutServiceClient;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node config of Kommune `k`; `postcode` is its seat's postcode from the register,
/// `phone` the office's telephone number if the Kommune has set it (Wohngeld 1.2.0 needs it).
pub(crate) fn node_config(
    fed: &DevFederation,
    root: &Path,
    k: &Kommune,
    postcode: &str,
    phone: Option<&str>,
    themenfelder: &BTreeMap<String, String>,
) -> Result<NodeConfig> {
    let who = if k.by_provider { Identity::Provider(PROVIDER.into()) } else { Identity::Kommune(k.ags.parse()?) };
    let tls = fed.client_tls(&who)?;
    let base = root.join("nodes").join(k.name.to_lowercase().replace('ö', "oe"));
    let mut config = NodeConfig::new(k.ags.parse()?, fed.url(), base.join("state"), base.join("deploy")).with_tls(tls);
    // Its own Land's key (for offers and NRW's services) and each building Land's.
    let mut lands: Vec<&str> = SERVICES.iter().map(|s| builder(s.0)).collect();
    lands.push(NRW);
    lands.sort();
    lands.dedup();
    for land in lands {
        config = config.trust(land.parse()?, fed.trusted_key(&land.parse()?)?);
    }
    // Every node checks the hub's transparency log: each release it deploys and each
    // report it sends must show up there, in one history the hub cannot rewrite unseen.
    config = config.check_log(fed.log_key()?);
    config.health_timeout_secs = 10;
    config.max_staleness_secs = 3600;
    for (service, policy) in &k.subscriptions {
        let text = |s: String| ParamValue::Text(s);
        let purpose: String =
            format!("{} {}", k.name, service.split('-').next().unwrap_or(service)).chars().take(27).collect();
        let id: efa_domain::model::ids::ServiceId = service.parse()?;
        let mut values = BTreeMap::from([
            ("zustaendige_stelle".into(), text(format!("Stadt {} – Bürgerdienste", k.name))),
            ("postleitzahlen".into(), ParamValue::List(vec![postcode.to_string()])),
            ("fit_connect_destination".into(), text(demo_destination(k.ags, service))),
            ("payment_purpose".into(), text(purpose)),
            // Free services cost nothing; other fees are illustrative.
            ("fee_cents".into(), ParamValue::Integer(if FREE_OF_CHARGE.contains(service) { 0 } else { 1500 })),
            ("epaybl_endpoint".into(), text(k.epaybl.into())),
            (
                "datenschutz_url".into(),
                text(format!("https://{}.example/datenschutz", k.name.to_lowercase().replace('ü', "ue"))),
            ),
            ("kontakt_email".into(), text(format!("efa@{}.example", k.name.to_lowercase().replace('ü', "ue")))),
        ]);
        if let (Some(phone), true) = (phone, *service == "wohngeld") {
            values.insert("kontakt_telefon".into(), text(phone.to_string()));
        }
        if !k.by_themenfeld {
            config = config.subscribe(id.clone(), *policy);
        }
        config = config.health_command(id.clone(), "sh checks/smoke.sh").parameters(id, values);
    }
    if k.by_themenfeld {
        let mut followed: Vec<(&str, UpdatePolicy)> = Vec::new();
        for (service, policy) in &k.subscriptions {
            let t = themenfelder.get(*service).context("every service has a Themenfeld")?;
            if !followed.iter().any(|(f, _)| f == t) {
                followed.push((t, *policy));
            }
        }
        for (t, policy) in followed {
            config.subscriptions.push(efa_node::config::SubscriptionConfig {
                service: None,
                themenfeld: Some(t.to_string()),
                channel: "stable".parse()?,
                policy,
            });
        }
    }
    Ok(config)
}

pub(crate) fn describe(h: &Handled) -> String {
    match h {
        Handled::Deployed { service, version } => format!("deployed {service} {version}"),
        Handled::RolledBack { service, version, reason } => {
            format!("ROLLED BACK {service} {version}: {}", reason.lines().next().unwrap_or(""))
        }
        Handled::Failed { service, version, reason } => format!("FAILED {service} {version}: {reason}"),
        Handled::AwaitingApproval { service, version } => format!("evaluating {service} {version} (awaiting approval)"),
        Handled::Ignored { service, version, why } => format!("ignored {service} {version}: {why}"),
    }
}

/// The building Land registers (or re-registers) one of its services with `parameters`.
pub(crate) async fn register(
    fed: &DevFederation,
    (id, ozg, leika, title, _): (&str, &str, &str, &str, Option<&str>),
    parameters: Vec<pb::ParameterSpec>,
) -> Result<pb::ServiceInfo> {
    let request = pb::RegisterServiceRequest {
        id: id.into(),
        ozg_id: ozg.into(),
        leistungsschluessel: leika.into(),
        title: title.into(),
        description: format!("EfA-Onlinedienst „{title}“ (Umsetzungsland {})", builder(id)),
        parameters,
        adoption_public: false,
        more_leistungsschluessel: more_leistungsschluessel(id).iter().map(|k| k.to_string()).collect(),
    };
    let land = fed.channel(&Identity::Land(builder(id).parse()?)).await?;
    Ok(CatalogServiceClient::new(land).register_service(request).await?.into_inner())
}

pub(crate) async fn publish(
    fed: &DevFederation,
    root: &Path,
    service: &str,
    title: &str,
    version: &str,
    notes: &str,
    rollout: Option<RolloutPlan>,
) -> Result<pb::ReleaseInfo> {
    let dir = write_bundle(root, service, title, version)?;
    let land: efa_domain::model::ids::LandCode = builder(service).parse()?;
    let key = fed.signing_key(&land)?;
    let spec = PublishSpec {
        dir: &dir,
        service_id: service.parse()?,
        version: version.into(),
        channel: "stable".parse()?,
        land: land.clone(),
        release_notes: notes.into(),
        signing_key: &key,
        rollout,
    };
    Ok(publish_dir(fed.channel(&Identity::Land(land)).await?, spec, |_, _| {}).await?)
}

/// Wohngeld's rollout plan: Dortmund and Bielefeld first; the rest once two of them run
/// it, none failed or rolled back, and at least one rated it three stars or more.
pub(crate) fn pilot_plan() -> Result<RolloutPlan> {
    Ok(RolloutPlan {
        rings: vec![Ring {
            name: "Pilotkommunen".into(),
            members: Members::Kommunen(["05913000".parse()?, "05711000".parse()?].into()),
        }],
        gates: Gates {
            min_healthy: 2,
            max_failed_percent: Some(0),
            min_ratings: 1,
            min_stars_tenths: Some(30),
            ..Default::default()
        },
        decide_within_secs: Some(14 * 24 * 3600),
    })
}

pub(crate) fn wohngeld_rating(version: &str, stars: u32, area: Criterion, comment: &str) -> NewRating {
    NewRating {
        service_id: "wohngeld".parse().expect("a valid id"),
        version: version.parse().expect("a valid version"),
        stars,
        criteria: vec![(area, stars)],
        comment: comment.into(),
        met: vec![],
    }
}

pub(crate) async fn rollout_status(operator: &tonic::transport::Channel, version: &str) -> Result<pb::RolloutStatus> {
    Ok(RolloutServiceClient::new(operator.clone())
        .get_rollout_status(pb::GetRolloutStatusRequest {
            service_id: "wohngeld".into(),
            version: version.into(),
            land_code: String::new(),
        })
        .await?
        .into_inner())
}

/// Waits (up to 30 s) until the hub's controller has moved Wohngeld's rollout to `state`.
pub(crate) async fn wait_for_rollout(
    operator: &tonic::transport::Channel,
    version: &str,
    state: &str,
) -> Result<pb::RolloutStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = rollout_status(operator, version).await?;
        if status.state == state {
            return Ok(status);
        }
        ensure!(
            Instant::now() < deadline,
            "the rollout of {version} is {} ({}), not {state}",
            status.state,
            status.verdict
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until Kommune `ags` reports Wohngeld `version` running.
pub(crate) async fn wait_for_adoption(operator: &tonic::transport::Channel, ags: &str, version: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let adopters = ReportServiceClient::new(operator.clone())
            .service_adopters(pb::ServiceAdoptersRequest { service_id: "wohngeld".into() })
            .await?
            .into_inner()
            .adopters;
        if adopters.iter().any(|a| a.ags == ags && a.running_version == version) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{ags} did not deploy Wohngeld {version} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints a rollout as `efa rollout status` does.
pub(crate) async fn print_rollout(operator: &tonic::transport::Channel, version: &str) -> Result<()> {
    let status = rollout_status(operator, version).await?;
    let [head, rings, gates] = efa_cli::rollout::status_tables(&status);
    print!("{}", render(&[&head, &rings, &gates], &Output::default()).unwrap_or_default());
    Ok(())
}

/// Every node has checked the hub's transparency log as it went (each release it deployed,
/// each report it sent); here each checks the newest checkpoint once more, and an auditor
/// re-derives the whole tree from the tiles and the adoption figures from the leaves alone.
pub(crate) async fn audit_the_log(
    fed: &DevFederation,
    agents: &[(Kommune, Arc<Agent>)],
    operator: &tonic::transport::Channel,
    reported: &BTreeMap<String, (u64, u64)>,
) -> Result<()> {
    section("The transparency log: nodes and an auditor check the hub");
    let registry = fed.registry().context("the hub runs")?;
    let head = registry.head_seq()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while registry.latest_checkpoint()?.is_none_or(|(size, _)| size < head) {
        ensure!(Instant::now() < deadline, "no checkpoint of the log's {head} events after 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (k, agent) in agents {
        let cp = agent.check_log().await?.context("a verified checkpoint")?;
        let pending = agent.state()?.log_pending.len();
        ensure!(pending == 0, "{}: {pending} report(s) not found in the log", k.name);
        println!(
            "  {:<9} checkpoint of {} leaves verified, consistent with every one before; its reports are all in it",
            k.name, cp.size
        );
    }
    let trust = efa_tlog::checkpoint::Trust::new(&fed.log_key()?)?;
    let source = efa_cli::translog::Source::hub(operator.clone());
    let audit = efa_cli::translog::verify(&source, &trust, vec![], &|_, _| {}).await?;
    println!("  auditor     {} leaves re-hashed from the tiles: the root matches the signed checkpoint", audit.size);
    for (service, (running, rejected)) in reported {
        let from_log = audit.services.iter().find(|s| &s.service == service);
        let (r, j) = from_log.map_or((0, 0), |s| (s.running, s.rejected));
        ensure!(
            (r, j) == (*running, *rejected),
            "{service}: the log gives {r} running and {j} rejected, the hub's report {running} and {rejected}"
        );
    }
    println!(
        "  auditor     adoption recomputed from the log's {} reports equals the hub's report for all {} services",
        audit.adoption_reports,
        reported.len()
    );
    Ok(())
}
