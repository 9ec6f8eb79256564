//! The rules engine: YAML rules compiled once into per-field regex sets and
//! exact-match tables, evaluated against a candidate in well under a
//! microsecond.
//!
//! Each field's tests are grouped into *units*: one exact-match table and one
//! multi-pattern regex (all the field's globs, regexes and substring tests
//! together) per field, plus one unit per CIDR or port test. Rule trees are
//! evaluated with short-circuit `all`/`any`; the first time a leaf is needed
//! its whole unit runs once over the field's values and marks every leaf of
//! that unit in a bitset, so a field is scanned at most once per candidate
//! and units behind a failed gate (`exe_name: nc` before `arg: -e`) never
//! run. Nothing is allocated unless a regex matches or a rule hits.

mod field;
mod spec;

use ipnet::IpNet;
// the small exact-match tables: the keys are the rule author's, not an
// attacker's choice (lookups with attacker strings cannot grow the table)
use kestrel_events::hash::FnvMap;
use regex_automata::meta;
use regex_automata::{Input, MatchKind, PatternSet};

use crate::candidate::CandidateAlert;
use crate::error::{Error, Result};
use field::{Field, FieldKind};

pub use spec::{ConditionSpec, OneOrMany, PortSpec, RuleAction, RuleFile, RuleSpec};

/// The default rule pack shipped with Kestrel (`crates/scoring/rules/default.yaml`).
pub const DEFAULT_PACK_YAML: &str = include_str!("../../rules/default.yaml");

/// The field names a rule may test, for docs and validation messages.
pub fn rule_field_names() -> impl Iterator<Item = &'static str> {
    field::FIELDS.iter().map(|(n, _)| *n)
}

/// A compiled rule's metadata.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    description: String,
    score: f64,
    tags: Vec<String>,
    action: RuleAction,
    recommendation: Option<String>,
    source: String,
    /// Index of the rule's first test in [`RuleSet::program`].
    entry: u32,
}

