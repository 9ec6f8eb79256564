//! The operator's processing loop, shared by standalone mode and the gRPC
//! server: forwarded events → engine → alerts (store, stdout, webhook);
//! every second: time passes, changed profiles are persisted, changed
//! digests are handed back for the agents, `status.json` is rewritten.

use crate::engine::{Engine, EngineConfig, LlmSeam, Output};
use crate::standalone::{hostname, wall_now, Line, StandaloneConfig};
use crate::store::{DirStore, Store};
use kestrel_agent::edge::Forwarded;
use kestrel_embed::Embedder;
use kestrel_profile::Digest;
use kestrel_scoring::{RuleSet, Scorer, WebhookSink};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Engine, store and sinks, driven by the caller's loop.
pub struct Pipeline {
    engine: Engine,
    store: DirStore,
    runtime: tokio::runtime::Runtime,
    webhook: Option<Arc<WebhookSink>>,
    last_tick: Instant,
    last_progress: Instant,
}

impl Pipeline {
    /// Builds the engine from the config and loads the stored profiles
    /// (a corrupt file is reported through `emit` and skipped).
    pub fn build(
        cfg: &StandaloneConfig,
        state_dir: &Path,
        embedder: Arc<dyn Embedder>,
        namespace: &str,
        emit: &mut dyn FnMut(&Line),
    ) -> anyhow::Result<Self> {
        let store = DirStore::open(state_dir)?;
        let threshold = kestrel_embed::default_threshold(embedder.model_id()).unwrap_or(0.95);
        let mut rules = RuleSet::builder().default_pack();
        for r in &cfg.rules {
            let text =
                std::fs::read_to_string(r).map_err(|e| anyhow::anyhow!("{}: {e}", r.display()))?;
            rules = rules.add_yaml(r.display().to_string(), text);
        }
        let scoring = cfg.scoring.clone().unwrap_or_default();
        let llm = scoring.build_llm_engine()?;
        let webhook = cfg
            .webhook
            .as_ref()
            .map(WebhookSink::new)
            .transpose()?
            .map(Arc::new);
        let scorer = Scorer::new(scoring, rules.build()?)?;
        // LLM calls and webhook deliveries run here; one worker is plenty
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kestrel-io")
            .enable_all()
            .build()?;
        let mut engine = Engine::new(
            EngineConfig {
                profile: cfg.profile_config(threshold)?,
                node: hostname(),
                namespace: namespace.into(),
                digest_seed: digest_seed(),
            },
            embedder,
            scorer,
        );
        if let Some(engine_llm) = llm {
            engine = engine.with_llm(LlmSeam {
                engine: engine_llm,
                runtime: runtime.handle().clone(),
            });
        }
        let now = wall_now();
        for (name, yaml) in store.load_profiles() {
            let loaded = yaml.map_err(|e| e.to_string()).and_then(|y| {
                engine
                    .load_profile(&name, &y, now)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = loaded {
                emit(&Line::StoreError(e));
            }
        }
        Ok(Pipeline {
            engine,
            store,
            runtime,
            webhook,
            last_tick: Instant::now(),
            last_progress: Instant::now(),
        })
    }

    /// Handles one forwarded event.
    pub fn handle(&mut self, f: &Forwarded, emit: &mut dyn FnMut(&Line)) {
        match self.engine.handle(f, wall_now()) {
            Ok(outs) => self.outputs(outs, emit),
            Err(e) => emit(&Line::StoreError(e.to_string())),
        }
    }

    fn outputs(&mut self, outs: Vec<Output>, emit: &mut dyn FnMut(&Line)) {
        for o in outs {
            match o {
                Output::Phase {
                    workload,
                    transition,
                } => emit(&Line::Phase {
                    workload,
                    from: format!("{:?}", transition.from),
                    to: format!("{:?}", transition.to),
                    reason: transition.message,
                }),
                Output::Alert { alert, notify } => {
                    if let Err(e) = self.store.save_alert(&alert) {
                        emit(&Line::StoreError(e.to_string()));
                    }
                    if let (Some(sink), true) = (&self.webhook, notify) {
                        let (sink, a) = (Arc::clone(sink), alert.clone());
                        self.runtime.spawn(async move {
                            if let Err(e) = sink.send_alert(&a).await {
                                tracing::warn!(error = %e, alert = %a.id, "webhook delivery failed");
                            }
                        });
                    }
                    emit(&Line::Alert(alert));
                }
            }
        }
    }

    /// Call often: applies the LLM answers that arrived; once a second lets
    /// time pass, persists changed profiles,
    /// rewrites `status.json` (with `extra_status` merged in) and returns the
    /// digests that changed; every `progress_every` emits a progress line.
    pub fn periodic(
        &mut self,
        progress_every: Duration,
        extra_status: impl FnOnce() -> serde_json::Value,
        emit: &mut dyn FnMut(&Line),
    ) -> Vec<(String, Digest)> {
        let outs = self.engine.poll_llm(wall_now());
        self.outputs(outs, emit);
        let mut digests = Vec::new();
        if self.last_tick.elapsed() >= Duration::from_secs(1) {
            self.last_tick = Instant::now();
            let outs = self.engine.tick(wall_now());
            self.outputs(outs, emit);
            self.persist(false, emit);
            digests = self.engine.take_digests();
            self.write_status(extra_status());
        }
        if self.last_progress.elapsed() >= progress_every {
            self.last_progress = Instant::now();
            emit(&Line::Progress(self.engine.status()));
        }
        digests
    }

    /// Every current digest (for an agent that just connected).
    pub fn all_digests(&self) -> Vec<(String, Digest)> {
        self.engine.all_digests()
    }

    fn persist(&mut self, all: bool, emit: &mut dyn FnMut(&Line)) {
        let profiles = if all {
            self.engine.all_yaml()
        } else {
            self.engine.take_dirty()
        };
        for (name, yaml) in profiles {
            let saved = yaml.map_err(|e| e.to_string()).and_then(|y| {
                self.store
                    .save_profile(&name, &y)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = saved {
                emit(&Line::StoreError(e));
            }
        }
    }

    /// Persists everything and writes the final status.
    pub fn shutdown(&mut self, extra_status: serde_json::Value, emit: &mut dyn FnMut(&Line)) {
        self.persist(true, emit);
        self.write_status(extra_status);
    }

    fn write_status(&self, extra: serde_json::Value) {
        let mut v = serde_json::json!({
            "workloads": self.engine.status(),
            "alerts": self.engine.scorer_stats(),
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        let path = self.store.root().join("status.json");
        let tmp = self.store.root().join("status.json.tmp");
        if std::fs::write(&tmp, v.to_string()).is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }
}

/// A per-process random seed for the digests (keys the edge filter's hashes).
fn digest_seed() -> u64 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    u64::from_ne_bytes(buf) ^ u64::from(std::process::id())
}
