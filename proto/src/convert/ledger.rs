//! Subscriptions, adoption reports, ratings and the event stream.

use super::{parse, parse_opt, WireEnum};
use crate::v1 as pb;
use efa_domain::error::{Error, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionReport, AdoptionState};
use efa_domain::model::event::{Delivered, StreamEvent};
use efa_domain::model::ids::{parse_version, Channel};
use efa_domain::model::preflight::{NewPreflight, PreflightRecord};
use efa_domain::model::rating::{Criterion, NewRating, Rating};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::model::routing::{Destination, RoutingDeclaration, RoutingRecord};
use efa_domain::model::subscription::{NewSubscription, Subscription, SubscriptionTarget};

impl TryFrom<pb::SubscriptionTarget> for SubscriptionTarget {
    type Error = Error;
    fn try_from(t: pb::SubscriptionTarget) -> Result<Self> {
        match t.target {
            Some(pb::subscription_target::Target::ServiceId(s)) => Ok(SubscriptionTarget::Service(parse(&s)?)),
            Some(pb::subscription_target::Target::Themenfeld(t)) if !t.trim().is_empty() => {
                Ok(SubscriptionTarget::Themenfeld(t))
            }
            _ => Err(Error::invalid("target", "name a service id or a Themenfeld")),
        }
    }
}

/// A target that may be missing from the message.
pub fn target(t: Option<pb::SubscriptionTarget>) -> Result<SubscriptionTarget> {
    t.ok_or_else(|| Error::invalid("target", "name a service id or a Themenfeld"))?.try_into()
}

impl From<&SubscriptionTarget> for pb::SubscriptionTarget {
    fn from(t: &SubscriptionTarget) -> Self {
        pb::SubscriptionTarget {
            target: Some(match t {
                SubscriptionTarget::Service(s) => pb::subscription_target::Target::ServiceId(s.to_string()),
                SubscriptionTarget::Themenfeld(t) => pb::subscription_target::Target::Themenfeld(t.clone()),
            }),
        }
    }
}

impl TryFrom<pb::SubscribeRequest> for NewSubscription {
    type Error = Error;
    /// An empty channel means `stable`; the policy must be set.
    fn try_from(r: pb::SubscribeRequest) -> Result<Self> {
        Ok(NewSubscription {
            target: target(r.target)?,
            channel: parse_opt(&r.channel)?.unwrap_or_else(Channel::stable),
            policy: UpdatePolicy::from_wire(r.policy)?,
        })
    }
}

impl From<&NewSubscription> for pb::SubscribeRequest {
    fn from(s: &NewSubscription) -> Self {
        pb::SubscribeRequest {
            target: Some((&s.target).into()),
            channel: s.channel.to_string(),
            policy: s.policy.to_wire(),
        }
    }
}

impl From<&Subscription> for pb::SubscriptionInfo {
    fn from(s: &Subscription) -> Self {
        pb::SubscriptionInfo {
            ags: s.ags.to_string(),
            target: Some((&s.target).into()),
            channel: s.channel.to_string(),
            policy: s.policy.to_wire(),
            since_ms: s.since_ms,
        }
    }
}

impl TryFrom<pb::AdoptionReport> for AdoptionReport {
    type Error = Error;
    /// An empty version means "the service as a whole" (rejections, retirements).
    fn try_from(r: pb::AdoptionReport) -> Result<Self> {
        Ok(AdoptionReport {
            service_id: parse(&r.service_id)?,
            version: if r.version.trim().is_empty() { None } else { Some(parse_version(&r.version)?) },
            state: AdoptionState::from_wire(r.state)?,
            reason: r.reason,
        })
    }
}

impl From<&AdoptionReport> for pb::AdoptionReport {
    fn from(r: &AdoptionReport) -> Self {
        pb::AdoptionReport {
            service_id: r.service_id.to_string(),
            version: r.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            state: r.state.to_wire(),
            reason: r.reason.clone(),
        }
    }
}

