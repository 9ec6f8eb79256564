//! The event model: one [`Event`] per thing the kernel reported.

use crate::{ByteStr, ContainerRef};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Who did it: the task fields every event carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Process id (tgid) on the host.
    pub pid: u32,
    /// Thread id on the host.
    pub tid: u32,
    /// Parent process id on the host.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Task name (`comm`, at most 15 bytes).
    pub comm: ByteStr,
}

/// Namespaces of the task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// pid namespace inode.
    pub pid: u32,
    /// mount namespace inode.
    pub mnt: u32,
}

/// One observed event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// cgroup v2 id of the task (of the socket for TCP state changes).
    pub cgroup_id: u64,
    /// The task; `None` when the kernel ran it outside the owner's context
    /// (TCP state changes in softirq).
    pub task: Option<Task>,
    /// Namespaces of the task.
    pub ns: Namespaces,
    /// The container, when user space could identify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A program was executed.
    Exec(Exec),
    /// An exec attempt failed (the caller keeps running its own image).
    ExecFailed(ExecFailed),
    /// A new process was created.
    Fork(Fork),
    /// A process ended.
    Exit(Exit),
    /// A file was opened, renamed or removed.
    File(FileOp),
    /// A connection was attempted, accepted or changed state.
    Net(NetOp),
    /// A cgroup was created or removed (containers come and go).
    Cgroup(CgroupChange),
}

/// A successful exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// The path given to execve.
    pub filename: ByteStr,
    /// Basename of the executable file actually mapped (resolves
    /// `/proc/self/exe` re-execs, e.g. busybox applets).
    pub exe: ByteStr,
    /// Parent's comm.
    pub parent_comm: ByteStr,
    /// pid inside the task's own pid namespace.
    pub ns_pid: u32,
    /// The argument vector.
    pub argv: Argv,
    /// Set when this was found by the start-up `/proc` scan, not seen live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_proc_scan: bool,
    /// The directory a relative `filename` is relative to (the working directory), as the
    /// kernel side resolved it when the call was made: absolute, in the
    /// task's own view of the filesystem (a container's paths). `None` for
    /// an absolute path, or when the kernel side could not resolve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<ByteStr>,
}

impl Exec {
    /// The executable's path in its canonical spelling, `./miner` run from
    /// `/tmp` being `/tmp/miner` ([`crate::resolved_path`]).
    pub fn resolved_filename(&self) -> std::borrow::Cow<'_, [u8]> {
        crate::resolved_path(self.dir.as_ref(), self.filename.as_bytes())
    }
}

/// An `execve`/`execveat` that returned an error: a missing binary, a
/// `noexec` mount, a file that is not executable. The task is the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailed {
    /// The path given to the call (for `execveat`, relative to `dfd`).
    pub filename: ByteStr,
    /// The argument vector passed.
    pub argv: Argv,
    /// The error, as a positive errno (2 ENOENT, 8 ENOEXEC, 13 EACCES).
    pub errno: i32,
    /// `execveat`'s directory descriptor, when not `AT_FDCWD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dfd: Option<i32>,
    /// The directory a relative `filename` is relative to (`dfd`'s, else the working directory), as the
    /// kernel side resolved it when the call was made: absolute, in the
    /// task's own view of the filesystem (a container's paths). `None` for
    /// an absolute path, or when the kernel side could not resolve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<ByteStr>,
}

impl ExecFailed {
    /// The errno's symbolic name (`ENOENT`), or its number.
    pub fn error_name(&self) -> std::borrow::Cow<'static, str> {
        let name = match self.errno {
            1 => "EPERM",
            2 => "ENOENT",
            7 => "E2BIG",
            8 => "ENOEXEC",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            20 => "ENOTDIR",
            21 => "EISDIR",
            26 => "ETXTBSY",
            36 => "ENAMETOOLONG",
            40 => "ELOOP",
            n => return format!("errno {n}").into(),
        };
        name.into()
    }
}

/// An argument vector as read from the process's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argv {
    /// The arguments, `argv[0]` first.
    pub args: Vec<ByteStr>,
    /// Total size of the argument area in bytes (before any truncation).
    pub size: u32,
    /// Only a prefix was captured; the last argument may be cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The argument area could not be read at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_failed: bool,
}

impl Argv {
    /// Splits a NUL-separated argument area (one trailing NUL is dropped).
    pub fn from_nul_separated(buf: &[u8], size: u32, truncated: bool, read_failed: bool) -> Self {
        let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
        let args = if buf.is_empty() {
            Vec::new()
        } else {
            buf.split(|&b| b == 0).map(ByteStr::new).collect()
        };
        Argv {
            args,
            size,
            truncated,
            read_failed,
        }
    }

