//! The generated protobuf and gRPC types of `proto/kestrel/v1/agent.proto`
//! (package `kestrel.v1`).
//!
//! Only transport code and tests use these; everything else works with the
//! Rust types re-exported at the crate root and converts at the boundary
//! (`From<&kestrel_events::Event> for wire::Event`,
//! `TryFrom<wire::Event> for kestrel_events::Event`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("kestrel.v1");
