//! Events as transparency-log leaves (`LogLeaf`, format 1). The hub encodes each event
//! once; the bytes are what the tree commits to, so verifiers hash what they receive and
//! never re-encode.

use crate::convert::WireEnum;
use crate::v1 as pb;
use efa_domain::error::{Error, Result};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::release::Release;
use efa_domain::model::rollout::Transition;
use prost::Message;

/// Free text of a leaf kept beside the log (a rejection reason, a rating comment): the
/// leaf commits to SHA-256(salt ‖ text) only, so erasing this leaves the tree intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BesideText {
    /// The random salt, 16 bytes.
    pub salt: [u8; 16],
    /// The text.
    pub text: String,
}

/// The leaf of `event`. A `ReleasePublished` event needs its `release` (the leaf commits to
/// the signed manifest's digest); `salt` is drawn only when the event carries personal free
/// text, so the one place that knows which texts those are also decides when to salt.
pub fn log_leaf(
    event: &Event,
    release: Option<&Release>,
    salt: impl FnOnce() -> [u8; 16],
) -> Result<(Vec<u8>, Option<BesideText>)> {
    // The one text of the event that may hold personal data, committed to with a fresh salt.
    let personal = match &event.kind {
        EventKind::AdoptionReported(e) => e.reason.as_str(),
        EventKind::Rated(r) => r.comment.as_str(),
        _ => "",
    };
    let beside = (!personal.is_empty()).then(|| BesideText { salt: salt(), text: personal.to_string() });
    let commitment =
        || beside.as_ref().map(|b| pb::TextCommitment { salted_sha256: efa_tlog::commit_text(&b.salt, &b.text) });
    use pb::log_leaf::Kind;
    let kind = match &event.kind {
        EventKind::ServiceRegistered { service_id, land } => {
            Kind::ServiceRegistered(pb::LeafService { service_id: service_id.to_string(), land_code: land.to_string() })
        }
        EventKind::ReleasePublished { service_id, version } => {
            let r = release.filter(|r| &r.service_id == service_id && &r.version == version).ok_or_else(|| {
                Error::NotFound(format!("release {service_id} {version}, whose leaf needs its manifest digest"))
            })?;
            Kind::ReleasePublished(pb::LeafRelease {
                service_id: service_id.to_string(),
                version: version.to_string(),
                land_code: r.land.to_string(),
                channel: r.channel.to_string(),
                manifest_sha256: r.content_digest.0.to_vec(),
            })
        }
        EventKind::ReleaseYanked { service_id, version, reason } => Kind::ReleaseYanked(pb::LeafYank {
            service_id: service_id.to_string(),
            version: version.to_string(),
            reason: reason.clone(),
        }),
        EventKind::Subscribed(s) => Kind::Subscribed(pb::LeafSubscription {
            ags: s.ags.to_string(),
            target: s.target.key(),
            channel: s.channel.to_string(),
            policy: s.policy.to_wire(),
        }),
        EventKind::Unsubscribed { ags, target } => {
            Kind::Unsubscribed(pb::LeafUnsubscribed { ags: ags.to_string(), target: target.clone() })
        }
        EventKind::AdoptionReported(e) => Kind::AdoptionReported(pb::LeafAdoption {
            ags: e.ags.to_string(),
            service_id: e.service_id.to_string(),
            version: e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            state: e.state.to_wire(),
            reason: commitment(),
        }),
        EventKind::Rated(r) => Kind::Rated(pb::LeafRating {
            ags: r.ags.to_string(),
            service_id: r.service_id.to_string(),
            version: r.version.to_string(),
            stars: u32::from(r.stars),
            criteria: super::ledger::criteria_to_wire(&r.criteria),
            met: super::ledger::met_to_wire(&r.met),
            comment: commitment(),
        }),
        EventKind::SigningKeysSet { land, keys } => {
            Kind::SigningKeysSet(pb::LeafSigningKeys { land_code: land.to_string(), keys: keys.clone() })
        }
        EventKind::Offered { service_id, land, withdrawn } => Kind::Offered(pb::LeafOffer {
            service_id: service_id.to_string(),
            land_code: land.to_string(),
            withdrawn: *withdrawn,
        }),
        EventKind::KeySetPublished { land, key_set } => Kind::KeySetPublished(pb::LeafKeySet {
            land_code: land.to_string(),
            key_set: Some(pb::SignedKeySet::from(key_set)),
        }),
        EventKind::RolloutChanged { service_id, version, transition } => rollout(service_id, version, None, transition),
        EventKind::LandRolloutChanged { service_id, version, land, transition } => {
            rollout(service_id, version, Some(land), transition)
        }
    };
    let leaf = pb::LogLeaf { format: 1, seq: event.seq, at_ms: event.at_ms, kind: Some(kind) };
    Ok((leaf.encode_to_vec(), beside))
}

fn rollout(
    service: &efa_domain::model::ids::ServiceId,
    version: &semver::Version,
    land: Option<&efa_domain::model::ids::LandCode>,
    transition: &Transition,
) -> pb::log_leaf::Kind {
    let (transition, reason) = match transition {
        Transition::Started => ("started".to_string(), String::new()),
        Transition::Opened { ring, by_hand } => {
            (format!("opened {ring}{}", if *by_hand { " by hand" } else { "" }), String::new())
        }
        Transition::Paused { reason } => ("paused".to_string(), reason.clone()),
        Transition::Resumed => ("resumed".to_string(), String::new()),
        Transition::Halted { reason } => ("halted".to_string(), reason.clone()),
    };
    pb::log_leaf::Kind::RolloutChanged(pb::LeafRollout {
        service_id: service.to_string(),
        version: version.to_string(),
        land_code: land.map(|l| l.to_string()).unwrap_or_default(),
        transition,
        reason,
    })
}
