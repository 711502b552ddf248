//! A client's request body through the model-override rewrite: never a panic, and whenever it
//! rewrites, the result is JSON whose every top-level `model` is the new one, with the bytes
//! before the first `model` value unchanged.
#![no_main]
use kube_gw::gateway::model_override::{rewrite, Rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Rewrite::Done { body, from } = rewrite(data, "m\"x") {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("rewritten body is JSON");
        assert_eq!(v["model"], "m\"x");
        let text = std::str::from_utf8(data).unwrap();
        let at = text.find(&from).unwrap();
        assert_eq!(&body[..at], &data[..at]);
    }
});
