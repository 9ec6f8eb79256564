//! Loading and attaching the BPF programs (one skeleton per activity class)
//! behind one loader, and the maps user space drives: the target-cgroup
//! filter and the per-CPU counters.

use crate::decode::wire;
use crate::skel::{
    file::{FileSkel, FileSkelBuilder},
    network::{NetworkSkel, NetworkSkelBuilder},
    process::{ProcessSkel, ProcessSkelBuilder},
};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// What to load and how.
#[derive(Clone, Debug)]
pub struct SensorConfig {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Only events from cgroups in the target map (or below one) reach user space.
    pub filter_targets: bool,
    /// Wake the reader only once this many bytes are queued (batched wake-ups;
    /// capped at a quarter of `ring_bytes`).
    pub wakeup_bytes: u64,
    /// Load the file programs.
    pub file: bool,
    /// Load the network programs.
    pub network: bool,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            ring_bytes: 8 << 20,
            filter_targets: true,
            wakeup_bytes: 256 << 10,
            file: true,
            network: true,
        }
    }
}

/// A failed load or attach step, naming it.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct LoadError {
    /// Which step failed (names the program or map).
    pub step: String,
    /// libbpf's error.
    #[source]
    pub source: libbpf_rs::Error,
}

trait Ctx<T> {
    fn ctx(self, step: impl Into<String>) -> Result<T, LoadError>;
}

impl<T> Ctx<T> for libbpf_rs::Result<T> {
    fn ctx(self, step: impl Into<String>) -> Result<T, LoadError> {
        self.map_err(|source| LoadError {
            step: step.into(),
            source,
        })
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    /// Records written to the ring buffer (counted by the reader: a record
    /// that made it into the ring is always read; [`Sensors::stats`] leaves it 0).
    pub emitted: u64,
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
    /// Events rejected in the kernel by the cgroup filter.
    pub filtered: u64,
    /// Exec events whose argv was longer than the capture limit.
    pub args_truncated: u64,
    /// User strings that could not be read at syscall entry.
    pub read_failed: u64,
}

/// The loaded and attached programs.
pub struct Sensors {
    process: ProcessSkel<'static>,
    file: Option<FileSkel<'static>>,
    network: Option<NetworkSkel<'static>>,
}

fn leaked_object() -> &'static mut MaybeUninit<OpenObject> {
    // A skeleton borrows its OpenObject for its whole life; the agent keeps
    // its sensors until exit, so one small allocation per load is leaked.
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// libbpf attaches tracepoints through tracefs; mount it when the host has not.
fn ensure_tracefs() {
    let events = Path::new("/sys/kernel/tracing/events");
    if events.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return;
    }
    // SAFETY: plain mount(2) call with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not mount tracefs at /sys/kernel/tracing");
    }
}

/// The wake-up threshold the programs use: the configured one, capped at a
/// quarter of the ring so the BPF side's window `[t, 2t)` (see `submit` in
/// `bpf/common.bpf.h`) always fits and is always sampled.
fn effective_wakeup_bytes(cfg: &SensorConfig) -> u64 {
    cfg.wakeup_bytes
        .clamp(1, u64::from(cfg.ring_bytes / 4).max(1))
}

macro_rules! configure {
    ($open:expr, $cfg:expr) => {{
        if let Some(ro) = $open.maps.rodata_data.as_deref_mut() {
            ro.filter_mode = u32::from($cfg.filter_targets);
            ro.self_tgid = std::process::id();
            ro.wakeup_bytes = effective_wakeup_bytes($cfg);
        }
    }};
}

impl Sensors {
    /// Loads, configures and attaches the programs.
    pub fn load(cfg: &SensorConfig) -> Result<Self, LoadError> {
        ensure_tracefs();
        let mut open = ProcessSkelBuilder::default()
            .open(leaked_object())
            .ctx("open process.bpf.o")?;
        configure!(open, cfg);
        open.maps
            .events
            .set_max_entries(cfg.ring_bytes)
            .ctx("set ring buffer size")?;
        let mut process = open.load().ctx("load process programs")?;
        process
            .attach()
            .ctx("attach process programs (sched_process_exec/fork/exit, cgroup_mkdir/rmdir)")?;

        // the other classes reuse the process object's ring buffer, filter and counters
        macro_rules! load_sharing {
            ($builder:ty, $obj:literal, $attach:literal) => {{
                let mut open = <$builder>::default()
                    .open(leaked_object())
                    .ctx(concat!("open ", $obj))?;
                configure!(open, cfg);
                open.maps
                    .events
                    .reuse_fd(process.maps.events.as_fd())
                    .ctx(concat!("share ring buffer with ", $obj))?;
                open.maps
                    .target_cgroups
                    .reuse_fd(process.maps.target_cgroups.as_fd())
                    .ctx(concat!("share filter map with ", $obj))?;
                open.maps
                    .stats
                    .reuse_fd(process.maps.stats.as_fd())
                    .ctx(concat!("share stats map with ", $obj))?;
                let mut skel = open.load().ctx(concat!("load ", $obj))?;
                skel.attach().ctx($attach)?;
                skel
            }};
        }
        let file = if cfg.file {
            Some(load_sharing!(
                FileSkelBuilder,
                "file.bpf.o",
                "attach file programs (sys_enter_open*/rename*/unlink*)"
            ))
        } else {
            None
        };
        let network = if cfg.network {
            Some(load_sharing!(
                NetworkSkelBuilder,
                "network.bpf.o",
                "attach network programs (sys_enter_connect, sys_exit_accept*, inet_sock_set_state)"
            ))
        } else {
            None
        };
        Ok(Sensors {
            process,
            file,
            network,
        })
    }

