//! CPU time and memory from the kernel: the whole process (`getrusage`),
//! each thread and the agents' process (`/proc/…/stat`), and memory
//! (`/proc/self/status`).

use std::collections::BTreeMap;

/// CPU seconds (user + system) of this process, all threads, exited ones
/// included (the kernel folds a thread's time into the process when it exits).
pub fn process_cpu() -> f64 {
    pid_cpu_path("/proc/self/stat")
}

/// `USER_HZ`: the unit of `/proc/…/stat` times. The kernel exports it as 100
/// on every architecture Linux supports (it is fixed in the user ABI,
/// independent of the kernel's own tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

fn pid_cpu_path(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| stat_cpu(&s))
        .unwrap_or(f64::NAN)
}

/// utime + stime in seconds from a `/proc/…/stat` line (the fields after
/// the command name, which may hold spaces and parentheses).
fn stat_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // after ')': state is field 3; utime and stime are fields 14 and 15
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// CPU seconds of another process (the agents), from `/proc/<pid>/stat`.
pub fn pid_cpu(pid: u32) -> f64 {
    pid_cpu_path(&format!("/proc/{pid}/stat"))
}

/// The calling thread's kernel id.
pub fn gettid() -> u32 {
    // /proc/thread-self links to "<pid>/task/<tid>" for the calling thread.
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of one thread of this process.
pub fn thread_cpu(tid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| stat_cpu(&s))
        .unwrap_or(f64::NAN)
}

/// CPU seconds of this process's live threads, summed by thread name.
pub fn threads_by_name() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Some(cpu) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| stat_cpu(&s))
        {
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

/// VmRSS and VmHWM of this process, in MiB.
pub fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_reads_utime_and_stime_after_a_name_with_spaces() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 1 0 1 1 1";
        assert_eq!(stat_cpu(line), Some(400.0 / TICKS_PER_SECOND));
    }
}
