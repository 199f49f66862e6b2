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
        // Record lines as `bytes::Bytes`: the shipper ships slices of its read buffers and the
        // collector decodes them out of the received buffer, without a copy per record.
        .bytes(".verdict.ingest.v1.Record.json_line")
        // A record is then a few words, not the size of a whole FlowRecord: batches of
        // thousands of JSON lines move and grow cheaply.
        .boxed(".verdict.ingest.v1.Record.payload.flow")
        .compile_fds(descriptors)?;
    Ok(())
}
