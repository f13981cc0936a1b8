//! Keys and transaction helpers shared by the sled store's modules.

use super::SEQ_KEY;
use crate::error::Error;
use crate::store::codec::{decode, encode, Record};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::release::Release;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// Keys of the blob index for a release: digest (32 bytes) + service\0version.
pub(super) fn blob_ref_keys(release: &Release) -> Vec<Vec<u8>> {
    let owner = key(&[release.service_id.as_str().as_bytes(), release.version.to_string().as_bytes()]);
    efa_domain::bundle::Manifest::blob_digests(&release.manifest)
        .into_iter()
        .map(|d| {
            let mut k = d.0.to_vec();
            k.extend_from_slice(&owner);
            k
        })
        .collect()
}

pub(super) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn prefix(part: &[u8]) -> Vec<u8> {
    let mut k = part.to_vec();
    k.push(0);
    k
}

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

pub(super) fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn from_tx(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

/// Reads and decodes a value inside a transaction; a corrupt value aborts it.
pub(super) fn tx_get<T: Record>(tree: &TransactionalTree, name: &'static str, k: &[u8]) -> TxResult<Option<T>> {
    match tree.get(k)? {
        Some(bytes) => decode(name, &bytes).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Appends an event inside a transaction: bumps the sequence and stores the record.
pub(super) fn append_event(
    meta: &TransactionalTree,
    events: &TransactionalTree,
    at_ms: i64,
    kind: EventKind,
) -> TxResult<Event> {
    let last = meta.get(SEQ_KEY)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0);
    let event = Event { seq: last + 1, at_ms, kind };
    meta.insert(SEQ_KEY, &event.seq.to_be_bytes())?;
    events.insert(&event.seq.to_be_bytes(), encode(&event))?;
    Ok(event)
}

/// Writes a new release and its blob index inside a transaction; an existing version aborts it.
pub(super) fn insert_release_tx(
    releases: &TransactionalTree,
    blob_refs: &TransactionalTree,
    inline_blobs: &TransactionalTree,
    k: &[u8],
    refs: &[Vec<u8>],
    release: &Release,
    inline: &[crate::store::InlineBlob],
) -> TxResult<()> {
    if releases.get(k)?.is_some() {
        return abort(Error::already_exists(format!(
            "release {} {} already exists; published versions are immutable, publish a new version",
            release.service_id, release.version
        )));
    }
    releases.insert(k, encode(release))?;
    for r in refs {
        blob_refs.insert(r.as_slice(), &[])?;
    }
    for b in inline {
        inline_blobs.insert(&b.digest.0, b.bytes.as_slice())?;
    }
    Ok(())
}

/// The event of a release's publication.
pub(super) fn published(release: &Release) -> EventKind {
    EventKind::ReleasePublished { service_id: release.service_id.clone(), version: release.version.clone() }
}

/// Key of a rollout: service\0version for the building Land's (as before offering Länder
/// had plans of their own), service\0version\0land for an offering Land's.
pub(super) fn rollout_key(
    service: &efa_domain::model::ids::ServiceId,
    version: &semver::Version,
    land: Option<&efa_domain::model::ids::LandCode>,
) -> Vec<u8> {
    let v = version.to_string();
    match land {
        None => key(&[service.as_str().as_bytes(), v.as_bytes()]),
        Some(l) => key(&[service.as_str().as_bytes(), v.as_bytes(), l.as_str().as_bytes()]),
    }
}
