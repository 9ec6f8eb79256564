//! Settings of a profile: mode, similarity threshold, learning and compaction.
//!
//! Defaults are documented once, here; the YAML form (`spec.learning`,
//! `spec.compaction`) mirrors these fields.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who decides when a workload switches from learning to detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Mode {
    /// Switch to detection on convergence (the default).
    #[default]
    Auto,
    /// Keep learning; on convergence wait for a person.
    Learn,
    /// Locked in detection: nothing is learned on its own.
    Detect,
}

/// Convergence settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningConfig {
    /// Length of the sliding window counting growth. Default 1 h.
    pub window: Duration,
    /// Learning lasts at least this long. Default 2 h.
    pub min_learning_time: Duration,
    /// A window is clean when it counts at most this much growth. Default 0.
    pub max_new_per_window: u32,
    /// Converged after this many consecutive clean windows. Default 3.
    pub clean_windows: u32,
    /// Resolution of the sliding window (buckets per window). Default 12.
    pub buckets_per_window: u32,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            window: Duration::from_secs(3600),
            min_learning_time: Duration::from_secs(2 * 3600),
            max_new_per_window: 0,
            clean_windows: 3,
            buckets_per_window: 12,
        }
    }
}

/// A per-prefix collapse threshold for file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixLimit {
    /// Absolute path prefix (`/proc`): applies to the node of this path and below.
    pub prefix: String,
    /// Distinct children allowed before collapsing into `*`.
    pub limit: usize,
}

/// Compaction settings (a profile must stay well under 1 MiB of YAML).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionConfig {
    /// Distinct children of a node before they collapse into a wildcard. Default 50.
    pub child_limit: usize,
    /// File path overrides; the longest matching prefix wins.
    /// Default `/proc` 8, `/tmp` 16, `/var/tmp` 16, `/dev/shm` 16.
    pub prefix_limits: Vec<PrefixLimit>,
    /// Path prefixes that never collapse and that a wildcard never matches: file
    /// paths at or below them, and executables below them in the process trie.
    /// Default: `/etc/shadow`, `/etc/gshadow`, `/etc/sudoers`, `/etc/sudoers.d`,
    /// `/root/.ssh`, the service-account token directories (`/var/run/secrets/
    /// kubernetes.io/serviceaccount`, `/run/secrets/kubernetes.io/serviceaccount`),
    /// `/usr/bin`, `/usr/sbin`, `/usr/local/bin`, `/bin`, `/sbin`.
    pub never_collapse: Vec<String>,
    /// Exemplars per process leaf (merging the most similar pair). Default 16.
    pub exemplar_cap: usize,
    /// Address peers under one direction before they collapse into networks
    /// (/24, /16, /8, /0; IPv6 /64, /48, /32, /0). Default 16.
    pub peer_ip_limit: usize,
    /// Distinct ports under one protocol before they collapse into `*`. Default 16.
    pub port_limit: usize,
    /// Children of a never-collapsing node; beyond, additions are refused. Default 4096.
    pub hard_child_limit: usize,
    /// File path segments kept; deeper paths end in `**`. Default 32.
    pub max_path_depth: usize,
    /// Nodes per trie before every new literal goes to a wildcard. Default 65 536.
    pub node_budget: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        let limit = |p: &str, l| PrefixLimit {
            prefix: p.into(),
            limit: l,
        };
        CompactionConfig {
            child_limit: 50,
            prefix_limits: vec![
                limit("/proc", 8),
                limit("/tmp", 16),
                limit("/var/tmp", 16),
                limit("/dev/shm", 16),
            ],
            never_collapse: [
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/root/.ssh",
                "/var/run/secrets/kubernetes.io/serviceaccount",
                "/run/secrets/kubernetes.io/serviceaccount",
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/bin",
                "/sbin",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            exemplar_cap: 16,
            peer_ip_limit: 16,
            port_limit: 16,
            hard_child_limit: 4096,
            max_path_depth: 32,
            node_budget: 65_536,
        }
    }
}

