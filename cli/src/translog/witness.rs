//! `efa log witness`: cosign checkpoints that extend the one cosigned before.

use super::mirror::consistency_proof;
use super::*;

/// A witness's key: signs cosignatures; its verifier key names it to the hub and to nodes.
pub struct Witness {
    cosigner: Cosigner,
    verifier_key: String,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({})", self.verifier_key)
    }
}

impl Witness {
    /// The verifier key (`<name>+<id>+<base64>`) nodes and auditors configure.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The witness key from its private text (`PRIVATE+KEY+<name>+<id>+<base64>`).
    pub fn from_text(text: &str) -> Result<Self> {
        let cosigner = Cosigner::from_text(text).map_err(|e| LogError::invalid("witness key", e))?;
        let verifier_key = cosigner.verifier_key();
        Ok(Witness { cosigner, verifier_key })
    }
}

/// Creates a witness key named `name` in `out` (new file, owner-only) and returns its
/// verifier key.
pub fn create_witness_key(name: &str, out: &Path) -> Result<String> {
    let (private, public) = Cosigner::generate(name).map_err(|e| LogError::invalid("witness name", e))?;
    crate::keys::write_private(out, &format!("{private}\n")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            LogError::invalid(out.display().to_string(), "exists; refusing to overwrite a witness key")
        } else {
            LogError::io(out)(e)
        }
    })?;
    Ok(public)
}

/// Reads a witness key file, refusing one that group or others can read (as ssh does).
pub fn read_witness_key(path: &Path) -> Result<Witness> {
    if let Some(mode) = crate::keys::readable_by_others(path).map_err(LogError::io(path))? {
        return Err(LogError::invalid(
            path.display().to_string(),
            format!("readable by other users (mode {mode:o}); run `chmod 600 {}`", path.display()),
        ));
    }
    let text = String::from_utf8(read_bounded(path, MAX_KEY)?)
        .map_err(|_| LogError::invalid(path.display().to_string(), "not a key"))?;
    Witness::from_text(&text)
}

/// What one witness round did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WitnessOutcome {
    /// Cosigned the newest checkpoint, consistent with the last one cosigned.
    Cosigned {
        /// Its size.
        size: u64,
        /// Its root, base64.
        root: String,
    },
    /// The newest checkpoint carries this witness's cosignature already.
    AlreadyCosigned {
        /// Its size.
        size: u64,
    },
}

/// One round of a witness: opens the hub's newest checkpoint with `trust` (the log's key),
/// checks the hub's consistency proof from the checkpoint kept in `state` (none on the first
/// round), and only then keeps the new checkpoint in `state` and sends the cosignature.
/// An inconsistent log is [`LogError::Inconsistent`], and nothing is cosigned or kept.
pub async fn witness_round(
    client: &LogServiceClient<Channel>,
    trust: &Trust,
    witness: &Witness,
    state: &Path,
    now_unix_secs: u64,
) -> Result<WitnessOutcome> {
    let last = if state.exists() {
        let note = read_bounded(state, MAX_NOTE)?;
        Some(trust.open(&note).map_err(|e| LogError::invalid(state.display().to_string(), e))?)
    } else {
        None
    };
    let note = Source::Hub(client.clone()).checkpoint().await?;
    let cp = trust.open(&note).map_err(|e| LogError::invalid("the hub's checkpoint", e))?;
    if let Some(last) = &last {
        let proof = if last.size > 0 && last.size < cp.size {
            consistency_proof(client, last.size, cp.size).await?
        } else {
            vec![]
        };
        check_consistency(&proof, last.size, last.root, cp.size, cp.root).map_err(|e| match e {
            efa_tlog::Error::Inconsistent(why) => LogError::Inconsistent(format!(
                "refusing to cosign: the hub's checkpoint ({} leaves, root {}) is inconsistent with the one this \
                 witness cosigned ({} leaves, root {}, kept in {}): {why}",
                cp.size,
                cp.root,
                last.size,
                last.root,
                state.display()
            )),
            other => LogError::invalid("the hub's consistency proof", other),
        })?;
    }
    let mine = trust
        .clone()
        .with_witnesses(std::slice::from_ref(&witness.verifier_key), 1)
        .map_err(|e| LogError::invalid("witness key", e))?;
    if mine.open(&note).is_ok() {
        if last.as_ref().map(|l| l.size) != Some(cp.size) {
            write_atomic(state, &note, true)?;
        }
        return Ok(WitnessOutcome::AlreadyCosigned { size: cp.size });
    }
    let cosigned = witness.cosigner.cosign(&cp.note, now_unix_secs).map_err(|e| LogError::invalid("cosigning", e))?;
    // Kept before it is sent: once a cosignature has left, no later round may accept a
    // checkpoint inconsistent with it, even after a crash right here.
    write_atomic(state, &cosigned, true)?;
    client
        .clone()
        .add_cosignature(pb::AddCosignatureRequest { note: cosigned, witness_key: witness.verifier_key.clone() })
        .await
        .map_err(LogError::hub("AddCosignature"))?;
    Ok(WitnessOutcome::Cosigned { size: cp.size, root: cp.root.to_string() })
}
