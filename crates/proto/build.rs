//! Generates the gRPC types and service code from `proto/kestrel/v1/*.proto`
//! with Debian's `protoc` (installed by `make deps`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let agent = root.join("kestrel/v1/agent.proto");
    println!("cargo:rerun-if-changed={}", agent.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let debian = PathBuf::from("/usr/bin/protoc");
        if debian.exists() {
            // SAFETY: build scripts are single-threaded; nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("PROTOC", debian) };
        }
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The rpc is named Connect: no generated `connect(endpoint)` constructor.
        .build_transport(false)
        .compile_protos(&[agent], &[root])?;
    Ok(())
}
