//! [`OnnxEmbedder`]: an ONNX sentence-embedding model run by ONNX Runtime.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::config::EmbedConfig;
use crate::pooling::{pool, Output};
use kestrel_embed::{EmbeddedText, Embedder};
use kestrel_embed::{Error, Result};

/// Inputs longer than this many bytes are cut (at a character boundary)
/// before tokenising and flagged as truncated. It bounds tokenizer work on
/// hostile input; at most `max_tokens` tokens reach the model anyway.
pub const MAX_INPUT_BYTES: usize = 8 * 1024;

/// Model inputs the embedder knows how to fill.
#[derive(Clone, Copy, Debug)]
enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
    PositionIds,
}

impl Feed {
    fn for_name(name: &str) -> Option<Feed> {
        match name {
            "input_ids" => Some(Feed::InputIds),
            "attention_mask" => Some(Feed::AttentionMask),
            "token_type_ids" => Some(Feed::TokenTypeIds),
            "position_ids" => Some(Feed::PositionIds),
            _ => None,
        }
    }
}

/// One tokenised input.
struct Tokens {
    encoding: Encoding,
    /// Cut at `MAX_INPUT_BYTES` or at the token limit.
    truncated: bool,
}

impl Tokens {
    /// Sequence length it needs (an empty encoding still takes one position).
    fn len(&self) -> usize {
        self.encoding.get_ids().len().max(1)
    }
}

/// A tokenised, right-padded batch: what one model run gets.
struct Batch {
    size: usize,
    seq: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    type_ids: Vec<i64>,
}

/// The fixed cost of one model run, in padded token positions. Measured on the
/// default model (one AVX2 core, ONNX Runtime 1.31): a run of 2 tokens takes
/// ≈ 3.5 ms and every further token ≈ 0.4 ms, so a run costs about what 8
/// tokens do (mostly streaming the 42 MB of fp32 weights through the cache).
const RUN_COST_TOKENS: usize = 8;

/// ONNX Runtime graph optimisers the sessions leave out (all others run, at
/// `ORT_ENABLE_ALL`, which also folds the default model's in-graph int8 → fp32
/// weight dequantisation into constants at load). `SkipLayerNormFusion` turns
/// each residual `Add` + `LayerNormalization` into one `SkipLayerNormalization`
/// node, and on this project's CPU (AVX2, ONNX Runtime 1.31) that node is
/// slower than the two it replaces: without the fusion the default model
/// embeds ≈ 11 % more lines per second at batch 32 (thread CPU time, measured
/// in-process against the fused sessions), with the same vectors.
const DISABLED_OPTIMIZERS: &str = "SkipLayerNormFusion";

/// At most this many inputs go into one model run (it bounds the output
/// tensor, `rows × seq × dim` floats; more rows would not amortise the fixed
/// cost of a run any further).
const MAX_ROWS_PER_RUN: usize = 64;

/// Splits a batch into model runs of similar lengths.
///
/// A run pads every input to its longest, and the model's cost grows with the
/// padded positions: a batch of 32 real command lines (5–128 word pieces) fed
/// as one run spends most of its time on padding. The inputs are sorted by
/// length and cut into contiguous groups minimising
/// `Σ (run_cost + rows × longest)` (dynamic programming over the sorted
/// lengths, each group at most `max_rows` long). Returns the groups as indices
/// into `lens`, each group sorted by length; every index appears once.
fn plan_runs(lens: &[usize], run_cost: usize, max_rows: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let n = order.len();
    let max_rows = max_rows.max(1);
    // best[j]: cheapest cost of the first j sorted inputs; cut[j]: where the
    // last group of that plan starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = lens[order[j - 1]];
        best[j] = usize::MAX;
        for i in j.saturating_sub(max_rows)..j {
            let cost = best[i]
                .saturating_add(run_cost)
                .saturating_add((j - i).saturating_mul(longest));
            if cost < best[j] {
                best[j] = cost;
                cut[j] = i;
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(order[cut[j]..j].to_vec());
        j = cut[j];
    }
    groups.reverse();
    groups
}

/// An ONNX sentence-embedding model with its tokenizer, run by ONNX Runtime.
///
/// Loading checks every file first and returns an error (never panics) when
/// one is missing or unreadable. Each call tokenises its batch, splits it into
/// runs of similar lengths (padding costs as much as real tokens), pads each
/// run to its own longest input, runs it on one of the configured sessions
/// (each behind a mutex, because ONNX Runtime's `run` needs exclusive access),
/// pools and L2-normalises.
pub struct OnnxEmbedder {
    config: EmbedConfig,
    tokenizer: Tokenizer,
    pad_id: i64,
    sessions: Vec<Mutex<Session>>,
    next_session: AtomicUsize,
    feeds: Vec<(String, Feed)>,
    output_name: String,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("model_id", &self.config.model_id)
            .field("model_path", &self.config.model_path)
            .field("sessions", &self.sessions.len())
            .field("output", &self.output_name)
            .finish()
    }
}

