//! Privileged tests: the real kernel through BPF, real runc containers.
//! They need root, BTF, runc and busybox; under `CI=true` they never skip.

mod common;

use kestrel_agent::capture::{CaptureConfig, Scope};
use kestrel_agent::cgroups::{cgroup2_mount, cgroup_id_of};
use kestrel_agent::sensors::SensorConfig;
use kestrel_e2e::{require_privileged, Container};
use kestrel_events::{Endpoint, Event, EventKind, FileAccess, FileOpKind, NetOpKind, TcpState};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn args_of(e: &Event) -> Option<Vec<String>> {
    match &e.kind {
        EventKind::Exec(x) => Some(
            x.argv
                .args
                .iter()
                .map(|a| a.to_lossy().into_owned())
                .collect(),
        ),
        _ => None,
    }
}

fn in_container(e: &Event, id: &str) -> bool {
    e.container.as_ref().is_some_and(|c| c.id == id)
}

fn container_scope(ids: &[&str]) -> CaptureConfig {
    CaptureConfig {
        scope: Scope::Containers(ids.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

#[test]
fn exec_in_a_container_reports_exact_argv_container_and_parent() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let c = Container::start("cap-exec", &["sleep", "3600"]).expect("start container");
    let cap = common::start(container_scope(&[c.id()]));
    let out = c
        .exec(&["sh", "-c", "/bin/echo hello \"two words\"; true"])
        .expect("exec");
    assert_eq!(out.stdout, "hello two words\n", "{out:?}");
    let want = ["/bin/echo", "hello", "two words"];
    let ev = cap
        .wait_for(Duration::from_secs(5), |e| {
            args_of(e).is_some_and(|a| a == want)
        })
        .expect("exec event for /bin/echo");
    let (events, stats) = cap.finish();

    assert!(in_container(&ev, c.id()), "container: {:?}", ev.container);
    let EventKind::Exec(exec) = &ev.kind else {
        unreachable!()
    };
    assert_eq!(exec.parent_comm.to_lossy(), "sh", "the shell ran it");
    let task = ev.task.as_ref().expect("task");
    // the parent is the `sh -c` process, whose own exec we saw too
    let sh = events
        .iter()
        .find(|e| {
            e.task.as_ref().is_some_and(|t| t.pid == task.ppid)
                && args_of(e).is_some_and(|a| a[0] == "sh")
        })
        .expect("exec event of the parent shell");
    assert!(in_container(sh, c.id()));
    let root = cgroup2_mount().expect("cgroup2 mount");
    let cgid =
        cgroup_id_of(&root.join(c.cgroup_path().trim_start_matches('/'))).expect("cgroup id");
    assert_eq!(ev.cgroup_id, cgid);
    assert!(ev.ns.pid != 0 && ev.ns.mnt != 0, "namespaces: {:?}", ev.ns);
    assert_eq!(stats.kernel.dropped, 0);
    assert!(stats.decode_errors.is_empty(), "{:?}", stats.decode_errors);
}

#[test]
fn file_and_tcp_activity_in_a_container_is_reported() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let c = Container::start("cap-file-net", &["sleep", "3600"]).expect("start container");
    let cap = common::start(container_scope(&[c.id()]));
    let out = c
        .exec(&[
            "sh",
            "-c",
            // the listener may need a while to start on a loaded machine:
            // retry the connection, then wait for the data to land
            "echo data > /tmp/f1; mv /tmp/f1 /tmp/f2; rm /tmp/f2; \
             (nc -l -p 8080 > /tmp/got &); \
             i=0; until echo hi | nc -w 1 127.0.0.1 8080; do i=$((i+1)); [ $i -ge 100 ] && break; sleep 0.1; done; \
             i=0; until [ -s /tmp/got ]; do i=$((i+1)); [ $i -ge 100 ] && break; sleep 0.1; done; cat /tmp/got",
        ])
        .expect("exec");
    assert_eq!(out.stdout, "hi\n", "{out:?}");
    let file = |op: FileOpKind, path: &'static str| move |e: &Event| matches!(&e.kind, EventKind::File(f) if f.op == op && f.path.as_bytes() == path.as_bytes());
    let created = cap
        .wait_for(Duration::from_secs(5), file(FileOpKind::Open, "/tmp/f1"))
        .expect("open /tmp/f1");
    let renamed = cap
        .wait_for(Duration::from_secs(5), file(FileOpKind::Rename, "/tmp/f1"))
        .expect("rename");
    let removed = cap
        .wait_for(Duration::from_secs(5), file(FileOpKind::Unlink, "/tmp/f2"))
        .expect("unlink");
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let connect = cap
        .wait_for(Duration::from_secs(5), |e| {
            matches!(&e.kind, EventKind::Net(n) if n.op == NetOpKind::Connect
                && n.remote == Some(Endpoint::Ip { addr: lo, port: 8080 }))
        })
        .expect("connect to 127.0.0.1:8080");
    let accept = cap
        .wait_for(Duration::from_secs(5), |e| {
            matches!(&e.kind, EventKind::Net(n) if n.op == NetOpKind::Accept
                && matches!(n.local, Some(Endpoint::Ip { port: 8080, .. })))
        })
        .expect("accept on port 8080");
    let established = cap
        .wait_for(Duration::from_secs(5), |e| {
            matches!(&e.kind, EventKind::Net(n) if n.op == NetOpKind::State
                && n.tcp_state == Some((TcpState::SynSent, TcpState::Established))
                && n.remote == Some(Endpoint::Ip { addr: lo, port: 8080 }))
        })
        .expect("SYN_SENT -> ESTABLISHED");
    let (_events, stats) = cap.finish();

    let EventKind::File(f) = &created.kind else {
        unreachable!()
    };
    assert_eq!(f.access(), FileAccess::Create, "flags {:o}", f.flags);
    assert_eq!(f.mode & 0o777, 0o666);
    let EventKind::File(r) = &renamed.kind else {
        unreachable!()
    };
    assert_eq!(
        r.new_path
            .as_ref()
            .map(|p| p.to_lossy().into_owned())
            .as_deref(),
        Some("/tmp/f2")
    );
    assert_eq!(
        removed
            .task
            .as_ref()
            .map(|t| t.comm.to_lossy().into_owned())
            .as_deref(),
        Some("rm")
    );
    for e in [
        &created,
        &renamed,
        &removed,
        &connect,
        &accept,
        &established,
    ] {
        assert!(in_container(e, c.id()), "{e:?}");
    }
    let EventKind::Net(a) = &accept.kind else {
        unreachable!()
    };
    assert_eq!(a.protocol, 6, "tcp");
    assert!(
        matches!(a.remote, Some(Endpoint::Ip { addr, port }) if addr == lo && port != 0),
        "{a:?}"
    );
    assert_eq!(stats.kernel.dropped, 0);
}

#[test]
fn with_the_filter_on_host_and_other_containers_produce_no_events() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let a = Container::start("cap-target", &["sleep", "3600"]).expect("start target");
    let b = Container::start("cap-other", &["sleep", "3600"]).expect("start other");
    let cap = common::start(container_scope(&[a.id()]));
    let before = cap.wait_for(Duration::from_millis(100), |_| false);
    assert!(before.is_none());
    for _ in 0..3 {
        b.exec(&["sh", "-c", "cat /etc/passwd > /dev/null; ls /"])
            .expect("exec in other");
        std::process::Command::new("/bin/sh")
            .args(["-c", "cat /etc/hostname > /dev/null"])
            .status()
            .expect("host sh");
    }
    a.exec(&["sh", "-c", "cat /etc/passwd > /dev/null"])
        .expect("exec in target");
    cap.wait_for(Duration::from_secs(5), |e| {
        in_container(e, a.id()) && args_of(e).is_some_and(|x| x[0] == "sh")
    })
    .expect("target container's exec");
    let (events, stats) = cap.finish();
    let strays: Vec<_> = events.iter().filter(|e| !in_container(e, a.id())).collect();
    assert!(
        strays.is_empty(),
        "events from outside the target: {:#?}",
        &strays[..strays.len().min(3)]
    );
    assert!(
        stats.kernel.filtered > 0,
        "the kernel filtered nothing: {stats:?}"
    );
}

