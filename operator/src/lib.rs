//! Kestrel operator core: the engine, the pipeline around it, the store,
//! and the gRPC server for node agents. No BPF here: the operator image
//! carries no BPF toolchain; standalone mode (`kestrel standalone`, crate
//! `kestrel-cli`) adds the node agent's capture in front of the same
//! pipeline.
//!
//! - [`engine`]: one behaviour profile per workload; learning, convergence,
//!   detection; anomalies scored into grouped alerts.
//! - [`pipeline`]: engine, store and sinks driven by the caller's loop.
//! - [`store`]: the `Store` seam and its directory-of-YAML implementation.
//! - [`serve`]: node agents over gRPC.
//! - [`k8s`]: the operator in a cluster: custom resources, identity from
//!   watches, leader election.
//! - [`health`]: `/healthz`, `/readyz` and Prometheus `/metrics`.
//! - [`flood`]: the create-rate limit on alerts and the flood alert.
//! - [`config`], [`output`], [`clock`]: the config file, the printed lines,
//!   and the time passed in; [`cli`]: the operator's flags and process
//!   plumbing, shared by both binaries.
#![deny(missing_docs)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod flood;
#[cfg(test)]
mod fuzz_tests;
pub mod health;
pub mod k8s;
pub mod output;
pub mod pipeline;
pub mod serve;
pub mod store;
