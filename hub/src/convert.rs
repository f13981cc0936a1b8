//! Conversions between wire messages (`efa_proto::v1`) and domain types. Plain functions,
//! no logic: validation happens when parsing into domain types.

use crate::error::status;
use efa_proto::v1 as pb;
use efa_registry::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState};
use efa_registry::model::catalog::{Kommune, Service};
use efa_registry::model::rating::{Criterion, Rating, RatingAggregate};
use efa_registry::model::release::{Release, UpdatePolicy};
use efa_registry::model::subscription::{Subscription, SubscriptionTarget};
use efa_registry::params::{ParameterKind, ParameterSpec};
use efa_registry::Error;
use tonic::Status;

fn invalid(field: &'static str, msg: &str) -> Status {
    status(Error::invalid(field, msg))
}

pub fn parameter_kind_to_proto(k: ParameterKind) -> pb::ParameterKind {
    match k {
        ParameterKind::Text => pb::ParameterKind::Text,
        ParameterKind::Url => pb::ParameterKind::Url,
        ParameterKind::Email => pb::ParameterKind::Email,
        ParameterKind::AmountCents => pb::ParameterKind::AmountCents,
        ParameterKind::Postcodes => pb::ParameterKind::Postcodes,
        ParameterKind::Boolean => pb::ParameterKind::Boolean,
        ParameterKind::Integer => pb::ParameterKind::Integer,
    }
}

pub fn parameter_kind_from_proto(k: i32) -> Result<ParameterKind, Status> {
    Ok(match pb::ParameterKind::try_from(k).unwrap_or(pb::ParameterKind::Unspecified) {
        pb::ParameterKind::Text => ParameterKind::Text,
        pb::ParameterKind::Url => ParameterKind::Url,
        pb::ParameterKind::Email => ParameterKind::Email,
        pb::ParameterKind::AmountCents => ParameterKind::AmountCents,
        pb::ParameterKind::Postcodes => ParameterKind::Postcodes,
        pb::ParameterKind::Boolean => ParameterKind::Boolean,
        pb::ParameterKind::Integer => ParameterKind::Integer,
        pb::ParameterKind::Unspecified => return Err(invalid("parameter kind", "must be set")),
    })
}

pub fn parameter_to_proto(p: &ParameterSpec) -> pb::ParameterSpec {
    pb::ParameterSpec {
        name: p.name.clone(),
        kind: parameter_kind_to_proto(p.kind) as i32,
        required: p.required,
        description: p.description.clone(),
        max_length: p.max_length,
    }
}

pub fn parameter_from_proto(p: pb::ParameterSpec) -> Result<ParameterSpec, Status> {
    Ok(ParameterSpec {
        kind: parameter_kind_from_proto(p.kind)?,
        name: p.name,
        required: p.required,
        description: p.description,
        max_length: p.max_length,
    })
}

pub fn service_to_proto(s: &Service, versions: Vec<String>) -> pb::ServiceInfo {
    pb::ServiceInfo {
        id: s.id.to_string(),
        ozg_id: s.ozg_id.to_string(),
        leistungsschluessel: s.leistungsschluessel.as_ref().map(|l| l.to_string()).unwrap_or_default(),
        title: s.title.clone(),
        description: s.description.clone(),
        land_code: s.land.to_string(),
        themenfeld: s.themenfeld.clone(),
        lebenslage: s.lebenslage.clone(),
        parameters: s.parameters.iter().map(parameter_to_proto).collect(),
        registered_at_ms: s.registered_at_ms,
        versions,
        adoption_public: s.adoption_public,
    }
}

pub fn release_to_proto(r: &Release) -> pb::ReleaseInfo {
    pb::ReleaseInfo {
        service_id: r.service_id.to_string(),
        version: r.version.to_string(),
        channel: r.channel.to_string(),
        content_digest: r.content_digest.to_string(),
        total_size: r.total_size,
        file_count: r.file_count,
        release_notes: r.release_notes.clone(),
        published_at_ms: r.published_at_ms,
        yanked: r.yank.is_some(),
        yank_reason: r.yank.as_ref().map(|y| y.reason.clone()).unwrap_or_default(),
        land_code: r.land.to_string(),
    }
}

