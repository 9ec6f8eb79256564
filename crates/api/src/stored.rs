//! The objects as YAML files (standalone mode's state directory), and the
//! files written by earlier releases.
//!
//! A file holds one whole object: `apiVersion`, `kind`, `metadata`, `spec`,
//! `status`, the same as `kubectl get -o yaml` shows. Files written before
//! the custom resources existed ("v0") load too:
//!
//! - a v0 profile has its behaviour under `spec.processes`/`files`/`network`
//!   (with `mode`, `learning`, `compaction`, `modelId`, `argumentMeasure`,
//!   `similarityThreshold` beside it), the convergence state as `status`,
//!   and the workload's name as `metadata.name`. With a `status` it was
//!   learned: it becomes `source: Learned` with the behaviour in
//!   `status.learned`. Without one it was written by a person: it becomes
//!   `source: Promoted` with the behaviour in `spec.baseline`.
//! - a v0 alert is already a `SecurityAlert` without `status` (enum values
//!   in other casings are accepted by aliases); the status is filled from
//!   the incident.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::alert::{SecurityAlert, SecurityAlertStatus};
use crate::condition::{Condition, ConditionStatus};
use crate::names::{object_name, WorkloadRef, WORKLOAD_ANNOTATION};
use crate::profile::{
    BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus, CompactionSpec, ConvergencePhase,
    ConvergenceStatus, FileEntry, LearningSpec, NetworkEntry, ProcessEntry, ProfileBody,
    ProfileMode, ProfileSource,
};
use crate::time::rfc3339_ns;
use crate::{API_VERSION, BEHAVIOR_PROFILE_KIND, SECURITY_ALERT_KIND};

/// Why a document could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not YAML, or not of the expected shape (the parser's message names
    /// the field and the line).
    Yaml(String),
    /// Parsed, but a field holds a value that is not allowed.
    Field {
        /// Path of the field (`kind`, `spec.source`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing failed.
    Serialize(String),
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Yaml(_) => "yaml",
            Error::Field { .. } => "invalid_field",
            Error::Serialize(_) => "serialize",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Yaml(m) => write!(f, "malformed YAML: {m}"),
            Error::Field { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            Error::Serialize(m) => write!(f, "serialising failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Which shape a stored document had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredFormat {
    /// The `kestrel.dev/v1alpha1` custom resource.
    V1alpha1,
    /// Written before the custom resources existed (see the module docs).
    V0,
}

/// A profile read from YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    /// The object, in today's shape whatever the file's.
    pub object: BehaviorProfile,
    /// The file's shape.
    pub format: StoredFormat,
}

impl StoredProfile {
    /// Where the behaviour was in the file, for error messages: `spec` for a
    /// v0 file, else [`BehaviorProfile::body_path`].
    pub fn body_path(&self) -> &'static str {
        match self.format {
            StoredFormat::V0 => "spec",
            StoredFormat::V1alpha1 => self.object.body_path(),
        }
    }
}

/// Any object as YAML.
pub fn to_yaml<T: Serialize>(object: &T) -> Result<String, Error> {
    serde_saphyr::to_string(object).map_err(|e| Error::Serialize(e.to_string()))
}

fn yaml_err(e: impl fmt::Display) -> Error {
    Error::Yaml(e.to_string())
}

/// Just enough of a document to know what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    spec: Option<ProbeSpec>,
    #[serde(default)]
    status: Option<ProbeStatus>,
}

