//! A profile as a `BehaviorProfile` object (`kestrel.dev/v1alpha1`, the
//! shapes are in `kestrel-api`) and back.
//!
//! [`Profile::to_object`] writes a learned profile: settings in `spec`, the
//! tries in `status.learned`, the convergence state, conditions, counts and
//! size in `status`; a profile loaded from a promoted object is written back
//! promoted (the tries in `spec.baseline`). [`Profile::from_object`] reads
//! either, and [`Profile::from_yaml`] also reads the files of earlier
//! releases (see `kestrel_api::profile_from_yaml`).
//!
//! Tries are written as flat, sorted entries: one per process leaf (with its
//! exemplar argument strings), one per (image, process, access) with its
//! paths, one per (image, process, direction, peer) with its `port/protocol`
//! list. Segments use the lossless escape scheme of [`crate::escape_bytes`];
//! `*` is a wildcard, a trailing `/**` means "everything below", peers may be
//! addresses, networks (`10.0.0.0/8`) or names. Vectors are never written:
//! they are recomputed from the strings with the embedder on load (the model
//! id must match).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use kestrel_api::{
    converged_condition, object_name, ArgumentSpec, BehaviorProfile, BehaviorProfileSpec,
    BehaviorProfileStatus, CompactionSpec, FileEntry, LearningSpec, NetworkEntry, PrefixLimitSpec,
    ProcessEntry, ProcessKeys, ProfileBody, ProfileMode, ProfileSource, StoredProfile, WorkloadRef,
    WORKLOAD_ANNOTATION,
};
use kestrel_embed::Embedder;
use serde::{Deserialize, Serialize};

use crate::config::{
    format_duration, parse_duration, CompactionConfig, LearningConfig, Mode, PrefixLimit,
    ProfileConfig,
};
use crate::convergence::Convergence;
use crate::digest::stable_hash;
use crate::error::{Error, Result};
use crate::escape::{escape_segment, unescape_bytes};
use crate::event::{Access, Direction, Protocol};
use crate::exemplar::Exemplar;
use crate::profile::{embed_all, Profile};
use crate::segment::RELATIVE;
use crate::trie::{End, Inserted, OwnedSeg, Seg};

/// Who a profile is for, given when it is written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The workload's exact name (`Deployment/webapp`, or a standalone
    /// name such as `web`). The object name is derived from it
    /// (`kestrel_api::object_name`); the name itself is kept in
    /// `spec.workload` (and the `kestrel.dev/workload` annotation when that
    /// cannot hold it exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl From<&LearningConfig> for LearningSpec {
    fn from(c: &LearningConfig) -> Self {
        LearningSpec {
            window: Some(format_duration(c.window)),
            min_learning_time: Some(format_duration(c.min_learning_time)),
            max_new_per_window: Some(c.max_new_per_window),
            clean_windows: Some(c.clean_windows),
            buckets_per_window: Some(c.buckets_per_window),
        }
    }
}

impl From<&CompactionConfig> for CompactionSpec {
    fn from(c: &CompactionConfig) -> Self {
        CompactionSpec {
            child_limit: Some(c.child_limit),
            prefix_limits: Some(
                c.prefix_limits
                    .iter()
                    .map(|p| PrefixLimitSpec {
                        prefix: p.prefix.clone(),
                        limit: p.limit,
                    })
                    .collect(),
            ),
            never_collapse: Some(c.never_collapse.clone()),
            exemplar_cap: Some(c.exemplar_cap),
            peer_ip_limit: Some(c.peer_ip_limit),
            port_limit: Some(c.port_limit),
            hard_child_limit: Some(c.hard_child_limit),
            max_path_depth: Some(c.max_path_depth),
            node_budget: Some(c.node_budget),
        }
    }
}

impl From<Mode> for ProfileMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Auto => ProfileMode::Auto,
            Mode::Learn => ProfileMode::Learn,
            Mode::Detect => ProfileMode::Detect,
        }
    }
}

