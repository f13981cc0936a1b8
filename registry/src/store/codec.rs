//! How records are stored: a format-version byte, then the record in postcard.
//!
//! Postcard is compact (an adoption record is ~70 bytes where JSON took ~300, which matters
//! at 6.2M Kommune × service pairs) but cannot skip unknown fields, so every change to a
//! stored type needs a new version of that kind. Each kind names its current [`Record::VERSION`];
//! a value written by an older version is decoded by that kind's chain of previous formats
//! ([`Record::decode_older`], in the spirit of garage's `migrate.rs`), and a whole-store
//! migration ([`super::migrate`]) rewrites old values once, on open.

use crate::error::{Error, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::catalog::{Kommune, Kreis, Land, LeikaEntry, OzgLeistung, Service, SigningKeys};
use efa_domain::model::event::Event;
use efa_domain::model::grant::ProviderGrant;
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::preflight::PreflightRecord;
use efa_domain::model::rating::Rating;
use efa_domain::model::release::Release;
use efa_domain::model::rollout::Rollout;
use efa_domain::model::routing::RoutingRecord;
use efa_domain::model::subscription::Subscription;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A stored record kind.
pub trait Record: Serialize + DeserializeOwned {
    /// Name of the kind, for error messages.
    const KIND: &'static str;
    /// The version written now, stored as the first byte of every value.
    const VERSION: u8;
    /// Decodes a value of an older `version` into today's type. Kinds that changed keep
    /// their previous formats and convert here; `None` means the version is unknown.
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        let _ = (version, bytes);
        None
    }
}

/// A Land's signed snapshot as stored: (snapshot bytes, signature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot(pub Vec<u8>, pub Vec<u8>);

macro_rules! record {
    ($t:ty, $kind:literal, $version:literal) => {
        impl Record for $t {
            const KIND: &'static str = $kind;
            const VERSION: u8 = $version;
        }
    };
}

// Version 1 of every kind is the layout of EfA Hub's store format 2 (commit eedda3c), which
// stored the same postcard bytes without the version byte.
record!(Land, "land", 1);
record!(Kreis, "kreis", 1);
record!(OzgLeistung, "OZG-Leistung", 1);
record!(LeikaEntry, "LeiKa entry", 1);
record!(Subscription, "subscription", 1);
record!(AdoptionRecord, "adoption record", 1);
record!(AdoptionEntry, "adoption history entry", 1);
record!(ServiceTotals, "service totals", 1);
record!(SigningKeys, "signing keys", 1);
record!(StoredSnapshot, "snapshot", 1);
record!(PreflightRecord, "pre-flight result", 1);
record!(RoutingRecord, "routing declaration", 1);
record!(ProviderGrant, "provider grant", 1);
record!(SignedOffer, "offer", 1);
record!(Rollout, "rollout", 1);

/// Formats of earlier versions, kept to read stores that hold them.
mod previous {
    use efa_domain::model::adoption::AdoptionEntry;
    use efa_domain::model::event::{Event, EventKind};
    use efa_domain::model::ids::{Ags, Ars, LandCode, ServiceId};
    use efa_domain::model::rating::{Criterion, Rating};
    use efa_domain::model::subscription::Subscription;
    use serde::Deserialize;

    /// `Rating` version 1: no met/not met per area.
    #[derive(Deserialize)]
    pub struct RatingV1 {
        pub ags: Ags,
        pub service_id: ServiceId,
        pub version: semver::Version,
        pub stars: u8,
        pub criteria: Vec<(Criterion, u8)>,
        pub comment: String,
        pub at_ms: i64,
    }

    impl From<RatingV1> for Rating {
        fn from(r: RatingV1) -> Self {
            Rating {
                ags: r.ags,
                service_id: r.service_id,
                version: r.version,
                stars: r.stars,
                criteria: r.criteria,
                comment: r.comment,
                at_ms: r.at_ms,
                met: Vec::new(),
            }
        }
    }

    /// `Event` versions 1 and 2: `Rated` carried a version-1 rating. The variants must stay
    /// in the order of [`EventKind`]: postcard encodes the variant's index.
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum EventKindV2 {
        ServiceRegistered { service_id: ServiceId, land: LandCode },
        ReleasePublished { service_id: ServiceId, version: semver::Version },
        ReleaseYanked { service_id: ServiceId, version: semver::Version, reason: String },
        Subscribed(Subscription),
        Unsubscribed { ags: Ags, target: String },
        AdoptionReported(AdoptionEntry),
        Rated(RatingV1),
        SigningKeysSet { land: LandCode, keys: Vec<String> },
    }

