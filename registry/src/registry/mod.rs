//! The registry: every domain rule that needs stored state, on top of a [`Store`].
//!
//! Callers pass authenticated identities. Where a decision depends on stored data (who
//! owns a service, whether its adoption is public), the registry loads that data and asks
//! [`efa_domain::authz::authorize`], the one rule table; it never decides on its own.
//!
//! The methods are grouped by concern: [`catalog`] (services, releases, yanks, snapshots),
//! [`ledger`] (subscriptions, adoption reports, ratings) and [`reports`] (adopters,
//! coverage, ratings, feedback, a Kommune's history).

mod catalog;
mod ledger;
mod reports;

pub use catalog::CheckedRelease;

use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::import;
use crate::store::{ImportCounts, Store};
use efa_domain::bundle::BundleLimits;
use efa_domain::model::catalog::{Kommune, Kreis, Land};
use efa_domain::model::event::Event;
use efa_domain::model::ids::{Ags, LandCode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

/// Longest reason text for rejections, failures and yanks.
pub const MAX_REASON_CHARS: usize = 2000;
const MAX_TITLE_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 5000;

/// The GV100AD register held in memory: it changes only on import, and reports over 10,773
/// Gemeinden would otherwise decode one stored Kommune per row.
#[derive(Default)]
struct RegisterCache {
    /// Number of Gemeinden per Land code and per Kreis code.
    per_land: BTreeMap<String, u32>,
    per_kreis: BTreeMap<String, u32>,
    kommunen: HashMap<Ags, Kommune>,
    laender: Vec<Land>,
    kreise: Vec<Kreis>,
}

/// The domain rules on top of a [`Store`]; shared by every request of a hub.
pub struct Registry {
    store: Arc<dyn Store>,
    limits: BundleLimits,
    register: RwLock<Option<Arc<RegisterCache>>>,
    /// Applies every mutation and makes it durable; see [`crate::commit`].
    commits: Committer,
    themenfelder: OnceLock<BTreeSet<String>>,
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(field, format!("is {n} characters, more than the limit of {max}")));
    }
    Ok(())
}

impl Registry {
    /// A registry on `store` with the default bundle limits.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_limits(store, BundleLimits::default())
    }

    /// A registry on `store` that accepts bundles within `limits`.
    pub fn with_limits(store: Arc<dyn Store>, limits: BundleLimits) -> Self {
        Registry {
            commits: Committer::start(store.clone()),
            store,
            limits,
            register: RwLock::new(None),
            themenfelder: Default::default(),
        }
    }

    /// The store under the registry, bypassing every rule. Only with the `raw-store`
    /// feature: tests use it to play a hub that lies (a forged release, a replayed snapshot).
    #[cfg(feature = "raw-store")]
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The bundle limits publishes are checked against.
    pub fn limits(&self) -> &BundleLimits {
        &self.limits
    }

    /// Makes every write so far durable (the commit thread already did for acknowledged ones).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    // ---------------------------------------------------------------- register

    /// Imports the GV100AD register, the OZG catalogue and LeiKa shipped with the crate.
    /// Idempotent: running it again rewrites the same records.
    pub fn seed_bundled(&self) -> Result<ImportCounts> {
        let gv = import::bundled_gv100ad()?;
        let ozg = import::bundled_ozg()?;
        let leika = import::bundled_leika()?;
        self.commits.write(move |s| {
            s.import_register(&gv.laender, &gv.kreise, &gv.kommunen)?;
            s.import_catalogue(&ozg, &leika)
        })?;
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.register()?; // warm now, not on the first report
        let counts = self.store.counts()?;
        tracing::info!(?counts, "register and catalogue imported");
        Ok(counts)
    }

    /// Imports only if the register is empty, so a restart does not redo the work.
    pub fn seed_if_empty(&self) -> Result<ImportCounts> {
        let counts = self.store.counts()?;
        if counts.kommunen > 0 && counts.ozg_leistungen > 0 {
            self.register()?; // warm now, not on the first report
            return Ok(counts);
        }
        self.seed_bundled()
    }

    /// How many Länder, Kreise, Gemeinden, OZG-Leistungen and LeiKa keys the store holds.
    pub fn counts(&self) -> Result<ImportCounts> {
        self.store.counts()
    }

    /// The Themenfelder of the OZG catalogue, parsed once.
    fn themenfelder(&self) -> Result<&BTreeSet<String>> {
        if let Some(t) = self.themenfelder.get() {
            return Ok(t);
        }
        let set = import::bundled_ozg()?.into_iter().map(|o| o.themenfeld).collect();
        Ok(self.themenfelder.get_or_init(|| set))
    }

    /// A Gemeinde of the register.
    pub fn kommune(&self, ags: &Ags) -> Result<Kommune> {
        self.register()?.kommunen.get(ags).cloned().ok_or_else(|| {
            Error::not_found(format!("Kommune with AGS {ags} (not in the Destatis register of 2023-11-30)"))
        })
    }

    /// The name of a Gemeinde, or empty if it is not in the register.
    pub fn kommune_name(&self, ags: &Ags) -> Result<String> {
        Ok(self.register()?.kommunen.get(ags).map(|k| k.name.clone()).unwrap_or_default())
    }

    /// A Land of the register.
    pub fn land(&self, code: &LandCode) -> Result<Land> {
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
    pub fn kreis_name(&self, code: &efa_domain::model::ids::KreisCode) -> Result<String> {
        Ok(self.register()?.kreise.iter().find(|k| &k.code == code).map(|k| k.name.clone()).unwrap_or_default())
    }

    fn register(&self) -> Result<Arc<RegisterCache>> {
        if let Some(t) = self.register.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(t.clone());
        }
        let mut t =
            RegisterCache { laender: self.store.laender()?, kreise: self.store.kreise()?, ..Default::default() };
        for k in self.store.kommunen()? {
            *t.per_land.entry(k.ags.land().to_string()).or_default() += 1;
            *t.per_kreis.entry(k.ags.kreis().to_string()).or_default() += 1;
            t.kommunen.insert(k.ags.clone(), k);
        }
        let t = Arc::new(t);
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
        Ok(t)
    }

    // ---------------------------------------------------------------- events

    /// Up to `limit` events after `seq`, oldest first.
    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        self.store.events_after(seq, limit)
    }

    /// Seq of the newest event (0: none yet).
    pub fn head_seq(&self) -> Result<u64> {
        self.store.head_seq()
    }

    /// Seq of the oldest event still in the log.
    pub fn oldest_seq(&self) -> Result<Option<u64>> {
        self.store.oldest_seq()
    }

    /// Event retention: keeps the newest `keep` events (at least one) and drops older ones.
    /// Nodes whose cursor falls behind get a "resync needed" answer instead of silent loss.
    pub fn trim_events_keep(&self, keep: u64) -> Result<usize> {
        let head = self.store.head_seq()?;
        let before = head.saturating_sub(keep.max(1)) + 1;
        let n = self.commits.write(move |s| s.trim_events(before))?;
        if n > 0 {
            tracing::info!(removed = n, oldest_kept = before, "event log trimmed");
        }
        Ok(n)
    }
}
