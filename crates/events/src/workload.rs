//! Which workload a container belongs to outside Kubernetes (standalone, and
//! agents served by an operator without an API server): named by
//! container-id globs in the config; any other container is its own workload.

use serde::{Deserialize, Serialize};

/// One configured workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Workload name (the profile's name).
    pub name: String,
    /// Container image (the first level of every trie).
    #[serde(default)]
    pub image: Option<String>,
    /// Glob over container ids (`*` any run, `?` one character).
    pub containers: String,
}

pub use crate::activity::Workload;

/// `*` and `?` glob match over bytes (no character classes).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Maps container ids to workloads.
#[derive(Debug, Clone, Default)]
pub struct WorkloadMap {
    specs: Vec<WorkloadSpec>,
}

impl WorkloadMap {
    /// From the configured specs (first match wins).
    pub fn new(specs: Vec<WorkloadSpec>) -> Self {
        WorkloadMap { specs }
    }

    /// The workload of a container.
    pub fn resolve(&self, container_id: &str) -> Workload {
        match self
            .specs
            .iter()
            .find(|s| glob_match(&s.containers, container_id))
        {
            Some(s) => Workload {
                name: s.name.clone(),
                image: s.image.clone().unwrap_or_else(|| s.name.clone()),
            },
            None => Workload {
                name: container_id.to_string(),
                image: "unknown".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_container_ids() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("w?b-*-x", "web-12-x"));
        assert!(!glob_match("web-*", "db-1"));
        assert!(!glob_match("web", "web-1"));
    }

    #[test]
    fn unconfigured_containers_are_their_own_workload() {
        let m = WorkloadMap::new(vec![WorkloadSpec {
            name: "web".into(),
            image: Some("webapp:v1".into()),
            containers: "web-*".into(),
        }]);
        assert_eq!(
            m.resolve("web-2"),
            Workload {
                name: "web".into(),
                image: "webapp:v1".into()
            }
        );
        assert_eq!(m.resolve("db-1").name, "db-1");
    }
}
