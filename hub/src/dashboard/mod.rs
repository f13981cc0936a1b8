//! The operator web dashboard: server-rendered HTML (maud, no JavaScript, no external
//! assets) on its own port, over HTTPS with the hub's certificate, or plain HTTP only
//! with `--insecure-dev`.
//!
//! Routes (all but the stylesheet need an operator token, see `auth.rs`):
//! - `/` overview: services, Land, Themenfeld, latest version, Kommunen running it,
//!   rejections, average stars; live node streams and the event head;
//! - `/matrix` adoption matrix services × Kommunen, filtered by `land`, `kreis`,
//!   `themenfeld`, `channel`;
//! - `/coverage?service=ID[&land=05]` coverage per Land and Kreis;
//! - `/services/{id}` versions and who runs them, yanks, ratings, comments, rejections;
//! - `/services/{id}/preflight/{version}` which Kommunen could run a release, and why not;
//! - `/services/{id}/rollout/{version}` a release's rollout ring by ring, the open ring's
//!   gates and verdict;
//! - `/rejections[?land=05]` every rejection with its reason, grouped by service;
//! - `/rollouts` every release with a rollout plan, its state and verdict;
//! - `/routing?leistungsschluessel=…` who routes a Leistung where;
//! - `/assets/dashboard.css`.
//!
//! Tokens are issued with `efa-hub token issue` ([`tokens`]). `router` builds the axum
//! router; add further routes there.

pub(crate) mod auth;
pub mod data;
pub(crate) mod html;
pub(crate) mod serve;
pub mod tokens;

mod coverage;
mod matrix;
mod overview;
mod preflight;
mod rejections;
mod rollouts;
mod routing;
mod service;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Extension, Router};
use efa_domain::authz::Identity;
use efa_domain::error::{Classify, ErrorKind};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokens::TokenStore;
use tokio_util::sync::CancellationToken;

/// Where the dashboard listens (from the hub's config file or flags).
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// Address of the dashboard's own HTTPS port.
    pub listen: SocketAddr,
}

/// The certificate and key the dashboard serves HTTPS with (the hub's own).
#[derive(Clone, Debug)]
pub struct DashboardTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Everything the dashboard needs from the hub that starts it.
pub struct DashboardInputs {
    /// Where to listen.
    pub config: DashboardConfig,
    /// HTTPS certificate; `None` serves plain HTTP and is allowed only for `--insecure-dev`.
    pub tls: Option<DashboardTls>,
    /// Where the operator token hashes are kept (the hub's data directory).
    pub data_dir: PathBuf,
    /// Read access to the registry.
    pub registry: Arc<Registry>,
    /// Live numbers from the running hub.
    pub live: Live,
    /// Stops the dashboard.
    pub shutdown: CancellationToken,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The certificate or key is unusable.
    #[error("dashboard TLS: {0}")]
    Tls(String),
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The address could not be bound.
    #[error("the dashboard cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Live numbers from the running hub that are not in the store.
#[derive(Clone)]
pub struct Live {
    watchers: Arc<dyn Fn() -> usize + Send + Sync>,
    metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl Live {
    /// `watchers` returns how many node event streams are attached right now.
    pub fn new(watchers: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        Live { watchers: Arc::new(watchers), metrics: None }
    }

    /// `metrics` renders the hub's Prometheus metrics, served on `/metrics`.
    pub fn with_metrics(mut self, metrics: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    pub(crate) fn watchers(&self) -> usize {
        (self.watchers)()
    }
}

/// What every dashboard handler shares.
pub(crate) struct Dashboard {
    pub registry: Arc<Registry>,
    pub tokens: TokenStore,
    pub live: Live,
    /// Served over TLS (cookies are `Secure`).
    pub secure: bool,
}

/// A page that cannot be shown: status and a message for the person reading it.
#[derive(Debug)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError { status, message: message.into() }
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Interner Fehler; Details im Hub-Log.")
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        html::error_page(self.status, &self.message)
    }
}

type Page = Result<Response, PageError>;

impl Dashboard {
    /// Runs a registry read on the blocking pool. Refusals get the HTTP status of the one
    /// error table (a permission refusal is 403, not 500).
    async fn read<T, F>(&self, f: F) -> Result<T, PageError>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> efa_registry::Result<T> + Send + 'static,
    {
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || f(&registry)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match e.kind() {
                ErrorKind::Internal => {
                    tracing::error!(error = %e, "dashboard registry read failed");
                    PageError::internal()
                }
                kind => PageError::new(efa_proto::error::http_status(kind), efa_proto::error::public_message(&e)),
            }),
            Err(e) => {
                tracing::error!(error = %e, "dashboard registry task failed");
                Err(PageError::internal())
            }
        }
    }
}

