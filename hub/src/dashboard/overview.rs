//! `/`: every service at a glance, plus live numbers of the hub.

use super::data::Overview;
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use maud::html;

pub fn render(who: &Identity, o: &Overview, watchers: usize) -> Response {
    let running: u32 = o.rows.iter().map(|r| r.totals.running).sum();
    let rejected: u32 = o.rows.iter().map(|r| r.totals.rejected).sum();
    let body = html! {
        h1 { "Übersicht" }
        section.cards {
            div.card { span.num { (o.rows.len()) } span.label { "EfA-Onlinedienste" } }
            div.card { span.num { (running) } span.label { "Installationen in Betrieb" } }
            div.card { span.num { (o.kommunen_with_records) } span.label { "Kommunen mit Nachnutzungsdaten" } }
            div.card { span.num { (rejected) } span.label { "Ablehnungen" } }
            div.card.live { span.num #watchers { (watchers) } span.label { "verbundene Knoten-Streams" } }
            div.card.live { span.num #head-seq { (o.head_seq) } span.label { "Ereignis-Kopf (seq)" } }
        }
        h2 { "EfA-Onlinedienste" }
        @if o.rows.is_empty() {
            p.muted { "Noch kein Land hat einen Onlinedienst registriert." }
        } @else {
            table.data #services {
                thead { tr {
                    th { "Onlinedienst" } th { "Umsetzungsland" } th { "Nachnutzende Länder" } th { "Themenfeld" } th { "Neueste Version" }
                    th.num { "Kommunen in Betrieb" } th.num { "Ablehnungen" } th.num { "Bewertung" }
                } }
                tbody {
                    @for r in &o.rows {
                        @let id = r.service.id.as_str();
                        tr {
                            td {
                                a href={ "/services/" (id) } { (r.service.title) }
                                br; span.muted.small { (id) " · OZG " (r.service.ozg_id.as_str()) }
                            }
                            td { (r.land_name) }
                            td { @if r.offered_by.is_empty() { span.muted { "–" } } @else { (r.offered_by.join(", ")) } }
                            td { (r.service.themenfeld) }
                            td {
                                @match &r.latest {
                                    Some(rel) => {
                                        span.version { (rel.version) }
                                        " " span.channel { (rel.channel) }
                                        @if rel.yank.is_some() { " " span.st.yanked { "zurückgezogen" } }
                                    },
                                    None => span.muted { "noch keine" },
                                }
                            }
                            td.num { a href={ "/coverage?service=" (id) } { (r.totals.running) } }
                            td.num {
                                @if r.totals.rejected > 0 {
                                    a href={ "/rejections#svc-" (id) } { (r.totals.rejected) }
                                } @else { "0" }
                            }
                            td.num { (html::stars(r.totals.ratings, r.totals.average_stars())) }
                        }
                    }
                }
            }
        }
        p.muted.small {
            "„Kommunen in Betrieb“ zählt Kommunen mit einer laufenden Version (auch nach einem Rollback); "
            "„Ablehnungen“ zählt Kommunen, deren letzter Stand „abgelehnt“ ist."
        }
    };
    html::page(who, Nav::Overview, "Übersicht", body)
}
