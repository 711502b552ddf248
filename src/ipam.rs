//! LoadBalancer address allocation (IPAM), pure: the cluster's Services, the pools marked
//! `allocate = true` and the previous table → the addresses each Service of kube-gw's class
//! has, and why a Service has none.
//!
//! Who owns what: this module decides; `kube::allocator` runs it on every switch (so that
//! `kube-gw vips` shows the same table everywhere) and only the elected writer writes the
//! outcome to `status.loadBalancer` (and Events). Every switch then serves the addresses
//! from the statuses, as it serves any LoadBalancer address inside its pools.
//!
//! The rules, in the order they are applied:
//!
//! 1. **Candidates**: `type: LoadBalancer`, `spec.loadBalancerClass` = `[vip]
//!    load-balancer-class` (or no class, with `allocate-without-class`), passing `[vip]
//!    service-selector`. Nothing else is ever written.
//! 2. **Holds first** (the table is rebuilt before anything is allocated): in rank order
//!    (oldest first, then namespace/name), each candidate keeps the addresses it already has
//!    — from the previous table (written, maybe not seen back yet) and from its status —
//!    where they are inside an allocating pool, of a family it asks for (one per family),
//!    still what it requests, and compatible with whoever holds them already. A restart or a
//!    new leader starts from the statuses alone, so nothing moves: an address never goes to
//!    another Service while the first has it, and deleting one Service renumbers nothing.
//!    Where two statuses claim one address (a double allocation made elsewhere), the older
//!    Service keeps it and the younger gets another.
//! 3. **New addresses**, in rank order, for each family the Service asks for
//!    (`spec.ipFamilies`; both with dual-stack) and lacks: a requested address
//!    (`spec.loadBalancerIP`, or `kube-gw.io/load-balancer-ips`: comma-separated, one per
//!    family) if it is in an allocating pool and free; else, with a sharing key
//!    (`kube-gw.io/sharing-key`), the address already held by Services with the same key if
//!    their ports and this one's are disjoint; else the lowest free address of the first
//!    allocating pool of that family (`kube-gw.io/address-pool` names one). An IPv4 pool
//!    wider than /31 never gives its network or broadcast address.
//! 4. **Never taken**: addresses another Service uses without kube-gw's allocation (its
//!    `externalIPs`, or the status of a Service of another class).
//!
//! A Service that does not get an address for a family it must have (its first family, or
//! both with `RequireDualStack`) waits with the reason (pool exhausted, requested address
//! outside the pools or taken, a port clash under its sharing key); the allocator turns that
//! into an Event. A `PreferDualStack` Service without a pool of its second family gets one
//! address and a note.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::Pool;
use crate::model::cluster::{Family, Service};
use crate::model::{ClusterSnapshot, ObjectKey, Protocol};

/// Asks for specific addresses (comma-separated, one per family).
pub const REQUEST_ANNOTATION: &str = "kube-gw.io/load-balancer-ips";
/// Services with the same value may share an address if their ports are disjoint.
pub const SHARING_ANNOTATION: &str = "kube-gw.io/sharing-key";
/// Names the pool a Service's addresses come from.
pub const POOL_ANNOTATION: &str = "kube-gw.io/address-pool";

/// What the allocator is given.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub snapshot: &'a ClusterSnapshot,
    /// `[vip] pools` (only those with `allocate = true` give addresses).
    pub pools: &'a [Pool],
    /// `[vip] load-balancer-class`.
    pub class: &'a str,
    /// `[vip] allocate-without-class`.
    pub without_class: bool,
    /// `[vip] service-selector`, parsed.
    pub selector: &'a [(String, String)],
    /// The previous outcome: addresses written but maybe not seen back in a status yet.
    pub previous: &'a Table,
    /// Whether the previous table's addresses are held (the writer's, since it took over);
    /// false: it gives `since` only and the statuses alone are the truth (a follower, or a
    /// new leader's first computation).
    pub trust_previous: bool,
    /// Now, in seconds since the epoch (for `since`).
    pub now: i64,
}

