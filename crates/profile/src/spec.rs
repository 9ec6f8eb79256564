//! The readable YAML form of a profile, shaped like the `BehaviorProfile` custom
//! resource (`kestrel.dev/v1alpha1`).
//!
//! Tries are written as flat, sorted entries: one per process leaf (with its
//! exemplar argument strings), one per (image, process, access) with its paths,
//! one per (image, process, direction, peer) with its `port/protocol` list.
//! Segments use the lossless escape scheme of [`crate::escape_bytes`]; `*` is a
//! wildcard, a trailing `/**` means "everything below", peers may be addresses,
//! networks (`10.0.0.0/8`) or names. Vectors are never written: they are
//! recomputed from the strings with the embedder on load (the model id must
//! match).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use kestrel_embed::Embedder;
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::config::{
    format_duration, parse_duration, CompactionConfig, LearningConfig, Mode, PrefixLimit,
    ProfileConfig,
};
use crate::convergence::{Convergence, ConvergenceStatus};
use crate::digest::stable_hash;
use crate::error::{Error, Result};
use crate::escape::{escape_segment, unescape_bytes};
use crate::event::{Access, Direction, Protocol};
use crate::exemplar::Exemplar;
use crate::profile::{embed_all, Profile};
use crate::segment::RELATIVE;
use crate::trie::{End, Inserted, OwnedSeg, Seg};

/// API version written in documents.
pub const API_VERSION: &str = "kestrel.dev/v1alpha1";
/// Kind written in documents.
pub const KIND: &str = "BehaviorProfile";

/// A whole profile document (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileDocument {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Name and namespace; other metadata fields are ignored on load.
    #[serde(default)]
    pub metadata: Metadata,
    /// The learned behaviour and its settings.
    pub spec: BehaviorProfileSpec,
    /// Convergence state; absent for a profile applied by a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConvergenceStatus>,
}

/// Object metadata (only what a profile needs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_threshold() -> f32 {
    0.95
}

/// The `spec` of a `BehaviorProfile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviorProfileSpec {
    /// Mode (`Auto`, `Learn`, `Detect`).
    #[serde(default)]
    pub mode: Mode,
    /// Embedding model the exemplars are compared with; absent = the loader's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Version of the argument measure the radii and the threshold were
    /// computed with ([`kestrel_embed::ARG_MEASURE`]); absent = 1, every
    /// build before it was recorded. A profile of another version loads with
    /// its exemplars but without its merged radii (`minSimilarity`), and a
    /// threshold that was that version's shipped default becomes today's
    /// ([`kestrel_embed::current_threshold`]). Hand-written profiles should
    /// set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument_measure: Option<u32>,
    /// Argument similarity an argument needs to an exemplar
    /// ([`kestrel_embed::arg_similarity`]; the model's calibrated threshold
    /// is in [`kestrel_embed::MODEL_DEFAULTS`]).
    #[serde(default = "default_threshold")]
    pub similarity_threshold: f32,
    /// Convergence settings.
    #[serde(default)]
    pub learning: LearningSpec,
    /// Compaction settings.
    #[serde(default)]
    pub compaction: CompactionSpec,
    /// Process trie leaves.
    #[serde(default)]
    pub processes: Vec<ProcessEntry>,
    /// File trie, grouped by image, process and access kind.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Network trie, grouped by image, process, direction and peer.
    #[serde(default)]
    pub network: Vec<NetworkEntry>,
}

/// `spec.learning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearningSpec {
    /// Window length (`1h`, `30s`).
    pub window: String,
    /// Minimum learning time.
    pub min_learning_time: String,
    /// Growth a clean window may count.
    pub max_new_per_window: u32,
    /// Consecutive clean windows needed.
    pub clean_windows: u32,
    /// Buckets per window.
    pub buckets_per_window: u32,
}

impl Default for LearningSpec {
    fn default() -> Self {
        LearningSpec::from(&LearningConfig::default())
    }
}

impl From<&LearningConfig> for LearningSpec {
    fn from(c: &LearningConfig) -> Self {
        LearningSpec {
            window: format_duration(c.window),
            min_learning_time: format_duration(c.min_learning_time),
            max_new_per_window: c.max_new_per_window,
            clean_windows: c.clean_windows,
            buckets_per_window: c.buckets_per_window,
        }
    }
}

/// One per-prefix limit in `spec.compaction.prefixLimits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLimitSpec {
    /// Absolute path prefix.
    pub prefix: String,
    /// Children before collapsing.
    pub limit: usize,
}

