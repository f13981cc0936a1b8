//! Subscriptions of Kommunen to services or whole Themenfelder.

use super::ids::{Ags, Channel, ServiceId};
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
    /// True if a release of `service` (in `themenfeld`) on `channel` concerns this subscription.
    pub fn matches(&self, service: &ServiceId, themenfeld: &str, channel: &Channel) -> bool {
        &self.channel == channel
            && match &self.target {
                SubscriptionTarget::Service(s) => s == service,
                SubscriptionTarget::Themenfeld(t) => t == themenfeld,
            }
    }
}
