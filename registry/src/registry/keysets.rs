//! A Land's signed key sets: checked against the Land's previous set (or a federation root
//! key), stored as the Land's registered keys, and logged, so nodes follow rotations and
//! revocations from the transparency log.

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{acting_land, Identity};
use efa_domain::model::catalog::SigningKeys;
use efa_domain::model::event::Event;
use efa_domain::model::ids::LandCode;
use efa_domain::model::keyset::{KeySet, SignedKeySet};
use efa_domain::signing::VerifyingKey;

impl Registry {
    /// Publishes the calling Land's next key set. `roots` are the federation root keys the
    /// hub is configured with. The first set must be signed by the keys the Land registered
    /// before, if any (else by its own keys: the Land is authenticated by its certificate).
    pub fn publish_key_set(
        &self,
        who: &Identity,
        signed: SignedKeySet,
        roots: &[VerifyingKey],
    ) -> Result<(KeySet, Event)> {
        let land = acting_land(who, None)?;
        let stored = self.store.key_sets(&land)?;
        let previous = match stored.last() {
            Some((_, s)) => Some(s.peek()?),
            None => None,
        };
        let first_anchors: Vec<VerifyingKey> = if previous.is_none() {
            let registered = self.store.signing_keys(&land)?;
            if registered.keys.is_empty() {
                signed.peek()?.verifying_keys()
            } else {
                registered.keys.iter().filter_map(|k| VerifyingKey::from_text(k).ok()).collect()
            }
        } else {
            Vec::new()
        };
        let set = signed.accept(&land, previous.as_ref(), roots, &first_anchors)?;
        let keys = SigningKeys { keys: set.keys.clone(), updated_at_ms: efa_domain::now_ms() };
        let event = self.commits.write(move |s| s.put_key_set(&land, &signed, &keys))?;
        Ok((set, event))
    }

    /// A Land's published key sets, oldest first, with the leaf index of each.
    pub fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, SignedKeySet)>> {
        self.land(land)?;
        Ok(self.store.key_sets(land)?.into_iter().map(|(seq, s)| (seq - 1, s)).collect())
    }

    /// Refuses replacing registered keys by hand once a Land publishes signed key sets:
    /// that would step around the threshold.
    pub(super) fn check_no_key_sets(&self, land: &LandCode) -> Result<()> {
        if self.store.key_sets(land)?.is_empty() {
            Ok(())
        } else {
            Err(Error::failed_precondition(format!(
                "Land {land} publishes signed key sets; change its keys with the next set (`efa keyset sign` and `efa keyset publish`)"
            )))
        }
    }
}
