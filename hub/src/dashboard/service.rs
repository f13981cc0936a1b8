//! `/services/{id}`: one service in full: versions and who runs them, yanked releases,
//! Kommunen, ratings by EfA-Mindestanforderungen area, comments, rejections.

use super::data::ServiceDetail;
use super::html::{self, Nav};
use axum::response::Response;
use efa_domain::authz::Identity;
use efa_domain::model::rating::{Criterion, RatingAggregate};
use maud::{html, Markup};

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{} KB", html::decimal(b as f64 / 1024.0)),
        b => format!("{} MB", html::decimal(b as f64 / (1024.0 * 1024.0))),
    }
}

fn star_string(n: u8) -> String {
    let n = usize::from(n.min(5));
    format!("{}{}", "★".repeat(n), "☆".repeat(5 - n))
}

fn names(list: &[String]) -> Markup {
    html! {
        @if list.is_empty() { span.muted { "–" } } @else { (list.join(", ")) }
    }
}

fn criteria_table(agg: &RatingAggregate) -> Markup {
    let met = |c: Criterion| agg.met.iter().find(|(x, _, _)| *x == c).map(|(_, y, n)| (*y, *n));
    html! {
        table.data.criteria #criteria {
            thead { tr {
                th { "Bereich (EfA-Mindestanforderungen)" } th.num { "Ø" } th.num { "Bewertungen" } th { "" }
                th.num { "erfüllt" } th.num { "nicht erfüllt" }
            } }
            tbody {
                @for c in Criterion::ALL {
                    @let (yes, no) = met(c).map_or(("–".to_string(), "–".to_string()), |(y, n)| (y.to_string(), n.to_string()));
                    @match agg.criteria.iter().find(|(x, _, _)| *x == c) {
                        Some((_, avg, n)) => tr {
                            td { (c.label()) }
                            td.num { (html::decimal(*avg)) }
                            td.num { (n) }
                            td.barcell { (html::bar(avg / 5.0 * 100.0)) }
                            td.num.met { (yes) } td.num.notmet { (no) }
                        },
                        None => tr.unrated {
                            td { (c.label()) } td.num.muted { "–" } td.num { "0" } td {}
                            td.num.met { (yes) } td.num.notmet { (no) }
                        },
                    }
                }
            }
        }
    }
}

fn histogram(agg: &RatingAggregate) -> Markup {
    html! {
        table.hist {
            tbody {
                @for stars in (1..=5usize).rev() {
                    @let n = agg.histogram[stars - 1];
                    tr {
                        td.nowrap { (stars) " ★" }
                        td.barcell { (html::bar(html::percent(n, agg.count.max(1)))) }
                        td.num { (n) }
                    }
                }
            }
        }
    }
}

