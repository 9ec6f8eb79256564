//! Compaction rules of each activity class, derived from [`CompactionConfig`].

use crate::config::CompactionConfig;
use crate::segment::path_segments;
use crate::trie::{Guard, NodeInfo, PathKey, Policy};

/// Levels above the file path: image, process, access kind.
pub(crate) const FILE_PREFIX_LEVELS: usize = 3;

fn split(p: &str) -> Vec<Box<[u8]>> {
    path_segments(p.as_bytes()).map(Box::from).collect()
}

fn starts_with(segs: &[PathKey<'_>], prefix: &[Box<[u8]>]) -> bool {
    segs.len() >= prefix.len()
        && segs
            .iter()
            .zip(prefix)
            .all(|(s, p)| matches!(s, PathKey::Text(t) if *t == &**p))
}

#[derive(Debug, Clone)]
struct Common {
    child_limit: usize,
    hard_limit: usize,
    ip_limit: usize,
    node_budget: usize,
    exemplar_cap: usize,
}

impl Common {
    fn new(c: &CompactionConfig) -> Self {
        Common {
            child_limit: c.child_limit,
            hard_limit: c.hard_child_limit,
            ip_limit: c.peer_ip_limit,
            node_budget: c.node_budget,
            exemplar_cap: c.exemplar_cap,
        }
    }
}

/// File trie: per-prefix limits, sensitive prefixes never collapse.
#[derive(Debug, Clone)]
pub(crate) struct FilePolicy {
    common: Common,
    prefix_limits: Vec<(Vec<Box<[u8]>>, usize)>,
    sensitive: Vec<Vec<Box<[u8]>>>,
    pub(crate) max_depth: usize,
}

impl FilePolicy {
    pub(crate) fn new(c: &CompactionConfig) -> Self {
        FilePolicy {
            common: Common::new(c),
            prefix_limits: c
                .prefix_limits
                .iter()
                .map(|p| (split(&p.prefix), p.limit))
                .collect(),
            sensitive: c.never_collapse.iter().map(|p| split(p)).collect(),
            max_depth: c.max_path_depth,
        }
    }
}

impl Policy for FilePolicy {
    fn info(&self, path: &[PathKey<'_>]) -> NodeInfo {
        if path.len() < FILE_PREFIX_LEVELS {
            return NodeInfo {
                limit: Some(self.common.child_limit),
                guard: None,
            };
        }
        let segs = &path[FILE_PREFIX_LEVELS..];
        if self.sensitive.iter().any(|s| starts_with(segs, s)) {
            return NodeInfo {
                limit: None,
                guard: None,
            };
        }
        let names: Vec<Box<[u8]>> = self
            .sensitive
            .iter()
            .filter(|s| s.len() > segs.len() && starts_with(segs, &s[..segs.len()]))
            .map(|s| s[segs.len()].clone())
            .collect();
        let limit = self
            .prefix_limits
            .iter()
            .filter(|(p, _)| starts_with(segs, p))
            .max_by_key(|(p, _)| p.len())
            .map_or(self.common.child_limit, |(_, l)| *l);
        NodeInfo {
            limit: Some(limit),
            guard: (!names.is_empty()).then(|| Box::new(Guard::Names(names))),
        }
    }
    fn ip_limit(&self) -> usize {
        self.common.ip_limit
    }
    fn hard_limit(&self) -> usize {
        self.common.hard_limit
    }
    fn node_budget(&self) -> usize {
        self.common.node_budget
    }
}

/// World-writable directories: a program run from one is never absorbed by
/// a collapsed parent's wildcard (where droppers put their payloads).
const WRITABLE_EXE_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/user"];

/// Process trie: executables below sensitive directories (`never_collapse`)
/// and world-writable ones never collapse: a parent that ran more programs
/// than the child limit still tells a new `/usr/bin/curl` or `/tmp/x` apart.
#[derive(Debug, Clone)]
pub(crate) struct ProcessPolicy {
    common: Common,
    exe_dirs: Vec<Box<[u8]>>,
}

impl ProcessPolicy {
    pub(crate) fn new(c: &CompactionConfig) -> Self {
        ProcessPolicy {
            common: Common::new(c),
            exe_dirs: c
                .never_collapse
                .iter()
                .map(String::as_str)
                .chain(WRITABLE_EXE_DIRS)
                .map(|p| format!("{}/", p.trim_end_matches('/')).into_bytes().into())
                .collect(),
        }
    }
}

impl Policy for ProcessPolicy {
    fn info(&self, path: &[PathKey<'_>]) -> NodeInfo {
        NodeInfo {
            limit: Some(self.common.child_limit),
            // Depth 2 = a parent node; its children are executables.
            guard: (path.len() == 2).then(|| Box::new(Guard::Prefixes(self.exe_dirs.clone()))),
        }
    }
    fn ip_limit(&self) -> usize {
        self.common.ip_limit
    }
    fn hard_limit(&self) -> usize {
        self.common.hard_limit
    }
    fn node_budget(&self) -> usize {
        self.common.node_budget
    }
    fn exemplar_cap(&self) -> usize {
        self.common.exemplar_cap
    }
}

/// Network trie: addresses collapse into networks, ports have their own limit.
#[derive(Debug, Clone)]
pub(crate) struct NetworkPolicy {
    common: Common,
    port_limit: usize,
}

impl NetworkPolicy {
    pub(crate) fn new(c: &CompactionConfig) -> Self {
        NetworkPolicy {
            common: Common::new(c),
            port_limit: c.port_limit,
        }
    }
}

impl Policy for NetworkPolicy {
    fn info(&self, path: &[PathKey<'_>]) -> NodeInfo {
        // Depth 5 = a protocol node; its children are ports.
        let limit = if path.len() == 5 {
            self.port_limit
        } else {
            self.common.child_limit
        };
        NodeInfo {
            limit: Some(limit),
            guard: None,
        }
    }
    fn ip_limit(&self) -> usize {
        self.common.ip_limit
    }
    fn hard_limit(&self) -> usize {
        self.common.hard_limit
    }
    fn node_budget(&self) -> usize {
        self.common.node_budget
    }
}
