//! The prefix tree shared by the three activity classes.
//!
//! Nodes live in an arena and are keyed by interned symbols. A node's children
//! are literal keys (text or IP), at most one wildcard child (`*`, matching any
//! literal that is not an explicit child and not guarded), CIDR children
//! (matching the addresses inside them), and flags: `terminal` (a known path
//! ends here) and `rest` (every longer path through here is known, `**`).
//!
//! Matching takes the exact child first, then the narrowest containing CIDR,
//! then the wildcard, without backtracking. Compaction keeps this sound: when a
//! node collapses, all its unguarded literal children move into the wildcard, so
//! a literal child and a wildcard never disagree.

use std::collections::HashMap;
use std::net::IpAddr;

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use ipnet::IpNet as Cidr;

use crate::cidr::ladder;
use crate::error::{Error, Result};
use crate::exemplar::ArgLeaf;
use crate::intern::{Interner, Key, Sym};
use crate::segment::{segment_key, SegBuf, MAX_SEGMENT};

pub(crate) type NodeId = u32;
const NONE: NodeId = u32::MAX;
pub(crate) const ROOT: NodeId = 0;
const SMALL_CHILDREN: usize = 16;

/// One step of a path, as given to the trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    /// A literal segment (truncated to [`MAX_SEGMENT`] by the trie).
    Text(&'a [u8]),
    /// A literal address.
    Ip(IpAddr),
    /// The wildcard `*`.
    Wild,
    /// A network.
    Cidr(Cidr),
}

/// A key on the path from the root, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKey<'a> {
    /// A literal text segment.
    Text(&'a [u8]),
    /// Anything else (wildcard, address, network).
    Other,
}

/// Children names a wildcard must not match.
#[derive(Debug, Clone)]
pub(crate) enum Guard {
    /// Exactly these names.
    Names(Vec<Box<[u8]>>),
    /// Names starting with one of these.
    Prefixes(Vec<Box<[u8]>>),
}

impl Guard {
    #[inline]
    pub(crate) fn protects(&self, name: &[u8]) -> bool {
        match self {
            Guard::Names(n) => n.iter().any(|x| &**x == name),
            Guard::Prefixes(p) => p.iter().any(|x| name.starts_with(x)),
        }
    }
}

/// Per-node compaction facts, decided by the class's policy from the node's path.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    /// Literal children allowed before collapsing; `None` = never collapse.
    pub(crate) limit: Option<usize>,
    /// Children a wildcard must not absorb or match.
    pub(crate) guard: Option<Box<Guard>>,
}

