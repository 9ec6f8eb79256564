//! The agent's edge filter: what the profile already knows stays on the node.
//!
//! Every event is resolved to its workload, turned into profile activity
//! ([`kestrel_profile::activity_of`]) and checked against that workload's
//! profile digest. A hit is only counted; a miss is forwarded with its
//! context (workload, image, the process chain up to the container's init
//! from the agent's process table). Process lifecycle events feed the process
//! table and are never forwarded. In steady state almost nothing leaves the
//! node.
//!
//! The container runtime setting a container up is not the workload: what
//! runc's init processes (`runc:[0:PARENT]`, `runc:[1:CHILD]`,
//! `runc:[2:INIT]`) do inside the new cgroup before the entrypoint runs
//! (cgroup files, mounts, `/proc/self/...`, paths under the bundle) is
//! counted as `runtime` and dropped, as Falco's container-entrypoint macros
//! do. A process that only names itself so is not dropped: the process
//! table must never have seen it exec (an attacker's process exec'd
//! something before it could rename itself).

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
    /// Events of the container runtime setting a container up.
    #[serde(default)]
    pub runtime: u64,
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

    /// Whether `event` is runc's init setting the container up (see the
    /// module docs): its name, and no exec ever seen for the process.
    fn is_runtime_setup(&self, event: &Event) -> bool {
        let Some(task) = &event.task else {
            return false;
        };
        task.comm.as_bytes().starts_with(b"runc:[")
            && !matches!(event.kind, EventKind::Exec(_))
            && self.procs.get(task.pid).is_none_or(|p| p.argv.is_empty())
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
        if self.is_runtime_setup(&event) {
            self.counters.runtime += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_events::{
        Argv, ByteStr, ContainerRef, Exec, FileOp, Namespaces, Runtime, Task, WorkloadSpec,
    };

    fn event(pid: u32, comm: &str, kind: EventKind) -> Event {
        Event {
            ts_ns: 0,
            cgroup_id: 7,
            task: Some(Task {
                pid,
                tid: pid,
                ppid: 1,
                uid: 0,
                comm: comm.into(),
            }),
            ns: Namespaces::default(),
            container: Some(ContainerRef {
                id: "web-1".into(),
                runtime: Runtime::Containerd,
            }),
            kind,
        }
    }

    fn filter() -> EdgeFilter {
        EdgeFilter::new(WorkloadMap::new(vec![WorkloadSpec {
            name: "web".into(),
            image: Some("webapp:v1".into()),
            containers: kestrel_events::glob::Glob::new("web-*").unwrap(),
        }]))
    }

    #[test]
    fn runc_setting_a_container_up_is_dropped_but_a_process_named_like_it_is_not() {
        let mut edge = filter();
        let setup = event(
            10,
            "runc:[2:INIT]",
            EventKind::File(FileOp::openat("/sys/fs/cgroup/cpu", 0)),
        );
        assert!(edge.process(setup).is_none());
        assert_eq!(edge.counters().runtime, 1);

        // a program that ran in the container and renamed itself
        let exec = event(
            11,
            "sh",
            EventKind::Exec(Exec {
                filename: "/tmp/x".into(),
                exe: "x".into(),
                parent_comm: "sh".into(),
                ns_pid: 5,
                argv: Argv {
                    args: vec![ByteStr::from("/tmp/x")],
                    size: 7,
                    truncated: false,
                    read_failed: false,
                },
                from_proc_scan: false,
                dir: None,
            }),
        );
        assert!(edge.process(exec).is_some());
        let spoofed = event(
            11,
            "runc:[2:INIT]",
            EventKind::File(FileOp::openat("/etc/shadow", 0)),
        );
        let f = edge.process(spoofed).expect("forwarded");
        assert!(matches!(f.event.kind, EventKind::File(_)));
        assert_eq!(edge.counters().runtime, 1);
    }
}
