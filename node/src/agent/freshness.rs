//! Freeze protection: fetch each Land's signed snapshot and let the domain rules
//! ([`efa_domain::freshness`]) compare it with what the hub lists.

use super::Agent;
use crate::error::Result;
use efa_domain::freshness::{check_land, Listed};
use efa_domain::model::catalog::CatalogEntry;
use std::collections::BTreeSet;

impl Agent {
    /// Compares what the hub shows with each Land's signed snapshot and records (and
    /// returns) the warnings: a snapshot missing, unsigned, replayed, expired, or naming a
    /// version the hub does not list. Warnings never block deploys of what the node can
    /// verify; they tell the Kommune its view may be stale.
    pub async fn check_freshness(&self) -> Result<Vec<String>> {
        let services = self.subscribed_services().await?;
        self.check_freshness_of(&services).await
    }

    pub(super) async fn check_freshness_of(&self, services: &[CatalogEntry]) -> Result<Vec<String>> {
        let lands: BTreeSet<_> = services.iter().map(|s| s.service.land.clone()).collect();
        // Snapshots first, the listing after: a snapshot names only published releases, so a
        // listing read later holds all of them unless the hub hides one. The other order
        // would report a release published in between as hidden.
        let mut snapshots = Vec::new();
        for land in lands {
            let signed = self.hub.snapshot(&land).await?;
            snapshots.push((land, signed));
        }
        let services = &self.subscribed_services().await?;
        let mut seen = self.state.load()?.snapshots;
        let now = efa_domain::now_ms();
        let mut warnings = Vec::new();
        for (land, signed) in snapshots {
            let versions: Vec<(usize, Vec<String>)> = services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.service.land == land)
                .map(|(i, s)| (i, s.versions.iter().map(|v| v.to_string()).collect()))
                .collect();
            let channels: Vec<_> =
                versions.iter().map(|(i, _)| self.config.policy_for(&services[*i].service).map(|(_, c)| c)).collect();
            let listed: Vec<Listed<'_>> = versions
                .iter()
                .zip(&channels)
                .filter_map(|((i, v), c)| {
                    Some(Listed { id: &services[*i].service.id, channel: c.as_ref()?, versions: v })
                })
                .collect();
            let last = seen.get(land.as_str()).copied().unwrap_or(0);
            // The Land's newest key set from the log, else the keys pinned by hand.
            let keys = self.keys_for_release(&land, Some(u64::MAX));
            let checked = check_land(
                &land,
                signed.as_ref().map(|(b, s)| (b.as_slice(), s.as_slice())),
                &keys,
                last,
                now,
                &listed,
            );
            seen.insert(land.to_string(), checked.newest_seen_ms);
            warnings.extend(checked.warnings);
        }
        for w in &warnings {
            tracing::error!(warning = %w, "freeze protection");
        }
        let out = warnings.clone();
        self.update(move |s| {
            s.snapshots = seen;
            s.warnings = warnings;
        })?;
        Ok(out)
    }
}
