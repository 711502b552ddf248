//! Received UPDATEs: checked the way RFC 7606 asks, and reduced to the prefixes that enter
//! or leave the neighbor's Adj-RIB-In.
//!
//! Import is deny-all (DESIGN.md): nothing received is installed or passed on. Received
//! routes are kept only to be counted and shown, and checked so that a broken or hostile
//! peer costs one session at most — and usually not even that. Pure: an UPDATE body and the
//! session's context in, a verdict out; the session applies it.
//!
//! What happens to a malformed UPDATE (RFC 7606 §3–§7, RFC 4271 §6.3):
//!
//! | problem                                                    | handling                       |
//! |------------------------------------------------------------|--------------------------------|
//! | Withdrawn Routes / Total Attribute Length past the message | session reset, 3/1             |
//! | a prefix that cannot be parsed (IPv4 NLRI or withdrawn)    | session reset, 3/10            |
//! | MP_REACH / MP_UNREACH malformed or repeated                | session reset, 3/9 or 3/1      |
//! | attribute headers that overrun the attribute field         | treat-as-withdraw (3/1 if MP_* seen) |
//! | unrecognized well-known attribute                          | session reset, 3/2             |
//! | wrong Optional/Transitive flags                            | treat-as-withdraw              |
//! | ORIGIN, AS_PATH, NEXT_HOP, MED, COMMUNITIES, LARGE_COMMUNITY, ORIGINATOR_ID, CLUSTER_LIST malformed | treat-as-withdraw |
//! | ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR malformed; LOCAL_PREF from an external peer | attribute discard |
//! | an attribute repeated (not MP_*)                           | all but the first discarded    |
//! | ORIGIN / AS_PATH / NEXT_HOP missing with NLRI present      | treat-as-withdraw              |
//! | our own AS in AS_PATH (a loop)                             | the routes are not accepted    |
//!
//! Treat-as-withdraw: every prefix the message carries is handled as withdrawn, so an earlier
//! good announcement of it does not linger. The session stays up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::wire::{Code, Notification};

/// What the session knows when an UPDATE arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub local_as: u32,
    /// Both sides announced 4-octet AS numbers: AS_PATH holds 4-octet numbers.
    pub four_octet: bool,
    /// The peer is in another AS.
    pub external: bool,
}

/// A checked UPDATE: the prefixes to add to and remove from the Adj-RIB-In.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The prefixes of the NLRI field first (`classic` of them, next hop in NEXT_HOP), then
    /// those of MP_REACH_NLRI (next hop in it).
    pub announced: Vec<IpNet>,
    pub classic: usize,
    pub withdrawn: Vec<IpNet>,
    /// What was wrong but did not cost the session, in words for the log and status.
    pub problem: Option<Problem>,
    /// What the announced routes carry that import and the FIB read.
    pub attrs: Attrs,
    /// The UPDATE is an End-of-RIB marker (RFC 4724 §2) for this AFI (1 IPv4, 2 IPv6).
    pub end_of_rib: Option<u16>,
}

/// The path attributes import reads (the rest is checked and dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// NEXT_HOP (for the NLRI field's prefixes).
    pub next_hop: Option<Ipv4Addr>,
    /// MP_REACH_NLRI's next hop: global and, when there are 32 octets, link-local.
    pub mp_next_hop: Option<(IpAddr, Option<Ipv6Addr>)>,
    /// AS_PATH length as best-path selection counts it (a set is one, confederation
    /// segments none).
    pub as_path_len: u32,
    /// LOCAL_PREF (internal peers only).
    pub local_pref: Option<u32>,
    /// COMMUNITIES holds LLGR_STALE (65535:6, RFC 9494): the least preferred path.
    pub llgr_stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// RFC 7606 treat-as-withdraw: the message's prefixes are all in `withdrawn`.
    TreatAsWithdraw(String),
    /// RFC 7606 attribute discard: the routes stand without the attribute.
    Discarded(String),
    /// Our AS in the AS_PATH: the routes are withdrawn rather than accepted (RFC 4271 §9.1.2).
    AsPathLoop,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TreatAsWithdraw(why) => write!(f, "treated as withdraw: {why}"),
            Problem::Discarded(why) => write!(f, "attribute discarded: {why}"),
            Problem::AsPathLoop => f.write_str("our AS is in the AS_PATH; routes not accepted"),
        }
    }
}

