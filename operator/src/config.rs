//! The one config file of the operator and of standalone mode.

use kestrel_embed::Embedder;
use kestrel_embed_onnx::{ArgEmbedder, CacheOptions, EmbedConfig, OnnxEmbedder};
use kestrel_events::WorkloadSpec;
use kestrel_profile::{Mode, ProfileConfig};
use kestrel_scoring::{ScoringConfig, WebhookConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Learning settings in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearningSettings {
    /// Sliding window (`1h`, `30s`, …).
    pub window: Option<String>,
    /// Minimum learning time.
    pub min_learning_time: Option<String>,
    /// Consecutive clean windows needed.
    pub clean_windows: Option<u32>,
    /// Growth a clean window may count.
    pub max_new_per_window: Option<u32>,
}

/// The config file of `kestrel standalone`, `kestrel operator` and
/// `kestrel-operator` (`--config FILE`, YAML; every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Named workloads by container-id glob; other containers are their own workload.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Learning and convergence.
    #[serde(default)]
    pub learning: LearningSettings,
    /// `Auto` (default), `Learn` or `Detect`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Argument similarity threshold ([`kestrel_embed::arg_similarity`]);
    /// default: the model's calibrated one ([`kestrel_embed::MODEL_DEFAULTS`]),
    /// or [`kestrel_embed::UNCALIBRATED_THRESHOLD`] for a model without one.
    #[serde(default)]
    pub similarity_threshold: Option<f32>,
    /// Directory of the embedding model (default `$KESTREL_MODEL_DIR`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Extra rule files (YAML) added to the default pack.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Scoring: weights, threshold, severity bands, cluster and incident
    /// settings, and the OpenAI-compatible LLM endpoint (`scoring.llm`).
    #[serde(default)]
    pub scoring: Option<ScoringConfig>,
    /// A webhook receiving each new alert (and each severity change) as a
    /// falcosidekick-compatible JSON payload.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// The create-rate limit on alerts and the flood alert past it
    /// ([`crate::flood`]).
    #[serde(default)]
    pub alert_flood: crate::flood::FloodSettings,
    /// Workloads whose profiles stay in memory (state directory only; in a
    /// cluster the workloads are the API server's). Default 10 000, at
    /// most 1 000 000. Past it, the one seen longest ago is saved and
    /// leaves memory; its profile comes back from disk when it is seen
    /// again.
    #[serde(default)]
    pub max_workloads: Option<usize>,
    /// Seconds without an event after which a workload's profile is saved
    /// and leaves memory (state directory only). Default 86 400 (a day);
    /// 0: never.
    #[serde(default)]
    pub workload_idle_secs: Option<u64>,
}

/// Default of `maxWorkloads`.
pub const DEFAULT_MAX_WORKLOADS: usize = 10_000;
/// Default of `workloadIdleSecs`.
pub const DEFAULT_WORKLOAD_IDLE_SECS: u64 = 86_400;

impl OperatorConfig {
    /// Reads and checks a config file ([`check`](Self::check)); errors
    /// name the file and the field, and come before anything heavy loads.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = read_bounded(path)?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks a config's text ([`check`](Self::check)).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: Self = serde_saphyr::from_str(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// The rule set: the default pack and the config's rule files (each a
    /// regular file of at most 1 MiB).
    pub fn rule_set(&self) -> anyhow::Result<kestrel_scoring::RuleSet> {
        let mut rules = kestrel_scoring::RuleSet::builder().default_pack();
        for r in &self.rules {
            let text = read_bounded(r).map_err(|e| anyhow::anyhow!("rules {e}"))?;
            rules = rules.add_yaml(r.display().to_string(), text);
        }
        Ok(rules.build()?)
    }

    /// Checks everything the config says the way the pipeline will use it
    /// (learning and compaction ranges, mode, rule files, scoring, the LLM
    /// endpoint, the webhook), so that a mistake is reported at once, not
    /// after the embedding model has loaded.
    pub fn check(&self) -> anyhow::Result<()> {
        self.profile_config(kestrel_embed::UNCALIBRATED_THRESHOLD)?;
        if let Some(n) = self.max_workloads {
            if !(1..=1_000_000).contains(&n) {
                anyhow::bail!("invalid configuration `maxWorkloads`: {n} is outside 1..=1000000");
            }
        }
        let rules = self.rule_set()?;
        let scoring = self.scoring.clone().unwrap_or_default();
        scoring.build_llm_engine()?;
        if let Some(w) = &self.webhook {
            kestrel_scoring::WebhookSink::new(w)?;
        }
        kestrel_scoring::Scorer::new(scoring, rules)?;
        Ok(())
    }

