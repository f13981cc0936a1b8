//! `/services/{id}/preflight/{version}`: before anything is deployed, which Kommunen
//! could run a release with their parameters as they are, and which are blocked, and why.

use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_domain::model::catalog::Service;
use efa_domain::model::preflight::PreflightRecord;
use maud::html;

pub fn render(who: &Identity, service: &Service, version: &str, rows: &[(PreflightRecord, String)]) -> Response {
    let ready = rows.iter().filter(|(p, _)| p.is_ready()).count();
    let title = format!("Vorabprüfung: {} {version}", service.title);
    let body = html! {
        h1 { (title) }
        p {
            a href={ "/services/" (service.id.as_str()) } { (service.title) }
            " – jede Kommune prüft eine neue Version, sobald sie eintrifft, gegen die signierten Parameter "
            "der Version, bevor etwas installiert wird."
        }
        p #summary { strong #ready { (ready) } " bereit, " strong #blocked { (rows.len() - ready) } " blockiert." }
        @if rows.is_empty() {
            p.muted { "Noch keine Kommune hat diese Version geprüft." }
        } @else {
            table.data #preflight {
                thead { tr { th { "Kommune" } th { "AGS" } th { "Ergebnis" } th { "Fehlende oder ungültige Parameter" } th { "Änderungen der Parameter" } th { "Geprüft" } } }
                tbody {
                    @for (p, name) in rows {
                        tr class=(if p.is_ready() { "ready" } else { "blocked" }) {
                            td { (name) }
                            td.mono { (p.ags) }
                            td { @if p.is_ready() { span.st.deployed { "bereit" } } @else { span.st.failed { "blockiert" } } }
                            td.reason { @for m in &p.problems { div { (m) } } }
                            td.reason { @for c in &p.changes { div { (c) } } }
                            td.nowrap { (html::timestamp(p.at_ms)) }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::None, &title, body)
}
