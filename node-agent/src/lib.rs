//! Kestrel node agent: captures process, file and network activity of
//! containers with eBPF tracepoints and turns it into [`kestrel_events::Event`]s.
//!
//! - [`sensors`] loads the three CO-RE programs (`bpf/*.bpf.c`), shares one
//!   ring buffer and one target-cgroup filter between them, and reads the
//!   kernel-side counters.
//! - [`decode`] turns ring-buffer records into events, with bounds checks.
//! - [`cgroups`] maps cgroup ids to paths and container ids.
//! - [`procscan`] reports processes that were running before the agent.
//! - [`capture`] ties these together for `kestrel-agent capture`.
//! - [`edge`] resolves workloads ([`kestrel_events::WorkloadMap`]), keeps the
//!   process table, and drops what the workload's profile digest already
//!   knows (`kestrel_profile::activity_of` says which fields of an event form
//!   the profile's paths).
#![deny(missing_docs)]

pub mod capture;
pub mod cgroups;
pub mod connected;
pub mod decode;
pub mod edge;
pub mod procscan;
pub mod proctable;
pub mod sensors;

/// Generated skeletons (from `bpf/*.bpf.c` by `build.rs`).
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod skel {
    /// Process lifecycle programs.
    pub mod process {
        include!(concat!(env!("OUT_DIR"), "/process.skel.rs"));
    }
    /// File programs.
    pub mod file {
        include!(concat!(env!("OUT_DIR"), "/file.skel.rs"));
    }
    /// Network programs.
    pub mod network {
        include!(concat!(env!("OUT_DIR"), "/network.skel.rs"));
    }
}