// Attribute type codes.
const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const ORIGINATOR_ID: u8 = 9;
const CLUSTER_LIST: u8 = 10;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const AS4_PATH: u8 = 17;
const AS4_AGGREGATOR: u8 = 18;
const LARGE_COMMUNITY: u8 = 32;

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED: u8 = 0x10;

fn reset(subcode: u8, data: &[u8]) -> Notification {
    Notification::new(Code::Update, subcode, data.to_vec())
}

/// Checks an UPDATE body (the bytes after the 19-octet header).
pub fn check(body: &[u8], ctx: &Context) -> Result<Checked, Notification> {
    let malformed_list = || reset(1, &[]);
    let wl = usize::from(u16::from_be_bytes([
        *body.first().ok_or_else(malformed_list)?,
        *body.get(1).ok_or_else(malformed_list)?,
    ]));
    let withdrawn_bytes = body.get(2..2 + wl).ok_or_else(malformed_list)?;
    let tal_at = 2 + wl;
    let tal = usize::from(u16::from_be_bytes([
        *body.get(tal_at).ok_or_else(malformed_list)?,
        *body.get(tal_at + 1).ok_or_else(malformed_list)?,
    ]));
    let attrs = body
        .get(tal_at + 2..tal_at + 2 + tal)
        .ok_or_else(malformed_list)?;
    let nlri_bytes = &body[tal_at + 2 + tal..];

    let invalid_network = || reset(10, &[]);
    let mut withdrawn: Vec<IpNet> = prefixes_v4(withdrawn_bytes)
        .ok_or_else(invalid_network)?
        .into_iter()
        .map(IpNet::V4)
        .collect();
    let mut announced: Vec<IpNet> = prefixes_v4(nlri_bytes)
        .ok_or_else(invalid_network)?
        .into_iter()
        .map(IpNet::V4)
        .collect();
    // NEXT_HOP is mandatory only for routes in the NLRI field; IPv4 routes in MP_REACH_NLRI
    // (RFC 8950) carry their next hop there (RFC 4760 §3).
    let classic_nlri = !announced.is_empty();
    let classic = announced.len();
    let mut attrs_out = Attrs::default();
    // An UPDATE with nothing but an empty MP_UNREACH_NLRI is an End-of-RIB.
    let mut only_empty_unreach: Option<u16> = None;
    let mut other_attributes = false;

    let mut seen = [false; 256];
    let mut withdraw_why: Option<String> = None;
    let mut discard_why: Option<String> = None;
    let mut looped = false;
    let mut rest = attrs;
    while !rest.is_empty() {
        // The attribute header and length; an overrun makes the rest unreadable.
        let Some((flags, kind, value, after)) = attribute(rest) else {
            if seen[usize::from(MP_REACH)] || seen[usize::from(MP_UNREACH)] {
                return Err(malformed_list());
            }
            withdraw_why.get_or_insert_with(|| "an attribute overruns the attribute field".into());
            break;
        };
        rest = after;
        if seen[usize::from(kind)] {
            if kind == MP_REACH || kind == MP_UNREACH {
                return Err(malformed_list());
            }
            discard_why.get_or_insert_with(|| format!("attribute {kind} repeated"));
            continue;
        }
        seen[usize::from(kind)] = true;
        other_attributes |= kind != MP_UNREACH;
        // Expected Optional/Transitive bits; None for attributes we do not know (kept as is).
        let expected = match kind {
            ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(TRANSITIVE),
            MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => Some(OPTIONAL),
            AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITY => {
                Some(OPTIONAL | TRANSITIVE)
            }
            _ => None,
        };
        if expected.is_none() && flags & OPTIONAL == 0 {
            // A well-known attribute we do not know: RFC 4271 §6.3 (RFC 7606 keeps it).
            return Err(reset(2, &raw_attribute(flags, kind, value)));
        }
        if let Some(e) = expected {
            if flags & (OPTIONAL | TRANSITIVE) != e {
                if kind == MP_REACH || kind == MP_UNREACH {
                    return Err(reset(4, &raw_attribute(flags, kind, value)));
                }
                withdraw_why.get_or_insert_with(|| format!("attribute {kind} has wrong flags"));
                continue;
            }
        }
        let len = value.len();
        match kind {
            ORIGIN if len != 1 || value[0] > 2 => {
                withdraw_why.get_or_insert_with(|| "malformed ORIGIN".into());
            }
            AS_PATH => match as_path(value, if ctx.four_octet { 4 } else { 2 }) {
                None => {
                    withdraw_why.get_or_insert_with(|| "malformed AS_PATH".into());
                }
                Some(path) => {
                    looped |= path.contains(&ctx.local_as);
                    attrs_out.as_path_len = path_length(value, if ctx.four_octet { 4 } else { 2 });
                }
            },
            NEXT_HOP if len != 4 => {
                withdraw_why.get_or_insert_with(|| "NEXT_HOP is not 4 octets".into());
            }
            NEXT_HOP => {
                attrs_out.next_hop = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
            }
            MED | ORIGINATOR_ID if len != 4 => {
                withdraw_why.get_or_insert_with(|| format!("attribute {kind} is not 4 octets"));
            }
            LOCAL_PREF if ctx.external => {
                discard_why.get_or_insert_with(|| "LOCAL_PREF from an external peer".into());
            }
            LOCAL_PREF if len != 4 => {
                withdraw_why.get_or_insert_with(|| "LOCAL_PREF is not 4 octets".into());
            }
            LOCAL_PREF => {
                attrs_out.local_pref =
                    Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
            }
            ATOMIC_AGGREGATE if len != 0 => {
                discard_why.get_or_insert_with(|| "ATOMIC_AGGREGATE is not empty".into());
            }
            AGGREGATOR if len != if ctx.four_octet { 8 } else { 6 } => {
                discard_why.get_or_insert_with(|| "malformed AGGREGATOR".into());
            }
            AS4_AGGREGATOR if len != 8 => {
                discard_why.get_or_insert_with(|| "malformed AS4_AGGREGATOR".into());
            }
            AS4_PATH if as_path(value, 4).is_none() => {
                discard_why.get_or_insert_with(|| "malformed AS4_PATH".into());
            }
            COMMUNITIES | CLUSTER_LIST if len == 0 || len % 4 != 0 => {
                withdraw_why.get_or_insert_with(|| format!("attribute {kind} length {len}"));
            }
            COMMUNITIES => {
                attrs_out.llgr_stale = value.chunks_exact(4).any(|c| c == LLGR_STALE);
            }
            LARGE_COMMUNITY if len == 0 || len % 12 != 0 => {
                withdraw_why.get_or_insert_with(|| format!("LARGE_COMMUNITY length {len}"));
            }
            MP_REACH => {
                let (_, _, prefixes) =
                    mp_reach(value).ok_or_else(|| reset(9, &raw_attribute(flags, kind, value)))?;
                announced.extend(prefixes);
                attrs_out.mp_next_hop = mp_next_hop(value);
            }
            MP_UNREACH => {
                let (afi, safi, prefixes) = mp_unreach(value)
                    .ok_or_else(|| reset(9, &raw_attribute(flags, kind, value)))?;
                if prefixes.is_empty() && safi == 1 {
                    only_empty_unreach = Some(afi);
                }
                withdrawn.extend(prefixes);
            }
            _ => {}
        }
    }
    // Mandatory attributes, when there is something to announce (RFC 7606 §3 d).
    if withdraw_why.is_none() && !announced.is_empty() {
        let missing = [(ORIGIN, "ORIGIN"), (AS_PATH, "AS_PATH")]
            .into_iter()
            .chain(classic_nlri.then_some((NEXT_HOP, "NEXT_HOP")))
            .find(|(k, _)| !seen[usize::from(*k)]);
        if let Some((_, name)) = missing {
            withdraw_why = Some(format!("{name} is missing"));
        }
    }
    let end_of_rib = if body.len() == 4 {
        Some(1)
    } else if announced.is_empty() && withdrawn.is_empty() && !other_attributes {
        only_empty_unreach
    } else {
        None
    };
    let problem = if let Some(why) = withdraw_why {
        withdrawn.append(&mut announced);
        Some(Problem::TreatAsWithdraw(why))
    } else if looped && !announced.is_empty() {
        withdrawn.append(&mut announced);
        Some(Problem::AsPathLoop)
    } else {
        discard_why.map(Problem::Discarded)
    };
    let classic = classic.min(announced.len());
    Ok(Checked {
        announced,
        classic,
        withdrawn,
        problem,
        attrs: attrs_out,
        end_of_rib,
    })
}

