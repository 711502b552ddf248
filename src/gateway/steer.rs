//! Steering: gateway VIP:ports → the gateway's one listening socket per address family.
//!
//! Role: the gateway serves many VIP:port pairs (every listener of every Gateway) with one
//! proxy. The eBPF `sk_lookup` program in `ebpf/` (built by `build.rs`, embedded here) runs on
//! every socket lookup in the daemon's network namespace; a TCP connection to a pair in its
//! map is handed to the gateway's IPv4 or IPv6 listener, which then reads the original VIP:port
//! from `getsockname`. Pairs not in the map, and every other port, are looked up by the kernel
//! as usual: nothing else on the switch is touched.
//!
//! Inputs: the set of pairs to serve ([`Steering::set`], from the gateway's desired state).
//! Outputs: accepted connections on the channel given to [`Steering::start`], each with the
//! local address the client connected to; a [`SteerReport`] for status.
//!
//! Owns: the loaded program, its netns link and its two maps, and the listening sockets. They
//! live exactly as long as the [`Steering`]: dropping it closes the link and the maps, and the
//! kernel removes the program — unless the sockets were handed over ([`Handover`]).
//!
//! Restarts without a refused connection: when systemd's `kube-gw-gateway.socket` holds the two
//! listening sockets (`LISTEN_FDS` named `gateway`: 127.0.0.1 and [::1]), the link and both
//! maps are pinned under `/sys/fs/bpf/kube-gw/netns-<inode>/`. A stopping daemon then leaves
//! them in place: the program keeps steering VIP:ports to the sockets systemd still holds,
//! and new connections wait in their accept queue. The next daemon adopts the pinned link and
//! maps (no second program is attached), puts the same sockets in the map again and starts
//! accepting once it has the gateway's state. Without handed-over sockets nothing is pinned
//! (a pinned program steering to sockets nobody holds would help no one).
//!
//! Where the program cannot be loaded (a kernel without BPF `sk_lookup` (5.9+), no
//! `CAP_BPF`/`CAP_NET_ADMIN`, or a binary built with `KUBE_GW_EBPF=off`), steering falls back to
//! one socket per pair, bound with `IP_FREEBIND` (the VIP need not be on `lo` yet), and the
//! report says why. Either way a pair that cannot be served is reported, never silently lost.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, SockMap};
use aya::programs::SkLookup;
use aya::Ebpf;
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The eBPF object (`ebpf/`), built by `build.rs`; empty when built with `KUBE_GW_EBPF=off`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kube-gw-ebpf.o"));

/// Bytes of a key in `KG_LISTENERS` (the layout `ebpf/src/main.rs` builds).
pub const KEY_LEN: usize = 20;
/// The `KG_SOCKETS` slot of the IPv4 listener.
const SLOT_V4: u32 = 0;
/// The `KG_SOCKETS` slot of the IPv6 listener.
const SLOT_V6: u32 = 1;
const IPPROTO_TCP: u8 = 6;
/// Pending connections per listening socket.
const BACKLOG: i32 = 4096;

/// One address and TCP port the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pair {
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::new(self.addr, self.port).fmt(f)
    }
}

/// The map key of a pair: the address as IPv6 (IPv4 mapped into `::ffff:0:0/96`), the port
/// big-endian, the protocol, a zero byte. Pure, so that the layout the program reads is tested.
pub fn map_key(pair: Pair) -> [u8; KEY_LEN] {
    let v6 = match pair.addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let mut key = [0u8; KEY_LEN];
    key[..16].copy_from_slice(&v6.octets());
    key[16..18].copy_from_slice(&pair.port.to_be_bytes());
    key[18] = IPPROTO_TCP;
    key
}

/// How the pairs reach the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Mode {
    /// The `sk_lookup` program: one socket per family.
    Ebpf { program_id: u32, map_ids: Vec<u32> },
    /// One socket per pair, because the program could not be used.
    Bind { reason: String },
}

/// What steering did with the last [`Steering::set`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteerReport {
    pub mode: Mode,
    /// Pairs being steered to the proxy.
    pub serving: usize,
    /// Pairs that could not be served, and why.
    pub failed: BTreeMap<Pair, String>,
}

/// A connection accepted for the gateway.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The VIP:port the client connected to.
    pub local: SocketAddr,
}

