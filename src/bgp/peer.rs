//! Configuration → neighbors: each `[[bgp.neighbors]]` entry becomes a [`Peer`], what the
//! speaker and its session need to reach the neighbor and what to propose (pure, apart
//! from reading the password file).
//!
//! - The interface scopes only an IPv6 link-local neighbor (an IPv4 link-local one is
//!   reached through the kernel's on-link route; for others it is ignored, and the
//!   configuration check warns).
//! - Extended next hop (RFC 8950) is offered on IPv6 sessions when the neighbor asks for it,
//!   by default on link-local ones.
//! - A neighbor whose password file cannot be read is not started rather than connected
//!   without its key: [`peers`] returns the reason with it.
//! - Passwords are [`Password`]s: their bytes reach the socket option and nothing else (no
//!   log, status or error shows them).

use std::net::IpAddr;
use std::sync::Arc;

use super::fsm::{Offer, RemoteAs, Settings};

/// How to reach the neighbor and what to propose.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: IpAddr,
    /// The interface of a link-local neighbor.
    pub interface: Option<String>,
    /// How logs and status name it (`fe80::1%swp1` for a link-local one).
    pub name: String,
    pub port: u16,
    /// What the FSM needs, including what the OPEN offers.
    pub settings: Settings,
    /// What every route to this neighbor carries (from its configuration).
    pub export: ExportPolicy,
    /// TCP MD5 key, if the neighbor has a password file.
    pub password: Option<Password>,
    /// GTSM: TTL 255 out, nothing below 255 in.
    pub ttl_security: bool,
    /// More received prefixes than this closes the session (Cease / Maximum Number of
    /// Prefixes Reached, RFC 4486) and holds it down for a minute.
    pub max_prefixes: Option<u32>,
    /// BFD toward this neighbor, if asked for.
    pub bfd: Option<crate::bfd::service::PeerSpec>,
    /// The source address of our connections (`local-address`).
    pub local_address: Option<IpAddr>,
    /// Next hops announced instead of the session's own addresses (`next-hop-ipv4`,
    /// `next-hop-ipv6`).
    pub next_hop_v4: Option<std::net::Ipv4Addr>,
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// Graceful restart (`[bgp] graceful-restart`): set by the speaker at start.
    pub restart: Option<super::restart::Restart>,
}

/// A TCP MD5 password: its bytes never reach a log, status or error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Arc<[u8]>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    #[cfg(test)]
    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        Self(b.into())
    }

    /// The key, for the socket option only.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads a password file: its first line, without the line break (so `echo pw > file`
    /// works); an empty or too long password is an error that says so.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the password file {}: {e}; check that it exists and kube-gw may read it",
                path.display()
            )
        })?;
        let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(format!(
                "the password file {} is empty; write the neighbor's TCP MD5 password in it",
                path.display()
            ));
        }
        if line.len() > kube_gw_sockopt::MAX_KEY_LEN {
            return Err(format!(
                "the password in {} is {} bytes; TCP MD5 takes at most {}",
                path.display(),
                line.len(),
                kube_gw_sockopt::MAX_KEY_LEN
            ));
        }
        Ok(Self(line.into()))
    }
}

/// Per-neighbor attributes of the routes sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    pub prepend: u8,
}

/// The BGP port.
pub const PORT: u16 = 179;

/// The neighbors of a configuration, each with the reason it cannot be started (if any).
pub fn peers(cfg: &crate::config::Config) -> Vec<(Peer, Option<String>)> {
    use crate::config::{PeerKind, RemoteAsn};
    let Some(b) = &cfg.bgp else {
        return Vec::new();
    };
    b.neighbors
        .iter()
        .map(|n| {
            let interface = match n.address {
                IpAddr::V6(a) if crate::link::is_link_local(&a) => n.interface.clone(),
                _ => None,
            };
            let remote_as = match n.remote_asn {
                RemoteAsn::Number(a) => RemoteAs::Exact(a),
                RemoteAsn::Kind(PeerKind::External) => RemoteAs::External,
                RemoteAsn::Kind(PeerKind::Internal) => RemoteAs::Internal,
            };
            let interface_for_bfd = interface.clone();
            let password = n.password_file.as_deref().map(Password::read);
            let problem = if let Some(Err(e)) = &password {
                Some(format!("{e}; this neighbor is not started"))
            } else {
                None
            };
            (
                Peer {
                    address: n.address,
                    name: crate::link::neighbor_name(n.address, interface.as_deref()),
                    port: PORT,
                    settings: Settings {
                        local_as: b.asn,
                        router_id: b.router_id,
                        remote_as,
                        hold_time: b.hold_time,
                        keepalive: Some(b.keepalive).filter(|k| *k > 0),
                        passive: n.passive,
                        offer: Offer {
                            ipv4_unicast: true,
                            ipv6_unicast: true,
                            extended_next_hop: n.address.is_ipv6()
                                && n.extended_next_hop.unwrap_or(interface.is_some()),
                            // Set per session from the speaker's `restart::Restart`.
                            graceful_restart: None,
                        },
                    },
                    interface,
                    // Unparsable values were refused when the configuration was checked.
                    export: ExportPolicy {
                        communities: n
                            .communities
                            .iter()
                            .filter_map(|c| crate::config::parse_community(c))
                            .collect(),
                        large_communities: n
                            .large_communities
                            .iter()
                            .filter_map(|c| crate::config::parse_large_community(c))
                            .collect(),
                        med: n.med,
                        prepend: n.prepend,
                    },
                    password: password.and_then(Result::ok),
                    ttl_security: n.ttl_security,
                    max_prefixes: n.max_prefixes,
                    bfd: n.bfd.then(|| crate::bfd::service::PeerSpec {
                        name: crate::link::neighbor_name(n.address, interface_for_bfd.as_deref()),
                        address: n.address,
                        interface: interface_for_bfd.clone(),
                        multihop: n.bfd_multihop,
                        local: n.local_address,
                        config: crate::bfd::session::Config {
                            desired_min_tx: n.bfd_interval.saturating_mul(1000),
                            required_min_rx: n.bfd_interval.saturating_mul(1000),
                            detect_mult: n.bfd_multiplier,
                        },
                    }),
                    local_address: n.local_address,
                    next_hop_v4: n.next_hop_ipv4,
                    next_hop_v6: n.next_hop_ipv6,
                    restart: None,
                },
                problem,
            )
        })
        .collect()
}

