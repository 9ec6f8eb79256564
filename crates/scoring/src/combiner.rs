//! The combiner: weights, redistribution, guards, severity, incident
//! grouping and the resulting [`SecurityAlert`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hasher;
use std::sync::Arc;

use kestrel_events::hash::Fnv64;
use serde::{Deserialize, Serialize};

use crate::alert::{
    isolation_network_policy, rfc3339_ns, EngineScore, Evidence, IncidentSummary, LlmStatus,
    LlmSummary, Recommendation, RecommendedAction, RuleHitSummary, ScoreBreakdown, SecurityAlert,
    Severity, QUARANTINE_LABEL,
};
use crate::candidate::{AnomalyShape, CandidateAlert, Signal};
use crate::cluster::{ClusterAssessment, ClusterConfig, ClusterEngine};
use crate::deviation::{DeviationConfig, DeviationEngine, DeviationPart};
use crate::error::{Error, Result};
use crate::llm::{
    LlmAnswer, LlmEngine, LlmEngineConfig, LlmOutcome, LlmQueueConfig, LlmRequest, LlmTicket,
    OpenAiClient, OpenAiConfig, Verdict,
};
use crate::rules::{RuleAction, RuleMatches, RuleSet};

/// Engine weights; they need not sum to 100 (the total is normalised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Rules engine.
    pub rules: f64,
    /// Profile deviation ([`crate::DeviationEngine`]).
    pub deviation: f64,
    /// Cluster statistics.
    pub cluster: f64,
    /// LLM judgement.
    pub llm: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            rules: 40.0,
            deviation: 30.0,
            cluster: 25.0,
            llm: 35.0,
        }
    }
}

/// Lower bounds of the severity bands (total score, 0..=100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityBands {
    /// Low from here.
    pub low: f64,
    /// Medium from here.
    pub medium: f64,
    /// High from here.
    pub high: f64,
    /// Critical from here.
    pub critical: f64,
}

impl Default for SeverityBands {
    fn default() -> Self {
        Self {
            low: 25.0,
            medium: 50.0,
            high: 80.0,
            critical: 95.0,
        }
    }
}

impl SeverityBands {
    /// The severity of a total score.
    pub fn severity(&self, total: f64) -> Severity {
        if total >= self.critical {
            Severity::Critical
        } else if total >= self.high {
            Severity::High
        } else if total >= self.medium {
            Severity::Medium
        } else if total >= self.low {
            Severity::Low
        } else {
            Severity::Info
        }
    }
}

/// Incident grouping settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct IncidentConfig {
    /// An incident with no repeat for this long is closed; the next
    /// occurrence opens a new one (s).
    pub idle_secs: u64,
    /// Pods listed in an alert (the total is always counted).
    pub max_pods_listed: usize,
    /// Most open incidents kept; past it, idle ones are closed first, then
    /// the least recently seen.
    pub max_open: usize,
    /// Anomalies of one process subtree in one container fold into one
    /// incident while the subtree's latest anomaly is at most this old (s):
    /// a process whose pid, or an ancestor's, took part in an incident
    /// joins it. 0 turns folding off (one incident per shape).
    pub subtree_window_secs: u64,
    /// Points each distinct (program, kind of activity) pair after the
    /// first adds to an incident's total (its breadth): a shell that starts
    /// a program that connects out is three. Many files or peers of one
    /// program are not breadth but a sweep or a scan, which the deviation
    /// engine scores.
    pub breadth_points: f64,
    /// Most points breadth adds.
    pub breadth_cap: f64,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            idle_secs: 3600,
            max_pods_listed: 20,
            max_open: 50_000,
            subtree_window_secs: 300,
            breadth_points: 4.0,
            breadth_cap: 12.0,
        }
    }
}

impl IncidentConfig {
    /// Breadth points for an incident of `facets` distinct (program, kind
    /// of activity) pairs.
    pub fn breadth(&self, facets: usize) -> f64 {
        (self.breadth_points * facets.saturating_sub(1) as f64).min(self.breadth_cap)
    }
}

/// All scoring settings (the `scoring:` section of the operator config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringConfig {
    /// Engine weights.
    pub weights: Weights,
    /// Totals at or above this become alerts.
    pub alert_threshold: f64,
    /// Severity bands.
    pub severity: SeverityBands,
    /// Profile-deviation engine.
    pub deviation: DeviationConfig,
    /// Cluster engine.
    pub cluster: ClusterConfig,
    /// Incident grouping.
    pub incidents: IncidentConfig,
    /// LLM cache and budget.
    pub llm_engine: LlmEngineConfig,
    /// The deferred path's queue: capacity, concurrency, deadline.
    pub llm_queue: LlmQueueConfig,
    /// The OpenAI-compatible endpoint; absent: no LLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<OpenAiConfig>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            alert_threshold: 50.0,
            severity: SeverityBands::default(),
            deviation: DeviationConfig::default(),
            cluster: ClusterConfig::default(),
            incidents: IncidentConfig::default(),
            llm_engine: LlmEngineConfig::default(),
            llm_queue: LlmQueueConfig::default(),
            llm: None,
        }
    }
}

impl ScoringConfig {
    /// Parses the YAML form.
    pub fn from_yaml(yaml: &str) -> Result<Self> {
        let c: Self = serde_saphyr::from_str(yaml).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges and ordering.
    pub fn validate(&self) -> Result<()> {
        let w = &self.weights;
        for (n, v) in [
            ("rules", w.rules),
            ("deviation", w.deviation),
            ("cluster", w.cluster),
            ("llm", w.llm),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::Config(format!("weights.{n} must be a number >= 0")));
            }
        }
        if w.rules + w.deviation + w.cluster + w.llm <= 0.0 {
            return Err(Error::Config("weights must not all be 0".into()));
        }
        let t = self.alert_threshold;
        if !(0.0..=100.0).contains(&t) {
            return Err(Error::Config("alertThreshold must be in 0..=100".into()));
        }
        let b = &self.severity;
        if !(0.0 <= b.low
            && b.low <= b.medium
            && b.medium <= b.high
            && b.high <= b.critical
            && b.critical <= 100.0)
        {
            return Err(Error::Config(
                "severity bands must satisfy 0 <= low <= medium <= high <= critical <= 100".into(),
            ));
        }
        let c = &self.cluster;
        if !(c.rollout_fraction > 0.0 && c.rollout_fraction <= 1.0) {
            return Err(Error::Config(
                "cluster.rolloutFraction must be in (0, 1]".into(),
            ));
        }
        if !(0.0..=100.0).contains(&c.outlier_score) {
            return Err(Error::Config(
                "cluster.outlierScore must be in 0..=100".into(),
            ));
        }
        self.deviation.validate()?;
        let i = &self.incidents;
        for (n, v) in [
            ("breadthPoints", i.breadth_points),
            ("breadthCap", i.breadth_cap),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(Error::Config(format!("incidents.{n} must be in 0..=100")));
            }
        }
        let q = &self.llm_queue;
        if q.capacity == 0 || q.concurrency == 0 || q.deadline_ms == 0 {
            return Err(Error::Config(
                "llmQueue.capacity, concurrency and deadlineMs must be >= 1".into(),
            ));
        }
        Ok(())
    }

    /// The LLM engine for `llm`, with the API key from its environment
    /// variable; `None` when no endpoint is configured.
    pub fn build_llm_engine(&self) -> Result<Option<LlmEngine>> {
        match &self.llm {
            None => Ok(None),
            Some(cfg) => {
                let client = OpenAiClient::new(cfg.clone())?;
                Ok(Some(LlmEngine::new(
                    Arc::new(client),
                    self.llm_engine.clone(),
                )))
            }
        }
    }
}

/// What became of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new alert.
    Created(Box<SecurityAlert>),
    /// The incident's existing alert was updated (count, last seen, score).
    Updated {
        /// The alert as it is now.
        alert: Box<SecurityAlert>,
        /// Whether the severity changed (sinks may re-notify only then).
        severity_changed: bool,
    },
    /// Below the threshold and no alert exists for the incident yet.
    BelowThreshold {
        /// The scores, for logs and metrics.
        breakdown: Box<ScoreBreakdown>,
        /// Occurrences of the incident so far.
        count: u64,
    },
}

impl Outcome {
    /// The alert, if there is one.
    pub fn alert(&self) -> Option<&SecurityAlert> {
        match self {
            Self::Created(a) | Self::Updated { alert: a, .. } => Some(a),
            Self::BelowThreshold { .. } => None,
        }
    }
}

