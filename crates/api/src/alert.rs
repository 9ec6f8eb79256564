//! `SecurityAlert`: one incident, named by a fingerprint so that repeats
//! update one object.
//!
//! The spec is what happened, written when the alert is raised: the scorer's
//! record (evidence, the score of each part with its reason, the LLM's
//! explanation, the recommendation, the incident as it stood). The status
//! is what changes afterwards: triage state, count, last seen, pods.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::limits;
use crate::names::alert_object_name;
use crate::signal::{AnomalyShape, ProcessAncestor, Signal};

/// Annotation by which a person triages an alert (see [`Triage`]); the
/// operator mirrors it into `status.state`.
pub const TRIAGE_ANNOTATION: &str = "kestrel.dev/triage";

/// A person's verdict on an alert, the value of [`TRIAGE_ANNOTATION`]
/// (case and `-`/`_` do not matter: `acknowledged`, `Suppressed`,
/// `false-positive`, `FalsePositive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Triage {
    /// Back to open.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Expected: repeats are counted, never announced.
    Suppressed,
    /// Dealt with; a repeat opens it again.
    Resolved,
    /// Not an attack: the behaviour is taught to the workload's learned
    /// profile (so it stops alerting) and the alert is resolved.
    FalsePositive,
}

impl Triage {
    /// The values accepted, for messages.
    pub const VALUES: &'static str = "open, acknowledged, suppressed, resolved, false-positive";

    /// Parses an annotation value.
    pub fn parse(value: &str) -> Result<Triage, String> {
        let key: String = value
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Ok(match key.as_str() {
            "open" | "reopen" => Triage::Open,
            "acknowledged" | "ack" => Triage::Acknowledged,
            "suppressed" | "suppress" => Triage::Suppressed,
            "resolved" | "resolve" => Triage::Resolved,
            "falsepositive" | "fp" => Triage::FalsePositive,
            _ => {
                return Err(format!(
                    "{TRIAGE_ANNOTATION}: {:?} is not one of {}",
                    value.chars().take(64).collect::<String>(),
                    Triage::VALUES
                ))
            }
        })
    }

    /// Its name in the `Triaged` condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Triage::Open => "Open",
            Triage::Acknowledged => "Acknowledged",
            Triage::Suppressed => "Suppressed",
            Triage::Resolved => "Resolved",
            Triage::FalsePositive => "FalsePositive",
        }
    }

    /// The state it puts the alert in.
    pub fn state(self) -> AlertState {
        match self {
            Triage::Open => AlertState::Open,
            Triage::Acknowledged => AlertState::Acknowledged,
            Triage::Suppressed => AlertState::Suppressed,
            Triage::Resolved | Triage::FalsePositive => AlertState::Resolved,
        }
    }
}

/// Alert severity, from the total score and the configured bands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Severity {
    /// Below the low band.
    #[serde(alias = "info")]
    Info,
    /// Low.
    #[serde(alias = "low")]
    Low,
    /// Medium.
    #[serde(alias = "medium")]
    Medium,
    /// High.
    #[serde(alias = "high")]
    High,
    /// Critical.
    #[serde(alias = "critical")]
    Critical,
}

impl Severity {
    /// The lower-case name (`high`), for Falco priorities and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Who, where and what: everything an operator needs to find the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Namespace.
    #[schemars(length(max = limits::NAME))]
    pub namespace: String,
    /// Workload (`Deployment/webapp`).
    #[schemars(length(max = limits::TEXT))]
    pub workload: String,
    /// The pod of the latest occurrence.
    #[schemars(length(max = limits::NAME))]
    pub pod: String,
    /// Container id.
    #[schemars(length(max = limits::NAME))]
    pub container_id: String,
    /// Node.
    #[schemars(length(max = limits::NAME))]
    pub node: String,
    /// Image.
    #[schemars(length(max = limits::IMAGE))]
    pub image: String,
    /// PID.
    pub pid: u32,
    /// Executable.
    #[schemars(length(max = limits::PATH))]
    pub exe: String,
    /// Raw argv.
    #[schemars(length(max = limits::ARGV), inner(length(max = limits::ARG)))]
    pub args: Vec<String>,
    /// Normalised arguments.
    #[schemars(length(max = limits::ARGS))]
    pub args_normalized: String,
    /// Ancestors, parent first.
    #[schemars(length(max = limits::CHAIN))]
    pub process_chain: Vec<ProcessAncestor>,
    /// The profile's signals.
    #[schemars(length(max = limits::FINDINGS))]
    pub signals: Vec<Signal>,
    /// The anomaly shape.
    pub shape: AnomalyShape,
}

