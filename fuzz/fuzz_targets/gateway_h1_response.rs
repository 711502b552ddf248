//! A backend's answer, whole, as the gateway's HTTP/1.1 client decodes it (head, 1xx,
//! framing, chunked decoding): an error is a 502, never a panic. The first byte chooses
//! whether the request was a HEAD.
#![no_main]
use hyper::Method;
use kube_gw::gateway::h1;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    if let Ok((_, body)) = h1::decode(rest, &method) {
        assert!(body.len() <= rest.len(), "a body longer than the answer");
    }
});
