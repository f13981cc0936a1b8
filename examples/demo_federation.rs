//! The demo federation: a hub with mTLS, the Länder that built eight EfA services
//! publishing them, NRW offering them to its Kommunen (Nachnutzung, with NRW's ePayBL
//! tenant set once in each signed offer), and eight real NRW Kommunen running node agents,
//! two of them run by an IT service provider. It replays the story of the seed articles:
//! Dortmund evaluates the eight offered services, deploys four and rejects four with
//! reasons; other Kommunen adopt some; Schleswig-Holstein ships a Wohngeld update that rolls
//! out (and rolls back where a Kommune's smoke check fails); a required new parameter is
//! caught by the pre-flight check; ratings come in; the report shows it all.
//!
//! Run: `cargo run -p efa-demo` (add `-- --serve` to keep the hub running afterwards).

use anyhow::{ensure, Context, Result};
use clap::Parser;
use efa_cli::publish::{publish_dir, PublishSpec};
use efa_cli::reports;
use efa_cli::table::{render, Cell, Output, Table};
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Run the EfA Hub demo federation (hub, building Länder, NRW offering, eight NRW Kommunen)")]
struct Args {
    /// Keep everything under DIR (default: a temp dir removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the hub running after the story, for trying the `efa` CLI against it.
    #[arg(long)]
    serve: bool,
    /// Port for the hub (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

const NRW: &str = "05";

/// The eight services NRW offers its Kommunen: id, OZG-ID, Leistungsschlüssel, title, and
/// the building Land (Umsetzungsland). The keys are from the shipped LeiKa data
/// (`registry/data/leika.csv`), each filed under the OZG-ID given. For the
/// Wohnraumidentitätsnummer the data has no key of its own; the one used is that of the
/// Zweckentfremdungsgenehmigung, the OZG-Leistung 10125 it belongs to.
///
/// Who built what, with the source (read 2026-12; pages of the Länder and their IT
/// providers):
/// - Wohngeld: Schleswig-Holstein (Dataport), offered to NRW's Kommunen
///   (d-nrw.de/wohngeld: "EfA-Dienst Wohngeld der Dataport AöR aus Schleswig-Holstein").
/// - SchülerBAföG: Sachsen-Anhalt with the BMBF ("BAföG Digital"; mwu.sachsen-anhalt.de,
///   "Sachsen-Anhalt hat den Antragsassistenten als federführendes Bundesland auf den Weg
///   gebracht").
/// - Wohnraumidentitätsnummer: Hamburg (Dataport), in use in Dortmund among others
///   (dataport.de, "Online-Dienst Wohnraumschutznummer in NRW im Einsatz").
/// - Wohnsitzanmeldung (eWA): Hamburg with the BMI (hamburg.de, press release 2022-09-20).
/// - Digitale Baugenehmigung: Mecklenburg-Vorpommern, NRW among the Länder re-using it
///   (Land MV press release 2024-06; digitale-baugenehmigung.de).
/// - Elterngeld as part of ELFE: Bremen (../shared/DOMAIN.md).
/// - Gewerbeanmeldung and Hundeanmeldung: **unknown** to us. `None` here: NRW registers
///   them in the demo as a stand-in, and the report says "unbekannt".
const SERVICES: [(&str, &str, &str, &str, Option<&str>); 8] = [
    ("wohngeld", "10092", "99107023000000", "Wohngeld", Some("01")),
    ("schueler-bafoeg", "10056", "99022001000000", "SchülerBAföG", Some("15")),
    ("gewerbeanmeldung", "10294", "99050012104000", "Gewerbeanmeldung", None),
    ("wohnraum-id", "10125", "99116006000000", "Wohnraumidentitätsnummer", Some("02")),
    ("hundehaltung", "10160", "99110009104000", "Hundeanmeldung", None),
    ("wohnsitzanmeldung", "10124", "99115005104000", "Wohnsitzanmeldung", Some("02")),
    ("baugenehmigung", "10519", "99012008000000", "Digitale Baugenehmigung", Some("13")),
    ("elfe-elterngeld", "10000", "99041006000000", "Elterngeld (ELFE-Baustein)", Some("04")),
];

/// Further Leistungen a service bundles: ELFE covers Elterngeld with the Geburtsurkunde
/// and Kindergeld (keys from the shipped LeiKa data). The Namensbestimmung it also covers
/// has no key of its own there that we could identify, so it is left out.
fn more_leistungsschluessel(service: &str) -> &'static [&'static str] {
    match service {
        "elfe-elterngeld" => &["99027002000000", "99041008000000"],
        _ => &[],
    }
}

/// The Land that registers and signs a service in the demo: its building Land, or NRW as
/// the stand-in where that is unknown.
fn builder(service: &str) -> &'static str {
    SERVICES.iter().find(|s| s.0 == service).and_then(|s| s.4).unwrap_or(NRW)
}

