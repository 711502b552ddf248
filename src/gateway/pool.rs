//! Backend connections (HTTP/1.1) of the proxy.
//!
//! - Each client connection keeps the backend connections it used ([`Local`]): a request
//!   takes one to its endpoint that is ready now (a connection whose last response is still
//!   streaming is not), with no shared lock or hash on the way; none ready, it takes one from
//!   the shared idle pool ([`Shared`]), else it connects. It keeps at most [`LOCAL_MAX`] per
//!   endpoint (an HTTP/2 client's concurrent streams open more): the rest go to the shared
//!   pool as soon as they are free.
//! - A client connection that ends gives its connections to the shared pool, where the next
//!   client connection finds them (a client that makes one request per connection still
//!   reuses backend connections). Idle connections there go after [`IDLE_TIMEOUT`], or when
//!   the backend closed them; at most [`MAX_IDLE`] per endpoint are kept.
//! - Connections that began with a PROXY protocol header name their client: they stay with
//!   that client connection and close with it, never shared.
//!
//! Measured on the keep-alive benchmark, this costs less CPU per request than hyper-util's
//! pooled client (one pool lock, a hash of the authority and a checkout per request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::SendRequest;

/// How long an unused backend connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint in the shared pool.
pub const MAX_IDLE: usize = 256;
/// Connections per endpoint one client connection keeps for itself.
pub const LOCAL_MAX: usize = 4;

/// Errors of the bodies the proxy passes on (hyper's, and the own HTTP/1.1 client's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Sender = SendRequest<BoxBody<Bytes, BoxError>>;

/// A backend connection as the pools see it.
pub trait Pooled {
    /// Closed by the backend (or about to be: unusable).
    fn is_closed(&self) -> bool;
    /// Free for a request now.
    fn is_ready(&self) -> bool;
}

impl Pooled for Sender {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
    fn is_ready(&self) -> bool {
        SendRequest::is_ready(self)
    }
}

/// Where a pooled connection goes: its endpoint, and the TLS setup it was made with (see
/// `backend_tls::pool_id`; 0: plaintext). A connection is only reused for the same of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dest {
    pub endpoint: SocketAddr,
    pub tls: u64,
}

/// Idle backend connections every client connection may take, by destination (`K`: an
/// endpoint, or a [`Dest`]).
#[derive(Debug)]
pub struct Shared<C, K = SocketAddr> {
    idle: Mutex<HashMap<K, Vec<(Instant, C)>>>,
}

