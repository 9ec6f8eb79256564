//! The LLM engine: a client seam ([`LlmClient`]), an OpenAI-compatible
//! implementation ([`OpenAiClient`]), and [`LlmEngine`], which adds the
//! cache by anomaly shape and the calls-per-minute budget.
//!
//! The engine never invents a verdict: any failure (unset, timeout, HTTP
//! error, malformed or out-of-range answer, budget spent) is reported as
//! [`LlmOutcome::Unavailable`] with the reason, and the combiner then
//! redistributes the LLM's weight and says "LLM: unavailable".

mod answer;
mod openai;
mod prompt;
mod queue;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::candidate::{AnomalyShape, CandidateAlert};
use crate::error::Result;

pub use answer::{parse_answer, response_format, LlmVerdict, Verdict};
pub use openai::{OpenAiClient, OpenAiConfig};
pub use prompt::{build_prompt, Prompt, SYSTEM_PROMPT};
pub use queue::{LlmAnswer, LlmQueue, LlmQueueConfig, LlmRequest, LlmTicket};

/// A boxed, sendable future (the trait stays object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that turns a prompt into a validated verdict.
///
/// Implementations must return an error rather than a guessed verdict.
pub trait LlmClient: Send + Sync {
    /// Asks for a judgement.
    fn judge<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<LlmVerdict>>;

    /// A short description for logs (`http://vllm:8000/v1/... (model)`).
    fn describe(&self) -> String;
}

/// Settings of the engine around the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmEngineConfig {
    /// Calls allowed per minute (fixed one-minute windows); past it the
    /// engine answers "unavailable (budget)" until the next window.
    pub calls_per_minute: u32,
    /// How long a verdict stays cached for its shape (s).
    pub cache_ttl_secs: u64,
    /// Most shapes cached; the oldest entry goes first.
    pub cache_capacity: usize,
}

impl Default for LlmEngineConfig {
    fn default() -> Self {
        Self {
            calls_per_minute: 30,
            cache_ttl_secs: 24 * 3600,
            cache_capacity: 10_000,
        }
    }
}

/// What the LLM engine produced for one anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum LlmOutcome {
    /// A validated verdict.
    Verdict {
        /// The verdict.
        verdict: LlmVerdict,
        /// Whether it came from the cache.
        cached: bool,
    },
    /// No verdict; the reason is shown in the alert.
    Unavailable {
        /// Why (`not configured`, `queue full`, `http status 500: ...`, ...).
        reason: String,
    },
    /// Asked on the deferred path and not answered yet; the alert says the
    /// judgement is pending until the answer arrives.
    Pending,
    /// Asked on the deferred path and not answered within the deadline.
    TimedOut {
        /// The deadline (ms).
        #[serde(rename = "afterMs")]
        after_ms: u64,
    },
}

impl LlmOutcome {
    /// The outcome when no LLM is configured.
    pub fn not_configured() -> Self {
        Self::Unavailable {
            reason: "not configured".into(),
        }
    }