/// Counters, with the reduction ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScorerStats {
    /// Candidates scored.
    pub candidates: u64,
    /// Alerts created.
    pub alerts_created: u64,
    /// Updates to existing alerts.
    pub alerts_updated: u64,
    /// Candidates below the threshold with no alert.
    pub below_threshold: u64,
    /// Incidents open now.
    pub open_incidents: usize,
    /// Deferred LLM judgements awaited now.
    pub llm_pending: usize,
    /// Deferred LLM answers (and time-outs) applied to incidents.
    pub llm_answers: u64,
}

impl ScorerStats {
    /// Candidates per alert created (`candidates` when no alert was made:
    /// every candidate was absorbed).
    pub fn reduction_ratio(&self) -> f64 {
        self.candidates as f64 / (self.alerts_created.max(1)) as f64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct IncidentKey {
    namespace: String,
    workload: String,
    shape: AnomalyShape,
}

/// The LLM's part of an incident on the deferred path.
#[derive(Debug, Clone, PartialEq)]
enum IncidentLlm {
    /// Not asked yet (or scored only with [`Scorer::assess`]).
    NotAsked,
    /// The queue had no room; the next occurrence asks again.
    QueueFull,
    /// Asked; the answer is due by `deadline_ns`.
    Pending { ticket: LlmTicket, deadline_ns: u64 },
    /// Answered (a verdict, unavailable, or timed out).
    Settled(LlmOutcome),
}

/// What an LLM answer needs to re-score an incident: its latest
/// occurrence as it was scored.
#[derive(Debug)]
struct Latest {
    candidate: CandidateAlert,
    cluster: ClusterAssessment,
    rules: RulePart,
    deviation: DeviationPart,
    /// [`activity_of`] its shape.
    activity: u64,
}

/// What [`Scorer::record`] found for one occurrence.
struct Recorded {
    key: IncidentKey,
    cluster: ClusterAssessment,
    deviation: DeviationPart,
    /// [`activity_of`] its shape.
    activity: u64,
    /// Whether the activity is new to its incident.
    new_activity: bool,
}

/// `shape` with the ids of the rules hit folded into its bucket (unchanged
/// when no rule hit).
fn grouping_shape(shape: AnomalyShape, rules: &RulePart) -> AnomalyShape {
    grouping_shape_of(shape, rules.hits.iter().map(|h| h.id.as_str()))
}

/// [`grouping_shape`] from the ids of the rules hit.
fn grouping_shape_of<'a>(
    mut shape: AnomalyShape,
    rule_ids: impl Iterator<Item = &'a str>,
) -> AnomalyShape {
    let mut ids: Vec<&str> = rule_ids.collect();
    if ids.is_empty() {
        return shape;
    }
    ids.sort_unstable();
    ids.dedup();
    let mut h = Fnv64::new();
    h.write_field(&shape.bucket.to_le_bytes());
    for id in ids {
        h.write_field(id.as_bytes());
    }
    shape.bucket = h.finish();
    shape
}

/// One number per distinct activity (anomaly shape).
fn activity_of(shape: &AnomalyShape) -> u64 {
    let mut h = Fnv64::new();
    h.write_field(shape.trie_path.as_bytes());
    h.write_field(&shape.bucket.to_le_bytes());
    h.finish()
}

#[derive(Debug)]
struct Incident {
    id: String,
    count: u64,
    first_seen_ns: u64,
    last_seen_ns: u64,
    pods: BTreeSet<String>,
    pods_total: usize,
    alert: Option<SecurityAlert>,
    llm: IncidentLlm,
    /// Kept only while an answer is pending.
    latest: Option<Box<Latest>>,
    /// The strongest occurrence so far: the alert's evidence.
    peak: Option<Box<Latest>>,
    /// What took part: distinct activities, processes, commands, files and
    /// peers.
    breadth: Breadth,
}

/// Most distinct activities and processes counted per incident.
const MAX_BREADTH_TRACKED: usize = 1024;
/// Most commands, files and peers listed per incident.
const MAX_LISTED: usize = 20;
/// Longest command line listed (characters).
const MAX_COMMAND_CHARS: usize = 512;

/// The distinct things one incident took part in.
#[derive(Debug, Default)]
struct Breadth {
    /// Distinct shapes.
    activities: HashSet<u64>,
    /// Distinct (program, kind of signal) pairs: what breadth scores. Many
    /// files or peers of one program are a sweep or a scan, which the
    /// deviation engine scores already.
    facets: HashSet<u64>,
    pids: HashSet<u32>,
    commands: Vec<String>,
    files: Vec<String>,
    peers: Vec<String>,
}

impl Breadth {
    /// Counts `c` of activity `activity`; whether it is new to the
    /// incident.
    fn note(&mut self, c: &CandidateAlert, activity: u64) -> bool {
        let new = self.activities.len() < MAX_BREADTH_TRACKED && self.activities.insert(activity);
        for s in &c.signals {
            if self.facets.len() < MAX_BREADTH_TRACKED {
                let mut h = Fnv64::new();
                h.write_field(c.exe.as_bytes());
                h.write_field(s.kind().as_bytes());
                self.facets.insert(h.finish());
            }
        }
        if c.pid != 0 && self.pids.len() < MAX_BREADTH_TRACKED {
            self.pids.insert(c.pid);
        }
        let mut command = c.exe.clone();
        for a in c.args.raw().iter().skip(1) {
            command.push(' ');
            command.push_str(a);
        }
        if let Some((i, _)) = command.char_indices().nth(MAX_COMMAND_CHARS) {
            command.truncate(i);
            command.push('…');
        }
        list(&mut self.commands, command);
        for s in &c.signals {
            match s {
                Signal::UnknownFile { path, access, .. } => {
                    list(&mut self.files, format!("{path} ({})", access.as_str()));
                }
                Signal::FailedExec { path, error, .. } => {
                    list(&mut self.files, format!("{path} (exec failed: {error})"));
                }
                Signal::UnknownPeer {
                    addr,
                    port,
                    proto,
                    direction,
                } => list(
                    &mut self.peers,
                    format!(
                        "{} {addr}:{port}/{}",
                        direction.as_str(),
                        proto.key().as_str()
                    ),
                ),
                Signal::UnknownProcess | Signal::UnusualArguments { .. } => {}
            }
        }
        new
    }
}

fn list(v: &mut Vec<String>, item: String) {
    if v.len() < MAX_LISTED && !v.contains(&item) {
        v.push(item);
    }
}

/// The rules engine's part for one candidate, owned so that it can wait
/// for an LLM answer.
#[derive(Debug, Clone)]
struct RulePart {
    score: f64,
    hit: bool,
    reason: String,
    hits: Vec<RuleHitSummary>,
    advice: Vec<String>,
}

impl RulePart {
    fn of(matches: &RuleMatches<'_>) -> Self {
        let reason = if matches.is_hit() {
            let ids: Vec<String> = matches
                .rules()
                .map(|r| format!("{} ({})", r.id(), r.score()))
                .collect();
            format!("hit {}", ids.join(", "))
        } else {
            "no rule hit".to_string()
        };
        Self {
            score: matches.score(),
            hit: matches.is_hit(),
            reason,
            hits: matches
                .rules()
                .map(|r| RuleHitSummary {
                    id: r.id().to_string(),
                    description: r.description().to_string(),
                    score: r.score(),
                    tags: r.tags().to_vec(),
                    action: r.action(),
                })
                .collect(),
            advice: matches
                .rules()
                .filter_map(|r| r.recommendation().map(str::to_string))
                .collect(),
        }
    }
}

/// Upper bound on the distinct pods remembered per incident.
const MAX_PODS_TRACKED: usize = 10_000;

/// Whether the deferred LLM queue can take a judgement now (see
/// [`Scorer::assess_deferred`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmSlot {
    /// It can: an incident that needs a judgement gets an [`LlmRequest`].
    Free,
    /// It cannot: the LLM part says `LLM: unavailable (queue full)`.
    QueueFull,
}

/// What became of one candidate on the deferred path.
#[derive(Debug, Clone)]
pub struct Deferred {
    /// The outcome now, without waiting for the LLM: its part reads
    /// pending, the incident's earlier answer, or queue full.
    pub outcome: Outcome,
    /// The judgement to queue, when the incident needs one; its answer goes
    /// to [`Scorer::apply_llm`].
    pub request: Option<LlmRequest>,
}

