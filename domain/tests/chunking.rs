//! Content-defined chunking: a local edit of a large file changes only the chunks around it,
//! so an update moves only those.

use efa_domain::bundle::{chunk_reader, BundleLimits, BundlePath, Digest, FileEntry, Manifest, MANIFEST_FORMAT};
use efa_testkit::Rng;

#[test]
fn a_local_edit_changes_few_chunks() {
    // Random content, like compressed forms or PDFs in a real bundle.
    let mut data = Rng::new(0x9E37_79B9_7F4A_7C15).bytes(4_000_000);
    let a = chunk_reader(&data[..], "a").unwrap();
    data.splice(2_000_000..2_000_000, b"eine kleine Aenderung".iter().copied());
    let b = chunk_reader(&data[..], "b").unwrap();
    assert_eq!(a.iter().map(|c| c.size).sum::<u64>(), 4_000_000);
    let new_bytes: u64 = b.iter().filter(|c| !a.contains(c)).map(|c| c.size).sum();
    assert!(new_bytes <= 2 * 1024 * 1024, "{new_bytes} bytes changed for a 21-byte insertion");

    let mut m = Manifest {
        format: MANIFEST_FORMAT,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.0.0".into(),
        channel: "stable".parse().unwrap(),
        land: "05".parse().unwrap(),
        created_at_ms: 0,
        parameters: None,
        files: vec![FileEntry {
            path: BundlePath::parse("a", &BundleLimits::default()).unwrap(),
            size: 4_000_000,
            digest: Digest::of(b"a"),
            chunks: a,
        }],
    };
    assert!(m.validate(&BundleLimits::default()).is_ok());
    m.files[0].chunks.pop();
    assert!(m.validate(&BundleLimits::default()).is_err(), "chunks must add up to the file size");
}
