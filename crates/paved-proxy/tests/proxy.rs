//! The proxy end to end: real upstream HTTP/1.1, h2c and gRPC servers, real clients, all on
//! loopback, the proxy under test started on its own port.

#[path = "proxy/downstream.rs"]
mod downstream;
#[path = "proxy/faults.rs"]
mod faults;
#[path = "proxy/protocols.rs"]
mod protocols;
#[path = "proxy/resilience.rs"]
mod resilience;
#[path = "proxy/routing.rs"]
mod routing;
#[path = "proxy/support.rs"]
mod support;
#[path = "proxy/upgrades.rs"]
mod upgrades;
