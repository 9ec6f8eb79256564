//! The scoring input: one anomaly with its full context.
//!
//! Everything here is plain data that the caller (the operator) fills from
//! the node agent's anomaly and the Kubernetes API. Strings that came from the
//! kernel are already lossily displayed by the caller; this crate never sees
//! raw bytes.

use std::hash::Hasher;

use kestrel_events::hash::Fnv64;
use serde::{Deserialize, Serialize};

// The evidence types are defined once, in `kestrel-api` (the alert
// embeds them); re-exported here where they have always been.
pub use kestrel_api::{
    AnomalyShape, Direction, FileAccess, PeerAddress, ProcessAncestor, Protocol, Signal,
};

/// A shape derived from the candidate alone: trie path
/// `image/parent/exe/<signal kinds>` and a stable hash of the normalised
/// arguments and of the file paths and peers of the signals (ports and
/// addresses included, so two different peers are two shapes). With
/// `args_bucket`, the arguments enter the hash as that similarity bucket
/// instead of their exact text.
fn derived_shape(c: &CandidateAlert, args_bucket: Option<u64>) -> AnomalyShape {
    let mut h = Fnv64::new();
    match args_bucket {
        Some(b) => {
            h.write_field(b"bucket");
            h.write_field(&b.to_le_bytes());
        }
        None => h.write_field(c.args.normalized().as_bytes()),
    }
    for s in &c.signals {
        match s {
            Signal::UnknownFile { path, access, .. } => {
                h.write_field(path.as_bytes());
                h.write_field(access.as_str().as_bytes());
            }
            Signal::UnknownPeer {
                addr,
                port,
                proto,
                direction,
            } => {
                h.write_field(addr.to_string().as_bytes());
                h.write_field(&port.to_le_bytes());
                h.write_field(proto.key().as_bytes());
                h.write_field(direction.as_str().as_bytes());
            }
            Signal::FailedExec { path, error, .. } => {
                h.write_field(path.as_bytes());
                h.write_field(error.as_bytes());
            }
            Signal::UnknownProcess | Signal::UnusualArguments { .. } => {}
        }
    }
    AnomalyShape::new(c.shape_trie_path(), h.finish())
}

/// Process arguments: raw argv (argv\[0\] included), the command line joined
/// once for matching, and the profile's normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ArgumentsWire", into = "ArgumentsWire")]
pub struct Arguments {
    raw: Vec<String>,
    line: String,
    normalized: String,
}

impl Arguments {
    /// Arguments from raw argv and the normalised text (for example with
    /// timestamps and ids replaced by placeholders). An empty `normalized`
    /// falls back to the joined raw command line.
    pub fn new(
        raw: impl IntoIterator<Item = impl Into<String>>,
        normalized: impl Into<String>,
    ) -> Self {
        let raw: Vec<String> = raw.into_iter().map(Into::into).collect();
        let line = raw.join(" ");
        let mut normalized = normalized.into();
        if normalized.is_empty() {
            normalized.clone_from(&line);
        }
        Self {
            raw,
            line,
            normalized,
        }
    }

    /// Raw argv, argv\[0\] included.
    pub fn raw(&self) -> &[String] {
        &self.raw
    }

    /// Raw argv joined by single spaces.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The normalised argument text.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

impl Default for Arguments {
    fn default() -> Self {
        Self::new(Vec::<String>::new(), "")
    }
}

#[derive(Serialize, Deserialize)]
struct ArgumentsWire {
    raw: Vec<String>,
    #[serde(default)]
    normalized: String,
}

impl From<ArgumentsWire> for Arguments {
    fn from(w: ArgumentsWire) -> Self {
        Self::new(w.raw, w.normalized)
    }
}

impl From<Arguments> for ArgumentsWire {
    fn from(a: Arguments) -> Self {
        Self {
            raw: a.raw,
            normalized: a.normalized,
        }
    }
}

/// One anomaly with its full context: the scoring input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateAlert {
    /// Namespace of the pod.
    pub namespace: String,
    /// Owning workload, `Kind/name` (for example `Deployment/webapp`).
    pub workload: String,
    /// Pod name.
    pub pod: String,
    /// Container id.
    pub container_id: String,
    /// Node name.
    pub node: String,
    /// Container image reference.
    pub image: String,
    /// Process id (in the host PID namespace).
    pub pid: u32,
    /// Executable path.
    pub exe: String,
    /// Arguments.
    pub args: Arguments,
    /// Ancestors, direct parent first, up to the container's init.
    #[serde(default)]
    pub chain: Vec<ProcessAncestor>,
    /// What the profile found unusual (at least one).
    pub signals: Vec<Signal>,
    /// When the event happened, ns since the Unix epoch.
    pub observed_ns: u64,
    /// How many replicas the workload has now, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_replicas: Option<u32>,
    /// When the workload last rolled out (pod template changed), ns since the
    /// Unix epoch, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_rollout_ns: Option<u64>,
    /// The shape key; `None` derives one (see [`CandidateAlert::shape`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<AnomalyShape>,
}

