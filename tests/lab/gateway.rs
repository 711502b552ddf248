//! The gateway on the real kernel: kernel TLS for each TLS 1.3 cipher (the kernel's own
//! counters rise; a large transfer arrives intact), and one VIP shared by an IPVS Service
//! (port 80) and the gateway (port 443), both serving.
//!
//! Roles (this binary in a namespace): `gateway CERT KEY BACKEND` runs steering and the proxy
//! for one HTTPS listener at VIP:443; `httpbulk PORT` is an HTTP backend answering
//! `/bytes/N` with N deterministic bytes; `tlsget SUITE CA PATH` fetches through the VIP with
//! one cipher suite and prints the body's length and whether it is byte for byte the
//! backend's; `tlskeyupdate CA` sends a
//! TLS 1.3 KeyUpdate on a kept-alive connection and reports what each request got;
//! `tlsstat` prints `/proc/net/tls_stat` of its namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{self, Lab};
use crate::{me, run_role, world, VIP};

/// The deterministic body of `/bytes/N`: a 64 KiB pseudo-random block repeated, with the
/// byte offset stamped (8 bytes, little endian) at every KiB, so a lost, repeated or
/// reordered TLS record shows as well as a flipped byte. Built from whole blocks and
/// compared with `memcmp`, not byte by byte: the lab runs a debug build under emulation,
/// where a per-byte loop cost more than the TLS itself (2 MB/s; 7 MB/s without it).
const CHUNK: u64 = 1 << 16;
const STAMP: u64 = 1 << 10;

fn block() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut b = Vec::with_capacity(CHUNK as usize);
    while b.len() < CHUNK as usize {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        b.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    b
}

/// The chunk of the body that starts at `off` (a multiple of `CHUNK`), `len` bytes long.
fn chunk_at(block: &[u8], off: u64, len: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&block[..len as usize]);
    let mut k = 0;
    while k < len {
        let stamp = (off + k).to_le_bytes();
        let end = (k + 8).min(len);
        buf[k as usize..end as usize].copy_from_slice(&stamp[..(end - k) as usize]);
        k += STAMP;
    }
}

/// The body of `/bytes/n` in `CHUNK`s; `f` false stops.
fn body(n: u64, mut f: impl FnMut(&[u8]) -> bool) {
    let block = block();
    let mut buf = Vec::with_capacity(CHUNK as usize);
    let mut off = 0;
    while off < n {
        let len = (n - off).min(CHUNK);
        chunk_at(&block, off, len, &mut buf);
        if !f(&buf) {
            return;
        }
        off += len;
    }
}

/// Compares a received body, in pieces of any size, with the one `/bytes/n` sends.
struct Check {
    block: Vec<u8>,
    chunk: Vec<u8>,
    /// Bytes received so far.
    off: u64,
    /// The first offset where the bytes differ.
    mismatch: Option<u64>,
}

impl Check {
    fn new() -> Self {
        Check {
            block: block(),
            chunk: Vec::with_capacity(CHUNK as usize),
            off: 0,
            mismatch: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let base = self.off - self.off % CHUNK;
            if self.off.is_multiple_of(CHUNK) || self.chunk.is_empty() {
                chunk_at(&self.block, base, CHUNK, &mut self.chunk);
            }
            let at = (self.off - base) as usize;
            let n = data.len().min(CHUNK as usize - at);
            if self.mismatch.is_none() && data[..n] != self.chunk[at..at + n] {
                let i = (0..n).find(|&i| data[i] != self.chunk[at + i]).unwrap_or(0);
                self.mismatch = Some(self.off + i as u64);
            }
            self.off += n as u64;
            data = &data[n..];
        }
    }

    /// `<length> <first differing offset, or "intact">`.
    fn verdict(&self) -> String {
        match self.mismatch {
            None => format!("{} intact", self.off),
            Some(at) => format!("{} differs-at-{at}", self.off),
        }
    }
}

pub fn httpbulk(port: u16) {
    let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    println!("listening");
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let n: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/bytes/"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            );
            body(n, |chunk| c.write_all(chunk).is_ok());
        });
    }
}

pub fn tlsstat() {
    print!(
        "{}",
        std::fs::read_to_string("/proc/net/tls_stat").unwrap_or_default()
    );
}

/// The gateway of one switch: VIP:443 HTTPS → `backend`, with kernel TLS where it can.
pub fn gateway(cert: &str, key: &str, backend: &str) {
    crate::gateway_role::serve_https(VIP, 443, cert, key, backend, true);
}