/// The listening sockets systemd handed over (socket activation), and where the program's
/// link and maps are pinned so that they outlive this process.
#[derive(Debug)]
pub struct Handover {
    pub v4: std::net::TcpListener,
    pub v6: std::net::TcpListener,
    pub pin_dir: std::path::PathBuf,
}

impl Handover {
    /// The sockets of `LISTEN_FDS` (for this process: `LISTEN_PID`) named `gateway` (one
    /// IPv4, one IPv6); `None` without them.
    pub fn from_env() -> Result<Option<Self>, String> {
        let (mut v4, mut v6) = (None, None);
        let fds = HANDED_OVER
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(kube_gw_sockopt::listen_fds);
        for (name, fd) in fds {
            let l = std::net::TcpListener::from(fd);
            match (name.as_str(), l.local_addr()) {
                ("gateway", Ok(SocketAddr::V4(_))) => v4 = Some(l),
                ("gateway", Ok(SocketAddr::V6(_))) => v6 = Some(l),
                (other, addr) => {
                    tracing::warn!(
                        name = other,
                        ?addr,
                        "gateway: a socket handed over that is not a gateway listener; closing it"
                    );
                }
            }
        }
        match (v4, v6) {
            (Some(v4), Some(v6)) => Ok(Some(Self {
                v4,
                v6,
                pin_dir: pin_dir()?,
            })),
            (None, None) => Ok(None),
            _ => Err("systemd handed over a gateway listener for one address family only: kube-gw-gateway.socket must listen on 127.0.0.1 and [::1] (packaging/systemd/gateway-socket/kube-gw-gateway.socket)".into()),
        }
    }
}

/// The descriptors systemd passed, taken at start ([`take_handed_over`]).
type Fds = Vec<(String, std::os::fd::OwnedFd)>;
static HANDED_OVER: std::sync::Mutex<Option<Fds>> = std::sync::Mutex::new(None);

/// Takes the descriptors systemd passed (close-on-exec from now on), first thing at start,
/// for the gateway to find later.
pub fn take_handed_over() {
    let fds = kube_gw_sockopt::listen_fds();
    if !fds.is_empty() {
        *HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(fds);
    }
}

/// Removes this network namespace's pinned steering, if any: used whenever this daemon will
/// not adopt it (no handed-over sockets, no eBPF, no `[gateway]`). Unpinning detaches the
/// program once no process holds its link.
pub fn remove_pins() {
    if let Ok(dir) = pin_dir() {
        if dir.exists() {
            tracing::info!(dir = %dir.display(), "gateway: removing the pinned steering of an earlier run");
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "gateway: cannot remove the pinned steering: {e}");
            }
        }
    }
}

/// Where this network namespace's link and maps are pinned.
fn pin_dir() -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| format!("reading this thread's network namespace: {e}"))?
        .ino();
    Ok(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/kube-gw/netns-{ino}"
    )))
}

/// The pair a `KG_LISTENERS` key names (the inverse of [`map_key`]).
pub fn pair_of(key: &[u8; KEY_LEN]) -> Pair {
    let mut a = [0u8; 16];
    a.copy_from_slice(&key[..16]);
    let v6 = Ipv6Addr::from(a);
    Pair {
        addr: v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        port: u16::from_be_bytes([key[16], key[17]]),
    }
}

/// A fallback socket and its accept loop.
struct Bound {
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl Bound {
    /// Stops accepting at once: a listening socket shut down for reading leaves the kernel's
    /// lookup table now, not when the aborted task is next polled.
    fn close(self) {
        let _ = socket2::SockRef::from(self.listener.as_ref()).shutdown(std::net::Shutdown::Read);
        self.task.abort();
    }
}

struct Program {
    /// Keeps the program, its link and the socket map alive (none when adopted from pins).
    _bpf: Option<Ebpf>,
    /// The pinned link (handed-over sockets only).
    _link: Option<aya::programs::links::FdLink>,
    listeners: BpfHashMap<MapData, [u8; KEY_LEN], u32>,
    program_id: u32,
    map_ids: Vec<u32>,
}

/// The steering of gateway pairs; see the module doc.
pub struct Steering {
    program: Option<Program>,
    fallback_reason: String,
    /// eBPF mode: the two accept loops. Bind mode: one per pair.
    accepting: Vec<JoinHandle<()>>,
    bound: BTreeMap<Pair, Bound>,
    /// Pairs in the map (eBPF) or bound (fallback).
    serving: BTreeSet<Pair>,
    failed: BTreeMap<Pair, String>,
    tx: mpsc::Sender<Accepted>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("mode", &self.mode())
            .field("serving", &self.serving.len())
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Loads and attaches the program to the calling thread's network namespace, with its two
    /// listening sockets; or, if that fails, prepares the per-pair fallback. Needs a tokio
    /// runtime. `use_ebpf: false` forces the fallback (configuration, tests).
    pub fn start(tx: mpsc::Sender<Accepted>, use_ebpf: bool) -> Self {
        let mut s = Self {
            program: None,
            fallback_reason: "eBPF steering disabled by the configuration".into(),
            accepting: Vec::new(),
            bound: BTreeMap::new(),
            serving: BTreeSet::new(),
            failed: BTreeMap::new(),
            tx,
        };
        // Pins of an earlier daemon that had handed-over sockets: this one has none, so they
        // would steer to sockets nobody accepts on (and ahead of this daemon's own).
        remove_pins();
        if use_ebpf {
            match s.load() {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(
                        "gateway: eBPF sk_lookup steering unavailable, binding one socket per \
                         VIP:port instead: {e}"
                    );
                    s.fallback_reason = e;
                }
            }
        }
        s
    }

