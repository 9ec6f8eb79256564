//! The deferred path: a bounded queue of LLM judgements served on a tokio
//! runtime, so that whoever scores candidates (the operator's engine
//! thread) never waits for the network.
//!
//! [`Scorer::assess_deferred`](crate::Scorer::assess_deferred) makes an
//! [`LlmRequest`] with a ticket; [`LlmQueue::try_submit`] queues it without
//! waiting (or gives it back when the queue is full); a dispatcher task runs
//! at most `concurrency` judgements at once, each within its overall
//! deadline; answers come back as [`LlmAnswer`]s that the caller drains
//! with [`LlmQueue::try_answers`] and hands to
//! [`Scorer::apply_llm`](crate::Scorer::apply_llm).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use super::{LlmEngine, LlmOutcome};
use crate::candidate::{AnomalyShape, CandidateAlert};

/// Settings of the deferred LLM path (the `llmQueue:` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmQueueConfig {
    /// Judgements waiting for a free slot; when the queue is full a new
    /// anomaly's LLM part says `LLM: unavailable (queue full)`.
    pub capacity: usize,
    /// Judgements in flight at once.
    pub concurrency: usize,
    /// Overall limit of one judgement from the moment it is queued, waiting
    /// and the client's retries included (ms); past it the alert's LLM part
    /// says `LLM: timed out`.
    pub deadline_ms: u64,
}

impl Default for LlmQueueConfig {
    fn default() -> Self {
        Self {
            capacity: 256,
            concurrency: 4,
            deadline_ms: 30_000,
        }
    }
}

impl LlmQueueConfig {
    /// The deadline as nanoseconds (for `now_ns` arithmetic).
    pub(crate) fn deadline_ns(&self) -> u64 {
        self.deadline_ms.saturating_mul(1_000_000)
    }
}

/// Identifies one deferred judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LlmTicket(pub(crate) u64);

/// One judgement to make: what the LLM needs for one anomaly. Made by
/// [`Scorer::assess_deferred`](crate::Scorer::assess_deferred).
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub(crate) ticket: LlmTicket,
    pub(crate) candidate: CandidateAlert,
    pub(crate) rule_ids: Vec<String>,
    pub(crate) shape: AnomalyShape,
    pub(crate) asked_ns: u64,
}

impl LlmRequest {
    /// Its ticket (the answer carries it).
    pub fn ticket(&self) -> LlmTicket {
        self.ticket
    }

    /// The anomaly to judge.
    pub fn candidate(&self) -> &CandidateAlert {
        &self.candidate
    }

    /// Judges it now, with the engine's cache and budget (no deadline: the
    /// queue adds one).
    pub async fn judge(&self, engine: &LlmEngine) -> LlmOutcome {
        let ids: Vec<&str> = self.rule_ids.iter().map(String::as_str).collect();
        engine
            .judge(&self.candidate, &ids, &self.shape, self.asked_ns)
            .await
    }
}

/// The answer to one [`LlmRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlmAnswer {
    /// The request's ticket.
    pub ticket: LlmTicket,
    /// What the LLM engine said (a verdict, unavailable, or timed out).
    pub outcome: LlmOutcome,
}

struct Job {
    request: LlmRequest,
    deadline: Instant,
}

/// A bounded queue of judgements served on a tokio runtime. Submitting and
/// draining never wait; dropping the queue stops the dispatcher (judgements
/// in flight end at their deadline).
pub struct LlmQueue {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<LlmAnswer>,
    deadline: Duration,
    capacity: usize,
}