/// `spec.compaction` (see [`CompactionConfig`] for meanings and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CompactionSpec {
    /// See [`CompactionConfig::child_limit`].
    pub child_limit: usize,
    /// See [`CompactionConfig::prefix_limits`].
    pub prefix_limits: Vec<PrefixLimitSpec>,
    /// See [`CompactionConfig::never_collapse`].
    pub never_collapse: Vec<String>,
    /// See [`CompactionConfig::exemplar_cap`].
    pub exemplar_cap: usize,
    /// See [`CompactionConfig::peer_ip_limit`].
    pub peer_ip_limit: usize,
    /// See [`CompactionConfig::port_limit`].
    pub port_limit: usize,
    /// See [`CompactionConfig::hard_child_limit`].
    pub hard_child_limit: usize,
    /// See [`CompactionConfig::max_path_depth`].
    pub max_path_depth: usize,
    /// See [`CompactionConfig::node_budget`].
    pub node_budget: usize,
}

impl Default for CompactionSpec {
    fn default() -> Self {
        CompactionSpec::from(&CompactionConfig::default())
    }
}

impl From<&CompactionConfig> for CompactionSpec {
    fn from(c: &CompactionConfig) -> Self {
        CompactionSpec {
            child_limit: c.child_limit,
            prefix_limits: c
                .prefix_limits
                .iter()
                .map(|p| PrefixLimitSpec {
                    prefix: p.prefix.clone(),
                    limit: p.limit,
                })
                .collect(),
            never_collapse: c.never_collapse.clone(),
            exemplar_cap: c.exemplar_cap,
            peer_ip_limit: c.peer_ip_limit,
            port_limit: c.port_limit,
            hard_child_limit: c.hard_child_limit,
            max_path_depth: c.max_path_depth,
            node_budget: c.node_budget,
        }
    }
}

/// A process leaf: image → parent → exe, with its argument exemplars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessEntry {
    /// Image (`*` = any).
    pub image: String,
    /// Parent process (`*` = any).
    pub parent: String,
    /// Executed process (`*` = any).
    pub exe: String,
    /// At least one exemplar.
    pub arguments: Vec<ArgumentSpec>,
}

/// One argument exemplar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentSpec {
    /// The normalised argument string.
    pub args: String,
    /// Minimum similarity for this exemplar when it differs from the profile's
    /// threshold (after merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_similarity: Option<f32>,
}

/// File paths of one image, process and access kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Image.
    pub image: String,
    /// Process.
    pub process: String,
    /// `read`, `write`, `create`, `delete`, `rename` or `*`.
    pub access: String,
    /// Paths (`/etc/nginx/nginx.conf`, `/proc/*/status`, `/var/log/**`).
    pub paths: Vec<String>,
}

/// Ports of one image, process, direction and peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkEntry {
    /// Image.
    pub image: String,
    /// Process.
    pub process: String,
    /// `outbound`, `inbound`, `listen` or `*`.
    pub direction: String,
    /// Address, network, name or `*`.
    pub peer: String,
    /// `443/tcp`, `*/udp`, `*/*`.
    pub ports: Vec<String>,
}

fn seg_text(s: &OwnedSeg) -> String {
    match s {
        OwnedSeg::Text(t) => escape_segment(t).into_owned(),
        OwnedSeg::Ip(ip) => ip.to_string(),
        OwnedSeg::Cidr(c) => c.to_string(),
        OwnedSeg::Wild => "*".into(),
    }
}

fn path_text(segs: &[OwnedSeg], end: End) -> String {
    let (relative, segs) = match segs.first() {
        Some(OwnedSeg::Text(t)) if **t == *RELATIVE => (true, &segs[1..]),
        _ => (false, segs),
    };
    let mut parts: Vec<String> = segs.iter().map(seg_text).collect();
    if end == End::Rest {
        parts.push("**".into());
    }
    let body = parts.join("/");
    if relative {
        body
    } else {
        format!("/{body}")
    }
}

