//! The cluster engine: how many pods show the same anomaly shape.
//!
//! Pure: every call takes `now_ns`; nothing reads a clock.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::candidate::{AnomalyShape, CandidateAlert};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Cluster engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Sliding window over which pods showing a shape are counted (s).
    pub window_secs: u64,
    /// Fraction of replicas at or above which the anomaly looks like a
    /// release rather than an attack (score 0, relearn suggested).
    pub rollout_fraction: f64,
    /// Score (0..=100) of a lone outlier; it falls linearly to 0 as the
    /// affected fraction approaches `rollout_fraction`.
    pub outlier_score: f64,
    /// Below this many replicas there are no cross-pod statistics (the
    /// engine abstains and its weight is redistributed): with the default
    /// 2 it abstains only for a workload of one replica.
    pub min_replicas: u32,
    /// An anomaly within this long after the workload's rollout counts as
    /// part of the rollout (s): the other replicas have not had time to show it.
    pub rollout_grace_secs: u64,
    /// At most this many shapes are tracked; past it, expired ones are
    /// dropped first and then new shapes are scored but not remembered.
    pub max_shapes: usize,
    /// At most this many pods are remembered per shape.
    pub max_pods_per_shape: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            window_secs: 600,
            rollout_fraction: 0.5,
            outlier_score: 80.0,
            min_replicas: 2,
            rollout_grace_secs: 900,
            max_shapes: 100_000,
            max_pods_per_shape: 10_000,
        }
    }
}

/// What the cluster engine concluded for one anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAssessment {
    /// 0..=100, or `None` when the engine abstains (too few replicas,
    /// replica count unknown).
    pub score: Option<f64>,
    /// Pods of this workload showing the shape in the window (this one included).
    pub affected_pods: usize,
    /// The workload's replica count, when known.
    pub replicas: Option<u32>,
    /// Pods of other workloads with the same image showing the shape.
    pub other_workload_pods: usize,
    /// How many other workloads with the same image show it.
    pub other_workloads: usize,
    /// The behaviour looks like a new release: relearn the profile.
    pub relearn_suggested: bool,
    /// One sentence for the alert.
    pub reason: String,
}

#[derive(Debug, Default)]
struct ShapeSeen {
    /// (workload key, pod) → last seen ns.
    pods: HashMap<(String, String), u64>,
}

/// Counts pods per workload (and per image) showing each anomaly shape.
#[derive(Debug, Default)]
pub struct ClusterEngine {
    config: ClusterConfig,
    shapes: HashMap<(String, AnomalyShape), ShapeSeen>,
    replicas: HashMap<String, u32>,
}

fn workload_key(c: &CandidateAlert) -> String {
    format!("{}/{}", c.namespace, c.workload)
}