    /// The outcome when the deferred queue had no room for the judgement.
    pub fn queue_full() -> Self {
        Self::Unavailable {
            reason: "queue full".into(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    cache: HashMap<AnomalyShape, (LlmVerdict, u64)>,
    window_start_ns: u64,
    calls_in_window: u32,
    calls: u64,
    failures: u64,
    cache_hits: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmStats {
    /// Calls made to the client.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
}

/// The client plus cache and budget. Cheap to share (`Arc` inside); all
/// methods take `&self`, so several judgements can be in flight at once.
#[derive(Clone)]
pub struct LlmEngine {
    client: Arc<dyn LlmClient>,
    config: LlmEngineConfig,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for LlmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmEngine")
            .field("client", &self.client.describe())
            .field("config", &self.config)
            .finish()
    }
}

const MINUTE_NS: u64 = 60 * 1_000_000_000;

impl LlmEngine {
    /// An engine around a client.
    pub fn new(client: Arc<dyn LlmClient>, config: LlmEngineConfig) -> Self {
        Self {
            client,
            config,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another judgement panicked mid-update
        // of plain counters and a map; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters so far.
    pub fn stats(&self) -> LlmStats {
        let s = self.state();
        LlmStats {
            calls: s.calls,
            failures: s.failures,
            cache_hits: s.cache_hits,
        }
    }

    /// Judges a candidate: from the cache when its shape was judged within
    /// the TTL, else by one client call if the budget allows.
    pub async fn judge(
        &self,
        c: &CandidateAlert,
        rule_ids: &[&str],
        shape: &AnomalyShape,
        now_ns: u64,
    ) -> LlmOutcome {
        let ttl = self.config.cache_ttl_secs.saturating_mul(1_000_000_000);
        {
            let mut s = self.state();
            if let Some((v, at)) = s.cache.get(shape) {
                if now_ns.saturating_sub(*at) <= ttl {
                    let verdict = v.clone();
                    s.cache_hits += 1;
                    return LlmOutcome::Verdict {
                        verdict,
                        cached: true,
                    };
                }
            }
            if now_ns.saturating_sub(s.window_start_ns) >= MINUTE_NS {
                s.window_start_ns = now_ns;
                s.calls_in_window = 0;
            }
            if s.calls_in_window >= self.config.calls_per_minute {
                return LlmOutcome::Unavailable {
                    reason: format!(
                        "budget of {} calls per minute spent",
                        self.config.calls_per_minute
                    ),
                };
            }
            s.calls_in_window += 1;
            s.calls += 1;
        }
        let prompt = build_prompt(c, rule_ids);
        let result = self.client.judge(&prompt).await;
        let mut s = self.state();
        match result {
            Ok(verdict) => {
                if s.cache.len() >= self.config.cache_capacity && !s.cache.contains_key(shape) {
                    s.cache
                        .retain(|_, (_, at)| now_ns.saturating_sub(*at) <= ttl);
                    if s.cache.len() >= self.config.cache_capacity {
                        if let Some(oldest) = s
                            .cache
                            .iter()
                            .min_by_key(|(_, (_, at))| *at)
                            .map(|(k, _)| k.clone())
                        {
                            s.cache.remove(&oldest);
                        }
                    }
                }
                if self.config.cache_capacity > 0 {
                    s.cache.insert(shape.clone(), (verdict.clone(), now_ns));
                }
                LlmOutcome::Verdict {
                    verdict,
                    cached: false,
                }
            }
            Err(e) => {
                s.failures += 1;
                LlmOutcome::Unavailable {
                    reason: e.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::fixtures::candidate;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Scripted {
        calls: AtomicU32,
        fail: bool,
    }

    impl LlmClient for Scripted {
        fn judge<'a>(&'a self, _p: &'a Prompt) -> BoxFuture<'a, Result<LlmVerdict>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            Box::pin(async move {
                if fail {
                    Err(Error::Timeout(10))
                } else {
                    Ok(LlmVerdict {
                        verdict: Verdict::Malicious,
                        score: 99.0,
                        explanation: "XMRig".into(),
                        tactics: vec!["T1496".into()],
                    })
                }
            })
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    #[tokio::test]
    async fn verdicts_are_cached_by_shape() {
        let client = Arc::new(Scripted {
            calls: AtomicU32::new(0),
            fail: false,
        });
        let e = LlmEngine::new(client.clone(), LlmEngineConfig::default());
        let c = candidate("/tmp/xmrig", &["xmrig"]);
        let shape = c.shape();
        for i in 0..10 {
            let o = e.judge(&c, &[], &shape, T0 + i).await;
            assert!(matches!(o, LlmOutcome::Verdict { cached, .. } if cached == (i > 0)));
        }
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.stats().cache_hits, 9);
    }

    #[tokio::test]
    async fn the_budget_caps_calls_per_minute_and_refills() {
        let client = Arc::new(Scripted {
            calls: AtomicU32::new(0),
            fail: true,
        });
        let cfg = LlmEngineConfig {
            calls_per_minute: 3,
            ..LlmEngineConfig::default()
        };
        let e = LlmEngine::new(client.clone(), cfg);
        let c = candidate("/tmp/xmrig", &["xmrig"]);
        let shape = c.shape();
        let mut reasons = Vec::new();
        for i in 0..5 {
            if let LlmOutcome::Unavailable { reason } = e.judge(&c, &[], &shape, T0 + i).await {
                reasons.push(reason);
            }
        }
        assert_eq!(client.calls.load(Ordering::SeqCst), 3);
        assert!(reasons[3].contains("budget"), "{reasons:?}");
        assert!(reasons[0].contains("timed out"));
        e.judge(&c, &[], &shape, T0 + MINUTE_NS + 5).await;
        assert_eq!(client.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let client = Arc::new(Scripted {
            calls: AtomicU32::new(0),
            fail: true,
        });
        let e = LlmEngine::new(client.clone(), LlmEngineConfig::default());
        let c = candidate("/tmp/xmrig", &["xmrig"]);
        let shape = c.shape();
        e.judge(&c, &[], &shape, T0).await;
        e.judge(&c, &[], &shape, T0 + 1).await;
        assert_eq!(client.calls.load(Ordering::SeqCst), 2);
        assert_eq!(e.stats().failures, 2);
    }
}
