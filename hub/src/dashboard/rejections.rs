//! `/rejections`: why Kommunen do not adopt a service, grouped by service, so the
//! publishing Land can see what to change.

use super::data::ServiceRejections;
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use maud::html;
use std::collections::BTreeMap;

pub fn render(
    who: &Identity,
    groups: &[ServiceRejections],
    laender: &BTreeMap<String, String>,
    land: &str,
) -> Response {
    let total: usize = groups.iter().map(|g| g.rejections.len()).sum();
    let body = html! {
        h1 { "Ablehnungen" }
        p { "Warum Kommunen einen EfA-Onlinedienst nicht nachnutzen, mit der Begründung ihrer IT – gruppiert nach Onlinedienst." }
        form.filter method="get" action="/rejections" {
            label { "Land "
                select name="land" {
                    option value="" { "alle Länder" }
                    @for (code, name) in laender {
                        option value=(code) selected[code == land] { (name) }
                    }
                }
            }
            button type="submit" { "Filtern" }
        }
        @if groups.is_empty() {
            p.muted { "Keine Ablehnungen." }
        } @else {
            p { strong { (total) } " Ablehnungen bei " strong { (groups.len()) } " Onlinediensten." }
        }
        @for g in groups {
            @let id = g.service.id.as_str();
            section.group id={ "svc-" (id) } {
                h2 {
                    a href={ "/services/" (id) } { (g.service.title) }
                    " " span.muted.small { (id) " · " (g.land_name) " · " (g.service.themenfeld) }
                }
                p.small {
                    (g.rejections.len()) " Kommune(n) lehnen ab, " (g.running) " nutzen den Onlinedienst nach."
                }
                table.data.rejections {
                    thead { tr { th { "Kommune" } th { "AGS" } th { "Version" } th { "Begründung" } th { "Datum" } } }
                    tbody {
                        @for (name, e) in &g.rejections {
                            tr {
                                td { (name) }
                                td.mono { (e.ags) }
                                td { @match &e.version { Some(v) => span.version { (v) }, None => span.muted { "–" } } }
                                td.reason { (e.reason) }
                                td.nowrap { (html::timestamp(e.at_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::Rejections, "Ablehnungen", body)
}