#[test]
fn ring_buffer_overflow_is_counted_as_drops() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cfg = CaptureConfig {
        scope: Scope::Everything,
        sensors: SensorConfig {
            ring_bytes: 4096,
            network: false,
            ..Default::default()
        },
        poll_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let cap = common::start(cfg);
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", "exec 2>/dev/null; i=0; while [ $i -lt 20000 ]; do true < /nonexistent-kestrel; i=$((i+1)); done"])
        .status()
        .expect("load");
    assert!(status.success());
    let (_events, stats) = cap.finish();
    assert!(
        stats.kernel.dropped > 0,
        "no drops with a 4 KiB ring: {stats:?}"
    );
    assert!(
        stats.kernel.emitted + stats.kernel.dropped >= 20000,
        "{stats:?}"
    );
}

fn everything() -> CaptureConfig {
    CaptureConfig {
        scope: Scope::Everything,
        cgroup_events: false,
        ..Default::default()
    }
}

fn by_pid(pid: u32) -> impl Fn(&Event) -> bool {
    move |e| e.task.as_ref().is_some_and(|t| t.pid == pid)
}

#[test]
fn non_utf8_argv_bytes_are_kept_exactly() {
    use std::os::unix::ffi::OsStrExt;
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cap = common::start(everything());
    let arg = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff\xfe");
    let mut child = std::process::Command::new("/bin/echo")
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ev = cap
        .wait_for(Duration::from_secs(5), |e| {
            by_pid(pid)(e) && matches!(e.kind, EventKind::Exec(_))
        })
        .expect("exec of /bin/echo");
    cap.finish();
    let EventKind::Exec(x) = &ev.kind else {
        unreachable!()
    };
    assert_eq!(x.argv.args[1].as_bytes(), b"caf\xe9-\xff\xfe");
    assert!(!x.argv.truncated);
    // the JSON form keeps the bytes too
    let json = serde_json::to_string(&ev).unwrap();
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ev);
}

