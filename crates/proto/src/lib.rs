//! The agent ⇄ operator contract of Kestrel (`proto/kestrel/v1/agent.proto`)
//! and its transport: gRPC over TLS (rustls with `ring`), one long-lived
//! bidirectional stream per node.
//!
//! - [`wire`]: the generated protobuf types; converted at the boundary
//!   (`From<&Event> for wire::Event`, `TryFrom<wire::Event> for Event`, whose
//!   [`ConvertError`] names the offending field). Nothing else needs prost.
//! - [`server`]: the operator side, [`server::serve`] with an
//!   [`server::AgentHandler`].
//! - [`client`]: the agent side, [`client::AgentClient`] with reconnects,
//!   backoff and a bounded queue that never blocks.
//! - [`TlsMaterial`], [`ServerTls`], [`ClientTls`]: certificates, generated
//!   (a self-signed CA) or loaded from PEM files.
//!
//! ```
//! use kestrel_events::{Event, EventKind, Fork, Namespaces};
//! use kestrel_proto::{wire, WorkloadEvent};
//!
//! let event = Event {
//!     ts_ns: 1,
//!     cgroup_id: 7,
//!     task: None,
//!     ns: Namespaces::default(),
//!     container: None,
//!     kind: EventKind::Fork(Fork { parent_pid: 1 }),
//! };
//! let on_wire = wire::Event::from(&WorkloadEvent { image: String::new(), process: None, chain: Vec::new(), workload: "web".into(), event: event.clone() });
//! let back = WorkloadEvent::try_from(on_wire).unwrap();
//! assert_eq!((back.workload.as_str(), back.event), ("web", event));
//! ```
#![deny(missing_docs)]

pub mod client;
mod convert;
mod error;
mod messages;
pub mod server;
mod tls;
pub mod wire;

pub use convert::{limits, CUT_MARK};
pub use error::{ConvertError, Error, Result};
pub use messages::{
    ContainerTarget, Counters, DigestUpdate, DropCounters, EventBatch, Hello, OperatorMessage,
    Phase, TargetSet, WorkloadEvent,
};
pub use tls::{
    certificate_names, check_validity, new_key_and_request, unix_now, CertFiles, CertInfo,
    CertSigner, ClientAuth, ClientTls, ServerTls, TlsMaterial, DEFAULT_CLIENT_VALIDITY,
    ENROLLED_VALIDITY_RANGE,
};
