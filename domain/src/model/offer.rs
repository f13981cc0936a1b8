//! Nachnutzung: a Land offers a service another Land built to its own Kommunen.
//!
//! The building Land (Umsetzungsland) registers a service and signs its releases. Any other
//! Land may *offer* it to its Kommunen with a statement it signs with its own release key:
//! which service, on which channel, from which version on, with which Land-level parameters
//! (the Land's ePayBL tenant, its portal) and, optionally, for which of its Kommunen only.
//! A withdrawal is a newer signed statement with a reason. Nodes verify the offer against
//! the key they pin for their own Land, so a hub cannot invent or widen an offer.

use super::ids::{parse_version, Ags, Channel, LandCode, ServiceId};
use crate::error::{echo, Error, Result};
use crate::params::ParamValue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current offer format version.
pub const OFFER_FORMAT: u32 = 1;
/// Kommunen one offer may name (NRW has 396 Gemeinden; Bayern, the most, 2,056).
pub const MAX_OFFER_KOMMUNEN: usize = 2_500;
/// Bytes of a signed offer document.
pub const MAX_OFFER_BYTES: usize = 1024 * 1024;
/// Characters of a withdrawal reason.
pub const MAX_WITHDRAWAL_CHARS: usize = 1_000;

/// A Land's signed offer (or withdrawal of an offer) of a service to its Kommunen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Offer format version; must equal [`OFFER_FORMAT`].
    pub format: u32,
    /// The offering Land (nachnutzendes Land); it signs the offer.
    pub land: LandCode,
    /// The service offered, built by another Land.
    pub service_id: ServiceId,
    /// The channel offered.
    pub channel: Channel,
    /// The first version offered; older ones are not.
    pub from_version: String,
    /// Values the Land sets for parameters of the service's schema (Kommunen may set their own).
    #[serde(default)]
    pub land_parameters: BTreeMap<String, ParamValue>,
    /// The Kommunen it is meant for; empty: every Kommune of the Land.
    #[serde(default)]
    pub kommunen: Vec<Ags>,
    /// When the Land issued it, ms since the Unix epoch; an older statement than the stored one is a replay.
    pub issued_at_ms: i64,
    /// Set when the Land withdraws the offer: why, for its Kommunen to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
}

/// Why an offer does not cover a release for a Kommune.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotCovered {
    /// The Land withdrew the offer.
    #[error("Land {land} withdrew its offer of {service}: {reason}")]
    Withdrawn {
        /// The offering Land.
        land: LandCode,
        /// The service.
        service: ServiceId,
        /// The Land's reason.
        reason: String,
    },
    /// The Kommune lies in another Land or is not among the Kommunen named.
    #[error("Land {land} offers {service} to other Kommunen, not to {ags}")]
    NotForKommune {
        /// The offering Land.
        land: LandCode,
        /// The service.
        service: ServiceId,
        /// The Kommune asking.
        ags: Ags,
    },
    /// Another channel, or a version before the first one offered.
    #[error("Land {land} offers {service} on channel {channel} from version {from} on, not {asked}")]
    NotThisRelease {
        /// The offering Land.
        land: LandCode,
        /// The service.
        service: ServiceId,
        /// The channel offered.
        channel: Channel,
        /// The first version offered.
        from: String,
        /// The release asked about, `version (channel)`.
        asked: String,
    },
}

