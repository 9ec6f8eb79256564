//! The operator core: one profile per workload, learning until it converges,
//! then detecting; anomalies become scored, grouped alerts.
//!
//! The engine is a functional core: it takes forwarded events and the time,
//! and returns what happened ([`Output`]); storage, printing and transport
//! are the caller's.

use kestrel_api::{BehaviorProfile, ProfileSource};
use kestrel_embed::{ArgShape, Embedder};
use kestrel_events::EventKind;
use kestrel_events::Forwarded;
use kestrel_events::{Activity, Peer};
use kestrel_profile::{
    ActivityClass, AnomalyBuckets, Digest, MatchOutcome, Metadata, Mode, Phase, Profile,
    ProfileConfig, Transition, TransitionReason,
};
use kestrel_scoring::{
    Arguments, CandidateAlert, LlmAnswer, LlmOutcome, LlmQueue, LlmSlot, Outcome, PeerAddress,
    ProcessAncestor, Scorer, SecurityAlert, Signal,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A profile operation failed (a stored profile that does not load, an
    /// embedding failure).
    #[error("profile {workload}: {source}")]
    Profile {
        /// The workload.
        workload: String,
        /// The cause.
        #[source]
        source: kestrel_profile::Error,
    },
    /// A command named a workload the engine has no profile for.
    #[error("no profile for workload {0:?}")]
    UnknownWorkload(String),
    /// A false-positive verdict the engine cannot turn into learning.
    #[error("alert {alert}: nothing taught: {reason}")]
    NotTaught {
        /// The alert id.
        alert: String,
        /// Why, in words.
        reason: String,
    },
}

impl EngineError {
    /// A short stable label for metrics and output lines.
    pub fn label(&self) -> &'static str {
        match self {
            EngineError::Profile {
                source: kestrel_profile::Error::Embedding(_),
                ..
            } => "embedding",
            EngineError::Profile { .. } => "profile",
            EngineError::UnknownWorkload(_) => "unknown_workload",
            EngineError::NotTaught { .. } => "not_taught",
        }
    }
}

/// What a controller, a person or Git asks of the engine (the inbound API).
///
/// Ownership: a profile's `spec` (mode, and for promoted profiles the
/// baseline) belongs to people and Git; the learned content and the status
/// belong to the engine. These commands are how spec changes reach the
/// engine; the engine never writes a spec back.
#[derive(Debug, Clone)]
pub enum Command {
    /// Replaces a workload's profile with this document (GitOps: a promoted
    /// or edited profile applied as it is). Its content and settings replace
    /// what the engine held; its `status` is ignored, since the status is
    /// the engine's: the phase follows the document's mode.
    Apply {
        /// The workload.
        workload: String,
        /// The whole document.
        document: Box<BehaviorProfile>,
    },
    /// Sets the mode (`Detect` freezes a learned profile: the lock without
    /// Git; `Learn` holds it in learning; `Auto` lets convergence decide).
    SetMode {
        /// The workload.
        workload: String,
        /// The mode.
        mode: Mode,
    },
    /// Starts learning again from now, keeping what was learned, until the
    /// profile converges anew (after a rollout that changed behaviour on
    /// purpose).
    Relearn {
        /// The workload.
        workload: String,
    },
    /// Drops a workload's profile from memory (its stored copy stays).
    Forget {
        /// The workload.
        workload: String,
    },
    /// A person's verdict that an alert was no attack: what made it (the
    /// activities the engine holds for it) is learned into the workload's
    /// profile, whatever its phase, so it stops alerting. Refused for a
    /// promoted profile (Git is its source: add the behaviour there) and
    /// for an alert whose activities the engine no longer holds (raised
    /// before a restart, or more than [`TAUGHT_ALERTS`] alerts ago).
    FalsePositive {
        /// The alert id (`spec.id`).
        alert: String,
    },
}

/// Alerts whose activities the engine keeps for a false-positive verdict.
pub const TAUGHT_ALERTS: usize = 4096;
/// Activities kept per alert (the first of an incident's distinct ones).
pub const TAUGHT_ACTIVITIES: usize = 32;

/// What made one alert.
#[derive(Debug, Clone)]
struct AlertActivities {
    workload: String,
    image: String,
    activities: Vec<Activity>,
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Settings for profiles the engine creates.
    pub profile: ProfileConfig,
    /// Node name for alerts.
    pub node: String,
    /// Namespace for alerts and profiles.
    pub namespace: String,
    /// Seed of the digests pushed to the edge.
    pub digest_seed: u64,
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Output {
    /// A workload's profile changed phase.
    Phase {
        /// The workload.
        workload: String,
        /// The change, with its reason.
        transition: Transition,
    },
    /// An alert was created or updated.
    Alert {
        /// The alert.
        alert: Box<SecurityAlert>,
        /// Whether sinks should notify: a new alert or a severity change
        /// (repeats, and LLM answers that keep the severity, only update
        /// the stored alert).
        notify: bool,
    },
    /// A workload looks like it was released anew: relearning its profile
    /// is suggested (once per rollout).
    RelearnSuggested {
        /// The workload.
        workload: String,
        /// Why, in words.
        reason: String,
    },
    /// A false-positive verdict was learned into a profile.
    Taught {
        /// The workload.
        workload: String,
        /// The alert id.
        alert: String,
        /// Activities that were new to the profile.
        learned: usize,
        /// Activities replayed in all.
        activities: usize,
    },
}

/// A workload's digest for the agents' edge filters, with its phase.
#[derive(Debug, Clone)]
pub struct WorkloadDigest {
    /// The workload.
    pub workload: String,
    /// Its profile's phase.
    pub phase: Phase,
    /// What its profile knows.
    pub digest: Digest,
}

/// One workload's state.
#[derive(Debug)]
struct WorkloadState {
    profile: Profile,
    /// While a promoted profile is in force: the learned shadow.
    shadow: Option<Shadow>,
    /// The profile's similarity buckets of this workload's anomalies
    /// (runtime state, bounded; see `kestrel_profile::AnomalyBuckets`).
    buckets: AnomalyBuckets,
    image: String,
    /// The `Partial` condition (reason `StartedBeforeAgent`) once a process
    /// found by the agent's start-up `/proc` scan reached the profile while
    /// it learned: learning never saw that process start. Stored with the
    /// profile and taken back from it on load; cleared by relearning and by
    /// an applied document.
    partial: Option<kestrel_api::Condition>,
    dirty: bool,
    digest_dirty: bool,
}

/// A row of `kestrel status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadStatus {
    /// Workload name.
    pub workload: String,
    /// Phase.
    pub phase: String,
    /// Known paths.
    pub branches: usize,
    /// Argument exemplars.
    pub exemplars: usize,
    /// New branches and exemplars in the current window.
    pub window_new: u64,
}

/// The LLM engine and the runtime its calls run on.
pub struct LlmSeam {
    /// The engine (client, cache, budget).
    pub engine: kestrel_scoring::LlmEngine,
    /// Where its calls run, behind a bounded queue (`scoring.llmQueue`);
    /// the engine thread never waits for them.
    pub runtime: tokio::runtime::Handle,
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    embedder: Arc<dyn Embedder>,
    scorer: Scorer,
    llm: Option<LlmQueue>,
    workloads: BTreeMap<String, WorkloadState>,
    /// What the environment says about each workload (replicas, rollout).
    facts: HashMap<String, WorkloadFacts>,
    /// Rollouts the engine saw itself: when a workload's containers
    /// started with an entry point its profile never ran (ns since the
    /// epoch, the first of the rollout).
    entry_changes: HashMap<String, u64>,
    /// When each workload's last relearn suggestion went out (one per
    /// rollout grace period).
    relearn_noted: HashMap<String, u64>,
    /// What made each recent alert, for a false-positive verdict (at most
    /// [`TAUGHT_ALERTS`], oldest dropped first).
    alert_activities: HashMap<String, AlertActivities>,
    alert_order: std::collections::VecDeque<String>,
}

