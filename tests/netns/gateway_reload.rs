//! Hitless changes: under steady HTTP and HTTPS load (a new connection every 5 ms, and 8
//! long-lived keep-alive connections), kube-gw takes a route change, a configuration reload
//! (SIGHUP), a certificate rotation, a new listener and a new rule without refusing a
//! connection, failing a request or closing a kept-alive connection. And restarts: with the
//! listening sockets held across them (as kube-gw-gateway.socket holds them) no connection is
//! refused, and the drain closes kept-alive connections gracefully and counts any it cut.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube_gw::kube::gateway::{Gateway, HttpRoute};

use crate::gateway::{self, issue, merge, tls_secret_yaml, VIP};
use crate::harness::require_root;

const LOAD_SECONDS: u64 = 14;

/// The name of the backend that answers `scheme://VIP/`, if one does.
fn backend_of(w: &gateway::World, scheme: &str) -> Option<String> {
    let (status, _, body) = w.curl(&["-k", &format!("{scheme}://{VIP}/")]);
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["backend"].as_str().unwrap_or_default().to_string())
}

#[test]
fn route_reload_certificate_and_listener_changes_under_load_cost_nothing() {
    if !require_root("route_reload_certificate_and_listener_changes_under_load_cost_nothing") {
        return;
    }
    let mut w = gateway::start();
    let ns = w.sw.ns.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    w.service(&ns, "svc-b", &["203.0.113.11"]);
    let (_, cert1, key1) = issue(&["app.example"], 11);
    let (_, cert2, key2) = issue(&["app.example"], 22);
    w.apply(&tls_secret_yaml(&ns, "app-cert", &cert1, &key1));
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses: [{{type: IPAddress, value: \"{VIP}\"}}]\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP}}\n  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: app-cert}}]}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs: [{{name: svc-a, port: 8080}}]\n",
        w.class
    ));
    w.wait("HTTP and HTTPS to serve backend a", || {
        (backend_of(&w, "http").as_deref() == Some("a")
            && backend_of(&w, "https").as_deref() == Some("a"))
        .then_some(())
    });

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/http_load.py"
    );
    let client = w.client.clone();
    let outs: Vec<String> = ["http", "https"]
        .iter()
        .map(|s| {
            w.sw.lab
                .path(&format!("load-{s}.json"))
                .display()
                .to_string()
        })
        .collect();
    let secs = LOAD_SECONDS.to_string();
    w.sw.lab.spawn(
        &client,
        "load-http",
        "python3",
        &[script, VIP, &secs, &outs[0]],
    );
    w.sw.lab.spawn(
        &client,
        "load-https",
        "python3",
        &[script, VIP, &secs, &outs[1], "--https"],
    );
    let pause = || std::thread::sleep(Duration::from_millis(1500));
    pause();
    // 1. The route moves to backend b.
    merge::<HttpRoute>(
        &ns,
        "r",
        serde_json::json!({"spec": {"rules": [{"backendRefs": [{"name": "svc-b", "port": 8080}]}]}}),
    );
    pause();
    // 2. A configuration reload.
    let name = w.sw.kg.name.clone();
    w.sw.lab.signal(&name, "HUP");
    pause();
    // 3. The certificate rotates.
    {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        merge::<Secret>(
            &ns,
            "app-cert",
            serde_json::json!({"data": {"tls.crt": b(&cert2), "tls.key": b(&key2)}}),
        );
    }
    pause();
    // 4. A new listener on the Gateway.
    merge::<Gateway>(
        &ns,
        "web",
        serde_json::json!({"spec": {"listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "app-cert"}]}},
            {"name": "alt", "port": 8080, "protocol": "HTTP"}
        ]}}),
    );
    pause();
    // 5. A new rule.
    merge::<HttpRoute>(
        &ns,
        "r",
        serde_json::json!({"spec": {"rules": [
            {"backendRefs": [{"name": "svc-b", "port": 8080}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/x"}}], "backendRefs": [{"name": "svc-a", "port": 8080}]}
        ]}}),
    );
    for load in ["load-http", "load-https"] {
        w.wait(&format!("{load} to finish"), || {
            w.sw.lab.log(load).contains("done").then_some(())
        });
    }

    // The changes happened (the positive control): b serves /, a serves /x, port 8080
    // answers, the new certificate is served, and the reload was done.
    assert_eq!(backend_of(&w, "http").as_deref(), Some("b"));
    let (status, _, body) = w.curl(&[&format!("http://{VIP}/x")]);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["backend"],
        "a"
    );
    assert_eq!(w.curl(&[&format!("http://{VIP}:8080/")]).0, 200);
    let served = w.client.try_exec(
        "sh",
        &[
            "-c",
            &format!("openssl s_client -connect {VIP}:443 </dev/null 2>/dev/null | openssl x509 -noout -serial"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&served.stdout).trim(),
        "serial=16",
        "the rotated certificate (serial 22 = 0x16) is served"
    );
    assert!(
        w.sw.lab.log(&name).contains("reloading the configuration"),
        "kube-gw did not reload"
    );

    for (scheme, out) in ["http", "https"].iter().zip(&outs) {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        eprintln!("{scheme} load: {r}");
        let new_ok = r["new"]["ok"].as_u64().unwrap();
        let kept_ok = r["kept"]["ok"].as_u64().unwrap();
        assert_eq!(
            r["new"]["failed"],
            serde_json::json!([]),
            "{scheme}: new connections failed"
        );
        assert_eq!(
            r["kept"]["failed"],
            serde_json::json!([]),
            "{scheme}: requests on kept connections failed"
        );
        assert_eq!(
            (&r["kept"]["closed"], &r["kept"]["dropped"]),
            (&serde_json::json!(0), &serde_json::json!(0)),
            "{scheme}: kept-alive connections were closed"
        );
        // Load really ran through every change (the 5 changes took ≥ 7.5 s of the 14 s).
        assert!(new_ok >= 200, "{scheme}: only {new_ok} new connections");
        assert!(
            kept_ok >= 300,
            "{scheme}: only {kept_ok} requests on kept connections"
        );
    }
}

/// The outcome of one `http_load.py` run.
fn load_result(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn restarts_under_load_refuse_no_connection_and_the_drain_counts_what_it_closed() {
    if !require_root("restarts_under_load_refuse_no_connection_and_the_drain_counts_what_it_closed")
    {
        return;
    }
    // kube-gw runs under a holder of the two listening sockets (as systemd's kube-gw-gateway.socket
    // holds them), with a bpf filesystem of its own for the pins; SIGHUP to the holder is
    // `systemctl restart kube-gw`.
    let holder = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/socket_holder.py"
    );
    let script = format!("mount -t bpf bpf /sys/fs/bpf && exec python3 {holder} 7949 \"$@\"");
    let mut w = gateway::start_wrapped(
        "on-shutdown = \"keep\"\n",
        "drain-timeout = 1\n",
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "holder",
        ],
    );
    let ns = w.sw.ns.clone();
    let name = w.sw.kg.name.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    let (_, cert, key) = issue(&["app.example"], 11);
    w.apply(&tls_secret_yaml(&ns, "app-cert", &cert, &key));
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses: [{{type: IPAddress, value: \"{VIP}\"}}]\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP}}\n  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: app-cert}}]}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs: [{{name: svc-a, port: 8080}}]\n",
        w.class
    ));
    w.wait("HTTP and HTTPS to serve", || {
        (backend_of(&w, "http").as_deref() == Some("a")
            && backend_of(&w, "https").as_deref() == Some("a"))
        .then_some(())
    });
    // The first daemon took the handed-over sockets and pinned its steering.
    let log = w.sw.lab.log(&name);
    assert!(
        log.contains("attaching and pinning"),
        "the first daemon did not pin its steering:\n{log}"
    );

    let load = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/http_load.py"
    );
    let client = w.client.clone();
    let outs: Vec<String> = ["http", "https"]
        .iter()
        .map(|s| {
            w.sw.lab
                .path(&format!("restart-{s}.json"))
                .display()
                .to_string()
        })
        .collect();
    // During a restart new connections wait in the accept queue (the stop's drain, then the
    // next daemon's start): clients with a 10 s timeout, as real ones have at least.
    let secs = "18";
    w.sw.lab.spawn(
        &client,
        "load-http",
        "python3",
        &[load, VIP, secs, &outs[0], "--timeout", "10"],
    );
    w.sw.lab.spawn(
        &client,
        "load-https",
        "python3",
        &[load, VIP, secs, &outs[1], "--https", "--timeout", "10"],
    );
    // A client that never finishes its request headers: the drain cannot close it
    // gracefully, so the first stop cuts it at the bound and counts it.
    w.sw.lab.spawn(
        &client,
        "slow-headers",
        "python3",
        &[
            "-c",
            &format!("import socket,time\ns=socket.create_connection(('{VIP}',80))\ns.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n')\nprint('sent',flush=True)\ntime.sleep(60)"),
        ],
    );
    w.wait("the slow client to connect", || {
        w.sw.lab.log("slow-headers").contains("sent").then_some(())
    });
    // Two restarts, 7 s apart: the first adopts what the first daemon pinned, the second
    // what the first adopter kept.
    for n in 1..=2 {
        std::thread::sleep(Duration::from_secs(3));
        w.sw.lab.signal(&name, "HUP");
        w.wait(&format!("restart {n} to adopt the pinned steering"), || {
            (w.sw
                .lab
                .log(&name)
                .matches("adopted the pinned steering")
                .count()
                >= n)
                .then_some(())
        });
        std::thread::sleep(Duration::from_secs(4));
    }
    for l in ["load-http", "load-https"] {
        w.wait(&format!("{l} to finish"), || {
            w.sw.lab.log(l).contains("done").then_some(())
        });
    }
    let log = w.sw.lab.log(&name);
    assert_eq!(
        log.matches("starting again").count(),
        2,
        "the holder restarted kube-gw twice:\n{log}"
    );
    // Each stop drained: every open connection finished within the bound; none was cut.
    let drains: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "gateway: drained")
        .collect();
    assert_eq!(drains.len(), 2, "two stops, two drains:\n{log}");
    for d in &drains {
        eprintln!("drain: {}", d["fields"]);
    }
    // The first stop: every connection but the slow one finished within the bound; the slow
    // one was cut and counted. The second: none left to cut.
    assert_eq!(drains[0]["fields"]["cut"], 1, "{}", drains[0]);
    assert_eq!(drains[1]["fields"]["cut"], 0, "{}", drains[1]);
    for (scheme, out) in ["http", "https"].iter().zip(&outs) {
        let r = load_result(out);
        eprintln!("{scheme} load across two restarts: {r}");
        assert_eq!(
            r["new"]["failed"],
            serde_json::json!([]),
            "{scheme}: new connections failed (refused, reset or timed out)"
        );
        assert_eq!(
            r["kept"]["failed"],
            serde_json::json!([]),
            "{scheme}: requests on kept connections failed"
        );
        // The drain closes each kept-alive connection: after a request (Connection: close),
        // or, idle between two requests, at once; the client opens another. Counted, at
        // least once per connection and restart.
        let closed = r["kept"]["closed"].as_u64().unwrap() + r["kept"]["dropped"].as_u64().unwrap();
        assert!(
            closed >= 16,
            "{scheme}: only {closed} kept connections were closed by the two drains"
        );
        let new_ok = r["new"]["ok"].as_u64().unwrap();
        assert!(new_ok >= 300, "{scheme}: only {new_ok} new connections");
        eprintln!(
            "{scheme}: the longest a new connection waited across the restarts: {:.0} ms",
            r["new"]["max_ms"].as_f64().unwrap_or(0.0)
        );
    }
}
