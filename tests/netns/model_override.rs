//! The model-override filter end to end: an HTTPRoute whose rule names a `ModelOverride`
//! (kube-gw's CRD) through `ExtensionRef`, and a stand-in model server in the backend namespace
//! (`harness/llm.py`) that records the exact bytes of every body it gets and streams its
//! answers as Ollama (NDJSON) and OpenAI (server-sent events) do.

use crate::gateway::{self, condition, World, VIP};
use crate::harness::require_root;

/// The backend's record of the bodies it got, oldest first: (path, bytes, Content-Length).
fn received(w: &World) -> Vec<(String, Vec<u8>, Option<String>)> {
    use base64::Engine as _;
    std::fs::read_to_string(w.sw.lab.path("llm-bodies.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                base64::engine::general_purpose::STANDARD
                    .decode(v["body_b64"].as_str().unwrap())
                    .unwrap(),
                v["content_length"].as_str().map(String::from),
            )
        })
        .collect()
}

/// POSTs `body` to `path` through the VIP; (status, the backend's JSON answer or Null).
fn post(w: &World, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{VIP}{path}");
    let (status, _, text) = w.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        &url,
    ]);
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// A streamed POST: (status, [(seconds since the head, line)]).
fn stream(w: &World, path: &str, body: &str) -> (u16, Vec<(f64, String)>) {
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/stream_client.py"
    );
    let out = w.client.exec("python3", &[client, VIP, "80", path, body]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l[0].as_f64().unwrap(), l[1].as_str().unwrap().to_string()))
        .collect();
    (v["status"].as_u64().unwrap() as u16, lines)
}

fn model_override(w: &World, ns: &str, spec: &str) {
    w.apply(&format!(
        "apiVersion: kube-gw.io/v1alpha1\nkind: ModelOverride\nmetadata:\n  name: llm\n  namespace: {ns}\nspec:\n{spec}"
    ));
}

/// A merge patch of the ModelOverride's spec.
fn patch_override(ns: &str, spec: serde_json::Value) {
    gateway::merge::<kube_gw::kube::gateway::ModelOverride>(
        ns,
        "llm",
        serde_json::json!({ "spec": spec }),
    );
}

