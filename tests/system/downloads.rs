//! Downloads resume where they stopped and reuse what the node already has.

use efa_node::fetch::{fetch_release, BlobCache};
use efa_node::hub::HubClient;
use efa_proto::v1 as pb;
use efa_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_and_unchanged_files_are_reused() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let v1 = w.bundle("v1", &[("formular.pdf", &big), ("index.html", "<h1>1.0.0</h1>")]);
    let v2 = w.bundle("v2", &[("formular.pdf", &big), ("index.html", "<h1>1.1.0</h1>")]);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &v1).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &v2).await.unwrap();

    let state_dir = w.dir.path().join("cache-test");
    let cache = BlobCache::new(&state_dir).unwrap();
    let m1 = w.manifest("wohngeld-nrw", "1.0.0").await;
    let pdf = m1.files.iter().find(|f| f.path.as_str() == "formular.pdf").unwrap();

    // A previous attempt got 150,000 bytes of the PDF before the connection dropped.
    let partial = state_dir.join("blobs/partial").join(pdf.digest.hex());
    std::fs::write(&partial, &big.as_bytes()[..150_000]).unwrap();
    let ch = w.channel(&kommune(DORTMUND)).await;
    let stats = fetch_release(&HubClient::new(ch.clone()), &cache, &m1, &|_, _| {}).await.unwrap();
    let html = m1.files.iter().find(|f| f.path.as_str() == "index.html").unwrap().size;
    assert_eq!(stats.bytes_downloaded, 50_000 + html, "only the missing tail and the small file move");
    assert_eq!(std::fs::read(cache.path(&pdf.digest)).unwrap(), big.as_bytes());
    assert!(!partial.exists());

    // 1.1.0 shares the PDF: only its new index.html moves.
    let m2 = w.manifest("wohngeld-nrw", "1.1.0").await;
    let stats = fetch_release(&HubClient::new(ch.clone()), &cache, &m2, &|_, _| {}).await.unwrap();
    assert_eq!((stats.files, stats.files_reused), (2, 1));
    assert_eq!(stats.bytes_downloaded, m2.files.iter().find(|f| f.path.as_str() == "index.html").unwrap().size);

    // A corrupt partial (wrong bytes) is detected by the digest and discarded, not deployed.
    let m1_html = m1.files.iter().find(|f| f.path.as_str() == "index.html").unwrap();
    std::fs::remove_file(cache.path(&pdf.digest)).unwrap();
    std::fs::write(&partial, vec![b'X'; 150_000]).unwrap();
    let err = fetch_release(&HubClient::new(ch.clone()), &cache, &m1, &|_, _| {}).await.unwrap_err().to_string();
    assert!(err.contains("digest"), "{err}");
    assert!(!partial.exists(), "a partial that fails verification is removed");
    assert!(cache.path(&m1_html.digest).exists());
    // The next attempt starts over and succeeds.
    fetch_release(&HubClient::new(ch), &cache, &m1, &|_, _| {}).await.unwrap();
    assert_eq!(std::fs::read(cache.path(&pdf.digest)).unwrap(), big.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_change_to_a_large_file_moves_only_the_changed_chunks() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    // 8 MB of pseudo-random bytes (like a bundle of PDFs), then the same with a 40 KB edit.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut big: Vec<u8> = (0..8_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let dir1 = w.dir.path().join("big-v1");
    std::fs::create_dir_all(&dir1).unwrap();
    std::fs::write(dir1.join("formulare.bin"), &big).unwrap();
    for b in &mut big[4_000_000..4_040_000] {
        *b = !*b;
    }
    let dir2 = w.dir.path().join("big-v2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("formulare.bin"), &big).unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &dir1).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &dir2).await.unwrap();

    let m1 = w.manifest("wohngeld-nrw", "1.0.0").await;
    assert!(m1.files[0].chunks.len() > 10, "large files are content-defined chunks");
    let cache = BlobCache::new(&w.dir.path().join("chunk-cache")).unwrap();
    let ch = w.channel(&kommune(DORTMUND)).await;
    let first = fetch_release(&HubClient::new(ch.clone()), &cache, &m1, &|_, _| {}).await.unwrap();
    assert_eq!(first.bytes_downloaded, 8_000_000);
    let m2 = w.manifest("wohngeld-nrw", "1.1.0").await;
    let update = fetch_release(&HubClient::new(ch), &cache, &m2, &|_, _| {}).await.unwrap();
    eprintln!("8 MB file, 40 KB changed: {} bytes moved", update.bytes_downloaded);
    assert!(update.bytes_downloaded <= 2 * 1024 * 1024 + 40_000, "{} bytes moved", update.bytes_downloaded);
    // The joined file is exactly the new content.
    assert_eq!(std::fs::read(cache.path(&m2.files[0].digest)).unwrap(), big);

    // A client without chunk support still gets the whole file in one stream, from offset.
    let mut stream = ReleaseServiceClient::new(w.channel(&kommune(ESSEN)).await)
        .max_decoding_message_size(16 * 1024 * 1024)
        .fetch_blob(pb::FetchBlobRequest { digest: m2.files[0].digest.to_string(), offset: 1_000_000 })
        .await
        .unwrap()
        .into_inner();
    let mut whole = Vec::new();
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        whole.extend(chunk.unwrap().data);
    }
    assert_eq!(whole, big[1_000_000..]);
}