#[derive(Deserialize, Default)]
struct ProbeSpec {
    #[serde(default)]
    source: Option<IgnoredAny>,
    #[serde(default)]
    baseline: Option<IgnoredAny>,
    #[serde(default)]
    workload: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct ProbeStatus {
    #[serde(default)]
    learned: Option<IgnoredAny>,
    #[serde(default)]
    convergence: Option<IgnoredAny>,
    #[serde(default)]
    conditions: Option<IgnoredAny>,
}

fn probe(yaml: &str, kind: &str) -> Result<Probe, Error> {
    let p: Probe = serde_saphyr::from_str(yaml).map_err(yaml_err)?;
    if p.api_version.as_deref() != Some(API_VERSION) {
        return Err(Error::Field {
            field: "apiVersion".into(),
            reason: format!("expected `{API_VERSION}`"),
        });
    }
    if p.kind.as_deref() != Some(kind) {
        return Err(Error::Field {
            field: "kind".into(),
            reason: format!("expected `{kind}`"),
        });
    }
    Ok(p)
}

/// Reads a `BehaviorProfile` written by this or an earlier release.
pub fn profile_from_yaml(yaml: &str) -> Result<StoredProfile, Error> {
    let p = probe(yaml, BEHAVIOR_PROFILE_KIND)?;
    let spec = p.spec.unwrap_or_default();
    let status = p.status.unwrap_or_default();
    let current = spec.source.is_some()
        || spec.baseline.is_some()
        || spec.workload.is_some()
        || status.learned.is_some()
        || status.convergence.is_some()
        || status.conditions.is_some();
    if current {
        let object: BehaviorProfile = serde_saphyr::from_str(yaml).map_err(yaml_err)?;
        return Ok(StoredProfile {
            object,
            format: StoredFormat::V1alpha1,
        });
    }
    let v0: ProfileV0 = serde_saphyr::from_str(yaml).map_err(yaml_err)?;
    Ok(StoredProfile {
        object: v0.upgrade(),
        format: StoredFormat::V0,
    })
}

/// Reads a `SecurityAlert` written by this or an earlier release; a missing
/// status is filled from `spec.incident`.
pub fn alert_from_yaml(yaml: &str) -> Result<SecurityAlert, Error> {
    probe(yaml, SECURITY_ALERT_KIND)?;
    let mut alert: SecurityAlert = serde_saphyr::from_str(yaml).map_err(yaml_err)?;
    if alert.status.is_none() {
        alert.status = Some(SecurityAlertStatus::from_incident(&alert.spec.incident));
    }
    Ok(alert)
}

/// A v0 profile document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileV0 {
    #[allow(dead_code)] // checked by the probe
    api_version: String,
    #[allow(dead_code)] // checked by the probe
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: SpecV0,
    #[serde(default)]
    status: Option<ConvergenceStatus>,
}

/// A v0 `spec`: settings and behaviour side by side.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecV0 {
    #[serde(default)]
    mode: ProfileMode,
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    argument_measure: Option<u32>,
    #[serde(default = "default_threshold")]
    similarity_threshold: f32,
    #[serde(default)]
    learning: Option<LearningSpec>,
    #[serde(default)]
    compaction: Option<CompactionSpec>,
    #[serde(default)]
    processes: Vec<ProcessEntry>,
    #[serde(default)]
    files: Vec<FileEntry>,
    #[serde(default)]
    network: Vec<NetworkEntry>,
}

fn default_threshold() -> f32 {
    crate::DEFAULT_SIMILARITY_THRESHOLD
}

impl ProfileV0 {
    fn upgrade(self) -> BehaviorProfile {
        let s = self.spec;
        let body = ProfileBody {
            model_id: s.model_id,
            argument_measure: s.argument_measure,
            // v0 keyed executables by basename
            process_keys: None,
            similarity_threshold: s.similarity_threshold,
            processes: s.processes,
            files: s.files,
            network: s.network,
        };
        // v0 named the object after the workload, whatever its characters.
        let workload = self.metadata.name.clone();
        let mut metadata = self.metadata;
        if let Some(w) = &workload {
            metadata.name = Some(object_name(w));
        }
        let workload_ref = workload.as_deref().map(WorkloadRef::parse);
        if let (Some(w), Some(r)) = (&workload, &workload_ref) {
            if !r.is_exact_for(w) {
                metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(WORKLOAD_ANNOTATION.into(), w.clone());
            }
        }
        let learned = self.status.is_some();
        let spec = BehaviorProfileSpec {
            source: if learned {
                ProfileSource::Learned
            } else {
                ProfileSource::Promoted
            },
            mode: s.mode,
            workload: workload_ref,
            learning: s.learning,
            compaction: s.compaction,
            baseline: (!learned).then(|| body.clone()),
        };
        let status = self.status.map(|c| BehaviorProfileStatus {
            observed_generation: None,
            phase: Some(c.phase.into()),
            conditions: vec![converged_condition(&c)],
            summary: Some(body.summary()),
            learned: Some(body),
            convergence: Some(c),
            size_bytes: None,
        });
        let mut object = BehaviorProfile {
            metadata,
            spec,
            status,
        };
        object.measure_size();
        object
    }
}

