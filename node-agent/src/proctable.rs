//! Processes of watched containers, from exec/fork/exit events: who ran
//! what, so an alert can name the process chain up to the container's init.

use kestrel_events::{Event, EventKind};
use std::collections::HashMap;

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

/// pid → process, bounded.
#[derive(Debug)]
pub struct ProcTable {
    procs: HashMap<u32, ProcInfo>,
    cap: usize,
}

impl Default for ProcTable {
    fn default() -> Self {
        ProcTable::new(65_536)
    }
}

impl ProcTable {
    /// A table holding at most `cap` processes (the oldest pids go first when full).
    pub fn new(cap: usize) -> Self {
        ProcTable {
            procs: HashMap::new(),
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
                let parent = self.procs.get(&f.parent_pid).cloned();
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
            if let Some(&old) = self.procs.keys().min() {
                self.procs.remove(&old);
            }
        }
        self.procs.insert(pid, info);
    }

    /// The process, if known.
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    /// Ancestors of `pid`, parent first, while they are known (at most 32).
    pub fn chain(&self, pid: u32) -> Vec<(u32, &ProcInfo)> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(&pid).map(|p| p.ppid);
        while let Some(p) = cur {
            if out.len() >= 32 || out.iter().any(|(q, _)| *q == p) {
                break;
            }
            match self.procs.get(&p) {
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
