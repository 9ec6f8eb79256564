//! What the profile is asked about: events of the three activity classes, and
//! the answers.

use std::fmt;
use std::net::IpAddr;

/// The three activity classes, each with its own trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActivityClass {
    /// Process executions: image → parent → exe, arguments at the leaf.
    Process,
    /// File accesses: image → process → access kind → path segments.
    File,
    /// Network activity: image → process → direction → peer → protocol → port.
    Network,
}

impl ActivityClass {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityClass::Process => "process",
            ActivityClass::File => "file",
            ActivityClass::Network => "network",
        }
    }
}

pub use kestrel_events::{Direction, FileAccess as Access, Protocol, ProtocolKey};

/// The other end of network activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer<'a> {
    /// An address.
    Ip(IpAddr),
    /// A name: workload, service or DNS name. A name that parses as an IP address
    /// or network is read back from YAML as that address.
    Name(&'a [u8]),
}

/// A process execution. Fields from the kernel are bytes, kept losslessly.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEvent<'a> {
    /// Container image (`nginx:latest`).
    pub image: &'a [u8],
    /// Parent process (name or exe path).
    pub parent: &'a [u8],
    /// The executed process (name or exe path).
    pub exe: &'a [u8],
    /// The argument string, already normalised (e.g. by `kestrel_embed::normalize`
    /// of the lossless text form of argv).
    pub args: &'a str,
}

/// A file access.
#[derive(Debug, Clone, Copy)]
pub struct FileEvent<'a> {
    /// Container image.
    pub image: &'a [u8],
    /// The accessing process.
    pub process: &'a [u8],
    /// Kind of access.
    pub access: Access,
    /// The path as the kernel reported it.
    pub path: &'a [u8],
}

/// Network activity.
#[derive(Debug, Clone, Copy)]
pub struct NetworkEvent<'a> {
    /// Container image.
    pub image: &'a [u8],
    /// The process.
    pub process: &'a [u8],
    /// Direction.
    pub direction: Direction,
    /// The peer.
    pub peer: Peer<'a>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Remote port (outbound) or local port (inbound, listen).
    pub port: u16,
}

/// An event of any class.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A process execution.
    Process(ProcessEvent<'a>),
    /// A file access.
    File(FileEvent<'a>),
    /// Network activity.
    Network(NetworkEvent<'a>),
}

impl Event<'_> {
    /// The event's class.
    pub fn class(&self) -> ActivityClass {
        match self {
            Event::Process(_) => ActivityClass::Process,
            Event::File(_) => ActivityClass::File,
            Event::Network(_) => ActivityClass::Network,
        }
    }
}

/// The trie level at which a path left the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The container image (all classes).
    Image,
    /// The parent process (process class).
    Parent,
    /// The executed process (process class).
    Exe,
    /// The acting process (file and network classes).
    Process,
    /// The access kind (file class).
    Access,
    /// The file path segment with this index (0 = first below `/`); an index equal
    /// to the number of segments means the path itself is new although longer
    /// known paths run through it.
    PathSegment(u16),
    /// The direction (network class).
    Direction,
    /// The peer (network class).
    Peer,
    /// The protocol (network class).
    Protocol,
    /// The port (network class).
    Port,
}

impl Level {
    pub(crate) fn of(class: ActivityClass, depth: usize) -> Level {
        match (class, depth) {
            (_, 0) => Level::Image,
            (ActivityClass::Process, 1) => Level::Parent,
            (ActivityClass::Process, _) => Level::Exe,
            (_, 1) => Level::Process,
            (ActivityClass::File, 2) => Level::Access,
            (ActivityClass::File, d) => {
                Level::PathSegment(u16::try_from(d - 3).unwrap_or(u16::MAX))
            }
            (ActivityClass::Network, 2) => Level::Direction,
            (ActivityClass::Network, 3) => Level::Peer,
            (ActivityClass::Network, 4) => Level::Protocol,
            (ActivityClass::Network, _) => Level::Port,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Image => f.write_str("image"),
            Level::Parent => f.write_str("parent process"),
            Level::Exe => f.write_str("process"),
            Level::Process => f.write_str("process"),
            Level::Access => f.write_str("access kind"),
            Level::PathSegment(i) => write!(f, "path segment {i}"),
            Level::Direction => f.write_str("direction"),
            Level::Peer => f.write_str("peer"),
            Level::Protocol => f.write_str("protocol"),
            Level::Port => f.write_str("port"),
        }
    }
}

/// The answer of matching an event against a profile.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchOutcome {
    /// The profile knows this behaviour.
    Known,
    /// The path leaves the trie at `level`.
    NewBranch {
        /// Which trie.
        class: ActivityClass,
        /// Where it leaves the trie.
        level: Level,
    },
    /// The process path is known but the arguments are not similar enough to any
    /// exemplar.
    UnusualArguments {
        /// Argument similarity to the nearest exemplar
        /// ([`kestrel_embed::arg_similarity`]: the embeddings' angle plus the
        /// structural distance; the cosine when the shapes are equal). Say why
        /// with `ArgShape::of(nearest).diff(&ArgShape::of(args))`
        /// (`new flags -o -u -p`).
        best_similarity: f32,
        /// The nearest exemplar's (normalised) argument string.
        nearest_exemplar: String,
    },
}

impl MatchOutcome {
    /// Whether the answer is [`MatchOutcome::Known`].
    pub fn is_known(&self) -> bool {
        matches!(self, MatchOutcome::Known)
    }

    /// The anomaly signal name this answer raises in detection, if any:
    /// `unknown-process`, `unknown-file`, `unknown-peer` or `unusual-arguments`.
    pub fn signal(&self) -> Option<&'static str> {
        match self {
            MatchOutcome::Known => None,
            MatchOutcome::NewBranch { class, .. } => Some(match class {
                ActivityClass::Process => "unknown-process",
                ActivityClass::File => "unknown-file",
                ActivityClass::Network => "unknown-peer",
            }),
            MatchOutcome::UnusualArguments { .. } => Some("unusual-arguments"),
        }
    }
}

/// What learning an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the event was already known.
    None,
    /// A new branch (path) was added.
    Branch,
    /// A new argument exemplar was added (or merged into the leaf's set).
    Exemplar,
    /// A hard limit refused the addition (a never-collapsing node is full or the
    /// node budget is spent under a sensitive prefix). The event stays unknown.
    Refused,
}

impl Change {
    /// Whether this counts as growth for convergence (new branch, new exemplar,
    /// or a refused addition, which is still new behaviour).
    pub fn is_growth(self) -> bool {
        !matches!(self, Change::None)
    }
}

/// The result of learning one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// What matching said before learning.
    pub before: MatchOutcome,
    /// What learning changed.
    pub change: Change,
}