/// Fetches a blob from `offset`: the chunks' offsets and the bytes, or the refusal's code.
async fn fetch_from(
    ch: tonic::transport::Channel,
    digest: &str,
    offset: u64,
) -> Result<(Vec<u64>, Vec<u8>), tonic::Code> {
    let mut stream = ReleaseServiceClient::new(ch)
        .fetch_blob(pb::FetchBlobRequest { digest: digest.into(), offset })
        .await
        .map_err(|s| s.code())?
        .into_inner();
    let (mut offsets, mut bytes) = (Vec::new(), Vec::new());
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|s| s.code())?;
        offsets.push(chunk.offset);
        bytes.extend_from_slice(&chunk.data);
    }
    Ok((offsets, bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_committed_with_their_release_and_served_from_any_offset() {
    let mut w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let html = "<h1>Wohngeld beantragen</h1>";
    let v1 = w.bundle("v1", &[("formular.pdf", &big), ("index.html", html)]);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &v1).await.unwrap();
    let m = w.manifest("wohngeld-nrw", "1.0.0").await;
    let digest = |name: &str| m.files.iter().find(|f| f.path.as_str() == name).unwrap().digest;
    let (small, large) = (digest("index.html"), digest("formular.pdf"));

    // The small file lives in the store with its release, the large one in the blob store.
    let on_disk = |d: efa_domain::bundle::Digest| {
        let hex = d.hex();
        w.fed.hub_data_dir().join("blobs").join(&hex[..2]).join(&hex).exists()
            || w.fed.hub_data_dir().join("blobs").join(&hex[..2]).join(format!("{hex}.chunks")).exists()
    };
    assert!(!on_disk(small), "a small file is not written to the blob store");
    assert!(on_disk(large), "a large file is");

    let ch = w.channel(&kommune(DORTMUND)).await;
    let (offsets, bytes) = fetch_from(ch.clone(), &small.to_string(), 0).await.unwrap();
    assert_eq!((offsets, bytes), (vec![0], html.as_bytes().to_vec()));
    // A resumed download gets the tail, with its offset; the end gives nothing; past it is refused.
    let (offsets, bytes) = fetch_from(ch.clone(), &small.to_string(), 5).await.unwrap();
    assert_eq!((offsets, bytes), (vec![5], html.as_bytes()[5..].to_vec()));
    assert_eq!(fetch_from(ch.clone(), &small.to_string(), html.len() as u64).await.unwrap().1, b"");
    assert_eq!(fetch_from(ch, &small.to_string(), html.len() as u64 + 1).await.unwrap_err(), tonic::Code::OutOfRange);

    // Durable with the release: a restarted hub serves it, and a node deploys the release.
    w.fed.restart_hub().await.unwrap();
    let ch = w.channel(&kommune(DORTMUND)).await;
    assert_eq!(fetch_from(ch.clone(), &small.to_string(), 0).await.unwrap().1, html.as_bytes());
    let cache = BlobCache::new(&w.dir.path().join("cache-inline")).unwrap();
    let stats = fetch_release(&HubClient::new(ch), &cache, &m, &|_, _| {}).await.unwrap();
    assert_eq!(stats.files, 2);
    assert_eq!(std::fs::read(cache.path(&small)).unwrap(), html.as_bytes());
    assert_eq!(std::fs::read(cache.path(&large)).unwrap(), big.as_bytes());
}

/// A part another node just fetched is served from the hub's memory (a rollout wave shares
/// one read of it): from any offset, with the same refusals, and only for content of a
/// published release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_fetched_once_is_served_from_memory_from_any_offset() {
    let mut w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let dir = w.dir.path().join("part-v1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("formular.pdf"), &big).unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &dir).await.unwrap();
    let m = w.manifest("wohngeld-nrw", "1.0.0").await;
    let digest = m.files[0].digest;
    let hex = digest.hex();
    let file = w.fed.hub_data_dir().join("blobs").join(&hex[..2]).join(&hex);
    assert!(file.exists(), "a 600 KB file is one blob file");

    let ch = w.channel(&kommune(DORTMUND)).await;
    let (offsets, bytes) = fetch_from(ch.clone(), &digest.to_string(), 0).await.unwrap();
    assert_eq!(offsets, [0, 262_144, 524_288], "in messages of download_chunk_bytes");
    assert!(bytes == big);

    // The file goes away: the hub still has the part in memory.
    std::fs::remove_file(&file).unwrap();
    let other = w.channel(&kommune(ESSEN)).await;
    let (offsets, bytes) = fetch_from(other.clone(), &digest.to_string(), 0).await.unwrap();
    assert_eq!(offsets, [0, 262_144, 524_288]);
    assert!(bytes == big);
    let (offsets, bytes) = fetch_from(other.clone(), &digest.to_string(), 300_000).await.unwrap();
    assert_eq!(offsets, [300_000, 562_144]);
    assert!(bytes[..] == big[300_000..]);
    assert!(fetch_from(other.clone(), &digest.to_string(), 600_000).await.unwrap().1.is_empty());
    assert_eq!(fetch_from(other.clone(), &digest.to_string(), 600_001).await.unwrap_err(), tonic::Code::OutOfRange);
    // Content no published release names is refused as before.
    let stray = efa_domain::bundle::Digest::of(b"never published").to_string();
    assert_eq!(fetch_from(other, &stray, 0).await.unwrap_err(), tonic::Code::NotFound);

    // Operators see it: four downloads from memory, one part held.
    let metrics = w.fed.hub.as_ref().unwrap().metrics_text();
    for needle in ["efa_hub_download_cache_hits_total 4", "efa_hub_download_cache_bytes 600000"] {
        assert!(metrics.contains(needle), "hub metrics lack {needle:?}:\n{metrics}");
    }

    // A restarted hub starts with an empty cache: the part is gone for good now.
    w.fed.restart_hub().await.unwrap();
    let ch = w.channel(&kommune(DORTMUND)).await;
    assert_eq!(fetch_from(ch, &digest.to_string(), 0).await.unwrap_err(), tonic::Code::NotFound);
}
