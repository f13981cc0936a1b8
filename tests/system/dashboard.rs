//! The operator web dashboard: a federation like the demo's (NRW publishes, Kommunen
//! deploy, roll back, reject and rate, NRW yanks a release), then the pages over real
//! HTTPS with an operator token, once with an HTTP client and once in headless Chromium.

use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_node::{Agent, Handled};
use efa_proto::v1 as pb;
use efa_tests::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MUENSTER: &str = "05515000";

/// NRW's services in this story: id, OZG-ID, title (as in the demo federation).
const SERVICES: [(&str, &str, &str); 5] = [
    ("wohngeld-nrw", "10092", "Wohngeld"),
    ("schueler-bafoeg-nrw", "10056", "SchülerBAföG"),
    ("gewerbeanmeldung-nrw", "10294", "Gewerbeanmeldung"),
    ("hundehaltung-nrw", "10160", "Hundeanmeldung"),
    ("baugenehmigung-nrw", "10519", "Digitale Baugenehmigung"),
];
const BAFOEG_REASON: &str = "Zuständig ist das Amt für Ausbildungsförderung des Kreises; kein Bedarf im Serviceportal";
const BAU_REASON: &str = "Anbindung an das Fachverfahren (XBau) fehlt; Anschlusskosten zu hoch";
/// Markup in a reason must reach the page as text.
const GEWERBE_REASON: &str = "Eigenes <GewPortal> & Schnittstelle \"XGewerbe\" vorhanden";
const YANK_REASON: &str = "Gebührenberechnung fehlerhaft";

/// A node whose parameters fit every service (payment purpose at most 27 characters).
fn node(w: &World, ags: &str, subs: &[Sub], health: Option<&str>) -> Agent {
    let mut config = w.node_config(ags, subs);
    for service in config.services.values_mut() {
        service.parameters.insert("payment_purpose".into(), ParamValue::Text(format!("EfA {ags}")));
        service.health_command = health.map(str::to_string);
    }
    Agent::new(config).expect("node starts")
}

fn sub(service: &'static str, policy: UpdatePolicy) -> Sub {
    Sub { service, policy }
}