    /// `Event` versions 1 and 2.
    #[derive(Deserialize)]
    pub struct EventV2 {
        pub seq: u64,
        pub at_ms: i64,
        pub kind: EventKindV2,
    }

    impl From<EventV2> for Event {
        fn from(e: EventV2) -> Self {
            let kind = match e.kind {
                EventKindV2::ServiceRegistered { service_id, land } => {
                    EventKind::ServiceRegistered { service_id, land }
                }
                EventKindV2::ReleasePublished { service_id, version } => {
                    EventKind::ReleasePublished { service_id, version }
                }
                EventKindV2::ReleaseYanked { service_id, version, reason } => {
                    EventKind::ReleaseYanked { service_id, version, reason }
                }
                EventKindV2::Subscribed(s) => EventKind::Subscribed(s),
                EventKindV2::Unsubscribed { ags, target } => EventKind::Unsubscribed { ags, target },
                EventKindV2::AdoptionReported(a) => EventKind::AdoptionReported(a),
                EventKindV2::Rated(r) => EventKind::Rated(r.into()),
                EventKindV2::SigningKeysSet { land, keys } => EventKind::SigningKeysSet { land, keys },
            };
            Event { seq: e.seq, at_ms: e.at_ms, kind }
        }
    }

    /// `Service` version 1: one Leistungsschlüssel only.
    #[derive(Deserialize)]
    pub struct ServiceV1 {
        pub id: ServiceId,
        pub ozg_id: efa_domain::model::ids::OzgId,
        pub leistungsschluessel: Option<efa_domain::model::ids::Leistungsschluessel>,
        pub title: String,
        pub description: String,
        pub land: LandCode,
        pub themenfeld: String,
        pub lebenslage: String,
        pub parameters: Vec<efa_domain::params::ParameterSpec>,
        pub registered_at_ms: i64,
        pub adoption_public: bool,
    }

    impl From<ServiceV1> for efa_domain::model::catalog::Service {
        fn from(s: ServiceV1) -> Self {
            efa_domain::model::catalog::Service {
                id: s.id,
                ozg_id: s.ozg_id,
                leistungsschluessel: s.leistungsschluessel,
                title: s.title,
                description: s.description,
                land: s.land,
                themenfeld: s.themenfeld,
                lebenslage: s.lebenslage,
                parameters: s.parameters,
                registered_at_ms: s.registered_at_ms,
                adoption_public: s.adoption_public,
                more_leistungsschluessel: Vec::new(),
                deprecated: None,
            }
        }
    }

    /// `Service` version 2: no deprecation.
    #[derive(Deserialize)]
    pub struct ServiceV2 {
        pub id: ServiceId,
        pub ozg_id: efa_domain::model::ids::OzgId,
        pub leistungsschluessel: Option<efa_domain::model::ids::Leistungsschluessel>,
        pub title: String,
        pub description: String,
        pub land: LandCode,
        pub themenfeld: String,
        pub lebenslage: String,
        pub parameters: Vec<efa_domain::params::ParameterSpec>,
        pub registered_at_ms: i64,
        pub adoption_public: bool,
        pub more_leistungsschluessel: Vec<efa_domain::model::ids::Leistungsschluessel>,
    }

    impl From<ServiceV2> for efa_domain::model::catalog::Service {
        fn from(s: ServiceV2) -> Self {
            efa_domain::model::catalog::Service {
                id: s.id,
                ozg_id: s.ozg_id,
                leistungsschluessel: s.leistungsschluessel,
                title: s.title,
                description: s.description,
                land: s.land,
                themenfeld: s.themenfeld,
                lebenslage: s.lebenslage,
                parameters: s.parameters,
                registered_at_ms: s.registered_at_ms,
                adoption_public: s.adoption_public,
                more_leistungsschluessel: s.more_leistungsschluessel,
                deprecated: None,
            }
        }
    }

    /// `Yank` version 1 (inside `Release` version 1): no recall.
    #[derive(Deserialize)]
    pub struct YankV1 {
        pub reason: String,
        pub at_ms: i64,
    }

    /// `Release` version 1: a yank could not recall.
    #[derive(Deserialize)]
    pub struct ReleaseV1 {
        pub service_id: ServiceId,
        pub version: semver::Version,
        pub channel: efa_domain::model::ids::Channel,
        pub land: LandCode,
        pub content_digest: efa_domain::bundle::Digest,
        pub total_size: u64,
        pub file_count: u32,
        pub release_notes: String,
        pub published_at_ms: i64,
        pub manifest: Vec<u8>,
        pub signature: Vec<u8>,
        pub yank: Option<YankV1>,
    }

