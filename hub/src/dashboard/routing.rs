//! `/routing?leistungsschluessel=KEY`: the FIT-Connect routing table of a Leistungsschlüssel,
//! per ARS the destination the node running a service with that key declared — what a
//! routing lookup (Leistungsschlüssel + ARS → destination) answers from.

use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_domain::model::report::RoutingRow;
use maud::html;

/// `key` is the Leistungsschlüssel asked for (empty: none yet), `services` the services
/// that carry it.
pub fn render(who: &Identity, key: &str, services: &[(String, String)], rows: &[RoutingRow]) -> Response {
    let title = if key.is_empty() { "Routing".to_string() } else { format!("Routing für {key}") };
    let body = html! {
        h1 { (title) }
        form.filters method="get" action="/routing" {
            label { "Leistungsschlüssel " input name="leistungsschluessel" value=(key) placeholder="99107023000000" size="16"; }
            button type="submit" { "Anzeigen" }
        }
        p.muted.small {
            "Je Gemeinde (nach ARS) die FIT-Connect-Destination, die ihr Knoten für die laufende Version "
            "eines Onlinedienstes mit diesem Leistungsschlüssel gemeldet hat."
        }
        @if !key.is_empty() {
            @if services.is_empty() {
                p.notice { "Kein registrierter Onlinedienst trägt diesen Leistungsschlüssel." }
            } @else {
                p { "Onlinedienste: "
                    @for (i, (id, title)) in services.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href={ "/services/" (id) } { (title) }
                    }
                }
            }
            @if rows.is_empty() {
                p.muted { "Noch keine Destination gemeldet." }
            } @else {
                table.data #routing {
                    thead { tr { th { "ARS" } th { "Gemeinde" } th { "Onlinedienst" } th { "Version" } th { "Parameter" } th { "Destination" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td.mono { (r.ars) }
                                td { (r.kommune) br; span.muted.small { (r.ags) } }
                                td { a href={ "/services/" (r.service_id.as_str()) } { (r.service_id.as_str()) } }
                                td { span.version { (r.version) } }
                                td.mono { (r.parameter) }
                                td.mono { (r.destination) }
                            }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::Routing, &title, body)
}
