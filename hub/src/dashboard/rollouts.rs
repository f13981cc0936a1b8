//! `/rollouts` and `/services/{id}/rollout/{version}`: how far each release got ring by
//! ring, what the open ring's gates say, and why a rollout waits, is paused or halted. The
//! numbers and words come from the wire status (`efa_proto::convert::rollout_status`), so
//! the pages show what gRPC and `efa rollout status` show.

use super::data::{RingMembers, RolloutDetail, RolloutRow};
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_proto::v1 as pb;
use maud::{html, Markup};

/// Gemeinden or Kreise named per ring at most: a ring may name 2,000, which would bury
/// the page; the count says how many more there are.
const MAX_NAMES: usize = 100;

/// German label of a wire state, the same the CLI uses.
fn state_label(state: &str) -> &'static str {
    efa_cli::rollout::state_label(state)
}

/// Badge colours as for adoption states: green done, blue in progress, amber waiting for
/// the Land, red stopped.
fn state_class(state: &str) -> &'static str {
    match state {
        "running" => "st evaluating",
        "paused" => "st rolledback",
        "halted" => "st rejected",
        "complete" => "st deployed",
        _ => "st retired",
    }
}

/// German label of a rollout's state as the store holds it (for the service page).
pub fn status_label(status: &efa_domain::model::rollout::Status) -> &'static str {
    state_label(efa_proto::convert::rollout_state(status).0)
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(state_class(state)) { (state_label(state)) } }
}

fn gate_badge(state: &str) -> Markup {
    let (class, label) = match state {
        "met" => ("st deployed", "erfüllt"),
        "waiting" => ("st evaluating", "wartet"),
        "failed" => ("st rejected", "verfehlt"),
        _ => ("st retired", "unbekannt"),
    };
    html! { span class=(class) { (label) } }
}

/// German name of a gate; the wire name stays beside it, as the CLI and gRPC show it.
/// Mindestanforderungen areas arrive with their German label already.
fn gate_label(gate: &str) -> Option<&'static str> {
    Some(match gate {
        "healthy deployments" => "Kommunen in Betrieb",
        "failed or rolled back" => "fehlgeschlagen oder zurückgerollt",
        "bake time" => "Bewährungszeit",
        "ratings" => "Bewertungen",
        "average stars" => "Ø Sterne",
        "pre-flight blocked" => "Pre-Flight blockiert",
        _ => return None,
    })
}

/// The open ring's verdict in words. The reasons stay as the gates word them, so they
/// match the CLI's output.
fn verdict_words(verdict: &str) -> String {
    if verdict == "pass" {
        return "bestanden".into();
    }
    match verdict.split_once(": ") {
        Some(("wait", why)) => format!("wartet: {why}"),
        Some(("fail", why)) => format!("nicht bestanden: {why}"),
        Some(("overdue", why)) => format!("überfällig: {why}"),
        _ => verdict.to_string(),
    }
}

/// What the list says about a rollout: why it stopped or pauses, else the verdict.
fn summary(s: &pb::RolloutStatus) -> String {
    match s.state.as_str() {
        "halted" => format!("gestoppt: {}", s.reason),
        "paused" => format!("pausiert: {}", s.reason),
        "complete" => "alle Ringe offen".into(),
        _ => verdict_words(&s.verdict),
    }
}

/// "2 von 3 (Kreis Unna)".
fn open_ring(s: &pb::RolloutStatus) -> String {
    let name = s.rings.get(s.open_ring as usize).map(|r| r.name.as_str()).unwrap_or_default();
    format!("{} von {} ({name})", s.open_ring + 1, s.rings.len())
}

fn rollout_href(service: &str, version: &str, land: &str) -> String {
    if land.is_empty() {
        format!("/services/{service}/rollout/{version}")
    } else {
        format!("/services/{service}/rollout/{version}?land={land}")
    }
}

/// Whose plan, in words: the building Land's, or an offering Land's own for its Kommunen.
fn whose(land_code: &str) -> Markup {
    html! {
        @if land_code.is_empty() { "Umsetzungsland" } @else { "Land " (land_code) " für seine Kommunen" }
    }
}

