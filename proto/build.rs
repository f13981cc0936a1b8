//! Compiles `efa/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "efa/v1/common.proto",
        "efa/v1/catalog.proto",
        "efa/v1/release.proto",
        "efa/v1/subscription.proto",
        "efa/v1/adoption.proto",
        "efa/v1/report.proto",
        "efa/v1/rollout.proto",
        "efa/v1/log.proto",
    ];
    println!("cargo:rerun-if-changed=efa");
    let fds = protox::compile(files, ["."])?;
    // Round-trip through bytes so the descriptor type matches the prost-types that
    // tonic-prost-build links against, whatever protox was built with.
    let bytes = fds.encode_to_vec();
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("efa_descriptor.bin"), &bytes)?;
    // Download chunks as `Bytes`: the hub hands out slices of a cached blob without copying.
    tonic_prost_build::configure()
        .bytes(".efa.v1.BlobChunk.data")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