/// Reads a `BehaviorProfile` from YAML, in today's shape or an earlier
/// release's (without building the tries).
pub fn parse_yaml(yaml: &str) -> Result<StoredProfile> {
    kestrel_api::profile_from_yaml(yaml).map_err(api_error)
}

fn api_error(e: kestrel_api::Error) -> Error {
    match e {
        kestrel_api::Error::Yaml(m) => Error::Yaml(m),
        kestrel_api::Error::Field { field, reason } => Error::InvalidField { field, reason },
        kestrel_api::Error::Serialize(m) => Error::Serialize(m),
    }
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
    /// The tries as a profile body (sorted, deterministic), with the model
    /// and argument measure they were measured with.
    pub fn to_body(&self) -> ProfileBody {
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
        ProfileBody {
            model_id: Some(self.model_id.clone()),
            argument_measure: Some(kestrel_embed::ARG_MEASURE),
            process_keys: Some(self.process_keys),
            similarity_threshold: threshold,
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
        }
    }

    /// The profile as a `BehaviorProfile` object (deterministic: the same
    /// profile gives the same object). `metadata.name` is the workload's
    /// name; the object is named after it ([`kestrel_api::object_name`]).
    /// The behaviour goes to `status.learned`, or to `spec.baseline` for a
    /// profile that was loaded from a promoted object.
    pub fn to_object(&self, metadata: Metadata) -> BehaviorProfile {
        let c = &self.config;
        let workload = metadata.name.as_deref().map(WorkloadRef::parse);
        let mut object = BehaviorProfile::new(
            "",
            BehaviorProfileSpec {
                source: self.source,
                mode: c.mode.into(),
                workload: workload.clone(),
                learning: Some(LearningSpec::from(&c.learning)),
                compaction: Some(CompactionSpec::from(&c.compaction)),
                baseline: None,
            },
        );
        object.metadata.name = metadata.name.as_deref().map(object_name);
        object.metadata.namespace = metadata.namespace;
        if let (Some(name), Some(w)) = (&metadata.name, &workload) {
            if !w.is_exact_for(name) {
                object.metadata.annotations = Some(BTreeMap::from([(
                    WORKLOAD_ANNOTATION.to_string(),
                    name.clone(),
                )]));
            }
        }
        let body = self.to_body();
        let convergence = self.status();
        let mut status = BehaviorProfileStatus {
            observed_generation: None,
            phase: Some(convergence.phase.into()),
            conditions: vec![converged_condition(&convergence)],
            learned: None,
            convergence: Some(convergence),
            summary: Some(body.summary()),
            size_bytes: None,
        };
        match self.source {
            ProfileSource::Learned => status.learned = Some(body),
            ProfileSource::Promoted => object.spec.baseline = Some(body),
        }
        object.status = Some(status);
        object.measure_size();
        object
    }

    /// The profile as readable YAML (the whole object).
    pub fn to_yaml(&self, metadata: Metadata) -> Result<String> {
        kestrel_api::to_yaml(&self.to_object(metadata)).map_err(api_error)
    }

    /// Loads a profile from YAML of today's shape or an earlier release's;
    /// `now` starts the clock when there is no convergence state. Errors
    /// name the offending field as it is in the file.
    pub fn from_yaml(yaml: &str, embedder: &dyn Embedder, now: Duration) -> Result<Profile> {
        Profile::from_stored(&parse_yaml(yaml)?, embedder, now)
    }

    /// Loads a profile read by [`parse_yaml`] (vectors recomputed with
    /// `embedder`).
    pub fn from_stored(
        stored: &StoredProfile,
        embedder: &dyn Embedder,
        now: Duration,
    ) -> Result<Profile> {
        load(&stored.object, stored.body_path(), embedder, now)
    }

    /// Loads a profile from an object (vectors recomputed with `embedder`):
    /// the behaviour of `spec.baseline` (promoted) or `status.learned`
    /// (learned; none yet is an empty profile), the settings of `spec`
    /// (absent ones take [`ProfileConfig::default`]), the convergence state
    /// of `status.convergence`.
    pub fn from_object(
        object: &BehaviorProfile,
        embedder: &dyn Embedder,
        now: Duration,
    ) -> Result<Profile> {
        load(object, object.body_path(), embedder, now)
    }
}

