//! What BGP and BFD sessions need to know about the links they run over: the interface
//! index of a link-local neighbor (its scope), and the IPv6 next hops to announce (RFC 2545:
//! a global address, plus our link-local address when the peer shares the link).
//!
//! Input: the kernel's IPv6 address table as `/proc/net/if_inet6` shows it (per network
//! namespace, read through `/proc/self/net`; every interface a link-local session can run
//! over has a link-local address, so it is there). Parsing and the choice of next hops are
//! pure; [`read`] is the only I/O. Read when a session connects and when it comes up, so an
//! interface created or renumbered later is seen on the next session (the next hops are fixed
//! for the life of a session).
//!
//! Next hops for a session whose local end is `local` and peer `peer`:
//! - the interface is the one holding `local` (for a link-local session, the socket's
//!   scope);
//! - global: `local` itself when it is global; on a link-local session, a global address of
//!   that interface (not deprecated, not temporary), or `::` when it has none (what BIRD
//!   sends; BIRD 2.0.12 and FRR 8.4 — FRR from 7.4 on — then use the link-local one, tested);
//! - link-local: our link-local address on that interface, when the peer is on the link (a
//!   link-local peer, or one inside a prefix of the interface); never for a peer reached
//!   through a router (a loopback-to-loopback session), where it would be unreachable.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// One IPv6 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr6 {
    pub address: Ipv6Addr,
    pub ifindex: u32,
    pub prefix_len: u8,
    /// Link-local scope (`IFA_RT_SCOPE` 0x20 in the table).
    pub link_local: bool,
    /// Global scope, neither deprecated nor temporary: fit to be a next hop.
    pub global: bool,
    /// Still in duplicate address detection, or failed it: not usable yet.
    pub tentative: bool,
    pub interface: String,
}

const SCOPE_LINK: u32 = 0x20;
const SCOPE_GLOBAL: u32 = 0;
const IFA_F_TEMPORARY: u32 = 0x01;
const IFA_F_DEPRECATED: u32 = 0x20;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

/// Parses `/proc/net/if_inet6`: `address ifindex prefix-len scope flags name`, hex fields.
pub fn parse(text: &str) -> Vec<Addr6> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [addr, ifindex, plen, scope, flags, name] = f[..] else {
                return None;
            };
            let address = Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let scope = u32::from_str_radix(scope, 16).ok()?;
            Some(Addr6 {
                address,
                ifindex: u32::from_str_radix(ifindex, 16).ok()?,
                prefix_len: u8::from_str_radix(plen, 16).ok()?,
                link_local: scope == SCOPE_LINK,
                global: scope == SCOPE_GLOBAL && flags & (IFA_F_TEMPORARY | IFA_F_DEPRECATED) == 0,
                tentative: flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0,
                interface: name.to_string(),
            })
        })
        .collect()
}