/// A ledger entry as reports show it, with the Kommune's name and what it runs now.
pub fn entry(e: &AdoptionEntry, kommune_name: &str, running: Option<&semver::Version>) -> pb::AdoptionRecord {
    pb::AdoptionRecord {
        ags: e.ags.to_string(),
        kommune_name: kommune_name.to_string(),
        service_id: e.service_id.to_string(),
        version: e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        state: e.state.to_wire(),
        reason: e.reason.clone(),
        at_ms: e.at_ms,
        running_version: running.map(|v| v.to_string()).unwrap_or_default(),
        event_seq: 0,
    }
}

/// A current adoption record with the Kommune's name.
pub fn record(r: &AdoptionRecord, kommune_name: &str) -> pb::AdoptionRecord {
    entry(&r.latest, kommune_name, r.running.as_ref())
}

impl TryFrom<pb::RatingRequest> for NewRating {
    type Error = Error;
    fn try_from(r: pb::RatingRequest) -> Result<Self> {
        Ok(NewRating {
            service_id: parse(&r.service_id)?,
            version: parse_version(&r.version)?,
            stars: r.stars,
            criteria: r
                .criteria
                .iter()
                .map(|c| Ok((Criterion::from_wire(c.criterion)?, c.score)))
                .collect::<Result<_>>()?,
            comment: r.comment,
            met: met_from_wire(&r.met)?,
        })
    }
}

impl From<&NewRating> for pb::RatingRequest {
    fn from(r: &NewRating) -> Self {
        pb::RatingRequest {
            service_id: r.service_id.to_string(),
            version: r.version.to_string(),
            stars: r.stars,
            criteria: r
                .criteria
                .iter()
                .map(|(c, s)| pb::CriterionScore { criterion: c.to_wire(), score: *s })
                .collect(),
            comment: r.comment.clone(),
            met: met_to_wire(&r.met),
        }
    }
}

/// A rating with the rating Kommune's name.
pub fn rating(r: &Rating, kommune_name: &str) -> pb::RatingInfo {
    pb::RatingInfo {
        ags: r.ags.to_string(),
        kommune_name: kommune_name.to_string(),
        service_id: r.service_id.to_string(),
        version: r.version.to_string(),
        stars: u32::from(r.stars),
        criteria: criteria_to_wire(&r.criteria),
        comment: r.comment.clone(),
        at_ms: r.at_ms,
        met: met_to_wire(&r.met),
    }
}

/// Scores per Mindestanforderungen area, as the wire carries them.
pub(crate) fn criteria_to_wire(criteria: &[(Criterion, u8)]) -> Vec<pb::CriterionScore> {
    criteria.iter().map(|(c, s)| pb::CriterionScore { criterion: c.to_wire(), score: u32::from(*s) }).collect()
}

fn met_from_wire(met: &[pb::CriterionMet]) -> Result<Vec<(Criterion, bool)>> {
    met.iter().map(|m| Ok((Criterion::from_wire(m.criterion)?, m.met))).collect()
}

pub(crate) fn met_to_wire(met: &[(Criterion, bool)]) -> Vec<pb::CriterionMet> {
    met.iter().map(|(c, m)| pb::CriterionMet { criterion: c.to_wire(), met: *m }).collect()
}

impl From<&Delivered> for pb::Event {
    fn from(d: &Delivered) -> Self {
        let kind = match &d.event {
            StreamEvent::Published(r) => pb::event::Kind::ReleasePublished(r.into()),
            StreamEvent::Yanked(r) => pb::event::Kind::ReleaseYanked(r.into()),
            StreamEvent::CaughtUp { head } => pb::event::Kind::CaughtUp(pb::CaughtUp { head_seq: *head }),
        };
        pb::Event { seq: d.seq, at_ms: d.at_ms, kind: Some(kind) }
    }
}

