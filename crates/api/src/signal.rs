//! What the profile found unusual, and the process around it: the parts of
//! a candidate alert that an alert keeps as evidence.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::limits;

/// One ancestor in the process chain, from the direct parent up to the
/// container's init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessAncestor {
    /// Executable path of the ancestor.
    #[schemars(length(max = limits::PATH))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exe: String,
    /// Its arguments (argv, lossily displayed), argv\[0\] included.
    #[serde(default)]
    #[schemars(length(max = limits::ARGV), inner(length(max = limits::ARG)))]
    pub args: Vec<String>,
    /// Its host pid, when known: incidents fold the anomalies of one
    /// process subtree by it (absent in alerts stored before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl ProcessAncestor {
    /// An ancestor with an executable path and its arguments.
    pub fn new(exe: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            exe: exe.into(),
            args: args.into_iter().map(Into::into).collect(),
            pid: None,
        }
    }

    /// The same ancestor with its host pid.
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// The last path component of [`Self::exe`].
    pub fn exe_name(&self) -> &str {
        basename(&self.exe)
    }
}

/// Last path component (the whole string when there is no `/`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

// The one definition of file access kinds, connection directions and
// transport protocols, shared with the event model, profiles and rules.
pub use kestrel_events::{Direction, FileAccess, Protocol};

/// The other end of an unknown connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    /// An IP address.
    Ip(IpAddr),
    /// A socket name: a unix socket as `unix:<path>` (lossily displayed),
    /// or a workload, service or DNS name.
    Name(String),
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddress::Ip(ip) => write!(f, "{ip}"),
            PeerAddress::Name(n) => f.write_str(n),
        }
    }
}

/// What the profile found unusual.
///
/// On the wire one flat object: `kind` says which, the other fields belong
/// to that kind (`{kind: UnknownFile, path: /etc/shadow, access: Read}`).
/// A flat object rather than one schema per kind, because Kubernetes
/// structural schemas cannot branch on a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SignalWire", into = "SignalWire")]
pub enum Signal {
    /// The process path (image → parent → exe) is not in the profile.
    UnknownProcess,
    /// The process is known but its arguments are far from every exemplar.
    UnusualArguments {
        /// Argument similarity to the nearest exemplar (−1..=1): the cosine of
        /// the embeddings when both have the same flags, operands, program
        /// file, writable-directory paths and sensitive words, lower when they
        /// differ (`docs/embeddings.md`).
        best_similarity: f32,
        /// The nearest exemplar's argument text, if the profile keeps it.
        nearest_exemplar: Option<String>,
        /// What differs from it, e.g. `new sensitive words stratum+tcp; new
        /// flags -o -u -p; new operands stratum+tcp; missing flags -jar`.
        difference: Option<String>,
    },
    /// A file access not in the profile.
    UnknownFile {
        /// The file path in its canonical spelling
        /// ([`kestrel_events::canonical_path`]; lossily displayed).
        path: String,
        /// How it was accessed.
        access: FileAccess,
        /// The path as the process spelled it, when that differs
        /// (`/tmp/../etc//shadow` for `/etc/shadow`): evidence of evasion.
        raw_path: Option<String>,
    },
    /// An exec attempt that failed, of a path the profile never saw this
    /// process try (a missing binary, a `noexec` mount, a file that is not
    /// executable). The candidate's `exe` and `args` are the attempt's.
    FailedExec {
        /// The path it tried to run, in its canonical spelling.
        path: String,
        /// The error (`ENOENT`, `EACCES`, `ENOEXEC`, …).
        error: String,
        /// The path as the process spelled it, when that differs.
        raw_path: Option<String>,
    },
    /// A network peer not in the profile.
    UnknownPeer {
        /// Remote address, or the socket's name (a unix socket).
        addr: PeerAddress,
        /// Remote port (for inbound: the local listening port; 0 for a
        /// unix socket).
        port: u16,
        /// Transport protocol (`ip0` for a unix socket).
        proto: Protocol,
        /// Direction.
        direction: Direction,
    },
}