/// LLGR_STALE (RFC 9494), 65535:6.
const LLGR_STALE: [u8; 4] = [0xff, 0xff, 0x00, 0x06];

/// The AS_PATH length for best-path selection (RFC 4271 §9.1.2.2: an AS_SET counts one;
/// confederation segments count none). The path is known to be well formed.
fn path_length(mut b: &[u8], width: usize) -> u32 {
    let mut n = 0u32;
    while let [kind, count, ..] = *b {
        let count = usize::from(count);
        n += match kind {
            2 => count as u32,
            1 => 1,
            _ => 0,
        };
        b = b.get(2 + count * width..).unwrap_or_default();
    }
    n
}

/// MP_REACH_NLRI's next hop: 4 or 16 octets, or 32 (global, then link-local).
fn mp_next_hop(b: &[u8]) -> Option<(IpAddr, Option<Ipv6Addr>)> {
    let nh_len = usize::from(*b.get(3)?);
    let nh = b.get(4..4 + nh_len)?;
    let v6 = |o: &[u8]| -> Option<Ipv6Addr> { Some(Ipv6Addr::from(<[u8; 16]>::try_from(o).ok()?)) };
    match nh.len() {
        4 => Some((IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])), None)),
        16 => Some((IpAddr::V6(v6(nh)?), None)),
        32 => Some((IpAddr::V6(v6(&nh[..16])?), Some(v6(&nh[16..])?))),
        _ => None,
    }
}

