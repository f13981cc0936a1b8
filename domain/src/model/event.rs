//! The event log: every mutation, in order, under a strictly increasing sequence number.

use super::adoption::AdoptionEntry;
use super::ids::{Ags, LandCode, ServiceId};
use super::rating::Rating;
use super::release::ReleaseSummary;
use super::subscription::Subscription;
use serde::{Deserialize, Serialize};

/// One entry of the event log, written in the same transaction as the mutation it records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: starts at 1, strictly increasing, never reused.
    pub seq: u64,
    /// Timestamp of the record it concerns (e.g. publication, subscription), ms since the Unix
    /// epoch; a re-registered service keeps its first registration time.
    pub at_ms: i64,
    /// What changed.
    pub kind: EventKind,
}

/// The mutations the log records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A Land registered a service or re-registered it with new details.
    ServiceRegistered {
        /// The service.
        service_id: ServiceId,
        /// The Land that owns it.
        land: LandCode,
    },
    /// A release was published and is now immutable.
    ReleasePublished {
        /// The service released.
        service_id: ServiceId,
        /// The new version.
        version: semver::Version,
    },
    /// A release was yanked: withdrawn from new deployments.
    ReleaseYanked {
        /// The service released.
        service_id: ServiceId,
        /// The yanked version.
        version: semver::Version,
        /// Why, as the Land gave it.
        reason: String,
    },
    /// A Kommune subscribed (or changed channel or policy of an existing subscription).
    Subscribed(Subscription),
    /// A Kommune ended a subscription.
    Unsubscribed {
        /// The Kommune.
        ags: Ags,
        /// The target's storage key, as
        /// [`SubscriptionTarget::key`](super::subscription::SubscriptionTarget::key) gives it.
        target: String,
    },
    /// A node reported what it runs; appended to the adoption ledger.
    AdoptionReported(AdoptionEntry),
    /// A Kommune rated a service version (replacing its earlier rating of that version).
    Rated(Rating),
    /// A Land replaced the release signing keys it registers with the hub.
    SigningKeysSet {
        /// The Land.
        land: LandCode,
        /// Its keys now, in text form.
        keys: Vec<String>,
    },
    /// A Land offered a service another Land built to its Kommunen, or withdrew the offer.
    Offered {
        /// The service.
        service_id: ServiceId,
        /// The offering Land.
        land: LandCode,
        /// The Land withdrew the offer.
        withdrawn: bool,
    },
    /// A release's rollout started or moved: a ring opened, it paused, resumed or halted.
    RolloutChanged {
        /// The service.
        service_id: ServiceId,
        /// The release.
        version: semver::Version,
        /// What happened.
        transition: super::rollout::Transition,
    },
    /// An offering Land's own rollout of a release, for its Kommunen, started or moved.
    LandRolloutChanged {
        /// The service.
        service_id: ServiceId,
        /// The release.
        version: semver::Version,
        /// The offering Land whose plan it is.
        land: LandCode,
        /// What happened.
        transition: super::rollout::Transition,
    },
    /// A Land published a signed set of its release keys (a rotation or revocation).
    KeySetPublished {
        /// The Land.
        land: LandCode,
        /// The set, as signed.
        key_set: super::keyset::SignedKeySet,
    },
}

impl EventKind {
    /// The event of a rollout's move: the building Land's (`land` `None`) or an offering
    /// Land's own.
    pub fn rollout_moved(
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        transition: super::rollout::Transition,
    ) -> EventKind {
        match land {
            None => EventKind::RolloutChanged { service_id: service.clone(), version: version.clone(), transition },
            Some(l) => EventKind::LandRolloutChanged {
                service_id: service.clone(),
                version: version.clone(),
                land: l.clone(),
                transition,
            },
        }
    }

    /// Whose plan a rollout event moved: an offering Land's, or `None` for the building
    /// Land's (and for any other event).
    pub fn rollout_land(&self) -> Option<&LandCode> {
        match self {
            EventKind::LandRolloutChanged { land, .. } => Some(land),
            _ => None,
        }
    }

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