impl Profile {
    /// The profile as a document (sorted, deterministic).
    pub fn to_document(&self, metadata: Metadata) -> ProfileDocument {
        let threshold = self.config.similarity_threshold;
        let mut processes = Vec::new();
        for (path, end, node) in self.process.paths() {
            if end != End::Terminal || path.len() != 3 {
                continue;
            }
            let mut arguments: Vec<ArgumentSpec> = self
                .process
                .node(node)
                .leaf
                .as_ref()
                .map(|l| {
                    l.exemplars
                        .iter()
                        .map(|e| ArgumentSpec {
                            args: e.args.to_string(),
                            min_similarity: (e.min_similarity != threshold)
                                .then_some(e.min_similarity),
                        })
                        .collect()
                })
                .unwrap_or_default();
            arguments.sort_by(|a, b| a.args.cmp(&b.args));
            processes.push(ProcessEntry {
                image: seg_text(&path[0]),
                parent: seg_text(&path[1]),
                exe: seg_text(&path[2]),
                arguments,
            });
        }
        let mut files: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        for (path, end, _) in self.file.paths() {
            if path.len() < 3 {
                continue;
            }
            let key = (seg_text(&path[0]), seg_text(&path[1]), seg_text(&path[2]));
            files
                .entry(key)
                .or_default()
                .push(path_text(&path[3..], end));
        }
        let mut network: BTreeMap<(String, String, String, String), Vec<String>> = BTreeMap::new();
        for (path, end, _) in self.network.paths() {
            if path.len() != 6 || end != End::Terminal {
                continue;
            }
            let key = (
                seg_text(&path[0]),
                seg_text(&path[1]),
                seg_text(&path[2]),
                seg_text(&path[3]),
            );
            network.entry(key).or_default().push(format!(
                "{}/{}",
                seg_text(&path[5]),
                seg_text(&path[4])
            ));
        }
        let c = &self.config;
        ProfileDocument {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata,
            spec: BehaviorProfileSpec {
                mode: c.mode,
                model_id: Some(self.model_id.clone()),
                argument_measure: Some(kestrel_embed::ARG_MEASURE),
                similarity_threshold: threshold,
                learning: LearningSpec::from(&c.learning),
                compaction: CompactionSpec::from(&c.compaction),
                processes,
                files: files
                    .into_iter()
                    .map(|((image, process, access), mut paths)| {
                        paths.sort();
                        FileEntry {
                            image,
                            process,
                            access,
                            paths,
                        }
                    })
                    .collect(),
                network: network
                    .into_iter()
                    .map(|((image, process, direction, peer), mut ports)| {
                        ports.sort();
                        NetworkEntry {
                            image,
                            process,
                            direction,
                            peer,
                            ports,
                        }
                    })
                    .collect(),
            },
            status: Some(self.status()),
        }
    }

