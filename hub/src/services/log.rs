//! `LogService`: the transparency log's checkpoints, proofs and tiles, and witnesses'
//! cosignatures. Everything served is bounded by the newest signed checkpoint.

use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::{authorize, Action};
use efa_proto::v1 as pb;
use efa_proto::v1::log_service_server::LogService;
use efa_tlog::checkpoint::{WitnessVerifier, MAX_NOTE, MAX_SIGNATURES};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `LogService` implementation.
pub struct Log(pub Arc<HubState>);

fn hashes(proof: Vec<efa_tlog::Hash>) -> Vec<Vec<u8>> {
    proof.into_iter().map(|h| h.0.to_vec()).collect()
}

#[tonic::async_trait]
impl LogService for Log {
    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadLog).map_err(status)?;
        match self.0.registry(|r| r.latest_checkpoint()).await? {
            Some((_, note)) => Ok(Response::new(pb::SignedCheckpoint { note })),
            None => Err(Status::unavailable("the hub has not signed a checkpoint of its log yet; try again shortly")),
        }
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::Proof>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadLog).map_err(status)?;
        let r = req.into_inner();
        let proof = self.0.registry(move |reg| reg.consistency_proof(r.old_size, r.new_size)).await?;
        Ok(Response::new(pb::Proof { hashes: hashes(proof) }))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadLog).map_err(status)?;
        let r = req.into_inner();
        let tree_size = r.tree_size;
        let (index, leaf, proof) = if r.service_id.is_empty() && r.version.is_empty() {
            let index = r.index;
            let (leaf, proof) = self.0.registry(move |reg| reg.inclusion_proof(index, tree_size)).await?;
            (index, leaf, proof)
        } else {
            let service: efa_domain::model::ids::ServiceId =
                efa_proto::convert::parse(&r.service_id).map_err(status)?;
            let version = efa_domain::model::ids::parse_version(&r.version).map_err(status)?;
            let (s, v) = (service.to_string(), version.to_string());
            self.0.registry(move |reg| reg.release_inclusion_proof(&s, &v, tree_size)).await?
        };
        Ok(Response::new(pb::InclusionProof { index, tree_size, leaf, hashes: hashes(proof) }))
    }

    async fn get_tile(&self, req: Request<pb::GetTileRequest>) -> Result<Response<pb::Tile>, Status> {
        authorize(&self.0.auth.identify(&req)?, Action::ReadLog).map_err(status)?;
        let path = req.into_inner().path;
        let (tile, data) = self.0.registry(move |reg| reg.log_tile(&path)).await?;
        Ok(Response::new(pb::Tile { path: tile.to_string(), data }))
    }

    async fn erase_leaf_text(
        &self,
        req: Request<pb::EraseLeafTextRequest>,
    ) -> Result<Response<pb::EraseLeafTextResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::EraseLogText).map_err(status)?;
        let index = req.into_inner().index;
        let erased = self.0.registry(move |reg| reg.erase_beside_text(index)).await?;
        tracing::info!(index, erased, caller = %who, "erasure request: text beside the log");
        Ok(Response::new(pb::EraseLeafTextResponse { erased }))
    }

    async fn add_cosignature(
        &self,
        req: Request<pb::AddCosignatureRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        let who = self.0.auth.identify(&req)?;
        authorize(&who, Action::Cosign).map_err(status)?;
        let r = req.into_inner();
        if r.note.len() > MAX_NOTE {
            return Err(Status::invalid_argument(format!("the checkpoint is larger than {MAX_NOTE} bytes")));
        }
        let witness =
            WitnessVerifier::new(&r.witness_key).map_err(|e| Status::invalid_argument(format!("witness_key: {e}")))?;
        let (_, size, _) =
            efa_tlog::checkpoint::peek(&r.note).map_err(|e| Status::invalid_argument(format!("note: {e}")))?;
        let stored = self
            .0
            .registry(move |reg| reg.checkpoint(size))
            .await?
            .ok_or_else(|| Status::not_found(format!("the hub signed no checkpoint of {size} leaves")))?;
        let merged = efa_tlog::checkpoint::merge_cosignature(&stored, &r.note, &witness)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if efa_tlog::checkpoint::signature_count(&merged) > MAX_SIGNATURES {
            return Err(Status::resource_exhausted(format!("a checkpoint keeps at most {MAX_SIGNATURES} signatures")));
        }
        tracing::info!(witness = witness.name(), size, caller = %who, "checkpoint cosigned");
        let note = merged.clone();
        // A cosignature is not re-made after a crash: durable before it is acknowledged.
        self.0.registry(move |reg| reg.put_checkpoint(size, note).and_then(|()| reg.flush_log())).await?;
        Ok(Response::new(pb::SignedCheckpoint { note: merged }))
    }
}