impl Rule {
    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// What it detects.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// Confidence of a hit, 0..=100.
    pub fn score(&self) -> f64 {
        self.score
    }
    /// MITRE ATT&CK ids.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
    /// The recommended action.
    pub fn action(&self) -> RuleAction {
        self.action
    }
    /// Free-text advice, if any.
    pub fn recommendation(&self) -> Option<&str> {
        self.recommendation.as_deref()
    }
    /// The file the rule came from (`default` for the default pack).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A condition tree as parsed; compiled into a branching program.
#[derive(Debug, Clone)]
enum Node {
    Leaf(u32),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

/// One test of the branching program: evaluate a leaf, then jump to `on_true`
/// or `on_false` (another test's index, or [`ACCEPT`] / [`REJECT`]).
///
/// `all`/`any`/`not` compile into jumps the usual way (short-circuit control
/// flow), so evaluating a rule is a tight loop over leaves, not a tree walk.
#[derive(Debug, Clone, Copy)]
struct Test {
    leaf: u32,
    unit: u32,
    on_true: u32,
    on_false: u32,
}

const ACCEPT: u32 = u32::MAX;
const REJECT: u32 = u32::MAX - 1;

/// Emits `n` so that it jumps to `t` when true and `f` when false; returns
/// its entry. Children are emitted last-first so their targets are known.
fn emit(n: &Node, t: u32, f: u32, prog: &mut Vec<Test>) -> u32 {
    match n {
        Node::Leaf(l) => {
            prog.push(Test {
                leaf: *l,
                unit: 0,
                on_true: t,
                on_false: f,
            });
            (prog.len() - 1) as u32
        }
        Node::All(v) => v.iter().rev().fold(t, |next, c| emit(c, next, f, prog)),
        Node::Any(v) => v.iter().rev().fold(f, |next, c| emit(c, t, next, prog)),
        Node::Not(c) => emit(c, f, t, prog),
    }
}

/// One group of tests on one field, run together the first time any of its
/// leaves is needed.
#[derive(Debug)]
struct Unit {
    field: Field,
    kind: UnitKind,
}

#[derive(Debug)]
enum UnitKind {
    Exact(FnvMap<Box<str>, Vec<u32>>),
    Regex {
        /// Leftmost-first: the cheapest "does anything match" test.
        any: meta::Regex,
        /// All-matches semantics, run only when `any` matched, to learn
        /// which patterns did.
        which: meta::Regex,
        leaf_of_pattern: Vec<u32>,
    },
    Cidr {
        leaf: u32,
        nets: Vec<IpNet>,
    },
    Ports {
        leaf: u32,
        ranges: Vec<(u16, u16)>,
    },
}

impl Unit {
    #[inline]
    fn run<B: Bits>(&self, c: &CandidateAlert, bits: &mut B) {
        match &self.kind {
            UnitKind::Exact(map) => self.field.for_each_text(c, |v| {
                if let Some(leaves) = map.get(v) {
                    for l in leaves {
                        bits.set(*l);
                    }
                }
            }),
            UnitKind::Regex {
                any,
                which,
                leaf_of_pattern,
            } => self.field.for_each_text(c, |v| {
                let input = Input::new(v);
                if !any.is_match(input.clone()) {
                    return;
                }
                if let [only] = leaf_of_pattern.as_slice() {
                    bits.set(*only);
                    return;
                }
                let mut ps = PatternSet::new(which.pattern_len());
                which.which_overlapping_matches(&input, &mut ps);
                for p in ps.iter() {
                    if let Some(l) = leaf_of_pattern.get(p.as_usize()) {
                        bits.set(*l);
                    }
                }
            }),
            UnitKind::Cidr { leaf, nets } => {
                if Field::any_addr(c, |a| nets.iter().any(|n| n.contains(a))) {
                    bits.set(*leaf);
                }
            }
            UnitKind::Ports { leaf, ranges } => {
                if Field::any_port(c, |p| {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p))
                }) {
                    bits.set(*leaf);
                }
            }
        }
    }
}

/// Evaluation state for one candidate.
struct Eval<'a, B> {
    set: &'a RuleSet,
    c: &'a CandidateAlert,
    matched: B,
    done: B,
}

impl<B: Bits> Eval<'_, B> {
    #[inline(never)]
    fn run_unit(&mut self, unit: u32) {
        self.done.set(unit);
        if let Some(u) = self.set.units.get(unit as usize) {
            u.run(self.c, &mut self.matched);
        }
    }

    /// Runs the branching program from `entry` to a verdict.
    #[inline]
    fn rule(&mut self, entry: u32) -> bool {
        let mut pc = entry;
        while let Some(t) = self.set.program.get(pc as usize) {
            if !self.done.get(t.unit) {
                self.run_unit(t.unit);
            }
            // Branch-free select: the outcome is data-dependent.
            pc = [t.on_false, t.on_true][usize::from(self.matched.get(t.leaf))];
        }
        pc == ACCEPT
    }
}

/// A bitset of leaves or units: a fixed inline array for packs of up to
/// 512 leaves (every realistic pack), a vector beyond. Evaluation is
/// monomorphised over both, so the hot loop has no dispatch.
trait Bits {
    fn set(&mut self, i: u32);
    fn get(&self, i: u32) -> bool;
}

const INLINE_BITS: usize = 512;

impl Bits for [u64; INLINE_BITS / 64] {
    #[inline(always)]
    fn set(&mut self, i: u32) {
        if let Some(x) = self.get_mut((i / 64) as usize) {
            *x |= 1 << (i % 64);
        }
    }
    #[inline(always)]
    fn get(&self, i: u32) -> bool {
        <[u64]>::get(self, (i / 64) as usize).is_some_and(|x| x & (1 << (i % 64)) != 0)
    }
}

