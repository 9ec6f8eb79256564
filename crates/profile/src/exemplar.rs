//! Argument exemplars at the leaves of the process trie, compared by meaning
//! and by shape.
//!
//! Each exemplar is a ball: a normalised argument string, its embedding, its
//! [`ArgShape`] (flags, operands, shell operators) and a minimum argument
//! similarity (by default the profile's threshold). The distance is
//! [`kestrel_embed::arg_distance`]: the angle between the embeddings plus the
//! shapes' structural distance ([`ArgShape::structural_distance`]: weighted
//! Jaccard distance of flags and operands, plus the program-file,
//! writable-directory and sensitive-word cues), capped at π; the similarity is
//! its cosine ([`kestrel_embed::arg_similarity`]).
//! An argument is known when it falls inside some ball.
//!
//! When a leaf holds more than its cap, the pair whose merge gives the smallest
//! ball is merged: the kept exemplar's radius grows to cover the other ball.
//! The distance is a metric (a sum of metrics, capped), so the triangle
//! inequality holds and nothing that was known becomes unknown: compaction
//! loses precision, never knowledge.

use std::cmp::Ordering;

use kestrel_embed::{arg_distance, ArgShape};

/// Extra angle (radians) added when balls are merged, covering float noise.
const SLACK: f64 = 1e-4;

/// Bound on the exact-match cache of a leaf.
pub(crate) const KNOWN_CACHE_CAP: usize = 1024;

/// One exemplar.
#[derive(Debug, Clone)]
pub(crate) struct Exemplar {
    pub(crate) args: Box<str>,
    pub(crate) vector: Box<[f32]>,
    /// The shape of `args` (derived, never serialised).
    pub(crate) shape: ArgShape,
    pub(crate) min_similarity: f32,
}

impl Exemplar {
    pub(crate) fn new(args: Box<str>, vector: Box<[f32]>, min_similarity: f32) -> Self {
        let shape = ArgShape::of(&args);
        Exemplar {
            args,
            vector,
            shape,
            min_similarity,
        }
    }

    pub(crate) fn radius(&self) -> f64 {
        radius(self.min_similarity)
    }

    /// The argument distance to an argument with vector `v` and shape `shape`.
    #[inline]
    pub(crate) fn distance_to(&self, v: &[f32], shape: &ArgShape) -> f64 {
        arg_distance(
            angle(&self.vector, v),
            self.shape.structural_distance(shape),
        )
    }

    fn distance(&self, other: &Exemplar) -> f64 {
        self.distance_to(&other.vector, &other.shape)
    }
}

fn radius(min_similarity: f32) -> f64 {
    f64::from(min_similarity).clamp(-1.0, 1.0).acos()
}

#[inline]
fn chord2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

/// Angle between two (unit) vectors, well-conditioned near zero.
fn angle(a: &[f32], b: &[f32]) -> f64 {
    2.0 * (chord2(a, b).sqrt() / 2.0).min(1.0).asin()
}

/// Cosine similarity.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (d / (na.sqrt() * nb.sqrt())) as f32
}

/// The largest f32 similarity whose radius is at least `r` (rounded down).
fn similarity_for_radius(r: f64) -> f32 {
    if r >= std::f64::consts::PI {
        return -1.0;
    }
    let c = r.cos();
    let mut m = c as f32;
    while f64::from(m) > c || radius(m) < r {
        m = m.next_down();
        if m <= -1.0 {
            return -1.0;
        }
    }
    m
}

/// What a leaf says about an argument (vector and shape).
pub(crate) struct Nearest<'a> {
    pub(crate) covered: bool,
    /// Argument similarity to the nearest exemplar (`cos` of the distance).
    pub(crate) best_similarity: f32,
    pub(crate) nearest: Option<&'a Exemplar>,
}

/// The argument side of a process leaf.
#[derive(Debug, Clone, Default)]
pub(crate) struct ArgLeaf {
    pub(crate) exemplars: Vec<Exemplar>,
    /// Exact cache of normalised argument strings known to match, sorted by
    /// (hash, string); bounded by [`KNOWN_CACHE_CAP`], keeping the smallest hashes.
    known: Vec<(u64, Box<str>)>,
}

impl ArgLeaf {
    /// Whether `args` (with hash `h`) is in the exact cache. Never allocates.
    #[inline]
    pub(crate) fn knows_exact(&self, h: u64, args: &str) -> bool {
        let start = self.known.partition_point(|(k, _)| *k < h);
        self.known[start..]
            .iter()
            .take_while(|(k, _)| *k == h)
            .any(|(_, s)| &**s == args)
    }

    /// Remembers an argument string known to match.
    pub(crate) fn remember(&mut self, h: u64, args: &str) {
        let probe = (h, args);
        let pos = self.known.binary_search_by(|(k, s)| (*k, &**s).cmp(&probe));
        if let Err(i) = pos {
            if self.known.len() >= KNOWN_CACHE_CAP {
                if i >= self.known.len() {
                    return;
                }
                self.known.pop();
            }
            self.known.insert(i, (h, args.into()));
        }
    }

    /// The cached strings (for digests).
    pub(crate) fn known_strings(&self) -> impl Iterator<Item = &str> {
        self.known.iter().map(|(_, s)| &**s)
    }