    impl From<ReleaseV1> for efa_domain::model::release::Release {
        fn from(r: ReleaseV1) -> Self {
            efa_domain::model::release::Release {
                service_id: r.service_id,
                version: r.version,
                channel: r.channel,
                land: r.land,
                content_digest: r.content_digest,
                total_size: r.total_size,
                file_count: r.file_count,
                release_notes: r.release_notes,
                published_at_ms: r.published_at_ms,
                manifest: r.manifest,
                signature: r.signature,
                yank: r.yank.map(|y| efa_domain::model::release::Yank {
                    reason: y.reason,
                    at_ms: y.at_ms,
                    recall: false,
                }),
            }
        }
    }

    /// `Kommune` version 1 (store format 2, commit eedda3c): no statistics, no dissolution.
    #[derive(Deserialize)]
    pub struct KommuneV1 {
        pub ags: Ags,
        pub ars: Ars,
        pub name: String,
        pub textkennzeichen: String,
    }
}

impl Record for Kommune {
    const KIND: &'static str = "kommune";
    /// 2 added population, area, postcode and dissolution.
    const VERSION: u8 = 2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        match version {
            1 => Some(postcard::from_bytes::<previous::KommuneV1>(bytes).map(|v1| Kommune {
                ags: v1.ags,
                ars: v1.ars,
                name: v1.name,
                textkennzeichen: v1.textkennzeichen,
                population: None,
                area_ha: None,
                postcode: None,
                dissolved: None,
            })),
            _ => None,
        }
    }
}

impl Record for Event {
    const KIND: &'static str = "event";
    /// 2 added `SigningKeysSet` (version 1 is the same encoding with fewer kinds); 3 added
    /// met/not met to the rating in `Rated`; 4 added `Offered` (version 3 is the same
    /// encoding with fewer kinds, so an older hub refuses an offer event by its version);
    /// 5 added `RolloutChanged` (the same again); 6 `LandRolloutChanged` (and again); 7
    /// `KeySetPublished` (and again).
    const VERSION: u8 = 7;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        match version {
            1 | 2 => Some(postcard::from_bytes::<previous::EventV2>(bytes).map(Into::into)),
            3..=6 => Some(postcard::from_bytes::<Event>(bytes)),
            _ => None,
        }
    }
}

impl Record for Service {
    const KIND: &'static str = "service";
    /// 2 added further Leistungsschlüssel; 3 added deprecation.
    const VERSION: u8 = 3;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        match version {
            1 => Some(postcard::from_bytes::<previous::ServiceV1>(bytes).map(Into::into)),
            2 => Some(postcard::from_bytes::<previous::ServiceV2>(bytes).map(Into::into)),
            _ => None,
        }
    }
}

impl Record for Release {
    const KIND: &'static str = "release";
    /// 2 added recall to the yank.
    const VERSION: u8 = 2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| postcard::from_bytes::<previous::ReleaseV1>(bytes).map(Into::into))
    }
}

impl Record for Rating {
    const KIND: &'static str = "rating";
    /// 2 added met/not met per area.
    const VERSION: u8 = 2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| postcard::from_bytes::<previous::RatingV1>(bytes).map(Into::into))
    }
}

impl Record for efa_domain::model::keyset::SignedKeySet {
    const KIND: &'static str = "key set";
    const VERSION: u8 = 1;
    fn decode_older(_: u8, _: &[u8]) -> Option<Result<Self, postcard::Error>> {
        None
    }
}

impl Record for super::log::Beside {
    const KIND: &'static str = "text beside the log";
    const VERSION: u8 = 1;
    fn decode_older(_: u8, _: &[u8]) -> Option<Result<Self, postcard::Error>> {
        None
    }
}

/// Encodes a record with its version byte.
pub fn encode<T: Record>(v: &T) -> Vec<u8> {
    let mut out = vec![T::VERSION];
    // Serializing plain domain types into a Vec cannot fail.
    out.extend(postcard::to_stdvec(v).expect("domain types serialize"));
    out
}