impl Bits for Vec<u64> {
    #[inline(always)]
    fn set(&mut self, i: u32) {
        if let Some(x) = self.get_mut((i / 64) as usize) {
            *x |= 1 << (i % 64);
        }
    }
    #[inline(always)]
    fn get(&self, i: u32) -> bool {
        <[u64]>::get(self, (i / 64) as usize).is_some_and(|x| x & (1 << (i % 64)) != 0)
    }
}

/// A compiled set of rules.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    units: Vec<Unit>,
    leaf_count: usize,
    program: Vec<Test>,
}

/// The result of evaluating a [`RuleSet`] against one candidate.
#[derive(Debug, Clone)]
pub struct RuleMatches<'a> {
    set: &'a RuleSet,
    hits: Vec<u32>,
    score: f64,
}

impl<'a> RuleMatches<'a> {
    /// Whether any rule hit.
    pub fn is_hit(&self) -> bool {
        !self.hits.is_empty()
    }

    /// The combined rules score, 0..=100: noisy-OR of the hit rules' scores
    /// (`100 · (1 − Π(1 − sᵢ/100))`), so one rule gives its own score and
    /// independent hits reinforce each other without passing 100.
    pub fn score(&self) -> f64 {
        self.score
    }

    /// The rules that hit, in rule-file order.
    pub fn rules(&self) -> impl Iterator<Item = &'a Rule> + '_ {
        self.hits
            .iter()
            .filter_map(|i| self.set.rules.get(*i as usize))
    }

    /// The ids of the rules that hit.
    pub fn ids(&self) -> Vec<&'a str> {
        self.rules().map(Rule::id).collect()
    }
}

impl RuleSet {
    /// A builder; nothing is compiled until [`RuleSetBuilder::build`].
    pub fn builder() -> RuleSetBuilder {
        RuleSetBuilder::default()
    }

    /// The default pack alone.
    pub fn default_pack() -> Result<Self> {
        Self::builder().default_pack().build()
    }

    /// The compiled rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    #[inline]
    fn run<B: Bits>(&self, mut ev: Eval<'_, B>) -> (Vec<u32>, f64) {
        let mut hits = Vec::new();
        let mut miss = 1.0;
        for (i, r) in self.rules.iter().enumerate() {
            if ev.rule(r.entry) {
                hits.push(i as u32);
                miss *= 1.0 - r.score / 100.0;
            }
        }
        (hits, miss)
    }

    /// Evaluates every rule against the candidate.
    #[inline]
    pub fn evaluate<'a>(&'a self, c: &CandidateAlert) -> RuleMatches<'a> {
        let (hits, miss) = if self.leaf_count <= INLINE_BITS && self.units.len() <= INLINE_BITS {
            const ZERO: [u64; INLINE_BITS / 64] = [0; INLINE_BITS / 64];
            self.run(Eval {
                set: self,
                c,
                matched: ZERO,
                done: ZERO,
            })
        } else {
            self.run(Eval {
                set: self,
                c,
                matched: vec![0u64; self.leaf_count.div_ceil(64)],
                done: vec![0u64; self.units.len().div_ceil(64)],
            })
        };
        RuleMatches {
            set: self,
            hits,
            score: (1.0 - miss) * 100.0,
        }
    }
}

/// Collects rule files, then compiles them into a [`RuleSet`].
///
/// Later files override earlier ones rule by rule: a rule with an id that
/// was already defined replaces it in place (`enabled: false` removes it).
#[derive(Debug, Default)]
pub struct RuleSetBuilder {
    files: Vec<(String, String)>,
    default_pack: bool,
}

impl RuleSetBuilder {
    /// Starts with the default pack.
    pub fn default_pack(mut self) -> Self {
        self.default_pack = true;
        self
    }

    /// Adds a rule file's YAML text; `source_name` names it in errors and in
    /// [`Rule::source`].
    pub fn add_yaml(mut self, source_name: impl Into<String>, yaml: impl Into<String>) -> Self {
        self.files.push((source_name.into(), yaml.into()));
        self
    }

