//! The messages of the agent ⇄ operator stream as Rust values.
//!
//! These are what the transport hands to its users; the wire types in
//! [`crate::wire`] stay inside this crate's conversions and transport.

use kestrel_events::Event;
use std::collections::BTreeMap;

/// Who is talking: the first message of every stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// Node name; must be a name of the client certificate under mutual TLS.
    pub node_name: String,
    /// Stable id of this agent instance (e.g. the pod uid).
    pub agent_id: String,
    /// Agent version.
    pub version: String,
    /// Kernel boot id: timestamps are comparable only within one boot.
    pub boot_id: String,
    /// Random per agent process start (0: unknown; [`crate::client::AgentClient`]
    /// picks one when it is 0). Batch sequence numbers are unique per
    /// `(node_name, instance)`.
    pub instance: u64,
}

/// An event with the workload the agent resolved for it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadEvent {
    /// The workload (empty: not resolved).
    pub workload: String,
    /// The workload's image (empty: unknown).
    pub image: String,
    /// The event.
    pub event: Event,
    /// The acting process, as the agent's process table knows it.
    pub process: Option<kestrel_events::Ancestor>,
    /// Its ancestors, parent first.
    pub chain: Vec<kestrel_events::Ancestor>,
}

impl WorkloadEvent {
    /// An event of `workload` without image or process context.
    pub fn new(workload: impl Into<String>, event: Event) -> Self {
        WorkloadEvent {
            workload: workload.into(),
            image: String::new(),
            event,
            process: None,
            chain: Vec::new(),
        }
    }
}

/// Events an agent could not match locally.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    /// Sequence number (one per batch, increasing across reconnects).
    pub seq: u64,
    /// The events.
    pub events: Vec<WorkloadEvent>,
}

/// What an agent lost; cumulative since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Lost before decoding (ring buffer).
    pub ring_dropped: u64,
    /// Dropped because the outbound queue was full.
    pub queue_dropped: u64,
    /// Folded by the agent into counts instead of sent one by one.
    pub aggregated: u64,
    /// Single events too large for one message.
    pub oversize_dropped: u64,
    /// `queue_dropped` per workload.
    pub queue_dropped_by_workload: BTreeMap<String, u64>,
    /// Sent once, then pushed out of the resend buffer (full) before they
    /// were acknowledged: lost if that stream broke before they arrived.
    pub unacked_evicted: u64,
}

/// Activity counters an agent reports; cumulative since the agent started
/// (take deltas against the previous report of the same `agent_id` and
/// `boot_id`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events matched locally by the digest, per workload.
    pub matched: BTreeMap<String, u64>,
    /// Losses.
    pub drops: DropCounters,
}

/// Where a workload's profile stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Still growing: misses are learned.
    Learning,
    /// Converged, waiting for a person.
    Converged,
    /// Locked: misses are anomaly signals.
    Detecting,
}

/// What a workload's profile already knows, as hashes (the edge filter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestUpdate {
    /// The workload.
    pub workload: String,
    /// Its profile's phase when the digest was made.
    pub phase: Phase,
    /// Hashes of known trie paths (a process path's hash covers its
    /// normalised arguments).
    pub path_hashes: Vec<u64>,
    /// Increases with every update of this workload's digest.
    pub generation: u64,
    /// `true`: replaces the agent's sets; `false`: adds to them.
    pub full: bool,
    /// Seed keying the hashes.
    pub seed: u64,
}

/// Containers whose id matches a glob belong to a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerTarget {
    /// Glob over the container id (`*`, `?`).
    pub container_id_glob: String,
    /// The workload.
    pub workload: String,
    /// The workload's image.
    pub image: String,
}

/// Which containers the agent watches (replaces the previous set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSet {
    /// The targets.
    pub targets: Vec<ContainerTarget>,
}

/// What the operator pushes to an agent (acknowledgements are handled by the
/// transport itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorMessage {
    /// A workload's digest changed.
    Digest(DigestUpdate),
    /// The target set changed.
    Targets(TargetSet),
}
