use crate::auth::{acting_land, authorize, Action, Identity};
use crate::convert::{kommune_to_proto, parameter_from_proto, service_to_proto};
use crate::error::parse;
use crate::state::HubState;
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_server::CatalogService;
use efa_registry::model::ids::{Ags, LandCode, ServiceId};
use efa_registry::registry::NewService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Catalog(pub Arc<HubState>);

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn register_service(
        &self,
        req: Request<pb::RegisterServiceRequest>,
    ) -> Result<Response<pb::ServiceInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        acting_land(&who, None)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.id)?;
        let existing_owner = {
            let id = id.clone();
            self.0.registry(move |reg| Ok(reg.store().service(&id)?.map(|s| s.land))).await?
        };
        let land = acting_land(&who, existing_owner.as_ref())?;
        let new = NewService {
            id,
            ozg_id: parse(&r.ozg_id)?,
            leistungsschluessel: if r.leistungsschluessel.trim().is_empty() {
                None
            } else {
                Some(parse(&r.leistungsschluessel)?)
            },
            title: r.title,
            description: r.description,
            parameters: r.parameters.into_iter().map(parameter_from_proto).collect::<Result<_, _>>()?,
            adoption_public: r.adoption_public,
        };
        let (service, event) = self.0.registry(move |reg| reg.register_service(&land, new)).await?;
        tracing::info!(service = %service.id, land = %service.land, "service registered");
        self.0.bus.publish(event);
        Ok(Response::new(service_to_proto(&service, vec![])))
    }

    async fn get_service(&self, req: Request<pb::GetServiceRequest>) -> Result<Response<pb::ServiceInfo>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog)?;
        let id: ServiceId = parse(&req.into_inner().id)?;
        let (service, versions) = self
            .0
            .registry(move |r| {
                let s = r.service(&id)?;
                let v = r.releases(&id, None)?.iter().map(|x| x.version.to_string()).collect();
                Ok((s, v))
            })
            .await?;
        Ok(Response::new(service_to_proto(&service, versions)))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog)?;
        let r = req.into_inner();
        let land: Option<LandCode> = if r.land_code.is_empty() { None } else { Some(parse(&r.land_code)?) };
        let themenfeld = Some(r.themenfeld).filter(|t| !t.is_empty());
        let services = self
            .0
            .registry(move |reg| {
                reg.services(land.as_ref(), themenfeld.as_deref())?
                    .into_iter()
                    .map(|s| {
                        let v = reg.releases(&s.id, None)?.iter().map(|x| x.version.to_string()).collect();
                        Ok(service_to_proto(&s, v))
                    })
                    .collect::<efa_registry::Result<Vec<_>>>()
            })
            .await?;
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn get_kommune(&self, req: Request<pb::GetKommuneRequest>) -> Result<Response<pb::Kommune>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog)?;
        let ags: Ags = parse(&req.into_inner().ags)?;
        let k = self.0.registry(move |r| kommune_with_names(r, &ags)).await?;
        Ok(Response::new(k))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let who2 = who.clone();
        let display_name = self
            .0
            .registry(move |r| {
                Ok(match &who2 {
                    Identity::Land(l) => r.store().land(l)?.map(|l| l.name).unwrap_or_default(),
                    Identity::Kommune(a) => r.store().kommune(a)?.map(|k| k.name).unwrap_or_default(),
                    Identity::Operator(n) => n.clone(),
                })
            })
            .await?;
        Ok(Response::new(pb::WhoAmIResponse { role: who.role().into(), key: who.key(), display_name }))
    }
}

/// A Kommune with its Land and Kreis names, as the wire shows it.
pub fn kommune_with_names(r: &efa_registry::Registry, ags: &Ags) -> efa_registry::Result<pb::Kommune> {
    let k = r.kommune(ags)?;
    let land = r.store().land(&ags.land())?.map(|l| l.name).unwrap_or_default();
    let kreis = r.store().kreis(&ags.kreis())?.map(|k| k.name).unwrap_or_default();
    Ok(kommune_to_proto(&k, &land, &kreis))
}
