//! Compiles `proto/` with a vendored `protoc`, so a fresh machine needs no
//! system protobuf compiler; also the load bench's etcd client
//! (`benches/load/proto/`, a client only).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-changed=proto");
    // Roost's own codec: prost's with small initial buffers (src/rpc/codec.rs).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path("crate::rpc::codec::SmallBuffers")
        // For gRPC server reflection (src/rpc/introspect.rs).
        .file_descriptor_set_path(out_dir.join("roost_descriptor.bin"))
        .compile_protos(
            &[
                "proto/roost/v1/object.proto",
                "proto/roost/v1/raft.proto",
                "proto/roost/v1/cluster.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=benches/load/proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["benches/load/proto/etcd_rpc.proto"],
            &["benches/load/proto"],
        )?;
    Ok(())
}