impl OnnxEmbedder {
    /// Loads the runtime library, the tokenizer and the model named by `config`.
    pub fn load(config: EmbedConfig) -> Result<Self> {
        config.validate()?;
        config.check_files()?;
        let env = load_runtime(&config.runtime_path)?;
        let (tokenizer, pad_id) = load_tokenizer(&config)?;
        let model_error = |message: String| Error::Model {
            model_id: config.model_id.clone(),
            path: config.model_path.clone(),
            message,
        };
        let mut sessions = Vec::with_capacity(config.sessions);
        for _ in 0..config.sessions {
            let session = Session::builder(&env)
                .and_then(|b| {
                    b.with_intra_threads(config.intra_threads)
                        .map_err(Into::into)
                })
                .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
                .and_then(|b| {
                    b.with_optimization_level(GraphOptimizationLevel::All)
                        .map_err(Into::into)
                })
                .and_then(|b| {
                    b.with_disabled_optimizers(DISABLED_OPTIMIZERS)
                        .map_err(Into::into)
                })
                .and_then(|mut b| b.commit_from_file(&config.model_path))
                .map_err(|e| model_error(e.to_string()))?;
            sessions.push(session);
        }
        let Some(first) = sessions.first() else {
            return Err(Error::Config("sessions must be ≥ 1".into()));
        };
        let mut feeds = Vec::new();
        for input in first.inputs() {
            let feed = Feed::for_name(input.name()).ok_or_else(|| {
                model_error(format!(
                    "model input {:?} is not one the embedder can fill \
                     (input_ids, attention_mask, token_type_ids, position_ids)",
                    input.name()
                ))
            })?;
            feeds.push((input.name().to_string(), feed));
        }
        if !feeds.iter().any(|(_, f)| matches!(f, Feed::InputIds)) {
            return Err(model_error("the model has no input_ids input".into()));
        }
        let output_name = choose_output(&config, first)?;
        Ok(Self {
            tokenizer,
            pad_id,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next_session: AtomicUsize::new(0),
            feeds,
            output_name,
            config,
        })
    }

    /// The configuration this embedder was loaded with.
    pub fn config(&self) -> &EmbedConfig {
        &self.config
    }