/// All settings of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Mode. Default [`Mode::Auto`].
    pub mode: Mode,
    /// Argument similarity ([`kestrel_embed::arg_similarity`]: the
    /// embeddings' angle plus the arguments' structural distance, not a plain
    /// cosine) an argument needs to some exemplar to be known. Default 0.95,
    /// the value of [`kestrel_embed::UNCALIBRATED_THRESHOLD`] (meant for
    /// models that were never calibrated); the operator and standalone mode
    /// set the model's calibrated threshold instead
    /// ([`kestrel_embed::default_threshold`]: −0.159 for the default MiniLM,
    /// from [`kestrel_embed::MODEL_DEFAULTS`]) unless the config file sets
    /// `similarityThreshold`.
    pub similarity_threshold: f32,
    /// Convergence.
    pub learning: LearningConfig,
    /// Compaction.
    pub compaction: CompactionConfig,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            mode: Mode::Auto,
            similarity_threshold: kestrel_embed::UNCALIBRATED_THRESHOLD,
            learning: LearningConfig::default(),
            compaction: CompactionConfig::default(),
        }
    }
}

impl ProfileConfig {
    /// Starts from the defaults.
    pub fn builder() -> ProfileConfigBuilder {
        ProfileConfigBuilder(ProfileConfig::default())
    }

    /// Checks every value against its range; the error names the setting
    /// as the YAML and the CRD spell it (`learning.bucketsPerWindow`). The
    /// upper bounds keep a profile's memory bounded whatever a config file
    /// or a stored profile says.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        let range = |field, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                bad(field, format!("{v} is outside {lo}..={hi}"))
            }
        };
        let t = self.similarity_threshold;
        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
            return bad("similarityThreshold", "must be within [-1, 1]".into());
        }
        let l = &self.learning;
        range(
            "learning.bucketsPerWindow",
            l.buckets_per_window as usize,
            1,
            limits::BUCKETS_PER_WINDOW,
        )?;
        if l.window.as_nanos() < u128::from(l.buckets_per_window) {
            return bad(
                "learning.window",
                "must be at least one nanosecond per bucket".into(),
            );
        }
        if l.window > limits::WINDOW {
            return bad("learning.window", "must be at most 30 days".into());
        }
        if l.min_learning_time > limits::MIN_LEARNING_TIME {
            return bad(
                "learning.minLearningTime",
                "must be at most 365 days".into(),
            );
        }
        range(
            "learning.cleanWindows",
            l.clean_windows as usize,
            1,
            limits::CLEAN_WINDOWS,
        )?;
        let c = &self.compaction;
        range(
            "compaction.hardChildLimit",
            c.hard_child_limit,
            1,
            limits::HARD_CHILD_LIMIT,
        )?;
        range(
            "compaction.childLimit",
            c.child_limit,
            1,
            c.hard_child_limit,
        )?;
        if c.prefix_limits.len() > limits::PREFIXES {
            return bad(
                "compaction.prefixLimits",
                format!(
                    "{} entries; at most {}",
                    c.prefix_limits.len(),
                    limits::PREFIXES
                ),
            );
        }
        if c.prefix_limits.iter().any(|p| {
            p.limit == 0
                || p.limit > c.hard_child_limit
                || !p.prefix.starts_with('/')
                || p.prefix.len() > limits::PREFIX_BYTES
        }) {
            return bad(
                "compaction.prefixLimits",
                "prefixes must be absolute (at most 4096 bytes) and limits within 1..=hardChildLimit"
                    .into(),
            );
        }
        if c.never_collapse.len() > limits::PREFIXES {
            return bad(
                "compaction.neverCollapse",
                format!(
                    "{} entries; at most {}",
                    c.never_collapse.len(),
                    limits::PREFIXES
                ),
            );
        }
        if c.never_collapse
            .iter()
            .any(|p| !p.starts_with('/') || p.len() > limits::PREFIX_BYTES)
        {
            return bad(
                "compaction.neverCollapse",
                "prefixes must be absolute paths of at most 4096 bytes".into(),
            );
        }
        range(
            "compaction.exemplarCap",
            c.exemplar_cap,
            1,
            limits::EXEMPLAR_CAP,
        )?;
        range(
            "compaction.peerIpLimit",
            c.peer_ip_limit,
            2,
            c.hard_child_limit.max(2),
        )?;
        range("compaction.portLimit", c.port_limit, 1, c.hard_child_limit)?;
        range(
            "compaction.maxPathDepth",
            c.max_path_depth,
            1,
            limits::MAX_PATH_DEPTH,
        )?;
        range(
            "compaction.nodeBudget",
            c.node_budget,
            16,
            limits::NODE_BUDGET,
        )?;
        Ok(())
    }
}

