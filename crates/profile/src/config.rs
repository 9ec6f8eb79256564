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

    /// Checks every value; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.into(),
            })
        };
        let t = self.similarity_threshold;
        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
            return bad("similarity_threshold", "must be within [-1, 1]");
        }
        let l = &self.learning;
        if l.buckets_per_window == 0 {
            return bad("learning.buckets_per_window", "must be at least 1");
        }
        if l.window.as_nanos() < u128::from(l.buckets_per_window) {
            return bad(
                "learning.window",
                "must be at least one nanosecond per bucket",
            );
        }
        if l.clean_windows == 0 {
            return bad("learning.clean_windows", "must be at least 1");
        }
        let c = &self.compaction;
        if c.child_limit == 0 || c.child_limit > c.hard_child_limit {
            return bad(
                "compaction.child_limit",
                "must be within 1..=hard_child_limit",
            );
        }
        if c.prefix_limits
            .iter()
            .any(|p| p.limit == 0 || p.limit > c.hard_child_limit || !p.prefix.starts_with('/'))
        {
            return bad(
                "compaction.prefix_limits",
                "prefixes must be absolute and limits within 1..=hard_child_limit",
            );
        }
        if c.never_collapse.iter().any(|p| !p.starts_with('/')) {
            return bad(
                "compaction.never_collapse",
                "prefixes must be absolute paths",
            );
        }
        if c.exemplar_cap == 0 {
            return bad("compaction.exemplar_cap", "must be at least 1");
        }
        if c.peer_ip_limit < 2 {
            return bad("compaction.peer_ip_limit", "must be at least 2");
        }
        if c.port_limit == 0 || c.port_limit > c.hard_child_limit {
            return bad(
                "compaction.port_limit",
                "must be within 1..=hard_child_limit",
            );
        }
        if c.max_path_depth == 0 || c.max_path_depth > 4096 {
            return bad("compaction.max_path_depth", "must be within 1..=4096");
        }
        if c.node_budget < 16 {
            return bad("compaction.node_budget", "must be at least 16");
        }
        Ok(())
    }
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
