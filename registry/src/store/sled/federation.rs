//! Key sets, offers and rollouts: what Länder publish about their services, each write with
//! its event. The `Store` impl in `mod.rs` calls these.

use super::tx::{append_event, from_tx, key, prefix, rollout_key};
use super::SledStore;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use efa_domain::model::catalog::SigningKeys;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::rollout::{Rollout, Transition};
use sled::Transactional;

impl SledStore {
    pub(super) fn write_key_set(
        &self,
        land: &LandCode,
        key_set: &efa_domain::model::keyset::SignedKeySet,
        keys: &SigningKeys,
    ) -> Result<Event> {
        (&self.signing_keys, &self.key_sets, &self.meta, &self.events)
            .transaction(|(tree, sets, meta, events)| {
                tree.insert(land.as_str().as_bytes(), encode(keys))?;
                let kind = EventKind::KeySetPublished { land: land.clone(), key_set: key_set.clone() };
                let event = append_event(meta, events, keys.updated_at_ms, kind)?;
                sets.insert([land.as_str().as_bytes(), b"\0", &event.seq.to_be_bytes()].concat(), encode(key_set))?;
                Ok(event)
            })
            .map_err(from_tx)
    }

    pub(super) fn read_key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>> {
        let prefix = [land.as_str().as_bytes(), b"\0"].concat();
        self.key_sets
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let seq = k[prefix.len()..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Storage("a key set key is malformed".into()))?;
                Ok((seq, decode("key_sets", &v)?))
            })
            .collect()
    }

    pub(super) fn write_offer(
        &self,
        land: &LandCode,
        service: &ServiceId,
        offer: &SignedOffer,
        at_ms: i64,
        withdrawn: bool,
    ) -> Result<Event> {
        let k = key(&[service.as_str().as_bytes(), land.as_str().as_bytes()]);
        (&self.offers, &self.meta, &self.events)
            .transaction(|(tree, meta, events)| {
                tree.insert(k.as_slice(), encode(offer))?;
                let kind = EventKind::Offered { service_id: service.clone(), land: land.clone(), withdrawn };
                append_event(meta, events, at_ms, kind)
            })
            .map_err(from_tx)
    }

    pub(super) fn write_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: &Rollout,
        transition: Transition,
        at_ms: i64,
    ) -> Result<Event> {
        let k = rollout_key(service, version, land);
        (&self.rollouts, &self.meta, &self.events)
            .transaction(|(tree, meta, events)| {
                tree.insert(k.as_slice(), encode(rollout))?;
                append_event(meta, events, at_ms, EventKind::rollout_moved(service, version, land, transition.clone()))
            })
            .map_err(from_tx)
    }

    pub(super) fn read_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>> {
        self.rollouts.get(rollout_key(service, version, land))?.map(|v| decode::<Rollout>("rollouts", &v)).transpose()
    }

    pub(super) fn read_rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
        let mut out = Vec::new();
        for item in self.rollouts.iter() {
            let (k, v) = item?;
            let bad = || {
                Error::Storage(format!(
                    "rollout key is not service, version [, Land]: {:?}",
                    String::from_utf8_lossy(&k)
                ))
            };
            let mut parts = k.split(|b| *b == 0).map(std::str::from_utf8);
            let (Some(Ok(s)), Some(Ok(ver))) = (parts.next(), parts.next()) else { return Err(bad()) };
            let land = match parts.next() {
                None => None,
                Some(Ok(l)) => Some(l.parse().map_err(|_| bad())?),
                Some(Err(_)) => return Err(bad()),
            };
            out.push((
                s.parse().map_err(|_| bad())?,
                ver.parse().map_err(|_| bad())?,
                land,
                decode::<Rollout>("rollouts", &v)?,
            ));
        }
        Ok(out)
    }

    pub(super) fn read_offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>> {
        let mut out = Vec::new();
        for item in self.offers.scan_prefix(prefix(service.as_str().as_bytes())) {
            let (k, v) = item?;
            let land = k.rsplit(|b| *b == 0).next().and_then(|l| std::str::from_utf8(l).ok()).unwrap_or_default();
            let land: LandCode = land
                .parse()
                .map_err(|_| Error::Storage(format!("offer key names no Land: {:?}", String::from_utf8_lossy(&k))))?;
            out.push((land, decode::<SignedOffer>("offers", &v)?));
        }
        Ok(out)
    }
}
