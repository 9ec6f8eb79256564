//! What is known about each embedding model: its calibrated argument
//! similarity threshold, dimension, token limit and pooling.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Id of the default model: all-MiniLM-L6-v2 as an int8 ONNX graph.
pub const DEFAULT_MODEL_ID: &str = "all-MiniLM-L6-v2-int8";
/// Similarity threshold for models that have not been calibrated (the design's default).
pub const UNCALIBRATED_THRESHOLD: f32 = 0.95;

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// Mean of the token vectors under the attention mask (sentence-transformers MiniLM, BGE-M3…).
    Mean,
    /// The first token's vector (`[CLS]`; BGE, E5 variants).
    Cls,
    /// The last non-padding token's vector (decoder models such as Qwen3-Embedding).
    LastToken,
}

impl FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last-token" | "last_token" | "last" => Ok(Pooling::LastToken),
            other => Err(Error::Config(format!(
                "unknown pooling {other:?} (mean, cls, last-token)"
            ))),
        }
    }
}

/// Calibrated defaults for a model id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelDefaults {
    /// The model id this row is for.
    pub model_id: &'static str,
    /// Argument similarity ([`arg_similarity`](crate::arg_similarity): the
    /// embeddings' angle plus the structural distance) at or above which two
    /// normalised argument strings are the same behaviour, from
    /// `kestrel-calibrate` on the committed tuning set (`docs/embeddings.md`
    /// has the distributions and the held-out results). It equals a cosine
    /// threshold for strings of equal shape, and is negative for MiniLM.
    pub threshold: f32,
    /// Output dimension.
    pub dim: usize,
    /// Longest token sequence the model takes.
    pub max_tokens: usize,
    /// Pooling the model was trained with.
    pub pooling: Pooling,
}

/// Calibrated per-model defaults. A model not listed here uses
/// [`UNCALIBRATED_THRESHOLD`] until someone runs `kestrel-calibrate` for it.
pub const MODEL_DEFAULTS: &[ModelDefaults] = &[ModelDefaults {
    model_id: DEFAULT_MODEL_ID,
    threshold: -0.159,
    dim: 384,
    max_tokens: 128,
    pooling: Pooling::Mean,
}];

/// Thresholds that earlier argument measures ([`ARG_MEASURE`](crate::ARG_MEASURE)
/// below the current one) shipped as a model's default: 0.63 (cosine only)
/// and −0.298 (cosine + shape). A profile recorded under an older measure
/// whose threshold is one of these was using the default, and gets today's.
pub const SUPERSEDED_THRESHOLDS: [(&str, f32); 2] =
    [(DEFAULT_MODEL_ID, 0.63), (DEFAULT_MODEL_ID, -0.298)];

/// The threshold a profile recorded under argument measure `measure` with
/// threshold `threshold` should use now: unchanged when the measure is
/// current or the threshold was not a shipped default (someone chose it);
/// otherwise today's default for `model_id`.
pub fn current_threshold(model_id: &str, measure: u32, threshold: f32) -> f32 {
    if measure == crate::ARG_MEASURE {
        return threshold;
    }
    let superseded = SUPERSEDED_THRESHOLDS
        .iter()
        .any(|(m, t)| *m == model_id && *t == threshold);
    match default_threshold(model_id) {
        Some(now) if superseded => now,
        _ => threshold,
    }
}

/// The calibrated similarity threshold for `model_id`, if it has one.
pub fn default_threshold(model_id: &str) -> Option<f32> {
    MODEL_DEFAULTS
        .iter()
        .find(|m| m.model_id == model_id)
        .map(|m| m.threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_parses_from_its_config_spelling() {
        assert_eq!("last-token".parse::<Pooling>().unwrap(), Pooling::LastToken);
        assert_eq!("cls".parse::<Pooling>().unwrap(), Pooling::Cls);
        assert!("max".parse::<Pooling>().is_err());
    }

    #[test]
    fn superseded_default_thresholds_become_todays_and_chosen_ones_stay() {
        let now = default_threshold(DEFAULT_MODEL_ID).unwrap();
        assert_eq!(current_threshold(DEFAULT_MODEL_ID, 1, -0.298), now);
        assert_eq!(current_threshold(DEFAULT_MODEL_ID, 1, 0.63), now);
        assert_eq!(current_threshold(DEFAULT_MODEL_ID, 1, 0.5), 0.5);
        assert_eq!(current_threshold("other-model", 1, -0.298), -0.298);
        assert_eq!(
            current_threshold(DEFAULT_MODEL_ID, crate::ARG_MEASURE, -0.298),
            -0.298
        );
    }
}