impl ClusterEngine {
    /// An engine with the given settings.
    pub fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Records that `c`'s pod shows `shape` at `now_ns` and scores it.
    pub fn observe(
        &mut self,
        c: &CandidateAlert,
        shape: &AnomalyShape,
        now_ns: u64,
    ) -> ClusterAssessment {
        let cfg = &self.config;
        let window = cfg.window_secs.saturating_mul(NS_PER_SEC);
        let wkey = workload_key(c);
        if let Some(r) = c.workload_replicas {
            self.replicas.insert(wkey.clone(), r);
        }
        let key = (c.image.clone(), shape.clone());
        if !self.shapes.contains_key(&key) && self.shapes.len() >= cfg.max_shapes {
            self.prune(now_ns);
        }
        let mut scratch = ShapeSeen::default();
        let seen = if self.shapes.len() < self.config.max_shapes || self.shapes.contains_key(&key) {
            self.shapes.entry(key).or_default()
        } else {
            &mut scratch
        };
        seen.pods.retain(|_, t| now_ns.saturating_sub(*t) <= window);
        if seen.pods.len() < self.config.max_pods_per_shape {
            seen.pods.insert((wkey.clone(), c.pod.clone()), now_ns);
        }
        let affected = seen.pods.keys().filter(|(w, _)| *w == wkey).count().max(1);
        let mut others: Vec<&str> = seen
            .pods
            .keys()
            .filter(|(w, _)| *w != wkey)
            .map(|(w, _)| w.as_str())
            .collect();
        let other_pods = others.len();
        others.sort_unstable();
        others.dedup();
        let other_workloads = others.len();
        let other_replicas: u32 = others.iter().filter_map(|w| self.replicas.get(*w)).sum();
        let replicas = c
            .workload_replicas
            .or_else(|| self.replicas.get(&wkey).copied());
        let cfg = &self.config;
        let base = ClusterAssessment {
            score: None,
            affected_pods: affected,
            replicas,
            other_workload_pods: other_pods,
            other_workloads,
            relearn_suggested: false,
            reason: String::new(),
        };
        let image_note = if other_workloads > 0 {
            format!(
                "; {other_pods} pod(s) of {other_workloads} other workload(s) with the same image too"
            )
        } else {
            String::new()
        };
        if let Some(rollout) = c.workload_rollout_ns {
            let since = now_ns.saturating_sub(rollout);
            if rollout <= now_ns && since <= cfg.rollout_grace_secs.saturating_mul(NS_PER_SEC) {
                return ClusterAssessment {
                    score: Some(0.0),
                    relearn_suggested: true,
                    reason: format!(
                        "new behaviour {}s after a rollout of {} ({affected} pod(s) so far{image_note}): looks like the release; relearn suggested",
                        since / NS_PER_SEC,
                        c.workload
                    ),
                    ..base
                };
            }
        }
        let Some(replicas) = replicas else {
            return ClusterAssessment {
                reason: "replica count unknown: no cross-pod statistics".into(),
                ..base
            };
        };
        if replicas < cfg.min_replicas {
            return ClusterAssessment {
                reason: format!(
                    "{replicas} replica(s), fewer than {}: no cross-pod statistics",
                    cfg.min_replicas
                ),
                ..base
            };
        }
        let f_workload = (affected as f64 / f64::from(replicas)).min(1.0);
        let f_image = if other_workloads > 0 && other_replicas > 0 {
            ((affected + other_pods) as f64 / f64::from(replicas + other_replicas)).min(1.0)
        } else {
            0.0
        };
        let f = f_workload.max(f_image);
        let pct = (f * 100.0).round();
        // a release reaches more than one pod: one pod alone is an outlier
        // however few replicas there are (1 of 2 is half of them)
        if f >= cfg.rollout_fraction && affected + other_pods > 1 {
            return ClusterAssessment {
                score: Some(0.0),
                relearn_suggested: true,
                reason: format!(
                    "{affected} of {replicas} pods show it ({pct}%{image_note}): looks like a release, not an attack; relearn suggested"
                ),
                ..base
            };
        }
        // one pod alone is the outlier, whatever the replica count (1 of 2
        // is half of them, yet the other does not do it); from two pods on,
        // the score falls with the fraction towards a release
        let score = if affected + other_pods == 1 {
            cfg.outlier_score
        } else {
            (cfg.outlier_score * (1.0 - f / cfg.rollout_fraction)).clamp(0.0, 100.0)
        };
        let what = if affected == 1 {
            "a rare outlier"
        } else {
            "a minority of replicas"
        };
        ClusterAssessment {
            score: Some(score),
            reason: format!("{affected} of {replicas} pods show it ({pct}%{image_note}): {what}"),
            ..base
        }
    }

    /// Forgets a pod that no longer exists: the fraction of replicas that
    /// show a shape counts live pods only. A pod that did something and was
    /// deleted is not one of the current replicas, so the same behaviour in
    /// its replacement is that replacement alone (an attack repeated in
    /// fresh pods), not two pods of a release. Returns how many shapes
    /// counted it.
    pub fn forget_pod(&mut self, namespace: &str, workload: &str, pod: &str) -> usize {
        let key = (format!("{namespace}/{workload}"), pod.to_string());
        let mut n = 0;
        self.shapes.retain(|_, s| {
            if s.pods.remove(&key).is_some() {
                n += 1;
            }
            !s.pods.is_empty()
        });
        n
    }

    /// Drops pods and shapes not seen within the window.
    pub fn prune(&mut self, now_ns: u64) {
        let window = self.config.window_secs.saturating_mul(NS_PER_SEC);
        self.shapes.retain(|_, s| {
            s.pods.retain(|_, t| now_ns.saturating_sub(*t) <= window);
            !s.pods.is_empty()
        });
    }

    /// How many shapes are tracked.
    pub fn tracked_shapes(&self) -> usize {
        self.shapes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::fixtures::candidate;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn pod(i: usize) -> CandidateAlert {
        let mut c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        c.pod = format!("webapp-{i}");
        c
    }

    #[test]
    fn one_pod_of_a_hundred_is_a_high_scoring_outlier() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let c = pod(0);
        let a = e.observe(&c, &c.shape(), T0);
        let s = a.score.unwrap();
        assert_eq!(s, 80.0);
        assert!(!a.relearn_suggested);
        assert!(a.reason.contains("1 of 100"), "{}", a.reason);
    }