/// The story, settled. Returns Essen's agent so a test can keep it connected.
async fn populate(w: &World) -> Agent {
    let nrw = w.channel(&land(NRW)).await;
    for (id, ozg, title) in SERVICES {
        CatalogServiceClient::new(nrw.clone())
            .register_service(pb::RegisterServiceRequest {
                id: id.into(),
                ozg_id: ozg.into(),
                leistungsschluessel: String::new(),
                title: title.into(),
                description: format!("EfA-Onlinedienst „{title}“ des Landes Nordrhein-Westfalen"),
                parameters: standard_parameters(),
                adoption_public: false,
                more_leistungsschluessel: vec![],
            })
            .await
            .unwrap();
        w.publish(NRW, id, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    }
    use UpdatePolicy::*;
    let dortmund = node(
        w,
        DORTMUND,
        &[sub("wohngeld-nrw", Manual), sub("hundehaltung-nrw", Manual), sub("baugenehmigung-nrw", Manual)],
        None,
    );
    let essen = node(w, ESSEN, &[sub("wohngeld-nrw", Auto), sub("gewerbeanmeldung-nrw", Auto)], None);
    // Bielefeld's smoke check accepts only 1.0.x: the 1.1.0 update rolls back.
    let bielefeld = node(w, BIELEFELD, &[sub("wohngeld-nrw", Auto)], Some("grep -q 'Version 1.0' index.html"));
    let muenster = node(w, MUENSTER, &[sub("wohngeld-nrw", PatchOnly), sub("hundehaltung-nrw", Auto)], None);
    for agent in [&dortmund, &essen, &bielefeld, &muenster] {
        agent.register_subscriptions().await.unwrap();
        agent.reconcile().await.unwrap();
    }
    dortmund.approve("wohngeld-nrw", "1.0.0").await.unwrap();
    dortmund.approve("hundehaltung-nrw", "1.0.0").await.unwrap();
    dortmund.reject("baugenehmigung-nrw", Some("1.0.0"), BAU_REASON).await.unwrap();
    dortmund.reject("schueler-bafoeg-nrw", None, BAFOEG_REASON).await.unwrap();
    bielefeld.reject("gewerbeanmeldung-nrw", None, GEWERBE_REASON).await.unwrap();
    muenster.approve("wohngeld-nrw", "1.0.0").await.unwrap();
    for agent in [&dortmund, &essen, &bielefeld, &muenster] {
        agent.sync_once().await.unwrap();
    }

    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = bielefeld.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::RolledBack { .. }]), "{handled:?}");
    essen.sync_once().await.unwrap();
    dortmund.sync_once().await.unwrap();
    assert!(matches!(dortmund.approve("wohngeld-nrw", "1.1.0").await.unwrap(), Handled::Deployed { .. }));
    // Münster (patch-only) keeps 1.0.0 while it evaluates 1.1.0.
    muenster.sync_once().await.unwrap();
    ReleaseServiceClient::new(nrw.clone())
        .yank_release(pb::YankReleaseRequest {
            service_id: "wohngeld-nrw".into(),
            version: "1.0.0".into(),
            reason: YANK_REASON.into(),
            recall: false,
        })
        .await
        .unwrap();

    let payment = |s| vec![(pb::Criterion::Payment, s), (pb::Criterion::Design, 5)];
    rate(&dortmund, "wohngeld-nrw", "1.1.0", 4, payment(4), "Seit 1.1.0 mit ePayBL – weniger Rückfragen")
        .await
        .unwrap();
    rate(&essen, "wohngeld-nrw", "1.1.0", 5, vec![(pb::Criterion::Fachlogik, 5)], "Läuft stabil").await.unwrap();
    rate(
        &bielefeld,
        "wohngeld-nrw",
        "1.1.0",
        2,
        vec![(pb::Criterion::Payment, 1)],
        "Smoke-Check verlangt HTTPS-ePayBL",
    )
    .await
    .unwrap();
    rate(
        &dortmund,
        "baugenehmigung-nrw",
        "1.0.0",
        2,
        vec![(pb::Criterion::RoutingTransport, 1)],
        "Ohne XBau nicht nutzbar",
    )
    .await
    .unwrap();
    essen
}

/// Keeps `agent` connected to the event stream until the returned token is cancelled.
async fn keep_connected(w: &World, agent: Agent) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { agent.run(stop).await.expect("agent runs") })
    };
    eventually(20, "a node stream is attached", || async { w.fed.hub.as_ref().unwrap().watchers() >= 1 }).await;
    (stop, task)
}

fn client(w: &World) -> reqwest::Client {
    w.dashboard_client()
}

async fn page(http: &reqwest::Client, url: &str, token: &str) -> String {
    let resp = http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    resp.text().await.unwrap()
}

