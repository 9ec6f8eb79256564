//! The operator's processing loop, shared by standalone mode and the gRPC
//! server: forwarded events → engine → alerts (store, stdout, webhook);
//! every second: time passes, changed profiles are persisted, changed
//! digests are handed back for the agents, and the status goes to its sink.
//!
//! The pipeline owns no I/O of its own: the [`Store`], the [`StatusSink`]
//! and the [`Clock`] are passed in.

use crate::clock::{hostname, Clock};
use crate::config::OperatorConfig;
use crate::engine::{
    Command, Engine, EngineConfig, LlmSeam, Output, WorkloadDigest, WorkloadFacts,
};
use crate::error::{Error, Result};
use crate::output::Line;
use crate::store::{AlertDocument, StatusSink, Store, StoredProfile};
use kestrel_api::{AlertState, Condition, ConditionStatus, Triage};
use kestrel_embed::Embedder;
use kestrel_events::Forwarded;
use kestrel_scoring::{Scorer, WebhookSink};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Engine, store and sinks, driven by the caller's loop.
pub struct Pipeline {
    engine: Engine,
    store: Arc<dyn Store>,
    status: Box<dyn StatusSink>,
    clock: Box<dyn Clock>,
    runtime: tokio::runtime::Runtime,
    webhook: Option<Arc<WebhookSink>>,
    flood: crate::flood::FloodGate,
    /// People's triage per alert object (`namespace/name`), when not Open.
    triage: HashMap<String, AlertState>,
    /// Writes that failed, by `profile/<workload>` or `alert/<name>`: the
    /// latest version of each document, retried every tick until it lands.
    pending: std::collections::BTreeMap<String, PendingWrite>,
    /// Writes that failed so far (each attempt).
    write_failures: u64,
    /// State files set aside at start: `{file, movedTo, reason}`.
    quarantined: Vec<serde_json::Value>,
    /// When each workload in memory last had an event (state directory
    /// only: a store that can read one profile back).
    last_seen: HashMap<String, Duration>,
    /// Workloads saved and taken out of memory.
    evicted: std::collections::HashSet<String>,
    /// Evictions so far.
    evictions: u64,
    max_workloads: usize,
    workload_idle: Option<Duration>,
    last_tick: Instant,
    last_progress: Instant,
}

/// A document whose write failed, kept until a retry lands.
enum PendingWrite {
    Profile(Box<StoredProfile>),
    Alert(Box<crate::store::AlertDocument>),
}

/// The state writes that never landed, at shutdown.
#[derive(Debug, thiserror::Error)]
#[error("{} state write(s) never landed (first: {first}); the documents were printed on stdout only", .count)]
pub struct UnsavedState {
    /// How many documents.
    pub count: usize,
    /// The first one's key and last error.
    pub first: String,
}

/// What the pipeline is built from besides the config.
pub struct Parts {
    /// Where profiles and alerts are kept.
    pub store: Arc<dyn Store>,
    /// Where the status goes.
    pub status: Box<dyn StatusSink>,
    /// The time.
    pub clock: Box<dyn Clock>,
    /// The embedding model.
    pub embedder: Arc<dyn Embedder>,
    /// Namespace of the profiles and alerts.
    pub namespace: String,
}

impl Parts {
    /// The parts of standalone mode and of the operator without an API
    /// server: a state directory (profiles, alerts, `status.json`) and the
    /// system clock.
    pub fn state_dir(
        dir: &std::path::Path,
        embedder: Arc<dyn Embedder>,
        namespace: &str,
    ) -> Result<Self> {
        Ok(Parts {
            store: Arc::new(crate::store::DirStore::open(dir)?),
            status: Box::new(crate::store::StatusFile::in_dir(dir)),
            clock: Box::new(crate::clock::SystemClock),
            embedder,
            namespace: namespace.to_string(),
        })
    }
}

