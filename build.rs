//! Compiles `proto/` with protox (pure Rust), so no `protoc` is needed on the build machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/slatrack/v1/delivery.proto",
        "proto/slatrack/v1/window.proto",
        "proto/slatrack/v1/checkpoint.proto",
        "proto/io/prometheus/client/metrics.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    config.extern_path(".google.protobuf.Timestamp", "::prost_types::Timestamp");
    config.compile_fds(fds)?;
    Ok(())
}
