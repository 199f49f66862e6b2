//! Compiles `proto/verdict/ingest/v1/ingest.proto` with protox (a pure-Rust protobuf compiler, so
//! no `protoc` is needed on the build machine) and generates prost messages plus the tonic
//! client and server for the node → collector ingest service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/verdict/ingest/v1/ingest.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