impl std::fmt::Debug for LlmQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmQueue")
            .field("capacity", &self.capacity)
            .field("waiting", &self.waiting())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl LlmQueue {
    /// Starts the dispatcher for `engine` on `runtime` (callable from any
    /// thread, inside a runtime or not).
    pub fn start(
        engine: LlmEngine,
        config: &LlmQueueConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        // `validate` rejects 0; clamping keeps a hand-built config from
        // panicking in `mpsc::channel`.
        let capacity = config.capacity.max(1);
        let concurrency = config.concurrency.max(1);
        let deadline = Duration::from_millis(config.deadline_ms);
        let (jobs, mut queued) = mpsc::channel::<Job>(capacity);
        // Room for every answer that can exist at once: a judgement keeps
        // its slot until its answer is sent, so a caller that stops draining
        // stalls the dispatcher (and the queue fills) instead of piling up
        // tasks.
        let (answer_tx, answers) = mpsc::channel::<LlmAnswer>(concurrency);
        let slots = Arc::new(Semaphore::new(concurrency));
        let after_ms = config.deadline_ms;
        runtime.spawn(async move {
            loop {
                // A slot first, then a job: waiting jobs stay in the bounded
                // queue, where the caller sees them.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let Some(job) = queued.recv().await else {
                    break;
                };
                let (engine, answer_tx) = (engine.clone(), answer_tx.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::from_std(job.deadline);
                    let outcome = if tokio::time::Instant::now() >= deadline {
                        LlmOutcome::TimedOut { after_ms }
                    } else {
                        tokio::time::timeout_at(deadline, job.request.judge(&engine))
                            .await
                            .unwrap_or(LlmOutcome::TimedOut { after_ms })
                    };
                    let answer = LlmAnswer {
                        ticket: job.request.ticket,
                        outcome,
                    };
                    // The receiver is gone only when the queue was dropped.
                    let _ = answer_tx.send(answer).await;
                    drop(slot);
                });
            }
        });
        Self {
            jobs,
            answers,
            deadline,
            capacity,
        }
    }

    /// Whether [`LlmQueue::try_submit`] would accept a request now. With one
    /// submitting thread this stays true until it submits.
    pub fn has_room(&self) -> bool {
        self.jobs.capacity() > 0
    }

    /// Requests queued and not yet started.
    pub fn waiting(&self) -> usize {
        self.capacity - self.jobs.capacity()
    }

    /// Queues a request without waiting; gives it back when the queue is
    /// full (or the runtime is gone). Its deadline starts now.
    pub fn try_submit(&self, request: LlmRequest) -> Result<(), Box<LlmRequest>> {
        let job = Job {
            request,
            deadline: Instant::now() + self.deadline,
        };
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                Box::new(j.request)
            }
        })
    }

    /// The answers that arrived, without waiting.
    pub fn try_answers(&mut self) -> Vec<LlmAnswer> {
        let mut out = Vec::new();
        while let Ok(a) = self.answers.try_recv() {
            out.push(a);
        }
        out
    }

    /// Waits for the next answer (`None` once the dispatcher is gone). For
    /// async callers and tests; the engine thread uses
    /// [`LlmQueue::try_answers`].
    pub async fn answer(&mut self) -> Option<LlmAnswer> {
        self.answers.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::fixtures::candidate;
    use crate::error::Result;
    use crate::llm::{BoxFuture, LlmClient, LlmEngineConfig, LlmVerdict, Prompt, Verdict};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Answers "malicious" at once, or never.
    struct Scripted {
        hang: bool,
        calls: AtomicU32,
    }

    impl LlmClient for Scripted {
        fn judge<'a>(&'a self, _p: &'a Prompt) -> BoxFuture<'a, Result<LlmVerdict>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let hang = self.hang;
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(LlmVerdict {
                    verdict: Verdict::Malicious,
                    score: 99.0,
                    explanation: "XMRig".into(),
                    tactics: vec![],
                })
            })
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn engine(hang: bool) -> (LlmEngine, Arc<Scripted>) {
        let client = Arc::new(Scripted {
            hang,
            calls: AtomicU32::new(0),
        });
        let e = LlmEngine::new(client.clone(), LlmEngineConfig::default());
        (e, client)
    }

    fn request(n: u64, exe: &str) -> LlmRequest {
        let c = candidate(exe, &[exe]);
        LlmRequest {
            ticket: LlmTicket(n),
            shape: c.shape(),
            candidate: c,
            rule_ids: vec![],
            asked_ns: 1_700_000_000_000_000_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_answer_comes_back_with_its_ticket() {
        let (e, _) = engine(false);
        let mut q = LlmQueue::start(
            e,
            &LlmQueueConfig::default(),
            &tokio::runtime::Handle::current(),
        );
        assert!(q.try_submit(request(7, "/tmp/xmrig")).is_ok());
        let a = q.answer().await.unwrap();
        assert_eq!(a.ticket, LlmTicket(7));
        assert!(matches!(a.outcome, LlmOutcome::Verdict { .. }), "{a:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_judgement_that_never_ends_times_out_at_its_deadline() {
        let (e, client) = engine(true);
        let cfg = LlmQueueConfig {
            deadline_ms: 50,
            ..LlmQueueConfig::default()
        };
        let mut q = LlmQueue::start(e, &cfg, &tokio::runtime::Handle::current());
        q.try_submit(request(1, "/tmp/xmrig")).unwrap();
        let a = q.answer().await.unwrap();
        assert_eq!(a.outcome, LlmOutcome::TimedOut { after_ms: 50 });
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_gives_the_request_back_without_waiting() {
        let (e, _) = engine(true);
        let cfg = LlmQueueConfig {
            capacity: 2,
            concurrency: 1,
            deadline_ms: 60_000,
        };
        let q = LlmQueue::start(e, &cfg, &tokio::runtime::Handle::current());
        // The hanging client holds the one slot, so at most one request
        // leaves the queue: of 10, 2 or 3 are accepted, the rest refused.
        let mut refused = Vec::new();
        for n in 0..10 {
            if let Err(r) = q.try_submit(request(n, &format!("/usr/bin/tool-{n}"))) {
                refused.push(r.ticket());
            }
        }
        assert!((7..=8).contains(&refused.len()), "{refused:?}");
        assert!(!q.has_room());
        assert_eq!(refused.last(), Some(&LlmTicket(9)));
    }
}
