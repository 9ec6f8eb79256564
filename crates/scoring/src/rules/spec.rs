//! The YAML schema of rule files.

use serde::{Deserialize, Serialize};

/// A rule file: a list of rules under `rules:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// One rule as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id (`[a-z0-9-]+`); a user rule with a default rule's id replaces it.
    pub id: String,
    /// What the rule detects, one sentence.
    pub description: String,
    /// Confidence that a hit is malicious, 0..=100.
    pub score: f64,
    /// MITRE ATT&CK technique or tactic ids (`T1496`, `TA0040`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// What to do about a hit.
    #[serde(default)]
    pub action: RuleAction,
    /// Free text advice shown with the alert.
    #[serde(default)]
    pub recommendation: Option<String>,
    /// `false` switches the rule off (useful to disable a default rule by id).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The condition.
    pub when: ConditionSpec,
}

fn yes() -> bool {
    true
}

/// The recommended action attached to a rule (defined with the alert, in
/// `kestrel-api`): `investigate`, `rotate_credentials`, `kill_process`,
/// `isolate_pod` in rule files, also accepted PascalCase (`IsolatePod`, as
/// alerts write it).
pub use kestrel_api::RuleAction;

/// A condition: exactly one of `all`, `any`, `not`, or `field` with one operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// Every sub-condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionSpec>>,
    /// At least one sub-condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionSpec>>,
    /// The sub-condition does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionSpec>>,
    /// The field to test (see the field list in `docs/scoring.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Exact match with one of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<OneOrMany<String>>,
    /// Glob match with one of the patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<OneOrMany<String>>,
    /// Regex search (unanchored) with one of the patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<OneOrMany<String>>,
    /// Substring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<OneOrMany<String>>,
    /// Prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_with: Option<OneOrMany<String>>,
    /// Suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_with: Option<OneOrMany<String>>,
    /// Address in one of the networks (`10.0.0.0/8`, `::1/128`, a bare address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<OneOrMany<String>>,
    /// Port in the set: numbers and `"lo-hi"` ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<OneOrMany<PortSpec>>,
    /// Case-insensitive string matching (ASCII and Unicode simple folding).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// One value or a list of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Self::One(v) => std::slice::from_ref(v),
            Self::Many(v) => v,
        }
    }
}

/// A port or an inclusive port range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Port(u16),
    /// A range written `"lo-hi"` (or a single port as a string).
    Range(String),
}

impl PortSpec {
    /// The inclusive range, or what is wrong.
    pub(crate) fn range(&self) -> Result<(u16, u16), String> {
        match self {
            Self::Port(p) => Ok((*p, *p)),
            Self::Range(s) => {
                let parse = |t: &str| {
                    t.trim()
                        .parse::<u16>()
                        .map_err(|e| format!("bad port {t:?}: {e}"))
                };
                match s.split_once('-') {
                    Some((lo, hi)) => {
                        let (lo, hi) = (parse(lo)?, parse(hi)?);
                        if lo > hi {
                            return Err(format!("empty port range {s:?}"));
                        }
                        Ok((lo, hi))
                    }
                    None => {
                        let p = parse(s)?;
                        Ok((p, p))
                    }
                }
            }
        }
    }
}
