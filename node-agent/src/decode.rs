//! Ring-buffer record → [`Event`]: the one place that reads kernel bytes.
//!
//! Records are untrusted: every length is checked against the record and the
//! wire limits, strings are cut at their NUL, and non-UTF-8 bytes are kept.
//! The fixed part of each record is read through the skeleton-generated
//! `types::*` with `plain`; variable tails follow the fixed part.

use crate::skel::{file::types as ft, network::types as nt, process::types as pt};
use kestrel_events::{
    Argv, ByteStr, CgroupChange, Endpoint, Event, EventKind, Exec, ExecFailed, Exit, FileOp,
    FileOpKind, Fork, Namespaces, NetOp, NetOpKind, Task, TcpState,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// SAFETY: the generated wire structs are plain old data (integers and byte
// arrays only, `repr(C)`); any bit pattern is a valid value.
unsafe impl plain::Plain for pt::kestrel_hdr {}
// SAFETY: as above.
unsafe impl plain::Plain for pt::exec_event {}
// SAFETY: as above.
unsafe impl plain::Plain for pt::exec_failed_event {}
// SAFETY: as above.
unsafe impl plain::Plain for pt::fork_event {}
// SAFETY: as above.
unsafe impl plain::Plain for pt::exit_event {}
// SAFETY: as above.
unsafe impl plain::Plain for pt::cgroup_event {}
// SAFETY: as above.
unsafe impl plain::Plain for ft::file_event {}
// SAFETY: as above.
unsafe impl plain::Plain for nt::net_event {}

/// Wire constants, copied by hand from `bpf/kestrel.h`. No test compares
/// them with the header: `tests/wire_layout.rs` checks struct sizes and some
/// field offsets only.
pub mod wire {
    /// `KIND_EXEC`
    pub const KIND_EXEC: u32 = 1;
    /// `KIND_FORK`
    pub const KIND_FORK: u32 = 2;
    /// `KIND_EXIT`
    pub const KIND_EXIT: u32 = 3;
    /// `KIND_FILE`
    pub const KIND_FILE: u32 = 4;
    /// `KIND_NET`
    pub const KIND_NET: u32 = 5;
    /// `KIND_CGROUP`
    pub const KIND_CGROUP: u32 = 6;
    /// `KIND_EXEC_FAILED`
    pub const KIND_EXEC_FAILED: u32 = 7;
    /// `FLAG_ARGS_TRUNCATED`
    pub const FLAG_ARGS_TRUNCATED: u32 = 1 << 0;
    /// `FLAG_ARGS_READ_FAILED`
    pub const FLAG_ARGS_READ_FAILED: u32 = 1 << 1;
    /// `FLAG_PATH_TRUNCATED`
    pub const FLAG_PATH_TRUNCATED: u32 = 1 << 2;
    /// `FLAG_PATH_READ_FAILED`
    pub const FLAG_PATH_READ_FAILED: u32 = 1 << 3;
    /// `FLAG_PATH2_TRUNCATED`
    pub const FLAG_PATH2_TRUNCATED: u32 = 1 << 4;
    /// `FLAG_PATH2_READ_FAILED`
    pub const FLAG_PATH2_READ_FAILED: u32 = 1 << 5;
    /// `FLAG_ADDR_READ_FAILED`
    pub const FLAG_ADDR_READ_FAILED: u32 = 1 << 6;
    /// `FLAG_NO_TASK_CONTEXT`
    pub const FLAG_NO_TASK_CONTEXT: u32 = 1 << 7;
    /// `FLAG_FILENAME_TRUNCATED`
    pub const FLAG_FILENAME_TRUNCATED: u32 = 1 << 8;
    /// The dir tail of a relative path was resolved to the root.
    pub const FLAG_DIR_RESOLVED: u32 = 1 << 9;
    /// The same for the second path of a rename.
    pub const FLAG_DIR2_RESOLVED: u32 = 1 << 10;
    /// Bytes of a resolved directory tail.
    pub const DIR_MAX: usize = 2048;
    /// `KESTREL_ARGS_MAX`
    pub const ARGS_MAX: usize = 4096;
    /// `KESTREL_PATH_MAX`
    pub const PATH_MAX: usize = 4096;
    /// `KESTREL_CGROUP_PATH_MAX`
    pub const CGROUP_PATH_MAX: usize = 512;
    /// `KESTREL_UNIX_PATH_MAX`
    pub const UNIX_PATH_MAX: usize = 108;
    /// `STAT_*` indices of the per-CPU `stats` map.
    pub const STAT_EMITTED: u32 = 0;
    /// Ring buffer full.
    pub const STAT_DROPPED: u32 = 1;
    /// Rejected by the cgroup filter.
    pub const STAT_FILTERED: u32 = 2;
    /// argv longer than [`ARGS_MAX`].
    pub const STAT_ARGS_TRUNCATED: u32 = 3;
    /// A user string could not be read.
    pub const STAT_READ_FAILED: u32 = 4;
    /// Size of the `stats` map.
    pub const STAT_MAX: u32 = 8;
}
use wire::*;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is shorter than its fixed part.
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        /// What was being read.
        what: &'static str,
        /// Record length.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The kind field names no known event.
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    /// A failed exec whose error is not a negative errno.
    #[error("failed exec with result {0}, want a negative errno")]
    BadErrno(i32),
}

