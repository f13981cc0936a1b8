//! Services, parameters, releases, Kommunen.

use super::{parse, parse_opt, WireEnum};
use crate::v1 as pb;
use efa_domain::error::{Error, Result};
use efa_domain::model::catalog::{CatalogEntry, Kommune, NewService, Service};
use efa_domain::model::ids::{parse_version, LandCode};
use efa_domain::model::offer::{Offer, SignedOffer};
use efa_domain::model::release::{ReleaseSummary, SignedRelease, Yank};
use efa_domain::model::report::KommuneReport;
use efa_domain::params::{ParameterKind, ParameterSpec};

impl TryFrom<pb::ParameterSpec> for ParameterSpec {
    type Error = Error;
    fn try_from(p: pb::ParameterSpec) -> Result<Self> {
        Ok(ParameterSpec {
            kind: ParameterKind::from_wire(p.kind)?,
            name: p.name,
            required: p.required,
            description: p.description,
            max_length: p.max_length,
        })
    }
}

impl From<&ParameterSpec> for pb::ParameterSpec {
    fn from(p: &ParameterSpec) -> Self {
        pb::ParameterSpec {
            name: p.name.clone(),
            kind: p.kind.to_wire(),
            required: p.required,
            description: p.description.clone(),
            max_length: p.max_length,
        }
    }
}

fn parameters(specs: Vec<pb::ParameterSpec>) -> Result<Vec<ParameterSpec>> {
    specs.into_iter().map(ParameterSpec::try_from).collect()
}

impl TryFrom<pb::RegisterServiceRequest> for NewService {
    type Error = Error;
    fn try_from(r: pb::RegisterServiceRequest) -> Result<Self> {
        Ok(NewService {
            id: parse(&r.id)?,
            ozg_id: parse(&r.ozg_id)?,
            leistungsschluessel: parse_opt(&r.leistungsschluessel)?,
            more_leistungsschluessel: r.more_leistungsschluessel.iter().map(|k| parse(k)).collect::<Result<_>>()?,
            title: r.title,
            description: r.description,
            parameters: parameters(r.parameters)?,
            adoption_public: r.adoption_public,
        })
    }
}

impl From<&NewService> for pb::RegisterServiceRequest {
    fn from(s: &NewService) -> Self {
        pb::RegisterServiceRequest {
            id: s.id.to_string(),
            ozg_id: s.ozg_id.to_string(),
            leistungsschluessel: s.leistungsschluessel.as_ref().map(|l| l.to_string()).unwrap_or_default(),
            title: s.title.clone(),
            description: s.description.clone(),
            parameters: s.parameters.iter().map(Into::into).collect(),
            adoption_public: s.adoption_public,
            more_leistungsschluessel: s.more_leistungsschluessel.iter().map(|k| k.to_string()).collect(),
        }
    }
}

impl From<&CatalogEntry> for pb::ServiceInfo {
    fn from(e: &CatalogEntry) -> Self {
        let s = &e.service;
        pb::ServiceInfo {
            id: s.id.to_string(),
            ozg_id: s.ozg_id.to_string(),
            leistungsschluessel: s.leistungsschluessel.as_ref().map(|l| l.to_string()).unwrap_or_default(),
            title: s.title.clone(),
            description: s.description.clone(),
            land_code: s.land.to_string(),
            themenfeld: s.themenfeld.clone(),
            lebenslage: s.lebenslage.clone(),
            parameters: s.parameters.iter().map(Into::into).collect(),
            registered_at_ms: s.registered_at_ms,
            versions: e.versions.iter().map(|v| v.to_string()).collect(),
            adoption_public: s.adoption_public,
            offered_by: e.offered_by.iter().map(|l| l.to_string()).collect(),
            more_leistungsschluessel: s.more_leistungsschluessel.iter().map(|k| k.to_string()).collect(),
            deprecated: s.deprecated.as_ref().map(|d| pb::Deprecation {
                reason: d.reason.clone(),
                successor_id: d.successor.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                at_ms: d.at_ms,
            }),
        }
    }
}

impl TryFrom<pb::ServiceInfo> for CatalogEntry {
    type Error = Error;
    fn try_from(s: pb::ServiceInfo) -> Result<Self> {
        Ok(CatalogEntry {
            versions: s.versions.iter().map(|v| parse_version(v)).collect::<Result<_>>()?,
            offered_by: s.offered_by.iter().map(|l| parse(l)).collect::<Result<_>>()?,
            service: Service {
                id: parse(&s.id)?,
                ozg_id: parse(&s.ozg_id)?,
                leistungsschluessel: parse_opt(&s.leistungsschluessel)?,
                title: s.title,
                description: s.description,
                land: parse(&s.land_code)?,
                themenfeld: s.themenfeld,
                lebenslage: s.lebenslage,
                parameters: parameters(s.parameters)?,
                registered_at_ms: s.registered_at_ms,
                adoption_public: s.adoption_public,
                more_leistungsschluessel: s.more_leistungsschluessel.iter().map(|k| parse(k)).collect::<Result<_>>()?,
                deprecated: s
                    .deprecated
                    .map(|d| {
                        Ok::<_, Error>(efa_domain::model::catalog::Deprecation {
                            reason: d.reason,
                            successor: parse_opt(&d.successor_id)?,
                            at_ms: d.at_ms,
                        })
                    })
                    .transpose()?,
            },
        })
    }
}

