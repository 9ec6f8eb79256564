//! `BehaviorProfile`: what one workload normally does.
//!
//! `spec.source` says who owns the behaviour. `Learned`: the operator
//! created the object and writes only `status`, the learned tries in
//! `status.learned`. `Promoted`: a person (Git) wrote `spec.baseline`, the
//! source of truth; the operator writes only the status and reports `Drift`.
//! Promoted wins and the two are never merged.
//!
//! The tries are written as flat, sorted entries: one per process leaf (with
//! its exemplar argument strings), one per (image, process, access) with its
//! paths, one per (image, process, direction, peer) with its `port/protocol`
//! list. Segments are escaped losslessly (`\xff`, `\\`); `*` is a wildcard,
//! a trailing `/**` means "everything below", peers may be addresses,
//! networks (`10.0.0.0/8`) or names. Vectors are never written: they are
//! recomputed from the strings with the embedder on load (the model id must
//! match).

use std::collections::BTreeSet;
use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::limits;
use crate::names::WorkloadRef;

/// Who owns a profile's behaviour. Immutable after creation (the operator
/// refuses a change; there is no CEL on Kubernetes 1.20 to say so in the
/// schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProfileSource {
    /// Created and learned by the operator; the behaviour is in
    /// `status.learned`.
    Learned,
    /// Authored (Git): `spec.baseline` is the behaviour; nothing is learned
    /// into it.
    Promoted,
}

/// What the process trie's executable level holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProcessKeys {
    /// The executable's basename (`java`): every profile written before
    /// the keys were recorded. A renamed binary anywhere matches it, and the
    /// binary-directory guards cannot apply; such a profile keeps matching
    /// by basename until it is relearned.
    #[default]
    #[serde(alias = "name")]
    Name,
    /// The executable's full path as execve received it, canonical
    /// (`/usr/bin/java`); a re-exec through `/proc/self/exe` (busybox
    /// applets) keeps the basename of `argv[0]`.
    #[serde(alias = "path")]
    Path,
}

/// Who decides when a workload switches from learning to detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProfileMode {
    /// Switch to detection on convergence (the default).
    #[default]
    Auto,
    /// Keep learning; on convergence wait for a person.
    Learn,
    /// Locked in detection: nothing is learned on its own.
    Detect,
    /// Reserved for blocking what the profile does not know; the operator
    /// rejects it for now.
    Enforce,
}

/// The phase of the convergence state machine (`status.convergence.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConvergencePhase {
    /// Every new branch and exemplar extends the profile.
    Learning,
    /// The profile stopped growing; in mode `Learn` it waits here for a person.
    Converged,
    /// Mismatches are anomaly signals; the profile is locked.
    Detecting,
}

impl ConvergencePhase {
    /// The name (`Detecting`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConvergencePhase::Learning => "Learning",
            ConvergencePhase::Converged => "Converged",
            ConvergencePhase::Detecting => "Detecting",
        }
    }
}

impl fmt::Display for ConvergencePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a workload stands, as people see it (`status.phase`): the state
/// machine's phase, or `SizeLimited` when the byte budget stopped growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProfilePhase {
    /// Learning.
    Learning,
    /// Converged, waiting for a person (mode `Learn`).
    Converged,
    /// Detecting.
    Detecting,
    /// The profile reached its byte budget and stopped growing (the state
    /// machine's own phase is in `status.convergence.phase`).
    SizeLimited,
}

impl From<ConvergencePhase> for ProfilePhase {
    fn from(p: ConvergencePhase) -> Self {
        match p {
            ConvergencePhase::Learning => ProfilePhase::Learning,
            ConvergencePhase::Converged => ProfilePhase::Converged,
            ConvergencePhase::Detecting => ProfilePhase::Detecting,
        }
    }
}

