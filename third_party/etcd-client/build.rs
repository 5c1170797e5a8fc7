// [switchyard patch] The protos are compiled with protox (pure Rust) instead
// of the system `protoc`, as the rest of the workspace does: building needs
// no package beyond the Rust toolchain.

#[cfg(feature = "build-server")]
fn should_build_server() -> bool {
    true
}

#[cfg(not(feature = "build-server"))]
fn should_build_server() -> bool {
    false
}

fn main() {
    let proto_root = "proto";
    println!("cargo:rerun-if-changed={proto_root}");

    let fds = protox::compile(
        [
            "proto/auth.proto",
            "proto/kv.proto",
            "proto/rpc.proto",
            "proto/v3election.proto",
            "proto/v3lock.proto",
        ],
        [proto_root],
    )
    .expect("Failed to compile proto files");
    tonic_prost_build::configure()
        .build_server(should_build_server())
        .compile_fds(fds)
        .expect("Failed to generate code from the proto files");
}