#[test]
fn a_100_kib_argument_list_is_truncated_and_flagged() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cap = common::start(everything());
    let big = "x".repeat(100 * 1024);
    let mut child = std::process::Command::new("/bin/true")
        .arg(&big)
        .arg("tail")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ev = cap
        .wait_for(Duration::from_secs(5), |e| {
            by_pid(pid)(e) && matches!(e.kind, EventKind::Exec(_))
        })
        .expect("exec of /bin/true");
    let (_, stats) = cap.finish();
    let EventKind::Exec(x) = &ev.kind else {
        unreachable!()
    };
    assert!(x.argv.truncated);
    assert!(
        x.argv.size as usize >= big.len() + "/bin/true".len(),
        "size {}",
        x.argv.size
    );
    // the bytes kept: the arguments and the NULs between them
    let kept: usize = x.argv.args.iter().map(|a| a.len()).sum::<usize>() + x.argv.args.len() - 1;
    assert!(kept <= 4096, "kept {kept} bytes");
    assert_eq!(x.argv.args[0].as_bytes(), b"/bin/true");
    assert!(stats.kernel.args_truncated >= 1);
}

#[test]
fn a_path_that_cannot_be_read_at_syscall_entry_is_flagged() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cap = common::start(everything());
    // SAFETY: the child only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: a bad pointer is the point; the kernel returns EFAULT.
        unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                8usize as *const libc::c_char,
                libc::O_RDONLY,
            );
            libc::_exit(0);
        }
    }
    assert!(pid > 0);
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let ev = cap
        .wait_for(Duration::from_secs(5), |e| {
            by_pid(pid as u32)(e) && matches!(e.kind, EventKind::File(_))
        })
        .expect("file event of the child");
    let (_, stats) = cap.finish();
    let EventKind::File(f) = &ev.kind else {
        unreachable!()
    };
    assert!(f.read_failed, "{f:?}");
    assert!(f.path.is_empty());
    assert!(stats.kernel.read_failed >= 1);
}

#[test]
fn exits_of_short_lived_processes_carry_their_status() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cap = common::start(everything());
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ev = cap
        .wait_for(Duration::from_secs(5), |e| {
            by_pid(pid)(e) && matches!(e.kind, EventKind::Exit(_))
        })
        .expect("exit event");
    cap.finish();
    assert_eq!(
        ev.kind,
        EventKind::Exit(kestrel_events::Exit { code: 7, signal: 0 })
    );
}