/// `spec.learning`: convergence settings; an absent field takes the
/// operator's configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearningSpec {
    /// Window length (`1h`, `30s`, `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SHORT))]
    pub window: Option<String>,
    /// Minimum learning time (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SHORT))]
    pub min_learning_time: Option<String>,
    /// Growth a clean window may count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_per_window: Option<u32>,
    /// Consecutive clean windows needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = limits::MAX_CLEAN_WINDOWS))]
    pub clean_windows: Option<u32>,
    /// Buckets per window (resolution of the sliding window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = limits::MAX_BUCKETS_PER_WINDOW))]
    pub buckets_per_window: Option<u32>,
}

/// One per-prefix limit in `spec.compaction.prefixLimits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLimitSpec {
    /// Absolute path prefix.
    #[schemars(length(max = limits::PATH))]
    pub prefix: String,
    /// Children before collapsing.
    pub limit: usize,
}

/// `spec.compaction`: how the tries stay small; an absent field takes the
/// default (`kestrel_profile::CompactionConfig` documents each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompactionSpec {
    /// Distinct children of a node before they collapse into `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_limit: Option<usize>,
    /// File path overrides; the longest matching prefix wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SETTINGS))]
    pub prefix_limits: Option<Vec<PrefixLimitSpec>>,
    /// Path prefixes that never collapse and that a wildcard never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SETTINGS), inner(length(max = limits::PATH)))]
    pub never_collapse: Option<Vec<String>>,
    /// Exemplars per process leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = limits::EXEMPLARS))]
    pub exemplar_cap: Option<usize>,
    /// Address peers under one direction before they collapse into networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ip_limit: Option<usize>,
    /// Distinct ports under one protocol before they collapse into `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_limit: Option<usize>,
    /// Children of a never-collapsing node; beyond, additions are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_child_limit: Option<usize>,
    /// File path segments kept; deeper paths end in `**`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_depth: Option<usize>,
    /// Nodes per trie before every new literal goes to a wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_budget: Option<usize>,
}

/// A process leaf: image → parent → exe, with its argument exemplars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessEntry {
    /// Image (`*` = any).
    #[schemars(length(max = limits::SEGMENT))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Parent process (`*` = any).
    #[schemars(length(max = limits::SEGMENT))]
    pub parent: String,
    /// Executed process (`*` = any).
    #[schemars(length(max = limits::SEGMENT))]
    pub exe: String,
    /// At least one exemplar.
    #[schemars(length(min = 1, max = limits::EXEMPLARS))]
    pub arguments: Vec<ArgumentSpec>,
}

/// One argument exemplar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentSpec {
    /// The normalised argument string.
    #[schemars(length(max = limits::ARGS))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub args: String,
    /// Minimum similarity for this exemplar when it differs from the profile's
    /// threshold (after merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1.0, max = 1.0))]
    pub min_similarity: Option<f32>,
}

/// File paths of one image, process and access kind.
///
/// `access` is a trie segment, not an API enum: the lower-case word the trie
/// stores (`read`, `write`, `create`, `delete`, `rename`) or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Image.
    #[schemars(length(max = limits::SEGMENT))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Process.
    #[schemars(length(max = limits::SEGMENT))]
    pub process: String,
    /// `read`, `write`, `create`, `delete`, `rename` or `*`.
    #[schemars(length(max = 16))]
    pub access: String,
    /// Paths (`/etc/nginx/nginx.conf`, `/proc/*/status`, `/var/log/**`).
    #[schemars(length(max = limits::PATHS), inner(length(max = limits::PATH)))]
    pub paths: Vec<String>,
}

/// Ports of one image, process, direction and peer.
///
/// `direction` is a trie segment like a file entry's `access`: `outbound`,
/// `inbound`, `listen` or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkEntry {
    /// Image.
    #[schemars(length(max = limits::SEGMENT))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Process.
    #[schemars(length(max = limits::SEGMENT))]
    pub process: String,
    /// `outbound`, `inbound`, `listen` or `*`.
    #[schemars(length(max = 16))]
    pub direction: String,
    /// Address, network, name or `*`.
    #[schemars(length(max = limits::SEGMENT))]
    pub peer: String,
    /// `443/tcp`, `*/udp`, `*/*`.
    #[schemars(length(max = limits::PORTS), inner(length(max = 32)))]
    pub ports: Vec<String>,
}

