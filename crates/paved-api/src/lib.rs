//! paved's gRPC contract, generated at build time from `proto/` by protox and tonic: the one
//! set of messages that the gRPC API, the JSON API and every client share.
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("paved.v1");
}

/// The encoded `FileDescriptorSet` of every paved .proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/paved_descriptor.bin"));
