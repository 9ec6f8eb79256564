//! Argument normalisation and embeddings.
//!
//! The [`Embedder`] trait is the seam between profiles (which compare
//! arguments by meaning) and a concrete model.
//!
//! - [`normalize`] collapses volatile values (numbers, ids, addresses,
//!   timestamps, temporary names, tokens) into typed placeholders; its output
//!   is the cache key.
//! - [`OnnxEmbedder`] runs any ONNX sentence-embedding model with a
//!   `tokenizer.json` through ONNX Runtime, loaded at run time from a file
//!   ([`EmbedConfig`] says where; `scripts/fetch-model.sh` installs the default
//!   all-MiniLM-L6-v2 int8 model and the runtime).
//! - [`ArgEmbedder`] puts normalisation, an exact LRU cache and a batching
//!   inference thread in front of any [`Embedder`]; blocking and async callers
//!   share it.
//! - [`arg_similarity`] is what profiles compare: the embeddings' angle plus
//!   a structural distance of the arguments' [`ArgShape`] (flags, operands,
//!   shell operators); [`ArgComparison`] says why two strings differ
//!   (`new flags -o -u -p`).
//! - [`calibrate`], the committed [`calibration_pairs`] (tuning) and
//!   [`holdout_pairs`] (never tuned on) give each model id its similarity
//!   threshold ([`default_threshold`]); the `kestrel-calibrate` binary prints
//!   the numbers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kestrel_embed::{
//!     arg_similarity, cosine, ArgEmbedder, ArgShape, CacheOptions, EmbedConfig, OnnxEmbedder,
//! };
//!
//! # fn main() -> kestrel_embed::Result<()> {
//! let config = EmbedConfig::from_env(); // $KESTREL_MODEL_DIR, $ORT_DYLIB_PATH
//! let threshold = config.threshold();
//! let model = OnnxEmbedder::load(config)?; // a clear error if a file is missing
//! let embedder = ArgEmbedder::new(Arc::new(model), CacheOptions::default())?;
//! // Arguments after argv[0], as the agent reports them.
//! let a = embedder.embed("-jar app.jar --timestamp=12345")?;
//! let b = embedder.embed("-jar app.jar --timestamp=99999")?; // cache hit
//! let (sa, sb) = (ArgShape::of(&a.key), ArgShape::of(&b.key));
//! assert!(arg_similarity(cosine(&a.vector, &b.vector), &sa, &sb) >= threshold);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod calibration;
mod config;
mod error;
mod lru;
mod normalize;
mod onnx;
mod pooling;
mod service;
mod similarity;

pub use calibration::{
    calibrate, calibration_pairs, holdout2_pairs, holdout_pairs, parse_pairs, tuning_pairs,
    Calibration, Distribution, LabelledPair, CALIBRATION_TSV, HOLDOUT2_TSV, HOLDOUT_TSV,
};
pub use config::{
    current_threshold, default_threshold, EmbedConfig, ModelDefaults, Pooling, DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_ID, MODEL_DEFAULTS, MODEL_DIR_ENV, RUNTIME_ENV, SUPERSEDED_THRESHOLDS,
    UNCALIBRATED_THRESHOLD,
};
pub use error::{Error, Result};
pub use normalize::{model_text, normalize};
pub use onnx::{OnnxEmbedder, MAX_INPUT_BYTES};
pub use pooling::cosine;
pub use service::{ArgEmbedder, CacheOptions, CacheStats, Embedding, Pending};
pub use similarity::{
    angle_of_cosine, arg_distance, arg_similarity, ArgComparison, ArgShape, Feature, FeatureKind,
    ShapeDiff, ARG_MEASURE, CUE_WEIGHT, SENSITIVE_WORDS, STRUCTURE_WEIGHT,
};

/// One input's vector and whether the input was cut to fit the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddedText {
    /// Unit-length vector of [`Embedder::dim`] floats.
    pub vector: Vec<f32>,
    /// Only the start of the input was embedded (token or byte limit).
    pub truncated: bool,
}

/// Turns normalised argument strings into unit-length vectors.
///
/// Implementations must return one L2-normalised vector of [`Embedder::dim`]
/// floats per input, in input order, and be deterministic for a given model.
pub trait Embedder: Send + Sync {
    /// A stable identifier of the model (vectors from different ids are not comparable).
    fn model_id(&self) -> &str;
    /// Length of every returned vector.
    fn dim(&self) -> usize;
    /// Embeds a batch of already-normalised strings.
    fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Like [`Embedder::embed_batch`], also saying which inputs were truncated.
    /// The default reports none as truncated.
    fn embed_batch_flagged(&self, inputs: &[&str]) -> Result<Vec<EmbeddedText>> {
        Ok(self
            .embed_batch(inputs)?
            .into_iter()
            .map(|vector| EmbeddedText {
                vector,
                truncated: false,
            })
            .collect())
    }
}
