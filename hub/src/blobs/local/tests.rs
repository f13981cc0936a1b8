use super::*;
use std::time::Duration;

fn store() -> (tempfile::TempDir, LocalBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobs::open(dir.path().to_path_buf()).unwrap();
    (dir, store)
}

#[test]
fn staged_blobs_are_served_only_once_promoted() {
    let (dir, store) = store();
    let d = Digest::of(b"hello world");
    let upload = store.upload().unwrap();
    let mut w = upload.writer(d, "a.txt".into()).unwrap();
    w.write(b"hello ").unwrap();
    w.write(b"world").unwrap();
    w.finish().unwrap();
    assert!(!store.contains(&d), "staged content is not served");
    assert!(store.reader(&d, 0).unwrap().is_none());
    upload.seal("wohngeld-nrw 1.0.0").unwrap();
    upload.promote().unwrap();
    assert_eq!(std::fs::read(store.path(&d)).unwrap(), b"hello world");
    assert_eq!(std::fs::read_dir(dir.path().join("staged")).unwrap().count(), 0);
}

#[test]
fn a_failed_upload_leaves_nothing() {
    let (dir, store) = store();
    let good = Digest::of(b"first file");
    let upload = store.upload().unwrap();
    let mut w = upload.writer(good, "a.txt".into()).unwrap();
    w.write(b"first file").unwrap();
    w.finish().unwrap();
    let wrong = Digest::of(b"other");
    let mut w = upload.writer(wrong, "b.txt".into()).unwrap();
    w.write(b"tampered").unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("b.txt"), "{err}");
    drop(upload); // the publish fails
    assert!(!store.contains(&good) && !store.contains(&wrong));
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("staged")).unwrap().count(), 0);
}

#[test]
fn recovery_promotes_committed_uploads_and_gc_removes_unreferenced_content() {
    let (dir, store) = store();
    let put = |content: &[u8], release: &str, seal: bool| {
        let d = Digest::of(content);
        let upload = store.upload().unwrap();
        let mut w = upload.writer(d, "f".into()).unwrap();
        w.write(content).unwrap();
        w.finish().unwrap();
        if seal {
            upload.seal(release).unwrap();
        }
        std::mem::forget(upload); // the hub died before promoting
        d
    };
    let committed = put(b"committed", "wohngeld-nrw 1.0.0", true);
    let abandoned = put(b"abandoned", "wohngeld-nrw 1.0.1", true);
    let unsealed = put(b"unsealed", "", false);
    let is_committed = |r: &str| r == "wohngeld-nrw 1.0.0";

    // Within the grace period only the committed upload is touched.
    let r = store.recover(Duration::from_secs(3600), is_committed).unwrap();
    assert_eq!((r.uploads_promoted, r.uploads_removed), (1, 0));
    assert!(store.contains(&committed) && !store.contains(&abandoned) && !store.contains(&unsealed));
    assert_eq!(std::fs::read_dir(dir.path().join("staged")).unwrap().count(), 2);

    // A blob stored before this fix by a failed publish, now unreferenced.
    let legacy = Digest::of(b"legacy");
    let upload = store.upload().unwrap();
    let mut w = upload.writer(legacy, "l".into()).unwrap();
    w.write(b"legacy").unwrap();
    w.finish().unwrap();
    upload.promote().unwrap();

    // A young unreferenced blob survives; after the grace period it goes.
    let referenced = |d: &Digest| *d == committed;
    let r = store.collect_garbage(Duration::from_secs(3600), referenced, is_committed).unwrap();
    assert_eq!(r.blobs_removed, 0);
    let r = store.collect_garbage(Duration::ZERO, referenced, is_committed).unwrap();
    assert_eq!((r.blobs_removed, r.uploads_removed), (1, 2));
    assert_eq!(r.bytes_removed, 6);
    assert!(store.contains(&committed) && !store.contains(&legacy));
    assert_eq!(std::fs::read_dir(dir.path().join("staged")).unwrap().count(), 0);
}
