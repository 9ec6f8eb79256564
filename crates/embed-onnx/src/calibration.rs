//! The labelled calibration set and the threshold that separates it.

use kestrel_embed::{Error, Result};

/// The committed calibration set (`calibration/pairs.tsv` in this crate).
pub const CALIBRATION_TSV: &str = include_str!("../calibration/pairs.tsv");
/// The first held-out set (`calibration/holdout.tsv`). It was held out until
/// session 2's measure was fixed; since session 3 it is part of the tuning
/// set ([`tuning_pairs`]), and [`HOLDOUT2_TSV`] is what is held out.
pub const HOLDOUT_TSV: &str = include_str!("../calibration/holdout.tsv");
/// The held-out set (`calibration/holdout2.tsv`): labelled before any score
/// was computed for it and never used to choose a parameter or threshold.
pub const HOLDOUT2_TSV: &str = include_str!("../calibration/holdout2.tsv");
/// The third held-out set (`calibration/holdout3.tsv`), written for the
/// comparison of a second model with the default one and committed before
/// either model scored it.
pub const HOLDOUT3_TSV: &str = include_str!("../calibration/holdout3.tsv");

/// Two argument strings and whether they are the same behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledPair {
    /// True: the same behaviour (should match); false: different (should not).
    pub same: bool,
    /// Workload family, for reports (`jvm`, `nginx`, `miner`, …).
    pub family: String,
    /// First command line.
    pub a: String,
    /// Second command line.
    pub b: String,
}

/// Parses the calibration format: one pair per line,
/// `same|diff <TAB> family <TAB> a <TAB> b`; `#` starts a comment line.
pub fn parse_pairs(text: &str) -> Result<Vec<LabelledPair>> {
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [label, family, a, b] = fields[..] else {
            return Err(Error::Config(format!(
                "calibration line {}: want 4 tab-separated fields, got {}",
                n + 1,
                fields.len()
            )));
        };
        let same = match label {
            "same" => true,
            "diff" => false,
            other => {
                return Err(Error::Config(format!(
                    "calibration line {}: label {other:?} is not same/diff",
                    n + 1
                )))
            }
        };
        pairs.push(LabelledPair {
            same,
            family: family.to_string(),
            a: a.to_string(),
            b: b.to_string(),
        });
    }
    Ok(pairs)
}

/// The committed calibration set, parsed.
pub fn calibration_pairs() -> Result<Vec<LabelledPair>> {
    parse_pairs(CALIBRATION_TSV)
}

/// The first held-out set (now tuning), parsed.
pub fn holdout_pairs() -> Result<Vec<LabelledPair>> {
    parse_pairs(HOLDOUT_TSV)
}

/// The tuning set: `pairs.tsv` followed by `holdout.tsv`. Thresholds and
/// weights are chosen on it.
pub fn tuning_pairs() -> Result<Vec<LabelledPair>> {
    let mut pairs = calibration_pairs()?;
    pairs.extend(holdout_pairs()?);
    Ok(pairs)
}

/// The held-out set (`holdout2.tsv`), parsed.
pub fn holdout2_pairs() -> Result<Vec<LabelledPair>> {
    parse_pairs(HOLDOUT2_TSV)
}

/// The third held-out set (`holdout3.tsv`), parsed.
pub fn holdout3_pairs() -> Result<Vec<LabelledPair>> {
    parse_pairs(HOLDOUT3_TSV)
}

impl LabelledPair {
    /// The two argument strings as a profile sees them: everything after
    /// `argv[0]` (the agent reports `argv[1..]`; the program is the leaf).
    pub fn arguments(&self) -> (&str, &str) {
        (after_argv0(&self.a), after_argv0(&self.b))
    }
}

/// The text after the first word (`argv[0]`), trimmed; empty when there is none.
fn after_argv0(line: &str) -> &str {
    let line = line.trim_start();
    line.split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest.trim_start())
}

/// Summary of a set of similarity scores.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Distribution {
    /// Number of scores.
    pub n: usize,
    /// Smallest.
    pub min: f32,
    /// 5th percentile (nearest rank).
    pub p05: f32,
    /// Median (nearest rank).
    pub median: f32,
    /// Mean.
    pub mean: f32,
    /// 95th percentile (nearest rank).
    pub p95: f32,
    /// Largest.
    pub max: f32,
}

impl Distribution {
    /// Summarises `scores` (NaNs are ignored).
    pub fn of(scores: &[f32]) -> Self {
        let mut s: Vec<f32> = scores.iter().copied().filter(|x| !x.is_nan()).collect();
        if s.is_empty() {
            return Self::default();
        }
        s.sort_by(f32::total_cmp);
        let rank = |q: f32| s[((q * s.len() as f32).ceil() as usize).clamp(1, s.len()) - 1];
        Self {
            n: s.len(),
            min: s[0],
            p05: rank(0.05),
            median: rank(0.5),
            mean: s.iter().sum::<f32>() / s.len() as f32,
            p95: rank(0.95),
            max: s[s.len() - 1],
        }
    }
}

/// The outcome of calibrating a threshold on labelled scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// Scores of same-behaviour pairs.
    pub same: Distribution,
    /// Scores of different-behaviour pairs.
    pub different: Distribution,
    /// The threshold: a pair matches when its score is ≥ this.
    pub threshold: f32,
    /// Pairs on the wrong side of the threshold.
    pub errors: usize,
    /// Distance from the threshold to the nearest correctly classified score
    /// on either side (when `errors` is 0: half the gap between the classes).
    pub margin: f32,
}