/// Decodes a record written by this or an older version.
pub fn decode<T: Record>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| Error::Corrupt { tree, reason };
    let (&version, body) = bytes.split_first().ok_or_else(|| corrupt(format!("empty {} value", T::KIND)))?;
    if version == T::VERSION {
        return postcard::from_bytes(body).map_err(|e| corrupt(format!("{} v{version}: {e}", T::KIND)));
    }
    if version > T::VERSION {
        return Err(corrupt(format!(
            "{} written in version {version}, newer than this EfA Hub reads ({}); upgrade EfA Hub",
            T::KIND,
            T::VERSION
        )));
    }
    match T::decode_older(version, body) {
        Some(r) => r.map_err(|e| corrupt(format!("{} v{version}: {e}", T::KIND))),
        None => Err(corrupt(format!("{} version {version} is not known to this EfA Hub", T::KIND))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_version_and_newer_ones_are_refused() {
        let totals = ServiceTotals { records: 3, running: 2, rejected: 1, ratings: 4, stars_sum: 17 };
        let bytes = encode(&totals);
        assert_eq!(bytes[0], 1);
        assert_eq!(decode::<ServiceTotals>("totals", &bytes).unwrap(), totals);
        let mut newer = bytes.clone();
        newer[0] = 9;
        let err = decode::<ServiceTotals>("totals", &newer).unwrap_err().to_string();
        assert!(err.contains("version 9") && err.contains("upgrade"), "{err}");
        assert!(decode::<ServiceTotals>("totals", &[]).is_err());
    }

    #[test]
    fn a_version_1_service_reads_with_no_further_keys() {
        // Field for field what version 1 wrote.
        #[derive(serde::Serialize)]
        struct V1 {
            id: &'static str,
            ozg_id: &'static str,
            leistungsschluessel: Option<&'static str>,
            title: &'static str,
            description: &'static str,
            land: &'static str,
            themenfeld: &'static str,
            lebenslage: &'static str,
            parameters: Vec<()>,
            registered_at_ms: i64,
            adoption_public: bool,
        }
        let v1 = V1 {
            id: "wohngeld-nrw",
            ozg_id: "10092",
            leistungsschluessel: Some("99107023000000"),
            title: "Wohngeld",
            description: "",
            land: "05",
            themenfeld: "Arbeit & Ruhestand",
            lebenslage: "x",
            parameters: vec![],
            registered_at_ms: 7,
            adoption_public: true,
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let s: Service = decode("services", &bytes).unwrap();
        assert_eq!((s.id.as_str(), s.registered_at_ms, s.adoption_public), ("wohngeld-nrw", 7, true));
        assert!(s.more_leistungsschluessel.is_empty());
        assert_eq!(decode::<Service>("services", &encode(&s)).unwrap(), s);
    }

    #[test]
    fn version_3_to_6_events_read_and_new_events_are_version_7() {
        use efa_domain::model::event::EventKind;
        let e = Event {
            seq: 3,
            at_ms: 9,
            kind: EventKind::SigningKeysSet { land: "05".parse().unwrap(), keys: vec!["k".into()] },
        };
        let mut older = encode(&e);
        assert_eq!(older[0], 7);
        for version in [3, 4, 5, 6] {
            older[0] = version;
            assert_eq!(decode::<Event>("events", &older).unwrap(), e);
        }
        let moved = Event {
            seq: 4,
            at_ms: 9,
            kind: EventKind::RolloutChanged {
                service_id: "elfe".parse().unwrap(),
                version: "1.1.0".parse().unwrap(),
                transition: efa_domain::model::rollout::Transition::Opened { ring: 1, by_hand: false },
            },
        };
        assert_eq!(decode::<Event>("events", &encode(&moved)).unwrap(), moved);
    }

    #[test]
    fn a_version_2_service_and_a_version_1_release_read_as_before() {
        // The field each version added comes last, so the older encoding is the newer one
        // without it (a `None` or a `false` is one byte).
        let service = Service {
            id: "wohngeld-nrw".parse().unwrap(),
            ozg_id: "10092".parse().unwrap(),
            leistungsschluessel: None,
            title: "Wohngeld".into(),
            description: String::new(),
            land: "05".parse().unwrap(),
            themenfeld: "Arbeit & Ruhestand".into(),
            lebenslage: "x".into(),
            parameters: vec![],
            registered_at_ms: 7,
            adoption_public: false,
            more_leistungsschluessel: vec!["99107023000000".parse().unwrap()],
            deprecated: None,
        };
        let mut v2 = encode(&service);
        assert_eq!((v2[0], v2.pop()), (3, Some(0)));
        v2[0] = 2;
        assert_eq!(decode::<Service>("services", &v2).unwrap(), service);

        let release = Release {
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.0.0".parse().unwrap(),
            channel: Default::default(),
            land: "05".parse().unwrap(),
            content_digest: efa_domain::bundle::Digest::of(b"x"),
            total_size: 1,
            file_count: 1,
            release_notes: String::new(),
            published_at_ms: 2,
            manifest: vec![1, 2],
            signature: vec![3],
            yank: Some(efa_domain::model::release::Yank { reason: "Fehler".into(), at_ms: 5, recall: false }),
        };
        let mut v1 = encode(&release);
        assert_eq!((v1[0], v1.pop()), (2, Some(0)));
        v1[0] = 1;
        assert_eq!(decode::<Release>("releases", &v1).unwrap(), release);
    }
}