impl From<&ReleaseSummary> for pb::ReleaseInfo {
    fn from(r: &ReleaseSummary) -> Self {
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
            recalled: r.yank.as_ref().is_some_and(|y| y.recall),
            land_code: r.land.to_string(),
            rollout: r.rollout.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::ReleaseInfo> for ReleaseSummary {
    type Error = Error;
    fn try_from(r: pb::ReleaseInfo) -> Result<Self> {
        Ok(ReleaseSummary {
            service_id: parse(&r.service_id)?,
            version: parse_version(&r.version)?,
            channel: parse(&r.channel)?,
            land: parse(&r.land_code)?,
            content_digest: parse(&r.content_digest)?,
            total_size: r.total_size,
            file_count: r.file_count,
            release_notes: r.release_notes,
            published_at_ms: r.published_at_ms,
            // The wire carries no yank time; the node only needs the reason.
            yank: r.yanked.then_some(Yank { reason: r.yank_reason, at_ms: 0, recall: r.recalled }),
            rollout: r.rollout.map(|p| efa_domain::model::rollout::Position {
                ring: p.ring as usize,
                ring_name: p.ring_name,
                admitted: p.admitted,
                note: p.note,
            }),
        })
    }
}

impl From<&efa_domain::model::release::Release> for pb::ReleaseDetail {
    fn from(r: &efa_domain::model::release::Release) -> Self {
        pb::ReleaseDetail {
            info: Some((&r.summary()).into()),
            manifest: r.manifest.clone(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<pb::ReleaseDetail> for SignedRelease {
    type Error = Error;
    fn try_from(d: pb::ReleaseDetail) -> Result<Self> {
        let info = d.info.ok_or_else(|| Error::invalid("release", "the answer carries no release info"))?;
        Ok(SignedRelease { summary: info.try_into()?, manifest: d.manifest, signature: d.signature })
    }
}

/// A Gemeinde with the names of its Land and Kreis.
pub fn kommune(k: &Kommune, land_name: &str, kreis_name: &str) -> pb::Kommune {
    pb::Kommune {
        ags: k.ags.to_string(),
        ars: k.ars.to_string(),
        name: k.name.clone(),
        land_code: k.ags.land().to_string(),
        land_name: land_name.to_string(),
        kreis_code: k.ags.kreis().to_string(),
        kreis_name: kreis_name.to_string(),
        population: k.population.unwrap_or(0),
        postcode: k.postcode.clone().unwrap_or_default(),
    }
}

impl From<&KommuneReport> for pb::Kommune {
    fn from(r: &KommuneReport) -> Self {
        kommune(&r.kommune, &r.land_name, &r.kreis_name)
    }
}

/// A provider's grant on the wire.
pub fn grant(provider: String, g: &efa_domain::model::grant::ProviderGrant) -> pb::ProviderGrant {
    pb::ProviderGrant {
        provider,
        kommunen: g.kommunen.iter().map(|a| a.to_string()).collect(),
        updated_at_ms: g.updated_at_ms,
    }
}

impl From<&SignedOffer> for pb::SignedOffer {
    fn from(o: &SignedOffer) -> Self {
        pb::SignedOffer { offer: o.bytes.clone(), signature: o.signature.clone() }
    }
}

impl From<pb::SignedOffer> for SignedOffer {
    fn from(o: pb::SignedOffer) -> Self {
        SignedOffer { bytes: o.offer, signature: o.signature }
    }
}

/// An offer for listing, with the building Land of its service and the signed form.
pub fn offer_info(offer: &Offer, building_land: &LandCode, signed: &SignedOffer) -> pb::OfferInfo {
    pb::OfferInfo {
        service_id: offer.service_id.to_string(),
        land_code: offer.land.to_string(),
        channel: offer.channel.to_string(),
        from_version: offer.from_version.clone(),
        land_parameters: offer.land_parameters.iter().map(|(k, v)| (k.clone(), v.render())).collect(),
        kommunen: offer.kommunen.iter().map(|a| a.to_string()).collect(),
        issued_at_ms: offer.issued_at_ms,
        withdrawn: offer.withdrawn.is_some(),
        withdrawn_reason: offer.withdrawn.clone().unwrap_or_default(),
        building_land_code: building_land.to_string(),
        signed: Some(signed.into()),
    }
}

impl From<&efa_domain::model::keyset::SignedKeySet> for pb::SignedKeySet {
    fn from(s: &efa_domain::model::keyset::SignedKeySet) -> Self {
        pb::SignedKeySet {
            body: s.body.clone(),
            signatures: s
                .signatures
                .iter()
                .map(|x| pb::KeySetSignature { key: x.key.clone(), signature: x.signature.clone() })
                .collect(),
        }
    }
}

impl From<pb::SignedKeySet> for efa_domain::model::keyset::SignedKeySet {
    /// Sizes are checked where the set is parsed ([`SignedKeySet::peek`](efa_domain::model::keyset::SignedKeySet::peek)).
    fn from(s: pb::SignedKeySet) -> Self {
        efa_domain::model::keyset::SignedKeySet {
            body: s.body,
            signatures: s
                .signatures
                .into_iter()
                .map(|x| efa_domain::model::keyset::KeySetSignature { key: x.key, signature: x.signature })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_parameter_kind_is_refused_not_defaulted() {
        let spec = pb::ParameterSpec { name: "fee_cents".into(), kind: 0, ..Default::default() };
        let err = ParameterSpec::try_from(spec).unwrap_err().to_string();
        assert!(err.contains("parameter kind") && err.contains("must be set"), "{err}");
    }
}
