//! PROXY protocol version 2 toward backends (pure): the header that tells a backend the
//! client's address and the VIP:port it connected to, ahead of the connection's bytes.
//!
//! - Input: the client's address, the VIP:port, and the SNI when the connection is TLS
//!   (passthrough: read from the ClientHello; terminated: the server name).
//! - Output: the binary header (PROXY command, TCP over IPv4 or IPv6), with a
//!   `PP2_TYPE_AUTHORITY` TLV carrying the SNI when there is one.
//! - A backend Service opts in with the annotation `kube-gw.io/proxy-protocol: "v2"`. The
//!   header describes one client, so HTTP requests to such a backend go over connections of
//!   their client connection only, never the shared pool (`proxy`).
//!
//! The format is the one in HAProxy's `proxy-protocol.txt`, section 2.2.

use std::net::{IpAddr, SocketAddr};

/// The Service annotation that turns it on, and its one accepted value.
pub const ANNOTATION: &str = "kube-gw.io/proxy-protocol";
pub const VERSION_2: &str = "v2";

/// The 12-byte signature every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// AF_INET / AF_INET6 with STREAM.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
/// The TLV of the host name the client asked for (SNI).
const PP2_TYPE_AUTHORITY: u8 = 0x02;

/// The header for a connection from `client` to `vip`; `authority` is the SNI, if any (at
/// most 255 bytes are used: a longer SNI is not a host name).
pub fn header(client: SocketAddr, vip: SocketAddr, authority: Option<&str>) -> Vec<u8> {
    let (src, dst) = (client.ip().to_canonical(), vip.ip().to_canonical());
    let mut addrs = Vec::with_capacity(36);
    let family = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            TCP4
        }
        // Mixed families cannot happen through one socket; if they did, both as IPv6.
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            addrs.extend_from_slice(&v6(s).octets());
            addrs.extend_from_slice(&v6(d).octets());
            TCP6
        }
    };
    addrs.extend_from_slice(&client.port().to_be_bytes());
    addrs.extend_from_slice(&vip.port().to_be_bytes());
    if let Some(a) = authority.filter(|a| !a.is_empty() && a.len() <= 255) {
        addrs.push(PP2_TYPE_AUTHORITY);
        addrs.extend_from_slice(&(a.len() as u16).to_be_bytes());
        addrs.extend_from_slice(a.as_bytes());
    }
    let mut out = Vec::with_capacity(16 + addrs.len());
    out.extend_from_slice(&SIGNATURE);
    out.push(V2_PROXY);
    out.push(family);
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

/// Whether a Service's annotations ask for the header: `Ok(true)` for `v2`, `Ok(false)`
/// without the annotation, `Err` (what to write) for any other value.
pub fn wanted(annotations: &std::collections::BTreeMap<String, String>) -> Result<bool, String> {
    match annotations.get(ANNOTATION).map(|v| v.trim()) {
        None => Ok(false),
        Some(VERSION_2) => Ok(true),
        Some(other) => Err(format!(
            "{ANNOTATION} is \"{other}\": kube-gw sends PROXY protocol version 2 only (\"{VERSION_2}\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_the_spec_s_layout() {
        let h = header(
            "192.0.2.66:40000".parse().unwrap(),
            "198.51.100.40:443".parse().unwrap(),
            None,
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
        want.extend_from_slice(&[192, 0, 2, 66, 198, 51, 100, 40]);
        want.extend_from_slice(&[0x9C, 0x40, 0x01, 0xBB]);
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_header_with_the_sni_as_authority() {
        let h = header(
            "[2001:db8::66]:40000".parse().unwrap(),
            "[2001:db8:100::40]:8443".parse().unwrap(),
            Some("pass.example"),
        );
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!((h[12], h[13]), (0x21, 0x21));
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(len, 36 + 3 + 12);
        assert_eq!(h.len(), 16 + len);
        assert_eq!(
            &h[16..32],
            &"2001:db8::66"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[48..52], &[0x9C, 0x40, 0x20, 0xFB]);
        assert_eq!(&h[52..55], &[0x02, 0x00, 12]);
        assert_eq!(&h[55..], b"pass.example");
    }

    #[test]
    fn v4_mapped_addresses_are_sent_as_ipv4() {
        let h = header(
            "[::ffff:192.0.2.66]:1".parse().unwrap(),
            "[::ffff:198.51.100.40]:80".parse().unwrap(),
            None,
        );
        assert_eq!(h[13], 0x11);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn only_v2_is_accepted_and_anything_else_says_what_to_write() {
        let a = |v: &str| {
            [(ANNOTATION.to_string(), v.to_string())]
                .into_iter()
                .collect()
        };
        assert_eq!(wanted(&Default::default()), Ok(false));
        assert_eq!(wanted(&a("v2")), Ok(true));
        let e = wanted(&a("v1")).unwrap_err();
        assert!(e.contains("\"v1\"") && e.contains("\"v2\""), "{e}");
    }
}