impl Offer {
    /// Parses offer bytes (as signed) and checks everything that needs no register.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_OFFER_BYTES {
            return Err(Error::invalid("offer", format!("is {} bytes, more than {MAX_OFFER_BYTES}", bytes.len())));
        }
        let o: Offer =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid("offer", format!("not a valid offer: {e}")))?;
        if o.format != OFFER_FORMAT {
            return Err(Error::invalid(
                "offer",
                format!("format {} is not supported (expected {OFFER_FORMAT})", o.format),
            ));
        }
        parse_version(&o.from_version)?;
        if o.kommunen.len() > MAX_OFFER_KOMMUNEN {
            return Err(Error::invalid(
                "offer",
                format!("names {} Kommunen, more than {MAX_OFFER_KOMMUNEN}", o.kommunen.len()),
            ));
        }
        if let Some(ags) = o.kommunen.iter().find(|a| a.land() != o.land) {
            return Err(Error::PermissionDenied(format!(
                "Land {} cannot offer a service to Kommune {ags}, which lies in Land {}",
                o.land,
                ags.land()
            )));
        }
        if let Some(reason) = &o.withdrawn {
            if reason.trim().is_empty() {
                return Err(Error::invalid("offer", "a withdrawal needs a reason the Kommunen can read"));
            }
            crate::text::check("withdrawal reason", reason, MAX_WITHDRAWAL_CHARS, crate::text::Lines::Multi)?;
        }
        if o.land_parameters.len() > crate::params::MAX_PARAMETERS {
            return Err(Error::invalid("offer", format!("sets {} Land parameters, too many", o.land_parameters.len())));
        }
        if let Some(name) = o.land_parameters.keys().find(|n| n.len() > 64) {
            return Err(Error::invalid("offer", format!("Land parameter name {} is too long", echo(name))));
        }
        Ok(o)
    }

    /// Canonical bytes: what the Land signs and the hub stores.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("offer serializes")
    }

    /// True unless withdrawn.
    pub fn is_active(&self) -> bool {
        self.withdrawn.is_none()
    }

    /// Whether the offer is meant for Kommune `ags` at all (ignoring release and withdrawal).
    pub fn names(&self, ags: &Ags) -> bool {
        ags.land() == self.land && (self.kommunen.is_empty() || self.kommunen.contains(ags))
    }

    /// Whether this offer lets Kommune `ags` take `version` on `channel`.
    pub fn covers(
        &self,
        ags: &Ags,
        channel: &Channel,
        version: &semver::Version,
    ) -> std::result::Result<(), NotCovered> {
        if let Some(reason) = &self.withdrawn {
            return Err(NotCovered::Withdrawn {
                land: self.land.clone(),
                service: self.service_id.clone(),
                reason: reason.clone(),
            });
        }
        if !self.names(ags) {
            return Err(NotCovered::NotForKommune {
                land: self.land.clone(),
                service: self.service_id.clone(),
                ags: ags.clone(),
            });
        }
        let from = semver::Version::parse(&self.from_version).ok();
        if channel != &self.channel || from.is_some_and(|f| version < &f) {
            return Err(NotCovered::NotThisRelease {
                land: self.land.clone(),
                service: self.service_id.clone(),
                channel: self.channel.clone(),
                from: self.from_version.clone(),
                asked: format!("{version} ({channel})"),
            });
        }
        Ok(())
    }
}

/// An offer as the hub stores and serves it: the exact signed bytes and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOffer {
    /// The offer bytes as the Land signed them.
    pub bytes: Vec<u8>,
    /// The Land's Ed25519 signature over `bytes`.
    pub signature: Vec<u8>,
}

impl SignedOffer {
    /// The parsed offer.
    pub fn offer(&self) -> Result<Offer> {
        Offer::from_bytes(&self.bytes)
    }
}

/// Why a node does not accept an offer the hub served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferTrustError {
    /// The bytes do not parse.
    #[error("the offer is invalid: {0}")]
    Invalid(String),
    /// It is not by the Kommune's own Land, or not for the service asked about.
    #[error("{0}")]
    Mismatch(String),
    /// The node pins no key for its own Land.
    #[error("no trusted signing key for Land {0}, so its offers cannot be checked; add it under [trust]")]
    NoTrustedKey(LandCode),
    /// No pinned key verifies it: the hub or someone else forged it.
    #[error("the offer of Land {0} does not verify against the keys pinned for it; refused (forged or altered)")]
    BadSignature(LandCode),
}

