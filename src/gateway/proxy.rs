//! The proxy: serves every connection steering accepts, by the plan of the VIP:port the client
//! connected to.
//!
//! ```text
//!  Accepted (stream, peer, VIP:port) ──► plan of VIP:port ─┬─ HTTP: hyper (HTTP/1.1, h2c) ──┐
//!                                                           ├─ HTTPS: rustls (SNI → cert,   ├─► route → filters → backend
//!                                                           │  ALPN h2/http1.1) → hyper ────┘    → endpoint (pool.rs)       
//!                                                           └─ TLS passthrough: SNI → backend, bytes copied untouched
//! ```
//!
//! - Inputs: accepted connections (from `steer`), the gateway's desired state
//!   (`watch<Arc<GatewayState>>`). Every request reads the state in force when it arrives, so a
//!   route or endpoint change applies to the next request of a kept-alive connection and an
//!   endpoint that left gets no new requests. A TLS connection keeps the certificate it was
//!   handshaken with; new handshakes get the new one (the server configurations are rebuilt
//!   when the state changes, and each handshake takes the current one).
//! - Outputs: the responses; one access-log line per request (target `kube_gw::access`).
//! - Backend connections are sourced from `[gateway] source-addresses` when set (the switch's
//!   own address, not the anycast VIP: replies must come back to this switch), else from the
//!   kernel's choice for the route; they are kept per client connection, then pooled (`pool`).
//!   A request without a body (most of them) goes over kube-gw's own HTTP/1.1 client (`h1`),
//!   in this connection's task; one with a body goes over hyper's client, which sends the body
//!   while it reads the answer (a backend may answer early, e.g. 413).
//! - Bad input costs one connection: malformed HTTP gets 400, oversized headers 431, a client
//!   that sends its headers too slowly is closed after the header timeout, TLS garbage or an
//!   unknown SNI ends the handshake with an alert.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::model_override;
use super::plan::{
    Backend, Certificates, Filter, GatewayState, PathMatch, PortPlan, RequestView, Rule,
};
use super::pool::BoxError;
use super::sni::{self, Hello};
use super::steer::{Accepted, Pair};
use crate::model::gateway::{HeaderModifier, PathModifier, RequestRedirect};

type Body = BoxBody<Bytes, BoxError>;

/// How the proxy behaves (from `[gateway]`).
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Source addresses for backend connections, per family.
    pub source_v4: Option<std::net::Ipv4Addr>,
    pub source_v6: Option<std::net::Ipv6Addr>,
    /// A client must send its request headers (and finish a TLS handshake) within this.
    pub header_timeout: Duration,
    /// A backend must answer (headers) within this.
    pub backend_timeout: Duration,
    /// Hand terminated TLS sessions to the kernel where it can take them.
    pub kernel_tls: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            source_v4: None,
            source_v6: None,
            header_timeout: Duration::from_secs(10),
            backend_timeout: Duration::from_secs(30),
            kernel_tls: true,
        }
    }
}

/// What the proxy reports: kernel TLS support and how terminated connections were served.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub kernel_tls: std::sync::Mutex<Option<super::ktls::KtlsSupport>>,
    /// TLS connections handed to the kernel.
    pub ktls_connections: AtomicU64,
    /// TLS connections served by rustls in userspace.
    pub userspace_tls_connections: AtomicU64,
    /// The Prometheus families (registered by the daemon).
    pub metrics: super::metrics::GatewayMetrics,
    /// Client connections open now.
    pub open: AtomicU64,
    /// Set when kube-gw stops: kept-alive connections close after their current request.
    pub draining: Draining,
}

/// The drain signal every connection watches.
#[derive(Debug)]
pub struct Draining(watch::Sender<bool>);