    /// With sockets systemd handed over: adopt the link and maps a previous daemon pinned, or
    /// load, attach and pin them. `Err` leaves steering to the caller's fallback.
    pub fn start_handed_over(tx: mpsc::Sender<Accepted>, h: Handover) -> Self {
        let mut s = Self {
            program: None,
            fallback_reason: String::new(),
            accepting: Vec::new(),
            bound: BTreeMap::new(),
            serving: BTreeSet::new(),
            failed: BTreeMap::new(),
            tx,
        };
        let dir = h.pin_dir.clone();
        let adopted = s.adopt(&h);
        let result = match adopted {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), serving = s.serving.len(), "gateway: adopted the pinned steering and the handed-over sockets");
                Ok(())
            }
            Err(why) => {
                tracing::info!(dir = %dir.display(), "gateway: no pinned steering to adopt ({why}); attaching and pinning");
                // Whatever an earlier daemon left half there goes first.
                remove_pins();
                s.load_with(Some(h))
            }
        };
        if let Err(e) = result {
            remove_pins();
            tracing::warn!(
                "gateway: eBPF sk_lookup steering unavailable, binding one socket per \
                 VIP:port instead (a restart will refuse connections): {e}"
            );
            s.fallback_reason = e;
        }
        s
    }

    /// Takes over what a previous daemon pinned in `h.pin_dir`.
    fn adopt(&mut self, h: &Handover) -> Result<(), String> {
        let dir = &h.pin_dir;
        let link = aya::programs::links::PinnedLink::from_pin(dir.join("link"))
            .map_err(|e| format!("link: {e}"))?;
        let link = aya::programs::links::FdLink::from(link);
        let program_id = link.info().map(|i| i.program_id()).unwrap_or(0);
        let listeners: BpfHashMap<MapData, [u8; KEY_LEN], u32> = aya::maps::Map::HashMap(
            MapData::from_pin(dir.join("listeners")).map_err(|e| format!("KG_LISTENERS: {e}"))?,
        )
        .try_into()
        .map_err(|e| format!("KG_LISTENERS: {e}"))?;
        let mut sockets: SockMap<MapData> = aya::maps::Map::SockMap(
            MapData::from_pin(dir.join("sockets")).map_err(|e| format!("KG_SOCKETS: {e}"))?,
        )
        .try_into()
        .map_err(|e| format!("KG_SOCKETS: {e}"))?;
        let (v4, v6) = (adopt_listener(&h.v4)?, adopt_listener(&h.v6)?);
        put_listeners(&mut sockets, &v4, &v6)?;
        // What the previous daemon steered stays steered until the first `set`.
        self.serving = listeners
            .keys()
            .filter_map(Result::ok)
            .map(|k| pair_of(&k))
            .collect();
        for l in [v4, v6] {
            self.accepting
                .push(tokio::spawn(accept_loop(Arc::new(l), self.tx.clone())));
        }
        self.program = Some(Program {
            _bpf: None,
            _link: Some(link),
            listeners,
            program_id,
            map_ids: Vec::new(),
        });
        Ok(())
    }

    fn load(&mut self) -> Result<(), String> {
        self.load_with(None)
    }

    fn load_with(&mut self, handover: Option<Handover>) -> Result<(), String> {
        if OBJECT.is_empty() {
            return Err(
                "this binary was built without its eBPF programs (KUBE_GW_EBPF=off)".into(),
            );
        }
        let mut bpf = Ebpf::load(OBJECT).map_err(|e| format!("loading the eBPF object: {e}"))?;
        let prog: &mut SkLookup = bpf
            .program_mut("steer")
            .ok_or("the eBPF object has no program `steer`")?
            .try_into()
            .map_err(|e| format!("program `steer`: {e}"))?;
        prog.load()
            .map_err(|e| format!("loading sk_lookup program `steer` into the kernel: {e}"))?;
        // The thread's own namespace: a test (or a helper) may run in another than the process.
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening this thread's network namespace: {e}"))?;
        let link_id = prog
            .attach(netns.as_fd())
            .map_err(|e| format!("attaching `steer` to the network namespace: {e}"))?;
        let info = prog
            .info()
            .map_err(|e| format!("reading the program's id: {e}"))?;
        let program_id = info.id();
        let map_ids = info
            .map_ids()
            .map_err(|e| format!("reading the program's map ids: {e}"))?
            .unwrap_or_default();
        // Handed-over sockets: the link and maps are pinned, to outlive this process.
        let dir = handover.as_ref().map(|h| h.pin_dir.clone());
        let mut link = None;
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "creating {} (is /sys/fs/bpf a bpf filesystem?): {e}",
                    dir.display()
                )
            })?;
            let owned = prog
                .take_link(link_id)
                .map_err(|e| format!("taking the program's link: {e}"))?;
            let fd: aya::programs::links::FdLink = owned.into();
            let _ = std::fs::remove_file(dir.join("link"));
            let pinned = fd
                .pin(dir.join("link"))
                .map_err(|e| format!("pinning the link in {}: {e}", dir.display()))?;
            link = Some(aya::programs::links::FdLink::from(pinned));
            for (name, file) in [("KG_LISTENERS", "listeners"), ("KG_SOCKETS", "sockets")] {
                let _ = std::fs::remove_file(dir.join(file));
                bpf.map(name)
                    .ok_or_else(|| format!("the eBPF object has no map {name}"))?
                    .pin(dir.join(file))
                    .map_err(|e| format!("pinning {name} in {}: {e}", dir.display()))?;
            }
        }
        let mut sockets: SockMap<MapData> = bpf
            .take_map("KG_SOCKETS")
            .ok_or("the eBPF object has no map KG_SOCKETS")?
            .try_into()
            .map_err(|e| format!("map KG_SOCKETS: {e}"))?;
        let listeners: BpfHashMap<MapData, [u8; KEY_LEN], u32> = bpf
            .take_map("KG_LISTENERS")
            .ok_or("the eBPF object has no map KG_LISTENERS")?
            .try_into()
            .map_err(|e| format!("map KG_LISTENERS: {e}"))?;
        let (v4, v6) = match &handover {
            None => (
                listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false)?,
                listen(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), false)?,
            ),
            Some(h) => (adopt_listener(&h.v4)?, adopt_listener(&h.v6)?),
        };
        put_listeners(&mut sockets, &v4, &v6)?;
        // The socket map holds the listeners; it may be dropped now that they are in it (the
        // program keeps its own reference to the map).
        drop(sockets);
        for l in [v4, v6] {
            self.accepting
                .push(tokio::spawn(accept_loop(Arc::new(l), self.tx.clone())));
        }
        self.program = Some(Program {
            _bpf: Some(bpf),
            _link: link,
            listeners,
            program_id,
            map_ids,
        });
        Ok(())
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        match &self.program {
            Some(p) => Mode::Ebpf {
                program_id: p.program_id,
                map_ids: p.map_ids.clone(),
            },
            None => Mode::Bind {
                reason: self.fallback_reason.clone(),
            },
        }
    }

    /// Makes the served pairs exactly `want`: adds what is missing, removes what is no longer
    /// wanted (established connections are not affected). A pair that fails is retried on the
    /// next call.
    pub fn set(&mut self, want: &BTreeSet<Pair>) -> SteerReport {
        let gone: Vec<Pair> = self.serving.difference(want).copied().collect();
        for pair in gone {
            self.remove(pair);
        }
        self.failed.retain(|p, _| want.contains(p));
        for &pair in want.difference(&self.serving.clone()) {
            match self.add(pair) {
                Ok(()) => {
                    self.failed.remove(&pair);
                    self.serving.insert(pair);
                }
                Err(e) => {
                    self.failed.insert(pair, e);
                }
            }
        }
        self.report()
    }

    /// The state of steering now.
    pub fn report(&self) -> SteerReport {
        SteerReport {
            mode: self.mode(),
            serving: self.serving.len(),
            failed: self.failed.clone(),
        }
    }

    fn add(&mut self, pair: Pair) -> Result<(), String> {
        match &mut self.program {
            Some(p) => {
                let slot = if pair.addr.is_ipv4() {
                    SLOT_V4
                } else {
                    SLOT_V6
                };
                p.listeners
                    .insert(map_key(pair), slot, 0)
                    .map_err(|e| format!("adding {pair} to KG_LISTENERS: {e}"))
            }
            None => {
                let listener = Arc::new(listen(SocketAddr::new(pair.addr, pair.port), true)?);
                let task = tokio::spawn(accept_loop(listener.clone(), self.tx.clone()));
                self.bound.insert(pair, Bound { listener, task });
                Ok(())
            }
        }
    }

    fn remove(&mut self, pair: Pair) {
        self.serving.remove(&pair);
        if let Some(p) = &mut self.program {
            if let Err(e) = p.listeners.remove(&map_key(pair)) {
                tracing::warn!("gateway: removing {pair} from KG_LISTENERS: {e}");
            }
        }
        if let Some(b) = self.bound.remove(&pair) {
            b.close();
        }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        for t in self.accepting.drain(..) {
            t.abort();
        }
        for (_, b) in std::mem::take(&mut self.bound) {
            b.close();
        }
    }
}

