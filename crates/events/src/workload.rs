//! Which workload a container belongs to outside Kubernetes (standalone, and
//! agents served by an operator without an API server): named by
//! container-id globs in the config; any other container is its own workload.

use serde::{Deserialize, Serialize};

use crate::glob::Glob;

/// One configured workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Workload name (the profile's name).
    pub name: String,
    /// Container image (the first level of every trie).
    #[serde(default)]
    pub image: Option<String>,
    /// Glob over container ids, in the one glob syntax of [`crate::glob`]
    /// (`*` any run, `?` one character, `[0-9]`, `{a,b}`). An invalid
    /// pattern is a config error, not a workload that matches nothing.
    pub containers: Glob,
}

pub use crate::activity::Workload;

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
            .find(|s| s.containers.is_match(container_id))
        {
            Some(s) => Workload {
                name: s.name.clone(),
                image: s.image.clone().unwrap_or_else(|| s.name.clone()),
                pod: String::new(),
                node: String::new(),
            },
            None => Workload {
                name: container_id.to_string(),
                image: "unknown".into(),
                pod: String::new(),
                node: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_container_ids() {
        let m = |p: &str, t: &str| Glob::new(p).unwrap().is_match(t);
        assert!(m("web-*", "web-1"));
        assert!(m("*", "anything"));
        assert!(m("w?b-*-x", "web-12-x"));
        assert!(m("web-[0-9]", "web-7"));
        assert!(!m("web-*", "db-1"));
        assert!(!m("web", "web-1"));
    }

    #[test]
    fn a_bad_container_glob_is_a_config_error() {
        let e =
            serde_json::from_str::<WorkloadSpec>(r#"{"name": "web", "containers": "web-[0-9"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("invalid glob \"web-[0-9\""), "{e}");
    }

    #[test]
    fn unconfigured_containers_are_their_own_workload() {
        let m = WorkloadMap::new(vec![WorkloadSpec {
            name: "web".into(),
            image: Some("webapp:v1".into()),
            containers: Glob::new("web-*").unwrap(),
        }]);
        assert_eq!(
            m.resolve("web-2"),
            Workload {
                name: "web".into(),
                image: "webapp:v1".into(),
                pod: String::new(),
                node: String::new(),
            }
        );
        assert_eq!(m.resolve("db-1").name, "db-1");
    }
}
