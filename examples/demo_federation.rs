//! The demo federation: a hub with mTLS, Land NRW publishing eight EfA services, and six
//! real NRW Kommunen running node agents. It replays the story of the seed articles:
//! Dortmund evaluates the offer, deploys four services and rejects four with reasons;
//! other Kommunen adopt some; NRW ships a Wohngeld update that rolls out (and rolls back
//! where a Kommune's smoke check fails); ratings come in; the operator report shows it all.
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
use efa_domain::params::ParamValue;
use efa_hub::dev::DevFederation;
use efa_node::{Agent, Handled, NodeConfig};
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::report_service_client::ReportServiceClient;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Run the EfA Hub demo federation (hub, Land NRW, six NRW Kommunen)")]
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

/// The eight services NRW offers: id, OZG-ID, Leistungsschlüssel, title. The keys are
/// from the shipped LeiKa data (`registry/data/leika.csv`), each filed under the OZG-ID
/// given. For the Wohnraumidentitätsnummer the data has no key of its own; the one used is
/// that of the Zweckentfremdungsgenehmigung, the OZG-Leistung 10125 it belongs to.
const SERVICES: [(&str, &str, &str, &str); 8] = [
    ("wohngeld-nrw", "10092", "99107023000000", "Wohngeld"),
    ("schueler-bafoeg-nrw", "10056", "99022001000000", "SchülerBAföG"),
    ("gewerbeanmeldung-nrw", "10294", "99050012104000", "Gewerbeanmeldung"),
    ("wohnraum-id-nrw", "10125", "99116006000000", "Wohnraumidentitätsnummer"),
    ("hundehaltung-nrw", "10160", "99110009104000", "Hundeanmeldung"),
    ("wohnsitz-nrw", "10124", "99115005104000", "Wohnsitzanmeldung"),
    ("baugenehmigung-nrw", "10519", "99012008000000", "Digitale Baugenehmigung"),
    ("elterngeld-nrw", "10000", "99041006000000", "Elterngeld (ELFE-Baustein)"),
];

/// What Dortmund decides after evaluating, with the reasons its IT gives the Land.
///
/// The seed (Stadt Dortmund, 9 November 2022) says Dortmund evaluated eight EfA services
/// offered through NRW and positively evaluated and uses four: Wohngeld,
/// Wohnraumidentitätsnummer, SchülerBAföG and Gewerbeanträge. Which the other four were,
/// and why each was declined, it does not say (only that Kommunen were not involved in
/// building them): the four rejected here and their reasons are illustrative.
const DORTMUND_REJECTS: [(&str, &str); 4] = [
    ("hundehaltung-nrw", "Wird bereits im städtischen Serviceportal angeboten; kein Mehrwert"),
    ("wohnsitz-nrw", "Kommunen bei der Erstellung nicht eingebunden; Anbindung an unser Meldeverfahren ungeklärt"),
    ("baugenehmigung-nrw", "Anbindung an das Fachverfahren (XBau) fehlt; Anschlusskosten zu hoch"),
    ("elterngeld-nrw", "Übertragbarkeit von ELFE wird noch geprüft; Standesamt-Anbindung ungeklärt"),
];

/// Services that are free of charge to apply for (fee 0).
const FREE_OF_CHARGE: [&str; 4] = ["wohngeld-nrw", "schueler-bafoeg-nrw", "elterngeld-nrw", "wohnsitz-nrw"];

/// (index into the Kommunen, service, version, stars, criteria scores, comment)
type DemoRating = (usize, &'static str, &'static str, u32, &'static [(Criterion, u32)], &'static str);

