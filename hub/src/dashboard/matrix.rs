//! `/matrix`: services × Kommunen, each cell the pair's current state and version.

use super::data::{Matrix, MatrixFilter, MATRIX_MAX_KOMMUNEN};
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_domain::model::adoption::{AdoptionRecord, AdoptionState};
use maud::{html, Markup};

fn select(name: &str, label: &str, all: &str, current: &str, options: &[(String, String)]) -> Markup {
    html! {
        label { (label) " "
            select name=(name) {
                option value="" { (all) }
                @for (value, text) in options {
                    option value=(value) selected[value == current] { (text) }
                }
            }
        }
    }
}

/// Whether the Kommune still runs a release its Land has yanked.
fn runs_yanked(m: &Matrix, service: &str, r: &AdoptionRecord) -> bool {
    r.running.as_ref().is_some_and(|v| m.yanked.contains(&(service.to_string(), v.clone())))
}

fn cell(r: &AdoptionRecord, running_yanked: bool) -> Markup {
    let e = &r.latest;
    let mut tip = format!("{} seit {}", html::state_label(e.state), html::timestamp(e.at_ms));
    if !e.reason.is_empty() {
        tip.push_str(": ");
        tip.push_str(&e.reason);
    }
    if running_yanked {
        tip.push_str(" (die laufende Version ist zurückgezogen)");
    }
    let shows_running = r.running.is_some() && r.running.as_ref() != e.version.as_ref();
    html! {
        td.cell title=(tip) {
            (html::badge(e.state))
            @if let Some(v) = &e.version { br; span.version { (v) } }
            @if shows_running {
                @if let Some(run) = &r.running { br; span.small.muted { "läuft: " span.version { (run) } } }
            }
            @if running_yanked { br; span.st.yanked { "zurückgezogen" } }
        }
    }
}

pub fn render(who: &Identity, f: &MatrixFilter, m: &Matrix) -> Response {
    let themen: Vec<(String, String)> = m.options.themenfelder.iter().map(|t| (t.clone(), t.clone())).collect();
    let channels: Vec<(String, String)> = m.options.channels.iter().map(|c| (c.clone(), c.clone())).collect();
    let kreise: Vec<(String, String)> =
        m.options.kreise.iter().map(|(code, name)| (code.clone(), format!("{name} ({code})"))).collect();
    let body = html! {
        h1 { "Nachnutzungsmatrix" }
        p { "Welche Kommune welchen EfA-Onlinedienst in welcher Version nachnutzt. Gezeigt werden nur Kommunen mit Nachnutzungsdaten." }
        form.filter method="get" action="/matrix" {
            (select("land", "Land", "alle Länder", &f.land, &m.options.laender))
            (select("kreis", "Kreis", "alle Kreise", &f.kreis, &kreise))
            (select("themenfeld", "Themenfeld", "alle Themenfelder", &f.themenfeld, &themen))
            (select("channel", "Kanal", "alle Kanäle", &f.channel, &channels))
            button type="submit" { "Filtern" }
            " " a href="/matrix" { "Zurücksetzen" }
        }
        @if m.services.is_empty() || m.kommunen.is_empty() {
            p.muted #empty { "Keine Nachnutzungsdaten für diese Auswahl." }
        } @else {
            p.small.muted {
                (m.services.len()) " Onlinedienste × " (m.kommunen.len()) " Kommunen"
                @if m.left_out > 0 {
                    " – " strong { (m.left_out) " weitere Kommunen ausgeblendet" }
                    " (höchstens " (MATRIX_MAX_KOMMUNEN) "; bitte nach Land oder Kreis filtern)"
                }
            }
            div.scroll {
                table.data.matrix #matrix {
                    thead { tr {
                        th { "Onlinedienst" }
                        @for k in &m.kommunen {
                            th.kommune { (k.name) br; span.small.muted.mono { (k.ags) } }
                        }
                    } }
                    tbody {
                        @for s in &m.services {
                            tr {
                                th.service {
                                    a href={ "/services/" (s.id.as_str()) } { (s.title) }
                                    br; span.small.muted { (s.themenfeld) }
                                }
                                @for k in &m.kommunen {
                                    @match m.cells.get(&(s.id.to_string(), k.ags.to_string())) {
                                        Some(r) => (cell(r, runs_yanked(m, s.id.as_str(), r))),
                                        None => td.cell.none { span.muted { "–" } },
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.legend.small {
                "Legende: "
                @for s in [AdoptionState::Deployed, AdoptionState::Evaluating, AdoptionState::RolledBack,
                           AdoptionState::Failed, AdoptionState::Rejected, AdoptionState::Retired] {
                    (html::badge(s)) " "
                }
                "– = keine Daten. Begründungen erscheinen beim Überfahren einer Zelle."
            }
        }
    };
    html::page(who, Nav::Matrix, "Nachnutzungsmatrix", body)
}