/// What the environment knows about a workload: standalone counts its live
/// containers; in Kubernetes the owner's replica count and rollout time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadFacts {
    /// Replicas running now.
    pub replicas: Option<u32>,
    /// When the workload last rolled out (its pod template changed), ns
    /// since the Unix epoch.
    pub rollout_ns: Option<u64>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// An engine with no profiles.
    pub fn new(cfg: EngineConfig, embedder: Arc<dyn Embedder>, scorer: Scorer) -> Self {
        Engine {
            cfg,
            embedder,
            scorer,
            llm: None,
            workloads: BTreeMap::new(),
            facts: HashMap::new(),
            entry_changes: HashMap::new(),
            relearn_noted: HashMap::new(),
            alert_activities: HashMap::new(),
            alert_order: std::collections::VecDeque::new(),
        }
    }

    /// Records what the environment says about `workload`: its candidates
    /// carry the replica count and rollout time from now on, so the
    /// cluster engine can compare replicas.
    pub fn set_facts(&mut self, workload: &str, facts: WorkloadFacts) {
        if facts == WorkloadFacts::default() {
            self.facts.remove(workload);
        } else {
            self.facts.insert(workload.to_string(), facts);
        }
    }

    /// Pods (containers) of `workload` that no longer exist: the cluster
    /// statistics count live replicas only (standalone calls this when a
    /// container's cgroup goes; in Kubernetes, a deleted pod).
    pub fn pods_gone<'a>(&mut self, workload: &str, pods: impl IntoIterator<Item = &'a str>) {
        let (namespace, workload) = self.split_key(workload);
        let (namespace, workload) = (namespace.to_string(), workload.to_string());
        for pod in pods {
            self.scorer.forget_pod(&namespace, &workload, pod);
        }
    }

    /// A workload key's namespace and its name within it: a cluster key
    /// (`shop/Deployment/webapp`) carries its own, a standalone key gets
    /// the configured one.
    fn split_key<'a>(&'a self, key: &'a str) -> (&'a str, &'a str) {
        match kestrel_api::split_cluster_key(key) {
            (Some(ns), local) => (ns, local),
            (None, local) => (self.cfg.namespace.as_str(), local),
        }
    }

    /// Adds the LLM's judgement to scoring (without it, its weight goes to
    /// the other engines and alerts say `LLM: unavailable`). Alerts are
    /// raised at once with the LLM part pending; [`Engine::poll_llm`]
    /// applies the answers.
    pub fn with_llm(mut self, llm: LlmSeam) -> Self {
        let queue = LlmQueue::start(llm.engine, &self.scorer.config().llm_queue, &llm.runtime);
        self.llm = Some(queue);
        self
    }

    /// Loads a stored profile (a restart resumes where it stopped), for
    /// `workload` (the store says which workload an object is for).
    pub fn load_profile(
        &mut self,
        workload: &str,
        document: &BehaviorProfile,
        now: Duration,
    ) -> Result<(), EngineError> {
        let profile =
            Profile::from_object(document, self.embedder.as_ref(), now).map_err(|source| {
                EngineError::Profile {
                    workload: workload.into(),
                    source,
                }
            })?;
        let image = self
            .workloads
            .get(workload)
            .map(|st| st.image.clone())
            .unwrap_or_default();
        let shadow = match document.spec.source {
            ProfileSource::Promoted => Some(self.shadow_of(workload, document, now)?),
            ProfileSource::Learned => None,
        };
        let partial = document.status.as_ref().and_then(|s| {
            kestrel_api::find_condition(&s.conditions, kestrel_api::Condition::PARTIAL)
                .filter(|c| c.reason == STARTED_BEFORE_AGENT)
                .cloned()
        });
        self.workloads.insert(
            workload.to_string(),
            WorkloadState {
                profile,
                shadow,
                buckets: AnomalyBuckets::new(),
                image,
                partial,
                dirty: false,
                digest_dirty: true,
            },
        );
        Ok(())
    }

    /// The learned shadow of a promoted profile: what its `status.learned`
    /// holds (a restart goes on from there), else empty; it learns and
    /// never detects.
    fn shadow_of(
        &self,
        workload: &str,
        document: &BehaviorProfile,
        now: Duration,
    ) -> Result<Shadow, EngineError> {
        let mut learned = document.clone();
        learned.spec.source = ProfileSource::Learned;
        learned.spec.mode = kestrel_api::ProfileMode::Learn;
        learned.spec.baseline = None;
        if let Some(status) = learned.status.as_mut() {
            status.convergence = None;
            status.phase = None;
        }
        let profile =
            Profile::from_object(&learned, self.embedder.as_ref(), now).map_err(|source| {
                EngineError::Profile {
                    workload: workload.into(),
                    source,
                }
            })?;
        Ok(Shadow {
            profile,
            since_ns: nanos(now),
            outside: 0,
            samples: BTreeSet::new(),
        })
    }

    /// Carries out a command (see [`Command`] for who owns what).
    pub fn command(&mut self, command: Command, now: Duration) -> Result<Vec<Output>, EngineError> {
        let (workload, transitions) = match command {
            Command::Apply {
                workload,
                mut document,
            } => {
                let before = self.workloads.get(&workload).map(|st| st.profile.phase());
                // the status is the engine's: the phase follows the applied
                // mode (Detect: detecting at once; Auto, Learn: learning on
                // top of the applied content)
                // (a learned object's behaviour is in `status.learned`:
                // that part is kept, the convergence state is not)
                if let Some(status) = document.status.as_mut() {
                    status.convergence = None;
                    status.phase = None;
                    status.conditions.clear();
                    status.observed_generation = None;
                }
                self.load_profile(&workload, &document, now)?;
                let st = self.known(&workload)?;
                st.dirty = true;
                let to = st.profile.phase();
                let t = match before {
                    Some(from) if from != to => vec![Transition {
                        from,
                        to,
                        at: now,
                        reason: TransitionReason::Applied,
                        message: format!("a profile document was applied: {from:?} -> {to:?}"),
                    }],
                    _ => Vec::new(),
                };
                (workload, t)
            }
            Command::SetMode { workload, mode } => {
                let st = self.known(&workload)?;
                (workload, st.profile.set_mode(mode, now))
            }
            Command::Relearn { workload } => {
                let st = self.known(&workload)?;
                st.partial = None;
                (workload, st.profile.relearn(now))
            }
            Command::Forget { workload } => {
                return match self.workloads.remove(&workload) {
                    Some(_) => Ok(Vec::new()),
                    None => Err(EngineError::UnknownWorkload(workload)),
                };
            }
            Command::FalsePositive { alert } => return self.teach(alert),
        };
        let st = self.known(&workload)?;
        st.dirty = true;
        st.digest_dirty = true;
        Ok(transitions
            .into_iter()
            .map(|transition| Output::Phase {
                workload: workload.clone(),
                transition,
            })
            .collect())
    }

    /// Learns what made `alert` into its workload's profile (see
    /// [`Command::FalsePositive`]).
    fn teach(&mut self, alert: String) -> Result<Vec<Output>, EngineError> {
        let not_taught = |reason: &str| EngineError::NotTaught {
            alert: alert.clone(),
            reason: reason.to_string(),
        };
        let Some(held) = self.alert_activities.get(&alert).cloned() else {
            return Err(not_taught(
                "the operator does not hold what made it (raised before its last restart, \
                 or too long ago); its next occurrence will alert again and can be triaged then",
            ));
        };
        let embedder = Arc::clone(&self.embedder);
        let st = self.known(&held.workload)?;
        if st.profile.source() == kestrel_api::ProfileSource::Promoted {
            return Err(not_taught(
                "the workload's profile is promoted: Git is its source, add the behaviour to its \
                 spec.baseline there",
            ));
        }
        let mut learned = 0;
        for a in &held.activities {
            let l = st
                .profile
                .learn(
                    &kestrel_profile::profile_event(a, held.image.as_bytes()),
                    embedder.as_ref(),
                )
                .map_err(|source| EngineError::Profile {
                    workload: held.workload.clone(),
                    source,
                })?;
            if l.change.is_growth() {
                learned += 1;
            }
        }
        st.dirty = true;
        st.digest_dirty = true;
        self.alert_activities.remove(&alert);
        Ok(vec![Output::Taught {
            workload: held.workload,
            alert,
            learned,
            activities: held.activities.len(),
        }])
    }

    /// Notes what made an alert (see [`Command::FalsePositive`]).
    fn note_alert_activity(&mut self, alert: &str, f: &Forwarded) {
        if !self.alert_activities.contains_key(alert) {
            if self.alert_order.len() >= TAUGHT_ALERTS {
                if let Some(old) = self.alert_order.pop_front() {
                    self.alert_activities.remove(&old);
                }
            }
            self.alert_order.push_back(alert.to_string());
            self.alert_activities.insert(
                alert.to_string(),
                AlertActivities {
                    workload: f.workload.name.clone(),
                    image: f.workload.image.clone(),
                    activities: Vec::new(),
                },
            );
        }
        if let Some(held) = self.alert_activities.get_mut(alert) {
            if held.activities.len() < TAUGHT_ACTIVITIES && !held.activities.contains(&f.activity) {
                held.activities.push(f.activity.clone());
            }
        }
    }

    fn known(&mut self, workload: &str) -> Result<&mut WorkloadState, EngineError> {
        self.workloads
            .get_mut(workload)
            .ok_or_else(|| EngineError::UnknownWorkload(workload.to_string()))
    }

    fn state(
        &mut self,
        workload: &str,
        image: &str,
        now: Duration,
    ) -> Result<&mut WorkloadState, EngineError> {
        if !self.workloads.contains_key(workload) {
            let profile = Profile::new(self.cfg.profile.clone(), self.embedder.model_id(), now)
                .map_err(|source| EngineError::Profile {
                    workload: workload.into(),
                    source,
                })?;
            self.workloads.insert(
                workload.to_string(),
                WorkloadState {
                    profile,
                    shadow: None,
                    buckets: AnomalyBuckets::new(),
                    image: image.into(),
                    partial: None,
                    dirty: true,
                    digest_dirty: true,
                },
            );
        }
        let st = self
            .workloads
            .get_mut(workload)
            .ok_or_else(|| EngineError::Profile {
                workload: workload.into(),
                source: kestrel_profile::Error::Embedding("workload vanished".into()),
            })?;
        if st.image.is_empty() {
            st.image = image.into();
        }
        Ok(st)
    }

    /// Handles one forwarded event at wall-clock time `now` (since the epoch).
    pub fn handle(&mut self, f: &Forwarded, now: Duration) -> Result<Vec<Output>, EngineError> {
        let embedder = Arc::clone(&self.embedder);
        let workload = f.workload.name.clone();
        let st = self.state(&workload, &f.workload.image, now)?;
        let image = f.workload.image.as_bytes();
        let obs = st
            .profile
            .observe(
                &kestrel_profile::profile_event(&f.activity, image),
                now,
                embedder.as_ref(),
            )
            .map_err(|source| EngineError::Profile {
                workload: workload.clone(),
                source,
            })?;
        let detecting = st.profile.phase() == Phase::Detecting;
        if st.partial.is_none() && st.profile.phase() == Phase::Learning {
            if let Some(c) = started_before_agent(f, now) {
                st.partial = Some(c);
                st.dirty = true;
            }
        }
        if obs.change.is_growth() {
            st.dirty = true;
            st.digest_dirty = true;
        }
        if let Some(sh) = st.shadow.as_mut() {
            let learned = sh
                .profile
                .learn(
                    &kestrel_profile::profile_event(&f.activity, image),
                    embedder.as_ref(),
                )
                .map_err(|source| EngineError::Profile {
                    workload: workload.clone(),
                    source,
                })?;
            if learned.change.is_growth() {
                st.dirty = true;
            }
            if detecting && !obs.outcome.is_known() {
                sh.outside += 1;
                if sh.samples.len() < DRIFT_SAMPLES {
                    sh.samples.insert(describe(&f.activity));
                }
                st.dirty = true;
            }
        }
        let mut out: Vec<Output> = obs
            .transitions
            .into_iter()
            .map(|t| Output::Phase {
                workload: workload.clone(),
                transition: t,
            })
            .collect();
        if !out.is_empty() {
            st.dirty = true;
            st.digest_dirty = true;
        }
        if detecting && !obs.outcome.is_known() {
            out.extend(self.note_entry_change(f, now));
            let mut candidate = self.candidate(f, &obs.outcome, now);
            self.give_shape(&workload, &mut candidate, embedder.as_ref(), now);
            let outcomes = self.score(&candidate, now);
            for o in outcomes.into_iter().filter_map(alert_output) {
                if let Output::Alert { alert, .. } = &o {
                    self.note_alert_activity(&alert.id, f);
                }
                out.push(o);
            }
            // suggestions are drained after every candidate, so any is this
            // workload's (the scorer knows it by its name in its namespace)
            for (_, reason) in self.scorer.take_relearn_suggestions() {
                out.extend(self.suggest_relearn(&workload, reason, now));
            }
        }
        out.extend(self.poll_llm(now));
        Ok(out)
    }

    /// Sets the candidate's shape from its workload's profile: similar
    /// arguments (by the profile's model and threshold) share a bucket, so
    /// cluster statistics, incident grouping and the LLM cache see "the same
    /// anomaly" across pods and repeats. When the embedder fails the derived
    /// exact shape stays, and the failure is logged.
    fn give_shape(
        &mut self,
        workload: &str,
        c: &mut CandidateAlert,
        embedder: &dyn Embedder,
        now: Duration,
    ) {
        let args = c.args.normalized();
        if args.is_empty() {
            return;
        }
        let Some(st) = self.workloads.get_mut(workload) else {
            return;
        };
        let key = c.shape_trie_path();
        match st
            .profile
            .anomaly_bucket(&mut st.buckets, &key, args, embedder, now)
        {
            Ok(bucket) => c.shape = Some(c.shape_with_args_bucket(bucket)),
            Err(e) => tracing::warn!(
                workload = %c.workload,
                error = %e,
                "no similarity shape for an anomaly; its exact arguments group it"
            ),
        }
    }

    /// Scores a candidate without waiting for the LLM: its judgement, when
    /// the incident needs one, is queued (or, with the queue full, the LLM
    /// part says so) and applied later by [`Engine::poll_llm`].
    fn score(&mut self, c: &CandidateAlert, now: Duration) -> Vec<Outcome> {
        let now_ns = nanos(now);
        let Some(queue) = &self.llm else {
            return vec![self.scorer.assess(c, LlmOutcome::not_configured(), now_ns)];
        };
        let slot = if queue.has_room() {
            LlmSlot::Free
        } else {
            LlmSlot::QueueFull
        };
        let deferred = self.scorer.assess_deferred(c, slot, now_ns);
        let mut out = vec![deferred.outcome];
        if let Some(request) = deferred.request {
            // This thread is the only one submitting and it saw room, so a
            // refusal means the queue is closed (its runtime is gone).
            if let Err(request) = queue.try_submit(request) {
                let closed = LlmAnswer {
                    ticket: request.ticket(),
                    outcome: LlmOutcome::Unavailable {
                        reason: "LLM queue closed".into(),
                    },
                };
                out.extend(self.scorer.apply_llm(closed));
            }
        }
        out
    }

    /// Applies, without waiting, the LLM answers that arrived and the
    /// deadlines passed at `now` (`LLM: timed out`): each re-scores its
    /// incident and updates (or, crossing the threshold, creates) its
    /// alert, keeping the id. [`Engine::handle`] calls it after each event;
    /// call it periodically too.
    pub fn poll_llm(&mut self, now: Duration) -> Vec<Output> {
        let Some(queue) = &mut self.llm else {
            return Vec::new();
        };
        let answers = queue.try_answers();
        let mut outcomes: Vec<Outcome> = answers
            .into_iter()
            .filter_map(|a| self.scorer.apply_llm(a))
            .collect();
        outcomes.extend(self.scorer.time_out_llm(nanos(now)));
        outcomes.into_iter().filter_map(alert_output).collect()
    }

    /// A container of a detecting workload whose entry point (pid 1 of its
    /// pid namespace) is new to the profile was started from a new spec:
    /// nothing inside a container can change the command its runtime
    /// starts, so this is a release (a new image or command line), the
    /// rollout signal standalone mode has (in Kubernetes the owner's
    /// rollout time comes through [`Engine::set_facts`] as well). Anomalies
    /// within the cluster engine's `rolloutGraceSecs` of the first such
    /// start count as the release, and relearning is suggested once.
    fn note_entry_change(&mut self, f: &Forwarded, now: Duration) -> Option<Output> {
        let EventKind::Exec(x) = &f.event.kind else {
            return None;
        };
        if x.ns_pid != 1 {
            return None;
        }
        let now_ns = nanos(now);
        let grace = self.rollout_grace_ns();
        let workload = &f.workload.name;
        if let Some(&since) = self.entry_changes.get(workload) {
            if now_ns.saturating_sub(since) <= grace {
                return None;
            }
        }
        self.entry_changes.insert(workload.clone(), now_ns);
        let command = x
            .argv
            .args
            .iter()
            .map(|a| a.to_escaped())
            .collect::<Vec<_>>()
            .join(" ");
        let container = f.event.container.as_ref().map(|c| c.id.as_str());
        let workload = workload.clone();
        self.suggest_relearn(
            &workload,
            format!(
                "container {} of {workload} started with an entry point its profile never ran ({}): a new release; its new behaviour for the next {}s counts as the release, not an attack; relearn the profile once the rollout is done",
                container.unwrap_or("?"),
                truncate_chars(&command, 200),
                grace / 1_000_000_000
            ),
            now,
        )
    }

    fn rollout_grace_ns(&self) -> u64 {
        self.scorer
            .config()
            .cluster
            .rollout_grace_secs
            .saturating_mul(1_000_000_000)
    }

    /// A relearn suggestion for `workload`, unless one went out within the
    /// rollout grace period.
    fn suggest_relearn(&mut self, workload: &str, reason: String, now: Duration) -> Option<Output> {
        let now_ns = nanos(now);
        if let Some(&at) = self.relearn_noted.get(workload) {
            if now_ns.saturating_sub(at) <= self.rollout_grace_ns() {
                return None;
            }
        }
        self.relearn_noted.insert(workload.to_string(), now_ns);
        Some(Output::RelearnSuggested {
            workload: workload.to_string(),
            reason,
        })
    }

    fn candidate(&self, f: &Forwarded, outcome: &MatchOutcome, now: Duration) -> CandidateAlert {
        let signal = match (outcome, &f.activity) {
            (
                MatchOutcome::UnusualArguments {
                    best_similarity,
                    nearest_exemplar,
                },
                activity,
            ) => Signal::UnusualArguments {
                best_similarity: *best_similarity,
                nearest_exemplar: Some(nearest_exemplar.clone()),
                difference: match activity {
                    Activity::Process { args, .. } => Some(
                        ArgShape::of(nearest_exemplar)
                            .diff(&ArgShape::of(args))
                            .to_string(),
                    ),
                    _ => None,
                },
            },
            (
                MatchOutcome::NewBranch {
                    class: ActivityClass::File,
                    ..
                },
                Activity::File { path, .. },
            ) if matches!(f.event.kind, EventKind::ExecFailed(_)) => {
                let EventKind::ExecFailed(x) = &f.event.kind else {
                    unreachable!("matched above")
                };
                Signal::FailedExec {
                    path: String::from_utf8_lossy(path).into_owned(),
                    error: x.error_name().into_owned(),
                    raw_path: (x.filename.as_bytes() != path.as_slice())
                        .then(|| x.filename.to_escaped()),
                }
            }
            (
                MatchOutcome::NewBranch {
                    class: ActivityClass::File,
                    ..
                },
                Activity::File { path, access, .. },
            ) => Signal::UnknownFile {
                path: String::from_utf8_lossy(path).into_owned(),
                access: *access,
                // the raw spelling, when the canonical one differs
                raw_path: match &f.event.kind {
                    EventKind::File(op) if op.path.as_bytes() != path.as_slice() => {
                        Some(op.path.to_escaped())
                    }
                    _ => None,
                },
            },
            (
                MatchOutcome::NewBranch {
                    class: ActivityClass::Network,
                    ..
                },
                Activity::Network {
                    peer,
                    port,
                    protocol,
                    direction,
                    ..
                },
            ) => Signal::UnknownPeer {
                // a socket peer stays a socket peer (a unix socket is
                // `unix:<path>`, protocol ip0), ICMP stays ICMP
                addr: match peer {
                    Peer::Ip(addr) => PeerAddress::Ip(*addr),
                    Peer::Name(n) => PeerAddress::Name(String::from_utf8_lossy(n).into_owned()),
                },
                port: *port,
                proto: *protocol,
                direction: *direction,
            },
            _ => Signal::UnknownProcess,
        };
        let task = f.event.task.as_ref();
        // the program by its resolved path (`./x` run in /tmp is /tmp/x), so
        // rules and the deviation's "program in a writable directory" see
        // where it lives; the raw spelling stays in the event
        let (exe, args) = match (&f.event.kind, &f.activity) {
            (EventKind::Exec(x), Activity::Process { argv, args, .. }) => (
                kestrel_events::escape_bytes(&x.resolved_filename()).into_owned(),
                Arguments::new(argv.clone(), args.clone()),
            ),
            // the attempt: what it tried to run, with the arguments it passed
            (EventKind::ExecFailed(x), _) => {
                let argv: Vec<String> = x.argv.args.iter().map(|a| a.to_escaped()).collect();
                let normalized = kestrel_profile::normalized_args(&x.argv.args);
                let path = kestrel_events::resolved_path(x.dir.as_ref(), x.filename.as_bytes());
                (
                    kestrel_events::escape_bytes(&path).into_owned(),
                    Arguments::new(argv, normalized),
                )
            }
            _ => match &f.process {
                Some(p) => (p.exe.clone(), Arguments::new(p.argv.clone(), "")),
                None => (
                    task.map(|t| t.comm.to_escaped()).unwrap_or_default(),
                    Arguments::default(),
                ),
            },
        };
        let facts = self
            .facts
            .get(&f.workload.name)
            .copied()
            .unwrap_or_default();
        let container_id = f
            .event
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let (namespace, workload) = self.split_key(&f.workload.name);
        let pod = if f.workload.pod.is_empty() {
            container_id.clone()
        } else {
            f.workload.pod.clone()
        };
        CandidateAlert {
            namespace: namespace.to_string(),
            workload: workload.to_string(),
            pod,
            container_id,
            node: if f.workload.node.is_empty() {
                self.cfg.node.clone()
            } else {
                f.workload.node.clone()
            },
            image: f.workload.image.clone(),
            pid: task.map(|t| t.pid).unwrap_or(0),
            exe,
            args,
            // a failed exec's caller is the attempt's parent
            chain: f
                .process
                .iter()
                .filter(|_| matches!(f.event.kind, EventKind::ExecFailed(_)))
                .chain(&f.chain)
                .map(|a| ProcessAncestor::new(a.exe.clone(), a.argv.clone()).with_pid(a.pid))
                .collect(),
            signals: vec![signal],
            observed_ns: nanos(now),
            workload_replicas: facts.replicas,
            workload_rollout_ns: facts
                .rollout_ns
                .max(self.entry_changes.get(&f.workload.name).copied()),
            shape: None,
        }
    }

    /// Lets time pass: convergence may switch phases without new events.
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        for (name, st) in &mut self.workloads {
            let ts = st.profile.tick(now);
            if !ts.is_empty() {
                st.dirty = true;
                st.digest_dirty = true;
            }
            out.extend(ts.into_iter().map(|t| Output::Phase {
                workload: name.clone(),
                transition: t,
            }));
        }
        self.scorer.expire(nanos(now));
        out
    }

    /// Documents of the profiles changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(String, BehaviorProfile)> {
        let ns = self.cfg.namespace.clone();
        self.workloads
            .iter_mut()
            .filter(|(_, st)| st.dirty)
            .map(|(name, st)| {
                st.dirty = false;
                (name.clone(), document_of(name, &ns, st))
            })
            .collect()
    }

    /// Takes `workload` out of memory and returns its document (to be
    /// saved; [`load_profile`](Self::load_profile) brings it back).
    pub fn evict(&mut self, workload: &str) -> Option<BehaviorProfile> {
        let st = self.workloads.remove(workload)?;
        Some(document_of(workload, &self.cfg.namespace, &st))
    }

    /// Whether `workload` has a profile in memory.
    pub fn knows(&self, workload: &str) -> bool {
        self.workloads.contains_key(workload)
    }

    /// Documents of every profile.
    pub fn all_documents(&self) -> Vec<(String, BehaviorProfile)> {
        self.workloads
            .iter()
            .map(|(n, st)| (n.clone(), document_of(n, &self.cfg.namespace, st)))
            .collect()
    }

    /// Digests of the profiles changed since the last call (for the edge),
    /// with each profile's phase.
    pub fn take_digests(&mut self) -> Vec<WorkloadDigest> {
        let seed = self.cfg.digest_seed;
        self.workloads
            .iter_mut()
            .filter(|(_, st)| st.digest_dirty)
            .map(|(n, st)| {
                st.digest_dirty = false;
                WorkloadDigest {
                    workload: n.clone(),
                    phase: st.profile.phase(),
                    digest: st.profile.digest(seed),
                }
            })
            .collect()
    }

    /// Digests of every profile.
    pub fn all_digests(&self) -> Vec<WorkloadDigest> {
        let seed = self.cfg.digest_seed;
        self.workloads
            .iter()
            .map(|(n, st)| WorkloadDigest {
                workload: n.clone(),
                phase: st.profile.phase(),
                digest: st.profile.digest(seed),
            })
            .collect()
    }

    /// One row per workload.
    pub fn status(&self) -> Vec<WorkloadStatus> {
        self.workloads
            .iter()
            .map(|(n, st)| {
                let s = st.profile.stats();
                WorkloadStatus {
                    workload: n.clone(),
                    phase: format!("{:?}", st.profile.phase()),
                    branches: s.branches,
                    exemplars: s.exemplars,
                    window_new: st.profile.window_count(),
                }
            })
            .collect()
    }

    /// The source and mode of a workload's profile, if it has one.
    pub fn profile_mode(
        &self,
        workload: &str,
    ) -> Option<(kestrel_api::ProfileSource, kestrel_profile::Mode)> {
        self.workloads
            .get(workload)
            .map(|st| (st.profile.source(), st.profile.mode()))
    }

    /// Alert statistics (reduction ratio).
    pub fn scorer_stats(&self) -> kestrel_scoring::ScorerStats {
        self.scorer.stats()
    }

    /// Takes up the open incidents of alerts stored before a restart (see
    /// [`kestrel_scoring::Scorer::restore_incident`]), so a repeat updates
    /// its alert (same object, the count going on) instead of raising a
    /// duplicate. The status holds the count, last seen and pods as last
    /// written; the spec the rest. Returns how many were taken up.
    pub fn restore_alerts<'a>(
        &mut self,
        alerts: impl IntoIterator<Item = &'a kestrel_api::SecurityAlert>,
        now: Duration,
    ) -> usize {
        let now_ns = nanos(now);
        let mut restored = 0;
        for a in alerts {
            let (count, last_seen_ns, pods) = match &a.status {
                Some(st) => (
                    st.count,
                    st.last_seen
                        .as_deref()
                        .and_then(kestrel_api::parse_rfc3339_ns)
                        .unwrap_or(0),
                    st.pods.as_slice(),
                ),
                None => (a.spec.incident.count, 0, &[][..]),
            };
            if self
                .scorer
                .restore_incident(&a.spec, count, last_seen_ns, pods, now_ns)
            {
                restored += 1;
            }
        }
        restored
    }
}

