//! Who an event belongs to in a cluster: container id → pod → workload,
//! from what the watches saw (no I/O here; `watch` feeds it).
//!
//! The workload is the top controller reached through owner references:
//! Pod → ReplicaSet → Deployment, Pod → Job → CronJob, StatefulSet,
//! DaemonSet; a ReplicaSet or Job without such an owner is the workload
//! itself only when it is a Job (a bare ReplicaSet's pods are keyed by the
//! ReplicaSet as a Deployment would be); a pod without a controller is its
//! own workload (`Pod/name`). The engine's key is `namespace/Kind/name`
//! ([`kestrel_api::cluster_key`]), the same across rollouts (a new
//! ReplicaSet's pods belong to the same Deployment).
//!
//! Container ids are taken from `status.containerStatuses[].containerID`
//! (and init and ephemeral containers), without the runtime's scheme
//! (`containerd://`, `cri-o://`, `docker://`): the agent names a container
//! by the id in its cgroup path, which is that hex id.
//!
//! An event whose container is not known here is never attributed to a
//! workload by guessing: [`Identity::resolve`] returns `None` and the caller
//! counts it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kestrel_api::{WorkloadKind, WorkloadRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::engine::WorkloadFacts;

/// A container the operator can attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The engine's workload key (`shop/Deployment/webapp`).
    pub key: String,
    /// The pod's name.
    pub pod: String,
    /// The node the pod runs on (empty: not scheduled).
    pub node: String,
    /// The container's name in the pod.
    pub container: String,
    /// Its image.
    pub image: String,
}

#[derive(Debug, Clone)]
struct PodEntry {
    key: String,
    node: String,
    containers: Vec<(String, String, String)>,
}

type NsName = (String, String);

/// The cluster as the operator's watches see it (see the module docs).
#[derive(Debug, Default)]
pub struct Identity {
    /// ReplicaSet → its Deployment (None: none) and creation time (ns).
    replicasets: HashMap<NsName, (Option<String>, Option<u64>)>,
    /// Job → its CronJob.
    jobs: HashMap<NsName, Option<String>>,
    /// Desired replicas of Deployments, StatefulSets, DaemonSets by key.
    desired: HashMap<String, u32>,
    pods: HashMap<NsName, PodEntry>,
    containers: HashMap<String, NsName>,
    /// Pods whose ReplicaSet or Job is not seen yet.
    waiting: HashMap<NsName, Pod>,
    /// Bumped by every change to pods or owners ([`targets_by_node`](Self::targets_by_node)
    /// is recomputed only when it moved).
    generation: u64,
}

/// What changed for the engine after an update.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// New facts per workload key.
    pub facts: BTreeMap<String, WorkloadFacts>,
    /// Pods that went away, per workload key.
    pub pods_gone: BTreeMap<String, BTreeSet<String>>,
}

impl Changes {
    /// Adds `other`'s changes (later facts win).
    pub fn merge(&mut self, other: Changes) {
        self.facts.extend(other.facts);
        for (k, pods) in other.pods_gone {
            self.pods_gone.entry(k).or_default().extend(pods);
        }
    }
}

/// The container id without the runtime's scheme.
pub fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

fn ns_name(meta: &ObjectMeta) -> Option<NsName> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

fn time_ns(meta: &ObjectMeta) -> Option<u64> {
    let t = meta.creation_timestamp.as_ref()?;
    u64::try_from(t.0.as_nanosecond()).ok()
}

impl Identity {
    /// Nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The workload of a pod, through its owners.
    fn workload_of(&self, ns: &str, pod: &str, meta: &ObjectMeta) -> WorkloadRef {
        let own = |kind: WorkloadKind, name: &str| WorkloadRef {
            kind,
            name: name.to_string(),
            container: None,
        };
        let Some(owner) = controller(meta) else {
            return own(WorkloadKind::Pod, pod);
        };
        let key = (ns.to_string(), owner.name.clone());
        match owner.kind.as_str() {
            // a ReplicaSet without a Deployment is its pods' workload, keyed
            // as a Deployment of its own name would be
            "ReplicaSet" => match self.replicasets.get(&key) {
                Some((Some(d), _)) => own(WorkloadKind::Deployment, d),
                _ => own(WorkloadKind::Deployment, &owner.name),
            },
            "Job" => match self.jobs.get(&key) {
                Some(Some(c)) => own(WorkloadKind::CronJob, c),
                _ => own(WorkloadKind::Job, &owner.name),
            },
            "StatefulSet" => own(WorkloadKind::StatefulSet, &owner.name),
            "DaemonSet" => own(WorkloadKind::DaemonSet, &owner.name),
            _ => own(WorkloadKind::Pod, pod),
        }
    }

