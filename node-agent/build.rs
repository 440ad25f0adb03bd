//! Generates the kubelet device plugin API (v1beta1) from `proto/` with tonic-prost-build.
//!
//! The proto is parsed by protox (pure Rust), so no system `protoc` is needed. Both
//! sides are generated: the plugin serves DevicePlugin and calls Registration; the
//! test-side kubelet (tests, benches) serves Registration and calls DevicePlugin.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/deviceplugin/v1beta1/api.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
