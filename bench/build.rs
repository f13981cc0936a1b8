//! Generates the tonic client for the small part of etcd's API that the fan-out peer uses
//! (proto/etcd_watch.proto), with protox like efa-proto, so no system `protoc` is needed.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["etcd_watch.proto"], ["proto"])?;
    // Round-trip through bytes so the descriptor type matches tonic-prost-build's prost-types.
    let fds = prost_types::FileDescriptorSet::decode(fds.encode_to_vec().as_slice())?;
    tonic_prost_build::configure().build_server(false).build_client(true).compile_fds(fds)?;
    Ok(())
}
