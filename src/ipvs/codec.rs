//! The IPVS generic-netlink codec: requests kube-gw sends and the replies it reads, as bytes.
//! Pure: no socket, no clock. Numbers and layouts are those of `linux/ip_vs.h` and
//! `linux/genetlink.h` (stable kernel ABI since 2.6.28).
//!
//! A message is a netlink header (16 bytes), a generic-netlink header (command, version,
//! reserved; 4 bytes) and attributes (length, type, value, padded to 4 bytes). Services
//! and destinations travel as nested attributes. Integers are host order except ports
//! (network order) and the IPv4 persistence netmask (network order, as the kernel keeps it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::Protocol;

// netlink (linux/netlink.h)
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// generic netlink controller (linux/genetlink.h)
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// The IPVS family's name and version.
pub const FAMILY_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;

// commands (enum IPVS_CMD_*)
const CMD_NEW_SERVICE: u8 = 1;
const CMD_SET_SERVICE: u8 = 2;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;

// command attributes (IPVS_CMD_ATTR_*)
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;

// service attributes (IPVS_SVC_ATTR_*)
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;

// destination attributes (IPVS_DEST_ATTR_*)
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_PERSIST_CONNS: u16 = 9;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Service flags (`IP_VS_SVC_F_*`).
pub mod flags {
    /// Persistent (`sessionAffinity: ClientIP`).
    pub const PERSISTENT: u32 = 0x0001;
    /// Set by the kernel on every service in its table.
    pub const HASHED: u32 = 0x0002;
    /// `sh-fallback` / `mh-fallback`: skip an unavailable destination.
    pub const SCHED1: u32 = 0x0008;
    /// `sh-port` / `mh-port`: hash the source port too.
    pub const SCHED2: u32 = 0x0010;
    /// The flags kube-gw sets; the others are left as the kernel has them.
    pub const MANAGED: u32 = PERSISTENT | SCHED1 | SCHED2;
}

/// Forwarding method `masq` (NAT): the destination address and port are rewritten.
pub const FWD_MASQ: u32 = 0;
/// Forwarding method `tunnel` (`IP_VS_CONN_F_TUNNEL`): the packet goes unchanged inside an
/// IPIP header to the destination, which answers the client directly.
pub const FWD_TUNNEL: u32 = 2;
/// `IP_VS_CONN_F_FWD_MASK`.
const FWD_MASK: u32 = 0x7;

/// A virtual service's identity: the desired state's key.
pub type ServiceKey = crate::model::VsKey;

/// A virtual service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    /// `sh`, `mh`, … (at most 15 bytes).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*`.
    pub flags: u32,
    /// Persistence timeout in seconds (0 without persistence).
    pub timeout: u32,
}

/// A destination's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: i32,
    /// Forwarding method ([`FWD_MASQ`], [`FWD_TUNNEL`]).
    pub fwd: u32,
}

/// A destination as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestInfo {
    pub spec: DestSpec,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    NewService(ServiceSpec),
    SetService(ServiceSpec),
    DelService(ServiceKey),
    NewDest(ServiceKey, DestSpec),
    SetDest(ServiceKey, DestSpec),
    DelDest(ServiceKey, IpAddr, u16),
    DumpServices,
    DumpDests(ServiceKey),
}

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An acknowledgement (`errno` 0) or an error (`errno` > 0) for request `seq`.
    Ack { seq: u32, errno: i32 },
    /// End of a dump.
    Done { seq: u32 },
    /// A service of a dump (`None`: a firewall-mark service or one kube-gw cannot read;
    /// never kube-gw's).
    Service {
        seq: u32,
        service: Option<ServiceSpec>,
    },
    /// A destination of a dump.
    Dest { seq: u32, dest: Option<DestInfo> },
    /// The family id (controller reply).
    Family { seq: u32, id: u16 },
    /// Anything else (skipped).
    Other { seq: u32 },
}

/// Why bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated netlink message at byte {0}")]
    Truncated(usize),
}

