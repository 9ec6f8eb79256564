//! A workload's profile: the three tries, learning, matching, merging, digests.

use std::time::Duration;

use kestrel_api::{ProcessKeys, ProfileSource};
use kestrel_embed::{ArgShape, Embedder};

use crate::config::{Mode, ProfileConfig};
use crate::convergence::{Convergence, ConvergenceStatus, Phase, Transition};
use crate::digest::{itoa_buf, port_key, stable_hash, Digest, DigestHasher};
use crate::error::{Error, Result};
use crate::event::{
    ActivityClass, Change, Event, FileEvent, Learned, Level, MatchOutcome, NetworkEvent, Peer,
    ProcessEvent,
};
use crate::exemplar::{ArgLeaf, Exemplar};
use crate::policy::{FilePolicy, NetworkPolicy, ProcessPolicy};
use crate::segment::{path_segments, RELATIVE};
use crate::trie::{End, Found, Inserted, NodeId, OwnedSeg, Seg, Trie, Walk};

/// The answer of [`Profile::observe`].
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// What matching said (before learning, when the event was learned). In
    /// [`Phase::Detecting`] a non-known answer is an anomaly signal.
    pub outcome: MatchOutcome,
    /// What learning changed ([`Change::None`] while detecting).
    pub change: Change,
    /// Phase changes caused by this event or the passing of time.
    pub transitions: Vec<Transition>,
}

/// Sizes of a profile (for printer columns and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileStats {
    /// Known paths (branches) over the three tries.
    pub branches: usize,
    /// Argument exemplars over all process leaves.
    pub exemplars: usize,
    /// Trie nodes over the three tries.
    pub nodes: usize,
}

/// A workload's learned behaviour and its convergence state.
#[derive(Debug)]
pub struct Profile {
    pub(crate) config: ProfileConfig,
    pub(crate) model_id: String,
    pub(crate) process: Trie<ProcessPolicy>,
    pub(crate) file: Trie<FilePolicy>,
    pub(crate) network: Trie<NetworkPolicy>,
    pub(crate) convergence: Convergence,
    /// Learned, or loaded from a promoted (authored) object; written back
    /// the same way.
    pub(crate) source: ProfileSource,
    /// What the process trie's executable level holds: full paths, or
    /// basenames in a profile written before paths (matched by basename
    /// until it is relearned).
    pub(crate) process_keys: ProcessKeys,
}

type ProcessSegs<'a> = [Seg<'a>; 3];

fn process_segs<'a>(e: &ProcessEvent<'a>, keys: ProcessKeys) -> ProcessSegs<'a> {
    let exe = match keys {
        ProcessKeys::Path => e.exe,
        ProcessKeys::Name => e.exe.rsplit(|&b| b == b'/').next().unwrap_or(e.exe),
    };
    [Seg::Text(e.image), Seg::Text(e.parent), Seg::Text(exe)]
}

fn file_head<'a>(e: &FileEvent<'a>) -> [Seg<'a>; 3] {
    [
        Seg::Text(e.image),
        Seg::Text(e.process),
        Seg::Text(e.access.as_str().as_bytes()),
    ]
}

