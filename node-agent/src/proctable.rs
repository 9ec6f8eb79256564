//! Processes of watched containers, from exec/fork/exit events: who ran
//! what, so an alert can name the process chain up to the container's init.

use kestrel_events::{Event, EventKind};
use std::collections::{HashMap, VecDeque};

/// What is known about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Parent pid.
    pub ppid: u32,
    /// Executable name (or comm before any exec was seen).
    pub exe: String,
    /// argv (lossless text form).
    pub argv: Vec<String>,
}

/// pid → process, bounded. When full, the process inserted longest ago
/// goes first, in amortised O(1): an insertion-order queue whose stale
/// entries (exited or re-inserted pids) are skipped, and compacted when it
/// grows past twice the table.
#[derive(Debug)]
pub struct ProcTable {
    procs: HashMap<u32, (ProcInfo, u64)>,
    order: VecDeque<(u32, u64)>,
    next: u64,
    cap: usize,
}

impl Default for ProcTable {
    fn default() -> Self {
        ProcTable::new(65_536)
    }
}

impl ProcTable {
    /// A table holding at most `cap` processes (the one inserted longest
    /// ago goes first when full).
    pub fn new(cap: usize) -> Self {
        ProcTable {
            procs: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    /// Updates the table from one event.
    pub fn update(&mut self, event: &Event) {
        let Some(task) = &event.task else { return };
        match &event.kind {
            EventKind::Exec(x) => {
                let exe =
                    kestrel_events::escape_bytes(&kestrel_profile::process_name(x)).into_owned();
                let argv = x.argv.args.iter().map(|a| a.to_escaped()).collect();
                self.insert(
                    task.pid,
                    ProcInfo {
                        ppid: task.ppid,
                        exe,
                        argv,
                    },
                );
            }
            EventKind::Fork(f) => {
                // a fork inherits the parent's image until it execs
                let parent = self.procs.get(&f.parent_pid).map(|e| e.0.clone());
                let info = match parent {
                    Some(p) => ProcInfo {
                        ppid: f.parent_pid,
                        ..p
                    },
                    None => ProcInfo {
                        ppid: f.parent_pid,
                        exe: task.comm.to_escaped(),
                        argv: Vec::new(),
                    },
                };
                self.insert(task.pid, info);
            }
            EventKind::Exit(_) => {
                self.procs.remove(&task.pid);
            }
            _ => {}
        }
    }

    fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= self.cap && !self.procs.contains_key(&pid) {
            while let Some((old, generation)) = self.order.pop_front() {
                if self.procs.get(&old).is_some_and(|e| e.1 == generation) {
                    self.procs.remove(&old);
                    break;
                }
            }
        }
        let generation = self.next;
        self.next += 1;
        self.procs.insert(pid, (info, generation));
        self.order.push_back((pid, generation));
        if self.order.len() > 2 * self.cap.max(16) {
            let procs = &self.procs;
            self.order
                .retain(|(p, g)| procs.get(p).is_some_and(|e| e.1 == *g));
        }
    }

    /// The process, if known.
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid).map(|e| &e.0)
    }

    /// Ancestors of `pid`, parent first, while they are known (at most 32).
    pub fn chain(&self, pid: u32) -> Vec<(u32, &ProcInfo)> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(&pid).map(|p| p.0.ppid);
        while let Some(p) = cur {
            if out.len() >= 32 || out.iter().any(|(q, _)| *q == p) {
                break;
            }
            match self.procs.get(&p).map(|e| &e.0) {
                Some(info) => {
                    out.push((p, info));
                    cur = Some(info.ppid);
                }
                None => break,
            }
        }
        out
    }

    /// Number of processes known.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether no process is known.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_events::{Argv, Exec, Exit, Namespaces, Task};

    fn event(pid: u32, kind: EventKind) -> Event {
        Event {
            ts_ns: 0,
            cgroup_id: 1,
            task: Some(Task {
                pid,
                tid: pid,
                ppid: 1,
                uid: 0,
                comm: "sh".into(),
            }),
            ns: Namespaces::default(),
            container: None,
            kind,
        }
    }

    fn exec(pid: u32) -> Event {
        event(
            pid,
            EventKind::Exec(Exec {
                filename: "/bin/sh".into(),
                exe: "sh".into(),
                parent_comm: "sh".into(),
                ns_pid: pid,
                argv: Argv {
                    args: vec!["sh".into()],
                    size: 3,
                    truncated: false,
                    read_failed: false,
                },
                from_proc_scan: false,
                dir: None,
            }),
        )
    }

    #[test]
    fn a_full_table_evicts_the_process_inserted_longest_ago() {
        let mut t = ProcTable::new(3);
        for pid in [300, 200, 100] {
            t.update(&exec(pid));
        }
        t.update(&exec(400));
        assert!(t.get(300).is_none(), "the oldest insertion goes first");
        assert!(t.get(100).is_some() && t.get(200).is_some() && t.get(400).is_some());
        // an exited pid leaves a stale queue entry that is skipped
        t.update(&event(200, EventKind::Exit(Exit { code: 0, signal: 0 })));
        t.update(&exec(500));
        assert_eq!(t.len(), 3);
        t.update(&exec(600));
        assert!(t.get(100).is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn churn_keeps_the_queue_bounded() {
        let mut t = ProcTable::new(64);
        for i in 0..100_000u32 {
            t.update(&exec(i % 1_000));
            if i % 3 == 0 {
                t.update(&event(
                    i % 1_000,
                    EventKind::Exit(Exit { code: 0, signal: 0 }),
                ));
            }
        }
        assert!(t.len() <= 64);
        assert!(t.order.len() <= 2 * 64 + 1, "{}", t.order.len());
    }
}