/// What a node checks of an offer served by the hub: it is the Kommune's own Land's offer
/// of `service`, signed by a key the node pins for that Land.
pub fn verify_offer(
    signed: &SignedOffer,
    service: &ServiceId,
    own_land: &LandCode,
    trusted: &[crate::signing::VerifyingKey],
) -> std::result::Result<Offer, OfferTrustError> {
    let offer = signed.offer().map_err(|e| OfferTrustError::Invalid(e.to_string()))?;
    if &offer.land != own_land || &offer.service_id != service {
        return Err(OfferTrustError::Mismatch(format!(
            "the hub served Land {}'s offer of {} when asked for Land {own_land}'s offer of {service}",
            offer.land, offer.service_id
        )));
    }
    if trusted.is_empty() {
        return Err(OfferTrustError::NoTrustedKey(own_land.clone()));
    }
    if !crate::signing::verify_any(trusted, &signed.bytes, &signed.signature) {
        return Err(OfferTrustError::BadSignature(own_land.clone()));
    }
    Ok(offer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    fn offer() -> Offer {
        Offer {
            format: OFFER_FORMAT,
            land: "05".parse().unwrap(),
            service_id: "elfe".parse().unwrap(),
            channel: Channel::stable(),
            from_version: "1.1.0".into(),
            land_parameters: BTreeMap::from([(
                "landesportal_url".to_string(),
                ParamValue::Text("https://portal.nrw.example".into()),
            )]),
            kommunen: vec![],
            issued_at_ms: 10,
            withdrawn: None,
        }
    }

    #[test]
    fn offers_round_trip_and_cover_what_they_say() {
        let o = offer();
        assert_eq!(Offer::from_bytes(&o.to_bytes()).unwrap(), o);
        let dortmund: Ags = "05913000".parse().unwrap();
        let bremen: Ags = "04011000".parse().unwrap();
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(o.covers(&dortmund, &Channel::stable(), &v("1.1.0")).is_ok());
        assert!(o.covers(&dortmund, &Channel::stable(), &v("2.0.0")).is_ok());
        let old = o.covers(&dortmund, &Channel::stable(), &v("1.0.9")).unwrap_err().to_string();
        assert!(old.contains("from version 1.1.0"), "{old}");
        assert!(o.covers(&dortmund, &"beta".parse().unwrap(), &v("1.2.0")).is_err());
        assert!(matches!(o.covers(&bremen, &Channel::stable(), &v("1.2.0")), Err(NotCovered::NotForKommune { .. })));
        let mut only = o.clone();
        only.kommunen = vec!["05113000".parse().unwrap()];
        assert!(only.covers(&dortmund, &Channel::stable(), &v("1.2.0")).is_err());
        let mut gone = o.clone();
        gone.withdrawn = Some("Vertrag endet".into());
        let why = gone.covers(&dortmund, &Channel::stable(), &v("1.2.0")).unwrap_err().to_string();
        assert!(why.contains("withdrew") && why.contains("Vertrag endet"), "{why}");
    }

    #[test]
    fn bad_offers_are_refused() {
        let mut foreign = offer();
        foreign.kommunen = vec!["09162000".parse().unwrap()];
        let err = Offer::from_bytes(&foreign.to_bytes()).unwrap_err();
        assert_eq!(crate::error::Classify::kind(&err), crate::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("lies in Land 09"), "{err}");
        let mut empty_reason = offer();
        empty_reason.withdrawn = Some("  ".into());
        assert!(Offer::from_bytes(&empty_reason.to_bytes()).is_err());
        let mut bad_version = offer();
        bad_version.from_version = "eins".into();
        assert!(Offer::from_bytes(&bad_version.to_bytes()).is_err());
        assert!(Offer::from_bytes(b"{\"format\":1}").is_err());
        let text = String::from_utf8(offer().to_bytes()).unwrap().replace("\"format\": 1", "\"format\": 7");
        assert!(Offer::from_bytes(text.as_bytes()).unwrap_err().to_string().contains("format 7"));
    }

    #[test]
    fn a_node_accepts_only_its_own_lands_signed_offer() {
        let nrw = SigningKey::generate();
        let forger = SigningKey::generate();
        let bytes = offer().to_bytes();
        let (land, service): (LandCode, ServiceId) = ("05".parse().unwrap(), "elfe".parse().unwrap());
        let pinned = [nrw.verifying_key()];
        let good = SignedOffer { signature: nrw.sign(&bytes), bytes: bytes.clone() };
        assert_eq!(verify_offer(&good, &service, &land, &pinned).unwrap(), offer());
        let forged = SignedOffer { signature: forger.sign(&bytes), bytes: bytes.clone() };
        assert_eq!(
            verify_offer(&forged, &service, &land, &pinned).unwrap_err(),
            OfferTrustError::BadSignature(land.clone())
        );
        assert!(matches!(verify_offer(&good, &service, &land, &[]), Err(OfferTrustError::NoTrustedKey(_))));
        let other: ServiceId = "wohngeld".parse().unwrap();
        assert!(matches!(verify_offer(&good, &other, &land, &pinned), Err(OfferTrustError::Mismatch(_))));
        let by: LandCode = "09".parse().unwrap();
        assert!(matches!(verify_offer(&good, &service, &by, &pinned), Err(OfferTrustError::Mismatch(_))));
    }
}