/// One engine's part of the score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineScore {
    /// Configured weight.
    pub weight: f64,
    /// Weight after redistribution (0 when the engine abstained).
    pub effective_weight: f64,
    /// The engine's own score, 0..=100 (`None`: abstained / unavailable).
    pub score: Option<f64>,
    /// Points it contributed to the total (`effective_weight × score / 100`).
    pub points: f64,
    /// Why.
    #[schemars(length(max = limits::TEXT))]
    pub reason: String,
}

/// The score breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreBreakdown {
    /// Rules engine.
    pub rules: EngineScore,
    /// Profile deviation: what the workload's profile never saw, weighed by
    /// what, where, who and how much (absent in alerts stored before it
    /// existed).
    #[serde(default)]
    pub deviation: EngineScore,
    /// Cluster statistics.
    pub cluster: EngineScore,
    /// LLM judgement.
    pub llm: EngineScore,
    /// Points the incident's breadth added to the strongest occurrence's
    /// total (distinct activities of one process subtree; 0 for one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub breadth: f64,
    /// Total, 0..=100.
    pub total: f64,
    /// The alert threshold in force.
    pub threshold: f64,
    /// Adjustments applied (guards), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::TEXT)))]
    pub notes: Vec<String>,
}

/// Whether the LLM answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LlmStatus {
    /// A validated verdict.
    #[serde(alias = "ok")]
    Ok,
    /// No verdict (not configured, failed, budget spent, queue full).
    #[serde(alias = "unavailable")]
    Unavailable,
    /// Asked; the answer has not arrived yet (the alert is updated when it
    /// does).
    #[serde(alias = "pending")]
    Pending,
    /// Asked; no answer within the deadline.
    #[serde(alias = "timedOut")]
    TimedOut,
}

/// The LLM's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Malicious.
    #[serde(alias = "malicious")]
    Malicious,
    /// Possibly malicious.
    #[serde(alias = "suspicious")]
    Suspicious,
    /// Benign.
    #[serde(alias = "benign")]
    Benign,
}

/// The LLM's part, as shown to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSummary {
    /// Whether there is a verdict.
    pub status: LlmStatus,
    /// The verdict, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The model's explanation, or `LLM: pending`, `LLM: timed out after
    /// <n> ms`, `LLM: unavailable (<reason>)`.
    #[schemars(length(max = limits::TEXT))]
    pub explanation: String,
    /// ATT&CK ids the model named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::SHORT)))]
    pub tactics: Vec<String>,
    /// Whether the verdict came from the cache.
    #[serde(default)]
    pub cached: bool,
}

/// The recommended action attached to a rule.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum RuleAction {
    /// Look at it.
    #[default]
    #[serde(alias = "investigate")]
    Investigate,
    /// Rotate the credentials the process could read.
    #[serde(alias = "rotate_credentials")]
    RotateCredentials,
    /// Kill the process.
    #[serde(alias = "kill_process")]
    KillProcess,
    /// Cut the pod off the network (a NetworkPolicy comes with the alert).
    #[serde(alias = "isolate_pod")]
    IsolatePod,
}

/// A rule that hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleHitSummary {
    /// Rule id.
    #[schemars(length(max = limits::SHORT))]
    pub id: String,
    /// What it detects.
    #[schemars(length(max = limits::TEXT))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its confidence.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub score: f64,
    /// ATT&CK ids.
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::SHORT)))]
    pub tags: Vec<String>,
    /// Recommended action.
    pub action: RuleAction,
}

