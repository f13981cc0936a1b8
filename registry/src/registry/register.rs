//! The register of Länder, Kreise and Gemeinden (Destatis GV100AD) and the OZG/LeiKa
//! catalogues: seeding, updates from a newer register file, lookups, and whether an
//! identity names a Land or Gemeinde of the register.
//!
//! Gemeinden merge, split and are renamed every year. A newer register never deletes a
//! Gemeinde: one it no longer lists is marked dissolved (with its successor where the
//! change list names one), keeps its adoption records and history, and its certificates
//! are refused from then on with a message naming the successor.

use super::Registry;
use crate::error::{Error, Result};
use crate::import::{self, Gv100ad};
use crate::store::ImportCounts;
use efa_domain::authz::Identity;
use efa_domain::model::catalog::{Dissolution, Kommune, Kreis, Land, RegisterChanges};
use efa_domain::model::ids::{Ags, KreisCode, LandCode};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Meta key of the status date of the register in the store.
const AS_OF: &str = "register_as_of";

/// The register held in memory: it changes only on import, and reports over 10,773
/// Gemeinden would otherwise decode one stored Kommune per row.
#[derive(Default)]
pub(super) struct RegisterCache {
    /// Active Gemeinden per Land code and per Kreis code.
    pub(super) per_land: BTreeMap<String, u32>,
    pub(super) per_kreis: BTreeMap<String, u32>,
    /// Inhabitants of the active Gemeinden per Land code and per Kreis code.
    pub(super) population_per_land: BTreeMap<String, u64>,
    pub(super) population_per_kreis: BTreeMap<String, u64>,
    /// Every Gemeinde ever in the register, dissolved ones included.
    pub(super) kommunen: HashMap<Ags, Kommune>,
    pub(super) laender: Vec<Land>,
    pub(super) kreise: Vec<Kreis>,
    /// Status date of the register, e.g. `2023-11-30`.
    pub(super) as_of: String,
}

impl Registry {
    /// Imports the GV100AD register, the OZG catalogue and LeiKa shipped with the crate.
    /// Idempotent: running it again changes nothing.
    pub fn seed_bundled(&self) -> Result<ImportCounts> {
        self.update_register(import::bundled_gv100ad()?, &BTreeMap::new())?;
        self.import_catalogue()
    }

    /// Imports the OZG catalogue and LeiKa shipped with the crate (idempotent).
    pub fn import_catalogue(&self) -> Result<ImportCounts> {
        let ozg = import::bundled_ozg()?;
        let leika = import::bundled_leika()?;
        self.commits.write(move |s| s.import_catalogue(&ozg, &leika))?;
        let counts = self.store.counts()?;
        tracing::info!(?counts, "register and catalogue imported");
        Ok(counts)
    }

    /// Imports the shipped register if the store has none, or if its records come from an
    /// EfA Hub that did not keep population and postcodes (they are added from the same
    /// register status).
    pub fn seed_if_empty(&self) -> Result<ImportCounts> {
        let counts = self.store.counts()?;
        if counts.kommunen == 0 {
            return self.seed_bundled();
        }
        if counts.ozg_leistungen == 0 {
            return self.import_catalogue();
        }
        let bundled = import::bundled_gv100ad()?;
        let stored_as_of = self.store.meta(AS_OF)?;
        let lacks_statistics = self.register()?.kommunen.values().all(|k| k.population.is_none());
        if lacks_statistics && stored_as_of.as_deref().is_none_or(|d| d == bundled.as_of) {
            tracing::info!(register = %bundled.as_of, "adding population and postcodes to the register");
            self.update_register(bundled, &BTreeMap::new())?;
        }
        Ok(counts)
    }

    /// Imports a register file (e.g. a newer GV100AD) and returns what changed.
    /// `successors` maps the AGS of a Gemeinde that leaves the register to the one that
    /// takes it over (from Destatis' list of changes); each successor must be in the file.
    pub fn update_register(&self, gv: Gv100ad, successors: &BTreeMap<Ags, Ags>) -> Result<RegisterChanges> {
        let old = self.register()?;
        let new: HashMap<&Ags, &Kommune> = gv.kommunen.iter().map(|k| (&k.ags, k)).collect();
        for (from, to) in successors {
            if !new.contains_key(to) {
                return Err(Error::invalid(
                    "successor",
                    format!("{to} (successor of {from}) is not in the register of {}", gv.as_of),
                ));
            }
        }
        let mut changes = RegisterChanges { as_of: gv.as_of.clone(), ..Default::default() };
        for k in &gv.kommunen {
            match old.kommunen.get(&k.ags) {
                Some(was) if was.is_active() => {
                    if was.name != k.name {
                        changes.renamed.push((k.ags.clone(), was.name.clone(), k.name.clone()));
                    } else if was != k {
                        changes.updated += 1;
                    } else {
                        changes.unchanged += 1;
                    }
                }
                _ => changes.added.push(k.clone()),
            }
        }
        let mut records = gv.kommunen.clone();
        let mut gone: Vec<&Kommune> =
            old.kommunen.values().filter(|k| k.is_active() && !new.contains_key(&k.ags)).collect();
        gone.sort_by(|a, b| a.ags.cmp(&b.ags));
        for k in gone {
            let successor = successors.get(&k.ags).cloned();
            let mut record = k.clone();
            record.dissolved = Some(Dissolution { register_as_of: gv.as_of.clone(), successor: successor.clone() });
            changes.dissolved.push((k.clone(), successor));
            records.push(record);
        }
        // Kreise and Länder are updated, never removed: records may still name them.
        let (laender, kreise, as_of) = (gv.laender, gv.kreise, gv.as_of);
        self.commits.write(move |s| {
            s.import_register(&laender, &kreise, &records)?;
            s.put_meta(AS_OF, &as_of)
        })?;
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.register()?; // warm now, not on the first report
        tracing::info!(
            register = %changes.as_of,
            added = changes.added.len(),
            dissolved = changes.dissolved.len(),
            renamed = changes.renamed.len(),
            updated = changes.updated,
            "register imported"
        );
        Ok(changes)
    }