    /// Parses and compiles everything.
    pub fn build(self) -> Result<RuleSet> {
        let mut specs: Vec<(String, RuleSpec)> = Vec::new();
        let mut sources: Vec<(String, &str)> = Vec::new();
        if self.default_pack {
            sources.push(("default".into(), DEFAULT_PACK_YAML));
        }
        for (n, t) in &self.files {
            sources.push((n.clone(), t.as_str()));
        }
        for (name, text) in sources {
            let file = parse_rule_file(&name, text)?;
            for r in file.rules {
                match specs.iter_mut().find(|(_, s)| s.id == r.id) {
                    Some(slot) => *slot = (name.clone(), r),
                    None => specs.push((name.clone(), r)),
                }
            }
        }
        compile(specs.into_iter().filter(|(_, s)| s.enabled).collect())
    }
}

/// Parses one rule file without compiling it.
pub fn parse_rule_file(source_name: &str, yaml: &str) -> Result<RuleFile> {
    serde_saphyr::from_str::<RuleFile>(yaml).map_err(|e| Error::RuleSyntax {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })
}

/// A text field's tests while compiling: exact values and regex patterns,
/// each with its leaf.
#[derive(Default)]
struct TextSlot {
    exact: FnvMap<Box<str>, Vec<u32>>,
    patterns: Vec<(String, u32)>,
}

#[derive(Default)]
struct Compiler {
    leaf_count: u32,
    /// Per text field: exact values and regex patterns with their leaves.
    text: Vec<(Field, TextSlot)>,
    net: Vec<(Field, UnitKind)>,
}

impl Compiler {
    fn new_leaf(&mut self) -> u32 {
        let l = self.leaf_count;
        self.leaf_count += 1;
        l
    }

    fn text_slot(&mut self, f: Field) -> &mut TextSlot {
        let idx = match self.text.iter().position(|(g, _)| *g == f) {
            Some(i) => i,
            None => {
                self.text.push((f, TextSlot::default()));
                self.text.len() - 1
            }
        };
        &mut self.text[idx].1
    }

