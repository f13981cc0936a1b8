//! Signing and opening against the published examples of Go's sumdb/note (the reference
//! signed-note implementation) and a real witness cosignature from the public witness
//! network, then the refusals a node relies on.

use super::*;
use crate::tree::leaf_hash;

// golang.org/x/mod/sumdb/note, the package's documented example key and note.
const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_SIG: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

// A checkpoint of a Certificate Transparency log as served with cosignatures, and the
// public key of one of its witnesses (remora.n621.de), which signs cosignature/v1.
const CT_CHECKPOINT: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
";
const REMORA_VKEY: &str = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";

#[test]
fn our_signer_reproduces_the_go_note_example_byte_for_byte() {
    let signer = StandardSigner::new(GO_SKEY).unwrap();
    let mut note = Note::new(GO_TEXT.as_bytes(), &[]).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    assert_eq!(String::from_utf8(note.to_bytes()).unwrap(), format!("{GO_TEXT}\n{GO_SIG}"));
    // And the same key, loaded as a log key, signs checkpoints a verifier with GO_VKEY opens.
    let log = LogSigner::from_text(GO_SKEY).unwrap();
    let cp = Trust::new(GO_VKEY).unwrap().open(&log.sign(5, leaf_hash(b"x")).unwrap()).unwrap();
    assert_eq!((cp.size, cp.root), (5, leaf_hash(b"x")));
}

#[test]
fn a_real_witness_cosignature_verifies_and_a_changed_checkpoint_does_not() {
    let remora = WitnessVerifier::new(REMORA_VKEY).unwrap();
    let note = Note::from_bytes(CT_CHECKPOINT.as_bytes()).unwrap();
    let (ok, _) = note.verify(&VerifierList::new(vec![Box::new(remora.clone())])).unwrap();
    assert_eq!(ok.len(), 1);
    let changed = CT_CHECKPOINT.replace("1432088532", "1432088533");
    let note = Note::from_bytes(changed.as_bytes()).unwrap();
    assert!(note.verify(&VerifierList::new(vec![Box::new(remora)])).is_err());
}

#[test]
fn checkpoints_need_the_log_key_and_the_configured_witnesses() {
    let (skey, vkey) = LogSigner::generate("efa-hub.test/log").unwrap();
    let log = LogSigner::from_text(&skey).unwrap();
    let note = log.sign(42, leaf_hash(b"leaf")).unwrap();
    let text = String::from_utf8(note.clone()).unwrap();
    assert!(text.starts_with("efa-hub.test/log\n42\n"), "{text}");

    let (w1s, w1v) = Cosigner::generate("witness.nrw.test/efa").unwrap();
    let (w2s, w2v) = Cosigner::generate("witness.by.test/efa").unwrap();
    let trust = Trust::new(&vkey).unwrap().with_witnesses(&[w1v.clone(), w2v.clone()], 2).unwrap();
    let err = trust.open(&note).unwrap_err().to_string();
    assert!(err.contains("0 of the 2"), "{err}");

    let w1 = Cosigner::from_text(&w1s).unwrap();
    assert_eq!(w1.verifier_key(), w1v);
    let once = w1.cosign(&note, 1_800_000_000).unwrap();
    let again = w1.cosign(&once, 1_800_000_001).unwrap();
    assert!(trust.open(&again).unwrap_err().to_string().contains("1 of the 2"), "one witness counts once");
    let both = Cosigner::from_text(&w2s).unwrap().cosign(&again, 1_800_000_002).unwrap();
    let cp = trust.open(&both).unwrap();
    assert_eq!(cp.size, 42);
    assert_eq!(cp.witnesses.len(), 2);

    // Another log's key, a forged size, a cosignature on another checkpoint: refused.
    let (_, other) = LogSigner::generate("efa-hub.test/log").unwrap();
    assert!(Trust::new(&other).unwrap().open(&note).is_err());
    let forged = text.replacen("\n42\n", "\n43\n", 1);
    assert!(Trust::new(&vkey).unwrap().open(forged.as_bytes()).is_err());
    let elsewhere = log.sign(43, leaf_hash(b"leaf")).unwrap();
    let moved = String::from_utf8(elsewhere).unwrap().trim_end().to_string()
        + "\n"
        + String::from_utf8(both).unwrap().lines().last().unwrap()
        + "\n";
    assert!(trust.open(moved.as_bytes()).is_err(), "a cosignature of another checkpoint");
    assert!(Trust::new(&vkey).unwrap().with_witnesses(&[w1v], 2).is_err(), "more needed than configured");
}

#[test]
fn malformed_keys_and_notes_are_refused_with_a_reason() {
    for bad in ["", "x", "name+zz+AAAA", GO_SKEY, "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"]
    {
        assert!(Trust::new(bad).is_err(), "{bad}");
    }
    assert!(WitnessVerifier::new(GO_VKEY).is_err(), "a type 0x01 key is not a witness key");
    assert!(Cosigner::from_text(GO_SKEY).is_err());
    assert!(LogSigner::generate("has space").is_err());
    let trust = Trust::new(GO_VKEY).unwrap();
    for bad in [&b""[..], b"\n\n", b"PeterNeumann\n1\n\n", &vec![b'a'; MAX_NOTE + 1]] {
        assert!(trust.open(bad).is_err());
    }
}
