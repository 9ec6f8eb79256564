//! The capture loop: sensors → decoder → container identity → sink.

use crate::cgroups::{cgroup2_mount, cgroup_id_of, CgroupResolver};
use crate::decode::{decode, DecodeError};
use crate::sensors::{KernelStats, LoadError, SensorConfig, Sensors};
use kestrel_events::{ContainerPathRules, Event, EventKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Which activity reaches user space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every container on the host (the default).
    AllContainers,
    /// Only these containers (full ids or unique id prefixes).
    Containers(Vec<String>),
    /// Everything, host processes included (no in-kernel filter).
    Everything,
}

/// Settings of one capture run.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// What to watch.
    pub scope: Scope,
    /// BPF settings.
    pub sensors: SensorConfig,
    /// How long each wait for a wake-up may last.
    pub poll_interval: Duration,
    /// Stop after this long (`None`: until stopped).
    pub duration: Option<Duration>,
    /// Emit cgroup create/remove events for containers too.
    pub cgroup_events: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            scope: Scope::AllContainers,
            sensors: SensorConfig::default(),
            poll_interval: Duration::from_millis(20),
            duration: None,
            cgroup_events: true,
        }
    }
}

/// Why a capture could not run.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Loading or attaching BPF failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
}

/// Counters of one capture run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CaptureStats {
    /// Kernel-side counters (emitted, dropped, filtered, …).
    pub kernel: KernelStats,
    /// Records decoded into events.
    pub decoded: u64,
    /// Events handed to the sink.
    pub delivered: u64,
    /// Records that failed to decode, by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Processes reported by the start-up `/proc` scan.
    pub proc_scan: u64,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct State<F> {
    resolver: CgroupResolver,
    scope: Scope,
    cgroup_events: bool,
    sink: F,
    stats: CaptureStats,
}

impl<F: FnMut(Event)> State<F> {
    fn matches(&self, container_id: &str) -> bool {
        match &self.scope {
            Scope::Containers(ids) => ids.iter().any(|w| container_id.starts_with(w.as_str())),
            Scope::AllContainers | Scope::Everything => true,
        }
    }

    fn on_record(&mut self, sensors: &Sensors, data: &[u8]) {
        let mut event = match decode(data) {
            Ok(e) => e,
            Err(e) => {
                self.count_error(&e);
                return;
            }
        };
        self.stats.decoded += 1;
        if let EventKind::Cgroup(change) = &event.kind {
            let path = change.path.to_lossy().into_owned();
            let info = if change.created {
                Some(self.resolver.insert(change.id, &path).clone())
            } else {
                self.resolver.remove(change.id)
            };
            let container = info.and_then(|i| i.container);
            let is_target = container.as_ref().is_some_and(|c| self.matches(&c.id));
            if is_target && self.scope != Scope::Everything {
                if change.created {
                    if let Err(e) = sensors.add_target(change.id) {
                        tracing::warn!(error = %e, "could not watch new container cgroup");
                    }
                } else {
                    sensors.remove_target(change.id);
                }
            }
            if !(self.cgroup_events && (is_target || self.scope == Scope::Everything)) {
                return;
            }
            event.container = container;
        } else {
            event.container = self
                .resolver
                .resolve(event.cgroup_id)
                .and_then(|i| i.container.clone());
        }
        self.stats.delivered += 1;
        (self.sink)(event);
    }

    fn count_error(&mut self, e: &DecodeError) {
        *self.stats.decode_errors.entry(e.label()).or_default() += 1;
    }
}

/// Runs a capture until `stop` is set or the configured duration passes,
/// handing every event to `sink`. `on_ready` runs once the programs are
/// attached and the targets are set (tests start their workload there).
pub fn run(
    cfg: &CaptureConfig,
    stop: &AtomicBool,
    sink: impl FnMut(Event),
    on_ready: impl FnOnce(),
) -> Result<CaptureStats, CaptureError> {
    run_with(cfg, stop, sink, on_ready, |_| (), |_| ())
}

/// [`run`], with `after_drain` called after every drain of the ring buffer
/// (a printer flushes there) and `before_unload` called on the sensors after
/// the last one (benchmarks read the programs' run-time statistics there).
pub fn run_with(
    cfg: &CaptureConfig,
    stop: &AtomicBool,
    sink: impl FnMut(Event),
    on_ready: impl FnOnce(),
    mut after_drain: impl FnMut(&Sensors),
    before_unload: impl FnOnce(&Sensors),
) -> Result<CaptureStats, CaptureError> {
    let root = cgroup2_mount().ok_or(CaptureError::NoCgroup2)?;
    let mut sensor_cfg = cfg.sensors.clone();
    sensor_cfg.filter_targets = cfg.scope != Scope::Everything;
    let sensors = Sensors::load(&sensor_cfg)?;
    let resolver = CgroupResolver::new(root.clone(), ContainerPathRules::default());

    let state = Rc::new(RefCell::new(State {
        resolver,
        scope: cfg.scope.clone(),
        cgroup_events: cfg.cgroup_events,
        sink,
        stats: CaptureStats::default(),
    }));

    // Targets: parents whose children are all containers (no race with new
    // containers), plus every container cgroup that exists now.
    {
        let st = state.borrow();
        if cfg.scope == Scope::AllContainers {
            for id in st.resolver.container_parents() {
                sensors.add_target(id)?;
            }
        }
        if cfg.scope != Scope::Everything {
            for (id, info) in st.resolver.containers() {
                if info.container.as_ref().is_some_and(|c| st.matches(&c.id)) {
                    sensors.add_target(id)?;
                }
            }
        }
    }

    // Processes that were already running.
    {
        let mut st = state.borrow_mut();
        let now = monotonic_ns();
        let scope = st.scope.clone();
        let rules = ContainerPathRules::default();
        let existing = crate::procscan::scan(
            std::path::Path::new("/proc"),
            now,
            |path| cgroup_id_of(&root.join(path.trim_start_matches('/'))).ok(),
            |_, path| match &scope {
                Scope::Everything => true,
                Scope::AllContainers => rules.container_of(path).is_some(),
                Scope::Containers(ids) => rules
                    .container_of(path)
                    .is_some_and(|c| ids.iter().any(|w| c.id.starts_with(w.as_str()))),
            },
        );
        for mut ev in existing {
            if ev
                .task
                .as_ref()
                .is_some_and(|t| t.pid == std::process::id())
            {
                continue;
            }
            ev.container = st
                .resolver
                .resolve(ev.cgroup_id)
                .and_then(|i| i.container.clone());
            st.stats.proc_scan += 1;
            st.stats.delivered += 1;
            (st.sink)(ev);
        }
    }

    let reader = {
        let state = Rc::clone(&state);
        let sensors_ref = &sensors;
        sensors.reader(move |data| state.borrow_mut().on_record(sensors_ref, data))?
    };
    on_ready();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        reader.drain(cfg.poll_interval)?;
        after_drain(&sensors);
    }
    reader.drain(Duration::ZERO)?;
    after_drain(&sensors);
    drop(reader);
    let mut stats = state.borrow().stats.clone();
    stats.kernel = sensors.stats();
    // every record that reached the ring was read (decoded or not)
    stats.kernel.emitted = stats.decoded + stats.decode_errors.values().sum::<u64>();
    before_unload(&sensors);
    Ok(stats)
}
