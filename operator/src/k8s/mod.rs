//! The operator in a cluster: profiles and alerts as custom resources
//! ([`KubeStore`]), workload identity from watches ([`identity`],
//! [`watch`]), and the API client's settings (docs/kubernetes.md).
//!
//! The pipeline and the engine do not know they run in a cluster: the
//! store behind the `Store` seam writes custom resources instead of files,
//! the identity rewrites each event's workload to the cluster key
//! (`namespace/Kind/name`) and its pod, and the watches feed replica counts
//! and rollout times through `Pipeline::set_facts`.

pub mod alerts;
pub mod enroll;
pub mod identity;
pub mod leader;
pub mod profiles;
pub mod store;
pub mod watch;

pub use enroll::{EnrollSettings, Enroller};
pub use identity::{Identity, Resolved};
pub use leader::{Leadership, LeaseSettings};
pub use store::{KubeStore, KubeStoreConfig, KubeStoreStats, FIELD_MANAGER};

use std::time::Instant;

/// The API server's status in a failed call, if it answered one.
pub(crate) fn api_error(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// A token bucket: `rate` calls per second, at most `burst` at once.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Limiter {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Limiter {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Takes a token at `now`, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens at `now` (one per API call a job makes), if there
    /// are that many; a job that costs more than the burst may go with a
    /// full bucket (it would never go otherwise) and leaves it in debt.
    pub fn take_n(&mut self, now: Instant, n: u32) -> bool {
        if let Some(at) = self.at {
            let gained = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + gained).min(self.burst);
        }
        self.at = Some(self.at.map_or(now, |a| a.max(now)));
        let n = f64::from(n);
        if self.tokens >= n.min(self.burst) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A client from the environment: `KUBECONFIG` (or `~/.kube/config`), else
/// the in-cluster service account.
pub async fn client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await?;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2.0, 3.0);
        assert_eq!((0..5).filter(|_| l.take(t0)).count(), 3);
        assert!(!l.take(t0 + Duration::from_millis(400)));
        assert!(l.take(t0 + Duration::from_millis(500)));
        // a long pause refills to the burst, not beyond
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| l.take(later)).count(), 3);
    }

    /// A job takes one token per API call it makes (a new learned profile:
    /// create, status, the phase's Event), so the budget bounds calls, not
    /// jobs: measured on the real API server, one token per job let 1,001
    /// new profiles make 3,002 calls against a budget of 2,500.
    #[test]
    fn a_job_takes_a_token_per_call() {
        let t0 = Instant::now();
        let mut l = Limiter::new(20.0, 40.0);
        // 13 jobs of 3 calls fit in a burst of 40, the 14th does not
        assert_eq!((0..20).filter(|_| l.take_n(t0, 3)).count(), 13);
        // 1 token left: a 1-call job goes, a 3-call job waits 150 ms more
        assert!(!l.take_n(t0 + Duration::from_millis(50), 3));
        assert!(l.take_n(t0 + Duration::from_millis(100), 3));
        // over 10 s, at most rate × time + burst calls
        let mut calls = 0;
        let mut l = Limiter::new(20.0, 40.0);
        for ms in (0..10_000).step_by(10) {
            if l.take_n(t0 + Duration::from_millis(ms), 3) {
                calls += 3;
            }
        }
        assert!(calls <= 20 * 10 + 40, "{calls}");
        assert!(calls >= 20 * 10, "{calls}");
    }
}