/// A TLS 1.3 client of VIP:443 (`app.example`) with one cipher suite.
fn tls_client(suite: &str, ca: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    crate::proxy_world::tls13_client(VIP, suite, ca)
}

/// GET `path` through VIP:443 with one TLS 1.3 cipher suite; prints `<status> <length> intact`
/// (or `differs-at-<offset>`).
pub fn tlsget(suite: &str, ca: &str, path: &str) {
    let mut tls = tls_client(suite, ca);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .to_string();
    let mut check = Check::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => check.feed(&buf[..n]),
            // The server may close without close_notify once the body is complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the body: {e}"),
        }
    }
    println!("{status} {}", check.verdict());
}

/// One keep-alive GET of `/bytes/1000` on `tls`: `answered <status>` once the whole body
/// came, or `closed: <how>` when the connection ended without an answer.
fn keepalive_get(tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> String {
    if let Err(e) = write!(tls, "GET /bytes/1000 HTTP/1.1\r\nHost: app.example\r\n\r\n") {
        return format!("closed: write {e}");
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(0) => return "closed: end of stream".into(),
            Ok(_) => head.push(byte[0]),
            Err(e) => return format!("closed: {:?}", e.kind()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("0").to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    match tls.read_exact(&mut body) {
        Ok(()) => format!("answered {status}"),
        Err(e) => format!("closed: in the body {:?}", e.kind()),
    }
}

/// Two requests on one connection, then a KeyUpdate (this side's keys, with the peer asked
/// to update its own), then a third; prints one line per request.
pub fn tlskeyupdate(ca: &str) {
    let mut tls = tls_client("TLS13_AES_128_GCM_SHA256", ca);
    println!("1 {}", keepalive_get(&mut tls));
    println!("2 {}", keepalive_get(&mut tls));
    tls.conn.refresh_traffic_keys().unwrap();
    println!("3 {}", keepalive_get(&mut tls));
}

/// `/proc/net/tls_stat` of a namespace as counters.
fn tls_stat(node: &harness::Node) -> BTreeMap<String, u64> {
    run_role(node, &["tlsstat"])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

pub fn gateway_terminates_tls_in_the_kernel_and_shares_a_vip_with_ipvs() {
    let mut lab = Lab::new();
    let w = world(&mut lab, "g", 1);
    let (b1, b1_addr) = (w.backends[0].0.clone(), w.backends[0].1.clone());
    lab.spawn(&b1, "gbulk", &me(), &["role", "httpbulk", "8081"]);
    // A CA and the gateway's certificate.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["app.example".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf
        .signed_by(&key, &rcgen::Issuer::new(ca, ca_key))
        .unwrap();
    let ca_path = lab.write("ca.pem", &ca_cert.pem());
    let cert_path = lab.write("gw.crt", &cert.pem());
    let key_path = lab.write("gw.key", &key.serialize_pem());
    // IPVS serves VIP:80 → b1:8080 (the line server).
    crate::ipvs(
        &lab,
        &w.switch,
        "g-web",
        &crate::spec("mh", crate::web(&[&b1_addr])),
    );
    let backend = format!("{b1_addr}:8081");
    lab.spawn(
        &w.switch,
        "ggw",
        &me(),
        &[
            "role",
            "gateway",
            cert_path.to_str().unwrap(),
            key_path.to_str().unwrap(),
            &backend,
        ],
    );
    harness::wait_for("the gateway to be ready", Duration::from_secs(60), || {
        let log = lab.log("ggw");
        log.lines()
            .find(|l| l.starts_with("ready"))
            .map(str::to_string)
    });
    let ready = lab.log("ggw");
    println!(
        "{}",
        ready.lines().find(|l| l.starts_with("ready")).unwrap_or("")
    );
    assert!(
        ready.contains("Ebpf"),
        "steered by the eBPF program: {ready}"
    );
    assert!(
        ready.contains("unavailable: None"),
        "the lab kernel has kernel TLS: {ready}"
    );
    harness::wait_for("b1's HTTP backend", Duration::from_secs(20), || {
        lab.log("gbulk").contains("listening").then_some(())
    });

    // Each TLS 1.3 cipher: the kernel's software TLS counters rise, the body is intact.
    // 1 GiB through AES-128-GCM (≈ 3 min under emulation), 16 MiB through the others;
    // KUBE_GW_LAB_TLS_BYTES sets one size for all three.
    let sized: Option<u64> = std::env::var("KUBE_GW_LAB_TLS_BYTES")
        .ok()
        .and_then(|s| s.parse().ok());
    // The comparer itself (the control for "intact"): the body as sent passes, in pieces
    // of any size; one flipped byte, and a 16 KiB record sent twice, are caught where they are.
    let mut sent = Vec::new();
    body(4 * CHUNK + 100, |c| {
        sent.extend_from_slice(c);
        true
    });
    let verdict = |data: &[u8]| {
        let mut c = Check::new();
        for piece in data.chunks(16_000) {
            c.feed(piece);
        }
        c.verdict()
    };
    assert_eq!(verdict(&sent), format!("{} intact", sent.len()));
    let mut flipped = sent.clone();
    flipped[200_001] ^= 1;
    assert_eq!(
        verdict(&flipped),
        format!("{} differs-at-200001", sent.len())
    );
    let mut repeated = sent[..CHUNK as usize + 16_384].to_vec();
    repeated.extend_from_slice(&sent[CHUNK as usize..]);
    let at: Option<u64> = verdict(&repeated)
        .split_once("differs-at-")
        .and_then(|(_, at)| at.parse().ok());
    assert!(
        at.is_some_and(|at| (CHUNK + 16_384..CHUNK + 16_384 + 8).contains(&at)),
        "the repeated record is caught at its stamp: {}",
        verdict(&repeated)
    );

    for suite in [
        "TLS13_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ] {
        let size = sized.unwrap_or(if suite == "TLS13_AES_128_GCM_SHA256" {
            1 << 30
        } else {
            16 << 20
        });
        let before = tls_stat(&w.switch);
        let t = std::time::Instant::now();
        let out = run_role(
            &w.client,
            &[
                "tlsget",
                suite,
                ca_path.to_str().unwrap(),
                &format!("/bytes/{size}"),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        let after = tls_stat(&w.switch);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.first().copied(), Some("200"), "{suite}: {out}");
        assert_eq!(
            f.get(1).and_then(|n| n.parse::<u64>().ok()),
            Some(size),
            "{suite}: every byte arrived: {out}"
        );
        assert_eq!(
            f.get(2).copied(),
            Some("intact"),
            "{suite}: the bytes are the backend's: {out}"
        );
        let rose =
            |k: &str| after.get(k).copied().unwrap_or(0) > before.get(k).copied().unwrap_or(0);
        assert!(
            rose("TlsTxSw") && rose("TlsRxSw"),
            "{suite}: the kernel did the TLS (tls_stat before {before:?}, after {after:?})"
        );
        println!(
            "kTLS {suite}: {size} bytes intact in {secs:.1}s ({:.0} MB/s under emulation)",
            size as f64 / secs / 1e6
        );
    }

    // A peer's KeyUpdate: this kernel (6.1) cannot rekey, so the connection that sent it
    // ends, cleanly; before it, the same kept-alive connection was answered twice (the
    // control), and a new connection afterwards is served (nothing else affected).
    let out = run_role(&w.client, &["tlskeyupdate", ca_path.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("1 answered 200"),
        "kept alive: {out}"
    );
    assert_eq!(lines.get(1).copied(), Some("2 answered 200"), "{out}");
    assert_eq!(
        lines.get(2).copied(),
        Some("3 closed: end of stream"),
        "after the KeyUpdate the connection ends without an answer, with close_notify \
         (rustls reports a close without it as UnexpectedEof): {out}"
    );
    println!("KeyUpdate: {}", lines.get(2).unwrap_or(&""));
    let after = run_role(
        &w.client,
        &[
            "tlsget",
            "TLS13_AES_128_GCM_SHA256",
            ca_path.to_str().unwrap(),
            "/bytes/1000",
        ],
    );
    assert!(
        after.starts_with("200 1000 "),
        "a new connection is served: {after}"
    );
    assert!(lab.running("ggw"), "the gateway is still running");

    // The same VIP on port 80 is IPVS's, and serves.
    let got = crate::connect_all(&w, &["192.0.2.10".to_string()]);
    assert_eq!(
        got.get("192.0.2.10").map(|(b, _)| b.as_str()),
        Some("b1"),
        "IPVS serves VIP:80 beside the gateway's VIP:443: {got:?}"
    );
    println!("IPVS on {VIP}:80 and the gateway on {VIP}:443 both serve");
}
