//! The operator core: one profile per workload, learning until it converges,
//! then detecting; anomalies become scored, grouped alerts.
//!
//! The engine is a functional core: it takes forwarded events and the time,
//! and returns what happened ([`Output`]); storage, printing and transport
//! are the caller's.

use kestrel_agent::activity::{Activity, Peer};
use kestrel_agent::edge::Forwarded;
use kestrel_embed::{ArgShape, Embedder};
use kestrel_events::EventKind;
use kestrel_profile::{
    ActivityClass, Digest, MatchOutcome, Metadata, Phase, Profile, ProfileConfig, Transition,
};
use kestrel_scoring::{
    Arguments, CandidateAlert, LlmOutcome, Outcome, ProcessAncestor, Scorer, SecurityAlert, Signal,
};
use std::collections::BTreeMap;
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
        /// (repeats only update the stored alert's count and last-seen).
        notify: bool,
    },
}

/// One workload's state.
#[derive(Debug)]
struct WorkloadState {
    profile: Profile,
    image: String,
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
    /// Where its calls run (the engine thread waits for each answer, which
    /// the client bounds with its timeout).
    pub runtime: tokio::runtime::Handle,
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    embedder: Arc<dyn Embedder>,
    scorer: Scorer,
    llm: Option<LlmSeam>,
    workloads: BTreeMap<String, WorkloadState>,
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
        }
    }

    /// Adds the LLM's judgement to scoring (without it, its weight goes to
    /// the other engines and alerts say `LLM: unavailable`).
    pub fn with_llm(mut self, llm: LlmSeam) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Loads a stored profile (a restart resumes where it stopped). The
    /// workload is the one the object names; `workload` (the file name, say)
    /// only stands in for objects that name none.
    pub fn load_profile(
        &mut self,
        workload: &str,
        yaml: &str,
        now: Duration,
    ) -> Result<(), EngineError> {
        let err = |source| EngineError::Profile {
            workload: workload.into(),
            source,
        };
        let stored = kestrel_profile::parse_yaml(yaml).map_err(err)?;
        let profile = Profile::from_stored(&stored, self.embedder.as_ref(), now).map_err(err)?;
        let named = stored.object.workload_name();
        let workload = named.as_deref().unwrap_or(workload);
        let image = String::new();
        self.workloads.insert(
            workload.to_string(),
            WorkloadState {
                profile,
                image,
                dirty: false,
                digest_dirty: true,
            },
        );
        Ok(())
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
                    image: image.into(),
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
            .observe(&f.activity.as_event(image), now, embedder.as_ref())
            .map_err(|source| EngineError::Profile {
                workload: workload.clone(),
                source,
            })?;
        let detecting = st.profile.phase() == Phase::Detecting;
        if obs.change.is_growth() {
            st.dirty = true;
            st.digest_dirty = true;
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
            let candidate = self.candidate(f, &obs.outcome, now);
            let outcome = match &self.llm {
                Some(l) => {
                    l.runtime
                        .block_on(self.scorer.score(&candidate, Some(&l.engine), nanos(now)))
                }
                None => self
                    .scorer
                    .assess(&candidate, LlmOutcome::not_configured(), nanos(now)),
            };
            match outcome {
                Outcome::Created(alert) => out.push(Output::Alert {
                    alert,
                    notify: true,
                }),
                Outcome::Updated {
                    alert,
                    severity_changed,
                } => out.push(Output::Alert {
                    alert,
                    notify: severity_changed,
                }),
                Outcome::BelowThreshold { .. } => {}
            }
        }
        Ok(out)
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
                Activity::File { path, access, .. },
            ) => Signal::UnknownFile {
                path: String::from_utf8_lossy(path).into_owned(),
                access: file_access(*access),
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
            ) => match peer {
                Peer::Ip(addr) => Signal::UnknownPeer {
                    addr: *addr,
                    port: *port,
                    proto: match protocol {
                        kestrel_profile::Protocol::Udp => kestrel_scoring::Proto::Udp,
                        _ => kestrel_scoring::Proto::Tcp,
                    },
                    direction: match direction {
                        kestrel_profile::Direction::Outbound => {
                            kestrel_scoring::Direction::Outbound
                        }
                        _ => kestrel_scoring::Direction::Inbound,
                    },
                },
                Peer::Name(n) => Signal::UnknownFile {
                    path: String::from_utf8_lossy(n).into_owned(),
                    access: kestrel_scoring::FileAccess::Write,
                },
            },
            _ => Signal::UnknownProcess,
        };
        let task = f.event.task.as_ref();
        let (exe, args) = match (&f.event.kind, &f.activity) {
            (EventKind::Exec(x), Activity::Process { argv, args, .. }) => (
                x.filename.to_escaped(),
                Arguments::new(argv.clone(), args.clone()),
            ),
            _ => match &f.process {
                Some(p) => (p.exe.clone(), Arguments::new(p.argv.clone(), "")),
                None => (
                    task.map(|t| t.comm.to_escaped()).unwrap_or_default(),
                    Arguments::default(),
                ),
            },
        };
        let container_id = f
            .event
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        CandidateAlert {
            namespace: self.cfg.namespace.clone(),
            workload: f.workload.name.clone(),
            pod: container_id.clone(),
            container_id,
            node: self.cfg.node.clone(),
            image: f.workload.image.clone(),
            pid: task.map(|t| t.pid).unwrap_or(0),
            exe,
            args,
            chain: f
                .chain
                .iter()
                .map(|a| ProcessAncestor::new(a.exe.clone(), a.argv.clone()))
                .collect(),
            signals: vec![signal],
            observed_ns: nanos(now),
            workload_replicas: None,
            workload_rollout_ns: None,
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

    /// YAML of the profiles changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(String, Result<String, EngineError>)> {
        let ns = self.cfg.namespace.clone();
        self.workloads
            .iter_mut()
            .filter(|(_, st)| st.dirty)
            .map(|(name, st)| {
                st.dirty = false;
                (name.clone(), yaml_of(name, &ns, &st.profile))
            })
            .collect()
    }

    /// YAML of every profile.
    pub fn all_yaml(&self) -> Vec<(String, Result<String, EngineError>)> {
        self.workloads
            .iter()
            .map(|(n, st)| (n.clone(), yaml_of(n, &self.cfg.namespace, &st.profile)))
            .collect()
    }

    /// Digests of the profiles changed since the last call (for the edge).
    pub fn take_digests(&mut self) -> Vec<(String, Digest)> {
        let seed = self.cfg.digest_seed;
        self.workloads
            .iter_mut()
            .filter(|(_, st)| st.digest_dirty)
            .map(|(n, st)| {
                st.digest_dirty = false;
                (n.clone(), st.profile.digest(seed))
            })
            .collect()
    }

    /// Digests of every profile.
    pub fn all_digests(&self) -> Vec<(String, Digest)> {
        let seed = self.cfg.digest_seed;
        self.workloads
            .iter()
            .map(|(n, st)| (n.clone(), st.profile.digest(seed)))
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

    /// Alert statistics (reduction ratio).
    pub fn scorer_stats(&self) -> kestrel_scoring::ScorerStats {
        self.scorer.stats()
    }
}

fn file_access(a: kestrel_profile::Access) -> kestrel_scoring::FileAccess {
    use kestrel_profile::Access as A;
    use kestrel_scoring::FileAccess as F;
    match a {
        A::Read => F::Read,
        A::Write => F::Write,
        A::Create => F::Create,
        A::Delete => F::Delete,
        A::Rename => F::Rename,
        #[allow(unreachable_patterns)]
        _ => F::Read,
    }
}

fn yaml_of(name: &str, namespace: &str, p: &Profile) -> Result<String, EngineError> {
    p.to_yaml(Metadata {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
    })
    .map_err(|source| EngineError::Profile {
        workload: name.into(),
        source,
    })
}
