//! cgroup id → cgroup path → container.
//!
//! `bpf_get_current_cgroup_id()` is the inode number of the task's directory
//! in the cgroup v2 hierarchy. The resolver walks that hierarchy once, learns
//! new directories from the `cgroup_mkdir` events the BPF side reports, and
//! rescans (rate-limited) when it meets an id it does not know.

use kestrel_events::{ContainerPathRules, ContainerRef};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a pure v2
/// host, `/sys/fs/cgroup/unified` on a hybrid one), from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // fields: id parent maj:min root mountpoint opts... - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The id BPF reports for a cgroup directory.
pub fn cgroup_id_of(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// What the resolver knows about one cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Path relative to the v2 mount, starting with `/`.
    pub path: String,
    /// The container it belongs to, if any.
    pub container: Option<ContainerRef>,
}

/// The ids of the containers whose cgroups exist now under the v2 mount at
/// `root` (a fresh walk: a removed container is gone).
pub fn live_containers(
    root: &Path,
    rules: ContainerPathRules,
) -> std::collections::BTreeSet<String> {
    CgroupResolver::new(root.to_path_buf(), rules)
        .containers()
        .filter_map(|(_, i)| i.container.as_ref().map(|c| c.id.clone()))
        .collect()
}

/// Maps cgroup ids to paths and containers.
pub struct CgroupResolver {
    root: PathBuf,
    rules: ContainerPathRules,
    by_id: HashMap<u64, CgroupInfo>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl CgroupResolver {
    /// A resolver for the hierarchy mounted at `root`, scanned once now.
    pub fn new(root: PathBuf, rules: ContainerPathRules) -> Self {
        let mut r = CgroupResolver {
            root,
            rules,
            by_id: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(200),
        };
        r.rescan();
        r
    }

    /// The v2 mount point this resolver reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks the whole hierarchy again.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&self.root)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_default();
            let rel = if rel == "/" { "/".to_string() } else { rel };
            self.insert(meta.ino(), &rel);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// Records a cgroup (from a `cgroup_mkdir` event or a scan).
    pub fn insert(&mut self, id: u64, path: &str) -> &CgroupInfo {
        let container = self.rules.container_of(path);
        self.by_id.insert(
            id,
            CgroupInfo {
                path: path.to_string(),
                container,
            },
        );
        &self.by_id[&id]
    }

    /// Forgets a removed cgroup.
    pub fn remove(&mut self, id: u64) -> Option<CgroupInfo> {
        self.by_id.remove(&id)
    }

    /// What is known about `id`, rescanning (rate-limited) on a miss.
    pub fn resolve(&mut self, id: u64) -> Option<&CgroupInfo> {
        if !self.by_id.contains_key(&id) {
            let due = self
                .last_scan
                .is_none_or(|t| t.elapsed() >= self.min_rescan);
            if due {
                self.rescan();
            }
        }
        self.by_id.get(&id)
    }

    /// Every known cgroup that belongs to a container.
    pub fn containers(&self) -> impl Iterator<Item = (u64, &CgroupInfo)> {
        self.by_id
            .iter()
            .filter(|(_, i)| i.container.is_some())
            .map(|(id, i)| (*id, i))
    }

    /// Ids of existing parents whose descendants are all containers: the
    /// plain `/<namespace>/<id>` parents of the rules, and the kubelet's
    /// pod root wherever it is (`kubepods` with the cgroupfs driver,
    /// `kubepods.slice` with systemd, also below a non-default
    /// `--cgroup-root`), so that a pod's containers are watched from their
    /// first instruction, before their `cgroup_mkdir` reaches user space.
    pub fn container_parents(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .rules
            .plain_parents
            .iter()
            .filter_map(|p| cgroup_id_of(&self.root.join(p)).ok())
            .collect();
        ids.extend(self.by_id.iter().filter_map(|(id, info)| {
            let last = info.path.rsplit('/').next()?;
            matches!(last, "kubepods" | "kubepods.slice").then_some(*id)
        }));
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_tree_is_resolved_by_inode() {
        let tmp = std::env::temp_dir().join(format!("kestrel-cg-{}", std::process::id()));
        let ctr = tmp.join("docker").join("a".repeat(64));
        std::fs::create_dir_all(&ctr).unwrap();
        let mut r = CgroupResolver::new(tmp.clone(), ContainerPathRules::default());
        let id = cgroup_id_of(&ctr).unwrap();
        let info = r.resolve(id).cloned().unwrap();
        assert_eq!(info.path, format!("/docker/{}", "a".repeat(64)));
        assert_eq!(info.container.unwrap().id, "a".repeat(64));
        assert_eq!(
            r.container_parents(),
            vec![cgroup_id_of(&tmp.join("docker")).unwrap()]
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_kubelets_pod_root_is_a_parent_below_any_cgroup_root() {
        let tmp = std::env::temp_dir().join(format!("kestrel-cg-kube-{}", std::process::id()));
        let cfs = tmp.join("custom/root/kubepods");
        let sysd = tmp.join("kubepods.slice");
        let ctr = cfs.join("besteffort/pod1234").join("b".repeat(64));
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::create_dir_all(sysd.join("kubepods-burstable.slice")).unwrap();
        std::fs::create_dir_all(tmp.join("system.slice/kubepods-lookalike.service")).unwrap();
        let r = CgroupResolver::new(tmp.clone(), ContainerPathRules::default());
        let mut want = vec![cgroup_id_of(&cfs).unwrap(), cgroup_id_of(&sysd).unwrap()];
        want.sort_unstable();
        assert_eq!(r.container_parents(), want);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_cgroup2_mount_is_found_on_this_host() {
        // Every supported host has a cgroup2 hierarchy (pure or hybrid).
        assert!(cgroup2_mount().is_some());
    }
}
