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
use efa_cli::reports;
use efa_cli::table::{render, Cell, Output, Table};
use efa_domain::authz::Identity;
use efa_domain::model::rating::{Criterion, NewRating};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_hub::dev::DevFederation;
use efa_node::{Agent, Handled};
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::report_service_client::ReportServiceClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod cast;
mod steps;

use cast::{
    builder, kommunen, parameter_schema, DemoRating, Kommune, DORTMUND_REJECTS, KREIS_UNNA, NRW, NRW_EPAYBL_MANDANT,
    PROVIDER, SERVICES,
};
use steps::{
    audit_the_log, describe, node_config, pilot_plan, print_rollout, publish, register, rollout_status,
    wait_for_adoption, wait_for_rollout, wohngeld_rating,
};

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

pub(crate) fn section(title: &str) {
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