/// The `Converged` condition for a convergence state: `True` once
/// converged (also while detecting), with the phase as its reason and the
/// phase's start as its transition time.
pub fn converged_condition(c: &ConvergenceStatus) -> Condition {
    let converged = c.phase != ConvergencePhase::Learning;
    let message = match c.phase {
        ConvergencePhase::Learning => "learning: the profile is still growing",
        ConvergencePhase::Converged => "converged: waiting for a person to switch to detection",
        ConvergencePhase::Detecting => "converged: detecting",
    };
    Condition::new(
        Condition::CONVERGED,
        ConditionStatus::from_bool(converged),
        c.phase.as_str(),
        message,
        rfc3339_ns(c.phase_since_unix_nanos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::alert_spec;
    use crate::*;

    #[test]
    fn objects_round_trip_through_yaml_and_json() {
        for p in [
            BehaviorProfile::test().build(),
            BehaviorProfile::test().learning().build(),
            BehaviorProfile::test().detecting().build(),
            BehaviorProfile::test().promoted().build(),
        ] {
            let yaml = to_yaml(&p).unwrap();
            let back = profile_from_yaml(&yaml).unwrap();
            assert_eq!(back.format, StoredFormat::V1alpha1);
            assert_eq!(back.object, p, "{yaml}");
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<BehaviorProfile>(&json).unwrap(), p);
        }
        let a = SecurityAlert::test().build();
        let yaml = to_yaml(&a).unwrap();
        assert!(yaml.starts_with("apiVersion: kestrel.dev/v1alpha1\nkind: SecurityAlert\n"));
        assert!(yaml.contains("severity: Critical"), "{yaml}");
        assert_eq!(alert_from_yaml(&yaml).unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<SecurityAlert>(&json).unwrap(), a);
    }

    #[test]
    fn the_size_is_the_compact_json_size_including_itself() {
        let p = BehaviorProfile::test().detecting().build();
        let n = serde_json::to_vec(&p).unwrap().len() as u64;
        assert_eq!(p.status.as_ref().unwrap().size_bytes, Some(n));
    }

    #[test]
    fn an_alert_is_named_by_its_fingerprint_in_its_namespace() {
        let a = SecurityAlert::test().build();
        assert_eq!(
            a.metadata.name.as_deref(),
            Some("deployment-webapp-00ab12cd34ef5678")
        );
        assert_eq!(a.metadata.namespace.as_deref(), Some("shop"));
        let st = a.status.unwrap();
        assert_eq!((st.state, st.count), (AlertState::Open, 3));
        assert_eq!(
            st.last_seen.as_deref(),
            Some("2023-11-14T22:14:20.000000000Z")
        );
        let mut spec = alert_spec();
        spec.evidence.namespace.clear();
        let a = SecurityAlert::from_spec(spec);
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
    }

    const V0_LEARNED: &str = r#"apiVersion: kestrel.dev/v1alpha1
kind: BehaviorProfile
metadata:
  name: Deployment/webapp
  namespace: shop
spec:
  mode: Auto
  modelId: kestrel-test-trigram-v1
  argumentMeasure: 2
  similarityThreshold: 0.9
  learning:
    window: 10s
    minLearningTime: 20s
    maxNewPerWindow: 0
    cleanWindows: 1
    bucketsPerWindow: 12
  compaction:
    childLimit: 50
    prefixLimits:
    - prefix: /proc
      limit: 8
    neverCollapse:
    - /etc/shadow
    exemplarCap: 16
    peerIpLimit: 16
    portLimit: 16
    hardChildLimit: 4096
    maxPathDepth: 32
    nodeBudget: 65536
  processes:
  - image: webapp:v1
    parent: sh
    exe: java
    arguments:
    - args: -jar app.jar
  files:
  - image: webapp:v1
    process: java
    access: read
    paths:
    - /app/*.jar
  network: []
status:
  phase: Detecting
  phaseSinceUnixNanos: 100000000000
  learningSinceUnixNanos: 0
  nowUnixNanos: 120000000000
  bucketIndex: 24
  buckets:
  - 0
  totalGrowth: 7
"#;

    #[test]
    fn a_learned_profile_of_the_earlier_format_becomes_a_learned_object() {
        let p = profile_from_yaml(V0_LEARNED).unwrap();
        assert_eq!(p.format, StoredFormat::V0);
        assert_eq!(p.body_path(), "spec");
        let o = &p.object;
        assert_eq!(o.metadata.name.as_deref(), Some("deployment-webapp"));
        assert_eq!(o.workload_name().as_deref(), Some("Deployment/webapp"));
        assert_eq!(o.spec.source, ProfileSource::Learned);
        assert!(o.spec.baseline.is_none());
        assert_eq!(
            o.spec.learning.as_ref().unwrap().window.as_deref(),
            Some("10s")
        );
        assert_eq!(o.spec.compaction.as_ref().unwrap().child_limit, Some(50));
        let st = o.status.as_ref().unwrap();
        assert_eq!(st.phase, Some(ProfilePhase::Detecting));
        let c = find_condition(&st.conditions, Condition::CONVERGED).unwrap();
        assert_eq!(c.status, ConditionStatus::True);
        let body = o.body().unwrap();
        assert_eq!(body.processes[0].arguments[0].args, "-jar app.jar");
        assert_eq!(body.similarity_threshold, 0.9);
        assert_eq!(st.summary.unwrap().files, 1);
        assert_eq!(st.convergence.as_ref().unwrap().total_growth, 7);
        // Written back, it is an object of today's shape that reads the same.
        let again = profile_from_yaml(&to_yaml(o).unwrap()).unwrap();
        assert_eq!(again.format, StoredFormat::V1alpha1);
        assert_eq!(&again.object, o);
    }

    #[test]
    fn a_hand_written_profile_of_the_earlier_format_becomes_a_promoted_one() {
        let yaml = V0_LEARNED.split("status:").next().unwrap().replace(
            "  name: Deployment/webapp\n",
            "  name: web\n  uid: ignored\n",
        );
        let p = profile_from_yaml(&yaml).unwrap();
        let o = &p.object;
        assert_eq!(o.spec.source, ProfileSource::Promoted);
        assert!(o.status.is_none());
        assert_eq!(o.body().unwrap().files[0].paths, ["/app/*.jar"]);
        assert_eq!(o.workload_name().as_deref(), Some("web"));
        assert_eq!(
            o.spec.workload.as_ref().map(|w| w.kind),
            Some(WorkloadKind::Container)
        );
    }

    #[test]
    fn an_earlier_alert_loads_with_its_old_casings_and_gets_a_status() {
        let mut v = serde_json::to_value(SecurityAlert::test().build()).unwrap();
        v.as_object_mut().unwrap().remove("status");
        let spec = &mut v["spec"];
        spec["severity"] = "critical".into();
        spec["llm"]["status"] = "unavailable".into();
        spec["recommendation"]["action"] = "isolatePod".into();
        spec["ruleHits"][0]["action"] = "isolate_pod".into();
        spec["evidence"]["signals"] = serde_json::json!([
            {"kind": "unknown_process"},
            {"kind": "unknown_peer", "addr": "10.1.2.3", "port": 4444,
             "proto": "tcp", "direction": "outbound"}
        ]);
        spec["evidence"]["shape"]["bucket"] = (u64::MAX - 7).into();
        let old = to_yaml(&v).unwrap();
        let a = alert_from_yaml(&old).unwrap();
        assert_eq!(a, SecurityAlert::test().build());
    }

    #[test]
    fn another_kind_or_version_is_named_in_the_error() {
        let e = profile_from_yaml(&V0_LEARNED.replace("kind: BehaviorProfile", "kind: Pod"))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Field { field, .. } if field == "kind"),
            "{e}"
        );
        let e = profile_from_yaml(&V0_LEARNED.replace("v1alpha1", "v2")).unwrap_err();
        assert!(e.to_string().contains("apiVersion"), "{e}");
        let a = to_yaml(&SecurityAlert::test().build()).unwrap();
        assert!(profile_from_yaml(&a)
            .unwrap_err()
            .to_string()
            .contains("kind"));
        assert!(matches!(profile_from_yaml("["), Err(Error::Yaml(_))));
    }

    #[test]
    fn a_current_profile_with_a_typo_is_refused_naming_the_field() {
        let p = BehaviorProfile::test().promoted().build();
        let yaml = to_yaml(&p)
            .unwrap()
            .replace("parent: sh", "parent: sh\n        colour: red");
        let e = profile_from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let yaml = to_yaml(&p)
            .unwrap()
            .replace("source: Promoted", "source: Borrowed");
        let e = profile_from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.contains("Borrowed"), "{e}");
    }
}

/// The state directory written by the release before the custom resources
/// (`make demo`): every file loads, reads as expected, and passes the
/// schemas once upgraded.
#[cfg(test)]
mod state_v0 {
    use super::*;
    use crate::crd::conformance::check;
    use crate::*;
    use kube::CustomResourceExt;
    use std::path::PathBuf;

    fn files(sub: &str) -> Vec<(String, String)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/state-v0")
            .join(sub);
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let p = e.unwrap().path();
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                (stem, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_profile_of_the_earlier_release_loads_as_a_learned_object() {
        let profiles = files("profiles");
        assert_eq!(profiles.len(), 1);
        for (stem, yaml) in profiles {
            let p = profile_from_yaml(&yaml).unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert_eq!(p.format, StoredFormat::V0);
            let o = &p.object;
            assert_eq!(o.workload_name().as_deref(), Some("web"));
            assert_eq!(o.metadata.name.as_deref(), Some("web"));
            assert_eq!(o.metadata.namespace.as_deref(), Some("standalone"));
            assert_eq!(o.spec.source, ProfileSource::Learned);
            assert_eq!(o.spec.mode, ProfileMode::Auto);
            let st = o.status.as_ref().unwrap();
            assert_eq!(st.phase, Some(ProfilePhase::Detecting));
            let body = o.body().unwrap();
            assert_eq!(body.model_id.as_deref(), Some("all-MiniLM-L6-v2-int8"));
            assert_eq!(body.processes.len(), 5);
            let s = st.summary.unwrap();
            assert_eq!((s.processes, s.exemplars, s.peers), (5, 5, 0));
            assert!(s.files > 30, "{s:?}");
            check(&BehaviorProfile::crd(), o);
            let again = profile_from_yaml(&to_yaml(o).unwrap()).unwrap();
            assert_eq!(&again.object, o);
        }
    }

    #[test]
    fn every_alert_of_the_earlier_release_loads_under_its_old_name() {
        let alerts = files("alerts");
        assert_eq!(alerts.len(), 4);
        for (stem, yaml) in alerts {
            let a = alert_from_yaml(&yaml).unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert_eq!(a.metadata.name.as_deref(), Some(stem.as_str()));
            // A repeat today is written to the same object (and file).
            assert_eq!(a.spec.object_name(), stem);
            assert_eq!(a.spec.severity, Severity::Critical);
            assert_eq!(a.spec.evidence.workload, "web");
            assert!(!a.spec.evidence.signals.is_empty());
            assert!(a
                .spec
                .rule_hits
                .iter()
                .all(|r| r.action == RuleAction::IsolatePod));
            let st = a.status.as_ref().unwrap();
            assert_eq!(st.state, AlertState::Open);
            assert_eq!(st.count, a.spec.incident.count);
            assert_eq!(st.pods, a.spec.incident.pods);
            check(&SecurityAlert::crd(), &a);
            assert_eq!(alert_from_yaml(&to_yaml(&a).unwrap()).unwrap(), a);
        }
    }
}
