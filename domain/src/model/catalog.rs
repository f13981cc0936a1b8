//! The register: Länder, Kreise and Gemeinden (Destatis GV100AD), the OZG catalogue and
//! LeiKa, plus the EfA services Länder offer.

use super::ids::{Ags, Ars, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use crate::params::ParameterSpec;
use serde::{Deserialize, Serialize};

/// A Land from the register (GV100AD record type 10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Land {
    /// Two-digit Land code, e.g. `05`.
    pub code: LandCode,
    /// Official name, e.g. `Nordrhein-Westfalen`.
    pub name: String,
}

/// A Kreis or kreisfreie Stadt from the register (GV100AD record type 40).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kreis {
    /// Five-digit Kreis code, the first five digits of its Gemeinden's AGS.
    pub code: KreisCode,
    /// Official name.
    pub name: String,
}

/// A Gemeinde from the register. Named `Kommune` because that is who runs a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kommune {
    /// Amtlicher Gemeindeschlüssel; the key a node is known by (`efa://kommune/<AGS>`).
    pub ags: Ags,
    /// Amtlicher Regionalschlüssel, the AGS with the Gemeindeverband.
    pub ars: Ars,
    /// Official name of the Gemeinde.
    pub name: String,
    /// GV100AD Textkennzeichen (e.g. 60 Markt, 61 kreisfreie Stadt, 63 Stadt, 64 Gemeinde).
    pub textkennzeichen: String,
    /// Inhabitants as the register file states them (`None`: the file has no such column).
    pub population: Option<u64>,
    /// Area in hectares, as the register file states it.
    pub area_ha: Option<u64>,
    /// Main postcode (PLZ) of the Gemeinde's administration.
    pub postcode: Option<String>,
    /// Set once a newer register no longer lists the Gemeinde (merged, split or dissolved).
    /// Its records stay; its certificates are refused from then on.
    pub dissolved: Option<Dissolution>,
}

impl Kommune {
    /// Still a Gemeinde of the current register.
    pub fn is_active(&self) -> bool {
        self.dissolved.is_none()
    }
}

/// How a Gemeinde left the register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dissolution {
    /// Status date of the first register that no longer lists it, e.g. `2024-12-31`.
    pub register_as_of: String,
    /// The Gemeinde that took it over, where the change list names one.
    pub successor: Option<Ags>,
}

/// What a register import changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterChanges {
    /// Status date of the imported register.
    pub as_of: String,
    /// Gemeinden new in it (or back in it).
    pub added: Vec<Kommune>,
    /// Gemeinden no longer in it, with their successor where known.
    pub dissolved: Vec<(Kommune, Option<Ags>)>,
    /// Gemeinden with a new name: (AGS, old name, new name).
    pub renamed: Vec<(Ags, String, String)>,
    /// Gemeinden whose other fields (ARS, Textkennzeichen, population, area, postcode) changed.
    pub updated: usize,
    /// Gemeinden as they were.
    pub unchanged: usize,
}

/// An OZG-Leistung from the OZG catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OzgLeistung {
    /// Five-digit OZG-ID.
    pub ozg_id: OzgId,
    /// Name of the OZG-Leistung.
    pub name: String,
    /// Lebenslage (life situation) the catalogue files it under.
    pub lebenslage: String,
    /// Themenfeld the catalogue files it under; Kommunen subscribe by it.
    pub themenfeld: String,
}

/// A LeiKa service key and the OZG-Leistung it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeikaEntry {
    /// The 14-digit Leistungsschlüssel.
    pub schluessel: Leistungsschluessel,
    /// LeiKa name of the Leistung.
    pub name: String,
    /// The OZG-Leistung it is linked to; `None` if LeiKa links none, and then any OZG-ID may use it.
    pub ozg_id: Option<OzgId>,
}

/// An EfA service offered by a Land. Themenfeld and Lebenslage come from its OZG entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Stable id, e.g. `wohngeld-nrw`.
    pub id: ServiceId,
    /// The OZG-Leistung it implements.
    pub ozg_id: OzgId,
    /// Its LeiKa key; `None` if the Land gave none.
    pub leistungsschluessel: Option<Leistungsschluessel>,
    /// Title shown to Kommunen.
    pub title: String,
    /// Longer description; may be empty.
    pub description: String,
    /// The Land that registered and owns it; only this Land may publish releases.
    pub land: LandCode,
    /// Themenfeld, copied from the OZG entry.
    pub themenfeld: String,
    /// Lebenslage, copied from the OZG entry.
    pub lebenslage: String,
    /// The parameters a Kommune fills in; empty if the service takes none.
    pub parameters: Vec<ParameterSpec>,
    /// First registration, ms since the Unix epoch; kept when the Land re-registers.
    pub registered_at_ms: i64,
    /// The Land lets every Kommune see who adopted this service.
    #[serde(default)]
    pub adoption_public: bool,
    /// Further LeiKa keys the service covers (ELFE: Elterngeld, Geburtsurkunde, Kindergeld),
    /// each from LeiKa, possibly of other OZG-Leistungen; routing answers for each.
    #[serde(default)]
    pub more_leistungsschluessel: Vec<Leistungsschluessel>,
    /// Set when the building Land deprecates the service: Kommunen keep what they run,
    /// nodes show it, and a successor may be named.
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
}

/// A building Land's notice that a service is on its way out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    /// Why, in the Land's words.
    pub reason: String,
    /// The service Kommunen should move to, if there is one.
    pub successor: Option<ServiceId>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

impl Service {
    /// Its LeiKa keys: the main one, then the further ones.
    pub fn all_leistungsschluessel(&self) -> impl Iterator<Item = &Leistungsschluessel> {
        self.leistungsschluessel.iter().chain(self.more_leistungsschluessel.iter())
    }
}

/// A service with the versions published for it, as the catalog lists it.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    /// The service.
    pub service: Service,
    /// Its published versions, newest first.
    pub versions: Vec<semver::Version>,
    /// Länder that offer it to their Kommunen (active offers).
    pub offered_by: Vec<LandCode>,
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
    /// Further LeiKa keys it covers.
    pub more_leistungsschluessel: Vec<Leistungsschluessel>,
}

/// The release signing keys a Land registered with the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeys {
    /// Public keys in text form (`efa-ed25519-public:…`); empty: none registered.
    pub keys: Vec<String>,
    /// When the Land last changed them (ms since the Unix epoch; 0: never).
    pub updated_at_ms: i64,
}
