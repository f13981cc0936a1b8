//! The federation the demo plays: the eight services and who built them, the NRW Kommunen
//! with their decisions, their parameters, and the bundles the Länder publish.

use anyhow::{Context, Result};
use efa_domain::model::rating::Criterion;
use efa_domain::model::release::UpdatePolicy;
use efa_proto::v1 as pb;
use std::path::{Path, PathBuf};

pub(crate) const NRW: &str = "05";

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
pub(crate) const SERVICES: [(&str, &str, &str, &str, Option<&str>); 8] = [
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
pub(crate) fn more_leistungsschluessel(service: &str) -> &'static [&'static str] {
    match service {
        "elfe-elterngeld" => &["99027002000000", "99041008000000"],
        _ => &[],
    }
}

/// The Land that registers and signs a service in the demo: its building Land, or NRW as
/// the stand-in where that is unknown.
pub(crate) fn builder(service: &str) -> &'static str {
    SERVICES.iter().find(|s| s.0 == service).and_then(|s| s.4).unwrap_or(NRW)
}

/// NRW's ePayBL tenant, set once in its offers for all its Kommunen. An illustrative
/// value: the real tenant id is not public.
pub(crate) const NRW_EPAYBL_MANDANT: &str = "NRW-DEMO-MANDANT";

/// What Dortmund decides after evaluating, with the reasons its IT gives the Land.
///
/// The seed (Stadt Dortmund, 9 November 2022) says Dortmund evaluated eight EfA services
/// offered through NRW and positively evaluated and uses four: Wohngeld,
/// Wohnraumidentitätsnummer, SchülerBAföG and Gewerbeanträge. Which the other four were,
/// and why each was declined, it does not say (only that Kommunen were not involved in
/// building them): the four rejected here and their reasons are illustrative.
pub(crate) const DORTMUND_REJECTS: [(&str, &str); 4] = [
    ("hundehaltung", "Wird bereits im städtischen Serviceportal angeboten; kein Mehrwert"),
    ("wohnsitzanmeldung", "Kommunen bei der Erstellung nicht eingebunden; Anbindung an unser Meldeverfahren ungeklärt"),
    ("baugenehmigung", "Anbindung an das Fachverfahren (XBau) fehlt; Anschlusskosten zu hoch"),
    ("elfe-elterngeld", "Übertragbarkeit von ELFE wird noch geprüft; Standesamt-Anbindung ungeklärt"),
];

/// Services that are free of charge to apply for (fee 0).
pub(crate) const FREE_OF_CHARGE: [&str; 4] = ["wohngeld", "schueler-bafoeg", "elfe-elterngeld", "wohnsitzanmeldung"];

/// (index into the Kommunen, service, version, stars, criteria scores, comment)
pub(crate) type DemoRating = (usize, &'static str, &'static str, u32, &'static [(Criterion, u32)], &'static str);

pub(crate) struct Kommune {
    pub(crate) ags: &'static str,
    pub(crate) name: &'static str,
    pub(crate) subscriptions: Vec<(&'static str, UpdatePolicy)>,
    pub(crate) epaybl: &'static str,
    /// Follows the Themenfelder of its services rather than each service: it gets what its
    /// Land offers (and what NRW builds) there, as it is offered.
    pub(crate) by_themenfeld: bool,
    /// Its node is run by the municipal IT service provider, under the provider's certificate.
    pub(crate) by_provider: bool,
}

/// The Gemeinden of Kreis Unna (register 2023-11-30), the Kreisstadt first.
pub(crate) const KREIS_UNNA: [&str; 10] = [
    "05978036", "05978004", "05978008", "05978012", "05978016", "05978020", "05978024", "05978028", "05978032",
    "05978040",
];

/// The municipal IT service provider of the demo, which runs the nodes of two small
/// Kommunen of Kreis Unna. Its name is made up; real providers are not named here.
pub(crate) const PROVIDER: &str = "kommunaler-it-dienstleister";

pub(crate) fn kommunen() -> Vec<Kommune> {
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
pub(crate) fn parameter_schema(service: &str, with_phone: bool) -> Vec<pb::ParameterSpec> {
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
pub(crate) fn write_bundle(root: &Path, service: &str, title: &str, version: &str) -> Result<PathBuf> {
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
pub(crate) fn demo_destination(ags: &str, service: &str) -> String {
    let h = efa_domain::bundle::Digest::of(format!("{ags}/{service}").as_bytes()).hex();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
