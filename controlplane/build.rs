//! Compiles the API with protox (pure Rust; no system `protoc`) and keeps the
//! encoded descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/switchyard/v1/switchyard.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("switchyard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
