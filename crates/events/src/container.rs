//! Container identity from a cgroup path.
//!
//! The agent maps an event's cgroup id to the cgroup directory's path, then
//! reads the container id from the path shape the runtime uses:
//!
//! | runtime | path |
//! |---|---|
//! | containerd (CRI, systemd driver) | `…/cri-containerd-<id>.scope` |
//! | CRI-O | `…/crio-<id>.scope` (and `crio-conmon-<id>.scope`, not a container) |
//! | docker (systemd driver) | `/system.slice/docker-<id>.scope` |
//! | docker (cgroupfs driver) | `/docker/<id>` |
//! | podman | `…/libpod-<id>.scope` (optionally `/container` below it) |
//! | kubelet (cgroupfs driver) | `/kubepods/<qos>/pod<uid>/<id>` |
//! | containerd `ctr`, runc | `/<namespace>/<id>` |
//!
//! An id is 64 lowercase hex characters (what every runtime above generates),
//! or, for the plain `/<namespace>/<id>` shape of runc and `ctr`, any name of
//! 1–128 characters from `[A-Za-z0-9_.-]` directly below a namespace that is
//! not a systemd slice. The plain shape is only accepted below a parent named
//! in [`ContainerPathRules::plain_parents`] so host services never look like
//! containers.

use serde::{Deserialize, Serialize};

/// The runtime family a container id was found under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// containerd through CRI (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// Docker (`docker-<id>.scope` or `/docker/<id>`).
    Docker,
    /// Podman (`libpod-<id>.scope`).
    Podman,
    /// Kubelet with the cgroupfs driver (`/kubepods/…/pod<uid>/<id>`).
    Kubepods,
    /// runc or `ctr` directly (`/<namespace>/<id>`).
    Plain,
}

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerRef {
    /// The runtime's container id.
    pub id: String,
    /// Which path shape it came from.
    pub runtime: Runtime,
}

/// Which plain `/<parent>/<id>` parents count as container namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPathRules {
    /// First path components under which any child is a container
    /// (default: `docker`, `default`, `moby`, `k8s.io`, `kestrel`).
    pub plain_parents: Vec<String>,
}

impl Default for ContainerPathRules {
    fn default() -> Self {
        ContainerPathRules {
            plain_parents: ["docker", "default", "moby", "k8s.io", "kestrel"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.ends_with(".slice")
        && !s.ends_with(".scope")
        && !s.ends_with(".service")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl ContainerPathRules {
    /// The container a cgroup path belongs to, if any.
    ///
    /// The deepest matching component wins, so a process in a sub-cgroup of a
    /// container (`libpod-<id>.scope/container`) is still that container.
    pub fn container_of(&self, path: &str) -> Option<ContainerRef> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate().rev() {
            let scoped = [
                ("cri-containerd-", Runtime::Containerd),
                ("crio-", Runtime::CriO),
                ("docker-", Runtime::Docker),
                ("libpod-", Runtime::Podman),
            ];
            for (prefix, runtime) in scoped {
                if let Some(id) = part
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(".scope"))
                {
                    if is_hex64(id) {
                        return Some(ContainerRef {
                            id: id.to_string(),
                            runtime,
                        });
                    }
                }
            }
            if is_hex64(part) {
                let runtime = if parts.iter().take(i).any(|p| p.starts_with("kubepods")) {
                    Runtime::Kubepods
                } else if i > 0 && parts[i - 1] == "docker" {
                    Runtime::Docker
                } else {
                    Runtime::Plain
                };
                return Some(ContainerRef {
                    id: part.to_string(),
                    runtime,
                });
            }
        }
        // `/<namespace>/<name>` with a known namespace (runc, ctr).
        if parts.len() >= 2
            && self.plain_parents.iter().any(|p| p == parts[0])
            && is_plain_name(parts[1])
        {
            let runtime = if parts[0] == "docker" {
                Runtime::Docker
            } else {
                Runtime::Plain
            };
            return Some(ContainerRef {
                id: parts[1].to_string(),
                runtime,
            });
        }
        None
    }
}

/// [`ContainerPathRules::container_of`] with the default rules.
pub fn container_of_cgroup_path(path: &str) -> Option<ContainerRef> {
    ContainerPathRules::default().container_of(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "fbbffe7f996d2c2e8e2b1cbd4ba1b57e11e2cc5b6fb2e0b8d8a8bfbde3c91a0f";

    fn id_of(path: &str) -> Option<(String, Runtime)> {
        container_of_cgroup_path(path).map(|c| (c.id, c.runtime))
    }

    #[test]
    fn every_runtime_path_shape_yields_the_container_id() {
        let cases = [
            (format!("/docker/{ID}"), Runtime::Docker),
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (format!("/default/{ID}"), Runtime::Plain),
            (format!("/kubepods/burstable/pod1234-5678/{ID}"), Runtime::Kubepods),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-{ID}.scope"),
                Runtime::Containerd,
            ),
            (format!("/kubepods.slice/x.slice/crio-{ID}.scope"), Runtime::CriO),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Runtime::Podman),
        ];
        for (path, runtime) in cases {
            assert_eq!(id_of(&path), Some((ID.to_string(), runtime)), "{path}");
        }
    }

    #[test]
    fn plain_runc_names_below_a_known_namespace_are_containers() {
        assert_eq!(
            id_of("/kestrel/web-1"),
            Some(("web-1".into(), Runtime::Plain))
        );
        assert_eq!(
            id_of("/default/my_ctr"),
            Some(("my_ctr".into(), Runtime::Plain))
        );
    }

    #[test]
    fn host_cgroups_are_not_containers() {
        for path in [
            "/",
            "",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods/burstable/pod1234",
            "/process_api/857ad36140b544c44f84ac1a7a6b6e22",
            "/docker",
            "/system.slice/docker-notanid.scope",
        ] {
            assert_eq!(id_of(path), None, "{path}");
        }
    }

    #[test]
    fn sub_cgroups_of_a_container_belong_to_it() {
        assert_eq!(
            id_of(&format!("/docker/{ID}/init")).map(|c| c.0),
            Some(ID.to_string())
        );
    }
}