fn assert_contains(body: &str, what: &[&str], page: &str) {
    for w in what {
        assert!(body.contains(w), "{page} should contain {w:?}:\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_needs_an_operator_token_and_shows_adoption_ratings_and_rejections() {
    let w = World::with_dashboard().await;
    let essen = populate(&w).await;
    let (stop, runner) = keep_connected(&w, essen).await;
    let base = w.dashboard_url();
    let http = client(&w);

    // Without a token: a 401 page that says how to get one. The stylesheet is public.
    let resp = http.get(format!("{base}matrix")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()[WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    assert_contains(&resp.text().await.unwrap(), &["Anmeldung erforderlich", "efa-hub token issue"], "401");
    let resp = http.get(&base).header(AUTHORIZATION, "Bearer efa-op-0123").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let css = http.get(format!("{base}assets/dashboard.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));

    // `?token=` logs in once: a cookie, and a redirect to the same URL without the token.
    let token = w.dashboard_token("bund");
    let resp = http.get(format!("{base}matrix?land=05&token={token}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/matrix?land=05");
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let resp = http.get(format!("{base}matrix?land=05")).header(COOKIE, &session).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    assert!(resp.text().await.unwrap().contains("Angemeldet als <strong>bund</strong>"));

    // Overview: each service with Land, latest version, Kommunen running it, rejections, stars;
    // the live node streams and the event head.
    let head_before = w.fed.registry().unwrap().head_seq().unwrap();
    let body = page(&http, &base, &token).await;
    let head_after = w.fed.registry().unwrap().head_seq().unwrap();
    let shown = |id: &str| -> u64 {
        let rest = body.split_once(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id}: {body}")).1;
        rest[..rest.find('<').unwrap()].parse().unwrap()
    };
    // Essen's node is connected while the page renders.
    assert!(shown("watchers") >= 1, "{body}");
    assert!((head_before..=head_after).contains(&shown("head-seq")) && head_before > 0, "{body}");
    assert_contains(
        &body,
        &[
            "<meta charset=\"utf-8\">",
            "SchülerBAföG",
            "Nordrhein-Westfalen",
            "1.1.0",
            // Wohngeld: 4 running, average of 4, 5 and 2 stars.
            "<a href=\"/coverage?service=wohngeld-nrw\">4</a>",
            "3,7 ★",
        ],
        "overview",
    );

    // Matrix: Kommunen with records, state and version per cell; filters narrow it.
    let body = page(&http, &format!("{base}matrix"), &token).await;
    assert_contains(
        &body,
        &[
            "Dortmund, Stadt",
            "Essen, Stadt",
            "Bielefeld, Stadt",
            "Münster, Stadt",
            "zurückgerollt",
            "läuft: ",
            "zurückgezogen",
        ],
        "matrix",
    );
    assert!(body.contains("abgelehnt") && body.contains("in Prüfung") && body.contains("in Betrieb"));
    let body = page(&http, &format!("{base}matrix?land=05&kreis=05913&themenfeld=&channel=stable"), &token).await;
    assert!(body.contains("class=\"kommune\">Dortmund, Stadt"), "{body}");
    assert!(!body.contains("class=\"kommune\">Essen, Stadt"), "{body}");
    let body = page(&http, &format!("{base}matrix?channel=beta"), &token).await;
    assert!(body.contains("Keine Nachnutzungsdaten"), "{body}");

    // Coverage: 4 of 396 NRW Gemeinden; each kreisfreie Stadt fully.
    let body = page(&http, &format!("{base}coverage?service=wohngeld-nrw"), &token).await;
    assert_contains(
        &body,
        &["Nordrhein-Westfalen", "396", "1,0 %", "Dortmund", "100,0 %", "class=\"fill w2\"", "Einwohner", "593.317"],
        "coverage",
    );
    assert!(body.contains("id=\"running\">4<"), "{body}");

    // Pre-flight of a release: who could run it with their parameters, before deploying.
    let body = page(&http, &format!("{base}services/wohngeld-nrw/preflight/1.1.0"), &token).await;
    assert_contains(&body, &["Vorabprüfung", "Dortmund, Stadt", "bereit", "id=\"blocked\">0<"], "preflight");

    // One service: versions with who runs them, the yank and who still runs it, ratings.
    let body = page(&http, &format!("{base}services/wohngeld-nrw"), &token).await;
    assert_contains(
        &body,
        &[
            YANK_REASON,
            "Noch in Betrieb bei",
            "Bielefeld, Stadt, Münster, Stadt",
            "Seit 1.1.0 mit ePayBL – weniger Rückfragen",
            "Läuft stabil",
            "Routing &amp; Transport",
            "/services/wohngeld-nrw/preflight/1.1.0",
            "Nachnutzung über die Zeit",
            "id=\"chart-kommunen\"",
            "id=\"chart-einwohner\"",
            "<path d=\"M",
            "Rechtliche Nachnutzungsmöglichkeit",
            "Oberflächengestaltung und Design",
            "zurückgezogen",
        ],
        "service",
    );
    // Payment averaged over Dortmund's 4 and Bielefeld's 1.
    assert!(body.contains("<td>Payment</td><td class=\"num\">2,5</td><td class=\"num\">2</td>"), "{body}");

    // Rejections with reasons, grouped by service; markup in a reason is text.
    let body = page(&http, &format!("{base}rejections"), &token).await;
    assert_contains(&body, &[BAFOEG_REASON, BAU_REASON, "id=\"svc-gewerbeanmeldung-nrw\""], "rejections");
    assert!(body.contains("Eigenes &lt;GewPortal&gt; &amp; Schnittstelle &quot;XGewerbe&quot; vorhanden"));
    assert!(!body.contains("<GewPortal>"));
    let body = page(&http, &format!("{base}services/baugenehmigung-nrw"), &token).await;
    assert_contains(&body, &[BAU_REASON, "Ohne XBau nicht nutzbar"], "baugenehmigung");

    // Bayern offers Wohngeld to its Kommunen: the overview names it beside the building Land.
    let bayern: efa_domain::model::ids::LandCode = "09".parse().unwrap();
    let spec = efa_cli::publish::OfferSpec {
        service_id: "wohngeld-nrw".parse().unwrap(),
        channel: "stable".parse().unwrap(),
        from_version: "1.0.0".into(),
        land_parameters: vec![],
        kommunen: vec![],
        withdrawn: None,
    };
    let key = w.fed.signing_key(&bayern).unwrap();
    efa_cli::publish::publish_offer(w.channel(&land("09")).await, &bayern, &key, spec).await.unwrap();
    let body = page(&http, &base, &token).await;
    assert_contains(&body, &["Nachnutzende Länder", "<td>Bayern</td>"], "overview with an offer");

    // The routing table of a Leistungsschlüssel; a malformed key is a 400.
    let body = page(&http, &format!("{base}routing?leistungsschluessel=99107023000000"), &token).await;
    assert_contains(&body, &["Routing für 99107023000000", "Kein registrierter Onlinedienst"], "routing");
    let resp = http.get(format!("{base}routing?leistungsschluessel=123")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = http.get(format!("{base}services/gibt-es-nicht")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    stop.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_rollout_ring_by_ring_with_its_gates() {
    let w = World::with_dashboard().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let sid = "wohngeld-nrw".parse().unwrap();
    w.fed.registry().unwrap().set_rollout_plan(&land(NRW), &sid, "1.1.0", pilot_plan()).unwrap();
    // One pilot runs it: the pilot ring waits for the second.
    report_on(w.channel(&kommune(DORTMUND)).await, "wohngeld-nrw", "1.1.0", pb::AdoptionState::Deployed).await;
    let base = w.dashboard_url();
    let http = client(&w);
    let token = w.dashboard_token("bund");

    // Like every page, the rollout pages need a token.
    for path in ["rollouts", "services/wohngeld-nrw/rollout/1.1.0"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    // The list: the release, its state in German, the open ring, the verdict in words.
    let body = page(&http, &format!("{base}rollouts"), &token).await;
    assert_contains(
        &body,
        &[
            "href=\"/rollouts\" class=\"active\">Rollouts</a>",
            "id=\"rollout-wohngeld-nrw-1.1.0\"",
            "<a href=\"/services/wohngeld-nrw\">Test service wohngeld-nrw</a>",
            "href=\"/services/wohngeld-nrw/rollout/1.1.0\"",
            "<span class=\"st evaluating\">läuft</span>",
            "1 von 2 (Pilot)",
            "wartet: healthy deployments 1 (needs ≥ 2)",
        ],
        "rollouts",
    );
    assert!(!body.contains("rollout-wohngeld-nrw-1.0.0"), "1.0.0 has no plan: {body}");

    // One rollout: rings with their counts and members, the open ring's gates, the verdict.
    let body = page(&http, &format!("{base}services/wohngeld-nrw/rollout/1.1.0"), &token).await;
    assert_contains(
        &body,
        &[
            "Rollout: Test service wohngeld-nrw 1.1.0",
            "<span class=\"st evaluating\">läuft</span>",
            "<td>Pilot</td>",
            "<td>alle übrigen</td>",
            "2 Gemeinden: Bielefeld, Stadt",
            "Dortmund, Stadt <span class=\"mono muted\">(05913000)</span>",
            "alle übrigen Gemeinden",
            "Schwellen des offenen Rings (Pilot)",
            "id=\"verdict\">wartet: healthy deployments 1 (needs ≥ 2)",
        ],
        "rollout",
    );
    let ring = |n: usize| -> &str {
        let rest = body.split_once(&format!("id=\"ring-{n}\"")).unwrap_or_else(|| panic!("no ring {n}: {body}")).1;
        &rest[..rest.find("</tr>").unwrap()]
    };
    assert!(ring(1).contains("<td>ja</td><td class=\"num healthy\">1</td>"), "{}", ring(1));
    assert!(ring(2).contains("nein</span></td><td class=\"num healthy\">0</td>"), "{}", ring(2));
    let gate = body.split_once("(healthy deployments)").unwrap_or_else(|| panic!("no gate: {body}")).1;
    let gate = &gate[..gate.find("</tr>").unwrap()];
    assert!(gate.contains("<td class=\"nowrap\">1</td><td class=\"nowrap\">≥ 2</td>"), "{gate}");
    assert!(gate.contains("<span class=\"st evaluating\">wartet</span>"), "{gate}");
    assert!(body.contains("<tr class=\"gate met\"><td>fehlgeschlagen oder zurückgerollt"), "{body}");

    // The service page links the version that has a rollout, and only that one.
    let body = page(&http, &format!("{base}services/wohngeld-nrw"), &token).await;
    assert!(body.contains("href=\"/services/wohngeld-nrw/rollout/1.1.0\">Rollout (läuft)</a>"), "{body}");
    assert!(!body.contains("/rollout/1.0.0"), "{body}");

    // A release without a plan, an unknown one, an unknown service: 404; a malformed version: 400.
    for (path, status, says) in [
        ("services/wohngeld-nrw/rollout/1.0.0", StatusCode::NOT_FOUND, "keinen Rollout-Plan"),
        ("services/wohngeld-nrw/rollout/9.9.9", StatusCode::NOT_FOUND, "9.9.9"),
        ("services/gibt-es-nicht/rollout/1.1.0", StatusCode::NOT_FOUND, "gibt-es-nicht"),
        ("services/Nicht%20g%C3%BCltig/rollout/1.1.0", StatusCode::NOT_FOUND, "Kein EfA-Onlinedienst"),
        ("services/wohngeld-nrw/rollout/eins", StatusCode::BAD_REQUEST, "semantic version"),
    ] {
        let resp = http.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_contains(&resp.text().await.unwrap(), &[says, "Zur Übersicht"], path);
    }
}

// ------------------------------------------------------------------ headless Chromium

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with a fresh profile and a 1400 px wide window; `mode` is
/// `--dump-dom` or `--screenshot=…`.
async fn chromium(profile: &Path, mode: &str, url: &str, height: u32) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
            ])
            .arg(format!("--window-size=1400,{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(mode)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .expect("chromium starts");
    assert!(out.status.success(), "chromium {mode} {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

/// The text a person sees: the body without tags, entities decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split_once("<body").map(|(_, b)| b).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&nbsp;", " ");
    text.replace("&amp;", "&").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_dashboard_as_an_operator_sees_it() {
    let available = if Path::new(CHROMIUM).exists() { Ok(()) } else { Err(format!("{CHROMIUM} is missing")) };
    if !efa_testkit::tools::check("chromium_shows_the_dashboard", available, "apt-get install chromium") {
        return;
    }
    let w = World::with_dashboard().await;
    let essen = populate(&w).await;
    // Bielefeld rolled 1.1.0 back in the story: without a failure gate the pilot ring
    // waits instead of halting, so the rollouts page reads the same on every run.
    let plan = efa_domain::model::rollout::RolloutPlan {
        gates: efa_domain::model::rollout::Gates { min_healthy: 3, ..Default::default() },
        ..pilot_plan()
    };
    let sid = "wohngeld-nrw".parse().unwrap();
    w.fed.registry().unwrap().set_rollout_plan(&land(NRW), &sid, "1.1.0", plan).unwrap();
    let (stop, runner) = keep_connected(&w, essen).await;
    let base = w.dashboard_url();
    let token = w.dashboard_token("ci");
    let shots = w.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // Each load starts with a fresh profile: `?token=` logs in, sets the cookie, redirects.
    let pages: [(&str, &str, &[&str]); 6] = [
        (
            "overview",
            "",
            &[
                "Übersicht",
                "SchülerBAföG",
                "Digitale Baugenehmigung",
                "Nordrhein-Westfalen",
                "verbundene Knoten-Streams",
            ],
        ),
        (
            "matrix",
            "matrix",
            &["Nachnutzungsmatrix", "Dortmund, Stadt", "Münster, Stadt", "zurückgerollt", "abgelehnt", "zurückgezogen"],
        ),
        (
            "coverage",
            "coverage?service=wohngeld-nrw",
            &["Abdeckung: Wohngeld", "Nordrhein-Westfalen", "1,0 %", "100,0 %"],
        ),
        (
            "service",
            "services/wohngeld-nrw",
            &[YANK_REASON, "Noch in Betrieb bei", "Bielefeld, Stadt", "Seit 1.1.0 mit ePayBL – weniger Rückfragen"],
        ),
        ("rejections", "rejections", &[BAFOEG_REASON, BAU_REASON, GEWERBE_REASON]),
        (
            "rollouts",
            "rollouts",
            &["Rollouts", "Wohngeld", "1.1.0", "läuft", "1 von 2 (Pilot)", "wartet: healthy deployments 1"],
        ),
    ];
    let mut saved: Vec<PathBuf> = Vec::new();
    for (i, (name, path, expected)) in pages.iter().enumerate() {
        let url = format!("{base}{path}{}token={token}", if path.contains('?') { '&' } else { '?' });
        let dom = chromium(&w.dir.path().join(format!("profile-dom-{i}")), "--dump-dom", &url, 1000).await;
        let text = visible_text(&dom);
        assert!(!text.contains("Anmeldung erforderlich"), "{name}: the token login failed: {text}");
        assert!(text.contains("Angemeldet als ci"), "{name}: {text}");
        for e in *expected {
            assert!(text.contains(e), "{name} should show {e:?}; it shows: {text}");
        }
        let png = shots.join(format!("{name}.png"));
        let profile = w.dir.path().join(format!("profile-shot-{i}"));
        // The service page is long: a taller window shows its ratings and comments too.
        let height = if *name == "service" { 2200 } else { 1000 };
        chromium(&profile, &format!("--screenshot={}", png.display()), &url, height).await;
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{name}: screenshot {} is only {size} bytes", png.display());
        saved.push(png);
    }
    // Without a token a person sees how to get one.
    let dom = chromium(&w.dir.path().join("profile-401"), "--dump-dom", &base, 1000).await;
    let text = visible_text(&dom);
    assert!(text.contains("Anmeldung erforderlich") && text.contains("efa-hub token issue"), "{text}");
    let png = shots.join("unauthorized.png");
    chromium(&w.dir.path().join("profile-401-shot"), &format!("--screenshot={}", png.display()), &base, 1000).await;
    saved.push(png);

    // Keep the screenshots for a person to look at, when asked to.
    if let Some(dir) = std::env::var_os("EFA_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        for png in &saved {
            std::fs::copy(png, Path::new(&dir).join(png.file_name().unwrap())).unwrap();
        }
        eprintln!("screenshots copied to {}", Path::new(&dir).display());
    }
    stop.cancel();
    runner.await.unwrap();
}