impl DecodeError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "short_record",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::BadErrno(_) => "bad_errno",
        }
    }
}

fn read_fixed<T: plain::Plain + Default>(
    data: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    let mut v = T::default();
    let src = data.get(..need).ok_or(DecodeError::Short {
        what,
        len: data.len(),
        need,
    })?;
    plain::copy_from_bytes(&mut v, src).map_err(|_| DecodeError::Short {
        what,
        len: data.len(),
        need,
    })?;
    Ok(v)
}

/// The directory of a relative path: the dir tail of `len` bytes at
/// `start`, when the kernel side resolved it to the root (`resolved`) and
/// the record holds all of it; `None` otherwise, and the path stays relative.
fn dir_tail(data: &[u8], fixed: usize, start: u32, len: u32, resolved: bool) -> Option<ByteStr> {
    if !resolved || len as usize > DIR_MAX {
        return None;
    }
    let t = tail(data, fixed, start as usize, len, DIR_MAX);
    if t.len() != len as usize {
        return None;
    }
    kestrel_events::dir_from_tail(t)
}

/// The bytes of a variable tail: `len` bytes after the fixed part, bounded by
/// the record and by `max`.
fn tail(data: &[u8], fixed: usize, start: usize, len: u32, max: usize) -> &[u8] {
    let body = data.get(fixed..).unwrap_or(&[]);
    let start = start.min(body.len());
    let end = start
        .saturating_add((len as usize).min(max))
        .min(body.len());
    &body[start..end]
}

fn cstr<T: Copy + Into<i16>>(raw: &[T]) -> ByteStr {
    // generated char arrays are i8 or u8 depending on the target; go through i16
    let bytes: Vec<u8> = raw.iter().map(|&c| c.into() as u8).collect();
    ByteStr::from_c(&bytes)
}

macro_rules! header {
    ($h:expr) => {{
        let h = &$h;
        let task = if h.flags & FLAG_NO_TASK_CONTEXT != 0 {
            None
        } else {
            Some(Task {
                pid: h.pid,
                tid: h.tid,
                ppid: h.ppid,
                uid: h.uid,
                comm: cstr(&h.comm),
            })
        };
        (
            h.ts_ns,
            h.cgroup_id,
            h.flags,
            task,
            Namespaces {
                pid: h.pid_ns,
                mnt: h.mnt_ns,
            },
        )
    }};
}

