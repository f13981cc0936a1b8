use crate::auth::{authorize, Action, Identity};
use crate::convert::{aggregate_to_proto, entry_to_proto, rating_to_proto, record_to_proto};
use crate::error::parse;
use crate::services::catalog::kommune_with_names;
use crate::state::HubState;
use efa_proto::v1 as pb;
use efa_proto::v1::report_service_server::ReportService;
use efa_registry::model::ids::{Ags, LandCode, ServiceId};
use efa_registry::registry::CoverageLevel;
use efa_registry::Registry;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Reports(pub Arc<HubState>);

impl Reports {
    async fn owner(&self, id: &ServiceId) -> Result<LandCode, Status> {
        Ok(self.visibility(id).await?.0)
    }

    /// The owning Land, and whether it made adoption of the service public.
    async fn visibility(&self, id: &ServiceId) -> Result<(LandCode, bool), Status> {
        let id = id.clone();
        self.0
            .registry(move |r| {
                let s = r.service(&id)?;
                Ok((s.land, s.adoption_public))
            })
            .await
    }
}

fn name_of(r: &Registry, ags: &Ags) -> efa_registry::Result<String> {
    Ok(r.store().kommune(ags)?.map(|k| k.name).unwrap_or_default())
}

#[tonic::async_trait]
impl ReportService for Reports {
    async fn service_adopters(
        &self,
        req: Request<pb::ServiceAdoptersRequest>,
    ) -> Result<Response<pb::ServiceAdoptersResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let id: ServiceId = parse(&req.into_inner().service_id)?;
        let (owner, public) = self.visibility(&id).await?;
        authorize(&who, Action::ReadAdoption { owner: &owner, public })?;
        let adopters = self.0.registry(move |r| r.adopters(&id)).await?;
        let mut out: Vec<pb::AdoptionRecord> = adopters
            .iter()
            .map(|a| record_to_proto(&a.record, a.kommune.as_ref().map(|k| k.name.as_str()).unwrap_or("")))
            .collect();
        out.sort_by(|a, b| a.ags.cmp(&b.ags));
        Ok(Response::new(pb::ServiceAdoptersResponse { adopters: out }))
    }

    async fn kommune_history(
        &self,
        req: Request<pb::KommuneHistoryRequest>,
    ) -> Result<Response<pb::KommuneHistoryResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let ags: Ags = match (&who, r.ags.is_empty()) {
            (Identity::Kommune(me), true) => me.clone(),
            _ => parse(&r.ags)?,
        };
        authorize(&who, Action::ReadKommune { ags: &ags })?;
        let resp = self
            .0
            .registry(move |reg| {
                let kommune = kommune_with_names(reg, &ags)?;
                let (_, current, history) = reg.kommune_report(&ags)?;
                let name = kommune.name.clone();
                Ok(pb::KommuneHistoryResponse {
                    kommune: Some(kommune),
                    current: current.iter().map(|c| record_to_proto(c, &name)).collect(),
                    history: history.iter().map(|e| entry_to_proto(e, &name, None)).collect(),
                })
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn coverage(&self, req: Request<pb::CoverageRequest>) -> Result<Response<pb::CoverageResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let id: ServiceId = parse(&r.service_id)?;
        let (owner, public) = self.visibility(&id).await?;
        authorize(&who, Action::ReadAdoption { owner: &owner, public })?;
        let land: Option<LandCode> = if r.land_code.is_empty() { None } else { Some(parse(&r.land_code)?) };
        let service_id = id.to_string();
        let rows = self.0.registry(move |reg| reg.coverage(&id, land.as_ref())).await?;
        Ok(Response::new(pb::CoverageResponse {
            service_id,
            rows: rows
                .into_iter()
                .map(|row| pb::CoverageRow {
                    level: match row.level {
                        CoverageLevel::Land => "land".into(),
                        CoverageLevel::Kreis => "kreis".into(),
                    },
                    code: row.code,
                    name: row.name,
                    adopted: row.adopted,
                    total: row.total,
                })
                .collect(),
        }))
    }

    async fn rating_summary(
        &self,
        req: Request<pb::RatingSummaryRequest>,
    ) -> Result<Response<pb::RatingSummaryResponse>, Status> {
        // Aggregates carry no comments or names, so every authenticated party may read them.
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ReadCatalog)?;
        let id: ServiceId = parse(&req.into_inner().service_id)?;
        let service_id = id.to_string();
        let summary = self.0.registry(move |r| r.rating_summary(&id)).await?;
        Ok(Response::new(pb::RatingSummaryResponse {
            service_id,
            overall: Some(aggregate_to_proto(String::new(), &summary.overall)),
            per_version: summary.per_version.iter().map(|(v, a)| aggregate_to_proto(v.to_string(), a)).collect(),
        }))
    }

    async fn feedback(&self, req: Request<pb::FeedbackRequest>) -> Result<Response<pb::FeedbackResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        let service: Option<ServiceId> = if r.service_id.is_empty() { None } else { Some(parse(&r.service_id)?) };
        let mut land: Option<LandCode> = if r.land_code.is_empty() { None } else { Some(parse(&r.land_code)?) };
        if let Some(id) = &service {
            land = Some(self.owner(id).await?);
        } else if land.is_none() {
            // A Land asking without a filter means its own services.
            if let Identity::Land(l) = &who {
                land = Some(l.clone());
            }
        }
        authorize(&who, Action::ReadFeedback { owner: land.as_ref() })?;
        let resp = self
            .0
            .registry(move |reg| {
                let fb = reg.feedback(land.as_ref(), service.as_ref())?;
                Ok(pb::FeedbackResponse {
                    ratings: fb
                        .ratings
                        .iter()
                        .map(|x| Ok(rating_to_proto(x, &name_of(reg, &x.ags)?)))
                        .collect::<efa_registry::Result<_>>()?,
                    rejections: fb
                        .rejections
                        .iter()
                        .map(|e| {
                            Ok(pb::Rejection {
                                ags: e.ags.to_string(),
                                kommune_name: name_of(reg, &e.ags)?,
                                service_id: e.service_id.to_string(),
                                version: e.version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                                reason: e.reason.clone(),
                                at_ms: e.at_ms,
                            })
                        })
                        .collect::<efa_registry::Result<_>>()?,
                })
            })
            .await?;
        Ok(Response::new(resp))
    }
}
