//! The per-workload convergence state machine: `Learning` → `Converged` →
//! `Detecting`.
//!
//! Growth (new branches, new exemplars, refused additions) is counted in
//! buckets of a sliding window. The profile converges when the minimum learning
//! time has passed and each of the last K windows counted at most the bound
//! (NeuVector's clean-window rule, but over a sliding window). Time is passed
//! in; a clock that goes backwards is treated as standing still.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{format_duration, LearningConfig, Mode};

/// Where a workload stands: the phase of the state machine (defined with
/// the `BehaviorProfile` shape in `kestrel-api`, as `ConvergencePhase`).
pub use kestrel_api::ConvergencePhase as Phase;
/// Serialisable state of the machine (`status.convergence` of a profile;
/// defined in `kestrel-api`).
pub use kestrel_api::ConvergenceStatus;

/// Why a transition happened (stable, for Kubernetes Event reasons and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    /// The clean-window rule held.
    Converged,
    /// Mode `Auto` switched a converged profile to detection.
    AutoDetect,
    /// New behaviour arrived while converged (mode `Learn`).
    NewBehaviour,
    /// A person changed the mode.
    ModeChanged,
    /// Learning was restarted on request.
    Relearn,
    /// A profile document was applied over the one held (GitOps).
    Applied,
}

impl TransitionReason {
    /// CamelCase name, usable as a Kubernetes Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionReason::Converged => "Converged",
            TransitionReason::AutoDetect => "AutoDetect",
            TransitionReason::NewBehaviour => "NewBehaviour",
            TransitionReason::ModeChanged => "ModeChanged",
            TransitionReason::Relearn => "Relearn",
            TransitionReason::Applied => "Applied",
        }
    }
}

/// A phase change, with its reason, for status conditions and Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// When (since the Unix epoch).
    pub at: Duration,
    /// Machine-readable reason.
    pub reason: TransitionReason,
    /// Human-readable explanation.
    pub message: String,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The state machine.
#[derive(Debug, Clone)]
pub(crate) struct Convergence {
    cfg: LearningConfig,
    phase: Phase,
    phase_since: Duration,
    learning_since: Duration,
    last_growth: Option<Duration>,
    now: Duration,
    bucket_index: u64,
    buckets: VecDeque<u32>,
    total_growth: u64,
}