    /// Whether the pod's owner chain is fully known (its ReplicaSet or Job
    /// seen), so its workload is not a placeholder.
    fn owners_known(&self, ns: &str, meta: &ObjectMeta) -> bool {
        match controller(meta) {
            Some(o) if o.kind == "ReplicaSet" => self
                .replicasets
                .contains_key(&(ns.to_string(), o.name.clone())),
            Some(o) if o.kind == "Job" => self.jobs.contains_key(&(ns.to_string(), o.name.clone())),
            _ => true,
        }
    }

    /// A pod was added or changed.
    pub fn apply_pod(&mut self, pod: &Pod) -> Changes {
        self.generation += 1;
        let Some((ns, name)) = ns_name(&pod.metadata) else {
            return Changes::default();
        };
        if pod.metadata.deletion_timestamp.is_some() || is_finished(pod) {
            return self.delete_pod(&ns, &name);
        }
        if !self.owners_known(&ns, &pod.metadata) {
            // its ReplicaSet or Job is not seen yet: a name is not an
            // identity, so wait (the owner's watch event applies it)
            self.waiting.insert((ns, name), pod.clone());
            return Changes::default();
        }
        self.waiting.remove(&(ns.clone(), name.clone()));
        let mut changes = Changes::default();
        let workload = self.workload_of(&ns, &name, &pod.metadata);
        let key = kestrel_api::cluster_key(&ns, &workload);
        let images: HashMap<&str, &str> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
            .collect();
        let containers: Vec<(String, String, String)> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
                    .chain(s.ephemeral_container_statuses.iter().flatten())
            })
            .filter_map(|c| {
                let id = bare_container_id(c.container_id.as_deref()?);
                let image = images.get(c.name.as_str()).copied().unwrap_or(&c.image);
                (!id.is_empty()).then(|| (id.to_string(), c.name.clone(), image.to_string()))
            })
            .collect();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if let Some(old) = self.pods.remove(&(ns.clone(), name.clone())) {
            for (id, ..) in &old.containers {
                self.containers.remove(id);
            }
            if old.key != key {
                changes
                    .pods_gone
                    .entry(old.key.clone())
                    .or_default()
                    .insert(name.clone());
                changes
                    .facts
                    .insert(old.key.clone(), self.facts_of(&old.key));
            }
        }
        for (id, ..) in &containers {
            self.containers
                .insert(id.clone(), (ns.clone(), name.clone()));
        }
        self.pods.insert(
            (ns, name),
            PodEntry {
                key: key.clone(),
                node,
                containers,
            },
        );
        changes.facts.insert(key.clone(), self.facts_of(&key));
        changes
    }

    /// A pod went away.
    pub fn delete_pod(&mut self, ns: &str, name: &str) -> Changes {
        self.generation += 1;
        let mut changes = Changes::default();
        self.waiting.remove(&(ns.to_string(), name.to_string()));
        if let Some(old) = self.pods.remove(&(ns.to_string(), name.to_string())) {
            for (id, ..) in &old.containers {
                self.containers.remove(id);
            }
            changes
                .pods_gone
                .entry(old.key.clone())
                .or_default()
                .insert(name.to_string());
            changes
                .facts
                .insert(old.key.clone(), self.facts_of(&old.key));
        }
        changes
    }

    /// A ReplicaSet was added or changed: pods it owns may now resolve to
    /// their Deployment, and the Deployment's rollout time may move.
    pub fn apply_replicaset(&mut self, rs: &ReplicaSet) -> Changes {
        self.generation += 1;
        let Some(k) = ns_name(&rs.metadata) else {
            return Changes::default();
        };
        let owner = controller(&rs.metadata)
            .filter(|o| o.kind == "Deployment")
            .map(|o| o.name.clone());
        self.replicasets
            .insert(k.clone(), (owner, time_ns(&rs.metadata)));
        self.refresh_namespace(&k.0)
    }

    /// A ReplicaSet went away.
    pub fn delete_replicaset(&mut self, ns: &str, name: &str) -> Changes {
        self.generation += 1;
        self.replicasets.remove(&(ns.to_string(), name.to_string()));
        self.refresh_namespace(ns)
    }

    /// A Job was added or changed.
    pub fn apply_job(&mut self, job: &Job) -> Changes {
        self.generation += 1;
        let Some(k) = ns_name(&job.metadata) else {
            return Changes::default();
        };
        let owner = controller(&job.metadata)
            .filter(|o| o.kind == "CronJob")
            .map(|o| o.name.clone());
        self.jobs.insert(k.clone(), owner);
        self.refresh_namespace(&k.0)
    }

    /// A Job went away.
    pub fn delete_job(&mut self, ns: &str, name: &str) -> Changes {
        self.generation += 1;
        self.jobs.remove(&(ns.to_string(), name.to_string()));
        self.refresh_namespace(ns)
    }

    /// A Deployment, StatefulSet or DaemonSet (`kind`) went away: its
    /// replica count falls back to its live pods.
    pub fn delete_desired(&mut self, kind: &str, ns: &str, name: &str) -> Changes {
        let key = format!("{ns}/{kind}/{name}");
        self.desired.remove(&key);
        let mut changes = Changes::default();
        changes.facts.insert(key.clone(), self.facts_of(&key));
        changes
    }

    /// Desired replicas of a Deployment.
    pub fn apply_deployment(&mut self, d: &Deployment) -> Changes {
        let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        self.set_desired(&d.metadata, WorkloadKind::Deployment, n)
    }

    /// Desired replicas of a StatefulSet.
    pub fn apply_statefulset(&mut self, s: &StatefulSet) -> Changes {
        let n = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        self.set_desired(&s.metadata, WorkloadKind::StatefulSet, n)
    }

    /// Desired replicas of a DaemonSet (one per scheduled node).
    pub fn apply_daemonset(&mut self, d: &DaemonSet) -> Changes {
        let n = d
            .status
            .as_ref()
            .map(|s| s.desired_number_scheduled)
            .unwrap_or(0);
        self.set_desired(&d.metadata, WorkloadKind::DaemonSet, n)
    }

    fn set_desired(&mut self, meta: &ObjectMeta, kind: WorkloadKind, n: i32) -> Changes {
        let Some((ns, name)) = ns_name(meta) else {
            return Changes::default();
        };
        let key = kestrel_api::cluster_key(
            &ns,
            &WorkloadRef {
                kind,
                name,
                container: None,
            },
        );
        self.desired
            .insert(key.clone(), u32::try_from(n).unwrap_or(0));
        let mut changes = Changes::default();
        changes.facts.insert(key.clone(), self.facts_of(&key));
        changes
    }

    /// Applies again the waiting pods of a namespace after an owner was
    /// seen, and moves the facts of its workloads.
    fn refresh_namespace(&mut self, ns: &str) -> Changes {
        let mut changes = Changes::default();
        let ready: Vec<NsName> = self
            .waiting
            .iter()
            .filter(|((n, _), p)| n == ns && self.owners_known(n, &p.metadata))
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            if let Some(p) = self.waiting.remove(&k) {
                changes.merge(self.apply_pod(&p));
            }
        }
        let keys: BTreeSet<String> = self
            .pods
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, p)| p.key.clone())
            .collect();
        for key in keys {
            changes.facts.insert(key.clone(), self.facts_of(&key));
        }
        changes
    }

    /// Pods waiting for their ReplicaSet or Job to be seen.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// What the engine should know about a workload: its replicas (the
    /// owner's desired count, else the live pods) and its last rollout
    /// (a Deployment's newest ReplicaSet).
    pub fn facts_of(&self, key: &str) -> WorkloadFacts {
        let live = self.pods.values().filter(|p| p.key == key).count();
        let replicas = self
            .desired
            .get(key)
            .copied()
            .or_else(|| (live > 0).then(|| u32::try_from(live).unwrap_or(u32::MAX)));
        // a rollout is a new ReplicaSet next to an older one: the first
        // ReplicaSet is the Deployment's creation, not a release of it
        let rollout_ns = match kestrel_api::split_cluster_key(key) {
            (Some(ns), local) => local.strip_prefix("Deployment/").and_then(|d| {
                let times: Vec<u64> = self
                    .replicasets
                    .iter()
                    .filter(|((n, _), (owner, _))| n == ns && owner.as_deref() == Some(d))
                    .filter_map(|(_, (_, t))| *t)
                    .collect();
                (times.len() >= 2)
                    .then(|| times.iter().copied().max())
                    .flatten()
            }),
            _ => None,
        };
        WorkloadFacts {
            replicas,
            rollout_ns,
        }
    }

    /// The workload, pod and image of a container id (with or without the
    /// runtime's scheme); `None` when no watched pod has it.
    pub fn resolve(&self, container_id: &str) -> Option<Resolved> {
        let id = bare_container_id(container_id);
        let (ns, pod) = self.containers.get(id)?;
        let entry = self.pods.get(&(ns.clone(), pod.clone()))?;
        let (_, container, image) = entry.containers.iter().find(|(c, ..)| c == id)?;
        Some(Resolved {
            key: entry.key.clone(),
            pod: pod.clone(),
            node: entry.node.clone(),
            container: container.clone(),
            image: image.clone(),
        })
    }

    /// Pods known.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    /// A number that changes whenever pods or their owners change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Each node's containers with their workload and image: what that
    /// node's agent needs to filter per workload at the edge (its target
    /// set). Sorted, so equal sets compare equal.
    pub fn targets_by_node(&self) -> HashMap<String, Vec<kestrel_proto::ContainerTarget>> {
        let mut out: HashMap<String, Vec<kestrel_proto::ContainerTarget>> = HashMap::new();
        for entry in self.pods.values() {
            if entry.node.is_empty() {
                continue;
            }
            let list = out.entry(entry.node.clone()).or_default();
            for (id, _, image) in &entry.containers {
                list.push(kestrel_proto::ContainerTarget {
                    container_id_glob: id.clone(),
                    workload: entry.key.clone(),
                    image: image.clone(),
                });
            }
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| a.container_id_glob.cmp(&b.container_id_glob));
        }
        out
    }
}

