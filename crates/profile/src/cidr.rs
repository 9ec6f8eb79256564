//! IP networks for collapsing network peers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network (`10.0.0.0/8`, `fd00::/8`), always stored masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits (clamped to the family's width).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let prefix = prefix.min(max_prefix(addr));
        Cidr {
            addr: mask(addr, prefix),
            prefix,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether `other` is inside (or equal to) this network.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Parses `a.b.c.d/n` or `x::/n`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        if prefix > max_prefix(addr) {
            return None;
        }
        Some(Cidr::new(addr, prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

pub(crate) fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// The collapse ladder: prefix lengths tried in turn, narrowest first.
pub(crate) fn ladder(addr: IpAddr, step: usize) -> u8 {
    const V4: [u8; 4] = [24, 16, 8, 0];
    const V6: [u8; 4] = [64, 48, 32, 0];
    let l = if addr.is_ipv4() { V4 } else { V6 };
    l[step.min(3)]
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_and_subnets() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(c.contains_cidr(&Cidr::parse("10.1.2.0/24").unwrap()));
        assert!(!c.contains_cidr(&Cidr::parse("10.0.0.0/8").unwrap()));
        assert_eq!(
            Cidr::new("10.1.2.3".parse().unwrap(), 8).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