/// The allocation table: one entry per candidate Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    pub entries: BTreeMap<ObjectKey, Entry>,
}

/// One Service's allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The Service's uid: a Service deleted and made again is a new one.
    pub uid: String,
    /// Its addresses, in the order of its `ipFamilies`.
    pub addresses: Vec<Held>,
    /// Why it lacks an address it must have (empty: it has all).
    pub waiting: Vec<String>,
    /// Informational (a preferred second family without a pool).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Entry {
    /// The addresses `status.loadBalancer.ingress` should list, in order.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|h| h.address).collect()
    }
}

/// An address held by a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub address: IpAddr,
    /// The pool's name.
    pub pool: String,
    /// Since when (seconds since the epoch): when this allocator first saw it held.
    pub since: i64,
    /// The sharing key it is shared under, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

/// What the allocator publishes (for `kube-gw vips`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Allocations {
    /// Shared with the allocator (which computes the next table from it): publishing it
    /// copies nothing.
    pub table: std::sync::Arc<Table>,
    /// This switch writes the statuses (`None`: no allocator runs here).
    pub leader: Option<bool>,
}

/// Is `svc` one of kube-gw's to allocate for?
pub fn candidate(
    svc: &Service,
    class: &str,
    without_class: bool,
    selector: &[(String, String)],
) -> bool {
    svc.type_ == "LoadBalancer"
        && match &svc.lb.class {
            Some(c) => c == class,
            None => without_class,
        }
        && crate::desired::selected(svc, selector)
}

/// Who holds an address, with what.
#[derive(Debug, Clone)]
struct Holder {
    key: ObjectKey,
    ports: BTreeSet<(Protocol, u16)>,
    sharing: Option<String>,
}

/// Why a Service cannot have an address that others hold.
fn clash(
    holders: &[Holder],
    ports: &BTreeSet<(Protocol, u16)>,
    sharing: Option<&str>,
) -> Option<String> {
    let first = holders.first()?;
    let Some(key) = sharing else {
        return Some(format!("it is allocated to {}", first.key));
    };
    if let Some(h) = holders.iter().find(|h| h.sharing.as_deref() != Some(key)) {
        return Some(format!(
            "it is allocated to {} without the sharing key `{key}`",
            h.key
        ));
    }
    for h in holders {
        if let Some((p, n)) = h.ports.intersection(ports).next() {
            return Some(format!(
                "port {}/{n} clashes with {} under the sharing key `{key}`",
                proto(*p),
                h.key
            ));
        }
    }
    None
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// What one candidate asks for, read once.
struct Ask<'a> {
    svc: &'a Service,
    families: Vec<Family>,
    requested: Vec<IpAddr>,
    bad_requests: Vec<String>,
    pool: Option<&'a str>,
    sharing: Option<&'a str>,
    ports: BTreeSet<(Protocol, u16)>,
}

fn ask(svc: &Service) -> Ask<'_> {
    let mut families = svc.lb.families.clone();
    families.dedup();
    if families.is_empty() {
        families.push(Family::V4);
    }
    let mut requested = Vec::new();
    let mut bad_requests = Vec::new();
    let raw = svc.lb.requested_ip.iter().map(String::as_str).chain(
        svc.annotations
            .get(REQUEST_ANNOTATION)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .into_iter()
            .flatten(),
    );
    for r in raw {
        match r.parse::<IpAddr>() {
            Ok(a) if !requested.contains(&a) => requested.push(a),
            Ok(_) => {}
            Err(_) => {
                bad_requests.push(format!("the requested address `{r}` is not an IP address"))
            }
        }
    }
    Ask {
        svc,
        families,
        requested,
        bad_requests,
        pool: svc.annotations.get(POOL_ANNOTATION).map(String::as_str),
        sharing: svc
            .annotations
            .get(SHARING_ANNOTATION)
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        ports: svc.ports.iter().map(|p| (p.protocol, p.port)).collect(),
    }
}

