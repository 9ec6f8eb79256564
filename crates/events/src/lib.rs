//! The Kestrel event model: what the kernel reported, as plain Rust values.
//!
//! The node agent decodes ring-buffer records into [`Event`]s; everything
//! downstream (profiles, scoring, the wire to the operator) works on these.
//! Bytes from the kernel are untrusted and kept losslessly as [`ByteStr`].
//!
//! ```
//! use kestrel_events::{container_of_cgroup_path, Argv};
//! let argv = Argv::from_nul_separated(b"/bin/echo\0hello\0", 16, false, false);
//! assert_eq!(argv.args.len(), 2);
//! let c = container_of_cgroup_path("/kestrel/web-1").unwrap();
//! assert_eq!(c.id, "web-1");
//! ```
#![deny(missing_docs)]

mod activity;
mod bytes;
mod container;
mod event;
pub mod glob;
pub mod hash;
pub mod mutate;
mod path;
mod workload;

pub use activity::{Activity, Forwarded, Peer, Protocol, ProtocolKey, Workload};
pub use bytes::{escape_bytes, unescape_bytes, ByteStr};
pub use container::{container_of_cgroup_path, ContainerPathRules, ContainerRef, Runtime};
pub use event::{
    Ancestor, Argv, CgroupChange, Direction, Endpoint, Event, EventKind, Exec, ExecFailed, Exit,
    FileAccess, FileOp, FileOpKind, Fork, Namespaces, NetOp, NetOpKind, Task, TcpState,
};
pub use glob::{Glob, GlobError};
pub use hash::stable_hash;
pub use path::{canonical_path, dir_from_tail, resolved_path};
pub use workload::{WorkloadMap, WorkloadSpec};
