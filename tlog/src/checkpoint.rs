//! Signed checkpoints (C2SP tlog-checkpoint in a C2SP signed note) and witness
//! cosignatures (C2SP tlog-cosignature, Ed25519 `cosignature/v1`).
//!
//! The log's key is a signed-note key: its name is the log's origin, so a node configures
//! one string (`efa-hub.example/log+1a2b3c4d+AQ...`) and knows both. A witness key is the
//! same text with signature type 0x04; a witness signs
//! `cosignature/v1\ntime <unix seconds>\n` followed by the checkpoint body, and its
//! signature is the 8-byte big-endian time followed by the Ed25519 signature.

use crate::{Error, Hash, Result};
use base64::prelude::{Engine, BASE64_STANDARD};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, Verifier, VerifierList};

/// Signature type of a witness (cosigner) key, C2SP tlog-cosignature.
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Longest note we open: a checkpoint with a few dozen cosignatures fits many times over.
pub const MAX_NOTE: usize = 16 * 1024;
/// Most cosignatures kept on one checkpoint.
pub const MAX_SIGNATURES: usize = 32;

/// The log's private key (`PRIVATE+KEY+<origin>+<id>+<base64>`), which signs checkpoints.
#[derive(Clone)]
pub struct LogSigner(StandardSigner);

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogSigner({})", self.0.name())
    }
}

impl LogSigner {
    /// A new key for the log named `origin` (e.g. `efa-hub.example/log`): the private key
    /// text to keep and the verifier key to hand to nodes, auditors and witnesses.
    pub fn generate(origin: &str) -> Result<(String, String)> {
        check_name(origin)?;
        Ok(signed_note::generate_key(&mut rand_core::OsRng, origin))
    }

    /// The key from its text form.
    pub fn from_text(skey: &str) -> Result<Self> {
        StandardSigner::new(skey.trim())
            .map(LogSigner)
            .map_err(|e| Error::malformed("log signing key", format!("{e} (want PRIVATE+KEY+<origin>+<id>+<key>)")))
    }

    /// The log's origin: the checkpoints' first line and the key's name.
    pub fn origin(&self) -> &str {
        self.0.name()
    }

    /// Signs the checkpoint of a tree of `size` leaves with `root`: the signed note's bytes.
    pub fn sign(&self, size: u64, root: Hash) -> Result<Vec<u8>> {
        let body = checkpoint_body(self.origin(), size, root)?;
        let mut note = Note::new(&body, &[]).map_err(|e| Error::Signature(e.to_string()))?;
        note.add_sigs(&[&self.0]).map_err(|e| Error::Signature(e.to_string()))?;
        Ok(note.to_bytes())
    }
}

/// Whether `name` can name a log or a witness: non-empty, no spaces or '+', at most 200 characters.
pub fn is_key_name(name: &str) -> bool {
    signed_note::is_key_name_valid(name) && name.len() <= 200
}

fn check_name(name: &str) -> Result<()> {
    if is_key_name(name) {
        Ok(())
    } else {
        Err(Error::malformed("key name", "non-empty, at most 200 characters, no spaces or '+'"))
    }
}

/// The body of a checkpoint: origin, size and base64 root hash, each on its own line.
pub fn checkpoint_body(origin: &str, size: u64, root: Hash) -> Result<Vec<u8>> {
    tlog_tiles::Checkpoint::new(origin, size, root, "")
        .map(|c| c.to_bytes())
        .map_err(|e| Error::malformed("checkpoint", e.to_string()))
}

/// The verifier key (`<origin>+<id>+<base64>`) of a log signing key's text.
pub fn verifier_key(skey: &str) -> Result<String> {
    let bad = |why: &str| Error::malformed("log signing key", why.to_string());
    let rest = skey.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| bad("no PRIVATE+KEY+ prefix"))?;
    let (name, _, key) = split_key(rest).ok_or_else(|| bad("not name+id+key"))?;
    let [_, seed @ ..] = key.as_slice() else { return Err(bad("empty key")) };
    let seed: [u8; 32] = seed.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
    LogSigner::from_text(skey)?;
    Ok(signed_note::new_ed25519_verifier_key(&name, &SigningKey::from_bytes(&seed).verifying_key()))
}

/// Whom a node or an auditor trusts: the log's key and the witnesses it counts.
#[derive(Clone)]
pub struct Trust {
    log: StandardVerifier,
    log_text: String,
    witnesses: Vec<WitnessVerifier>,
    /// Cosignatures of distinct configured witnesses a checkpoint needs.
    pub min_witnesses: usize,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("log", &self.log_text)
            .field("witnesses", &self.witnesses.iter().map(|w| &w.text).collect::<Vec<_>>())
            .field("min_witnesses", &self.min_witnesses)
            .finish()
    }
}

impl Trust {
    /// Trust in the log whose verifier key is `log_key`, needing no witness.
    pub fn new(log_key: &str) -> Result<Self> {
        let log = StandardVerifier::new(log_key.trim())
            .map_err(|e| Error::malformed("log key", format!("{e} (want <origin>+<id>+<key>)")))?;
        Ok(Trust { log, log_text: log_key.trim().to_string(), witnesses: Vec::new(), min_witnesses: 0 })
    }