/// The allocation state of one computation.
struct Book<'a> {
    pools: Vec<&'a Pool>,
    holders: HashMap<IpAddr, Vec<Holder>>,
    /// Used without kube-gw's allocation: address → by whom.
    foreign: HashMap<IpAddr, ObjectKey>,
    /// Per pool, the next address to look at (addresses below it are taken).
    cursor: Vec<Option<IpAddr>>,
}

impl<'a> Book<'a> {
    fn pool_of(&self, a: &IpAddr) -> Option<&'a Pool> {
        self.pools.iter().copied().find(|p| p.prefix.contains(a))
    }

    fn taken(&self, a: &IpAddr, ask: &Ask<'_>) -> Option<String> {
        if let Some(k) = self.foreign.get(a) {
            return Some(format!("{k} uses it without kube-gw's allocation"));
        }
        clash(
            self.holders.get(a).map_or(&[][..], Vec::as_slice),
            &ask.ports,
            ask.sharing,
        )
    }

    fn hold(&mut self, a: IpAddr, ask: &Ask<'_>) {
        self.holders.entry(a).or_default().push(Holder {
            key: ask.svc.key.clone(),
            ports: ask.ports.clone(),
            sharing: ask.sharing.map(str::to_string),
        });
    }

    /// The lowest free address of pool `i`.
    fn fresh(&mut self, i: usize) -> Option<IpAddr> {
        let net = self.pools[i].prefix;
        let mut next = match self.cursor[i] {
            Some(a) => Some(a),
            None => first_usable(&net),
        };
        while let Some(a) = next {
            if !net.contains(&a) || Some(a) > last_usable(&net) {
                self.cursor[i] = Some(a);
                return None;
            }
            if !self.holders.contains_key(&a) && !self.foreign.contains_key(&a) {
                self.cursor[i] = Some(a);
                return Some(a);
            }
            next = successor(a);
        }
        None
    }
}

/// How many addresses `net` can give.
pub fn usable(net: &IpNet) -> u128 {
    let all: u128 = match net {
        IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
        IpNet::V6(n) => 1u128
            .checked_shl(128 - u32::from(n.prefix_len()))
            .unwrap_or(u128::MAX),
    };
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => all - 2,
        IpNet::V6(n) if n.prefix_len() < 127 => all - 1,
        _ => all,
    }
}

fn first_usable(net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => successor(IpAddr::V4(n.network())),
        IpNet::V6(n) if n.prefix_len() < 127 => successor(IpAddr::V6(n.network())),
        _ => Some(net.network()),
    }
}

fn last_usable(net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => Some(IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(n.broadcast()) - 1,
        ))),
        _ => Some(net.broadcast()),
    }
}

