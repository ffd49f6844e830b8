//! Compiles the .proto files with protox, a pure-Rust protobuf compiler, so building paved
//! needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/paved/v1/paved.proto"];
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("paved_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // The JSON API serialises the same messages the gRPC API sends.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".", "#[serde(default)]")
        .compile_fds(descriptors)?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