    /// Tokenises `inputs` (placeholder spelling, instruction prefix, byte cap,
    /// token truncation).
    fn tokenize(&self, inputs: &[&str]) -> Result<Vec<Tokens>> {
        let mut rows = Vec::with_capacity(inputs.len());
        for text in inputs {
            let spelled = kestrel_embed::model_text(text);
            let (capped, cut) = cap_bytes(&spelled, MAX_INPUT_BYTES);
            let text: Cow<'_, str> = if self.config.instruction_prefix.is_empty() {
                Cow::Borrowed(capped)
            } else {
                Cow::Owned(format!("{}{capped}", self.config.instruction_prefix))
            };
            let encoding = self.tokenizer.encode(text.as_ref(), true).map_err(|e| {
                Error::Inference(format!(
                    "tokenizing for model {}: {e}",
                    self.config.model_id
                ))
            })?;
            rows.push(Tokens {
                truncated: cut || !encoding.get_overflowing().is_empty(),
                encoding,
            });
        }
        Ok(rows)
    }

    /// The rows `rows` of `tokens`, right-padded to the longest of them.
    fn pad(&self, tokens: &[Tokens], rows: &[usize]) -> Batch {
        // An empty encoding (possible with tokenizers that add no special
        // tokens) becomes one padding token, so every row has a token.
        let seq = rows
            .iter()
            .map(|&r| tokens[r].len())
            .max()
            .unwrap_or(0)
            .max(1);
        let size = rows.len();
        let mut ids = vec![self.pad_id; size * seq];
        let mut mask = vec![0i64; size * seq];
        let mut type_ids = vec![0i64; size * seq];
        for (row, &r) in rows.iter().enumerate() {
            let e = &tokens[r].encoding;
            let base = row * seq;
            if e.get_ids().is_empty() {
                mask[base] = 1;
            }
            for (t, ((id, m), ty)) in e
                .get_ids()
                .iter()
                .zip(e.get_attention_mask())
                .zip(e.get_type_ids())
                .enumerate()
            {
                ids[base + t] = i64::from(*id);
                mask[base + t] = i64::from(*m);
                type_ids[base + t] = i64::from(*ty);
            }
        }
        Batch {
            size,
            seq,
            ids,
            mask,
            type_ids,
        }
    }

    /// A free session if there is one, else waits for one (round robin).
    fn session(&self) -> MutexGuard<'_, Session> {
        let start = self.next_session.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        for k in 0..n {
            if let Ok(guard) = self.sessions[(start + k) % n].try_lock() {
                return guard;
            }
        }
        // A poisoned session only means another thread panicked while holding
        // it; ONNX Runtime's state is still valid, so keep using it.
        self.sessions[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the model on one padded batch and pools its output.
    fn run(&self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        let model_id = &self.config.model_id;
        let inference = |e: ort::Error| Error::Inference(format!("model {model_id}: {e}"));
        let shape = [batch.size, batch.seq];
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.feeds.len());
        for (name, feed) in &self.feeds {
            let data = match feed {
                Feed::InputIds => batch.ids.clone(),
                Feed::AttentionMask => batch.mask.clone(),
                Feed::TokenTypeIds => batch.type_ids.clone(),
                Feed::PositionIds => (0..batch.size).flat_map(|_| 0..batch.seq as i64).collect(),
            };
            let tensor = Tensor::from_array((shape, data)).map_err(inference)?;
            values.push((Cow::Owned(name.clone()), tensor.into()));
        }
        let mut session = self.session();
        let outputs = session.run(values).map_err(inference)?;
        let value = outputs.get(&self.output_name).ok_or_else(|| {
            Error::Inference(format!(
                "model {model_id} produced no output {:?}",
                self.output_name
            ))
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(inference)?;
        pool(
            &Output {
                model_id,
                shape: out_shape,
                data,
                mask: &batch.mask,
                batch: batch.size,
                seq: batch.seq,
                dim: self.config.dim,
            },
            self.config.pooling,
        )
    }
}

impl Embedder for OnnxEmbedder {
    fn model_id(&self) -> &str {
        &self.config.model_id
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed_batch_flagged(inputs)?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    }

    fn embed_batch_flagged(&self, inputs: &[&str]) -> Result<Vec<EmbeddedText>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.tokenize(inputs)?;
        let lens: Vec<usize> = tokens.iter().map(Tokens::len).collect();
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        for rows in plan_runs(&lens, RUN_COST_TOKENS, MAX_ROWS_PER_RUN) {
            let batch = self.pad(&tokens, &rows);
            for (row, vector) in rows.into_iter().zip(self.run(&batch)?) {
                vectors[row] = vector;
            }
        }
        Ok(vectors
            .into_iter()
            .zip(tokens)
            .map(|(vector, t)| EmbeddedText {
                vector,
                truncated: t.truncated,
            })
            .collect())
    }
}

/// The process's one ONNX Runtime environment (`ort` allows one per process,
/// and the library itself is loaded once).
static RUNTIME: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);

/// Loads the ONNX Runtime library and builds the environment, once per
/// process; later calls reuse it (whatever `path` they name).
fn load_runtime(path: &Path) -> Result<ort::environment::Environment> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = runtime.as_ref() {
        return Ok(env.clone());
    }
    let runtime_error = |message: String| Error::Runtime {
        path: path.to_path_buf(),
        message,
    };
    // `ort::init()` panics when the library cannot be loaded; `init_from`
    // returns an error. The file was checked to exist by `check_files`.
    let env = ort::init_from(path)
        .map_err(|e| runtime_error(e.to_string()))?
        .with_name("kestrel-embed")
        .with_telemetry(false)
        .build()
        .map_err(|e| runtime_error(e.to_string()))?;
    *runtime = Some(env.clone());
    Ok(env)
}

/// Loads `tokenizer.json`, turns its fixed padding off (batches are padded
/// here) and sets truncation to the configured token limit. Returns the pad id.
fn load_tokenizer(config: &EmbedConfig) -> Result<(Tokenizer, i64)> {
    let tokenizer_error = |message: String| Error::Tokenizer {
        path: config.tokenizer_path.clone(),
        message,
    };
    let mut tokenizer =
        Tokenizer::from_file(&config.tokenizer_path).map_err(|e| tokenizer_error(e.to_string()))?;
    let pad_id = tokenizer
        .get_padding()
        .map(|p| p.pad_id)
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .or_else(|| tokenizer.token_to_id("<pad>"))
        .unwrap_or(0);
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: config.max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(|e| tokenizer_error(e.to_string()))?;
    Ok((tokenizer, i64::from(pad_id)))
}

