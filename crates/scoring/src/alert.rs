//! The output: a `SecurityAlert` record with evidence, the score breakdown,
//! the LLM's explanation and a recommendation (the types are the custom
//! resource's spec from `kestrel-api`), and the isolation NetworkPolicy.

// The record types are the `SecurityAlert` custom resource's spec, defined
// once in `kestrel-api`; this crate's `SecurityAlert` is that spec.
pub use kestrel_api::{
    rfc3339_ns, EngineScore, Evidence, IncidentSummary, LlmStatus, LlmSummary, Recommendation,
    RecommendedAction, RuleHitSummary, ScoreBreakdown, SecurityAlertSpec as SecurityAlert,
    Severity,
};

use kestrel_api::is_dns_subdomain;

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

#[cfg(test)]
mod tests {
    use super::*;

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