/// Default of [`ProfileBody::similarity_threshold`] when a document has none:
/// the threshold of a model without calibration
/// ([`kestrel_embed::UNCALIBRATED_THRESHOLD`], defined there once).
pub const DEFAULT_SIMILARITY_THRESHOLD: f32 = kestrel_embed::UNCALIBRATED_THRESHOLD;

fn default_threshold() -> f32 {
    DEFAULT_SIMILARITY_THRESHOLD
}

/// A profile's behaviour: the three tries and what their exemplars were
/// measured with. `spec.baseline` (promoted) or `status.learned` (learned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileBody {
    /// Embedding model the exemplars are compared with; absent = the loader's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SHORT))]
    pub model_id: Option<String>,
    /// Version of the argument measure the radii and the threshold were
    /// computed with (`kestrel_embed::ARG_MEASURE`); absent = 1, every
    /// build before it was recorded. A body of another version loads with its
    /// exemplars but without its merged radii (`minSimilarity`), and a
    /// threshold that was that version's shipped default becomes today's.
    /// Hand-written profiles should set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument_measure: Option<u32>,
    /// What the process entries' `exe` holds; absent = `Name`, every build
    /// before it was recorded. Learned profiles are written with `Path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_keys: Option<ProcessKeys>,
    /// Argument similarity an argument needs to an exemplar (default
    /// 0.95).
    #[serde(default = "default_threshold")]
    #[schemars(range(min = -1.0, max = 1.0))]
    pub similarity_threshold: f32,
    /// Process trie leaves.
    #[serde(default)]
    #[schemars(length(max = limits::ENTRIES))]
    pub processes: Vec<ProcessEntry>,
    /// File trie, grouped by image, process and access kind.
    #[serde(default)]
    #[schemars(length(max = limits::ENTRIES))]
    pub files: Vec<FileEntry>,
    /// Network trie, grouped by image, process, direction and peer.
    #[serde(default)]
    #[schemars(length(max = limits::ENTRIES))]
    pub network: Vec<NetworkEntry>,
}

impl Default for ProfileBody {
    fn default() -> Self {
        ProfileBody {
            model_id: None,
            argument_measure: None,
            process_keys: None,
            similarity_threshold: DEFAULT_SIMILARITY_THRESHOLD,
            processes: Vec::new(),
            files: Vec::new(),
            network: Vec::new(),
        }
    }
}

impl ProfileBody {
    /// The counts shown in `status.summary` and the printer columns.
    pub fn summary(&self) -> ProfileSummary {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        ProfileSummary {
            processes: n(self.processes.len()),
            files: n(self.files.iter().map(|f| f.paths.len()).sum()),
            peers: n(self
                .network
                .iter()
                .map(|e| e.peer.as_str())
                .collect::<BTreeSet<_>>()
                .len()),
            exemplars: n(self.processes.iter().map(|p| p.arguments.len()).sum()),
        }
    }
}

/// The `spec` of a `BehaviorProfile`: settings, and for a promoted profile
/// its behaviour.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kestrel.dev",
    version = "v1alpha1",
    kind = "BehaviorProfile",
    namespaced,
    status = "BehaviorProfileStatus",
    shortname = "bp",
    category = "kestrel",
    derive = "PartialEq",
    doc = "What one workload normally does, learned by Kestrel (source Learned) or authored (source Promoted).",
    printcolumn = r#"{"name": "Workload", "type": "string", "jsonPath": ".spec.workload.name"}"#,
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Processes", "type": "integer", "jsonPath": ".status.summary.processes"}"#,
    printcolumn = r#"{"name": "Files", "type": "integer", "jsonPath": ".status.summary.files"}"#,
    printcolumn = r#"{"name": "Peers", "type": "integer", "jsonPath": ".status.summary.peers"}"#,
    printcolumn = r#"{"name": "Exemplars", "type": "integer", "jsonPath": ".status.summary.exemplars"}"#,
    printcolumn = r#"{"name": "Converged", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Converged\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviorProfileSpec {
    /// `Learned` or `Promoted`; immutable.
    pub source: ProfileSource,
    /// `Auto`, `Learn` or `Detect` (`Enforce` is reserved and rejected).
    #[serde(default)]
    pub mode: ProfileMode,
    /// The workload described; absent for a profile not (yet) bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// Convergence settings (absent: the operator's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<LearningSpec>,
    /// Compaction settings (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionSpec>,
    /// `Promoted` only: the authored behaviour, the source of truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ProfileBody>,
}

