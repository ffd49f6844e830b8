//! The proxy's input, published on a watch channel whenever routes, tasks or faults change. The
//! types live in `paved-types` so the control plane can build them without the proxy.

pub use paved_types::edge::{Endpoint, Snapshot};