/// The upper bounds [`ProfileConfig::validate`] enforces.
pub mod limits {
    use std::time::Duration;
    /// `learning.bucketsPerWindow` (default 12).
    pub const BUCKETS_PER_WINDOW: usize = 1_440;
    /// `learning.window` (default 1 h).
    pub const WINDOW: Duration = Duration::from_secs(30 * 86_400);
    /// `learning.minLearningTime` (default 2 h).
    pub const MIN_LEARNING_TIME: Duration = Duration::from_secs(365 * 86_400);
    /// `learning.cleanWindows` (default 3).
    pub const CLEAN_WINDOWS: usize = 10_000;
    /// `compaction.hardChildLimit` (default 4096).
    pub const HARD_CHILD_LIMIT: usize = 65_536;
    /// Entries of `compaction.prefixLimits` and of `compaction.neverCollapse`.
    pub const PREFIXES: usize = 1_024;
    /// Bytes of one of their prefixes.
    pub const PREFIX_BYTES: usize = 4_096;
    /// `compaction.exemplarCap` (default 16).
    pub const EXEMPLAR_CAP: usize = 1_024;
    /// `compaction.maxPathDepth` (default 32).
    pub const MAX_PATH_DEPTH: usize = 4_096;
    /// `compaction.nodeBudget` (default 65 536).
    pub const NODE_BUDGET: usize = 4_000_000;
}

/// Builder of a [`ProfileConfig`], validated by [`ProfileConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct ProfileConfigBuilder(ProfileConfig);

impl ProfileConfigBuilder {
    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.0.mode = mode;
        self
    }
    /// Sets the similarity threshold.
    pub fn similarity_threshold(mut self, t: f32) -> Self {
        self.0.similarity_threshold = t;
        self
    }
    /// Sets the sliding window length.
    pub fn window(mut self, w: Duration) -> Self {
        self.0.learning.window = w;
        self
    }
    /// Sets the minimum learning time.
    pub fn min_learning_time(mut self, d: Duration) -> Self {
        self.0.learning.min_learning_time = d;
        self
    }
    /// Sets the growth a clean window may count.
    pub fn max_new_per_window(mut self, n: u32) -> Self {
        self.0.learning.max_new_per_window = n;
        self
    }
    /// Sets the number of consecutive clean windows needed.
    pub fn clean_windows(mut self, k: u32) -> Self {
        self.0.learning.clean_windows = k;
        self
    }
    /// Replaces all compaction settings.
    pub fn compaction(mut self, c: CompactionConfig) -> Self {
        self.0.compaction = c;
        self
    }
    /// Sets the default collapse threshold.
    pub fn child_limit(mut self, n: usize) -> Self {
        self.0.compaction.child_limit = n;
        self
    }
    /// Sets the exemplar cap.
    pub fn exemplar_cap(mut self, n: usize) -> Self {
        self.0.compaction.exemplar_cap = n;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ProfileConfig> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// Formats a duration the way the YAML form writes it: `1h`, `90m`, `10s`,
/// `1500ms`, `20us`, `7ns` (the largest unit that divides it exactly).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0s".into();
    }
    for (n, u) in UNITS {
        if ns.is_multiple_of(n) {
            return format!("{}{u}", ns / n);
        }
    }
    format!("{ns}ns")
}

/// Parses [`format_duration`]'s form (one integer and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "h" => 3_600_000_000_000,
        "m" => 60_000_000_000,
        "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" => 1_000,
        "ns" => 1,
        _ => return None,
    };
    Some(Duration::from_nanos(n.checked_mul(mult)?))
}
