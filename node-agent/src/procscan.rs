//! Processes that were running before the agent started: one synthetic exec
//! event each (flagged `from_proc_scan`), read from `/proc`.

use kestrel_events::{Argv, ByteStr, Event, EventKind, Exec, Namespaces, Task};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes of `/proc/<pid>/cmdline` kept, like the BPF side's argv limit.
const ARGS_MAX: usize = crate::decode::wire::ARGS_MAX;

/// The cgroup v2 path of a process (`0::<path>` line of `/proc/<pid>/cgroup`).
pub fn cgroup_path_of(proc_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

fn ppid_and_comm(proc_dir: &Path) -> Option<(u32, ByteStr)> {
    let stat = std::fs::read(proc_dir.join("stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = ByteStr::new(stat.get(open + 1..close)?.to_vec());
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

fn ns_inode(proc_dir: &Path, ns: &str) -> u32 {
    std::fs::metadata(proc_dir.join("ns").join(ns))
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

/// One process as an exec event, or `None` if it vanished while reading.
pub fn process_event(proc_dir: &Path, cgroup_id: u64, now_ns: u64) -> Option<Event> {
    let pid: u32 = proc_dir.file_name()?.to_str()?.parse().ok()?;
    let (ppid, comm) = ppid_and_comm(proc_dir)?;
    let meta = std::fs::metadata(proc_dir).ok()?;
    let mut cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let size = cmdline.len() as u32;
    let truncated = cmdline.len() > ARGS_MAX;
    cmdline.truncate(ARGS_MAX);
    let exe_path = std::fs::read_link(proc_dir.join("exe")).ok();
    if exe_path.is_none() && cmdline.is_empty() {
        return None; // a kernel thread, or gone
    }
    let exe = exe_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| ByteStr::new(n.as_encoded_bytes().to_vec()))
        .unwrap_or_default();
    let filename = exe_path
        .map(|p| ByteStr::new(p.into_os_string().into_encoded_bytes()))
        .unwrap_or_default();
    let parent_comm = ppid_and_comm(&proc_dir.with_file_name(ppid.to_string()))
        .map(|(_, c)| c)
        .unwrap_or_default();
    let ns_pid = std::fs::read_to_string(proc_dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(pid);
    Some(Event {
        ts_ns: now_ns,
        cgroup_id,
        task: Some(Task {
            pid,
            tid: pid,
            ppid,
            uid: meta.uid(),
            comm,
        }),
        ns: Namespaces {
            pid: ns_inode(proc_dir, "pid"),
            mnt: ns_inode(proc_dir, "mnt"),
        },
        container: None,
        kind: EventKind::Exec(Exec {
            filename,
            exe,
            parent_comm,
            ns_pid,
            argv: Argv::from_nul_separated(&cmdline, size, truncated, false),
            from_proc_scan: true,
            dir: None,
        }),
    })
}

/// Every process whose cgroup `wanted` accepts, as synthetic exec events.
/// `cgroup_id_of_path` maps a cgroup path to its id.
pub fn scan(
    proc_root: &Path,
    now_ns: u64,
    mut cgroup_id_of_path: impl FnMut(&str) -> Option<u64>,
    mut wanted: impl FnMut(u64, &str) -> bool,
) -> Vec<Event> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Some(cg) = cgroup_path_of(&dir) else {
            continue;
        };
        let Some(id) = cgroup_id_of_path(&cg) else {
            continue;
        };
        if !wanted(id, &cg) {
            continue;
        }
        if let Some(ev) = process_event(&dir, id, now_ns) {
            out.push(ev);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_is_found_with_its_argv() {
        let me = Path::new("/proc").join(std::process::id().to_string());
        let ev = process_event(&me, 7, 1).expect("own /proc entry");
        let EventKind::Exec(exec) = ev.kind else {
            panic!("not an exec")
        };
        assert!(exec.from_proc_scan);
        assert!(!exec.argv.args.is_empty());
        assert_eq!(ev.task.unwrap().pid, std::process::id());
    }

    #[test]
    fn a_vanished_process_yields_nothing() {
        assert!(process_event(Path::new("/proc/999999999"), 1, 1).is_none());
    }
}
