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

use crate::pipeline::Pipeline;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use kestrel_agent::capture::{self, CaptureConfig, Scope};
use kestrel_agent::edge::{EdgeCounters, EdgeFilter, Forwarded};
use kestrel_agent::workloads::{WorkloadMap, WorkloadSpec};
use kestrel_embed::{ArgEmbedder, CacheOptions, EmbedConfig, Embedder, OnnxEmbedder};
use kestrel_profile::{Digest, Mode, ProfileConfig};
use kestrel_scoring::{ScoringConfig, WebhookConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Learning settings in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearningSettings {
    /// Sliding window (`1h`, `30s`, …).
    pub window: Option<String>,
    /// Minimum learning time.
    pub min_learning_time: Option<String>,
    /// Consecutive clean windows needed.
    pub clean_windows: Option<u32>,
    /// Growth a clean window may count.
    pub max_new_per_window: Option<u32>,
}

/// The standalone config file (`--config FILE`, YAML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Named workloads by container-id glob; other containers are their own workload.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Learning and convergence.
    #[serde(default)]
    pub learning: LearningSettings,
    /// `Auto` (default), `Learn` or `Detect`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Argument similarity threshold; default: the model's calibrated one.
    #[serde(default)]
    pub similarity_threshold: Option<f32>,
    /// Directory of the embedding model (default `$KESTREL_MODEL_DIR`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Extra rule files (YAML) added to the default pack.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Scoring: weights, threshold, severity bands, cluster and incident
    /// settings, and the OpenAI-compatible LLM endpoint (`scoring.llm`).
    #[serde(default)]
    pub scoring: Option<ScoringConfig>,
    /// A webhook receiving each new alert (and each severity change) as a
    /// falcosidekick-compatible JSON payload.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

impl StandaloneConfig {
    /// Reads and checks a config file; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub(crate) fn profile_config(&self, default_threshold: f32) -> anyhow::Result<ProfileConfig> {
        let mut b = ProfileConfig::builder()
            .similarity_threshold(self.similarity_threshold.unwrap_or(default_threshold));
        let dur = |field: &str, v: &Option<String>| -> anyhow::Result<Option<Duration>> {
            v.as_deref()
                .map(|s| {
                    kestrel_profile::parse_duration(s)
                        .ok_or_else(|| anyhow::anyhow!("learning.{field}: bad duration {s:?}"))
                })
                .transpose()
        };
        if let Some(w) = dur("window", &self.learning.window)? {
            b = b.window(w);
        }
        if let Some(m) = dur("minLearningTime", &self.learning.min_learning_time)? {
            b = b.min_learning_time(m);
        }
        if let Some(k) = self.learning.clean_windows {
            b = b.clean_windows(k);
        }
        if let Some(n) = self.learning.max_new_per_window {
            b = b.max_new_per_window(n);
        }
        if let Some(m) = &self.mode {
            b = b.mode(match m.as_str() {
                "Auto" => Mode::Auto,
                "Learn" => Mode::Learn,
                "Detect" => Mode::Detect,
                other => anyhow::bail!("mode: {other:?} is not Auto, Learn or Detect"),
            });
        }
        Ok(b.build()?)
    }
}

/// One line of standalone output.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Line {
    /// A phase change.
    Phase {
        /// Workload.
        workload: String,
        /// From.
        from: String,
        /// To.
        to: String,
        /// Why.
        reason: String,
    },
    /// Learning progress.
    Progress(Vec<crate::engine::WorkloadStatus>),
    /// An alert (created or updated).
    Alert(Box<kestrel_scoring::SecurityAlert>),
    /// Stored state that could not be loaded (the rest still loads).
    StoreError(String),
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

pub(crate) fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Loads the embedding model named by the config (or the environment).
pub fn load_embedder(cfg: &StandaloneConfig) -> anyhow::Result<Arc<dyn Embedder>> {
    let ecfg = match &cfg.model_dir {
        Some(d) => EmbedConfig::from_dir(d),
        None => EmbedConfig::from_env(),
    };
    let model = OnnxEmbedder::load(ecfg)
        .map_err(|e| anyhow::anyhow!("embedding model: {e} (run `make deps`)"))?;
    Ok(Arc::new(ArgEmbedder::new(
        Arc::new(model),
        CacheOptions::default(),
    )?))
}

/// Runs standalone Kestrel until `stop` is set.
pub fn run(
    cfg: &StandaloneConfig,
    state_dir: &Path,
    stop: &AtomicBool,
    embedder: Arc<dyn Embedder>,
    mut emit: impl FnMut(&Line),
    progress_every: Duration,
) -> anyhow::Result<Summary> {
    let mut pipeline = Pipeline::build(cfg, state_dir, embedder, "standalone", &mut emit)?;
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

    while !stop.load(Ordering::Relaxed) {
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
            let _ = dig_tx.try_send(d);
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
    );
    Ok(Summary {
        edge,
        queue_dropped,
        capture: capture_stats,
    })
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