/// This network namespace's IPv6 addresses (none when IPv6 is off).
pub fn read() -> Vec<Addr6> {
    std::fs::read_to_string("/proc/self/net/if_inet6")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The index of `interface`, if it has an IPv6 address (a link-local session needs one).
pub fn ifindex(addrs: &[Addr6], interface: &str) -> Option<u32> {
    addrs
        .iter()
        .find(|a| a.interface == interface)
        .map(|a| a.ifindex)
}

/// The name of the interface with index `ifindex`, if it has an IPv6 address.
pub fn interface_name(addrs: &[Addr6], ifindex: u32) -> Option<String> {
    addrs
        .iter()
        .find(|a| a.ifindex == ifindex)
        .map(|a| a.interface.clone())
}

/// The index of `interface` from this namespace's table, or what to do about it.
pub fn resolve(interface: &str) -> Result<u32, String> {
    ifindex(&read(), interface).ok_or_else(|| {
        format!(
            "interface {interface} does not exist or has no IPv6 link-local address; \
             bring it up with IPv6 enabled (sysctl net.ipv6.conf.{interface}.disable_ipv6=0)"
        )
    })
}

/// The index of `interface` now, if it has one.
pub fn index_of(interface: &str) -> Option<u32> {
    ifindex(&read(), interface)
}

/// Whether an IPv6 address is link-local (fe80::/10).
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

fn in_prefix(a: &Addr6, peer: &Ipv6Addr) -> bool {
    let bits = u32::from(a.prefix_len.min(128));
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    (u128::from(a.address) & mask) == (u128::from(*peer) & mask)
}

/// The IPv6 next hops (global, link-local) for a session from `local` to `peer`; `None` for
/// an IPv4 session.
pub fn next_hops(
    addrs: &[Addr6],
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<(Ipv6Addr, Option<Ipv6Addr>)> {
    let (SocketAddr::V6(local), SocketAddr::V6(peer)) = (local, peer) else {
        return None;
    };
    // An IPv4-mapped local address is an IPv4 session on a dual-stack socket.
    if local.ip().to_ipv4_mapped().is_some() {
        return None;
    }
    let link_local_session = is_link_local(local.ip());
    let ifindex = if link_local_session {
        Some(local.scope_id()).filter(|i| *i != 0)
    } else {
        addrs
            .iter()
            .find(|a| a.address == *local.ip())
            .map(|a| a.ifindex)
    };
    let on_if = |a: &&Addr6| Some(a.ifindex) == ifindex && !a.tentative;
    let global = if link_local_session {
        addrs
            .iter()
            .filter(on_if)
            .find(|a| a.global)
            .map_or(Ipv6Addr::UNSPECIFIED, |a| a.address)
    } else {
        *local.ip()
    };
    let on_link = is_link_local(peer.ip())
        || addrs
            .iter()
            .filter(on_if)
            .any(|a| a.global && in_prefix(a, peer.ip()));
    let ll = if link_local_session {
        Some(*local.ip())
    } else if on_link {
        addrs
            .iter()
            .filter(on_if)
            .find(|a| a.link_local)
            .map(|a| a.address)
    } else {
        None
    };
    Some((global, ll))
}

/// The address a neighbor is known by: `fe80::1%swp1` for a link-local one.
pub fn neighbor_name(address: IpAddr, interface: Option<&str>) -> String {
    match interface {
        Some(i) => format!("{address}%{i}"),
        None => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;

    /// A switch with a numbered uplink (swp1: global /64 and link-local), an unnumbered one
    /// (swp2: link-local, and a deprecated global that must not be used), one still in DAD
    /// (swp3) and services on lo.
    const TABLE: &str = "\
20010db8000200000000000000000002 03 40 00 80     swp1
fe800000000000000000000000000002 03 40 20 80     swp1
fe800000000000000000000000000022 04 40 20 80     swp2
fe800000000000000000000000000033 05 40 20 c0     swp3
20010db8000400000000000000000004 04 40 00 a0     swp2
20010db8010000000000000000000014 01 80 00 80       lo
00000000000000000000000000000001 01 80 10 80       lo
";

    fn v6(a: &str, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(a.parse().unwrap(), 179, 0, scope))
    }

    #[test]
    fn the_table_is_read_with_scope_and_state() {
        let t = parse(TABLE);
        assert_eq!(t.len(), 7);
        assert!(
            t[0].global && !t[1].global && !t[4].global,
            "deprecated is not usable"
        );
        assert_eq!(t[0].address, "2001:db8:2::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((t[0].ifindex, t[0].prefix_len), (3, 64));
        assert!(!t[0].link_local && t[1].link_local);
        assert!(t[3].tentative && !t[2].tentative);
        assert_eq!(t[5].interface, "lo");
        assert_eq!(ifindex(&t, "swp2"), Some(4));
        assert_eq!(ifindex(&t, "swp9"), None);
        assert_eq!(interface_name(&t, 4).as_deref(), Some("swp2"));
        assert_eq!(interface_name(&t, 9), None);
        assert!(parse("garbage\n1 2 3\n").is_empty());
    }

    #[test]
    fn a_global_session_on_a_shared_link_sends_both_next_hops() {
        let t = parse(TABLE);
        let nh = next_hops(&t, v6("2001:db8:2::2", 0), v6("2001:db8:2::1", 0));
        assert_eq!(
            nh,
            Some((
                "2001:db8:2::2".parse().unwrap(),
                Some("fe80::2".parse().unwrap())
            ))
        );
    }

    #[test]
    fn a_peer_behind_a_router_gets_no_link_local_next_hop() {
        let t = parse(TABLE);
        // From the loopback to a peer's loopback, and from the uplink to a far address.
        let nh = next_hops(&t, v6("2001:db8:100::14", 0), v6("2001:db8:9::1", 0));
        assert_eq!(nh, Some(("2001:db8:100::14".parse().unwrap(), None)));
        let nh = next_hops(&t, v6("2001:db8:2::2", 0), v6("2001:db8:9::1", 0));
        assert_eq!(nh, Some(("2001:db8:2::2".parse().unwrap(), None)));
    }

    #[test]
    fn a_link_local_session_sends_the_interface_s_global_or_nothing_there() {
        let t = parse(TABLE);
        let nh = next_hops(&t, v6("fe80::22", 4), v6("fe80::1", 4));
        assert_eq!(
            nh,
            Some((Ipv6Addr::UNSPECIFIED, Some("fe80::22".parse().unwrap())))
        );
        let nh = next_hops(&t, v6("fe80::2", 3), v6("fe80::1", 3));
        assert_eq!(
            nh,
            Some((
                "2001:db8:2::2".parse().unwrap(),
                Some("fe80::2".parse().unwrap())
            ))
        );
    }

    #[test]
    fn ipv4_sessions_have_no_ipv6_next_hops() {
        let t = parse(TABLE);
        let v4: SocketAddr = "192.0.2.2:179".parse().unwrap();
        assert_eq!(next_hops(&t, v4, "192.0.2.1:179".parse().unwrap()), None);
        let mapped = v6("::ffff:192.0.2.2", 0);
        assert_eq!(next_hops(&t, mapped, v6("::ffff:192.0.2.1", 0)), None);
    }

    #[test]
    fn link_local_neighbors_are_named_with_their_interface() {
        let a: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(neighbor_name(a, Some("swp1")), "fe80::1%swp1");
        assert_eq!(
            neighbor_name("192.0.2.1".parse().unwrap(), None),
            "192.0.2.1"
        );
    }
}
