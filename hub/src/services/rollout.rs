//! `RolloutService`: a release's rollout plan, moves by hand, and its status.

use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::{authorize, Action};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::rollout::RolloutPlan;
use efa_proto::convert::{parse, parse_opt, rollout_status};
use efa_proto::v1 as pb;
use efa_proto::v1::rollout_service_server::RolloutService;
use efa_registry::RolloutAction;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `RolloutService` implementation.
pub struct Rollouts(pub Arc<HubState>);

impl Rollouts {
    async fn status_of(
        &self,
        service: ServiceId,
        version: String,
        land: Option<LandCode>,
    ) -> Result<pb::RolloutStatus, Status> {
        let (sid, v, l) = (service.to_string(), version.clone(), land.clone());
        let (rollout, counts) =
            self.0.registry(move |reg| reg.rollout_with_counts(&service, &version, l.as_ref())).await?;
        Ok(rollout_status(&sid, &v, land.as_ref(), &rollout, &counts, efa_domain::now_ms()))
    }
}

#[tonic::async_trait]
impl RolloutService for Rollouts {
    async fn set_rollout_plan(
        &self,
        req: Request<pb::SetRolloutPlanRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ManageService { owner: None }).map_err(status)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id).map_err(status)?;
        let plan = RolloutPlan::try_from(r.plan.unwrap_or_default()).map_err(status)?;
        let (sid, version) = (service.clone(), r.version.clone());
        let (_, event) = self.0.registry(move |reg| reg.set_rollout_plan(&who, &sid, &version, plan)).await?;
        // The registry decided whose plan the caller steers; its event says which.
        let land = event.kind.rollout_land().cloned();
        tracing::info!(%service, version = %r.version, land = ?land, "rollout plan set");
        self.0.feed.publish(event);
        Ok(Response::new(self.status_of(service, r.version, land).await?))
    }

    async fn act_on_rollout(
        &self,
        req: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::ManageService { owner: None }).map_err(status)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id).map_err(status)?;
        efa_domain::text::check("reason", &r.reason, 2_000, efa_domain::text::Lines::Multi).map_err(status)?;
        let action = match pb::RolloutAction::try_from(r.action) {
            Ok(pb::RolloutAction::Promote) => RolloutAction::Promote,
            Ok(pb::RolloutAction::Pause) => RolloutAction::Pause(r.reason.clone()),
            Ok(pb::RolloutAction::Resume) => RolloutAction::Resume,
            Ok(pb::RolloutAction::Abort) => RolloutAction::Abort(r.reason.clone()),
            _ => return Err(Status::invalid_argument("action must be PROMOTE, PAUSE, RESUME or ABORT")),
        };
        if matches!(action, RolloutAction::Pause(ref why) if why.trim().is_empty()) {
            return Err(Status::invalid_argument("say why the rollout pauses (reason)"));
        }
        let (sid, version) = (service.clone(), r.version.clone());
        let (_, event) = self.0.registry(move |reg| reg.act_on_rollout(&who, &sid, &version, action)).await?;
        let land = event.kind.rollout_land().cloned();
        tracing::info!(%service, version = %r.version, action = r.action, land = ?land, "rollout moved by hand");
        self.0.feed.publish(event);
        Ok(Response::new(self.status_of(service, r.version, land).await?))
    }

    async fn get_rollout_status(
        &self,
        req: Request<pb::GetRolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadCatalog).map_err(status)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id).map_err(status)?;
        let land: Option<LandCode> = parse_opt(&r.land_code).map_err(status)?;
        Ok(Response::new(self.status_of(service, r.version, land).await?))
    }
}