impl Signal {
    /// The rule-facing kind name (`unknown_process`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownProcess => "unknown_process",
            Self::UnusualArguments { .. } => "unusual_arguments",
            Self::UnknownFile { .. } => "unknown_file",
            Self::FailedExec { .. } => "failed_exec",
            Self::UnknownPeer { .. } => "unknown_peer",
        }
    }
}

/// `Signal.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
enum SignalKind {
    /// The process path (image → parent → exe) is not in the profile.
    #[serde(alias = "unknown_process")]
    UnknownProcess,
    /// The process is known but its arguments are far from every exemplar.
    #[serde(alias = "unusual_arguments")]
    UnusualArguments,
    /// A file access not in the profile.
    #[serde(alias = "unknown_file")]
    UnknownFile,
    /// A failed exec attempt not in the profile.
    #[serde(alias = "failed_exec")]
    FailedExec,
    /// A network peer not in the profile.
    #[serde(alias = "unknown_peer")]
    UnknownPeer,
}

/// What the profile found unusual: `kind`, and that kind's fields.
// The wire form of `Signal`. The snake_case names written before the
// custom resources (`best_similarity`) are accepted on load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "Signal")]
struct SignalWire {
    /// Which signal: `UnknownProcess`, `UnusualArguments`, `UnknownFile`,
    /// `FailedExec` or `UnknownPeer`; the fields below belong to one of
    /// them.
    kind: SignalKind,
    /// `UnusualArguments`: argument similarity to the nearest exemplar (−1..=1).
    #[serde(
        default,
        alias = "best_similarity",
        skip_serializing_if = "Option::is_none"
    )]
    best_similarity: Option<f32>,
    /// `UnusualArguments`: the nearest exemplar's argument text.
    #[serde(
        default,
        alias = "nearest_exemplar",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = limits::ARGS))]
    nearest_exemplar: Option<String>,
    /// `UnusualArguments`: what differs from the nearest exemplar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::TEXT))]
    difference: Option<String>,
    /// `UnknownFile`, `FailedExec`: the file path (lossily displayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::PATH))]
    path: Option<String>,
    /// `UnknownFile`: how it was accessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<FileAccess>,
    /// `UnknownFile`, `FailedExec`: the path as the process spelled it,
    /// when it differs from `path` (its canonical spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::PATH))]
    raw_path: Option<String>,
    /// `FailedExec`: the error (`ENOENT`, `EACCES`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SHORT))]
    error: Option<String>,
    /// `UnknownPeer`: remote IP address (absent for a named peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    addr: Option<IpAddr>,
    /// `UnknownPeer`: the peer's name when it has no IP address: a unix
    /// socket as `unix:<path>`, or a workload, service or DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::PATH))]
    peer_name: Option<String>,
    /// `UnknownPeer`: remote port (inbound: the local listening port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// `UnknownPeer`: transport protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proto: Option<Protocol>,
    /// `UnknownPeer`: direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
}

impl SignalWire {
    fn of(kind: SignalKind) -> Self {
        SignalWire {
            kind,
            best_similarity: None,
            nearest_exemplar: None,
            difference: None,
            path: None,
            access: None,
            raw_path: None,
            error: None,
            addr: None,
            peer_name: None,
            port: None,
            proto: None,
            direction: None,
        }
    }
}

impl From<Signal> for SignalWire {
    fn from(s: Signal) -> Self {
        match s {
            Signal::UnknownProcess => SignalWire::of(SignalKind::UnknownProcess),
            Signal::UnusualArguments {
                best_similarity,
                nearest_exemplar,
                difference,
            } => SignalWire {
                best_similarity: Some(best_similarity),
                nearest_exemplar,
                difference,
                ..SignalWire::of(SignalKind::UnusualArguments)
            },
            Signal::UnknownFile {
                path,
                access,
                raw_path,
            } => SignalWire {
                path: Some(path),
                access: Some(access),
                raw_path,
                ..SignalWire::of(SignalKind::UnknownFile)
            },
            Signal::FailedExec {
                path,
                error,
                raw_path,
            } => SignalWire {
                path: Some(path),
                error: Some(error),
                raw_path,
                ..SignalWire::of(SignalKind::FailedExec)
            },
            Signal::UnknownPeer {
                addr,
                port,
                proto,
                direction,
            } => SignalWire {
                addr: match &addr {
                    PeerAddress::Ip(ip) => Some(*ip),
                    PeerAddress::Name(_) => None,
                },
                peer_name: match addr {
                    PeerAddress::Ip(_) => None,
                    PeerAddress::Name(n) => Some(n),
                },
                port: Some(port),
                proto: Some(proto),
                direction: Some(direction),
                ..SignalWire::of(SignalKind::UnknownPeer)
            },
        }
    }
}

