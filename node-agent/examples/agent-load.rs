//! Agent load harness (`make bench`): how many events the agent decodes per
//! second with batched wake-ups, how many it drops, and what the BPF programs
//! cost per fork+exec+exit (from the kernel's run-time statistics).
//!
//! Workers run in their own cgroup (`/kestrel/bench-load`), which is the only
//! capture target, so the in-kernel filter is on as in production. Three runs:
//! `open()` of a missing file (real opens), `openat()` that the kernel rejects
//! right after the entry tracepoint (complete file events at a rate real opens
//! cannot reach on 2 cores: what the agent can decode), and a fork+exec+exit
//! loop with the kernel's BPF run-time statistics on.
//!
//!     cargo run --release -p kestrel-node-agent --example agent-load [-- SECONDS WORKERS]

use kestrel_agent::capture::{self, CaptureConfig, Scope};
use kestrel_agent::cgroups::cgroup2_mount;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn worker(kind: &str, secs: f64) -> ! {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut n: u64 = 0;
    match kind {
        "open" => {
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    // SAFETY: open(2) on a constant path; the result is closed if valid.
                    let fd = unsafe {
                        libc::open(c"/nonexistent-kestrel-bench".as_ptr(), libc::O_RDONLY)
                    };
                    if fd >= 0 {
                        // SAFETY: closing the fd we opened.
                        unsafe { libc::close(fd) };
                    }
                }
                n += 1000;
            }
        }
        "open-rejected" => {
            // openat(2) with flags the kernel rejects (O_TMPFILE without a
            // directory) right after the entry tracepoint: every call is a
            // complete file event (path, flags, mode) while the syscall
            // itself costs almost nothing, so the harness can offer the
            // agent more events per second than real opens on 2 cores can
            let flags = libc::O_TMPFILE | libc::O_RDONLY;
            #[repr(align(64))]
            struct Path([u8; 64]);
            let mut path = Path([0; 64]);
            path.0[..23].copy_from_slice(b"/kestrel-bench/rejected");
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    // SAFETY: openat(2) on a constant path; it fails with EINVAL.
                    let fd =
                        unsafe { libc::openat(libc::AT_FDCWD, path.0.as_ptr().cast(), flags, 0) };
                    if fd >= 0 {
                        // SAFETY: closing the fd we opened (never expected).
                        unsafe { libc::close(fd) };
                    }
                }
                n += 1000;
            }
        }
        _ => {
            // plain fork + execv + waitpid: one fork, one exec, one exit per op
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            // empty environment: `cargo run` sets LD_LIBRARY_PATH, which would
            // make the loader probe dozens of directories per exec
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            while Instant::now() < deadline {
                // SAFETY: the child only calls execve and _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: valid NUL-terminated path, argv and envp arrays.
                    unsafe {
                        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                        libc::_exit(127);
                    }
                }
                if pid > 0 {
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    n += 1;
                }
            }
        }
    }
    println!("{n}");
    std::process::exit(0)
}

fn spawn_workers(
    kind: &str,
    count: usize,
    secs: f64,
    cgroup_procs: &std::path::Path,
) -> Vec<Child> {
    let me = std::env::current_exe().expect("own path");
    (0..count)
        .map(|_| {
            let procs = cgroup_procs.to_path_buf();
            let mut cmd = Command::new(&me);
            cmd.args(["--worker", kind, &secs.to_string()])
                .stdout(std::process::Stdio::piped());
            // SAFETY: the closure only writes our pid to a cgroup file before exec.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
            }
            cmd.spawn().expect("spawn worker")
        })
        .collect()
}

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct RunResult {
    ops: u64,
    events: u64,
    wall: f64,
    cpu: f64,
    stats: capture::CaptureStats,
    bpf: Vec<kestrel_agent::sensors::ProgramStats>,
}