pub fn policy_to_proto(p: UpdatePolicy) -> pb::UpdatePolicy {
    match p {
        UpdatePolicy::Auto => pb::UpdatePolicy::Auto,
        UpdatePolicy::PatchOnly => pb::UpdatePolicy::PatchOnly,
        UpdatePolicy::Manual => pb::UpdatePolicy::Manual,
    }
}

pub fn policy_from_proto(p: i32) -> Result<UpdatePolicy, Status> {
    match pb::UpdatePolicy::try_from(p).unwrap_or(pb::UpdatePolicy::Unspecified) {
        pb::UpdatePolicy::Auto => Ok(UpdatePolicy::Auto),
        pb::UpdatePolicy::PatchOnly => Ok(UpdatePolicy::PatchOnly),
        pb::UpdatePolicy::Manual => Ok(UpdatePolicy::Manual),
        pb::UpdatePolicy::Unspecified => Err(invalid("policy", "must be AUTO, PATCH_ONLY or MANUAL")),
    }
}

pub fn state_to_proto(s: AdoptionState) -> pb::AdoptionState {
    match s {
        AdoptionState::Evaluating => pb::AdoptionState::Evaluating,
        AdoptionState::Deployed => pb::AdoptionState::Deployed,
        AdoptionState::Failed => pb::AdoptionState::Failed,
        AdoptionState::RolledBack => pb::AdoptionState::RolledBack,
        AdoptionState::Rejected => pb::AdoptionState::Rejected,
        AdoptionState::Retired => pb::AdoptionState::Retired,
    }
}

pub fn state_from_proto(s: i32) -> Result<AdoptionState, Status> {
    Ok(match pb::AdoptionState::try_from(s).unwrap_or(pb::AdoptionState::Unspecified) {
        pb::AdoptionState::Evaluating => AdoptionState::Evaluating,
        pb::AdoptionState::Deployed => AdoptionState::Deployed,
        pb::AdoptionState::Failed => AdoptionState::Failed,
        pb::AdoptionState::RolledBack => AdoptionState::RolledBack,
        pb::AdoptionState::Rejected => AdoptionState::Rejected,
        pb::AdoptionState::Retired => AdoptionState::Retired,
        pb::AdoptionState::Unspecified => return Err(invalid("adoption state", "must be set")),
    })
}

pub fn criterion_to_proto(c: Criterion) -> pb::Criterion {
    match c {
        Criterion::Design => pb::Criterion::Design,
        Criterion::Fachlogik => pb::Criterion::Fachlogik,
        Criterion::Nutzerkonto => pb::Criterion::Nutzerkonto,
        Criterion::Payment => pb::Criterion::Payment,
        Criterion::Datenaustauschstandard => pb::Criterion::Datenaustauschstandard,
        Criterion::RoutingTransport => pb::Criterion::RoutingTransport,
        Criterion::RechtlicheNachnutzung => pb::Criterion::RechtlicheNachnutzung,
        Criterion::Organisation => pb::Criterion::Organisation,
    }
}

pub fn criterion_from_proto(c: i32) -> Result<Criterion, Status> {
    Ok(match pb::Criterion::try_from(c).unwrap_or(pb::Criterion::Unspecified) {
        pb::Criterion::Design => Criterion::Design,
        pb::Criterion::Fachlogik => Criterion::Fachlogik,
        pb::Criterion::Nutzerkonto => Criterion::Nutzerkonto,
        pb::Criterion::Payment => Criterion::Payment,
        pb::Criterion::Datenaustauschstandard => Criterion::Datenaustauschstandard,
        pb::Criterion::RoutingTransport => Criterion::RoutingTransport,
        pb::Criterion::RechtlicheNachnutzung => Criterion::RechtlicheNachnutzung,
        pb::Criterion::Organisation => Criterion::Organisation,
        pb::Criterion::Unspecified => {
            return Err(invalid("criterion", "must be one of the eight EfA-Mindestanforderungen areas"))
        }
    })
}

