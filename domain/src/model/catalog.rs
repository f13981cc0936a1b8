//! The register: Länder, Kreise and Gemeinden (Destatis GV100AD), the OZG catalogue and
//! LeiKa, plus the EfA services Länder offer.

use super::ids::{Ags, Ars, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use crate::params::ParameterSpec;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Land {
    pub code: LandCode,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kreis {
    pub code: KreisCode,
    pub name: String,
}

/// A Gemeinde from the register. Named `Kommune` because that is who runs a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kommune {
    pub ags: Ags,
    pub ars: Ars,
    pub name: String,
    /// GV100AD Textkennzeichen (e.g. 60 Markt, 61 kreisfreie Stadt, 63 Stadt, 64 Gemeinde).
    pub textkennzeichen: String,
}

/// An OZG-Leistung from the OZG catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OzgLeistung {
    pub ozg_id: OzgId,
    pub name: String,
    pub lebenslage: String,
    pub themenfeld: String,
}

/// A LeiKa service key and the OZG-Leistung it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeikaEntry {
    pub schluessel: Leistungsschluessel,
    pub name: String,
    pub ozg_id: Option<OzgId>,
}

/// An EfA service offered by a Land. Themenfeld and Lebenslage come from its OZG entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub ozg_id: OzgId,
    pub leistungsschluessel: Option<Leistungsschluessel>,
    pub title: String,
    pub description: String,
    pub land: LandCode,
    pub themenfeld: String,
    pub lebenslage: String,
    pub parameters: Vec<ParameterSpec>,
    pub registered_at_ms: i64,
    /// The Land lets every Kommune see who adopted this service.
    #[serde(default)]
    pub adoption_public: bool,
}

/// A service with the versions published for it, as the catalog lists it.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    /// The service.
    pub service: Service,
    /// Its published versions, newest first.
    pub versions: Vec<semver::Version>,
}

/// What a Land submits to register a service.
#[derive(Clone, Debug)]
pub struct NewService {
    /// Stable id, e.g. `wohngeld-nrw`.
    pub id: ServiceId,
    /// The OZG-Leistung it implements.
    pub ozg_id: OzgId,
    /// Its LeiKa key, if known.
    pub leistungsschluessel: Option<Leistungsschluessel>,
    /// Title shown to Kommunen.
    pub title: String,
    /// Longer description.
    pub description: String,
    /// The parameters a Kommune fills in.
    pub parameters: Vec<ParameterSpec>,
    /// Every Kommune may see who adopted it.
    pub adoption_public: bool,
}
