//! `kestrel profile export` and `kestrel profile diff`: profiles out of a
//! cluster or a standalone state directory, ready for Git, and compared in
//! words (docs/gitops.md).
//!
//! A profile is named by its object name (`deployment-web`) or its
//! workload (`Deployment/web` in a cluster, `web` standalone), looked up in
//! `--state-dir` when given, else in the cluster of the current kubeconfig
//! (`-n` namespace, default `default`); `diff` also takes a file (`-` is
//! stdin), such as the copy in Git.

use anyhow::{bail, Context, Result};
use kestrel_api::{BehaviorProfile, BehaviorProfileSpec, ProfileBody, ProfileMode, ProfileSource};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where profiles are read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A standalone state directory.
    Dir(PathBuf),
    /// The cluster of the current kubeconfig, in this namespace.
    Cluster {
        /// Namespace.
        namespace: String,
    },
}

/// Reads the profile `name` (object name or workload) from `source`.
pub fn fetch(source: &Source, name: &str) -> Result<BehaviorProfile> {
    match source {
        Source::Dir(dir) => {
            let store = kestrel_operator::store::DirStore::open_read_only(dir)?;
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            let listed = runtime.block_on(kestrel_operator::store::Store::load_profiles(&store))?;
            let mut names = Vec::new();
            for p in listed.into_iter().flatten() {
                if p.workload == name || p.object.metadata.name.as_deref() == Some(name) {
                    return Ok(p.object);
                }
                names.push(p.workload);
            }
            bail!(
                "no profile {name:?} in {} (it holds: {})",
                dir.display(),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        }
        Source::Cluster { namespace } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the cluster of the current kubeconfig")?;
                let api: kube::Api<BehaviorProfile> = kube::Api::namespaced(client, namespace);
                if let Some(p) = api.get_opt(name).await? {
                    return Ok(p);
                }
                let all = api.list(&Default::default()).await?;
                all.items
                    .into_iter()
                    .find(|p| p.workload_name().as_deref() == Some(name))
                    .with_context(|| {
                        format!("no BehaviorProfile {name:?} in namespace {namespace}")
                    })
            })
        }
    }
}

/// Reads the profile `arg` names: a file (`-`: stdin) when one is there,
/// else the profile of that name (object or workload) from `source`.
pub fn load(arg: &str, source: &Source) -> Result<BehaviorProfile> {
    let path = Path::new(arg);
    if arg == "-" || path.is_file() {
        read_file(path)
    } else {
        fetch(source, arg)
    }
}

/// Reads a profile from a file (`-`: stdin), YAML or JSON.
pub fn read_file(path: &Path) -> Result<BehaviorProfile> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    Ok(kestrel_api::profile_from_yaml(&text)
        .with_context(|| format!("{}: not a BehaviorProfile", path.display()))?
        .object)
}

/// The profile as a promoted one, ready for Git: `source: Promoted`,
/// `mode: Detect` (or `mode` when given), the behaviour as
/// `spec.baseline`, the learning and compaction settings kept; no status
/// and none of the cluster's fields (uid, resourceVersion, managedFields,
/// timestamps, generation).
pub fn export(p: &BehaviorProfile, mode: ProfileMode) -> Result<BehaviorProfile> {
    let body = p.body().cloned().with_context(|| {
        format!(
            "profile {:?} has learned nothing yet ({} is empty)",
            p.metadata.name.as_deref().unwrap_or_default(),
            p.body_path()
        )
    })?;
    let name = p.metadata.name.clone().unwrap_or_default();
    let mut out = BehaviorProfile::new(
        &name,
        BehaviorProfileSpec {
            source: ProfileSource::Promoted,
            mode,
            workload: p.spec.workload.clone(),
            learning: p.spec.learning.clone(),
            compaction: p.spec.compaction.clone(),
            baseline: Some(body),
        },
    );
    out.metadata.namespace = p.metadata.namespace.clone();
    // the exact workload name, when the object name could not hold it
    if let Some(w) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(kestrel_api::WORKLOAD_ANNOTATION))
    {
        out.metadata.annotations =
            Some([(kestrel_api::WORKLOAD_ANNOTATION.to_string(), w.clone())].into());
    }
    Ok(out)
}

/// What differs between two profiles' behaviour, in words; empty when
/// they hold the same behaviour.
pub fn diff(a: &ProfileBody, b: &ProfileBody) -> String {
    let mut out = String::new();
    // processes: image, parent, program → exemplars
    let procs = |body: &ProfileBody| -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in &body.processes {
            m.entry(format!("{} {} → {}", p.image, p.parent, p.exe))
                .or_default()
                .extend(p.arguments.iter().map(|x| x.args.clone()));
        }
        m
    };
    section(&mut out, "processes", &procs(a), &procs(b), "exemplar");
    let files = |body: &ProfileBody| -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &body.files {
            m.entry(format!("{} {} {}", f.image, f.process, f.access))
                .or_default()
                .extend(f.paths.iter().cloned());
        }
        m
    };
    section(&mut out, "files", &files(a), &files(b), "path");
    let network = |body: &ProfileBody| -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in &body.network {
            m.entry(format!(
                "{} {} {} {}",
                n.image, n.process, n.direction, n.peer
            ))
            .or_default()
            .extend(n.ports.iter().cloned());
        }
        m
    };
    section(&mut out, "network", &network(a), &network(b), "port");
    out
}

