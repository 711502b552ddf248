//! The churn soak in the real kernel: the engine of `tests/common/soak.rs` against kube-gw
//! running in the guest (its root namespace is the switch, IPVS on, a BIRD leaf behind a
//! veth) and the test control plane on the host, so the invariant checked every minute is
//! the whole of it:
//!
//!   the addresses on `lo` = IPVS (`ipvsadm -Ln`: each VIP's virtual service and its
//!   destinations) = the routes at the leaf = what the cluster asks for.
//!
//! The load generator runs here in the guest with an admin client (`/lab/admin-kubeconfig`,
//! written by `examples/vm_cluster.rs`) and churns the namespace `vm-soak`. Not among the
//! lab's default tests: `scripts/soak --lab DURATION` runs it (`2m` in scripts/test) through
//! `scripts/lab-run soak`, with `KUBE_GW_LAB_SOAK_SECS`, `_SERVICES` (default 300) and
//! `_RATE` (default 10 a second: the guest is emulated, several times slower than the
//! host). The CSVs leave the guest on its console, as lines `KGW-SOAK <file>: <row>`,
//! which `scripts/soak` collects and plots.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::soak_engine::{in_range, ipvs_view, lo_view, run, runtime, Params, Views, World};
use crate::{daemon_config, daemon_lab, load_ipvs, spawn_daemon};

struct GuestWorld {
    /// The leaf BIRD's control socket (it keeps its routes to itself: no kernel protocol).
    bird_ctl: String,
    pid: u32,
    addrmon: std::path::PathBuf,
}

/// The soak's prefixes in `birdc show route`: `198.18.0.1/32  unicast [sw …] * …` (the
/// next hop on the lines after).
fn bird_routes(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_suffix("/32"))
        .filter(|a| in_range(a))
        .map(String::from)
        .collect()
}

impl World for GuestWorld {
    fn views(&self) -> Views {
        let lo = std::process::Command::new("ip")
            .args(["-j", "-4", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        let leaf = std::process::Command::new("birdc")
            .args(["-s", &self.bird_ctl, "show", "route", "protocol", "sw"])
            .output()
            .unwrap();
        let ipvs = std::process::Command::new("ipvsadm")
            .arg("-Ln")
            .output()
            .unwrap();
        Views {
            lo: lo_view(&lo.stdout),
            leaf: bird_routes(&String::from_utf8_lossy(&leaf.stdout)),
            ipvs: Some(ipvs_view(&String::from_utf8_lossy(&ipvs.stdout))),
        }
    }
    fn daemon_pid(&self) -> u32 {
        self.pid
    }
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = match std::net::TcpStream::connect("127.0.0.1:9472") {
            Ok(s) => s,
            Err(_) => return String::new(),
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }
    fn address_log(&self) -> String {
        std::fs::read_to_string(&self.addrmon).unwrap_or_default()
    }
}

pub fn soak_keeps_lo_ipvs_and_the_leaf_equal_to_the_cluster() {
    let admin = std::fs::read_to_string("/lab/admin-kubeconfig")
        .expect("no /lab/admin-kubeconfig: scripts/lab-run starts the control plane for this test");
    load_ipvs();
    let p = Params::from_env("KUBE_GW_LAB_SOAK", 300, 10);
    println!(
        "soak: {} s, {} Services, {} changes/s",
        p.secs, p.services, p.rate
    );
    let (lab, _leaf, bird) = daemon_lab();
    let config = daemon_config(&lab, "").replace("198.51.100.0/24", "198.18.0.0/15");
    let kg = spawn_daemon(&lab, &config);
    bird.wait_established("sw", Duration::from_secs(60));
    let addrmon = lab.path("addrmon.log");
    let mut monitor = std::process::Command::new("ip")
        .args(["-ts", "-4", "monitor", "address"])
        .stdout(std::fs::File::create(&addrmon).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rt = runtime();
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&admin).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    });
    let world = GuestWorld {
        bird_ctl: bird.ctl.display().to_string(),
        pid: kg.child.id(),
        addrmon,
    };
    run(&p, &world, &rt, &client, "vm-soak", &|r| {
        for (file, csv) in [
            ("samples.csv", &r.samples_csv),
            ("checks.csv", &r.checks_csv),
        ] {
            for row in csv.lines() {
                println!("KGW-SOAK {file}: {row}");
            }
        }
    });
    let _ = monitor.kill();
    let _ = monitor.wait();
    // kube-gw stops; what it programmed stays in the kernel (a restart adopts it). The soak
    // runs after every other lab test chosen, and the guest powers off after it.
    drop(kg);
}
