//! The agent's edge filter: what the profile already knows stays on the node.
//!
//! Every event is resolved to its workload, turned into profile activity
//! ([`kestrel_profile::activity_of`]) and checked against that workload's
//! profile digest. A hit is only counted; a miss is forwarded with its
//! context (workload, image, the process chain up to the container's init
//! from the agent's process table). Process lifecycle events feed the process
//! table and are never forwarded. In steady state almost nothing leaves the
//! node.

use crate::proctable::ProcTable;
use kestrel_events::WorkloadMap;
use kestrel_events::{Event, EventKind};
use kestrel_profile::activity_of;
use kestrel_profile::Digest;
use std::collections::HashMap;

pub use kestrel_events::{Ancestor, Forwarded};

/// Counters of the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EdgeCounters {
    /// Events the digests matched, per workload (dropped at the edge).
    pub matched: HashMap<String, u64>,
    /// Events forwarded.
    pub forwarded: u64,
    /// Events with no profile activity (fork, exit, cgroup) or no container.
    pub ignored: u64,
}

impl EdgeCounters {
    /// All matched events.
    pub fn matched_total(&self) -> u64 {
        self.matched.values().sum()
    }
}

/// Resolves, filters and enriches events.
#[derive(Debug, Default)]
pub struct EdgeFilter {
    workloads: WorkloadMap,
    digests: HashMap<String, Digest>,
    procs: ProcTable,
    counters: EdgeCounters,
}

impl EdgeFilter {
    /// A filter with no digests yet (everything with activity is forwarded).
    pub fn new(workloads: WorkloadMap) -> Self {
        EdgeFilter {
            workloads,
            ..Default::default()
        }
    }

    /// Replaces the container → workload map (the operator's target set).
    pub fn set_workloads(&mut self, workloads: WorkloadMap) {
        self.workloads = workloads;
    }

    /// Replaces a workload's digest (an empty digest forwards everything).
    pub fn set_digest(&mut self, workload: &str, digest: Digest) {
        self.digests.insert(workload.to_string(), digest);
    }

    /// The counters so far.
    pub fn counters(&self) -> &EdgeCounters {
        &self.counters
    }

    /// Filters one event: `None` when it stays on the node.
    pub fn process(&mut self, event: Event) -> Option<Forwarded> {
        self.procs.update(&event);
        let Some(container) = &event.container else {
            self.counters.ignored += 1;
            return None;
        };
        if matches!(
            event.kind,
            EventKind::Fork(_) | EventKind::Exit(_) | EventKind::Cgroup(_)
        ) {
            self.counters.ignored += 1;
            return None;
        }
        let Some(activity) = activity_of(&event) else {
            self.counters.ignored += 1;
            return None;
        };
        let workload = self.workloads.resolve(&container.id);
        if let Some(d) = self.digests.get(&workload.name) {
            if d.contains(&kestrel_profile::profile_event(
                &activity,
                workload.image.as_bytes(),
            )) {
                *self.counters.matched.entry(workload.name).or_default() += 1;
                return None;
            }
        }
        self.counters.forwarded += 1;
        let chain = event
            .task
            .as_ref()
            .map(|t| {
                self.procs
                    .chain(t.pid)
                    .into_iter()
                    .map(|(pid, p)| Ancestor {
                        pid,
                        exe: p.exe.clone(),
                        argv: p.argv.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let process = event.task.as_ref().and_then(|t| {
            self.procs.get(t.pid).map(|p| Ancestor {
                pid: t.pid,
                exe: p.exe.clone(),
                argv: p.argv.clone(),
            })
        });
        Some(Forwarded {
            event,
            workload,
            activity,
            process,
            chain,
        })
    }
}