/// One class of behaviour: branches only in A (`-`), only in B (`+`), and
/// for branches in both, the leaves (exemplars, paths, ports) that differ.
fn section(
    out: &mut String,
    title: &str,
    a: &BTreeMap<String, BTreeSet<String>>,
    b: &BTreeMap<String, BTreeSet<String>>,
    leaf: &str,
) {
    let mut lines = String::new();
    for (k, leaves) in a {
        match b.get(k) {
            None => {
                let _ = writeln!(lines, "- {k}{}", leaves_note(leaves, leaf));
            }
            Some(other) => {
                let removed: Vec<&String> = leaves.difference(other).collect();
                let added: Vec<&String> = other.difference(leaves).collect();
                if removed.is_empty() && added.is_empty() {
                    continue;
                }
                let _ = writeln!(lines, "~ {k}");
                for r in removed {
                    let _ = writeln!(lines, "    - {leaf} {r:?}");
                }
                for x in added {
                    let _ = writeln!(lines, "    + {leaf} {x:?}");
                }
            }
        }
    }
    for (k, leaves) in b {
        if !a.contains_key(k) {
            let _ = writeln!(lines, "+ {k}{}", leaves_note(leaves, leaf));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "{title}:");
        out.push_str(&lines);
    }
}

fn leaves_note(leaves: &BTreeSet<String>, leaf: &str) -> String {
    match leaves.len() {
        0 => String::new(),
        1 => format!(" ({leaf} {:?})", leaves.iter().next().map_or("", |s| s)),
        n => format!(" ({n} {leaf}s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned() -> BehaviorProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
            "metadata": {"name": "deployment-web", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "812", "generation": 1,
                "creationTimestamp": "2026-12-07T00:00:00Z",
                "managedFields": [{"manager": "kestrel-operator", "operation": "Apply"}]},
            "spec": {"source": "Learned", "mode": "Auto",
                "workload": {"kind": "Deployment", "name": "web"},
                "learning": {"window": "10m"}},
            "status": {"phase": "Detecting", "learned": {
                "similarityThreshold": 0.9,
                "processes": [
                    {"image": "web:v1", "parent": "sh", "exe": "/usr/bin/java",
                     "arguments": [{"args": "-jar app.jar"}]},
                    {"image": "web:v1", "parent": "<runtime>", "exe": "/bin/sh",
                     "arguments": [{"args": "-c loop"}]}],
                "files": [{"image": "web:v1", "process": "java", "access": "read",
                     "paths": ["/app/config.yaml"]}],
                "network": [{"image": "web:v1", "process": "java", "direction": "outbound",
                     "peer": "10.0.0.5", "ports": ["tcp/5432"]}]}}
        }))
        .unwrap()
    }

    #[test]
    fn export_makes_a_promoted_profile_without_the_clusters_fields() {
        let out = export(&learned(), ProfileMode::Detect).unwrap();
        assert_eq!(out.spec.source, ProfileSource::Promoted);
        assert_eq!(out.spec.mode, ProfileMode::Detect);
        assert_eq!(out.spec.baseline.as_ref(), learned().body());
        assert_eq!(out.spec.learning, learned().spec.learning);
        assert!(out.status.is_none());
        let m = &out.metadata;
        assert_eq!(m.name.as_deref(), Some("deployment-web"));
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert!(m.uid.is_none() && m.resource_version.is_none() && m.generation.is_none());
        assert!(m.managed_fields.is_none() && m.creation_timestamp.is_none());
        // it reads back as what the API server and the operator accept
        let yaml = kestrel_api::to_yaml(&out).unwrap();
        assert_eq!(
            kestrel_api::profile_from_yaml(&yaml).unwrap().object.spec,
            out.spec
        );
        // nothing learned yet: a clear error, not an empty baseline
        let mut empty = learned();
        empty.status = None;
        let err = export(&empty, ProfileMode::Detect).unwrap_err().to_string();
        assert!(err.contains("status.learned is empty"), "{err}");
    }

    #[test]
    fn diff_names_added_and_removed_branches_and_leaves() {
        let a = learned().body().cloned().unwrap();
        assert_eq!(diff(&a, &a), "");
        let mut b = a.clone();
        b.processes[0].arguments.push(kestrel_api::ArgumentSpec {
            args: "-jar app.jar --debug".into(),
            min_similarity: None,
        });
        b.processes.remove(1);
        b.files[0].paths.push("/etc/ssl/private/server.key".into());
        b.network.clear();
        let d = diff(&a, &b);
        assert_eq!(
            d,
            "processes:\n\
             - web:v1 <runtime> → /bin/sh (exemplar \"-c loop\")\n\
             ~ web:v1 sh → /usr/bin/java\n    + exemplar \"-jar app.jar --debug\"\n\
             files:\n\
             ~ web:v1 java read\n    + path \"/etc/ssl/private/server.key\"\n\
             network:\n\
             - web:v1 java outbound 10.0.0.5 (port \"tcp/5432\")\n"
        );
    }
}