/// A pod that finished (Succeeded or Failed) runs nothing any more.
fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, owner: Option<(&str, &str)>, ids: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": ns, "name": name,
                "ownerReferences": owner.map(|(kind, n)| vec![serde_json::json!({
                    "apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "u", "controller": true
                })]).unwrap_or_default(),
            },
            "spec": {
                "nodeName": "node-1",
                "containers": ids.iter().map(|(c, _)| serde_json::json!({"name": c, "image": "busybox:1.36"})).collect::<Vec<_>>(),
            },
            "status": {
                "phase": "Running",
                "containerStatuses": ids.iter().map(|(c, id)| serde_json::json!({
                    "name": c, "image": "docker.io/library/busybox:1.36", "imageID": "", "ready": true,
                    "restartCount": 0, "containerID": id
                })).collect::<Vec<_>>(),
            }
        }))
        .expect("a pod")
    }

    fn rs(ns: &str, name: &str, deployment: &str, created: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": ns, "name": name, "creationTimestamp": created,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                    "uid": "u", "controller": true
                }]
            }
        }))
        .expect("a replicaset")
    }

    #[test]
    fn a_deployments_pods_resolve_to_the_deployment_by_container_id() {
        let mut id = Identity::new();
        id.apply_replicaset(&rs("shop", "web-7d4f", "web", "2026-12-06T10:00:00Z"));
        let c = id.apply_pod(&pod(
            "shop",
            "web-7d4f-abcde",
            Some(("ReplicaSet", "web-7d4f")),
            &[("app", "containerd://0123abcd")],
        ));
        // one ReplicaSet: the Deployment's creation, no rollout yet
        assert_eq!(
            c.facts["shop/Deployment/web"],
            WorkloadFacts {
                replicas: Some(1),
                rollout_ns: None
            }
        );
        let r = id.resolve("0123abcd").expect("known container");
        assert_eq!(r.key, "shop/Deployment/web");
        assert_eq!(r.pod, "web-7d4f-abcde");
        assert_eq!(r.container, "app");
        assert_eq!(r.image, "busybox:1.36");
        assert_eq!(r.node, "node-1");
        assert_eq!(id.resolve("containerd://0123abcd"), Some(r));
        assert_eq!(id.resolve("ffff"), None);
    }

    #[test]
    fn owners_other_kinds_and_bare_pods() {
        let mut id = Identity::new();
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ops", "name": "backup-2901", "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "u", "controller": true
            }]}
        }))
        .unwrap();
        id.apply_job(&job);
        id.apply_pod(&pod(
            "ops",
            "backup-2901-x",
            Some(("Job", "backup-2901")),
            &[("c", "cri-o://aa")],
        ));
        id.apply_pod(&pod(
            "db",
            "pg-0",
            Some(("StatefulSet", "pg")),
            &[("c", "docker://bb")],
        ));
        id.apply_pod(&pod("db", "debug", None, &[("c", "containerd://cc")]));
        assert_eq!(id.resolve("aa").unwrap().key, "ops/CronJob/backup");
        assert_eq!(id.resolve("bb").unwrap().key, "db/StatefulSet/pg");
        assert_eq!(id.resolve("cc").unwrap().key, "db/Pod/debug");
    }

    #[test]
    fn desired_replicas_win_over_live_pods_and_gone_pods_are_reported() {
        let mut id = Identity::new();
        id.apply_replicaset(&rs("shop", "web-1", "web", "2026-12-06T10:00:00Z"));
        for (i, c) in ["a1", "a2", "a3"].iter().enumerate() {
            id.apply_pod(&pod(
                "shop",
                &format!("web-1-{i}"),
                Some(("ReplicaSet", "web-1")),
                &[("app", c)],
            ));
        }
        assert_eq!(id.facts_of("shop/Deployment/web").replicas, Some(3));
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "shop", "name": "web"}, "spec": {
                "replicas": 5, "selector": {}, "template": {}
            }
        }))
        .unwrap();
        id.apply_deployment(&d);
        assert_eq!(id.facts_of("shop/Deployment/web").replicas, Some(5));
        let c = id.delete_pod("shop", "web-1-0");
        assert_eq!(
            c.pods_gone["shop/Deployment/web"],
            BTreeSet::from(["web-1-0".to_string()])
        );
        assert_eq!(id.resolve("a1"), None);
        assert!(id.resolve("a2").is_some());
        // a rollout: a second ReplicaSet; the newest one's creation is the
        // rollout time
        let c = id.apply_replicaset(&rs("shop", "web-2", "web", "2026-12-06T11:00:00Z"));
        assert_eq!(
            c.facts["shop/Deployment/web"].rollout_ns,
            Some(1_796_554_800_000_000_000)
        );
    }

    #[test]
    fn each_node_gets_the_containers_of_its_own_pods() {
        let mut id = Identity::new();
        id.apply_replicaset(&rs("shop", "web-5d8f", "web", "2026-01-01T00:00:00Z"));
        let g = id.generation();
        id.apply_pod(&pod(
            "shop",
            "web-5d8f-a",
            Some(("ReplicaSet", "web-5d8f")),
            &[("web", "containerd://aaa")],
        ));
        id.apply_pod(&pod("shop", "db-0", None, &[("db", "containerd://bbb")]));
        assert!(id.generation() > g);
        let t = id.targets_by_node();
        assert_eq!(t.len(), 1, "{t:?}");
        let on = &t["node-1"];
        assert_eq!(
            on.iter()
                .map(|c| (c.container_id_glob.as_str(), c.workload.as_str()))
                .collect::<Vec<_>>(),
            vec![("aaa", "shop/Deployment/web"), ("bbb", "shop/Pod/db-0")]
        );
        id.delete_pod("shop", "db-0");
        assert_eq!(id.targets_by_node()["node-1"].len(), 1);
    }

    #[test]
    fn a_pod_whose_replicaset_is_unseen_waits_for_it() {
        let mut id = Identity::new();
        let p = pod(
            "shop",
            "web-9-x",
            Some(("ReplicaSet", "web-9")),
            &[("app", "dd")],
        );
        assert_eq!(id.apply_pod(&p), Changes::default());
        assert_eq!(id.resolve("dd"), None, "never attributed by its name alone");
        assert_eq!(id.waiting(), 1);
        let c = id.apply_replicaset(&rs("shop", "web-9", "web", "2026-12-06T10:00:00Z"));
        assert_eq!(c.facts["shop/Deployment/web"].replicas, Some(1));
        assert_eq!(id.waiting(), 0);
        assert_eq!(id.resolve("dd").unwrap().key, "shop/Deployment/web");
    }

    #[test]
    fn finished_and_terminating_pods_resolve_no_more() {
        let mut id = Identity::new();
        let mut p = pod("db", "debug", None, &[("c", "ee")]);
        id.apply_pod(&p);
        assert!(id.resolve("ee").is_some());
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let c = id.apply_pod(&p);
        assert!(c.pods_gone.contains_key("db/Pod/debug"));
        assert_eq!(id.resolve("ee"), None);
    }
}
