//! The gateway's eBPF `sk_lookup` steering on this host's kernel, in a namespace: 1, 100 and
//! 5 000 VIPs of each family reach the one listening socket per family with their own VIP:port
//! visible; other ports keep their own listeners (or none); removed pairs stop being steered;
//! the program and its maps are gone once steering is dropped. And the per-pair fallback.
//!
//! The test thread enters the namespace itself (`setns`), so that the program attaches to it
//! and every socket it opens lives in it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use kube_gw::gateway::steer::{Accepted, Mode, Pair, Steering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::harness::{require_root, run, wait_for, Lab, Node};

const PORT: u16 = 8443;
/// A port on the same VIPs with an ordinary listener of its own.
const OTHER_PORT: u16 = 9000;
/// A port on the same VIPs where nothing listens.
const CLOSED_PORT: u16 = 9001;

/// VIP number `i` of a family. IPv4 uses the benchmarking range 198.18.0.0/15 (RFC 2544; the
/// documentation ranges hold 768 addresses, not 5 000), IPv6 2001:db8::/32; neither leaves the
/// test's namespace.
fn vip(v6: bool, i: u32) -> IpAddr {
    // From ::1 up: the prefix's ::0 is the subnet-router anycast address.
    let i = i + 1;
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x5e,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
    }
}

/// Makes `n` VIPs of a family local in `node` the cheap way, as a range on `lo` (what
/// matters here is the socket lookup of locally delivered packets): one address and one
/// local route, not thousands of addresses. Thousands of addresses, and the teardown of
/// their namespace, hold the kernel's RTNL lock for long enough to stall other tests'
/// routing daemons (seen in CI: an FRR session missed its 60 s).
fn local_vips(node: &Node, v6: bool, n: u32) -> Vec<IpAddr> {
    if v6 {
        node.exec(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                "2001:db8:5e:0:1::/64",
                "dev",
                "lo",
                "nodad",
            ],
        );
        node.exec(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "local",
                "2001:db8:5e::/64",
                "dev",
                "lo",
            ],
        );
    } else {
        node.exec("ip", &["addr", "add", "198.18.0.0/15", "dev", "lo"]);
    }
    (0..n).map(|i| vip(v6, i)).collect()
}

/// Puts `n` VIPs of a family on `lo` in `node` (one `ip -batch`).
fn add_vips(lab: &Lab, node: &Node, v6: bool, n: u32) -> Vec<IpAddr> {
    let vips: Vec<IpAddr> = (0..n).map(|i| vip(v6, i)).collect();
    let mut batch = String::new();
    for a in &vips {
        let len = if v6 { 128 } else { 32 };
        let nodad = if v6 { " nodad" } else { "" };
        batch.push_str(&format!("addr add {a}/{len} dev lo{nodad}\n"));
    }
    let file = lab.write(&format!("vips-{v6}-{n}"), &batch);
    node.exec("ip", &["-batch", file.to_str().unwrap()]);
    vips
}

/// Runs `f` on a thread inside `node`'s network namespace, on a current-thread runtime (every
/// socket it opens, and the program it attaches, belong to that namespace).
fn in_namespace<T: Send>(node: &Node, f: impl AsyncFnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", node.ns);
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap()
    })
}

/// Connects to `to`, sends a byte, and returns what the gateway side accepted (its local
/// address is the field under test), or the connect error.
async fn probe(rx: &mut mpsc::Receiver<Accepted>, to: SocketAddr) -> Result<SocketAddr, String> {
    let mut c = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| e.to_string())?;
    c.write_all(b"x").await.unwrap();
    let mut a = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .map_err(|_| format!("connected to {to} but the gateway accepted nothing"))?
        .unwrap();
    let mut b = [0u8; 1];
    a.stream.read_exact(&mut b).await.unwrap();
    assert_eq!(
        a.peer,
        c.local_addr().unwrap(),
        "the accepted peer is the client"
    );
    Ok(a.local)
}

fn steered_ids(mode: &Mode) -> (u32, Vec<u32>) {
    match mode {
        Mode::Ebpf {
            program_id,
            map_ids,
        } => (*program_id, map_ids.clone()),
        Mode::Bind { reason } => {
            panic!("expected eBPF steering on this kernel, got the fallback: {reason}")
        }
    }
}

fn loaded_program(id: u32) -> bool {
    aya::programs::loaded_programs().any(|p| p.is_ok_and(|p| p.id() == id))
}

fn loaded_map(id: u32) -> bool {
    aya::maps::loaded_maps().any(|m| m.is_ok_and(|m| m.id() == id))
}