/// One attribute: flags, type, value and what follows, or None when its header or value
/// runs past the bytes.
fn attribute(b: &[u8]) -> Option<(u8, u8, &[u8], &[u8])> {
    let flags = *b.first()?;
    let kind = *b.get(1)?;
    let (len, at) = if flags & EXTENDED != 0 {
        (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4)
    } else {
        (usize::from(*b.get(2)?), 3)
    };
    let value = b.get(at..at + len)?;
    Some((flags, kind, value, &b[at + len..]))
}

/// An attribute as it came (the data of an UPDATE NOTIFICATION about it).
fn raw_attribute(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![flags, kind];
    if flags & EXTENDED != 0 {
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    out.extend_from_slice(value);
    out
}

/// The AS numbers of an AS_PATH whose segments are well formed (type 1–4, non-empty, the
/// right number of octets), or None.
fn as_path(mut b: &[u8], width: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let kind = *b.first()?;
        let count = usize::from(*b.get(1)?);
        if !(1..=4).contains(&kind) || count == 0 {
            return None;
        }
        let seg = b.get(2..2 + count * width)?;
        for a in seg.chunks_exact(width) {
            out.push(match a {
                [x, y] => u32::from(u16::from_be_bytes([*x, *y])),
                [w, x, y, z] => u32::from_be_bytes([*w, *x, *y, *z]),
                _ => return None,
            });
        }
        b = &b[2 + count * width..];
    }
    Some(out)
}

/// IPv4 prefixes in NLRI encoding (length in bits, then the significant octets).
fn prefixes_v4(mut b: &[u8]) -> Option<Vec<Ipv4Net>> {
    let mut out = Vec::new();
    while let Some(&bits) = b.first() {
        if bits > 32 {
            return None;
        }
        let n = usize::from(bits).div_ceil(8);
        let mut a = [0u8; 4];
        a[..n].copy_from_slice(b.get(1..1 + n)?);
        out.push(Ipv4Net::new(Ipv4Addr::from(a), bits).ok()?.trunc());
        b = &b[1 + n..];
    }
    Some(out)
}

