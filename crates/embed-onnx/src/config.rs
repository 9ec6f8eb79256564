//! Where an ONNX embedding model and the runtime are found, and how the
//! model is run (file discovery; the per-model defaults come from
//! [`kestrel_embed::MODEL_DEFAULTS`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use kestrel_embed::{
    default_threshold, Error, Pooling, Result, DEFAULT_MODEL_ID, MODEL_DEFAULTS,
    UNCALIBRATED_THRESHOLD,
};

/// Where `scripts/fetch-model.sh` installs the default model when neither the
/// config nor `KESTREL_MODEL_DIR` says otherwise.
pub const DEFAULT_MODEL_DIR: &str = "/var/cache/kestrel/models";
/// Environment variable naming the model folder.
pub const MODEL_DIR_ENV: &str = "KESTREL_MODEL_DIR";
/// Environment variable naming the ONNX Runtime shared library (as `ort` uses it).
pub const RUNTIME_ENV: &str = "ORT_DYLIB_PATH";

/// File names of the ONNX Runtime library that are looked for in a model folder, in order.
const RUNTIME_FILE_NAMES: [&str; 3] = [
    "libonnxruntime.so.1.31.1",
    "libonnxruntime.so.1",
    "libonnxruntime.so",
];
const FETCH_HINT: &str =
    "run `scripts/fetch-model.sh DIR` (or `make deps`) and set KESTREL_MODEL_DIR=DIR, \
     or point the embedder config at the file";

