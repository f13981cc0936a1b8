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
mod grants;
mod keysets;
mod ledger;
mod log;
mod offers;
mod register;
mod reports;
mod rollouts;

pub(crate) use log::StoredHashes;
pub use log::{NewLeaf, MAX_APPEND};
pub use rollouts::{RolloutAction, RolloutController};

pub use catalog::{BlobSource, CheckedRelease};

use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::import;
use crate::store::Store;
use efa_domain::bundle::BundleLimits;
use efa_domain::model::event::Event;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock, RwLock};

/// Longest reason text for rejections, failures and yanks.
pub const MAX_REASON_CHARS: usize = 2000;
const MAX_TITLE_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 5000;

/// The domain rules on top of a [`Store`]; shared by every request of a hub.
pub struct Registry {
    store: Arc<dyn Store>,
    limits: BundleLimits,
    register: RwLock<Option<Arc<register::RegisterCache>>>,
    /// Applies every mutation and makes it durable; see [`crate::commit`].
    commits: Committer,
    themenfelder: OnceLock<BTreeSet<String>>,
    /// Releases known to exist (`"service version"`); see `check_adoption`.
    known_releases: RwLock<std::collections::HashSet<String>>,
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
            known_releases: Default::default(),
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

    /// Calls `wake` when another hub replica appended events streams must see (a shared
    /// store; see [`Store::on_foreign_commit`](crate::store::Store::on_foreign_commit)).
    pub fn on_foreign_commit(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<()> {
        self.store.on_foreign_commit(wake)
    }

    /// Takes or renews the lease on a job that one hub replica at a time runs (see
    /// [`Store::take_lease`](crate::store::Store::take_lease)).
    pub fn take_lease(&self, job: &'static str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        let (holder, ttl) = (holder.to_string(), ttl.as_millis() as i64);
        self.commits.write(move |s| s.take_lease(job, &holder, ttl))
    }

    /// Makes every write so far durable (the commit thread already did for acknowledged ones).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()?;
        // The transparency log is written off the commit thread; a clean shutdown keeps it too.
        self.store.flush_log()
    }

    /// The Themenfelder of the OZG catalogue, parsed once.
    fn themenfelder(&self) -> Result<&BTreeSet<String>> {
        if let Some(t) = self.themenfelder.get() {
            return Ok(t);
        }
        let set = import::bundled_ozg()?.into_iter().map(|o| o.themenfeld).collect();
        Ok(self.themenfelder.get_or_init(|| set))
    }

    /// Refuses a Themenfeld that is not in the OZG catalogue: a typo in a filter or a
    /// subscription would otherwise silently match nothing.
    fn check_themenfeld(&self, t: &str) -> Result<()> {
        if self.themenfelder()?.contains(t) {
            return Ok(());
        }
        Err(Error::invalid(
            "Themenfeld",
            format!("{} is not a Themenfeld of the OZG catalogue", efa_domain::error::echo(t)),
        ))
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
        // Events not yet in the transparency log stay: the integrator reads them from here.
        let before = (head.saturating_sub(keep.max(1)) + 1).min(self.store.log_size()? + 1);
        let n = self.commits.write(move |s| s.trim_events(before))?;
        if n > 0 {
            tracing::info!(removed = n, oldest_kept = before, "event log trimmed");
        }
        Ok(n)
    }
}
