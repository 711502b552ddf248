//! The try-it demo (`sudo scripts/demo`): a throwaway lab with a real Kubernetes control
//! plane and a switch namespace running kube-gw, joined with a bootstrap token; a Service
//! with an externalIP appears as a /32 on the switch's `lo`; a leaf namespace running BIRD
//! learns the address over BGP from the switch, into its kernel. Prints what an operator
//! would look at, then cleans everything up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/controlplane.rs"]
mod controlplane;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use controlplane::{block_on, wait_for, ControlPlane};
use harness::peers::{Bird, KubeGw};
use harness::{Lab, Node};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

fn say(s: &str) {
    println!("\n== {s}");
}

fn show(node: &Node, args: &[&str]) {
    let out = node.exec(args[0], &args[1..]);
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn kube_gw(kg: &KubeGw, args: &[&str]) {
    print!("{}", kg.cli(args));
}

fn main() {
    if !harness::require_root("demo") {
        std::process::exit(1);
    }
    say("starting a Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager)");
    let cp = ControlPlane::shared();
    println!("API server {}", cp.server);

    let name = "spine-1";
    cp.bind_switch(name);
    let token = cp.bootstrap_token();
    let mut lab = Lab::new();
    let switch = lab.node("switch");
    // The fabric side: a leaf running BIRD, linked to the switch, expecting a BGP session.
    let leaf = lab.node("leaf");
    lab.link(&leaf, &["192.0.2.9/30"], &switch, &["192.0.2.10/30"]);
    let bird = Bird::start(
        &mut lab,
        &leaf,
        "leaf",
        "router id 192.0.2.9;\nprotocol device {}\n\
         protocol kernel { ipv4 { export all; }; merge paths on; }\n\
         protocol bgp switch { local 192.0.2.9 as 65001; neighbor 192.0.2.10 as 65100; \
         hold time 9; connect retry time 1; ipv4 { import all; export none; }; }\n",
    );
    let port: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();
    lab.forward_host_port(&switch, port);
    let ca = lab.write("ca.crt", &cp.ca_pem);
    let tok = lab.write("bootstrap-token", &format!("{token}\n"));
    std::fs::set_permissions(&tok, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let state = lab.path("state");
    // IPVS: kube-gw announces a VIP only once its virtual service is in the kernel. A kernel
    // without IPVS (some VMs and containers) still shows the address and the route, with
    // kube-gw's data plane off.
    let _ = std::process::Command::new("modprobe").arg("ip_vs").status();
    let ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    if !ipvs {
        say("this kernel has no IPVS: the demo runs with [ipvs] enabled = false");
    }
    let config = format!(
        r#"[node]
name = "{name}"

[kubernetes]
server = "{}"
ca-file = "{}"
bootstrap-token-file = "{}"
state-dir = "{}"
service-cidrs = ["10.96.0.0/12"]

[vip]
pools = ["198.51.100.0/24", "2001:db8:100::/64"]

[ipvs]
enabled = {ipvs}

[bgp]
asn = 65100
router-id = "192.0.2.11"
drain-time = 2

[[bgp.neighbors]]
address = "192.0.2.9"
remote-asn = 65001
description = "leaf (BIRD)"
"#,
        cp.server,
        ca.display(),
        tok.display(),
        state.display()
    );
    say(&format!(
        "kube-gw in network namespace {} joins with a bootstrap token (TLS bootstrap)",
        switch.ns
    ));
    let kg = KubeGw::start(&mut lab, &switch, name, &config);
    wait_for("kube-gw to join", Duration::from_secs(60), || {
        kg.status()["components"]
            .as_array()?
            .iter()
            .any(|c| c["name"] == "kubernetes" && c["state"] == "joined")
            .then_some(())
    });
    kube_gw(&kg, &["status"]);

    say("a Service with externalIP 198.51.100.10 and one ready endpoint; one asking for 203.0.113.50");
    let ns = "demo";
    cp.create_namespace(ns);
    block_on(async {
        let client = cp.admin().await;
        let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
        for (n, ip) in [("web", "198.51.100.10"), ("elsewhere", "203.0.113.50")] {
            let svc = serde_json::from_value(serde_json::json!({
                "metadata": {"name": n, "namespace": ns},
                "spec": {"ports": [{"name": "http", "port": 80}], "externalIPs": [ip]}
            }))
            .unwrap();
            svcs.create(&PostParams::default(), &svc).await.unwrap();
        }
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["192.0.2.100"], "conditions": {"ready": true}}]
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client, ns)
            .create(&PostParams::default(), &slice)
            .await
            .unwrap();
    });
    wait_for("the /32 on lo", Duration::from_secs(30), || {
        let out = switch.exec("ip", &["-o", "addr", "show", "dev", "lo"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("198.51.100.10/32")
            .then_some(())
    });
    say(&format!("ip -n {} addr show lo", switch.ns));
    show(&switch, &["ip", "addr", "show", "dev", "lo"]);
    say("kube-gw vips");
    kube_gw(&kg, &["vips"]);
    say("the leaf (BIRD): its BGP session to the switch and the route it learned");
    bird.wait_established("switch", Duration::from_secs(60));
    print!("{}", bird.birdc(&["show", "protocols", "switch"]));
    harness::wait_for(
        "the leaf to learn 198.51.100.10/32",
        Duration::from_secs(60),
        || {
            let out = std::process::Command::new("birdc")
                .arg("-s")
                .arg(&bird.ctl)
                .args(["show", "route", "198.51.100.10/32"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("via 192.0.2.10")
                .then_some(())
        },
    );
    print!(
        "{}",
        bird.birdc(&["show", "route", "198.51.100.10/32", "all"])
    );
    say(&format!("ip -n {} route show 198.51.100.10", leaf.ns));
    show(&leaf, &["ip", "route", "show", "198.51.100.10"]);
    say("Events on the Services (kubectl describe service would show these)");
    std::thread::sleep(Duration::from_secs(1));
    block_on(async {
        let evs = Api::<Event>::namespaced(cp.admin().await, ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        for e in evs.items {
            println!(
                "  {:<10} {:<8} {:<15} {}",
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            );
        }
    });
    say("the Service is deleted: its address goes");
    block_on(async {
        Api::<Service>::namespaced(cp.admin().await, ns)
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
    });
    wait_for("the /32 to go", Duration::from_secs(30), || {
        let out = switch.exec("ip", &["-o", "addr", "show", "dev", "lo"]);
        (!String::from_utf8_lossy(&out.stdout).contains("198.51.100.10/32")).then_some(())
    });
    show(&switch, &["ip", "-brief", "addr", "show", "dev", "lo"]);
    say("stop: SIGTERM, then the ordered shutdown");
    lab.stop(name, Duration::from_secs(30));
    for line in lab
        .log(name)
        .lines()
        .filter(|l| l.contains("shutdown phase started") || l.contains("kube-gw stopped"))
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        println!(
            "  {} {}",
            v["fields"]["message"].as_str().unwrap_or(""),
            v["fields"]["phase"].as_str().unwrap_or("")
        );
    }
    let _ = Command::new("true").status();
    say("done; the lab is removed");
}
