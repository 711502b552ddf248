//! The gateway's Prometheus families: per route requests (by status code), latency, backend
//! errors, and TLS handshakes (kernel or userspace, or failed). Created and registered with
//! the daemon's registry (`metrics.rs`); the proxy updates them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `{route, code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    pub route: String,
    pub code: u16,
}

/// `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// `{route, kind}`: `connect`, `timeout`, `unresolved`, `no_endpoints`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteKind {
    pub route: String,
    pub kind: String,
}

/// `{result, mode}`: result `ok`, `failed`, `timeout`; mode `kernel`, `userspace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Handshake {
    pub result: String,
    pub mode: String,
}

fn latency() -> Histogram {
    // 0.25 ms … 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The families; clones share them.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub requests: Family<RouteCode, Counter>,
    pub duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub backend_errors: Family<RouteKind, Counter>,
    pub tls_handshakes: Family<Handshake, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            backend_errors: Family::default(),
            tls_handshakes: Family::default(),
        }
    }
}

impl GatewayMetrics {
    /// Registers the families (prefix `kube_gw_gateway_`).
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("gateway");
        r.register(
            "requests",
            "HTTP requests by route and status code",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            self.duration.clone(),
        );
        r.register(
            "backend_errors",
            "Requests that got no answer from a backend, by route and kind",
            self.backend_errors.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes on terminating listeners, by result and where the session went",
            self.tls_handshakes.clone(),
        );
    }

    /// The handles of one route's series, for [`RouteHandles::request`].
    pub fn route(&self, route: &str) -> RouteHandles {
        RouteHandles {
            duration: self
                .duration
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .clone(),
            codes: std::sync::Mutex::new(Vec::new()),
            name: route.to_string(),
        }
    }

    /// One request done.
    pub fn request(&self, route: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteCode {
                route: route.to_string(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// A backend error of a route.
    pub fn backend_error(&self, route: &str, kind: &str) {
        self.backend_errors
            .get_or_create(&RouteKind {
                route: route.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A TLS handshake.
    pub fn handshake(&self, result: &str, mode: &str) {
        self.tls_handshakes
            .get_or_create(&Handshake {
                result: result.to_string(),
                mode: mode.to_string(),
            })
            .inc();
    }
}

/// One route's series, looked up once (per rule and desired state) instead of per request:
/// the family lookups hash and allocate their label set.
#[derive(Debug)]
pub struct RouteHandles {
    /// `namespace/name` of the route.
    pub name: String,
    duration: Histogram,
    /// Request counters by status code, as they come.
    codes: std::sync::Mutex<Vec<(u16, Counter)>>,
}

impl RouteHandles {
    /// One request of this route done.
    pub fn request(&self, families: &GatewayMetrics, code: u16, seconds: f64) {
        self.duration.observe(seconds);
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = codes.iter().find(|(k, _)| *k == code) {
            c.inc();
            return;
        }
        let c = families
            .requests
            .get_or_create(&RouteCode {
                route: self.name.clone(),
                code,
            })
            .clone();
        c.inc();
        codes.push((code, c));
    }
}

/// A rule's [`RouteHandles`], made at its first request. A clone starts empty (it is a cache).
#[derive(Debug, Default)]
pub struct RouteCache(std::sync::OnceLock<RouteHandles>);

impl Clone for RouteCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl RouteCache {
    pub fn get(&self, families: &GatewayMetrics, route: &dyn std::fmt::Display) -> &RouteHandles {
        self.0.get_or_init(|| families.route(&route.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_into_the_same_series_as_the_families() {
        let m = GatewayMetrics::default();
        let cache = RouteCache::default();
        let h = cache.get(&m, &"ns/web");
        h.request(&m, 200, 0.001);
        h.request(&m, 200, 0.001);
        h.request(&m, 503, 0.001);
        m.request("ns/web", 200, 0.001);
        let count = |code| {
            m.requests
                .get_or_create(&RouteCode {
                    route: "ns/web".into(),
                    code,
                })
                .get()
        };
        assert_eq!((count(200), count(503)), (3, 1));
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap_or_default();
        assert!(
            text.contains("kube_gw_gateway_request_duration_seconds_count{route=\"ns/web\"} 4")
                || text.contains("gateway_request_duration_seconds_count{route=\"ns/web\"} 4"),
            "{text}"
        );
    }
}
