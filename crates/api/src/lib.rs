//! Kestrel's custom resources, `kestrel.dev/v1alpha1`: [`BehaviorProfile`]
//! (what a workload normally does) and [`SecurityAlert`] (one incident), as
//! `kube` custom resources with `schemars` schemas, their YAML files, and the
//! `crdgen` binary that writes `deploy/crds/`.
//!
//! This crate sits at the bottom of the workspace: it holds the document
//! shapes and nothing else (no client, no I/O, no logic beyond converting
//! between shapes). `kestrel-profile` converts a [`BehaviorProfile`] to and
//! from its tries; `kestrel-scoring` produces a [`SecurityAlertSpec`] (its
//! `SecurityAlert`). Standalone mode stores the same objects as YAML files
//! ([`to_yaml`], [`profile_from_yaml`], [`alert_from_yaml`], which also read
//! the files of earlier releases).
//!
//! # The objects
//!
//! ```text
//! BehaviorProfile (namespaced, short name bp, category kestrel, status subresource)
//!   spec:   source Learned|Promoted (immutable), mode Auto|Learn|Detect|Enforce,
//!           workload {kind, name, container?}, learning?, compaction?,
//!           baseline (Promoted only: the authored behaviour)
//!   status: observedGeneration, phase Learning|Converged|Detecting|SizeLimited,
//!           conditions (Converged, Drift, SizeLimited, Partial, BaselineInvalid),
//!           learned (Learned only), convergence, summary, sizeBytes
//! SecurityAlert (namespaced, short name salert, category kestrel, status subresource)
//!   spec:   the scorer's alert: id, title, severity, score, evidence, breakdown,
//!           llm, ruleHits, mitre, recommendation, incident (as first written)
//!   status: observedGeneration, state Open|Acknowledged|Suppressed|Resolved,
//!           count, lastSeen, pods, conditions
//! ```
//!
//! # Decisions
//!
//! - **Spec and status.** What a person or Git owns is `spec`; what the
//!   operator observes is `status`, written with server-side apply to the
//!   status subresource only, so it never fights Git. A learned profile's
//!   behaviour is therefore in `status.learned`; a promoted one's in
//!   `spec.baseline`. Promoted wins, the two are never merged.
//! - **Immutable source, reserved `Enforce`.** Kubernetes 1.20 has no CEL
//!   (`x-kubernetes-validations`), so neither "`source` never changes" nor
//!   "`Enforce` is not accepted yet" can be in the schema: the operator
//!   checks both. The generated CRDs carry no CEL at all.
//! - **Bounded everything.** Every string has a `maxLength` and every list a
//!   `maxItems` ([`limits`] documents each cap); a profile's real bound is
//!   its byte budget ([`limits::PROFILE_TARGET_BYTES`],
//!   [`limits::PROFILE_MAX_BYTES`]), measured in `status.sizeBytes`.
//! - **PascalCase enums** (`Critical`, `Detecting`, `IsolatePod`), so no
//!   conversion webhook is ever needed to fix casing. Earlier files wrote some
//!   in other casings (`critical`, `unknown_process`, `isolate_pod`); those
//!   load through serde aliases and are written back in PascalCase. Trie
//!   segments inside a profile body (`access: read`, `direction: outbound`)
//!   are path text, not enums, and stay as the trie stores them.
//! - **Flat signals.** A [`Signal`] is one object with a `kind` and that
//!   kind's fields: structural schemas cannot branch on a tag.
//! - **No empty strings in list items.** The list-item strings that can be
//!   empty (a trie entry's image and argument string, a condition's message,
//!   an ancestor's executable, a rule's description) are left out when
//!   empty, and read back as empty: the Kubernetes 1.20 API server of
//!   `k8s-testenv` reads `""` inside list items as `null` and rejects the
//!   object ("must be of type string: \"null\""), and refuses a CRD whose
//!   defaults hold `""` (those defaults are left out of the schema,
//!   [`crds`]). Both measured with `make e2e-k8s`.
//! - **Hashes as hex.** [`AnomalyShape::bucket`] is a 64-bit hash, written
//!   as 16 hex digits: JSON integers above 2^63 do not survive the API server.
//! - **Names.** A profile is named after its workload ([`object_name`]:
//!   `Deployment/webapp` → `deployment-webapp`); the exact workload name is in
//!   `spec.workload` and, when that cannot hold it exactly, the annotation
//!   [`WORKLOAD_ANNOTATION`]. An alert is named `<workload>-<fingerprint>`
//!   ([`alert_object_name`]) so repeats update one object.
//! - **Conditions** are `metav1.Condition`-shaped ([`Condition`]), so
//!   `kubectl wait --for=condition=Converged bp/deployment-webapp` works.
//! - **Alert incident twice.** `spec.incident` is the incident when the alert
//!   was written (the scorer's record, unchanged); `status.count`,
//!   `lastSeen` and `pods` are the live values the operator coalesces.
//!
//! # Example
//!
//! ```
//! use kestrel_api::{
//!     profile_from_yaml, to_yaml, BehaviorProfile, BehaviorProfileSpec, ProfileBody,
//!     ProfileMode, ProfileSource, WorkloadRef,
//! };
//!
//! let spec = BehaviorProfileSpec {
//!     source: ProfileSource::Promoted,
//!     mode: ProfileMode::Detect,
//!     workload: Some(WorkloadRef::parse("Deployment/webapp")),
//!     learning: None,
//!     compaction: None,
//!     baseline: Some(ProfileBody::default()),
//! };
//! let mut bp = BehaviorProfile::new(&kestrel_api::object_name("Deployment/webapp"), spec);
//! bp.metadata.namespace = Some("shop".into());
//! let yaml = to_yaml(&bp)?;
//! assert!(yaml.starts_with("apiVersion: kestrel.dev/v1alpha1\nkind: BehaviorProfile\n"));
//! let back = profile_from_yaml(&yaml)?.object;
//! assert_eq!(back, bp);
//! assert_eq!(back.workload_name().as_deref(), Some("Deployment/webapp"));
//! # Ok::<(), kestrel_api::Error>(())
//! ```
#![deny(missing_docs)]