    /// Lets events from this cgroup (and every cgroup below it) through.
    pub fn add_target(&self, cgroup_id: u64) -> Result<(), LoadError> {
        self.process
            .maps
            .target_cgroups
            .update(&cgroup_id.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .ctx(format!("add cgroup {cgroup_id} to target_cgroups"))
    }

    /// Stops letting events from this cgroup through (missing ids are fine).
    pub fn remove_target(&self, cgroup_id: u64) {
        if let Err(e) = self
            .process
            .maps
            .target_cgroups
            .delete(&cgroup_id.to_ne_bytes())
        {
            tracing::debug!(cgroup_id, error = %e, "target cgroup already gone");
        }
    }

    /// The kernel-side counters, summed over CPUs.
    pub fn stats(&self) -> KernelStats {
        let read = |idx: u32| -> u64 {
            match self
                .process
                .maps
                .stats
                .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
            {
                Ok(Some(per_cpu)) => per_cpu
                    .iter()
                    .filter_map(|v| {
                        v.get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_ne_bytes)
                    })
                    .sum(),
                _ => 0,
            }
        };
        KernelStats {
            emitted: 0,
            dropped: read(wire::STAT_DROPPED),
            filtered: read(wire::STAT_FILTERED),
            args_truncated: read(wire::STAT_ARGS_TRUNCATED),
            read_failed: read(wire::STAT_READ_FAILED),
        }
    }

    /// A reader of the shared ring buffer that hands each record to `on_record`.
    pub fn reader<'a>(
        &'a self,
        mut on_record: impl FnMut(&[u8]) + 'a,
    ) -> Result<Reader<'a>, LoadError> {
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder
            .add(&self.process.maps.events, move |data: &[u8]| {
                on_record(data);
                0
            })
            .ctx("add ring buffer")?;
        Ok(Reader {
            rb: builder.build().ctx("build ring buffer reader")?,
        })
    }

    /// Run-time statistics of the attached programs (needs
    /// `kernel.bpf_stats_enabled=1` for the time and count to advance).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut ids = Vec::new();
        let mut collect = |obj: &libbpf_rs::Object| {
            for prog in obj.progs() {
                if let Ok(id) = libbpf_rs::Program::id_from_fd(prog.as_fd()) {
                    ids.push(id);
                }
            }
        };
        collect(self.process.object());
        if let Some(f) = &self.file {
            collect(f.object());
        }
        if let Some(n) = &self.network {
            collect(n.object());
        }
        libbpf_rs::query::ProgInfoIter::default()
            .filter(|info| ids.contains(&info.id))
            .map(|info| ProgramStats {
                name: info.name.to_string_lossy().into_owned(),
                run_cnt: info.run_cnt,
                run_time_ns: info.run_time_ns,
            })
            .collect()
    }
}

/// Run-time statistics of one BPF program.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProgramStats {
    /// Program name (as the kernel truncates it).
    pub name: String,
    /// Times it ran.
    pub run_cnt: u64,
    /// Total nanoseconds it ran.
    pub run_time_ns: u64,
}

/// Drains the ring buffer.
pub struct Reader<'a> {
    rb: libbpf_rs::RingBuffer<'a>,
}

impl Reader<'_> {
    /// Waits up to `timeout` for a forced wake-up, then consumes everything
    /// queued (records submitted without a wake-up are picked up here too).
    /// A signal arriving during the wait is not an error (the caller's stop
    /// flag decides).
    pub fn drain(&self, timeout: Duration) -> Result<(), LoadError> {
        match self.rb.poll(timeout) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            other => other.ctx("poll ring buffer")?,
        }
        match self.rb.consume() {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => Ok(()),
            other => other.map(|_| ()).ctx("consume ring buffer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wakeup_threshold_is_capped_at_a_quarter_of_the_ring() {
        let big = SensorConfig::default();
        assert_eq!(effective_wakeup_bytes(&big), 256 << 10);
        let tiny = SensorConfig {
            ring_bytes: 64 << 10,
            ..SensorConfig::default()
        };
        assert_eq!(effective_wakeup_bytes(&tiny), 16 << 10);
        let zero = SensorConfig {
            wakeup_bytes: 0,
            ..SensorConfig::default()
        };
        assert_eq!(effective_wakeup_bytes(&zero), 1);
    }
}
