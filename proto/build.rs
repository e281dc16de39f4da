//! Compiles `proto/docker_agent/v1/*.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/docker_agent/v1/common.proto",
        "proto/docker_agent/v1/agent.proto",
        "proto/docker_agent/v1/control.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Output and stdin travel as `Bytes`, so the hub can store, fan out and forward a chunk
        // without copying it at every hop.
        .bytes(".")
        .codec_path("crate::codec::LeanCodec")
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    Ok(())
}