/// NRW's ePayBL tenant, set once in its offers for all its Kommunen. An illustrative
/// value: the real tenant id is not public.
const NRW_EPAYBL_MANDANT: &str = "NRW-DEMO-MANDANT";

/// What Dortmund decides after evaluating, with the reasons its IT gives the Land.
///
/// The seed (Stadt Dortmund, 9 November 2022) says Dortmund evaluated eight EfA services
/// offered through NRW and positively evaluated and uses four: Wohngeld,
/// Wohnraumidentitätsnummer, SchülerBAföG and Gewerbeanträge. Which the other four were,
/// and why each was declined, it does not say (only that Kommunen were not involved in
/// building them): the four rejected here and their reasons are illustrative.
const DORTMUND_REJECTS: [(&str, &str); 4] = [
    ("hundehaltung", "Wird bereits im städtischen Serviceportal angeboten; kein Mehrwert"),
    ("wohnsitzanmeldung", "Kommunen bei der Erstellung nicht eingebunden; Anbindung an unser Meldeverfahren ungeklärt"),
    ("baugenehmigung", "Anbindung an das Fachverfahren (XBau) fehlt; Anschlusskosten zu hoch"),
    ("elfe-elterngeld", "Übertragbarkeit von ELFE wird noch geprüft; Standesamt-Anbindung ungeklärt"),
];

/// Services that are free of charge to apply for (fee 0).
const FREE_OF_CHARGE: [&str; 4] = ["wohngeld", "schueler-bafoeg", "elfe-elterngeld", "wohnsitzanmeldung"];

/// (index into the Kommunen, service, version, stars, criteria scores, comment)
type DemoRating = (usize, &'static str, &'static str, u32, &'static [(Criterion, u32)], &'static str);