/// Class-specific compaction rules.
pub(crate) trait Policy {
    /// Facts for the node at `path` (root = empty path).
    fn info(&self, path: &[PathKey<'_>]) -> NodeInfo;
    /// Address children allowed before collapsing into networks.
    fn ip_limit(&self) -> usize;
    /// Children allowed under a never-collapsing node.
    fn hard_limit(&self) -> usize;
    /// Nodes allowed before every new literal goes to a wildcard.
    fn node_budget(&self) -> usize;
    /// Exemplars kept per process leaf.
    fn exemplar_cap(&self) -> usize {
        16
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeKey {
    Root,
    Text(Sym),
    Ip(Sym),
    Wild,
    Cidr(Cidr),
}

#[derive(Debug)]
enum Children {
    Small(SmallVec<[(Sym, NodeId); 2]>),
    Map(HashMap<Sym, NodeId, RandomState>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Small(SmallVec::new())
    }
}

impl Children {
    #[inline]
    fn get(&self, s: Sym) -> Option<NodeId> {
        match self {
            Children::Small(v) => v.iter().find(|(k, _)| *k == s).map(|(_, n)| *n),
            Children::Map(m) => m.get(&s).copied(),
        }
    }
    fn insert(&mut self, s: Sym, n: NodeId) {
        match self {
            Children::Small(v) => {
                if v.len() >= SMALL_CHILDREN {
                    let mut m: HashMap<Sym, NodeId, RandomState> = v.drain(..).collect();
                    m.insert(s, n);
                    *self = Children::Map(m);
                } else {
                    v.push((s, n));
                }
            }
            Children::Map(m) => {
                m.insert(s, n);
            }
        }
    }
    fn remove(&mut self, s: Sym) -> Option<NodeId> {
        match self {
            Children::Small(v) => {
                let i = v.iter().position(|(k, _)| *k == s)?;
                Some(v.swap_remove(i).1)
            }
            Children::Map(m) => m.remove(&s),
        }
    }
    fn len(&self) -> usize {
        match self {
            Children::Small(v) => v.len(),
            Children::Map(m) => m.len(),
        }
    }
    fn pairs(&self) -> Vec<(Sym, NodeId)> {
        match self {
            Children::Small(v) => v.to_vec(),
            Children::Map(m) => m.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    parent: NodeId,
    key: NodeKey,
    children: Children,
    ip_children: u32,
    wildcard: NodeId,
    cidrs: Vec<(Cidr, NodeId)>,
    pub(crate) terminal: bool,
    pub(crate) rest: bool,
    limit: Option<usize>,
    guard: Option<Box<Guard>>,
    pub(crate) leaf: Option<Box<ArgLeaf>>,
    live: bool,
}

impl Node {
    fn new(parent: NodeId, key: NodeKey, info: NodeInfo) -> Self {
        Node {
            parent,
            key,
            children: Children::default(),
            ip_children: 0,
            wildcard: NONE,
            cidrs: Vec::new(),
            terminal: false,
            rest: false,
            limit: info.limit,
            guard: info.guard,
            leaf: None,
            live: true,
        }
    }

    #[inline]
    fn guards(&self, name: &[u8]) -> bool {
        self.guard.as_ref().is_some_and(|g| g.protects(name))
    }
}

/// Where a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Known; the node where the path ends (or the `**` node covering it).
    Known(NodeId),
    /// Unknown: the first segment index that has no match (or the path length
    /// when the path ends at a node that is not terminal).
    Miss(usize),
}

/// A lookup in progress (see [`Trie::walk_step`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    node: NodeId,
    rest: Option<NodeId>,
    depth: usize,
}

impl Walk {
    /// At the root.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Walk {
            node: ROOT,
            rest: None,
            depth: 0,
        }
    }
}

/// What an insertion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Already known; nothing changed.
    Known(NodeId),
    /// Added; `level` is the first new segment index; `node` the path's end.
    Added { level: usize, node: NodeId },
    /// A hard limit refused the segment at `level`.
    Refused { level: usize },
}

/// How an inserted path ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The path itself is known.
    Terminal,
    /// Everything strictly below the path is known (`**`).
    Rest,
}

/// A key on an enumerated path (see [`Trie::paths`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum OwnedSeg {
    Text(Box<[u8]>),
    Ip(IpAddr),
    Cidr(Cidr),
    Wild,
}

impl OwnedSeg {
    pub(crate) fn as_seg(&self) -> Seg<'_> {
        match self {
            OwnedSeg::Text(t) => Seg::Text(t),
            OwnedSeg::Ip(i) => Seg::Ip(*i),
            OwnedSeg::Cidr(c) => Seg::Cidr(*c),
            OwnedSeg::Wild => Seg::Wild,
        }
    }
}

/// An arena prefix tree under one compaction policy.
#[derive(Debug)]
pub(crate) struct Trie<P> {
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    live: usize,
    interner: Interner,
    policy: P,
    /// Loading a serialised profile: the node budget does not apply (the
    /// profile was within its limits when written).
    loading: bool,
}

impl<P: Policy> Trie<P> {
    pub(crate) fn new(policy: P) -> Self {
        let info = policy.info(&[]);
        Trie {
            nodes: vec![Node::new(NONE, NodeKey::Root, info)],
            free: Vec::new(),
            live: 1,
            interner: Interner::default(),
            policy,
            loading: false,
        }
    }

    pub(crate) fn policy(&self) -> &P {
        &self.policy
    }

