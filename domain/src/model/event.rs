//! The event log: every mutation, in order, under a strictly increasing sequence number.

use super::adoption::AdoptionEntry;
use super::ids::{Ags, LandCode, ServiceId};
use super::rating::Rating;
use super::release::ReleaseSummary;
use super::subscription::Subscription;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at_ms: i64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ServiceRegistered { service_id: ServiceId, land: LandCode },
    ReleasePublished { service_id: ServiceId, version: semver::Version },
    ReleaseYanked { service_id: ServiceId, version: semver::Version, reason: String },
    Subscribed(Subscription),
    Unsubscribed { ags: Ags, target: String },
    AdoptionReported(AdoptionEntry),
    Rated(Rating),
}

impl EventKind {
    /// The service a release event concerns, if it is one nodes must hear about.
    pub fn release_service(&self) -> Option<&ServiceId> {
        match self {
            EventKind::ReleasePublished { service_id, .. } | EventKind::ReleaseYanked { service_id, .. } => {
                Some(service_id)
            }
            _ => None,
        }
    }
}

/// What a node's event stream carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A release of a subscribed service was published.
    Published(ReleaseSummary),
    /// A release of a subscribed service was yanked.
    Yanked(ReleaseSummary),
    /// The stream has delivered everything up to `head`; live events follow.
    CaughtUp {
        /// The hub's newest seq.
        head: u64,
    },
}

/// An event as delivered on a node's stream, with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Seq in the hub's event log (the node's cursor moves to it).
    pub seq: u64,
    /// When the hub committed it.
    pub at_ms: i64,
    /// What happened.
    pub event: StreamEvent,
}
