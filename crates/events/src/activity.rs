//! What an event means to a profile, as owned values shared by the node
//! agent (which computes it at the edge) and the operator (which learns and
//! scores it): the workload an event belongs to, the activity of the three
//! classes, and the one definition of file access kinds, connection
//! directions and transport protocols that profiles, rules and the wire use.
//!
//! Which fields of an [`Event`] form an activity is decided in one place,
//! `kestrel_profile::activity_of`.

use crate::event::{Ancestor, Direction, Event, FileAccess};
use std::net::IpAddr;

impl FileAccess {
    /// All kinds.
    pub const ALL: [FileAccess; 6] = [
        FileAccess::Read,
        FileAccess::Write,
        FileAccess::Create,
        FileAccess::Delete,
        FileAccess::Rename,
        FileAccess::Exec,
    ];

    /// Lower-case name, as in profiles, rules and alerts (`read`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FileAccess::Read => "read",
            FileAccess::Write => "write",
            FileAccess::Create => "create",
            FileAccess::Delete => "delete",
            FileAccess::Rename => "rename",
            FileAccess::Exec => "exec",
        }
    }

    /// Parses [`FileAccess::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        FileAccess::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl Direction {
    /// All directions.
    pub const ALL: [Direction; 3] = [Direction::Outbound, Direction::Inbound, Direction::Listen];

    /// Lower-case name, as in profiles, rules and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Listen => "listen",
        }
    }

    /// Parses [`Direction::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Direction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Transport protocol of network activity.
///
/// Serialised (profiles, alerts, rules) as its key: `tcp`, `udp`, `icmp`,
/// or `ip<N>` for any other IP protocol number. A unix-socket peer has no IP
/// protocol and is `ip0`, its peer is the socket's name (`unix:<path>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6.
    Icmp,
    /// Any other IP protocol number (0 for unix sockets).
    Other(u8),
}

impl Protocol {
    /// From the kernel's IP protocol number (`IPPROTO_*`).
    pub fn from_ip_number(n: u16) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 | 58 => Protocol::Icmp,
            n => Protocol::Other(u8::try_from(n).unwrap_or(u8::MAX)),
        }
    }

    /// Trie key and text form: `tcp`, `udp`, `icmp`, or `ip<N>`.
    #[inline]
    pub fn key(self) -> ProtocolKey {
        // the common ones are constants: this runs for every network event
        const fn fixed(s: &[u8]) -> ProtocolKey {
            let mut buf = [0u8; 5];
            let mut i = 0;
            while i < s.len() {
                buf[i] = s[i];
                i += 1;
            }
            ProtocolKey {
                buf,
                len: s.len() as u8,
            }
        }
        const TCP: ProtocolKey = fixed(b"tcp");
        const UDP: ProtocolKey = fixed(b"udp");
        const ICMP: ProtocolKey = fixed(b"icmp");
        let mut buf = [0u8; 5];
        let len = match self {
            Protocol::Tcp => return TCP,
            Protocol::Udp => return UDP,
            Protocol::Icmp => return ICMP,
            Protocol::Other(n) => {
                buf[0] = b'i';
                buf[1] = b'p';
                let mut digits = [0u8; 3];
                let mut i = digits.len();
                let mut v = n;
                loop {
                    i -= 1;
                    digits[i] = b'0' + v % 10;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                let d = &digits[i..];
                buf[2..2 + d.len()].copy_from_slice(d);
                2 + d.len()
            }
        };
        ProtocolKey {
            buf,
            len: len as u8,
        }
    }

    /// Parses [`Protocol::key`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            _ => s.strip_prefix("ip")?.parse().ok().map(Protocol::Other),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key().as_str())
    }
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key().as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Protocol::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown protocol {s:?} (expected tcp, udp, icmp or ip<N>)"
            ))
        })
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Protocol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Protocol".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Transport protocol: tcp, udp, icmp, or ip<N> for another IP protocol number (ip0: a unix socket).",
            "type": "string",
            "pattern": "^(tcp|udp|icmp|ip[0-9]{1,3})$",
            "maxLength": 5
        })
    }
}

/// The text of a [`Protocol`], on the stack.
#[derive(Debug, Clone, Copy)]
pub struct ProtocolKey {
    buf: [u8; 5],
    len: u8,
}

impl ProtocolKey {
    /// As bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// As text (always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("ip")
    }
}

/// The workload an event belongs to: what a profile is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Workload {
    /// Workload name (`Deployment/webapp`, or a container id in standalone).
    pub name: String,
    /// Container image (`nginx:1.27`), or empty when unknown.
    pub image: String,
    /// The pod the event came from, in a cluster (empty: unknown, or
    /// standalone, where the container id names the replica).
    pub pod: String,
    /// The node the pod runs on, in a cluster (empty: this host).
    pub node: String,
}

/// The other end of network activity, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An IP address.
    Ip(IpAddr),
    /// A socket name: a unix socket as `unix:<path>` (bytes as the kernel
    /// gave them), or a workload, service or DNS name.
    Name(Vec<u8>),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(ip) => write!(f, "{ip}"),
            Peer::Name(n) => f.write_str(&crate::escape_bytes(n)),
        }
    }
}

/// One event's profile input: the fields that form its trie path.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// An exec.
    Process {
        /// Parent process name.
        parent: Vec<u8>,
        /// Executable name.
        exe: Vec<u8>,
        /// Normalised argument text (after `argv[0]`).
        args: String,
        /// The raw argv, lossless text form, for alerts.
        argv: Vec<String>,
    },
    /// A file access.
    File {
        /// The acting process (comm).
        process: Vec<u8>,
        /// Access kind.
        access: FileAccess,
        /// Path bytes.
        path: Vec<u8>,
    },
    /// A connection or listener.
    Network {
        /// The acting process (comm).
        process: Vec<u8>,
        /// Direction.
        direction: Direction,
        /// Peer address (or a unix socket name).
        peer: Peer,
        /// Transport protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
}

/// An event the edge could not match, with what the operator needs to
/// learn it and to explain an alert about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    /// The event.
    pub event: Event,
    /// Its workload.
    pub workload: Workload,
    /// Its profile input.
    pub activity: Activity,
    /// The acting process (from the agent's process table), when known.
    pub process: Option<Ancestor>,
    /// The process chain above it, nearest first.
    pub chain: Vec<Ancestor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_keys_round_trip_for_every_ip_number() {
        for n in 0..=255u8 {
            let p = Protocol::Other(n);
            assert_eq!(Protocol::parse(p.key().as_str()), Some(p));
        }
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            assert_eq!(Protocol::parse(p.key().as_str()), Some(p));
        }
        assert_eq!(Protocol::Other(255).key().as_str(), "ip255");
    }

    #[test]
    fn icmp_and_icmpv6_are_icmp_not_tcp() {
        assert_eq!(Protocol::from_ip_number(1), Protocol::Icmp);
        assert_eq!(Protocol::from_ip_number(58), Protocol::Icmp);
        assert_eq!(Protocol::from_ip_number(6), Protocol::Tcp);
        assert_eq!(Protocol::from_ip_number(132), Protocol::Other(132));
    }

    #[test]
    fn access_and_direction_names_parse_back() {
        for a in FileAccess::ALL {
            assert_eq!(FileAccess::parse(a.as_str()), Some(a));
        }
        for d in Direction::ALL {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
        }
    }
}