    /// Number of live nodes.
    pub(crate) fn node_count(&self) -> usize {
        self.live
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// One matching step. Never allocates.
    #[inline]
    fn step(&self, node: NodeId, seg: Seg<'_>) -> Option<NodeId> {
        let n = &self.nodes[node as usize];
        match seg {
            Seg::Text(raw) if raw.len() <= MAX_SEGMENT => self.step_text(n, raw),
            Seg::Text(raw) => {
                let mut buf: SegBuf = [0; MAX_SEGMENT];
                self.step_text(n, segment_key(raw, &mut buf))
            }
            Seg::Ip(ip) => {
                if let Some(c) = self.interner.lookup_ip(ip).and_then(|s| n.children.get(s)) {
                    return Some(c);
                }
                if let Some(c) = n
                    .cidrs
                    .iter()
                    .filter(|(c, _)| crate::cidr::contains(c, &ip))
                    .max_by_key(|(c, _)| c.prefix_len())
                {
                    return Some(c.1);
                }
                (n.wildcard != NONE).then_some(n.wildcard)
            }
            Seg::Wild => (n.wildcard != NONE).then_some(n.wildcard),
            Seg::Cidr(want) => {
                if let Some(c) = n
                    .cidrs
                    .iter()
                    .filter(|(c, _)| c.contains(&want))
                    .max_by_key(|(c, _)| c.prefix_len())
                {
                    return Some(c.1);
                }
                (n.wildcard != NONE).then_some(n.wildcard)
            }
        }
    }

    #[inline(always)]
    fn step_text(&self, n: &Node, key: &[u8]) -> Option<NodeId> {
        if let Some(c) = self
            .interner
            .lookup_text(key)
            .and_then(|s| n.children.get(s))
        {
            return Some(c);
        }
        (n.wildcard != NONE && !n.guards(key)).then_some(n.wildcard)
    }

    /// Looks a path up. Never allocates.
    #[inline]
    pub(crate) fn find<'a>(&self, segs: impl IntoIterator<Item = Seg<'a>>) -> Found {
        let mut walk = Walk::new();
        for seg in segs {
            if let Some(found) = self.walk_step(&mut walk, seg) {
                return found;
            }
        }
        self.walk_end(&walk)
    }

    /// One step of a lookup ([`Trie::find`] a segment at a time): `Some` when
    /// the answer is decided before the path ends (a miss, or known through a
    /// `**` above).
    #[inline(always)]
    pub(crate) fn walk_step(&self, walk: &mut Walk, seg: Seg<'_>) -> Option<Found> {
        let next = self.step(walk.node, seg);
        self.walk_to(walk, next)
    }

    /// [`Trie::walk_step`] of a text segment (the step inlined: file paths).
    #[inline(always)]
    pub(crate) fn walk_text(&self, walk: &mut Walk, raw: &[u8]) -> Option<Found> {
        let n = &self.nodes[walk.node as usize];
        let next = if raw.len() <= MAX_SEGMENT {
            self.step_text(n, raw)
        } else {
            let mut buf: SegBuf = [0; MAX_SEGMENT];
            self.step_text(n, segment_key(raw, &mut buf))
        };
        self.walk_to(walk, next)
    }

    #[inline(always)]
    fn walk_to(&self, walk: &mut Walk, next: Option<NodeId>) -> Option<Found> {
        if self.nodes[walk.node as usize].rest {
            walk.rest = Some(walk.node);
        }
        match next {
            Some(c) => {
                walk.node = c;
                walk.depth += 1;
                None
            }
            None => Some(walk.rest.map_or(Found::Miss(walk.depth), Found::Known)),
        }
    }

    /// The answer of a lookup whose path has ended.
    #[inline(always)]
    pub(crate) fn walk_end(&self, walk: &Walk) -> Found {
        if self.nodes[walk.node as usize].terminal {
            return Found::Known(walk.node);
        }
        walk.rest.map_or(Found::Miss(walk.depth), Found::Known)
    }