#[test]
fn sk_lookup_steers_1_100_and_5000_vips_of_each_family_to_one_socket() {
    if !require_root("sk_lookup_steers_1_100_and_5000_vips_of_each_family_to_one_socket") {
        return;
    }
    for v6 in [false, true] {
        for n in [1u32, 100, 5000] {
            let mut lab = Lab::new();
            let node = lab.node("gw");
            let vips = local_vips(&node, v6, n);
            let (program_id, map_ids) = in_namespace(&node, async || {
                let (tx, mut rx) = mpsc::channel(16);
                let mut steering = Steering::start(tx, true);
                let (program_id, map_ids) = steered_ids(&steering.mode());
                assert_eq!(map_ids.len(), 2, "the program uses its two maps");
                let want: BTreeSet<Pair> =
                    vips.iter().map(|&addr| Pair { addr, port: PORT }).collect();
                let report = steering.set(&want);
                assert_eq!(report.serving, n as usize, "{report:?}");
                assert!(report.failed.is_empty(), "{report:?}");

                // An ordinary listener on another port of every VIP keeps its connections.
                let any = if v6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                let other = tokio::net::TcpListener::bind((any, OTHER_PORT))
                    .await
                    .unwrap();

                // Every VIP of 1 and 100; of 5 000 every 25th and the last.
                let step = if n > 100 { 25 } else { 1 };
                let mut sample: Vec<IpAddr> = vips.iter().step_by(step).copied().collect();
                sample.push(*vips.last().unwrap());
                for &addr in &sample {
                    let to = SocketAddr::new(addr, PORT);
                    assert_eq!(
                        probe(&mut rx, to).await,
                        Ok(to),
                        "steered with its own VIP:port"
                    );
                }
                let first = SocketAddr::new(vips[0], OTHER_PORT);
                let c = tokio::net::TcpStream::connect(first).await.unwrap();
                let (s, _) = other.accept().await.unwrap();
                assert_eq!(s.local_addr().unwrap(), first);
                assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
                assert!(
                    rx.try_recv().is_err(),
                    "the gateway accepted a connection to another port"
                );
                let closed =
                    tokio::net::TcpStream::connect(SocketAddr::new(vips[0], CLOSED_PORT)).await;
                assert_eq!(
                    closed.map(|_| ()).map_err(|e| e.kind()),
                    Err(std::io::ErrorKind::ConnectionRefused),
                    "a port nothing serves is refused as before"
                );

                // Removing half the pairs stops steering exactly those (the other half still is).
                let kept: BTreeSet<Pair> = want
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 0)
                    .map(|(_, p)| p)
                    .collect();
                assert_eq!(steering.set(&kept).serving, kept.len());
                let gone = want.difference(&kept).next().copied();
                if let Some(gone) = gone {
                    let to = SocketAddr::new(gone.addr, gone.port);
                    let r = tokio::net::TcpStream::connect(to)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.kind());
                    assert_eq!(
                        r,
                        Err(std::io::ErrorKind::ConnectionRefused),
                        "{to} is no longer steered"
                    );
                }
                let still = *kept.iter().next().unwrap();
                let to = SocketAddr::new(still.addr, still.port);
                assert_eq!(probe(&mut rx, to).await, Ok(to));

                assert!(
                    loaded_program(program_id),
                    "the program is loaded while steering runs"
                );
                drop(steering);
                let r = tokio::net::TcpStream::connect(to)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind());
                assert_eq!(
                    r,
                    Err(std::io::ErrorKind::ConnectionRefused),
                    "nothing is steered after stop"
                );
                (program_id, map_ids)
            });
            // The kernel frees programs and maps once their last reference is gone (RCU).
            wait_for(
                "the program and its maps to be gone",
                Duration::from_secs(10),
                || {
                    (!loaded_program(program_id) && !map_ids.iter().any(|&m| loaded_map(m)))
                        .then_some(())
                },
            );
            eprintln!("steering: {n} {} VIPs ok", if v6 { "IPv6" } else { "IPv4" });
            drop(lab);
        }
    }
}

#[test]
fn without_ebpf_steering_binds_one_socket_per_vip_port() {
    if !require_root("without_ebpf_steering_binds_one_socket_per_vip_port") {
        return;
    }
    let mut lab = Lab::new();
    let node = lab.node("gw");
    let v4 = add_vips(&lab, &node, false, 3);
    let v6 = add_vips(&lab, &node, true, 3);
    // A VIP not on lo yet is bound all the same (IP_FREEBIND) and served once it is added.
    let later = vip(false, 99);
    in_namespace(&node, async || {
        let (tx, mut rx) = mpsc::channel(16);
        let mut steering = Steering::start(tx, false);
        match steering.mode() {
            Mode::Bind { reason } => assert!(reason.contains("disabled"), "{reason}"),
            m => panic!("expected the fallback, got {m:?}"),
        }
        let want: BTreeSet<Pair> = v4
            .iter()
            .chain(&v6)
            .chain([&later])
            .map(|&addr| Pair { addr, port: PORT })
            .collect();
        let report = steering.set(&want);
        assert_eq!((report.serving, report.failed.len()), (7, 0), "{report:?}");
        for &addr in v4.iter().chain(&v6) {
            let to = SocketAddr::new(addr, PORT);
            assert_eq!(probe(&mut rx, to).await, Ok(to));
        }
        run(Command::new("ip").args(["addr", "add", &format!("{later}/32"), "dev", "lo"]));
        let to = SocketAddr::new(later, PORT);
        assert_eq!(probe(&mut rx, to).await, Ok(to));
        // A pair already taken by another socket is reported, not lost silently.
        let taken = Pair {
            addr: v4[0],
            port: OTHER_PORT,
        };
        let _holder = std::net::TcpListener::bind((taken.addr, taken.port)).unwrap();
        let mut with_taken = want.clone();
        with_taken.insert(taken);
        let report = steering.set(&with_taken);
        assert_eq!(report.serving, 7);
        assert!(
            report
                .failed
                .get(&taken)
                .is_some_and(|e| e.contains("in use")),
            "{report:?}"
        );
        // Removed pairs close their sockets.
        steering.set(&BTreeSet::new());
        let r = tokio::net::TcpStream::connect(SocketAddr::new(v4[1], PORT))
            .await
            .map(|_| ())
            .map_err(|e| e.kind());
        assert_eq!(r, Err(std::io::ErrorKind::ConnectionRefused));
    });
}
