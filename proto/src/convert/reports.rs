//! Report answers.

use super::ledger::{entry, rating, record};
use super::WireEnum;
use crate::v1 as pb;
use efa_domain::model::rating::RatingAggregate;
use efa_domain::model::report::{Adopter, CoverageRow, Feedback, KommuneReport, RatingSummary, RoutingRow};

impl From<&Adopter> for pb::AdoptionRecord {
    fn from(a: &Adopter) -> Self {
        record(&a.record, a.kommune.as_ref().map(|k| k.name.as_str()).unwrap_or(""))
    }
}

impl From<&KommuneReport> for pb::KommuneHistoryResponse {
    fn from(r: &KommuneReport) -> Self {
        let name = r.kommune.name.as_str();
        pb::KommuneHistoryResponse {
            kommune: Some(r.into()),
            current: r.current.iter().map(|c| record(c, name)).collect(),
            history: r.history.iter().map(|e| entry(e, name, None)).collect(),
        }
    }
}

impl From<&CoverageRow> for pb::CoverageRow {
    fn from(row: &CoverageRow) -> Self {
        pb::CoverageRow {
            level: row.level.as_str().into(),
            code: row.code.clone(),
            name: row.name.clone(),
            adopted: row.adopted,
            total: row.total,
            inhabitants_adopted: row.inhabitants_adopted,
            inhabitants_total: row.inhabitants_total,
        }
    }
}

/// A rating aggregate of `version` (empty: over every version).
pub fn aggregate(version: String, a: &RatingAggregate) -> pb::RatingAggregate {
    pb::RatingAggregate {
        version,
        count: a.count,
        average_stars: a.average_stars,
        criteria: a
            .criteria
            .iter()
            .map(|(c, avg, n)| pb::CriterionAverage { criterion: c.to_wire(), average: *avg, count: *n })
            .collect(),
        histogram: a.histogram.to_vec(),
        met: a
            .met
            .iter()
            .map(|(c, yes, no)| pb::CriterionMetCount { criterion: c.to_wire(), met: *yes, not_met: *no })
            .collect(),
    }
}

/// The rating summary of `service_id`.
pub fn rating_summary(service_id: String, s: &RatingSummary) -> pb::RatingSummaryResponse {
    pb::RatingSummaryResponse {
        service_id,
        overall: Some(aggregate(String::new(), &s.overall)),
        per_version: s.per_version.iter().map(|(v, a)| aggregate(v.to_string(), a)).collect(),
    }
}

impl From<&Feedback> for pb::FeedbackResponse {
    fn from(f: &Feedback) -> Self {
        pb::FeedbackResponse {
            ratings: f.ratings.iter().map(|(r, name)| rating(r, name)).collect(),
            rejections: f
                .rejections
                .iter()
                .map(|(e, name)| pb::Rejection {
                    ags: e.ags.to_string(),
                    kommune_name: name.clone(),
                    service_id: e.service_id.to_string(),
                    version: e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    reason: e.reason.clone(),
                    at_ms: e.at_ms,
                })
                .collect(),
        }
    }
}

impl From<&RoutingRow> for pb::RoutingRow {
    fn from(r: &RoutingRow) -> Self {
        pb::RoutingRow {
            ars: r.ars.clone(),
            ags: r.ags.to_string(),
            kommune_name: r.kommune.clone(),
            service_id: r.service_id.to_string(),
            version: r.version.to_string(),
            parameter: r.parameter.clone(),
            destination: r.destination.clone(),
        }
    }
}