    /// Whether `prefix/**` is already implied.
    fn find_rest(&self, segs: &[Seg<'_>]) -> Option<NodeId> {
        let mut node = ROOT;
        for seg in segs {
            if self.nodes[node as usize].rest {
                return Some(node);
            }
            node = self.step(node, *seg)?;
        }
        self.nodes[node as usize].rest.then_some(node)
    }

    /// Adds a path (learning). Compaction runs bottom-up along the path.
    pub(crate) fn insert(&mut self, segs: &[Seg<'_>], end: End) -> Result<Inserted> {
        let known = match end {
            End::Terminal => match self.find(segs.iter().copied()) {
                Found::Known(n) => Some(n),
                Found::Miss(_) => None,
            },
            End::Rest => self.find_rest(segs),
        };
        if let Some(n) = known {
            return Ok(Inserted::Known(n));
        }
        let mut node = ROOT;
        let mut visited: SmallVec<[NodeId; 16]> = SmallVec::new();
        visited.push(ROOT);
        let mut level = None;
        for (depth, seg) in segs.iter().enumerate() {
            if let Some(c) = self.step(node, *seg) {
                node = c;
            } else {
                level.get_or_insert(depth);
                match self.create_child(node, *seg) {
                    Some(c) => node = c,
                    None => {
                        for &n in visited.iter().rev() {
                            self.maybe_compact(n);
                        }
                        return Ok(Inserted::Refused { level: depth });
                    }
                }
            }
            visited.push(node);
        }
        let n = &mut self.nodes[node as usize];
        match end {
            End::Terminal => n.terminal = true,
            End::Rest => n.rest = true,
        }
        for &n in visited.iter().rev() {
            self.maybe_compact(n);
        }
        let node = match end {
            End::Terminal => match self.find(segs.iter().copied()) {
                Found::Known(n) => n,
                Found::Miss(_) => return Err(Error::Internal("inserted path not found")),
            },
            End::Rest => self
                .find_rest(segs)
                .ok_or(Error::Internal("inserted rest path not found"))?,
        };
        Ok(Inserted::Added {
            level: level.unwrap_or(segs.len()),
            node,
        })
    }

    fn path_key<'s>(&'s self, k: &NodeKey) -> Option<PathKey<'s>> {
        match k {
            NodeKey::Root => None,
            NodeKey::Text(s) => Some(match self.interner.key(*s) {
                Key::Text(t) => PathKey::Text(t),
                _ => PathKey::Other,
            }),
            _ => Some(PathKey::Other),
        }
    }