/// Decodes one ring-buffer record.
pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    let hdr: pt::kestrel_hdr = read_fixed(data, "header")?;
    let kind = match hdr.kind {
        KIND_EXEC => {
            let e: pt::exec_event = read_fixed(data, "exec event")?;
            let fixed = std::mem::size_of::<pt::exec_event>();
            let args = tail(data, fixed, 0, e.args_len, ARGS_MAX);
            let flags = e.hdr.flags;
            EventKind::Exec(Exec {
                filename: cstr(&e.filename),
                exe: cstr(&e.exe),
                parent_comm: cstr(&e.pcomm),
                ns_pid: e.ns_pid,
                argv: Argv::from_nul_separated(
                    args,
                    e.args_size,
                    flags & FLAG_ARGS_TRUNCATED != 0 || (args.len() as u32) < e.args_len,
                    flags & FLAG_ARGS_READ_FAILED != 0,
                ),
                from_proc_scan: false,
                dir: dir_tail(
                    data,
                    fixed,
                    e.args_len,
                    e.dir_len,
                    flags & FLAG_DIR_RESOLVED != 0,
                ),
            })
        }
        KIND_EXEC_FAILED => {
            let e: pt::exec_failed_event = read_fixed(data, "failed exec event")?;
            let fixed = std::mem::size_of::<pt::exec_failed_event>();
            let args = tail(data, fixed, 0, e.args_len, ARGS_MAX);
            let flags = e.hdr.flags;
            let errno = match e.error.checked_neg() {
                Some(n) if n > 0 => n,
                _ => return Err(DecodeError::BadErrno(e.error)),
            };
            EventKind::ExecFailed(ExecFailed {
                filename: cstr(&e.filename),
                argv: Argv::from_nul_separated(
                    args,
                    args.len() as u32,
                    flags & FLAG_ARGS_TRUNCATED != 0 || (args.len() as u32) < e.args_len,
                    flags & FLAG_ARGS_READ_FAILED != 0,
                ),
                errno,
                // AT_FDCWD
                dfd: (e.dfd != -100).then_some(e.dfd),
                dir: dir_tail(
                    data,
                    fixed,
                    e.args_len,
                    e.dir_len,
                    flags & FLAG_DIR_RESOLVED != 0,
                ),
            })
        }
        KIND_FORK => {
            let e: pt::fork_event = read_fixed(data, "fork event")?;
            EventKind::Fork(Fork {
                parent_pid: e.parent_pid,
            })
        }
        KIND_EXIT => {
            let e: pt::exit_event = read_fixed(data, "exit event")?;
            EventKind::Exit(Exit::from_raw(e.exit_code))
        }
        KIND_FILE => {
            let e: ft::file_event = read_fixed(data, "file event")?;
            let fixed = std::mem::size_of::<ft::file_event>();
            let p1 = tail(data, fixed, 0, e.path_len, PATH_MAX);
            let p2 = tail(data, fixed, p1.len(), e.path2_len, PATH_MAX);
            let flags = e.hdr.flags;
            let op = match e.op {
                2 => FileOpKind::Rename,
                3 => FileOpKind::Unlink,
                _ => FileOpKind::Open,
            };
            let rename = op == FileOpKind::Rename;
            EventKind::File(FileOp {
                op,
                syscall_nr: e.syscall_nr,
                dfd: e.dfd,
                path: ByteStr::new(p1),
                new_path: rename.then(|| ByteStr::new(p2)),
                new_dfd: rename.then_some(e.dfd2),
                flags: e.flags,
                mode: e.mode,
                truncated: flags & (FLAG_PATH_TRUNCATED | FLAG_PATH2_TRUNCATED) != 0
                    || (p1.len() as u32) < e.path_len
                    || (p2.len() as u32) < e.path2_len,
                read_failed: flags & (FLAG_PATH_READ_FAILED | FLAG_PATH2_READ_FAILED) != 0,
                dir: dir_tail(
                    data,
                    fixed,
                    e.path_len.saturating_add(e.path2_len),
                    e.dir_len,
                    flags & FLAG_DIR_RESOLVED != 0,
                ),
                new_dir: dir_tail(
                    data,
                    fixed,
                    e.path_len
                        .saturating_add(e.path2_len)
                        .saturating_add(e.dir_len),
                    e.dir2_len,
                    rename && flags & FLAG_DIR2_RESOLVED != 0,
                ),
            })
        }
        KIND_NET => {
            let e: nt::net_event = read_fixed(data, "net event")?;
            EventKind::Net(net_op(&e))
        }
        KIND_CGROUP => {
            let e: pt::cgroup_event = read_fixed(data, "cgroup event")?;
            let fixed = std::mem::size_of::<pt::cgroup_event>();
            let path = tail(data, fixed, 0, e.path_len, CGROUP_PATH_MAX);
            EventKind::Cgroup(CgroupChange {
                id: e.id,
                level: e.level,
                path: ByteStr::new(path),
                created: e.mkdir != 0,
            })
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let (ts_ns, cgroup_id, _flags, task, ns) = header!(hdr);
    Ok(Event {
        ts_ns,
        cgroup_id,
        task,
        ns,
        container: None,
        kind,
    })
}

fn ip(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        // IPv4-mapped IPv6 (dual-stack sockets) is reported as the IPv4 address
        10 => Some(IpAddr::V6(Ipv6Addr::from(*raw)).to_canonical()),
        _ => None,
    }
}

