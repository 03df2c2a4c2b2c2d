//! Compiles the .proto files in the repository's proto/ directory with protox (pure Rust, so no
//! protoc binary is needed) and generates prost messages and tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_dir.join("workload.proto"),
        proto_dir.join("sigil/server/v1/types.proto"),
        proto_dir.join("sigil/server/v1/agent.proto"),
        proto_dir.join("sigil/server/v1/entry.proto"),
        proto_dir.join("sigil/server/v1/svid.proto"),
        proto_dir.join("sigil/server/v1/bundle.proto"),
        proto_dir.join("sigil/server/v1/trustdomain.proto"),
        proto_dir.join("sigil/server/v1/peer.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