/// A listening TCP socket (non-blocking, `SO_REUSEADDR`; IPv6 only for IPv6 addresses;
/// `IP_FREEBIND` where asked, so that a VIP not yet on `lo` can be bound).
fn listen(addr: SocketAddr, freebind: bool) -> Result<TcpListener, String> {
    let what = |e: std::io::Error| format!("listening on {addr}: {e}");
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(what)?;
    s.set_reuse_address(true).map_err(what)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(what)?;
        if freebind {
            s.set_freebind_v6(true).map_err(what)?;
        }
    } else if freebind {
        s.set_freebind_v4(true).map_err(what)?;
    }
    s.set_nonblocking(true).map_err(what)?;
    s.bind(&addr.into()).map_err(what)?;
    s.listen(BACKLOG).map_err(what)?;
    TcpListener::from_std(s.into()).map_err(what)
}

/// Puts the two listeners in their `KG_SOCKETS` slots.
fn put_listeners(
    sockets: &mut SockMap<MapData>,
    v4: &TcpListener,
    v6: &TcpListener,
) -> Result<(), String> {
    sockets
        .set(SLOT_V4, v4, 0)
        .map_err(|e| format!("putting the IPv4 listener in KG_SOCKETS: {e}"))?;
    sockets
        .set(SLOT_V6, v6, 0)
        .map_err(|e| format!("putting the IPv6 listener in KG_SOCKETS: {e}"))
}