/// What to do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RecommendedAction {
    /// Nothing beyond reading the alert.
    #[serde(alias = "review")]
    Review,
    /// Relearn the workload's profile (a release changed its behaviour).
    #[serde(alias = "relearnProfile")]
    RelearnProfile,
    /// Investigate.
    #[serde(alias = "investigate")]
    Investigate,
    /// Rotate credentials the process could read.
    #[serde(alias = "rotateCredentials")]
    RotateCredentials,
    /// Kill the process.
    #[serde(alias = "killProcess")]
    KillProcess,
    /// Isolate the pod (NetworkPolicy attached).
    #[serde(alias = "isolatePod")]
    IsolatePod,
}

/// The recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The main action.
    pub action: RecommendedAction,
    /// In words, e.g. "Isolate the pod shop/webapp-0 ...".
    #[schemars(length(max = limits::TEXT))]
    pub summary: String,
    /// For `IsolatePod`: a ready NetworkPolicy (YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POLICY))]
    pub network_policy: Option<String>,
    /// Further hints (relearn suggested, rule advice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::TEXT)))]
    pub hints: Vec<String>,
}

/// The incident this alert stands for, as it stood when the spec was
/// written (the live count, last seen and pods are in the status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSummary {
    /// Occurrences grouped into this alert.
    pub count: u64,
    /// First occurrence, ns since the epoch.
    pub first_seen_ns: u64,
    /// Latest occurrence, ns since the epoch.
    pub last_seen_ns: u64,
    /// First occurrence, RFC 3339.
    #[schemars(length(max = limits::SHORT))]
    pub first_seen: String,
    /// Latest occurrence, RFC 3339.
    #[schemars(length(max = limits::SHORT))]
    pub last_seen: String,
    /// Pods that showed it (bounded list).
    #[schemars(length(max = limits::PODS), inner(length(max = limits::NAME)))]
    pub pods: Vec<String>,
    /// How many distinct pods showed it.
    pub pods_total: usize,
    /// Distinct activities (anomaly shapes) folded into it: one for a
    /// repeat, more when one process subtree did several new things.
    #[serde(default = "one")]
    pub activities: usize,
    /// Distinct processes (pids) that took part.
    #[serde(default)]
    pub processes: usize,
    /// Distinct command lines that took part (bounded list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::TEXT)))]
    pub commands: Vec<String>,
    /// Distinct unknown files it touched (bounded list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::PATH)))]
    pub files: Vec<String>,
    /// Distinct unknown peers it reached (bounded list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::TEXT)))]
    pub peers: Vec<String>,
}

fn one() -> usize {
    1
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The `spec` of a `SecurityAlert`: a scored, grouped alert as the scorer
/// returns it (`kestrel_scoring::SecurityAlert` is this type).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kestrel.dev",
    version = "v1alpha1",
    kind = "SecurityAlert",
    namespaced,
    status = "SecurityAlertStatus",
    shortname = "salert",
    category = "kestrel",
    derive = "PartialEq",
    doc = "A Kestrel alert: one incident in one workload (spec: what happened; status: triage, count, last seen, pods).",
    printcolumn = r#"{"name": "Severity", "type": "string", "jsonPath": ".spec.severity"}"#,
    printcolumn = r#"{"name": "Score", "type": "number", "jsonPath": ".spec.score"}"#,
    printcolumn = r#"{"name": "Workload", "type": "string", "jsonPath": ".spec.evidence.workload"}"#,
    printcolumn = r#"{"name": "Pod", "type": "string", "jsonPath": ".spec.evidence.pod"}"#,
    printcolumn = r#"{"name": "Count", "type": "integer", "jsonPath": ".status.count"}"#,
    printcolumn = r#"{"name": "State", "type": "string", "jsonPath": ".status.state"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAlertSpec {
    /// Stable id (hex): the fingerprint of workload, container and shape;
    /// the object name ends with it.
    #[schemars(length(max = limits::SHORT))]
    pub id: String,
    /// One line for people.
    #[schemars(length(max = limits::TEXT))]
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Total score, 0..=100.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub score: f64,
    /// Evidence of the latest occurrence when written.
    pub evidence: Evidence,
    /// The score breakdown.
    pub breakdown: ScoreBreakdown,
    /// The LLM's part.
    pub llm: LlmSummary,
    /// Rules that hit.
    #[schemars(length(max = limits::FINDINGS))]
    pub rule_hits: Vec<RuleHitSummary>,
    /// ATT&CK ids from rules and the LLM.
    #[schemars(length(max = limits::FINDINGS), inner(length(max = limits::SHORT)))]
    pub mitre: Vec<String>,
    /// What to do.
    pub recommendation: Recommendation,
    /// The incident when written.
    pub incident: IncidentSummary,
}