/// Everything needed to load an ONNX sentence-embedding model.
///
/// Build one with [`EmbedConfig::from_env`] or [`EmbedConfig::from_dir`] and
/// adjust it with the `with_*` methods, or deserialise it (missing fields
/// take the default model's values). No binary reads it from a file today:
/// the operator builds it from its `modelDir` setting (or the environment),
/// and the node agent does not link this crate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Stable model identifier; vectors from different ids are not comparable.
    pub model_id: String,
    /// The `.onnx` file.
    pub model_path: PathBuf,
    /// The Hugging Face `tokenizer.json`.
    pub tokenizer_path: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so…`, version ≥ 1.17).
    pub runtime_path: PathBuf,
    /// Pooling of token vectors (ignored when the model outputs `[batch, dim]`).
    pub pooling: Pooling,
    /// Text put before every input (Qwen3-Embedding wants an instruction).
    pub instruction_prefix: String,
    /// Output dimension; checked against the model at load and on every run.
    pub dim: usize,
    /// Longest token sequence; longer inputs are truncated and flagged.
    pub max_tokens: usize,
    /// Output to read; `None`: `last_hidden_state` if the model has it, else its first output.
    pub output_name: Option<String>,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Number of ONNX Runtime sessions (concurrent inferences).
    pub sessions: usize,
    /// Override of the calibrated similarity threshold.
    pub threshold: Option<f32>,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self::from_dir(DEFAULT_MODEL_DIR)
    }
}

impl EmbedConfig {
    /// The default model's configuration with its files in `dir`
    /// (`model.onnx`, `tokenizer.json`, `libonnxruntime.so.1.31.1` or
    /// `libonnxruntime.so[.1]`), as `scripts/fetch-model.sh dir` lays them out.
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        let runtime_path = RUNTIME_FILE_NAMES
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join(RUNTIME_FILE_NAMES[0]));
        Self {
            model_id: DEFAULT_MODEL_ID.to_string(),
            model_path: dir.join("model.onnx"),
            tokenizer_path: dir.join("tokenizer.json"),
            runtime_path,
            pooling: Pooling::Mean,
            instruction_prefix: String::new(),
            dim: 384,
            max_tokens: 128,
            output_name: None,
            intra_threads: 1,
            sessions: 1,
            threshold: None,
        }
    }

    /// [`EmbedConfig::from_dir`] on `$KESTREL_MODEL_DIR` (default
    /// [`DEFAULT_MODEL_DIR`]), with the runtime library taken from
    /// `$ORT_DYLIB_PATH` when that is set.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`EmbedConfig::from_env`] with the variables read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());
        let dir = non_empty(MODEL_DIR_ENV).unwrap_or_else(|| DEFAULT_MODEL_DIR.to_string());
        let mut config = Self::from_dir(dir);
        if let Some(runtime) = non_empty(RUNTIME_ENV) {
            config.runtime_path = PathBuf::from(runtime);
        }
        config
    }

    /// Sets the model id (and, for a model in [`MODEL_DEFAULTS`], its dimension,
    /// token limit and pooling).
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = id.into();
        if let Some(d) = MODEL_DEFAULTS.iter().find(|m| m.model_id == self.model_id) {
            self.dim = d.dim;
            self.max_tokens = d.max_tokens;
            self.pooling = d.pooling;
        }
        self
    }

    /// Sets the output to read (`None`: `last_hidden_state` if present, else
    /// the first output); for exports whose token embeddings have a
    /// generated name.
    pub fn with_output_name(mut self, name: Option<String>) -> Self {
        self.output_name = name;
        self
    }

    /// Sets the model file.
    pub fn with_model_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.model_path = path.into();
        self
    }

    /// Sets the tokenizer file.
    pub fn with_tokenizer_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer_path = path.into();
        self
    }

    /// Sets the ONNX Runtime library file.
    pub fn with_runtime_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_path = path.into();
        self
    }

    /// Sets the pooling.
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = pooling;
        self
    }

    /// Sets the instruction prefix.
    pub fn with_instruction_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.instruction_prefix = prefix.into();
        self
    }

    /// Sets the output dimension.
    pub fn with_dim(mut self, dim: usize) -> Self {
        self.dim = dim;
        self
    }

    /// Sets the token limit.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the intra-op threads per session.
    pub fn with_intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = threads;
        self
    }

    /// Sets the number of sessions.
    pub fn with_sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions;
        self
    }

    /// Overrides the similarity threshold.
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// The similarity threshold: the override, else the calibrated value for
    /// the model id, else [`UNCALIBRATED_THRESHOLD`].
    pub fn threshold(&self) -> f32 {
        self.threshold
            .or_else(|| default_threshold(&self.model_id))
            .unwrap_or(UNCALIBRATED_THRESHOLD)
    }

    /// Checks the numbers (dimension, token limit, threads, sessions, threshold).
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.model_id.is_empty() {
            return fail("model_id is empty".into());
        }
        if self.dim == 0 {
            return fail(format!("dim of model {} is 0", self.model_id));
        }
        if self.max_tokens < 2 {
            return fail(format!(
                "max_tokens of model {} is {} (needs ≥ 2)",
                self.model_id, self.max_tokens
            ));
        }
        if self.intra_threads == 0 || self.sessions == 0 {
            return fail("intra_threads and sessions must be ≥ 1".into());
        }
        if let Some(t) = self.threshold {
            if !(-1.0..=1.0).contains(&t) {
                return fail(format!("threshold {t} is outside [-1, 1]"));
            }
        }
        Ok(())
    }

    /// Checks that the runtime library, the model and the tokenizer exist, and
    /// names the first one that does not.
    pub fn check_files(&self) -> Result<()> {
        for (what, path) in [
            ("ONNX Runtime library", &self.runtime_path),
            ("ONNX model", &self.model_path),
            ("tokenizer", &self.tokenizer_path),
        ] {
            if !path.is_file() {
                return Err(Error::MissingFile {
                    what,
                    path: path.clone(),
                    hint: FETCH_HINT.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_choose_the_folder_and_the_runtime() {
        let config = EmbedConfig::from_vars(|name| match name {
            MODEL_DIR_ENV => Some("/models".into()),
            RUNTIME_ENV => Some("/lib/libonnxruntime.so.1.32.0".into()),
            _ => None,
        });
        assert_eq!(config.model_path, PathBuf::from("/models/model.onnx"));
        assert_eq!(
            config.tokenizer_path,
            PathBuf::from("/models/tokenizer.json")
        );
        assert_eq!(
            config.runtime_path,
            PathBuf::from("/lib/libonnxruntime.so.1.32.0")
        );
    }

    #[test]
    fn empty_variables_fall_back_to_the_default_folder() {
        let config = EmbedConfig::from_vars(|_| Some(String::new()));
        assert_eq!(
            config.model_path,
            Path::new(DEFAULT_MODEL_DIR).join("model.onnx")
        );
    }

    #[test]
    fn a_missing_file_is_named_with_a_hint() {
        let config = EmbedConfig::from_dir("/nonexistent/kestrel-models");
        let err = config.check_files().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ONNX Runtime library"), "{text}");
        assert!(
            text.contains("/nonexistent/kestrel-models/libonnxruntime.so.1.31.1"),
            "{text}"
        );
        assert!(text.contains("fetch-model.sh"), "{text}");
        assert_eq!(err.label(), "missing_file");
    }

    #[test]
    fn the_default_model_has_a_calibrated_threshold_and_others_use_the_seed_default() {
        let config = EmbedConfig::from_dir("/m");
        assert_eq!(
            Some(config.threshold()),
            default_threshold(DEFAULT_MODEL_ID)
        );
        let other = config.clone().with_model_id("Qwen3-Embedding-0.6B");
        assert_eq!(other.threshold(), UNCALIBRATED_THRESHOLD);
        assert_eq!(config.with_threshold(0.7).threshold(), 0.7);
    }

    #[test]
    fn bad_numbers_are_rejected() {
        let base = EmbedConfig::from_dir("/m");
        assert!(base.validate().is_ok());
        assert!(base.clone().with_dim(0).validate().is_err());
        assert!(base.clone().with_max_tokens(1).validate().is_err());
        assert!(base.clone().with_sessions(0).validate().is_err());
        assert!(base.with_threshold(1.5).validate().is_err());
    }
}
