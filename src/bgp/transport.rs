//! The TCP side of a session: where to connect, connecting with the neighbor's TCP MD5 key
//! (RFC 2385) and GTSM (RFC 5082: TTL 255 out, minimum TTL 255 in) set before the SYN
//! (crates/sockopt holds the `setsockopt` calls), and how messages are batched into writes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::peer::Peer;
use super::rib_out::{NextHops, Out};
use super::wire::{self, Kind};
use crate::link;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// UPDATEs are written this many bytes at a time: a full table is ~125 UPDATEs per
/// 100 000 routes, and one write each would cost a system call and a segment apiece.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// RFC 9687's send hold time: the larger of 8 minutes and twice the hold time.
pub fn send_hold_time(hold_time: u16) -> Duration {
    Duration::from_secs(480).max(Duration::from_secs(2 * u64::from(hold_time)))
}

/// Where to connect: the neighbor's address on port 179, scoped to its interface when it is
/// link-local (the interface's index read now, so one that appeared later is found).
pub fn peer_socket(peer: &Peer) -> Result<SocketAddr, String> {
    match (peer.address, &peer.interface) {
        (IpAddr::V6(a), Some(i)) => {
            let scope = link::resolve(i)?;
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                a, peer.port, 0, scope,
            )))
        }
        (a, _) => Ok(SocketAddr::new(a, peer.port)),
    }
}

/// Sends `n` (within `limit`, the heartbeat excused) and closes the connection.
pub async fn notify_and_close(
    mut c: TcpStream,
    n: &wire::Notification,
    hb: &crate::lifecycle::Heartbeat,
    limit: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let _ = hb
        .during(tokio::time::timeout(limit, c.write_all(&n.encode())))
        .await;
    let _ = c.shutdown().await;
}

/// One connection attempt within [`CONNECT_TIMEOUT`] (the heartbeat is excused meanwhile);
/// the error says what failed, for the neighbor's status.
pub async fn attempt(peer: &Peer, hb: &crate::lifecycle::Heartbeat) -> Result<TcpStream, String> {
    let to = peer_socket(peer)?;
    match hb
        .during(tokio::time::timeout(CONNECT_TIMEOUT, connect(peer, to)))
        .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {to}: {e}")),
        Err(_) => Err(format!("no answer from {to} within {CONNECT_TIMEOUT:?}")),
    }
}

/// Connects to the peer with the neighbor's TCP MD5 key and GTSM settings in place before
/// the SYN goes out.
pub async fn connect(peer: &Peer, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(p) = &peer.password {
        // By address only, also for a link-local peer: the key's interface index may only
        // name a VRF (crates/sockopt), and this socket talks to one peer anyway.
        kube_gw_sockopt::set_md5(&sock, to.ip(), p.bytes(), None).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot set the TCP MD5 key ({e}); the kernel needs CONFIG_TCP_MD5SIG"),
            )
        })?;
    }
    if peer.ttl_security {
        let s = socket2::SockRef::from(&sock);
        match to {
            SocketAddr::V4(_) => s.set_ttl_v4(255)?,
            SocketAddr::V6(_) => s.set_unicast_hops_v6(255)?,
        }
        kube_gw_sockopt::set_min_ttl(&sock, to, 255)?;
    }
    if let Some(local) = peer.local_address {
        sock.bind(SocketAddr::new(local, 0)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot use the local address {local} ({e}); is it on an interface?"),
            )
        })?;
    }
    let stream = sock.connect(to).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The session's own addresses as next hops: its local IPv4 address, or its IPv6 next hops
/// from the kernel's address table ([`link::next_hops`]); the neighbor's configured
/// `next-hop-ipv4`/`next-hop-ipv6` instead where set (a session over the loopback to the
/// switch's own routing daemon: the switch's address, not 127.0.0.1).
pub fn next_hops(conn: &TcpStream, peer: &Peer) -> NextHops {
    let Some((local, remote)) = conn.local_addr().ok().zip(conn.peer_addr().ok()) else {
        return NextHops::default();
    };
    let six = link::next_hops(&link::read(), local, remote);
    let mut hops = NextHops {
        v4: match local.ip().to_canonical() {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        },
        v6: six.map(|(g, _)| g),
        v6_local: six.and_then(|(_, l)| l),
    };
    if let Some(v4) = peer.next_hop_v4 {
        hops.v4 = Some(v4);
    }
    if let Some(v6) = peer.next_hop_v6 {
        hops.v6 = Some(v6);
        hops.v6_local = None;
    }
    hops
}

/// Framed bytes for one write: `count` messages of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub kind: Kind,
    pub count: u64,
    pub bytes: Vec<u8>,
}

/// The messages, framed, in order: UPDATEs many per write (up to [`WRITE_CHUNK`]), each
/// ROUTE-REFRESH marker on its own.
pub fn batches(msgs: Vec<Out>) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut cur = Batch {
        kind: Kind::Update,
        count: 0,
        bytes: Vec::new(),
    };
    let flush = |cur: &mut Batch, out: &mut Vec<Batch>| {
        if cur.count > 0 {
            out.push(std::mem::replace(
                cur,
                Batch {
                    kind: Kind::Update,
                    count: 0,
                    bytes: Vec::new(),
                },
            ));
        }
    };
    for m in msgs {
        match m {
            Out::Update(body) => {
                let Ok(bytes) = wire::frame(Kind::Update, &body) else {
                    continue;
                };
                if cur.bytes.len() + bytes.len() > WRITE_CHUNK {
                    flush(&mut cur, &mut out);
                }
                cur.bytes.extend_from_slice(&bytes);
                cur.count += 1;
            }
            Out::RouteRefresh(r) => {
                flush(&mut cur, &mut out);
                out.push(Batch {
                    kind: Kind::RouteRefresh,
                    count: 1,
                    bytes: r.encode(),
                });
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::wire::RouteRefresh;

    #[test]
    fn the_send_hold_time_is_eight_minutes_or_twice_the_hold_time() {
        assert_eq!(send_hold_time(9), Duration::from_secs(480));
        assert_eq!(send_hold_time(0), Duration::from_secs(480));
        assert_eq!(send_hold_time(300), Duration::from_secs(600));
    }

    #[test]
    fn updates_share_writes_up_to_64_kib_and_markers_keep_their_place() {
        let body = vec![0u8; 4000]; // 4019 bytes framed
        let mark = |subtype| {
            Out::RouteRefresh(RouteRefresh {
                afi: 1,
                subtype,
                safi: 1,
            })
        };
        let mut msgs = vec![mark(RouteRefresh::BEGIN)];
        msgs.extend((0..20).map(|_| Out::Update(body.clone())));
        msgs.push(mark(RouteRefresh::END));
        let b = batches(msgs);
        let shape: Vec<(Kind, u64)> = b.iter().map(|x| (x.kind, x.count)).collect();
        assert_eq!(
            shape,
            [
                (Kind::RouteRefresh, 1),
                (Kind::Update, 16),
                (Kind::Update, 4),
                (Kind::RouteRefresh, 1)
            ]
        );
        assert!(b.iter().all(|x| x.bytes.len() <= WRITE_CHUNK));
        assert_eq!(b[1].bytes.len(), 16 * 4019);
        assert!(batches(Vec::new()).is_empty());
    }
}
