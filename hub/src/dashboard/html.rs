//! Page layout and small formatting helpers. All text goes through maud, which escapes
//! it; nothing here builds HTML from strings.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use efa_domain::authz::Identity;
use efa_domain::model::adoption::AdoptionState;
use maud::{html, Markup, DOCTYPE};
use std::sync::OnceLock;

const BASE_CSS: &str = include_str!("../../assets/dashboard.css");
pub const CSS_PATH: &str = "/assets/dashboard.css";

/// The stylesheet: the asset plus `.w0`..`.w100` width classes for bars, so pages need no
/// inline styles (the Content-Security-Policy forbids them).
pub fn css() -> &'static str {
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        let mut s = String::from(BASE_CSS);
        for i in 0..=100 {
            s.push_str(&format!(".w{i}{{width:{i}%}}\n"));
        }
        s
    })
}

/// The navigation entries; the active one is highlighted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Matrix,
    Coverage,
    Rejections,
    Rollouts,
    Routing,
    None,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · EfA Hub" }
            link rel="stylesheet" href=(CSS_PATH);
        }
    }
}

/// A full page for a signed-in operator.
pub fn page(who: &Identity, active: Nav, title: &str, body: Markup) -> Response {
    let item = |nav: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == active).then_some("active")] { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="de" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "EfA Hub" span.sub { "Betreiber-Dashboard" } }
                    nav {
                        (item(Nav::Overview, "/", "Übersicht"))
                        (item(Nav::Matrix, "/matrix", "Nachnutzungsmatrix"))
                        (item(Nav::Coverage, "/coverage", "Abdeckung"))
                        (item(Nav::Rejections, "/rejections", "Ablehnungen"))
                        (item(Nav::Rollouts, "/rollouts", "Rollouts"))
                        (item(Nav::Routing, "/routing", "Routing"))
                    }
                    span.who { "Angemeldet als " strong { (who.key()) } " (Betreiber)" }
                }
                main { (body) }
                footer { "EfA Hub · Stand " (timestamp(efa_domain::now_ms())) " UTC" }
            }
        }
    };
    (StatusCode::OK, Html(markup.into_string())).into_response()
}

/// A page without navigation (401, errors).
pub fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="de" {
            (head(title))
            body {
                header.top { a.brand href="/" { "EfA Hub" span.sub { "Betreiber-Dashboard" } } }
                main { (body) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Nicht gefunden",
        StatusCode::BAD_REQUEST => "Ungültige Anfrage",
        StatusCode::FORBIDDEN => "Kein Zugriff",
        _ => "Fehler",
    };
    bare_page(status, title, html! { h1 { (title) } p.notice { (message) } p { a href="/" { "Zur Übersicht" } } })
}

/// Headers every dashboard response carries: no scripts, no inline styles, no framing,
/// no referrer (a `?token=` must not leak), no caching of operator data.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    resp
}

pub fn timestamp(ms: i64) -> String {
    if ms <= 0 {
        return "–".into();
    }
    efa_cli::table::timestamp(ms)
}

/// German decimal with one digit: `12,5`.
pub fn decimal(x: f64) -> String {
    format!("{x:.1}").replace('.', ",")
}

/// A step chart of `points` (ms since the epoch, value) up to `now_ms`, as inline SVG: no
/// JavaScript, no CDN. Each value holds until the next point.
pub fn step_chart(id: &str, label: &str, points: &[(i64, f64)], now_ms: i64, fmt: impl Fn(f64) -> String) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 140.0;
    const LEFT: f64 = 8.0;
    const TOP: f64 = 18.0;
    const BOTTOM: f64 = 18.0;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return html! { p.muted { (label) ": noch keine Daten." } };
    };
    let (t0, t1) = (first.0, now_ms.max(last.0 + 1));
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0);
    let x = |t: i64| LEFT + (W - 2.0 * LEFT) * (t - t0) as f64 / (t1 - t0) as f64;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / max);
    let mut path = format!("M{:.1},{:.1}", x(t0), y(0.0));
    for (t, v) in points {
        path.push_str(&format!(" H{:.1} V{:.1}", x(*t), y(*v)));
    }
    path.push_str(&format!(" H{:.1}", x(t1)));
    html! {
        figure.chart id=(id) {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) {
                line x1=(LEFT) y1=(y(0.0)) x2=(W - LEFT) y2=(y(0.0)) stroke="#b8c2cc" {}
                path d=(path) fill="none" stroke="#1f6f43" stroke-width="2" {}
                text x=(LEFT) y="12" font-size="11" { (label) ": höchstens " (fmt(max)) ", jetzt " (fmt(last.1)) }
                text x=(LEFT) y=(H - 4.0) font-size="10" { (timestamp(t0)) }
                text x=(W - LEFT) y=(H - 4.0) font-size="10" text-anchor="end" { (timestamp(t1)) }
            }
        }
    }
}

/// `593.317`: German digit grouping for counts of people.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

pub fn percent(adopted: u32, total: u32) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * f64::from(adopted) / f64::from(total)
    }
}

/// `12,5 %`.
pub fn percent_text(p: f64) -> String {
    format!("{} %", decimal(p))
}

/// A horizontal bar for a percentage; any share above zero stays visible.
pub fn bar(p: f64) -> Markup {
    let width = if p > 0.0 { p.ceil().clamp(1.0, 100.0) as u32 } else { 0 };
    html! { span.bar title=(percent_text(p)) { span class={ "fill w" (width) } {} } }
}

/// Average stars as `4,3 ★` (or `–` without ratings).
pub fn stars(count: u32, average: f64) -> Markup {
    if count == 0 {
        return html! { span.muted { "–" } };
    }
    html! { span.stars title={ (count) " Bewertung(en)" } { (decimal(average)) " ★" } }
}

pub fn state_label(s: AdoptionState) -> &'static str {
    match s {
        AdoptionState::Evaluating => "in Prüfung",
        AdoptionState::Deployed => "in Betrieb",
        AdoptionState::Failed => "fehlgeschlagen",
        AdoptionState::RolledBack => "zurückgerollt",
        AdoptionState::Rejected => "abgelehnt",
        AdoptionState::Retired => "außer Betrieb",
    }
}

/// CSS class of a state badge.
pub fn state_class(s: AdoptionState) -> &'static str {
    match s {
        AdoptionState::Evaluating => "st evaluating",
        AdoptionState::Deployed => "st deployed",
        AdoptionState::Failed => "st failed",
        AdoptionState::RolledBack => "st rolledback",
        AdoptionState::Rejected => "st rejected",
        AdoptionState::Retired => "st retired",
    }
}

pub fn badge(s: AdoptionState) -> Markup {
    html! { span class=(state_class(s)) { (state_label(s)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_german_and_bars_stay_visible() {
        assert_eq!(percent_text(percent(1, 396)), "0,3 %");
        assert_eq!(percent_text(percent(1, 1)), "100,0 %");
        assert_eq!(percent_text(percent(0, 0)), "0,0 %");
        assert!(bar(0.25).into_string().contains("fill w1"));
        assert!(bar(0.0).into_string().contains("fill w0"));
        assert!(css().contains(".w100{width:100%}"));
    }

    #[test]
    fn text_is_escaped() {
        let m = html! { p { ("<script>alert(1)</script> & \"x\"") } };
        assert_eq!(m.into_string(), "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;</p>");
    }
}