/// Appends attributes to a buffer, with nesting.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn header(msg_type: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Self { buf }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn u16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_ne_bytes());
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    /// Starts a nested attribute; returns where its header is.
    fn nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn af(a: &IpAddr) -> u16 {
    match a {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first four.
fn inet_addr(a: &IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

fn ipproto(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn protocol_of(n: u16) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

fn service_key_attrs(w: &mut Writer, k: &ServiceKey) {
    w.u16(SVC_ATTR_AF, af(&k.vip));
    w.u16(SVC_ATTR_PROTOCOL, ipproto(k.protocol));
    w.attr(SVC_ATTR_ADDR, &inet_addr(&k.vip));
    w.attr(SVC_ATTR_PORT, &k.port.to_be_bytes());
}

fn service_attrs(w: &mut Writer, s: &ServiceSpec) {
    service_key_attrs(w, &s.key);
    let mut name = s.scheduler.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    w.attr(SVC_ATTR_SCHED_NAME, &name);
    // struct ip_vs_flags { flags, mask }: only the managed bits are set or cleared.
    let mut f = Vec::with_capacity(8);
    f.extend_from_slice(&(s.flags & flags::MANAGED).to_ne_bytes());
    f.extend_from_slice(&flags::MANAGED.to_ne_bytes());
    w.attr(SVC_ATTR_FLAGS, &f);
    w.u32(SVC_ATTR_TIMEOUT, s.timeout);
    // Persistence groups clients by this mask: per client address.
    match s.key.vip {
        IpAddr::V4(_) => w.attr(SVC_ATTR_NETMASK, &[0xff; 4]),
        IpAddr::V6(_) => w.u32(SVC_ATTR_NETMASK, 128),
    }
}

fn dest_attrs(w: &mut Writer, d: &DestSpec) {
    w.attr(DEST_ATTR_ADDR, &inet_addr(&d.addr));
    w.attr(DEST_ATTR_PORT, &d.port.to_be_bytes());
    w.u32(DEST_ATTR_FWD_METHOD, d.fwd);
    w.u32(DEST_ATTR_WEIGHT, u32::from_ne_bytes(d.weight.to_ne_bytes()));
    w.u32(DEST_ATTR_U_THRESH, 0);
    w.u32(DEST_ATTR_L_THRESH, 0);
    w.u16(DEST_ATTR_ADDR_FAMILY, af(&d.addr));
}

/// The controller request that resolves the IPVS family id.
pub fn family_request(seq: u32) -> Vec<u8> {
    let mut w = Writer::header(GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY, 1);
    let mut name = FAMILY_NAME.as_bytes().to_vec();
    name.push(0);
    w.attr(CTRL_ATTR_FAMILY_NAME, &name);
    w.finish()
}

/// Encodes one request for the IPVS family `family`.
pub fn encode(family: u16, seq: u32, req: &Request) -> Vec<u8> {
    let (cmd, flags) = match req {
        Request::NewService(_) => (CMD_NEW_SERVICE, NLM_F_REQUEST | NLM_F_ACK),
        Request::SetService(_) => (CMD_SET_SERVICE, NLM_F_REQUEST | NLM_F_ACK),
        Request::DelService(_) => (CMD_DEL_SERVICE, NLM_F_REQUEST | NLM_F_ACK),
        Request::NewDest(..) => (CMD_NEW_DEST, NLM_F_REQUEST | NLM_F_ACK),
        Request::SetDest(..) => (CMD_SET_DEST, NLM_F_REQUEST | NLM_F_ACK),
        Request::DelDest(..) => (CMD_DEL_DEST, NLM_F_REQUEST | NLM_F_ACK),
        Request::DumpServices => (CMD_GET_SERVICE, NLM_F_REQUEST | NLM_F_DUMP),
        Request::DumpDests(_) => (CMD_GET_DEST, NLM_F_REQUEST | NLM_F_DUMP),
    };
    let mut w = Writer::header(family, flags, seq, cmd, IPVS_GENL_VERSION);
    match req {
        Request::NewService(s) | Request::SetService(s) => {
            let n = w.nest(CMD_ATTR_SERVICE);
            service_attrs(&mut w, s);
            w.end_nest(n);
        }
        Request::DelService(k) | Request::DumpDests(k) => {
            let n = w.nest(CMD_ATTR_SERVICE);
            service_key_attrs(&mut w, k);
            w.end_nest(n);
        }
        Request::NewDest(k, d) | Request::SetDest(k, d) => {
            let n = w.nest(CMD_ATTR_SERVICE);
            service_key_attrs(&mut w, k);
            w.end_nest(n);
            let n = w.nest(CMD_ATTR_DEST);
            dest_attrs(&mut w, d);
            w.end_nest(n);
        }
        Request::DelDest(k, addr, port) => {
            let n = w.nest(CMD_ATTR_SERVICE);
            service_key_attrs(&mut w, k);
            w.end_nest(n);
            let n = w.nest(CMD_ATTR_DEST);
            w.attr(DEST_ATTR_ADDR, &inet_addr(addr));
            w.attr(DEST_ATTR_PORT, &port.to_be_bytes());
            w.u16(DEST_ATTR_ADDR_FAMILY, af(addr));
            w.end_nest(n);
        }
        Request::DumpServices => {}
    }
    w.finish()
}

/// Attributes of one level: (type without flags, value).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or_default();
    }
    out
}

fn get<'a>(a: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    a.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn u16_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn addr_of(family: u16, v: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => {
            let o: [u8; 4] = v.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        AF_INET6 => {
            let o: [u8; 16] = v.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn port_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

fn decode_service(a: &[(u16, &[u8])]) -> Option<ServiceSpec> {
    if get(a, SVC_ATTR_FWMARK)
        .and_then(u32_of)
        .is_some_and(|m| m != 0)
    {
        return None;
    }
    let family = u16_of(get(a, SVC_ATTR_AF)?)?;
    let key = ServiceKey {
        vip: addr_of(family, get(a, SVC_ATTR_ADDR)?)?,
        port: port_of(get(a, SVC_ATTR_PORT)?)?,
        protocol: protocol_of(u16_of(get(a, SVC_ATTR_PROTOCOL)?)?)?,
    };
    let scheduler = get(a, SVC_ATTR_SCHED_NAME)
        .map(|v| {
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
        .unwrap_or_default();
    let flags = get(a, SVC_ATTR_FLAGS).and_then(u32_of).unwrap_or(0);
    let timeout = get(a, SVC_ATTR_TIMEOUT).and_then(u32_of).unwrap_or(0);
    Some(ServiceSpec {
        key,
        scheduler,
        flags,
        timeout,
    })
}

fn decode_dest(a: &[(u16, &[u8])], family: u16) -> Option<DestInfo> {
    let family = get(a, DEST_ATTR_ADDR_FAMILY)
        .and_then(u16_of)
        .unwrap_or(family);
    let u = |k| get(a, k).and_then(u32_of).unwrap_or(0);
    Some(DestInfo {
        spec: DestSpec {
            addr: addr_of(family, get(a, DEST_ATTR_ADDR)?)?,
            port: port_of(get(a, DEST_ATTR_PORT)?)?,
            weight: i32::from_ne_bytes(u(DEST_ATTR_WEIGHT).to_ne_bytes()),
            fwd: u(DEST_ATTR_FWD_METHOD) & FWD_MASK,
        },
        active_conns: u(DEST_ATTR_ACTIVE_CONNS),
        inactive_conns: u(DEST_ATTR_INACT_CONNS),
        persist_conns: u(DEST_ATTR_PERSIST_CONNS),
    })
}

/// Decodes every netlink message in one datagram. `dest_family` is the address family of
/// the service whose destinations are being dumped (destinations without their own family
/// attribute have the service's).
pub fn decode(mut b: &[u8], dest_family: Option<IpAddr>) -> Result<Vec<Reply>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let dest_af = dest_family.as_ref().map_or(AF_INET, af);
    while !b.is_empty() {
        if b.len() < 16 {
            return Err(DecodeError::Truncated(at));
        }
        let len = usize::try_from(u32_of(&b[0..4]).unwrap_or(0)).unwrap_or(usize::MAX);
        if len < 16 || len > b.len() {
            return Err(DecodeError::Truncated(at));
        }
        let kind = u16_of(&b[4..6]).unwrap_or(0);
        let seq = u32_of(&b[8..12]).unwrap_or(0);
        let body = &b[16..len];
        let reply = match kind {
            NLMSG_ERROR => {
                let errno = body.get(..4).and_then(u32_of).unwrap_or(0);
                let errno = i32::from_ne_bytes(errno.to_ne_bytes());
                // A kernel errno is small and negative; i32::MIN (found by fuzzing) is not
                // negatable.
                Reply::Ack {
                    seq,
                    errno: errno.saturating_neg(),
                }
            }
            NLMSG_DONE => Reply::Done { seq },
            GENL_ID_CTRL => {
                let a = attrs(body.get(4..).unwrap_or_default());
                match get(&a, CTRL_ATTR_FAMILY_ID).and_then(u16_of) {
                    Some(id) => Reply::Family { seq, id },
                    None => Reply::Other { seq },
                }
            }
            _ if body.len() >= 4 => {
                let cmd = body[0];
                let a = attrs(&body[4..]);
                match cmd {
                    CMD_NEW_SERVICE => Reply::Service {
                        seq,
                        service: get(&a, CMD_ATTR_SERVICE).and_then(|n| decode_service(&attrs(n))),
                    },
                    CMD_NEW_DEST => Reply::Dest {
                        seq,
                        dest: get(&a, CMD_ATTR_DEST).and_then(|n| decode_dest(&attrs(n), dest_af)),
                    },
                    _ => Reply::Other { seq },
                }
            }
            _ => Reply::Other { seq },
        };
        out.push(reply);
        let next = (len + 3) & !3;
        at += next.min(b.len());
        b = b.get(next..).unwrap_or_default();
    }
    Ok(out)
}

/// Whether a datagram's messages say more will follow (a dump in progress).
pub fn is_multi(b: &[u8]) -> bool {
    b.len() >= 8 && u16_of(&b[6..8]).is_some_and(|f| f & NLM_F_MULTI != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_reply_with_the_lowest_errno_does_not_overflow() {
        // Found by the ipvs_reply fuzz target: NLMSG_ERROR carrying i32::MIN.
        let b = [
            24, 0, 0, 0, 2, 0, 26, 159, 18, 169, 0, 16, 0, 0, 255, 0, 0, 0, 0, 128, 0, 0, 2, 0,
        ];
        let r = decode(&b, None).unwrap();
        assert!(
            matches!(
                r[..],
                [Reply::Ack {
                    errno: i32::MAX,
                    ..
                }]
            ),
            "{r:?}"
        );
    }

    use super::*;

    fn key4() -> ServiceKey {
        ServiceKey {
            vip: "198.51.100.30".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        }
    }

    /// Bytes as `ipvsadm -A -t 198.51.100.30:80 -s sh` would lay them out (libipvs puts the
    /// same attributes in the same order), written from `linux/ip_vs.h` by hand.
    #[test]
    fn a_new_service_has_the_kernel_layout() {
        let spec = ServiceSpec {
            key: key4(),
            scheduler: "sh".into(),
            flags: 0,
            timeout: 0,
        };
        let b = encode(0x22, 7, &Request::NewService(spec));
        let mut want: Vec<u8> = Vec::new();
        let total: u32 = 16 + 4 + 4 + 8 + 8 + 20 + 8 + 8 + 12 + 8 + 8;
        want.extend_from_slice(&total.to_ne_bytes());
        want.extend_from_slice(&0x22u16.to_ne_bytes());
        want.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[1, 1, 0, 0]); // IPVS_CMD_NEW_SERVICE, version 1
        let nest_len: u16 = 4 + 8 + 8 + 20 + 8 + 8 + 12 + 8 + 8;
        want.extend_from_slice(&nest_len.to_ne_bytes());
        want.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes()); // IPVS_CMD_ATTR_SERVICE
        let mut put = |kind: u16, v: &[u8]| {
            want.extend_from_slice(&u16::try_from(4 + v.len()).unwrap().to_ne_bytes());
            want.extend_from_slice(&kind.to_ne_bytes());
            want.extend_from_slice(v);
            while !want.len().is_multiple_of(4) {
                want.push(0);
            }
        };
        put(1, &2u16.to_ne_bytes()); // AF_INET
        put(2, &6u16.to_ne_bytes()); // IPPROTO_TCP
        put(3, &[198, 51, 100, 30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(4, &[0, 80]); // port, network order
        put(6, b"sh\0");
        let mut f = 0u32.to_ne_bytes().to_vec();
        f.extend_from_slice(&(0x1u32 | 0x8 | 0x10).to_ne_bytes());
        put(7, &f);
        put(8, &0u32.to_ne_bytes());
        put(9, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(b, want);
    }

    #[test]
    fn destinations_carry_masq_weight_and_family() {
        let d = DestSpec {
            addr: "2001:db8::5".parse().unwrap(),
            port: 8080,
            weight: 1,
            fwd: FWD_MASQ,
        };
        let k = ServiceKey {
            vip: "2001:db8:100::1".parse().unwrap(),
            port: 443,
            protocol: Protocol::Udp,
        };
        let b = encode(0x22, 9, &Request::NewDest(k, d));
        let top = attrs(&b[20..]);
        assert_eq!(top.len(), 2);
        let svc = attrs(get(&top, CMD_ATTR_SERVICE).unwrap());
        assert_eq!(get(&svc, SVC_ATTR_AF), Some(&10u16.to_ne_bytes()[..]));
        assert_eq!(get(&svc, SVC_ATTR_PROTOCOL), Some(&17u16.to_ne_bytes()[..]));
        assert_eq!(get(&svc, SVC_ATTR_PORT), Some(&[1, 187][..]));
        let dest = attrs(get(&top, CMD_ATTR_DEST).unwrap());
        assert_eq!(get(&dest, DEST_ATTR_PORT), Some(&[0x1f, 0x90][..]));
        assert_eq!(
            get(&dest, DEST_ATTR_FWD_METHOD),
            Some(&0u32.to_ne_bytes()[..])
        );
        assert_eq!(get(&dest, DEST_ATTR_WEIGHT), Some(&1u32.to_ne_bytes()[..]));
        assert_eq!(
            get(&dest, DEST_ATTR_ADDR_FAMILY),
            Some(&10u16.to_ne_bytes()[..])
        );
        assert_eq!(
            decode_dest(&dest, AF_INET6).unwrap().spec,
            d,
            "what is encoded decodes back"
        );
    }

    /// A dump reply is a NEW_SERVICE message with the service nested: encode one the way
    /// the kernel does (our NewService layout, as a reply) and read it back.
    #[test]
    fn dumped_services_decode() {
        let spec = ServiceSpec {
            key: ServiceKey {
                vip: "2001:db8:100::7".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
            },
            scheduler: "mh".into(),
            flags: flags::SCHED2 | flags::PERSISTENT,
            timeout: 10800,
        };
        let mut b = encode(0x22, 3, &Request::NewService(spec.clone()));
        b[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
        let mut two = b.clone();
        two.extend_from_slice(&b);
        let replies = decode(&two, None).unwrap();
        assert_eq!(replies.len(), 2);
        assert!(is_multi(&two));
        assert_eq!(
            replies[0],
            Reply::Service {
                seq: 3,
                service: Some(spec)
            }
        );
    }

    #[test]
    fn errors_acks_and_done_decode() {
        let mut b = Vec::new();
        // NLMSG_ERROR with errno -EEXIST (17), then NLMSG_DONE.
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&5u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(-17i32).to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]); // the request's header
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        b.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        b.extend_from_slice(&6u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            decode(&b, None).unwrap(),
            vec![Reply::Ack { seq: 5, errno: 17 }, Reply::Done { seq: 6 }]
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let b = encode(0x22, 1, &Request::DumpServices);
        for cut in 1..b.len() {
            assert!(decode(&b[..cut], None).is_err(), "cut at {cut}");
        }
        let mut bad = b.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(decode(&bad, None), Err(DecodeError::Truncated(0)));
        // Attributes that lie about their length are skipped, not read past.
        let mut svc = encode(0x22, 1, &Request::DelService(key4()));
        svc[20..22].copy_from_slice(&2000u16.to_ne_bytes());
        svc[4..6].copy_from_slice(&0x22u16.to_ne_bytes());
        svc[16] = CMD_NEW_SERVICE;
        assert_eq!(
            decode(&svc, None).unwrap(),
            vec![Reply::Service {
                seq: 1,
                service: None
            }]
        );
    }

    #[test]
    fn the_family_request_names_ipvs() {
        let b = family_request(1);
        let a = attrs(&b[20..]);
        assert_eq!(get(&a, CTRL_ATTR_FAMILY_NAME), Some(&b"IPVS\0"[..]));
        assert_eq!(u16_of(&b[4..6]), Some(GENL_ID_CTRL));
    }
}