    /// The settings of the profiles the engine creates, given the model's
    /// calibrated threshold.
    pub fn profile_config(&self, default_threshold: f32) -> anyhow::Result<ProfileConfig> {
        let mut b = ProfileConfig::builder()
            .similarity_threshold(self.similarity_threshold.unwrap_or(default_threshold));
        let dur = |field: &str, v: &Option<String>| -> anyhow::Result<Option<Duration>> {
            v.as_deref()
                .map(|s| {
                    kestrel_profile::parse_duration(s)
                        .ok_or_else(|| anyhow::anyhow!("learning.{field}: bad duration {s:?}"))
                })
                .transpose()
        };
        if let Some(w) = dur("window", &self.learning.window)? {
            b = b.window(w);
        }
        if let Some(m) = dur("minLearningTime", &self.learning.min_learning_time)? {
            b = b.min_learning_time(m);
        }
        if let Some(k) = self.learning.clean_windows {
            b = b.clean_windows(k);
        }
        if let Some(n) = self.learning.max_new_per_window {
            b = b.max_new_per_window(n);
        }
        if let Some(m) = &self.mode {
            b = b.mode(match m.as_str() {
                "Auto" => Mode::Auto,
                "Learn" => Mode::Learn,
                "Detect" => Mode::Detect,
                other => anyhow::bail!("mode: {other:?} is not Auto, Learn or Detect"),
            });
        }
        Ok(b.build()?)
    }
}

/// Largest config or rule file read: 1 MiB.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Reads a regular file of at most [`MAX_CONFIG_FILE`] bytes (not a device
/// or a pipe that never ends); errors name the file.
fn read_bounded(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let bad = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| bad(e.to_string()))?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(bad(format!("larger than {} KiB", MAX_CONFIG_FILE >> 10)));
    }
    Ok(text)
}

/// Loads the embedding model named by the config (or the environment).
pub fn load_embedder(cfg: &OperatorConfig) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(load_arg_embedder(cfg)?)
}

/// [`load_embedder`] as its concrete type: the model behind the argument
/// cache, whose hit counters the caller can read.
pub fn load_arg_embedder(cfg: &OperatorConfig) -> anyhow::Result<Arc<ArgEmbedder>> {
    let ecfg = match &cfg.model_dir {
        Some(d) => EmbedConfig::from_dir(d),
        None => EmbedConfig::from_env(),
    };
    let model = OnnxEmbedder::load(ecfg)
        .map_err(|e| anyhow::anyhow!("embedding model: {e} (run `make deps`)"))?;
    Ok(Arc::new(ArgEmbedder::new(
        Arc::new(model),
        CacheOptions::default(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::OperatorConfig;

    #[test]
    fn a_bad_container_glob_names_the_file_and_the_pattern() {
        let path = std::env::temp_dir().join(format!("kestrel-config-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "workloads:\n  - name: web\n    containers: \"web-[0-9\"\n",
        )
        .unwrap();
        let e = OperatorConfig::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("invalid glob \"web-[0-9\": unclosed '['"), "{e}");

        std::fs::write(
            &path,
            "workloads:\n  - name: web\n    containers: \"web-[0-9]*\"\n",
        )
        .unwrap();
        let cfg = OperatorConfig::load(&path).unwrap();
        assert!(cfg.workloads[0].containers.is_match("web-7abc"));
        assert!(!cfg.workloads[0].containers.is_match("web-x"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn ranges_rules_and_the_webhook_are_checked_at_load_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let err = |yaml: &str| {
            std::fs::write(&path, yaml).unwrap();
            OperatorConfig::load(&path).unwrap_err().to_string()
        };
        let e = err("learning:\n  cleanWindows: 4000000000\n");
        assert!(
            e.contains("`learning.cleanWindows`: 4000000000 is outside 1..=10000"),
            "{e}"
        );
        let e = err("learning:\n  window: 9000h\n");
        assert!(
            e.contains("`learning.window`: must be at most 30 days"),
            "{e}"
        );
        let e = err("learning:\n  cleanWindows: 0\n");
        assert!(e.contains("learning.cleanWindows"), "{e}");
        let e = err("rules: [/nonexistent/rules.yaml]\n");
        assert!(e.contains("rules /nonexistent/rules.yaml"), "{e}");
        // a device never ends: refused before it is read
        let e = err("rules: [/dev/zero]\n");
        assert!(e.contains("/dev/zero: not a regular file"), "{e}");
        let e = err("webhook:\n  url: ftp://example\n");
        assert!(e.contains("webhook url"), "{e}");
        let e = err("mode: Sometimes\n");
        assert!(e.contains("mode: \"Sometimes\""), "{e}");
        std::fs::write(&path, "learning:\n  cleanWindows: 60\n").unwrap();
        OperatorConfig::load(&path).unwrap();
    }
}
