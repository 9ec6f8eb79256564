//! Domain ⇄ wire conversions: infallible towards the wire, checked from it.
//!
//! Every `TryFrom<wire::…>` names the offending field in its
//! [`ConvertError`]: unknown enum values (including `*_UNSPECIFIED`), missing
//! messages and oneofs, numbers that do not fit the domain type, IP addresses
//! of the wrong length.

use crate::error::ConvertError;
use crate::messages::{
    ContainerTarget, Counters, DigestUpdate, DropCounters, EventBatch, Hello, OperatorMessage,
    Phase, TargetSet, WorkloadEvent,
};
use crate::wire;
use kestrel_events as ev;
use kestrel_events::ByteStr;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

type Result<T> = std::result::Result<T, ConvertError>;

fn bytes(b: &ByteStr) -> Vec<u8> {
    b.as_bytes().to_vec()
}

fn narrow<T: TryFrom<u32>>(field: &str, value: u32, max: T) -> Result<T>
where
    u64: From<T>,
{
    T::try_from(value).map_err(|_| ConvertError::OutOfRange {
        field: field.to_string(),
        value: <u64 as From<u32>>::from(value),
        max: u64::from(max),
    })
}

// ─────────────────────────────── events: to the wire ────────────────────────

impl From<&ev::Task> for wire::Task {
    fn from(t: &ev::Task) -> Self {
        wire::Task {
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            uid: t.uid,
            comm: bytes(&t.comm),
        }
    }
}

fn runtime_to_wire(r: ev::Runtime) -> wire::Runtime {
    match r {
        ev::Runtime::Containerd => wire::Runtime::Containerd,
        ev::Runtime::CriO => wire::Runtime::CriO,
        ev::Runtime::Docker => wire::Runtime::Docker,
        ev::Runtime::Podman => wire::Runtime::Podman,
        ev::Runtime::Kubepods => wire::Runtime::Kubepods,
        ev::Runtime::Plain => wire::Runtime::Plain,
    }
}

fn endpoint_to_wire(e: &ev::Endpoint) -> wire::Endpoint {
    let addr = match e {
        ev::Endpoint::Ip { addr, port } => wire::endpoint::Addr::Ip(wire::IpEndpoint {
            addr: match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            },
            port: u32::from(*port),
        }),
        ev::Endpoint::Unix { unix } => wire::endpoint::Addr::Unix(bytes(unix)),
    };
    wire::Endpoint { addr: Some(addr) }
}

fn tcp_state_to_wire(s: ev::TcpState) -> u32 {
    u32::from(match s {
        ev::TcpState::Established => 1,
        ev::TcpState::SynSent => 2,
        ev::TcpState::SynRecv => 3,
        ev::TcpState::Close => 7,
        ev::TcpState::Listen => 10,
        ev::TcpState::Other(n) => n,
    })
}

fn argv_to_wire(a: &ev::Argv) -> wire::Argv {
    wire::Argv {
        args: a.args.iter().map(bytes).collect(),
        size: a.size,
        truncated: a.truncated,
        read_failed: a.read_failed,
    }
}

/// Bounds on what one event from the wire may hold. The kernel side never
/// comes near them (`bpf/kestrel.h`: 4 KiB of argv, 4 KiB paths); they
/// stop an agent (or anyone holding its certificate) from pouring whole
/// messages into one field, and so into profiles and exemplars. Content
/// fields that carry a truncation flag are cut and flagged; identifiers are
/// refused, naming the field, since a cut name would be another name.
pub mod limits {
    /// Argument bytes of one exec, all arguments together.
    pub const ARGV_BYTES: usize = 64 * 1024;
    /// Arguments of one exec.
    pub const ARGS: usize = 4_096;
    /// Bytes of a path, a filename or a resolved directory.
    pub const PATH: usize = 4_096;
    /// Bytes of a workload name, container id or the Hello's names.
    pub const NAME: usize = 512;
    /// Bytes of an image reference.
    pub const IMAGE: usize = 1_024;
    /// Bytes of a comm or an executable's basename.
    pub const COMM: usize = 256;
    /// Ancestors in a process chain.
    pub const CHAIN: usize = 64;
    /// Bytes of an ancestor's executable or argument text.
    pub const ANCESTOR_TEXT: usize = 4_096;
}