impl<C, K> Default for Shared<C, K> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Pooled, K: Copy + Eq + std::hash::Hash> Shared<C, K> {
    /// An idle connection to `endpoint` that is still open and ready (one not ready yet stays).
    pub fn take(&self, endpoint: K) -> Option<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&endpoint)?;
        list.retain(|(since, s)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        let i = list.iter().rposition(|(_, s)| s.is_ready())?;
        Some(list.swap_remove(i).1)
    }

    /// Keeps `s` (idle since `since`) for the next client connection, unless it is closed or
    /// the endpoint has enough idle connections.
    pub fn give(&self, endpoint: K, since: Instant, s: C) {
        if s.is_closed() || since.elapsed() >= IDLE_TIMEOUT {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(endpoint).or_default();
        if list.len() < MAX_IDLE {
            list.push((since, s));
        }
    }

    /// Drops connections idle too long or closed by their backend (run periodically).
    pub fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for list in idle.values_mut() {
            list.retain(|(since, s)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Idle connections held, for tests and reports.
    pub fn idle(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

/// The backend connections of one client connection: (endpoint, proxied, last used, sender).
#[derive(Debug)]
pub struct Local<C: Pooled, K: Copy + Eq + std::hash::Hash = SocketAddr> {
    conns: Vec<(K, bool, Instant, C)>,
    shared: std::sync::Arc<Shared<C, K>>,
}

impl<C: Pooled, K: Copy + Eq + std::hash::Hash> Local<C, K> {
    pub fn new(shared: std::sync::Arc<Shared<C, K>>) -> Self {
        Self {
            conns: Vec::new(),
            shared,
        }
    }

    /// A connection to `endpoint` (with a PROXY header: `proxied`) that is ready now: this
    /// client connection's own first, then (unproxied only) the shared pool's.
    pub fn take(&mut self, endpoint: K, proxied: bool) -> Option<C> {
        self.conns.retain(|(_, _, _, s)| !s.is_closed());
        if let Some(i) = self
            .conns
            .iter()
            .position(|(e, p, _, s)| *e == endpoint && *p == proxied && s.is_ready())
        {
            return Some(self.conns.swap_remove(i).3);
        }
        if proxied {
            None
        } else {
            self.shared.take(endpoint)
        }
    }

    /// Keeps `s` for this client connection's next requests; beyond [`LOCAL_MAX`] to one
    /// endpoint, the unproxied ones that are free go to the shared pool.
    pub fn keep(&mut self, endpoint: K, proxied: bool, s: C) {
        self.conns.push((endpoint, proxied, Instant::now(), s));
        let mine = self
            .conns
            .iter()
            .filter(|(e, p, _, _)| *e == endpoint && *p == proxied)
            .count();
        if proxied || mine <= LOCAL_MAX {
            return;
        }
        let mut extra = mine - LOCAL_MAX;
        let mut i = 0;
        while i < self.conns.len() && extra > 0 {
            let (e, p, _, s) = &self.conns[i];
            if *e == endpoint && !*p && s.is_ready() {
                let (e, _, since, s) = self.conns.swap_remove(i);
                self.shared.give(e, since, s);
                extra -= 1;
            } else {
                i += 1;
            }
        }
    }
}

impl<C: Pooled, K: Copy + Eq + std::hash::Hash> Drop for Local<C, K> {
    fn drop(&mut self) {
        for (e, proxied, since, s) in self.conns.drain(..) {
            if !proxied {
                self.shared.give(e, since, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper_util::rt::TokioIo;

    use super::*;

    /// A connection to a listener that accepts and holds connections (no request is sent).
    async fn sender(l: &tokio::net::TcpListener, held: &mut Vec<tokio::net::TcpStream>) -> Sender {
        let to = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let c = tokio::net::TcpStream::connect(to)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        held.push(l.accept().await.unwrap_or_else(|e| panic!("{e}")).0);
        let (mut s, driver) = hyper::client::conn::http1::handshake(TokioIo::new(c))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(driver);
        s.ready().await.unwrap_or_else(|e| panic!("{e}"));
        s
    }

    #[tokio::test]
    async fn a_client_connection_keeps_its_own_then_hands_the_unproxied_to_the_pool() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ep = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut held = Vec::new();
        let shared: Arc<Shared<Sender>> = Arc::new(Shared::default());
        let mut a = Local::new(shared.clone());
        assert!(a.take(ep, false).is_none(), "nothing yet");
        let plain = sender(&l, &mut held).await;
        let proxied = sender(&l, &mut held).await;
        a.keep(ep, false, plain);
        a.keep(ep, true, proxied);
        // Its own, by kind: a proxied request never gets the plain connection.
        let p = a.take(ep, true);
        assert!(p.is_some());
        assert!(a.take(ep, true).is_none());
        a.keep(ep, true, p.unwrap_or_else(|| unreachable!()));
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(a.take(other, false).is_none(), "another endpoint's");
        // The client connection ends: its plain connection goes to the pool, the proxied one
        // (naming that client) does not.
        drop(a);
        assert_eq!(shared.idle(), 1);
        let mut b = Local::new(shared.clone());
        assert!(b.take(ep, true).is_none());
        assert!(b.take(ep, false).is_some(), "the next client takes it");
        assert_eq!(shared.idle(), 0);
        // A connection the backend closed is not handed out.
        let closed = sender(&l, &mut held).await;
        shared.give(ep, Instant::now(), closed);
        held.clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        shared.prune();
        assert_eq!(shared.idle(), 0, "closed by the backend");

        // One client connection keeps at most LOCAL_MAX to an endpoint; the rest are shared.
        let mut c = Local::new(shared.clone());
        for _ in 0..LOCAL_MAX + 2 {
            let s = sender(&l, &mut held).await;
            c.keep(ep, false, s);
        }
        assert_eq!(shared.idle(), 2);
        // An expired connection is not pooled.
        let old = sender(&l, &mut held).await;
        let long_ago = Instant::now().checked_sub(IDLE_TIMEOUT + Duration::from_secs(1));
        if let Some(t) = long_ago {
            shared.give(ep, t, old);
            assert_eq!(shared.idle(), 2);
        }
    }
}