impl TryFrom<SignalWire> for Signal {
    type Error = String;

    fn try_from(w: SignalWire) -> Result<Self, String> {
        let need = |field: &str| format!("signal {:?} needs `{field}`", w.kind);
        Ok(match w.kind {
            SignalKind::UnknownProcess => Signal::UnknownProcess,
            SignalKind::UnusualArguments => Signal::UnusualArguments {
                best_similarity: w.best_similarity.ok_or_else(|| need("bestSimilarity"))?,
                nearest_exemplar: w.nearest_exemplar,
                difference: w.difference,
            },
            SignalKind::UnknownFile => Signal::UnknownFile {
                path: w.path.ok_or_else(|| need("path"))?,
                access: w.access.ok_or_else(|| need("access"))?,
                raw_path: w.raw_path,
            },
            SignalKind::FailedExec => Signal::FailedExec {
                path: w.path.ok_or_else(|| need("path"))?,
                error: w.error.ok_or_else(|| need("error"))?,
                raw_path: w.raw_path,
            },
            SignalKind::UnknownPeer => Signal::UnknownPeer {
                addr: match (w.addr, w.peer_name) {
                    (Some(ip), None) => PeerAddress::Ip(ip),
                    (None, Some(name)) => PeerAddress::Name(name),
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "signal {:?} has both `addr` and `peerName`",
                            w.kind
                        ))
                    }
                    (None, None) => return Err(need("addr` or `peerName")),
                },
                port: w.port.ok_or_else(|| need("port"))?,
                proto: w.proto.ok_or_else(|| need("proto"))?,
                direction: w.direction.ok_or_else(|| need("direction"))?,
            },
        })
    }
}

impl JsonSchema for Signal {
    fn schema_name() -> Cow<'static, str> {
        "Signal".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        SignalWire::json_schema(generator)
    }
}

/// The anomaly's shape: what makes two anomalies "the same" for cluster
/// statistics, incident grouping and the LLM cache.
///
/// It is the profile trie path (for example `webapp:v1/bash/xmrig`) plus a
/// similarity bucket: anomalies whose arguments are within the similarity
/// threshold of each other get the same bucket from the profile. When the
/// profile offers no bucket, the scorer derives one from the normalised
/// arguments (`kestrel_scoring::CandidateAlert::shape`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyShape {
    /// The trie path, levels joined by `/`.
    #[schemars(length(max = limits::PATH))]
    pub trie_path: String,
    /// The similarity bucket of the arguments (or of the file / peer), as
    /// 16 hex digits (JSON integers above 2^63 do not survive the API server).
    #[serde(with = "hex_u64")]
    #[schemars(with = "String", length(max = 16))]
    pub bucket: u64,
}

impl AnomalyShape {
    /// A shape from a trie path and a bucket.
    pub fn new(trie_path: impl Into<String>, bucket: u64) -> Self {
        Self {
            trie_path: trie_path.into(),
            bucket,
        }
    }
}

impl fmt::Display for AnomalyShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}", self.trie_path, self.bucket)
    }
}