/// Starts the dashboard; it stops when `inputs.shutdown` is cancelled. Returns the bound
/// address.
pub async fn spawn(inputs: DashboardInputs) -> Result<SocketAddr, DashboardError> {
    let DashboardInputs { config, tls, data_dir, registry, live, shutdown } = inputs;
    let tls = tls.as_ref().map(serve::tls_config).transpose()?;
    let dash = Arc::new(Dashboard { registry, tokens: TokenStore::new(&data_dir), live, secure: tls.is_some() });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = serve::spawn(config.listen, tls, router(dash), shutdown).await?;
    if scheme == "http" {
        tracing::warn!(%addr, "INSECURE DEV MODE: dashboard over plain HTTP");
    }
    tracing::info!(url = %format!("{scheme}://{addr}/"), tokens = %tokens::tokens_path(&data_dir).display(), "operator dashboard listening");
    Ok(addr)
}

/// The dashboard's routes. Pages go into `pages` (behind the operator token); routes
/// that must work without a token (assets, and e.g. a future `/metrics` with its own
/// protection) go next to the stylesheet.
pub(crate) fn router(dash: Arc<Dashboard>) -> Router {
    let pages = Router::new()
        .route("/", get(overview_page))
        .route("/matrix", get(matrix_page))
        .route("/coverage", get(coverage_page))
        .route("/services/{id}", get(service_page))
        .route("/services/{id}/preflight/{version}", get(preflight_page))
        .route("/services/{id}/rollout/{version}", get(rollout_page))
        .route("/rejections", get(rejections_page))
        .route("/rollouts", get(rollouts_page))
        .route("/routing", get(routing_page))
        // Prometheus scrapes with the same operator token (`bearer_token` in its config).
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(dash.clone(), auth::require_operator));
    Router::new()
        .merge(pages)
        .route(html::CSS_PATH, get(stylesheet))
        .fallback(not_found)
        .layer(middleware::map_response(html::security_headers))
        .with_state(dash)
}

type Who = Extension<Identity>;

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], html::css())
        .into_response()
}

async fn metrics(State(d): State<Arc<Dashboard>>) -> Response {
    let Some(render) = d.live.metrics.clone() else { return not_found().await };
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response(),
        Err(_) => html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Metriken konnten nicht erzeugt werden."),
    }
}

async fn not_found() -> Response {
    html::error_page(StatusCode::NOT_FOUND, "Diese Seite gibt es nicht.")
}

fn service_id(s: &str) -> Result<ServiceId, PageError> {
    s.parse().map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            format!("Kein EfA-Onlinedienst mit der ID {}.", efa_domain::error::echo(s)),
        )
    })
}

fn land_code(s: &str) -> Result<Option<LandCode>, PageError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e: efa_domain::Error| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn overview_page(State(d): State<Arc<Dashboard>>, Extension(who): Who) -> Page {
    let o = d.read(data::overview).await?;
    Ok(overview::render(&who, &o, d.live.watchers()))
}

