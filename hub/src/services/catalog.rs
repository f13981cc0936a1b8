//! `CatalogService`: services, Kommunen, and who the caller is.

use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::catalog::NewService;
use efa_domain::model::ids::{Ags, LandCode, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_proto::convert::{offer_info, parse, parse_opt};
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_server::CatalogService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `CatalogService` implementation.
pub struct Catalog(pub Arc<HubState>);

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn register_service(
        &self,
        req: Request<pb::RegisterServiceRequest>,
    ) -> Result<Response<pb::ServiceInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ManageService { owner: None }).map_err(status)?;
        let new = NewService::try_from(req.into_inner()).map_err(status)?;
        let (service, event) = self.0.registry(move |reg| reg.register_service(&who, new)).await?;
        tracing::info!(service = %service.id, land = %service.land, "service registered");
        self.0.feed.publish(event);
        let id = service.id.clone();
        let entry = self.0.registry(move |reg| reg.catalog_entry(&id)).await?;
        Ok(Response::new((&entry).into()))
    }

    async fn get_service(&self, req: Request<pb::GetServiceRequest>) -> Result<Response<pb::ServiceInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let id: ServiceId = parse(&req.into_inner().id).map_err(status)?;
        let entry = self.0.registry(move |r| r.catalog_entry(&id)).await?;
        Ok(Response::new((&entry).into()))
    }

    async fn deprecate_service(
        &self,
        req: Request<pb::DeprecateServiceRequest>,
    ) -> Result<Response<pb::ServiceInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ManageService { owner: None }).map_err(status)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let successor: Option<ServiceId> = parse_opt(&r.successor_id).map_err(status)?;
        let sid = id.clone();
        let (_, event) = self.0.registry(move |reg| reg.deprecate(&who, &sid, &r.reason, successor)).await?;
        tracing::info!(service = %id, "service deprecated");
        self.0.feed.publish(event);
        let entry = self.0.registry(move |reg| reg.catalog_entry(&id)).await?;
        Ok(Response::new((&entry).into()))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let land: Option<LandCode> = parse_opt(&r.land_code).map_err(status)?;
        let themenfeld = Some(r.themenfeld).filter(|t| !t.is_empty());
        let entries = self.0.registry(move |reg| reg.catalog(land.as_ref(), themenfeld.as_deref())).await?;
        Ok(Response::new(pb::ListServicesResponse { services: entries.iter().map(Into::into).collect() }))
    }

    async fn get_kommune(&self, req: Request<pb::GetKommuneRequest>) -> Result<Response<pb::Kommune>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let ags: Ags = parse(&req.into_inner().ags).map_err(status)?;
        let k = self
            .0
            .registry(move |r| {
                let k = r.kommune(&ags)?;
                let land = r.land(&ags.land()).map(|l| l.name).unwrap_or_default();
                Ok(efa_proto::convert::kommune(&k, &land, &r.kreis_name(&ags.kreis())?))
            })
            .await?;
        Ok(Response::new(k))
    }

    async fn set_signing_keys(
        &self,
        req: Request<pb::SetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        let who = self.0.auth.identify(&req)?;
        let keys = req.into_inner().keys;
        let land = who.key();
        let (set, event) = self.0.registry(move |reg| reg.set_signing_keys(&who, keys)).await?;
        tracing::info!(%land, keys = set.keys.len(), "release signing keys registered");
        self.0.feed.publish(event);
        Ok(Response::new(pb::SigningKeys { land_code: land, keys: set.keys, updated_at_ms: set.updated_at_ms }))
    }

    async fn publish_key_set(&self, req: Request<pb::SignedKeySet>) -> Result<Response<pb::KeySetInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        let signed = efa_domain::model::keyset::SignedKeySet::from(req.into_inner());
        let wire = pb::SignedKeySet::from(&signed);
        let roots = self.0.federation_root.clone();
        let (set, event) = self.0.registry(move |reg| reg.publish_key_set(&who, signed, &roots)).await?;
        tracing::info!(land = %set.land, version = set.version, keys = set.keys.len(), revoked = set.revoked.len(), "key set published");
        let leaf_index = event.seq - 1;
        self.0.feed.publish(event);
        Ok(Response::new(pb::KeySetInfo {
            land_code: set.land.to_string(),
            version: set.version,
            leaf_index,
            key_set: Some(wire),
        }))
    }

    async fn list_key_sets(&self, req: Request<pb::ListKeySetsRequest>) -> Result<Response<pb::KeySetList>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let land: LandCode = parse(&req.into_inner().land_code).map_err(status)?;
        let sets = self.0.registry(move |reg| reg.key_sets(&land)).await?;
        let key_sets = sets
            .into_iter()
            .map(|(leaf_index, s)| {
                let set = s.peek().ok();
                pb::KeySetInfo {
                    land_code: set.as_ref().map(|k| k.land.to_string()).unwrap_or_default(),
                    version: set.map_or(0, |k| k.version),
                    leaf_index,
                    key_set: Some(pb::SignedKeySet::from(&s)),
                }
            })
            .collect();
        Ok(Response::new(pb::KeySetList { key_sets }))
    }

    async fn get_signing_keys(
        &self,
        req: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        // An empty Land code means the calling Land.
        let land: LandCode = match (&who, r.land_code.is_empty()) {
            (Identity::Land(me), true) => me.clone(),
            _ => parse(&r.land_code).map_err(status)?,
        };
        let code = land.to_string();
        let set = self.0.registry(move |reg| reg.signing_keys(&land)).await?;
        Ok(Response::new(pb::SigningKeys { land_code: code, keys: set.keys, updated_at_ms: set.updated_at_ms }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let whom = who.clone();
        let display_name = self
            .0
            .registry(move |r| {
                Ok(match &whom {
                    Identity::Land(l) => r.land(l).map(|l| l.name).unwrap_or_default(),
                    Identity::Kommune(a) => r.kommune_name(a)?,
                    Identity::Kreis(k) => r.kreis_name(k)?,
                    Identity::Verband(v) => format!("Gemeindeverband {v}"),
                    Identity::Operator(n) | Identity::Provider(n) => n.clone(),
                })
            })
            .await?;
        Ok(Response::new(pb::WhoAmIResponse { role: who.role().into(), key: who.key(), display_name }))
    }

    async fn set_provider_grant(&self, req: Request<pb::ProviderGrant>) -> Result<Response<pb::ProviderGrant>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let kommunen: Vec<Ags> = r.kommunen.iter().map(|a| parse(a)).collect::<Result<_, _>>().map_err(status)?;
        let provider = r.provider;
        let name = provider.clone();
        let grant = self.0.registry(move |reg| reg.set_grant(&who, &name, kommunen)).await?;
        tracing::info!(%provider, kommunen = grant.kommunen.len(), "provider grant set");
        Ok(Response::new(efa_proto::convert::grant(provider, &grant)))
    }

    async fn get_provider_grant(
        &self,
        req: Request<pb::GetProviderGrantRequest>,
    ) -> Result<Response<pb::ProviderGrant>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        // An empty name means the calling provider.
        let provider = match (&who, r.provider.is_empty()) {
            (Identity::Provider(me), true) => me.clone(),
            _ => r.provider,
        };
        let name = provider.clone();
        let grant = self.0.registry(move |reg| reg.grant(&who, &name)).await?;
        Ok(Response::new(efa_proto::convert::grant(provider, &grant)))
    }

    async fn publish_offer(&self, req: Request<pb::SignedOffer>) -> Result<Response<pb::OfferInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        let signed = SignedOffer::from(req.into_inner());
        let (info, event) = self
            .0
            .registry(move |reg| {
                let (offer, event) = reg.publish_offer(&who, signed.bytes.clone(), signed.signature.clone())?;
                let builder = reg.service(&offer.service_id)?.land;
                Ok((offer_info(&offer, &builder, &signed), event))
            })
            .await?;
        tracing::info!(service = %info.service_id, land = %info.land_code, withdrawn = info.withdrawn, "offer published");
        self.0.feed.publish(event);
        Ok(Response::new(info))
    }

    async fn get_offer(&self, req: Request<pb::GetOfferRequest>) -> Result<Response<pb::SignedOffer>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id).map_err(status)?;
        let land = own_land_or(&who, &r.land_code)?;
        let signed = self.0.registry(move |reg| reg.offer(&service, &land)).await?;
        Ok(Response::new((&signed).into()))
    }

    async fn list_offers(
        &self,
        req: Request<pb::ListOffersRequest>,
    ) -> Result<Response<pb::ListOffersResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let service: Option<ServiceId> = parse_opt(&r.service_id).map_err(status)?;
        let land: Option<LandCode> = parse_opt(&r.land_code).map_err(status)?;
        if service.is_none() && land.is_none() {
            return Err(Status::invalid_argument("ListOffers needs service_id or land_code (or both)"));
        }
        let offers = self
            .0
            .registry(move |reg| {
                if let Some(l) = &land {
                    reg.land(l)?;
                }
                let services = match &service {
                    Some(id) => vec![reg.service(id)?],
                    None => reg.services(None, None)?,
                };
                let mut out = Vec::new();
                for s in services {
                    for (offer, signed) in reg.signed_offers(&s.id)? {
                        if land.as_ref().is_none_or(|l| l == &offer.land) {
                            out.push(offer_info(&offer, &s.land, &signed));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::ListOffersResponse { offers }))
    }
}

/// A Land code from a request, where empty means the caller's own Land (a Land's, or the
/// Land of a Kommune).
fn own_land_or(who: &Identity, code: &str) -> Result<LandCode, Status> {
    match (who, code.is_empty()) {
        (Identity::Land(me), true) => Ok(me.clone()),
        (Identity::Kommune(ags), true) => Ok(ags.land()),
        _ => parse(code).map_err(status),
    }
}
