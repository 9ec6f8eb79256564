//! People's triage of `SecurityAlert` objects, into the pipeline.
//!
//! A person (or a tool on their behalf) sets the annotation
//! `kestrel.dev/triage` on an alert ([`kestrel_api::Triage`]:
//! `acknowledged`, `suppressed`, `resolved`, `false-positive`, `open`). A
//! watch on every `SecurityAlert` compares it with the `Triaged` condition
//! the operator wrote when it last handled a verdict on that object: a
//! verdict not handled yet becomes a [`TriageChange`] for the pipeline
//! thread, which sets `status.state`, teaches a false positive to the
//! workload's profile, and writes the `Triaged` condition saying what it
//! did. Because the comparison is with what the object itself records, a
//! restarted operator (or a new leader) picks up exactly the verdicts not
//! handled yet, and a repeat that reopened a resolved alert is not resolved
//! again behind the person's back.

use futures::TryStreamExt;
use kestrel_api::{find_condition, Condition, SecurityAlert, Triage, TRIAGE_ANNOTATION};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::collections::HashMap;

/// A verdict for the pipeline thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageChange {
    /// A verdict to carry out.
    Verdict {
        /// Namespace of the object.
        namespace: String,
        /// Object name.
        name: String,
        /// The alert id (`spec.id`).
        alert: String,
        /// The verdict.
        triage: Triage,
    },
    /// An annotation value that is not a verdict (reported once per value).
    Invalid {
        /// `namespace/name`.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

/// The verdict on `alert` not handled yet, if any. `refused` remembers the
/// invalid values already reported, per object uid.
pub fn triage_change(
    alert: &SecurityAlert,
    refused: &mut HashMap<String, String>,
) -> Option<TriageChange> {
    let value = alert
        .metadata
        .annotations
        .as_ref()?
        .get(TRIAGE_ANNOTATION)?;
    let namespace = alert.metadata.namespace.clone()?;
    let name = alert.metadata.name.clone()?;
    let triage = match Triage::parse(value) {
        Ok(t) => t,
        Err(reason) => {
            let uid = alert.metadata.uid.clone().unwrap_or_else(|| name.clone());
            if refused.get(&uid) == Some(value) {
                return None;
            }
            refused.insert(uid, value.clone());
            return Some(TriageChange::Invalid {
                object: format!("{namespace}/{name}"),
                reason,
            });
        }
    };
    let handled = alert
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, Condition::TRIAGED))
        .is_some_and(|c| c.reason == triage.reason());
    (!handled).then(|| TriageChange::Verdict {
        namespace,
        name,
        alert: alert.spec.id.clone(),
        triage,
    })
}

/// Starts the watch on the current tokio runtime; verdicts arrive on the
/// returned channel (the first listing's included: those not handled yet).
pub fn start(client: Client) -> crossbeam_channel::Receiver<TriageChange> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let api: Api<SecurityAlert> = Api::all(client);
    tokio::spawn(async move {
        let mut refused: HashMap<String, String> = HashMap::new();
        let mut stream = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
        loop {
            let alert = match stream.try_next().await {
                Ok(Some(watcher::Event::Apply(a) | watcher::Event::InitApply(a))) => a,
                Ok(Some(watcher::Event::Delete(a))) => {
                    if let Some(uid) = &a.metadata.uid {
                        refused.remove(uid);
                    }
                    continue;
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SecurityAlert watch failed; retrying with backoff");
                    continue;
                }
            };
            if let Some(change) = triage_change(&alert, &mut refused) {
                if tx.send(change).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_api::ConditionStatus;

    fn alert(annotation: Option<&str>, handled: Option<&str>) -> SecurityAlert {
        let mut a = SecurityAlert::from_spec(crate::engine::tests::miner_alert());
        a.metadata.name = Some("deployment-web-1f2e".into());
        a.metadata.namespace = Some("shop".into());
        a.metadata.uid = Some("u-1".into());
        if let Some(v) = annotation {
            a.metadata.annotations = Some([(TRIAGE_ANNOTATION.to_string(), v.to_string())].into());
        }
        let mut status = kestrel_api::SecurityAlertStatus::default();
        if let Some(r) = handled {
            status.conditions.push(Condition::new(
                Condition::TRIAGED,
                ConditionStatus::True,
                r,
                "",
                "2026-12-07T00:00:00Z",
            ));
        }
        a.status = Some(status);
        a
    }

    #[test]
    fn a_verdict_is_handed_over_until_the_object_records_it() {
        let mut refused = HashMap::new();
        assert_eq!(triage_change(&alert(None, None), &mut refused), None);
        let Some(TriageChange::Verdict {
            namespace,
            name,
            alert: id,
            triage,
        }) = triage_change(&alert(Some("Acknowledged"), None), &mut refused)
        else {
            panic!("no verdict")
        };
        assert_eq!(
            (namespace.as_str(), name.as_str(), triage),
            ("shop", "deployment-web-1f2e", Triage::Acknowledged)
        );
        assert!(!id.is_empty());
        // handled: the condition says so (a restart hands nothing over again)
        assert_eq!(
            triage_change(
                &alert(Some("acknowledged"), Some("Acknowledged")),
                &mut refused
            ),
            None
        );
        // a new verdict on the same object
        assert!(matches!(
            triage_change(
                &alert(Some("false-positive"), Some("Acknowledged")),
                &mut refused
            ),
            Some(TriageChange::Verdict {
                triage: Triage::FalsePositive,
                ..
            })
        ));
    }

    #[test]
    fn an_invalid_value_is_reported_once_per_value() {
        let mut refused = HashMap::new();
        let Some(TriageChange::Invalid { object, reason }) =
            triage_change(&alert(Some("ignore"), None), &mut refused)
        else {
            panic!("accepted")
        };
        assert_eq!(object, "shop/deployment-web-1f2e");
        assert!(reason.contains("\"ignore\" is not one of"), "{reason}");
        assert_eq!(
            triage_change(&alert(Some("ignore"), None), &mut refused),
            None
        );
        assert!(triage_change(&alert(Some("nope"), None), &mut refused).is_some());
    }
}