/// Picks the threshold that misclassifies the fewest pairs; among equally
/// good ones, the middle of the widest gap between neighbouring scores.
pub fn calibrate(same: &[f32], different: &[f32]) -> Calibration {
    let mut all: Vec<(f32, bool)> = same
        .iter()
        .map(|&s| (s, true))
        .chain(different.iter().map(|&d| (d, false)))
        .collect();
    all.retain(|(s, _)| !s.is_nan());
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // A threshold between all[i-1] and all[i]: scores below are "different".
    // errors(i) = same pairs below + different pairs at or above.
    let total_diff = all.iter().filter(|(_, s)| !s).count();
    let (mut same_below, mut diff_below) = (0usize, 0usize);
    let mut best: Option<(usize, f32, f32)> = None; // (errors, gap, threshold)
    for i in 0..=all.len() {
        if i > 0 {
            if all[i - 1].1 {
                same_below += 1;
            } else {
                diff_below += 1;
            }
        }
        let errors = same_below + (total_diff - diff_below);
        let lo = if i == 0 { -1.0 } else { all[i - 1].0 };
        let hi = if i == all.len() { 1.0 } else { all[i].0 };
        let (gap, threshold) = (hi - lo, (lo + hi) / 2.0);
        let better = match best {
            None => true,
            Some((e, g, _)) => errors < e || (errors == e && gap > g),
        };
        if better {
            best = Some((errors, gap, threshold));
        }
    }
    let (errors, gap, threshold) = best.unwrap_or((0, 2.0, 0.0));
    Calibration {
        same: Distribution::of(same),
        different: Distribution::of(different),
        threshold,
        errors,
        margin: gap / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_set_parses_and_has_both_labels_in_every_family() {
        let pairs = calibration_pairs().unwrap();
        assert!(pairs.len() >= 60, "{} pairs", pairs.len());
        let mut families: Vec<&str> = pairs.iter().map(|p| p.family.as_str()).collect();
        families.sort_unstable();
        families.dedup();
        for family in [
            "jvm",
            "nginx",
            "python",
            "node",
            "shell",
            "package",
            "miner",
            "revshell",
            "curl-pipe",
        ] {
            assert!(families.contains(&family), "family {family} missing");
        }
        assert!(pairs.iter().any(|p| p.same) && pairs.iter().any(|p| !p.same));
    }

    /// Checks a held-out set: at least `min` pairs and `min_each` of each
    /// label, one program per pair, and no pair (in either order) in `tuning`.
    fn check_held_out(set: &[LabelledPair], tuning: &[LabelledPair], min: usize, min_each: usize) {
        assert!(set.len() >= min, "{} pairs", set.len());
        assert!(set.iter().filter(|p| p.same).count() >= min_each);
        assert!(set.iter().filter(|p| !p.same).count() >= min_each);
        let program = |line: &str| line.split_whitespace().next().map(str::to_owned);
        for p in set {
            assert!(
                !tuning
                    .iter()
                    .any(|t| (t.a == p.a && t.b == p.b) || (t.a == p.b && t.b == p.a)),
                "{p:?} is also in the tuning set"
            );
            assert_eq!(program(&p.a), program(&p.b), "{p:?}: one program per pair");
        }
    }

    #[test]
    fn the_first_held_out_set_is_disjoint_from_pairs_tsv() {
        check_held_out(
            &holdout_pairs().unwrap(),
            &calibration_pairs().unwrap(),
            40,
            20,
        );
    }

    #[test]
    fn the_second_held_out_set_is_disjoint_from_the_tuning_set() {
        check_held_out(&holdout2_pairs().unwrap(), &tuning_pairs().unwrap(), 60, 30);
    }

    #[test]
    fn the_third_held_out_set_is_disjoint_from_every_other_set() {
        let mut others = tuning_pairs().unwrap();
        others.extend(holdout2_pairs().unwrap());
        check_held_out(&holdout3_pairs().unwrap(), &others, 40, 20);
    }

    #[test]
    fn arguments_drop_argv0_as_the_agent_does() {
        let p = LabelledPair {
            same: true,
            family: "x".into(),
            a: "java -jar app.jar".into(),
            b: "  npm".into(),
        };
        assert_eq!(p.arguments(), ("-jar app.jar", ""));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let err = parse_pairs("# c\nsame\tjvm\tonly three").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_pairs("maybe\tjvm\ta\tb").unwrap_err();
        assert!(err.to_string().contains("same/diff"), "{err}");
    }

    #[test]
    fn separable_scores_get_the_middle_of_the_gap() {
        let c = calibrate(&[0.9, 0.8, 0.95], &[0.2, 0.5, 0.4]);
        assert_eq!(c.errors, 0);
        assert!((c.threshold - 0.65).abs() < 1e-6);
        assert!((c.margin - 0.15).abs() < 1e-6);
        assert_eq!(c.same.min, 0.8);
        assert_eq!(c.different.max, 0.5);
    }

    #[test]
    fn overlapping_scores_minimise_the_errors() {
        let c = calibrate(&[0.9, 0.8, 0.45], &[0.2, 0.5, 0.4]);
        assert_eq!(c.errors, 1);
        assert!(c.threshold > 0.5 && c.threshold < 0.8);
    }

    #[test]
    fn distributions_use_nearest_rank_percentiles() {
        let scores: Vec<f32> = (1..=100).map(|i| i as f32 / 100.0).collect();
        let d = Distribution::of(&scores);
        assert_eq!((d.n, d.min, d.max), (100, 0.01, 1.0));
        assert_eq!((d.p05, d.median, d.p95), (0.05, 0.5, 0.95));
        assert_eq!(Distribution::of(&[]).n, 0);
    }
}