#[test]
fn model_override_rewrites_only_the_model_and_answers_stream_through() {
    if !require_root("model_override_rewrites_only_the_model_and_answers_stream_through") {
        return;
    }
    let mut w = gateway::start();
    let ns = w.sw.ns.clone();
    let llm = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/llm.py");
    let record = w.sw.lab.path("llm-bodies.jsonl").display().to_string();
    let backend = w.backend.clone();
    w.sw.lab.spawn(
        &backend,
        "llm",
        "python3",
        &[llm, "203.0.113.12", "8080", &record],
    );
    w.wait("the model server to listen", || {
        w.sw.lab.log("llm").contains("listening").then_some(())
    });
    w.service(&ns, "llm", &["203.0.113.12"]);
    model_override(&w, &ns, "  models:\n  - name: \"qwen2.5:0.5b\"\n");
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: ai\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: ai\n  namespace: {ns}\nspec:\n  parentRefs:\n  - name: ai\n  rules:\n  - filters:\n    - type: ExtensionRef\n      extensionRef: {{group: kube-gw.io, kind: ModelOverride, name: llm}}\n    backendRefs:\n    - name: llm\n      port: 8080\n",
        w.class
    ));
    w.wait("the route to be accepted with its filter resolved", || {
        let st = w.route_status(&ns, "ai");
        let c = &st["parents"][0]["conditions"];
        (condition(c, "Accepted")["status"] == "True"
            && condition(c, "ResolvedRefs")["status"] == "True")
            .then_some(())
    });

    // 1. Only the model's value changes; every other byte is the client's (odd spacing, an
    //    escaped "model" inside a string, a nested "model", a number's own spelling).
    let sent = "{\"model\" :\"llama3.2:1b\",\n \"prompt\":\"say \\\"model\\\": no\",  \"options\": {\"model\":\"x\", \"temperature\":0.70e0}, \"stream\":false}";
    let want = sent.replacen("\"llama3.2:1b\"", "\"qwen2.5:0.5b\"", 1);
    let (status, answer) = w.wait("the rewritten request to be answered", || {
        let r = post(&w, "/api/generate", sent);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(
        (status, answer["model"].as_str()),
        (200, Some("qwen2.5:0.5b"))
    );
    let got = received(&w);
    let (path, body, length) = got.last().unwrap();
    assert_eq!(path, "/api/generate");
    assert_eq!(String::from_utf8_lossy(body), want);
    assert_eq!(length.as_deref(), Some(want.len().to_string().as_str()));

    // 2. Streamed answers arrive as the backend sends them (0.5 s apart), not at the end.
    for (path, prefix) in [("/api/chat", "{"), ("/v1/chat/completions", "data: {")] {
        let (status, lines) = stream(
            &w,
            path,
            "{\"model\":\"llama3.2:1b\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        );
        let parts: Vec<&(f64, String)> = lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .collect();
        assert_eq!((status, parts.len()), (200, 4), "{path}: {lines:?}");
        let first: serde_json::Value =
            serde_json::from_str(parts[0].1.trim_start_matches("data: ")).unwrap();
        assert_eq!(first["model"], "qwen2.5:0.5b", "{path}");
        let span = parts[3].0 - parts[0].0;
        assert!(
            span >= 1.0,
            "{path}: the parts came {span:.3} s apart in all, buffered: {lines:?}"
        );
    }

    // 3. Not JSON, and a path the filter does not list: passed on exactly as sent.
    let before = received(&w).len();
    assert_eq!(post(&w, "/api/generate", "model=llama3.2:1b").0, 200);
    assert_eq!(post(&w, "/api/tags", "{\"model\":\"llama3.2:1b\"}").0, 200);
    let got = received(&w);
    assert_eq!(got.len(), before + 2);
    assert_eq!(got[before].1, b"model=llama3.2:1b");
    assert_eq!(got[before + 1].1, b"{\"model\":\"llama3.2:1b\"}");

    // 4. Reject, with a 64-byte bound: non-JSON → 400, oversize → 413, neither reaches the
    //    backend; a small JSON body is still rewritten (the positive control).
    patch_override(
        &ns,
        serde_json::json!({"onUnparsable": "Reject", "maxBodyBytes": 64}),
    );
    w.wait("non-JSON bodies to be refused", || {
        (post(&w, "/api/generate", "model=x").0 == 400).then_some(())
    });
    let before = received(&w).len();
    let big = format!(
        "{{\"model\":\"llama3.2:1b\",\"prompt\":\"{}\"}}",
        "x".repeat(100)
    );
    assert_eq!(post(&w, "/api/generate", &big).0, 413);
    assert_eq!(post(&w, "/api/generate", "not json").0, 400);
    let (status, answer) = post(&w, "/api/generate", "{\"model\":\"m\"}");
    assert_eq!(
        (status, answer["model"].as_str()),
        (200, Some("qwen2.5:0.5b"))
    );
    assert_eq!(
        received(&w).len(),
        before + 1,
        "refused bodies reached the backend"
    );

    // 5. PassThrough with the same bound: the oversize body goes on untouched.
    patch_override(&ns, serde_json::json!({"onUnparsable": "PassThrough"}));
    w.wait("oversize bodies to pass", || {
        (post(&w, "/api/generate", &big).0 == 200).then_some(())
    });
    assert_eq!(received(&w).last().unwrap().1, big.as_bytes());

    // 6. Weights across two models: both are chosen.
    patch_override(
        &ns,
        serde_json::json!({"models": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    w.wait("the new models to be used", || {
        (post(&w, "/api/generate", "{\"model\":\"m\"}").1["model"] != "qwen2.5:0.5b").then_some(())
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (_, a) = post(&w, "/api/generate", "{\"model\":\"m\"}");
        seen.insert(a["model"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen, ["a".to_string(), "b".to_string()].into());

    // 7. The ModelOverride deleted: its requests fail (never a silent skip), and the route
    //    says why.
    crate::controlplane::block_on(async {
        let api: kube::Api<kube_gw::kube::gateway::ModelOverride> = kube::Api::namespaced(
            crate::controlplane::ControlPlane::shared().admin().await,
            &ns,
        );
        api.delete("llm", &Default::default()).await.unwrap();
    });
    w.wait("requests to fail without their filter", || {
        (post(&w, "/api/generate", "{\"model\":\"m\"}").0 == 500).then_some(())
    });
    w.wait("the route to say the filter is missing", || {
        let st = w.route_status(&ns, "ai");
        let c = condition(&st["parents"][0]["conditions"], "ResolvedRefs");
        (c["status"] == "False" && c["reason"] == "ExtensionRefNotResolved").then_some(())
    });
}