/// The stateful scorer: rules, cluster statistics and incidents, combined
/// with an LLM outcome the caller obtains ([`Scorer::score`] waits for it;
/// [`Scorer::assess_deferred`] and [`Scorer::apply_llm`] do not).
#[derive(Debug)]
pub struct Scorer {
    config: ScoringConfig,
    rules: RuleSet,
    deviation: DeviationEngine,
    cluster: ClusterEngine,
    incidents: HashMap<IncidentKey, Incident>,
    /// (container, pid) of every process that took part in an incident,
    /// with when it last did: its descendants' anomalies join the same
    /// incident.
    subtrees: HashMap<(String, u32), (IncidentKey, u64)>,
    stats: ScorerStats,
    /// Deferred judgements not answered yet: ticket → incident, deadline.
    awaiting: HashMap<LlmTicket, (IncidentKey, u64)>,
    /// The same, ordered by deadline.
    deadlines: BTreeSet<(u64, LlmTicket)>,
    next_ticket: u64,
    /// Workloads the cluster engine found released since the last
    /// [`Scorer::take_relearn_suggestions`] (workload → the reason), so a
    /// release that raises no alert still suggests relearning.
    relearn: BTreeMap<String, String>,
}

fn rule_action_rank(a: RuleAction) -> RecommendedAction {
    match a {
        RuleAction::Investigate => RecommendedAction::Investigate,
        RuleAction::RotateCredentials => RecommendedAction::RotateCredentials,
        RuleAction::KillProcess => RecommendedAction::KillProcess,
        RuleAction::IsolatePod => RecommendedAction::IsolatePod,
    }
}

