//! The caps written into the schemas: every string has a `maxLength` and
//! every list a `maxItems`, so the API server rejects an object that could
//! not have come from Kestrel before it reaches etcd.
//!
//! A cap is the widest value the code writes today, with room, not a size
//! budget: a profile's real bound is its byte budget (target
//! [`PROFILE_TARGET_BYTES`], cap [`PROFILE_MAX_BYTES`]), which the operator
//! measures before writing (`SizeLimited`). Lengths count characters, as the
//! API server does; Rust's `str::len` counts bytes, never fewer.
//!
//! Where a setting decides a list's length (exemplars per process, pods
//! listed per alert, sliding-window buckets), the setting's schema range
//! keeps the list under its cap.

/// Target serialised size of a `BehaviorProfile` (DESIGN.md §7).
pub const PROFILE_TARGET_BYTES: u64 = 64 * 1024;
/// Cap on the serialised size of a `BehaviorProfile`: past it the profile
/// stops growing and says `SizeLimited` (etcd's request limit is ~1.5 MiB).
pub const PROFILE_MAX_BYTES: u64 = 256 * 1024;

/// Kubernetes object names (DNS-1123 subdomain), workload, pod, node and
/// namespace names, container ids (`containerd://` + 64 hex digits).
pub const NAME: u32 = 253;
/// Container names (DNS-1123 label).
pub const LABEL: u32 = 63;
/// Short tokens: durations (`1h`), ports (`443/tcp`), ids, hashes, ATT&CK ids,
/// RFC 3339 timestamps, model ids.
pub const SHORT: u32 = 256;
/// One trie segment as written: at most 255 bytes (Linux `NAME_MAX`, longer
/// ones are hashed) of which each may take four characters escaped (`\xff`).
pub const SEGMENT: u32 = 1024;
/// Container image references.
pub const IMAGE: u32 = 1024;
/// A file path or path pattern: the kernel copies at most 4096 bytes
/// (`KESTREL_PATH_MAX`), four characters each when escaped, plus `/**`.
pub const PATH: u32 = 32 * 1024;
/// A normalised argument string (exemplar, alert evidence): at most 4096
/// argv bytes (`KESTREL_ARGS_MAX`) with placeholders such as `<num>` that
/// may be longer than what they replace.
pub const ARGS: u32 = 32 * 1024;
/// One raw argv element (lossily displayed).
pub const ARG: u32 = 4096;
/// Sentences for people: titles, reasons, explanations, summaries, hints.
pub const TEXT: u32 = 4096;
/// A ready NetworkPolicy (YAML text).
pub const POLICY: u32 = 8192;
/// `Condition.type` (metav1: 316).
pub const CONDITION_TYPE: u32 = 316;
/// `Condition.reason` (metav1: 1024).
pub const CONDITION_REASON: u32 = 1024;
/// `Condition.message` (metav1: 32768).
pub const CONDITION_MESSAGE: u32 = 32 * 1024;

/// Process, file and network entries of one profile body, each.
pub const ENTRIES: u32 = 4096;
/// Argument exemplars of one process (the `exemplarCap` setting is at most this).
pub const EXEMPLARS: u32 = 256;
/// Paths of one file entry (a never-collapsing node keeps up to
/// `hardChildLimit` = 4096 children by default, over several levels).
pub const PATHS: u32 = 16 * 1024;
/// Ports of one network entry.
pub const PORTS: u32 = 1024;
/// `prefixLimits` and `neverCollapse` entries.
pub const SETTINGS: u32 = 256;
/// Sliding-window buckets kept (`bucketsPerWindow` × `cleanWindows`, each
/// bounded by [`MAX_BUCKETS_PER_WINDOW`] and [`MAX_CLEAN_WINDOWS`]).
pub const BUCKETS: u32 = MAX_BUCKETS_PER_WINDOW * MAX_CLEAN_WINDOWS;
/// Largest `learning.bucketsPerWindow` a CR may ask for.
pub const MAX_BUCKETS_PER_WINDOW: u32 = 120;
/// Largest `learning.cleanWindows` a CR may ask for.
pub const MAX_CLEAN_WINDOWS: u32 = 32;
/// Conditions of one object.
pub const CONDITIONS: u32 = 16;
/// Raw argv elements of one process.
pub const ARGV: u32 = 4096;
/// Ancestors in a process chain (the agent reads 8).
pub const CHAIN: u32 = 64;
/// Signals, rule hits, ATT&CK ids, notes, hints, tactics of one alert, each.
pub const FINDINGS: u32 = 64;
/// Pods listed on one alert (the `incidents.maxPodsListed` setting, default
/// 20, must stay at or below this).
pub const PODS: u32 = 100;
