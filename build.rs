//! Compiles `proto/quiver.proto` (the gRPC API) with the protoc binary vendored by
//! `protoc-bin-vendored`, so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/quiver.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through PROTOC (the build script is single-threaded).
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure().compile_protos(&["proto/quiver.proto"], &["proto"])?;
    Ok(())
}