/// Two decimals, as scores are shown.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Scorer {
    /// A scorer with the given settings and rules.
    pub fn new(config: ScoringConfig, rules: RuleSet) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            cluster: ClusterEngine::new(config.cluster.clone()),
            deviation: DeviationEngine::new(config.deviation.clone())?,
            config,
            rules,
            incidents: HashMap::new(),
            subtrees: HashMap::new(),
            stats: ScorerStats::default(),
            awaiting: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_ticket: 0,
            relearn: BTreeMap::new(),
        })
    }

    /// A pod that no longer exists: the cluster statistics stop counting
    /// it ([`ClusterEngine::forget_pod`]); its incidents and alerts stay.
    pub fn forget_pod(&mut self, namespace: &str, workload: &str, pod: &str) {
        self.cluster.forget_pod(namespace, workload, pod);
    }

    /// The workloads whose anomalies the cluster engine judged a release
    /// (most pods at once, or right after a rollout) since the last call,
    /// with the reason: whether or not any alert was raised.
    pub fn take_relearn_suggestions(&mut self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.relearn)
    }

    /// The settings.
    pub fn config(&self) -> &ScoringConfig {
        &self.config
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Takes up the incident of an alert written before a restart, so its
    /// repeats update that alert (same id, the count going on from `count`)
    /// instead of raising a new one. `last_seen_ns` is the latest
    /// occurrence the stored alert knows (its status is newer than its
    /// spec); an alert idle for longer than `incidents.idleSecs` at
    /// `now_ns` is not taken up (its incident is over). Returns whether it
    /// was.
    ///
    /// What comes back is the incident's identity, counters, pods and
    /// lists; not its strongest occurrence (the next occurrence is scored
    /// on its own and becomes the evidence if the alert is rewritten), its
    /// process subtree (pids do not survive a restart) or a pending LLM
    /// judgement (the next occurrence asks again).
    pub fn restore_incident(
        &mut self,
        alert: &SecurityAlert,
        count: u64,
        last_seen_ns: u64,
        pods: &[String],
        now_ns: u64,
    ) -> bool {
        let idle = self
            .config
            .incidents
            .idle_secs
            .saturating_mul(1_000_000_000);
        let last_seen_ns = last_seen_ns.max(alert.incident.last_seen_ns);
        if alert.id.is_empty() || now_ns.saturating_sub(last_seen_ns) > idle {
            return false;
        }
        let e = &alert.evidence;
        let key = IncidentKey {
            namespace: e.namespace.clone(),
            workload: e.workload.clone(),
            shape: grouping_shape_of(
                e.shape.clone(),
                alert.rule_hits.iter().map(|h| h.id.as_str()),
            ),
        };
        if self
            .incidents
            .get(&key)
            .is_some_and(|i| i.last_seen_ns >= last_seen_ns)
        {
            return false;
        }
        if self.incidents.len() >= self.config.incidents.max_open
            && !self.incidents.contains_key(&key)
        {
            self.make_room(now_ns);
        }
        let mut pods_seen: BTreeSet<String> = alert.incident.pods.iter().cloned().collect();
        pods_seen.extend(pods.iter().take(MAX_PODS_TRACKED).cloned());
        let pods_total = alert.incident.pods_total.max(pods_seen.len());
        let mut breadth = Breadth::default();
        breadth.activities.insert(activity_of(&key.shape));
        breadth.commands.clone_from(&alert.incident.commands);
        breadth.files.clone_from(&alert.incident.files);
        breadth.peers.clone_from(&alert.incident.peers);
        self.incidents.insert(
            key,
            Incident {
                id: alert.id.clone(),
                count: count.max(alert.incident.count),
                first_seen_ns: alert.incident.first_seen_ns.min(last_seen_ns),
                last_seen_ns,
                pods: pods_seen,
                pods_total,
                alert: Some(alert.clone()),
                llm: IncidentLlm::NotAsked,
                latest: None,
                peak: None,
                breadth,
            },
        );
        true
    }

    /// Counters so far.
    pub fn stats(&self) -> ScorerStats {
        ScorerStats {
            open_incidents: self.incidents.len(),
            llm_pending: self.awaiting.len(),
            ..self.stats
        }
    }

    /// Scores a candidate end to end: rules, then the LLM (when an engine
    /// is given; its cache and budget apply), then [`Scorer::assess`].
    /// This waits for the LLM; a caller that must not wait uses
    /// [`Scorer::assess_deferred`].
    pub async fn score(
        &mut self,
        c: &CandidateAlert,
        llm: Option<&LlmEngine>,
        now_ns: u64,
    ) -> Outcome {
        let outcome = match llm {
            None => LlmOutcome::not_configured(),
            Some(engine) => {
                let shape = c.shape();
                let ids = self.rules.evaluate(c).ids();
                engine.judge(c, &ids, &shape, now_ns).await
            }
        };
        self.assess(c, outcome, now_ns)
    }

    /// Combines the engines for one candidate, given the LLM's outcome, and
    /// creates or updates the incident's alert. Pure apart from the
    /// scorer's own state; `now_ns` is the only clock.
    pub fn assess(&mut self, c: &CandidateAlert, llm: LlmOutcome, now_ns: u64) -> Outcome {
        let rules = RulePart::of(&self.rules.evaluate(c));
        let r = self.record(c, &rules, now_ns);
        let outcome = self.render(
            &r.key,
            c,
            &r.cluster,
            &rules,
            &r.deviation,
            r.activity,
            &llm,
        );
        self.count(&outcome);
        outcome
    }

    /// Like [`Scorer::assess`], without waiting for the LLM: the candidate
    /// is scored at once with the LLM part marked pending (weight
    /// redistributed), and when its incident needs a judgement and `slot`
    /// is free, the returned request is to be queued; its answer (or
    /// [`Scorer::time_out_llm`]) re-scores the incident later.
    ///
    /// One judgement per incident: repeats while it is pending stay
    /// pending; a verdict is reused; a time-out is kept (a hung endpoint
    /// is not asked again for every repeat); after "queue full" or another
    /// failure the next repeat asks again.
    pub fn assess_deferred(&mut self, c: &CandidateAlert, slot: LlmSlot, now_ns: u64) -> Deferred {
        let rules = RulePart::of(&self.rules.evaluate(c));
        let Recorded {
            key,
            cluster,
            deviation,
            activity,
            new_activity,
        } = self.record(c, &rules, now_ns);
        if new_activity {
            // the incident did something new: an earlier answer judged
            // something else
            if let Some(inc) = self.incidents.get_mut(&key) {
                if matches!(inc.llm, IncidentLlm::Settled(_)) {
                    inc.llm = IncidentLlm::NotAsked;
                }
            }
        }
        let (llm, request) = self.plan_llm(
            &key, c, &cluster, &rules, &deviation, activity, slot, now_ns,
        );
        let outcome = self.render(&key, c, &cluster, &rules, &deviation, activity, &llm);
        self.count(&outcome);
        Deferred { outcome, request }
    }

    /// Applies a deferred judgement's answer: re-scores its incident with
    /// the LLM's outcome and updates (or, when it now crosses the
    /// threshold, creates) the incident's alert, keeping its id. `None`
    /// when the answer is no longer awaited (timed out, or the incident was
    /// closed).
    ///
    /// The guard of [`Scorer::assess`] holds: a verdict may raise but never
    /// lower a rule hit.
    pub fn apply_llm(&mut self, answer: LlmAnswer) -> Option<Outcome> {
        let (key, deadline) = self.awaiting.remove(&answer.ticket)?;
        self.deadlines.remove(&(deadline, answer.ticket));
        self.settle(&key, answer.ticket, answer.outcome)
    }

    /// Settles the deferred judgements whose deadline has passed at
    /// `now_ns` as timed out (`LLM: timed out after <deadline> ms`) and
    /// returns their incidents' re-scored outcomes.
    pub fn time_out_llm(&mut self, now_ns: u64) -> Vec<Outcome> {
        let after_ms = self.config.llm_queue.deadline_ms;
        let mut out = Vec::new();
        while let Some(&(deadline, ticket)) = self.deadlines.first() {
            if deadline > now_ns {
                break;
            }
            self.deadlines.remove(&(deadline, ticket));
            if let Some((key, _)) = self.awaiting.remove(&ticket) {
                if let Some(o) = self.settle(&key, ticket, LlmOutcome::TimedOut { after_ms }) {
                    out.push(o);
                }
            }
        }
        out
    }

    /// Counts an occurrence: cluster statistics, the deviation engine's
    /// sweeps, and incident bookkeeping. Returns the incident's key, the
    /// engine parts, and whether the occurrence is an activity new to its
    /// incident.
    ///
    /// The incident is the one its process subtree is already part of (its
    /// pid or an ancestor's took part within `subtreeWindowSecs`), else the
    /// one of its shape in its workload.
    ///
    /// The shape counted (by the cluster statistics and the incidents) is
    /// the candidate's, told apart by the rules it hits: two anomalies whose
    /// arguments the profile finds similar but that hit different rules
    /// (`echo … >> /etc/passwd` and `nc … < /etc/passwd` under one shell)
    /// are two techniques, not one anomaly in two pods.
    fn record(&mut self, c: &CandidateAlert, rules: &RulePart, now_ns: u64) -> Recorded {
        self.stats.candidates += 1;
        let shape = grouping_shape(c.shape(), rules);
        let cluster = self.cluster.observe(c, &shape, now_ns);
        if cluster.relearn_suggested && !self.relearn.contains_key(&c.workload) {
            self.relearn
                .insert(c.workload.clone(), cluster.reason.clone());
        }
        let deviation = self.deviation.observe(c, now_ns);
        let idle = self
            .config
            .incidents
            .idle_secs
            .saturating_mul(1_000_000_000);
        let key = self
            .subtree_incident(c, now_ns)
            .unwrap_or_else(|| IncidentKey {
                namespace: c.namespace.clone(),
                workload: c.workload.clone(),
                shape: shape.clone(),
            });
        if self.incidents.len() >= self.config.incidents.max_open
            && !self.incidents.contains_key(&key)
        {
            self.make_room(now_ns);
        }
        let inc = self
            .incidents
            .entry(key.clone())
            .or_insert_with(|| new_incident(c, &key.shape, now_ns));
        if now_ns.saturating_sub(inc.last_seen_ns) > idle {
            *inc = new_incident(c, &key.shape, now_ns);
        }
        inc.count += 1;
        inc.last_seen_ns = inc.last_seen_ns.max(now_ns);
        inc.first_seen_ns = inc.first_seen_ns.min(now_ns);
        if !inc.pods.contains(&c.pod) && inc.pods_total < MAX_PODS_TRACKED {
            inc.pods.insert(c.pod.clone());
            inc.pods_total = inc.pods.len();
        }
        let activity = activity_of(&shape);
        let new_activity = inc.breadth.note(c, activity);
        self.link_subtree(c, &key, now_ns);
        Recorded {
            key,
            cluster,
            deviation,
            activity,
            new_activity,
        }
    }

    fn subtree_window_ns(&self) -> u64 {
        self.config
            .incidents
            .subtree_window_secs
            .saturating_mul(1_000_000_000)
    }

    /// The open incident that `c`'s process, or one of its ancestors, took
    /// part in within the subtree window (the nearest one first).
    fn subtree_incident(&self, c: &CandidateAlert, now_ns: u64) -> Option<IncidentKey> {
        let window = self.subtree_window_ns();
        if window == 0 || c.container_id.is_empty() {
            return None;
        }
        let mut key = (c.container_id.clone(), 0);
        std::iter::once(Some(c.pid))
            .chain(c.chain.iter().map(|a| a.pid))
            .flatten()
            .filter(|&pid| pid != 0)
            .find_map(|pid| {
                key.1 = pid;
                let (k, seen) = self.subtrees.get(&key)?;
                (now_ns.saturating_sub(*seen) <= window && self.incidents.contains_key(k))
                    .then(|| k.clone())
            })
    }

    /// Records that `c`'s process took part in the incident `key`.
    fn link_subtree(&mut self, c: &CandidateAlert, key: &IncidentKey, now_ns: u64) {
        if self.subtree_window_ns() == 0 || c.container_id.is_empty() || c.pid == 0 {
            return;
        }
        if self.subtrees.len() >= self.config.incidents.max_open.saturating_mul(4) {
            self.prune_subtrees(now_ns);
        }
        self.subtrees
            .insert((c.container_id.clone(), c.pid), (key.clone(), now_ns));
    }

    /// Forgets subtree links past the window; when still full, the oldest
    /// half.
    fn prune_subtrees(&mut self, now_ns: u64) {
        let window = self.subtree_window_ns();
        self.subtrees
            .retain(|_, (_, seen)| now_ns.saturating_sub(*seen) <= window);
        let cap = self.config.incidents.max_open.saturating_mul(4);
        if self.subtrees.len() >= cap {
            let mut seen: Vec<u64> = self.subtrees.values().map(|(_, t)| *t).collect();
            let mid = seen.len() / 2;
            let (_, median, _) = seen.select_nth_unstable(mid);
            let median = *median;
            self.subtrees.retain(|_, (_, t)| *t > median);
        }
    }

    /// The LLM outcome to score an occurrence with on the deferred path,
    /// and the request to queue, if any.
    // the three engine parts travel together into `Latest` when a
    // judgement waits
    #[allow(clippy::too_many_arguments)]
    fn plan_llm(
        &mut self,
        key: &IncidentKey,
        c: &CandidateAlert,
        cluster: &ClusterAssessment,
        rules: &RulePart,
        deviation: &DeviationPart,
        activity: u64,
        slot: LlmSlot,
        now_ns: u64,
    ) -> (LlmOutcome, Option<LlmRequest>) {
        let after_ms = self.config.llm_queue.deadline_ms;
        let Some(inc) = self.incidents.get_mut(key) else {
            // `record` just inserted it.
            return (LlmOutcome::not_configured(), None);
        };
        let latest = || {
            Some(Box::new(Latest {
                candidate: c.clone(),
                cluster: cluster.clone(),
                rules: rules.clone(),
                deviation: deviation.clone(),
                activity,
            }))
        };
        match &inc.llm {
            IncidentLlm::Pending {
                deadline_ns,
                ticket,
            } => {
                if now_ns < *deadline_ns {
                    inc.latest = latest();
                    return (LlmOutcome::Pending, None);
                }
                // Past its deadline and not yet timed out by the caller.
                let (deadline, ticket) = (*deadline_ns, *ticket);
                self.awaiting.remove(&ticket);
                self.deadlines.remove(&(deadline, ticket));
                let o = LlmOutcome::TimedOut { after_ms };
                inc.llm = IncidentLlm::Settled(o.clone());
                inc.latest = None;
                return (o, None);
            }
            IncidentLlm::Settled(LlmOutcome::Verdict { verdict, .. }) => {
                let o = LlmOutcome::Verdict {
                    verdict: verdict.clone(),
                    cached: true,
                };
                return (o, None);
            }
            IncidentLlm::Settled(o @ LlmOutcome::TimedOut { .. }) => return (o.clone(), None),
            IncidentLlm::NotAsked
            | IncidentLlm::QueueFull
            | IncidentLlm::Settled(LlmOutcome::Unavailable { .. } | LlmOutcome::Pending) => {}
        }
        if slot == LlmSlot::QueueFull {
            inc.llm = IncidentLlm::QueueFull;
            return (LlmOutcome::queue_full(), None);
        }
        let ticket = LlmTicket(self.next_ticket);
        self.next_ticket += 1;
        let deadline = now_ns.saturating_add(self.config.llm_queue.deadline_ns());
        inc.llm = IncidentLlm::Pending {
            ticket,
            deadline_ns: deadline,
        };
        inc.latest = latest();
        self.awaiting.insert(ticket, (key.clone(), deadline));
        self.deadlines.insert((deadline, ticket));
        let request = LlmRequest {
            ticket,
            candidate: c.clone(),
            rule_ids: rules.hits.iter().map(|h| h.id.clone()).collect(),
            // its own shape: a subtree's incident holds several
            shape: c.shape(),
            asked_ns: now_ns,
        };
        (LlmOutcome::Pending, Some(request))
    }

    /// Re-scores an incident whose pending judgement `ticket` ended.
    fn settle(&mut self, key: &IncidentKey, ticket: LlmTicket, llm: LlmOutcome) -> Option<Outcome> {
        let inc = self.incidents.get_mut(key)?;
        if !matches!(inc.llm, IncidentLlm::Pending { ticket: t, .. } if t == ticket) {
            return None;
        }
        let latest = inc.latest.take()?;
        inc.llm = IncidentLlm::Settled(llm.clone());
        self.stats.llm_answers += 1;
        let outcome = self.render(
            key,
            &latest.candidate,
            &latest.cluster,
            &latest.rules,
            &latest.deviation,
            latest.activity,
            &llm,
        );
        match &outcome {
            Outcome::Created(_) => self.stats.alerts_created += 1,
            Outcome::Updated { .. } => self.stats.alerts_updated += 1,
            Outcome::BelowThreshold { .. } => {}
        }
        Some(outcome)
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Created(_) => self.stats.alerts_created += 1,
            Outcome::Updated { .. } => self.stats.alerts_updated += 1,
            Outcome::BelowThreshold { .. } => self.stats.below_threshold += 1,
        }
    }

    /// Combines the engines for the incident's latest occurrence `c` and
    /// creates or updates its alert. The alert's evidence is the incident's
    /// strongest occurrence (the latest among equals); its breadth
    /// (distinct activities of the subtree) adds points to that total.
    // the occurrence's parts as `record` and the engines gave them
    #[allow(clippy::too_many_arguments)]
    fn render(
        &mut self,
        key: &IncidentKey,
        c: &CandidateAlert,
        cluster: &ClusterAssessment,
        rules: &RulePart,
        deviation: &DeviationPart,
        activity: u64,
        llm: &LlmOutcome,
    ) -> Outcome {
        let mut breakdown = combine(&self.config, rules, deviation, cluster, llm);
        let Some(inc) = self.incidents.get_mut(key) else {
            // `record` inserted it; nothing removes it before this.
            return Outcome::BelowThreshold {
                count: 0,
                breakdown: Box::new(breakdown),
            };
        };
        // The strongest occurrence, both scored with the incident's LLM
        // outcome now.
        let peak_breakdown = inc
            .peak
            .as_ref()
            .filter(|p| p.activity != activity)
            .map(|p| combine(&self.config, &p.rules, &p.deviation, &p.cluster, llm))
            .filter(|b| b.total > breakdown.total);
        match peak_breakdown {
            Some(b) => breakdown = b,
            None => {
                inc.peak = Some(Box::new(Latest {
                    candidate: c.clone(),
                    cluster: cluster.clone(),
                    rules: rules.clone(),
                    deviation: deviation.clone(),
                    activity,
                }))
            }
        }
        let Some(peak) = inc.peak.as_deref() else {
            // set just above
            return Outcome::BelowThreshold {
                count: inc.count,
                breakdown: Box::new(breakdown),
            };
        };
        let (c, cluster, rules) = (&peak.candidate, &peak.cluster, &peak.rules);
        let activities = inc.breadth.activities.len().max(1);
        let facets = inc.breadth.facets.len().max(1);
        let breadth = self.config.incidents.breadth(facets);
        if breadth > 0.0 {
            let before = breakdown.total;
            breakdown.total = (before + breadth).min(100.0);
            breakdown.breadth = round2(breakdown.total - before);
            if breakdown.breadth > 0.0 {
                breakdown.notes.push(format!(
                    "{facets} kinds of activity by its programs: +{:.1}",
                    breakdown.breadth
                ));
            }
        }
        let severity = self.config.severity.severity(breakdown.total);
        let alerting = breakdown.total >= self.config.alert_threshold;
        let max_listed = self.config.incidents.max_pods_listed;
        if inc.alert.is_none() && !alerting {
            return Outcome::BelowThreshold {
                count: inc.count,
                breakdown: Box::new(breakdown),
            };
        }

        let llm_summary = match llm {
            LlmOutcome::Verdict { verdict, cached } => LlmSummary {
                status: LlmStatus::Ok,
                verdict: Some(verdict.verdict),
                explanation: verdict.explanation.clone(),
                tactics: verdict.tactics.clone(),
                cached: *cached,
            },
            LlmOutcome::Unavailable { reason } => LlmSummary {
                status: LlmStatus::Unavailable,
                verdict: None,
                explanation: format!("LLM: unavailable ({reason})"),
                tactics: Vec::new(),
                cached: false,
            },
            LlmOutcome::Pending => LlmSummary {
                status: LlmStatus::Pending,
                verdict: None,
                explanation: "LLM: pending".into(),
                tactics: Vec::new(),
                cached: false,
            },
            LlmOutcome::TimedOut { after_ms } => LlmSummary {
                status: LlmStatus::TimedOut,
                verdict: None,
                explanation: format!("LLM: timed out after {after_ms} ms"),
                tactics: Vec::new(),
                cached: false,
            },
        };
        let mut mitre: Vec<String> = rules
            .hits
            .iter()
            .flat_map(|r| r.tags.iter().cloned())
            .chain(llm_summary.tactics.iter().cloned())
            .collect();
        mitre.sort();
        mitre.dedup();

        let recommendation = recommend(
            c,
            &inc.id,
            severity,
            &rules.hits,
            cluster,
            rules.advice.clone(),
        );
        let title = title(c, &rules.hits, llm);
        let pods: Vec<String> = inc.pods.iter().take(max_listed).cloned().collect();
        let alert = SecurityAlert {
            id: inc.id.clone(),
            title,
            severity,
            score: round2(breakdown.total),
            evidence: Evidence {
                namespace: c.namespace.clone(),
                workload: c.workload.clone(),
                pod: c.pod.clone(),
                container_id: c.container_id.clone(),
                node: c.node.clone(),
                image: c.image.clone(),
                pid: c.pid,
                exe: c.exe.clone(),
                args: c.args.raw().to_vec(),
                args_normalized: c.args.normalized().to_string(),
                process_chain: c.chain.clone(),
                signals: c.signals.clone(),
                shape: c.shape(),
            },
            breakdown,
            llm: llm_summary,
            rule_hits: rules.hits.clone(),
            mitre,
            recommendation,
            incident: IncidentSummary {
                count: inc.count,
                first_seen_ns: inc.first_seen_ns,
                last_seen_ns: inc.last_seen_ns,
                first_seen: rfc3339_ns(inc.first_seen_ns),
                last_seen: rfc3339_ns(inc.last_seen_ns),
                pods,
                pods_total: inc.pods_total,
                activities,
                processes: inc.breadth.pids.len(),
                commands: inc.breadth.commands.clone(),
                files: inc.breadth.files.clone(),
                peers: inc.breadth.peers.clone(),
            },
        };
        match inc.alert.replace(alert.clone()) {
            None => Outcome::Created(Box::new(alert)),
            Some(prev) => Outcome::Updated {
                severity_changed: prev.severity != alert.severity,
                alert: Box::new(alert),
            },
        }
    }
    /// Closes incidents idle for longer than `incidents.idleSecs` and drops
    /// expired cluster state; returns how many incidents were closed.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let idle = self
            .config
            .incidents
            .idle_secs
            .saturating_mul(1_000_000_000);
        let before = self.incidents.len();
        self.incidents
            .retain(|_, i| now_ns.saturating_sub(i.last_seen_ns) <= idle);
        self.cluster.prune(now_ns);
        self.deviation.expire(now_ns);
        self.prune_subtrees(now_ns);
        before - self.incidents.len()
    }

    fn make_room(&mut self, now_ns: u64) {
        self.expire(now_ns);
        if self.incidents.len() >= self.config.incidents.max_open {
            if let Some(oldest) = self
                .incidents
                .iter()
                .min_by_key(|(_, i)| i.last_seen_ns)
                .map(|(k, _)| k.clone())
            {
                self.incidents.remove(&oldest);
            }
        }
    }
}