impl CandidateAlert {
    /// The last path component of [`Self::exe`].
    pub fn exe_name(&self) -> &str {
        basename(&self.exe)
    }

    /// The shape given by the profile, or one derived from the candidate:
    /// trie path `image/parent/exe/<signal kinds>` and a stable hash of the
    /// normalised arguments and of the file paths and peers of the signals
    /// (ports and addresses included, so two different peers are two
    /// shapes).
    pub fn shape(&self) -> AnomalyShape {
        self.shape
            .clone()
            .unwrap_or_else(|| derived_shape(self, None))
    }

    /// The trie path of the shape: `image/parent/exe/<signal kinds>`. It is
    /// also the key under which the profile buckets similar arguments.
    pub fn shape_trie_path(&self) -> String {
        let parent = self
            .chain
            .first()
            .map(ProcessAncestor::exe_name)
            .unwrap_or("");
        let mut path = format!("{}/{}/{}", self.image, parent, self.exe_name());
        for s in &self.signals {
            path.push('/');
            path.push_str(s.kind());
        }
        path
    }

    /// The shape with the arguments given as the profile's similarity
    /// bucket (`kestrel_profile::Profile::anomaly_bucket`) rather than their
    /// exact text; the files and peers of the signals still count exactly.
    pub fn shape_with_args_bucket(&self, bucket: u64) -> AnomalyShape {
        derived_shape(self, Some(bucket))
    }
}

pub(crate) use kestrel_api::basename;

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for tests.
    use super::*;

    /// A candidate in `shop/Deployment/webapp`, pod `webapp-0`, started by
    /// `bash` under `java`, with an `UnknownProcess` signal.
    pub fn candidate(exe: &str, argv: &[&str]) -> CandidateAlert {
        CandidateAlert {
            namespace: "shop".into(),
            workload: "Deployment/webapp".into(),
            pod: "webapp-0".into(),
            container_id: "containerd://abc".into(),
            node: "node-1".into(),
            image: "registry.example/webapp:v1".into(),
            pid: 4242,
            exe: exe.into(),
            args: Arguments::new(argv.iter().copied(), ""),
            chain: vec![
                ProcessAncestor::new("/bin/bash", ["bash"]),
                ProcessAncestor::new("/usr/bin/java", ["java", "-jar", "app.jar"]),
            ],
            signals: vec![Signal::UnknownProcess],
            observed_ns: 1_700_000_000_000_000_000,
            workload_replicas: Some(100),
            workload_rollout_ns: None,
            shape: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::candidate;
    use super::*;

    #[test]
    fn arguments_join_raw_argv_and_default_the_normalised_form() {
        let a = Arguments::new(["xmrig", "-o", "pool"], "");
        assert_eq!(a.line(), "xmrig -o pool");
        assert_eq!(a.normalized(), "xmrig -o pool");
    }

    #[test]
    fn arguments_round_trip_through_json() {
        let a = Arguments::new(["a", "b c"], "a <n>");
        let j = serde_json::to_string(&a).unwrap();
        let b: Arguments = serde_json::from_str(&j).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn derived_shapes_are_equal_for_repeats_and_differ_for_other_arguments() {
        let a = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let mut b = a.clone();
        b.pod = "webapp-7".into();
        b.pid = 9;
        assert_eq!(a.shape(), b.shape());
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "other.pool"]);
        assert_ne!(a.shape(), c.shape());
        assert_eq!(
            a.shape().trie_path,
            "registry.example/webapp:v1/bash/xmrig/unknown_process"
        );
    }

    #[test]
    fn a_similarity_bucket_stands_for_the_arguments_but_files_still_count_exactly() {
        let a = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
        let c = candidate("/tmp/xmrig", &["xmrig", "-o", "other.pool"]);
        assert_eq!(a.shape_with_args_bucket(7), c.shape_with_args_bucket(7));
        assert_ne!(a.shape_with_args_bucket(7), a.shape_with_args_bucket(8));
        assert_ne!(a.shape_with_args_bucket(7), a.shape());
        assert_eq!(a.shape_with_args_bucket(7).trie_path, a.shape().trie_path);
        let file = |path: &str| {
            let mut f = a.clone();
            f.signals = vec![Signal::UnknownFile {
                path: path.into(),
                access: FileAccess::Read,
                raw_path: None,
            }];
            f
        };
        assert_ne!(
            file("/etc/shadow").shape_with_args_bucket(7),
            file("/etc/gshadow").shape_with_args_bucket(7)
        );
    }

    #[test]
    fn signals_serialise_with_a_pascal_case_kind_and_keep_their_rule_names() {
        let s = Signal::UnknownFile {
            path: "/etc/shadow".into(),
            access: FileAccess::Read,
            raw_path: None,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "UnknownFile");
        assert_eq!(j["access"], "Read");
        assert_eq!(s.kind(), "unknown_file");
        assert_eq!(FileAccess::Read.as_str(), "read");
    }
}
