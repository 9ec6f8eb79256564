//! A deterministic embedder for tests, benchmarks and other crates' tests.
//!
//! It hashes whitespace tokens (weight 1) and byte trigrams (weight 0.5) into a
//! fixed number of dimensions and L2-normalises: strings sharing most tokens
//! are similar, unrelated strings are nearly orthogonal. It is not a language
//! model; it only makes "same shape" and "different shape" testable.

use kestrel_embed::{Embedder, Result};

use crate::digest::stable_hash;

/// Model id reported by [`TestEmbedder`].
pub const TEST_MODEL_ID: &str = "kestrel-test-trigram-v1";

/// Hashed token + trigram embedder (deterministic, no model files).
#[derive(Debug, Clone)]
pub struct TestEmbedder {
    dim: usize,
}

impl Default for TestEmbedder {
    fn default() -> Self {
        TestEmbedder { dim: 256 }
    }
}

impl TestEmbedder {
    /// An embedder of 256 dimensions.
    pub fn new() -> Self {
        Self::default()
    }

    /// An embedder of `dim` dimensions (at least 1).
    pub fn with_dim(dim: usize) -> Self {
        TestEmbedder { dim: dim.max(1) }
    }

    /// Embeds one string.
    pub fn embed(&self, s: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        let mut add = |h: u64, w: f32| {
            let i = (h % self.dim as u64) as usize;
            v[i] += if h >> 63 == 1 { -w } else { w };
        };
        for tok in s.split_whitespace() {
            add(stable_hash(1, tok.as_bytes()), 1.0);
        }
        let padded: Vec<u8> = [b" ", s.as_bytes(), b" "].concat();
        for tri in padded.windows(3) {
            add(stable_hash(2, tri), 0.5);
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n == 0.0 {
            v[0] = 1.0;
        } else {
            for x in &mut v {
                *x /= n;
            }
        }
        v
    }
}

impl Embedder for TestEmbedder {
    fn model_id(&self) -> &str {
        TEST_MODEL_ID
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(inputs.iter().map(|s| self.embed(s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exemplar::cosine;

    #[test]
    fn same_shape_is_similar_and_different_shape_is_not() {
        let e = TestEmbedder::new();
        let a = e.embed("java -jar app.jar --timestamp=<num>");
        let b = e.embed("java -jar app.jar --timestamp=<num>");
        let c = e.embed("-o stratum+tcp://pool.xx:<num>");
        assert!(cosine(&a, &b) > 0.999);
        assert!(cosine(&a, &c) < 0.5, "{}", cosine(&a, &c));
    }

    #[test]
    fn empty_input_still_gets_a_unit_vector() {
        let v = TestEmbedder::with_dim(8).embed("");
        assert_eq!(v.iter().map(|x| x * x).sum::<f32>(), 1.0);
    }
}