/// IPv6 prefixes in NLRI encoding.
fn prefixes_v6(mut b: &[u8]) -> Option<Vec<IpNet>> {
    let mut out = Vec::new();
    while let Some(&bits) = b.first() {
        if bits > 128 {
            return None;
        }
        let n = usize::from(bits).div_ceil(8);
        let mut a = [0u8; 16];
        a[..n].copy_from_slice(b.get(1..1 + n)?);
        out.push(IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(a), bits).ok()?.trunc(),
        ));
        b = &b[1 + n..];
    }
    Some(out)
}

/// MP_REACH_NLRI: AFI, SAFI and, for IPv4 and IPv6 unicast, the prefixes (other families
/// are not read: they were not negotiated, and RFC 4760 lets them be ignored). IPv4 takes
/// an IPv4 next hop or an IPv6 one (RFC 8950).
fn mp_reach(b: &[u8]) -> Option<(u16, u8, Vec<IpNet>)> {
    let afi = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let safi = *b.get(2)?;
    let nh_len = usize::from(*b.get(3)?);
    let nh = b.get(4..4 + nh_len)?;
    // One reserved octet, then the NLRI.
    let nlri = b.get(4 + nh_len + 1..)?;
    match (afi, safi, nh.len()) {
        (1, 1, 4 | 16 | 32) => Some((afi, safi, v4_nets(nlri)?)),
        (2, 1, 16 | 32) => Some((afi, safi, prefixes_v6(nlri)?)),
        (1 | 2, 1, _) => None,
        _ => Some((afi, safi, Vec::new())),
    }
}

/// MP_UNREACH_NLRI: AFI, SAFI and, for IPv4 and IPv6 unicast, the withdrawn prefixes.
fn mp_unreach(b: &[u8]) -> Option<(u16, u8, Vec<IpNet>)> {
    let afi = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let safi = *b.get(2)?;
    let nlri = b.get(3..)?;
    match (afi, safi) {
        (1, 1) => Some((afi, safi, v4_nets(nlri)?)),
        (2, 1) => Some((afi, safi, prefixes_v6(nlri)?)),
        _ => Some((afi, safi, Vec::new())),
    }
}