/// An event from a node's stream; `None` for a kind this node does not know (a newer hub
/// may send more kinds; the cursor still moves past it).
pub fn stream_event(e: pb::Event) -> Result<(u64, Option<StreamEvent>)> {
    let event = match e.kind {
        Some(pb::event::Kind::ReleasePublished(r)) => Some(StreamEvent::Published(r.try_into()?)),
        Some(pb::event::Kind::ReleaseYanked(r)) => Some(StreamEvent::Yanked(r.try_into()?)),
        Some(pb::event::Kind::CaughtUp(c)) => Some(StreamEvent::CaughtUp { head: c.head_seq }),
        None => None,
    };
    Ok((e.seq, event))
}

impl TryFrom<pb::RatingInfo> for Rating {
    type Error = Error;
    fn try_from(r: pb::RatingInfo) -> Result<Self> {
        let score = |v: u32, field: &'static str| {
            u8::try_from(v).map_err(|_| Error::invalid(field, format!("{v} is outside 1..5")))
        };
        Ok(Rating {
            ags: parse(&r.ags)?,
            service_id: parse(&r.service_id)?,
            version: parse_version(&r.version)?,
            stars: score(r.stars, "stars")?,
            criteria: r
                .criteria
                .iter()
                .map(|c| Ok((Criterion::from_wire(c.criterion)?, score(c.score, "criterion score")?)))
                .collect::<Result<_>>()?,
            comment: r.comment,
            at_ms: r.at_ms,
            met: met_from_wire(&r.met)?,
        })
    }
}

impl TryFrom<pb::PreflightReport> for NewPreflight {
    type Error = Error;
    fn try_from(r: pb::PreflightReport) -> Result<Self> {
        Ok(NewPreflight {
            service_id: parse(&r.service_id)?,
            version: parse_version(&r.version)?,
            problems: r.problems,
            changes: r.schema_changes,
        })
    }
}

impl From<&NewPreflight> for pb::PreflightReport {
    fn from(p: &NewPreflight) -> Self {
        pb::PreflightReport {
            service_id: p.service_id.to_string(),
            version: p.version.to_string(),
            problems: p.problems.clone(),
            schema_changes: p.changes.clone(),
        }
    }
}

/// A pre-flight result with the Kommune's name from the register.
impl From<(&PreflightRecord, &str)> for pb::PreflightRecord {
    fn from((p, name): (&PreflightRecord, &str)) -> Self {
        pb::PreflightRecord {
            ags: p.ags.to_string(),
            kommune_name: name.to_string(),
            service_id: p.service_id.to_string(),
            version: p.version.to_string(),
            ready: p.is_ready(),
            problems: p.problems.clone(),
            schema_changes: p.changes.clone(),
            at_ms: p.at_ms,
        }
    }
}

impl TryFrom<pb::RoutingDeclaration> for RoutingDeclaration {
    type Error = Error;
    fn try_from(r: pb::RoutingDeclaration) -> Result<Self> {
        Ok(RoutingDeclaration {
            service_id: parse(&r.service_id)?,
            version: parse_version(&r.version)?,
            destinations: r
                .destinations
                .into_iter()
                .map(|d| Destination { parameter: d.parameter, destination: d.destination })
                .collect(),
        })
    }
}

impl From<&RoutingDeclaration> for pb::RoutingDeclaration {
    fn from(r: &RoutingDeclaration) -> Self {
        pb::RoutingDeclaration {
            service_id: r.service_id.to_string(),
            version: r.version.to_string(),
            destinations: r.destinations.iter().map(destination).collect(),
        }
    }
}

impl From<&RoutingRecord> for pb::RoutingDeclaration {
    fn from(r: &RoutingRecord) -> Self {
        pb::RoutingDeclaration {
            service_id: r.service_id.to_string(),
            version: r.version.to_string(),
            destinations: r.destinations.iter().map(destination).collect(),
        }
    }
}

fn destination(d: &Destination) -> pb::Destination {
    pb::Destination { parameter: d.parameter.clone(), destination: d.destination.clone() }
}