pub fn render_list(who: &Identity, rows: &[RolloutRow]) -> Response {
    let body = html! {
        h1 { "Rollouts" }
        p {
            "Releases mit Rollout-Plan: Sie erreichen die Kommunen Ring für Ring, und der nächste Ring "
            "öffnet erst, wenn der offene seine Schwellen erfüllt."
        }
        @if rows.is_empty() {
            p.muted { "Noch kein Release hat einen Rollout-Plan." }
        } @else {
            table.data #rollouts {
                thead { tr {
                    th { "Onlinedienst" } th { "Version" } th { "Plan" } th { "Stand" } th { "Offener Ring" } th { "seit" } th { "Urteil" }
                } }
                tbody {
                    @for r in rows {
                        @let id = r.service.id.as_str();
                        @let version = r.version.to_string();
                        tr id={ "rollout-" (id) "-" (version) @if !r.status.land_code.is_empty() { "-" (r.status.land_code) } } {
                            td { a href={ "/services/" (id) } { (r.service.title) } br; span.muted.small { (id) } }
                            td { a.version href=(rollout_href(id, &version, &r.status.land_code)) { (version) } }
                            td { (whose(&r.status.land_code)) }
                            td { (state_badge(&r.status.state)) }
                            td { (open_ring(&r.status)) }
                            td.nowrap { (html::timestamp(r.status.opened_at_ms)) }
                            td.reason { (summary(&r.status)) }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::Rollouts, "Rollouts", body)
}

/// "Dortmund, Stadt (05913000); Bielefeld, Stadt (05711000)", at most [`MAX_NAMES`].
fn named(list: &[(String, String)]) -> Markup {
    html! {
        @for (i, (code, name)) in list.iter().take(MAX_NAMES).enumerate() {
            @if i > 0 { "; " }
            @if name.is_empty() { span.mono { (code) } } @else { (name) " " span.mono.muted { "(" (code) ")" } }
        }
        @if list.len() > MAX_NAMES { " … und " (list.len() - MAX_NAMES) " weitere" }
    }
}

fn members(m: &RingMembers) -> Markup {
    match m {
        RingMembers::Kommunen(list) => html! {
            (list.len()) @if list.len() == 1 { " Gemeinde: " } @else { " Gemeinden: " } (named(list))
        },
        RingMembers::Kreise(list) => html! {
            "alle Gemeinden in " (list.len()) @if list.len() == 1 { " Kreis: " } @else { " Kreisen: " } (named(list))
        },
        RingMembers::Share(percent) => html! {
            (percent) " % der übrigen Gemeinden " span.muted.small { "(fest nach AGS und Version ausgewählt)" }
        },
        RingMembers::Rest => html! { "alle übrigen Gemeinden" },
    }
}

pub fn render(who: &Identity, d: &RolloutDetail) -> Response {
    let s = &d.status;
    let id = d.service.id.as_str();
    let title = format!("Rollout: {} {}", d.service.title, d.version);
    let open_name = s.rings.get(s.open_ring as usize).map(|r| r.name.as_str()).unwrap_or_default();
    let body = html! {
        h1 { (title) }
        p {
            a href={ "/services/" (id) } { (d.service.title) }
            " – die Version erreicht die Kommunen Ring für Ring; der nächste Ring öffnet, sobald der offene "
            "seine Schwellen erfüllt. Ein verfehlter Grenzwert stoppt den Rollout."
        }
        @if !s.reason.is_empty() {
            p.notice #reason { strong { (state_label(&s.state)) ": " } (s.reason) }
        }
        dl.meta {
            dt { "Plan" } dd #plan { (whose(&s.land_code)) }
            dt { "Stand" } dd #state { (state_badge(&s.state)) }
            dt { "Offener Ring" } dd #open-ring { (open_ring(s)) }
            dt { "seit" } dd { (html::timestamp(s.opened_at_ms)) }
            dt { "Frist für ein Urteil" } dd {
                @match d.deadline_at_ms { Some(at) => (html::timestamp(at)), None => span.muted { "keine" } }
            }
            dt { "Urteil" } dd #verdict { (verdict_words(&s.verdict)) }
            dt { "Vorabprüfung" } dd { a href={ "/services/" (id) "/preflight/" (d.version) } { "Ergebnisse der Kommunen" } }
        }

        h2 { "Ringe" }
        table.data #rings {
            thead { tr {
                th.num { "Ring" } th { "Name" } th { "offen" } th.num { "in Betrieb" } th.num { "fehlgeschlagen" }
                th.num { "zurückgerollt" } th.num { "Bewertungen" } th.num { "Ø Sterne" } th.num { "Pre-Flight" }
                th.num { "blockiert" }
            } }
            tbody {
                @for r in &s.rings {
                    tr id={ "ring-" (r.ring + 1) } {
                        td.num { (r.ring + 1) }
                        td { (r.name) }
                        td { @if r.open { "ja" } @else { span.muted { "nein" } } }
                        td.num.healthy { (r.healthy) }
                        td.num { (r.failed) }
                        td.num { (r.rolled_back) }
                        td.num { (r.ratings) }
                        td.num { (html::stars(r.ratings, f64::from(r.average_stars_tenths) / 10.0)) }
                        td.num { (r.preflights) }
                        td.num { (r.blocked) }
                    }
                }
            }
        }
        p.muted.small {
            "Je Ring: „in Betrieb“ zählt Kommunen, die diese Version betreiben; „fehlgeschlagen“ und "
            "„zurückgerollt“ ihre letzte Meldung zu dieser Version; dazu Bewertungen und Pre-Flight-Ergebnisse "
            "dieser Version."
        }

        h2 { "Wer in welchem Ring ist" }
        table.data #members {
            thead { tr { th.num { "Ring" } th { "Name" } th { "Kommunen" } } }
            tbody {
                @for (i, m) in d.members.iter().enumerate() {
                    tr {
                        td.num { (i + 1) }
                        td { @match s.rings.get(i) { Some(r) => (r.name), None => "" } }
                        td { (members(m)) }
                    }
                }
            }
        }

        h2 { "Schwellen des offenen Rings (" (open_name) ")" }
        @if s.gates.is_empty() {
            p.muted { "Keine Schwellen." }
        } @else {
            table.data #gates {
                thead { tr { th { "Schwelle" } th { "Wert" } th { "Soll" } th { "Stand" } } }
                tbody {
                    @for g in &s.gates {
                        tr class={ "gate " (g.state) } {
                            td {
                                @match gate_label(&g.gate) {
                                    Some(label) => { (label) " " span.muted.small { "(" (g.gate) ")" } },
                                    None => (g.gate),
                                }
                            }
                            td.nowrap { (g.value) }
                            td.nowrap { (g.threshold) }
                            td { (gate_badge(&g.state)) }
                        }
                    }
                }
            }
        }
    };
    html::page(who, Nav::Rollouts, &title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_states_read_in_german() {
        assert_eq!(verdict_words("pass"), "bestanden");
        assert_eq!(verdict_words("wait: ratings 0 (needs ≥ 1)"), "wartet: ratings 0 (needs ≥ 1)");
        assert_eq!(verdict_words("fail: x"), "nicht bestanden: x");
        assert_eq!(verdict_words("overdue: y"), "überfällig: y");
        let halted =
            pb::RolloutStatus { state: "halted".into(), reason: "Fehler im Bescheid".into(), ..Default::default() };
        assert_eq!(summary(&halted), "gestoppt: Fehler im Bescheid");
        assert_eq!(state_label("complete"), "abgeschlossen");
        assert_eq!(state_class("paused"), "st rolledback");
    }

    #[test]
    fn long_member_lists_are_cut_and_counted() {
        let list: Vec<(String, String)> = (0..MAX_NAMES + 3).map(|i| (format!("{i:08}"), String::new())).collect();
        let text = members(&RingMembers::Kommunen(list)).into_string();
        assert!(text.starts_with("103 Gemeinden: "), "{text}");
        assert!(text.ends_with(" … und 3 weitere"), "{text}");
        let text = members(&RingMembers::Kreise(vec![("05978".into(), "Kreis Unna".into())])).into_string();
        assert_eq!(text, "alle Gemeinden in 1 Kreis: Kreis Unna <span class=\"mono muted\">(05978)</span>");
    }
}