    fn condition(&mut self, c: &ConditionSpec, depth: usize) -> Result<Node, String> {
        if depth > 32 {
            return Err("conditions nested deeper than 32 levels".into());
        }
        let structural = [
            c.all.is_some(),
            c.any.is_some(),
            c.not.is_some(),
            c.field.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if structural != 1 {
            return Err("a condition needs exactly one of `all`, `any`, `not`, `field`".into());
        }
        if let Some(v) = &c.all {
            return self.list(v, depth).map(Node::All);
        }
        if let Some(v) = &c.any {
            return self.list(v, depth).map(Node::Any);
        }
        if let Some(n) = &c.not {
            return Ok(Node::Not(Box::new(self.condition(n, depth + 1)?)));
        }
        let name = c.field.as_deref().unwrap_or_default();
        let field = Field::parse(name).ok_or_else(|| {
            format!(
                "unknown field {name:?} (known: {})",
                rule_field_names().collect::<Vec<_>>().join(", ")
            )
        })?;
        self.leaf(field, name, c).map(Node::Leaf)
    }

    fn list(&mut self, v: &[ConditionSpec], depth: usize) -> Result<Vec<Node>, String> {
        if v.is_empty() {
            return Err("`all`/`any` needs at least one condition".into());
        }
        v.iter().map(|c| self.condition(c, depth + 1)).collect()
    }

    fn leaf(&mut self, field: Field, name: &str, c: &ConditionSpec) -> Result<u32, String> {
        let ops: [(&str, bool); 8] = [
            ("equals", c.equals.is_some()),
            ("glob", c.glob.is_some()),
            ("regex", c.regex.is_some()),
            ("contains", c.contains.is_some()),
            ("starts_with", c.starts_with.is_some()),
            ("ends_with", c.ends_with.is_some()),
            ("cidr", c.cidr.is_some()),
            ("ports", c.ports.is_some()),
        ];
        let set: Vec<&str> = ops.iter().filter(|(_, b)| *b).map(|(n, _)| *n).collect();
        let [op] = set.as_slice() else {
            return Err(format!(
                "field {name:?} needs exactly one operator (equals, glob, regex, contains, starts_with, ends_with, cidr, ports), got {set:?}"
            ));
        };
        let leaf = self.new_leaf();
        match (field.kind(), *op) {
            (FieldKind::Addr, "cidr" | "equals") => {
                let vals = c
                    .cidr
                    .as_ref()
                    .or(c.equals.as_ref())
                    .map(OneOrMany::as_slice)
                    .unwrap_or_default();
                let nets = vals
                    .iter()
                    .map(|s| {
                        s.parse::<IpNet>()
                            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                            .map_err(|_| format!("bad network or address {s:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                non_empty(&nets, op)?;
                self.net.push((field, UnitKind::Cidr { leaf, nets }));
            }
            (FieldKind::Port, "ports" | "equals") => {
                let ranges = match (&c.ports, &c.equals) {
                    (Some(p), _) => p
                        .as_slice()
                        .iter()
                        .map(PortSpec::range)
                        .collect::<Result<Vec<_>, _>>()?,
                    (None, Some(e)) => e
                        .as_slice()
                        .iter()
                        .map(|s| PortSpec::Range(s.clone()).range())
                        .collect::<Result<Vec<_>, _>>()?,
                    (None, None) => Vec::new(),
                };
                non_empty(&ranges, op)?;
                self.net.push((field, UnitKind::Ports { leaf, ranges }));
            }
            (FieldKind::Text, "cidr" | "ports") | (FieldKind::Addr | FieldKind::Port, _) => {
                return Err(format!("operator `{op}` does not apply to field {name:?}"));
            }
            (FieldKind::Text, "equals") if !c.ignore_case => {
                let vals = c
                    .equals
                    .as_ref()
                    .map(OneOrMany::as_slice)
                    .unwrap_or_default();
                non_empty(vals, op)?;
                let slot = self.text_slot(field);
                for v in vals {
                    slot.exact.entry(v.as_str().into()).or_default().push(leaf);
                }
            }
            (FieldKind::Text, _) => {
                let pattern = text_pattern(c, op)?;
                // Validate alone first, for an error that names this pattern.
                meta::Regex::new(&pattern).map_err(|e| format!("bad {op} pattern: {e}"))?;
                self.text_slot(field).patterns.push((pattern, leaf));
            }
        }
        Ok(leaf)
    }
}

fn non_empty<T>(v: &[T], op: &str) -> Result<(), String> {
    if v.is_empty() {
        Err(format!("`{op}` needs at least one value"))
    } else {
        Ok(())
    }
}

/// One regex (an alternation of the values) for a text operator.
fn text_pattern(c: &ConditionSpec, op: &str) -> Result<String, String> {
    let vals = match op {
        "equals" => &c.equals,
        "glob" => &c.glob,
        "regex" => &c.regex,
        "contains" => &c.contains,
        "starts_with" => &c.starts_with,
        _ => &c.ends_with,
    }
    .as_ref()
    .map(OneOrMany::as_slice)
    .unwrap_or_default();
    non_empty(vals, op)?;
    let mut alts = Vec::with_capacity(vals.len());
    for v in vals {
        alts.push(match op {
            "equals" => format!("^{}$", regex::escape(v)),
            "glob" => kestrel_events::glob::to_regex(v).map_err(|e| e.to_string())?,
            "regex" => {
                if v.is_empty() {
                    return Err("empty regex".into());
                }
                v.clone()
            }
            "contains" => regex::escape(v),
            "starts_with" => format!("^{}", regex::escape(v)),
            _ => format!("{}$", regex::escape(v)),
        });
    }
    let body = alts
        .iter()
        .map(|a| format!("(?:{a})"))
        .collect::<Vec<_>>()
        .join("|");
    Ok(if c.ignore_case {
        format!("(?i:{body})")
    } else {
        body
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn valid_tag(t: &str) -> bool {
    // T1234, T1234.001, TA0001
    let rest = t.strip_prefix("TA").or_else(|| t.strip_prefix('T'));
    match rest {
        Some(r) => {
            let (main, sub) = r.split_once('.').unwrap_or((r, ""));
            main.len() == 4
                && main.bytes().all(|b| b.is_ascii_digit())
                && (sub.is_empty()
                    || (sub.len() == 3
                        && sub.bytes().all(|b| b.is_ascii_digit())
                        && !t.starts_with("TA")))
        }
        None => false,
    }
}

fn compile(specs: Vec<(String, RuleSpec)>) -> Result<RuleSet> {
    let mut comp = Compiler::default();
    let mut rules = Vec::with_capacity(specs.len());
    let mut program = Vec::new();
    for (source, s) in specs {
        let err = |message: String| Error::RuleCompile {
            rule_id: s.id.clone(),
            message,
        };
        if !valid_id(&s.id) {
            return Err(err(
                "id must be lower-case letters, digits, '-' or '.'".into()
            ));
        }
        if !(0.0..=100.0).contains(&s.score) {
            return Err(err(format!("score {} outside 0..=100", s.score)));
        }
        if let Some(t) = s.tags.iter().find(|t| !valid_tag(t)) {
            return Err(err(format!(
                "tag {t:?} is not a MITRE ATT&CK id (T1234, T1234.001, TA0001)"
            )));
        }
        let tree = comp.condition(&s.when, 0).map_err(err)?;
        let entry = emit(&tree, ACCEPT, REJECT, &mut program);
        rules.push(Rule {
            id: s.id,
            description: s.description,
            score: s.score,
            tags: s.tags,
            action: s.action,
            recommendation: s.recommendation,
            source,
            entry,
        });
    }
    let mut units = Vec::new();
    let mut unit_of_leaf = vec![0u32; comp.leaf_count as usize];
    let mut assign = |unit: u32, leaf: u32| {
        if let Some(slot) = unit_of_leaf.get_mut(leaf as usize) {
            *slot = unit;
        }
    };
    for (field, TextSlot { exact, patterns }) in comp.text {
        if !exact.is_empty() {
            let u = units.len() as u32;
            exact.values().flatten().for_each(|l| assign(u, *l));
            units.push(Unit {
                field,
                kind: UnitKind::Exact(exact),
            });
        }
        if !patterns.is_empty() {
            let pats: Vec<&str> = patterns.iter().map(|(p, _)| p.as_str()).collect();
            let build = |kind: MatchKind| {
                meta::Regex::builder()
                    .configure(meta::Regex::config().match_kind(kind))
                    .build_many(&pats)
                    .map_err(|e| Error::RuleCompile {
                        rule_id: "(regex set)".into(),
                        message: format!("combined regex for a field failed: {e}"),
                    })
            };
            let (any, which) = (build(MatchKind::LeftmostFirst)?, build(MatchKind::All)?);
            let u = units.len() as u32;
            patterns.iter().for_each(|(_, l)| assign(u, *l));
            units.push(Unit {
                field,
                kind: UnitKind::Regex {
                    any,
                    which,
                    leaf_of_pattern: patterns.iter().map(|(_, l)| *l).collect(),
                },
            });
        }
    }
    for (field, kind) in comp.net {
        let u = units.len() as u32;
        if let UnitKind::Cidr { leaf, .. } | UnitKind::Ports { leaf, .. } = &kind {
            assign(u, *leaf);
        }
        units.push(Unit { field, kind });
    }
    for t in &mut program {
        t.unit = unit_of_leaf.get(t.leaf as usize).copied().unwrap_or(0);
    }
    Ok(RuleSet {
        rules,
        units,
        leaf_count: unit_of_leaf.len(),
        program,
    })
}

#[cfg(test)]
mod tests;
