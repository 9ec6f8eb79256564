//! The output: a `SecurityAlert`-shaped record with evidence, the score
//! breakdown, the LLM's explanation and a recommendation.

use serde::{Deserialize, Serialize};

use crate::candidate::{AnomalyShape, ProcessAncestor, Signal};
use crate::llm::Verdict;
use crate::rules::RuleAction;

/// Alert severity, from the total score and the configured bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Below the low band.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The name (`high`).
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Namespace.
    pub namespace: String,
    /// Workload (`Deployment/webapp`).
    pub workload: String,
    /// The pod of the latest occurrence.
    pub pod: String,
    /// Container id.
    pub container_id: String,
    /// Node.
    pub node: String,
    /// Image.
    pub image: String,
    /// PID.
    pub pid: u32,
    /// Executable.
    pub exe: String,
    /// Raw argv.
    pub args: Vec<String>,
    /// Normalised arguments.
    pub args_normalized: String,
    /// Ancestors, parent first.
    pub process_chain: Vec<ProcessAncestor>,
    /// The profile's signals.
    pub signals: Vec<Signal>,
    /// The anomaly shape.
    pub shape: AnomalyShape,
}

/// One engine's part of the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub reason: String,
}

/// The score breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreBreakdown {
    /// Rules engine.
    pub rules: EngineScore,
    /// Cluster statistics.
    pub cluster: EngineScore,
    /// LLM judgement.
    pub llm: EngineScore,
    /// Total, 0..=100.
    pub total: f64,
    /// The alert threshold in force.
    pub threshold: f64,
    /// Adjustments applied (guards), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Whether the LLM answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LlmStatus {
    /// A validated verdict.
    Ok,
    /// No verdict (not configured, failed, budget spent, queue full).
    Unavailable,
    /// Asked; the answer has not arrived yet (the alert is updated when it
    /// does).
    Pending,
    /// Asked; no answer within the deadline.
    TimedOut,
}

/// The LLM's part, as shown to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmSummary {
    /// Whether there is a verdict.
    pub status: LlmStatus,
    /// The verdict, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The model's explanation, or `LLM: pending`, `LLM: timed out after
    /// <n> ms`, `LLM: unavailable (<reason>)`.
    pub explanation: String,
    /// ATT&CK ids the model named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tactics: Vec<String>,
    /// Whether the verdict came from the cache.
    #[serde(default)]
    pub cached: bool,
}

/// A rule that hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleHitSummary {
    /// Rule id.
    pub id: String,
    /// What it detects.
    pub description: String,
    /// Its confidence.
    pub score: f64,
    /// ATT&CK ids.
    pub tags: Vec<String>,
    /// Recommended action.
    pub action: RuleAction,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecommendedAction {
    /// Nothing beyond reading the alert.
    Review,
    /// Relearn the workload's profile (a release changed its behaviour).
    RelearnProfile,
    /// Investigate.
    Investigate,
    /// Rotate credentials the process could read.
    RotateCredentials,
    /// Kill the process.
    KillProcess,
    /// Isolate the pod (NetworkPolicy attached).
    IsolatePod,
}

/// The recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The main action.
    pub action: RecommendedAction,
    /// In words, e.g. "Isolate the pod shop/webapp-0 ...".
    pub summary: String,
    /// For [`RecommendedAction::IsolatePod`]: a ready NetworkPolicy (YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    /// Further hints (relearn suggested, rule advice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// The incident this alert stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSummary {
    /// Occurrences grouped into this alert.
    pub count: u64,
    /// First occurrence, ns since the epoch.
    pub first_seen_ns: u64,
    /// Latest occurrence, ns since the epoch.
    pub last_seen_ns: u64,
    /// First occurrence, RFC 3339.
    pub first_seen: String,
    /// Latest occurrence, RFC 3339.
    pub last_seen: String,
    /// Pods that showed it (bounded list).
    pub pods: Vec<String>,
    /// How many distinct pods showed it.
    pub pods_total: usize,
}

/// A scored, grouped alert: the content of a `SecurityAlert` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAlert {
    /// Stable id (hex), also the resource name suffix.
    pub id: String,
    /// One line for people.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Total score, 0..=100.
    pub score: f64,
    /// Evidence of the latest occurrence.
    pub evidence: Evidence,
    /// The score breakdown.
    pub breakdown: ScoreBreakdown,
    /// The LLM's part.
    pub llm: LlmSummary,
    /// Rules that hit.
    pub rule_hits: Vec<RuleHitSummary>,
    /// ATT&CK ids from rules and the LLM.
    pub mitre: Vec<String>,
    /// What to do.
    pub recommendation: Recommendation,
    /// The incident.
    pub incident: IncidentSummary,
}

/// A Kubernetes object name fragment: lower-case alphanumerics and '-'.
fn dns_label(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out.trim_matches('-').to_string()
}

/// Whether `s` is a valid DNS-1123 subdomain (namespace and pod names are).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The label the isolation policy selects; the operator (or a person) puts it
/// on the pod: `kubectl label pod -n NS POD kestrel.dev/quarantine=ALERT_ID`.
pub const QUARANTINE_LABEL: &str = "kestrel.dev/quarantine";

/// A NetworkPolicy that cuts all ingress and egress of the pods labelled
/// `kestrel.dev/quarantine=<alert id>` in the namespace. `None` when the
/// names are not valid Kubernetes names (they come from the API server, so
/// this only guards against a caller's mistake).
pub fn isolation_network_policy(namespace: &str, pod: &str, alert_id: &str) -> Option<String> {
    if !is_dns_subdomain(namespace) || !is_dns_subdomain(pod) {
        return None;
    }
    let id = dns_label(alert_id, 63);
    if id.is_empty() {
        return None;
    }
    let name = dns_label(&format!("kestrel-isolate-{pod}"), 253);
    Some(format!(
        "# Isolates pod {namespace}/{pod}: first label it with\n\
         #   kubectl label pod -n {namespace} {pod} {QUARANTINE_LABEL}={id}\n\
         # then apply this policy. It denies all ingress and egress (DNS included).\n\
         apiVersion: networking.k8s.io/v1\n\
         kind: NetworkPolicy\n\
         metadata:\n\
         \x20 name: {name}\n\
         \x20 namespace: {namespace}\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/managed-by: kestrel\n\
         spec:\n\
         \x20 podSelector:\n\
         \x20   matchLabels:\n\
         \x20     {QUARANTINE_LABEL}: \"{id}\"\n\
         \x20 policyTypes:\n\
         \x20 - Ingress\n\
         \x20 - Egress\n\
         \x20 ingress: []\n\
         \x20 egress: []\n"
    ))
}

/// Formats ns since the Unix epoch as RFC 3339 UTC with nanoseconds
/// (`2023-11-14T22:13:20.000000000Z`).
pub fn rfc3339_ns(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn the_isolation_policy_is_valid_yaml_denying_all_traffic() {
        let y = isolation_network_policy("shop", "webapp-0", "ab12").unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(
            v["spec"]["podSelector"]["matchLabels"][QUARANTINE_LABEL],
            "ab12"
        );
        assert_eq!(v["spec"]["policyTypes"][1], "Egress");
        assert_eq!(v["spec"]["egress"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn no_policy_is_offered_for_invalid_names() {
        assert!(isolation_network_policy("shop", "Bad Pod\n", "ab").is_none());
        assert!(isolation_network_policy("", "p", "ab").is_none());
    }
}