struct Kommune {
    ags: &'static str,
    name: &'static str,
    subscriptions: Vec<(&'static str, UpdatePolicy)>,
    epaybl: &'static str,
    /// Follows the Themenfelder of its services rather than each service: it gets what its
    /// Land offers (and what NRW builds) there, as it is offered.
    by_themenfeld: bool,
    /// Its node is run by the municipal IT service provider, under the provider's certificate.
    by_provider: bool,
}

/// The Gemeinden of Kreis Unna (register 2023-11-30), the Kreisstadt first.
const KREIS_UNNA: [&str; 10] = [
    "05978036", "05978004", "05978008", "05978012", "05978016", "05978020", "05978024", "05978028", "05978032",
    "05978040",
];

/// The municipal IT service provider of the demo, which runs the nodes of two small
/// Kommunen of Kreis Unna. Its name is made up; real providers are not named here.
const PROVIDER: &str = "kommunaler-it-dienstleister";

fn kommunen() -> Vec<Kommune> {
    let all_manual = SERVICES.iter().map(|s| (s.0, UpdatePolicy::Manual)).collect();
    vec![
        Kommune {
            ags: "05913000",
            name: "Dortmund",
            subscriptions: all_manual,
            epaybl: "https://epaybl.dortmund.example/api",
            by_themenfeld: true,
            by_provider: false,
        },
        Kommune {
            ags: "05113000",
            name: "Essen",
            subscriptions: vec![
                ("wohngeld", UpdatePolicy::Auto),
                ("gewerbeanmeldung", UpdatePolicy::Auto),
                ("hundehaltung", UpdatePolicy::Auto),
            ],
            epaybl: "https://epaybl.essen.example/api",
            by_themenfeld: false,
            by_provider: false,
        },
        Kommune {
            ags: "05711000",
            name: "Bielefeld",
            subscriptions: vec![("wohngeld", UpdatePolicy::Auto), ("wohnsitzanmeldung", UpdatePolicy::Auto)],
            // An internal plain-HTTP endpoint: the 1.1.0 smoke check will refuse it.
            epaybl: "http://epaybl.intern.bielefeld.example",
            by_themenfeld: false,
            by_provider: false,
        },
        Kommune {
            ags: "05515000",
            name: "Münster",
            subscriptions: vec![("wohngeld", UpdatePolicy::PatchOnly), ("hundehaltung", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.stadt-muenster.example/api",
            by_themenfeld: false,
            by_provider: false,
        },
        Kommune {
            ags: "05911000",
            name: "Bochum",
            subscriptions: vec![("wohngeld", UpdatePolicy::Auto), ("gewerbeanmeldung", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.bochum.example/api",
            by_themenfeld: false,
            by_provider: false,
        },
        Kommune {
            ags: "05978024",
            name: "Lünen",
            subscriptions: vec![("wohngeld", UpdatePolicy::Auto), ("wohnsitzanmeldung", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.luenen.example/api",
            by_themenfeld: false,
            by_provider: false,
        },
        // Two small Kommunen of Kreis Unna whose systems an IT service provider runs.
        Kommune {
            ags: "05978008",
            name: "Bönen",
            subscriptions: vec![("wohngeld", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.boenen.example/api",
            by_themenfeld: false,
            by_provider: true,
        },
        Kommune {
            ags: "05978016",
            name: "Holzwickede",
            subscriptions: vec![("wohngeld", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.holzwickede.example/api",
            by_themenfeld: false,
            by_provider: true,
        },
    ]
}

/// The parameters a service asks of Kommunen; `with_phone` adds the office's telephone,
/// which Wohngeld 1.2.0 requires. A service built outside NRW also asks for the ePayBL
/// tenant, which NRW sets once in its offer.
fn parameter_schema(service: &str, with_phone: bool) -> Vec<pb::ParameterSpec> {
    let p =
        |name: &str, kind: pb::ParameterKind, required: bool, description: &str, max_length: u32| pb::ParameterSpec {
            name: name.into(),
            kind: kind as i32,
            required,
            description: description.into(),
            max_length,
        };
    let mut schema = vec![
        p("zustaendige_stelle", pb::ParameterKind::Text, true, "Zuständige Organisationseinheit", 200),
        p("postleitzahlen", pb::ParameterKind::Postcodes, true, "Örtlich zuständig für diese PLZ", 0),
        p("fit_connect_destination", pb::ParameterKind::FitConnectDestination, true, "FIT-Connect Destination-ID", 0),
        p("payment_purpose", pb::ParameterKind::Text, true, "Verwendungszweck (ePayBL, max. 27 Zeichen)", 27),
        p("fee_cents", pb::ParameterKind::AmountCents, true, "Gebühr in Cent", 0),
        p("epaybl_endpoint", pb::ParameterKind::Url, false, "ePayBL-Endpunkt der Kommune", 0),
        p("datenschutz_url", pb::ParameterKind::Url, true, "Datenschutzerklärung", 0),
        p("kontakt_email", pb::ParameterKind::Email, true, "Kontakt für Rückfragen", 0),
    ];
    if builder(service) != NRW {
        schema.push(p("epaybl_mandant", pb::ParameterKind::Text, true, "ePayBL-Mandant (setzt das Land)", 64));
    }
    if with_phone {
        schema.push(p("kontakt_telefon", pb::ParameterKind::Phone, true, "Telefon der zuständigen Stelle", 0));
    }
    schema
}

/// Writes a service bundle: a form, a process description, a config template and a smoke check.
fn write_bundle(root: &Path, service: &str, title: &str, version: &str) -> Result<PathBuf> {
    let dir = root.join("bundles").join(service).join(version);
    let write = |rel: &str, content: String| -> Result<()> {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))
    };
    write(
        "index.html",
        format!("<!doctype html><title>{title}</title><h1>{title}</h1><p>EfA-Dienst {service} {version}</p>\n"),
    )?;
    write("forms/antrag.json", format!("{{\"service\":\"{service}\",\"version\":\"{version}\",\"fields\":[\"name\",\"anschrift\",\"geburtsdatum\"]}}\n"))?;
    write("docs/prozess.md", format!("# {title}\n\nAntrag → Prüfung → Bescheid. Übermittlung per FIT-Connect.\n"))?;
    let mut config = String::from(
        "zustaendige_stelle = \"{{ zustaendige_stelle }}\"\npostleitzahlen = \"{{ postleitzahlen }}\"\n\
         fit_connect_destination = \"{{ fit_connect_destination }}\"\npayment_purpose = \"{{ payment_purpose }}\"\n\
         fee_cents = {{ fee_cents }}\ndatenschutz_url = \"{{ datenschutz_url }}\"\nkontakt_email = \"{{ kontakt_email }}\"\n",
    );
    if builder(service) != NRW {
        config.push_str("epaybl_mandant = \"{{ epaybl_mandant }}\"\n");
    }
    let mut smoke = "test -s config/service.toml && test -s forms/antrag.json\n".to_string();
    if version == "1.1.0" {
        // 1.1.0 pays through the Kommune's own ePayBL endpoint, which must be HTTPS.
        config.push_str("epaybl_endpoint = \"{{ epaybl_endpoint }}\"\n");
        smoke.push_str("grep -q '^epaybl_endpoint = \"https://' config/service.toml || { echo 'ePayBL endpoint must use HTTPS' >&2; exit 1; }\n");
    } else if version != "1.0.0" {
        // The fix in 1.1.1: a Kommune whose own endpoint is not HTTPS pays through the
        // Land's central one (an illustrative address).
        config.push_str(
            "epaybl_endpoint = \"{{ epaybl_endpoint }}\"\nepaybl_fallback = \"https://epaybl-zentral.example/api\"\n",
        );
        smoke.push_str("grep -q '^epaybl_endpoint = \"https://' config/service.toml || grep -q '^epaybl_fallback = \"https://' config/service.toml || { echo 'no HTTPS ePayBL endpoint' >&2; exit 1; }\n");
    }
    write("config/service.toml.tmpl", config)?;
    write("checks/smoke.sh", smoke)?;
    Ok(dir)
}

/// A FIT-Connect destination ID for the demo: a UUID derived from AGS and service, so it
/// is stable from run to run. Real ones are issued by FIT-Connect when a Kommune registers
/// its destination.
fn demo_destination(ags: &str, service: &str) -> String {
    let h = efa_domain::bundle::Digest::of(format!("{ags}/{service}").as_bytes()).hex();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The node config of Kommune `k`; `postcode` is its seat's postcode from the register,
/// `phone` the office's telephone number if the Kommune has set it (Wohngeld 1.2.0 needs it).
fn node_config(
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

fn describe(h: &Handled) -> String {
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
async fn register(
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

async fn publish(
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
fn pilot_plan() -> Result<RolloutPlan> {
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

fn wohngeld_rating(version: &str, stars: u32, area: Criterion, comment: &str) -> NewRating {
    NewRating {
        service_id: "wohngeld".parse().expect("a valid id"),
        version: version.parse().expect("a valid version"),
        stars,
        criteria: vec![(area, stars)],
        comment: comment.into(),
        met: vec![],
    }
}

async fn rollout_status(operator: &tonic::transport::Channel, version: &str) -> Result<pb::RolloutStatus> {
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
async fn wait_for_rollout(
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
async fn wait_for_adoption(operator: &tonic::transport::Channel, ags: &str, version: &str) -> Result<()> {
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
async fn print_rollout(operator: &tonic::transport::Channel, version: &str) -> Result<()> {
    let status = rollout_status(operator, version).await?;
    let [head, rings, gates] = efa_cli::rollout::status_tables(&status);
    print!("{}", render(&[&head, &rings, &gates], &Output::default()).unwrap_or_default());
    Ok(())
}

/// Every node has checked the hub's transparency log as it went (each release it deployed,
/// each report it sent); here each checks the newest checkpoint once more, and an auditor
/// re-derives the whole tree from the tiles and the adoption figures from the leaves alone.
async fn audit_the_log(
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

fn section(title: &str) {
    println!("\n━━ {title} {}", "━".repeat(70usize.saturating_sub(title.chars().count())));
}

fn main() -> std::process::ExitCode {
    efa_cli::edge::main_with(async { run().await.map(|()| std::process::ExitCode::SUCCESS) })
}

async fn run() -> Result<()> {
    let args = Args::parse();
    efa_cli::edge::init_logging(efa_cli::edge::LogFormat::Text, "warn");
    let temp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;

    section("Hub");
    let fed = DevFederation::start(&root, ([127, 0, 0, 1], args.port).into()).await?;
    let counts = fed.registry().context("hub runs")?.counts()?;
    println!(
        "EfA Hub on {} (mTLS, sled store in {}): {} Länder, {} Kreise, {} Gemeinden, {} OZG-Leistungen",
        fed.url(),
        fed.hub_data_dir().display(),
        counts.laender,
        counts.kreise,
        counts.kommunen,
        counts.ozg_leistungen
    );

    section("The building Länder publish; NRW offers the services to its Kommunen (Nachnutzung)");
    let nrw_key = fed.signing_key(&NRW.parse()?)?;
    let mut themenfelder = BTreeMap::new();
    for service in SERVICES {
        let (id, _, _, title, known) = service;
        let s = register(&fed, service, parameter_schema(id, false)).await?;
        themenfelder.insert(id.to_string(), s.themenfeld.clone());
        let r = publish(&fed, &root, id, title, "1.0.0", "Erstveröffentlichung", None).await?;
        let offered = if known.is_some() {
            // NRW's offer, signed with NRW's key: every NRW Kommune, with NRW's ePayBL tenant.
            let spec = efa_cli::publish::OfferSpec {
                service_id: id.parse()?,
                channel: "stable".parse()?,
                from_version: "1.0.0".into(),
                land_parameters: vec![("epaybl_mandant".into(), NRW_EPAYBL_MANDANT.into())],
                kommunen: vec![],
                withdrawn: None,
            };
            let nrw = fed.channel(&Identity::Land(NRW.parse()?)).await?;
            efa_cli::publish::publish_offer(nrw, &NRW.parse()?, &nrw_key, spec).await?;
            "angeboten von NRW".to_string()
        } else {
            "Umsetzungsland unbekannt (NRW als Platzhalter)".to_string()
        };
        println!(
            "  {:<18} Land {} OZG {} {:<34} {} ({} files), {offered}",
            s.id,
            s.land_code,
            s.ozg_id,
            format!("[{}]", s.themenfeld),
            r.version,
            r.file_count
        );
    }

    section("An operator lets an IT service provider run the nodes of Bönen and Holzwickede");
    let operator = fed.channel(&Identity::Operator("demo".into())).await?;
    let served: Vec<String> = kommunen().iter().filter(|k| k.by_provider).map(|k| k.ags.to_string()).collect();
    let grant = CatalogServiceClient::new(operator.clone())
        .set_provider_grant(pb::ProviderGrant { provider: PROVIDER.into(), kommunen: served, updated_at_ms: 0 })
        .await?
        .into_inner();
    println!("  efa://provider/{} may act for {}", grant.provider, grant.kommunen.join(", "));

    section("Kommunen subscribe and evaluate");
    let mut agents = Vec::new();
    let mut postcodes = Vec::new();
    for k in kommunen() {
        // The postcode its services are responsible for: its seat's, from the register.
        let me = CatalogServiceClient::new(fed.channel(&Identity::Kommune(k.ags.parse()?)).await?)
            .get_kommune(pb::GetKommuneRequest { ags: k.ags.into() })
            .await?
            .into_inner();
        ensure!(!me.postcode.is_empty(), "the register has no postcode for {}", k.name);
        let agent = Agent::new(node_config(&fed, &root, &k, &me.postcode, None, &themenfelder)?)?;
        postcodes.push(me.postcode.clone());
        agent.register_subscriptions().await?;
        let handled = agent.reconcile().await?;
        agent.sync_once().await?;
        let via = match (k.by_themenfeld, k.by_provider) {
            (true, _) => ", follows its Themenfelder",
            (_, true) => ", node run by the IT service provider",
            _ => "",
        };
        println!("  {} ({}{via}):", k.name, k.ags);
        for h in &handled {
            println!("    {}", describe(h));
        }
        agents.push((k, Arc::new(agent)));
    }

    section("Kreis Unna runs SchülerBAföG for its ten Gemeinden (Zuständigkeit)");
    // SchülerBAföG is decided by the Ämter für Ausbildungsförderung of Kreise and kreisfreie
    // Städte, so Kreis Unna runs one deployment for its Gemeinden, Lünen among them. That
    // its office serves all ten is the demo's assumption; we could not confirm it.
    let unna = Kommune {
        ags: "05978036",
        name: "Unna",
        subscriptions: vec![("schueler-bafoeg", UpdatePolicy::Auto)],
        epaybl: "https://epaybl.kreis-unna.example/api",
        by_themenfeld: false,
        by_provider: false,
    };
    let seat = CatalogServiceClient::new(operator.clone())
        .get_kommune(pb::GetKommuneRequest { ags: unna.ags.into() })
        .await?
        .into_inner();
    let mut config = node_config(&fed, &root, &unna, &seat.postcode, None, &themenfelder)?
        .with_tls(fed.client_tls(&Identity::Kreis("05978".parse()?))?);
    config.covers = KREIS_UNNA.iter().filter(|a| **a != unna.ags).map(|a| a.parse()).collect::<Result<_, _>>()?;
    if let Some(s) = config.services.get_mut(&"schueler-bafoeg".parse()?) {
        s.parameters
            .insert("zustaendige_stelle".into(), ParamValue::Text("Kreis Unna – Amt für Ausbildungsförderung".into()));
    }
    let kreis_unna = Agent::new(config)?;
    for h in kreis_unna.sync().await? {
        println!("  Kreis Unna (efa://kreis/05978): {} for {} Gemeinden", describe(&h), KREIS_UNNA.len());
    }

    section("Dortmund decides: four deployed, four rejected");
    let dortmund = agents[0].1.clone();
    for (id, ..) in SERVICES {
        match DORTMUND_REJECTS.iter().find(|(s, _)| *s == id) {
            Some((_, reason)) => {
                dortmund.reject(id, Some("1.0.0"), reason).await?;
                println!("  rejected {id}: {reason}");
            }
            None => println!("  {}", describe(&dortmund.approve(id, "1.0.0").await?)),
        }
    }

    section("Schleswig-Holstein rolls Wohngeld 1.1.0 out to a pilot ring: Dortmund and Bielefeld");
    // The Kommunen that build it with the Land try it first (the seed's complaint was that
    // they were left out); everyone else waits until the pilots' gates pass.
    let stop = CancellationToken::new();
    let mut runners = Vec::new();
    for (_, agent) in &agents {
        let (agent, stop) = (agent.clone(), stop.clone());
        runners.push(tokio::spawn(async move { agent.run(stop).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the streams attach
    let plan = pilot_plan()?;
    println!(
        "  plan: ring 1 \"{}\" (Dortmund, Bielefeld), then ring 2 \"{}\"; gates: 2 Kommunen in Betrieb, 0 % failed or rolled back, ≥ 1 rating, ≥ 3.0 ★",
        plan.ring_name(0),
        plan.ring_name(1)
    );
    publish(
        &fed,
        &root,
        "wohngeld",
        "Wohngeld",
        "1.1.0",
        "ePayBL-Anbindung über den Endpunkt der Kommune",
        Some(plan.clone()),
    )
    .await?;
    // Bielefeld updates on its own: its ePayBL endpoint is plain HTTP, the smoke check
    // refuses it and the node rolls back. That halts the rollout before Dortmund (manual)
    // has approved it, and before any Kommune outside the pilot ring takes it up.
    let status = wait_for_rollout(&operator, "1.1.0", "halted").await?;
    println!("  Bielefeld: deployed 1.1.0, smoke check failed, rolled back to 1.0.0 → rollout {}", status.state);
    agents[2]
        .1
        .rate(&wohngeld_rating("1.1.0", 2, Criterion::Payment, "Smoke-Check verlangt HTTPS-ePayBL; intern nur HTTP"))
        .await?;
    println!("  Bielefeld rates 1.1.0: ★★ \"Smoke-Check verlangt HTTPS-ePayBL; intern nur HTTP\"");
    print_rollout(&operator, "1.1.0").await?;
    let essen = agents[1].1.status()?;
    let waiting =
        essen.services.iter().find(|s| s.service == "wohngeld").map(|s| s.scheduled.clone()).unwrap_or_default();
    println!(
        "  Essen's node (auto) shows: {}",
        waiting.iter().map(|(v, why)| format!("{v}: {why}")).collect::<Vec<_>>().join(", ")
    );
    ensure!(!waiting.is_empty(), "Essen's node should show 1.1.0 held back by its rollout");
    let outside = ["05113000", "05911000", "05978024", "05978008", "05978016", "05515000"];
    let adopters = ReportServiceClient::new(operator.clone())
        .service_adopters(pb::ServiceAdoptersRequest { service_id: "wohngeld".into() })
        .await?
        .into_inner()
        .adopters;
    ensure!(
        !adopters.iter().any(|a| outside.contains(&a.ags.as_str()) && a.version == "1.1.0"),
        "no Kommune outside the pilot ring may have taken 1.1.0 up"
    );
    println!("  nobody outside the pilot ring deployed 1.1.0");

    section("Wohngeld 1.1.1 fixes it: the pilots pass, and the rest of NRW follows");
    publish(
        &fed,
        &root,
        "wohngeld",
        "Wohngeld",
        "1.1.1",
        "Zentraler ePayBL-Endpunkt des Landes, wenn der eigene kein HTTPS hat",
        Some(plan),
    )
    .await?;
    let dortmund = agents[0].1.clone();
    wait_for_adoption(&operator, "05711000", "1.1.1").await?;
    println!("  Bielefeld: deployed 1.1.1 (falls back to the central ePayBL endpoint)");
    println!("  Dortmund approves: {}", describe(&dortmund.approve("wohngeld", "1.1.1").await?));
    let started = Instant::now();
    dortmund
        .rate(&wohngeld_rating("1.1.1", 4, Criterion::Payment, "Seit 1.1.1 mit ePayBL – deutlich weniger Rückfragen"))
        .await?;
    println!("  Dortmund rates 1.1.1: ★★★★ → the gates pass");
    let status = wait_for_rollout(&operator, "1.1.1", "complete").await?;
    print_rollout(&operator, "1.1.1").await?;
    ensure!(status.open_ring == 1, "ring 2 should be open: {status:?}");
    // The auto-updating nodes of ring 2 deploy as soon as it opens; Münster (patch-only)
    // waits for approval of a minor update.
    let auto_nodes = ["05113000", "05911000", "05978024", "05978008", "05978016"];
    for ags in auto_nodes {
        wait_for_adoption(&operator, ags, "1.1.1").await?;
    }
    println!(
        "  last rating → ring 2 opened → Essen, Bochum, Lünen, Bönen and Holzwickede deployed 1.1.1 in {:.2?}",
        started.elapsed()
    );
    stop.cancel();
    for r in runners {
        r.await??;
    }
    let muenster = agents[3].1.clone();
    println!("  Münster approves:  {}", describe(&muenster.approve("wohngeld", "1.1.1").await?));

    section("Ratings come in");
    let ratings: [DemoRating; 4] = [
        (1, "wohngeld", "1.1.1", 5, &[(Criterion::Fachlogik, 5)], "Läuft stabil"),
        (0, "baugenehmigung", "1.0.0", 2, &[(Criterion::RoutingTransport, 1)], "Ohne XBau-Anbindung nicht nutzbar"),
        (
            0,
            "schueler-bafoeg",
            "1.0.0",
            4,
            &[(Criterion::Nutzerkonto, 4)],
            "Antrag vollständig online, Nachweise per Upload",
        ),
        (
            1,
            "gewerbeanmeldung",
            "1.0.0",
            3,
            &[(Criterion::Datenaustauschstandard, 3)],
            "XGewerbeanzeige ok, Gebühren fix",
        ),
    ];
    for (i, service, version, stars, criteria, comment) in ratings {
        let (k, agent) = &agents[i];
        let rating = NewRating {
            service_id: service.parse()?,
            version: version.parse()?,
            stars,
            criteria: criteria.to_vec(),
            comment: comment.to_string(),
            // Without an XBau connection the routing area is not met, whatever the stars.
            met: if service == "baugenehmigung" { vec![(Criterion::RoutingTransport, false)] } else { vec![] },
        };
        agent.rate(&rating).await?;
        println!("  {:<9} {service} {version}: {}", k.name, "★".repeat(stars as usize));
    }

    section("Schleswig-Holstein asks for a new parameter in Wohngeld 1.2.0: pre-flight first");
    // The telephone number of the responsible office becomes required. Every Kommune but
    // Essen sets it; each node checks 1.2.0 against the signed schema when it arrives and
    // reports ready or blocked to the building Land and to NRW, before it deploys anything.
    register(&fed, SERVICES[0], parameter_schema("wohngeld", true)).await?;
    publish(&fed, &root, "wohngeld", "Wohngeld", "1.2.0", "Telefon der zuständigen Stelle im Antrag", None).await?;
    for (i, k) in kommunen().iter().enumerate() {
        if !k.subscriptions.iter().any(|(s, _)| *s == "wohngeld") {
            continue;
        }
        // A placeholder number; the demo has no real one to use.
        let phone = (k.ags != "05113000").then(|| format!("+49 000 0000-{i}"));
        let agent = Agent::new(node_config(&fed, &root, k, &postcodes[i], phone.as_deref(), &themenfelder)?)?;
        let handled = agent.sync().await?;
        let mut line: Vec<String> = handled.iter().filter(|h| h.version() == "1.2.0").map(describe).collect();
        if matches!(handled.iter().find(|h| h.version() == "1.2.0"), Some(Handled::AwaitingApproval { .. })) {
            line.push(describe(&agent.approve("wohngeld", "1.2.0").await?));
        }
        println!("  {:<9} {}", k.name, line.join("; "));
    }

    section("Operator report");
    let mut overview = Table::new(
        "overview",
        "Adoption of the EfA services offered in NRW",
        &[
            "service",
            "Umsetzungsland",
            "nachnutzende Länder",
            "deployed",
            "versions running",
            "rejected",
            "rolled back",
            "ratings",
            "avg ★",
        ],
    );
    let mut totals = (0, 0);
    // What the hub's reports say per service (running, rejected), for the audit below.
    let mut reported: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, _, _, _, known) in SERVICES {
        let info = CatalogServiceClient::new(operator.clone())
            .get_service(pb::GetServiceRequest { id: id.into() })
            .await?
            .into_inner();
        ensure!(
            info.land_code == builder(id) && (known.is_none() || info.offered_by == [NRW]),
            "{id}: built by {} and offered by {:?}",
            info.land_code,
            info.offered_by
        );
        let built_by = if known.is_some() { info.land_code.clone() } else { "unbekannt".to_string() };
        let adopters = ReportServiceClient::new(operator.clone())
            .service_adopters(pb::ServiceAdoptersRequest { service_id: id.into() })
            .await?
            .into_inner()
            .adopters;
        let deployed = adopters.iter().filter(|a| !a.running_version.is_empty()).count();
        let mut versions: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &adopters {
            if !a.running_version.is_empty() {
                *versions.entry(&a.running_version).or_default() += 1;
            }
        }
        let rejected = adopters.iter().filter(|a| a.state == pb::AdoptionState::Rejected as i32).count();
        let rolled = adopters.iter().filter(|a| a.state == pb::AdoptionState::RolledBack as i32).count();
        let summary = ReportServiceClient::new(operator.clone())
            .rating_summary(pb::RatingSummaryRequest { service_id: id.into() })
            .await?
            .into_inner()
            .overall
            .unwrap_or_default();
        totals.0 += deployed;
        totals.1 += rejected;
        reported.insert(id.to_string(), (deployed as u64, rejected as u64));
        overview.push(vec![
            (*id).into(),
            built_by.into(),
            info.offered_by.join(", ").into(),
            deployed.into(),
            versions.iter().map(|(v, n)| format!("{v}×{n}")).collect::<Vec<_>>().join(" ").into(),
            rejected.into(),
            rolled.into(),
            summary.count.into(),
            if summary.count == 0 { Cell::none() } else { Cell::float(summary.average_stars, 1) },
        ]);
    }
    let text = |t: &Table| render(&[t], &Output::default()).unwrap_or_default();
    print!("{}", text(&overview));
    let (current, history) = reports::kommune(operator.clone(), "05913000").await?;
    print!("{}", text(&current));
    print!("{}", text(&history));
    print!("{}", text(&reports::adopters(operator.clone(), "wohngeld").await?));
    print!("{}", text(&reports::coverage(operator.clone(), "wohngeld", "", true).await?));
    print!("{}", text(&reports::ratings(operator.clone(), "wohngeld").await?));
    let bafoeg = reports::coverage(operator.clone(), "schueler-bafoeg", "", true).await?;
    print!("{}", text(&bafoeg));
    let preflight = reports::preflight(operator.clone(), "wohngeld", "1.2.0").await?;
    print!("{}", text(&preflight));
    let nrw_view = fed.channel(&Identity::Land(NRW.parse()?)).await?;
    let (comments, rejections) = reports::feedback(nrw_view, "", "").await?;
    print!("{}", text(&rejections));
    print!("{}", text(&comments));

    // The report must say what the story did.
    let (dortmund_now, _) = reports::kommune(operator.clone(), "05913000").await?;
    // Columns: service, running, last report, for version, since, reason.
    let states: Vec<&str> = dortmund_now.rows.iter().map(|r| r[2].as_text()).collect();
    ensure!(states.iter().filter(|s| **s == "deployed").count() == 4, "Dortmund should run 4 services: {states:?}");
    ensure!(states.iter().filter(|s| **s == "rejected").count() == 4, "Dortmund should have rejected 4: {states:?}");
    ensure!(rejections.rows.len() == 4, "NRW should see Dortmund's 4 rejections");
    ensure!(totals.1 == 4, "4 rejections in total");
    // Columns: ags, kommune, status, problems, schema changes, at. Essen alone is blocked.
    let blocked: Vec<&str> =
        preflight.rows.iter().filter(|r| r[2].as_text() == "blocked").map(|r| r[0].as_text()).collect();
    ensure!(blocked == ["05113000"], "Essen alone should be blocked on 1.2.0: {blocked:?}");
    ensure!(
        preflight.rows[0][3].as_text().contains("kontakt_telefon"),
        "Essen's pre-flight should name the missing parameter: {:?}",
        preflight.rows[0]
    );
    // The rollout: 1.1.0 halted in the pilot ring, 1.1.1 reached everyone; no Kommune
    // outside the pilot ring ever reported 1.1.0.
    let (v110, v111) = (rollout_status(&operator, "1.1.0").await?, rollout_status(&operator, "1.1.1").await?);
    ensure!(v110.state == "halted" && v111.state == "complete", "rollouts: 1.1.0 {}, 1.1.1 {}", v110.state, v111.state);
    for ags in ["05113000", "05911000", "05978024", "05978008", "05978016", "05515000"] {
        let (_, history) = reports::kommune(operator.clone(), ags).await?;
        // Columns: at, service, state, version, reason.
        ensure!(
            !history.rows.iter().any(|r| r[1].as_text() == "wohngeld" && r[3].as_text() == "1.1.0"),
            "{ags} is outside the pilot ring and must never have taken up Wohngeld 1.1.0"
        );
    }
    let (_, bielefeld) = reports::kommune(operator.clone(), "05711000").await?;
    ensure!(
        bielefeld
            .rows
            .iter()
            .any(|r| r[1].as_text() == "wohngeld" && r[2].as_text() == "rolled back" && r[3].as_text() == "1.1.0"),
        "Bielefeld rolled 1.1.0 back"
    );
    // Columns: level, code, name, adopted, gemeinden, ...: Kreis Unna covers all ten.
    let unna_row = bafoeg.rows.iter().find(|r| r[1].as_text() == "05978").context("a coverage row for Kreis Unna")?;
    ensure!(
        unna_row[3].as_text() == "10" && unna_row[4].as_text() == "10",
        "Kreis Unna covers its ten Gemeinden: {unna_row:?}"
    );
    // What NRW set once in its offer reaches its Kommunen's deployments.
    let rendered = std::fs::read_to_string(root.join("nodes/dortmund/deploy/wohngeld/current/config/service.toml"))?;
    ensure!(
        rendered.contains(&format!("epaybl_mandant = \"{NRW_EPAYBL_MANDANT}\"")),
        "Dortmund's Wohngeld should carry NRW's ePayBL tenant from the offer:\n{rendered}"
    );
    audit_the_log(&fed, &agents, &operator, &reported).await?;

    println!("\n✔ The report matches the scenario: Dortmund runs 4 and rejected 4 services, {} deployments in total; Wohngeld 1.1.0 halted in the pilot ring after Bielefeld's rollback, 1.1.1 passed and reached the rest.", totals.0);

    if args.serve {
        let pki = fed.pki_dir();
        fed.client_tls(&Identity::Operator("demo".into()))?;
        println!("\nThe hub keeps running on {}. Try, in another shell:", fed.url());
        println!(
            "  export EFA_HUB={} EFA_CA={}/ca.pem EFA_CERT={}/operator-demo.pem EFA_KEY={}/operator-demo.key",
            fed.url(),
            pki.display(),
            pki.display(),
            pki.display()
        );
        println!("  cargo run -q -p efa-cli --bin efa -- report adopters wohngeld");
        if let Some(url) = fed.dashboard_url() {
            let token = efa_hub::dashboard::tokens::issue(&fed.hub_data_dir(), "demo")?;
            println!("Operator dashboard: {url}?token={token}");
            println!("  (the dev CA signs its certificate; your browser will ask you to accept it)");
        }
        println!("Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
    }
    let mut fed = fed;
    fed.stop_hub().await?;
    Ok(())
}
