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
}

impl OperatorConfig {
    /// Reads and checks a config file; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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
}
