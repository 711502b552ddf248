//! The cluster side of the install test (`scripts/install-test`): starts the test control
//! plane on the host, lets a switch named `kube-gw-vm` in (RBAC, a Node client certificate),
//! creates a Service with an externalIP, writes the switch's kubeconfig — pointing at
//! 10.0.2.2, the host as a qemu guest with user networking sees it — and prints
//! `READY <vip>`. Then it waits; the control plane stops when this process is killed.
//! With a second path it also writes an admin kubeconfig there (same server address) and
//! makes the namespace `vm-soak`, for the lab's churn soak (`tests/lab/soak.rs`).
//!
//!   cargo run --example vm_cluster -- /path/to/kubeconfig [/path/to/admin-kubeconfig]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/controlplane.rs"]
mod controlplane;

use controlplane::{block_on, ControlPlane};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};

const NODE: &str = "kube-gw-vm";
const VIP: &str = "198.51.100.77";
/// The Service's one ready endpoint (no kubelet runs pods here: the slice is written by hand).
const ENDPOINT: &str = "203.0.113.5";

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: vm_cluster KUBECONFIG [ADMIN-KUBECONFIG]");
    let admin_out = std::env::args().nth(2);
    let cp = ControlPlane::shared();
    cp.bind_switch(NODE);
    let port = cp.server.rsplit(':').next().unwrap();
    let kc = cp.user_kubeconfig(
        &format!("system:node:{NODE}"),
        &["system:nodes"],
        &format!("https://10.0.2.2:{port}"),
    );
    std::fs::write(&out, kc).unwrap();
    if let Some(admin_out) = admin_out {
        let admin = cp.user_kubeconfig(
            "kube-gw-lab-soak",
            &["system:masters"],
            &format!("https://10.0.2.2:{port}"),
        );
        std::fs::write(&admin_out, admin).unwrap();
        cp.create_namespace("vm-soak");
    }
    cp.create_namespace("vm-test");
    block_on(async {
        let svcs: Api<Service> = Api::namespaced(cp.admin().await, "vm-test");
        svcs.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {"ports": [{"port": 80}], "externalIPs": [VIP]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(cp.admin().await, "vm-test");
        slices
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ENDPOINT], "conditions": {"ready": true}}]
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    });
    println!("READY {VIP} {ENDPOINT}");
    loop {
        std::thread::park();
    }
}
