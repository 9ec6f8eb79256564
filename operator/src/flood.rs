//! The create-rate limit on alerts: past `alertFlood.maxNewAlerts` new
//! alerts of one workload within `alertFlood.windowSecs`, a workload's
//! further new alerts fold into one flood alert, so an attack that spawns
//! hundreds of distinct anomalies (or a broken release) cannot flood etcd,
//! `kubectl get salert` or the webhook.
//!
//! - Repeats and updates of an alert that was let through stay that alert
//!   (its count goes on); only *new* alerts count against the limit.
//! - The flood alert is a SecurityAlert of its own (id `flood-…`, title
//!   `Alert flood in <workload>: …`): the first folded alert's evidence and
//!   recommendation, the highest severity and score of what it holds, the
//!   union of their rule hits, ATT&CK ids and pods, a note per folded alert
//!   (the first 20), and as its count every occurrence folded into it
//!   (later repeats of a folded alert count there too).
//! - It notifies (webhook, the `notify` flag) when created and when its
//!   severity rises, never for each folded alert.
//! - A flood lasts while new alerts keep coming: once its last occurrence
//!   is older than the window, the next alert past the limit starts a new
//!   flood alert.
//! - Alerts stored before a restart are let through again ([`FloodGate::known`]),
//!   so their repeats update them and do not count as new.
//! - The limit protects what is kept and announced: the store (custom
//!   resources, or the state directory) and the webhook. The output stream
//!   (stdout lines) still carries every alert, as it carries every update.

use kestrel_scoring::{RuleHitSummary, SecurityAlert};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// Settings (`alertFlood` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FloodSettings {
    /// New alerts one workload may raise within the window; 0 turns the
    /// limit off.
    #[serde(default = "default_max_new")]
    pub max_new_alerts: u32,
    /// The window, seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
}

fn default_max_new() -> u32 {
    20
}

fn default_window() -> u64 {
    600
}

impl Default for FloodSettings {
    fn default() -> Self {
        FloodSettings {
            max_new_alerts: default_max_new(),
            window_secs: default_window(),
        }
    }
}

/// Alert ids remembered per workload (oldest forgotten first).
const IDS_PER_WORKLOAD: usize = 4096;
/// Folded alerts named in the flood alert's notes.
const NOTES: usize = 20;
/// Rule hits and ATT&CK ids kept on the flood alert.
const FINDINGS: usize = 32;
/// Pods listed on the flood alert.
const PODS: usize = 100;

/// What became of an alert at the gate.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// Let through (new within the limit, or already let through).
    Alert(Box<SecurityAlert>),
    /// Folded: the workload's flood alert, updated; `notify` when it was
    /// created or its severity rose.
    Flood {
        /// The flood alert.
        alert: Box<SecurityAlert>,
        /// Announce it.
        notify: bool,
    },
}

/// Ids in arrival order, bounded.
#[derive(Debug, Default)]
struct Ids {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Ids {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > IDS_PER_WORKLOAD {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct WorkloadGate {
    /// When the alerts let through as new were created (ns), in the window.
    created: VecDeque<u64>,
    admitted: Ids,
    /// Folded alert ids and the count each had when last folded.
    folded: HashMap<String, u64>,
    folded_order: VecDeque<String>,
    flood: Option<SecurityAlert>,
}

/// The gate (see the module docs).
#[derive(Debug, Default)]
pub struct FloodGate {
    settings: FloodSettings,
    workloads: HashMap<(String, String), WorkloadGate>,
}

impl FloodGate {
    /// A gate with `settings`.
    pub fn new(settings: FloodSettings) -> Self {
        FloodGate {
            settings,
            workloads: HashMap::new(),
        }
    }

    /// An alert that exists already (stored before a restart): its updates
    /// pass, and it does not count as new.
    pub fn known(&mut self, alert: &SecurityAlert) {
        let key = key_of(alert);
        let w = self.workloads.entry(key).or_default();
        if alert.id.starts_with("flood-") {
            w.flood = Some(alert.clone());
        } else {
            w.admitted.insert(&alert.id);
        }
    }

