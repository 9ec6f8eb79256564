//! How a kernel event becomes profile input: the one place that decides which
//! fields of an [`Event`] form the process, file and network trie paths
//! (the node agent calls it at the edge, the operator on what agents send).
//!
//! - process: image → parent (the parent's comm) → executable, with the
//!   arguments after `argv[0]`, written losslessly and normalised
//!   ([`kestrel_embed::normalize`]). The executable is the path given to
//!   execve in its canonical spelling ([`process_path`]: `/bin/sleep`,
//!   `/tmp/java` for a renamed or symlinked binary, and for `./java` run
//!   in `/tmp`: a relative filename is joined to the working directory the
//!   kernel side resolved, [`kestrel_events::resolved_path`]; `java` only
//!   when it could not),
//!   so the binary-directory guards of the process trie apply; a re-exec
//!   through `/proc/self/exe` (busybox applets) is the basename of `argv[0]`.
//!   Profiles written before paths hold basenames ([`process_name`]) and
//!   match by basename until relearned (`ProcessKeys`);
//! - file: image → comm → access kind → the path as the syscall received it,
//!   resolved and in its canonical spelling
//!   ([`kestrel_events::resolved_path`]: `/tmp/../etc//shadow` is
//!   `/etc/shadow`, and so is `../etc/shadow` opened from `/tmp` or
//!   `shadow` opened relative to a descriptor of `/etc`; the raw spelling
//!   stays in the event and in the alert's evidence);
//! - failed exec: the file trie, access `exec`: image → comm (the caller)
//!   → `exec` → the resolved canonical path it tried to run;
//! - network: image → comm → direction → peer address → protocol → port
//!   (the remote port outbound, the local port inbound and for listeners).
//!   TCP state changes only contribute listeners: connects and accepts are
//!   already reported with their task by the syscall events.

use crate::event::{Event as ProfileEvent, FileEvent, NetworkEvent, Peer as PeerRef, ProcessEvent};
use kestrel_events::{
    Activity, Direction, Endpoint, Event, EventKind, NetOpKind, Peer, Protocol, TcpState,
};

/// The profile event of an activity of a container running `image`.
pub fn profile_event<'a>(activity: &'a Activity, image: &'a [u8]) -> ProfileEvent<'a> {
    match activity {
        Activity::Process {
            parent, exe, args, ..
        } => ProfileEvent::Process(ProcessEvent {
            image,
            parent,
            exe,
            args,
        }),
        Activity::File {
            process,
            access,
            path,
        } => ProfileEvent::File(FileEvent {
            image,
            process,
            access: *access,
            path,
        }),
        Activity::Network {
            process,
            direction,
            peer,
            protocol,
            port,
        } => ProfileEvent::Network(NetworkEvent {
            image,
            process,
            direction: *direction,
            peer: match peer {
                Peer::Ip(ip) => PeerRef::Ip(*ip),
                Peer::Name(n) => PeerRef::Name(n),
            },
            protocol: *protocol,
            port: *port,
        }),
    }
}

/// The lossless text of the arguments after `argv[0]`, normalised.
pub fn normalized_args(args: &[kestrel_events::ByteStr]) -> String {
    let joined: Vec<String> = args.iter().skip(1).map(|a| a.to_escaped()).collect();
    kestrel_embed::normalize(&joined.join(" "))
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or_default()
}

/// The process name of an exec (see the module docs).
pub fn process_name(x: &kestrel_events::Exec) -> Vec<u8> {
    let file = x.filename.as_bytes();
    let via_proc = file.starts_with(b"/proc/") && file.ends_with(b"/exe");
    let name = if file.is_empty() || via_proc {
        x.argv
            .args
            .first()
            .map(|a| basename(a.as_bytes()))
            .filter(|n| !n.is_empty())
    } else {
        Some(basename(file))
    };
    name.unwrap_or_else(|| x.exe.as_bytes()).to_vec()
}

/// The process trie's key of an exec (see the module docs): the canonical
/// path given to execve, or [`process_name`] for a re-exec through
/// `/proc/<pid>/exe` or an empty filename.
pub fn process_path(x: &kestrel_events::Exec) -> Vec<u8> {
    let file = x.filename.as_bytes();
    let via_proc = file.starts_with(b"/proc/") && file.ends_with(b"/exe");
    if file.is_empty() || via_proc {
        return process_name(x);
    }
    x.resolved_filename().into_owned()
}

