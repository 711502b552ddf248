//! BGP metrics: per neighbor session state, prefixes, messages and NOTIFICATIONs, read
//! from the sessions' status channels at scrape time (nothing is counted twice).

use super::fsm::State;
use super::status::{NeighborStatus, Statuses};

/// BGP metrics, read from the sessions' status at scrape time.
#[derive(Debug)]
pub struct BgpCollector(pub Statuses);

impl prometheus_client::collector::Collector for BgpCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let all: Vec<NeighborStatus> = self
            .0
            .get()
            .into_iter()
            .flatten()
            .map(|rx| rx.borrow().clone())
            .collect();
        type Get = fn(&NeighborStatus) -> i64;
        let gauges: [(&str, &str, Get); 3] = [
            (
                "bgp_session_established",
                "1 while the session with the neighbor is Established",
                |n| i64::from(n.state == State::Established),
            ),
            (
                "bgp_prefixes_sent",
                "Prefixes announced to the neighbor on the current session",
                |n| i64::try_from(n.prefixes_sent).unwrap_or(i64::MAX),
            ),
            (
                "bgp_prefixes_received",
                "Prefixes the neighbor announces on the current session (kept, not installed)",
                |n| i64::try_from(n.prefixes_received).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, get) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for n in &all {
                let a = n.name();
                ConstGauge::new(get(n)).encode(m.encode_family(&[("neighbor", a.as_str())])?)?;
            }
        }
        type Count = fn(&NeighborStatus) -> u64;
        let counters: [(&str, &str, Count); 3] = [
            (
                "bgp_session_transitions",
                "FSM state changes of the session with the neighbor",
                |n| n.transitions,
            ),
            (
                "bgp_updates_received",
                "UPDATE messages received from the neighbor",
                |n| n.updates_received,
            ),
            (
                "bgp_update_errors",
                "Received UPDATEs treated as withdraw (RFC 7606), with an attribute discarded, or with our AS in the path",
                |n| n.update_errors,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for n in &all {
                let a = n.name();
                ConstCounter::new(get(n)).encode(m.encode_family(&[("neighbor", a.as_str())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "bgp_messages",
            "BGP messages by direction and type",
            None,
            MetricType::Counter,
        )?;
        const TYPES: [&str; 5] = [
            "open",
            "update",
            "notification",
            "keepalive",
            "route_refresh",
        ];
        for n in &all {
            let a = n.name();
            for (dir, counts) in [
                ("sent", &n.messages_sent),
                ("received", &n.messages_received),
            ] {
                for (t, count) in TYPES.iter().zip(counts) {
                    let labels = [("neighbor", a.as_str()), ("direction", dir), ("type", *t)];
                    ConstCounter::new(*count).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "bgp_notifications",
            "NOTIFICATION messages by direction and error code",
            None,
            MetricType::Counter,
        )?;
        for n in &all {
            let a = n.name();
            for (dir, map) in [
                ("sent", &n.notifications_sent),
                ("received", &n.notifications_received),
            ] {
                for (code, count) in map {
                    let c = code.to_string();
                    let labels = [
                        ("neighbor", a.as_str()),
                        ("direction", dir),
                        ("code", c.as_str()),
                    ];
                    ConstCounter::new(*count).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
