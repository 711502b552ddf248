//! A client's request body through the model-override rewrite: never a panic, and whenever it
//! rewrites, the result is still one JSON text (grammar checked as the rewrite reads it: a
//! number out of f64's range is valid JSON and passes untouched), the bytes before the first
//! `model` value are unchanged, and rewriting it again changes nothing but finds the new model.
#![no_main]
use kube_gw::gateway::model_override::{rewrite, Rewrite};
use libfuzzer_sys::fuzz_target;

const MODEL: &str = "m\"x";

fuzz_target!(|data: &[u8]| {
    if let Rewrite::Done { body, from } = rewrite(data, MODEL) {
        serde_json::from_slice::<&serde_json::value::RawValue>(&body)
            .expect("the rewritten body is one JSON text");
        let text = std::str::from_utf8(data).unwrap();
        let at = text.find(&from).unwrap();
        assert_eq!(&body[..at], &data[..at]);
        match rewrite(&body, MODEL) {
            Rewrite::Done { body: again, from } => {
                assert_eq!(again, body, "a second rewrite changed the body");
                assert_eq!(from, serde_json::to_string(MODEL).unwrap());
            }
            other => panic!("the rewritten body does not rewrite again: {other:?}"),
        }
    }
});