    fn path_info(&self, parent: NodeId, key: &NodeKey) -> NodeInfo {
        let mut keys: SmallVec<[PathKey<'_>; 16]> = SmallVec::new();
        keys.extend(self.path_key(key));
        let mut cur = parent;
        while cur != NONE {
            let n = &self.nodes[cur as usize];
            keys.extend(self.path_key(&n.key));
            cur = n.parent;
        }
        keys.reverse();
        self.policy.info(&keys)
    }

    fn alloc(&mut self, parent: NodeId, key: NodeKey) -> NodeId {
        let info = self.path_info(parent, &key);
        let node = Node::new(parent, key, info);
        self.live += 1;
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                // Bounded by the node budget, far below u32::MAX.
                self.nodes.push(node);
                (self.nodes.len() - 1) as NodeId
            }
        }
    }

    fn release(&mut self, id: NodeId) {
        let n = &mut self.nodes[id as usize];
        if !n.live {
            return;
        }
        n.live = false;
        n.leaf = None;
        n.guard = None;
        n.children = Children::default();
        n.cidrs = Vec::new();
        match n.key {
            NodeKey::Text(s) | NodeKey::Ip(s) => self.interner.release(s),
            _ => {}
        }
        self.live -= 1;
        self.free.push(id);
    }

    fn over_budget(&self) -> bool {
        !self.loading && self.live >= self.policy.node_budget()
    }

    /// Whether loading has passed four times the node budget. Learning
    /// stops near the budget (past it, only protected nodes up to twice the
    /// budget, and one wildcard per collapsing node), so a stored profile
    /// this large was made elsewhere, and is refused rather than loaded
    /// whole.
    pub(crate) fn over_load_budget(&self) -> bool {
        self.live > self.policy.node_budget().saturating_mul(4)
    }

    /// [`Trie::insert`] without the node budget (for loading).
    pub(crate) fn insert_loading(&mut self, segs: &[Seg<'_>], end: End) -> Result<Inserted> {
        self.loading = true;
        let r = self.insert(segs, end);
        self.loading = false;
        r
    }

    fn create_child(&mut self, node: NodeId, seg: Seg<'_>) -> Option<NodeId> {
        match seg {
            Seg::Text(raw) => {
                let mut buf: SegBuf = [0; MAX_SEGMENT];
                let key = segment_key(raw, &mut buf);
                let n = &self.nodes[node as usize];
                let protected = n.limit.is_none() || n.guards(key);
                if !protected && self.over_budget() {
                    return Some(self.ensure_wildcard(node));
                }
                if protected
                    && (n.children.len() >= self.policy.hard_limit()
                        || self.over_budget()
                            && self.live >= self.policy.node_budget().saturating_mul(2))
                {
                    return None;
                }
                let sym = self.interner.intern_text(key);
                let id = self.alloc(node, NodeKey::Text(sym));
                self.nodes[node as usize].children.insert(sym, id);
                Some(id)
            }
            Seg::Ip(ip) => {
                if self.over_budget() {
                    return Some(self.ensure_wildcard(node));
                }
                let sym = self.interner.intern_ip(ip);
                let id = self.alloc(node, NodeKey::Ip(sym));
                let n = &mut self.nodes[node as usize];
                n.children.insert(sym, id);
                n.ip_children += 1;
                Some(id)
            }
            Seg::Wild => Some(self.ensure_wildcard(node)),
            Seg::Cidr(c) => Some(self.ensure_cidr(node, c)),
        }
    }

    /// The wildcard child of `node`, creating it (and collapsing the node's
    /// unguarded literal children into it) when absent.
    fn ensure_wildcard(&mut self, node: NodeId) -> NodeId {
        let w = self.nodes[node as usize].wildcard;
        if w != NONE {
            return w;
        }
        let w = self.alloc(node, NodeKey::Wild);
        self.nodes[node as usize].wildcard = w;
        self.absorb_literals_into_wildcard(node);
        w
    }

    /// Moves every unguarded literal, address and network child of `node` into
    /// its wildcard: a wildcard and a literal never coexist for the same name, so
    /// matching needs no backtracking.
    fn absorb_literals_into_wildcard(&mut self, node: NodeId) {
        let w = self.nodes[node as usize].wildcard;
        let movable: Vec<(Sym, NodeId)> = self.nodes[node as usize]
            .children
            .pairs()
            .into_iter()
            .filter(|(s, _)| match self.interner.key(*s) {
                Key::Text(t) => !self.nodes[node as usize].guards(t),
                Key::Ip(_) => true,
                Key::Free => false,
            })
            .collect();
        for (s, c) in movable {
            let n = &mut self.nodes[node as usize];
            n.children.remove(s);
            if matches!(self.interner.key(s), Key::Ip(_)) {
                n.ip_children -= 1;
            }
            self.merge_into(c, w);
        }
        let cidrs = std::mem::take(&mut self.nodes[node as usize].cidrs);
        for (_, c) in cidrs {
            self.merge_into(c, w);
        }
        self.maybe_compact(w);
    }

    /// The CIDR child of `node` covering `c`, creating it (and absorbing the
    /// addresses and narrower networks inside it) when absent.
    fn ensure_cidr(&mut self, node: NodeId, c: Cidr) -> NodeId {
        if let Some(&(_, id)) = self.nodes[node as usize]
            .cidrs
            .iter()
            .filter(|(x, _)| x.contains(&c))
            .max_by_key(|(x, _)| x.prefix_len())
        {
            return id;
        }
        let id = self.alloc(node, NodeKey::Cidr(c));
        self.adopt_cidr(node, c, id);
        id
    }

    /// Adds `id` as the CIDR child `c` of `node` and moves what it covers into it.
    fn adopt_cidr(&mut self, node: NodeId, c: Cidr, id: NodeId) {
        self.nodes[id as usize].parent = node;
        self.nodes[id as usize].key = NodeKey::Cidr(c);
        let inner: Vec<(Cidr, NodeId)> = self.nodes[node as usize]
            .cidrs
            .iter()
            .filter(|(x, _)| c.contains(x))
            .copied()
            .collect();
        self.nodes[node as usize]
            .cidrs
            .retain(|(x, _)| !c.contains(x));
        self.nodes[node as usize].cidrs.push((c, id));
        for (_, n) in inner {
            self.merge_into(n, id);
        }
        let ips: Vec<(Sym, NodeId)> = self.nodes[node as usize]
            .children
            .pairs()
            .into_iter()
            .filter(|(s, _)| matches!(self.interner.key(*s), Key::Ip(ip) if crate::cidr::contains(&c, ip)))
            .collect();
        for (s, n) in ips {
            let p = &mut self.nodes[node as usize];
            p.children.remove(s);
            p.ip_children -= 1;
            self.merge_into(n, id);
        }
    }

    /// Moves everything of `src` into `dst` and frees `src`.
    fn merge_into(&mut self, src: NodeId, dst: NodeId) {
        if src == dst {
            return;
        }
        let (children, wildcard, cidrs, terminal, rest, leaf) = {
            let s = &mut self.nodes[src as usize];
            (
                std::mem::take(&mut s.children).pairs(),
                std::mem::replace(&mut s.wildcard, NONE),
                std::mem::take(&mut s.cidrs),
                s.terminal,
                s.rest,
                s.leaf.take(),
            )
        };
        {
            let d = &mut self.nodes[dst as usize];
            d.terminal |= terminal;
            d.rest |= rest;
        }
        if let Some(l) = leaf {
            self.merge_leaf(dst, *l);
        }
        for (sym, c) in children {
            self.place_child(dst, sym, c);
        }
        if wildcard != NONE {
            let dw = self.nodes[dst as usize].wildcard;
            if dw != NONE {
                self.merge_into(wildcard, dw);
            } else {
                self.nodes[dst as usize].wildcard = wildcard;
                self.nodes[wildcard as usize].parent = dst;
                self.refresh_info(wildcard);
                self.absorb_literals_into_wildcard(dst);
            }
        }
        for (c, id) in cidrs {
            let dw = self.nodes[dst as usize].wildcard;
            if dw != NONE {
                self.merge_into(id, dw);
                continue;
            }
            let existing = self.nodes[dst as usize]
                .cidrs
                .iter()
                .filter(|(x, _)| x.contains(&c))
                .max_by_key(|(x, _)| x.prefix_len())
                .map(|(_, n)| *n);
            match existing {
                Some(e) => self.merge_into(id, e),
                None => {
                    self.adopt_cidr(dst, c, id);
                    self.refresh_info(id);
                }
            }
        }
        self.release(src);
        self.maybe_compact(dst);
    }

    /// Places child `c` (keyed `sym`, taken from another node) under `dst`.
    fn place_child(&mut self, dst: NodeId, sym: Sym, c: NodeId) {
        if let Some(d) = self.nodes[dst as usize].children.get(sym) {
            self.merge_into(c, d);
            return;
        }
        let key = self.interner.key(sym).clone();
        let dn = &self.nodes[dst as usize];
        match key {
            Key::Text(t) if dn.wildcard != NONE && !dn.guards(&t) => {
                let w = dn.wildcard;
                self.merge_into(c, w);
            }
            Key::Ip(_) if dn.wildcard != NONE => {
                let w = dn.wildcard;
                self.merge_into(c, w);
            }
            Key::Ip(ip) => {
                let cidr = dn
                    .cidrs
                    .iter()
                    .filter(|(x, _)| crate::cidr::contains(x, &ip))
                    .max_by_key(|(x, _)| x.prefix_len())
                    .map(|(_, n)| *n);
                match cidr {
                    Some(n) => self.merge_into(c, n),
                    None => {
                        let d = &mut self.nodes[dst as usize];
                        d.children.insert(sym, c);
                        d.ip_children += 1;
                        self.nodes[c as usize].parent = dst;
                        self.refresh_info(c);
                    }
                }
            }
            _ => {
                self.nodes[dst as usize].children.insert(sym, c);
                self.nodes[c as usize].parent = dst;
                self.refresh_info(c);
            }
        }
    }

    fn merge_leaf(&mut self, dst: NodeId, leaf: ArgLeaf) {
        let cap = self.policy.exemplar_cap();
        let d = &mut self.nodes[dst as usize];
        match &mut d.leaf {
            Some(existing) => existing.absorb(leaf, cap),
            None => d.leaf = Some(Box::new(leaf)),
        }
    }

    /// Recomputes policy facts for a moved subtree.
    fn refresh_info(&mut self, id: NodeId) {
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            let node = &self.nodes[n as usize];
            let info = self.path_info(node.parent, &node.key);
            let node = &mut self.nodes[n as usize];
            node.limit = info.limit;
            node.guard = info.guard;
            stack.extend(node.children.pairs().into_iter().map(|(_, c)| c));
            if node.wildcard != NONE {
                stack.push(node.wildcard);
            }
            stack.extend(node.cidrs.iter().map(|(_, c)| *c));
        }
    }

    /// Collapses `node` if it has too many children.
    fn maybe_compact(&mut self, node: NodeId) {
        let n = &self.nodes[node as usize];
        if !n.live {
            return;
        }
        let literal = n.children.len() - n.ip_children as usize;
        if n.wildcard == NONE && n.limit.is_some_and(|l| literal > l) {
            self.ensure_wildcard(node);
        }
        let n = &self.nodes[node as usize];
        if n.ip_children as usize + n.cidrs.len() > self.policy.ip_limit() {
            self.collapse_ips(node);
        }
    }

    /// Collapses address children into the narrowest networks on the ladder that
    /// bring the count within the limit.
    fn collapse_ips(&mut self, node: NodeId) {
        let n = &self.nodes[node as usize];
        let mut items: Vec<Cidr> = n.cidrs.iter().map(|(c, _)| *c).collect();
        for (s, _) in n.children.pairs() {
            if let Key::Ip(ip) = self.interner.key(s) {
                items.push(crate::cidr::network(*ip, crate::cidr::max_prefix(*ip)));
            }
        }
        let limit = self.policy.ip_limit().max(2);
        let mut plan = Vec::new();
        for step in 0..4 {
            plan = plan_targets(&items, step);
            if plan.len() <= limit {
                break;
            }
        }
        for t in plan {
            self.ensure_cidr(node, t);
        }
    }

    /// Every known path (terminal or `**`), in a deterministic order.
    pub(crate) fn paths(&self) -> Vec<(Vec<OwnedSeg>, End, NodeId)> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.walk(ROOT, &mut path, &mut out);
        out
    }

    fn walk(
        &self,
        id: NodeId,
        path: &mut Vec<OwnedSeg>,
        out: &mut Vec<(Vec<OwnedSeg>, End, NodeId)>,
    ) {
        let n = &self.nodes[id as usize];
        if n.terminal {
            out.push((path.clone(), End::Terminal, id));
        }
        if n.rest {
            out.push((path.clone(), End::Rest, id));
        }
        let mut kids: Vec<(OwnedSeg, NodeId)> = Vec::new();
        for (s, c) in n.children.pairs() {
            match self.interner.key(s) {
                Key::Text(t) => kids.push((OwnedSeg::Text(t.clone()), c)),
                Key::Ip(ip) => kids.push((OwnedSeg::Ip(*ip), c)),
                Key::Free => {}
            }
        }
        kids.extend(n.cidrs.iter().map(|(c, id)| (OwnedSeg::Cidr(*c), *id)));
        if n.wildcard != NONE {
            kids.push((OwnedSeg::Wild, n.wildcard));
        }
        kids.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, c) in kids {
            path.push(k);
            self.walk(c, path, out);
            path.pop();
        }
    }
}

/// Networks covering `items` at ladder step `step`, without overlaps.
fn plan_targets(items: &[Cidr], step: usize) -> Vec<Cidr> {
    let mut cands: Vec<Cidr> = items
        .iter()
        .map(|c| {
            let l = ladder(c.network(), step);
            if c.prefix_len() <= l {
                *c
            } else {
                crate::cidr::network(c.network(), l)
            }
        })
        .collect();
    cands.sort_by_key(|c| (c.prefix_len(), *c));
    cands.dedup();
    let mut out: Vec<Cidr> = Vec::new();
    for c in cands {
        if !out.iter().any(|o| o.contains(&c)) {
            out.push(c);
        }
    }
    out
}