/// The parent key of a process in the process trie.
///
/// A container's entry point (pid 1 of its pid namespace) was started by
/// the runtime (`runc`, `containerd-shim`, `conmon`, `crun`); which of
/// those its kernel parent is depends on the runtime and on timing (`runc
/// run -d` exits around the exec, and the init is re-parented to the
/// reaper, sometimes mid-exec), none of it the workload's behaviour: it is
/// [`RUNTIME_PARENT`]. Every other process is keyed by its parent's comm.
pub fn process_parent(x: &kestrel_events::Exec) -> Vec<u8> {
    if x.ns_pid == 1 {
        RUNTIME_PARENT.to_vec()
    } else {
        x.parent_comm.as_bytes().to_vec()
    }
}

/// The parent key of a container's entry point (see [`process_parent`]).
pub const RUNTIME_PARENT: &[u8] = b"<runtime>";

/// The profile activity of an event, if it has one.
pub fn activity_of(event: &Event) -> Option<Activity> {
    let comm = || {
        event
            .task
            .as_ref()
            .map(|t| t.comm.as_bytes().to_vec())
            .unwrap_or_default()
    };
    match &event.kind {
        EventKind::Exec(x) => Some(Activity::Process {
            parent: process_parent(x),
            exe: process_path(x),
            args: normalized_args(&x.argv.args),
            argv: x.argv.args.iter().map(|a| a.to_escaped()).collect(),
        }),
        EventKind::File(f) => {
            if f.read_failed && f.path.is_empty() {
                return None;
            }
            Some(Activity::File {
                process: comm(),
                access: f.access(),
                path: f.resolved_path().into_owned(),
            })
        }
        EventKind::Net(n) => {
            // TCP state changes only contribute listeners
            let direction = match (n.op, n.direction()?) {
                (NetOpKind::State, Direction::Listen) => Direction::Listen,
                (NetOpKind::State, _) => return None,
                (_, d) => d,
            };
            let (peer, port) = match direction {
                Direction::Outbound => match n.remote.as_ref()? {
                    Endpoint::Ip { addr, port } => (Peer::Ip(*addr), *port),
                    Endpoint::Unix { unix } => {
                        (Peer::Name([b"unix:", unix.as_bytes()].concat()), 0)
                    }
                },
                Direction::Inbound => {
                    let local_port = match n.local.as_ref()? {
                        Endpoint::Ip { port, .. } => *port,
                        Endpoint::Unix { .. } => 0,
                    };
                    match n.remote.as_ref()? {
                        Endpoint::Ip { addr, .. } => (Peer::Ip(*addr), local_port),
                        Endpoint::Unix { unix } => {
                            (Peer::Name([b"unix:", unix.as_bytes()].concat()), 0)
                        }
                    }
                }
                Direction::Listen => match (n.local.as_ref()?, n.tcp_state) {
                    (Endpoint::Ip { addr, port }, Some((_, TcpState::Listen))) => {
                        (Peer::Ip(*addr), *port)
                    }
                    _ => return None,
                },
            };
            Some(Activity::Network {
                process: comm(),
                direction,
                peer,
                protocol: if n.family == 1 {
                    Protocol::Other(0)
                } else {
                    Protocol::from_ip_number(n.protocol)
                },
                port,
            })
        }
        // a failed exec is the caller's attempt on a file: image → comm →
        // exec → path (the file trie; a successful exec is the process trie)
        EventKind::ExecFailed(x) => {
            if x.filename.is_empty() {
                return None;
            }
            Some(Activity::File {
                process: comm(),
                access: kestrel_events::FileAccess::Exec,
                path: kestrel_events::resolved_path(x.dir.as_ref(), x.filename.as_bytes())
                    .into_owned(),
            })
        }
        EventKind::Fork(_) | EventKind::Exit(_) | EventKind::Cgroup(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_events::{Argv, ByteStr, Exec, Namespaces, Task};

    fn exec(args: &[&str]) -> Event {
        Event {
            ts_ns: 0,
            cgroup_id: 1,
            task: Some(Task {
                pid: 10,
                tid: 10,
                ppid: 9,
                uid: 0,
                comm: "java".into(),
            }),
            ns: Namespaces::default(),
            container: None,
            kind: EventKind::Exec(Exec {
                filename: "/usr/bin/java".into(),
                exe: "java".into(),
                parent_comm: "sh".into(),
                ns_pid: 3,
                argv: Argv {
                    args: args.iter().map(|a| ByteStr::from(*a)).collect(),
                    size: 0,
                    truncated: false,
                    read_failed: false,
                },
                from_proc_scan: false,
                dir: None,
            }),
        }
    }

    #[test]
    fn exec_arguments_exclude_argv0_and_are_normalised() {
        let a = activity_of(&exec(&["java", "-jar", "app.jar", "--timestamp=12345"])).unwrap();
        let b = activity_of(&exec(&[
            "/opt/java",
            "-jar",
            "app.jar",
            "--timestamp=99999",
        ]))
        .unwrap();
        let (
            Activity::Process {
                args: x,
                parent,
                exe,
                ..
            },
            Activity::Process { args: y, .. },
        ) = (&a, &b)
        else {
            panic!()
        };
        assert_eq!(x, y, "timestamps normalise to the same text");
        assert!(!x.contains("java"));
        assert_eq!(parent, b"sh");
        assert_eq!(exe, b"/usr/bin/java");
    }

    #[test]
    fn a_containers_entry_point_is_keyed_by_the_runtime_not_by_its_kernel_parent() {
        // `runc run -d`: the init's parent is `runc`, the reaper, or gone
        for (parent, ns_pid, want) in [
            ("runc", 1, RUNTIME_PARENT),
            ("containerd-shim", 1, RUNTIME_PARENT),
            ("", 1, RUNTIME_PARENT),
            ("sh", 3, b"sh".as_slice()),
        ] {
            let mut e = exec(&["sh", "-c", "while true; do sleep 1; done"]);
            if let EventKind::Exec(x) = &mut e.kind {
                x.parent_comm = parent.into();
                x.ns_pid = ns_pid;
            }
            let Some(Activity::Process { parent: got, .. }) = activity_of(&e) else {
                panic!()
            };
            assert_eq!(got, want, "{parent} {ns_pid}");
        }
    }

    #[test]
    fn a_failed_exec_is_the_callers_exec_access_to_the_canonical_path() {
        let mut e = exec(&["kworker"]);
        e.kind = EventKind::ExecFailed(kestrel_events::ExecFailed {
            filename: "/dev/shm//kworker".into(),
            argv: Argv::default(),
            errno: 13,
            dfd: None,
            dir: None,
        });
        let Some(Activity::File {
            process,
            access,
            path,
        }) = activity_of(&e)
        else {
            panic!()
        };
        assert_eq!(process, b"java", "the caller's comm");
        assert_eq!(access, kestrel_events::FileAccess::Exec);
        assert_eq!(path, b"/dev/shm/kworker");
    }

    #[test]
    fn executables_are_keyed_by_their_canonical_path() {
        for (dir, filename, key) in [
            (None, "/usr/bin/java", &b"/usr/bin/java"[..]),
            (None, "/usr/bin/../../tmp//java", b"/tmp/java"),
            // run from /tmp: the working directory the kernel side resolved
            (Some("/tmp"), "./java", b"/tmp/java"),
            (Some("/dev/shm"), "../shm/.x", b"/dev/shm/.x"),
            // an absolute filename ignores it
            (Some("/tmp"), "/usr/bin/java", b"/usr/bin/java"),
            // unresolved (the walk did not reach the root): stays relative
            (None, "./java", b"java"),
        ] {
            let mut e = exec(&["java"]);
            if let EventKind::Exec(x) = &mut e.kind {
                x.filename = filename.into();
                x.dir = dir.map(Into::into);
            }
            let Some(Activity::Process { exe, .. }) = activity_of(&e) else {
                panic!()
            };
            assert_eq!(exe, key, "{filename}");
        }
    }

    #[test]
    fn non_utf8_arguments_stay_distinguishable() {
        let a = activity_of(&exec(&["x", "\u{e9}"])).unwrap();
        let mut raw = exec(&["x"]);
        if let EventKind::Exec(x) = &mut raw.kind {
            x.argv.args.push(ByteStr::new(vec![0xe9]));
        }
        let b = activity_of(&raw).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn busybox_re_execs_are_named_by_argv0() {
        let mut e = exec(&["sleep", "1"]);
        if let EventKind::Exec(x) = &mut e.kind {
            x.filename = "/proc/self/exe".into();
            x.exe = "busybox".into();
        }
        let Some(Activity::Process { exe, .. }) = activity_of(&e) else {
            panic!()
        };
        assert_eq!(exe, b"sleep");
    }

    #[test]
    fn file_paths_reach_the_tries_in_their_canonical_spelling() {
        for raw in [
            &b"/tmp/../etc//shadow"[..],
            b"/etc/./shadow",
            b"//etc/shadow/",
        ] {
            let mut e = exec(&["java"]);
            e.kind = EventKind::File(kestrel_events::FileOp::openat(
                ByteStr::new(raw.to_vec()),
                0,
            ));
            let Some(Activity::File { path, .. }) = activity_of(&e) else {
                panic!()
            };
            assert_eq!(path, b"/etc/shadow");
        }
    }
}