fn new_incident(c: &CandidateAlert, shape: &AnomalyShape, now_ns: u64) -> Incident {
    let mut h = Fnv64::new();
    h.write_field(c.namespace.as_bytes());
    h.write_field(c.workload.as_bytes());
    h.write_field(shape.to_string().as_bytes());
    h.write_field(&now_ns.to_le_bytes());
    Incident {
        id: format!("{:016x}", h.finish()),
        count: 0,
        first_seen_ns: now_ns,
        last_seen_ns: now_ns,
        pods: BTreeSet::new(),
        pods_total: 0,
        alert: None,
        llm: IncidentLlm::NotAsked,
        latest: None,
        peak: None,
        breadth: Breadth::default(),
    }
}

/// Weighted sum over the engines that answered, their weights normalised to
/// 100 (an engine that abstains has its weight redistributed):
///
/// - the rules engine answers only when a rule hit ("no rule hit" is not
///   evidence of innocence: the profile already says something is new);
/// - the deviation engine always answers (every candidate deviates);
/// - the cluster engine abstains when the replica count is unknown or 1;
/// - the LLM abstains when unavailable, pending or timed out.
///
/// Guard: the profile deviation and the LLM's verdict may raise but never
/// lower a rule hit: with a hit, the total is the highest over leaving
/// either or both of them out.
fn combine(
    cfg: &ScoringConfig,
    rules: &RulePart,
    deviation: &DeviationPart,
    cluster: &ClusterAssessment,
    llm: &LlmOutcome,
) -> ScoreBreakdown {
    let w = &cfg.weights;
    let r = rules.hit.then_some(rules.score);
    let d = deviation.score;
    let c = cluster.score;
    let l = match llm {
        LlmOutcome::Verdict { verdict, .. } => Some(verdict.score),
        LlmOutcome::Unavailable { .. } | LlmOutcome::Pending | LlmOutcome::TimedOut { .. } => None,
    };
    // (rules, deviation, cluster, llm) effective weights, normalised to 100
    // over the engines that answered and are used.
    let weights = |use_d: bool, use_l: bool| {
        let on = [r.is_some(), use_d, c.is_some(), use_l && l.is_some()];
        let raw = [w.rules, w.deviation, w.cluster, w.llm];
        let avail: f64 = (0..4).filter(|&i| on[i]).map(|i| raw[i]).sum();
        let k = if avail > 0.0 { 100.0 / avail } else { 0.0 };
        let mut out = [0.0; 4];
        for i in 0..4 {
            if on[i] {
                out[i] = raw[i] * k;
            }
        }
        out
    };
    let scores = [r.unwrap_or(0.0), d, c.unwrap_or(0.0), l.unwrap_or(0.0)];
    let total_of = |ws: &[f64; 4]| (0..4).map(|i| ws[i] * scores[i]).sum::<f64>() / 100.0;
    let mut chosen = (weights(true, true), true, true);
    let mut total = total_of(&chosen.0);
    let mut notes = Vec::new();
    if rules.hit {
        for (use_d, use_l) in [(true, false), (false, true), (false, false)] {
            let ws = weights(use_d, use_l);
            let t = total_of(&ws);
            if t > total + 1e-9 {
                chosen = (ws, use_d, use_l);
                total = t;
            }
        }
        let (_, use_d, use_l) = chosen;
        let mut left_out = Vec::new();
        if !use_d {
            left_out.push("the profile deviation");
        }
        if !use_l && l.is_some() {
            left_out.push("the LLM's verdict");
        }
        if !left_out.is_empty() {
            notes.push(format!(
                "{} may raise but never lower a rule hit: kept {:.1} without {}",
                left_out.join(" and "),
                total,
                left_out.join(" and ")
            ));
        }
    }
    let [wr, wd, wc, wl] = chosen.0;
    // Cluster statistics say whether others do the same (a rollout lowers
    // the total), not whether it is malicious: they never raise the total
    // above the strongest evidence.
    let evidence = [
        (wr > 0.0).then_some(scores[0]),
        (wd > 0.0).then_some(scores[1]),
        (wl > 0.0).then_some(scores[3]),
    ]
    .into_iter()
    .flatten()
    .fold(0.0, f64::max);
    if wc > 0.0 && total > evidence + 1e-9 {
        notes.push(format!(
            "cluster statistics may lower but never raise the total above the strongest evidence: kept {evidence:.1} instead of {total:.1}"
        ));
        total = evidence;
    }
    let llm_reason = match llm {
        LlmOutcome::Verdict { verdict, cached } => {
            let v = match verdict.verdict {
                Verdict::Malicious => "malicious",
                Verdict::Suspicious => "suspicious",
                Verdict::Benign => "benign",
            };
            format!(
                "{v} ({}){}",
                verdict.score,
                if *cached { ", cached" } else { "" }
            )
        }
        LlmOutcome::Unavailable { reason } => {
            format!("LLM: unavailable ({reason}); weight redistributed")
        }
        LlmOutcome::Pending => "LLM: pending; weight redistributed until it answers".to_string(),
        LlmOutcome::TimedOut { after_ms } => {
            format!("LLM: timed out after {after_ms} ms; weight redistributed")
        }
    };
    let cluster_reason = if c.is_none() {
        format!("{}; weight redistributed", cluster.reason)
    } else {
        cluster.reason.clone()
    };
    let rules_reason = if rules.hit {
        rules.reason.clone()
    } else {
        format!("{}; weight redistributed", rules.reason)
    };
    let part = |weight: f64, eff: f64, score: Option<f64>, reason: String| EngineScore {
        weight,
        effective_weight: round2(eff),
        score: score.map(round2),
        points: round2(eff * score.unwrap_or(0.0) / 100.0),
        reason,
    };
    ScoreBreakdown {
        rules: part(w.rules, wr, r, rules_reason),
        deviation: part(w.deviation, wd, Some(d), deviation.reason.clone()),
        cluster: part(w.cluster, wc, c, cluster_reason),
        llm: part(w.llm, wl, l, llm_reason),
        breadth: 0.0,
        total: total.clamp(0.0, 100.0),
        threshold: cfg.alert_threshold,
        notes,
    }
}