fn load(
    object: &BehaviorProfile,
    body_path: &str,
    embedder: &dyn Embedder,
    now: Duration,
) -> Result<Profile> {
    let spec = &object.spec;
    let empty = ProfileBody::default();
    let body = match (object.body(), spec.source) {
        (Some(b), _) => b,
        (None, ProfileSource::Learned) => &empty,
        (None, ProfileSource::Promoted) => {
            return Err(Error::field(
                "spec.baseline",
                "a Promoted profile needs its baseline",
            ))
        }
    };
    let mut config = config_from(spec, body, body_path)?;
    // Radii and thresholds of another argument measure are not distances
    // of this one: keep the exemplars, drop what was computed with them.
    let measure = body.argument_measure.unwrap_or(1);
    let stale = measure != kestrel_embed::ARG_MEASURE;
    config.similarity_threshold =
        kestrel_embed::current_threshold(embedder.model_id(), measure, config.similarity_threshold);
    if let Some(m) = &body.model_id {
        if m != embedder.model_id() {
            return Err(Error::ModelMismatch {
                profile: m.clone(),
                embedder: embedder.model_id().into(),
            });
        }
    }
    let mut p = Profile::new(config, embedder.model_id(), now)?;
    p.source = spec.source;
    // a body from before the keys were recorded holds basenames; one with
    // no process entries (nothing learned yet) holds nothing to keep
    p.process_keys = body.process_keys.unwrap_or(if body.processes.is_empty() {
        ProcessKeys::Path
    } else {
        ProcessKeys::Name
    });
    if let Some(st) = object.status.as_ref().and_then(|s| s.convergence.as_ref()) {
        p.convergence = Convergence::from_status(p.config.learning.clone(), st);
    }
    load_processes(&mut p, body, body_path, embedder, stale)?;
    for (i, f) in body.files.iter().enumerate() {
        let at = |f: &str| format!("{body_path}.files[{i}].{f}");
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
            if p.file.over_load_budget() {
                return Err(Error::field(field, LOAD_BUDGET));
            }
            if let Inserted::Refused { .. } = p.file.insert_loading(&view, end)? {
                return Err(Error::field(field, "exceeds compaction.hardChildLimit"));
            }
        }
    }
    for (i, n) in body.network.iter().enumerate() {
        let at = |f: &str| format!("{body_path}.network[{i}].{f}");
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
            if p.network.over_load_budget() {
                return Err(Error::field(field, LOAD_BUDGET));
            }
            if let Inserted::Refused { .. } = p.network.insert_loading(&view, End::Terminal)? {
                return Err(Error::field(field, "exceeds compaction.hardChildLimit"));
            }
        }
    }
    Ok(p)
}