/// Serde for a 64-bit hash as 16 hex digits: JSON integers above 2^63 do
/// not survive the API server (int64), so [`AnomalyShape::bucket`] is
/// written as a string; numbers written by earlier releases are accepted.
pub(crate) mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Hex(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Hex(h) => u64::from_str_radix(&h, 16).map_err(|_| {
                serde::de::Error::custom(format!("expected 16 hex digits, found {h:?}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_serialise_flat_with_a_pascal_case_kind() {
        let s = Signal::UnknownFile {
            path: "/etc/shadow".into(),
            access: FileAccess::Read,
            raw_path: None,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "UnknownFile");
        assert_eq!(j["access"], "Read");
        assert_eq!(serde_json::from_value::<Signal>(j).unwrap(), s);
    }

    #[test]
    fn signals_written_before_v1alpha1_still_load() {
        let old = r#"[{"kind":"unknown_process"},
            {"kind":"unusual_arguments","best_similarity":0.5,"nearest_exemplar":"-jar app.jar"},
            {"kind":"unknown_file","path":"/etc/shadow","access":"read"},
            {"kind":"unknown_peer","addr":"10.0.0.1","port":4444,"proto":"tcp","direction":"outbound"}]"#;
        let s: Vec<Signal> = serde_json::from_str(old).unwrap();
        assert_eq!(s[0], Signal::UnknownProcess);
        assert!(matches!(
            &s[1],
            Signal::UnusualArguments { best_similarity, nearest_exemplar: Some(n), difference: None }
                if *best_similarity == 0.5 && n == "-jar app.jar"
        ));
        assert!(matches!(
            s[3],
            Signal::UnknownPeer {
                port: 4444,
                proto: Protocol::Tcp,
                direction: Direction::Outbound,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_exec_keeps_its_path_and_error_and_needs_both() {
        let s = Signal::FailedExec {
            path: "/dev/shm/kworker".into(),
            error: "EACCES".into(),
            raw_path: Some("/dev/shm//kworker".into()),
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "FailedExec");
        assert_eq!(j["error"], "EACCES");
        assert_eq!(j["rawPath"], "/dev/shm//kworker");
        assert_eq!(s.kind(), "failed_exec");
        assert_eq!(serde_json::from_value::<Signal>(j).unwrap(), s);
        let e = serde_json::from_str::<Signal>(r#"{"kind":"FailedExec","path":"/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("error"), "{e}");
    }

    #[test]
    fn a_unix_socket_peer_and_icmp_keep_what_they_are() {
        let unix = Signal::UnknownPeer {
            addr: PeerAddress::Name("unix:/var/run/docker.sock".into()),
            port: 0,
            proto: Protocol::Other(0),
            direction: Direction::Outbound,
        };
        let j = serde_json::to_value(&unix).unwrap();
        assert_eq!(j["kind"], "UnknownPeer");
        assert_eq!(j["peerName"], "unix:/var/run/docker.sock");
        assert_eq!(j["proto"], "ip0");
        assert!(j.get("addr").is_none(), "{j}");
        assert_eq!(serde_json::from_value::<Signal>(j).unwrap(), unix);

        let icmp = Signal::UnknownPeer {
            addr: PeerAddress::Ip("10.0.0.9".parse().unwrap()),
            port: 0,
            proto: Protocol::Icmp,
            direction: Direction::Outbound,
        };
        let j = serde_json::to_value(&icmp).unwrap();
        assert_eq!(j["proto"], "icmp");
        assert_eq!(j["direction"], "Outbound");
        assert_eq!(serde_json::from_value::<Signal>(j).unwrap(), icmp);

        let both = r#"{"kind":"UnknownPeer","addr":"10.0.0.1","peerName":"unix:/x","port":0,"proto":"ip0","direction":"Outbound"}"#;
        let e = serde_json::from_str::<Signal>(both)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both"), "{e}");
    }

    #[test]
    fn shape_buckets_are_hex_strings_and_old_numbers_load() {
        let s = AnomalyShape::new("web:1/sh/xmrig", u64::MAX - 1);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["bucket"], "fffffffffffffffe");
        assert_eq!(serde_json::from_value::<AnomalyShape>(j).unwrap(), s);
        let old: AnomalyShape =
            serde_json::from_str(r#"{"triePath":"web:1/sh/xmrig","bucket":18446744073709551614}"#)
                .unwrap();
        assert_eq!(old, s);
        for bucket in [0x1e5, 0x1234, 0] {
            let s = AnomalyShape::new("x", bucket);
            let y = serde_saphyr::to_string(&s).unwrap();
            assert_eq!(
                serde_saphyr::from_str::<AnomalyShape>(&y).unwrap(),
                s,
                "{y}"
            );
        }
    }

    #[test]
    fn a_signal_without_its_fields_is_refused() {
        let e = serde_json::from_str::<Signal>(r#"{"kind":"UnknownFile","path":"/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("access"), "{e}");
    }
}