impl Convergence {
    pub(crate) fn new(cfg: LearningConfig, mode: Mode, now: Duration) -> Self {
        let phase = if mode == Mode::Detect {
            Phase::Detecting
        } else {
            Phase::Learning
        };
        let mut c = Convergence {
            cfg,
            phase,
            phase_since: now,
            learning_since: now,
            last_growth: None,
            now,
            bucket_index: 0,
            buckets: VecDeque::new(),
            total_growth: 0,
        };
        c.buckets.push_back(0);
        c
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    fn bucket_ns(&self) -> u64 {
        (ns(self.cfg.window) / u64::from(self.cfg.buckets_per_window)).max(1)
    }

    fn keep(&self) -> usize {
        (self.cfg.buckets_per_window as usize) * (self.cfg.clean_windows as usize)
    }

    fn advance(&mut self, now: Duration) {
        if now > self.now {
            self.now = now;
        }
        let elapsed = ns(self.now.saturating_sub(self.learning_since));
        let idx = elapsed / self.bucket_ns();
        let keep = self.keep();
        if idx.saturating_sub(self.bucket_index) >= keep as u64 {
            self.buckets.clear();
            self.buckets.push_back(0);
            self.bucket_index = idx;
        }
        while self.bucket_index < idx {
            self.buckets.push_back(0);
            self.bucket_index += 1;
        }
        while self.buckets.len() > keep {
            self.buckets.pop_front();
        }
    }

    /// Growth in the newest window (ending now).
    pub(crate) fn window_count(&self) -> u64 {
        let b = self.cfg.buckets_per_window as usize;
        self.buckets
            .iter()
            .rev()
            .take(b)
            .map(|&x| u64::from(x))
            .sum()
    }

    /// Counts growth; may return a transition back to learning.
    pub(crate) fn record_growth(&mut self, n: u32, now: Duration) -> Vec<Transition> {
        self.advance(now);
        if let Some(b) = self.buckets.back_mut() {
            *b = b.saturating_add(n);
        }
        self.total_growth += u64::from(n);
        self.last_growth = Some(self.now);
        let mut out = Vec::new();
        if self.phase == Phase::Converged {
            self.go(
                Phase::Learning,
                TransitionReason::NewBehaviour,
                "new behaviour after convergence; learning again".into(),
                &mut out,
            );
        }
        out
    }

    fn go(
        &mut self,
        to: Phase,
        reason: TransitionReason,
        message: String,
        out: &mut Vec<Transition>,
    ) {
        out.push(Transition {
            from: self.phase,
            to,
            at: self.now,
            reason,
            message,
        });
        self.phase = to;
        self.phase_since = self.now;
    }

    fn clean(&self) -> bool {
        let b = self.cfg.buckets_per_window as usize;
        let k = self.cfg.clean_windows as usize;
        let elapsed = self.now.saturating_sub(self.learning_since);
        let needed = self
            .cfg
            .min_learning_time
            .max(self.cfg.window * self.cfg.clean_windows);
        if elapsed < needed {
            return false;
        }
        let v: Vec<u32> = self.buckets.iter().rev().copied().collect();
        (0..k).all(|w| {
            let sum: u64 = v.iter().skip(w * b).take(b).map(|&x| u64::from(x)).sum();
            sum <= u64::from(self.cfg.max_new_per_window)
        })
    }

    /// Advances time and applies the clean-window rule.
    pub(crate) fn tick(&mut self, now: Duration, mode: Mode) -> Vec<Transition> {
        self.advance(now);
        let mut out = Vec::new();
        if self.phase == Phase::Learning && mode != Mode::Detect && self.clean() {
            let msg = format!(
                "at most {} new branches or exemplars in each of {} consecutive windows of {} after {} of learning",
                self.cfg.max_new_per_window,
                self.cfg.clean_windows,
                format_duration(self.cfg.window),
                format_duration(round_s(self.now.saturating_sub(self.learning_since))),
            );
            self.go(Phase::Converged, TransitionReason::Converged, msg, &mut out);
        }
        if self.phase == Phase::Converged && mode == Mode::Auto {
            self.go(
                Phase::Detecting,
                TransitionReason::AutoDetect,
                "mode Auto: converged profile switched to detection".into(),
                &mut out,
            );
        }
        out
    }

    /// Applies a mode change.
    pub(crate) fn set_mode(&mut self, old: Mode, mode: Mode, now: Duration) -> Vec<Transition> {
        self.advance(now);
        let mut out = Vec::new();
        match mode {
            Mode::Detect if self.phase != Phase::Detecting => self.go(
                Phase::Detecting,
                TransitionReason::ModeChanged,
                format!("mode changed from {old:?} to Detect: profile locked"),
                &mut out,
            ),
            Mode::Learn if self.phase == Phase::Detecting => {
                self.restart_learning();
                self.go(
                    Phase::Learning,
                    TransitionReason::ModeChanged,
                    format!("mode changed from {old:?} to Learn: learning again"),
                    &mut out,
                );
            }
            _ => {}
        }
        out.extend(self.tick(now, mode));
        out
    }

    fn restart_learning(&mut self) {
        self.learning_since = self.now;
        self.bucket_index = 0;
        self.buckets.clear();
        self.buckets.push_back(0);
    }

    /// Restarts learning from now.
    pub(crate) fn relearn(&mut self, now: Duration) -> Vec<Transition> {
        self.advance(now);
        self.restart_learning();
        let mut out = Vec::new();
        if self.phase != Phase::Learning {
            self.go(
                Phase::Learning,
                TransitionReason::Relearn,
                "learning restarted on request".into(),
                &mut out,
            );
        }
        out
    }

    pub(crate) fn status(&self) -> ConvergenceStatus {
        ConvergenceStatus {
            phase: self.phase,
            phase_since_unix_nanos: ns(self.phase_since),
            learning_since_unix_nanos: ns(self.learning_since),
            last_growth_unix_nanos: self.last_growth.map(ns),
            now_unix_nanos: ns(self.now),
            bucket_index: self.bucket_index,
            buckets: self.buckets.iter().copied().collect(),
            total_growth: self.total_growth,
        }
    }

    pub(crate) fn from_status(cfg: LearningConfig, s: &ConvergenceStatus) -> Self {
        let mut c = Convergence {
            cfg,
            phase: s.phase,
            phase_since: Duration::from_nanos(s.phase_since_unix_nanos),
            learning_since: Duration::from_nanos(s.learning_since_unix_nanos),
            last_growth: s.last_growth_unix_nanos.map(Duration::from_nanos),
            now: Duration::from_nanos(s.now_unix_nanos),
            bucket_index: s.bucket_index,
            buckets: s.buckets.iter().copied().collect(),
            total_growth: s.total_growth,
        };
        if c.buckets.is_empty() {
            c.buckets.push_back(0);
        }
        let keep = c.keep();
        while c.buckets.len() > keep {
            c.buckets.pop_front();
        }
        c
    }
}

fn round_s(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LearningConfig {
        LearningConfig {
            window: Duration::from_secs(10),
            min_learning_time: Duration::from_secs(30),
            max_new_per_window: 0,
            clean_windows: 2,
            buckets_per_window: 5,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn auto_mode_converges_after_min_time_and_k_clean_windows_then_detects() {
        let mut c = Convergence::new(cfg(), Mode::Auto, s(0));
        assert!(c.record_growth(1, s(25)).is_empty());
        assert!(
            c.tick(s(40), Mode::Auto).is_empty(),
            "growth 15 s ago, windows of 10 s"
        );
        let t = c.tick(s(46), Mode::Auto);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].from, t[0].to), (Phase::Learning, Phase::Converged));
        assert_eq!(t[0].reason, TransitionReason::Converged);
        assert_eq!((t[1].from, t[1].to), (Phase::Converged, Phase::Detecting));
        assert!(t[0].message.contains("2 consecutive windows of 10s"));
    }