    /// Also counts cosignatures by these witness keys, and needs `min` of them.
    pub fn with_witnesses(mut self, keys: &[String], min: usize) -> Result<Self> {
        self.witnesses = keys.iter().map(|k| WitnessVerifier::new(k)).collect::<Result<_>>()?;
        if min > self.witnesses.len() {
            return Err(Error::malformed(
                "witness policy",
                format!("{min} cosignatures needed but only {} witness keys configured", self.witnesses.len()),
            ));
        }
        self.min_witnesses = min;
        Ok(self)
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.log.name()
    }

    /// Opens a signed checkpoint: the log's signature must be valid, and `min_witnesses`
    /// distinct configured witnesses must have cosigned it. Unknown signatures are ignored.
    pub fn open(&self, note: &[u8]) -> Result<Checkpoint> {
        if note.len() > MAX_NOTE {
            return Err(Error::malformed("checkpoint", format!("{} bytes is more than {MAX_NOTE}", note.len())));
        }
        let parsed = Note::from_bytes(note).map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
        let mut verifiers: Vec<Box<dyn Verifier>> = vec![Box::new(self.log.clone())];
        verifiers.extend(self.witnesses.iter().map(|w| Box::new(w.clone()) as Box<dyn Verifier>));
        let (verified, _unknown) = parsed.verify(&VerifierList::new(verifiers)).map_err(|e| match e {
            signed_note::NoteError::UnverifiedNote => {
                Error::Signature(format!("not signed by the log key {}", self.log.name()))
            }
            other => Error::Signature(other.to_string()),
        })?;
        if !verified.iter().any(|s| s.name() == self.log.name() && s.id() == self.log.key_id()) {
            return Err(Error::Signature(format!("not signed by the log key {}", self.log.name())));
        }
        let cosigned: Vec<String> = self
            .witnesses
            .iter()
            .filter(|w| verified.iter().any(|s| s.name() == w.name && s.id() == w.id))
            .map(|w| w.name.clone())
            .collect();
        if cosigned.len() < self.min_witnesses {
            return Err(Error::Signature(format!(
                "{} of the {} witness cosignatures needed (cosigned by: {})",
                cosigned.len(),
                self.min_witnesses,
                if cosigned.is_empty() { "none".to_string() } else { cosigned.join(", ") }
            )));
        }
        let body = tlog_tiles::Checkpoint::from_bytes(parsed.text())
            .map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
        if body.origin() != self.log.name() {
            return Err(Error::Signature(format!(
                "checkpoint of log {:?}, but the key is for {:?}",
                body.origin().chars().take(100).collect::<String>(),
                self.log.name()
            )));
        }
        Ok(Checkpoint { size: body.size(), root: *body.hash(), note: note.to_vec(), witnesses: cosigned })
    }
}

/// A checkpoint whose signatures were checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Leaves in the tree.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
    /// The signed note as received (log signature and cosignatures).
    pub note: Vec<u8>,
    /// Configured witnesses that cosigned it.
    pub witnesses: Vec<String>,
}

/// A witness's private key: cosigns checkpoints it has checked to be consistent.
pub struct Cosigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({})", self.name)
    }
}

impl Cosigner {
    /// A new witness key named `name` (e.g. `witness.nrw.example/efa`): the private key text
    /// and the verifier key text for nodes.
    pub fn generate(name: &str) -> Result<(String, String)> {
        check_name(name)?;
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let public = [&[ALG_COSIGNATURE_V1][..], key.verifying_key().as_bytes()].concat();
        let id = signed_note::key_id(name, &public);
        let private = [&[ALG_COSIGNATURE_V1][..], key.as_bytes()].concat();
        Ok((
            format!("PRIVATE+KEY+{name}+{id:08x}+{}", BASE64_STANDARD.encode(private)),
            format!("{name}+{id:08x}+{}", BASE64_STANDARD.encode(public)),
        ))
    }

    /// The key from its text form.
    pub fn from_text(skey: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::malformed("witness signing key", format!("{why} (want PRIVATE+KEY+<name>+<id>+<key>)"));
        let rest = skey.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| bad("no PRIVATE+KEY+ prefix"))?;
        let (name, id, key) = split_key(rest).ok_or_else(|| bad("not name+id+key"))?;
        let [alg, seed @ ..] = key.as_slice() else { return Err(bad("empty key")) };
        if *alg != ALG_COSIGNATURE_V1 {
            return Err(bad("not a cosignature/v1 (type 0x04) key"));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let key = SigningKey::from_bytes(&seed);
        let public = [&[ALG_COSIGNATURE_V1][..], key.verifying_key().as_bytes()].concat();
        if signed_note::key_id(&name, &public) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(Cosigner { name, id, key })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key nodes and auditors configure (`<name>+<id>+<base64>`).
    pub fn verifier_key(&self) -> String {
        let public = [&[ALG_COSIGNATURE_V1][..], self.key.verifying_key().as_bytes()].concat();
        format!("{}+{:08x}+{}", self.name, self.id, BASE64_STANDARD.encode(public))
    }

    /// Adds this witness's cosignature, as of `time` (Unix seconds), to a signed checkpoint.
    pub fn cosign(&self, note: &[u8], time: u64) -> Result<Vec<u8>> {
        let mut parsed = Note::from_bytes(note).map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
        let signer = TimedCosigner { cosigner: self, time };
        parsed.add_sigs(&[&signer]).map_err(|e| Error::Signature(e.to_string()))?;
        Ok(parsed.to_bytes())
    }
}

struct TimedCosigner<'a> {
    cosigner: &'a Cosigner,
    time: u64,
}

