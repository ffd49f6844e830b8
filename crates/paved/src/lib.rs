//! The library half of the `paved` binary: the CLI (clap types, client, commands, output) and
//! `paved up`, so integration tests can drive them in-process; `main.rs` only dispatches.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod edge;
pub mod error;
pub mod output;
pub mod server;
pub mod traces;
pub mod up;