    #[test]
    fn most_replicas_at_once_score_zero_and_suggest_relearning() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let mut last = None;
        for i in 0..60 {
            let c = pod(i);
            last = Some(e.observe(&c, &c.shape(), T0 + i as u64));
        }
        let a = last.unwrap();
        assert_eq!(a.score, Some(0.0));
        assert!(a.relearn_suggested);
        assert_eq!(a.affected_pods, 60);
    }

    #[test]
    fn a_deleted_pod_is_not_counted_when_its_replacement_does_the_same() {
        // an attack repeated in fresh pods, each deleted before the next
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let mut c = pod(1);
        c.workload_replicas = Some(4);
        let first = e.observe(&c, &c.shape(), T0);
        assert_eq!((first.score, first.affected_pods), (Some(80.0), 1));
        assert_eq!(e.forget_pod(&c.namespace, &c.workload, &c.pod), 1);
        let mut c2 = pod(2);
        c2.workload_replicas = Some(4);
        let second = e.observe(&c2, &c2.shape(), T0 + 10);
        assert_eq!(second.score, Some(80.0), "{}", second.reason);
        assert_eq!(second.affected_pods, 1);
        assert!(!second.relearn_suggested);
        // both alive: two of four, a release
        let mut c3 = pod(3);
        c3.workload_replicas = Some(4);
        let third = e.observe(&c3, &c3.shape(), T0 + 20);
        assert!(third.relearn_suggested, "{}", third.reason);
        // forgetting a pod nobody counted changes nothing
        assert_eq!(e.forget_pod(&c.namespace, &c.workload, "webapp-9"), 0);
    }

    #[test]
    fn an_anomaly_right_after_a_rollout_counts_as_the_release() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let mut c = pod(0);
        c.workload_rollout_ns = Some(T0 - 60 * NS_PER_SEC);
        let a = e.observe(&c, &c.shape(), T0);
        assert_eq!(a.score, Some(0.0));
        assert!(a.relearn_suggested);
        // Long after the rollout it is an outlier again.
        c.workload_rollout_ns = Some(T0 - 7200 * NS_PER_SEC);
        c.pod = "webapp-x".into();
        let mut e = ClusterEngine::new(ClusterConfig::default());
        assert!(e.observe(&c, &c.shape(), T0).score.unwrap() > 70.0);
    }

    #[test]
    fn pods_leave_the_count_after_the_window() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        for i in 0..10 {
            let c = pod(i);
            e.observe(&c, &c.shape(), T0);
        }
        let c = pod(99);
        let later = T0 + 601 * NS_PER_SEC;
        assert_eq!(e.observe(&c, &c.shape(), later).affected_pods, 1);
        e.prune(later + 601 * NS_PER_SEC);
        assert_eq!(e.tracked_shapes(), 0);
    }

    #[test]
    fn a_lone_pod_is_the_outlier_whatever_the_replicas_and_two_of_two_a_release() {
        for replicas in [2, 3, 4, 1000] {
            let mut e = ClusterEngine::new(ClusterConfig::default());
            let mut c = pod(0);
            c.workload_replicas = Some(replicas);
            let a = e.observe(&c, &c.shape(), T0);
            assert_eq!(a.score, Some(80.0), "{replicas}: {}", a.reason);
            assert!(!a.relearn_suggested);
            assert!(
                a.reason.contains(&format!("1 of {replicas} pods")),
                "{}",
                a.reason
            );
        }
        let mut e = ClusterEngine::new(ClusterConfig::default());
        for i in 0..2 {
            let mut c = pod(i);
            c.workload_replicas = Some(2);
            let a = e.observe(&c, &c.shape(), T0);
            if i == 1 {
                assert_eq!(a.score, Some(0.0));
                assert!(a.relearn_suggested, "{}", a.reason);
            }
        }
    }

    #[test]
    fn the_engine_abstains_with_too_few_or_unknown_replicas() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let mut c = pod(0);
        c.workload_replicas = Some(1);
        assert_eq!(e.observe(&c, &c.shape(), T0).score, None);
        let mut e = ClusterEngine::new(ClusterConfig::default());
        c.workload_replicas = None;
        assert_eq!(e.observe(&c, &c.shape(), T0).score, None);
    }

    #[test]
    fn the_same_image_in_other_workloads_counts_towards_a_release() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        for i in 0..10 {
            let mut c = pod(i);
            c.workload = "Deployment/webapp-canary".into();
            c.workload_replicas = Some(10);
            e.observe(&c, &c.shape(), T0);
        }
        let mut c = pod(0);
        c.workload_replicas = Some(10);
        let a = e.observe(&c, &c.shape(), T0);
        assert_eq!(a.other_workloads, 1);
        assert_eq!(a.other_workload_pods, 10);
        assert_eq!(a.score, Some(0.0), "{}", a.reason);
    }

    #[test]
    fn the_same_pod_repeating_does_not_inflate_the_count() {
        let mut e = ClusterEngine::new(ClusterConfig::default());
        let c = pod(0);
        for i in 0..1000 {
            e.observe(&c, &c.shape(), T0 + i);
        }
        assert_eq!(e.observe(&c, &c.shape(), T0 + 1000).affected_pods, 1);
    }
}