impl Default for Draining {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Draining {
    /// Tells every connection to finish.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Counts a client connection open while it lives.
struct OpenGuard(Arc<ProxyStats>);

impl OpenGuard {
    fn new(stats: &Arc<ProxyStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The state with the TLS server configurations built from it.
struct Runtime {
    state: Arc<GatewayState>,
    tls: BTreeMap<Pair, Arc<ServerConfig>>,
}

/// Serves SNI → certificate from one plan's certificates.
#[derive(Debug)]
struct SniResolver(Certificates);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.lookup(hello.server_name()).map(|c| c.key.clone())
    }
}

/// The ticketer in force: the shared one made from the state's keys (rebuilt only when they
/// change), else this switch's own.
struct Tickets {
    own: Arc<dyn rustls::server::ProducesTickets>,
    keys: super::tickets::TicketKeys,
    shared: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

impl Tickets {
    fn for_state(&mut self, state: &GatewayState) -> &Arc<dyn rustls::server::ProducesTickets> {
        if state.tickets != self.keys {
            self.keys = state.tickets.clone();
            self.shared = super::tickets::SharedTicketer::new(&self.keys)
                .map(|t| t as Arc<dyn rustls::server::ProducesTickets>);
        }
        self.shared.as_ref().unwrap_or(&self.own)
    }
}

fn runtime(
    state: Arc<GatewayState>,
    tickets: &Arc<dyn rustls::server::ProducesTickets>,
    extract_secrets: bool,
) -> Runtime {
    let mut tls = BTreeMap::new();
    for (pair, plan) in &state.ports {
        let PortPlan::Http {
            tls: Some(certs), ..
        } = plan
        else {
            continue;
        };
        let builder =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
        let Ok(builder) = builder else {
            continue;
        };
        let mut cfg = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver(certs.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.ticketer = tickets.clone();
        cfg.enable_secret_extraction = extract_secrets;
        tls.insert(*pair, Arc::new(cfg));
    }
    Runtime { state, tls }
}

/// The proxy's h2c connections by endpoint.
type H2cConns = Arc<
    std::sync::Mutex<
        std::collections::HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<Body>>,
    >,
>;

/// What every request of a connection shares.
struct Conn {
    pair: Pair,
    peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` and `Forwarded` write it (made once).
    peer_ip: String,
    peer_ip_value: HeaderValue,
    forwarded_for: String,
    /// The last `Forwarded` value made, with the Host it was made for: a connection's
    /// requests mostly name one host.
    forwarded: std::sync::Mutex<Option<(String, HeaderValue)>>,
    tls: bool,
    runtime: watch::Receiver<Arc<Runtime>>,
    /// Backend connections: this client connection's own, and the shared idle pool.
    backends: std::sync::Mutex<super::pool::Local<super::pool::Sender, super::pool::Dest>>,
    /// The same for kube-gw's own HTTP/1.1 client (bodiless requests).
    h1: Arc<std::sync::Mutex<super::pool::Local<super::h1::H1Conn>>>,
    /// HTTP/2 (h2c) connections to endpoints, shared by every client connection (multiplexed).
    h2c: H2cConns,
    opts: ProxyOptions,
    ktls: Arc<super::ktls::Probe>,
    stats: Arc<ProxyStats>,
    /// The SNI of a terminated TLS connection.
    sni: Option<String>,
}

impl Conn {
    /// The `Forwarded` header (RFC 7239) of a request with this Host.
    fn forwarded(&self, host: &str, scheme: &str) -> Option<HeaderValue> {
        let mut last = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, v)) = last.as_ref() {
            if h == host {
                return Some(v.clone());
            }
        }
        let v = HeaderValue::from_str(&format!(
            "for={};proto={scheme};host=\"{host}\"",
            self.forwarded_for
        ))
        .ok()?;
        *last = Some((host.to_string(), v.clone()));
        Some(v)
    }
}

/// Why a request to a backend failed: before it reached the backend (`connect`, retried
/// elsewhere for idempotent requests) or after.
struct SendError {
    connect: bool,
    text: String,
}

/// Runs the proxy until `accepted` closes.
pub async fn run(
    mut accepted: mpsc::Receiver<Accepted>,
    mut state: watch::Receiver<Arc<GatewayState>>,
    opts: ProxyOptions,
    stats: Arc<ProxyStats>,
) {
    let ktls = Arc::new(if opts.kernel_tls {
        super::ktls::probe().await
    } else {
        super::ktls::Probe {
            support: super::ktls::KtlsSupport {
                unavailable: Some("off in the configuration ([gateway] kernel-tls = false)".into()),
                ciphers: Vec::new(),
            },
            ciphers: None,
        }
    });
    match &ktls.support.unavailable {
        None => tracing::info!(ciphers = ?ktls.support.ciphers, "gateway: kernel TLS available"),
        Some(why) => tracing::info!("gateway: kernel TLS not used: {why}; TLS stays in userspace"),
    }
    if let Ok(mut k) = stats.kernel_tls.lock() {
        *k = Some(ktls.support.clone());
    }
    let extract = ktls.support.unavailable.is_none();
    // This switch's own keys: used while no shared key is known, and kept for the whole run
    // so that its tickets stay good across state changes.
    let own: Arc<dyn rustls::server::ProducesTickets> = match rustls::crypto::ring::Ticketer::new()
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("gateway: cannot make a TLS session ticketer: {e}");
            return;
        }
    };
    let mut tickets = Tickets {
        own,
        keys: super::tickets::TicketKeys::default(),
        shared: None,
    };
    let first = state.borrow_and_update().clone();
    let (rt_tx, rt_rx) = watch::channel(Arc::new(runtime(
        first.clone(),
        tickets.for_state(&first),
        extract,
    )));
    let rebuild = async {
        while state.changed().await.is_ok() {
            let s = state.borrow_and_update().clone();
            let t = tickets.for_state(&s);
            rt_tx.send_replace(Arc::new(runtime(s, t, extract)));
        }
        std::future::pending::<()>().await;
    };
    let shared = Arc::new(super::pool::Shared::default());
    let shared_h1 = Arc::new(super::pool::Shared::default());
    let shared_h2c = H2cConns::default();
    let prune = async {
        loop {
            tokio::time::sleep(super::pool::IDLE_TIMEOUT / 4).await;
            shared.prune();
            shared_h1.prune();
        }
    };
    let serve = async {
        while let Some(a) = accepted.recv().await {
            let ip = a.peer.ip().to_canonical();
            let peer_ip = ip.to_string();
            let conn = Conn {
                pair: Pair {
                    addr: a.local.ip().to_canonical(),
                    port: a.local.port(),
                },
                peer: a.peer,
                peer_ip_value: HeaderValue::from_str(&peer_ip)
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                forwarded_for: if ip.is_ipv6() {
                    format!("\"[{peer_ip}]\"")
                } else {
                    peer_ip.clone()
                },
                forwarded: std::sync::Mutex::new(None),
                peer_ip,
                tls: false,
                runtime: rt_rx.clone(),
                backends: std::sync::Mutex::new(super::pool::Local::new(shared.clone())),
                h1: Arc::new(std::sync::Mutex::new(super::pool::Local::new(
                    shared_h1.clone(),
                ))),
                h2c: shared_h2c.clone(),
                opts: opts.clone(),
                ktls: ktls.clone(),
                stats: stats.clone(),
                sni: None,
            };
            tokio::spawn(connection(a.stream, conn));
        }
    };
    tokio::select! {
        () = rebuild => {}
        () = serve => {}
        () = prune => {}
    }
}

async fn connection(stream: TcpStream, mut conn: Conn) {
    let _open = OpenGuard::new(&conn.stats);
    let _ = stream.set_nodelay(true);
    let (kind, tls) = {
        let rt = conn.runtime.borrow();
        let kind = match rt.state.ports.get(&conn.pair) {
            None => return,
            Some(PortPlan::Passthrough { .. }) => 0,
            Some(PortPlan::Http { tls: None, .. }) => 1,
            Some(PortPlan::Http { tls: Some(_), .. }) => 2,
        };
        (kind, rt.tls.get(&conn.pair).cloned())
    };
    match (kind, tls) {
        (0, _) => passthrough(stream, conn).await,
        (1, _) => serve_http(TokioIo::new(stream), Arc::new(conn)).await,
        (2, Some(cfg)) => {
            // Corked: during the handshake rustls reads whole records only, so that nothing is
            // left half-read when the session moves to the kernel.
            let accept =
                tokio_rustls::TlsAcceptor::from(cfg).accept(::ktls::CorkStream::new(stream));
            match tokio::time::timeout(conn.opts.header_timeout, accept).await {
                Ok(Ok(tls)) => {
                    conn.tls = true;
                    conn.sni = tls.get_ref().1.server_name().map(str::to_string);
                    let suite = tls.get_ref().1.negotiated_cipher_suite();
                    let kernel = conn
                        .ktls
                        .ciphers
                        .as_ref()
                        .is_some_and(|c| suite.is_some_and(|s| c.is_compatible(s)));
                    conn.stats
                        .metrics
                        .handshake("ok", if kernel { "kernel" } else { "userspace" });
                    if kernel {
                        match super::ktls::KernelTls::from_rustls(tls).await {
                            Ok(k) => {
                                conn.stats.ktls_connections.fetch_add(1, Ordering::Relaxed);
                                serve_http(TokioIo::new(k), Arc::new(conn)).await;
                            }
                            Err(e) => {
                                tracing::debug!(peer = %conn.peer, "gateway: handing the session to kernel TLS failed: {e}")
                            }
                        }
                    } else {
                        conn.stats
                            .userspace_tls_connections
                            .fetch_add(1, Ordering::Relaxed);
                        serve_http(TokioIo::new(tls), Arc::new(conn)).await;
                    }
                }
                Ok(Err(e)) => {
                    conn.stats.metrics.handshake("failed", "-");
                    tracing::debug!(peer = %conn.peer, vip = %conn.pair, "gateway: TLS handshake failed: {e}")
                }
                Err(_) => {
                    conn.stats.metrics.handshake("timeout", "-");
                    tracing::debug!(peer = %conn.peer, vip = %conn.pair, "gateway: TLS handshake timed out")
                }
            }
        }
        _ => {}
    }
}

async fn serve_http<I>(io: TokioIo<I>, conn: Arc<Conn>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Flattened writes: a small response goes out as one TLS record and one send, not a record
    // for the head and another for the body.
    b.http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(conn.opts.header_timeout)
        .max_buf_size(64 * 1024);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let mut draining = conn.stats.draining.subscribe();
    let served = Arc::new(AtomicU64::new(0));
    let counted = served.clone();
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(request(req, &conn).await) }
    });
    let c = b.serve_connection_with_upgrades(io, svc);
    tokio::pin!(c);
    // When kube-gw stops: the connection closes after its current request (HTTP/1.1:
    // `Connection: close`; HTTP/2: GOAWAY). One that has not sent its first request yet gets
    // a moment to, rather than being closed under it.
    let accepted = Instant::now();
    let mut drain = false;
    let mut shut = false;
    let r = loop {
        tokio::select! {
            r = c.as_mut() => break r,
            _ = draining.wait_for(|d| *d), if !drain => drain = true,
            () = tokio::time::sleep(Duration::from_millis(50)), if drain && !shut => {
                if served.load(Ordering::Relaxed) > 0 || accepted.elapsed() > DRAIN_FIRST_REQUEST {
                    c.as_mut().graceful_shutdown();
                    shut = true;
                }
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!("gateway: connection ended: {e}");
    }
}

/// While draining, how long a new connection may take to send its first request.
const DRAIN_FIRST_REQUEST: Duration = Duration::from_secs(1);

fn local(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// A cheap, well-spread random number (weights, endpoint choice).
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A backend by weight (none when every weight is 0).
fn pick_backend(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut r = random() % total;
    for b in backends {
        let w = u64::from(b.weight);
        if r < w {
            return Some(b);
        }
        r -= w;
    }
    None
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers (RFC 9110 7.6.1), besides those a Connection header lists.
static HOP_BY_HOP: [HeaderName; 8] = [
    hyper::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::UPGRADE,
];

/// The `Upgrade` header of an HTTP/1.1 request that asks to upgrade (`Connection: upgrade`).
fn upgrade_asked<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != hyper::Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(hyper::header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the two headers an upgrade needs, which `strip_hop_by_hop` took out.
fn keep_upgrade(h: &mut HeaderMap, upgrade: HeaderValue) {
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(hyper::header::UPGRADE, upgrade);
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (no hashing) says so.
    if !h.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    if h.contains_key(hyper::header::CONNECTION) {
        let listed: Vec<HeaderName> = h
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
            .collect();
        for n in &listed {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn modify(h: &mut HeaderMap, m: &HeaderModifier) {
    for x in &m.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(x.name.as_bytes()),
            HeaderValue::from_str(&x.value),
        ) {
            h.insert(n, v);
        }
    }
    for x in &m.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(x.name.as_bytes()),
            HeaderValue::from_str(&x.value),
        ) {
            h.append(n, v);
        }
    }
    for n in &m.remove {
        h.remove(n.as_str());
    }
}

/// The path after a redirect's or rewrite's path modifier.
pub fn modified_path(path: &str, matched: &PathMatch, m: &PathModifier) -> String {
    match (m.type_.as_str(), matched) {
        ("ReplaceFullPath", _) => m.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        ("ReplacePrefixMatch", PathMatch::Prefix(prefix)) => {
            let rest = if prefix == "/" {
                path
            } else {
                &path[prefix.len().min(path.len())..]
            };
            let with = m.replace_prefix_match.as_deref().unwrap_or("/");
            let mut out = with.trim_end_matches('/').to_string();
            if !rest.is_empty() && !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
        _ => path.to_string(),
    }
}

/// The `Location` of a redirect.
pub fn redirect_location(
    r: &RequestRedirect,
    scheme: &str,
    host: &str,
    listener_port: u16,
    path: &str,
    query: Option<&str>,
) -> String {
    let scheme_out = r.scheme.as_deref().unwrap_or(scheme);
    let host_out = r.hostname.as_deref().unwrap_or(host);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(listener_port),
    };
    let default = if scheme_out == "https" { 443 } else { 80 };
    let mut loc = format!("{scheme_out}://{host_out}");
    if let Some(p) = port.filter(|p| *p != default) {
        loc.push_str(&format!(":{p}"));
    }
    loc.push_str(path);
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

async fn request(mut req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    let started = Instant::now();
    // An HTTP/1.1 Upgrade (WebSocket): the request goes on with its Upgrade header, and a 101
    // from the backend joins the two connections.
    let upgrade = upgrade_asked(&req);
    let mut client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body_in) = req.into_parts();
    // Cheap clones (shared bytes): the request's parts stay borrowable while its headers
    // change.
    let uri = parts.uri.clone();
    let host_value = match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    };
    let host_header = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host: std::borrow::Cow<'_, str> = {
        let h = strip_port(host_header);
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            h.to_ascii_lowercase().into()
        } else {
            h.into()
        }
    };
    let path = uri.path();
    let query = uri.query();
    let method = parts.method.clone();
    let mut client_cert: Option<super::backend_tls::ClientCert> = None;
    let rule: Option<Arc<Rule>> = {
        let rt = conn.runtime.borrow();
        match rt.state.ports.get(&conn.pair) {
            Some(PortPlan::Http { routes, .. }) => {
                client_cert.clone_from(&routes.client_cert);
                let view = RequestView {
                    host: &host,
                    path,
                    method: method.as_str(),
                    headers: if routes.reads_headers {
                        parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    query: if routes.reads_query {
                        query
                            .unwrap_or("")
                            .split('&')
                            .filter(|s| !s.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                                (k.to_string(), v.to_string())
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                };
                routes.select(&view).cloned()
            }
            _ => None,
        }
    };
    let scheme = if conn.tls { "https" } else { "http" };
    // Why a request failed (a backend's error, a refused TLS session), for its log line.
    let problem: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let log = |status: StatusCode, route: &str, backend: &str, endpoint: &dyn std::fmt::Display| {
        tracing::info!(
            target: "kube_gw::access",
            client = %conn.peer.ip(),
            vip = %conn.pair,
            scheme,
            host = %host,
            method = %method,
            path = %path,
            route,
            backend,
            endpoint = %endpoint,
            status = status.as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            error = problem.get().map(String::as_str),
        );
    };
    let Some(rule) = rule else {
        conn.stats
            .metrics
            .request("-", 404, started.elapsed().as_secs_f64());
        log(StatusCode::NOT_FOUND, "-", "-", &"-");
        return local(StatusCode::NOT_FOUND, "no route");
    };
    let series = rule.metrics.get(&conn.stats.metrics, &rule.route);
    let route = series.name.as_str();
    let done = |status: StatusCode, backend: &str, endpoint: &dyn std::fmt::Display| {
        series.request(
            &conn.stats.metrics,
            status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
        log(status, route, backend, endpoint);
    };
    let mut response_mods = Vec::new();
    let mut out_path: Option<String> = None;
    let mut out_host: Option<String> = None;
    let mut model_filter = None;
    for f in &rule.filters {
        match f {
            Filter::Redirect(r) => {
                let p = r.path.as_ref().map_or(path.to_string(), |m| {
                    modified_path(path, &rule.match_.path, m)
                });
                let loc = redirect_location(r, scheme, &host, conn.pair.port, &p, query);
                let code =
                    StatusCode::from_u16(r.status_code.unwrap_or(302)).unwrap_or(StatusCode::FOUND);
                let mut resp = local(code, "redirect");
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    resp.headers_mut().insert(LOCATION, v);
                }
                done(code, "-", &"-");
                return resp;
            }
            Filter::RequestHeaders(m) => modify(&mut parts.headers, m),
            Filter::ResponseHeaders(m) => response_mods.push(m),
            Filter::ModelOverride(m) => {
                if m.applies(&method, path) {
                    model_filter = Some(m);
                }
            }
            Filter::Unresolved(why) => {
                done(StatusCode::INTERNAL_SERVER_ERROR, "-", &"-");
                return local(StatusCode::INTERNAL_SERVER_ERROR, why);
            }
            Filter::Rewrite(w) => {
                if let Some(h) = &w.hostname {
                    out_host = Some(h.clone());
                }
                if let Some(m) = &w.path {
                    out_path = Some(modified_path(path, &rule.match_.path, m));
                }
            }
        }
    }
    let Some(backend) = pick_backend(&rule.backends) else {
        done(StatusCode::INTERNAL_SERVER_ERROR, "-", &"-");
        return local(StatusCode::INTERNAL_SERVER_ERROR, "no backend");
    };
    if let Some(e) = &backend.error {
        let _ = problem.set(e.clone());
        done(StatusCode::INTERNAL_SERVER_ERROR, &backend.name, &"-");
        return local(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("backend unavailable: {e}"),
        );
    }
    if backend.endpoints.is_empty() {
        conn.stats.metrics.backend_error(route, "no_endpoints");
        done(StatusCode::SERVICE_UNAVAILABLE, &backend.name, &"-");
        return local(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints");
    }
    let first = (random() % backend.endpoints.len() as u64) as usize;
    let idempotent = matches!(
        method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    let bodiless = hyper::body::Body::is_end_stream(&body_in);
    let retry_ok = idempotent && bodiless && backend.endpoints.len() > 1;
    // Headers of the request to the backend.
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    for m in &backend.request_headers {
        modify(&mut headers, m);
    }
    response_mods.extend(backend.response_headers.iter());
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.peer_ip)).ok(),
        None => Some(conn.peer_ip_value.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    // Always ours: a client's own X-Forwarded-Host never passes.
    match &host_value {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    if let Some(v) = conn.forwarded(host_header, scheme) {
        headers.insert(FORWARDED, v);
    }
    if let Some(u) = &upgrade {
        keep_upgrade(&mut headers, u.clone());
    }
    match (&out_host, &host_value) {
        (Some(h), _) => {
            if let Ok(v) = HeaderValue::from_str(h) {
                headers.insert(HOST, v);
            }
        }
        (None, Some(v)) => {
            headers.insert(HOST, v.clone());
        }
        // HTTP/1.1 needs a Host: an empty one, as the client sent none.
        (None, None) => {
            headers.insert(HOST, HeaderValue::from_static(""));
        }
    }
    // The path and query toward the backend: the client's as they came unless rewritten.
    let pq: hyper::http::uri::PathAndQuery = match (&out_path, uri.path_and_query()) {
        (None, Some(pq)) => pq.clone(),
        (Some(p), _) => {
            let text = match query {
                Some(q) => format!("{p}?{q}"),
                None => p.clone(),
            };
            match text.parse() {
                Ok(pq) => pq,
                Err(_) => return local(StatusCode::BAD_REQUEST, "bad path"),
            }
        }
        (None, None) => hyper::http::uri::PathAndQuery::from_static("/"),
    };
    // Each attempt's bound: the rule's backendRequest timeout (`0s`: none; absent: the
    // configured one), cut to what is left of its request timeout.
    let backend_timeout = match rule.backend_timeout {
        None => conn.opts.backend_timeout,
        Some(d) if d.is_zero() => Duration::from_secs(365 * 86_400),
        Some(d) => d,
    };
    let deadline = rule.request_timeout.map(|d| started + d);
    let bound = || {
        deadline.map_or(backend_timeout, |dl| {
            backend_timeout.min(dl.saturating_duration_since(Instant::now()))
        })
    };
    // The body for hyper's path (the own client never sends one): boxed only when that path
    // takes it; the model override reads it whole (bounded) and rewrites it.
    let (mut body, mut incoming): (Option<Body>, Option<Incoming>) = match model_filter {
        Some(mo) if !bodiless => {
            let model = mo.pick(random());
            match model_override::apply(mo, model, &mut headers, body_in).await {
                Ok((b, applied)) => {
                    tracing::debug!(filter = %mo.name, ?applied, "gateway: model override");
                    (Some(b), None)
                }
                Err(code) => {
                    done(code, &backend.name, &"-");
                    return local(
                        code,
                        if code == StatusCode::PAYLOAD_TOO_LARGE {
                            "request body over the model override's maxBodyBytes"
                        } else {
                            "request body is not a JSON object (model override)"
                        },
                    );
                }
            }
        }
        _ => (None, Some(body_in)),
    };
    let mut attempt = 0;
    loop {
        let endpoint = backend.endpoints[(first + attempt) % backend.endpoints.len()];
        // The Gateway's certificate if it names one, else the one kube-gw minted for this
        // Service (if it asked).
        let tls = backend
            .tls
            .as_deref()
            .map(|t| (t, client_cert.as_ref().or(backend.minted_client.as_ref())));
        let sent = if bodiless
            && method != Method::CONNECT
            && upgrade.is_none()
            && !backend.h2c
            && tls.is_none()
        {
            // Most requests: kube-gw's own HTTP/1.1 client (h1.rs), in this task.
            tokio::time::timeout(
                bound(),
                send_h1(
                    conn,
                    backend.proxy_protocol,
                    endpoint,
                    &method,
                    pq.as_str(),
                    &headers,
                ),
            )
            .await
            .map(|r| r.map(|resp| resp.map(BodyExt::boxed)))
        } else {
            // Origin form: the connection speaks to the endpoint directly.
            let uri = Uri::from(pq.clone());
            let mut up = Request::new(
                body.take()
                    .or_else(|| incoming.take().map(|b| b.map_err(BoxError::from).boxed()))
                    .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed()),
            );
            *up.method_mut() = method.clone();
            *up.uri_mut() = uri;
            // The headers are moved into the one attempt there is; copied only when a retry
            // may follow.
            *up.headers_mut() = if retry_ok && attempt == 0 {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let sent = if backend.h2c && upgrade.is_none() {
                // HTTP/2 with prior knowledge: the authority travels in the URI.
                let authority = up
                    .headers_mut()
                    .remove(HOST)
                    .and_then(|h| h.to_str().ok().map(str::to_string))
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| endpoint.to_string());
                match Uri::builder()
                    .scheme("http")
                    .authority(authority.as_str())
                    .path_and_query(pq.clone())
                    .build()
                {
                    Ok(u) => *up.uri_mut() = u,
                    Err(_) => return local(StatusCode::BAD_REQUEST, "bad authority"),
                }
                tokio::time::timeout(
                    bound(),
                    send_h2c(conn, backend.proxy_protocol, endpoint, up),
                )
                .await
            } else {
                tokio::time::timeout(
                    bound(),
                    send(conn, backend.proxy_protocol, endpoint, tls, up),
                )
                .await
            };
            sent.map(|r| r.map(|resp| resp.map(|b| b.map_err(BoxError::from).boxed())))
        };
        match sent {
            Ok(Ok(mut resp)) => {
                let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let kept_upgrade = resp.headers().get(hyper::header::UPGRADE).cloned();
                if let (true, Some(client)) = (upgraded, client_upgrade.take()) {
                    let backend = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(b)) = (client.await, backend.await) {
                            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                        }
                    });
                }
                let (mut parts, b) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let (true, Some(u)) = (upgraded, kept_upgrade) {
                    keep_upgrade(&mut parts.headers, u);
                }
                for m in &response_mods {
                    modify(&mut parts.headers, m);
                }
                done(parts.status, &backend.name, &endpoint);
                return Response::from_parts(parts, b);
            }
            Ok(Err(e)) if e.connect && retry_ok && attempt == 0 => {
                tracing::debug!(endpoint = %endpoint, "gateway: connect failed, retrying another endpoint: {}", e.text);
                attempt += 1;
            }
            Ok(Err(e)) => {
                conn.stats
                    .metrics
                    .backend_error(route, if e.connect { "connect" } else { "response" });
                let _ = problem.set(e.text.clone());
                done(StatusCode::BAD_GATEWAY, &backend.name, &endpoint);
                return local(
                    StatusCode::BAD_GATEWAY,
                    &format!("backend {endpoint}: {}", e.text),
                );
            }
            Err(_) => {
                conn.stats.metrics.backend_error(route, "timeout");
                done(StatusCode::GATEWAY_TIMEOUT, &backend.name, &endpoint);
                return local(StatusCode::GATEWAY_TIMEOUT, "backend timed out");
            }
        }
    }
}

/// Sends one request to `endpoint` over a backend connection of this client connection (or
/// one from the shared idle pool, or a new one; `pool`). For a backend that wants the PROXY
/// protocol, the connection starts with the header and stays this client's.
async fn send(
    conn: &Conn,
    proxied: bool,
    endpoint: SocketAddr,
    tls: Option<BackendTlsUse<'_>>,
    mut req: Request<Body>,
) -> Result<Response<Incoming>, SendError> {
    let dest = super::pool::Dest {
        endpoint,
        tls: tls.map_or(0, |(t, c)| super::backend_tls::pool_id(t, c)),
    };
    let mut stale_retried = false;
    loop {
        // The retry after a stale idle connection goes to a new one, not another idle one.
        let idle = if stale_retried {
            None
        } else {
            conn.backends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(dest, proxied)
        };
        let reused = idle.is_some();
        let mut sender = match idle {
            Some(s) => s,
            None => backend_connection(conn, endpoint, proxied, tls).await?,
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                // An upgraded connection is the two ends' now, never pooled.
                if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                    conn.backends
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .keep(dest, proxied, sender);
                }
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                // An idle connection the backend closed just now: the request was not sent;
                // once more on a new connection.
                Some(r) if reused && !stale_retried => {
                    stale_retried = true;
                    req = r;
                }
                _ => {
                    return Err(SendError {
                        connect: false,
                        text: e.into_error().to_string(),
                    })
                }
            },
        }
    }
}

/// Sends one request to an h2c `endpoint` (HTTP/2 with prior knowledge) over the proxy's
/// shared connection to it, made when there is none or it closed. A backend that wants the
/// PROXY protocol gets a connection per request (its header names one client).
async fn send_h2c(
    conn: &Conn,
    proxied: bool,
    endpoint: SocketAddr,
    req: Request<Body>,
) -> Result<Response<Incoming>, SendError> {
    let err = |connect: bool| {
        move |e: hyper::Error| SendError {
            connect,
            text: e.to_string(),
        }
    };
    let cached = if proxied {
        None
    } else {
        conn.h2c
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&endpoint)
            .filter(|s| !s.is_closed())
            .cloned()
    };
    let mut sender = match cached {
        Some(s) => s,
        None => {
            let stream = connect_backend(conn, endpoint, proxied).await?;
            let (s, driver) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(err(true))?;
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!("gateway: h2c backend connection ended: {e}");
                }
            });
            if !proxied {
                conn.h2c
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(endpoint, s.clone());
            }
            s
        }
    };
    sender.ready().await.map_err(err(true))?;
    sender.send_request(req).await.map_err(err(false))
}

/// Sends one bodiless request to `endpoint` with kube-gw's own HTTP/1.1 client: over a
/// connection this client connection kept, one from the shared idle pool, or a new one.
/// A kept connection the backend had closed (it answered nothing) is replaced by a new one
/// once, for idempotent methods.
async fn send_h1(
    conn: &Conn,
    proxied: bool,
    endpoint: SocketAddr,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
) -> Result<Response<super::h1::H1Body>, SendError> {
    let mut stale_retried = false;
    loop {
        let idle = if stale_retried {
            None
        } else {
            conn.h1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(endpoint, proxied)
        };
        let reused = idle.is_some();
        let c = match idle {
            Some(c) => c,
            None => super::h1::H1Conn::new(connect_backend(conn, endpoint, proxied).await?),
        };
        let home = super::h1::Home {
            pool: conn.h1.clone(),
            endpoint,
            proxied,
        };
        match super::h1::round_trip(c, method, target, headers, home).await {
            Ok(r) => return Ok(r),
            Err(e)
                if e.untouched
                    && reused
                    && !stale_retried
                    && matches!(
                        *method,
                        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
                    ) =>
            {
                stale_retried = true;
            }
            Err(e) => {
                return Err(SendError {
                    connect: false,
                    text: e.text,
                })
            }
        }
    }
}

/// A new connection to `endpoint` from the switch's source address; it starts with the
/// PROXY protocol v2 header of this client when `proxied`.
async fn connect_backend(
    conn: &Conn,
    endpoint: SocketAddr,
    proxied: bool,
) -> Result<TcpStream, SendError> {
    let connect_err = |text: String| SendError {
        connect: true,
        text,
    };
    let mut stream = connect(endpoint, &conn.opts)
        .await
        .map_err(|e| connect_err(format!("connect: {e}")))?;
    if proxied {
        let header = super::proxy_protocol::header(
            conn.peer,
            SocketAddr::new(conn.pair.addr, conn.pair.port),
            conn.sni.as_deref(),
        );
        stream
            .write_all(&header)
            .await
            .map_err(|e| connect_err(format!("PROXY header: {e}")))?;
    }
    Ok(stream)
}

/// A backend's TLS (its BackendTLSPolicy) and the Gateway's client certificate, if any.
type BackendTlsUse<'a> = (
    &'a super::backend_tls::BackendTls,
    Option<&'a super::backend_tls::ClientCert>,
);

/// A new backend connection for hyper's client (requests with a body, and every request to
/// a TLS backend), ready for a request.
async fn backend_connection(
    conn: &Conn,
    endpoint: SocketAddr,
    proxied: bool,
    tls: Option<BackendTlsUse<'_>>,
) -> Result<super::pool::Sender, SendError> {
    let connect_err = |text: String| SendError {
        connect: true,
        text,
    };
    let stream = connect_backend(conn, endpoint, proxied).await?;
    let mut sender = match tls {
        None => http1_client(TokioIo::new(stream)).await,
        Some((t, client)) => {
            let s = super::backend_tls::connect(t, client, stream)
                .await
                .map_err(connect_err)?;
            http1_client(TokioIo::new(s)).await
        }
    }
    .map_err(|e| connect_err(e.to_string()))?;
    sender
        .ready()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    Ok(sender)
}

/// hyper's HTTP/1.1 client over `io`, its connection driven by a task of its own.
async fn http1_client<T>(io: T) -> hyper::Result<super::pool::Sender>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, driver) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = driver.with_upgrades().await {
            tracing::debug!("gateway: backend connection ended: {e}");
        }
    });
    Ok(sender)
}

/// `host:port`, `[v6]:port`, `host` → the host.
fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    }
}

/// TLS passthrough: read the ClientHello (kept), pick the backend by SNI, connect, send what
/// was read, then copy both ways.
async fn passthrough(mut stream: TcpStream, conn: Conn) {
    let mut buf = Vec::with_capacity(1024);
    let read_hello = async {
        loop {
            match sni::parse(&buf) {
                Hello::NeedMore(n) => {
                    let mut chunk = vec![0u8; n.saturating_sub(buf.len()).max(512)];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return Err("connection closed before the ClientHello"),
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                Hello::Parsed(sni) => return Ok(sni),
                Hello::Invalid(why) => return Err(why),
            }
        }
    };
    let sni = match tokio::time::timeout(conn.opts.header_timeout, read_hello).await {
        Ok(Ok(sni)) => sni,
        Ok(Err(why)) => {
            tracing::debug!(peer = %conn.peer, vip = %conn.pair, "gateway: passthrough refused: {why}");
            return;
        }
        Err(_) => return,
    };
    let chosen = {
        let rt = conn.runtime.borrow();
        match rt.state.ports.get(&conn.pair) {
            Some(PortPlan::Passthrough { routes }) => {
                super::plan::select_sni(routes, sni.as_deref())
                    .map(|r| (r.route.to_string(), r.backends.clone()))
            }
            _ => None,
        }
    };
    let started = Instant::now();
    let log = |route: &str, backend: &str, endpoint: &str, outcome: &str| {
        tracing::info!(target: "kube_gw::access", client = %conn.peer.ip(), vip = %conn.pair, scheme = "tls-passthrough", sni = sni.as_deref().unwrap_or("-"), route, backend, endpoint, outcome, ms = started.elapsed().as_secs_f64() * 1000.0);
    };
    let Some((route, backends)) = chosen else {
        log("-", "-", "-", "no route for this SNI");
        return;
    };
    let Some(backend) =
        pick_backend(&backends).filter(|b| b.error.is_none() && !b.endpoints.is_empty())
    else {
        log(&route, "-", "-", "no usable backend");
        return;
    };
    let endpoint = backend.endpoints[(random() % backend.endpoints.len() as u64) as usize];
    let up = match connect(endpoint, &conn.opts).await {
        Ok(s) => s,
        Err(e) => {
            log(
                &route,
                &backend.name,
                &endpoint.to_string(),
                &format!("connect failed: {e}"),
            );
            return;
        }
    };
    let mut up = up;
    if backend.proxy_protocol {
        let mut header = super::proxy_protocol::header(
            conn.peer,
            SocketAddr::new(conn.pair.addr, conn.pair.port),
            sni.as_deref(),
        );
        header.extend_from_slice(&buf);
        buf = header;
    }
    if up.write_all(&buf).await.is_err() {
        return;
    }
    log(&route, &backend.name, &endpoint.to_string(), "connected");
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut up).await;
}

async fn connect(to: SocketAddr, opts: &ProxyOptions) -> std::io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    match to.ip() {
        IpAddr::V4(_) => {
            if let Some(a) = opts.source_v4 {
                sock.bind(SocketAddr::new(IpAddr::V4(a), 0))?;
            }
        }
        IpAddr::V6(_) => {
            if let Some(a) = opts.source_v6 {
                sock.bind(SocketAddr::new(IpAddr::V6(a), 0))?;
            }
        }
    }
    sock.set_nodelay(true)?;
    tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn replace_prefix(with: &str) -> PathModifier {
        PathModifier {
            type_: "ReplacePrefixMatch".into(),
            replace_full_path: None,
            replace_prefix_match: Some(with.into()),
        }
    }

    #[test]
    fn prefix_replacement_keeps_the_rest_of_the_path() {
        assert_eq!(
            modified_path("/api/v1/x", &prefix("/api"), &replace_prefix("/backend")),
            "/backend/v1/x"
        );
        assert_eq!(
            modified_path("/api", &prefix("/api"), &replace_prefix("/")),
            "/"
        );
        assert_eq!(
            modified_path("/api/", &prefix("/api"), &replace_prefix("/b/")),
            "/b/"
        );
        assert_eq!(
            modified_path("/x", &prefix("/"), &replace_prefix("/y")),
            "/y/x"
        );
        let full = PathModifier {
            type_: "ReplaceFullPath".into(),
            replace_full_path: Some("/new".into()),
            replace_prefix_match: None,
        };
        assert_eq!(modified_path("/a/b", &prefix("/a"), &full), "/new");
    }

    #[test]
    fn redirects_keep_or_change_scheme_host_and_port_as_the_spec_says() {
        let r = |scheme: Option<&str>, host: Option<&str>, port: Option<u16>| RequestRedirect {
            scheme: scheme.map(str::to_string),
            hostname: host.map(str::to_string),
            path: None,
            port,
            status_code: None,
        };
        assert_eq!(
            redirect_location(
                &r(Some("https"), None, None),
                "http",
                "a.example",
                80,
                "/p",
                Some("q=1")
            ),
            "https://a.example/p?q=1"
        );
        assert_eq!(
            redirect_location(
                &r(None, Some("b.example"), None),
                "http",
                "a.example",
                8080,
                "/",
                None
            ),
            "http://b.example:8080/"
        );
        assert_eq!(
            redirect_location(
                &r(None, None, Some(443)),
                "https",
                "a.example",
                8443,
                "/",
                None
            ),
            "https://a.example/"
        );
        assert_eq!(
            redirect_location(&r(None, None, None), "http", "a.example", 80, "/x", None),
            "http://a.example/x"
        );
    }

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(strip_port("a.example"), "a.example");
    }

    #[test]
    fn weights_pick_in_proportion_and_zero_never() {
        let b = |n: &str, w: u32| Backend {
            name: n.into(),
            weight: w,
            endpoints: vec![],
            proxy_protocol: false,
            error: None,
            h2c: false,
            request_headers: vec![],
            response_headers: vec![],
            tls: None,
            minted_client: None,
        };
        let bs = vec![b("a", 1), b("b", 3), b("z", 0)];
        let mut counts = BTreeMap::new();
        for _ in 0..40_000 {
            *counts
                .entry(pick_backend(&bs).map(|b| b.name.clone()))
                .or_insert(0) += 1;
        }
        let a = counts[&Some("a".to_string())];
        let bb = counts[&Some("b".to_string())];
        assert!(!counts.contains_key(&Some("z".to_string())));
        assert!(
            (9_000..11_000).contains(&a) && (29_000..31_000).contains(&bb),
            "{counts:?}"
        );
        assert!(pick_backend(&[b("z", 0)]).is_none());
    }
}
