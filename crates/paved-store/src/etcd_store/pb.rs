//! The etcd v3 API client stubs `build.rs` generates from `proto/etcd`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use etcdserverpb::*;
pub use mvccpb::{Event as PbEvent, KeyValue as PbKeyValue, event::EventType};