pub fn target_to_proto(t: &SubscriptionTarget) -> pb::SubscriptionTarget {
    pb::SubscriptionTarget {
        target: Some(match t {
            SubscriptionTarget::Service(s) => pb::subscription_target::Target::ServiceId(s.to_string()),
            SubscriptionTarget::Themenfeld(t) => pb::subscription_target::Target::Themenfeld(t.clone()),
        }),
    }
}

pub fn target_from_proto(t: Option<pb::SubscriptionTarget>) -> Result<SubscriptionTarget, Status> {
    match t.and_then(|t| t.target) {
        Some(pb::subscription_target::Target::ServiceId(s)) => {
            Ok(SubscriptionTarget::Service(crate::error::parse(&s)?))
        }
        Some(pb::subscription_target::Target::Themenfeld(t)) if !t.trim().is_empty() => {
            Ok(SubscriptionTarget::Themenfeld(t))
        }
        _ => Err(invalid("target", "name a service id or a Themenfeld")),
    }
}

pub fn subscription_to_proto(s: &Subscription) -> pb::SubscriptionInfo {
    pb::SubscriptionInfo {
        ags: s.ags.to_string(),
        target: Some(target_to_proto(&s.target)),
        channel: s.channel.to_string(),
        policy: policy_to_proto(s.policy) as i32,
        since_ms: s.since_ms,
    }
}

pub fn entry_to_proto(e: &AdoptionEntry, name: &str, running: Option<&semver::Version>) -> pb::AdoptionRecord {
    pb::AdoptionRecord {
        ags: e.ags.to_string(),
        kommune_name: name.to_string(),
        service_id: e.service_id.to_string(),
        version: e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        state: state_to_proto(e.state) as i32,
        reason: e.reason.clone(),
        at_ms: e.at_ms,
        running_version: running.map(|v| v.to_string()).unwrap_or_default(),
    }
}

pub fn record_to_proto(r: &AdoptionRecord, name: &str) -> pb::AdoptionRecord {
    entry_to_proto(&r.latest, name, r.running.as_ref())
}

pub fn rating_to_proto(r: &Rating, name: &str) -> pb::RatingInfo {
    pb::RatingInfo {
        ags: r.ags.to_string(),
        kommune_name: name.to_string(),
        service_id: r.service_id.to_string(),
        version: r.version.to_string(),
        stars: u32::from(r.stars),
        criteria: r
            .criteria
            .iter()
            .map(|(c, s)| pb::CriterionScore { criterion: criterion_to_proto(*c) as i32, score: u32::from(*s) })
            .collect(),
        comment: r.comment.clone(),
        at_ms: r.at_ms,
    }
}

pub fn aggregate_to_proto(version: String, a: &RatingAggregate) -> pb::RatingAggregate {
    pb::RatingAggregate {
        version,
        count: a.count,
        average_stars: a.average_stars,
        criteria: a
            .criteria
            .iter()
            .map(|(c, avg, n)| pb::CriterionAverage {
                criterion: criterion_to_proto(*c) as i32,
                average: *avg,
                count: *n,
            })
            .collect(),
        histogram: a.histogram.to_vec(),
    }
}

pub fn kommune_to_proto(k: &Kommune, land_name: &str, kreis_name: &str) -> pb::Kommune {
    pb::Kommune {
        ags: k.ags.to_string(),
        ars: k.ars.to_string(),
        name: k.name.clone(),
        land_code: k.ags.land().to_string(),
        land_name: land_name.to_string(),
        kreis_code: k.ags.kreis().to_string(),
        kreis_name: kreis_name.to_string(),
    }
}
