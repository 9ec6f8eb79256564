//! Alert scoring and reduction for Kestrel: a rules engine, cross-pod
//! statistics, an LLM's judgement, and a combiner that turns many anomaly
//! signals into few alerts people can act on (DESIGN.md §6).
//!
//! Each anomaly arrives as a [`CandidateAlert`] with its full context. Three
//! engines score it from 0 to 100:
//!
//! - [`RuleSet`]: YAML rules (the [default pack](DEFAULT_PACK_YAML) plus
//!   user files) compiled once into per-field regex sets;
//! - [`ClusterEngine`]: how many replicas of the workload (and of other
//!   workloads with the same image) show the same [`AnomalyShape`] within a
//!   window: a lone outlier scores high, a rollout scores 0 and suggests
//!   relearning;
//! - [`LlmEngine`]: an OpenAI-compatible chat endpoint behind the
//!   [`LlmClient`] seam, with a cache by shape and a calls-per-minute budget.
//!   Attacker-controlled text is quoted as JSON data; answers are parsed
//!   strictly; failures are reported, never guessed.
//!
//! The [`Scorer`] weights them (defaults: rules 40, cluster 25, LLM 35),
//! redistributes the weight of an engine that abstains, never lets the LLM
//! lower a rule hit, maps the total to a [`Severity`], groups repeats into
//! one incident and returns a [`SecurityAlert`] with evidence, the score
//! breakdown, the LLM explanation (or `LLM: unavailable`) and a
//! recommendation (with a ready NetworkPolicy when the pod should be
//! isolated). [`falco_payload`] and [`WebhookSink`] send it on.
//!
//! A caller that must never wait for the network (the operator's engine
//! thread) uses the deferred path: [`Scorer::assess_deferred`] scores at
//! once with the LLM part pending and hands back an [`LlmRequest`]; an
//! [`LlmQueue`] (bounded, on a tokio runtime, with a deadline per
//! judgement) judges it; [`Scorer::apply_llm`] re-scores the incident's
//! alert with the answer and [`Scorer::time_out_llm`] settles the late
//! ones as timed out.
//!
//! The core is pure: time is passed in as `now_ns`; only the LLM client and
//! the webhook sink do I/O.
//!
//! The alert record ([`SecurityAlert`], [`Evidence`], [`Severity`], ...) and
//! the evidence it embeds ([`Signal`], [`ProcessAncestor`],
//! [`AnomalyShape`], ...) are the `SecurityAlert` custom resource's spec
//! types from `kestrel-api`, re-exported here; `SecurityAlert` is
//! `kestrel_api::SecurityAlertSpec`.
//!
//! # Example
//!
//! ```
//! use kestrel_scoring::{
//!     Arguments, CandidateAlert, LlmOutcome, ProcessAncestor, RuleSet, Scorer, ScoringConfig,
//!     Severity, Signal,
//! };
//!
//! let rules = RuleSet::default_pack()?;
//! let mut scorer = Scorer::new(ScoringConfig::default(), rules)?;
//! let now = 1_700_000_000_000_000_000;
//! let candidate = CandidateAlert {
//!     namespace: "shop".into(),
//!     workload: "Deployment/webapp".into(),
//!     pod: "webapp-7d4b9-x2x7q".into(),
//!     container_id: "containerd://4f2a".into(),
//!     node: "node-1".into(),
//!     image: "registry.example/webapp:v1".into(),
//!     pid: 4242,
//!     exe: "/tmp/xmrig".into(),
//!     args: Arguments::new(["./xmrig", "-o", "pool.minexmr.com"], ""),
//!     chain: vec![ProcessAncestor::new("/bin/bash", ["bash"])],
//!     signals: vec![Signal::UnknownProcess],
//!     observed_ns: now,
//!     workload_replicas: Some(100),
//!     workload_rollout_ns: None,
//!     shape: None,
//! };
//! // No LLM configured here: its weight goes to the other engines.
//! let outcome = scorer.assess(&candidate, LlmOutcome::not_configured(), now);
//! let alert = outcome.alert().expect("a miner in 1 of 100 pods is an alert");
//! assert!(alert.severity >= Severity::High);
//! assert_eq!(alert.llm.explanation, "LLM: unavailable (not configured)");
//! assert!(alert.recommendation.network_policy.is_some());
//! # Ok::<(), kestrel_scoring::Error>(())
//! ```
#![deny(missing_docs)]

mod alert;
mod candidate;
mod cluster;
mod combiner;
mod deviation;
mod error;
mod http;
mod llm;
mod rules;
mod sink;

pub use alert::{
    isolation_network_policy, rfc3339_ns, EngineScore, Evidence, IncidentSummary, LlmStatus,
    LlmSummary, Recommendation, RecommendedAction, RuleHitSummary, ScoreBreakdown, SecurityAlert,
    Severity, QUARANTINE_LABEL,
};
pub use candidate::{
    AnomalyShape, Arguments, CandidateAlert, Direction, FileAccess, PeerAddress, ProcessAncestor,
    Protocol, Signal,
};
pub use cluster::{ClusterAssessment, ClusterConfig, ClusterEngine};
pub use combiner::{
    Deferred, IncidentConfig, LlmSlot, Outcome, Scorer, ScorerStats, ScoringConfig, SeverityBands,
    Weights,
};
pub use deviation::{
    Accesses, ActorClass, DeviationConfig, DeviationEngine, DeviationPart, LocationClass,
    SweepConfig, WhatScores,
};
pub use error::{Error, Result};
pub use llm::{
    build_prompt, parse_answer, response_format, BoxFuture, LlmAnswer, LlmClient, LlmEngine,
    LlmEngineConfig, LlmOutcome, LlmQueue, LlmQueueConfig, LlmRequest, LlmStats, LlmTicket,
    LlmVerdict, OpenAiClient, OpenAiConfig, Prompt, Verdict, SYSTEM_PROMPT,
};
pub use rules::{
    parse_rule_file, rule_field_names, ConditionSpec, OneOrMany, PortSpec, Rule, RuleAction,
    RuleFile, RuleMatches, RuleSet, RuleSetBuilder, RuleSpec, DEFAULT_PACK_YAML,
};
pub use sink::{
    falco_payload, falco_priority, json_line, FalcoPayload, WebhookConfig, WebhookSink,
};