/// Loads the process exemplars; with `stale_radii` (another argument
/// measure) every exemplar gets the profile's threshold as its radius.
fn load_processes(
    p: &mut Profile,
    body: &ProfileBody,
    body_path: &str,
    embedder: &dyn Embedder,
    stale_radii: bool,
) -> Result<()> {
    let threshold = p.config.similarity_threshold;
    let cap = p.config.compaction.exemplar_cap;
    // Embed every exemplar string in batches first.
    let mut strings: Vec<&str> = Vec::new();
    for (i, e) in body.processes.iter().enumerate() {
        if e.arguments.is_empty() {
            return Err(Error::field(
                format!("{body_path}.processes[{i}].arguments"),
                "needs at least one exemplar",
            ));
        }
        for (j, a) in e.arguments.iter().enumerate() {
            if let Some(m) = a.min_similarity {
                if !(m.is_finite() && (-1.0..=1.0).contains(&m)) {
                    return Err(Error::field(
                        format!("{body_path}.processes[{i}].arguments[{j}].minSimilarity"),
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
    for (i, e) in body.processes.iter().enumerate() {
        let at = |f: &str| format!("{body_path}.processes[{i}].{f}");
        let all = [
            parse_seg(&e.image, &at("image"))?,
            parse_seg(&e.parent, &at("parent"))?,
            parse_seg(&e.exe, &at("exe"))?,
        ];
        let view: Vec<Seg<'_>> = all.iter().map(OwnedSeg::as_seg).collect();
        if p.process.over_load_budget() {
            return Err(Error::field(at("exe"), LOAD_BUDGET));
        }
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

/// The settings of an object: `spec.learning` and `spec.compaction` over
/// the defaults, the mode, and the body's threshold.
fn config_from(
    spec: &BehaviorProfileSpec,
    body: &ProfileBody,
    body_path: &str,
) -> Result<ProfileConfig> {
    let base = ProfileConfig::default();
    let dur = |s: &Option<String>, default: Duration, field: &str| match s {
        None => Ok(default),
        Some(s) => parse_duration(s).ok_or_else(|| {
            Error::field(
                format!("spec.learning.{field}"),
                "expected a duration like `1h`, `30s`, `500ms`",
            )
        }),
    };
    let mode = match spec.mode {
        ProfileMode::Auto => Mode::Auto,
        ProfileMode::Learn => Mode::Learn,
        ProfileMode::Detect => Mode::Detect,
        ProfileMode::Enforce => {
            return Err(Error::field(
                "spec.mode",
                "Enforce is reserved and not supported yet (use Detect)",
            ))
        }
    };
    let l = spec.learning.clone().unwrap_or_default();
    let bl = &base.learning;
    let c = spec.compaction.clone().unwrap_or_default();
    let bc = base.compaction;
    let config = ProfileConfig {
        mode,
        similarity_threshold: body.similarity_threshold,
        learning: LearningConfig {
            window: dur(&l.window, bl.window, "window")?,
            min_learning_time: dur(
                &l.min_learning_time,
                bl.min_learning_time,
                "minLearningTime",
            )?,
            max_new_per_window: l.max_new_per_window.unwrap_or(bl.max_new_per_window),
            clean_windows: l.clean_windows.unwrap_or(bl.clean_windows),
            buckets_per_window: l.buckets_per_window.unwrap_or(bl.buckets_per_window),
        },
        compaction: CompactionConfig {
            child_limit: c.child_limit.unwrap_or(bc.child_limit),
            prefix_limits: match c.prefix_limits {
                Some(p) => p
                    .into_iter()
                    .map(|p| PrefixLimit {
                        prefix: p.prefix,
                        limit: p.limit,
                    })
                    .collect(),
                None => bc.prefix_limits,
            },
            never_collapse: c.never_collapse.unwrap_or(bc.never_collapse),
            exemplar_cap: c.exemplar_cap.unwrap_or(bc.exemplar_cap),
            peer_ip_limit: c.peer_ip_limit.unwrap_or(bc.peer_ip_limit),
            port_limit: c.port_limit.unwrap_or(bc.port_limit),
            hard_child_limit: c.hard_child_limit.unwrap_or(bc.hard_child_limit),
            max_path_depth: c.max_path_depth.unwrap_or(bc.max_path_depth),
            node_budget: c.node_budget.unwrap_or(bc.node_budget),
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
            // The threshold belongs to the body; the rest to `spec`.
            let at = if camel == "similarityThreshold" {
                body_path
            } else {
                "spec"
            };
            Error::field(format!("{at}.{camel}"), reason)
        }
        other => other,
    })?;
    Ok(config)
}

/// Why a stored profile too large for its node budget is refused.
const LOAD_BUDGET: &str =
    "the profile holds more than four times compaction.nodeBudget nodes (learning never builds one that large)";

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
        return crate::cidr::parse(s)
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