/// Where a person's triage has put an alert. A repeat of a `Resolved`
/// alert opens it again (`Open`); `Suppressed` and `Acknowledged` stay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AlertState {
    /// New, or repeated after being resolved.
    #[default]
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Expected: repeats are counted, not announced.
    Suppressed,
    /// Dealt with.
    Resolved,
}

/// The `status` of a `SecurityAlert`: what changes after it is raised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityAlertStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Triage state (from the `kestrel.dev/triage` annotation).
    #[serde(default)]
    pub state: AlertState,
    /// Occurrences so far.
    #[serde(default)]
    pub count: u64,
    /// Latest occurrence (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SHORT))]
    pub last_seen: Option<String>,
    /// Pods that showed it (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::PODS), inner(length(max = limits::NAME)))]
    pub pods: Vec<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::CONDITIONS))]
    pub conditions: Vec<Condition>,
}

impl SecurityAlertStatus {
    /// An open alert's status from the incident: count, last seen, pods.
    pub fn from_incident(incident: &IncidentSummary) -> Self {
        SecurityAlertStatus {
            observed_generation: None,
            state: AlertState::Open,
            count: incident.count,
            last_seen: Some(incident.last_seen.clone()),
            pods: incident
                .pods
                .iter()
                .take(limits::PODS as usize)
                .cloned()
                .collect(),
            conditions: Vec::new(),
        }
    }
}

impl SecurityAlertSpec {
    /// The object name: `<workload>-<id>`, DNS-safe (see
    /// [`crate::alert_object_name`]).
    pub fn object_name(&self) -> String {
        alert_object_name(&self.evidence.workload, &self.id)
    }
}

impl SecurityAlert {
    /// The object for a scored alert: named by [`SecurityAlertSpec::object_name`],
    /// in the workload's namespace (`default` when there is none), status
    /// open with the incident's count, last seen and pods.
    pub fn from_spec(spec: SecurityAlertSpec) -> Self {
        let namespace = if spec.evidence.namespace.is_empty() {
            "default".to_string()
        } else {
            spec.evidence.namespace.clone()
        };
        let mut alert = SecurityAlert::new(&spec.object_name(), spec);
        alert.metadata.namespace = Some(namespace);
        alert.status = Some(SecurityAlertStatus::from_incident(&alert.spec.incident));
        alert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triage_values_parse_in_any_case_and_spelling_and_others_are_named() {
        for (v, want) in [
            ("acknowledged", Triage::Acknowledged),
            ("Acknowledged", Triage::Acknowledged),
            (" suppressed ", Triage::Suppressed),
            ("false-positive", Triage::FalsePositive),
            ("FalsePositive", Triage::FalsePositive),
            ("false_positive", Triage::FalsePositive),
            ("Resolved", Triage::Resolved),
            ("open", Triage::Open),
        ] {
            assert_eq!(Triage::parse(v), Ok(want), "{v}");
        }
        assert_eq!(Triage::FalsePositive.state(), AlertState::Resolved);
        let err = Triage::parse("ignore-me").unwrap_err();
        assert_eq!(
            err,
            "kestrel.dev/triage: \"ignore-me\" is not one of open, acknowledged, suppressed, resolved, false-positive"
        );
    }
}