/// The output for a scoring outcome: alerts notify when new or when their
/// severity changed.
fn alert_output(outcome: Outcome) -> Option<Output> {
    match outcome {
        Outcome::Created(alert) => Some(Output::Alert {
            alert,
            notify: true,
        }),
        Outcome::Updated {
            alert,
            severity_changed,
        } => Some(Output::Alert {
            alert,
            notify: severity_changed,
        }),
        Outcome::BelowThreshold { .. } => None,
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The object of a workload's profile: a cluster key's profile lives in the
/// key's namespace and is named after the workload within it; a standalone
/// key's in `namespace`.
fn document_of(key: &str, namespace: &str, st: &WorkloadState) -> BehaviorProfile {
    let (ns, name) = match kestrel_api::split_cluster_key(key) {
        (Some(ns), local) => (ns, local),
        (None, local) => (namespace, local),
    };
    let meta = || Metadata {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
    };
    let mut doc = st.profile.to_object(meta());
    if let (Some(sh), Some(status)) = (&st.shadow, doc.status.as_mut()) {
        status.learned = sh.profile.to_object(meta()).status.and_then(|s| s.learned);
        status.conditions.push(sh.condition());
        doc.measure_size();
    }
    if let (Some(c), Some(status)) = (&st.partial, doc.status.as_mut()) {
        status.conditions.push(c.clone());
        doc.measure_size();
    }
    doc
}

/// The reason of the `Partial` condition of a profile whose workload was
/// running before the agent started.
const STARTED_BEFORE_AGENT: &str = "StartedBeforeAgent";

/// The `Partial` condition for `f` when it is a process the agent's start-up
/// `/proc` scan found (it was running before the agent, so learning never
/// saw it start: its entry point, and the files and connections of its
/// start-up, are missing from the profile).
fn started_before_agent(f: &Forwarded, now: Duration) -> Option<kestrel_api::Condition> {
    let EventKind::Exec(x) = &f.event.kind else {
        return None;
    };
    if !x.from_proc_scan {
        return None;
    }
    let process = truncate_chars(
        &kestrel_events::escape_bytes(x.resolved_filename().as_ref()),
        256,
    );
    let pod = if f.workload.pod.is_empty() {
        String::new()
    } else {
        format!(" in pod {}", f.workload.pod)
    };
    Some(kestrel_api::Condition::new(
        kestrel_api::Condition::PARTIAL,
        kestrel_api::ConditionStatus::True,
        STARTED_BEFORE_AGENT,
        format!(
            "{process} (pid {}){pod} was running before the agent started: learning did not \
             see the workload start (its entry point, and the files and connections of its \
             start-up); relearn, then restart the workload's pods, for a whole profile",
            x.ns_pid
        ),
        kestrel_api::rfc3339_ns(now.as_nanos() as u64),
    ))
}

/// Distinct examples a `Drift` condition names.
const DRIFT_SAMPLES: usize = 10;

/// The learned shadow of a promoted profile: it learns everything the
/// workload does while the promoted profile (Git's) is in force, and counts
/// what fell outside the baseline. Its behaviour is the promoted object's
/// `status.learned`; the `Drift` condition summarises the difference
/// (`kestrel profile drift NAME` lists it).
#[derive(Debug)]
struct Shadow {
    profile: Profile,
    /// Since when it watches (ns since the epoch).
    since_ns: u64,
    /// Activities outside the baseline since then.
    outside: u64,
    /// The first distinct ones, described.
    samples: BTreeSet<String>,
}

impl Shadow {
    fn condition(&self) -> kestrel_api::Condition {
        let since = kestrel_api::rfc3339_ns(self.since_ns);
        let (status, reason, message) = if self.outside == 0 {
            (
                kestrel_api::ConditionStatus::False,
                "WithinBaseline",
                format!("nothing outside spec.baseline since {since}"),
            )
        } else {
            let list: Vec<&str> = self.samples.iter().map(String::as_str).collect();
            (
                kestrel_api::ConditionStatus::True,
                "OutsideBaseline",
                format!(
                    "{} {} outside spec.baseline since {since}, among them: {}; \
                     status.learned holds what the workload did (kestrel profile drift lists \
                     the difference)",
                    self.outside,
                    if self.outside == 1 {
                        "activity"
                    } else {
                        "activities"
                    },
                    list.join("; ")
                ),
            )
        };
        kestrel_api::Condition::new(
            kestrel_api::Condition::DRIFT,
            status,
            reason,
            message,
            since,
        )
    }
}

/// An activity in words, for the `Drift` condition.
fn describe(a: &Activity) -> String {
    let text = |b: &[u8]| kestrel_events::escape_bytes(b).into_owned();
    match a {
        Activity::Process {
            parent, exe, args, ..
        } => {
            let args = truncate_chars(args, 80);
            format!("process {} → {} {args}", text(parent), text(exe))
                .trim_end()
                .to_string()
        }
        Activity::File {
            process,
            access,
            path,
        } => format!("file {} {access:?} {}", text(process), text(path)),
        Activity::Network {
            process,
            direction,
            peer,
            protocol,
            port,
        } => format!(
            "network {} {direction:?} {peer} {protocol}/{port}",
            text(process)
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kestrel_events::{Activity, Event, EventKind, Exec, Forwarded, Namespaces, Workload};
    use kestrel_profile::testing::TestEmbedder;
    use kestrel_scoring::{RuleSet, ScoringConfig};

    fn engine() -> Engine {
        engine_with(ProfileConfig::default())
    }

    fn engine_with(profile: ProfileConfig) -> Engine {
        let scorer = Scorer::new(
            ScoringConfig::default(),
            RuleSet::default_pack().expect("default rule pack"),
        )
        .expect("scorer");
        Engine::new(
            EngineConfig {
                profile,
                node: "node-1".into(),
                namespace: "shop".into(),
                digest_seed: 7,
            },
            Arc::new(TestEmbedder::new()),
            scorer,
        )
    }

    pub(crate) fn exec(exe: &str, args: &str) -> Forwarded {
        let argv: Vec<String> = std::iter::once(exe.to_string())
            .chain(args.split(' ').map(String::from))
            .collect();
        Forwarded {
            event: Event {
                ts_ns: 0,
                cgroup_id: 1,
                task: None,
                ns: Namespaces::default(),
                container: None,
                kind: EventKind::Exec(Exec {
                    filename: format!("/usr/bin/{exe}").as_str().into(),
                    exe: exe.into(),
                    parent_comm: "sh".into(),
                    ns_pid: 2,
                    argv: kestrel_events::Argv {
                        args: argv.iter().map(|a| a.as_str().into()).collect(),
                        size: 0,
                        truncated: false,
                        read_failed: false,
                    },
                    from_proc_scan: false,
                    dir: None,
                }),
            },
            workload: Workload {
                name: "Deployment/webapp".into(),
                image: "webapp:v1".into(),
                pod: String::new(),
                node: String::new(),
            },
            activity: Activity::Process {
                parent: b"sh".to_vec(),
                exe: exe.as_bytes().to_vec(),
                args: kestrel_embed::normalize(args),
                argv,
            },
            process: None,
            chain: Vec::new(),
        }
    }

    const T: Duration = Duration::from_secs(1_700_000_000);

    fn network(peer: Peer, protocol: kestrel_events::Protocol, port: u16) -> Forwarded {
        let mut f = exec("curl", "http://x");
        f.activity = Activity::Network {
            process: b"curl".to_vec(),
            direction: kestrel_events::Direction::Outbound,
            peer,
            protocol,
            port,
        };
        f
    }

    /// A file open by `process`, its activity derived as the edge derives it.
    fn file_read(process: &str, path: &str) -> Forwarded {
        file_read_in(process, None, path)
    }

    /// A read of `path`, relative to `dir` (as the kernel side resolved it).
    fn file_read_in(process: &str, dir: Option<&str>, path: &str) -> Forwarded {
        let mut f = exec(process, "-jar app.jar");
        f.event.task = Some(kestrel_events::Task {
            pid: 2,
            tid: 2,
            ppid: 1,
            uid: 0,
            comm: process.into(),
        });
        f.event.kind = EventKind::File(kestrel_events::FileOp {
            dir: dir.map(Into::into),
            ..kestrel_events::FileOp::openat(path, 0)
        });
        f.activity = kestrel_profile::activity_of(&f.event).expect("a file activity");
        f
    }

    fn alerts_in(out: Vec<Output>) -> Vec<(Box<SecurityAlert>, bool)> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Alert { alert, notify } => Some((alert, notify)),
                _ => None,
            })
            .collect()
    }

    /// The alert the engine raises for a miner in the web app (for tests
    /// of what handles alerts).
    pub(crate) fn miner_alert() -> SecurityAlert {
        let miner = exec("xmrig", "-o stratum+tcp://pool.minexmr.com:4444 -u wallet");
        let raised = alerts_in(detecting().handle(&miner, T).unwrap());
        *raised.into_iter().next().expect("the miner alerts").0
    }

    /// An engine whose profile of the web app knows `java` and detects.
    fn detecting() -> Engine {
        let mut e = engine();
        e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        e.command(
            Command::SetMode {
                workload: "Deployment/webapp".into(),
                mode: Mode::Detect,
            },
            T,
        )
        .unwrap();
        e
    }

    /// Issue 12 (acceptance 4) and 15: an operator restarted in the middle
    /// of an incident takes it up from the stored alert, so the attack's
    /// next occurrence updates that alert (same id, the count going on)
    /// instead of raising a second one; an incident idle for longer than
    /// `idleSecs` is over, and a new occurrence is a new alert.
    #[test]
    fn after_a_restart_a_repeat_updates_the_stored_alert_instead_of_raising_a_duplicate() {
        let miner = exec("xmrig", "-o stratum+tcp://pool.minexmr.com:4444 -u wallet");
        let mut before = detecting();
        let raised = alerts_in(before.handle(&miner, T).unwrap());
        assert_eq!(raised.len(), 1, "{raised:?}");
        let again = alerts_in(before.handle(&miner, T + Duration::from_secs(5)).unwrap());
        let (latest, _) = again.last().expect("the repeat updates the alert");
        assert_eq!(latest.id, raised[0].0.id);
        assert_eq!(latest.incident.count, 2);
        // what the store holds: the spec and the status written from it
        let stored = kestrel_api::SecurityAlert::from_spec((**latest).clone());

        let mut after = detecting();
        let later = T + Duration::from_secs(60);
        assert_eq!(after.restore_alerts([&stored], later), 1);
        let out = alerts_in(after.handle(&miner, later).unwrap());
        assert_eq!(out.len(), 1, "{out:?}");
        let (updated, notify) = &out[0];
        assert_eq!(updated.id, latest.id, "the same alert, not a duplicate");
        assert_eq!(updated.incident.count, 3, "the count goes on");
        assert_eq!(
            updated.incident.first_seen_ns,
            latest.incident.first_seen_ns
        );
        assert!(
            !notify,
            "a repeat of the same severity is not announced again"
        );
        assert_eq!(after.scorer_stats().alerts_created, 0);
        assert_eq!(after.scorer_stats().alerts_updated, 1);

        // past the idle time the incident is over: a new alert
        let idle = ScoringConfig::default().incidents.idle_secs;
        let much_later = T + Duration::from_secs(5 + idle + 1);
        let mut fresh = detecting();
        assert_eq!(fresh.restore_alerts([&stored], much_later), 0);
        let out = alerts_in(fresh.handle(&miner, much_later).unwrap());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_ne!(out[0].0.id, latest.id);
        assert_eq!(out[0].0.incident.count, 1);
    }

    /// `/etc//shadow`, `/etc/./shadow`, `/tmp/../etc/shadow`, `shadow`
    /// opened in `/etc` and `../etc/shadow` opened in `/tmp` are
    /// `/etc/shadow` to the profile and the rules; the alert keeps the
    /// spelling the process used.
    #[test]
    fn other_spellings_of_a_sensitive_path_alert_as_that_path() {
        for (dir, raw) in [
            (None, "/etc//shadow"),
            (None, "/etc/./shadow"),
            (None, "/tmp/../etc/shadow"),
            (Some("/etc"), "shadow"),
            (Some("/tmp"), "../etc/shadow"),
            (Some("/"), "etc/shadow"),
        ] {
            let mut e = engine();
            e.handle(&exec("java", "-jar app.jar"), T).unwrap();
            e.handle(&file_read("java", "/app/config.yaml"), T).unwrap();
            e.command(
                Command::SetMode {
                    workload: "Deployment/webapp".into(),
                    mode: Mode::Detect,
                },
                T,
            )
            .unwrap();
            // the learned spelling of a known file stays known in any spelling
            assert!(e
                .handle(&file_read("java", "/app/./config.yaml"), T)
                .unwrap()
                .is_empty());
            let out = e.handle(&file_read_in("java", dir, raw), T).unwrap();
            let alert = out
                .iter()
                .find_map(|o| match o {
                    Output::Alert { alert, .. } => Some(alert),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{raw}: no alert in {out:?}"));
            assert!(
                alert.rule_hits.iter().any(|h| h.id == "shadow-read"),
                "{raw}: {:?}",
                alert.rule_hits
            );
            assert_eq!(
                alert.evidence.signals,
                [Signal::UnknownFile {
                    path: "/etc/shadow".into(),
                    access: kestrel_events::FileAccess::Read,
                    raw_path: Some(raw.into()),
                }],
                "{raw}"
            );
        }
    }

    /// Issue 12: a person marks an alert `false-positive`; what made it is
    /// learned into the learned profile, and the same behaviour stops
    /// alerting, while other new behaviour still does.
    #[test]
    fn a_false_positive_is_taught_to_the_learned_profile_and_stops_alerting() {
        let mut e = detecting();
        // the app reads its TLS key: new to the profile, credentials class
        let backup = file_read("java", "/etc/ssl/private/server.key");
        let out = alerts_in(e.handle(&backup, T).unwrap());
        let [(alert, _)] = out.as_slice() else {
            panic!("want one alert: {out:?}")
        };
        let id = alert.id.clone();
        let taught = e
            .command(Command::FalsePositive { alert: id.clone() }, T)
            .unwrap();
        let [Output::Taught {
            workload,
            alert: taught_id,
            learned,
            activities,
        }] = taught.as_slice()
        else {
            panic!("{taught:?}")
        };
        assert_eq!(
            (workload.as_str(), taught_id, *learned, *activities),
            ("Deployment/webapp", &id, 1, 1)
        );
        // the same behaviour is known now: no alert, no candidate
        assert!(alerts_in(e.handle(&backup, T + Duration::from_secs(1)).unwrap()).is_empty());
        // something else new still alerts
        let miner = exec("xmrig", "-o stratum+tcp://pool:3333");
        assert_eq!(
            alerts_in(e.handle(&miner, T + Duration::from_secs(2)).unwrap()).len(),
            1
        );
        // taught once: a second verdict on the same alert has nothing to teach
        let again = e.command(Command::FalsePositive { alert: id.clone() }, T);
        assert!(
            matches!(&again, Err(EngineError::NotTaught { alert, reason })
                if alert == &id && reason.contains("does not hold what made it")),
            "{again:?}"
        );
    }

    /// A promoted profile's source is Git: a false positive is not learned
    /// into it behind Git's back, and the refusal says where to add it.
    #[test]
    fn a_false_positive_on_a_promoted_profile_is_refused_naming_git() {
        let mut e = detecting();
        let doc = e
            .all_documents()
            .into_iter()
            .find(|(n, _)| n == "Deployment/webapp")
            .map(|(_, d)| d)
            .unwrap();
        let mut promoted = doc.clone();
        promoted.spec.source = kestrel_api::ProfileSource::Promoted;
        promoted.spec.mode = kestrel_api::ProfileMode::Detect;
        promoted.spec.baseline = promoted.status.as_ref().and_then(|s| s.learned.clone());
        e.command(
            Command::Apply {
                workload: "Deployment/webapp".into(),
                document: Box::new(promoted),
            },
            T,
        )
        .unwrap();
        let out = alerts_in(
            e.handle(&file_read("java", "/etc/ssl/private/server.key"), T)
                .unwrap(),
        );
        let [(alert, _)] = out.as_slice() else {
            panic!("want one alert: {out:?}")
        };
        let err = e
            .command(
                Command::FalsePositive {
                    alert: alert.id.clone(),
                },
                T,
            )
            .unwrap_err();
        assert_eq!(err.label(), "not_taught");
        assert!(
            err.to_string().contains("promoted: Git is its source"),
            "{err}"
        );
    }

    /// Issue 12: while a promoted profile is in force, a learned shadow
    /// keeps learning, and the promoted document reports `Drift`: what the
    /// workload did that the baseline lacks. A restart goes on from the
    /// shadow the document holds.
    #[test]
    fn a_promoted_profile_reports_drift_from_its_learned_shadow() {
        let mut e = detecting();
        let doc = e.all_documents().pop().map(|(_, d)| d).unwrap();
        let mut promoted = doc.clone();
        promoted.spec.source = ProfileSource::Promoted;
        promoted.spec.mode = kestrel_api::ProfileMode::Detect;
        promoted.spec.baseline = promoted.status.as_ref().and_then(|s| s.learned.clone());
        promoted.status = None;
        e.command(
            Command::Apply {
                workload: "Deployment/webapp".into(),
                document: Box::new(promoted),
            },
            T,
        )
        .unwrap();
        let drift_of = |e: &Engine| {
            let doc = e.all_documents().pop().map(|(_, d)| d).unwrap();
            let status = doc.status.clone().unwrap();
            let c = kestrel_api::find_condition(&status.conditions, "Drift")
                .cloned()
                .expect("a Drift condition");
            (doc, c)
        };
        let (_, c) = drift_of(&e);
        assert_eq!(c.status, kestrel_api::ConditionStatus::False);
        assert_eq!(c.reason, "WithinBaseline");
        // known behaviour: no drift; new behaviour: drift, named
        assert!(e
            .handle(&exec("java", "-jar app.jar"), T)
            .unwrap()
            .is_empty());
        e.handle(&file_read("java", "/app/cache/new.bin"), T)
            .unwrap();
        let (doc, c) = drift_of(&e);
        assert_eq!(c.status, kestrel_api::ConditionStatus::True);
        assert_eq!(c.reason, "OutsideBaseline");
        assert!(
            c.message
                .starts_with("1 activity outside spec.baseline since ")
                && c.message.contains("file java Read /app/cache/new.bin"),
            "{}",
            c.message
        );
        // the promoted spec is untouched; the shadow's behaviour is in
        // status.learned, with what the baseline lacks
        assert_eq!(doc.spec.source, ProfileSource::Promoted);
        let learned = doc.status.as_ref().unwrap().learned.clone().unwrap();
        assert!(learned
            .files
            .iter()
            .any(|f| f.paths.iter().any(|p| p == "/app/cache/new.bin")));
        assert!(!doc
            .spec
            .baseline
            .as_ref()
            .unwrap()
            .files
            .iter()
            .any(|f| f.paths.iter().any(|p| p == "/app/cache/new.bin")));
        // a restart: the shadow goes on from status.learned
        let mut again = engine();
        again
            .load_profile("Deployment/webapp", &doc, T + Duration::from_secs(5))
            .unwrap();
        let (after, _) = drift_of(&again);
        assert_eq!(after.status.unwrap().learned, Some(learned));
    }

    /// `cd /tmp && ./.ksoftirqd`: the program is named by its resolved path,
    /// so the alert shows where it lives and the deviation counts a program
    /// in a writable directory (before, the raw `./.ksoftirqd` matched no
    /// location and no rule, and the scenario suite missed it 3 of 3).
    #[test]
    fn a_program_run_by_a_relative_path_is_judged_by_where_it_lives() {
        let mut e = detecting();
        let mut f = exec("java", "-o pool:4444");
        let EventKind::Exec(x) = &mut f.event.kind else {
            unreachable!()
        };
        x.filename = "./.ksoftirqd".into();
        x.dir = Some("/tmp".into());
        x.argv.args[0] = "./.ksoftirqd".into();
        f.activity = kestrel_profile::activity_of(&f.event).expect("a process activity");
        let Activity::Process { exe, .. } = &f.activity else {
            unreachable!()
        };
        assert_eq!(exe.as_slice(), b"/tmp/.ksoftirqd");
        let out = alerts_in(e.handle(&f, T).unwrap());
        let [(alert, _)] = out.as_slice() else {
            panic!("want one alert: {out:?}")
        };
        assert_eq!(alert.evidence.exe, "/tmp/.ksoftirqd");
        assert_eq!(alert.evidence.signals, [Signal::UnknownProcess]);
        let deviation = &alert.breakdown.deviation.reason;
        assert!(
            deviation.contains("a program in a writable directory"),
            "{deviation}"
        );
    }

    /// Before: a unix-socket connect became an `UnknownFile` write of the
    /// socket's name, and every protocol but UDP became TCP. Now the signal
    /// says what the kernel saw.
    #[test]
    fn candidates_carry_the_workloads_replicas_and_rollout_once_known() {
        let mut e = engine();
        let new_peer = MatchOutcome::NewBranch {
            class: ActivityClass::Network,
            level: kestrel_profile::Level::Peer,
        };
        let f = network(
            Peer::Ip("198.51.100.7".parse().unwrap()),
            kestrel_events::Protocol::Tcp,
            443,
        );
        let c = e.candidate(&f, &new_peer, T);
        assert_eq!((c.workload_replicas, c.workload_rollout_ns), (None, None));
        let facts = WorkloadFacts {
            replicas: Some(3),
            rollout_ns: Some(1_700_000_000_000_000_000),
        };
        e.set_facts(&f.workload.name, facts);
        let c = e.candidate(&f, &new_peer, T);
        assert_eq!(c.workload_replicas, Some(3));
        assert_eq!(c.workload_rollout_ns, facts.rollout_ns);
        // all its containers gone: unknown again
        e.set_facts(&f.workload.name, WorkloadFacts::default());
        assert_eq!(e.candidate(&f, &new_peer, T).workload_replicas, None);
    }

    /// The entry point of a container (pid 1 of its pid namespace).
    fn entry(args: &str, container: &str) -> Forwarded {
        let mut f = exec("sh", args);
        if let EventKind::Exec(x) = &mut f.event.kind {
            x.ns_pid = 1;
            x.parent_comm = "runc".into();
        }
        f.event.container = Some(kestrel_events::ContainerRef {
            id: container.into(),
            runtime: kestrel_events::Runtime::Plain,
        });
        f.activity = kestrel_profile::activity_of(&f.event).expect("a process activity");
        f
    }

    #[test]
    fn a_container_started_with_a_new_entry_point_is_a_release_not_an_attack() {
        let mut e = engine();
        e.handle(
            &entry("-c while true; do serve --workers 2; done", "web-1"),
            T,
        )
        .unwrap();
        e.command(
            Command::SetMode {
                workload: "Deployment/webapp".into(),
                mode: Mode::Detect,
            },
            T,
        )
        .unwrap();
        e.set_facts(
            "Deployment/webapp",
            WorkloadFacts {
                replicas: Some(4),
                rollout_ns: None,
            },
        );
        // the same entry point in a new replica: known, nothing to say
        let again = e
            .handle(
                &entry("-c while true; do serve --workers 2; done", "web-2"),
                T,
            )
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
        // the release: a new command line for the entry point
        let v2 = "-c while true; do serve --workers 8 --cache /var/cache/app; done";
        let t1 = T + Duration::from_secs(60);
        let out = e.handle(&entry(v2, "web-3"), t1).unwrap();
        let [Output::RelearnSuggested { workload, reason }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(workload, "Deployment/webapp");
        assert!(
            reason.starts_with("container web-3 of Deployment/webapp started with an entry point its profile never ran (sh -c while true; do serve --workers 8"),
            "{reason}"
        );
        // what the new release does next counts as the release
        let t2 = t1 + Duration::from_secs(5);
        let c = e.candidate(
            &exec("nginx", "-g daemon off;"),
            &MatchOutcome::NewBranch {
                class: ActivityClass::Process,
                level: kestrel_profile::Level::Exe,
            },
            t2,
        );
        assert_eq!(c.workload_rollout_ns, Some(nanos(t1)));
        assert_eq!(c.workload_replicas, Some(4));
        // the next replicas of the rollout: suggested once
        let out = e.handle(&entry(v2, "web-4"), t2).unwrap();
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::RelearnSuggested { .. })),
            "{out:?}"
        );
        // a process that is not an entry point says nothing about releases
        let out = e.handle(&exec("wget", "http://203.0.113.9/x"), t2).unwrap();
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::RelearnSuggested { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn most_replicas_doing_the_same_new_thing_suggest_relearning_without_an_alert() {
        let mut e = detecting();
        e.set_facts(
            "Deployment/webapp",
            WorkloadFacts {
                replicas: Some(4),
                rollout_ns: None,
            },
        );
        let in_pod = |pod: &str| {
            let mut f = exec("mkdir", "-p /var/cache/app");
            f.event.container = Some(kestrel_events::ContainerRef {
                id: pod.into(),
                runtime: kestrel_events::Runtime::Plain,
            });
            f
        };
        // one pod: an outlier, below the threshold (a new ordinary program)
        let one = e.handle(&in_pod("web-1"), T).unwrap();
        assert!(one.is_empty(), "{one:?}");
        // two of four: the release
        let two = e.handle(&in_pod("web-2"), T).unwrap();
        let [Output::RelearnSuggested { workload, reason }] = &two[..] else {
            panic!("{two:?}")
        };
        assert_eq!(workload, "Deployment/webapp");
        assert!(
            reason.starts_with("2 of 4 pods show it (50%): looks like a release"),
            "{reason}"
        );
        // once per rollout
        let three = e.handle(&in_pod("web-3"), T).unwrap();
        assert!(three.is_empty(), "{three:?}");
    }

    /// The profile gives the shape: two pods running one miner with other
    /// wallets, workers and thread counts are one anomaly to the cluster
    /// engine; a different command under the same parent is another.
    #[test]
    fn similar_arguments_in_two_pods_are_one_shape_for_the_cluster() {
        // the test embedder is hashed trigrams, not a language model: a
        // threshold it can meet (the real model's verdict is in embed-onnx)
        let mut e = engine_with(
            ProfileConfig::builder()
                .similarity_threshold(0.6)
                .build()
                .unwrap(),
        );
        e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        e.command(
            Command::SetMode {
                workload: "Deployment/webapp".into(),
                mode: Mode::Detect,
            },
            T,
        )
        .unwrap();
        e.set_facts(
            "Deployment/webapp",
            WorkloadFacts {
                replicas: Some(10),
                rollout_ns: None,
            },
        );
        let in_pod = |pod: &str, exe: &str, args: &str| {
            let mut f = exec(exe, args);
            f.event.container = Some(kestrel_events::ContainerRef {
                id: pod.into(),
                runtime: kestrel_events::Runtime::Plain,
            });
            f
        };
        let alert = |out: &[Output]| {
            out.iter()
                .find_map(|o| match o {
                    Output::Alert { alert, .. } => Some(alert.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no alert in {out:?}"))
        };
        let a = "--url stratum+tcp://pool.minexmr.com:4444 --user 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A --pass rig01 --threads 2 --donate-level 1";
        let b = "--url stratum+tcp://pool.minexmr.com:3333 --user 48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD --pass rig02 --threads 4 --donate-level 1";
        assert_ne!(kestrel_embed::normalize(a), kestrel_embed::normalize(b));
        let first = alert(&e.handle(&in_pod("web-1", "xmrig", a), T).unwrap());
        let second = alert(&e.handle(&in_pod("web-2", "xmrig", b), T).unwrap());
        assert_eq!(first.evidence.shape, second.evidence.shape);
        assert!(
            second
                .breakdown
                .cluster
                .reason
                .starts_with("2 of 10 pods show it (20%)"),
            "{:?}",
            second.breakdown.cluster
        );
        assert_eq!(second.incident.pods_total, 2, "{:?}", second.incident);
        let other = alert(&e.handle(&in_pod("web-3", "xmrig", "--help"), T).unwrap());
        assert_ne!(other.evidence.shape, first.evidence.shape);
    }

    #[test]
    fn unknown_peers_keep_socket_names_and_protocols() {
        let e = engine();
        let new_peer = MatchOutcome::NewBranch {
            class: ActivityClass::Network,
            level: kestrel_profile::Level::Peer,
        };
        let unix = network(
            Peer::Name(b"unix:/var/run/docker.sock".to_vec()),
            kestrel_events::Protocol::Other(0),
            0,
        );
        let c = e.candidate(&unix, &new_peer, T);
        assert_eq!(
            c.signals,
            [Signal::UnknownPeer {
                addr: PeerAddress::Name("unix:/var/run/docker.sock".into()),
                port: 0,
                proto: kestrel_events::Protocol::Other(0),
                direction: kestrel_events::Direction::Outbound,
            }]
        );
        let icmp = network(
            Peer::Ip("198.51.100.7".parse().unwrap()),
            kestrel_events::Protocol::Icmp,
            0,
        );
        let c = e.candidate(&icmp, &new_peer, T);
        assert!(
            matches!(&c.signals[..], [Signal::UnknownPeer { proto: kestrel_events::Protocol::Icmp, addr: PeerAddress::Ip(ip), .. }] if ip.to_string() == "198.51.100.7"),
            "{:?}",
            c.signals
        );
    }

    #[test]
    fn set_mode_detect_locks_a_learning_profile_and_new_behaviour_alerts() {
        let mut e = engine();
        e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        let out = e
            .command(
                Command::SetMode {
                    workload: "Deployment/webapp".into(),
                    mode: Mode::Detect,
                },
                T,
            )
            .unwrap();
        assert!(
            matches!(&out[..], [Output::Phase { workload, transition }]
                if workload == "Deployment/webapp" && transition.to == Phase::Detecting),
            "{out:?}"
        );
        let miner = e
            .handle(&exec("xmrig", "-o stratum+tcp://pool:3333 -u w"), T)
            .unwrap();
        assert!(
            miner.iter().any(|o| matches!(o, Output::Alert { alert, .. }
                if alert.evidence.workload == "Deployment/webapp")),
            "{miner:?}"
        );
    }

    #[test]
    fn an_applied_document_replaces_the_profile_and_relearn_restarts_learning() {
        let mut e = engine();
        e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        let mut doc = e.all_documents().pop().unwrap().1;
        doc.spec.mode = kestrel_api::ProfileMode::Detect;
        let out = e
            .command(
                Command::Apply {
                    workload: "Deployment/webapp".into(),
                    document: Box::new(doc),
                },
                T,
            )
            .unwrap();
        assert!(
            matches!(&out[..], [Output::Phase { transition, .. }]
                if transition.reason == TransitionReason::Applied
                    && transition.to == Phase::Detecting),
            "{out:?}"
        );
        // the applied profile still knows what was learned
        let known = e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        assert!(known.is_empty(), "{known:?}");
        let out = e
            .command(
                Command::Relearn {
                    workload: "Deployment/webapp".into(),
                },
                T,
            )
            .unwrap();
        assert!(
            matches!(&out[..], [Output::Phase { transition, .. }] if transition.to == Phase::Learning),
            "{out:?}"
        );
    }

    /// Issue 13: a process the agent's start-up `/proc` scan found reaches
    /// a learning profile: the profile is marked `Partial`
    /// (`StartedBeforeAgent`, naming the process and its pod), the mark is
    /// stored and survives a restart, relearning clears it, and a profile
    /// that already detects is not marked.
    #[test]
    fn processes_older_than_the_agent_mark_a_learning_profile_partial() {
        let scanned = |exe: &str, args: &str| {
            let mut f = exec(exe, args);
            f.workload.pod = "webapp-7d9f-abcde".into();
            let EventKind::Exec(x) = &mut f.event.kind else {
                unreachable!()
            };
            x.from_proc_scan = true;
            f
        };
        let partial_of = |e: &Engine| {
            let doc = e.all_documents().pop().map(|(_, d)| d).unwrap();
            kestrel_api::find_condition(
                &doc.status.unwrap().conditions,
                kestrel_api::Condition::PARTIAL,
            )
            .cloned()
        };
        let mut e = engine();
        e.handle(&exec("java", "-jar app.jar"), T).unwrap();
        assert_eq!(partial_of(&e), None, "live events never mark a profile");
        e.handle(&scanned("java", "-jar app.jar"), T).unwrap();
        let c = partial_of(&e).expect("a Partial condition");
        assert_eq!(c.status, kestrel_api::ConditionStatus::True);
        assert_eq!(c.reason, "StartedBeforeAgent");
        assert!(
            c.message.starts_with(
                "/usr/bin/java (pid 2) in pod webapp-7d9f-abcde was running before the agent started"
            ),
            "{}",
            c.message
        );
        // a second scanned process keeps the first one's words
        e.handle(&scanned("sh", "-c loop"), T + Duration::from_secs(1))
            .unwrap();
        assert_eq!(partial_of(&e), Some(c.clone()));
        // stored and taken back on load
        let doc = e.all_documents().pop().unwrap().1;
        let mut again = engine();
        again
            .load_profile("Deployment/webapp", &doc, T + Duration::from_secs(5))
            .unwrap();
        assert_eq!(partial_of(&again), Some(c));
        // relearning starts whole
        again
            .command(
                Command::Relearn {
                    workload: "Deployment/webapp".into(),
                },
                T + Duration::from_secs(6),
            )
            .unwrap();
        assert_eq!(partial_of(&again), None);
        // a detecting profile learned what it knows already
        let mut d = detecting();
        d.handle(&scanned("java", "-jar app.jar"), T).unwrap();
        assert_eq!(partial_of(&d), None);
    }

    #[test]
    fn commands_for_unknown_workloads_are_typed_errors() {
        let mut e = engine();
        let err = e
            .command(
                Command::Relearn {
                    workload: "nope".into(),
                },
                T,
            )
            .unwrap_err();
        assert_eq!(err.label(), "unknown_workload");
        assert!(err.to_string().contains("nope"));
        let err = e
            .command(
                Command::Forget {
                    workload: "nope".into(),
                },
                T,
            )
            .unwrap_err();
        assert_eq!(err.label(), "unknown_workload");
    }
}
