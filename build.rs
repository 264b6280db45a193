//! Generates the gRPC client/server code for `proto/` with a vendored `protoc`, so a build
//! never depends on a system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("openraft_memory_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/student.proto", "proto/peer.proto", "proto/storage.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
