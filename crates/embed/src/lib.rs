//! Argument normalisation, the argument measure and the embedding seam:
//! the light half of Kestrel's embeddings, with no model runtime in it
//! (`kestrel-embed-onnx` runs models; the node agent and the profiles link
//! only this crate).
//!
//! The [`Embedder`] trait is the seam between profiles (which compare
//! arguments by meaning) and a concrete model.
//!
//! - [`normalize`] collapses volatile values (numbers, ids, addresses,
//!   timestamps, temporary names, tokens) into typed placeholders; its output
//!   is the cache key.
//! - [`arg_similarity`] is what profiles compare: the embeddings' angle plus
//!   a structural distance of the arguments' [`ArgShape`] (flags, operands,
//!   shell operators) and three cues (program file, writable directories,
//!   [`SENSITIVE_WORDS`]); [`ArgComparison`] says why two strings differ
//!   (`new flags -o -u -p`).
//! - [`MODEL_DEFAULTS`] holds each calibrated model's threshold
//!   ([`default_threshold`]); `kestrel-embed-onnx` has the calibration sets
//!   and the `kestrel-calibrate` binary that computes it.
//!
//! ```
//! use kestrel_embed::{arg_similarity, normalize, ArgShape};
//! let a = normalize("-jar app.jar --timestamp=12345");
//! let b = normalize("-jar app.jar --timestamp=99999");
//! assert_eq!(a, b); // the cache key: the model runs once for both
//! let miner = normalize("-o stratum+tcp://pool:3333 -u wallet");
//! // same embedding (cosine 1.0), different structure: lower similarity
//! let s = arg_similarity(1.0, &ArgShape::of(&a), &ArgShape::of(&miner));
//! assert!(s < 0.0);
//! ```
#![deny(missing_docs)]

mod error;
mod models;
mod normalize;
mod similarity;

pub use error::{Error, Result};
pub use models::{
    current_threshold, default_threshold, ModelDefaults, Pooling, DEFAULT_MODEL_ID, MODEL_DEFAULTS,
    SUPERSEDED_THRESHOLDS, UNCALIBRATED_THRESHOLD,
};
pub use normalize::{model_text, normalize};
pub use similarity::{
    angle_of_cosine, arg_distance, arg_similarity, cosine, ArgComparison, ArgShape, Feature,
    FeatureKind, ShapeDiff, ARG_MEASURE, CUE_WEIGHT, SENSITIVE_WORDS, STRUCTURE_WEIGHT,
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