struct Kommune {
    ags: &'static str,
    name: &'static str,
    subscriptions: Vec<(&'static str, UpdatePolicy)>,
    epaybl: &'static str,
}

fn kommunen() -> Vec<Kommune> {
    let all_manual = SERVICES.iter().map(|s| (s.0, UpdatePolicy::Manual)).collect();
    vec![
        Kommune {
            ags: "05913000",
            name: "Dortmund",
            subscriptions: all_manual,
            epaybl: "https://epaybl.dortmund.example/api",
        },
        Kommune {
            ags: "05113000",
            name: "Essen",
            subscriptions: vec![
                ("wohngeld-nrw", UpdatePolicy::Auto),
                ("gewerbeanmeldung-nrw", UpdatePolicy::Auto),
                ("hundehaltung-nrw", UpdatePolicy::Auto),
            ],
            epaybl: "https://epaybl.essen.example/api",
        },
        Kommune {
            ags: "05711000",
            name: "Bielefeld",
            subscriptions: vec![("wohngeld-nrw", UpdatePolicy::Auto), ("wohnsitz-nrw", UpdatePolicy::Auto)],
            // An internal plain-HTTP endpoint: the 1.1.0 smoke check will refuse it.
            epaybl: "http://epaybl.intern.bielefeld.example",
        },
        Kommune {
            ags: "05515000",
            name: "Münster",
            subscriptions: vec![("wohngeld-nrw", UpdatePolicy::PatchOnly), ("hundehaltung-nrw", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.stadt-muenster.example/api",
        },
        Kommune {
            ags: "05911000",
            name: "Bochum",
            subscriptions: vec![("wohngeld-nrw", UpdatePolicy::Auto), ("gewerbeanmeldung-nrw", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.bochum.example/api",
        },
        Kommune {
            ags: "05978024",
            name: "Lünen",
            subscriptions: vec![("wohngeld-nrw", UpdatePolicy::Auto), ("wohnsitz-nrw", UpdatePolicy::Auto)],
            epaybl: "https://epaybl.luenen.example/api",
        },
    ]
}

/// The parameters NRW asks of Kommunen; `with_phone` adds the office's telephone, which
/// Wohngeld 1.2.0 requires.
fn parameter_schema(with_phone: bool) -> Vec<pb::ParameterSpec> {
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
    let mut smoke = "test -s config/service.toml && test -s forms/antrag.json\n".to_string();
    if version != "1.0.0" {
        // 1.1.0 pays through the Kommune's own ePayBL endpoint, which must be HTTPS.
        config.push_str("epaybl_endpoint = \"{{ epaybl_endpoint }}\"\n");
        smoke.push_str("grep -q '^epaybl_endpoint = \"https://' config/service.toml || { echo 'ePayBL endpoint must use HTTPS' >&2; exit 1; }\n");
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
) -> Result<NodeConfig> {
    let tls = fed.client_tls(&Identity::Kommune(k.ags.parse()?))?;
    let base = root.join("nodes").join(k.name.to_lowercase());
    let mut config = NodeConfig::new(k.ags.parse()?, fed.url(), base.join("state"), base.join("deploy"))
        .with_tls(tls)
        .trust(NRW.parse()?, fed.trusted_key(&NRW.parse()?)?);
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
        if let (Some(phone), true) = (phone, *service == "wohngeld-nrw") {
            values.insert("kontakt_telefon".into(), text(phone.to_string()));
        }
        config = config
            .subscribe(id.clone(), *policy)
            .health_command(id.clone(), "sh checks/smoke.sh")
            .parameters(id, values);
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

/// NRW registers (or re-registers) one of its services with `parameters`.
async fn register(
    nrw: &tonic::transport::Channel,
    (id, ozg, leika, title): (&str, &str, &str, &str),
    parameters: Vec<pb::ParameterSpec>,
) -> Result<pb::ServiceInfo> {
    let request = pb::RegisterServiceRequest {
        id: id.into(),
        ozg_id: ozg.into(),
        leistungsschluessel: leika.into(),
        title: title.into(),
        description: format!("EfA-Onlinedienst „{title}“, bereitgestellt vom Land Nordrhein-Westfalen"),
        parameters,
        adoption_public: false,
    };
    Ok(CatalogServiceClient::new(nrw.clone()).register_service(request).await?.into_inner())
}

async fn publish(
    fed: &DevFederation,
    root: &Path,
    service: &str,
    title: &str,
    version: &str,
    notes: &str,
) -> Result<pb::ReleaseInfo> {
    let dir = write_bundle(root, service, title, version)?;
    let key = fed.signing_key(&NRW.parse()?)?;
    let spec = PublishSpec {
        dir: &dir,
        service_id: service.parse()?,
        version: version.into(),
        channel: "stable".parse()?,
        land: NRW.parse()?,
        release_notes: notes.into(),
        signing_key: &key,
    };
    Ok(publish_dir(fed.channel(&Identity::Land(NRW.parse()?)).await?, spec, |_, _| {}).await?)
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

    section("Land NRW offers eight EfA services");
    let nrw = fed.channel(&Identity::Land(NRW.parse()?)).await?;
    for (id, ozg, leika, title) in SERVICES {
        let s = register(&nrw, (id, ozg, leika, title), parameter_schema(false)).await?;
        let r = publish(&fed, &root, id, title, "1.0.0", "Erstveröffentlichung").await?;
        println!(
            "  {:<22} OZG {} {:<38} {} {} ({} files)",
            s.id,
            s.ozg_id,
            format!("[{}]", s.themenfeld),
            r.version,
            &r.content_digest[..19],
            r.file_count
        );
    }

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
        let agent = Agent::new(node_config(&fed, &root, &k, &me.postcode, None)?)?;
        postcodes.push(me.postcode.clone());
        agent.register_subscriptions().await?;
        let handled = agent.reconcile().await?;
        agent.sync_once().await?;
        println!("  {} ({}):", k.name, k.ags);
        for h in &handled {
            println!("    {}", describe(h));
        }
        agents.push((k, Arc::new(agent)));
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

    section("NRW publishes Wohngeld 1.1.0; the nodes follow live");
    let stop = CancellationToken::new();
    let mut runners = Vec::new();
    for (_, agent) in &agents {
        let (agent, stop) = (agent.clone(), stop.clone());
        runners.push(tokio::spawn(async move { agent.run(stop).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the streams attach
    let started = Instant::now();
    publish(&fed, &root, "wohngeld-nrw", "Wohngeld", "1.1.0", "ePayBL-Anbindung über den Endpunkt der Kommune").await?;
    let operator = fed.channel(&Identity::Operator("demo".into())).await?;
    // Auto nodes settle (deployed or rolled back); Dortmund (manual) and Münster
    // (patch-only, minor update) wait for approval.
    let auto_nodes = ["05113000", "05711000", "05911000", "05978024"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settled_after = None;
    while Instant::now() < deadline {
        let adopters = ReportServiceClient::new(operator.clone())
            .service_adopters(pb::ServiceAdoptersRequest { service_id: "wohngeld-nrw".into() })
            .await?
            .into_inner()
            .adopters;
        let done = auto_nodes.iter().all(|ags| {
            adopters.iter().any(|a| {
                &a.ags == ags
                    && a.version == "1.1.0"
                    && [pb::AdoptionState::Deployed as i32, pb::AdoptionState::RolledBack as i32].contains(&a.state)
            })
        });
        if done {
            settled_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = settled_after.context("the update did not settle on every auto node within 30 s")?;
    println!(
        "  publish → all four auto-updating nodes downloaded, verified, deployed and health-checked in {settled:.2?}"
    );
    stop.cancel();
    for r in runners {
        r.await??;
    }
    let muenster = agents[3].1.clone();
    println!("  Dortmund approves: {}", describe(&dortmund.approve("wohngeld-nrw", "1.1.0").await?));
    println!("  Münster approves:  {}", describe(&muenster.approve("wohngeld-nrw", "1.1.0").await?));

    section("Ratings come in");
    let ratings: [DemoRating; 6] = [
        (
            0,
            "wohngeld-nrw",
            "1.1.0",
            4,
            &[(Criterion::Payment, 4), (Criterion::Design, 4)],
            "Seit 1.1.0 mit ePayBL – deutlich weniger Rückfragen",
        ),
        (1, "wohngeld-nrw", "1.1.0", 5, &[(Criterion::Fachlogik, 5)], "Läuft stabil"),
        (
            2,
            "wohngeld-nrw",
            "1.1.0",
            2,
            &[(Criterion::Payment, 1)],
            "Smoke-Check verlangt HTTPS-ePayBL; intern nur HTTP",
        ),
        (0, "baugenehmigung-nrw", "1.0.0", 2, &[(Criterion::RoutingTransport, 1)], "Ohne XBau-Anbindung nicht nutzbar"),
        (
            0,
            "schueler-bafoeg-nrw",
            "1.0.0",
            4,
            &[(Criterion::Nutzerkonto, 4)],
            "Antrag vollständig online, Nachweise per Upload",
        ),
        (
            1,
            "gewerbeanmeldung-nrw",
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
            met: if service == "baugenehmigung-nrw" { vec![(Criterion::RoutingTransport, false)] } else { vec![] },
        };
        agent.rate(&rating).await?;
        println!("  {:<9} {service} {version}: {}", k.name, "★".repeat(stars as usize));
    }

    section("NRW asks for a new parameter in Wohngeld 1.2.0: pre-flight before anything is deployed");
    // The telephone number of the responsible office becomes required. Every Kommune but
    // Essen sets it; each node checks 1.2.0 against the signed schema when it arrives and
    // reports ready or blocked to NRW, before it deploys anything.
    register(&nrw, SERVICES[0], parameter_schema(true)).await?;
    publish(&fed, &root, "wohngeld-nrw", "Wohngeld", "1.2.0", "Telefon der zuständigen Stelle im Antrag").await?;
    for (i, k) in kommunen().iter().enumerate() {
        if !k.subscriptions.iter().any(|(s, _)| *s == "wohngeld-nrw") {
            continue;
        }
        // A placeholder number; the demo has no real one to use.
        let phone = (k.ags != "05113000").then(|| format!("+49 000 0000-{i}"));
        let agent = Agent::new(node_config(&fed, &root, k, &postcodes[i], phone.as_deref())?)?;
        let handled = agent.sync().await?;
        let mut line: Vec<String> = handled.iter().filter(|h| h.version() == "1.2.0").map(describe).collect();
        if matches!(handled.iter().find(|h| h.version() == "1.2.0"), Some(Handled::AwaitingApproval { .. })) {
            line.push(describe(&agent.approve("wohngeld-nrw", "1.2.0").await?));
        }
        println!("  {:<9} {}", k.name, line.join("; "));
    }

    section("Operator report");
    let mut overview = Table::new(
        "overview",
        "Adoption of NRW's EfA services",
        &["service", "deployed", "versions running", "rejected", "rolled back", "ratings", "avg ★"],
    );
    let mut totals = (0, 0);
    for (id, ..) in SERVICES {
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
        overview.push(vec![
            (*id).into(),
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
    print!("{}", text(&reports::adopters(operator.clone(), "wohngeld-nrw").await?));
    print!("{}", text(&reports::coverage(operator.clone(), "wohngeld-nrw", "", true).await?));
    print!("{}", text(&reports::ratings(operator.clone(), "wohngeld-nrw").await?));
    let preflight = reports::preflight(operator.clone(), "wohngeld-nrw", "1.2.0").await?;
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
    let wohngeld = reports::adopters(operator.clone(), "wohngeld-nrw").await?;
    // Columns: ags, kommune, running, last report, for version, since, reason.
    let bielefeld =
        wohngeld.rows.iter().find(|r| r[0].as_text() == "05711000").context("Bielefeld adopted Wohngeld")?;
    ensure!(
        bielefeld[3].as_text() == "rolled back" && bielefeld[2].as_text() == "1.0.0",
        "Bielefeld rolled back to 1.0.0: {bielefeld:?}"
    );
    println!("\n✔ The report matches the scenario: Dortmund runs 4 and rejected 4 services, {} deployments in total, Bielefeld rolled back to 1.0.0.", totals.0);

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
        println!("  cargo run -q -p efa-cli --bin efa -- report adopters wohngeld-nrw");
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