fn net_op(e: &nt::net_event) -> NetOp {
    let op = match e.op {
        2 => NetOpKind::Accept,
        3 => NetOpKind::State,
        _ => NetOpKind::Connect,
    };
    let family = e.family;
    let endpoint = |raw: &[u8; 16], port: u16, known: bool| {
        if !known {
            return None;
        }
        ip(family, raw).map(|addr| Endpoint::Ip { addr, port })
    };
    let (local, remote) = if family == 1 {
        let n = (e.unix_path_len as usize).min(UNIX_PATH_MAX);
        let bytes: Vec<u8> = e.unix_path[..n].iter().map(|&c| c as u8).collect();
        (
            None,
            Some(Endpoint::Unix {
                unix: ByteStr::new(bytes),
            }),
        )
    } else {
        let local_known = op != NetOpKind::Connect;
        (
            endpoint(&e.saddr, e.sport, local_known),
            endpoint(&e.daddr, e.dport, true),
        )
    };
    NetOp {
        op,
        family,
        protocol: e.protocol,
        local,
        remote,
        fd: e.fd,
        sock: e.sock,
        tcp_state: (op == NetOpKind::State).then(|| {
            (
                TcpState::from_raw(e.oldstate),
                TcpState::from_raw(e.newstate),
            )
        }),
        read_failed: e.hdr.flags & FLAG_ADDR_READ_FAILED != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is a plain-old-data wire struct.
        unsafe {
            std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>())
                .to_vec()
        }
    }

    #[test]
    fn a_record_shorter_than_its_header_is_an_error() {
        assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn an_unknown_kind_is_an_error() {
        let h = pt::kestrel_hdr {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
    }

    fn failed_exec(error: i32, filename: &[u8], args: &[u8], args_len: u32) -> Vec<u8> {
        let mut e = pt::exec_failed_event::default();
        e.hdr.kind = KIND_EXEC_FAILED;
        e.error = error;
        e.dfd = -100;
        for (d, s) in e.filename.iter_mut().zip(filename) {
            *d = *s as _;
        }
        e.args_len = args_len;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(args);
        rec
    }

    #[test]
    fn a_failed_exec_keeps_its_filename_argv_and_errno() {
        let rec = failed_exec(-13, b"/dev/shm/x", b"/dev/shm/x\0-o\0\xff\xfe\0", 17);
        let EventKind::ExecFailed(x) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert_eq!(x.filename.as_bytes(), b"/dev/shm/x");
        assert_eq!(x.errno, 13);
        assert_eq!(x.dfd, None);
        assert_eq!(x.argv.args[2].as_bytes(), [0xff, 0xfe]);
        assert!(!x.argv.truncated);
    }

    #[test]
    fn a_failed_exec_cut_short_is_flagged_and_a_non_negative_result_is_an_error() {
        let rec = failed_exec(-2, b"/usr/bin/curl", b"curl\0-s", 4000);
        let EventKind::ExecFailed(x) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert!(x.argv.truncated);
        assert_eq!(x.argv.args.len(), 2);
        assert_eq!(
            decode(&failed_exec(0, b"/x", b"", 0)),
            Err(DecodeError::BadErrno(0))
        );
        assert_eq!(
            decode(&failed_exec(i32::MIN, b"/x", b"", 0)),
            Err(DecodeError::BadErrno(i32::MIN))
        );
        // shorter than its fixed part
        let rec = failed_exec(-2, b"/x", b"", 0);
        assert!(matches!(
            decode(&rec[..rec.len() - 8]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn an_exec_record_cut_short_keeps_what_arrived_and_is_flagged() {
        let mut e = pt::exec_event::default();
        e.hdr.kind = KIND_EXEC;
        e.args_len = 4000; // claims more than the record holds
        e.args_size = 4000;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"ls\0-la\0/tm");
        let ev = decode(&rec).unwrap();
        let EventKind::Exec(x) = ev.kind else {
            panic!()
        };
        assert!(x.argv.truncated);
        assert_eq!(x.argv.args.len(), 3);
        assert_eq!(x.argv.args[2].as_bytes(), b"/tm");
    }

    #[test]
    fn a_file_record_splits_its_two_paths() {
        let mut e = ft::file_event::default();
        e.hdr.kind = KIND_FILE;
        e.op = 2;
        e.path_len = 4;
        e.path2_len = 5;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"/a/b/c/de");
        let ev = decode(&rec).unwrap();
        let EventKind::File(f) = ev.kind else {
            panic!()
        };
        assert_eq!(f.path.as_bytes(), b"/a/b");
        assert_eq!(f.new_path.unwrap().as_bytes(), b"/c/de");
        assert!(!f.truncated);
    }

    /// A rename of `k2` to `../shm/k3` from `/dev/shm`: both paths
    /// relative, each followed (after both paths) by its directory's tail.
    #[test]
    fn a_relative_rename_carries_both_resolved_directories() {
        let mut e = ft::file_event::default();
        e.hdr.kind = KIND_FILE;
        e.hdr.flags = FLAG_DIR_RESOLVED | FLAG_DIR2_RESOLVED;
        e.op = 2;
        e.path_len = 2;
        e.path2_len = 9;
        e.dir_len = 8;
        e.dir2_len = 8;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"k2../shm/k3shm\0dev\0shm\0dev\0");
        let EventKind::File(f) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert_eq!(f.dir.as_ref().unwrap().as_bytes(), b"/dev/shm");
        assert_eq!(f.new_dir.as_ref().unwrap().as_bytes(), b"/dev/shm");
        assert_eq!(f.resolved_path().as_ref(), b"/dev/shm/k2");
        assert_eq!(f.path.as_bytes(), b"k2", "the raw spelling stays");

        // without the flag (the walk did not reach the root) the path stays
        // relative, whatever bytes follow
        e.hdr.flags = FLAG_DIR2_RESOLVED;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"k2../shm/k3shm\0dev\0shm\0dev\0");
        let EventKind::File(f) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert_eq!(f.dir, None);
        assert_eq!(f.resolved_path().as_ref(), b"k2");
        assert!(f.new_dir.is_some());

        // a record cut inside a tail, or a damaged tail, names no directory
        e.hdr.flags = FLAG_DIR_RESOLVED | FLAG_DIR2_RESOLVED;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"k2../shm/k3shm\0dev\0shm\0d");
        let EventKind::File(f) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert!(f.dir.is_some());
        assert_eq!(f.new_dir, None);
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"k2../shm/k3..\0\0dev\0shm\0dev\0");
        let EventKind::File(f) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert_eq!(f.dir, None);
    }

    #[test]
    fn a_relative_exec_is_named_from_its_working_directory() {
        let mut e = pt::exec_event::default();
        e.hdr.kind = KIND_EXEC;
        e.hdr.flags = FLAG_DIR_RESOLVED;
        e.filename[..5].copy_from_slice(&b"./kw\0".map(|b| b as _));
        e.args_len = 8;
        e.args_size = 8;
        e.dir_len = 6;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"./kw\0-v\0w\0tmp\0");
        let EventKind::Exec(x) = decode(&rec).unwrap().kind else {
            panic!()
        };
        assert_eq!(x.argv.args.len(), 2);
        assert_eq!(x.dir.as_ref().unwrap().as_bytes(), b"/tmp/w");
        assert_eq!(x.resolved_filename().as_ref(), b"/tmp/w/kw");
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_reported_as_ipv4() {
        let mut e = nt::net_event::default();
        e.hdr.kind = KIND_NET;
        e.op = 2;
        e.family = 10;
        e.sport = 8080;
        e.saddr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
        let ev = decode(&bytes_of(&e)).unwrap();
        let EventKind::Net(n) = ev.kind else { panic!() };
        assert_eq!(
            n.local,
            Some(Endpoint::Ip {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 8080
            })
        );
    }

    /// A bounded fuzz run: mutants of valid records (a failed exec with its
    /// argv, file events with paths) never panic the decoder.
    #[test]
    fn mutated_records_never_panic() {
        use kestrel_events::mutate::mutants;
        let mut file = ft::file_event::default();
        file.hdr.kind = KIND_FILE;
        file.path_len = 11;
        let mut file_rec = bytes_of(&file);
        file_rec.extend_from_slice(b"/etc/passwd");
        let seeds = [
            failed_exec(-13, b"/dev/shm/x", b"/dev/shm/x\0-o\0\xff\xfe\0", 17),
            failed_exec(-2, b"/usr/bin/curl", b"curl\0-s", 4000),
            file_rec,
        ];
        let mut decoded = 0;
        for (i, seed) in seeds.iter().enumerate() {
            for m in mutants(seed, 20_000, 100 + i as u64) {
                decoded += usize::from(decode(&m).is_ok());
            }
        }
        assert!(decoded > 1_000, "{decoded}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_kind_with_random_lengths_and_tail_never_panics(
            kind in 0u32..8,
            len1 in any::<u32>(),
            len2 in any::<u32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut e = ft::file_event::default();
            e.hdr.kind = kind;
            e.path_len = len1;
            e.path2_len = len2;
            let mut rec = bytes_of(&e);
            rec.extend_from_slice(&tail);
            rec.resize(rec.len().max(std::mem::size_of::<pt::exec_event>() * (kind as usize % 2)), 0);
            let _ = decode(&rec);
        }
    }
}
