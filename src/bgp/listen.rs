//! The BGP listener: accepts the neighbors' connections on TCP port 179 and hands each to
//! its neighbor's session task, which decides what to do with it (take it, or resolve a
//! collision with its own connection: RFC 4271 §6.8). A connection from any other address
//! is closed at once, before a byte is read.
//!
//! ```text
//!  0.0.0.0:179 ─┐                           ┌─► session 192.0.2.1  (mpsc<TcpStream>)
//!               ├─ accept ─ peer address? ──┼─► session 2001:db8::1
//!  [::]:179  ───┘        (else: close)      └─► …
//! ```
//!
//! Neighbors are told apart by address and, for IPv6 link-local ones, by the interface the
//! connection came in on (its scope id, named when the connection arrives, so an interface
//! created or re-created after the start is found): `fe80::1` on swp1 and `fe80::1` on swp2
//! are two neighbors. Their MD5 keys cannot be told apart on the listener, though: the kernel
//! keys them by address (an interface index may only name a VRF), so neighbors sharing an
//! address need the same password (or none) to connect to kube-gw — kube-gw's own
//! connections are not affected — and a difference is reported.
//!
//! Two sockets, IPv4 and IPv6-only, so each neighbor's TCP MD5 key is set in its own family
//! on the listener (the kernel checks the SYN against it; a SYN without the right signature
//! never becomes a connection). GTSM is set on each accepted connection of a neighbor that
//! asks for it. Inputs: the neighbors; outputs: connections on the sessions' channels and,
//! through the caller, a status line (listening, or why not — a port already taken by
//! another BGP daemon leaves the active sessions working).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use super::peer::Password;

/// A neighbor as the listener knows it: its address and, for an IPv6 link-local one, its
/// interface.
pub type Key = (IpAddr, Option<String>);

/// The key of a connection from `from`; `interface` names a scope id.
pub fn key_of(from: SocketAddr, interface: impl Fn(u32) -> Option<String>) -> Key {
    match from {
        SocketAddr::V6(a) if crate::link::is_link_local(a.ip()) => {
            (IpAddr::V6(*a.ip()), interface(a.scope_id()))
        }
        _ => (from.ip().to_canonical(), None),
    }
}

/// Where a neighbor's accepted connections go.
#[derive(Debug, Clone)]
pub struct Route {
    pub sessions: mpsc::Sender<TcpStream>,
    pub ttl_security: bool,
}

/// Binds the IPv4 and IPv6 listeners on `port` with the neighbors' MD5 keys; with `gtsm`
/// (some neighbor uses it) they answer SYNs with TTL 255, or that neighbor's minimum TTL
/// would drop the SYN-ACK. Returns the listeners that could be bound, and what went wrong
/// with the others.
pub fn bind(
    port: u16,
    keys: &[(IpAddr, Option<Password>)],
    gtsm: bool,
) -> (Vec<TcpListener>, Vec<String>) {
    let mut listeners = Vec::new();
    let (by_addr, mut problems) = one_key_per_address(keys);
    for any in [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ] {
        match bind_one(any, &by_addr, gtsm) {
            Ok(l) => listeners.push(l),
            Err(e) => problems.push(format!("cannot listen on {any}: {e}")),
        }
    }
    (listeners, problems)
}

/// The kernel keeps one MD5 key per address on a socket: the first neighbor's (in
/// configuration order) is set, and a neighbor with the same address and another password,
/// or none, is a problem.
fn one_key_per_address(
    keys: &[(IpAddr, Option<Password>)],
) -> (Vec<(IpAddr, &Password)>, Vec<String>) {
    let mut first: Vec<(IpAddr, Option<&Password>)> = Vec::new();
    let mut problems = Vec::new();
    for (addr, password) in keys {
        match first.iter().find(|(a, _)| a == addr) {
            None => first.push((*addr, password.as_ref())),
            Some((_, p)) if *p == password.as_ref() => {}
            Some(_) => problems.push(format!(
                "neighbors at {addr} (on different interfaces) do not share one TCP MD5 password; \
                 the kernel keeps one key per address, so only the first one's connections to \
                 kube-gw work (kube-gw's own connections to each work): give them the same \
                 password, or none"
            )),
        }
    }
    let keyed = first
        .into_iter()
        .filter_map(|(a, p)| Some((a, p?)))
        .collect();
    (keyed, problems)
}

