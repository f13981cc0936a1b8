//! Subscriptions of Kommunen to services or whole Themenfelder.

use super::ids::{Ags, Channel, LandCode, ServiceId};
use super::offer::Offer;
use super::release::UpdatePolicy;
use serde::{Deserialize, Serialize};

/// What a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionTarget {
    /// One service.
    Service(ServiceId),
    /// Every service whose OZG-Leistung is filed under this Themenfeld, including later ones.
    Themenfeld(String),
}

impl SubscriptionTarget {
    /// Stable storage key fragment.
    pub fn key(&self) -> String {
        match self {
            SubscriptionTarget::Service(s) => format!("service:{s}"),
            SubscriptionTarget::Themenfeld(t) => format!("themenfeld:{t}"),
        }
    }
}

impl std::fmt::Display for SubscriptionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// What a Kommune asks for when it subscribes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubscription {
    /// A service or a Themenfeld.
    pub target: SubscriptionTarget,
    /// The channel to follow.
    pub channel: Channel,
    /// How the node reacts to new releases.
    pub policy: UpdatePolicy,
}

/// A Kommune's subscription as the hub stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscribing Kommune.
    pub ags: Ags,
    /// A service or a Themenfeld.
    pub target: SubscriptionTarget,
    /// Only releases on this channel match.
    pub channel: Channel,
    /// How the node reacts to new releases.
    pub policy: UpdatePolicy,
    /// When it was (last) subscribed, ms since the Unix epoch.
    pub since_ms: i64,
}

impl Subscription {
    /// True if a release of `service` (in `themenfeld`) on `channel` concerns this
    /// subscription. `in_reach` says whether the service is one of the Kommune's Land or
    /// offered to it (see [`in_reach`]): a Themenfeld subscription follows only those, a
    /// subscription to the service itself follows it wherever it was built.
    pub fn matches(&self, service: &ServiceId, themenfeld: &str, channel: &Channel, in_reach: bool) -> bool {
        &self.channel == channel
            && match &self.target {
                SubscriptionTarget::Service(s) => s == service,
                SubscriptionTarget::Themenfeld(t) => in_reach && t == themenfeld,
            }
    }
}

/// Whether a service built by `builder` is in reach of Kommune `ags`: its own Land built it,
/// or its Land offers it to it (an active offer in `offers` that names it).
pub fn in_reach(ags: &Ags, builder: &LandCode, offers: &[Offer]) -> bool {
    &ags.land() == builder || offers.iter().any(|o| o.is_active() && o.names(ags))
}
