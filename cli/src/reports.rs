//! Operator and publisher reports, fetched over gRPC and shaped as [`Table`]s. The `efa`
//! CLI and the demo print these.

use crate::table::{time_cell, Cell, Table};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::rating::Criterion;
use efa_proto::convert::WireEnum;
use efa_proto::v1 as pb;
use efa_proto::v1::report_service_client::ReportServiceClient;
use tonic::transport::Channel;

/// The label of an adoption state from the wire (`?` for one this CLI does not know).
pub fn state_label(s: i32) -> String {
    AdoptionState::from_wire(s).map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
}

/// The label of a criterion from the wire (`?` for one this CLI does not know).
pub fn criterion_label(c: i32) -> &'static str {
    Criterion::from_wire(c).map(|c| c.label()).unwrap_or("?")
}

/// Every Kommune with a ledger entry for the service: what it runs, and its latest decision
/// (a Kommune may run 1.0.1 and have rejected 1.0.2).
pub async fn adopters(ch: Channel, service_id: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .service_adopters(pb::ServiceAdoptersRequest { service_id: service_id.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        "adopters",
        format!("Adopters of {service_id}"),
        &["ags", "kommune", "running", "last report", "for version", "since", "reason"],
    );
    for a in resp.adopters {
        t.push(vec![
            a.ags.into(),
            a.kommune_name.into(),
            Cell::opt(a.running_version),
            state_label(a.state).into(),
            Cell::opt(a.version),
            time_cell(a.at_ms),
            Cell::opt(a.reason),
        ]);
    }
    Ok(t)
}

/// A Kommune's services now (`current`), and its full adoption history (`history`).
pub async fn kommune(ch: Channel, ags: &str) -> Result<(Table, Table), tonic::Status> {
    let resp =
        ReportServiceClient::new(ch).kommune_history(pb::KommuneHistoryRequest { ags: ags.into() }).await?.into_inner();
    let k = resp.kommune.unwrap_or_default();
    let mut current = Table::new(
        "current",
        format!("{} (AGS {}, Kreis {}, {}): services now", k.name, k.ags, k.kreis_name, k.land_name),
        &["service", "running", "last report", "for version", "since", "reason"],
    );
    for c in resp.current {
        current.push(vec![
            c.service_id.into(),
            Cell::opt(c.running_version),
            state_label(c.state).into(),
            Cell::opt(c.version),
            time_cell(c.at_ms),
            Cell::opt(c.reason),
        ]);
    }
    let mut history = Table::new(
        "history",
        format!("{}: adoption history", k.name),
        &["at", "service", "state", "version", "reason"],
    );
    for h in resp.history {
        history.push(vec![
            time_cell(h.at_ms),
            h.service_id.into(),
            state_label(h.state).into(),
            Cell::opt(h.version),
            Cell::opt(h.reason),
        ]);
    }
    Ok((current, history))
}

/// Share of Gemeinden per Land and Kreis that run the service; `land` (empty: all)
/// restricts the Kreis rows, `only_adopted` drops rows without any adopter.
pub async fn coverage(ch: Channel, service_id: &str, land: &str, only_adopted: bool) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .coverage(pb::CoverageRequest { service_id: service_id.into(), land_code: land.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        "coverage",
        format!("Coverage of {service_id}"),
        &[
            "level",
            "code",
            "name",
            "adopted",
            "gemeinden",
            "coverage %",
            "inhabitants covered",
            "inhabitants",
            "inhabitants %",
        ],
    );
    for r in resp.rows {
        if only_adopted && r.adopted == 0 {
            continue;
        }
        let pct = if r.total == 0 { 0.0 } else { 100.0 * f64::from(r.adopted) / f64::from(r.total) };
        let people = if r.inhabitants_total == 0 {
            0.0
        } else {
            100.0 * r.inhabitants_adopted as f64 / r.inhabitants_total as f64
        };
        t.push(vec![
            r.level.into(),
            r.code.into(),
            r.name.into(),
            r.adopted.into(),
            r.total.into(),
            Cell::float(pct, 1),
            r.inhabitants_adopted.into(),
            r.inhabitants_total.into(),
            Cell::float(people, 1),
        ]);
    }
    Ok(t)
}

/// Rating aggregates of the service: overall first (`version` null), then one row per version.
pub async fn ratings(ch: Channel, service_id: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .rating_summary(pb::RatingSummaryRequest { service_id: service_id.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        "ratings",
        format!("Ratings of {service_id}"),
        &["version", "ratings", "avg stars", "stars 1-5", "criteria", "met"],
    );
    let row = |a: &pb::RatingAggregate| {
        let version = if a.version.is_empty() {
            Cell::with_value("all", serde_json::Value::Null)
        } else {
            a.version.clone().into()
        };
        let histogram = Cell::with_value(
            a.histogram.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("/"),
            serde_json::json!(a.histogram),
        );
        let criteria = Cell::with_value(
            a.criteria
                .iter()
                .map(|c| format!("{} {:.1}", criterion_label(c.criterion), c.average))
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Object(
                a.criteria
                    .iter()
                    .map(|c| (criterion_label(c.criterion).to_string(), serde_json::json!(c.average)))
                    .collect(),
            ),
        );
        let met = Cell::with_value(
            a.met
                .iter()
                .map(|m| format!("{}: {} yes, {} no", criterion_label(m.criterion), m.met, m.not_met))
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Object(
                a.met
                    .iter()
                    .map(|m| {
                        (
                            criterion_label(m.criterion).to_string(),
                            serde_json::json!({"met": m.met, "not_met": m.not_met}),
                        )
                    })
                    .collect(),
            ),
        );
        vec![version, a.count.into(), Cell::float(a.average_stars, 2), histogram, criteria, met]
    };
    if let Some(o) = &resp.overall {
        t.push(row(o));
    }
    for v in &resp.per_version {
        t.push(row(v));
    }
    Ok(t)
}

/// Ratings with comments (`ratings`) and rejection reasons (`rejections`), for one service
/// or, with `service_id` empty, the services of `land` (empty: the caller's own, or all for
/// operators).
pub async fn feedback(ch: Channel, service_id: &str, land: &str) -> Result<(Table, Table), tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .feedback(pb::FeedbackRequest { service_id: service_id.into(), land_code: land.into() })
        .await?
        .into_inner();
    let mut ratings =
        Table::new("ratings", "Feedback: ratings", &["service", "version", "ags", "kommune", "stars", "comment"]);
    for r in resp.ratings {
        ratings.push(vec![
            r.service_id.into(),
            r.version.into(),
            r.ags.into(),
            r.kommune_name.into(),
            r.stars.into(),
            Cell::opt(r.comment),
        ]);
    }
    let mut rejections =
        Table::new("rejections", "Feedback: rejections", &["service", "version", "ags", "kommune", "reason"]);
    for r in resp.rejections {
        rejections.push(vec![
            r.service_id.into(),
            Cell::opt(r.version),
            r.ags.into(),
            r.kommune_name.into(),
            r.reason.into(),
        ]);
    }
    Ok((ratings, rejections))
}

/// Pre-flight results of one release: per Kommune ready or blocked (blocked first), with
/// what is missing and how the schema changed.
pub async fn preflight(ch: Channel, service_id: &str, version: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .preflight(pb::PreflightRequest { service_id: service_id.into(), version: version.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        "preflight",
        format!("Pre-flight of {} {}: {} ready, {} blocked", resp.service_id, resp.version, resp.ready, resp.blocked),
        &["ags", "kommune", "status", "problems", "schema changes", "at"],
    );
    for k in resp.kommunen {
        let list = |v: &[String]| {
            let text = if v.is_empty() { "-".to_string() } else { v.join("; ") };
            Cell::with_value(text, serde_json::json!(v))
        };
        t.push(vec![
            k.ags.into(),
            k.kommune_name.into(),
            if k.ready { "ready" } else { "blocked" }.into(),
            list(&k.problems),
            list(&k.schema_changes),
            time_cell(k.at_ms),
        ]);
    }
    Ok(t)
}

/// The routing table for a Leistungsschlüssel: per Kommune (by ARS) the FIT-Connect
/// destination its node declared for the service it runs.
pub async fn routing(ch: Channel, leistungsschluessel: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .routing(pb::RoutingRequest { leistungsschluessel: leistungsschluessel.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        "routing",
        format!("FIT-Connect routing for Leistungsschlüssel {}", resp.leistungsschluessel),
        &["ars", "ags", "kommune", "service", "version", "parameter", "destination"],
    );
    for r in resp.rows {
        t.push(vec![
            r.ars.into(),
            r.ags.into(),
            r.kommune_name.into(),
            r.service_id.into(),
            r.version.into(),
            r.parameter.into(),
            r.destination.into(),
        ]);
    }
    Ok(t)
}

/// The adoption matrix: one row per Kommune with any record for the listed services, one
/// column per service with what it runs (or its last report when it runs nothing). Unlike
/// the dashboard's view it has no size limit, for export as CSV or JSON.
pub async fn matrix(ch: Channel, services: &[String]) -> Result<Table, tonic::Status> {
    let mut rows: std::collections::BTreeMap<String, (String, Vec<Cell>)> = std::collections::BTreeMap::new();
    for (i, id) in services.iter().enumerate() {
        let adopters = ReportServiceClient::new(ch.clone())
            .service_adopters(pb::ServiceAdoptersRequest { service_id: id.clone() })
            .await?
            .into_inner()
            .adopters;
        for a in adopters {
            let row = rows
                .entry(a.ags.clone())
                .or_insert_with(|| (a.kommune_name.clone(), vec![Cell::none(); services.len()]));
            row.1[i] = if a.running_version.is_empty() {
                Cell::with_value(
                    state_label(a.state),
                    serde_json::json!({ "running": null, "last_report": state_label(a.state) }),
                )
            } else {
                Cell::with_value(
                    a.running_version.clone(),
                    serde_json::json!({ "running": a.running_version, "last_report": state_label(a.state) }),
                )
            };
        }
    }
    let mut headers: Vec<&str> = vec!["ags", "kommune"];
    headers.extend(services.iter().map(String::as_str));
    let mut t = Table::new(
        "matrix",
        format!("Adoption matrix: {} Kommunen × {} services", rows.len(), services.len()),
        &headers,
    );
    for (ags, (name, cells)) in rows {
        let mut row: Vec<Cell> = vec![ags.into(), name.into()];
        row.extend(cells);
        t.push(row);
    }
    Ok(t)
}