fn title(c: &CandidateAlert, hits: &[RuleHitSummary], llm: &LlmOutcome) -> String {
    let top = hits
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .map(|r| r.description.clone());
    let what = match (top, llm) {
        (Some(d), _) => d,
        (None, LlmOutcome::Verdict { verdict, .. }) if verdict.verdict != Verdict::Benign => {
            format!("LLM judged {} {:?}", c.exe_name(), verdict.verdict).to_lowercase()
        }
        (None, _) => format!(
            "Unusual behaviour: {}",
            c.signals.first().map_or("anomaly", |s| s.kind())
        ),
    };
    format!(
        "{what} ({} in {}/{})",
        c.exe_name(),
        c.namespace,
        c.workload
    )
}

fn recommend(
    c: &CandidateAlert,
    alert_id: &str,
    severity: Severity,
    hits: &[RuleHitSummary],
    cluster: &ClusterAssessment,
    rule_advice: Vec<String>,
) -> Recommendation {
    let mut action = hits
        .iter()
        .map(|h| rule_action_rank(h.action))
        .max()
        .unwrap_or(RecommendedAction::Review);
    if severity >= Severity::High {
        action = RecommendedAction::IsolatePod;
    } else if hits.is_empty() && cluster.relearn_suggested {
        action = RecommendedAction::RelearnProfile;
    } else if hits.is_empty() && severity >= Severity::Medium {
        action = action.max(RecommendedAction::Investigate);
    }
    let mut hints = Vec::new();
    if cluster.relearn_suggested {
        if hits.is_empty() {
            hints.push(format!("Relearn suggested: {}", cluster.reason));
        } else {
            hints.push(format!(
                "Seen across the workload ({}); rules still hit, so check the release and its image before relearning",
                cluster.reason
            ));
        }
    }
    for a in rule_advice {
        if !hints.contains(&a) {
            hints.push(a);
        }
    }
    let pod = format!("{}/{}", c.namespace, c.pod);
    let (summary, network_policy) = match action {
        RecommendedAction::IsolatePod => (
            format!(
                "Isolate the pod {pod}: label it {QUARANTINE_LABEL}={alert_id} and apply the NetworkPolicy below, then investigate how {} got there",
                c.exe
            ),
            isolation_network_policy(&c.namespace, &c.pod, alert_id),
        ),
        RecommendedAction::KillProcess => (format!("Kill PID {} ({}) in pod {pod} and investigate", c.pid, c.exe), None),
        RecommendedAction::RotateCredentials => (
            format!("Rotate the credentials {} could read in pod {pod}, then investigate", c.exe),
            None,
        ),
        RecommendedAction::Investigate => (format!("Investigate {} in pod {pod}", c.exe), None),
        RecommendedAction::RelearnProfile => (
            format!("Relearn the profile of {}/{}: the change looks like a release", c.namespace, c.workload),
            None,
        ),
        RecommendedAction::Review => (format!("Review {} in pod {pod}", c.exe), None),
    };
    Recommendation {
        action,
        summary,
        network_policy,
        hints,
    }
}