    /// How many Länder, Kreise, Gemeinden, OZG-Leistungen and LeiKa keys the store holds.
    pub fn counts(&self) -> Result<ImportCounts> {
        self.store.counts()
    }

    /// Status date of the register, e.g. `2023-11-30`.
    pub fn register_as_of(&self) -> Result<String> {
        Ok(self.register()?.as_of.clone())
    }

    /// Whether `who` names a Land or an active Gemeinde of the register. Checked once per
    /// call at authentication: a certificate for an AGS that is not (or no longer) in the
    /// register reads nothing.
    pub fn check_identity(&self, who: &Identity) -> Result<()> {
        let register = self.register()?;
        let refuse = |msg: String| Err(efa_domain::Error::PermissionDenied(msg).into());
        match who {
            // Checked per Kommune it acts for, against its grant.
            Identity::Operator(_) | Identity::Provider(_) => Ok(()),
            Identity::Kreis(code) => {
                if register.kreise.iter().any(|k| &k.code == code) {
                    Ok(())
                } else {
                    refuse(format!("the certificate names Kreis {code}, which is not a Kreis of the register"))
                }
            }
            Identity::Verband(code) => {
                let members =
                    register.kommunen.values().any(|k| k.is_active() && k.ars.as_str().starts_with(code.as_str()));
                if members {
                    Ok(())
                } else {
                    refuse(format!(
                        "the certificate names Gemeindeverband {code}, which has no Gemeinde in the register (status {})",
                        register.as_of
                    ))
                }
            }
            Identity::Land(code) => {
                if code.is_bund() || register.laender.iter().any(|l| &l.code == code) {
                    Ok(())
                } else {
                    refuse(format!("the certificate names Land {code}, which is not a Land of the register"))
                }
            }
            Identity::Kommune(ags) => match register.kommunen.get(ags) {
                Some(k) if k.is_active() => Ok(()),
                Some(k) => {
                    let d = k.dissolved.as_ref().map(|d| (d.register_as_of.as_str(), d.successor.as_ref()));
                    let (since, successor) = d.unwrap_or(("", None));
                    let successor = successor.map(|s| {
                        let name = register.kommunen.get(s).map(|k| k.name.as_str()).unwrap_or("");
                        format!("; its successor is {name} (AGS {s}): ask the federation CA for a certificate of the successor")
                    });
                    refuse(format!(
                        "{} (AGS {ags}) is no longer a Gemeinde of the register (status {since}){}",
                        k.name,
                        successor.unwrap_or_else(|| "; its certificates are refused".into())
                    ))
                }
                None => refuse(format!(
                    "the certificate names AGS {ags}, which is not a Gemeinde of the register (status {})",
                    register.as_of
                )),
            },
        }
    }

    /// A Gemeinde of the register (dissolved ones included).
    pub fn kommune(&self, ags: &Ags) -> Result<Kommune> {
        let register = self.register()?;
        register.kommunen.get(ags).cloned().ok_or_else(|| {
            Error::not_found(format!("Kommune with AGS {ags} (not in the register of {})", register.as_of))
        })
    }

    /// The name of a Gemeinde, or empty if it is not in the register.
    pub fn kommune_name(&self, ags: &Ags) -> Result<String> {
        Ok(self.register()?.kommunen.get(ags).map(|k| k.name.clone()).unwrap_or_default())
    }

    /// A Land of the register, or the Bund (code `00`, see [`LandCode::bund`]), which
    /// publishes like a Land but is not in the Gemeindeverzeichnis.
    pub fn land(&self, code: &LandCode) -> Result<Land> {
        if code.is_bund() {
            return Ok(Land { code: code.clone(), name: "Bund".into() });
        }
        self.register()?
            .laender
            .iter()
            .find(|l| &l.code == code)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("Land {code}")))
    }

    /// All 16 Länder.
    pub fn laender(&self) -> Result<Vec<Land>> {
        Ok(self.register()?.laender.clone())
    }

    /// All Kreise (and kreisfreie Städte).
    pub fn kreise(&self) -> Result<Vec<Kreis>> {
        Ok(self.register()?.kreise.clone())
    }

    /// The name of a Kreis, or empty if it is not in the register.
    pub fn kreis_name(&self, code: &KreisCode) -> Result<String> {
        Ok(self.register()?.kreise.iter().find(|k| &k.code == code).map(|k| k.name.clone()).unwrap_or_default())
    }

    pub(super) fn register(&self) -> Result<Arc<RegisterCache>> {
        if let Some(t) = self.register.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(t.clone());
        }
        let mut t = RegisterCache {
            laender: self.store.laender()?,
            kreise: self.store.kreise()?,
            as_of: self.store.meta(AS_OF)?.unwrap_or_else(|| "2023-11-30".into()),
            ..Default::default()
        };
        for k in self.store.kommunen()? {
            if k.is_active() {
                let (land, kreis) = (k.ags.land().to_string(), k.ags.kreis().to_string());
                *t.per_land.entry(land.clone()).or_default() += 1;
                *t.per_kreis.entry(kreis.clone()).or_default() += 1;
                *t.population_per_land.entry(land).or_default() += k.population.unwrap_or(0);
                *t.population_per_kreis.entry(kreis).or_default() += k.population.unwrap_or(0);
            }
            t.kommunen.insert(k.ags.clone(), k);
        }
        let t = Arc::new(t);
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
        Ok(t)
    }
}