impl Pipeline {
    /// Builds the engine from the config and loads the stored profiles
    /// (one that cannot be read or loaded is reported through `emit` and
    /// skipped; the others load).
    pub fn build(cfg: &OperatorConfig, parts: Parts, emit: &mut dyn FnMut(&Line)) -> Result<Self> {
        let Parts {
            store,
            status,
            clock,
            embedder,
            namespace,
        } = parts;
        let threshold = kestrel_embed::default_threshold(embedder.model_id())
            .unwrap_or(kestrel_embed::UNCALIBRATED_THRESHOLD);
        let rules = cfg.rule_set().map_err(|e| Error::Config(e.to_string()))?;
        let scoring = cfg.scoring.clone().unwrap_or_default();
        let llm = scoring.build_llm_engine()?;
        let webhook = cfg
            .webhook
            .as_ref()
            .map(WebhookSink::new)
            .transpose()?
            .map(Arc::new);
        let scorer = Scorer::new(scoring, rules)?;
        // LLM calls, webhook deliveries and store calls run here; one worker
        // is plenty
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kestrel-io")
            .enable_all()
            .build()?;
        let profile = cfg
            .profile_config(threshold)
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut engine = Engine::new(
            EngineConfig {
                profile,
                node: hostname(),
                namespace: namespace.clone(),
                digest_seed: digest_seed()?,
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
        let now = clock.now();
        let mut quarantined = Vec::new();
        let mut set_aside = |e: &crate::store::StoreError| {
            if let crate::store::StoreError::Quarantined {
                path,
                moved_to,
                reason,
            } = e
            {
                quarantined.push(serde_json::json!({
                    "file": path.display().to_string(),
                    "movedTo": moved_to.display().to_string(),
                    "reason": reason,
                }));
            }
        };
        let mut last_seen = HashMap::new();
        for stored in runtime.block_on(store.load_profiles())? {
            if let Ok(p) = &stored {
                last_seen.insert(p.workload.clone(), now);
            }
            match stored {
                Err(e) => {
                    set_aside(&e);
                    emit(&Line::error(&Error::from(e)));
                }
                Ok(p) => {
                    if let Err(e) = engine.load_profile(&p.workload, &p.object, now) {
                        // The workload starts afresh; what could not be
                        // used is kept aside, never overwritten by it.
                        let reason = e.to_string();
                        match runtime.block_on(store.quarantine_profile(&p.workload, &reason)) {
                            Ok(Some((path, moved_to))) => {
                                let e = crate::store::StoreError::Quarantined {
                                    path,
                                    moved_to,
                                    reason: format!("{}: {reason}", p.workload),
                                };
                                set_aside(&e);
                                emit(&Line::error(&Error::from(e)));
                            }
                            Ok(None) => emit(&Line::error(&Error::from(e))),
                            Err(q) => {
                                emit(&Line::error(&Error::from(e)));
                                emit(&Line::error(&Error::from(q)));
                            }
                        }
                    }
                }
            }
        }
        let mut flood = crate::flood::FloodGate::new(cfg.alert_flood);
        let mut triage = HashMap::new();
        // open incidents go on where they were: a repeat after a restart
        // updates its alert instead of raising a duplicate
        match runtime.block_on(store.load_alerts()) {
            Ok(listed) => {
                let mut alerts = Vec::new();
                for a in listed {
                    match a {
                        Ok(a) => alerts.push(a),
                        Err(e) => {
                            set_aside(&e);
                            emit(&Line::error(&Error::from(e)));
                        }
                    }
                }
                let restored = engine.restore_alerts(&alerts, now);
                for a in &alerts {
                    let state = a.status.as_ref().map(|s| s.state).unwrap_or_default();
                    if state != AlertState::Open {
                        triage.insert(object_key(a), state);
                    }
                }
                for a in &alerts {
                    flood.known(&a.spec);
                }
                tracing::info!(
                    stored = alerts.len(),
                    restored,
                    "open incidents taken up from the stored alerts"
                );
            }
            Err(e) => emit(&Line::error(&Error::from(e))),
        }
        Ok(Pipeline {
            engine,
            store,
            status,
            clock,
            runtime,
            webhook,
            flood,
            triage,
            pending: std::collections::BTreeMap::new(),
            write_failures: 0,
            quarantined,
            last_seen,
            evicted: std::collections::HashSet::new(),
            evictions: 0,
            max_workloads: cfg
                .max_workloads
                .unwrap_or(crate::config::DEFAULT_MAX_WORKLOADS),
            workload_idle: match cfg
                .workload_idle_secs
                .unwrap_or(crate::config::DEFAULT_WORKLOAD_IDLE_SECS)
            {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            last_tick: Instant::now(),
            last_progress: Instant::now(),
        })
    }

    /// Handles one forwarded event.
    pub fn handle(&mut self, f: &Forwarded, emit: &mut dyn FnMut(&Line)) {
        if self.store.reloads() {
            self.make_room(&f.workload.name, emit);
        }
        match self.engine.handle(f, self.clock.now()) {
            Ok(outs) => self.outputs(outs, emit),
            Err(e) => emit(&Line::error(&Error::from(e))),
        }
    }

    /// Records what the environment says about workloads (replicas,
    /// rollout); see [`Engine::set_facts`].
    pub fn set_facts(&mut self, facts: impl IntoIterator<Item = (String, WorkloadFacts)>) {
        for (w, f) in facts {
            self.engine.set_facts(&w, f);
        }
    }

    /// Pods of `workload` that no longer exist; see [`Engine::pods_gone`].
    pub fn pods_gone<'a>(&mut self, workload: &str, pods: impl IntoIterator<Item = &'a str>) {
        self.engine.pods_gone(workload, pods);
    }

    /// The source and mode of a workload's profile; see
    /// [`Engine::profile_mode`].
    pub fn profile_mode(
        &self,
        workload: &str,
    ) -> Option<(kestrel_api::ProfileSource, kestrel_profile::Mode)> {
        self.engine.profile_mode(workload)
    }

    /// Carries out an engine command (apply a profile, set a mode, relearn,
    /// forget) and persists its effect with the next flush.
    pub fn command(&mut self, command: Command, emit: &mut dyn FnMut(&Line)) -> Result<()> {
        let outs = self.engine.command(command, self.clock.now())?;
        self.outputs(outs, emit);
        Ok(())
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
                    // the output stream keeps every alert; past the
                    // workload's create-rate limit the store and the webhook
                    // get its flood alert instead
                    let line = Line::Alert(alert.clone());
                    let now_ns = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
                    let (alert, notify) = match self.flood.admit(*alert, now_ns) {
                        crate::flood::Admitted::Alert(a) => (a, notify),
                        crate::flood::Admitted::Flood { alert, notify } => (alert, notify),
                    };
                    let mut doc = AlertDocument::from_spec((*alert).clone());
                    let notify = self.apply_triage(&mut doc, notify);
                    self.save(PendingWrite::Alert(Box::new(doc)), emit);
                    if let (Some(sink), true) = (&self.webhook, notify) {
                        let (sink, a) = (Arc::clone(sink), alert.clone());
                        self.runtime.spawn(async move {
                            if let Err(e) = sink.send_alert(&a).await {
                                tracing::warn!(error = %e, alert = %a.id, "webhook delivery failed");
                            }
                        });
                    }
                    emit(&line);
                }
                Output::RelearnSuggested { workload, reason } => {
                    tracing::info!(%workload, %reason, "relearn suggested");
                    let (store, w, r) = (Arc::clone(&self.store), workload.clone(), reason.clone());
                    self.runtime
                        .spawn(async move { store.note_relearn(&w, &r).await });
                    emit(&Line::Relearn { workload, reason });
                }
                Output::Taught {
                    workload,
                    alert,
                    learned,
                    activities,
                } => {
                    tracing::info!(%workload, %alert, learned, activities, "false positive taught to the profile");
                    emit(&Line::Taught {
                        workload,
                        alert,
                        learned,
                        activities,
                    });
                }
            }
        }
    }

    /// Carries out a person's verdict on an alert (the `kestrel.dev/triage`
    /// annotation, [`Triage`]): later writes of the alert keep its state
    /// (a repeat opens a resolved alert again; a suppressed alert's
    /// repeats notify no one), and a false positive's activities are
    /// learned into the workload's profile. Returns the state and the
    /// `Triaged` condition to record on the object.
    pub fn triage(
        &mut self,
        namespace: &str,
        name: &str,
        alert: &str,
        verdict: Triage,
        emit: &mut dyn FnMut(&Line),
    ) -> (AlertState, Condition) {
        let state = verdict.state();
        let key = format!("{namespace}/{name}");
        if state == AlertState::Open {
            self.triage.remove(&key);
        } else {
            self.triage.insert(key, state);
        }
        let now = self.clock.now();
        let (status, message) = match verdict {
            Triage::FalsePositive => {
                let command = Command::FalsePositive {
                    alert: alert.to_string(),
                };
                match self.engine.command(command, now) {
                    Ok(outs) => {
                        let message = outs
                            .iter()
                            .find_map(|o| match o {
                                Output::Taught {
                                    workload,
                                    learned,
                                    activities,
                                    ..
                                } => Some(format!(
                                    "not an attack: taught to the profile of {workload} ({learned} \
                                     of {activities} activities were new to it), so it does not \
                                     alert again; resolved"
                                )),
                                _ => None,
                            })
                            .unwrap_or_else(|| "not an attack: resolved".into());
                        self.outputs(outs, emit);
                        (ConditionStatus::True, message)
                    }
                    Err(e) => {
                        tracing::warn!(%alert, error = %e, "a false positive could not be taught");
                        let message = format!("resolved, but {e}");
                        emit(&Line::error(&Error::from(e)));
                        (ConditionStatus::False, message)
                    }
                }
            }
            Triage::Acknowledged => (ConditionStatus::True, "acknowledged".into()),
            Triage::Suppressed => (
                ConditionStatus::True,
                "suppressed: repeats are counted, no one is notified".into(),
            ),
            Triage::Resolved => (
                ConditionStatus::True,
                "resolved: a repeat opens it again".into(),
            ),
            Triage::Open => (ConditionStatus::True, "open again".into()),
        };
        let at = kestrel_api::rfc3339_ns(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX));
        (
            state,
            Condition::new(Condition::TRIAGED, status, verdict.reason(), message, at),
        )
    }

    /// The triage state an alert's write carries, and whether it still
    /// notifies (see [`Pipeline::triage`]).
    fn apply_triage(&mut self, doc: &mut AlertDocument, notify: bool) -> bool {
        let key = object_key(doc);
        let state = match self.triage.get(&key).copied() {
            None => return notify,
            // a repeat of a resolved alert opens it again
            Some(AlertState::Resolved) => {
                self.triage.remove(&key);
                AlertState::Open
            }
            Some(s) => s,
        };
        if let Some(st) = doc.status.as_mut() {
            st.state = state;
        }
        notify && state != AlertState::Suppressed
    }

    /// Call often: applies the LLM answers that arrived; once a second lets
    /// time pass, persists changed profiles, publishes the status (with
    /// `extra_status` merged in) and returns the
    /// digests that changed; every `progress_every` emits a progress line.
    pub fn periodic(
        &mut self,
        progress_every: Duration,
        extra_status: impl FnOnce() -> serde_json::Value,
        emit: &mut dyn FnMut(&Line),
    ) -> Vec<WorkloadDigest> {
        let outs = self.engine.poll_llm(self.clock.now());
        self.outputs(outs, emit);
        let mut digests = Vec::new();
        if self.last_tick.elapsed() >= Duration::from_secs(1) {
            self.last_tick = Instant::now();
            let outs = self.engine.tick(self.clock.now());
            self.outputs(outs, emit);
            self.retry_pending(emit);
            self.persist(false, emit);
            self.evict_idle(emit);
            digests = self.engine.take_digests();
            self.publish_status(extra_status());
        }
        if self.last_progress.elapsed() >= progress_every {
            self.last_progress = Instant::now();
            emit(&Line::Progress(self.engine.status()));
        }
        digests
    }

    /// Every current digest (for an agent that just connected).
    pub fn all_digests(&self) -> Vec<WorkloadDigest> {
        self.engine.all_digests()
    }

    fn persist(&mut self, all: bool, emit: &mut dyn FnMut(&Line)) {
        let profiles = if all {
            self.engine.all_documents()
        } else {
            self.engine.take_dirty()
        };
        for (name, document) in profiles {
            self.save(
                PendingWrite::Profile(Box::new(StoredProfile::new(&name, document))),
                emit,
            );
        }
    }

    /// Writes a document; a write that fails is kept (the latest version per
    /// document) and retried every tick until it lands. The first failure
    /// of each document is reported; so is the write that finally lands.
    fn save(&mut self, doc: PendingWrite, emit: &mut dyn FnMut(&Line)) {
        let key = match &doc {
            PendingWrite::Profile(p) => format!("profile/{}", p.workload),
            PendingWrite::Alert(a) => format!("alert/{}", crate::store::alert_doc_name(a)),
        };
        let r = match &doc {
            PendingWrite::Profile(p) => self.runtime.block_on(self.store.save_profile(p)),
            PendingWrite::Alert(a) => self.runtime.block_on(self.store.save_alert(a)),
        };
        match r {
            Ok(()) => {
                if self.pending.remove(&key).is_some() {
                    tracing::warn!(document = %key, "a state write that had failed has landed");
                }
            }
            Err(e) => {
                self.write_failures += 1;
                if !self.pending.contains_key(&key) {
                    emit(&Line::error(&Error::from(e)));
                    tracing::warn!(document = %key, "state write failed; retrying every second");
                }
                self.pending.insert(key, doc);
            }
        }
    }

    /// Tries the failed writes again.
    fn retry_pending(&mut self, emit: &mut dyn FnMut(&Line)) {
        for key in self.pending.keys().cloned().collect::<Vec<_>>() {
            if let Some(doc) = self.pending.remove(&key) {
                // back in before the attempt, so a failure keeps it (and
                // does not report it again)
                let again = match &doc {
                    PendingWrite::Profile(p) => PendingWrite::Profile(p.clone()),
                    PendingWrite::Alert(a) => PendingWrite::Alert(a.clone()),
                };
                self.pending.insert(key, again);
                self.save(doc, emit);
            }
        }
    }

    /// Before an event of `workload`: an evicted profile comes back from
    /// the store; a workload new to memory past `maxWorkloads` first sends
    /// the one seen longest ago to disk.
    fn make_room(&mut self, workload: &str, emit: &mut dyn FnMut(&Line)) {
        let now = self.clock.now();
        if self.last_seen.insert(workload.to_string(), now).is_some() {
            return;
        }
        if self.evicted.remove(workload) {
            match self.runtime.block_on(self.store.load_profile(workload)) {
                Ok(Some(p)) => {
                    if let Err(e) = self.engine.load_profile(workload, &p.object, now) {
                        emit(&Line::error(&Error::from(e)));
                    }
                }
                Ok(None) => {}
                Err(e) => emit(&Line::error(&Error::from(e))),
            }
        }
        while self.last_seen.len() > self.max_workloads {
            let Some(oldest) = self
                .last_seen
                .iter()
                .filter(|(w, _)| w.as_str() != workload)
                .min_by_key(|(_, t)| **t)
                .map(|(w, _)| w.clone())
            else {
                break;
            };
            self.evict(&oldest, emit);
        }
    }

    /// Saves `workload`'s profile and takes it out of memory.
    fn evict(&mut self, workload: &str, emit: &mut dyn FnMut(&Line)) {
        self.last_seen.remove(workload);
        if let Some(doc) = self.engine.evict(workload) {
            self.save(
                PendingWrite::Profile(Box::new(StoredProfile::new(workload, doc))),
                emit,
            );
            self.evicted.insert(workload.to_string());
            self.evictions += 1;
            tracing::info!(%workload, "idle or over maxWorkloads: profile saved, out of memory until seen again");
        }
    }

    /// Workloads idle longer than `workloadIdleSecs` leave memory.
    fn evict_idle(&mut self, emit: &mut dyn FnMut(&Line)) {
        let (Some(idle), true) = (self.workload_idle, self.store.reloads()) else {
            return;
        };
        let now = self.clock.now();
        let idle: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) > idle)
            .map(|(w, _)| w.clone())
            .collect();
        for w in idle {
            self.evict(&w, emit);
        }
    }

    /// State writes waiting for a retry.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Persists everything and publishes the final status. Writes that
    /// still fail (after one more try) are an error, so that the process
    /// exits non-zero.
    pub fn shutdown(
        &mut self,
        extra_status: serde_json::Value,
        emit: &mut dyn FnMut(&Line),
    ) -> std::result::Result<(), UnsavedState> {
        self.retry_pending(emit);
        self.persist(true, emit);
        if let Err(e) = self.runtime.block_on(self.store.flush()) {
            emit(&Line::error(&Error::from(e)));
        }
        self.publish_status(extra_status);
        match self.pending.keys().next() {
            None => Ok(()),
            Some(first) => Err(UnsavedState {
                count: self.pending.len(),
                first: first.clone(),
            }),
        }
    }

    fn publish_status(&mut self, extra: serde_json::Value) {
        let mut v = serde_json::json!({
            "workloads": self.engine.status(),
            "alerts": self.engine.scorer_stats(),
            "store": {
                "workloadsInMemory": self.last_seen.len(),
                "workloadsEvicted": self.evicted.len(),
                "evictions": self.evictions,
                "pendingWrites": self.pending.len(),
                "writeFailures": self.write_failures,
                "quarantined": self.quarantined,
            },
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        self.status.publish(&v);
    }
}

/// `namespace/name` of an alert object.
fn object_key(doc: &AlertDocument) -> String {
    format!(
        "{}/{}",
        doc.metadata.namespace.as_deref().unwrap_or_default(),
        doc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A per-process random seed for the digests (it keys the edge filter's
/// hashes), from the operating system's random source. Without one the
/// operator does not start: a guessable key would let an attacker aim
/// activity at a known hash.
fn digest_seed() -> Result<u64> {
    use std::io::Read as _;
    let mut buf = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| {
            Error::Config(format!(
                "no random seed for the edge filter's hash (/dev/urandom: {e})"
            ))
        })?;
    Ok(u64::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{DirStore, StatusFile};

    fn parts(dir: &std::path::Path) -> Parts {
        Parts {
            store: Arc::new(DirStore::open(dir).unwrap()),
            status: Box::new(StatusFile::in_dir(dir)),
            clock: Box::new(SystemClock),
            embedder: Arc::new(kestrel_profile::testing::TestEmbedder::new()),
            namespace: "shop".into(),
        }
    }

    fn pipeline(dir: &std::path::Path) -> Pipeline {
        let parts = parts(dir);
        Pipeline::build(&OperatorConfig::default(), parts, &mut |_| {}).unwrap()
    }

    fn alert() -> AlertDocument {
        AlertDocument::from_spec(crate::engine::tests::miner_alert())
    }

    /// What later writes of a triaged alert carry: acknowledged and
    /// suppressed stay (a suppressed alert's repeats notify no one); a
    /// resolved alert's repeat opens it again, once.
    #[test]
    fn later_writes_keep_a_persons_triage_and_a_repeat_reopens_a_resolved_alert() {
        let dir = std::env::temp_dir().join(format!("kestrel-triage-{}", std::process::id()));
        let mut p = pipeline(&dir);
        let doc = alert();
        let ns = doc.metadata.namespace.clone().unwrap();
        let name = doc.metadata.name.clone().unwrap();
        let state_after = |p: &mut Pipeline, notify: bool| {
            let mut d = alert();
            let notify = p.apply_triage(&mut d, notify);
            (d.status.unwrap().state, notify)
        };
        // untriaged: as raised
        assert_eq!(state_after(&mut p, true), (AlertState::Open, true));

        let (state, c) = p.triage(&ns, &name, &doc.spec.id, Triage::Suppressed, &mut |_| {});
        assert_eq!(state, AlertState::Suppressed);
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str(), c.status),
            ("Triaged", "Suppressed", ConditionStatus::True)
        );
        assert_eq!(state_after(&mut p, true), (AlertState::Suppressed, false));
        assert_eq!(state_after(&mut p, true), (AlertState::Suppressed, false));

        p.triage(&ns, &name, &doc.spec.id, Triage::Acknowledged, &mut |_| {});
        assert_eq!(state_after(&mut p, true), (AlertState::Acknowledged, true));

        p.triage(&ns, &name, &doc.spec.id, Triage::Resolved, &mut |_| {});
        assert_eq!(state_after(&mut p, false), (AlertState::Open, false));
        assert_eq!(state_after(&mut p, true), (AlertState::Open, true));

        // a false positive the engine holds nothing for: resolved, and the
        // condition says why nothing was taught
        let mut lines = Vec::new();
        let (state, c) = p.triage(&ns, &name, "gone", Triage::FalsePositive, &mut |l| {
            lines.push(format!("{l:?}"))
        });
        assert_eq!(state, AlertState::Resolved);
        assert_eq!(c.status, ConditionStatus::False);
        assert!(
            c.message
                .starts_with("resolved, but alert gone: nothing taught: "),
            "{}",
            c.message
        );
        assert!(lines.iter().any(|l| l.contains("not_taught")), "{lines:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn build_collecting(dir: &std::path::Path, lines: &mut Vec<String>) -> Pipeline {
        let parts = parts(dir);
        Pipeline::build(&OperatorConfig::default(), parts, &mut |l| {
            lines.push(serde_json::to_string(&l).unwrap_or_default())
        })
        .unwrap()
    }

    fn seen(p: &mut Pipeline, workload: &str) {
        let mut f = crate::engine::tests::exec("date", "-u");
        f.workload.name = workload.into();
        p.handle(&f, &mut |_| {});
    }

    fn status(dir: &std::path::Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap()
    }

    /// A profile file that does not parse and one the engine refuses (a
    /// bound exceeded) are both set aside under a new name, reported, and
    /// listed in the status; the third workload loads; the fresh profile a
    /// set-aside workload gets never overwrites what was set aside.
    #[test]
    fn unusable_profiles_are_set_aside_reported_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let mut p = pipeline(dir);
            for w in ["web", "db", "cache"] {
                seen(&mut p, w);
            }
            p.shutdown(serde_json::json!({}), &mut |_| {}).unwrap();
        }
        let file = |w: &str| dir.join("profiles").join(format!("{w}.yaml"));
        let broken = "apiVersion: kestrel.dev/v1alpha1\nkind: BehaviorProfile\nspec: [unclosed";
        std::fs::write(file("web"), broken).unwrap();
        let db = std::fs::read_to_string(file("db")).unwrap();
        let (before, after) = db
            .split_once("bucketsPerWindow: ")
            .expect("the stored profile spells its learning settings");
        let rest = after.split_once('\n').map_or("", |(_, r)| r);
        let oversized = format!("{before}bucketsPerWindow: 4000000000\n{rest}");
        std::fs::write(file("db"), &oversized).unwrap();

        let mut lines = Vec::new();
        let mut p = build_collecting(dir, &mut lines);
        let errors: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("store_quarantined"))
            .collect();
        assert_eq!(errors.len(), 2, "{lines:?}");
        assert!(
            errors.iter().any(|l| l.contains("profiles/web.yaml")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|l| l.contains("bucketsPerWindow")),
            "{errors:?}"
        );
        p.publish_status(serde_json::json!({}));
        let q = status(dir)["store"]["quarantined"].clone();
        assert_eq!(q.as_array().map(Vec::len), Some(2), "{q}");
        let aside: Vec<std::path::PathBuf> = q
            .as_array()
            .unwrap()
            .iter()
            .map(|e| std::path::PathBuf::from(e["movedTo"].as_str().unwrap()))
            .collect();
        let contents: Vec<String> = aside
            .iter()
            .map(|a| std::fs::read_to_string(a).unwrap())
            .collect();
        assert!(contents.contains(&broken.to_string()));
        assert!(contents.contains(&oversized));
        // cache loaded; web and db start afresh and are written anew
        let workloads = serde_json::to_value(p.engine.status()).unwrap().to_string();
        assert!(workloads.contains("\"cache\""), "{workloads}");
        seen(&mut p, "web");
        seen(&mut p, "db");
        p.shutdown(serde_json::json!({}), &mut |_| {}).unwrap();
        for w in ["web", "db", "cache"] {
            let text = std::fs::read_to_string(file(w)).unwrap();
            kestrel_api::profile_from_yaml(&text).unwrap();
        }
        for (a, c) in aside.iter().zip(&contents) {
            assert_eq!(&std::fs::read_to_string(a).unwrap(), c, "{}", a.display());
        }
    }

    /// A full disk (a real 256 KiB tmpfs, root only): the alert is printed
    /// but its write fails; it is kept, shown in the status, and written
    /// once space is freed, with no temporary file left behind. A write
    /// still failing at shutdown makes shutdown an error.
    #[test]
    fn an_alert_written_on_a_full_disk_lands_once_space_is_freed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to mount a tmpfs");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success());
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(dir.clone());
        let mut p = pipeline(&dir);
        let filler = dir.join("filler");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&filler).unwrap();
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
        let mut lines = Vec::new();
        let doc = alert();
        let name = crate::store::alert_doc_name(&doc);
        p.save(PendingWrite::Alert(Box::new(doc.clone())), &mut |l| {
            lines.push(serde_json::to_string(&l).unwrap_or_default())
        });
        assert_eq!(p.pending_writes(), 1);
        assert!(lines.iter().any(|l| l.contains("store_io")), "{lines:?}");
        p.retry_pending(&mut |l| lines.push(serde_json::to_string(&l).unwrap_or_default()));
        assert_eq!(p.pending_writes(), 1);
        // reported once, not once per retry
        assert_eq!(lines.iter().filter(|l| l.contains("store_io")).count(), 1);
        p.publish_status(serde_json::json!({}));
        // status.json itself may not fit either; the write counters are
        // checked through the gauge's source
        assert!(p.write_failures >= 2);

        std::fs::remove_file(&filler).unwrap();
        p.retry_pending(&mut |_| {});
        assert_eq!(p.pending_writes(), 0);
        let alerts = dir.join("alerts");
        let text = std::fs::read_to_string(
            alerts.join(format!("{}.yaml", crate::store::file_stem(&name))),
        )
        .unwrap();
        assert_eq!(
            kestrel_api::alert_from_yaml(&text).unwrap().spec.id,
            doc.spec.id
        );
        for e in std::fs::read_dir(&alerts).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(n.ends_with(".yaml"), "{n} left behind");
        }
        p.publish_status(serde_json::json!({}));
        assert_eq!(status(&dir)["store"]["pendingWrites"], 0);

        // still full at shutdown: an error naming what was not saved
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&filler).unwrap();
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
        let mut other = alert();
        other.spec.id = "second".into();
        other.metadata.name = Some("webapp-second".into());
        p.save(PendingWrite::Alert(Box::new(other)), &mut |_| {});
        let err = p.shutdown(serde_json::json!({}), &mut |_| {}).unwrap_err();
        assert_eq!(err.count, 1);
        assert!(err.to_string().contains("alert/webapp-second"), "{err}");
    }

    /// Past `maxWorkloads`, the workload seen longest ago is saved and
    /// leaves memory; seen again, it comes back from disk with what it had
    /// learned. A workload idle past `workloadIdleSecs` leaves too.
    #[test]
    fn workloads_past_the_limit_or_idle_leave_memory_and_come_back_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cfg = OperatorConfig {
            max_workloads: Some(2),
            workload_idle_secs: Some(1),
            ..OperatorConfig::default()
        };
        let parts = parts(dir);
        let mut p = Pipeline::build(&cfg, parts, &mut |_| {}).unwrap();
        let branches = |p: &Pipeline, w: &str| {
            p.engine
                .status()
                .into_iter()
                .find(|s| s.workload == w)
                .map(|s| s.branches)
        };
        let mut f = crate::engine::tests::exec("date", "-u");
        f.workload.name = "w1".into();
        p.handle(&f, &mut |_| {});
        let mut g = crate::engine::tests::exec("ls", "-l /srv");
        g.workload.name = "w1".into();
        p.handle(&g, &mut |_| {});
        let learned = branches(&p, "w1").unwrap();
        seen(&mut p, "w2");
        std::thread::sleep(Duration::from_millis(5));
        seen(&mut p, "w3");
        assert!(
            !p.engine.knows("w1"),
            "the workload seen longest ago left memory"
        );
        assert!(p.engine.knows("w2") && p.engine.knows("w3"));
        assert!(dir.join("profiles/w1.yaml").is_file());
        // w1 again: back from disk, with what it had learned; w2 leaves
        p.handle(&f, &mut |_| {});
        assert_eq!(branches(&p, "w1"), Some(learned));
        assert!(!p.engine.knows("w2"));
        p.publish_status(serde_json::json!({}));
        let st = status(dir);
        assert_eq!(st["store"]["workloadsInMemory"], 2);
        assert_eq!(st["store"]["evictions"], 2);
        // idle for more than a second: everything leaves memory
        std::thread::sleep(Duration::from_millis(1_100));
        p.evict_idle(&mut |_| {});
        assert!(!p.engine.knows("w1") && !p.engine.knows("w3"));
        p.handle(&f, &mut |_| {});
        assert_eq!(branches(&p, "w1"), Some(learned));
    }
}