impl Profile {
    /// An empty profile. `model_id` is the embedder's model (see
    /// [`Embedder::model_id`]); `now` starts the learning clock.
    pub fn new(config: ProfileConfig, model_id: impl Into<String>, now: Duration) -> Result<Self> {
        config.validate()?;
        let c = &config.compaction;
        Ok(Profile {
            process: Trie::new(ProcessPolicy::new(c)),
            file: Trie::new(FilePolicy::new(c)),
            network: Trie::new(NetworkPolicy::new(c)),
            convergence: Convergence::new(config.learning.clone(), config.mode, now),
            source: ProfileSource::Learned,
            process_keys: ProcessKeys::Path,
            model_id: model_id.into(),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ProfileConfig {
        &self.config
    }

    /// What the process trie's executable level holds.
    pub fn process_keys(&self) -> ProcessKeys {
        self.process_keys
    }

    /// The embedding model the exemplars were embedded with.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// `Learned`, or `Promoted` when loaded from an authored object (the
    /// object it writes keeps that source).
    pub fn source(&self) -> ProfileSource {
        self.source
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.convergence.phase()
    }

    /// The convergence state, as written to `status`.
    pub fn status(&self) -> ConvergenceStatus {
        self.convergence.status()
    }

    /// Growth counted in the newest window.
    pub fn window_count(&self) -> u64 {
        self.convergence.window_count()
    }

    /// Sizes.
    pub fn stats(&self) -> ProfileStats {
        let mut s = ProfileStats {
            nodes: self.process.node_count() + self.file.node_count() + self.network.node_count(),
            ..ProfileStats::default()
        };
        for (_, _, n) in self.process.paths() {
            s.branches += 1;
            s.exemplars += self
                .process
                .node(n)
                .leaf
                .as_ref()
                .map_or(0, |l| l.exemplars.len());
        }
        s.branches += self.file.paths().len() + self.network.paths().len();
        s
    }

    // ---- matching -------------------------------------------------------

    /// Matches an event without changing anything. Known paths are matched
    /// without allocating; the embedder runs only for argument strings that are
    /// not already known exactly.
    pub fn match_event(&self, event: &Event<'_>, embedder: &dyn Embedder) -> Result<MatchOutcome> {
        match event {
            Event::Process(e) => self.match_process(e, embedder),
            Event::File(e) => Ok(self.match_file(e)),
            Event::Network(e) => Ok(self.match_network(e)),
        }
    }

    /// Matches a process execution (path, then arguments).
    pub fn match_process(
        &self,
        e: &ProcessEvent<'_>,
        embedder: &dyn Embedder,
    ) -> Result<MatchOutcome> {
        match self.process.find(process_segs(e, self.process_keys)) {
            Found::Miss(d) => Ok(new_branch(ActivityClass::Process, d)),
            Found::Known(node) => {
                let Some(leaf) = self.process.node(node).leaf.as_deref() else {
                    return Ok(MatchOutcome::Known);
                };
                if leaf.exemplars.is_empty() {
                    return Ok(MatchOutcome::Known);
                }
                let h = stable_hash(0, e.args.as_bytes());
                if leaf.knows_exact(h, e.args) {
                    return Ok(MatchOutcome::Known);
                }
                let v = self.embed_one(embedder, e.args)?;
                Ok(args_outcome(leaf, &v, &ArgShape::of(e.args)))
            }
        }
    }

    /// Matches a file access. Never allocates.
    pub fn match_file(&self, e: &FileEvent<'_>) -> MatchOutcome {
        match self.find_file(e) {
            Found::Known(_) => MatchOutcome::Known,
            Found::Miss(d) => new_branch(ActivityClass::File, d),
        }
    }

    /// [`Trie::find`] of a file event's path, splitting the path as it goes.
    #[inline]
    fn find_file(&self, e: &FileEvent<'_>) -> Found {
        let trie = &self.file;
        let mut walk = Walk::new();
        for seg in file_head(e) {
            if let Some(found) = trie.walk_step(&mut walk, seg) {
                return found;
            }
        }
        let mut segs = path_segments(e.path);
        if segs.take_marker() {
            if let Some(found) = trie.walk_text(&mut walk, RELATIVE) {
                return found;
            }
        }
        while let Some((start, end)) = segs.next_range() {
            let seg = e.path.get(start..end).unwrap_or_default();
            if let Some(found) = trie.walk_text(&mut walk, seg) {
                return found;
            }
        }
        trie.walk_end(&walk)
    }

    /// Matches network activity. Never allocates.
    pub fn match_network(&self, e: &NetworkEvent<'_>) -> MatchOutcome {
        let mut buf = itoa_buf();
        let proto = e.protocol.key();
        let segs = network_segs(e, &proto, &mut buf);
        match self.network.find(segs) {
            Found::Known(_) => MatchOutcome::Known,
            Found::Miss(d) => new_branch(ActivityClass::Network, d),
        }
    }

    // ---- learning -------------------------------------------------------

    /// Learns an event whatever the phase (a person or a promotion allows it in
    /// detection). Compaction runs as needed; a limit never stops learning.
    pub fn learn(&mut self, event: &Event<'_>, embedder: &dyn Embedder) -> Result<Learned> {
        match event {
            Event::Process(e) => self.learn_process(e, embedder),
            Event::File(e) => {
                let max = self.file.policy().max_depth;
                let mut segs: Vec<Seg<'_>> = file_head(e).to_vec();
                let mut end = End::Terminal;
                for (i, s) in path_segments(e.path).enumerate() {
                    if i == max {
                        end = End::Rest;
                        break;
                    }
                    segs.push(Seg::Text(s));
                }
                let ins = self.file.insert(&segs, end)?;
                Ok(learned_path(ActivityClass::File, ins))
            }
            Event::Network(e) => {
                let mut buf = itoa_buf();
                let proto = e.protocol.key();
                let segs = network_segs(e, &proto, &mut buf);
                let ins = self.network.insert(&segs, End::Terminal)?;
                Ok(learned_path(ActivityClass::Network, ins))
            }
        }
    }

    fn learn_process(&mut self, e: &ProcessEvent<'_>, embedder: &dyn Embedder) -> Result<Learned> {
        let ins = self
            .process
            .insert(&process_segs(e, self.process_keys), End::Terminal)?;
        let (node, before) = match ins {
            Inserted::Refused { level } => {
                return Ok(Learned {
                    before: new_branch(ActivityClass::Process, level),
                    change: Change::Refused,
                })
            }
            Inserted::Known(n) => (n, None),
            Inserted::Added { level, node } => {
                (node, Some(new_branch(ActivityClass::Process, level)))
            }
        };
        let h = stable_hash(0, e.args.as_bytes());
        if let Some(leaf) = self.process.node(node).leaf.as_deref() {
            if leaf.knows_exact(h, e.args) {
                return Ok(learned(before, Change::Branch));
            }
        }
        let v = self.embed_one(embedder, e.args)?;
        let threshold = self.config.similarity_threshold;
        let cap = self.config.compaction.exemplar_cap;
        let leaf = self
            .process
            .node_mut(node)
            .leaf
            .get_or_insert_with(Default::default);
        let shape = ArgShape::of(e.args);
        let nearest = leaf.nearest(&v, &shape);
        if nearest.covered || (leaf.exemplars.is_empty() && before.is_none()) {
            leaf.remember(h, e.args);
            return Ok(learned(before, Change::Branch));
        }
        let outcome = args_outcome(leaf, &v, &shape);
        leaf.add(Exemplar::new(e.args.into(), v, threshold), cap);
        leaf.remember(h, e.args);
        Ok(match before {
            Some(b) => Learned {
                before: b,
                change: Change::Branch,
            },
            None => Learned {
                before: outcome,
                change: Change::Exemplar,
            },
        })
    }

    fn embed_one(&self, embedder: &dyn Embedder, s: &str) -> Result<Box<[f32]>> {
        let mut v = embed_all(embedder, &self.model_id, &[s])?;
        v.pop()
            .ok_or_else(|| Error::Embedding("embedder returned no vector".into()))
    }

    // ---- convergence ----------------------------------------------------

    /// Mode-aware handling of one event at time `now`: learns while
    /// `Learning`/`Converged`, only matches while `Detecting`.
    pub fn observe(
        &mut self,
        event: &Event<'_>,
        now: Duration,
        embedder: &dyn Embedder,
    ) -> Result<Observation> {
        let mut transitions = self.convergence.tick(now, self.config.mode);
        if self.phase() == Phase::Detecting {
            let outcome = self.match_event(event, embedder)?;
            return Ok(Observation {
                outcome,
                change: Change::None,
                transitions,
            });
        }
        let l = self.learn(event, embedder)?;
        if l.change.is_growth() {
            transitions.extend(self.convergence.record_growth(1, now));
        }
        Ok(Observation {
            outcome: l.before,
            change: l.change,
            transitions,
        })
    }

    /// Lets time pass (call periodically): may converge and switch phase.
    pub fn tick(&mut self, now: Duration) -> Vec<Transition> {
        self.convergence.tick(now, self.config.mode)
    }

    /// Changes the mode; returns the resulting transitions.
    pub fn set_mode(&mut self, mode: Mode, now: Duration) -> Vec<Transition> {
        let old = self.config.mode;
        self.config.mode = mode;
        self.convergence.set_mode(old, mode, now)
    }

    /// Restarts learning from `now` (keeping what was learned).
    pub fn relearn(&mut self, now: Duration) -> Vec<Transition> {
        self.convergence.relearn(now)
    }

    // ---- merge ----------------------------------------------------------

    /// Merges what `other` learned into this profile: union of branches,
    /// exemplar sets merged by similarity. Commutative and idempotent in what
    /// the result knows and in its serialised tries; this profile's settings and
    /// convergence state are kept.
    pub fn merge(&mut self, other: &Profile) -> Result<()> {
        if other.model_id != self.model_id {
            return Err(Error::ModelMismatch {
                profile: other.model_id.clone(),
                embedder: self.model_id.clone(),
            });
        }
        // Rebuild from the sorted union of both sides' paths, so the result
        // depends only on the two sets of paths and exemplars, not on which
        // side is `self`.
        let c = &self.config.compaction;
        let mut process = Trie::new(ProcessPolicy::new(c));
        let mut procs: Vec<(Vec<OwnedSeg>, End, NodeId, bool)> = Vec::new();
        procs.extend(
            self.process
                .paths()
                .into_iter()
                .map(|(p, e, n)| (p, e, n, false)),
        );
        procs.extend(
            other
                .process
                .paths()
                .into_iter()
                .map(|(p, e, n)| (p, e, n, true)),
        );
        procs.sort_by(|a, b| (&a.0, a.1 == End::Rest).cmp(&(&b.0, b.1 == End::Rest)));
        for (path, end, _, _) in &procs {
            let segs: Vec<Seg<'_>> = path.iter().map(OwnedSeg::as_seg).collect();
            process.insert(&segs, *end)?;
        }
        let mut gathered: std::collections::BTreeMap<NodeId, Vec<ArgLeaf>> = Default::default();
        for (path, _, node, from_other) in &procs {
            let src = if *from_other {
                &other.process
            } else {
                &self.process
            };
            let Some(leaf) = src.node(*node).leaf.as_deref() else {
                continue;
            };
            if let Found::Known(n) = process.find(path.iter().map(OwnedSeg::as_seg)) {
                gathered.entry(n).or_default().push(leaf.clone());
            }
        }
        let cap = c.exemplar_cap;
        for (n, leaves) in gathered {
            process.node_mut(n).leaf = Some(Box::new(ArgLeaf::union(leaves, cap)));
        }
        let file = union(Trie::new(FilePolicy::new(c)), &self.file, &other.file)?;
        let network = union(
            Trie::new(NetworkPolicy::new(c)),
            &self.network,
            &other.network,
        )?;
        self.process = process;
        self.file = file;
        self.network = network;
        Ok(())
    }

    // ---- digest ---------------------------------------------------------

    /// The digest of every concrete known path (and, for processes, every
    /// normalised argument string known to match), keyed by `seed`.
    pub fn digest(&self, seed: u64) -> Digest {
        let mut d = Digest::from_hashes(seed, []);
        for (path, end, node) in self.process.paths() {
            let Some(base) = concrete(seed, ActivityClass::Process, &path, end) else {
                continue;
            };
            if let Some(leaf) = self.process.node(node).leaf.as_deref() {
                let strs = leaf
                    .exemplars
                    .iter()
                    .map(|e| &*e.args)
                    .chain(leaf.known_strings());
                for s in strs {
                    let mut h = base;
                    h.text(s.as_bytes());
                    d.insert(h.finish());
                }
            }
        }
        for (path, end, _) in self.file.paths() {
            if let Some(h) = concrete(seed, ActivityClass::File, &path, end) {
                d.insert(h.finish());
            }
        }
        for (path, end, _) in self.network.paths() {
            if let Some(h) = concrete(seed, ActivityClass::Network, &path, end) {
                d.insert(h.finish());
            }
        }
        d
    }
}

fn union<P: crate::trie::Policy>(mut dst: Trie<P>, a: &Trie<P>, b: &Trie<P>) -> Result<Trie<P>> {
    let mut paths = a.paths();
    paths.extend(b.paths());
    paths.sort_by(|x, y| (&x.0, x.1 == End::Rest).cmp(&(&y.0, y.1 == End::Rest)));
    for (path, end, _) in paths {
        let segs: Vec<Seg<'_>> = path.iter().map(OwnedSeg::as_seg).collect();
        dst.insert(&segs, end)?;
    }
    Ok(dst)
}

fn concrete(seed: u64, class: ActivityClass, path: &[OwnedSeg], end: End) -> Option<DigestHasher> {
    if end != End::Terminal {
        return None;
    }
    let mut h = DigestHasher::new(seed, class);
    // a file path's segments (after image, process, access) are one field
    let fields = if class == ActivityClass::File {
        3
    } else {
        path.len()
    };
    let (fields, file_path) = path.split_at(fields.min(path.len()));
    for s in fields {
        match s {
            OwnedSeg::Text(t) => h.text(t),
            OwnedSeg::Ip(ip) => h.ip(*ip),
            OwnedSeg::Wild | OwnedSeg::Cidr(_) => return None,
        }
    }
    if class == ActivityClass::File {
        let mut segs = Vec::with_capacity(file_path.len());
        for s in file_path {
            match s {
                OwnedSeg::Text(t) => segs.push(&t[..]),
                _ => return None,
            }
        }
        h.path_of_segments(segs);
    }
    Some(h)
}

fn network_segs<'a>(
    e: &NetworkEvent<'a>,
    proto: &'a crate::event::ProtocolKey,
    buf: &'a mut [u8; 5],
) -> [Seg<'a>; 6] {
    [
        Seg::Text(e.image),
        Seg::Text(e.process),
        Seg::Text(e.direction.as_str().as_bytes()),
        match e.peer {
            Peer::Ip(ip) => Seg::Ip(ip),
            Peer::Name(n) => Seg::Text(n),
        },
        Seg::Text(proto.as_bytes()),
        Seg::Text(port_key(e.port, buf)),
    ]
}

fn new_branch(class: ActivityClass, depth: usize) -> MatchOutcome {
    MatchOutcome::NewBranch {
        class,
        level: Level::of(class, depth),
    }
}

fn learned(before: Option<MatchOutcome>, if_new: Change) -> Learned {
    match before {
        Some(b) => Learned {
            before: b,
            change: if_new,
        },
        None => Learned {
            before: MatchOutcome::Known,
            change: Change::None,
        },
    }
}

fn learned_path(class: ActivityClass, ins: Inserted) -> Learned {
    match ins {
        Inserted::Known(_) => Learned {
            before: MatchOutcome::Known,
            change: Change::None,
        },
        Inserted::Added { level, .. } => Learned {
            before: new_branch(class, level),
            change: Change::Branch,
        },
        Inserted::Refused { level } => Learned {
            before: new_branch(class, level),
            change: Change::Refused,
        },
    }
}

fn args_outcome(leaf: &ArgLeaf, v: &[f32], shape: &ArgShape) -> MatchOutcome {
    let n = leaf.nearest(v, shape);
    if n.covered {
        return MatchOutcome::Known;
    }
    MatchOutcome::UnusualArguments {
        best_similarity: n.best_similarity,
        nearest_exemplar: n.nearest.map(|e| e.args.to_string()).unwrap_or_default(),
    }
}

/// Embeds `inputs` with checks: model id, count, dimension, finiteness; the
/// vectors are L2-normalised.
pub(crate) fn embed_all(
    embedder: &dyn Embedder,
    model_id: &str,
    inputs: &[&str],
) -> Result<Vec<Box<[f32]>>> {
    if embedder.model_id() != model_id {
        return Err(Error::ModelMismatch {
            profile: model_id.to_string(),
            embedder: embedder.model_id().to_string(),
        });
    }
    let dim = embedder.dim();
    let out = embedder
        .embed_batch(inputs)
        .map_err(|e| Error::Embedding(e.to_string()))?;
    if out.len() != inputs.len() {
        return Err(Error::Embedding(format!(
            "asked for {} vectors, got {}",
            inputs.len(),
            out.len()
        )));
    }
    out.into_iter()
        .map(|mut v| {
            if v.len() != dim || dim == 0 {
                return Err(Error::Embedding(format!(
                    "vector of length {} from a model of dimension {dim}",
                    v.len()
                )));
            }
            let n = v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt();
            if !n.is_finite() || n == 0.0 {
                return Err(Error::Embedding("zero or non-finite vector".into()));
            }
            for x in &mut v {
                *x = (f64::from(*x) / n) as f32;
            }
            Ok(v.into_boxed_slice())
        })
        .collect()
}