    /// The profile as readable YAML.
    pub fn to_yaml(&self, metadata: Metadata) -> Result<String> {
        serde_saphyr::to_string(&self.to_document(metadata))
            .map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Loads a profile from YAML; `now` starts the clock when there is no
    /// `status`. Errors name the offending field.
    pub fn from_yaml(yaml: &str, embedder: &dyn Embedder, now: Duration) -> Result<Profile> {
        let doc: ProfileDocument =
            serde_saphyr::from_str(yaml).map_err(|e| Error::Yaml(e.to_string()))?;
        Profile::from_document(&doc, embedder, now)
    }

    /// Loads a profile from a document (vectors recomputed with `embedder`).
    pub fn from_document(
        doc: &ProfileDocument,
        embedder: &dyn Embedder,
        now: Duration,
    ) -> Result<Profile> {
        if doc.api_version != API_VERSION {
            return Err(Error::field(
                "apiVersion",
                format!("expected `{API_VERSION}`"),
            ));
        }
        if doc.kind != KIND {
            return Err(Error::field("kind", format!("expected `{KIND}`")));
        }
        let spec = &doc.spec;
        let mut config = config_from_spec(spec)?;
        // Radii and thresholds of another argument measure are not distances
        // of this one: keep the exemplars, drop what was computed with them.
        let measure = spec.argument_measure.unwrap_or(1);
        let stale = measure != kestrel_embed::ARG_MEASURE;
        config.similarity_threshold = kestrel_embed::current_threshold(
            embedder.model_id(),
            measure,
            config.similarity_threshold,
        );
        if let Some(m) = &spec.model_id {
            if m != embedder.model_id() {
                return Err(Error::ModelMismatch {
                    profile: m.clone(),
                    embedder: embedder.model_id().into(),
                });
            }
        }
        let mut p = Profile::new(config, embedder.model_id(), now)?;
        if let Some(st) = &doc.status {
            p.convergence = Convergence::from_status(p.config.learning.clone(), st);
        }
        load_processes(&mut p, spec, embedder, stale)?;
        for (i, f) in spec.files.iter().enumerate() {
            let at = |f: &str| format!("spec.files[{i}].{f}");
            let head = [
                parse_seg(&f.image, &at("image"))?,
                parse_seg(&f.process, &at("process"))?,
                parse_access(&f.access, &at("access"))?,
            ];
            for (j, path) in f.paths.iter().enumerate() {
                let field = at(&format!("paths[{j}]"));
                let (mut segs, mut end) = parse_path(path, &field)?;
                let max = p.config.compaction.max_path_depth;
                if segs.len() > max {
                    segs.truncate(max);
                    end = End::Rest;
                }
                let all: Vec<OwnedSeg> = head.iter().cloned().chain(segs).collect();
                let view: Vec<Seg<'_>> = all.iter().map(OwnedSeg::as_seg).collect();
                if let Inserted::Refused { .. } = p.file.insert_loading(&view, end)? {
                    return Err(Error::field(field, "exceeds compaction.hardChildLimit"));
                }
            }
        }
        for (i, n) in spec.network.iter().enumerate() {
            let at = |f: &str| format!("spec.network[{i}].{f}");
            let direction = match n.direction.as_str() {
                "*" => OwnedSeg::Wild,
                d => match Direction::parse(d) {
                    Some(d) => OwnedSeg::Text(d.as_str().as_bytes().into()),
                    None => {
                        return Err(Error::field(
                            at("direction"),
                            "expected outbound, inbound, listen or *",
                        ))
                    }
                },
            };
            let head = [
                parse_seg(&n.image, &at("image"))?,
                parse_seg(&n.process, &at("process"))?,
                direction,
                parse_peer(&n.peer, &at("peer"))?,
            ];
            for (j, port) in n.ports.iter().enumerate() {
                let field = at(&format!("ports[{j}]"));
                let (port, proto) = parse_port(port, &field)?;
                let all: Vec<OwnedSeg> = head.iter().cloned().chain([proto, port]).collect();
                let view: Vec<Seg<'_>> = all.iter().map(OwnedSeg::as_seg).collect();
                if let Inserted::Refused { .. } = p.network.insert_loading(&view, End::Terminal)? {
                    return Err(Error::field(field, "exceeds compaction.hardChildLimit"));
                }
            }
        }
        Ok(p)
    }
}

/// Loads the process exemplars; with `stale_radii` (another argument
/// measure) every exemplar gets the profile's threshold as its radius.
fn load_processes(
    p: &mut Profile,
    spec: &BehaviorProfileSpec,
    embedder: &dyn Embedder,
    stale_radii: bool,
) -> Result<()> {
    let threshold = p.config.similarity_threshold;
    let cap = p.config.compaction.exemplar_cap;
    // Embed every exemplar string in batches first.
    let mut strings: Vec<&str> = Vec::new();
    for (i, e) in spec.processes.iter().enumerate() {
        if e.arguments.is_empty() {
            return Err(Error::field(
                format!("spec.processes[{i}].arguments"),
                "needs at least one exemplar",
            ));
        }
        for (j, a) in e.arguments.iter().enumerate() {
            if let Some(m) = a.min_similarity {
                if !(m.is_finite() && (-1.0..=1.0).contains(&m)) {
                    return Err(Error::field(
                        format!("spec.processes[{i}].arguments[{j}].minSimilarity"),
                        "must be within [-1, 1]",
                    ));
                }
            }
            strings.push(&a.args);
        }
    }
    let mut vectors = Vec::with_capacity(strings.len());
    for chunk in strings.chunks(64) {
        vectors.extend(embed_all(embedder, &p.model_id, chunk)?);
    }
    let mut vectors = vectors.into_iter();
    for (i, e) in spec.processes.iter().enumerate() {
        let at = |f: &str| format!("spec.processes[{i}].{f}");
        let all = [
            parse_seg(&e.image, &at("image"))?,
            parse_seg(&e.parent, &at("parent"))?,
            parse_seg(&e.exe, &at("exe"))?,
        ];
        let view: Vec<Seg<'_>> = all.iter().map(OwnedSeg::as_seg).collect();
        let node = match p.process.insert_loading(&view, End::Terminal)? {
            Inserted::Known(n) | Inserted::Added { node: n, .. } => n,
            Inserted::Refused { .. } => {
                return Err(Error::field(at("exe"), "exceeds compaction.hardChildLimit"))
            }
        };
        let leaf = p
            .process
            .node_mut(node)
            .leaf
            .get_or_insert_with(Default::default);
        for a in &e.arguments {
            let v = vectors
                .next()
                .ok_or(Error::Internal("fewer vectors than exemplars"))?;
            let min = match a.min_similarity {
                Some(m) if !stale_radii => m,
                _ => threshold,
            };
            leaf.add(Exemplar::new(a.args.as_str().into(), v, min), cap);
            leaf.remember(stable_hash(0, a.args.as_bytes()), &a.args);
        }
    }
    Ok(())
}

fn config_from_spec(spec: &BehaviorProfileSpec) -> Result<ProfileConfig> {
    let dur = |s: &str, field: &str| {
        parse_duration(s).ok_or_else(|| {
            Error::field(
                format!("spec.learning.{field}"),
                "expected a duration like `1h`, `30s`, `500ms`",
            )
        })
    };
    let l = &spec.learning;
    let c = &spec.compaction;
    let config = ProfileConfig {
        mode: spec.mode,
        similarity_threshold: spec.similarity_threshold,
        learning: LearningConfig {
            window: dur(&l.window, "window")?,
            min_learning_time: dur(&l.min_learning_time, "minLearningTime")?,
            max_new_per_window: l.max_new_per_window,
            clean_windows: l.clean_windows,
            buckets_per_window: l.buckets_per_window,
        },
        compaction: CompactionConfig {
            child_limit: c.child_limit,
            prefix_limits: c
                .prefix_limits
                .iter()
                .map(|p| PrefixLimit {
                    prefix: p.prefix.clone(),
                    limit: p.limit,
                })
                .collect(),
            never_collapse: c.never_collapse.clone(),
            exemplar_cap: c.exemplar_cap,
            peer_ip_limit: c.peer_ip_limit,
            port_limit: c.port_limit,
            hard_child_limit: c.hard_child_limit,
            max_path_depth: c.max_path_depth,
            node_budget: c.node_budget,
        },
    };
    config.validate().map_err(|e| match e {
        Error::InvalidConfig { field, reason } => {
            let camel = field
                .split('_')
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 {
                        w.to_string()
                    } else {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default()
                    }
                })
                .collect::<String>();
            Error::field(format!("spec.{camel}"), reason)
        }
        other => other,
    })?;
    Ok(config)
}