async fn matrix_page(
    State(d): State<Arc<Dashboard>>,
    Extension(who): Who,
    Query(f): Query<data::MatrixFilter>,
) -> Page {
    let filter = f.clone();
    let m = d.read(move |r| data::matrix(r, &filter)).await?;
    Ok(matrix::render(&who, &f, &m))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CoverageQuery {
    service: String,
    land: String,
}

async fn coverage_page(State(d): State<Arc<Dashboard>>, Extension(who): Who, Query(q): Query<CoverageQuery>) -> Page {
    let choices = d.read(data::service_choices).await?;
    if q.service.is_empty() {
        return Ok(coverage::render(&who, &choices, None, ""));
    }
    let (id, land) = (service_id(&q.service)?, land_code(&q.land)?);
    let who_ = who.clone();
    let c = d.read(move |r| data::coverage(r, &who_, &id, land.as_ref())).await?;
    Ok(coverage::render(&who, &choices, Some(&c), &q.land))
}

async fn service_page(State(d): State<Arc<Dashboard>>, Extension(who): Who, Path(id): Path<String>) -> Page {
    let id = service_id(&id)?;
    let who_ = who.clone();
    let s = d.read(move |r| data::service(r, &who_, &id)).await?;
    Ok(service::render(&who, &s))
}

async fn preflight_page(
    State(d): State<Arc<Dashboard>>,
    Extension(who): Who,
    Path((id, version)): Path<(String, String)>,
) -> Page {
    let id = service_id(&id)?;
    let who_ = who.clone();
    let v = version.clone();
    let (service, rows) = d.read(move |r| Ok((r.service(&id)?, r.preflight_report(&who_, &id, &v)?))).await?;
    Ok(preflight::render(&who, &service, &version, &rows))
}

async fn rollouts_page(State(d): State<Arc<Dashboard>>, Extension(who): Who) -> Page {
    let rows = d.read(|r| data::rollouts(r, efa_domain::now_ms())).await?;
    Ok(rollouts::render_list(&who, &rows))
}

/// `?land=09`: an offering Land's own plan instead of the building Land's.
async fn rollout_page(
    State(d): State<Arc<Dashboard>>,
    Extension(who): Who,
    Path((id, version)): Path<(String, String)>,
    Query(q): Query<LandQuery>,
) -> Page {
    let id = service_id(&id)?;
    let land = land_code(&q.land)?;
    let v = version.clone();
    let detail = d.read(move |r| data::rollout(r, &id, &v, land.as_ref(), efa_domain::now_ms())).await?;
    let detail = detail.ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            format!(
                "Version {} hat keinen Rollout-Plan: sie steht allen Kommunen offen.",
                efa_domain::error::echo(&version)
            ),
        )
    })?;
    Ok(rollouts::render(&who, &detail))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RoutingQuery {
    leistungsschluessel: String,
}

async fn routing_page(State(d): State<Arc<Dashboard>>, Extension(who): Who, Query(q): Query<RoutingQuery>) -> Page {
    let key = q.leistungsschluessel.trim().to_string();
    if key.is_empty() {
        return Ok(routing::render(&who, "", &[], &[]));
    }
    let parsed: efa_domain::model::ids::Leistungsschluessel =
        key.parse().map_err(|e: efa_domain::Error| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (services, rows) = d
        .read(move |r| {
            let services = r
                .services(None, None)?
                .into_iter()
                .filter(|s| s.all_leistungsschluessel().any(|k| k == &parsed))
                .map(|s| (s.id.to_string(), s.title))
                .collect::<Vec<_>>();
            Ok((services, r.routing_table(&parsed)?))
        })
        .await?;
    Ok(routing::render(&who, &key, &services, &rows))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct LandQuery {
    land: String,
}

async fn rejections_page(State(d): State<Arc<Dashboard>>, Extension(who): Who, Query(q): Query<LandQuery>) -> Page {
    let land = land_code(&q.land)?;
    let who_ = who.clone();
    let (groups, laender) =
        d.read(move |r| Ok((data::rejections(r, &who_, land.as_ref())?, data::Names::load(r)?.laender))).await?;
    Ok(rejections::render(&who, &groups, &laender, &q.land))
}
