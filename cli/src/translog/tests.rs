use super::*;
use efa_tlog::checkpoint::LogSigner;
use efa_tlog::tree::MemoryHashes;
use std::os::unix::fs::PermissionsExt;

fn adoption_leaf(seq: u64, ags: &str, version: &str, state: pb::AdoptionState) -> Vec<u8> {
    pb::LogLeaf {
        format: 1,
        seq,
        at_ms: 0,
        kind: Some(pb::log_leaf::Kind::AdoptionReported(pb::LeafAdoption {
            ags: ags.into(),
            service_id: "wohngeld-nrw".into(),
            version: version.into(),
            state: state as i32,
            reason: None,
        })),
    }
    .encode_to_vec()
}

/// Writes a log of `leaves` in the C2SP layout under `dir`; returns its verifier key.
fn write_log(dir: &Path, leaves: &[Vec<u8>]) -> (String, LogSigner) {
    let (skey, vkey) = LogSigner::generate("test.example/log").unwrap();
    let signer = LogSigner::from_text(&skey).unwrap();
    let mut hashes = MemoryHashes::default();
    hashes.append(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
    let size = leaves.len() as u64;
    for tile in TilePath::all(size) {
        let data = match tile {
            TilePath::Hashes { level, index, width } => {
                efa_tlog::tiles::hash_tile(level, index, width, &hashes).unwrap()
            }
            TilePath::Entries { index, width } => {
                let first = (index * WIDTH) as usize;
                efa_tlog::tiles::entry_bundle(&leaves[first..first + usize::from(width)]).unwrap()
            }
        };
        write_atomic(&dir.join(tile.to_string()), &data, false).unwrap();
    }
    let root = efa_tlog::tree::root(size, &hashes).unwrap();
    write_atomic(&dir.join("checkpoint"), &signer.sign(size, root).unwrap(), false).unwrap();
    (vkey, signer)
}

#[tokio::test]
async fn a_directory_log_verifies_and_its_adoption_is_folded_per_kommune() {
    let dir = tempfile::tempdir().unwrap();
    let mut leaves = vec![
        adoption_leaf(1, "05913000", "1.0.0", pb::AdoptionState::Deployed),
        adoption_leaf(2, "05113000", "1.0.0", pb::AdoptionState::Deployed),
        adoption_leaf(3, "05113000", "", pb::AdoptionState::Retired),
        adoption_leaf(4, "09162000", "", pb::AdoptionState::Rejected),
        adoption_leaf(5, "05913000", "1.1.0", pb::AdoptionState::RolledBack),
    ];
    for seq in 6..=300 {
        leaves.push(adoption_leaf(seq, "05711000", "1.0.0", pb::AdoptionState::Evaluating));
    }
    let (vkey, _) = write_log(dir.path(), &leaves);
    let trust = Trust::new(&vkey).unwrap();
    let r = verify(&Source::Dir(dir.path().into()), &trust, vec![], &|_, _| {}).await.unwrap();
    assert_eq!(r.size, 300);
    assert_eq!(r.adoption_reports, 300);
    let f = &r.services[0];
    assert_eq!((f.running, f.rejected), (1, 1), "Dortmund still runs 1.0.0 after the rollback");
    assert_eq!(f.running_per_land, BTreeMap::from([("05".to_string(), 1)]));
}

#[tokio::test]
async fn a_leaf_changed_after_signing_or_a_wrong_seq_is_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> =
        (1..=10).map(|s| adoption_leaf(s, "05913000", "1.0.0", pb::AdoptionState::Deployed)).collect();
    let (vkey, signer) = write_log(dir.path(), &leaves);
    let trust = Trust::new(&vkey).unwrap();
    let kept = open_checkpoint_file(&trust, &dir.path().join("checkpoint")).unwrap();

    // A rewritten log, signed anew: the kept checkpoint names the size.
    let mut changed = leaves.clone();
    changed[3] = adoption_leaf(4, "05913000", "1.0.0", pb::AdoptionState::Failed);
    let other = tempfile::tempdir().unwrap();
    let (_, _) = write_log(other.path(), &changed);
    let mut hashes = MemoryHashes::default();
    hashes.append(&changed.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
    let note = signer.sign(10, efa_tlog::tree::root(10, &hashes).unwrap()).unwrap();
    write_atomic(&other.path().join("checkpoint"), &note, false).unwrap();
    let err = verify(&Source::Dir(other.path().into()), &trust, vec![kept], &|_, _| {}).await.unwrap_err();
    assert!(err.is_inconsistent(), "{err}");
    assert!(err.to_string().contains("at size 10"), "{err}");

    // Signed leaves that lie about their seq.
    let lying: Vec<Vec<u8>> =
        (1..=3).map(|s| adoption_leaf(s + 1, "05913000", "1.0.0", pb::AdoptionState::Deployed)).collect();
    let third = tempfile::tempdir().unwrap();
    let (vkey, _) = write_log(third.path(), &lying);
    let err =
        verify(&Source::Dir(third.path().into()), &Trust::new(&vkey).unwrap(), vec![], &|_, _| {}).await.unwrap_err();
    assert!(err.is_inconsistent() && err.to_string().contains("not event 1"), "{err}");
}

#[tokio::test]
async fn a_tile_of_the_wrong_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (1..=3).map(|s| vec![s as u8; 5]).collect();
    let (_vkey, _) = write_log(dir.path(), &leaves);
    std::fs::write(dir.path().join("tile/0/000.p/3"), [0u8; 95]).unwrap();
    let s = Source::Dir(dir.path().into());
    let err = s.tile(TilePath::Hashes { level: 0, index: 0, width: 3 }).await.unwrap_err();
    assert!(matches!(err, LogError::Invalid { .. }), "{err}");
    assert!(s.tile(TilePath::Entries { index: 0, width: 3 }).await.is_ok());
    assert!(s.tile(TilePath::Entries { index: 0, width: 2 }).await.is_err());
}

#[test]
fn a_witness_key_round_trips_privately() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.key");
    let vkey = create_witness_key("witness.example/efa", &path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let w = read_witness_key(&path).unwrap();
    assert_eq!(w.verifier_key(), vkey);
    assert!(create_witness_key("witness.example/efa", &path).is_err(), "never overwritten");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(read_witness_key(&path).unwrap_err().to_string().contains("chmod 600"));
    assert_eq!(key_arg(" abc \n").unwrap(), "abc");
}