pub fn render(who: &Identity, s: &ServiceDetail) -> Response {
    let svc = &s.service;
    let overall = &s.summary.overall;
    let yanked: Vec<_> = s.versions.iter().filter(|v| v.release.yank.is_some()).collect();
    let body = html! {
        h1 { (svc.title) " " span.muted.small { (svc.id.as_str()) } }
        @if let Some(d) = &svc.deprecated {
            p.notice #deprecated {
                strong { "Abgekündigt" } " am " (html::timestamp(d.at_ms)) ": " (d.reason)
                @if let Some(next) = &d.successor {
                    " – Nachfolger: " a href={ "/services/" (next.as_str()) } { (next.as_str()) }
                }
            }
        }
        dl.meta {
            dt { "Umsetzungsland" } dd { (s.land_name) " (" (svc.land) ")" }
            dt { "OZG-Leistung" } dd { (svc.ozg_id.as_str()) }
            dt { "Leistungsschlüssel" } dd {
                @match &svc.leistungsschluessel { Some(l) => (l.as_str()), None => "–" }
                @for k in &svc.more_leistungsschluessel { ", " (k.as_str()) }
            }
            dt { "Themenfeld" } dd { (svc.themenfeld) }
            dt { "Lebenslage" } dd { (svc.lebenslage) }
            dt { "Registriert" } dd { (html::timestamp(svc.registered_at_ms)) }
            dt { "Nachnutzung öffentlich" } dd { @if svc.adoption_public { "ja" } @else { "nein" } }
        }
        @if !svc.description.is_empty() { p.description { (svc.description) } }
        p { a href={ "/coverage?service=" (svc.id.as_str()) } { "Abdeckung nach Land und Kreis →" } }

        h2 { "Nachnutzung über die Zeit" }
        @let now = efa_domain::now_ms();
        (html::step_chart("chart-kommunen", "Gemeinden mit dem Onlinedienst",
            &s.timeline.iter().map(|p| (p.at_ms, f64::from(p.kommunen))).collect::<Vec<_>>(), now,
            |v| format!("{v:.0}")))
        (html::step_chart("chart-einwohner", "Einwohner erreicht",
            &s.timeline.iter().map(|p| (p.at_ms, p.inhabitants as f64)).collect::<Vec<_>>(), now,
            |v| html::thousands(v as u64)))

        h2 { "Versionen" }
        @if s.versions.is_empty() { p.muted { "Noch keine Version veröffentlicht." } } @else {
            table.data #versions {
                thead { tr {
                    th { "Version" } th { "Kanal" } th { "Veröffentlicht" } th { "Inhalt" } th { "Release Notes" }
                    th.num { "Kommunen in Betrieb" } th { "Kommunen" }
                } }
                tbody {
                    @for v in &s.versions {
                        tr class=[v.release.yank.is_some().then_some("yanked")] {
                            td { span.version { (v.release.version) }
                                 @if v.release.yank.is_some() { " " span.st.yanked { "zurückgezogen" } }
                                 " " a.small href={ "/services/" (s.service.id.as_str()) "/preflight/" (v.release.version) } { "Vorabprüfung" }
                                 @if let Some(state) = &v.rollout {
                                     " " a.small href={ "/services/" (s.service.id.as_str()) "/rollout/" (v.release.version) } {
                                         "Rollout (" (super::rollouts::status_label(state)) ")"
                                     }
                                 } }
                            td { span.channel { (v.release.channel) } }
                            td.nowrap { (html::timestamp(v.release.published_at_ms)) }
                            td.nowrap { (v.release.file_count) " Dateien, " (size(v.release.total_size)) }
                            td { (v.release.release_notes) }
                            td.num { (v.running.len()) }
                            td { (names(&v.running)) }
                        }
                    }
                }
            }
        }

        h2 { "Zurückgezogene Versionen" }
        @if yanked.is_empty() { p.muted { "Keine Version wurde zurückgezogen." } } @else {
            table.data #yanked {
                thead { tr { th { "Version" } th { "Grund" } th { "Zurückgezogen" } th { "Noch in Betrieb bei" } } }
                tbody {
                    @for v in &yanked {
                        @if let Some(y) = &v.release.yank {
                            tr {
                                td { span.version { (v.release.version) } }
                                td.reason { (y.reason) @if y.recall { " " span.st.yanked { "Rückruf" } } }
                                td.nowrap { (html::timestamp(y.at_ms)) }
                                td { @if v.running.is_empty() { span.muted { "keiner Kommune mehr" } }
                                     @else { strong { (names(&v.running)) } } }
                            }
                        }
                    }
                }
            }
        }

        h2 { "Kommunen" }
        @if s.adopters.is_empty() { p.muted { "Noch keine Kommune hat diesen Onlinedienst geprüft." } } @else {
            table.data #adopters {
                thead { tr {
                    th { "Kommune" } th { "AGS" } th { "Stand" } th { "Version" } th { "läuft" } th { "seit" } th { "Grund" }
                } }
                tbody {
                    @for a in &s.adopters {
                        @let e = &a.record.latest;
                        tr {
                            td { (a.kommune) }
                            td.mono { (e.ags) }
                            td { (html::badge(e.state)) }
                            td { @if let Some(v) = &e.version { span.version { (v) } } }
                            td { @match &a.record.running { Some(v) => span.version { (v) }, None => span.muted { "–" } } }
                            td.nowrap { (html::timestamp(e.at_ms)) }
                            td.reason { (e.reason) }
                        }
                    }
                }
            }
        }

        h2 { "Bewertungen" }
        @if overall.count == 0 { p.muted { "Noch keine Bewertungen." } } @else {
            div.ratings {
                div.summary {
                    p.big { (html::stars(overall.count, overall.average_stars)) }
                    p.small { (overall.count) " Bewertung(en) über alle Versionen" }
                    (histogram(overall))
                }
                div { (criteria_table(overall)) }
            }
            @if s.summary.per_version.len() > 1 {
                table.data #per-version {
                    thead { tr { th { "Version" } th.num { "Bewertungen" } th.num { "Ø Sterne" } } }
                    tbody { @for (v, a) in &s.summary.per_version {
                        tr { td { span.version { (v) } } td.num { (a.count) } td.num { (html::stars(a.count, a.average_stars)) } }
                    } }
                }
            }
            h3 { "Kommentare" }
            ul.comments #comments {
                @for (name, r) in &s.ratings {
                    li {
                        div.head {
                            span.stars { (star_string(r.stars)) } " "
                            strong { (name) } " zu " span.version { (r.version) }
                            " " span.muted.small { (html::timestamp(r.at_ms)) }
                        }
                        @if !r.criteria.is_empty() {
                            div.small.muted {
                                @for (i, (c, score)) in r.criteria.iter().enumerate() {
                                    @if i > 0 { ", " } (c.label()) ": " (score)
                                }
                            }
                        }
                        @if r.comment.is_empty() { p.muted { "(ohne Kommentar)" } } @else { p.comment { (r.comment) } }
                    }
                }
            }
        }

        h2 { "Ablehnungen" }
        @if s.rejections.is_empty() { p.muted { "Keine Kommune lehnt diesen Onlinedienst ab." } } @else {
            table.data.rejections #service-rejections {
                thead { tr { th { "Kommune" } th { "Version" } th { "Begründung" } th { "Datum" } } }
                tbody { @for (name, e) in &s.rejections {
                    tr {
                        td { (name) }
                        td { @match &e.version { Some(v) => span.version { (v) }, None => span.muted { "–" } } }
                        td.reason { (e.reason) }
                        td.nowrap { (html::timestamp(e.at_ms)) }
                    }
                } }
            }
        }
    };
    html::page(who, Nav::None, &svc.title, body)
}