fn run(kind: &str, secs: f64, workers: usize, procs: &std::path::Path) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (bpf_tx, bpf_rx) = std::sync::mpsc::channel();
    let handle = {
        let stop = Arc::clone(&stop);
        let events = Arc::clone(&events);
        std::thread::spawn(move || {
            let mut kinds = std::collections::BTreeMap::new();
            let cfg = CaptureConfig {
                scope: Scope::Containers(vec!["bench-load".into()]),
                cgroup_events: false,
                ..Default::default()
            };
            capture::run_with(
                &cfg,
                &stop,
                |e| {
                    events.fetch_add(1, Ordering::Relaxed);
                    let k = match &e.kind {
                        kestrel_events::EventKind::Exec(_) => "exec",
                        kestrel_events::EventKind::ExecFailed(_) => "exec_failed",
                        kestrel_events::EventKind::Fork(_) => "fork",
                        kestrel_events::EventKind::Exit(_) => "exit",
                        kestrel_events::EventKind::File(_) => "file",
                        kestrel_events::EventKind::Net(_) => "net",
                        kestrel_events::EventKind::Cgroup(_) => "cgroup",
                    };
                    *kinds.entry(k).or_insert(0u64) += 1;
                },
                move || {
                    let _ = tx.send(());
                },
                |_| (),
                move |sensors| {
                    let _ = bpf_tx.send(sensors.program_stats());
                },
            )
            .map(|s| (s, kinds))
        })
    };
    rx.recv().expect("capture ready");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let children = spawn_workers(kind, workers, secs, procs);
    let ops: u64 = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("worker");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    std::thread::sleep(Duration::from_millis(200));
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (stats, kinds) = handle.join().expect("capture thread").expect("capture");
    eprintln!("  events by kind: {kinds:?}");
    let cpu = cpu_seconds() - cpu0;
    let bpf = bpf_rx.recv().unwrap_or_default();
    RunResult {
        ops,
        events: events.load(Ordering::Relaxed),
        wall,
        cpu,
        stats,
        bpf,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2], args[3].parse().unwrap_or(5.0));
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let workers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);

    let root = cgroup2_mount().expect("cgroup v2 mount");
    let cg = root.join("kestrel/bench-load");
    std::fs::create_dir_all(&cg).expect("create bench cgroup (run as root)");
    let procs = cg.join("cgroup.procs");

    // run-time statistics cost two clock reads per program run: on for the
    // exec run only, which measures the per-program cost
    let stats_sysctl = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(stats_sysctl).unwrap_or_default();
    let _ = std::fs::write(stats_sysctl, "0");

    println!(
        "# agent load harness: {secs}s per run, {workers} workers, 8 MiB ring, batched wake-ups"
    );
    for (kind, what) in [
        ("open", "file events (open of a missing file)"),
        (
            "open-rejected",
            "file events (openat rejected by the kernel after the entry tracepoint)",
        ),
    ] {
        let r = run(kind, secs, workers, &procs);
        println!(
            "{what}: {:.0} calls/s generated, {:.0} events/s decoded, drops {}, kernel emitted {}, agent CPU {:.1}% of one core",
            r.ops as f64 / r.wall,
            r.events as f64 / r.wall,
            r.stats.kernel.dropped,
            r.stats.kernel.emitted,
            100.0 * r.cpu / r.wall
        );
    }
    let _ = std::fs::write(stats_sysctl, "1");
    let exec = run("exec", secs, workers, &procs);
    println!(
        "exec loop: {:.0} fork+exec+exit/s, {:.0} events/s decoded, drops {}",
        exec.ops as f64 / exec.wall,
        exec.events as f64 / exec.wall,
        exec.stats.kernel.dropped
    );
    let mut per_exec_ns = 0.0;
    for p in &exec.bpf {
        if p.run_cnt > 0 {
            let avg = p.run_time_ns as f64 / p.run_cnt as f64;
            println!(
                "  bpf {:<16} runs {:>9}  avg {:>7.0} ns",
                p.name, p.run_cnt, avg
            );
            if ["handle_exec", "handle_fork", "handle_exit"].contains(&p.name.as_str()) {
                per_exec_ns += avg;
            }
        }
    }
    let all_ns: f64 =
        exec.bpf.iter().map(|p| p.run_time_ns as f64).sum::<f64>() / exec.ops.max(1) as f64;
    println!("BPF cost per fork+exec+exit: {:.2} µs (exec+fork+exit programs), {:.2} µs (all programs, incl. the loader's opens)", per_exec_ns / 1000.0, all_ns / 1000.0);

    let _ = std::fs::write(stats_sysctl, old.trim());
    let _ = std::fs::remove_dir(&cg);
}
