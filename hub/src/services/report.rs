//! `ReportService`: what Länder and operators read. Visibility is decided by the registry
//! with the one authorization table, on the stored owner of each service.

use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::ids::{Ags, LandCode, ServiceId};
use efa_proto::convert::{parse, parse_opt, rating_summary};
use efa_proto::v1 as pb;
use efa_proto::v1::report_service_server::ReportService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `ReportService` implementation.
pub struct Reports(pub Arc<HubState>);

#[tonic::async_trait]
impl ReportService for Reports {
    async fn service_adopters(
        &self,
        req: Request<pb::ServiceAdoptersRequest>,
    ) -> Result<Response<pb::ServiceAdoptersResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let id: ServiceId = parse(&req.into_inner().service_id).map_err(status)?;
        let adopters = self.0.registry(move |r| r.adopters(&who, &id)).await?;
        Ok(Response::new(pb::ServiceAdoptersResponse { adopters: adopters.iter().map(Into::into).collect() }))
    }

    async fn kommune_history(
        &self,
        req: Request<pb::KommuneHistoryRequest>,
    ) -> Result<Response<pb::KommuneHistoryResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        // An empty AGS means the calling Kommune itself.
        let ags: Ags = match (&who, r.ags.is_empty()) {
            (Identity::Kommune(me), true) => me.clone(),
            _ => parse(&r.ags).map_err(status)?,
        };
        let report = self.0.registry(move |reg| reg.kommune_report(&who, &ags)).await?;
        Ok(Response::new((&report).into()))
    }

    async fn coverage(&self, req: Request<pb::CoverageRequest>) -> Result<Response<pb::CoverageResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let land: Option<LandCode> = parse_opt(&r.land_code).map_err(status)?;
        let service_id = id.to_string();
        let rows = self.0.registry(move |reg| reg.coverage(&who, &id, land.as_ref())).await?;
        Ok(Response::new(pb::CoverageResponse { service_id, rows: rows.iter().map(Into::into).collect() }))
    }

    async fn rating_summary(
        &self,
        req: Request<pb::RatingSummaryRequest>,
    ) -> Result<Response<pb::RatingSummaryResponse>, Status> {
        // Aggregates carry no comments or names, so every authenticated party may read them.
        authorize(&self.0.auth.identify(&req)?, Action::ReadCatalog).map_err(status)?;
        let id: ServiceId = parse(&req.into_inner().service_id).map_err(status)?;
        let service_id = id.to_string();
        let summary = self.0.registry(move |r| r.rating_summary(&id)).await?;
        Ok(Response::new(rating_summary(service_id, &summary)))
    }

    async fn feedback(&self, req: Request<pb::FeedbackRequest>) -> Result<Response<pb::FeedbackResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let service: Option<ServiceId> = parse_opt(&r.service_id).map_err(status)?;
        let land: Option<LandCode> = parse_opt(&r.land_code).map_err(status)?;
        let fb = self.0.registry(move |reg| reg.feedback(&who, land.as_ref(), service.as_ref())).await?;
        Ok(Response::new((&fb).into()))
    }

    async fn routing(&self, req: Request<pb::RoutingRequest>) -> Result<Response<pb::RoutingResponse>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadCatalog).map_err(status)?;
        let key: efa_domain::model::ids::Leistungsschluessel =
            parse(&req.into_inner().leistungsschluessel).map_err(status)?;
        let leistungsschluessel = key.to_string();
        let rows = self.0.registry(move |reg| reg.routing_table(&key)).await?;
        Ok(Response::new(pb::RoutingResponse { leistungsschluessel, rows: rows.iter().map(Into::into).collect() }))
    }

    async fn preflight(&self, req: Request<pb::PreflightRequest>) -> Result<Response<pb::PreflightResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id).map_err(status)?;
        let version = efa_domain::model::ids::parse_version(&r.version).map_err(status)?.to_string();
        let (service_id, v) = (id.to_string(), version.clone());
        let rows = self.0.registry(move |reg| reg.preflight_report(&who, &id, &v)).await?;
        let ready = rows.iter().filter(|(p, _)| p.is_ready()).count() as u32;
        Ok(Response::new(pb::PreflightResponse {
            service_id,
            version,
            ready,
            blocked: rows.len() as u32 - ready,
            kommunen: rows.iter().map(|(p, name)| (p, name.as_str()).into()).collect(),
        }))
    }
}
