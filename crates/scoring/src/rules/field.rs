//! Which candidate fields a rule can test, and how their values are read.

use std::net::IpAddr;

use crate::candidate::{basename, CandidateAlert, PeerAddress, Signal};

/// A field a condition tests. Multi-valued fields match when any value does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    Exe,
    ExeName,
    Args,
    Arg,
    ArgsNormalized,
    ParentExe,
    ParentExeName,
    ParentArgs,
    AncestorExe,
    AncestorExeName,
    Namespace,
    Workload,
    Pod,
    Node,
    Image,
    ContainerId,
    Signal,
    FilePath,
    FileAccess,
    PeerAddr,
    PeerPort,
    PeerProto,
    PeerDirection,
    PeerName,
}

/// What kind of values a field has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Text,
    Addr,
    Port,
}

/// Every field with its rule name, for parsing and for the docs.
pub(crate) const FIELDS: &[(&str, Field)] = &[
    ("exe", Field::Exe),
    ("exe_name", Field::ExeName),
    ("args", Field::Args),
    ("arg", Field::Arg),
    ("args_normalized", Field::ArgsNormalized),
    ("parent.exe", Field::ParentExe),
    ("parent.exe_name", Field::ParentExeName),
    ("parent.args", Field::ParentArgs),
    ("ancestors.exe", Field::AncestorExe),
    ("ancestors.exe_name", Field::AncestorExeName),
    ("namespace", Field::Namespace),
    ("workload", Field::Workload),
    ("pod", Field::Pod),
    ("node", Field::Node),
    ("image", Field::Image),
    ("container_id", Field::ContainerId),
    ("signal", Field::Signal),
    ("file.path", Field::FilePath),
    ("file.access", Field::FileAccess),
    ("peer.addr", Field::PeerAddr),
    ("peer.port", Field::PeerPort),
    ("peer.proto", Field::PeerProto),
    ("peer.direction", Field::PeerDirection),
    ("peer.name", Field::PeerName),
];

impl Field {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub(crate) fn kind(self) -> FieldKind {
        match self {
            Self::PeerAddr => FieldKind::Addr,
            Self::PeerPort => FieldKind::Port,
            _ => FieldKind::Text,
        }
    }

    /// Calls `f` on each text value of the field (none for address and
    /// port fields, which are tested with [`Field::any_addr`] and
    /// [`Field::any_port`]).
    #[inline]
    pub(crate) fn for_each_text(self, c: &CandidateAlert, mut f: impl FnMut(&str)) {
        match self {
            Self::Exe => f(&c.exe),
            Self::ExeName => f(c.exe_name()),
            Self::Args => f(c.args.line()),
            Self::Arg => c.args.raw().iter().skip(1).for_each(|a| f(a)),
            Self::ArgsNormalized => f(c.args.normalized()),
            Self::ParentExe => {
                if let Some(p) = c.chain.first() {
                    f(&p.exe)
                }
            }
            Self::ParentExeName => {
                if let Some(p) = c.chain.first() {
                    f(basename(&p.exe))
                }
            }
            Self::ParentArgs => {
                if let Some(p) = c.chain.first() {
                    // Joining allocates; parent.args is rare in rules.
                    f(&p.args.join(" "))
                }
            }
            Self::AncestorExe => c.chain.iter().for_each(|p| f(&p.exe)),
            Self::AncestorExeName => c.chain.iter().for_each(|p| f(basename(&p.exe))),
            Self::Namespace => f(&c.namespace),
            Self::Workload => f(&c.workload),
            Self::Pod => f(&c.pod),
            Self::Node => f(&c.node),
            Self::Image => f(&c.image),
            Self::ContainerId => f(&c.container_id),
            Self::Signal => c.signals.iter().for_each(|s| f(s.kind())),
            Self::FilePath => c.signals.iter().for_each(|s| match s {
                Signal::UnknownFile { path, .. } | Signal::FailedExec { path, .. } => f(path),
                _ => {}
            }),
            Self::FileAccess => c.signals.iter().for_each(|s| match s {
                Signal::UnknownFile { access, .. } => f(access.as_str()),
                Signal::FailedExec { .. } => f(kestrel_events::FileAccess::Exec.as_str()),
                _ => {}
            }),
            Self::PeerProto => c.signals.iter().for_each(|s| {
                if let Signal::UnknownPeer { proto, .. } = s {
                    f(proto.key().as_str())
                }
            }),
            Self::PeerDirection => c.signals.iter().for_each(|s| {
                if let Signal::UnknownPeer { direction, .. } = s {
                    f(direction.as_str())
                }
            }),
            Self::PeerName => c.signals.iter().for_each(|s| {
                if let Signal::UnknownPeer {
                    addr: PeerAddress::Name(n),
                    ..
                } = s
                {
                    f(n)
                }
            }),
            Self::PeerAddr | Self::PeerPort => {}
        }
    }

    /// Whether any peer address satisfies `p`.
    #[inline]
    pub(crate) fn any_addr(c: &CandidateAlert, p: impl Fn(&IpAddr) -> bool) -> bool {
        c.signals.iter().any(|s| match s {
            Signal::UnknownPeer {
                addr: PeerAddress::Ip(addr),
                ..
            } => p(addr),
            _ => false,
        })
    }

    /// Whether any peer port satisfies `p`.
    #[inline]
    pub(crate) fn any_port(c: &CandidateAlert, p: impl Fn(u16) -> bool) -> bool {
        c.signals.iter().any(|s| match s {
            Signal::UnknownPeer { port, .. } => p(*port),
            _ => false,
        })
    }
}
