//! Nachnutzung: Länder offering services other Länder built to their own Kommunen.

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::event::Event;
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::offer::{Offer, SignedOffer};
use efa_domain::params::validate_land_values;

impl Registry {
    /// Stores the calling Land's signed offer of a service built by another Land (or the
    /// withdrawal of its offer). The offer must name the caller, a service that exists,
    /// only Kommunen of the caller's register, Land parameters of the service's schema, and
    /// be newer than the offer it replaces; a Land that registered signing keys must have
    /// signed it with one of them.
    pub fn publish_offer(&self, who: &Identity, bytes: Vec<u8>, signature: Vec<u8>) -> Result<(Offer, Event)> {
        let offer = Offer::from_bytes(&bytes)?;
        let caller = match who {
            Identity::Land(l) => l.clone(),
            other => {
                return Err(efa_domain::Error::PermissionDenied(format!(
                    "only a Land offers services to its Kommunen; caller is {other}"
                ))
                .into())
            }
        };
        if offer.land != caller {
            return Err(efa_domain::Error::PermissionDenied(format!(
                "the offer is by Land {}, but the caller is Land {caller}",
                offer.land
            ))
            .into());
        }
        let service = self.service(&offer.service_id)?;
        authorize(who, Action::OfferService { builder: &service.land })?;
        let register = self.register()?;
        if let Some(ags) = offer.kommunen.iter().find(|a| !register.kommunen.get(*a).is_some_and(|k| k.is_active())) {
            return Err(Error::invalid(
                "offer",
                format!("names Kommune {ags}, which is not a Gemeinde of the register"),
            ));
        }
        validate_land_values(&service.parameters, &offer.land_parameters)?;
        if signature.len() != 64 {
            return Err(Error::invalid("signature", "must be a 64-byte Ed25519 signature over the offer"));
        }
        self.check_signature(&caller, "offer", &bytes, &signature)?;
        super::catalog::not_from_the_future("offer", offer.issued_at_ms)?;
        if let Some((_, old)) = self.store.offers(&service.id)?.into_iter().find(|(l, _)| l == &caller) {
            let old = old.offer()?;
            if offer.issued_at_ms <= old.issued_at_ms {
                return Err(Error::failed_precondition(format!(
                    "offer issued at {} is not newer than the stored one ({}); sign a new one",
                    offer.issued_at_ms, old.issued_at_ms
                )));
            }
        }
        let signed = SignedOffer { bytes, signature };
        let (land, id, withdrawn) = (caller, service.id, !offer.is_active());
        let event = self.commits.write(move |s| s.put_offer(&land, &id, &signed, efa_domain::now_ms(), withdrawn))?;
        Ok((offer, event))
    }

    /// A Land's signed offer of a service, as stored (withdrawn ones included).
    pub fn offer(&self, service: &ServiceId, land: &LandCode) -> Result<SignedOffer> {
        self.service(service)?;
        self.land(land)?;
        self.store.offers(service)?.into_iter().find(|(l, _)| l == land).map(|(_, o)| o).ok_or_else(|| {
            Error::not_found(format!("offer of {service} by Land {land} (that Land has not offered it)"))
        })
    }

    /// Every offer of a service, parsed, by offering Land.
    pub fn offers(&self, service: &ServiceId) -> Result<Vec<Offer>> {
        Ok(self.signed_offers(service)?.into_iter().map(|(o, _)| o).collect())
    }

    /// Every offer of a service, parsed and as signed, by offering Land.
    pub fn signed_offers(&self, service: &ServiceId) -> Result<Vec<(Offer, SignedOffer)>> {
        self.store.offers(service)?.into_iter().map(|(_, s)| Ok((s.offer()?, s))).collect()
    }

    /// The Länder that offer or offered a service; each may read about its own Kommunen.
    pub fn offered_by(&self, service: &ServiceId) -> Result<Vec<LandCode>> {
        Ok(self.store.offers(service)?.into_iter().map(|(l, _)| l).collect())
    }
}
