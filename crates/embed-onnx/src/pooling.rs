//! Token vectors → one unit-length sentence vector per input.

use kestrel_embed::{Error, Pooling, Result};

/// Scales `v` to unit L2 length in place (an all-zero vector stays zero).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// One model run's output and the batch it belongs to.
pub(crate) struct Output<'a> {
    /// The configured model id (for errors).
    pub model_id: &'a str,
    /// Output shape as the runtime reports it.
    pub shape: &'a [i64],
    /// Output data, row-major.
    pub data: &'a [f32],
    /// Attention mask, `batch × seq`, row-major.
    pub mask: &'a [i64],
    /// Batch size fed.
    pub batch: usize,
    /// Padded sequence length fed.
    pub seq: usize,
    /// Configured dimension.
    pub dim: usize,
}

/// Pools `[batch, seq, dim]` token vectors (or takes `[batch, dim]` sentence
/// vectors as they are) and L2-normalises each row.
pub(crate) fn pool(out: &Output<'_>, pooling: Pooling) -> Result<Vec<Vec<f32>>> {
    let shape_error = |expected: String| Error::OutputShape {
        model_id: out.model_id.to_string(),
        shape: out.shape.to_vec(),
        expected,
    };
    let as_usize = |d: i64| usize::try_from(d).ok();
    let (batch, dim) = (out.batch, out.dim);
    let mut rows = Vec::with_capacity(batch);
    match out.shape {
        [b, s, d]
            if as_usize(*b) == Some(batch)
                && as_usize(*s) == Some(out.seq)
                && as_usize(*d) == Some(dim) =>
        {
            let seq = out.seq;
            if out.data.len() != batch * seq * dim || out.mask.len() != batch * seq {
                return Err(shape_error(format!(
                    "{} floats for [{batch}, {seq}, {dim}]",
                    batch * seq * dim
                )));
            }
            for row in 0..batch {
                let mask = &out.mask[row * seq..(row + 1) * seq];
                let token = |t: usize| &out.data[(row * seq + t) * dim..(row * seq + t + 1) * dim];
                let mut v = match pooling {
                    Pooling::Mean => {
                        let mut sum = vec![0.0f32; dim];
                        let mut count = 0usize;
                        for (t, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
                            sum.iter_mut().zip(token(t)).for_each(|(s, x)| *s += x);
                            count += 1;
                        }
                        if count > 0 {
                            let n = count as f32;
                            sum.iter_mut().for_each(|s| *s /= n);
                        }
                        sum
                    }
                    Pooling::Cls => token(0).to_vec(),
                    Pooling::LastToken => {
                        let last = mask.iter().rposition(|m| *m != 0).unwrap_or(0);
                        token(last).to_vec()
                    }
                };
                l2_normalize(&mut v);
                rows.push(v);
            }
        }
        [b, d] if as_usize(*b) == Some(batch) && as_usize(*d) == Some(dim) => {
            if out.data.len() != batch * dim {
                return Err(shape_error(format!(
                    "{} floats for [{batch}, {dim}]",
                    batch * dim
                )));
            }
            for chunk in out.data.chunks_exact(dim) {
                let mut v = chunk.to_vec();
                l2_normalize(&mut v);
                rows.push(v);
            }
        }
        _ => {
            return Err(shape_error(format!(
                "[{batch}, {}, {dim}] token vectors or [{batch}, {dim}] sentence vectors",
                out.seq
            )))
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_embed::cosine;

    fn output<'a>(shape: &'a [i64], data: &'a [f32], mask: &'a [i64]) -> Output<'a> {
        Output {
            model_id: "toy",
            shape,
            data,
            mask,
            batch: 1,
            seq: 3,
            dim: 2,
        }
    }

    // One sentence, three tokens of dimension 2; the last token is padding.
    const DATA: [f32; 6] = [1.0, 0.0, 0.0, 1.0, 5.0, 5.0];
    const MASK: [i64; 3] = [1, 1, 0];

    #[test]
    fn mean_pooling_ignores_padding_and_returns_unit_vectors() {
        let rows = pool(&output(&[1, 3, 2], &DATA, &MASK), Pooling::Mean).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((rows[0][0] - h).abs() < 1e-6 && (rows[0][1] - h).abs() < 1e-6);
    }

    #[test]
    fn cls_pooling_takes_the_first_token() {
        let rows = pool(&output(&[1, 3, 2], &DATA, &MASK), Pooling::Cls).unwrap();
        assert_eq!(rows[0], vec![1.0, 0.0]);
    }

    #[test]
    fn last_token_pooling_takes_the_last_unpadded_token() {
        let rows = pool(&output(&[1, 3, 2], &DATA, &MASK), Pooling::LastToken).unwrap();
        assert_eq!(rows[0], vec![0.0, 1.0]);
    }

    #[test]
    fn sentence_vectors_are_only_normalised() {
        let data = [3.0, 4.0];
        let rows = pool(&output(&[1, 2], &data, &MASK), Pooling::Mean).unwrap();
        assert_eq!(rows[0], vec![0.6, 0.8]);
    }

    #[test]
    fn a_wrong_output_shape_is_an_error_naming_the_model() {
        let err = pool(&output(&[1, 3, 7], &DATA, &MASK), Pooling::Mean).unwrap_err();
        assert!(err.to_string().contains("model toy"), "{err}");
        assert_eq!(err.label(), "output_shape");
        let err = pool(&output(&[1, 3, 2], &DATA[..4], &MASK), Pooling::Mean).unwrap_err();
        assert_eq!(err.label(), "output_shape");
        let err = pool(&output(&[6], &DATA, &MASK), Pooling::Mean).unwrap_err();
        assert_eq!(err.label(), "output_shape");
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }
}