#[cfg(test)]
mod subtree_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::fixtures::candidate;
    use crate::llm::LlmVerdict;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn scorer() -> Scorer {
        Scorer::new(ScoringConfig::default(), RuleSet::default_pack().unwrap()).unwrap()
    }

    fn verdict(v: Verdict, score: f64) -> LlmOutcome {
        LlmOutcome::Verdict {
            verdict: LlmVerdict {
                verdict: v,
                score,
                explanation: "scripted".into(),
                tactics: vec![],
            },
            cached: false,
        }
    }

    #[test]
    fn an_unavailable_llm_has_its_weight_redistributed_and_says_so() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let a = s.assess(&c, LlmOutcome::not_configured(), T0);
        let a = a.alert().unwrap();
        assert_eq!(a.llm.status, LlmStatus::Unavailable);
        assert_eq!(a.llm.explanation, "LLM: unavailable (not configured)");
        assert_eq!(a.breakdown.llm.effective_weight, 0.0);
        assert!((a.breakdown.rules.effective_weight - 61.54).abs() < 0.01);
        assert!(a.severity >= Severity::High, "{:?} {}", a.severity, a.score);
    }

    #[test]
    fn a_benign_llm_verdict_cannot_lower_a_rule_hit() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let benign = s.assess(&c, verdict(Verdict::Benign, 0.0), T0);
        let benign = benign.alert().unwrap();
        let mut s2 = scorer();
        let none = s2.assess(&c, LlmOutcome::not_configured(), T0);
        assert_eq!(benign.score, none.alert().unwrap().score);
        assert!(!benign.breakdown.notes.is_empty());
    }

    #[test]
    fn the_llm_can_raise_an_anomaly_without_rule_hits_into_an_alert() {
        let c = candidate("/usr/bin/odd-tool", &["odd-tool", "--sync"]);
        let mut s = scorer();
        assert!(matches!(
            s.assess(&c, LlmOutcome::not_configured(), T0),
            Outcome::BelowThreshold { .. }
        ));
        let mut s = scorer();
        let o = s.assess(&c, verdict(Verdict::Malicious, 95.0), T0);
        let a = o.alert().expect("the LLM raised it");
        assert!(a.score >= 50.0);
        assert_eq!(a.recommendation.action, RecommendedAction::Investigate);
    }

    #[test]
    fn similar_arguments_that_hit_different_rules_are_two_incidents() {
        // the profile put both command lines in one similarity bucket (the
        // same shape), but one names a mining pool and the other a shell
        // with a socket: two techniques, two alerts
        let mut s = scorer();
        let mut a = candidate(
            "/tmp/kworker",
            &["kworker", "-o", "stratum+tcp://pool.example:3333"],
        );
        let mut b = candidate(
            "/tmp/kworker",
            &["kworker", "-e", "/bin/sh", "10.0.0.9", "4444"],
        );
        (b.pod, b.container_id, b.pid) = ("webapp-7".into(), "containerd://b7".into(), 777);
        let shared = AnomalyShape::new(a.shape_trie_path(), 0x5eed);
        a.shape = Some(shared.clone());
        b.shape = Some(shared.clone());
        let first = s.assess(&a, LlmOutcome::not_configured(), T0);
        let second = s.assess(&b, LlmOutcome::not_configured(), T0 + 1);
        let (first, second) = (first.alert().unwrap(), second.alert().unwrap());
        assert_ne!(first.id, second.id);
        assert_eq!(second.incident.pods, vec!["webapp-7".to_string()]);
        // the same rules on similar arguments in another pod are one anomaly
        let mut c = a.clone();
        (c.pod, c.container_id, c.pid) = ("webapp-9".into(), "containerd://c9".into(), 999);
        let third = s.assess(&c, LlmOutcome::not_configured(), T0 + 2);
        assert_eq!(third.alert().unwrap().id, first.id);
    }

    #[test]
    fn severity_bands_map_totals() {
        let b = SeverityBands::default();
        assert_eq!(b.severity(10.0), Severity::Info);
        assert_eq!(b.severity(30.0), Severity::Low);
        assert_eq!(b.severity(60.0), Severity::Medium);
        assert_eq!(b.severity(85.0), Severity::High);
        assert_eq!(b.severity(95.0), Severity::Critical);
    }

    #[test]
    fn the_config_round_trips_through_yaml_and_rejects_bad_values() {
        let c = ScoringConfig::from_yaml(
            "weights: {rules: 50, cluster: 20, llm: 30}\nalertThreshold: 60\nllm:\n  endpoint: http://vllm:8000/v1\n  model: qwen\n",
        )
        .unwrap();
        assert_eq!(c.weights.rules, 50.0);
        assert_eq!(c.alert_threshold, 60.0);
        assert_eq!(c.llm.as_ref().unwrap().model, "qwen");
        assert_eq!(c.cluster, ClusterConfig::default());
        assert!(ScoringConfig::from_yaml("alertThreshold: 150").is_err());
        assert!(ScoringConfig::from_yaml("severity: {low: 90, medium: 50}").is_err());
        assert!(ScoringConfig::from_yaml("bogus: 1").is_err());
    }

    #[test]
    fn an_idle_incident_is_closed_and_the_next_occurrence_opens_a_new_alert() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let first = s
            .assess(&c, LlmOutcome::not_configured(), T0)
            .alert()
            .unwrap()
            .id
            .clone();
        let later = T0 + 2 * 3600 * 1_000_000_000;
        let o = s.assess(&c, LlmOutcome::not_configured(), later);
        assert!(matches!(o, Outcome::Created(_)));
        assert_ne!(o.alert().unwrap().id, first);
        assert_eq!(s.expire(later + 7200 * 1_000_000_000), 1);
    }

    // ---- the profile deviation ---------------------------------------------

    fn write(path: &str) -> CandidateAlert {
        let mut c = candidate("/usr/bin/java", &["java", "-jar", "app.jar"]);
        c.signals = vec![crate::Signal::UnknownFile {
            path: path.into(),
            access: kestrel_events::FileAccess::Write,
            raw_path: None,
        }];
        c
    }

    #[test]
    fn a_lone_deviation_in_a_sensitive_class_alerts_with_no_rule_and_no_llm() {
        for replicas in [None, Some(1), Some(100)] {
            // persistence that no default rule names (rules cover
            // `/etc`, the binary directories and user startup files)
            let mut c = write("/lib/systemd/system/kworker.service");
            c.workload_replicas = replicas;
            let mut s = scorer();
            let o = s.assess(&c, LlmOutcome::not_configured(), T0);
            let a = o.alert().unwrap_or_else(|| panic!("{replicas:?}: {o:?}"));
            let b = &a.breakdown;
            assert_eq!(b.rules.score, None);
            assert_eq!(b.rules.reason, "no rule hit; weight redistributed");
            assert_eq!(b.deviation.score, Some(65.0));
            assert_eq!(
                b.deviation.reason,
                "new file write (30) in persistence (50) → 65"
            );
            assert_eq!(a.score, 65.0, "{replicas:?}: {b:?}");
            assert_eq!(a.severity, Severity::Medium);
        }
    }

    #[test]
    fn a_new_harmless_file_in_the_data_directory_does_not_alert() {
        for replicas in [None, Some(100)] {
            let mut c = write("/app/data/cache-7.db");
            c.workload_replicas = replicas;
            let mut s = scorer();
            let o = s.assess(&c, LlmOutcome::not_configured(), T0);
            let Outcome::BelowThreshold { breakdown, .. } = &o else {
                panic!("{replicas:?}: {o:?}")
            };
            assert_eq!(breakdown.total, 30.0, "{breakdown:?}");
        }
    }

    #[test]
    fn cluster_statistics_never_raise_the_total_above_the_evidence() {
        // 1 of 100 replicas runs a new ordinary program: an outlier, not an
        // attack
        let c = candidate("/usr/bin/odd-tool", &["odd-tool", "--sync"]);
        let mut s = scorer();
        let o = s.assess(&c, LlmOutcome::not_configured(), T0);
        let Outcome::BelowThreshold { breakdown, .. } = &o else {
            panic!("{o:?}")
        };
        assert_eq!(breakdown.total, 35.0);
        assert!(
            breakdown.notes[0].starts_with(
                "cluster statistics may lower but never raise the total above the strongest evidence"
            ),
            "{breakdown:?}"
        );
    }

    #[test]
    fn the_profile_deviation_never_lowers_a_rule_hit() {
        let mut s = scorer_with_odd_tool_rule();
        let o = s.assess(&odd_tool_alone(), LlmOutcome::not_configured(), T0);
        let a = o.alert().unwrap();
        assert_eq!(a.score, 70.0);
        assert_eq!(a.breakdown.deviation.score, Some(35.0));
        assert_eq!(a.breakdown.deviation.effective_weight, 0.0);
        assert_eq!(
            a.breakdown.notes,
            ["the profile deviation may raise but never lower a rule hit: kept 70.0 without the profile deviation"]
        );
    }

    // ---- the deferred path ------------------------------------------------

    const SEC: u64 = 1_000_000_000;

    /// The default pack plus `odd-tool` (score 70, no cluster statistics:
    /// 70 alone is a medium alert that a malicious verdict raises to high).
    fn scorer_with_odd_tool_rule() -> Scorer {
        let rules = RuleSet::builder()
            .default_pack()
            .add_yaml(
                "test",
                "rules:\n  - id: odd-tool\n    description: odd tool runs\n    score: 70\n    action: investigate\n    when:\n      field: exe_name\n      equals: [odd-tool]\n",
            )
            .build()
            .unwrap();
        Scorer::new(ScoringConfig::default(), rules).unwrap()
    }

    fn odd_tool_alone() -> CandidateAlert {
        let mut c = candidate("/usr/bin/odd-tool", &["odd-tool", "--sync"]);
        c.workload_replicas = None;
        c
    }

    fn answer(req: &LlmRequest, outcome: LlmOutcome) -> LlmAnswer {
        LlmAnswer {
            ticket: req.ticket(),
            outcome,
        }
    }

    #[test]
    fn a_deferred_rule_hit_is_alerted_at_once_with_the_llm_part_pending() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let d = s.assess_deferred(&c, LlmSlot::Free, T0);
        let Outcome::Created(a) = &d.outcome else {
            panic!("{:?}", d.outcome)
        };
        assert_eq!(a.llm.status, LlmStatus::Pending);
        assert_eq!(a.llm.explanation, "LLM: pending");
        assert_eq!(a.breakdown.llm.effective_weight, 0.0);
        let req = d.request.expect("a judgement to queue");
        assert_eq!(req.candidate().exe, "/tmp/xmrig");
        assert_eq!(s.stats().llm_pending, 1);
        let mut sync = scorer();
        let same = sync.assess(&c, LlmOutcome::not_configured(), T0);
        assert_eq!(a.score, same.alert().unwrap().score);
    }

    #[test]
    fn a_later_malicious_answer_updates_the_same_alert_and_reports_the_severity_change() {
        let mut s = scorer_with_odd_tool_rule();
        let d = s.assess_deferred(&odd_tool_alone(), LlmSlot::Free, T0);
        let first = d.outcome.alert().unwrap().clone();
        assert_eq!(first.severity, Severity::Medium);
        let req = d.request.unwrap();
        let o = s
            .apply_llm(answer(&req, verdict(Verdict::Malicious, 99.0)))
            .expect("the answer was awaited");
        let Outcome::Updated {
            alert,
            severity_changed,
        } = o
        else {
            panic!("{o:?}")
        };
        assert!(severity_changed);
        assert_eq!(alert.id, first.id);
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(alert.llm.status, LlmStatus::Ok);
        assert_eq!(alert.breakdown.llm.score, Some(99.0));
        assert_eq!(alert.incident.count, 1, "an answer is not an occurrence");
        assert_eq!(s.stats().llm_pending, 0);
        assert_eq!(s.stats().candidates, 1);
        // A second delivery of the same answer is not awaited any more.
        assert!(s
            .apply_llm(answer(&req, verdict(Verdict::Malicious, 99.0)))
            .is_none());
    }

    #[test]
    fn a_benign_answer_on_the_deferred_path_cannot_push_a_rule_hit_below_the_threshold() {
        let mut s = scorer_with_odd_tool_rule();
        let d = s.assess_deferred(&odd_tool_alone(), LlmSlot::Free, T0);
        let before = d.outcome.alert().unwrap().score;
        let o = s
            .apply_llm(answer(&d.request.unwrap(), verdict(Verdict::Benign, 0.0)))
            .unwrap();
        let a = o.alert().expect("still an alert");
        assert!(a.score >= s.config().alert_threshold, "{}", a.score);
        assert_eq!(a.score, before);
        assert_eq!(a.llm.verdict, Some(Verdict::Benign));
        assert!(!a.breakdown.notes.is_empty());
        assert!(matches!(
            o,
            Outcome::Updated {
                severity_changed: false,
                ..
            }
        ));
    }

    #[test]
    fn a_below_threshold_candidate_becomes_an_alert_when_a_malicious_answer_arrives() {
        let mut s = scorer();
        let c = candidate("/usr/bin/odd-tool", &["odd-tool", "--sync"]);
        let d = s.assess_deferred(&c, LlmSlot::Free, T0);
        assert!(matches!(d.outcome, Outcome::BelowThreshold { .. }));
        let o = s
            .apply_llm(answer(
                &d.request.unwrap(),
                verdict(Verdict::Malicious, 95.0),
            ))
            .unwrap();
        let Outcome::Created(a) = o else {
            panic!("{o:?}")
        };
        assert!(a.score >= 50.0, "{}", a.score);
        assert_eq!(a.llm.status, LlmStatus::Ok);
        assert_eq!(s.stats().alerts_created, 1);
    }

    #[test]
    fn repeats_while_pending_ask_once_and_then_reuse_the_verdict() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let req = s.assess_deferred(&c, LlmSlot::Free, T0).request.unwrap();
        let mut again = c.clone();
        again.pod = "webapp-9".into();
        let d = s.assess_deferred(&again, LlmSlot::Free, T0 + SEC);
        assert!(d.request.is_none(), "one judgement per incident");
        assert_eq!(d.outcome.alert().unwrap().llm.status, LlmStatus::Pending);
        let o = s
            .apply_llm(answer(&req, verdict(Verdict::Malicious, 99.0)))
            .unwrap();
        // The answer re-scores the latest occurrence.
        assert_eq!(o.alert().unwrap().evidence.pod, "webapp-9");
        let d = s.assess_deferred(&c, LlmSlot::Free, T0 + 2 * SEC);
        assert!(d.request.is_none());
        let a = d.outcome.alert().unwrap();
        assert_eq!(a.llm.status, LlmStatus::Ok);
        assert!(a.llm.cached);
        assert_eq!(a.incident.count, 3);
    }

    #[test]
    fn an_unanswered_judgement_times_out_at_its_deadline_and_a_late_answer_is_ignored() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let d = s.assess_deferred(&c, LlmSlot::Free, T0);
        let (id, req) = (d.outcome.alert().unwrap().id.clone(), d.request.unwrap());
        let deadline = s.config().llm_queue.deadline_ns();
        assert!(s.time_out_llm(T0 + deadline - 1).is_empty());
        let outs = s.time_out_llm(T0 + deadline);
        assert_eq!(outs.len(), 1);
        let Outcome::Updated {
            alert,
            severity_changed,
        } = &outs[0]
        else {
            panic!("{outs:?}")
        };
        assert_eq!(alert.id, id);
        assert!(!severity_changed, "the rules alone decided the severity");
        assert_eq!(alert.llm.status, LlmStatus::TimedOut);
        assert_eq!(alert.llm.explanation, "LLM: timed out after 30000 ms");
        assert!(s
            .apply_llm(answer(&req, verdict(Verdict::Malicious, 99.0)))
            .is_none());
        // A hung endpoint is not asked again for every repeat.
        let d = s.assess_deferred(&c, LlmSlot::Free, T0 + deadline + SEC);
        assert!(d.request.is_none());
        assert_eq!(d.outcome.alert().unwrap().llm.status, LlmStatus::TimedOut);
    }

    #[test]
    fn a_full_queue_marks_the_llm_part_unavailable_and_the_next_repeat_asks_again() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let d = s.assess_deferred(&c, LlmSlot::QueueFull, T0);
        assert!(d.request.is_none());
        let a = d.outcome.alert().unwrap();
        assert_eq!(a.llm.status, LlmStatus::Unavailable);
        assert_eq!(a.llm.explanation, "LLM: unavailable (queue full)");
        assert!(a.severity >= Severity::High);
        let d = s.assess_deferred(&c, LlmSlot::Free, T0 + SEC);
        assert!(d.request.is_some());
    }

    #[test]
    fn an_answer_for_a_closed_incident_is_ignored() {
        let mut s = scorer();
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let req = s.assess_deferred(&c, LlmSlot::Free, T0).request.unwrap();
        assert_eq!(s.expire(T0 + 2 * 3600 * SEC), 1);
        assert!(s
            .apply_llm(answer(&req, verdict(Verdict::Malicious, 99.0)))
            .is_none());
    }

    #[test]
    fn the_queue_settings_are_read_and_zero_is_rejected() {
        let c = ScoringConfig::from_yaml("llmQueue: {capacity: 8, deadlineMs: 500}").unwrap();
        assert_eq!(c.llm_queue.capacity, 8);
        assert_eq!(c.llm_queue.concurrency, 4);
        assert_eq!(c.llm_queue.deadline_ms, 500);
        assert!(ScoringConfig::from_yaml("llmQueue: {capacity: 0}").is_err());
        assert!(ScoringConfig::from_yaml("llmQueue: {deadlineMs: 0}").is_err());
    }
}