    /// Lets `alert` through or folds it (see the module docs).
    pub fn admit(&mut self, alert: SecurityAlert, now_ns: u64) -> Admitted {
        if self.settings.max_new_alerts == 0 {
            return Admitted::Alert(Box::new(alert));
        }
        let window = self.settings.window_secs.saturating_mul(1_000_000_000);
        let w = self.workloads.entry(key_of(&alert)).or_default();
        if w.admitted.contains(&alert.id) {
            return Admitted::Alert(Box::new(alert));
        }
        if !w.folded.contains_key(&alert.id) {
            while w
                .created
                .front()
                .is_some_and(|&t| now_ns.saturating_sub(t) > window)
            {
                w.created.pop_front();
            }
            if w.created.len() < self.settings.max_new_alerts as usize {
                w.created.push_back(now_ns);
                w.admitted.insert(&alert.id);
                return Admitted::Alert(Box::new(alert));
            }
        }
        w.fold(alert, now_ns, window, self.settings)
    }
}

impl WorkloadGate {
    fn fold(
        &mut self,
        alert: SecurityAlert,
        now_ns: u64,
        window: u64,
        settings: FloodSettings,
    ) -> Admitted {
        let before = self.folded.get(&alert.id).copied();
        let occurrences = alert
            .incident
            .count
            .saturating_sub(before.unwrap_or(0))
            .max(u64::from(before.is_none()));
        if before.is_none() {
            self.folded_order.push_back(alert.id.clone());
            if self.folded_order.len() > IDS_PER_WORKLOAD {
                if let Some(old) = self.folded_order.pop_front() {
                    self.folded.remove(&old);
                }
            }
        }
        self.folded.insert(alert.id.clone(), alert.incident.count);
        let flood = match self.flood.as_mut() {
            Some(f) if now_ns.saturating_sub(f.incident.last_seen_ns) <= window => f,
            // none yet, or the last one was quiet for a whole window
            _ => {
                let flood = start_flood(&alert, occurrences, now_ns, settings);
                self.flood = Some(flood.clone());
                return Admitted::Flood {
                    alert: Box::new(flood),
                    notify: true,
                };
            }
        };
        let rose = alert.severity > flood.severity;
        flood.incident.count = flood.incident.count.saturating_add(occurrences);
        flood.incident.last_seen_ns = flood.incident.last_seen_ns.max(now_ns);
        flood.incident.last_seen = kestrel_api::rfc3339_ns(flood.incident.last_seen_ns);
        if rose {
            flood.severity = alert.severity;
        }
        flood.score = flood.score.max(alert.score);
        merge_findings(flood, &alert);
        if before.is_none() && flood.breakdown.notes.len() < NOTES + 1 {
            flood.breakdown.notes.push(note(&alert));
        }
        Admitted::Flood {
            alert: Box::new(flood.clone()),
            notify: rose,
        }
    }
}

fn key_of(alert: &SecurityAlert) -> (String, String) {
    (
        alert.evidence.namespace.clone(),
        alert.evidence.workload.clone(),
    )
}

fn note(alert: &SecurityAlert) -> String {
    format!(
        "folded: {} ({} {:.0}, alert {})",
        alert.title,
        alert.severity.as_str(),
        alert.score,
        alert.id
    )
}

/// The flood alert of a workload, from the first alert folded into it.
fn start_flood(
    first: &SecurityAlert,
    occurrences: u64,
    now_ns: u64,
    settings: FloodSettings,
) -> SecurityAlert {
    use std::hash::Hasher as _;
    let mut h = kestrel_events::hash::Fnv64::new();
    h.write_field(first.evidence.namespace.as_bytes());
    h.write_field(first.evidence.workload.as_bytes());
    h.write_field(&now_ns.to_le_bytes());
    let mut flood = first.clone();
    flood.id = format!("flood-{:012x}", h.finish() & 0xffff_ffff_ffff);
    flood.title = format!(
        "Alert flood in {}: more than {} new alerts within {}s; further new alerts are folded here",
        first.evidence.workload, settings.max_new_alerts, settings.window_secs
    );
    flood.breakdown.notes = vec![
        format!(
            "create-rate limit: {} new alerts per {}s per workload (alertFlood); the count is every occurrence folded here; the evidence is the first folded alert's",
            settings.max_new_alerts, settings.window_secs
        ),
        note(first),
    ];
    flood.incident.count = occurrences;
    flood.incident.first_seen_ns = now_ns;
    flood.incident.first_seen = kestrel_api::rfc3339_ns(now_ns);
    flood.incident.last_seen_ns = now_ns;
    flood.incident.last_seen = kestrel_api::rfc3339_ns(now_ns);
    flood
}

fn merge_findings(flood: &mut SecurityAlert, alert: &SecurityAlert) {
    for hit in &alert.rule_hits {
        if flood.rule_hits.len() < FINDINGS && !flood.rule_hits.iter().any(|h| h.id == hit.id) {
            flood.rule_hits.push(RuleHitSummary::clone(hit));
        }
    }
    for m in &alert.mitre {
        if flood.mitre.len() < FINDINGS && !flood.mitre.contains(m) {
            flood.mitre.push(m.clone());
        }
    }
    flood.mitre.sort();
    for p in &alert.incident.pods {
        if flood.incident.pods.len() < PODS && !flood.incident.pods.contains(p) {
            flood.incident.pods.push(p.clone());
        }
    }
    flood.incident.pods_total = flood.incident.pods_total.max(flood.incident.pods.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A scored alert as the engine emits it (a miner in the web app), as
    /// the `n`-th distinct anomaly of the workload, seen `count` times.
    fn alert(n: u32, count: u64, severity: kestrel_api::Severity) -> SecurityAlert {
        let mut a = crate::engine::tests::miner_alert();
        a.id = format!("{n:016x}");
        a.title = format!("anomaly {n}");
        a.severity = severity;
        a.incident.count = count;
        a
    }

    fn gate(max: u32) -> FloodGate {
        FloodGate::new(FloodSettings {
            max_new_alerts: max,
            window_secs: 600,
        })
    }

    #[test]
    fn past_the_limit_new_alerts_fold_into_one_flood_alert_and_repeats_still_pass() {
        use kestrel_api::Severity::{Critical, High};
        let mut g = gate(3);
        for n in 0..3 {
            assert!(matches!(
                g.admit(alert(n, 1, High), n as u64 * S),
                Admitted::Alert(_)
            ));
        }
        // a repeat of a let-through alert is that alert, not a new one
        assert!(matches!(
            g.admit(alert(1, 2, High), 4 * S),
            Admitted::Alert(_)
        ));
        let Admitted::Flood {
            alert: flood,
            notify,
        } = g.admit(alert(3, 1, High), 5 * S)
        else {
            panic!("the fourth new alert folds");
        };
        assert!(notify, "the flood alert is announced once, when created");
        assert!(flood.id.starts_with("flood-"), "{}", flood.id);
        assert!(
            flood.title.starts_with("Alert flood in "),
            "{}",
            flood.title
        );
        assert_eq!(flood.incident.count, 1);
        let id = flood.id.clone();
        // four more distinct anomalies and a repeat of a folded one
        let mut last = None;
        for n in 4..8 {
            last = Some(g.admit(alert(n, 1, High), (5 + u64::from(n)) * S));
        }
        let Some(Admitted::Flood {
            alert: flood,
            notify,
        }) = last
        else {
            panic!("folded");
        };
        assert!(!notify, "folding more does not announce again");
        assert_eq!(flood.id, id, "one flood alert");
        assert_eq!(flood.incident.count, 5);
        let Admitted::Flood {
            alert: flood,
            notify,
        } = g.admit(alert(4, 3, High), 20 * S)
        else {
            panic!("a folded alert's repeats fold too");
        };
        assert!(!notify);
        assert_eq!(flood.incident.count, 7, "two more occurrences of anomaly 4");
        assert_eq!(
            flood
                .breakdown
                .notes
                .iter()
                .filter(|n| n.starts_with("folded: "))
                .count(),
            5
        );
        // a more severe folded alert raises the flood's severity, announced
        let Admitted::Flood {
            alert: flood,
            notify,
        } = g.admit(alert(9, 1, Critical), 21 * S)
        else {
            panic!("folded");
        };
        assert!(notify);
        assert_eq!(flood.severity, Critical);
        assert_eq!(flood.id, id);
    }

    #[test]
    fn the_window_slides_and_a_quiet_flood_ends() {
        use kestrel_api::Severity::High;
        let mut g = gate(2);
        assert!(matches!(g.admit(alert(0, 1, High), 0), Admitted::Alert(_)));
        assert!(matches!(g.admit(alert(1, 1, High), S), Admitted::Alert(_)));
        let Admitted::Flood { alert: first, .. } = g.admit(alert(2, 1, High), 2 * S) else {
            panic!("folded");
        };
        // past the window the limit has room again
        assert!(matches!(
            g.admit(alert(3, 1, High), 700 * S),
            Admitted::Alert(_)
        ));
        assert!(matches!(
            g.admit(alert(4, 1, High), 701 * S),
            Admitted::Alert(_)
        ));
        let Admitted::Flood {
            alert: second,
            notify,
        } = g.admit(alert(5, 1, High), 702 * S)
        else {
            panic!("folded");
        };
        assert!(notify);
        assert_ne!(
            second.id, first.id,
            "the old flood was quiet for a window: a new one"
        );
    }

    #[test]
    fn stored_alerts_pass_after_a_restart_and_the_limit_can_be_off() {
        use kestrel_api::Severity::High;
        let mut g = gate(1);
        g.known(&alert(7, 40, High));
        assert!(matches!(g.admit(alert(7, 41, High), 0), Admitted::Alert(_)));
        assert!(matches!(g.admit(alert(8, 1, High), 0), Admitted::Alert(_)));
        assert!(matches!(
            g.admit(alert(9, 1, High), 0),
            Admitted::Flood { .. }
        ));
        let mut off = gate(0);
        for n in 0..100 {
            assert!(matches!(
                off.admit(alert(n, 1, High), 0),
                Admitted::Alert(_)
            ));
        }
    }
}
