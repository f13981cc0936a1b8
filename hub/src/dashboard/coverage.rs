//! `/coverage?service=ID`: share of Gemeinden running a service, per Land and Kreis.

use super::data::Coverage;
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_domain::model::catalog::Service;
use efa_domain::model::report::CoverageRow;
use maud::{html, Markup};

fn row(r: &CoverageRow, class: &str) -> Markup {
    let p = html::percent(r.adopted, r.total);
    let people =
        if r.inhabitants_total == 0 { 0.0 } else { 100.0 * r.inhabitants_adopted as f64 / r.inhabitants_total as f64 };
    html! {
        tr class=(class) {
            td { (r.name) " " span.small.muted.mono { (r.code) } }
            td.num { (r.adopted) }
            td.num { (r.total) }
            td.num.pct { (html::percent_text(p)) }
            td.barcell { (html::bar(p)) }
            td.num { (html::thousands(r.inhabitants_adopted)) }
            td.num { (html::thousands(r.inhabitants_total)) }
            td.num.pct { (html::percent_text(people)) }
        }
    }
}

pub fn render(who: &Identity, choices: &[Service], c: Option<&Coverage>, land: &str) -> Response {
    let current = c.map(|c| c.service.id.as_str()).unwrap_or("");
    let title = match c {
        Some(c) => format!("Abdeckung: {}", c.service.title),
        None => "Abdeckung".to_string(),
    };
    let body = html! {
        h1 { (title) }
        form.filter method="get" action="/coverage" {
            label { "Onlinedienst "
                select name="service" {
                    @for s in choices {
                        option value=(s.id.as_str()) selected[s.id.as_str() == current] { (s.title) " (" (s.id.as_str()) ")" }
                    }
                }
            }
            @if let Some(c) = c {
                label { "alle Kreise von "
                    select name="land" {
                        option value="" { "– nur Kreise mit Nachnutzung –" }
                        @for l in &c.laender {
                            option value=(l.land.code) selected[l.land.code == land] { (l.land.name) }
                        }
                    }
                }
            }
            button type="submit" { "Anzeigen" }
        }
        @match c {
            None => p.muted { "Bitte einen Onlinedienst wählen." },
            Some(c) => {
                p {
                    a href={ "/services/" (c.service.id.as_str()) } { (c.service.title) }
                    " läuft in " strong #running { (c.running) } " Gemeinden. "
                    "Gezählt werden Gemeinden mit einer laufenden Version und ihre Einwohner; Grundlage ist das Gemeindeverzeichnis (GV100AD, Stand 30.11.2023)."
                }
                table.data.coverage #coverage {
                    thead { tr {
                        th { "Land / Kreis" } th.num { "mit Onlinedienst" } th.num { "Gemeinden" } th.num { "Anteil" } th { "" }
                        th.num { "Einwohner erreicht" } th.num { "Einwohner" } th.num { "Anteil Einwohner" }
                    } }
                    tbody {
                        @for l in &c.laender {
                            (row(&l.land, if l.land.adopted > 0 { "land adopted" } else { "land" }))
                            @for k in &l.kreise { (row(k, "kreis")) }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::Coverage, &title, body)
}