    #[test]
    fn learn_mode_waits_converged_and_goes_back_on_new_behaviour() {
        let mut c = Convergence::new(cfg(), Mode::Learn, s(0));
        let t = c.tick(s(31), Mode::Learn);
        assert_eq!(t.len(), 1);
        assert_eq!(c.phase(), Phase::Converged);
        let t = c.record_growth(1, s(32));
        assert_eq!(t[0].reason, TransitionReason::NewBehaviour);
        assert_eq!(c.phase(), Phase::Learning);
    }

    #[test]
    fn the_minimum_learning_time_holds_even_without_growth() {
        let mut c = Convergence::new(cfg(), Mode::Auto, s(0));
        assert!(c.tick(s(29), Mode::Auto).is_empty());
        assert_eq!(c.tick(s(30), Mode::Auto).len(), 2);
    }

    #[test]
    fn detect_mode_locks_and_learn_mode_relearns() {
        let mut c = Convergence::new(cfg(), Mode::Auto, s(0));
        let t = c.set_mode(Mode::Auto, Mode::Detect, s(1));
        assert_eq!(t[0].to, Phase::Detecting);
        let t = c.set_mode(Mode::Detect, Mode::Learn, s(2));
        assert_eq!(t[0].to, Phase::Learning);
        assert!(
            c.tick(s(31), Mode::Learn).is_empty(),
            "learning restarted at 2 s"
        );
    }

    #[test]
    fn a_clock_going_backwards_stands_still_and_big_jumps_are_bounded() {
        let mut c = Convergence::new(cfg(), Mode::Learn, s(100));
        c.record_growth(3, s(50));
        assert_eq!(c.window_count(), 3);
        c.tick(s(1_000_000), Mode::Learn);
        assert!(c.buckets.len() <= 10);
        assert_eq!(c.window_count(), 0);
    }

    #[test]
    fn status_round_trips() {
        let mut c = Convergence::new(cfg(), Mode::Learn, s(0));
        c.record_growth(2, s(3));
        let st = c.status();
        let c2 = Convergence::from_status(cfg(), &st);
        assert_eq!(c2.status(), st);
    }
}
