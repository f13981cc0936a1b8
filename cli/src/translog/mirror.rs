//! `efa log mirror`: a static C2SP tlog-tiles copy of the log.

use super::*;

/// What [`mirror`] did.
#[derive(Clone, Debug, Serialize)]
pub struct MirrorReport {
    /// Leaves in the checkpoint now in the directory.
    pub size: u64,
    /// Files written.
    pub written: u64,
    /// Full tiles already present (they never change), left as they were.
    pub present: u64,
}

/// Copies the log from the hub behind `source` into `to` in the C2SP tlog-tiles layout:
/// every hash tile and entry bundle of the newest checkpoint's tree, then the checkpoint, so
/// a reader never sees a checkpoint whose tiles are missing. A checkpoint already in `to`
/// must be a prefix of the new one (by the hub's consistency proof); otherwise nothing is
/// written and the error is [`LogError::Inconsistent`].
pub async fn mirror(source: &Source, to: &Path) -> Result<MirrorReport> {
    let Source::Hub(client) = source else {
        return Err(LogError::invalid("mirror", "copies from a hub"));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let note = source.checkpoint().await?;
        let (_, size, root) = peek(&note).map_err(|e| LogError::invalid("the hub's checkpoint", e))?;
        check_mirror_prefix(client, to, size, root).await?;
        match copy_tiles(source, to, size).await {
            Ok((written, present)) => {
                write_atomic(&to.join("checkpoint"), &note, true)?;
                return Ok(MirrorReport { size, written: written + 1, present });
            }
            // A newer checkpoint replaced the one being copied, and with it the partial
            // tiles the hub serves; the full tiles written so far stay.
            Err(e) if e.out_of_range() && attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Refuses to replace a mirror's checkpoint with one that does not extend it.
async fn check_mirror_prefix(client: &LogServiceClient<Channel>, to: &Path, size: u64, root: Hash) -> Result<()> {
    let path = to.join("checkpoint");
    if !path.exists() {
        return Ok(());
    }
    let old = read_bounded(&path, MAX_NOTE)?;
    let (_, old_size, old_root) = peek(&old).map_err(|e| LogError::invalid(path.display().to_string(), e))?;
    let proof = if old_size > 0 && old_size < size { consistency_proof(client, old_size, size).await? } else { vec![] };
    check_consistency(&proof, old_size, old_root, size, root).map_err(|e| match e {
        efa_tlog::Error::Inconsistent(why) => LogError::Inconsistent(format!(
            "the hub's log does not extend the copy in {} ({old_size} leaves); nothing was written: {why}",
            to.display()
        )),
        other => LogError::invalid("the hub's consistency proof", other),
    })
}

async fn copy_tiles(source: &Source, to: &Path, size: u64) -> Result<(u64, u64)> {
    let mut tiles = TilePath::all(size).into_iter();
    let (mut written, mut present) = (0u64, 0u64);
    let mut queue: VecDeque<JoinHandle<Result<bool>>> = VecDeque::new();
    let run = async {
        loop {
            while queue.len() < IN_FLIGHT {
                let Some(tile) = tiles.next() else { break };
                let (s, path) = (source.clone(), to.join(tile.to_string()));
                queue.push_back(tokio::spawn(async move {
                    let full = match tile {
                        TilePath::Hashes { width, .. } | TilePath::Entries { width, .. } => u64::from(width) == WIDTH,
                    };
                    // Full tiles never change; partial ones are small and fetched again.
                    if full && path.exists() {
                        return Ok(false);
                    }
                    let data = s.tile(tile).await?;
                    tokio::task::spawn_blocking(move || write_atomic(&path, &data, false)).await.map_err(joined)??;
                    Ok(true)
                }));
            }
            let Some(h) = queue.pop_front() else { return Ok::<_, LogError>(()) };
            if h.await.map_err(joined)?? {
                written += 1;
            } else {
                present += 1;
            }
        }
    };
    let ran = run.await;
    for h in &queue {
        h.abort();
    }
    ran.map(|()| (written, present))
}

pub(super) async fn consistency_proof(client: &LogServiceClient<Channel>, old: u64, new: u64) -> Result<Vec<Hash>> {
    let proof = client
        .clone()
        .get_consistency_proof(pb::ConsistencyProofRequest { old_size: old, new_size: new })
        .await
        .map_err(LogError::hub(format!("GetConsistencyProof {old} → {new}")))?
        .into_inner();
    efa_tlog::tree::proof_from_wire(&proof.hashes).map_err(|e| LogError::invalid("the hub's consistency proof", e))
}