/// A neighbor for unit tests elsewhere in the speaker.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn peer() -> Peer {
        Peer {
            address: "192.0.2.1".parse().unwrap(),
            interface: None,
            name: "192.0.2.1".into(),
            port: PORT,
            settings: Settings {
                local_as: 65010,
                router_id: "192.0.2.20".parse().unwrap(),
                remote_as: RemoteAs::Exact(65000),
                hold_time: 9,
                keepalive: None,
                passive: false,
                offer: Offer {
                    ipv4_unicast: true,
                    ipv6_unicast: true,
                    extended_next_hop: false,
                    graceful_restart: None,
                },
            },
            export: ExportPolicy::default(),
            password: None,
            ttl_security: false,
            max_prefixes: None,
            bfd: None,
            local_address: None,
            next_hop_v4: None,
            next_hop_v6: None,
            restart: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_secret(p: &std::path::Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn config(neighbors: &str, dir: &std::path::Path) -> crate::config::Config {
        let text = format!(
            "[bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\nhold-time = 9\nkeepalive = 3\n{neighbors}"
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, &text).unwrap();
        crate::config::parse(&path, &text)
            .map_err(|e| e.to_string())
            .unwrap()
            .config
    }

    #[test]
    fn a_neighbor_becomes_a_peer_with_its_settings_and_policy() {
        let dir = tempfile::tempdir().unwrap();
        write_secret(&dir.path().join("leaf1.pw"), "s3cret\n");
        let cfg = config(
            r#"
[[bgp.neighbors]]
address = "192.0.2.1"
remote-asn = 65000
password-file = "leaf1.pw"
ttl-security = true
communities = ["65010:100"]
large-communities = ["65010:1:2"]
med = 50
prepend = 2
max-prefixes = 10

[[bgp.neighbors]]
address = "fe80::1"
interface = "swp1"
remote-asn = "external"
passive = true

[[bgp.neighbors]]
address = "2001:db8::1"
interface = "swp2"
remote-asn = "internal"
"#,
            dir.path(),
        );
        let peers = peers(&cfg);
        assert_eq!(peers.len(), 3);
        let (p, problem) = &peers[0];
        assert!(problem.is_none());
        assert_eq!(p.name, "192.0.2.1");
        assert_eq!(p.port, 179);
        assert_eq!(p.settings.remote_as, RemoteAs::Exact(65000));
        assert_eq!((p.settings.hold_time, p.settings.keepalive), (9, Some(3)));
        assert_eq!(
            p.password.as_ref().map(Password::bytes),
            Some(&b"s3cret"[..])
        );
        assert!(p.ttl_security && !p.settings.passive);
        assert!(
            !p.settings.offer.extended_next_hop,
            "IPv4 sessions carry no RFC 8950"
        );
        assert_eq!(
            p.export,
            ExportPolicy {
                communities: vec![65010 << 16 | 100],
                large_communities: vec![(65010, 1, 2)],
                med: Some(50),
                prepend: 2
            }
        );
        assert_eq!(p.max_prefixes, Some(10));
        // Link-local: scoped to its interface, named with it, extended next hop by default.
        let (p, _) = &peers[1];
        assert_eq!(p.interface.as_deref(), Some("swp1"));
        assert_eq!(p.name, "fe80::1%swp1");
        assert_eq!(p.settings.remote_as, RemoteAs::External);
        assert!(p.settings.passive && p.settings.offer.extended_next_hop);
        // A global address ignores the interface and offers no extended next hop.
        let (p, _) = &peers[2];
        assert_eq!(
            (p.interface.as_deref(), p.name.as_str()),
            (None, "2001:db8::1")
        );
        assert_eq!(p.settings.remote_as, RemoteAs::Internal);
        assert!(!p.settings.offer.extended_next_hop);
    }

    #[test]
    fn a_neighbor_whose_password_cannot_be_read_is_not_started_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        write_secret(&dir.path().join("pw"), "x");
        let cfg = config(
            "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\npassword-file = \"pw\"\n",
            dir.path(),
        );
        std::fs::remove_file(dir.path().join("pw")).unwrap();
        let peers = peers(&cfg);
        let (p, problem) = &peers[0];
        assert!(p.password.is_none());
        let problem = problem.as_deref().unwrap();
        assert!(
            problem.contains("cannot read the password file"),
            "{problem}"
        );
        assert!(
            problem.ends_with("this neighbor is not started"),
            "{problem}"
        );
    }

    #[test]
    fn a_password_file_gives_its_first_line_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\nsecond line\n").unwrap();
        let pw = Password::read(&p).unwrap();
        assert_eq!(pw.bytes(), b"s3cret");
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
    }

    #[test]
    fn an_empty_or_too_long_password_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "\n").unwrap();
        assert!(Password::read(&p).unwrap_err().contains("is empty"));
        std::fs::write(&p, "x".repeat(81)).unwrap();
        assert!(Password::read(&p).unwrap_err().contains("at most 80"));
        let missing = Password::read(&dir.path().join("none")).unwrap_err();
        assert!(
            missing.contains("cannot read the password file"),
            "{missing}"
        );
    }
}