    /// The nearest exemplar to an argument with vector `v` and shape `shape`,
    /// and whether some exemplar's ball covers it.
    pub(crate) fn nearest(&self, v: &[f32], shape: &ArgShape) -> Nearest<'_> {
        let mut out = Nearest {
            covered: false,
            best_similarity: -1.0,
            nearest: None,
        };
        for e in &self.exemplars {
            let d = e.distance_to(v, shape);
            let s = d.cos() as f32;
            let closer = match out.nearest {
                None => true,
                Some(n) => s > out.best_similarity || (s == out.best_similarity && e.args < n.args),
            };
            if closer {
                out.best_similarity = s;
                out.nearest = Some(e);
            }
            if !out.covered && d <= e.radius() {
                out.covered = true;
            }
        }
        out
    }

    /// Adds an exemplar, then makes the set canonical (see [`ArgLeaf::union`]).
    pub(crate) fn add(&mut self, e: Exemplar, cap: usize) {
        self.exemplars.push(e);
        self.canonicalize(cap);
    }

    /// Absorbs another leaf.
    pub(crate) fn absorb(&mut self, other: ArgLeaf, cap: usize) {
        let me = std::mem::take(self);
        *self = ArgLeaf::union([me, other], cap);
    }

    /// The canonical union of leaves: a function of the set of exemplars only
    /// (hence commutative and, for canonical inputs, idempotent). Same strings
    /// keep the widest ball, balls inside other balls are dropped, and pairs are
    /// merged while above `cap`. The exact caches are united (bounded).
    pub(crate) fn union(leaves: impl IntoIterator<Item = ArgLeaf>, cap: usize) -> ArgLeaf {
        let mut out = ArgLeaf::default();
        let mut known = Vec::new();
        for l in leaves {
            out.exemplars.extend(l.exemplars);
            known.extend(l.known);
        }
        out.canonicalize(cap);
        for (h, s) in known {
            out.remember(h, &s);
        }
        out
    }

    fn canonicalize(&mut self, cap: usize) {
        let all = &mut self.exemplars;
        all.sort_by(|a, b| {
            a.args
                .cmp(&b.args)
                .then(a.min_similarity.total_cmp(&b.min_similarity))
        });
        // Same string: keep the widest ball (smallest min_similarity, sorted first).
        all.dedup_by(|later, first| later.args == first.args);
        self.drop_contained();
        while self.exemplars.len() > cap.max(1) {
            self.merge_closest_pair();
            self.drop_contained();
        }
    }

    fn drop_contained(&mut self) {
        let all = &self.exemplars;
        let contained: Vec<bool> = (0..all.len())
            .map(|i| {
                (0..all.len()).any(|j| {
                    j != i && all[i].distance(&all[j]) + all[i].radius() + SLACK <= all[j].radius()
                })
            })
            .collect();
        let mut it = contained.iter();
        self.exemplars
            .retain(|_| !it.next().copied().unwrap_or(false));
    }

    fn merge_closest_pair(&mut self) {
        {
            let mut best: Option<(f64, usize, usize)> = None;
            for i in 0..self.exemplars.len() {
                for j in 0..self.exemplars.len() {
                    if i == j {
                        continue;
                    }
                    // Keep i, absorb j.
                    let (a, b) = (&self.exemplars[i], &self.exemplars[j]);
                    let r = a.radius().max(b.radius() + a.distance(b) + SLACK);
                    let better = match best {
                        None => true,
                        Some((br, bi, bj)) => match r.total_cmp(&br) {
                            Ordering::Less => true,
                            Ordering::Greater => false,
                            Ordering::Equal => {
                                let cur = (&self.exemplars[bi].args, &self.exemplars[bj].args);
                                (&a.args, &b.args) < cur
                            }
                        },
                    };
                    if better {
                        best = Some((r, i, j));
                    }
                }
            }
            let Some((r, keep, drop)) = best else {
                return;
            };
            let kept = &self.exemplars[keep];
            let merged = Exemplar::new(
                kept.args.clone(),
                kept.vector.clone(),
                similarity_for_radius(r),
            );
            self.exemplars[keep] = merged;
            self.exemplars.remove(drop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Box<[f32]> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn merging_the_closest_pair_keeps_everything_covered() {
        let mut leaf = ArgLeaf::default();
        let vs = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.9, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
        ];
        for (i, v) in vs.iter().enumerate() {
            leaf.add(Exemplar::new(format!("e{i}").into(), v.clone(), 0.95), 2);
        }
        assert_eq!(leaf.exemplars.len(), 2);
        for (i, v) in vs.iter().enumerate() {
            let shape = ArgShape::of(&format!("e{i}"));
            assert!(leaf.nearest(v, &shape).covered);
        }
    }

    #[test]
    fn similarity_for_radius_rounds_towards_wider_balls() {
        for r in [0.0, 0.1, 0.3176, 1.0, 2.0, 3.0] {
            let m = similarity_for_radius(r);
            assert!(radius(m) >= r, "r={r} m={m}");
        }
        assert_eq!(similarity_for_radius(4.0), -1.0);
    }

    #[test]
    fn the_exact_cache_is_bounded_and_keeps_the_smallest_hashes() {
        let mut leaf = ArgLeaf::default();
        for i in 0..(KNOWN_CACHE_CAP as u64 * 2) {
            leaf.remember(u64::MAX - i, &i.to_string());
        }
        assert_eq!(leaf.known.len(), KNOWN_CACHE_CAP);
        assert!(leaf.knows_exact(u64::MAX - 2047, "2047"));
        assert!(!leaf.knows_exact(u64::MAX, "0"));
    }
}