fn argv_from_wire(a: wire::Argv) -> ev::Argv {
    let mut truncated = a.truncated;
    let mut budget = limits::ARGV_BYTES;
    let mut args = Vec::with_capacity(a.args.len().min(limits::ARGS));
    for mut arg in a.args {
        if args.len() == limits::ARGS || budget == 0 {
            truncated = true;
            break;
        }
        if arg.len() > budget {
            arg.truncate(budget);
            arg.shrink_to_fit();
            truncated = true;
        }
        budget -= arg.len();
        args.push(ByteStr::new(arg));
    }
    ev::Argv {
        args,
        size: a.size,
        truncated,
        read_failed: a.read_failed,
    }
}

/// A field without a truncation flag: refused above `max` bytes.
fn bounded(field: &str, value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(ConvertError::OutOfRange {
            field: format!("{field} (bytes)"),
            value: value.len() as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// A path with a truncation flag: cut to [`limits::PATH`] and flagged.
fn cut_path(mut p: Vec<u8>, truncated: &mut bool) -> Vec<u8> {
    if p.len() > limits::PATH {
        p.truncate(limits::PATH);
        p.shrink_to_fit();
        *truncated = true;
    }
    p
}

fn kind_to_wire(k: &ev::EventKind) -> wire::event::Kind {
    use wire::event::Kind;
    match k {
        ev::EventKind::Exec(x) => Kind::Exec(wire::Exec {
            filename: bytes(&x.filename),
            exe: bytes(&x.exe),
            parent_comm: bytes(&x.parent_comm),
            ns_pid: x.ns_pid,
            argv: Some(argv_to_wire(&x.argv)),
            from_proc_scan: x.from_proc_scan,
            dir: x.dir.as_ref().map(bytes),
        }),
        ev::EventKind::ExecFailed(x) => Kind::ExecFailed(wire::ExecFailed {
            filename: bytes(&x.filename),
            argv: Some(argv_to_wire(&x.argv)),
            errno: x.errno,
            dfd: x.dfd,
            dir: x.dir.as_ref().map(bytes),
        }),
        ev::EventKind::Fork(f) => Kind::Fork(wire::Fork {
            parent_pid: f.parent_pid,
        }),
        ev::EventKind::Exit(x) => Kind::Exit(wire::Exit {
            code: u32::from(x.code),
            signal: u32::from(x.signal),
        }),
        ev::EventKind::File(f) => Kind::File(wire::FileOp {
            op: match f.op {
                ev::FileOpKind::Open => wire::FileOpKind::Open,
                ev::FileOpKind::Rename => wire::FileOpKind::Rename,
                ev::FileOpKind::Unlink => wire::FileOpKind::Unlink,
            } as i32,
            syscall_nr: f.syscall_nr,
            dfd: f.dfd,
            path: bytes(&f.path),
            new_path: f.new_path.as_ref().map(bytes),
            new_dfd: f.new_dfd,
            flags: f.flags,
            mode: f.mode,
            truncated: f.truncated,
            read_failed: f.read_failed,
            dir: f.dir.as_ref().map(bytes),
            new_dir: f.new_dir.as_ref().map(bytes),
        }),
        ev::EventKind::Net(n) => Kind::Net(wire::NetOp {
            op: match n.op {
                ev::NetOpKind::Connect => wire::NetOpKind::Connect,
                ev::NetOpKind::Accept => wire::NetOpKind::Accept,
                ev::NetOpKind::State => wire::NetOpKind::State,
            } as i32,
            family: u32::from(n.family),
            protocol: u32::from(n.protocol),
            local: n.local.as_ref().map(endpoint_to_wire),
            remote: n.remote.as_ref().map(endpoint_to_wire),
            fd: n.fd,
            sock: n.sock,
            tcp_state: n.tcp_state.map(|(old, new)| wire::TcpTransition {
                old_state: tcp_state_to_wire(old),
                new_state: tcp_state_to_wire(new),
            }),
            read_failed: n.read_failed,
        }),
        ev::EventKind::Cgroup(c) => Kind::Cgroup(wire::CgroupChange {
            id: c.id,
            level: c.level,
            path: bytes(&c.path),
            created: c.created,
        }),
    }
}

/// The wire form of an event, with an empty `workload` (see
/// [`WorkloadEvent`] to carry one).
impl From<&ev::Event> for wire::Event {
    fn from(e: &ev::Event) -> Self {
        wire::Event {
            ts_ns: e.ts_ns,
            cgroup_id: e.cgroup_id,
            task: e.task.as_ref().map(wire::Task::from),
            ns: Some(wire::Namespaces {
                pid: e.ns.pid,
                mnt: e.ns.mnt,
            }),
            container: e.container.as_ref().map(|c| wire::ContainerRef {
                id: c.id.clone(),
                runtime: runtime_to_wire(c.runtime) as i32,
            }),
            workload: String::new(),
            image: String::new(),
            process: None,
            chain: Vec::new(),
            kind: Some(kind_to_wire(&e.kind)),
        }
    }
}

fn ancestor_to_wire(a: &ev::Ancestor) -> wire::Ancestor {
    wire::Ancestor {
        pid: a.pid,
        exe: a.exe.clone(),
        argv: a.argv.clone(),
    }
}

/// Marks an ancestor's argument list that was cut to fit
/// [`limits::ANCESTOR_TEXT`].
pub const CUT_MARK: &str = "…(cut)";

fn ancestor_from_wire(a: wire::Ancestor) -> ev::Ancestor {
    let mut exe = a.exe;
    if exe.len() > limits::ANCESTOR_TEXT {
        let mut end = limits::ANCESTOR_TEXT;
        while !exe.is_char_boundary(end) {
            end -= 1;
        }
        exe.truncate(end);
        exe.push_str(CUT_MARK);
    }
    let mut budget = limits::ANCESTOR_TEXT;
    let mut argv = Vec::with_capacity(a.argv.len().min(64));
    for mut arg in a.argv {
        if arg.len() >= budget {
            let mut end = budget;
            while !arg.is_char_boundary(end) {
                end -= 1;
            }
            arg.truncate(end);
            argv.push(arg);
            argv.push(CUT_MARK.to_string());
            break;
        }
        budget -= arg.len() + 1;
        argv.push(arg);
    }
    ev::Ancestor {
        pid: a.pid,
        exe,
        argv,
    }
}

impl From<&WorkloadEvent> for wire::Event {
    fn from(e: &WorkloadEvent) -> Self {
        let mut w = wire::Event::from(&e.event);
        w.workload.clone_from(&e.workload);
        w.image.clone_from(&e.image);
        w.process = e.process.as_ref().map(ancestor_to_wire);
        w.chain = e.chain.iter().map(ancestor_to_wire).collect();
        w
    }
}

// ─────────────────────────────── events: from the wire ──────────────────────

fn runtime_from_wire(v: i32) -> Result<ev::Runtime> {
    Ok(match wire::Runtime::try_from(v) {
        Ok(wire::Runtime::Containerd) => ev::Runtime::Containerd,
        Ok(wire::Runtime::CriO) => ev::Runtime::CriO,
        Ok(wire::Runtime::Docker) => ev::Runtime::Docker,
        Ok(wire::Runtime::Podman) => ev::Runtime::Podman,
        Ok(wire::Runtime::Kubepods) => ev::Runtime::Kubepods,
        Ok(wire::Runtime::Plain) => ev::Runtime::Plain,
        Ok(wire::Runtime::Unspecified) | Err(_) => {
            return Err(ConvertError::unknown_enum("container.runtime", v))
        }
    })
}

fn endpoint_from_wire(e: wire::Endpoint, field: &str) -> Result<ev::Endpoint> {
    match e.addr {
        None => Err(ConvertError::missing(&format!("{field}.addr"))),
        Some(wire::endpoint::Addr::Unix(p)) => Ok(ev::Endpoint::Unix {
            unix: ByteStr::new(p),
        }),
        Some(wire::endpoint::Addr::Ip(ip)) => {
            let addr = match ip.addr.len() {
                4 => {
                    let mut o = [0u8; 4];
                    o.copy_from_slice(&ip.addr);
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                16 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&ip.addr);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                n => {
                    return Err(ConvertError::Invalid {
                        field: format!("{field}.ip.addr"),
                        reason: format!("{n} bytes, want 4 (IPv4) or 16 (IPv6)"),
                    })
                }
            };
            let port = narrow(&format!("{field}.ip.port"), ip.port, u16::MAX)?;
            Ok(ev::Endpoint::Ip { addr, port })
        }
    }
}

fn tcp_state_from_wire(v: u32, field: &str) -> Result<ev::TcpState> {
    Ok(ev::TcpState::from_raw(narrow(field, v, u16::MAX)?))
}

/// A resolved directory must be absolute: a relative one would name the
/// file from wherever the operator stands.
fn dir_from_wire(field: &str, dir: Option<Vec<u8>>) -> Result<Option<ByteStr>> {
    if let Some(d) = &dir {
        bounded(field, d, limits::PATH)?;
    }
    match dir {
        Some(d) if d.first() != Some(&b'/') => Err(ConvertError::Invalid {
            field: field.into(),
            reason: format!(
                "{:?} is not an absolute directory",
                String::from_utf8_lossy(&d[..d.len().min(64)])
            ),
        }),
        d => Ok(d.map(ByteStr::new)),
    }
}

fn kind_from_wire(k: wire::event::Kind) -> Result<ev::EventKind> {
    use wire::event::Kind;
    Ok(match k {
        Kind::Exec(x) => {
            let argv = x.argv.ok_or_else(|| ConvertError::missing("exec.argv"))?;
            bounded("exec.filename", &x.filename, limits::PATH)?;
            bounded("exec.exe", &x.exe, limits::COMM)?;
            bounded("exec.parent_comm", &x.parent_comm, limits::COMM)?;
            ev::EventKind::Exec(ev::Exec {
                filename: ByteStr::new(x.filename),
                exe: ByteStr::new(x.exe),
                parent_comm: ByteStr::new(x.parent_comm),
                ns_pid: x.ns_pid,
                argv: argv_from_wire(argv),
                from_proc_scan: x.from_proc_scan,
                dir: dir_from_wire("exec.dir", x.dir)?,
            })
        }
        Kind::ExecFailed(x) => {
            let argv = x
                .argv
                .ok_or_else(|| ConvertError::missing("exec_failed.argv"))?;
            bounded("exec_failed.filename", &x.filename, limits::PATH)?;
            if x.errno <= 0 {
                return Err(ConvertError::Invalid {
                    field: "exec_failed.errno".into(),
                    reason: format!("{}, want a positive errno", x.errno),
                });
            }
            ev::EventKind::ExecFailed(ev::ExecFailed {
                filename: ByteStr::new(x.filename),
                argv: argv_from_wire(argv),
                errno: x.errno,
                dfd: x.dfd,
                dir: dir_from_wire("exec_failed.dir", x.dir)?,
            })
        }
        Kind::Fork(f) => ev::EventKind::Fork(ev::Fork {
            parent_pid: f.parent_pid,
        }),
        Kind::Exit(x) => ev::EventKind::Exit(ev::Exit {
            code: narrow("exit.code", x.code, u8::MAX)?,
            signal: narrow("exit.signal", x.signal, u8::MAX)?,
        }),
        Kind::File(f) => {
            let mut truncated = f.truncated;
            let path = cut_path(f.path, &mut truncated);
            let new_path = f.new_path.map(|p| cut_path(p, &mut truncated));
            ev::EventKind::File(ev::FileOp {
                op: match wire::FileOpKind::try_from(f.op) {
                    Ok(wire::FileOpKind::Open) => ev::FileOpKind::Open,
                    Ok(wire::FileOpKind::Rename) => ev::FileOpKind::Rename,
                    Ok(wire::FileOpKind::Unlink) => ev::FileOpKind::Unlink,
                    Ok(wire::FileOpKind::Unspecified) | Err(_) => {
                        return Err(ConvertError::unknown_enum("file.op", f.op))
                    }
                },
                syscall_nr: f.syscall_nr,
                dfd: f.dfd,
                path: ByteStr::new(path),
                new_path: new_path.map(ByteStr::new),
                new_dfd: f.new_dfd,
                flags: f.flags,
                mode: f.mode,
                truncated,
                read_failed: f.read_failed,
                dir: dir_from_wire("file.dir", f.dir)?,
                new_dir: dir_from_wire("file.new_dir", f.new_dir)?,
            })
        }
        Kind::Net(n) => ev::EventKind::Net(ev::NetOp {
            op: match wire::NetOpKind::try_from(n.op) {
                Ok(wire::NetOpKind::Connect) => ev::NetOpKind::Connect,
                Ok(wire::NetOpKind::Accept) => ev::NetOpKind::Accept,
                Ok(wire::NetOpKind::State) => ev::NetOpKind::State,
                Ok(wire::NetOpKind::Unspecified) | Err(_) => {
                    return Err(ConvertError::unknown_enum("net.op", n.op))
                }
            },
            family: narrow("net.family", n.family, u16::MAX)?,
            protocol: narrow("net.protocol", n.protocol, u16::MAX)?,
            local: n
                .local
                .map(|e| endpoint_from_wire(e, "net.local"))
                .transpose()?,
            remote: n
                .remote
                .map(|e| endpoint_from_wire(e, "net.remote"))
                .transpose()?,
            fd: n.fd,
            sock: n.sock,
            tcp_state: match n.tcp_state {
                None => None,
                Some(t) => Some((
                    tcp_state_from_wire(t.old_state, "net.tcp_state.old_state")?,
                    tcp_state_from_wire(t.new_state, "net.tcp_state.new_state")?,
                )),
            },
            read_failed: n.read_failed,
        }),
        Kind::Cgroup(c) => ev::EventKind::Cgroup(ev::CgroupChange {
            id: c.id,
            level: c.level,
            path: ByteStr::new(c.path),
            created: c.created,
        }),
    })
}

/// Checks and converts a wire event; its `workload` is dropped (see
/// [`WorkloadEvent`] to keep it).
impl TryFrom<wire::Event> for ev::Event {
    type Error = ConvertError;

    fn try_from(w: wire::Event) -> Result<Self> {
        let ns = w.ns.ok_or_else(|| ConvertError::missing("ns"))?;
        if let Some(c) = &w.container {
            bounded("container.id", c.id.as_bytes(), limits::NAME)?;
        }
        if let Some(t) = &w.task {
            bounded("task.comm", &t.comm, limits::COMM)?;
        }
        let container = match w.container {
            None => None,
            Some(c) => Some(ev::ContainerRef {
                runtime: runtime_from_wire(c.runtime)?,
                id: c.id,
            }),
        };
        let kind = kind_from_wire(w.kind.ok_or_else(|| ConvertError::missing("kind"))?)?;
        Ok(ev::Event {
            ts_ns: w.ts_ns,
            cgroup_id: w.cgroup_id,
            task: w.task.map(|t| ev::Task {
                pid: t.pid,
                tid: t.tid,
                ppid: t.ppid,
                uid: t.uid,
                comm: ByteStr::new(t.comm),
            }),
            ns: ev::Namespaces {
                pid: ns.pid,
                mnt: ns.mnt,
            },
            container,
            kind,
        })
    }
}

impl TryFrom<wire::Event> for WorkloadEvent {
    type Error = ConvertError;

    fn try_from(mut w: wire::Event) -> Result<Self> {
        bounded("workload", w.workload.as_bytes(), limits::NAME)?;
        bounded("image", w.image.as_bytes(), limits::IMAGE)?;
        // the agent's own process table: cut, never refused (a refused
        // event would be resent forever)
        w.chain.truncate(limits::CHAIN);
        let workload = std::mem::take(&mut w.workload);
        let image = std::mem::take(&mut w.image);
        let process = w.process.take().map(ancestor_from_wire);
        let chain = std::mem::take(&mut w.chain)
            .into_iter()
            .map(ancestor_from_wire)
            .collect();
        Ok(WorkloadEvent {
            workload,
            image,
            event: ev::Event::try_from(w)?,
            process,
            chain,
        })
    }
}

// ─────────────────────────────── agent messages ─────────────────────────────

impl From<&Hello> for wire::Hello {
    fn from(h: &Hello) -> Self {
        wire::Hello {
            node_name: h.node_name.clone(),
            agent_id: h.agent_id.clone(),
            version: h.version.clone(),
            boot_id: h.boot_id.clone(),
            instance: h.instance,
        }
    }
}

impl Hello {
    /// Checks the lengths of the Hello's fields ([`limits::NAME`]).
    pub fn check(&self) -> Result<()> {
        bounded("hello.node_name", self.node_name.as_bytes(), limits::NAME)?;
        bounded("hello.agent_id", self.agent_id.as_bytes(), limits::NAME)?;
        bounded("hello.version", self.version.as_bytes(), limits::NAME)?;
        bounded("hello.boot_id", self.boot_id.as_bytes(), limits::NAME)
    }
}

impl From<wire::Hello> for Hello {
    fn from(h: wire::Hello) -> Self {
        Hello {
            node_name: h.node_name,
            agent_id: h.agent_id,
            version: h.version,
            boot_id: h.boot_id,
            instance: h.instance,
        }
    }
}

impl From<&EventBatch> for wire::EventBatch {
    fn from(b: &EventBatch) -> Self {
        wire::EventBatch {
            events: b.events.iter().map(wire::Event::from).collect(),
            seq: b.seq,
        }
    }
}

impl TryFrom<wire::EventBatch> for EventBatch {
    type Error = ConvertError;

    fn try_from(b: wire::EventBatch) -> Result<Self> {
        let mut events = Vec::with_capacity(b.events.len());
        for (i, e) in b.events.into_iter().enumerate() {
            events.push(
                WorkloadEvent::try_from(e).map_err(|err| err.within(&format!("events[{i}]")))?,
            );
        }
        Ok(EventBatch { seq: b.seq, events })
    }
}

fn counters_to_wire(m: &BTreeMap<String, u64>) -> Vec<wire::WorkloadCounter> {
    m.iter()
        .map(|(w, c)| wire::WorkloadCounter {
            workload: w.clone(),
            count: *c,
        })
        .collect()
}

fn counters_from_wire(v: Vec<wire::WorkloadCounter>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in v {
        // A workload listed twice adds up rather than losing a count.
        let n = m.entry(c.workload).or_insert(0u64);
        *n = n.saturating_add(c.count);
    }
    m
}

impl From<&Counters> for wire::Counters {
    fn from(c: &Counters) -> Self {
        wire::Counters {
            matched: counters_to_wire(&c.matched),
            drops: Some(wire::DropCounters {
                ring_dropped: c.drops.ring_dropped,
                queue_dropped: c.drops.queue_dropped,
                aggregated: c.drops.aggregated,
                oversize_dropped: c.drops.oversize_dropped,
                queue_dropped_by_workload: counters_to_wire(&c.drops.queue_dropped_by_workload),
                unacked_evicted: c.drops.unacked_evicted,
            }),
        }
    }
}

impl From<wire::Counters> for Counters {
    fn from(c: wire::Counters) -> Self {
        let d = c.drops.unwrap_or_default();
        Counters {
            matched: counters_from_wire(c.matched),
            drops: DropCounters {
                ring_dropped: d.ring_dropped,
                queue_dropped: d.queue_dropped,
                aggregated: d.aggregated,
                oversize_dropped: d.oversize_dropped,
                queue_dropped_by_workload: counters_from_wire(d.queue_dropped_by_workload),
                unacked_evicted: d.unacked_evicted,
            },
        }
    }
}

// ─────────────────────────────── operator messages ──────────────────────────

impl From<Phase> for wire::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Learning => wire::Phase::Learning,
            Phase::Converged => wire::Phase::Converged,
            Phase::Detecting => wire::Phase::Detecting,
        }
    }
}

