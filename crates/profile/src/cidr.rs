//! IP networks for collapsing network peers: [`ipnet::IpNet`], the same type
//! the rules' `cidr:` operator uses, always stored truncated to its network
//! address (`10.1.2.3/8` is kept as `10.0.0.0/8`).

use std::net::IpAddr;

use ipnet::IpNet;

/// The network of `addr` with `prefix` bits (clamped to the family's width).
pub fn network(addr: IpAddr, prefix: u8) -> IpNet {
    let prefix = prefix.min(max_prefix(addr));
    IpNet::new(addr, prefix)
        .expect("the prefix is clamped to the family's width")
        .trunc()
}

/// Parses `a.b.c.d/n` or `x::/n` (host bits are cleared).
pub fn parse(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// Whether `ip` is inside `net` (stored truncated, see [`network`]): one
/// mask and compare. `IpNet::contains` computes the network and broadcast
/// addresses on every call, which cost 10 % of learning new peers
/// (`docs/benchmarks/hand-written-vs-crates.md`).
#[inline]
pub(crate) fn contains(net: &IpNet, ip: &IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let p = u32::from(n.prefix_len());
            let m = u32::MAX.checked_shl(32 - p).unwrap_or(0);
            (u32::from(*a) ^ u32::from(n.addr())) & m == 0
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let p = u32::from(n.prefix_len());
            let m = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            (u128::from(*a) ^ u128::from(n.addr())) & m == 0
        }
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_and_subnets() {
        let c = parse("10.1.0.0/16").unwrap();
        assert!(c.contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"10.2.0.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"::1".parse::<IpAddr>().unwrap()));
        assert!(c.contains(&parse("10.1.2.0/24").unwrap()));
        assert!(!c.contains(&parse("10.0.0.0/8").unwrap()));
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 8).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse("::/0").unwrap().to_string(), "::/0");
        assert!(parse("10.0.0.0/33").is_none());
        assert!(parse("10.0.0.0").is_none());
    }

    #[test]
    fn the_fast_containment_agrees_with_ipnet() {
        let nets = [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.1.2.3/32",
            "10.1.0.0/16",
            "::/0",
            "fd00::/8",
            "fd00::1/128",
        ];
        let ips = [
            "10.1.2.3", "10.1.2.4", "11.0.0.1", "0.0.0.0", "fd00::1", "fd00::2", "fe80::1", "::",
        ];
        for n in nets {
            let n = parse(n).unwrap();
            for ip in ips {
                let ip: IpAddr = ip.parse().unwrap();
                assert_eq!(contains(&n, &ip), n.contains(&ip), "{n} {ip}");
            }
        }
    }
}