/// A handed-over listening socket for tokio (a duplicate: systemd keeps its own).
fn adopt_listener(l: &std::net::TcpListener) -> Result<TcpListener, String> {
    let what = |e: std::io::Error| format!("a handed-over listening socket: {e}");
    let l = l.try_clone().map_err(what)?;
    l.set_nonblocking(true).map_err(what)?;
    TcpListener::from_std(l).map_err(what)
}

async fn accept_loop(listener: Arc<TcpListener>, tx: mpsc::Sender<Accepted>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                if tx
                    .send(Accepted {
                        stream,
                        peer,
                        local,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off a little rather than spin.
                tracing::warn!("gateway: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_key_layout_is_the_one_the_program_builds() {
        let k = map_key(Pair {
            addr: "192.0.2.10"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: 443,
        });
        assert_eq!(&k[..10], &[0u8; 10]);
        assert_eq!(&k[10..16], &[0xff, 0xff, 192, 0, 2, 10]);
        assert_eq!(&k[16..18], &[0x01, 0xbb]);
        assert_eq!(k[18], 6);
        assert_eq!(k[19], 0);
        let k6 = map_key(Pair {
            addr: "2001:db8::1"
                .parse()
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            port: 80,
        });
        assert_eq!(&k6[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(k6[15], 1);
        assert_eq!(&k6[16..18], &[0, 80]);
    }
}
