//! Operator and publisher reports, fetched over gRPC and shaped as [`Table`]s. The `efa`
//! CLI and the demo print these.

use crate::table::{timestamp, Table};
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

/// Every Kommune with a ledger entry for the service: its latest state and running version.
pub async fn adopters(ch: Channel, service_id: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .service_adopters(pb::ServiceAdoptersRequest { service_id: service_id.into() })
        .await?
        .into_inner();
    let mut t = Table::new(
        format!("Adopters of {service_id}"),
        &["ags", "kommune", "state", "version", "running", "since", "reason"],
    );
    for a in resp.adopters {
        t.push(vec![
            a.ags,
            a.kommune_name,
            state_label(a.state),
            a.version,
            a.running_version,
            timestamp(a.at_ms),
            a.reason,
        ]);
    }
    Ok(t)
}

/// A Kommune's services now, and its full adoption history (in that order).
pub async fn kommune(ch: Channel, ags: &str) -> Result<(Table, Table), tonic::Status> {
    let resp =
        ReportServiceClient::new(ch).kommune_history(pb::KommuneHistoryRequest { ags: ags.into() }).await?.into_inner();
    let k = resp.kommune.unwrap_or_default();
    let mut current = Table::new(
        format!("{} (AGS {}, Kreis {}, {}): services now", k.name, k.ags, k.kreis_name, k.land_name),
        &["service", "state", "version", "running", "since", "reason"],
    );
    for c in resp.current {
        current.push(vec![
            c.service_id,
            state_label(c.state),
            c.version,
            c.running_version,
            timestamp(c.at_ms),
            c.reason,
        ]);
    }
    let mut history =
        Table::new(format!("{}: adoption history", k.name), &["at", "service", "state", "version", "reason"]);
    for h in resp.history {
        history.push(vec![timestamp(h.at_ms), h.service_id, state_label(h.state), h.version, h.reason]);
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
    let mut t =
        Table::new(format!("Coverage of {service_id}"), &["level", "code", "name", "adopted", "gemeinden", "coverage"]);
    for r in resp.rows {
        if only_adopted && r.adopted == 0 {
            continue;
        }
        let pct = if r.total == 0 { 0.0 } else { 100.0 * f64::from(r.adopted) / f64::from(r.total) };
        t.push(vec![r.level, r.code, r.name, r.adopted.to_string(), r.total.to_string(), format!("{pct:.1} %")]);
    }
    Ok(t)
}

/// Rating aggregates of the service: overall first, then one row per version.
pub async fn ratings(ch: Channel, service_id: &str) -> Result<Table, tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .rating_summary(pb::RatingSummaryRequest { service_id: service_id.into() })
        .await?
        .into_inner();
    let mut t =
        Table::new(format!("Ratings of {service_id}"), &["version", "ratings", "avg stars", "1-5 stars", "criteria"]);
    let row = |a: &pb::RatingAggregate| {
        vec![
            if a.version.is_empty() { "all".to_string() } else { a.version.clone() },
            a.count.to_string(),
            format!("{:.2}", a.average_stars),
            a.histogram.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("/"),
            a.criteria
                .iter()
                .map(|c| format!("{} {:.1}", criterion_label(c.criterion), c.average))
                .collect::<Vec<_>>()
                .join(", "),
        ]
    };
    if let Some(o) = &resp.overall {
        t.push(row(o));
    }
    for v in &resp.per_version {
        t.push(row(v));
    }
    Ok(t)
}

/// Ratings with comments and rejection reasons (in that order), for one service or, with
/// `service_id` empty, the services of `land` (empty: the caller's own, or all for operators).
pub async fn feedback(ch: Channel, service_id: &str, land: &str) -> Result<(Table, Table), tonic::Status> {
    let resp = ReportServiceClient::new(ch)
        .feedback(pb::FeedbackRequest { service_id: service_id.into(), land_code: land.into() })
        .await?
        .into_inner();
    let mut ratings = Table::new("Feedback: ratings", &["service", "version", "kommune", "stars", "comment"]);
    for r in resp.ratings {
        ratings.push(vec![
            r.service_id,
            r.version,
            format!("{} ({})", r.kommune_name, r.ags),
            r.stars.to_string(),
            r.comment,
        ]);
    }
    let mut rejections = Table::new("Feedback: rejections", &["service", "version", "kommune", "reason"]);
    for r in resp.rejections {
        rejections.push(vec![r.service_id, r.version, format!("{} ({})", r.kommune_name, r.ags), r.reason]);
    }
    Ok((ratings, rejections))
}