fn v4_nets(b: &[u8]) -> Option<Vec<IpNet>> {
    Some(prefixes_v4(b)?.into_iter().map(IpNet::V4).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EBGP: Context = Context {
        local_as: 65010,
        four_octet: true,
        external: true,
    };

    /// An UPDATE body from withdrawn bytes, attributes and NLRI bytes.
    fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(withdrawn);
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(attrs);
        b.extend_from_slice(nlri);
        b
    }

    fn attr(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
        raw_attribute(flags, kind, value)
    }

    /// ORIGIN IGP, AS_PATH 65000, NEXT_HOP 192.0.2.1.
    fn good_attrs() -> Vec<u8> {
        let mut a = attr(TRANSITIVE, ORIGIN, &[0]);
        a.extend(attr(TRANSITIVE, AS_PATH, &[2, 1, 0, 0, 0xfd, 0xe8]));
        a.extend(attr(TRANSITIVE, NEXT_HOP, &[192, 0, 2, 1]));
        a
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const NLRI: &[u8] = &[32, 203, 0, 113, 7, 24, 203, 0, 114];

    #[test]
    fn a_good_update_announces_and_withdraws_its_prefixes() {
        let c = check(&update(&[16, 10, 1], &good_attrs(), NLRI), &EBGP).unwrap();
        assert_eq!(
            c.announced,
            vec![net("203.0.113.7/32"), net("203.0.114.0/24")]
        );
        assert_eq!(c.withdrawn, vec![net("10.1.0.0/16")]);
        assert_eq!(c.problem, None);
    }

    #[test]
    fn ipv6_routes_come_in_mp_reach_and_leave_in_mp_unreach() {
        let mut mp = vec![0, 2, 1, 16];
        mp.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        mp.push(0);
        mp.extend_from_slice(&[64, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0]);
        let mut a = good_attrs();
        a.extend(attr(OPTIONAL, MP_REACH, &mp));
        a.extend(attr(
            OPTIONAL,
            MP_UNREACH,
            &[0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 2],
        ));
        let c = check(&update(&[], &a, &[]), &EBGP).unwrap();
        assert_eq!(c.announced, vec![net("2001:db8:1::/64")]);
        assert_eq!(c.withdrawn, vec![net("2001:db8:2::/48")]);
    }

    #[test]
    fn ipv4_routes_in_mp_reach_and_mp_unreach_count_too() {
        let mut mp = vec![0, 1, 1, 4, 192, 0, 2, 1, 0];
        mp.extend_from_slice(&[32, 203, 0, 113, 9]);
        let mut a = good_attrs();
        a.extend(attr(OPTIONAL, MP_REACH, &mp));
        a.extend(attr(OPTIONAL, MP_UNREACH, &[0, 1, 1, 24, 10, 0, 0]));
        let c = check(&update(&[], &a, &[]), &EBGP).unwrap();
        assert_eq!(c.announced, vec![net("203.0.113.9/32")]);
        assert_eq!(c.withdrawn, vec![net("10.0.0.0/24")]);
        // An IPv4 next hop of 3 octets is malformed: 3/9.
        let bad = attr(OPTIONAL, MP_REACH, &[0, 1, 1, 3, 1, 2, 3, 0]);
        assert_eq!(
            check(&update(&[], &bad, &[]), &EBGP).unwrap_err().subcode,
            9
        );
    }

    /// RFC 8950: IPv4 routes in MP_REACH_NLRI with an IPv6 next hop need no NEXT_HOP
    /// attribute (RFC 4760 §3); routes in the NLRI field still do.
    #[test]
    fn ipv4_routes_with_an_ipv6_next_hop_need_no_next_hop_attribute() {
        let origin_and_path = || {
            let mut a = attr(TRANSITIVE, ORIGIN, &[0]);
            a.extend(attr(TRANSITIVE, AS_PATH, &[2, 1, 0, 0, 0xfd, 0xe8]));
            a
        };
        let mut mp = vec![0, 1, 1, 16];
        mp.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        mp.push(0);
        mp.extend_from_slice(&[32, 203, 0, 113, 9]);
        let mut a = origin_and_path();
        a.extend(attr(OPTIONAL, MP_REACH, &mp));
        let c = check(&update(&[], &a, &[]), &EBGP).unwrap();
        assert_eq!(
            (c.announced, c.problem),
            (vec![net("203.0.113.9/32")], None)
        );
        let c = check(&update(&[], &origin_and_path(), NLRI), &EBGP).unwrap();
        assert_eq!(
            c.problem,
            Some(Problem::TreatAsWithdraw("NEXT_HOP is missing".into()))
        );
    }

    #[test]
    fn lengths_past_the_message_reset_the_session_with_malformed_attribute_list() {
        let mut b = update(&[], &good_attrs(), NLRI);
        b[3] = 200; // Total Attribute Length past the end
        assert_eq!(check(&b, &EBGP).unwrap_err().subcode, 1);
        assert_eq!(check(&[0, 9, 1], &EBGP).unwrap_err().subcode, 1);
        assert_eq!(check(&[], &EBGP).unwrap_err().subcode, 1);
    }

    #[test]
    fn an_unparsable_prefix_resets_the_session_with_invalid_network_field() {
        let n = check(&update(&[], &good_attrs(), &[33, 1, 2, 3, 4, 5]), &EBGP).unwrap_err();
        assert_eq!((n.code, n.subcode), (Code::Update, 10));
        let n = check(&update(&[24, 10], &[], &[]), &EBGP).unwrap_err();
        assert_eq!(n.subcode, 10);
    }

    #[test]
    fn a_malformed_origin_as_path_or_next_hop_is_treated_as_withdraw() {
        let cases: [(&[u8], &str); 4] = [
            (&attr(TRANSITIVE, ORIGIN, &[7]), "ORIGIN"),
            (&attr(TRANSITIVE, AS_PATH, &[2, 3, 0, 0]), "AS_PATH"),
            (&attr(TRANSITIVE, AS_PATH, &[9, 1, 0, 0, 0, 1]), "AS_PATH"),
            (&attr(TRANSITIVE, NEXT_HOP, &[1, 2, 3]), "NEXT_HOP"),
        ];
        for (bad, what) in cases {
            // The bad attribute first: later good copies are repeats and do not help.
            let mut a = bad.to_vec();
            a.extend(good_attrs());
            let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
            assert!(c.announced.is_empty(), "{what}");
            assert_eq!(
                c.withdrawn,
                vec![net("203.0.113.7/32"), net("203.0.114.0/24")]
            );
            assert!(
                matches!(&c.problem, Some(Problem::TreatAsWithdraw(w)) if w.contains(what)),
                "{what}: {:?}",
                c.problem
            );
        }
    }

    #[test]
    fn a_missing_mandatory_attribute_is_treated_as_withdraw() {
        let a = attr(TRANSITIVE, ORIGIN, &[0]);
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert_eq!(
            c.problem,
            Some(Problem::TreatAsWithdraw("AS_PATH is missing".into()))
        );
        assert_eq!(c.withdrawn.len(), 2);
    }

    #[test]
    fn an_attribute_overrunning_the_field_is_treated_as_withdraw_unless_mp_was_seen() {
        let mut a = good_attrs();
        a.extend([OPTIONAL | TRANSITIVE, COMMUNITIES, 40, 0, 0]);
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert!(matches!(c.problem, Some(Problem::TreatAsWithdraw(_))));
        let mut a = attr(OPTIONAL, MP_UNREACH, &[0, 2, 1]);
        a.extend([OPTIONAL | TRANSITIVE, COMMUNITIES, 40, 0, 0]);
        assert_eq!(check(&update(&[], &a, &[]), &EBGP).unwrap_err().subcode, 1);
    }

    #[test]
    fn wrong_flags_are_treated_as_withdraw_and_bad_mp_attributes_reset() {
        let mut a = good_attrs();
        a.extend(attr(TRANSITIVE, MED, &[0, 0, 0, 1])); // MED is optional
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert!(matches!(c.problem, Some(Problem::TreatAsWithdraw(_))));
        let n = check(
            &update(&[], &attr(OPTIONAL, MP_REACH, &[0, 2, 1, 3, 1]), &[]),
            &EBGP,
        )
        .unwrap_err();
        assert_eq!((n.code, n.subcode), (Code::Update, 9));
        let mut twice = attr(OPTIONAL, MP_UNREACH, &[0, 2, 1]);
        twice.extend(attr(OPTIONAL, MP_UNREACH, &[0, 2, 1]));
        assert_eq!(
            check(&update(&[], &twice, &[]), &EBGP).unwrap_err().subcode,
            1
        );
    }

    #[test]
    fn an_unknown_well_known_attribute_resets_the_session_with_its_bytes() {
        let mut a = good_attrs();
        a.extend(attr(TRANSITIVE, 99, &[1]));
        let n = check(&update(&[], &a, NLRI), &EBGP).unwrap_err();
        assert_eq!((n.code, n.subcode), (Code::Update, 2));
        assert_eq!(n.data, vec![TRANSITIVE, 99, 1, 1]);
    }

    #[test]
    fn harmless_problems_discard_the_attribute_and_keep_the_routes() {
        let mut a = good_attrs();
        a.extend(attr(TRANSITIVE, ATOMIC_AGGREGATE, &[1]));
        a.extend(attr(TRANSITIVE, LOCAL_PREF, &[0, 0, 0, 100]));
        a.extend(attr(TRANSITIVE, ORIGIN, &[1])); // a repeat
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert_eq!(c.announced.len(), 2);
        assert!(matches!(c.problem, Some(Problem::Discarded(_))));
        // Unknown optional attributes pass untouched.
        let mut a = good_attrs();
        a.extend(attr(OPTIONAL | TRANSITIVE, 250, &[1, 2, 3]));
        assert_eq!(check(&update(&[], &a, NLRI), &EBGP).unwrap().problem, None);
    }

    #[test]
    fn our_own_as_in_the_path_is_a_loop_and_the_routes_are_not_accepted() {
        let mut a = attr(TRANSITIVE, ORIGIN, &[0]);
        a.extend(attr(
            TRANSITIVE,
            AS_PATH,
            &[2, 2, 0, 0, 0xfd, 0xe8, 0, 0, 0xfd, 0xf2],
        ));
        a.extend(attr(TRANSITIVE, NEXT_HOP, &[192, 0, 2, 1]));
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert_eq!(c.problem, Some(Problem::AsPathLoop));
        assert!(c.announced.is_empty());
        assert_eq!(c.withdrawn.len(), 2);
    }

    #[test]
    fn two_octet_paths_are_read_when_four_octet_as_was_not_negotiated() {
        let ctx = Context {
            four_octet: false,
            ..EBGP
        };
        let mut a = attr(TRANSITIVE, ORIGIN, &[0]);
        a.extend(attr(TRANSITIVE, AS_PATH, &[2, 2, 0xfd, 0xe8, 0xfd, 0xf2]));
        a.extend(attr(TRANSITIVE, NEXT_HOP, &[192, 0, 2, 1]));
        let c = check(&update(&[], &a, NLRI), &ctx).unwrap();
        assert_eq!(c.problem, Some(Problem::AsPathLoop));
    }

    #[test]
    fn end_of_rib_is_an_empty_update_or_an_empty_mp_unreach() {
        let c = check(&[0, 0, 0, 0], &EBGP).unwrap();
        assert_eq!(c.end_of_rib, Some(1));
        assert!(c.announced.is_empty() && c.withdrawn.is_empty());
        let v6 = attr(OPTIONAL, MP_UNREACH, &[0, 2, 1]);
        assert_eq!(
            check(&update(&[], &v6, &[]), &EBGP).unwrap().end_of_rib,
            Some(2)
        );
        // The control: an MP_UNREACH that withdraws something is not a marker.
        let w = attr(OPTIONAL, MP_UNREACH, &[0, 2, 1, 32, 0x20, 0x01, 0x0d, 0xb8]);
        let c = check(&update(&[], &w, &[]), &EBGP).unwrap();
        assert_eq!((c.end_of_rib, c.withdrawn.len()), (None, 1));
        assert_eq!(
            check(&update(&[16, 10, 1], &[], &[]), &EBGP)
                .unwrap()
                .end_of_rib,
            None
        );
    }

    #[test]
    fn the_attributes_import_reads_are_kept() {
        let mut a = attr(TRANSITIVE, ORIGIN, &[0]);
        // AS_SEQUENCE 65000 65001, AS_SET {65002 65003}: length 3.
        a.extend(attr(
            TRANSITIVE,
            AS_PATH,
            &[
                2, 2, 0, 0, 0xfd, 0xe8, 0, 0, 0xfd, 0xe9, 1, 2, 0, 0, 0xfd, 0xea, 0, 0, 0xfd, 0xeb,
            ],
        ));
        a.extend(attr(TRANSITIVE, NEXT_HOP, &[192, 0, 2, 9]));
        a.extend(attr(
            OPTIONAL | TRANSITIVE,
            COMMUNITIES,
            &[0xff, 0xff, 0, 6],
        ));
        let mut mp = vec![0, 2, 1, 32];
        mp.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        mp.extend_from_slice(&"fe80::9".parse::<Ipv6Addr>().unwrap().octets());
        mp.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        a.extend(attr(OPTIONAL, MP_REACH, &mp));
        let c = check(&update(&[], &a, NLRI), &EBGP).unwrap();
        assert_eq!(c.problem, None);
        assert_eq!(c.classic, 2);
        assert_eq!(c.announced[2], net("2001:db8:1::/48"));
        assert_eq!(c.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(
            c.attrs.mp_next_hop,
            Some((
                "2001:db8::9".parse().unwrap(),
                Some("fe80::9".parse().unwrap())
            ))
        );
        assert_eq!(c.attrs.as_path_len, 3);
        assert!(c.attrs.llgr_stale);
        assert_eq!(c.end_of_rib, None);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a good message, and every single-byte corruption of it.
        let good = update(&[16, 10, 1], &good_attrs(), NLRI);
        for n in 0..good.len() {
            let _ = check(&good[..n], &EBGP);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = check(&b, &EBGP);
            }
        }
    }
}