/// `sched_process_exec` reports only execs that succeed; a drop into a
/// `noexec` mount (runc mounts `/dev/shm` noexec) or a missing tool is
/// reported from `sys_exit_execve` with the filename, argv and error.
#[test]
fn failed_execs_from_a_noexec_mount_and_of_a_missing_tool_are_reported() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let c = Container::start("cap-noexec", &["sleep", "3600"]).expect("start container");
    let cap = common::start(container_scope(&[c.id()]));
    let out = c
        .exec(&[
            "sh",
            "-c",
            "cp /bin/busybox /dev/shm/kworker && chmod +x /dev/shm/kworker; \
             /dev/shm/kworker -o pool.example:4444 'two words'; /nonexistent/tool --x; true",
        ])
        .expect("exec");
    assert!(
        out.stderr.contains("Permission denied"),
        "the shell saw the failure: {out:?}"
    );
    let failed = |file: &'static [u8]| move |e: &Event| matches!(&e.kind, EventKind::ExecFailed(x) if x.filename.as_bytes() == file);
    let noexec = cap
        .wait_for(Duration::from_secs(5), failed(b"/dev/shm/kworker"))
        .expect("failed exec of /dev/shm/kworker");
    let missing = cap
        .wait_for(Duration::from_secs(5), failed(b"/nonexistent/tool"))
        .expect("failed exec of /nonexistent/tool");
    let (_, stats) = cap.finish();

    assert!(in_container(&noexec, c.id()));
    let EventKind::ExecFailed(x) = &noexec.kind else {
        unreachable!()
    };
    assert_eq!(x.errno, 13, "EACCES");
    assert_eq!(x.error_name(), "EACCES");
    let argv: Vec<String> = x
        .argv
        .args
        .iter()
        .map(|a| a.to_lossy().into_owned())
        .collect();
    assert_eq!(
        argv,
        ["/dev/shm/kworker", "-o", "pool.example:4444", "two words"]
    );
    assert!(!x.argv.truncated && !x.argv.read_failed);
    assert_eq!(x.dfd, None);
    // the task is the caller: the shell, which keeps running
    assert_eq!(noexec.task.as_ref().unwrap().comm.to_lossy(), "sh");
    let EventKind::ExecFailed(m) = &missing.kind else {
        unreachable!()
    };
    assert_eq!(m.error_name(), "ENOENT");
    assert_eq!(m.argv.args.len(), 2);
    assert!(stats.decode_errors.is_empty(), "{:?}", stats.decode_errors);
}

fn dir_of(e: &Event) -> Option<String> {
    let dir = match &e.kind {
        EventKind::File(f) => f.dir.as_ref(),
        EventKind::Exec(x) => x.dir.as_ref(),
        EventKind::ExecFailed(x) => x.dir.as_ref(),
        _ => None,
    };
    dir.map(|d| d.to_lossy().into_owned())
}