fn bind_one(
    any: SocketAddr,
    keys: &[(IpAddr, &Password)],
    gtsm: bool,
) -> std::io::Result<TcpListener> {
    let sock = match any {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = TcpSocket::new_v6()?;
            socket2::SockRef::from(&s).set_only_v6(true)?;
            s
        }
    };
    sock.set_reuseaddr(true)?;
    if gtsm {
        let s = socket2::SockRef::from(&sock);
        match any {
            SocketAddr::V4(_) => s.set_ttl_v4(255)?,
            SocketAddr::V6(_) => s.set_unicast_hops_v6(255)?,
        }
        // The SYN's TTL is checked at accept (the listener is shared with neighbors that do
        // not use GTSM, so it cannot drop low-TTL SYNs for all of them).
        kube_gw_sockopt::save_syn(&sock)?;
    }
    sock.bind(any)?;
    for (peer, password) in keys {
        if peer.is_ipv4() == any.is_ipv4() {
            kube_gw_sockopt::set_md5(&sock, *peer, password.bytes(), None)?;
        }
    }
    sock.listen(64)
}

/// Accepts until `stop`; each neighbor's connections go to its session.
pub async fn run(
    listeners: Vec<TcpListener>,
    routes: HashMap<Key, Route>,
    mut stop: watch::Receiver<bool>,
    hb: crate::lifecycle::Heartbeat,
) {
    let (tx, mut rx) = mpsc::channel::<(TcpStream, SocketAddr)>(16);
    let mut tasks = Vec::new();
    for l in listeners {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "BGP listener: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    drop(tx);
    loop {
        hb.turn().await;
        tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => break,
            c = rx.recv() => {
                let Some((stream, from)) = c else { break };
                hand_over(&routes, stream, from);
            }
            () = hb.idle() => {}
        }
    }
    for t in tasks {
        t.abort();
    }
}

fn hand_over(routes: &HashMap<Key, Route>, stream: TcpStream, from: SocketAddr) {
    let peer = from.ip().to_canonical();
    let key = key_of(from, |scope| {
        crate::link::interface_name(&crate::link::read(), scope)
    });
    let Some(route) = routes.get(&key) else {
        tracing::debug!(%from, "BGP connection from an address that is not a neighbor; closed");
        return;
    };
    if route.ttl_security {
        // RFC 5082: the neighbor is one hop away and sends with 255. A SYN that arrived with
        // less came from further away: refused before anything of it is read.
        match kube_gw_sockopt::saved_syn_ttl(&stream) {
            Ok(255) => {}
            Ok(ttl) => {
                tracing::warn!(neighbor = %peer, ttl, "BGP connection refused: GTSM needs TTL 255 and the SYN arrived with less (is the neighbor directly connected, and does it send with TTL 255?)");
                return;
            }
            Err(e) => {
                tracing::warn!(neighbor = %peer, error = %e, "cannot read the connection's SYN to check GTSM; closed");
                return;
            }
        }
        let s = socket2::SockRef::from(&stream);
        let set = match from {
            SocketAddr::V4(_) => s.set_ttl_v4(255),
            SocketAddr::V6(_) => s.set_unicast_hops_v6(255),
        }
        .and_then(|()| kube_gw_sockopt::set_min_ttl(&stream, from, 255));
        if let Err(e) = set {
            tracing::warn!(neighbor = %peer, error = %e, "cannot set GTSM on the accepted connection; closed");
            return;
        }
    }
    let _ = stream.set_nodelay(true);
    if route.sessions.try_send(stream).is_err() {
        tracing::debug!(neighbor = %peer, "the session has connections waiting; this one is closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_peers_are_known_by_address_and_interface() {
        let name = |i: u32| (i == 7).then(|| "swp1".to_string());
        let ll: SocketAddr = "[fe80::1%7]:40000".parse().unwrap();
        let want = ("fe80::1".parse().unwrap(), Some("swp1".to_string()));
        assert_eq!(key_of(ll, name), want);
        let gone: SocketAddr = "[fe80::1%9]:40000".parse().unwrap();
        assert_eq!(key_of(gone, name), ("fe80::1".parse().unwrap(), None));
        let global: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        assert_eq!(key_of(global, name), ("2001:db8::1".parse().unwrap(), None));
        let v4: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert_eq!(key_of(v4, name), ("192.0.2.1".parse().unwrap(), None));
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:40000".parse().unwrap();
        assert_eq!(key_of(mapped, name), ("192.0.2.1".parse().unwrap(), None));
    }

    #[test]
    fn one_md5_key_per_address_and_a_problem_for_a_different_one() {
        let a: IpAddr = "fe80::1".parse().unwrap();
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        let pw = |s: &str| Some(Password::from_bytes(s.as_bytes()));
        let keys = vec![(a, pw("one")), (a, pw("one")), (b, None)];
        let (keyed, problems) = one_key_per_address(&keys);
        assert_eq!(keyed.len(), 1);
        assert!(problems.is_empty());
        for other in [pw("two"), None] {
            let keys = vec![(a, pw("one")), (a, other)];
            let (keyed, problems) = one_key_per_address(&keys);
            assert_eq!(keyed.len(), 1);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("fe80::1"));
        }
    }
}