/// Serialisable state of the convergence state machine
/// (`status.convergence`), enough to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConvergenceStatus {
    /// Current phase.
    pub phase: ConvergencePhase,
    /// When the phase began (ns since the Unix epoch).
    pub phase_since_unix_nanos: u64,
    /// When learning (re)started.
    pub learning_since_unix_nanos: u64,
    /// Last growth seen, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_growth_unix_nanos: Option<u64>,
    /// Latest time seen.
    pub now_unix_nanos: u64,
    /// Index of the newest bucket since learning began.
    pub bucket_index: u64,
    /// Growth per bucket, oldest first (the newest is the last).
    #[schemars(length(max = limits::BUCKETS))]
    pub buckets: Vec<u32>,
    /// Total growth since learning began.
    pub total_growth: u64,
}

/// Counts for people (`status.summary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSummary {
    /// Process leaves (image, parent, exe).
    pub processes: u64,
    /// File paths and path patterns.
    pub files: u64,
    /// Distinct network peers (addresses, networks, names, `*`).
    pub peers: u64,
    /// Argument exemplars.
    pub exemplars: u64,
}

/// The `status` of a `BehaviorProfile`, written only by the operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviorProfileStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the workload stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProfilePhase>,
    /// `Converged`, `Drift`, `SizeLimited`, `Partial`, `BaselineInvalid`
    /// (constants on `Condition`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::CONDITIONS))]
    pub conditions: Vec<Condition>,
    /// `Learned` only: the learned behaviour (exemplar argument strings,
    /// never vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<ProfileBody>,
    /// The convergence state machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence: Option<ConvergenceStatus>,
    /// Counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ProfileSummary>,
    /// Size of the whole object as compact JSON (what etcd stores), bytes;
    /// capped at 256 KiB (`limits::PROFILE_MAX_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

impl BehaviorProfile {
    /// The behaviour this profile stands for: `spec.baseline` when
    /// promoted, `status.learned` when learned (`None`: nothing yet).
    pub fn body(&self) -> Option<&ProfileBody> {
        match self.spec.source {
            ProfileSource::Promoted => self.spec.baseline.as_ref(),
            ProfileSource::Learned => self.status.as_ref()?.learned.as_ref(),
        }
    }

    /// Where [`BehaviorProfile::body`] lives, for error messages
    /// (`spec.baseline`, `status.learned`).
    pub fn body_path(&self) -> &'static str {
        match self.spec.source {
            ProfileSource::Promoted => "spec.baseline",
            ProfileSource::Learned => "status.learned",
        }
    }

    /// The exact workload name: the [`crate::WORKLOAD_ANNOTATION`], else
    /// `spec.workload`, else `metadata.name`.
    pub fn workload_name(&self) -> Option<String> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::WORKLOAD_ANNOTATION).cloned())
            .or_else(|| self.spec.workload.as_ref().map(WorkloadRef::workload_name))
            .or_else(|| self.metadata.name.clone())
    }

    /// Sets `status.sizeBytes` to the size of the whole object as compact
    /// JSON, this field included.
    pub fn measure_size(&mut self) {
        let Some(status) = self.status.as_mut() else {
            return;
        };
        status.size_bytes = Some(0);
        let mut size = 0u64;
        // The size's own digits change the size: settle in a few rounds.
        for _ in 0..4 {
            let n = serde_json::to_vec(&*self).map_or(0, |v| v.len() as u64);
            if let Some(status) = self.status.as_mut() {
                status.size_bytes = Some(n);
            }
            if n == size {
                break;
            }
            size = n;
        }
    }
}
