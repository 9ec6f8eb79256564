//! Object names, and the workload a profile belongs to.
//!
//! The engine keys a workload by a name: `Kind/name` in a cluster
//! (`Deployment/webapp`), a configured name or a container id standalone
//! (`web`). That name is not a valid object name, so an object carries it
//! in [`WorkloadRef`] (`spec.workload`), and where that cannot hold it
//! exactly (too long) in the annotation [`WORKLOAD_ANNOTATION`]; the object
//! name ([`object_name`]) is derived from it and never parsed back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;

/// Annotation with the exact workload name, written when `spec.workload`
/// cannot hold it exactly; it wins over `spec.workload` on load.
pub const WORKLOAD_ANNOTATION: &str = "kestrel.dev/workload";

/// The kind of workload a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (pods through a ReplicaSet).
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` CronJob (pods through a Job).
    CronJob,
    /// `batch/v1` Job.
    Job,
    /// A bare pod, its own workload.
    Pod,
    /// Standalone (no Kubernetes): a container id or a configured name.
    Container,
}

impl WorkloadKind {
    /// Every kind.
    pub const ALL: [WorkloadKind; 7] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::CronJob,
        WorkloadKind::Job,
        WorkloadKind::Pod,
        WorkloadKind::Container,
    ];

    /// The name (`Deployment`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Job => "Job",
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Container => "Container",
        }
    }
}

/// `spec.workload`: which workload a profile describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name (in the profile's namespace); standalone: the container id
    /// or the configured name.
    #[schemars(length(max = limits::NAME))]
    pub name: String,
    /// One container of the workload's pods, when the profile is for one
    /// container only; absent: every container (the image is the first level
    /// of every trie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::LABEL))]
    pub container: Option<String>,
}

impl WorkloadRef {
    /// The reference for an engine workload name: `Kind/name` with one of
    /// the Kubernetes kinds, otherwise a standalone [`WorkloadKind::Container`]
    /// named by the whole string. Names longer than [`limits::NAME`] are cut
    /// (see [`WorkloadRef::is_exact_for`]).
    pub fn parse(workload: &str) -> WorkloadRef {
        let k8s = workload.split_once('/').and_then(|(kind, name)| {
            let kind = WorkloadKind::ALL
                .into_iter()
                .find(|k| *k != WorkloadKind::Container && k.as_str() == kind)?;
            (!name.is_empty() && !name.contains('/')).then_some((kind, name))
        });
        let (kind, name) = k8s.unwrap_or((WorkloadKind::Container, workload));
        WorkloadRef {
            kind,
            name: cut(name, limits::NAME as usize).to_string(),
            container: None,
        }
    }

    /// The engine's name for the workload: `Kind/name`, or the bare name for
    /// a [`WorkloadKind::Container`].
    pub fn workload_name(&self) -> String {
        match self.kind {
            WorkloadKind::Container => self.name.clone(),
            k => format!("{}/{}", k.as_str(), self.name),
        }
    }

    /// Whether [`WorkloadRef::workload_name`] gives back `workload` exactly
    /// (otherwise the object also needs [`WORKLOAD_ANNOTATION`]).
    pub fn is_exact_for(&self, workload: &str) -> bool {
        self.workload_name() == workload
    }
}

/// The engine's key for a workload in a cluster: `namespace/Kind/name`
/// (`shop/Deployment/webapp`). Standalone keys carry no namespace.
pub fn cluster_key(namespace: &str, workload: &WorkloadRef) -> String {
    format!("{namespace}/{}", workload.workload_name())
}

/// Splits an engine key into its namespace and the workload within it:
/// `shop/Deployment/webapp` → `(Some("shop"), "Deployment/webapp")`. A key
/// that is not `namespace/Kind/name` with a Kubernetes kind and a DNS-label
/// namespace (every standalone key) → `(None, key)`.
pub fn split_cluster_key(key: &str) -> (Option<&str>, &str) {
    if let Some((ns, rest)) = key.split_once('/') {
        let is_label = !ns.is_empty()
            && ns.len() <= limits::LABEL as usize
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if is_label && WorkloadRef::parse(rest).kind != WorkloadKind::Container {
            return (Some(ns), rest);
        }
    }
    (None, key)
}

/// The longest prefix of `s` of at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lower-case alphanumerics, anything else as `-`.
fn dns_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The object name of a workload's profile: a DNS-1123 subdomain made of
/// lower-case alphanumerics and `-` (`Deployment/webapp` →
/// `deployment-webapp`, `web` → `web`). When more than case and `/` had to
/// change, or the name was too long, 8 hex digits of a hash of the exact
/// name follow, so distinct workloads keep distinct objects.
pub fn object_name(workload: &str) -> String {
    let mapped = dns_chars(workload);
    let trimmed = mapped.trim_matches('-');
    let plain = workload.to_ascii_lowercase().replace('/', "-");
    let max = limits::NAME as usize;
    if !trimmed.is_empty() && trimmed == plain && trimmed.len() <= max {
        return plain;
    }
    let suffix = format!(
        "{:08x}",
        kestrel_events::hash::stable_hash32(workload.as_bytes())
    );
    let head = cut(trimmed, max - suffix.len() - 1).trim_end_matches('-');
    if head.is_empty() {
        format!("w-{suffix}")
    } else {
        format!("{head}-{suffix}")
    }
}

/// The object name of an alert: `<workload>-<id>`, lower-case, DNS-safe,
/// at most 63 characters (a label, so it can also name a file). The id is
/// kept whole: a long workload name is shortened instead. For names that fit
/// this is the name every earlier release wrote.
pub fn alert_object_name(workload: &str, id: &str) -> String {
    let max = limits::LABEL as usize;
    let id = dns_chars(id);
    let id = id.trim_matches('-');
    let whole = dns_chars(&format!("{workload}-{id}"));
    let whole = whole.trim_matches('-');
    if whole.len() <= max || id.is_empty() {
        return cut(whole, max).trim_matches('-').to_string();
    }
    let id = cut(id, max);
    let room = max.saturating_sub(id.len() + 1);
    let head = dns_chars(workload);
    let head = cut(head.trim_matches('-'), room).trim_end_matches('-');
    if head.is_empty() {
        id.to_string()
    } else {
        format!("{head}-{id}")
    }
}

/// Whether `s` is a DNS-1123 subdomain, as the API server checks object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= limits::NAME as usize
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && part
                    .as_bytes()
                    .first()
                    .is_some_and(u8::is_ascii_alphanumeric)
                && part
                    .as_bytes()
                    .last()
                    .is_some_and(u8::is_ascii_alphanumeric)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_workload_names_parse_into_kind_and_name() {
        let r = WorkloadRef::parse("Deployment/webapp");
        assert_eq!(r.kind, WorkloadKind::Deployment);
        assert_eq!(r.name, "webapp");
        assert!(r.is_exact_for("Deployment/webapp"));
        for standalone in ["web", "demo-web-1", "Unknown/x", "Deployment/", "Pod/a/b"] {
            let r = WorkloadRef::parse(standalone);
            assert_eq!(r.kind, WorkloadKind::Container, "{standalone}");
            assert_eq!(r.workload_name(), standalone);
        }
    }

    #[test]
    fn overlong_workload_names_are_cut_and_flagged_as_inexact() {
        let long = "x".repeat(300);
        let r = WorkloadRef::parse(&long);
        assert_eq!(r.name.len(), 253);
        assert!(!r.is_exact_for(&long));
    }

    #[test]
    fn object_names_are_dns_subdomains_and_stay_distinct() {
        assert_eq!(object_name("Deployment/webapp"), "deployment-webapp");
        assert_eq!(object_name("web"), "web");
        let a = object_name("containerd://abc");
        let b = object_name("containerd:/-abc");
        assert_ne!(a, b);
        for n in [
            "Deployment/webapp",
            "web",
            "containerd://abc",
            "../x",
            "",
            "-",
            "ünïcode",
            &"y".repeat(400),
        ] {
            let o = object_name(n);
            assert!(is_dns_subdomain(&o), "{n:?} -> {o:?}");
        }
    }

    #[test]
    fn alert_names_keep_the_id_whole() {
        assert_eq!(
            alert_object_name("Deployment/webapp", "00ab"),
            "deployment-webapp-00ab"
        );
        let long = alert_object_name(&"w".repeat(80), "0123456789abcdef");
        assert!(long.ends_with("-0123456789abcdef"), "{long}");
        assert!(long.len() <= 63);
        assert!(is_dns_subdomain(&long));
    }

    #[test]
    fn cluster_keys_carry_the_namespace_and_standalone_keys_do_not() {
        let w = WorkloadRef::parse("Deployment/webapp");
        assert_eq!(cluster_key("shop", &w), "shop/Deployment/webapp");
        assert_eq!(
            split_cluster_key("shop/Deployment/webapp"),
            (Some("shop"), "Deployment/webapp")
        );
        assert_eq!(
            split_cluster_key("kube-sys/CronJob/backup"),
            (Some("kube-sys"), "CronJob/backup")
        );
        for standalone in [
            "web",
            "Deployment/webapp",
            "shop/Container/x",
            "Shop/Deployment/webapp",
            "-x/Deployment/webapp",
            "shop/Deployment/a/b",
            "shop/Deployment/",
            "containerd://abc",
        ] {
            assert_eq!(
                split_cluster_key(standalone),
                (None, standalone),
                "{standalone}"
            );
        }
    }
}
