//! Who is looking at the dashboard. A request carries an operator token as
//! `Authorization: Bearer <token>`, in the session cookie, or once as `?token=<token>`:
//! that sets the cookie (HttpOnly, Secure, SameSite=Strict) and redirects to the same URL
//! without the token, so it leaves the address bar and the history.
//!
//! Tokens name operators only; the decision that an operator may read every service's
//! adoption, ratings and rejections is [`efa_domain::authz::authorize`]'s, like for gRPC.

use super::html;
use super::Dashboard;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use efa_domain::authz::{authorize, Action, Identity};
use maud::html;
use std::sync::Arc;

pub const COOKIE: &str = "efa_dashboard";
const QUERY_KEY: &str = "token";

/// Middleware in front of every page: resolves the token to an operator [`Identity`] and
/// puts it into the request extensions, or answers 401.
pub async fn require_operator(State(dash): State<Arc<Dashboard>>, mut req: Request, next: Next) -> Response {
    let uri = req.uri().clone();
    if let Some(token) = query_token(uri.query()) {
        // `?token=` only logs in: set the cookie and send the browser on without it.
        return match check(&dash, &token).await {
            Ok(_) => {
                let mut resp = StatusCode::SEE_OTHER.into_response();
                let location = without_token(uri.path(), uri.query());
                let headers = resp.headers_mut();
                headers.insert(header::LOCATION, header_value(&location));
                headers.insert(header::SET_COOKIE, header_value(&session_cookie(&token, dash.secure)));
                resp
            }
            Err(resp) => resp,
        };
    }
    let token = match bearer(req.headers()) {
        Some(t) => Some(t),
        None => cookie(req.headers(), COOKIE),
    };
    let Some(token) = token else {
        return unauthorized("Für das Dashboard ist ein Betreiber-Token nötig.");
    };
    match check(&dash, &token).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(resp) => resp,
    }
}

async fn check(dash: &Dashboard, token: &str) -> Result<Identity, Response> {
    let who = match dash.tokens.verify(token).await {
        Ok(Some(who)) => who,
        Ok(None) => return Err(unauthorized("Das Token ist unbekannt oder wurde widerrufen.")),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the operator tokens");
            return Err(html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Die Token-Datei ist nicht lesbar."));
        }
    };
    match authorize(&who, Action::ReadDashboard) {
        Ok(()) => Ok(who),
        Err(e) => Err(html::error_page(StatusCode::FORBIDDEN, &e.to_string())),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

fn session_cookie(token: &str, secure: bool) -> String {
    // Without TLS (--insecure-dev only) a Secure cookie would never come back.
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly{secure}; SameSite=Strict")
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, Option<(String, String)>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|raw| {
        let decoded = serde_urlencoded::from_str::<Vec<(String, String)>>(raw).ok().and_then(|v| v.into_iter().next());
        (raw, decoded)
    })
}

fn query_token(query: Option<&str>) -> Option<String> {
    pairs(query?).filter_map(|(_, kv)| kv).find(|(k, _)| k == QUERY_KEY).map(|(_, v)| v)
}

/// `path?query` with every `token` parameter removed. The path stays on this origin: a
/// path like `//evil.example/` must not become a protocol-relative redirect.
fn without_token(path: &str, query: Option<&str>) -> String {
    let path = format!("/{}", path.trim_start_matches(['/', '\\']));
    let rest: Vec<&str> = pairs(query.unwrap_or(""))
        .filter(|(_, kv)| kv.as_ref().is_none_or(|(k, _)| k != QUERY_KEY))
        .map(|(raw, _)| raw)
        .collect();
    if rest.is_empty() {
        path
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// The 401 page: what is missing and how an operator gets a token.
pub fn unauthorized(why: &str) -> Response {
    let body = html! {
        h1 { "Anmeldung erforderlich" }
        p.notice { (why) }
        p { "Das EfA-Hub-Dashboard ist Betreiberinnen und Betreibern des Hubs vorbehalten. \
             Länder und Kommunen sehen ihre Berichte mit ihrem Zertifikat über " code { "efa report" } "." }
        h2 { "So erhalten Sie ein Token" }
        ol {
            li { "Auf dem Hub-Server (mit Zugriff auf dessen Datenverzeichnis):" pre { "efa-hub token issue --data-dir <DATENVERZEICHNIS> --operator <NAME>" } "Das Token wird nur einmal angezeigt; gespeichert wird nur sein SHA-256-Hash." }
            li { "Diese Seite einmal mit " code { "?token=<TOKEN>" } " öffnen: Der Browser erhält ein Sitzungs-Cookie, das Token verschwindet aus der Adresse." }
            li { "Oder bei jedem Aufruf den Header " code { "Authorization: Bearer <TOKEN>" } " senden (z. B. mit curl)." }
        }
        p { "Widerrufen: " code { "efa-hub token revoke --data-dir <DATENVERZEICHNIS> --operator <NAME>" } }
    };
    let mut resp = html::bare_page(StatusCode::UNAUTHORIZED, "Anmeldung erforderlich", body);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"efa-hub dashboard\""));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bearer_cookie_and_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer efa-op-abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; efa_dashboard=efa-op-def"));
        assert_eq!(bearer(&h).as_deref(), Some("efa-op-abc"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("efa-op-def"));
        assert_eq!(query_token(Some("land=05&token=efa-op-x")).as_deref(), Some("efa-op-x"));
        assert_eq!(query_token(Some("land=05")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn the_redirect_drops_only_the_token_and_stays_on_this_origin() {
        assert_eq!(
            without_token("/matrix", Some("land=05&token=t&themenfeld=Bauen+%26+Wohnen")),
            "/matrix?land=05&themenfeld=Bauen+%26+Wohnen"
        );
        assert_eq!(without_token("/", Some("token=t")), "/");
        assert_eq!(without_token("//evil.example/x", Some("token=t")), "/evil.example/x");
        assert_eq!(without_token("/\\evil.example", None), "/evil.example");
    }

    #[test]
    fn the_cookie_is_httponly_strict_and_secure_over_tls() {
        let c = session_cookie("efa-op-x", true);
        assert!(c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Strict"), "{c}");
        assert!(!session_cookie("efa-op-x", false).contains("Secure"));
    }
}
