//! Status conditions in the shape of `metav1.Condition`, so that
//! `kubectl wait --for=condition=Converged` and generic tooling work.
//!
//! Our own type rather than k8s-openapi's: its schema carries our length
//! caps, and `lastTransitionTime` is a plain RFC 3339 string (see
//! [`crate::rfc3339_ns`]) so this crate needs no time library.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known (yet).
    #[default]
    Unknown,
}

impl ConditionStatus {
    /// `True` for `true`, `False` for `false`.
    pub fn from_bool(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// One condition (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The condition's type, CamelCase (see the associated constants).
    #[serde(rename = "type")]
    #[schemars(length(max = limits::CONDITION_TYPE))]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why, CamelCase, for machines (`AutoDetect`, `Converged`, ...).
    #[schemars(length(max = limits::CONDITION_REASON))]
    pub reason: String,
    /// Why, for people.
    #[schemars(length(max = limits::CONDITION_MESSAGE))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(length(max = limits::SHORT))]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// Profiles: learning has converged (phase `Converged` or `Detecting`).
    pub const CONVERGED: &'static str = "Converged";
    /// Profiles: observed behaviour differs from a promoted baseline.
    pub const DRIFT: &'static str = "Drift";
    /// Profiles: the byte budget is reached; the profile stopped growing.
    pub const SIZE_LIMITED: &'static str = "SizeLimited";
    /// Profiles: the learned behaviour is incomplete: reason
    /// `StartedBeforeAgent` when the workload's processes were running
    /// before the agent started, so learning never saw them start.
    pub const PARTIAL: &'static str = "Partial";
    /// Profiles: `spec.baseline` of a promoted profile does not load.
    pub const BASELINE_INVALID: &'static str = "BaselineInvalid";
    /// Alerts: the last triage verdict the operator handled (its reason
    /// names the verdict, its message what was done).
    pub const TRIAGED: &'static str = "Triaged";

    /// A condition.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
        last_transition_time: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: last_transition_time.into(),
            observed_generation: None,
        }
    }
}

/// The condition of type `type_` in `conditions`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
