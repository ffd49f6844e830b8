//! Compiles etcd's v3 API (`proto/etcd`, trimmed, see its README) with protox, a pure-Rust
//! protobuf compiler, so building paved needs no protoc on the machine. Client side only.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/etcd/etcdserverpb/rpc.proto", "proto/etcd/mvccpb/kv.proto"];
    let descriptors = protox::compile(protos, ["proto/etcd"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