mod alert;
mod condition;
mod crd;
#[cfg(test)]
mod fixtures;
pub mod limits;
mod names;
mod profile;
mod signal;
mod stored;
mod time;

pub use alert::{
    AlertState, EngineScore, Evidence, IncidentSummary, LlmStatus, LlmSummary, Recommendation,
    RecommendedAction, RuleAction, RuleHitSummary, ScoreBreakdown, SecurityAlert,
    SecurityAlertSpec, SecurityAlertStatus, Severity, Triage, Verdict, TRIAGE_ANNOTATION,
};
pub use condition::{find_condition, Condition, ConditionStatus};
pub use crd::{crd_files, crds, CRDGEN_COMMAND};
pub use names::{
    alert_object_name, cluster_key, is_dns_subdomain, object_name, split_cluster_key, WorkloadKind,
    WorkloadRef, WORKLOAD_ANNOTATION,
};
pub use profile::{
    ArgumentSpec, BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus, CompactionSpec,
    ConvergencePhase, ConvergenceStatus, FileEntry, LearningSpec, NetworkEntry, PrefixLimitSpec,
    ProcessEntry, ProcessKeys, ProfileBody, ProfileMode, ProfilePhase, ProfileSource,
    ProfileSummary, DEFAULT_SIMILARITY_THRESHOLD,
};
pub use signal::{
    basename, AnomalyShape, Direction, FileAccess, PeerAddress, ProcessAncestor, Protocol, Signal,
};
pub use stored::{
    alert_from_yaml, converged_condition, profile_from_yaml, to_yaml, Error, StoredFormat,
    StoredProfile,
};
pub use time::{parse_rfc3339_ns, rfc3339_ns};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API group.
pub const GROUP: &str = "kestrel.dev";
/// The API version within the group.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Kestrel object.
pub const API_VERSION: &str = "kestrel.dev/v1alpha1";
/// `kind` of a profile.
pub const BEHAVIOR_PROFILE_KIND: &str = "BehaviorProfile";
/// `kind` of an alert.
pub const SECURITY_ALERT_KIND: &str = "SecurityAlert";