impl From<&OperatorMessage> for wire::OperatorMessage {
    fn from(m: &OperatorMessage) -> Self {
        use wire::operator_message::Msg;
        let msg = match m {
            OperatorMessage::Digest(d) => Msg::Digest(wire::DigestUpdate {
                workload: d.workload.clone(),
                phase: wire::Phase::from(d.phase) as i32,
                path_hashes: d.path_hashes.clone(),
                generation: d.generation,
                full: d.full,
                seed: d.seed,
            }),
            OperatorMessage::Targets(t) => Msg::Targets(wire::TargetSet {
                targets: t
                    .targets
                    .iter()
                    .map(|t| wire::ContainerTarget {
                        container_id_glob: t.container_id_glob.clone(),
                        workload: t.workload.clone(),
                        image: t.image.clone(),
                    })
                    .collect(),
            }),
        };
        wire::OperatorMessage { msg: Some(msg) }
    }
}

impl TryFrom<wire::DigestUpdate> for DigestUpdate {
    type Error = ConvertError;

    fn try_from(d: wire::DigestUpdate) -> Result<Self> {
        let phase = match wire::Phase::try_from(d.phase) {
            Ok(wire::Phase::Learning) => Phase::Learning,
            Ok(wire::Phase::Converged) => Phase::Converged,
            Ok(wire::Phase::Detecting) => Phase::Detecting,
            Ok(wire::Phase::Unspecified) | Err(_) => {
                return Err(ConvertError::unknown_enum("digest.phase", d.phase))
            }
        };
        if d.workload.is_empty() {
            return Err(ConvertError::missing("digest.workload"));
        }
        Ok(DigestUpdate {
            workload: d.workload,
            phase,
            path_hashes: d.path_hashes,
            generation: d.generation,
            full: d.full,
            seed: d.seed,
        })
    }
}

impl From<wire::TargetSet> for TargetSet {
    fn from(t: wire::TargetSet) -> Self {
        TargetSet {
            targets: t
                .targets
                .into_iter()
                .map(|t| ContainerTarget {
                    container_id_glob: t.container_id_glob,
                    workload: t.workload,
                    image: t.image,
                })
                .collect(),
        }
    }
}
