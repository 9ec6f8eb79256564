//! Kestrel operator core and standalone mode.
//!
//! - [`engine`]: one behaviour profile per workload; learning, convergence,
//!   detection; anomalies scored into grouped alerts.
//! - [`store`]: the `Store` seam and its directory-of-YAML implementation.
//! - [`standalone`]: capture, edge filter and engine in one process.
#![deny(missing_docs)]

pub mod engine;
pub mod pipeline;
pub mod serve;
pub mod standalone;
pub mod store;