fn successor(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Computes the allocation table (pure; the same inputs give the same table on every switch).
pub fn allocate(inp: &Inputs<'_>) -> Table {
    let pools: Vec<&Pool> = inp.pools.iter().filter(|p| p.allocate).collect();
    let mut book = Book {
        cursor: vec![None; pools.len()],
        pools,
        holders: HashMap::new(),
        foreign: HashMap::new(),
    };
    let mut asks: Vec<Ask<'_>> = Vec::new();
    for svc in inp.snapshot.services.values() {
        if candidate(svc, inp.class, inp.without_class, inp.selector) {
            asks.push(ask(svc));
        } else {
            let lb: &[IpAddr] = if svc.type_ == "LoadBalancer" {
                &svc.load_balancer_ips
            } else {
                &[]
            };
            for a in svc.external_ips.iter().chain(lb) {
                if book.pool_of(a).is_some() {
                    book.foreign.entry(*a).or_insert_with(|| svc.key.clone());
                }
            }
        }
    }
    asks.sort_by(|a, b| (a.svc.created, &a.svc.key).cmp(&(b.svc.created, &b.svc.key)));
    let mut out = Table::default();
    // Holds first: nothing is allocated before every held address is known.
    for a in &asks {
        let prev = inp
            .previous
            .entries
            .get(&a.svc.key)
            .filter(|e| e.uid == a.svc.uid);
        let mut entry = Entry {
            uid: a.svc.uid.clone(),
            ..Entry::default()
        };
        let since_of = |addr: &IpAddr| {
            prev.and_then(|e| e.addresses.iter().find(|h| h.address == *addr))
                .map_or(inp.now, |h| h.since)
        };
        let had = prev
            .filter(|_| inp.trust_previous)
            .into_iter()
            .flat_map(|e| e.addresses.iter().map(|h| h.address))
            .chain(a.svc.load_balancer_ips.iter().copied());
        for addr in had {
            let fam = Family::of(&addr);
            let Some(pool) = book.pool_of(&addr) else {
                continue;
            };
            let wanted = a.families.contains(&fam)
                && !entry
                    .addresses
                    .iter()
                    .any(|h| Family::of(&h.address) == fam)
                && (!a.requested.iter().any(|r| Family::of(r) == fam)
                    || a.requested.contains(&addr))
                && a.pool.is_none_or(|p| p == pool.name);
            if wanted && book.taken(&addr, a).is_none() {
                book.hold(addr, a);
                entry.addresses.push(Held {
                    address: addr,
                    pool: pool.name.clone(),
                    since: since_of(&addr),
                    shared: a.sharing.map(str::to_string),
                });
            }
        }
        out.entries.insert(a.svc.key.clone(), entry);
    }
    // Then what is missing, oldest Service first.
    for a in &asks {
        let mut entry = out.entries.remove(&a.svc.key).unwrap_or_default();
        entry.waiting.extend(a.bad_requests.iter().cloned());
        let have: BTreeSet<Family> = entry
            .addresses
            .iter()
            .map(|h| Family::of(&h.address))
            .collect();
        for (i, fam) in a.families.iter().copied().enumerate() {
            if have.contains(&fam) {
                continue;
            }
            let must = i == 0 || a.svc.lb.require_dual_stack;
            match new_address(&mut book, a, fam) {
                Ok((addr, pool)) => {
                    book.hold(addr, a);
                    entry.addresses.push(Held {
                        address: addr,
                        pool,
                        since: inp.now,
                        shared: a.sharing.map(str::to_string),
                    });
                }
                Err(why) if must => entry.waiting.push(why),
                Err(why) => entry.notes.push(why),
            }
        }
        // In the order of the Service's families.
        entry.addresses.sort_by_key(|h| {
            a.families
                .iter()
                .position(|f| *f == Family::of(&h.address))
                .unwrap_or(usize::MAX)
        });
        out.entries.insert(a.svc.key.clone(), entry);
    }
    out
}

/// A new address of family `fam` for `a`, with its pool's name, or why there is none.
fn new_address(book: &mut Book<'_>, a: &Ask<'_>, fam: Family) -> Result<(IpAddr, String), String> {
    if let Some(req) = a.requested.iter().find(|r| Family::of(r) == fam) {
        let Some(pool) = book.pool_of(req) else {
            return Err(format!(
                "the requested address {req} is outside kube-gw's allocating pools"
            ));
        };
        if a.pool.is_some_and(|p| p != pool.name) {
            return Err(format!(
                "the requested address {req} is in pool `{}`, not in `{}`",
                pool.name,
                a.pool.unwrap_or_default()
            ));
        }
        if let Some(why) = book.taken(req, a) {
            return Err(format!("the requested address {req} is taken: {why}"));
        }
        return Ok((*req, pool.name.clone()));
    }
    if let Some(key) = a.sharing {
        // The address the Services with this key already share, if any.
        let mut shared: Vec<IpAddr> = book
            .holders
            .iter()
            .filter(|(addr, hs)| {
                Family::of(addr) == fam && hs.iter().any(|h| h.sharing.as_deref() == Some(key))
            })
            .map(|(addr, _)| *addr)
            .collect();
        shared.sort_unstable();
        if let Some(addr) = shared.first() {
            if let Some(why) = book.taken(addr, a) {
                return Err(format!("cannot share {addr}: {why}"));
            }
            let pool = book
                .pool_of(addr)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            return Ok((*addr, pool));
        }
    }
    let mut considered = Vec::new();
    for i in 0..book.pools.len() {
        let p = book.pools[i];
        if Family::of(&p.prefix.network()) != fam || a.pool.is_some_and(|n| n != p.name) {
            continue;
        }
        considered.push(format!("`{}` ({})", p.name, p.prefix));
        if let Some(addr) = book.fresh(i) {
            return Ok((addr, p.name.clone()));
        }
    }
    if considered.is_empty() {
        return Err(match a.pool {
            Some(n) => format!("no allocating {} pool is named `{n}`", family_name(fam)),
            None => format!("no allocating pool has {} addresses", family_name(fam)),
        });
    }
    Err(format!(
        "no free {} address: pool {} exhausted",
        family_name(fam),
        considered.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::{LoadBalancerSpec, ServicePort};

    fn pool(prefix: &str, name: &str) -> Pool {
        Pool {
            prefix: prefix.parse().unwrap(),
            allocate: true,
            name: name.into(),
        }
    }

    fn svc(name: &str, created: i64, ports: &[u16]) -> Service {
        Service {
            key: ObjectKey::new("ns", name),
            uid: format!("uid-{name}"),
            created,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            type_: "LoadBalancer".into(),
            cluster_ips: vec![],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: ports
                .iter()
                .map(|p| ServicePort {
                    name: format!("p{p}"),
                    port: *p,
                    protocol: Protocol::Tcp,
                    app_protocol: None,
                })
                .collect(),
            client_ip_affinity: None,
            external_traffic_local: false,
            unparsable_ips: vec![],
            lb: LoadBalancerSpec {
                class: Some("kube-gw.io/switch".into()),
                families: vec![Family::V4],
                ..LoadBalancerSpec::default()
            },
        }
    }

    fn run(services: &[Service], pools: &[Pool], previous: &Table) -> Table {
        let mut snap = ClusterSnapshot::default();
        for s in services {
            snap.upsert_service(s.clone());
        }
        allocate(&Inputs {
            snapshot: &snap,
            pools,
            class: "kube-gw.io/switch",
            without_class: false,
            selector: &[],
            previous,
            trust_previous: true,
            now: 1000,
        })
    }

    fn ips(t: &Table, name: &str) -> Vec<String> {
        t.entries[&ObjectKey::new("ns", name)]
            .ips()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn waiting(t: &Table, name: &str) -> String {
        t.entries[&ObjectKey::new("ns", name)].waiting.join("; ")
    }

    #[test]
    fn one_address_two_services_the_older_gets_it_the_other_waits_then_gets_it() {
        let pools = [pool("198.51.100.7/32", "one")];
        let a = svc("a", 1, &[80]);
        let b = svc("b", 2, &[80]);
        let t = run(&[b.clone(), a.clone()], &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.7"]);
        assert!(ips(&t, "b").is_empty());
        assert!(
            waiting(&t, "b").contains("pool `one` (198.51.100.7/32) exhausted"),
            "{}",
            waiting(&t, "b")
        );
        // b's status is older than a's claim? No: a holds it in the table; even if b were
        // older, a's held address does not move once written.
        let mut a2 = a.clone();
        a2.load_balancer_ips = vec!["198.51.100.7".parse().unwrap()];
        let mut b_older = b.clone();
        b_older.created = 0;
        let t2 = run(&[a2.clone(), b_older], &pools, &t);
        assert_eq!(ips(&t2, "a"), ["198.51.100.7"], "held addresses never move");
        assert!(ips(&t2, "b").is_empty());
        // a deleted: b gets it.
        let t3 = run(std::slice::from_ref(&b), &pools, &t2);
        assert_eq!(ips(&t3, "b"), ["198.51.100.7"]);
        assert!(waiting(&t3, "b").is_empty());
    }

    #[test]
    fn a_restart_rebuilds_from_statuses_before_allocating() {
        let pools = [pool("198.51.100.0/29", "p")];
        // Statuses written earlier: c has .3, a has .1; b (older than c) has nothing yet.
        let mut a = svc("a", 1, &[80]);
        a.load_balancer_ips = vec!["198.51.100.1".parse().unwrap()];
        let b = svc("b", 2, &[80]);
        let mut c = svc("c", 3, &[80]);
        c.load_balancer_ips = vec!["198.51.100.3".parse().unwrap()];
        let t = run(&[a, b, c], &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        assert_eq!(
            ips(&t, "c"),
            ["198.51.100.3"],
            "c keeps what its status says"
        );
        assert_eq!(ips(&t, "b"), ["198.51.100.2"], "b gets the lowest free one");
    }

    #[test]
    fn written_but_not_seen_back_is_still_held() {
        let pools = [pool("198.51.100.0/30", "p")];
        let a = svc("a", 1, &[80]);
        let t = run(std::slice::from_ref(&a), &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        // The status is not back yet; an older Service appears: a keeps its address.
        let old = svc("old", 0, &[80]);
        let t2 = run(&[a, old], &pools, &t);
        assert_eq!(ips(&t2, "a"), ["198.51.100.1"]);
        assert_eq!(ips(&t2, "old"), ["198.51.100.2"]);
        assert!(ips(&t2, "old") != ips(&t2, "a"));
    }

    #[test]
    fn a_double_allocation_found_in_statuses_leaves_the_address_with_the_older() {
        let pools = [pool("198.51.100.0/29", "p")];
        let mut a = svc("a", 1, &[80]);
        let mut b = svc("b", 2, &[80]);
        a.load_balancer_ips = vec!["198.51.100.4".parse().unwrap()];
        b.load_balancer_ips = vec!["198.51.100.4".parse().unwrap()];
        let t = run(&[b, a], &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.4"]);
        assert_eq!(ips(&t, "b"), ["198.51.100.1"]);
    }

    #[test]
    fn sharing_needs_the_same_key_and_disjoint_ports() {
        let pools = [pool("198.51.100.0/30", "p")];
        let mut a = svc("a", 1, &[80]);
        let mut b = svc("b", 2, &[443]);
        let mut c = svc("c", 3, &[80]);
        let mut d = svc("d", 4, &[8080]);
        for s in [&mut a, &mut b, &mut c] {
            s.annotations
                .insert(SHARING_ANNOTATION.into(), "web".into());
        }
        d.annotations
            .insert(SHARING_ANNOTATION.into(), "other".into());
        let t = run(&[a, b, c, d], &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        assert_eq!(ips(&t, "b"), ["198.51.100.1"], "disjoint ports share");
        assert!(ips(&t, "c").is_empty(), "port 80 clashes");
        assert!(
            waiting(&t, "c").contains("port TCP/80 clashes with ns/a"),
            "{}",
            waiting(&t, "c")
        );
        assert_eq!(ips(&t, "d"), ["198.51.100.2"], "another key gets its own");
        let e = &t.entries[&ObjectKey::new("ns", "b")].addresses[0];
        assert_eq!(e.shared.as_deref(), Some("web"));
    }

    #[test]
    fn without_a_key_an_address_is_never_shared_even_on_other_ports() {
        let pools = [pool("198.51.100.1/32", "p")];
        let a = svc("a", 1, &[80]);
        let mut b = svc("b", 2, &[443]);
        b.lb.requested_ip = Some("198.51.100.1".into());
        let t = run(&[a, b], &pools, &Table::default());
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        assert!(
            waiting(&t, "b").contains("is taken: it is allocated to ns/a"),
            "{}",
            waiting(&t, "b")
        );
    }

    #[test]
    fn dual_stack_gets_one_of_each_and_requests_are_honoured() {
        let pools = [
            pool("198.51.100.0/29", "v4"),
            pool("2001:db8:100::/120", "v6"),
        ];
        let mut a = svc("a", 1, &[80]);
        a.lb.families = vec![Family::V6, Family::V4];
        a.lb.require_dual_stack = true;
        let mut b = svc("b", 2, &[80]);
        b.annotations.insert(
            REQUEST_ANNOTATION.into(),
            "198.51.100.5, 2001:db8:100::55".into(),
        );
        b.lb.families = vec![Family::V4, Family::V6];
        let mut c = svc("c", 3, &[80]);
        c.lb.requested_ip = Some("203.0.113.9".into());
        let t = run(&[a, b, c], &pools, &Table::default());
        assert_eq!(
            ips(&t, "a"),
            ["2001:db8:100::1", "198.51.100.1"],
            "in ipFamilies order"
        );
        assert_eq!(ips(&t, "b"), ["198.51.100.5", "2001:db8:100::55"]);
        assert!(ips(&t, "c").is_empty());
        assert!(waiting(&t, "c").contains("203.0.113.9 is outside kube-gw's allocating pools"));
    }

    #[test]
    fn prefer_dual_stack_without_a_second_pool_gets_one_address_and_a_note() {
        let pools = [pool("198.51.100.0/30", "v4")];
        let mut a = svc("a", 1, &[80]);
        a.lb.families = vec![Family::V4, Family::V6];
        let t = run(&[a], &pools, &Table::default());
        let e = &t.entries[&ObjectKey::new("ns", "a")];
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        assert!(e.waiting.is_empty());
        assert_eq!(e.notes, ["no allocating pool has IPv6 addresses"]);
    }

    #[test]
    fn other_classes_are_ignored_and_their_addresses_never_given() {
        let pools = [
            pool("198.51.100.0/30", "p"),
            Pool::serve("203.0.113.0/24".parse().unwrap()),
        ];
        let mut other = svc("other", 0, &[80]);
        other.lb.class = Some("example.com/elsewhere".into());
        other.load_balancer_ips = vec!["198.51.100.1".parse().unwrap()];
        let mut ext = svc("ext", 0, &[80]);
        ext.type_ = "ClusterIP".into();
        ext.external_ips = vec!["198.51.100.2".parse().unwrap()];
        let mut unclassed = svc("unclassed", 0, &[80]);
        unclassed.lb.class = None;
        let a = svc("a", 5, &[80]);
        let t = run(&[other, ext, unclassed, a], &pools, &Table::default());
        assert_eq!(t.entries.len(), 1, "only kube-gw's class: {t:?}");
        assert!(
            ips(&t, "a").is_empty(),
            "/30 has .1 and .2 usable, both used elsewhere"
        );
        assert!(waiting(&t, "a").contains("exhausted"));
    }

    #[test]
    fn the_network_and_broadcast_addresses_are_never_given_and_cold_starts_are_linear() {
        let pools = [pool("10.200.0.0/18", "big")];
        let services: Vec<Service> = (0..10_000)
            .map(|i| svc(&format!("s{i:05}"), i, &[80]))
            .collect();
        let t = run(&services, &pools, &Table::default());
        assert_eq!(ips(&t, "s00000"), ["10.200.0.1"]);
        assert_eq!(ips(&t, "s09999"), ["10.200.39.16"]);
        let all: BTreeSet<IpAddr> = t.entries.values().flat_map(Entry::ips).collect();
        assert_eq!(all.len(), 10_000, "every address distinct");
        let small = [pool("198.51.100.0/30", "p")];
        let t = run(
            &[svc("a", 1, &[80]), svc("b", 2, &[80]), svc("c", 3, &[80])],
            &small,
            &Table::default(),
        );
        assert_eq!(ips(&t, "a"), ["198.51.100.1"]);
        assert_eq!(ips(&t, "b"), ["198.51.100.2"]);
        assert!(ips(&t, "c").is_empty(), ".0 and .3 are not given");
    }

    #[test]
    fn since_is_kept_across_computations() {
        let pools = [pool("198.51.100.0/30", "p")];
        let a = svc("a", 1, &[80]);
        let t = run(std::slice::from_ref(&a), &pools, &Table::default());
        let mut snap = ClusterSnapshot::default();
        snap.upsert_service(a);
        let t2 = allocate(&Inputs {
            snapshot: &snap,
            pools: &pools,
            class: "kube-gw.io/switch",
            without_class: false,
            selector: &[],
            previous: &t,
            trust_previous: true,
            now: 5000,
        });
        assert_eq!(
            t2.entries[&ObjectKey::new("ns", "a")].addresses[0].since,
            1000
        );
    }
}
