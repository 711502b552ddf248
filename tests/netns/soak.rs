//! The churn soak on this machine's kernel: kube-gw in a switch namespace serving thousands
//! of Services while the load generator of `tests/common/soak.rs` creates, changes and
//! deletes them at a fixed rate, a BIRD leaf learns the routes, and every minute the
//! invariant is checked from outside kube-gw:
//!
//!   the addresses on `lo` = the routes at the leaf = what the cluster asks for
//!
//! (IPVS is not in this kernel: the lab's soak, `tests/lab/soak.rs`, adds it.)
//!
//! Run by `scripts/soak DURATION` (scripts/test: `scripts/soak 3m`); knobs:
//! `KUBE_GW_SOAK_SECS`, `KUBE_GW_SOAK_SERVICES` (default 2000), `KUBE_GW_SOAK_RATE`
//! (changes per second, default 50). Writes `samples.csv` and `checks.csv` to
//! `$KUBE_GW_SOAK_OUT`. VIPs come from 198.18.0.0/15 (RFC 2544's benchmarking range).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::bgp::{attach_leaf, metrics};
use crate::controlplane::ControlPlane;
use crate::harness::{require_root, Lab, Node};
use crate::soak_engine::{in_range, lo_view, run, runtime, Params, Views, World};
use crate::vips::Switch;

/// The soak's routes in `ip -j route show`.
fn route_view(out: &[u8]) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(out).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["dst"].as_str())
        .filter(|a| in_range(a))
        .map(String::from)
        .collect()
}

struct HostWorld<'a> {
    lab: &'a Lab,
    node: Node,
    leaf: Node,
    pid: u32,
}

impl World for HostWorld<'_> {
    fn views(&self) -> Views {
        let lo = self
            .node
            .exec("ip", &["-j", "-4", "addr", "show", "dev", "lo"]);
        let leaf = self
            .leaf
            .exec("ip", &["-j", "-4", "route", "show", "proto", "bird"]);
        Views {
            lo: lo_view(&lo.stdout),
            leaf: route_view(&leaf.stdout),
            ipvs: None,
        }
    }
    fn daemon_pid(&self) -> u32 {
        self.pid
    }
    fn metrics(&self) -> String {
        metrics(&self.node)
    }
    fn address_log(&self) -> String {
        self.lab.log("addrmon")
    }
}

#[test]
#[ignore = "the soak: scripts/soak DURATION runs it (scripts/test: its 3-minute short form)"]
fn churn_soak_keeps_lo_and_the_leaf_equal_to_the_cluster() {
    if !require_root("churn_soak_keeps_lo_and_the_leaf_equal_to_the_cluster") {
        return;
    }
    let p = Params::from_env("KUBE_GW_SOAK", 2000, 50);
    let out = std::path::PathBuf::from(
        std::env::var("KUBE_GW_SOAK_OUT").unwrap_or_else(|_| "target/soak".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut sw = Switch::start_with(
        "pools = [\"198.18.0.0/15\"]",
        "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n",
    );
    let (node, leaf, _bird) = attach_leaf(&mut sw);
    let pid = sw.lab.pid(&sw.kg.name).unwrap();
    sw.lab
        .spawn(&node, "addrmon", "ip", &["-ts", "-4", "monitor", "address"]);
    std::thread::sleep(Duration::from_millis(500));
    let rt = runtime();
    // The client's connection task lives on the runtime that made it: this one.
    let client = rt.block_on(ControlPlane::shared().admin());
    let world = HostWorld {
        lab: &sw.lab,
        node,
        leaf,
        pid,
    };
    run(&p, &world, &rt, &client, &sw.ns, &|r| {
        std::fs::write(out.join("samples.csv"), &r.samples_csv).unwrap();
        std::fs::write(out.join("checks.csv"), &r.checks_csv).unwrap();
        eprintln!("soak: results in {}", out.display());
    });
}
