//! Who a connection comes from, as the per-peer limits count it: an IPv4
//! address, or an IPv6 /64 (one host usually holds a whole /64, so counting
//! single IPv6 addresses would let one host pose as billions of peers).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(addr: SocketAddr) -> Peer {
        match addr.ip() {
            IpAddr::V4(v4) => Peer(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
                Some(v4) => Peer(IpAddr::V4(v4)),
                None => Peer(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Peer {
        Peer::of(s.parse().unwrap())
    }

    #[test]
    fn ipv4_by_address_ipv6_by_64() {
        assert_eq!(peer("10.0.0.1:1"), peer("10.0.0.1:2"));
        assert_ne!(peer("10.0.0.1:1"), peer("10.0.0.2:1"));
        assert_eq!(peer("[::ffff:10.0.0.1]:5"), peer("10.0.0.1:1"));
        assert_eq!(peer("[2001:db8:1:2::1]:1"), peer("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1"));
        assert_ne!(peer("[2001:db8:1:2::1]:1"), peer("[2001:db8:1:3::1]:1"));
        assert_eq!(peer("[2001:db8:1:2::1]:1").0, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