/// Picks the output to read and checks its declared type and shape.
fn choose_output(config: &EmbedConfig, session: &Session) -> Result<String> {
    let outputs = session.outputs();
    let model_error = |message: String| Error::Model {
        model_id: config.model_id.clone(),
        path: config.model_path.clone(),
        message,
    };
    let outlet = match &config.output_name {
        Some(name) => outputs
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| model_error(format!("the model has no output {name:?}")))?,
        None => outputs
            .iter()
            .find(|o| o.name() == "last_hidden_state")
            .or_else(|| outputs.first())
            .ok_or_else(|| model_error("the model has no outputs".into()))?,
    };
    let shape_error = |shape: Vec<i64>, expected: String| Error::OutputShape {
        model_id: config.model_id.clone(),
        shape,
        expected,
    };
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let dims: Vec<i64> = shape.iter().copied().collect();
            if *ty != TensorElementType::Float32 {
                return Err(shape_error(dims, format!("f32 values, not {ty:?}")));
            }
            let dim_ok = dims
                .last()
                .is_some_and(|&d| d == -1 || usize::try_from(d).ok() == Some(config.dim));
            if !(dims.len() == 2 || dims.len() == 3) || !dim_ok {
                return Err(shape_error(
                    dims,
                    format!(
                        "[batch, seq, {0}] or [batch, {0}] (output {1:?})",
                        config.dim,
                        outlet.name()
                    ),
                ));
            }
        }
        other => {
            return Err(model_error(format!(
                "output {:?} is not a tensor but {other:?}",
                outlet.name()
            )));
        }
    }
    Ok(outlet.name().to_string())
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary, and whether anything was cut.
fn cap_bytes(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::{cap_bytes, plan_runs};

    /// Padded positions plus run costs of a plan.
    fn cost(lens: &[usize], plan: &[Vec<usize>], run_cost: usize) -> usize {
        plan.iter()
            .map(|g| run_cost + g.len() * g.iter().map(|&i| lens[i]).max().unwrap_or(0))
            .sum()
    }

    fn assert_partition(lens: &[usize], plan: &[Vec<usize>], max_rows: usize) {
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>(), "{plan:?}");
        assert!(plan.iter().all(|g| !g.is_empty() && g.len() <= max_rows));
    }

    #[test]
    fn an_empty_batch_plans_no_runs() {
        assert!(plan_runs(&[], 8, 64).is_empty());
    }

    #[test]
    fn inputs_of_one_length_share_one_run() {
        let lens = [30; 32];
        let plan = plan_runs(&lens, 8, 64);
        assert_eq!(plan.len(), 1);
        assert_partition(&lens, &plan, 64);
    }

    #[test]
    fn a_long_outlier_gets_its_own_run() {
        let mut lens = vec![12; 31];
        lens.insert(7, 128);
        let plan = plan_runs(&lens, 8, 64);
        assert_partition(&lens, &plan, 64);
        assert_eq!(plan, vec![(0..32).filter(|&i| i != 7).collect(), vec![7]]);
        assert!(cost(&lens, &plan, 8) < 8 + 32 * 128);
    }

    #[test]
    fn the_plan_is_never_worse_than_one_padded_run_and_respects_the_row_cap() {
        // Lengths like a node's command lines: 5 to 128 word pieces.
        let lens: Vec<usize> = (0..100).map(|i| 5 + (i * 37 % 124)).collect();
        for max_rows in [1, 7, 32, 64] {
            let plan = plan_runs(&lens, 8, max_rows);
            assert_partition(&lens, &plan, max_rows);
            let runs = lens.len().div_ceil(max_rows);
            assert!(cost(&lens, &plan, 8) <= runs * 8 + lens.len() * 128);
        }
        // Each group is a contiguous slice of the lengths in sorted order.
        let plan = plan_runs(&lens, 8, 64);
        let flat: Vec<usize> = plan.iter().flatten().map(|&i| lens[i]).collect();
        assert!(flat.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn byte_capping_never_splits_a_character() {
        assert_eq!(cap_bytes("abc", 8), ("abc", false));
        assert_eq!(cap_bytes("aé", 2), ("a", true));
        assert_eq!(cap_bytes("héllo", 3), ("hé", true));
    }
}
