//! Standalone mode: agent and operator logic in one process on one host, with
//! the same code paths as the cluster shape (capture → edge filter →
//! engine), minus the gRPC hop. State is a directory of YAML files.
//!
//! Output contract (stable):
//! - profiles in `DIR/profiles/<workload>.yaml` (`BehaviorProfile`),
//! - alerts in `DIR/alerts/<name>.yaml` (`SecurityAlert`) and one JSON object
//!   per line on stdout (`{"alert": …}`),
//! - one JSON status line per phase change (`{"phase": …}`) and a progress
//!   line per workload every `progress_every` (`{"progress": …}`),
//! - `DIR/status.json`: workloads and edge counters, rewritten every second.
//!
//! Replicas: every [`REPLICA_SCAN`] the live containers of each workload
//! (their cgroups exist) are counted and given to the engine, so the cluster
//! engine compares replicas here as it does in Kubernetes. Standalone has no
//! rollout time: containers are not versions of a pod template.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use kestrel_agent::capture::{self, CaptureConfig, Scope};
use kestrel_agent::cgroups::{cgroup2_mount, live_containers};
use kestrel_agent::edge::{EdgeCounters, EdgeFilter};
use kestrel_embed::Embedder;
use kestrel_events::{ContainerPathRules, Forwarded, WorkloadMap};
use kestrel_operator::config::OperatorConfig;
use kestrel_operator::engine::WorkloadFacts;
use kestrel_operator::output::Line;
use kestrel_operator::pipeline::{Parts, Pipeline};
use kestrel_profile::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the live containers are counted.
pub const REPLICA_SCAN: Duration = Duration::from_secs(2);

/// Live containers per workload (a container the map does not name is a
/// workload of its own, of one replica).
pub fn live_by_workload(
    root: &Path,
    workloads: &WorkloadMap,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in live_containers(root, ContainerPathRules::default()) {
        out.entry(workloads.resolve(&id).name)
            .or_default()
            .insert(id);
    }
    out
}

/// The replica count of each workload with live containers.
pub fn replica_counts(
    live: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, WorkloadFacts> {
    live.iter()
        .map(|(w, ids)| {
            let facts = WorkloadFacts {
                replicas: Some(u32::try_from(ids.len()).unwrap_or(u32::MAX)),
                rollout_ns: None,
            };
            (w.clone(), facts)
        })
        .collect()
}

/// Summary of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Edge-filter counters.
    pub edge: EdgeCounters,
    /// Forwarded events lost because the engine queue was full.
    pub queue_dropped: u64,
    /// Capture counters.
    pub capture: capture::CaptureStats,
}

/// Runs standalone Kestrel until `stop` is set.
pub fn run(
    cfg: &OperatorConfig,
    state_dir: &Path,
    stop: &AtomicBool,
    embedder: Arc<dyn Embedder>,
    mut emit: impl FnMut(&Line),
    progress_every: Duration,
) -> anyhow::Result<Summary> {
    let parts = Parts::state_dir(state_dir, embedder, "standalone")?;
    let mut pipeline = Pipeline::build(cfg, parts, &mut emit)?;
    let (fwd_tx, fwd_rx): (Sender<Forwarded>, Receiver<Forwarded>) = bounded(65_536);
    type DigestUpdate = (String, Digest);
    let (dig_tx, dig_rx) = bounded::<DigestUpdate>(1024);
    let edge_counters = Arc::new(Mutex::new(EdgeCounters::default()));
    let queue_dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let capture_stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = bounded::<()>(1);

    let capture_thread = {
        let workloads = WorkloadMap::new(cfg.workloads.clone());
        let counters = Arc::clone(&edge_counters);
        let dropped = Arc::clone(&queue_dropped);
        let stop = Arc::clone(&capture_stop);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut edge = EdgeFilter::new(workloads);
                let mut last_copy = Instant::now();
                let ccfg = CaptureConfig {
                    scope: Scope::AllContainers,
                    cgroup_events: false,
                    ..Default::default()
                };
                capture::run(
                    &ccfg,
                    &stop,
                    |event| {
                        while let Ok((w, d)) = dig_rx.try_recv() {
                            edge.set_digest(&w, d);
                        }
                        if let Some(f) = edge.process(event) {
                            if let Err(TrySendError::Full(_)) = fwd_tx.try_send(f) {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if last_copy.elapsed() > Duration::from_millis(500) {
                            last_copy = Instant::now();
                            if let Ok(mut c) = counters.lock() {
                                *c = edge.counters().clone();
                            }
                        }
                    },
                    move || {
                        let _ = ready_tx.send(());
                    },
                )
                .inspect(|_| {
                    if let Ok(mut c) = counters.lock() {
                        *c = edge.counters().clone();
                    }
                })
            })?
    };
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        capture_stop.store(true, Ordering::Relaxed);
        let err = capture_thread
            .join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))?;
        err?;
        anyhow::bail!("capture did not start");
    }

    let workloads = WorkloadMap::new(cfg.workloads.clone());
    let cgroup_root = cgroup2_mount();
    let mut last_scan: Option<Instant> = None;
    let mut known: BTreeMap<String, WorkloadFacts> = BTreeMap::new();
    let mut live: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(root) = &cgroup_root {
            if last_scan.is_none_or(|t| t.elapsed() >= REPLICA_SCAN) {
                last_scan = Some(Instant::now());
                let live_now = live_by_workload(root, &workloads);
                // containers that went: no longer replicas
                for (w, ids) in &live {
                    let still = live_now.get(w);
                    pipeline.pods_gone(
                        w,
                        ids.iter()
                            .filter(|id| still.is_none_or(|s| !s.contains(*id)))
                            .map(String::as_str),
                    );
                }
                let now = replica_counts(&live_now);
                live = live_now;
                // workloads whose containers are all gone: facts unknown
                let gone: Vec<(String, WorkloadFacts)> = known
                    .keys()
                    .filter(|w| !now.contains_key(*w))
                    .map(|w| (w.clone(), WorkloadFacts::default()))
                    .collect();
                pipeline.set_facts(gone.into_iter().chain(now.clone()));
                known = now;
            }
        }
        match fwd_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => pipeline.handle(&f, &mut emit),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        let status = || {
            let edge = edge_counters.lock().map(|c| c.clone()).unwrap_or_default();
            serde_json::json!({ "edge": edge, "queueDropped": queue_dropped.load(Ordering::Relaxed) })
        };
        for d in pipeline.periodic(progress_every, status, &mut emit) {
            let _ = dig_tx.try_send((d.workload, d.digest));
        }
    }
    capture_stop.store(true, Ordering::Relaxed);
    let capture_stats = capture_thread
        .join()
        .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
    // drain what is queued, then persist everything
    while let Ok(f) = fwd_rx.try_recv() {
        pipeline.handle(&f, &mut emit);
    }
    let edge = edge_counters.lock().map(|c| c.clone()).unwrap_or_default();
    let queue_dropped = queue_dropped.load(Ordering::Relaxed);
    pipeline.shutdown(
        serde_json::json!({ "edge": edge, "queueDropped": queue_dropped }),
        &mut emit,
    )?;
    Ok(Summary {
        edge,
        queue_dropped,
        capture: capture_stats,
    })
}