    /// The arguments after `argv[0]`, joined with single spaces (lossless bytes).
    pub fn tail_joined(&self) -> ByteStr {
        let mut out = Vec::new();
        for (i, a) in self.args.iter().skip(1).enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(a.as_bytes());
        }
        ByteStr::new(out)
    }
}

/// A new process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// The parent's pid (the child is [`Task::pid`]).
    pub parent_pid: u32,
}

/// A process exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit status (0–255) when it exited normally.
    pub code: u8,
    /// Terminating signal, or 0.
    pub signal: u8,
}

impl Exit {
    /// Decodes the kernel's `task->exit_code` (`(status << 8) | signal`).
    pub fn from_raw(raw: u32) -> Self {
        Exit {
            code: ((raw >> 8) & 0xff) as u8,
            signal: (raw & 0x7f) as u8,
        }
    }
}

/// The kind of file operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOpKind {
    /// open, openat, openat2.
    Open,
    /// rename, renameat, renameat2.
    Rename,
    /// unlink, unlinkat.
    Unlink,
}

/// How a file was accessed, as profiles classify it.
///
/// Serialised in PascalCase (`Read`), as Kubernetes API enums are; the
/// lower-case words of profiles and rules (`read`, [`FileAccess::as_str`])
/// are accepted on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum FileAccess {
    /// Opened read-only.
    #[serde(alias = "read")]
    Read,
    /// Opened for writing (an existing file, or without O_CREAT).
    #[serde(alias = "write")]
    Write,
    /// Opened with O_CREAT.
    #[serde(alias = "create")]
    Create,
    /// Unlinked.
    #[serde(alias = "delete")]
    Delete,
    /// Renamed (the source path).
    #[serde(alias = "rename")]
    Rename,
    /// Executed, and the exec failed ([`ExecFailed`]: a missing binary, a
    /// `noexec` mount); an exec that succeeds is process activity.
    #[serde(alias = "exec")]
    Exec,
}

/// A file operation at syscall entry (paths as the caller gave them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// Which operation.
    pub op: FileOpKind,
    /// The syscall number.
    pub syscall_nr: u32,
    /// Directory fd the path is relative to (-100 = cwd).
    pub dfd: i32,
    /// The path (`oldpath` for renames).
    pub path: ByteStr,
    /// The new path of a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<ByteStr>,
    /// Directory fd of the new path of a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_dfd: Option<i32>,
    /// open/rename/unlink flags.
    pub flags: u32,
    /// open mode.
    pub mode: u32,
    /// A path was longer than the capture limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// A path could not be read at syscall entry (page not resident, bad pointer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_failed: bool,
    /// The directory a relative `path` is relative to (`dfd`'s, else the working directory), as the
    /// kernel side resolved it when the call was made: absolute, in the
    /// task's own view of the filesystem (a container's paths). `None` for
    /// an absolute path, or when the kernel side could not resolve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<ByteStr>,
    /// The same for a relative `new_path` (`new_dfd`'s directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_dir: Option<ByteStr>,
}

impl FileOp {
    /// An `openat(AT_FDCWD, path, flags)`, as the kernel side reports one
    /// (syscall 257, no mode, complete path).
    pub fn openat(path: impl Into<ByteStr>, flags: u32) -> Self {
        FileOp {
            op: FileOpKind::Open,
            syscall_nr: 257,
            dfd: -100,
            path: path.into(),
            new_path: None,
            new_dfd: None,
            flags,
            mode: 0,
            truncated: false,
            read_failed: false,
            dir: None,
            new_dir: None,
        }
    }

    /// The path in its canonical spelling, resolved against [`Self::dir`]
    /// when it is relative ([`crate::resolved_path`]).
    pub fn resolved_path(&self) -> std::borrow::Cow<'_, [u8]> {
        crate::resolved_path(self.dir.as_ref(), self.path.as_bytes())
    }

    /// The access kind profiles use.
    pub fn access(&self) -> FileAccess {
        const O_ACCMODE: u32 = 0o3;
        const O_CREAT: u32 = 0o100;
        match self.op {
            FileOpKind::Unlink => FileAccess::Delete,
            FileOpKind::Rename => FileAccess::Rename,
            FileOpKind::Open if self.flags & O_CREAT != 0 => FileAccess::Create,
            FileOpKind::Open if self.flags & O_ACCMODE != 0 => FileAccess::Write,
            FileOpKind::Open => FileAccess::Read,
        }
    }
}

/// The kind of network operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetOpKind {
    /// connect(2) at entry.
    Connect,
    /// accept(2)/accept4(2) returned a connection.
    Accept,
    /// A TCP state change (listen, established, failed connect).
    State,
}

/// A socket address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    /// IPv4 or IPv6 address and port.
    Ip {
        /// Address.
        addr: IpAddr,
        /// Port (host order).
        port: u16,
    },
    /// A unix socket path (abstract names start with `\x00`).
    Unix {
        /// The path bytes.
        unix: ByteStr,
    },
}