fn parse_seg(s: &str, field: &str) -> Result<OwnedSeg> {
    if s == "*" {
        return Ok(OwnedSeg::Wild);
    }
    unescape_bytes(s)
        .map(|b| OwnedSeg::Text(b.into()))
        .map_err(|r| Error::field(field, r))
}

fn parse_access(s: &str, field: &str) -> Result<OwnedSeg> {
    if s == "*" {
        return Ok(OwnedSeg::Wild);
    }
    Access::parse(s)
        .map(|a| OwnedSeg::Text(a.as_str().as_bytes().into()))
        .ok_or_else(|| Error::field(field, "expected read, write, create, delete, rename or *"))
}

fn parse_path(s: &str, field: &str) -> Result<(Vec<OwnedSeg>, End)> {
    let mut segs = Vec::new();
    if !s.starts_with('/') {
        segs.push(OwnedSeg::Text(RELATIVE.into()));
    }
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    let mut end = End::Terminal;
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "**" if i + 1 == parts.len() => end = End::Rest,
            "**" => return Err(Error::field(field, "`**` may only end a path")),
            "*" => segs.push(OwnedSeg::Wild),
            _ => {
                let b = unescape_bytes(part).map_err(|r| Error::field(field, r))?;
                if b != b"." {
                    segs.push(OwnedSeg::Text(b.into()));
                }
            }
        }
    }
    Ok((segs, end))
}

fn parse_peer(s: &str, field: &str) -> Result<OwnedSeg> {
    if s == "*" {
        return Ok(OwnedSeg::Wild);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(OwnedSeg::Ip(ip));
    }
    if s.contains('/') {
        return Cidr::parse(s)
            .map(OwnedSeg::Cidr)
            .ok_or_else(|| Error::field(field, "not a valid network (`10.0.0.0/8`)"));
    }
    parse_seg(s, field)
}

fn parse_port(s: &str, field: &str) -> Result<(OwnedSeg, OwnedSeg)> {
    let Some((port, proto)) = s.split_once('/') else {
        return Err(Error::field(
            field,
            "expected `port/protocol`, e.g. `443/tcp` or `*/udp`",
        ));
    };
    let port = match port {
        "*" => OwnedSeg::Wild,
        p => match p.parse::<u16>() {
            Ok(n) => OwnedSeg::Text(n.to_string().into_bytes().into()),
            Err(_) => return Err(Error::field(field, "port must be 0..=65535 or *")),
        },
    };
    let proto = match proto {
        "*" => OwnedSeg::Wild,
        p => match Protocol::parse(p) {
            Some(pr) => OwnedSeg::Text(pr.key().as_bytes().into()),
            None => {
                return Err(Error::field(
                    field,
                    "protocol must be tcp, udp, icmp, ip<N> or *",
                ))
            }
        },
    };
    Ok((port, proto))
}
