//! Compiles the vendored `proto/onnx.proto` with `protox` (a protobuf compiler written in Rust) and
//! feeds the descriptors to `prost-build`, so no machine needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // `bytes::Bytes` for every bytes field: decoding from a memory-mapped `Bytes` buffer then slices
    // tensor payloads out of the map instead of copying them.
    config.bytes(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