impl Signer for TimedCosigner<'_> {
    fn name(&self) -> &str {
        &self.cosigner.name
    }
    fn key_id(&self) -> u32 {
        self.cosigner.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let sig = self.cosigner.key.sign(&cosigned_message(self.time, msg));
        Ok([&self.time.to_be_bytes()[..], &sig.to_bytes()].concat())
    }
}

fn cosigned_message(time: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// A witness's public key (`<name>+<id>+<base64 of 0x04 and the Ed25519 key>`).
#[derive(Clone)]
pub struct WitnessVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
    text: String,
}

impl WitnessVerifier {
    /// The key from its text form.
    pub fn new(vkey: &str) -> Result<Self> {
        let bad = |why: &str| Error::malformed("witness key", format!("{why} (want <name>+<id>+<key>)"));
        let (name, id, key) = split_key(vkey.trim()).ok_or_else(|| bad("not name+id+key"))?;
        if signed_note::key_id(&name, &key) != id {
            return Err(bad("the key id does not match the key"));
        }
        let [alg, public @ ..] = key.as_slice() else { return Err(bad("empty key")) };
        if *alg != ALG_COSIGNATURE_V1 {
            return Err(bad("not a cosignature/v1 (type 0x04) key"));
        }
        let public: [u8; 32] = public.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not an Ed25519 public key"))?;
        Ok(WitnessVerifier { name, id, key, text: vkey.trim().to_string() })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Verifier for WitnessVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((time, sig)) = sig.split_first_chunk::<8>() else { return false };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
        self.key.verify_strict(&cosigned_message(u64::from_be_bytes(*time), msg), &sig).is_ok()
    }
}

/// `name+hexid+base64` → (name, id, decoded key), for the key texts of signed-note.
fn split_key(text: &str) -> Option<(String, u32, Vec<u8>)> {
    let (name, rest) = text.split_once('+')?;
    let (id, key) = rest.split_once('+')?;
    if id.len() != 8 || !signed_note::is_key_name_valid(name) {
        return None;
    }
    let id = u32::from_str_radix(id, 16).ok()?;
    Some((name.to_string(), id, BASE64_STANDARD.decode(key).ok()?))
}

/// Adds `witness`'s cosignature from `submitted` (the stored checkpoint with the witness's
/// line added) to `stored`: the texts must be equal and the cosignature valid for that
/// witness key. Other lines of `submitted` are ignored; an earlier cosignature of the same
/// key is replaced.
pub fn merge_cosignature(stored: &[u8], submitted: &[u8], witness: &WitnessVerifier) -> Result<Vec<u8>> {
    let mut ours = Note::from_bytes(stored).map_err(|e| Error::malformed("stored checkpoint", e.to_string()))?;
    let theirs = Note::from_bytes(submitted).map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
    if ours.text() != theirs.text() {
        return Err(Error::Signature("the cosigned text is not the checkpoint the hub signed".into()));
    }
    let (verified, _) = theirs
        .verify(&VerifierList::new(vec![Box::new(witness.clone())]))
        .map_err(|e| Error::Signature(format!("no valid cosignature by {}: {e}", witness.name)))?;
    let line = verified.into_iter().next().ok_or_else(|| Error::Signature("no cosignature".into()))?;
    let replay = ReplaySigner(line);
    ours.add_sigs(&[&replay]).map_err(|e| Error::Signature(e.to_string()))?;
    Ok(ours.to_bytes())
}

/// Signs by handing back a signature made elsewhere (to add a verified cosignature line).
struct ReplaySigner(signed_note::Signature);

impl Signer for ReplaySigner {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn key_id(&self) -> u32 {
        self.0.id()
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.0.signature().to_vec())
    }
}

/// How many signature lines a signed note has (0 if it does not parse).
pub fn signature_count(note: &[u8]) -> usize {
    let text = String::from_utf8_lossy(note);
    text.split_once("\n\n").map(|(_, sigs)| sigs.lines().count()).unwrap_or(0)
}

/// A checkpoint's size and root without checking any signature: for a witness or an
/// operator looking at what a hub serves before deciding whom to trust.
pub fn peek(note: &[u8]) -> Result<(String, u64, Hash)> {
    let parsed = Note::from_bytes(note).map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
    let body =
        tlog_tiles::Checkpoint::from_bytes(parsed.text()).map_err(|e| Error::malformed("checkpoint", e.to_string()))?;
    Ok((body.origin().to_string(), body.size(), *body.hash()))
}

#[cfg(test)]
mod tests;
