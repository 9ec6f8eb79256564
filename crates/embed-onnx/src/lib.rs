//! ONNX embeddings for Kestrel: the heavy half (ONNX Runtime through `ort`,
//! Hugging Face `tokenizers`), linked only by the operator (so by the
//! `kestrel-operator` and `kestrel` binaries), never by the node agent.
//!
//! - [`OnnxEmbedder`] runs any ONNX sentence-embedding model with a
//!   `tokenizer.json` through ONNX Runtime, loaded at run time from a file
//!   ([`EmbedConfig`] says where; `scripts/fetch-model.sh` installs the default
//!   all-MiniLM-L6-v2 int8 model and the runtime).
//! - [`ArgEmbedder`] puts normalisation, an exact LRU cache and a batching
//!   inference thread in front of any [`kestrel_embed::Embedder`]; blocking
//!   and async callers share it.
//! - [`calibrate`], the committed tuning set ([`tuning_pairs`]:
//!   [`calibration_pairs`] and [`holdout_pairs`], under `calibration/`) and
//!   the held-out set ([`holdout2_pairs`], never tuned on) give each model id
//!   its argument-similarity threshold ([`kestrel_embed::default_threshold`]);
//!   the `kestrel-calibrate` binary prints the numbers.
//!
//! The light half, `kestrel-embed`, holds the [`kestrel_embed::Embedder`]
//! trait, normalisation and the argument measure.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kestrel_embed::{arg_similarity, cosine, ArgShape};
//! use kestrel_embed_onnx::{ArgEmbedder, CacheOptions, EmbedConfig, OnnxEmbedder};
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
mod lru;
mod onnx;
mod pooling;
mod service;

pub use calibration::{
    calibrate, calibration_pairs, holdout2_pairs, holdout3_pairs, holdout_pairs, parse_pairs,
    tuning_pairs, Calibration, Distribution, LabelledPair, CALIBRATION_TSV, HOLDOUT2_TSV,
    HOLDOUT3_TSV, HOLDOUT_TSV,
};
pub use config::{EmbedConfig, DEFAULT_MODEL_DIR, MODEL_DIR_ENV, RUNTIME_ENV};
pub use onnx::{OnnxEmbedder, MAX_INPUT_BYTES};
pub use service::{ArgEmbedder, CacheOptions, CacheStats, Embedding, Pending};