/// A network operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetOp {
    /// Which operation.
    pub op: NetOpKind,
    /// Address family (2 = inet, 10 = inet6, 1 = unix).
    pub family: u16,
    /// IP protocol (6 = tcp, 17 = udp), 0 if unknown.
    pub protocol: u16,
    /// The local end, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Endpoint>,
    /// The remote end, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Endpoint>,
    /// File descriptor of the socket (-1 when not in task context).
    pub fd: i32,
    /// Kernel socket address: correlates connect, accept and state events.
    pub sock: u64,
    /// For [`NetOpKind::State`]: the TCP states before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<(TcpState, TcpState)>,
    /// The address could not be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_failed: bool,
}

/// TCP states (the kernel's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// 1
    Established,
    /// 2
    SynSent,
    /// 3
    SynRecv,
    /// 7
    Close,
    /// 10
    Listen,
    /// Any other state number.
    Other(u16),
}

impl TcpState {
    /// From the kernel's number.
    pub fn from_raw(n: u16) -> Self {
        match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            7 => TcpState::Close,
            10 => TcpState::Listen,
            n => TcpState::Other(n),
        }
    }
}

/// Direction of a connection, as profiles classify it.
///
/// Serialised in PascalCase (`Outbound`); the lower-case words of profiles
/// and rules (`outbound`, [`Direction::as_str`]) are accepted on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Direction {
    /// We connected out.
    #[serde(alias = "outbound")]
    Outbound,
    /// Someone connected in.
    #[serde(alias = "inbound")]
    Inbound,
    /// We listen.
    #[serde(alias = "listen")]
    Listen,
}

impl NetOp {
    /// The direction profiles use, if this operation has one.
    pub fn direction(&self) -> Option<Direction> {
        match (self.op, self.tcp_state) {
            (NetOpKind::Connect, _) => Some(Direction::Outbound),
            (NetOpKind::Accept, _) => Some(Direction::Inbound),
            (NetOpKind::State, Some((_, TcpState::Listen))) => Some(Direction::Listen),
            (NetOpKind::State, Some((TcpState::SynSent, _))) => Some(Direction::Outbound),
            (NetOpKind::State, Some((TcpState::SynRecv, _))) => Some(Direction::Inbound),
            _ => None,
        }
    }
}

/// A process as the agent's process table knows it (for process chains).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Host pid.
    pub pid: u32,
    /// Process name (escaped text form of the bytes).
    pub exe: String,
    /// argv (escaped text form of the bytes).
    pub argv: Vec<String>,
}

/// A cgroup v2 directory was created or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupChange {
    /// Its id (what events carry as `cgroup_id`).
    pub id: u64,
    /// Depth below the root.
    pub level: i32,
    /// Path relative to the cgroup v2 mount.
    pub path: ByteStr,
    /// Created (`true`) or removed.
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_on_nul_and_keeps_empty_arguments() {
        let a = Argv::from_nul_separated(b"/bin/echo\0hello\0\0two words\0", 27, false, false);
        let args: Vec<_> = a.args.iter().map(|b| b.to_lossy().into_owned()).collect();
        assert_eq!(args, ["/bin/echo", "hello", "", "two words"]);
    }

    #[test]
    fn truncated_argv_keeps_the_partial_last_argument() {
        let a = Argv::from_nul_separated(b"seq\x001\x002\x0034", 9000, true, false);
        assert!(a.truncated);
        assert_eq!(a.args.last().map(|b| b.as_bytes()), Some(&b"34"[..]));
    }

    #[test]
    fn empty_argv_is_empty() {
        assert!(Argv::from_nul_separated(b"", 0, false, true)
            .args
            .is_empty());
    }

    #[test]
    fn open_flags_map_to_access_kinds() {
        let mut f = FileOp::openat("/etc/passwd", 0);
        assert_eq!(f.access(), FileAccess::Read);
        f.flags = 0o1; // O_WRONLY
        assert_eq!(f.access(), FileAccess::Write);
        f.flags = 0o1101; // O_WRONLY|O_CREAT|O_TRUNC
        assert_eq!(f.access(), FileAccess::Create);
        f.op = FileOpKind::Unlink;
        assert_eq!(f.access(), FileAccess::Delete);
    }

    #[test]
    fn exit_code_and_signal_are_split() {
        assert_eq!(Exit::from_raw(7 << 8), Exit { code: 7, signal: 0 });
        assert_eq!(Exit::from_raw(9), Exit { code: 0, signal: 9 });
    }

    #[test]
    fn events_serialise_as_tagged_json() {
        let e = Event {
            ts_ns: 1,
            cgroup_id: 42,
            task: None,
            ns: Namespaces::default(),
            container: None,
            kind: EventKind::Exit(Exit { code: 0, signal: 0 }),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"type\":\"exit\""), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