/// A relative path names a file only with the directory it is relative to,
/// and the process may be gone before user space could ask `/proc`: the
/// kernel side walks the working directory (or the dfd's directory) at the
/// call, up to the container's own root and across its mounts (`/dev/shm`
/// is a tmpfs inside the container).
#[test]
fn relative_paths_carry_the_directory_the_kernel_resolved_in_the_containers_view() {
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let c = Container::start("cap-relative", &["sleep", "3600"]).expect("start container");
    let cap = common::start(container_scope(&[c.id()]));
    let out = c
        .exec(&[
            "sh",
            "-c",
            "mkdir -p /tmp/w/sub && cd /tmp/w/sub && cat ../../../etc/passwd > /dev/null; \
             cp /bin/busybox ../kw && cd .. && ./kw true; \
             cp /bin/busybox /dev/shm/k2 && chmod +x /dev/shm/k2; cd /dev/shm && ./k2 true; \
             mv k2 ../shm/k3; true",
        ])
        .expect("exec");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let file = |op: FileOpKind, path: &'static str| move |e: &Event| matches!(&e.kind, EventKind::File(f) if f.op == op && f.path.as_bytes() == path.as_bytes());
    let passwd = cap
        .wait_for(
            Duration::from_secs(5),
            file(FileOpKind::Open, "../../../etc/passwd"),
        )
        .expect("open of ../../../etc/passwd");
    let exec = cap
        .wait_for(
            Duration::from_secs(5),
            |e| matches!(&e.kind, EventKind::Exec(x) if x.filename.as_bytes() == b"./kw"),
        )
        .expect("exec of ./kw");
    let failed = cap
        .wait_for(
            Duration::from_secs(5),
            |e| matches!(&e.kind, EventKind::ExecFailed(x) if x.filename.as_bytes() == b"./k2"),
        )
        .expect("failed exec of ./k2 on the noexec /dev/shm");
    let renamed = cap
        .wait_for(Duration::from_secs(5), file(FileOpKind::Rename, "k2"))
        .expect("rename of k2");
    let (_, stats) = cap.finish();

    assert_eq!(dir_of(&passwd).as_deref(), Some("/tmp/w/sub"));
    let EventKind::File(f) = &passwd.kind else {
        unreachable!()
    };
    assert_eq!(f.resolved_path().as_ref(), b"/etc/passwd");
    assert_eq!(dir_of(&exec).as_deref(), Some("/tmp/w"));
    let EventKind::Exec(x) = &exec.kind else {
        unreachable!()
    };
    assert_eq!(x.resolved_filename().as_ref(), b"/tmp/w/kw");
    assert_eq!(dir_of(&failed).as_deref(), Some("/dev/shm"));
    let EventKind::File(r) = &renamed.kind else {
        unreachable!()
    };
    assert_eq!(
        r.dir.as_ref().map(|d| d.to_lossy().into_owned()).as_deref(),
        Some("/dev/shm")
    );
    assert_eq!(
        r.new_dir
            .as_ref()
            .map(|d| d.to_lossy().into_owned())
            .as_deref(),
        Some("/dev/shm")
    );
    // an absolute path carries no directory
    assert!(stats.decode_errors.is_empty(), "{:?}", stats.decode_errors);
}

/// `openat(dirfd, "passwd")` names `/etc/passwd` when dirfd is `/etc`; a
/// host process here, so the walk ends at the host's root.
#[test]
fn a_path_relative_to_a_directory_descriptor_is_resolved_from_that_descriptor() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if !require_privileged() {
        return;
    }
    let _g = common::lock();
    let cap = common::start(everything());
    let etc = std::fs::File::open("/etc").unwrap();
    let dirfd = etc.as_raw_fd();
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.current_dir("/usr/share");
    // SAFETY: between fork and exec the child only reads two static,
    // NUL-terminated strings and makes two system calls with them.
    unsafe {
        cmd.pre_exec(move || {
            let (passwd, release) = (c"passwd", c"../lib/./os-release");
            // fault the strings' page in: a syscall-entry probe cannot
            // (see a_path_that_cannot_be_read_at_syscall_entry_is_flagged)
            std::ptr::read_volatile(passwd.as_ptr());
            std::ptr::read_volatile(release.as_ptr());
            libc::close(libc::openat(dirfd, passwd.as_ptr(), libc::O_RDONLY));
            libc::close(libc::openat(
                libc::AT_FDCWD,
                release.as_ptr(),
                libc::O_RDONLY,
            ));
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let opened = |path: &'static [u8]| {
        move |e: &Event| {
            by_pid(pid)(e) && matches!(&e.kind, EventKind::File(f) if f.path.as_bytes() == path)
        }
    };
    let via_fd = cap
        .wait_for(Duration::from_secs(5), opened(b"passwd"))
        .expect("openat(/etc fd, passwd)");
    let via_cwd = cap
        .wait_for(Duration::from_secs(5), opened(b"../lib/./os-release"))
        .expect("openat(AT_FDCWD, ../lib/./os-release)");
    cap.finish();
    let EventKind::File(f) = &via_fd.kind else {
        unreachable!()
    };
    assert_eq!(f.dfd, dirfd);
    assert_eq!(dir_of(&via_fd).as_deref(), Some("/etc"));
    assert_eq!(f.resolved_path().as_ref(), b"/etc/passwd");
    let EventKind::File(g) = &via_cwd.kind else {
        unreachable!()
    };
    assert_eq!(dir_of(&via_cwd).as_deref(), Some("/usr/share"));
    assert_eq!(g.resolved_path().as_ref(), b"/usr/lib/os-release");
}
